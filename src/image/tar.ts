/**
 * Just enough tar to read and replace a docker-archive's small name files. GNU tar's --delete
 * is not used: on podman's archives it dropped the members after a large one (seen with tar
 * 1.34). Headers are ustar, with PAX (`x`) and GNU long-name (`L`) records followed for names.
 */
import { promises as fs } from 'node:fs';
import { PvmlabError } from '../core/errors.js';

const BLOCK = 512;

export interface TarHeader {
  name: string;
  size: number;
  /** The type flag: '0' file, '5' directory, '2' symlink, 'x' PAX record, 'L' GNU long name, ... */
  type: string;
}

const text = (b: Buffer, start: number, length: number) => {
  const field = b.subarray(start, start + length);
  const nul = field.indexOf(0);
  return field.subarray(0, nul < 0 ? length : nul).toString('utf8');
};

/** An octal number field, or the base-256 form (high bit set) large sizes use. */
function numberField(b: Buffer, start: number, length: number): number {
  const field = b.subarray(start, start + length);
  if ((field[0] ?? 0) & 0x80) {
    let n = (field[0] as number) & 0x7f;
    for (let i = 1; i < length; i++) n = n * 256 + (field[i] as number);
    return n;
  }
  const digits = text(b, start, length).trim();
  if (!/^[0-7]*$/.test(digits)) throw new PvmlabError(`not a tar header (number field '${digits}')`);
  return digits === '' ? 0 : parseInt(digits, 8);
}

function checksum(block: Buffer): number {
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : (block[i] as number);
  return sum;
}

/** One header block: the entry, or 'end' for the zero block that ends an archive. */
export function parseHeader(block: Buffer): TarHeader | 'end' {
  if (block.length !== BLOCK) throw new PvmlabError('truncated tar archive');
  if (block.every((b) => b === 0)) return 'end';
  if (numberField(block, 148, 8) !== checksum(block)) throw new PvmlabError('bad tar header checksum');
  const name = text(block, 0, 100);
  const prefix = text(block, 257, 6).startsWith('ustar') ? text(block, 345, 155) : '';
  return {
    name: prefix ? `${prefix}/${name}` : name,
    size: numberField(block, 124, 12),
    type: String.fromCharCode(block[156] || 0x30),
  };
}

/** A ustar header for a regular file owned by root, time 0 (name at most 100 bytes). */
export function fileHeader(name: string, size: number, mode = 0o644): Buffer {
  if (Buffer.byteLength(name) > 100) throw new PvmlabError(`tar member name too long: ${name}`);
  const b = Buffer.alloc(BLOCK);
  const octal = (n: number, width: number) => `${n.toString(8).padStart(width - 1, '0')}\0`;
  b.write(name, 0, 'utf8');
  b.write(octal(mode, 8), 100, 'ascii');
  b.write(octal(0, 8), 108, 'ascii');
  b.write(octal(0, 8), 116, 'ascii');
  b.write(octal(size, 12), 124, 'ascii');
  b.write(octal(0, 12), 136, 'ascii');
  b.write('0', 156, 'ascii');
  b.write('ustar\0', 257, 'ascii');
  b.write('00', 263, 'ascii');
  b.write('root', 265, 'ascii');
  b.write('root', 297, 'ascii');
  b.write(`${checksum(b).toString(8).padStart(6, '0')}\0 `, 148, 'ascii');
  return b;
}

const padded = (size: number) => Math.ceil(size / BLOCK) * BLOCK;

/** The name a PAX record (`path=`) or a GNU long-name entry gives the next entry. */
function nameFromRecord(type: string, data: Buffer): string | undefined {
  if (type === 'L') return text(data, 0, data.length);
  const m = /(?:^|\n)\d+ path=([^\n]*)\n/.exec(data.toString('utf8'));
  return m?.[1];
}

interface Entry {
  header: TarHeader;
  /** Offset of its first header block (a PAX or long-name record before it included). */
  start: number;
  dataOffset: number;
  end: number;
}

/** Every entry of the archive at `path`, with where it lies. */
async function entries(path: string): Promise<Entry[]> {
  const f = await fs.open(path, 'r');
  try {
    const { size: total } = await f.stat();
    const out: Entry[] = [];
    const block = Buffer.alloc(BLOCK);
    let pos = 0;
    let pending: { start: number; name?: string } | undefined;
    for (;;) {
      if (pos + BLOCK > total) throw new PvmlabError(`${path}: truncated tar archive (no end block)`);
      await f.read(block, 0, BLOCK, pos);
      const h = parseHeader(block);
      if (h === 'end') break;
      const dataOffset = pos + BLOCK;
      const end = dataOffset + padded(h.size);
      if (end > total) throw new PvmlabError(`${path}: truncated tar archive (${h.name})`);
      if (h.type === 'x' || h.type === 'L') {
        const data = Buffer.alloc(h.size);
        await f.read(data, 0, h.size, dataOffset);
        const name = nameFromRecord(h.type, data);
        pending = { start: pending?.start ?? pos, ...(name !== undefined ? { name } : {}) };
      } else {
        out.push({
          header: pending?.name !== undefined ? { ...h, name: pending.name } : h,
          start: pending?.start ?? pos,
          dataOffset,
          end,
        });
        pending = undefined;
      }
      pos = end;
    }
    return out;
  } finally {
    await f.close();
  }
}

/** The names of the archive's members. */
export async function listTar(path: string): Promise<string[]> {
  return (await entries(path)).map((e) => e.header.name);
}

/** A member's bytes (for small members: the name files), or undefined when it has none. */
export async function readTarMember(path: string, name: string): Promise<Buffer | undefined> {
  const e = (await entries(path)).find((x) => x.header.name === name);
  if (!e) return undefined;
  const f = await fs.open(path, 'r');
  try {
    const data = Buffer.alloc(e.header.size);
    await f.read(data, 0, e.header.size, e.dataOffset);
    return data;
  } finally {
    await f.close();
  }
}

/**
 * Write `dest`: `src` without the members named in `files`, then those as new regular files
 * (root, time 0), then the end of the archive.
 */
export async function replaceTarMembers(
  src: string,
  dest: string,
  files: readonly { name: string; data: Buffer }[],
): Promise<void> {
  const drop = new Set(files.map((f) => f.name));
  const list = await entries(src);
  const input = await fs.open(src, 'r');
  const output = await fs.open(dest, 'w');
  try {
    const chunk = Buffer.alloc(1 << 20);
    let at = 0;
    for (const e of list) {
      if (drop.has(e.header.name)) continue;
      for (let pos = e.start; pos < e.end;) {
        const { bytesRead } = await input.read(chunk, 0, Math.min(chunk.length, e.end - pos), pos);
        if (bytesRead === 0) throw new PvmlabError(`${src}: truncated tar archive`);
        await output.write(chunk, 0, bytesRead, at);
        pos += bytesRead;
        at += bytesRead;
      }
    }
    for (const f of files) {
      const body = Buffer.alloc(padded(f.data.length));
      f.data.copy(body);
      await output.write(Buffer.concat([fileHeader(f.name, f.data.length), body]), 0, undefined, at);
      at += BLOCK + body.length;
    }
    await output.write(Buffer.alloc(2 * BLOCK), 0, 2 * BLOCK, at);
  } finally {
    await input.close();
    await output.close();
  }
}
