import type { StdioOptions } from 'node:child_process';
import { accessSync, constants, readFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { PvmlabError } from './errors.js';

export interface RunOptions {
  /** Written to the child's stdin, which is then closed. */
  input?: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Kill the child (SIGKILL) after this many milliseconds. */
  timeoutMs?: number;
  /** 'inherit' hands the terminal to the child (ssh, tail -f, interactive QEMU). */
  stdio?: 'pipe' | 'inherit';
  signal?: AbortSignal;
  /**
   * With 'pipe': each chunk of output as it arrives, for a caller that streams it on (and can
   * tell when its own reader has gone, which a child writing to an inherited pipe cannot).
   * Output passed on is not kept in the result.
   */
  onStdout?: (chunk: string) => void;
  onStderr?: (chunk: string) => void;
}

export interface RunResult {
  command: string;
  args: readonly string[];
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

/** The one place pvmlab starts processes; commands take a Runner so tests can record argv. */
export type Runner = (command: string, args: readonly string[], options?: RunOptions) => Promise<RunResult>;

export const run: Runner = async (command, args, options = {}) => {
  // Loaded on first use: child_process pulls in net/dgram, which commands like `vm list` never need.
  const { spawn } = await import('node:child_process');
  return new Promise((resolve, reject) => {
    const stdio: StdioOptions = options.stdio === 'inherit' ? 'inherit' : ['pipe', 'pipe', 'pipe'];
    const child = spawn(command, [...args], {
      env: options.env ?? process.env,
      cwd: options.cwd,
      stdio,
      signal: options.signal,
    });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    const { onStdout, onStderr } = options;
    child.stdout?.setEncoding('utf8').on('data', (d: string) => (onStdout ? onStdout(d) : (stdout += d)));
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (onStderr ? onStderr(d) : (stderr += d)));
    if (child.stdin) {
      child.stdin.on('error', () => undefined); // a child that exits early closes its stdin
      child.stdin.end(options.input ?? '');
    }
    const timer =
      options.timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            timedOut = true;
            child.kill('SIGKILL');
          }, options.timeoutMs);
    child.on('error', (err) => {
      if (timer) clearTimeout(timer);
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') reject(new PvmlabError(`${command}: command not found`, { cause: err }));
      else reject(err);
    });
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      resolve({ command, args, code, signal, stdout, stderr, timedOut });
    });
  });
};

/** Run and fail with the command's own error output when it exits non-zero. */
export async function runChecked(
  runner: Runner,
  command: string,
  args: readonly string[],
  options?: RunOptions,
): Promise<RunResult> {
  const r = await runner(command, args, options);
  if (r.code !== 0) {
    const detail = (r.stderr.trim() || r.stdout.trim()).split('\n').slice(-5).join('\n');
    const how = r.timedOut ? 'timed out' : r.code === null ? `was killed (${r.signal})` : `exited ${r.code}`;
    throw new PvmlabError(`${command} ${how}${detail ? `: ${detail}` : ''}`);
  }
  return r;
}

export interface ProcessExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Set when the process could not be started at all (ENOENT, EACCES). */
  error?: Error;
}

/** A long-lived child whose output is consumed line by line. */
export interface LineProcess {
  readonly pid: number | undefined;
  kill(signal?: NodeJS.Signals): void;
  /** Settles once, when the process has exited or failed to start. */
  readonly done: Promise<ProcessExit>;
  /** Settles after `done` once every output line has been delivered (the last lines can follow the exit). */
  readonly closed: Promise<ProcessExit>;
}

/** Which of the child's output streams a line came from. */
export type OutputStream = 'stdout' | 'stderr';

/** Start a service process (dnsmasq under the stack); its stdout and stderr lines go to `onLine`. */
export async function startProcess(
  command: string,
  args: readonly string[],
  options: { onLine: (line: string, stream: OutputStream) => void; env?: NodeJS.ProcessEnv },
): Promise<LineProcess> {
  const [{ spawn }, { createInterface }] = await Promise.all([
    import('node:child_process'),
    import('node:readline'),
  ]);
  const child = spawn(command, [...args], {
    env: options.env ?? process.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  createInterface({ input: child.stdout }).on('line', (line) => options.onLine(line, 'stdout'));
  createInterface({ input: child.stderr }).on('line', (line) => options.onLine(line, 'stderr'));
  const done = new Promise<ProcessExit>((resolve) => {
    // A process that cannot be spawned emits 'error' and never 'exit'.
    child.once('error', (error) => resolve({ code: null, signal: null, error }));
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
  // 'close' comes once the exit is known and both pipes have ended, i.e. after the last line.
  const closed = new Promise<ProcessExit>((resolve) => {
    child.once('close', (code, signal) => resolve({ code, signal }));
    child.once('error', (error) => resolve({ code: null, signal: null, error }));
  });
  return {
    pid: child.pid,
    kill: (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    },
    done,
    closed,
  };
}

/** Find an executable on PATH without spawning `which`. */
export function which(command: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (command.includes('/')) return isExecutable(command) ? command : undefined;
  for (const dir of (env.PATH ?? '').split(delimiter)) {
    if (!dir) continue;
    const p = join(dir, command);
    if (isExecutable(p)) return p;
  }
  return undefined;
}

function isExecutable(p: string): boolean {
  try {
    accessSync(p, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

export interface DetachedOptions {
  /** The child's stdout and stderr are appended to this file (created if missing). */
  logFile: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

/** A background process started by `spawnDetached`. */
export interface DetachedProcess {
  readonly pid: number;
  /**
   * Settles if the process exits while this one still runs. The child is unref'd: it never
   * keeps this process alive, so a caller that exits first simply leaves it running.
   */
  readonly exited: Promise<ProcessExit>;
}

/**
 * Start a service in the background, as a daemon is started: a new session (so it is its
 * own process group leader, and a terminal's Ctrl-C or hang-up does not reach it), stdin
 * from /dev/null, stdout and stderr appended to `logFile`. Resolves once the process exists;
 * rejects when it cannot be started at all (ENOENT, EACCES).
 */
export async function spawnDetached(
  command: string,
  args: readonly string[],
  options: DetachedOptions,
): Promise<DetachedProcess> {
  const [{ spawn }, { promises: fs }] = await Promise.all([import('node:child_process'), import('node:fs')]);
  const log = await fs.open(options.logFile, 'a', 0o644);
  try {
    const child = spawn(command, [...args], {
      env: options.env ?? process.env,
      cwd: options.cwd,
      stdio: ['ignore', log.fd, log.fd],
      detached: true,
    });
    const exited = new Promise<ProcessExit>((resolve) => {
      child.once('error', (error) => resolve({ code: null, signal: null, error }));
      child.once('exit', (code, signal) => resolve({ code, signal }));
    });
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', () => resolve());
      child.once('error', (err) => {
        const code = (err as NodeJS.ErrnoException).code;
        reject(code === 'ENOENT' ? new PvmlabError(`${command}: command not found`, { cause: err }) : err);
      });
    });
    child.unref();
    return { pid: child.pid as number, exited };
  } finally {
    await log.close(); // the child holds its own copy of the descriptor
  }
}

/**
 * Is the process alive? A process that has exited but is not reaped yet (a zombie: a
 * daemon whose parent is gone and whose init reaps late) counts as gone.
 */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  if (process.platform !== 'linux') return true;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The fields follow the parenthesised command name, which may itself contain ')'.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // A multi-threaded process (QEMU) shows Z on its leader while its other threads are still
    // exiting and still hold its sockets and TAP: gone only once one thread is left (field 20).
    return !((f[0] === 'Z' || f[0] === 'X') && Number(f[17]) <= 1);
  } catch {
    return false; // reaped in the meantime
  }
}

/** A process's argv: /proc on Linux, `ps` elsewhere (macOS; split on white space). */
export async function processCommandLine(pid: number, runner: Runner = run): Promise<string[] | undefined> {
  if (process.platform === 'linux') {
    try {
      const raw = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      return raw.split('\0').filter((s) => s.length > 0);
    } catch {
      return undefined;
    }
  }
  const r = await runner('ps', ['-p', String(pid), '-o', 'command=']).catch(() => undefined);
  return r && r.code === 0 ? r.stdout.trim().split(/\s+/) : undefined;
}
