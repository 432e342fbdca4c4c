import { promises as fs } from 'node:fs';
import { dirname, basename, join } from 'node:path';
import { isErrno } from './errors.js';

let tmpCounter = 0;

/**
 * Write a file so readers see the old content or the new, never a mix:
 * write a temp file in the same directory, fsync it, rename over the target.
 */
export async function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o644): Promise<void> {
  // Unique per process and call; 'wx' below refuses to reuse a name anyway.
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${++tmpCounter}.tmp`);
  try {
    const fh = await fs.open(tmp, 'wx', mode);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fs.rename(tmp, path);
  } catch (err) {
    // A failed write (ENOSPC) must not leave a partial temp file behind.
    await fs.rm(tmp, { force: true }).catch(() => undefined);
    throw namedFsError(err, `cannot write ${path}`);
  }
}

/**
 * The same error with `what` (naming the file) in front of its message: a write's ENOSPC says
 * only "no space left on device, write". The code is kept for callers that test it.
 */
export function namedFsError(err: unknown, what: string): Error {
  if (!(err instanceof Error)) return new Error(`${what}: ${String(err)}`);
  const code = (err as { code?: unknown }).code;
  const reason = typeof code === 'string' ? (FS_REASONS[code] ?? err.message) : err.message;
  const out = new Error(`${what}: ${reason}`, { cause: err });
  if (typeof code === 'string') Object.assign(out, { code });
  return out;
}

const FS_REASONS: Record<string, string> = {
  ENOSPC: 'no space left on the device (free some space and retry)',
  EDQUOT: 'disk quota exceeded (free some space and retry)',
  EISDIR: 'it is a directory, where a file was expected (remove or rename it)',
  ENOTDIR: 'a component of the path is a file, where a directory was expected',
  EACCES: 'permission denied',
  EROFS: 'the file system is read-only',
};

export async function pathExists(path: string): Promise<boolean> {
  try {
    await fs.access(path);
    return true;
  } catch {
    return false;
  }
}

/** Remove a file or directory tree; a missing path is fine. */
export async function removePath(path: string): Promise<void> {
  await fs.rm(path, { recursive: true, force: true });
}

/** A file's text, or undefined when it does not exist; other errors name the file. */
export async function readTextIfExists(path: string): Promise<string | undefined> {
  try {
    return await fs.readFile(path, 'utf8');
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return undefined;
    throw namedFsError(err, `cannot read ${path}`);
  }
}

/**
 * The end of a growing file (a log) as text: from byte `offset`, and no more than its last
 * `maxBytes`. '' when it cannot be opened (not written yet) or holds nothing past `offset`.
 */
export async function readFileEnd(
  path: string,
  { offset = 0, maxBytes = Infinity }: { offset?: number; maxBytes?: number } = {},
): Promise<string> {
  const fh = await fs.open(path, 'r').catch(() => undefined);
  if (!fh) return '';
  try {
    const size = (await fh.stat()).size;
    const from = Math.max(offset, size - maxBytes);
    if (size <= from) return '';
    const buf = Buffer.alloc(size - from);
    await fh.read(buf, 0, buf.length, from);
    return buf.toString('utf8');
  } finally {
    await fh.close();
  }
}
