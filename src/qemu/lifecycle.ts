import { constants, promises as fs } from 'node:fs';
import { createConnection } from 'node:net';
import { PvmlabError, isErrno } from '../core/errors.js';
import { run, runChecked, type Runner } from '../core/exec.js';
import type { VmFiles } from '../core/paths.js';
import { buildQemuArgv, type QemuSpec } from './argv.js';
import { isVmArgv, pidAlive, processArgv, vmProcess } from './process.js';
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
  // Leftovers of a QEMU that died (kill -9) go; a live VM's files are never touched.
  await clearStaleRuntime(spec.name, spec.files);
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
  /** Stop only this QEMU (the one a start attempt launched); another in the pid file is left alone. */
  onlyPid?: number;
}

export type StopOutcome = 'not-running' | 'powered-off' | 'quit' | 'killed';

/** The pid is still this VM's QEMU: alive and its -pidfile names this VM (not a reused pid). */
async function stillOurs(pid: number, pidFile: string): Promise<boolean> {
  const argv = await processArgv(pid);
  return argv !== undefined && isVmArgv(argv, pidFile);
}

/**
 * Gone: the pid is free, or names another program. An exiting QEMU loses its command line before
 * its threads have closed its sockets and TAP: while the pid is held it is not reused, so wait.
 */
async function gone(pid: number, pidFile: string): Promise<boolean> {
  if (!pidAlive(pid)) return true;
  const argv = await processArgv(pid);
  return argv !== undefined && argv.length > 0 && !isVmArgv(argv, pidFile);
}

async function waitGone(pid: number, pidFile: string, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await gone(pid, pidFile)) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return gone(pid, pidFile);
}

/** Signal the VM's QEMU, never whatever process has its pid by now. */
async function signalOurs(pid: number, pidFile: string, signal: NodeJS.Signals): Promise<void> {
  if (!(await stillOurs(pid, pidFile))) return;
  try {
    process.kill(pid, signal);
  } catch (err) {
    if (!isErrno(err, 'ESRCH')) throw err;
  }
}

/**
 * ACPI power-down through QMP; if the guest ignores it, QMP `quit`; if QEMU does not
 * answer, SIGTERM then SIGKILL. Removes the pid file and QMP socket afterwards. A pid file that
 * names no QEMU of this VM (dead, or the pid reused) is stale: nothing is signalled.
 */
export async function stopQemu(files: VmFiles, options: StopOptions = {}): Promise<StopOutcome> {
  const step = options.onStep ?? (() => undefined);
  const info = await vmProcess(files.pid);
  if (info.state !== 'running' || info.pid === undefined) {
    for (const path of await removeStaleRuntime(files))
      step(`${path} is in use by a process the pid file does not name: left in place`);
    return 'not-running';
  }
  const pid = info.pid;
  if (options.onlyPid !== undefined && pid !== options.onlyPid) return 'not-running';
  let outcome: StopOutcome | undefined;
  let qmp: QmpClient | undefined;
  try {
    qmp = await QmpClient.connect(files.qmp);
    step('asking the guest to power off (ACPI)');
    await qmp.execute('system_powerdown');
    if (await waitGone(pid, files.pid, options.graceMs ?? 30_000)) outcome = 'powered-off';
    else {
      step('the guest did not power off: stopping QEMU');
      await qmp.execute('quit').catch(() => undefined);
      if (await waitGone(pid, files.pid, 5000)) outcome = 'quit';
    }
  } catch (err) {
    step(`QMP unavailable (${(err as Error).message}): signalling the process`);
  } finally {
    qmp?.close();
  }
  if (!outcome) {
    await signalOurs(pid, files.pid, 'SIGTERM');
    if (await waitGone(pid, files.pid, 5000)) outcome = 'killed';
    else {
      await signalOurs(pid, files.pid, 'SIGKILL');
      if (!(await waitGone(pid, files.pid, 3000))) throw new PvmlabError(`could not stop QEMU (pid ${pid})`);
      outcome = 'killed';
    }
  }
  await removeStaleRuntime(files);
  return outcome;
}

/** The runtime files of one VM: what a QEMU of it creates and leaves behind when killed. */
export interface RuntimeFiles {
  pid: string;
  qmp: string;
  console?: string;
}

/**
 * Is a process listening on this unix socket? Refused or missing means a file left by a QEMU that
 * died. Anything else (accepted, a full backlog, no answer) counts as live: such a file is kept.
 */
export function socketLive(path: string, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection(path);
    const done = (live: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(live);
    };
    const timer = setTimeout(() => done(true), timeoutMs);
    socket.once('connect', () => done(true));
    socket.once('error', (err) =>
      done(!['ECONNREFUSED', 'ENOENT', 'ENOTSOCK', 'ENOTDIR'].some((c) => isErrno(err, c))),
    );
  });
}

/**
 * Remove the runtime files no live process uses: a pid file naming no QEMU of this VM, sockets
 * nobody listens on. A running VM's files are all left. Returns the paths left in place.
 */
export async function removeStaleRuntime(files: RuntimeFiles): Promise<string[]> {
  if ((await vmProcess(files.pid)).state === 'running') return [files.pid];
  const kept: string[] = [];
  for (const sock of [files.qmp, files.console]) {
    if (sock === undefined) continue;
    if (await socketLive(sock)) kept.push(sock);
    else await fs.rm(sock, { force: true });
  }
  // Re-checked last: a QEMU that started meanwhile (bypassing the VM lock) keeps its pid file.
  if ((await vmProcess(files.pid)).state !== 'running') await fs.rm(files.pid, { force: true });
  return kept;
}

/** Before a start: clear a dead QEMU's leftovers, or refuse when a live process still uses them. */
export async function clearStaleRuntime(name: string, files: RuntimeFiles): Promise<void> {
  const info = await vmProcess(files.pid);
  if (info.state === 'running') throw new PvmlabError(`VM '${name}' is already running (pid ${info.pid})`);
  const kept = await removeStaleRuntime(files);
  if (kept.length > 0)
    throw new PvmlabError(
      `${kept.join(' and ')} of VM '${name}' ${kept.length > 1 ? 'are' : 'is'} in use although its pid file ` +
        `${files.pid} names no running QEMU: a QEMU of this VM seems to run without its pid file; ` +
        `find it with 'pgrep -af ${kept[0]}', stop it, then start again`,
    );
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
