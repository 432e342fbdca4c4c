/**
 * Build the pxeboot_stack image and its tar: the Debian base (cached in the engine under its
 * recipe's tag), the build context (the stack bundle, iPXE, the installer initrds), the image,
 * and a docker-archive named pxeboot_stack:latest.
 */
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PvmlabError } from '../core/errors.js';
import { runChecked, startProcess, type Runner } from '../core/exec.js';
import { ensureInstallerInitrd } from '../distro/installer-initrd.js';
import { BOOT_FILES } from '../stack/dnsmasq.js';
import { DEFAULT_IPXE_DIRS, prepareTftpRoot } from '../stack/serve.js';
import { retagArchive } from './archive.js';
import { readTarMember, replaceTarMembers } from './tar.js';
import {
  BASE_REPO,
  IMAGE,
  baseRecipe,
  baseTag,
  engineArgv,
  mmdebstrapArgv,
  probeArgv,
  type Engine,
  type ImageArch,
} from './commands.js';

export interface ImageBuildOptions {
  /** The package root (where pxeboot_stack/, installer/ and dist/ are). */
  root: string;
  arch: ImageArch;
  engine: Engine;
  runner: Runner;
  env?: NodeJS.ProcessEnv;
  log: (msg: string) => void;
}

export const imagePaths = (root: string) => {
  const dir = join(root, 'pxeboot_stack');
  return {
    dir,
    dockerfile: join(dir, 'Dockerfile'),
    /** The build context, made anew by every build (git-ignored). */
    context: join(dir, 'build'),
    tar: join(dir, 'pxeboot_stack.tar'),
    bundle: join(root, 'dist', 'stack', 'pvmlab-stack.mjs'),
  };
};

const FOREIGN_HINT =
  'a foreign architecture needs qemu-user-static and binfmt_misc: apt-get install qemu-user-static binfmt-support arch-test; ' +
  'mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; update-binfmts --enable';

/**
 * A long step (mmdebstrap, the image build) with its output relayed as it comes, so `make`
 * shows progress; a failure carries its last lines.
 */
async function runStreaming(cmd: string, args: string[], log: (line: string) => void): Promise<void> {
  const tail: string[] = [];
  const p = await startProcess(cmd, args, {
    onLine: (line) => {
      tail.push(line);
      if (tail.length > 12) tail.shift();
      log(`  ${line}`);
    },
  });
  const r = await p.closed;
  if (r.error) throw new PvmlabError(`${cmd}: ${r.error.message}`);
  if (r.code !== 0)
    throw new PvmlabError(
      `${cmd} ${args[0] ?? ''} failed (${r.signal ?? `exit ${r.code}`}):\n${tail.join('\n')}`,
    );
}

/** Whether docker (its daemon) and podman answer. */
export async function probeEngines(runner: Runner): Promise<{ docker: boolean; podman: boolean }> {
  const works = async (engine: Engine) => {
    try {
      return (await runner(engine, probeArgv(engine), { timeoutMs: 15_000 })).code === 0;
    } catch {
      return false; // not installed
    }
  };
  const [docker, podman] = await Promise.all([works('docker'), works('podman')]);
  return { docker, podman };
}

/** The base image for this architecture: in the engine already, or made by mmdebstrap and imported. */
export async function ensureBase(o: ImageBuildOptions): Promise<{ tag: string; built: boolean }> {
  const recipe = baseRecipe(o.arch);
  const tag = baseTag(recipe);
  if ((await o.runner(o.engine, engineArgv.exists(tag))).code === 0) return { tag, built: false };
  const env = o.env ?? process.env;
  const mirror = env.PVMLAB_DEBIAN_MIRROR || 'http://deb.debian.org/debian';
  const work = await fs.mkdtemp(join(tmpdir(), 'pxeboot-base-'));
  const rootfs = join(work, `base-${o.arch}.tar`);
  o.log(
    `building the base image ${tag} with mmdebstrap (${recipe.suite}, ${o.arch}: ${recipe.packages.join(' ')})`,
  );
  try {
    await runStreaming('mmdebstrap', mmdebstrapArgv(recipe, mirror, rootfs), o.log).catch((err: Error) => {
      if (/arch-test|foreign architecture|binfmt|exec format/i.test(err.message))
        throw new PvmlabError(`building the ${o.arch} base: ${FOREIGN_HINT}\n${err.message}`);
      throw err;
    });
    await runChecked(o.runner, o.engine, engineArgv.importBase(o.engine, o.arch, rootfs, tag), {
      timeoutMs: 10 * 60_000,
    });
  } finally {
    await fs.rm(work, { recursive: true, force: true });
  }
  return { tag, built: true };
}

/** iPXE builds the image must carry: both UEFI architectures (BIOS is optional). */
const REQUIRED_IPXE = [BOOT_FILES['efi-x86_64'], BOOT_FILES['efi-arm64']];

/**
 * The build context: the stack bundle, the iPXE builds `stack serve` would serve (same search),
 * the installer initrds for both architectures (built once, then from the cache).
 */
export async function stageContext(o: ImageBuildOptions): Promise<void> {
  const p = imagePaths(o.root);
  // Anew each time: nothing left from an earlier build goes into the image's context.
  await fs.rm(p.context, { recursive: true, force: true });
  await fs.mkdir(p.context, { recursive: true });
  try {
    await fs.copyFile(p.bundle, join(p.context, 'pvmlab-stack.mjs'));
  } catch (err) {
    throw new PvmlabError(
      `cannot read the stack bundle ${p.bundle} (${(err as Error).message}): run \`npm run build\` first`,
    );
  }
  const ipxeDir = join(p.context, 'ipxe');
  const served = prepareTftpRoot(ipxeDir, DEFAULT_IPXE_DIRS, o.log);
  const missing = REQUIRED_IPXE.filter((f) => !served.includes(f));
  if (missing.length)
    throw new PvmlabError(
      `no iPXE build for ${missing.join(', ')} in ${DEFAULT_IPXE_DIRS.join(', ')}: run scripts/install-deps.sh (Debian's ipxe, and Debian 13's arm64 build)`,
    );
  for (const arch of ['x86_64', 'aarch64'] as const) {
    const r = await ensureInstallerInitrd({
      app: p.context,
      arch,
      runner: o.runner,
      env: o.env ?? process.env,
      onStep: o.log,
    });
    if (r.built) o.log(`built the ${arch} installer initrd`);
  }
}

/** Build pxeboot_stack:latest; returns its size in bytes. */
export async function buildImage(
  o: ImageBuildOptions,
): Promise<{ base: string; baseBuilt: boolean; bytes: number }> {
  const base = await ensureBase(o);
  await stageContext(o);
  const p = imagePaths(o.root);
  const before = await o.runner(o.engine, engineArgv.exists(IMAGE));
  o.log(`building ${IMAGE} (linux/${o.arch}) with ${o.engine} on ${base.tag}`);
  await runStreaming(
    o.engine,
    engineArgv.build(o.engine, {
      arch: o.arch,
      base: base.tag,
      tag: IMAGE,
      dockerfile: p.dockerfile,
      context: p.context,
    }),
    o.log,
  );
  // The image this one replaced, now nameless: removed, unless something still uses it (a
  // container, another name), so rebuilds do not pile up. Nothing else is touched.
  const previous = before.code === 0 ? before.stdout.trim() : '';
  const now = (await runChecked(o.runner, o.engine, engineArgv.exists(IMAGE))).stdout.trim();
  if (previous && previous !== now) await o.runner(o.engine, engineArgv.remove([previous]));
  const size = await runChecked(o.runner, o.engine, engineArgv.size(IMAGE));
  return { base: base.tag, baseBuilt: base.built, bytes: Number(size.stdout.trim()) };
}

/**
 * Save the image as a docker-archive at `out` (written beside it, then renamed), named
 * pxeboot_stack:latest in its manifest whichever engine saved it.
 */
export async function saveImageTar(o: ImageBuildOptions, out: string): Promise<number> {
  const saved = `${out}.tmp`;
  const renamed = `${out}.tmp2`;
  await fs.rm(saved, { force: true });
  try {
    await runChecked(o.runner, o.engine, engineArgv.save(o.engine, IMAGE, saved), { timeoutMs: 10 * 60_000 });
    const manifest = await readTarMember(saved, 'manifest.json');
    if (manifest === undefined)
      throw new PvmlabError(`${o.engine} save wrote no manifest.json: not a docker-archive`);
    const repositories = await readTarMember(saved, 'repositories');
    const fixed = retagArchive(manifest.toString('utf8'), repositories?.toString('utf8'), IMAGE);
    if (fixed) {
      await replaceTarMembers(saved, renamed, [
        { name: 'manifest.json', data: Buffer.from(fixed.manifest) },
        ...(fixed.repositories === undefined
          ? []
          : [{ name: 'repositories', data: Buffer.from(fixed.repositories) }]),
      ]);
      await fs.rename(renamed, out);
    } else {
      await fs.rename(saved, out);
    }
  } finally {
    await fs.rm(saved, { force: true });
    await fs.rm(renamed, { force: true });
  }
  return (await fs.stat(out)).size;
}

/** Remove every cached base image (the next build makes a new one from current packages). */
export async function removeBases(o: Pick<ImageBuildOptions, 'engine' | 'runner'>): Promise<string[]> {
  const list = await runChecked(o.runner, o.engine, engineArgv.listBases());
  const tags = list.stdout
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.includes(BASE_REPO) && !l.endsWith(':<none>'));
  if (tags.length) await runChecked(o.runner, o.engine, engineArgv.remove(tags));
  return tags;
}
