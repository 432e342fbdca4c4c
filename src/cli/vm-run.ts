import { promises as fs } from 'node:fs';
import { PvmlabError, UsageError, errorMessage } from '../core/errors.js';
import { log } from '../core/log.js';
import { labDirs, vmFiles, type VmFiles } from '../core/paths.js';
import { pathExists, removePath } from '../core/fsutil.js';
import { loadLabConfig, type LabConfig } from '../lab/config.js';
import type { VmDefinition } from '../core/vmdef.js';
import { loadVm, saveVm, withLabLock } from '../lab/store.js';
import { vmOwnedFiles } from '../lab/vm-files.js';
import { accelHost, describeChoice, hostArch, resolveAccel } from '../qemu/accel.js';
import { fallbackWarning, startWithAccel } from '../qemu/accel-start.js';
import type { BootTarget } from '../qemu/argv.js';
import { findFirmware } from '../qemu/firmware.js';
import {
  clearStaleRuntime,
  ensureVarsFile,
  removeStaleRuntime,
  stopQemu,
  type StopOutcome,
} from '../qemu/lifecycle.js';
import { vmProcess } from '../qemu/process.js';
import { acquireVmLock, withVmLock, type VmLockHolder } from '../qemu/vm-lock.js';
import type { NetworkDriver } from '../net/driver.js';
import { ensureLabDirs, type Context } from './context.js';
import { networkDriver } from './network-driver.js';
import { waitForCloudInit } from './wait.js';

export interface StartOptions {
  interactive: boolean;
  wait: boolean;
  boot?: BootTarget;
  installerNoReboot: boolean;
  accel?: string;
  memoryMiB?: number;
  cpus?: number;
  waitTimeoutMs?: number;
}

export const DEFAULT_MEMORY_MIB = { provisioner: 4096, target: 2048 } as const;
export const DEFAULT_CPUS = 2;

export async function startVm(ctx: Context, name: string, opts: StartOptions): Promise<void> {
  if (opts.wait && opts.interactive) throw new UsageError('--wait and --interactive cannot be used together');
  const vm = await loadVm(ctx.app, name);
  const files = vmFiles(ctx.app, name);
  // One start (or stop) of a VM at a time: a start that loses finds the VM running and touches nothing.
  const lock = await acquireVmLock(ctx.app, name, 'start', { onWait: waitingFor(name) });
  let locked = true;
  const unlock = async () => {
    if (locked) {
      locked = false;
      await lock.release();
    }
  };
  let pxe: boolean;
  let startedAt: Date;
  try {
    ({ pxe, startedAt } = await launch(ctx, vm, files, opts, unlock));
  } finally {
    await unlock();
  }
  if (opts.interactive) return;
  log.success(`VM '${name}' is running; console log: ${files.log}`);
  if (opts.wait) {
    const timeout = opts.waitTimeoutMs ?? waitTimeout(ctx.env, hostArch() !== vm.arch);
    if (pxe) {
      // A PXE VM is ready when the stack's timeline says so (cloud-init phones home).
      const { waitForReady } = await import('./events.js');
      if ((await waitForReady(ctx, vm, startedAt, timeout)) === 'installed') {
        log.success(
          `VM '${name}' is installed; its installer stays at a shell (--installer-no-reboot): pvmlab vm console ${name}`,
        );
        return;
      }
    } else {
      if (!vm.ip) throw new PvmlabError(`VM '${name}' has no IP address to wait on`);
      // Re-read: a provisioner's start may have given it a new SSH port.
      await waitForCloudInit(ctx, vm.role === 'provisioner' ? await loadVm(ctx.app, name) : vm, timeout);
    }
    log.success(`VM '${name}' is ready.`);
  }
}

function waitingFor(name: string): (h: VmLockHolder) => void {
  return (h) => log.info(`waiting for pvmlab (pid ${h.pid}, vm ${h.operation}) to finish with VM '${name}'`);
}

/** Start QEMU for the VM; the caller holds the VM's lock (an interactive start gives it up via `unlock`). */
async function launch(
  ctx: Context,
  vm: VmDefinition,
  files: VmFiles,
  opts: StartOptions,
  unlock: () => Promise<void>,
): Promise<{ pxe: boolean; startedAt: Date }> {
  const name = vm.name;
  if ((await vmProcess(files.pid)).state === 'running')
    throw new PvmlabError(`VM '${name}' is already running`);
  // PXE VMs boot their disk first and fall back to the network; --boot pxe puts the NIC first.
  const boot: BootTarget = opts.boot ?? 'disk';
  const pxe = opts.boot === 'pxe' || (vm.pxeboot === true && opts.boot !== 'disk');

  if (!(await pathExists(files.disk)))
    throw new PvmlabError(
      `disk ${files.disk} is missing: recreate the VM with 'pvmlab vm clean ${name}' and 'pvmlab vm create'`,
    );
  const seedIso = vm.pxeboot ? undefined : files.seedIso;
  if (seedIso && !(await pathExists(seedIso)))
    throw new PvmlabError(`cloud-init seed ${seedIso} is missing: recreate the VM`);
  if (!vm.mac) throw new PvmlabError(`VM '${name}' has no MAC address in its definition`);

  // The stack reads this marker to leave the installer at a shell instead of rebooting.
  if (opts.installerNoReboot) await fs.writeFile(files.noreboot, '');
  else await fs.rm(files.noreboot, { force: true });

  await ensureLabDirs(ctx.app);
  const config = await loadLabConfig(ctx.app);
  const driver = networkDriver(ctx, config);
  const firmware = findFirmware(vm.arch, ctx.env);
  await ensureVarsFile(firmware.varsTemplate, files.varsFd);
  const choice = await resolveAccel(
    { guestArch: vm.arch, firmware, ...(opts.accel !== undefined ? { override: opts.accel } : {}) },
    accelHost(ctx.app, ctx.runner, ctx.env),
  );
  if (choice.source === 'probe') log.info(`Accelerator for ${vm.arch} guests: ${describeChoice(choice)}`);
  // Before anything is made: a dead QEMU's pid file and sockets go, a live process's stop the start.
  await clearStaleRuntime(name, files);
  const prov = vm.role === 'provisioner' ? await prepareProvisioner(ctx, vm, config) : undefined;
  const nic = await driver.attach({ name, mac: vm.mac });
  log.info(`Starting VM '${name}' (${vm.arch}, ${choice.accel}, ${vm.pxeboot ? 'PXE' : 'disk'})`);
  const startedAt = new Date();
  if (opts.interactive) {
    log.info('Serial console attached. Ctrl-a x quits QEMU, Ctrl-a c toggles the QEMU monitor.');
  }
  const started = startWithAccel(
    {
      name,
      arch: vm.arch,
      memoryMiB: opts.memoryMiB ?? vm.memory ?? DEFAULT_MEMORY_MIB[vm.role],
      cpus: opts.cpus ?? vm.cpus ?? DEFAULT_CPUS,
      firmware: { code: firmware.code, vars: files.varsFd },
      disk: files.disk,
      ...(seedIso ? { seedIso } : {}),
      boot,
      mac: vm.mac,
      nic,
      files,
      interactive: opts.interactive,
      ...(prov ?? {}),
    },
    choice,
    ctx.runner,
    (reason, recordedIn) => log.warn(fallbackWarning(choice.accel, reason, recordedIn)),
  );
  // An attached console runs for the whole session: the lock goes once its QEMU is up.
  if (opts.interactive) void unlockWhenRunning(files, started, unlock);
  try {
    await started;
  } catch (err) {
    if (!opts.interactive) await undoFailedStart(files, driver, name);
    throw err;
  } finally {
    if (opts.interactive) {
      // The session is over; its TAP goes unless another start took the VM meanwhile.
      await unlock();
      await withVmLock(ctx.app, name, 'start', async () => {
        if ((await vmProcess(files.pid)).state !== 'running')
          await driver.detach({ name }).catch((e: Error) => log.warn(e.message));
      });
    }
  }
  return { pxe, startedAt };
}

/**
 * The provisioner's additions to its start: a forwarded SSH port (the last one when it is still
 * free, so `vm shell` commands and known scripts keep working), saved to its definition first;
 * on the Linux bridge, the native stack must not be running and its address on the bridge goes.
 */
async function prepareProvisioner(ctx: Context, vm: VmDefinition, config: LabConfig) {
  const { freeLoopbackPort, provisionerBoot, releaseBridgeAddresses } =
    await import('../provisioner/start.js');
  if ((ctx.env.PVMLAB_NETWORK ?? config.network) === 'bridge') {
    const { stackProcess } = await import('../lab/stack-service.js');
    const native = await stackProcess(ctx.app, ctx.runner);
    if (native.state === 'running')
      throw new PvmlabError(
        `the native stack (pid ${native.pid}) serves this lab; the provisioner's container would be a second DHCP server on it: pvmlab stack stop, then start '${vm.name}'`,
      );
    const released = await releaseBridgeAddresses(ctx.runner, config.bridge, vm);
    if (released.length)
      log.info(`Removed ${released.join(', ')} from ${config.bridge}: the provisioner holds it now`);
  }
  const sshPort = await freeLoopbackPort(vm.ssh_port);
  if (sshPort !== vm.ssh_port)
    await withLabLock(ctx.app, () => saveVm(ctx.app, { ...vm, ssh_port: sshPort }));
  return provisionerBoot(ctx.app, vm, sshPort);
}

async function unlockWhenRunning(files: VmFiles, session: Promise<unknown>, unlock: () => Promise<void>) {
  let over = false;
  const ended = session.then(
    () => (over = true),
    () => (over = true),
  );
  while (!over && (await vmProcess(files.pid)).state !== 'running')
    await Promise.race([ended, new Promise((r) => setTimeout(r, 100))]);
  if (!over) await unlock();
}

/**
 * Undo what this attempt made and only that. A start that failed has no QEMU of its own left
 * (startWithAccel stops the one it launched), so a QEMU in the pid file is someone else's: its pid
 * file, sockets and TAP stay; only files and a TAP no live process holds go.
 */
async function undoFailedStart(files: VmFiles, driver: NetworkDriver, name: string): Promise<void> {
  await removeStaleRuntime(files).catch(() => undefined);
  await driver
    .detach({ name })
    .catch((e: Error) => log.warn(`could not remove the VM's network device: ${e.message}`));
}

/**
 * How long `--wait` waits: PVMLAB_WAIT_TIMEOUT seconds, else 10 minutes, or 30 for a guest of
 * another architecture (every instruction emulated: an aarch64 PXE install on an x86_64 host
 * took ~13 minutes here).
 */
export function waitTimeout(env: NodeJS.ProcessEnv, emulated = false): number {
  const s = Number(env.PVMLAB_WAIT_TIMEOUT);
  if (Number.isFinite(s) && s > 0) return s * 1000;
  return emulated ? 1_800_000 : 600_000;
}

export async function stopVm(ctx: Context, name: string, graceMs?: number): Promise<string> {
  await loadVm(ctx.app, name);
  // Waits for a start in progress, then stops what it started: never a half-made VM.
  return withVmLock(ctx.app, name, 'stop', () => stopLocked(ctx, name, graceMs), {
    onWait: waitingFor(name),
  });
}

async function stopLocked(ctx: Context, name: string, graceMs?: number): Promise<StopOutcome> {
  const files = vmFiles(ctx.app, name);
  const outcome = await stopQemu(files, {
    onStep: (m) => log.info(m),
    ...(graceMs !== undefined ? { graceMs } : {}),
  });
  const config = await loadLabConfig(ctx.app);
  await networkDriver(ctx, config)
    .detach({ name })
    .catch((err: Error) => log.warn(`could not remove the VM's network device: ${err.message}`));
  return outcome;
}

export interface CleanResult {
  /** How the VM was stopped, when it was running. */
  stopped?: StopOutcome;
  removed: string[];
}

/**
 * Stop a VM if it runs and remove every file it owns, whatever state they are in: no definition
 * is read, so a corrupt one, or the files a killed `vm create` left, go too (lab/vm-files.ts
 * decides ownership by name). Throws when the VM has no file at all, unless `mustExist` is false.
 */
export async function cleanVm(ctx: Context, name: string, mustExist = true): Promise<CleanResult> {
  const files = vmFiles(ctx.app, name);
  if (mustExist && vmOwnedFiles(ctx.app, name).length === 0)
    throw new PvmlabError(`VM '${name}' does not exist (no files for it in ${labDirs(ctx.app).vms})`);
  // Held to the end: a start that slips in between the stop and the removal would lose its files.
  return withVmLock(
    ctx.app,
    name,
    'clean',
    async () => {
      const result: CleanResult = { removed: [] };
      // A pid file that cannot be read (a directory in its place) names no process: not running.
      const running = await vmProcess(files.pid, ctx.runner).catch(() => ({ state: 'stopped' as const }));
      if (running.state === 'running') result.stopped = await stopLocked(ctx, name, 10_000);
      else
        await networkDriver(ctx, await loadLabConfig(ctx.app))
          .detach({ name })
          .catch(() => undefined);
      await withLabLock(ctx.app, async () => {
        // Listed again under the lock: what a create finished meanwhile goes too, nothing half.
        for (const p of vmOwnedFiles(ctx.app, name)) {
          try {
            await removePath(p);
          } catch (err) {
            throw new PvmlabError(`cannot remove ${p}: ${errorMessage(err)}`);
          }
          result.removed.push(p);
        }
      });
      return result;
    },
    { onWait: waitingFor(name) },
  );
}
