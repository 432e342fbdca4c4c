import { join } from 'node:path';
import { PvmlabError } from '../core/errors.js';
import { withLock, type LockHolder } from '../core/lockfile.js';
import type { Runner } from '../core/exec.js';
import { labDirs, vmFiles } from '../core/paths.js';
import type { VmDefinition } from '../core/vmdef.js';
import { sshTargetFor } from '../lab/ssh.js';
import { labSshKey } from '../lab/sshkey.js';
import { listVms } from '../lab/store.js';
import { vmProcess } from '../qemu/process.js';
import type { ProvisionerSession } from './container.js';

/** The lab's provisioner (the first by name, as `vm list` orders them), or a clear error. */
export async function findProvisioner(app: string): Promise<VmDefinition> {
  const { vms } = await listVms(app);
  const prov = vms.find((v) => v.role === 'provisioner');
  if (!prov)
    throw new PvmlabError("no provisioner: create one with 'pvmlab provisioner create <name> --ip …'");
  return prov;
}

/** The host directory the provisioner sees as /mnt/host/docker_images. */
export function hostDockerImagesDir(app: string, prov: VmDefinition): string {
  return prov.docker_images_path || labDirs(app).dockerImages;
}

/**
 * How to reach the running provisioner over SSH. Running means what `vm list` means: its pid
 * file names a live QEMU of this VM; the forwarded SSH port comes from its definition.
 */
export async function provisionerSession(
  app: string,
  runner: Runner,
): Promise<ProvisionerSession & { vm: VmDefinition }> {
  const vm = await findProvisioner(app);
  const p = await vmProcess(vmFiles(app, vm.name).pid, runner);
  if (p.state !== 'running')
    throw new PvmlabError(
      `the provisioner '${vm.name}' is not running: start it with 'pvmlab vm start ${vm.name}'`,
    );
  const target = sshTargetFor(vm, undefined, false);
  return { name: vm.name, vm, key: (await labSshKey(app)).path, target };
}

/**
 * One change to the provisioner's container at a time from this lab (two starts would race
 * between load and run); a second one waits for the first.
 */
export function withContainerLock<T>(
  app: string,
  operation: 'start' | 'stop',
  fn: () => Promise<T>,
  onWait?: (holder: LockHolder) => void,
): Promise<T> {
  return withLock(join(labDirs(app).locks, 'provisioner-container.lock'), fn, {
    operation: `provisioner-docker-${operation}`,
    what: "the provisioner's container",
    command: (op) => `pvmlab ${op.replace(/-/g, ' ')}`,
    // A start may be loading a large image.
    timeoutMs: 25 * 60_000,
    ...(onWait ? { onWait } : {}),
  });
}
