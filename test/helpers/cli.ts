import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

/** The built CLI, run exactly as a user runs it. */
export const BIN = resolve('bin/pvmlab.js');

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface CliOptions {
  home: string;
  /** Run inside this network namespace (`ip netns exec`). */
  netns?: string;
  env?: NodeJS.ProcessEnv;
  input?: string;
  timeoutMs?: number;
  /** Variables removed from the inherited environment (e.g. PVMLAB_ACCEL, to test the default path). */
  unset?: string[];
}

export function runCli(args: string[], o: CliOptions): Promise<CliResult> {
  const argv = o.netns
    ? ['ip', 'netns', 'exec', o.netns, process.execPath, BIN, ...args]
    : [process.execPath, BIN, ...args];
  return new Promise((res, rej) => {
    const env: NodeJS.ProcessEnv = { ...process.env, NO_COLOR: '1', PVMLAB_HOME: o.home, ...o.env };
    for (const k of o.unset ?? []) delete env[k];
    const child = spawn(argv[0] as string, argv.slice(1), {
      env,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.stdin.end(o.input ?? '');
    const timer = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs ?? 120_000);
    child.on('error', rej);
    child.on('close', (code) => {
      clearTimeout(timer);
      res({ code, stdout, stderr });
    });
  });
}

export async function tempHome(
  prefix = 'pvmlab-test-',
): Promise<{ home: string; app: string; cleanup: () => Promise<void> }> {
  const home = await mkdtemp(join(tmpdir(), prefix));
  return { home, app: join(home, '.pvmlab'), cleanup: () => rm(home, { recursive: true, force: true }) };
}
