import { promises as fs } from 'node:fs';
import { dirname } from 'node:path';
import { PvmlabError, isErrno } from '../core/errors.js';

export interface LockOptions {
  timeoutMs?: number;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return isErrno(err, 'EPERM');
  }
}

/**
 * An exclusive lock file holding the owner's pid. `open(O_EXCL)` is atomic on local file
 * systems; a lock left by a process that died is taken over.
 */
export async function withLock<T>(path: string, fn: () => Promise<T>, options: LockOptions = {}): Promise<T> {
  const release = await acquire(path, options.timeoutMs ?? 60_000);
  try {
    return await fn();
  } finally {
    await release();
  }
}

async function acquire(path: string, timeoutMs: number): Promise<() => Promise<void>> {
  await fs.mkdir(dirname(path), { recursive: true });
  const deadline = Date.now() + timeoutMs;
  let holder = 0;
  for (let attempt = 0; ; attempt++) {
    try {
      const fh = await fs.open(path, 'wx', 0o644);
      await fh.writeFile(String(process.pid));
      await fh.close();
      return async () => {
        await fs.rm(path, { force: true });
      };
    } catch (err) {
      if (!isErrno(err, 'EEXIST')) throw err;
    }
    holder = await readHolder(path);
    if (holder > 0 && !alive(holder) && (await breakStale(path, holder))) continue;
    if (Date.now() > deadline)
      throw new PvmlabError(
        `timed out waiting for the lab lock ${path}${holder ? ` (held by pid ${holder})` : ''}`,
      );
    await new Promise((r) => setTimeout(r, Math.min(10 + attempt * 5, 100) + Math.random() * 10));
  }
}

async function readHolder(path: string): Promise<number> {
  try {
    const text = await fs.readFile(path, 'utf8');
    const pid = Number(text.trim());
    return Number.isInteger(pid) && pid > 0 ? pid : 0;
  } catch {
    return 0;
  }
}

/** A break guard older than this was left by a process that died while breaking a lock. */
const GUARD_STALE_MS = 10_000;

/**
 * Remove a lock left by a dead process; true if we removed it. Waiters that saw the same stale
 * lock must not act on it one after another, or a later one removes the fresh lock an earlier
 * one just took: a second O_EXCL file guards the re-check and the removal.
 */
async function breakStale(path: string, deadPid: number): Promise<boolean> {
  const guard = `${path}.break`;
  try {
    await (await fs.open(guard, 'wx', 0o644)).close();
  } catch (err) {
    if (!isErrno(err, 'EEXIST')) throw err;
    const st = await fs.stat(guard).catch(() => undefined);
    if (st && Date.now() - st.mtimeMs > GUARD_STALE_MS) await fs.rm(guard, { force: true });
    return false;
  }
  try {
    // Only the dead owner's lock: it cannot change under us, as nobody else may remove it now.
    if ((await readHolder(path)) !== deadPid) return false;
    await fs.rm(path, { force: true });
    return true;
  } finally {
    await fs.rm(guard, { force: true });
  }
}
