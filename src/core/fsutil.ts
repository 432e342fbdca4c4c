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
  const fh = await fs.open(tmp, 'wx', mode);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await fs.rename(tmp, path);
  } catch (err) {
    await fs.rm(tmp, { force: true });
    throw err;
  }
}

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

export async function readTextIfExists(path: string): Promise<string | undefined> {
  try {
    return await fs.readFile(path, 'utf8');
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return undefined;
    throw err;
  }
}
