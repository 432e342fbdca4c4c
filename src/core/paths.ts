import { homedir } from 'node:os';
import { join } from 'node:path';

/** The lab's state directory: $PVMLAB_HOME/.pvmlab, else ~/.pvmlab. */
export function appDir(env: NodeJS.ProcessEnv = process.env): string {
  const home = env.PVMLAB_HOME && env.PVMLAB_HOME.length > 0 ? env.PVMLAB_HOME : homedir();
  return join(home, '.pvmlab');
}

/** Directories under the app dir, with the original's names. */
export function labDirs(app: string) {
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
export type LabDirs = ReturnType<typeof labDirs>;

/** Every file that belongs to one VM. `vm clean` removes exactly these. */
export function vmFiles(app: string, name: string) {
  const d = labDirs(app);
  return {
    definition: join(d.vms, `${name}.json`),
    disk: join(d.vms, `${name}.qcow2`),
    varsFd: join(d.vms, `${name}-vars.fd`),
    noreboot: join(d.vms, `${name}.noreboot`),
    seedIso: join(d.cloudInit, `${name}.iso`),
    seedDir: join(d.cloudInit, name),
    log: join(d.logs, `${name}.log`),
    pid: join(d.pids, `${name}.pid`),
    qmp: join(d.monitors, `${name}.qmp`),
  } as const;
}
export type VmFiles = ReturnType<typeof vmFiles>;

export function sshKeyPath(app: string): string {
  return join(labDirs(app).ssh, 'vm_key');
}
