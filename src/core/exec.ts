import type { StdioOptions } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
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
    child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
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
}

/** Start a service process (dnsmasq under the stack); its stdout and stderr lines go to `onLine`. */
export async function startProcess(
  command: string,
  args: readonly string[],
  options: { onLine: (line: string) => void; env?: NodeJS.ProcessEnv },
): Promise<LineProcess> {
  const [{ spawn }, { createInterface }] = await Promise.all([
    import('node:child_process'),
    import('node:readline'),
  ]);
  const child = spawn(command, [...args], {
    env: options.env ?? process.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  for (const stream of [child.stdout, child.stderr])
    createInterface({ input: stream }).on('line', options.onLine);
  const done = new Promise<ProcessExit>((resolve) => {
    // A process that cannot be spawned emits 'error' and never 'exit'.
    child.once('error', (error) => resolve({ code: null, signal: null, error }));
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
  return {
    pid: child.pid,
    kill: (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    },
    done,
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
