import { promises as fs } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { PvmlabError, isErrno } from '../core/errors.js';
import {
  processAlive,
  processCommandLine,
  run,
  spawnDetached,
  type DetachedProcess,
  type ProcessExit,
  type Runner,
} from '../core/exec.js';
import { namedFsError, readFileEnd, writeFileAtomic } from '../core/fsutil.js';
import { labDirs } from '../core/paths.js';
import { replaceStaleDnsmasq } from '../stack/dnsmasq.js';
import { withLock, type LockOptions } from '../core/lockfile.js';

/**
 * The pxeboot stack run natively in the background "under pvmlab's control": `stack start`
 * runs `pvmlab stack serve` detached, keeps its pid file and log, and `stack stop|status|logs`
 * work from those. Everything here is below the CLI so the quickstart, tests or a future page
 * can drive it the same way.
 */

/**
 * The service's files. Not `stack.pid`/`stack.log`: a VM may be called `stack`, and its pid
 * file and console log have exactly those names. `_` cannot appear in a VM name.
 */
export function stackServiceFiles(app: string): { pid: string; log: string; lock: string } {
  const d = labDirs(resolve(app));
  return {
    pid: join(d.pids, 'stack_serve.pid'),
    log: join(d.logs, 'stack_serve.log'),
    lock: join(d.locks, 'stack_serve.lock'),
  };
}

/** Concurrent starts and stops of the stack wait for each other (src/core/lockfile.ts). */
function stackLockOptions(operation: string, timeoutMs: number): LockOptions {
  return {
    timeoutMs: timeoutMs + 60_000,
    operation,
    what: 'the stack service',
    command: (op) => `pvmlab stack ${op}`,
  };
}

/** The flags of `stack serve`, checked (see the CLI). */
export interface ServeFlags {
  interface?: string;
  address?: string;
  vmsDir?: string;
  imagesDir?: string;
  initrdsDir?: string;
  stateDir?: string;
  ipxeDir?: string;
  httpPort: number;
  /** false: --no-dnsmasq */
  dnsmasq: boolean;
  /** false: --no-dns */
  dns: boolean;
}

/** The option that ties a `stack serve` process to its pid file, and so to its lab. */
export const PID_FILE_OPTION = '--pid-file';

/**
 * The arguments of the background `pvmlab stack serve` (after the program that runs pvmlab).
 * Pure. Options take the `--flag=value` form, so a value starting with `-` stays a value, and
 * directories become absolute: the service runs in `/`. The last argument names the pid file:
 * it identifies the process as this lab's stack, as `-pidfile` does for a VM's QEMU.
 */
export function serveArgv(flags: ServeFlags, pidFile: string, cwd: string): string[] {
  const argv = ['stack', 'serve'];
  const opt = (name: string, value: string | undefined) => {
    if (value !== undefined) argv.push(`${name}=${value}`);
  };
  const dir = (name: string, value: string | undefined) =>
    opt(name, value === undefined ? undefined : resolve(cwd, value));
  opt('--interface', flags.interface);
  opt('--address', flags.address);
  dir('--vms-dir', flags.vmsDir);
  dir('--images-dir', flags.imagesDir);
  dir('--initrds-dir', flags.initrdsDir);
  dir('--state-dir', flags.stateDir);
  dir('--ipxe-dir', flags.ipxeDir);
  opt('--http-port', String(flags.httpPort));
  if (!flags.dnsmasq) argv.push('--no-dnsmasq');
  if (!flags.dns) argv.push('--no-dns');
  opt(PID_FILE_OPTION, pidFile);
  return argv;
}

/** Is this argv a `pvmlab stack serve` whose pid file is this one (so: this lab's stack)? */
export function isStackServeArgv(argv: readonly string[], pidFile: string): boolean {
  const i = argv.indexOf('stack');
  return i >= 1 && argv[i + 1] === 'serve' && argv.includes(`${PID_FILE_OPTION}=${pidFile}`);
}

/** The value of `--name=value` in an argv made by serveArgv. */
export function serveArgOf(argv: readonly string[], name: string): string | undefined {
  const prefix = `${name}=`;
  return argv.find((a) => a.startsWith(prefix))?.slice(prefix.length);
}

/** The stack's base URL; a wildcard address is reached over loopback. */
export function stackUrl(address: string, port: number): string {
  const host = address === '0.0.0.0' ? '127.0.0.1' : address === '::' ? '::1' : address;
  return `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
}

/** The URL of a running stack, from its own argv (lab.yaml's provisioner_ip when it has no --address). */
export function urlFromArgv(argv: readonly string[], defaultAddress: string): string {
  const port = Number(serveArgOf(argv, '--http-port') ?? '80');
  return stackUrl(serveArgOf(argv, '--address') ?? defaultAddress, port);
}

export interface StackProcess {
  state: 'running' | 'stopped';
  /** Running: the stack's pid. Stopped with a stale pid file: the pid it names (-1: unreadable). */
  pid?: number;
  /** A pid file whose process is gone or is not this lab's stack (pid reuse). */
  stalePidFile?: boolean;
  /** Running: its argv. */
  argv?: string[];
  /** Running: when its pid file was written, right after it was started. */
  startedAt?: Date;
}

async function readPid(path: string): Promise<number | undefined> {
  let text: string;
  try {
    text = await fs.readFile(path, 'utf8');
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return undefined;
    throw new PvmlabError(namedFsError(err, `cannot read the stack's pid file ${path}`).message, {
      cause: err,
    });
  }
  const pid = Number(text.trim());
  return Number.isInteger(pid) && pid > 0 ? pid : -1;
}

/** Running only when the pid file's process is alive *and* is this lab's `stack serve`. */
export async function stackProcess(app: string, runner: Runner = run): Promise<StackProcess> {
  const { pid: pidFile } = stackServiceFiles(app);
  const pid = await readPid(pidFile);
  if (pid === undefined) return { state: 'stopped' };
  if (pid < 0 || !processAlive(pid)) return { state: 'stopped', pid, stalePidFile: true };
  const argv = await processCommandLine(pid, runner);
  if (!argv || !isStackServeArgv(argv, pidFile)) return { state: 'stopped', pid, stalePidFile: true };
  const st = await fs.stat(pidFile).catch(() => undefined);
  return { state: 'running', pid, argv, ...(st ? { startedAt: st.mtime } : {}) };
}

/** Remove the pid file if it still names this pid (another start may have replaced it). */
export async function releasePidFile(pidFile: string, pid: number): Promise<void> {
  if ((await readPid(pidFile)) === pid) await fs.rm(pidFile, { force: true });
}

export interface StackHealth {
  ok: boolean;
  machines?: number;
  dnsmasq?: { pid: number | null; restarts: number; serving?: boolean; error?: string } | 'off';
  timeline?: { ok: boolean; error?: string };
}

/** Why a stack that answers is not healthy, from its /healthz body. */
export function healthProblem(h: StackHealth): string {
  const why: string[] = [];
  if (h.dnsmasq && h.dnsmasq !== 'off' && h.dnsmasq.serving === false)
    why.push(`dnsmasq is not serving${h.dnsmasq.error ? ` (${h.dnsmasq.error})` : ''}`);
  if (h.timeline && !h.timeline.ok)
    why.push(`the timeline cannot be written${h.timeline.error ? ` (${h.timeline.error})` : ''}`);
  return why.join('; ') || 'it says it is not ok';
}

/**
 * GET <url>/healthz: the body, also when it says not ok (503); throws when the stack does not
 * answer or answers something else. `requireOk` throws with the reason when it is not ok.
 */
export async function fetchHealth(url: string, timeoutMs = 2000, requireOk = true): Promise<StackHealth> {
  const r = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(timeoutMs) });
  if (!r.ok && r.status !== 503) throw new Error(`${url}/healthz answered ${r.status}`);
  const body = (await r.json().catch(() => undefined)) as StackHealth | undefined;
  if (typeof body?.ok !== 'boolean') throw new Error(`${url}/healthz did not answer a health report`);
  if (requireOk && !body.ok) throw new Error(`${url}/healthz: ${healthProblem(body)}`);
  return body;
}

/** The last `lines` lines of the log written since `offset`. */
export async function logTail(path: string, offset: number, lines: number): Promise<string[]> {
  const text = await readFileEnd(path, { offset });
  return text
    .split('\n')
    .filter((l) => l.trim().length > 0)
    .slice(-lines);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function signal(pid: number, sig: NodeJS.Signals | 0): boolean {
  try {
    process.kill(pid, sig);
    return true;
  } catch {
    return false; // ESRCH: gone (a group: empty)
  }
}

async function waitGone(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!processAlive(pid)) return true;
    if (Date.now() >= deadline) return false;
    await sleep(50);
  }
}

/**
 * SIGTERM (the stack closes its servers and dnsmasq), SIGKILL to its process group after
 * `timeoutMs`. Then nothing of its group may outlive it: `spawnDetached` made the stack a
 * group leader and dnsmasq runs in its group, so a dnsmasq left by a stack that was killed
 * (or that died before it could stop it) is killed too. A group id stays taken while the
 * group has members, so the group cannot be someone else's.
 */
export async function terminateStack(
  pid: number,
  timeoutMs: number,
  alreadyExited = false,
): Promise<{ forced: boolean }> {
  let forced = false;
  if (!alreadyExited) {
    signal(pid, 'SIGTERM');
    if (!(await waitGone(pid, timeoutMs))) {
      forced = true;
      signal(-pid, 'SIGKILL');
      signal(pid, 'SIGKILL');
      await waitGone(pid, 5000);
    }
  }
  if (signal(-pid, 0)) signal(-pid, 'SIGKILL');
  return { forced };
}

/** The stack's state directory: its --state-dir, else the lab's `stack/` (as `stack serve` does). */
export function stateDirOf(app: string, argv: readonly string[] | undefined): string {
  return (argv && serveArgOf(argv, '--state-dir')) ?? join(resolve(app), 'stack');
}

/**
 * Stop a dnsmasq a stack that died (SIGKILL, out of memory) left running in this state directory:
 * it would keep DHCP, DNS and TFTP from the next stack. The stack's own check (identity by
 * command line, never a live stack's child); the pid stopped, if there was one.
 */
async function killOrphanedDnsmasq(stateDir: string): Promise<number | undefined> {
  const stopped = await replaceStaleDnsmasq({
    pidFile: join(stateDir, 'dnsmasq.pid'),
    confPath: join(stateDir, 'dnsmasq.conf'),
  });
  return stopped[0];
}

/** `stack start` could not bring the stack up; the message ends with the log's last lines. */
export class StackStartError extends PvmlabError {
  constructor(
    reason: string,
    readonly logFile: string,
    readonly logLines: string[],
  ) {
    super(
      `the stack ${reason}; ${
        logLines.length
          ? `the end of its log (${logFile}):\n${logLines.map((l) => `  ${l}`).join('\n')}`
          : `its log (${logFile}) is empty`
      }`,
    );
    this.name = 'StackStartError';
  }
}

/** The line `stack serve` logs once it listens (src/cli/stack.ts). */
const SERVING = /Stack serving /;

export interface StartOptions {
  app: string;
  /** The program that runs pvmlab, e.g. [process.execPath, process.argv[1]]. */
  command: readonly string[];
  flags: ServeFlags;
  /** The address the stack serves on when the flags give none: lab.yaml's provisioner_ip. */
  defaultAddress: string;
  /** How long the stack may take to answer /healthz. */
  timeoutMs: number;
  /** Resolves relative directories in the flags (default: the current directory). */
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  runner?: Runner;
}

export type StartResult =
  | {
      status: 'started';
      pid: number;
      url: string;
      log: string;
      /** An orphaned dnsmasq of a stack that had died, killed before this one started. */
      killedDnsmasq?: number;
    }
  | { status: 'already-running'; pid: number; url: string; log: string; sameFlags: boolean };

/**
 * Start the stack in the background unless this lab's stack already runs. Returns once it
 * serves and answers /healthz; otherwise kills what it started, removes the pid file and
 * throws a StackStartError with the log's last lines.
 */
export async function startStackService(o: StartOptions): Promise<StartResult> {
  const files = stackServiceFiles(o.app);
  const runner = o.runner ?? run;
  const args = serveArgv(o.flags, files.pid, o.cwd ?? process.cwd());
  // Concurrent starts wait here, then find the first one's stack running.
  return withLock(
    files.lock,
    async (): Promise<StartResult> => {
      const current = await stackProcess(o.app, runner);
      if (current.state === 'running' && current.pid !== undefined && current.argv) {
        const i = current.argv.indexOf('stack');
        return {
          status: 'already-running',
          pid: current.pid,
          url: urlFromArgv(current.argv, o.defaultAddress),
          log: files.log,
          sameFlags: current.argv.slice(i).join('\0') === args.join('\0'),
        };
      }
      if (current.stalePidFile) await fs.rm(files.pid, { force: true });
      const stateDir = o.flags.stateDir
        ? resolve(o.cwd ?? process.cwd(), o.flags.stateDir)
        : stateDirOf(o.app, undefined);
      const killedDnsmasq = await killOrphanedDnsmasq(stateDir);
      await fs.mkdir(dirname(files.pid), { recursive: true });
      await fs.mkdir(dirname(files.log), { recursive: true });
      const [program, ...pre] = o.command;
      if (!program) throw new PvmlabError('no program to run pvmlab with');
      await fs
        .appendFile(
          files.log,
          `--- ${new Date().toISOString()} pvmlab stack start: ${[program, ...pre, ...args].join(' ')}\n`,
        )
        .catch((err: unknown) => {
          throw new PvmlabError(namedFsError(err, `cannot write ${files.log}`).message, { cause: err });
        });
      const offset = (await fs.stat(files.log)).size;
      const url = stackUrl(o.flags.address ?? o.defaultAddress, o.flags.httpPort);
      const child = await spawnDetached(program, [...pre, ...args], {
        logFile: files.log,
        // The same lab whatever the current directory; a plain log file, no colour codes.
        env: { ...(o.env ?? process.env), PVMLAB_HOME: dirname(resolve(o.app)), NO_COLOR: '1' },
        cwd: '/',
      });
      const state: { exit?: ProcessExit } = {};
      void child.exited.then((e) => (state.exit = e));
      try {
        await writeFileAtomic(files.pid, `${child.pid}\n`);
        await waitReady(child, state, url, files.log, offset, o.timeoutMs);
      } catch (err) {
        await terminateStack(child.pid, 3000, state.exit !== undefined);
        await releasePidFile(files.pid, child.pid);
        const reason =
          err instanceof NotReady ? err.message : `could not be started: ${(err as Error).message}`;
        throw new StackStartError(reason, files.log, await logTail(files.log, offset, 20));
      }
      return {
        status: 'started',
        pid: child.pid,
        url,
        log: files.log,
        ...(killedDnsmasq !== undefined ? { killedDnsmasq } : {}),
      };
    },
    stackLockOptions('start', o.timeoutMs),
  );
}

class NotReady extends Error {}

function describeExit(e: ProcessExit): string {
  if (e.error) return `could not be started: ${e.error.message}`;
  return `exited (${e.signal ?? `code ${e.code}`}) before it was ready`;
}

/** Ready: this child logged that it serves (so /healthz is not some other server's) and /healthz says ok. */
async function waitReady(
  child: DetachedProcess,
  state: { exit?: ProcessExit },
  url: string,
  logFile: string,
  offset: number,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let serving = false;
  let lastError = '';
  for (;;) {
    if (state.exit) throw new NotReady(describeExit(state.exit));
    serving ||= SERVING.test(await readFileEnd(logFile, { offset }));
    if (serving) {
      try {
        await fetchHealth(url, 1000);
        if (!state.exit) return;
      } catch (err) {
        lastError = (err as Error).message;
      }
    }
    if (state.exit) throw new NotReady(describeExit(state.exit));
    if (Date.now() >= deadline)
      throw new NotReady(
        `did not ${serving ? `answer ${url}/healthz` : 'start serving'} within ${Number((timeoutMs / 1000).toFixed(3))} s${
          lastError ? ` (${lastError})` : ''
        }`,
      );
    await Promise.race([sleep(200), child.exited]);
  }
}

export type StopResult = (
  { status: 'stopped'; pid: number; forced: boolean } | { status: 'not-running'; stalePid?: number }
) & {
  /** An orphaned dnsmasq (of a stack that had died, or not in the stack's process group), killed. */
  killedDnsmasq?: number;
};

/**
 * Stop this lab's stack: SIGTERM, SIGKILL after `timeoutMs`, remove the pid file. A stale pid
 * file (its process gone, or not this lab's stack) is removed; that process is never signalled.
 */
export async function stopStackService(
  app: string,
  o: { timeoutMs: number; runner?: Runner },
): Promise<StopResult> {
  const files = stackServiceFiles(app);
  return withLock(
    files.lock,
    async (): Promise<StopResult> => {
      const runner = o.runner ?? run;
      const p = await stackProcess(app, runner);
      if (p.state !== 'running' || p.pid === undefined) {
        if (p.stalePidFile) await fs.rm(files.pid, { force: true });
        const killedDnsmasq = await killOrphanedDnsmasq(stateDirOf(app, undefined));
        return {
          status: 'not-running',
          ...(p.stalePidFile && p.pid !== undefined ? { stalePid: p.pid } : {}),
          ...(killedDnsmasq !== undefined ? { killedDnsmasq } : {}),
        };
      }
      const { forced } = await terminateStack(p.pid, o.timeoutMs);
      const killedDnsmasq = await killOrphanedDnsmasq(stateDirOf(app, p.argv));
      await releasePidFile(files.pid, p.pid);
      await fs
        .appendFile(
          files.log,
          `--- ${new Date().toISOString()} pvmlab stack stop: pid ${p.pid} ${forced ? 'killed after the timeout' : 'stopped'}\n`,
        )
        .catch(() => undefined);
      return {
        status: 'stopped',
        pid: p.pid,
        forced,
        ...(killedDnsmasq !== undefined ? { killedDnsmasq } : {}),
      };
    },
    stackLockOptions('stop', o.timeoutMs),
  );
}

export interface StackStatus {
  running: boolean;
  pid?: number;
  url?: string;
  started_at?: string;
  uptime_s?: number;
  /** Running and answering /healthz with ok. */
  healthy: boolean;
  health?: StackHealth;
  health_error?: string;
  log: string;
  pid_file: string;
  /** The pid file names a process that is gone or is not this lab's stack. */
  stale_pid_file: boolean;
}

export async function stackServiceStatus(
  app: string,
  o: { defaultAddress: string; runner?: Runner; now?: Date },
): Promise<StackStatus> {
  const files = stackServiceFiles(app);
  const p = await stackProcess(app, o.runner ?? run);
  const base = { log: files.log, pid_file: files.pid, stale_pid_file: p.stalePidFile === true };
  if (p.state !== 'running' || p.pid === undefined || !p.argv)
    return { running: false, healthy: false, ...(p.stalePidFile ? { pid: p.pid } : {}), ...base };
  const url = urlFromArgv(p.argv, o.defaultAddress);
  const now = o.now ?? new Date();
  let health: StackHealth | undefined;
  let healthError: string | undefined;
  try {
    health = await fetchHealth(url, 2000, false);
  } catch (err) {
    const e = err as Error & { cause?: Error };
    healthError = e.cause?.message ?? e.message;
  }
  return {
    running: true,
    pid: p.pid,
    url,
    ...(p.startedAt
      ? {
          started_at: p.startedAt.toISOString(),
          uptime_s: Math.max(0, Math.round((now.getTime() - p.startedAt.getTime()) / 1000)),
        }
      : {}),
    healthy: health?.ok === true,
    ...(health ? { health } : {}),
    ...(healthError !== undefined ? { health_error: healthError } : {}),
    ...base,
  };
}
