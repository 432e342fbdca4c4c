import { randomBytes } from 'node:crypto';
import { promises as fs, readFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { PvmlabError, isErrno } from './errors.js';
import { namedFsError } from './fsutil.js';

/**
 * pvmlab's one lock-file implementation (the lab state lock, the stack service lock, each VM's
 * start/stop lock). The file holds "<pid> <start time> <operation> <token>":
 *
 * - It is written whole to a private temp file, then `link()`ed to the lock name (atomic, fails if
 *   the name exists), so it is never seen empty: a death or a full disk mid-write cannot leave a
 *   lock nobody can judge.
 * - A holder that died, or whose pid now names a process with another start time (pid reuse), is
 *   stale and taken over at once. An empty or unparsable lock (an older pvmlab's open-then-write,
 *   a damaged disk) is stale once EMPTY_STALE_MS old. An older pvmlab's lab lock holding just
 *   "<pid>" is understood: a holder without start time.
 * - A `.break` guard serialises breaking, so two waiters never remove a fresh lock.
 * - A release removes only its own lock (the token), never one taken after ours was broken.
 */
export interface LockHolder {
  pid: number;
  /** The holder's start time in clock ticks since boot (Linux); undefined elsewhere, or in an old lock. */
  startTime?: string;
  /** What the holder does ("start", "lab-state"); undefined in an old "<pid>" lock. */
  operation?: string;
  /** Tells two holders in one process apart, so a release removes only its own lock. */
  token?: string;
}

export interface LockOptions {
  /** Give up after this long (default 60 s). */
  timeoutMs?: number;
  /** Written into the lock for waiters and their error messages (no whitespace). */
  operation?: string;
  /** What the caller waits for, in the timeout message ("VM 'vm1'"); default "the lock". */
  what?: string;
  /** The holder's command, in messages, from its operation (default "pvmlab <operation>"). */
  command?: (operation: string) => string;
  /** Called once when the lock is busy, with its live holder, before waiting. */
  onWait?: (holder: LockHolder) => void;
}

export interface HeldLock {
  path: string;
  release(): Promise<void>;
}

/** An empty or unparsable lock older than this was left by a writer that died (or ran out of space). */
export const EMPTY_STALE_MS = 5_000;
/** A break guard older than this was left by a process that died while breaking a lock. */
const GUARD_STALE_MS = 10_000;

/** Field 22 of /proc/<pid>/stat: with the pid, it names one process for the life of the system. */
export function processStartTime(pid: number): string | undefined {
  if (process.platform !== 'linux') return undefined;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the parenthesised command (which may contain spaces and ')'): state is field 3.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return rest[19];
  } catch {
    return undefined;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return isErrno(err, 'EPERM');
  }
}

export function formatHolder(h: LockHolder): string {
  return `${h.pid} ${h.startTime ?? '-'} ${h.operation ?? '-'}${h.token ? ` ${h.token}` : ''}\n`;
}

/** The current format only; holderOf also reads an old lab lock's bare "<pid>". */
export function parseHolder(text: string): LockHolder | undefined {
  const m = /^(\d+) (\d+|-) (\S+)(?: (\S+))?\n?$/.exec(text);
  if (!m) return undefined;
  const pid = Number(m[1]);
  if (!Number.isSafeInteger(pid) || pid <= 0) return undefined;
  return {
    pid,
    ...(m[2] !== '-' ? { startTime: m[2] } : {}),
    ...(m[3] !== '-' ? { operation: m[3] } : {}),
    ...(m[4] ? { token: m[4] } : {}),
  };
}

/** A lock's holder in either format: the current one, or an older pvmlab's bare "<pid>". */
export function holderOf(text: string): LockHolder | undefined {
  const h = parseHolder(text);
  if (h) return h;
  const pid = /^\s*(\d+)\s*$/.test(text) ? Number(text.trim()) : 0;
  return Number.isSafeInteger(pid) && pid > 0 ? { pid } : undefined;
}

/** The holder is gone: no such pid, or the pid now belongs to a process started at another time. */
export function holderGone(h: LockHolder, startTimeOf = processStartTime): boolean {
  if (!alive(h.pid)) return true;
  if (h.startTime === undefined) return false;
  const now = startTimeOf(h.pid);
  return now !== undefined && now !== h.startTime;
}

export async function withLock<T>(path: string, fn: () => Promise<T>, options: LockOptions = {}): Promise<T> {
  const lock = await acquireLock(path, options);
  try {
    return await fn();
  } finally {
    await lock.release();
  }
}

let tmpCounter = 0;

export async function acquireLock(path: string, options: LockOptions = {}): Promise<HeldLock> {
  await fs.mkdir(dirname(path), { recursive: true }).catch((err: unknown) => {
    throw namedFsError(err, `cannot create the lock directory ${dirname(path)}`);
  });
  const startTime = processStartTime(process.pid);
  const token = randomBytes(6).toString('hex');
  const mine = formatHolder({
    pid: process.pid,
    ...(startTime ? { startTime } : {}),
    operation: options.operation ?? 'lock',
    token,
  });
  const deadline = Date.now() + (options.timeoutMs ?? 60_000);
  // The pid in the name lets the next holder remove the temp files of lockers killed mid-way.
  const tmp = `${path}.${process.pid}.${++tmpCounter}.tmp`;
  try {
    await fs.writeFile(tmp, mine, { flag: 'wx', mode: 0o644 });
  } catch (err) {
    await fs.rm(tmp, { force: true }).catch(() => undefined);
    throw namedFsError(err, `cannot take the lock ${path}`);
  }
  let told = false;
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        await linkOrCreate(tmp, path, mine);
        await removeDeadTemps(path);
        return {
          path,
          release: async () => {
            // Only our own lock: one broken as stale (were we stopped for long?) is someone else's now.
            if ((await readText(path)) === mine) await fs.rm(path, { force: true });
          },
        };
      } catch (err) {
        if (!isErrno(err, 'EEXIST')) throw namedFsError(err, `cannot take the lock ${path}`);
      }
      const text = await readText(path);
      if (text === undefined) continue; // released in the meantime
      const holder = holderOf(text);
      const stale = holder ? holderGone(holder) : await oldEnough(path);
      if (stale && (await breakStale(path, text))) continue;
      if (!stale && holder && !told) {
        told = true;
        options.onWait?.(holder);
      }
      if (Date.now() > deadline) throw timeoutError(path, holder, options);
      await new Promise((r) => setTimeout(r, Math.min(10 + attempt * 5, 100) + Math.random() * 10));
    }
  } finally {
    await fs.rm(tmp, { force: true });
  }
}

function timeoutError(path: string, holder: LockHolder | undefined, options: LockOptions): PvmlabError {
  const what = options.what ?? 'the lock';
  if (!holder)
    return new PvmlabError(
      `timed out waiting for ${what}: its lock ${path} names no holder (being written, or left by a ` +
        `writer that died: it is taken over once ${EMPTY_STALE_MS / 1000} s old); retry, or remove the file if no pvmlab command runs`,
    );
  const command = holder.operation
    ? (options.command ?? ((op) => `pvmlab ${op}`))(holder.operation)
    : 'pvmlab';
  return new PvmlabError(
    `timed out waiting for ${what}: pid ${holder.pid} (${command}) holds its lock ${path}; ` +
      'wait for it to finish, or remove the file if that process is not pvmlab',
  );
}

/** link(), or where the file system has no hard links, the old O_EXCL create (never left empty by a death of ours before the write, but possibly by ENOSPC). */
async function linkOrCreate(tmp: string, path: string, text: string): Promise<void> {
  try {
    await fs.link(tmp, path);
  } catch (err) {
    if (!isErrno(err, 'EPERM') && !isErrno(err, 'ENOTSUP') && !isErrno(err, 'EOPNOTSUPP')) throw err;
    await fs.writeFile(path, text, { flag: 'wx', mode: 0o644 });
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

async function oldEnough(path: string): Promise<boolean> {
  const st = await fs.stat(path).catch(() => undefined);
  return st !== undefined && Date.now() - st.mtimeMs > EMPTY_STALE_MS;
}

async function readText(path: string): Promise<string | undefined> {
  try {
    return await fs.readFile(path, 'utf8');
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return undefined;
    throw namedFsError(err, `cannot read the lock ${path}`);
  }
}

/**
 * Remove a stale lock, true if we did. Waiters that saw the same stale lock must not remove it one
 * after another (a later one would remove the fresh lock an earlier one just took): an O_EXCL
 * guard covers the re-check and the removal, and only the very text judged stale is removed.
 */
async function breakStale(path: string, staleText: string): Promise<boolean> {
  const guard = `${path}.break`;
  try {
    await (await fs.open(guard, 'wx', 0o644)).close();
  } catch (err) {
    if (!isErrno(err, 'EEXIST')) throw namedFsError(err, `cannot break the stale lock ${path}`);
    const st = await fs.stat(guard).catch(() => undefined);
    if (st && Date.now() - st.mtimeMs > GUARD_STALE_MS) await fs.rm(guard, { force: true });
    return false;
  }
  try {
    if ((await readText(path)) !== staleText) return false;
    // A lock with no holder may be a fresh one being written (the no-hard-link fallback): only an old one goes.
    if (!holderOf(staleText) && !(await oldEnough(path))) return false;
    await fs.rm(path, { force: true });
    return true;
  } finally {
    await fs.rm(guard, { force: true });
  }
}
