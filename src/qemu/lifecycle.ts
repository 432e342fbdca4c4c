import { constants, promises as fs } from 'node:fs';
import { PvmlabError, isErrno } from '../core/errors.js';
import { run, runChecked, type Runner } from '../core/exec.js';
import type { VmFiles } from '../core/paths.js';
import { buildQemuArgv, type QemuSpec } from './argv.js';
import { pidAlive, vmProcess } from './process.js';
import { QmpClient } from './qmp.js';

/** Unix socket paths are limited (104 bytes on macOS, 108 on Linux). */
const MAX_SOCKET_PATH = 100;

/** Each VM gets its own writable copy of the firmware's variable store. */
export async function ensureVarsFile(template: string, vars: string): Promise<void> {
  try {
    await fs.copyFile(template, vars, constants.COPYFILE_EXCL);
  } catch (err) {
    if (!isErrno(err, 'EEXIST'))
      throw new PvmlabError(`cannot create UEFI vars ${vars}: ${(err as Error).message}`);
  }
}

export interface StartResult {
  pid?: number;
  argv: string[];
}

/** Launch QEMU daemonised (or attached to the terminal when interactive). */
export async function startQemu(spec: QemuSpec, runner: Runner = run): Promise<StartResult> {
  const sockets: [string, string | undefined][] = [
    ['QMP', spec.files.qmp],
    ['console', spec.interactive ? undefined : spec.files.console],
  ];
  for (const [what, path] of sockets)
    if (path !== undefined && Buffer.byteLength(path) > MAX_SOCKET_PATH)
      throw new PvmlabError(
        `${what} socket path is too long for a unix socket (${Buffer.byteLength(path)} bytes): use a shorter PVMLAB_HOME or VM name`,
      );
  const argv = buildQemuArgv(spec);
  const [cmd, ...args] = argv as [string, ...string[]];
  await fs.rm(spec.files.qmp, { force: true });
  if (spec.interactive) {
    const r = await runner(cmd, args, { stdio: 'inherit' });
    if (r.code !== 0 && r.code !== null) throw new PvmlabError(`QEMU exited with status ${r.code}`);
    return { argv };
  }
  await runChecked(runner, cmd, args, { timeoutMs: 60_000 });
  const info = await vmProcess(spec.files.pid);
  if (info.state !== 'running')
    throw new PvmlabError(`QEMU started but VM '${spec.name}' is not running; see ${spec.files.log}`);
  return { pid: info.pid, argv };
}

export interface StopOptions {
  /** How long the guest gets to power off after ACPI power-down. */
  graceMs?: number;
  onStep?: (msg: string) => void;
}

export type StopOutcome = 'not-running' | 'powered-off' | 'quit' | 'killed';

async function waitGone(pid: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (!pidAlive(pid)) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return !pidAlive(pid);
}

/**
 * ACPI power-down through QMP; if the guest ignores it, QMP `quit`; if QEMU does not
 * answer, SIGTERM then SIGKILL. Removes the pid file and QMP socket afterwards.
 */
export async function stopQemu(files: VmFiles, options: StopOptions = {}): Promise<StopOutcome> {
  const step = options.onStep ?? (() => undefined);
  const info = await vmProcess(files.pid);
  if (info.state !== 'running' || info.pid === undefined) {
    await cleanupRuntime(files);
    return 'not-running';
  }
  const pid = info.pid;
  let outcome: StopOutcome | undefined;
  let qmp: QmpClient | undefined;
  try {
    qmp = await QmpClient.connect(files.qmp);
    step('asking the guest to power off (ACPI)');
    await qmp.execute('system_powerdown');
    if (await waitGone(pid, options.graceMs ?? 30_000)) outcome = 'powered-off';
    else {
      step('the guest did not power off: stopping QEMU');
      await qmp.execute('quit').catch(() => undefined);
      if (await waitGone(pid, 5000)) outcome = 'quit';
    }
  } catch (err) {
    step(`QMP unavailable (${(err as Error).message}): signalling the process`);
  } finally {
    qmp?.close();
  }
  if (!outcome) {
    process.kill(pid, 'SIGTERM');
    if (await waitGone(pid, 5000)) outcome = 'killed';
    else {
      process.kill(pid, 'SIGKILL');
      if (!(await waitGone(pid, 3000))) throw new PvmlabError(`could not stop QEMU (pid ${pid})`);
      outcome = 'killed';
    }
  }
  await cleanupRuntime(files);
  return outcome;
}

async function cleanupRuntime(files: VmFiles): Promise<void> {
  await fs.rm(files.pid, { force: true });
  await fs.rm(files.qmp, { force: true });
  await fs.rm(files.console, { force: true });
}

/** The guest's run state as QEMU reports it, or undefined when QMP does not answer. */
export async function queryStatus(files: VmFiles): Promise<string | undefined> {
  try {
    const q = await QmpClient.connect(files.qmp, 1000);
    try {
      return await q.status();
    } finally {
      q.close();
    }
  } catch {
    return undefined;
  }
}
