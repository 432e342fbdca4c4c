import { promises as fs } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { PvmlabError, isErrno } from '../core/errors.js';
import { namedFsError } from '../core/fsutil.js';

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
 * An exclusive lock file holding the owner's pid. The pid is written to a private temp file
 * first and `link()`ed to the lock name (atomic, fails if the name exists): the lock is never
 * seen empty, so a death or a full disk mid-write cannot leave a lock nobody can judge. A lock
 * left by a process that died is taken over; so is an empty or unreadable one (an older pvmlab's
 * open-then-write) once it is EMPTY_STALE_MS old.
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
  await fs.mkdir(dirname(path), { recursive: true }).catch((err: unknown) => {
    throw namedFsError(err, `cannot create the lock directory ${dirname(path)}`);
  });
  const deadline = Date.now() + timeoutMs;
  let holder = 0;
  const tmp = `${path}.${process.pid}.${++tmpCounter}.tmp`;
  try {
    await fs.writeFile(tmp, String(process.pid), { flag: 'wx', mode: 0o644 });
  } catch (err) {
    await fs.rm(tmp, { force: true }).catch(() => undefined);
    throw namedFsError(err, `cannot take the lab lock ${path}`);
  }
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        await linkOrCreate(tmp, path);
        await removeDeadTemps(path);
        return async () => {
          await fs.rm(path, { force: true });
        };
      } catch (err) {
        if (!isErrno(err, 'EEXIST')) throw namedFsError(err, `cannot take the lab lock ${path}`);
      }
      holder = await readHolder(path);
      if (holder > 0 && !alive(holder) && (await breakStale(path, holder))) continue;
      if (holder === 0 && (await emptyAndOld(path)) && (await breakStale(path, 0))) continue;
      if (Date.now() > deadline)
        throw new PvmlabError(
          `timed out waiting for the lab lock ${path}${holder ? ` (held by pid ${holder})` : ''}`,
        );
      await new Promise((r) => setTimeout(r, Math.min(10 + attempt * 5, 100) + Math.random() * 10));
    }
  } finally {
    await fs.rm(tmp, { force: true });
  }
}

let tmpCounter = 0;

/** link(), or where the file system has no hard links, the old O_EXCL create (never left empty by a death of ours before the write, but possibly by ENOSPC). */
async function linkOrCreate(tmp: string, path: string): Promise<void> {
  try {
    await fs.link(tmp, path);
  } catch (err) {
    if (!isErrno(err, 'EPERM') && !isErrno(err, 'ENOTSUP') && !isErrno(err, 'EOPNOTSUPP')) throw err;
    await fs.writeFile(path, String(process.pid), { flag: 'wx', mode: 0o644 });
  }
}

/** Temp files of lockers killed before they could remove theirs (kill -9): clutter, removed by the next holder. */
async function removeDeadTemps(path: string): Promise<void> {
  const dir = dirname(path);
  const prefix = `${basename(path)}.`;
  const names = await fs.readdir(dir).catch(() => [] as string[]);
  for (const n of names) {
    const m = n.startsWith(prefix) ? /^(\d+)\.\d+\.tmp$/.exec(n.slice(prefix.length)) : null;
    if (m && Number(m[1]) !== process.pid && !alive(Number(m[1])))
      await fs.rm(join(dir, n), { force: true }).catch(() => undefined);
  }
}

/** An empty or unparsable lock older than this was left by a writer that died (or ran out of space). */
const EMPTY_STALE_MS = 5_000;

async function emptyAndOld(path: string): Promise<boolean> {
  const st = await fs.stat(path).catch(() => undefined);
  return st !== undefined && Date.now() - st.mtimeMs > EMPTY_STALE_MS;
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
    // Only the dead owner's lock (or the old empty one): it cannot change under us, as nobody
    // else may remove it now; a fresh lock always holds a pid.
    if ((await readHolder(path)) !== deadPid) return false;
    if (deadPid === 0 && !(await emptyAndOld(path))) return false;
    await fs.rm(path, { force: true });
    return true;
  } finally {
    await fs.rm(guard, { force: true });
  }
}
