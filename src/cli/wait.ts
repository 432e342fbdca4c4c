import { PvmlabError } from '../core/errors.js';
import { log } from '../core/log.js';
import { vmFiles } from '../core/paths.js';
import { whyStuck } from '../qemu/liveness.js';
import { loadLabConfig } from '../lab/config.js';
import type { VmDefinition } from '../core/vmdef.js';
import { sshArgv, sshTargetFor } from '../lab/ssh.js';
import { labSshKey } from '../lab/sshkey.js';
import { listVms } from '../lab/store.js';
import type { Context } from './context.js';

/**
 * Does the host sit on the lab segment: a Linux bridge holding the host's lab address? Without
 * it (socket_vmnet, or the address removed) targets are reached through the provisioner.
 */
export async function hostOnLabNet(ctx: Context): Promise<boolean> {
  const config = await loadLabConfig(ctx.app);
  if ((ctx.env.PVMLAB_NETWORK ?? config.network) !== 'bridge') return false;
  const r = await ctx.runner('ip', ['-j', 'addr', 'show', 'dev', config.bridge]);
  if (r.code !== 0) return false;
  try {
    const links = JSON.parse(r.stdout) as { addr_info?: { local?: string }[] }[];
    return links.some((l) => (l.addr_info ?? []).some((a) => a.local === config.host_ip));
  } catch {
    return false;
  }
}

export async function sshTarget(ctx: Context, vm: VmDefinition) {
  const { vms } = await listVms(ctx.app);
  return sshTargetFor(
    vm,
    vms.find((v) => v.role === 'provisioner'),
    await hostOnLabNet(ctx),
  );
}

/** Why a VM being waited on will not get there (undefined: it still may). */
export type StuckCheck = () => Promise<string | undefined>;

/** Its QEMU gone, or its console at a dead end (src/qemu/liveness). */
export function vmStuckCheck(ctx: Context, vm: VmDefinition): StuckCheck {
  return () => whyStuck(vm.name, vmFiles(ctx.app, vm.name));
}

/** Poll `cloud-init status` over SSH until it reports done (or error), or the VM cannot get there. */
export async function waitForCloudInit(
  ctx: Context,
  vm: VmDefinition,
  timeoutMs: number,
  stuck: StuckCheck = vmStuckCheck(ctx, vm),
): Promise<void> {
  const target = await sshTarget(ctx, vm);
  const key = (await labSshKey(ctx.app)).path;
  const argv = sshArgv(key, target, ['cloud-init', 'status'], true);
  log.info(`Waiting for cloud-init on ${vm.name} (${target.host}); up to ${Math.round(timeoutMs / 1000)} s`);
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    const r = await ctx.runner('ssh', argv, { timeoutMs: 20_000 });
    last = (r.stdout + r.stderr).trim();
    if (/status:\s*done/.test(r.stdout)) return;
    if (/status:\s*error/.test(r.stdout)) {
      // `--long` says which module failed and why.
      const long = await ctx.runner('ssh', sshArgv(key, target, ['cloud-init', 'status', '--long'], true), {
        timeoutMs: 20_000,
      });
      throw new PvmlabError(
        `cloud-init on ${vm.name} finished with errors:\n${(long.stdout || last).trim()}`,
      );
    }
    const why = await stuck();
    if (why) throw new PvmlabError(`${vm.name} will not become ready: ${why}`);
    await new Promise((res) => setTimeout(res, 3000));
  }
  throw new PvmlabError(
    `timed out waiting for cloud-init on ${vm.name}${last ? ` (last answer: ${last})` : ''}`,
  );
}
