import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QmpClient } from '../../src/qemu/qmp.js';

export { fakeRunner, type Reply } from './runner.js';

/** A short temp dir (unix socket paths must stay under ~100 bytes) and its cleanup. */
export async function shortTempDir(prefix = 'pv-'): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** Poll until `cond` holds; throws after `ms`. */
export async function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export const waitForFile = (path: string, ms = 5000) => waitFor(() => existsSync(path), ms, path);

/** Run a program to completion; resolves with its exit status and output (never rejects on status). */
export function execStatus(
  cmd: string,
  args: readonly string[],
  timeoutMs = 20_000,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(cmd, [...args], { timeout: timeoutMs, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number' && err.code !== undefined && err.code !== null) reject(err);
      else resolve({ code: err ? (typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr });
    });
  });
}

/** Kill a pid if it still exists; a pid that is already gone is fine. */
export function killQuietly(pid: number | undefined, signal: NodeJS.Signals = 'SIGKILL'): void {
  if (pid === undefined || pid <= 0) return;
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}

/** Connect to a QMP socket QEMU may still be setting up (bound but not yet listening). */
export async function connectQmp(path: string, ms = 10_000): Promise<QmpClient> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await QmpClient.connect(path);
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}
