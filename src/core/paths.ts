import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The lab's state directory: $PVMLAB_HOME/.pvmlab, else ~/.pvmlab. */
export function appDir(env: NodeJS.ProcessEnv = process.env): string {
  const home = env.PVMLAB_HOME && env.PVMLAB_HOME.length > 0 ? env.PVMLAB_HOME : homedir();
  return join(home, '.pvmlab');
}

/** Directories under the app dir, with the original's names. */
export function labDirs(app: string): LabDirs {
  let d = dirsCache.get(app);
  if (!d) dirsCache.set(app, (d = makeLabDirs(app)));
  return d;
}
// `vm list` asks for many VMs' paths: normalise the directory paths once per app dir.
const dirsCache = new Map<string, LabDirs>();

function makeLabDirs(app: string) {
  return {
    app,
    images: join(app, 'images'),
    vms: join(app, 'vms'),
    pids: join(app, 'pids'),
    logs: join(app, 'logs'),
    monitors: join(app, 'monitors'),
    ssh: join(app, 'ssh'),
    cloudInit: join(app, 'configs', 'cloud-init'),
    dockerImages: join(app, 'docker_images'),
    locks: join(app, 'locks'),
  } as const;
}
export type LabDirs = ReturnType<typeof makeLabDirs>;

/**
 * Every file that belongs to one VM. `vm clean` removes exactly these. The name is a
 * validated hostname label, so plain concatenation is a correct (and cheap) join.
 */
export function vmFiles(app: string, name: string) {
  const d = labDirs(app);
  return {
    definition: `${d.vms}${sep}${name}.json`,
    disk: `${d.vms}${sep}${name}.qcow2`,
    varsFd: `${d.vms}${sep}${name}-vars.fd`,
    noreboot: `${d.vms}${sep}${name}.noreboot`,
    seedIso: `${d.cloudInit}${sep}${name}.iso`,
    seedDir: `${d.cloudInit}${sep}${name}`,
    log: `${d.logs}${sep}${name}.log`,
    pid: `${d.pids}${sep}${name}.pid`,
    qmp: `${d.monitors}${sep}${name}.qmp`,
    /** The serial console's unix socket (background VMs); `vm console` attaches to it. */
    console: `${d.monitors}${sep}${name}.console`,
  } as const;
}
export type VmFiles = ReturnType<typeof vmFiles>;

/**
 * Where built images are kept between labs and runs (distro builds, installer initrds):
 * PVMLAB_CACHE, else /var/cache/pvmlab for root, else $XDG_CACHE_HOME/pvmlab or ~/.cache/pvmlab.
 */
export function cacheDir(env: NodeJS.ProcessEnv = process.env, uid = process.getuid?.() ?? -1): string {
  if (env.PVMLAB_CACHE) return env.PVMLAB_CACHE;
  if (uid === 0) return '/var/cache/pvmlab';
  return join(env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'pvmlab');
}

/**
 * The installed package's root (where `installer/` and `scripts/` are), found from this module's
 * own location: it works from dist/src/... and from the bundle's chunks alike.
 */
export function packageRoot(from: string = fileURLToPath(import.meta.url)): string {
  for (let dir = dirname(from); ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'installer'))) return dir;
    if (dirname(dir) === dir) throw new Error(`cannot find pvmlab's installation directory above ${from}`);
  }
}
