/**
 * A writer for the `newc` cpio format the Linux kernel unpacks as an initramfs
 * (see the kernel's Documentation/driver-api/early-userspace/buffer-format.rst).
 */
export interface CpioEntry {
  /** Path inside the archive, without a leading slash. */
  path: string;
  type: 'file' | 'dir' | 'symlink';
  /** Permission bits, e.g. 0o755. */
  mode: number;
  /** File content, or the link target for a symlink. */
  data?: Uint8Array | string;
  mtime?: number;
}

const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;

function hex8(n: number): string {
  return (n >>> 0).toString(16).padStart(8, '0');
}

function pad4(n: number): number {
  return (4 - (n % 4)) % 4;
}

function header(
  ino: number,
  mode: number,
  nlink: number,
  mtime: number,
  size: number,
  nameSize: number,
): string {
  // magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor, namesize, check
  return `070701${[ino, mode, 0, 0, nlink, mtime, size, 0, 0, 0, 0, nameSize, 0].map(hex8).join('')}`;
}

function record(
  ino: number,
  mode: number,
  nlink: number,
  mtime: number,
  name: string,
  data: Uint8Array,
): Uint8Array[] {
  const nameBuf = Buffer.from(`${name}\0`);
  const head = Buffer.from(header(ino, mode, nlink, mtime, data.length, nameBuf.length));
  const out: Uint8Array[] = [head, nameBuf, Buffer.alloc(pad4(head.length + nameBuf.length))];
  if (data.length) out.push(data, Buffer.alloc(pad4(data.length)));
  return out;
}

export function buildCpio(entries: readonly CpioEntry[]): Buffer {
  const parts: Uint8Array[] = [];
  let ino = 1;
  for (const e of entries) {
    if (e.path.startsWith('/') || e.path === '' || e.path.split('/').includes('..'))
      throw new Error(`cpio: invalid path '${e.path}'`);
    const kind = e.type === 'dir' ? S_IFDIR : e.type === 'symlink' ? S_IFLNK : S_IFREG;
    const data = e.type === 'dir' ? Buffer.alloc(0) : Buffer.from(e.data ?? '');
    parts.push(
      ...record(ino++, kind | (e.mode & 0o7777), e.type === 'dir' ? 2 : 1, e.mtime ?? 0, e.path, data),
    );
  }
  parts.push(...record(0, 0, 1, 0, 'TRAILER!!!', Buffer.alloc(0)));
  return Buffer.concat(parts);
}
