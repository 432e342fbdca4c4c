import { randomBytes } from 'node:crypto';
import { promises as fs, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { PvmlabError, isErrno } from '../core/errors.js';
import { labDirs } from '../core/paths.js';

/**
 * One VM's start/stop lock: `locks/vm-<name>.lock`, holding "<pid> <start time> <operation> <token>".
 * Starts, stops and cleans of one VM run one at a time, so a losing start never undoes what the
 * winner made (its TAP, its QMP socket). The lab lock (src/lab/lock.ts) is not used: a start holds
 * this one for seconds and must not hold up `vm create` of other VMs.
 *
 * The file is written whole before it appears (hard link of a written temp file), so it is never
 * empty; a holder that died, or whose pid now names another process (start time differs), is stale
 * and taken over, so a killed `vm start` never wedges the VM.
 */
export interface VmLockHolder {
  pid: number;
  /** The holder's start time in clock ticks since boot (Linux); undefined elsewhere. */
  startTime?: string;
  operation: string;
  /** Tells two holders in one process apart, so a release removes only its own lock. */
  token?: string;
}

export interface VmLockOptions {
  timeoutMs?: number;
  /** Called once when the lock is busy, with its holder, before waiting. */
  onWait?: (holder: VmLockHolder) => void;
}

export interface VmLock {
  path: string;
  release(): Promise<void>;
}

export function vmLockPath(app: string, name: string): string {
  return join(labDirs(app).locks, `vm-${name}.lock`);
}

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

export function formatHolder(h: VmLockHolder): string {
  return `${h.pid} ${h.startTime ?? '-'} ${h.operation}${h.token ? ` ${h.token}` : ''}\n`;
}

export function parseHolder(text: string): VmLockHolder | undefined {
  const m = /^(\d+) (\d+|-) (\S+)(?: (\S+))?\n?$/.exec(text);
  if (!m) return undefined;
  const pid = Number(m[1]);
  if (!Number.isSafeInteger(pid) || pid <= 0) return undefined;
  return {
    pid,
    ...(m[2] !== '-' ? { startTime: m[2] } : {}),
    operation: m[3] as string,
    ...(m[4] ? { token: m[4] } : {}),
  };
}

/** The holder is gone: no such pid, or the pid now belongs to a process started at another time. */
export function holderGone(h: VmLockHolder, startTimeOf = processStartTime): boolean {
  if (!alive(h.pid)) return true;
  if (h.startTime === undefined) return false;
  const now = startTimeOf(h.pid);
  return now !== undefined && now !== h.startTime;
}

/** A lock whose text is not ours (an older pvmlab, a damaged disk) is stale once it is this old. */
const UNREADABLE_STALE_MS = 10_000;
/** A break guard older than this was left by a process that died while breaking a lock. */
const GUARD_STALE_MS = 10_000;

export async function acquireVmLock(
  app: string,
  name: string,
  operation: string,
  options: VmLockOptions = {},
): Promise<VmLock> {
  const path = vmLockPath(app, name);
  await fs.mkdir(labDirs(app).locks, { recursive: true });
  const startTime = processStartTime(process.pid);
  const token = randomBytes(6).toString('hex');
  const mine = formatHolder({ pid: process.pid, ...(startTime ? { startTime } : {}), operation, token });
  const deadline = Date.now() + (options.timeoutMs ?? 300_000);
  let told = false;
  for (let attempt = 0; ; attempt++) {
    if (await tryCreate(path, mine, token))
      return {
        path,
        release: async () => {
          // Only our own lock: a lock broken as stale (we were stopped for long?) is someone else's now.
          if ((await readText(path)) === mine) await fs.rm(path, { force: true });
        },
      };
    const text = await readText(path);
    if (text === undefined) continue; // released in the meantime
    const holder = parseHolder(text);
    const stale = holder
      ? holderGone(holder)
      : Date.now() - ((await fs.stat(path).catch(() => undefined))?.mtimeMs ?? Date.now()) >
        UNREADABLE_STALE_MS;
    if (stale && (await breakStale(path, text))) continue;
    if (!stale && holder && !told) {
      told = true;
      options.onWait?.(holder);
    }
    if (Date.now() > deadline)
      throw new PvmlabError(
        `timed out waiting for VM '${name}': ${
          holder ? `pid ${holder.pid} (pvmlab vm ${holder.operation}) holds` : 'something holds'
        } its lock ${path}; wait for it to finish, or remove the file if that process is not pvmlab`,
      );
    await new Promise((r) => setTimeout(r, Math.min(20 + attempt * 10, 200) + Math.random() * 20));
  }
}

export async function withVmLock<T>(
  app: string,
  name: string,
  operation: string,
  fn: () => Promise<T>,
  options: VmLockOptions = {},
): Promise<T> {
  const lock = await acquireVmLock(app, name, operation, options);
  try {
    return await fn();
  } finally {
    await lock.release();
  }
}

/** Write the whole text to a private file, then link it into place: the lock never exists empty. */
async function tryCreate(path: string, text: string, token: string): Promise<boolean> {
  const tmp = `${path}.${token}.tmp`;
  try {
    await fs.writeFile(tmp, text, { mode: 0o644 });
    await fs.link(tmp, path);
    return true;
  } catch (err) {
    if (isErrno(err, 'EEXIST')) return false;
    throw new PvmlabError(`cannot create the VM lock ${path}: ${(err as Error).message}`);
  } finally {
    await fs.rm(tmp, { force: true });
  }
}

async function readText(path: string): Promise<string | undefined> {
  try {
    return await fs.readFile(path, 'utf8');
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return undefined;
    throw new PvmlabError(`cannot read the VM lock ${path}: ${(err as Error).message}`);
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
    if (!isErrno(err, 'EEXIST'))
      throw new PvmlabError(`cannot break the stale VM lock ${path}: ${String(err)}`);
    const st = await fs.stat(guard).catch(() => undefined);
    if (st && Date.now() - st.mtimeMs > GUARD_STALE_MS) await fs.rm(guard, { force: true });
    return false;
  }
  try {
    if ((await readText(path)) !== staleText) return false;
    await fs.rm(path, { force: true });
    return true;
  } finally {
    await fs.rm(guard, { force: true });
  }
}
