// A minimal ISO 9660 (ECMA-119) image writer with Joliet extensions, enough for cloud-init NoCloud
// seed images (volume id `cidata`, a handful of files in the root directory) without mkisofs.
//
// Layout (2048-byte sectors):
//   0-15   system area (zeros)
//   16     Primary Volume Descriptor      -> ISO 9660 tree with 8.3 uppercase names
//   17     Joliet Supplementary Volume Descriptor -> tree with the original names in UCS-2
//   18     Volume Descriptor Set Terminator
//   19-22  path tables: ISO L, ISO M, Joliet L, Joliet M
//   23..   ISO root directory, then Joliet root directory
//   ..     file data, each file starting on a sector boundary (both trees point at the same extents)

export interface IsoFile {
  name: string;
  data: Uint8Array;
}

const SECTOR = 2048;
const FIRST_DESCRIPTOR_SECTOR = 16; // sectors 0-15 are the system area
const MAX_NAME_LENGTH = 64; // Joliet allows 64 UCS-2 characters (128 bytes) per identifier
const JOLIET_VOLUME_ID_CHARS = 16; // the 32-byte field holds 16 UCS-2 characters
const APPLICATION_ID = 'PVMLAB';
// ISO 2022 escape sequence for UCS-2 level 3: the mark readers use to recognise a Joliet SVD.
const JOLIET_ESCAPE = [0x25, 0x2f, 0x45]; // "%/E"
const FLAG_DIRECTORY = 0x02;
const PATH_TABLE_SIZE = 10; // one record: the root directory

type Encoding = 'ascii' | 'ucs2';

/** Builds an ISO 9660 + Joliet image holding `files` in its root directory. */
export function buildIso(files: readonly IsoFile[], options: { volumeId: string; date?: Date }): Buffer {
  validateVolumeId(options.volumeId);
  validateFiles(files);
  const date = options.date ?? new Date();
  validateDate(date);

  // Sorting by name first makes the output independent of the caller's order, and makes the
  // 8.3 collision suffixes deterministic.
  const sorted = [...files].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const isoNames = level1Names(sorted.map((f) => f.name));
  const entries = sorted.map((file, i) => ({
    file,
    isoName: isoNames[i] as Level1Name,
    jolietId: ucs2(file.name),
    extent: 0,
  }));

  // Each tree lists its records in the order ECMA-119 9.3 asks for, compared in its own encoding.
  const isoOrder = [...entries].sort((a, b) => compareIdentifiers(a.isoName.parts, b.isoName.parts));
  const jolietOrder = [...entries].sort((a, b) =>
    compareIdentifiers(jolietParts(a.file.name), jolietParts(b.file.name)),
  );
  const isoDir = layoutDirectory(isoOrder.map((e) => e.isoName.id.length));
  const jolietDir = layoutDirectory(jolietOrder.map((e) => e.jolietId.length));

  const pathTableSectors = { isoL: 19, isoM: 20, jolietL: 21, jolietM: 22 };
  const isoDirSector = 23;
  const jolietDirSector = isoDirSector + isoDir.sectors;
  let next = jolietDirSector + jolietDir.sectors;
  for (const e of entries) {
    // An empty file owns no sectors; location 0 keeps it inside the volume.
    e.extent = e.file.data.length === 0 ? 0 : next;
    next += sectorsFor(e.file.data.length);
  }
  const totalSectors = next;

  const image = Buffer.alloc(totalSectors * SECTOR);
  const sectorOffset = (n: number): number => n * SECTOR;

  const isoRoot = { extent: isoDirSector, size: isoDir.sectors * SECTOR };
  const jolietRoot = { extent: jolietDirSector, size: jolietDir.sectors * SECTOR };

  volumeDescriptor({
    type: 1,
    encoding: 'ascii',
    // ECMA-119 wants d-characters (uppercase) here, but every NoCloud tool writes `cidata` as
    // given and libblkid/cloud-init match on it, so the id is written verbatim.
    volumeId: options.volumeId,
    totalSectors,
    pathTableL: pathTableSectors.isoL,
    pathTableM: pathTableSectors.isoM,
    root: isoRoot,
    date,
  }).copy(image, sectorOffset(FIRST_DESCRIPTOR_SECTOR));
  volumeDescriptor({
    type: 2,
    encoding: 'ucs2',
    volumeId: options.volumeId.slice(0, JOLIET_VOLUME_ID_CHARS),
    totalSectors,
    pathTableL: pathTableSectors.jolietL,
    pathTableM: pathTableSectors.jolietM,
    root: jolietRoot,
    date,
  }).copy(image, sectorOffset(FIRST_DESCRIPTOR_SECTOR + 1));
  terminatorDescriptor().copy(image, sectorOffset(FIRST_DESCRIPTOR_SECTOR + 2));

  pathTable(isoRoot.extent, 'LE').copy(image, sectorOffset(pathTableSectors.isoL));
  pathTable(isoRoot.extent, 'BE').copy(image, sectorOffset(pathTableSectors.isoM));
  pathTable(jolietRoot.extent, 'LE').copy(image, sectorOffset(pathTableSectors.jolietL));
  pathTable(jolietRoot.extent, 'BE').copy(image, sectorOffset(pathTableSectors.jolietM));

  writeRootDirectory(
    image,
    isoRoot,
    isoDir,
    isoOrder.map((e) => ({ id: e.isoName.id, extent: e.extent, size: e.file.data.length })),
    date,
  );
  writeRootDirectory(
    image,
    jolietRoot,
    jolietDir,
    jolietOrder.map((e) => ({ id: e.jolietId, extent: e.extent, size: e.file.data.length })),
    date,
  );

  for (const e of entries) {
    if (e.file.data.length > 0) image.set(e.file.data, sectorOffset(e.extent));
  }
  return image;
}

// ---------------------------------------------------------------------------------------------
// Validation

function validateVolumeId(volumeId: string): void {
  if (!/^[A-Za-z0-9_]{1,32}$/.test(volumeId)) {
    throw new Error(
      `invalid ISO volume id ${JSON.stringify(volumeId)}: use 1-32 characters from A-Z, a-z, 0-9 and _`,
    );
  }
}

// Characters the Joliet spec forbids in identifiers (besides control characters); readers
// would mangle them (';' starts a version number, '/' is the path separator).
const JOLIET_FORBIDDEN = new Set(['*', '/', ':', ';', '?', '\\']);

function validateFiles(files: readonly IsoFile[]): void {
  const seen = new Set<string>();
  for (const { name, data } of files) {
    const shown = JSON.stringify(name);
    if (name.length === 0) throw new Error('invalid ISO file name: it is empty');
    if (name.length > MAX_NAME_LENGTH) {
      throw new Error(`invalid ISO file name ${shown}: longer than ${MAX_NAME_LENGTH} characters`);
    }
    for (const ch of name) {
      if (ch.charCodeAt(0) < 0x20) {
        throw new Error(`invalid ISO file name ${shown}: it contains a control character (or NUL)`);
      }
      if (JOLIET_FORBIDDEN.has(ch)) {
        throw new Error(`invalid ISO file name ${shown}: it contains ${JSON.stringify(ch)}`);
      }
    }
    if (name === '.' || name === '..') throw new Error(`invalid ISO file name ${shown}: reserved`);
    // Linux drops trailing dots from Joliet names, so such a file would come back renamed.
    if (name.endsWith('.')) throw new Error(`invalid ISO file name ${shown}: it ends with '.'`);
    if (seen.has(name)) throw new Error(`duplicate ISO file name ${shown}`);
    seen.add(name);
    if (data.length > 0xffffffff) throw new Error(`ISO file ${shown} is too large (4 GiB or more)`);
  }
}

function validateDate(date: Date): void {
  const year = date.getUTCFullYear();
  // Directory records store the year as an offset from 1900 in one byte.
  if (Number.isNaN(date.getTime()) || year < 1900 || year > 2155) {
    throw new Error(`invalid ISO date ${String(date)}: it must be a valid date in the years 1900-2155`);
  }
}

// ---------------------------------------------------------------------------------------------
// Names

/** An identifier split as ECMA-119 9.3 sorts it: name part, then extension part. */
interface IdParts {
  name: number[];
  ext: number[];
}

interface Level1Name {
  id: Buffer; // "NAME.EXT;1" in ASCII
  parts: IdParts;
}

/**
 * Maps names to ISO level 1 identifiers (8.3 d-characters, e.g. `meta-data` -> `META_DAT.;1`).
 * On a collision the name part's tail is replaced by a counter (`META_DA1`); names are taken
 * in the given order, so the result is deterministic.
 */
function level1Names(names: readonly string[]): Level1Name[] {
  const used = new Set<string>();
  return names.map((name) => {
    const dot = name.lastIndexOf('.');
    const hasExt = dot > 0; // a leading dot (".hidden") is part of the name, not an extension
    const base = toDChars(hasExt ? name.slice(0, dot) : name).slice(0, 8);
    const ext = hasExt ? toDChars(name.slice(dot + 1)).slice(0, 3) : '';
    let candidate = base;
    for (let n = 1; used.has(`${candidate}.${ext}`); n++) {
      const suffix = String(n);
      candidate = base.slice(0, 8 - suffix.length) + suffix;
    }
    used.add(`${candidate}.${ext}`);
    return {
      id: Buffer.from(`${candidate}.${ext};1`, 'ascii'),
      parts: { name: codeUnits(candidate), ext: codeUnits(ext) },
    };
  });
}

/** Uppercases and replaces everything outside the d-characters (A-Z, 0-9, _) with `_`. */
function toDChars(s: string): string {
  return s.toUpperCase().replace(/[^A-Z0-9_]/g, '_');
}

function jolietParts(name: string): IdParts {
  const dot = name.lastIndexOf('.');
  if (dot < 0) return { name: codeUnits(name), ext: [] };
  return { name: codeUnits(name.slice(0, dot)), ext: codeUnits(name.slice(dot + 1)) };
}

function codeUnits(s: string): number[] {
  return Array.from({ length: s.length }, (_, i) => s.charCodeAt(i));
}

/**
 * ECMA-119 9.3 order: compare name parts as if padded with spaces, then extension parts.
 * Joliet names carry no version number (Linux and libisofs accept both forms), so that is
 * the whole key; the Joliet spec applies the same rule to UCS-2 code values.
 */
function compareIdentifiers(a: IdParts, b: IdParts): number {
  return comparePadded(a.name, b.name) || comparePadded(a.ext, b.ext);
}

function comparePadded(a: readonly number[], b: readonly number[]): number {
  const SPACE = 0x20;
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const d = (a[i] ?? SPACE) - (b[i] ?? SPACE);
    if (d !== 0) return d;
  }
  return 0;
}

/** UCS-2 big-endian, as Joliet records every character. */
function ucs2(s: string): Buffer {
  return Buffer.from(s, 'utf16le').swap16();
}

// ---------------------------------------------------------------------------------------------
// Low-level field writers

/** ECMA-119 7.2.3: a 16-bit number recorded little-endian, then big-endian. */
function writeBoth16(buf: Buffer, offset: number, value: number): void {
  buf.writeUInt16LE(value, offset);
  buf.writeUInt16BE(value, offset + 2);
}

/** ECMA-119 7.3.3: a 32-bit number recorded little-endian, then big-endian. */
function writeBoth32(buf: Buffer, offset: number, value: number): void {
  buf.writeUInt32LE(value, offset);
  buf.writeUInt32BE(value, offset + 4);
}

/** A fixed-width text field, padded with spaces (UCS-2 spaces in the Joliet descriptor). */
function writeText(buf: Buffer, offset: number, length: number, text: string, encoding: Encoding): void {
  if (encoding === 'ascii') {
    buf.fill(0x20, offset, offset + length);
    buf.write(text.slice(0, length), offset, 'ascii');
    return;
  }
  const bytes = ucs2(text.slice(0, Math.floor(length / 2)));
  bytes.copy(buf, offset);
  for (let i = bytes.length; i + 1 < length; i += 2) buf.writeUInt16BE(0x0020, offset + i);
  // An odd-length field (the 37-byte file ids) leaves one byte, which stays zero.
}

const pad2 = (n: number): string => String(n).padStart(2, '0');

/** ECMA-119 8.4.26.1: 17-byte "YYYYMMDDHHMMSScc" + GMT offset, used in volume descriptors. */
function descriptorDate(date: Date | undefined): Buffer {
  const out = Buffer.alloc(17);
  if (date === undefined) {
    out.write('0'.repeat(16), 0, 'ascii'); // "not specified": all digits zero, offset 0
    return out;
  }
  const text =
    String(date.getUTCFullYear()).padStart(4, '0') +
    pad2(date.getUTCMonth() + 1) +
    pad2(date.getUTCDate()) +
    pad2(date.getUTCHours()) +
    pad2(date.getUTCMinutes()) +
    pad2(date.getUTCSeconds()) +
    pad2(Math.floor(date.getUTCMilliseconds() / 10));
  out.write(text, 0, 'ascii');
  out.writeInt8(0, 16); // times are written in UTC
  return out;
}

/** ECMA-119 9.1.5: 7-byte recording date in directory records. */
function recordDate(date: Date): Buffer {
  return Buffer.from([
    date.getUTCFullYear() - 1900,
    date.getUTCMonth() + 1,
    date.getUTCDate(),
    date.getUTCHours(),
    date.getUTCMinutes(),
    date.getUTCSeconds(),
    0, // GMT offset in 15-minute units: UTC
  ]);
}

const sectorsFor = (bytes: number): number => Math.ceil(bytes / SECTOR);

// ---------------------------------------------------------------------------------------------
// Structures

interface Extent {
  extent: number;
  size: number;
}

/** Length of a directory record: 33 fixed bytes + identifier, padded to an even length. */
function dirRecordLength(idLength: number): number {
  return 33 + idLength + (idLength % 2 === 0 ? 1 : 0);
}

/** ECMA-119 9.1: one directory record. */
function dirRecord(target: Extent, id: Uint8Array, isDirectory: boolean, date: Date): Buffer {
  const rec = Buffer.alloc(dirRecordLength(id.length));
  rec.writeUInt8(rec.length, 0);
  rec.writeUInt8(0, 1); // no extended attribute record
  writeBoth32(rec, 2, target.extent);
  writeBoth32(rec, 10, target.size);
  recordDate(date).copy(rec, 18);
  rec.writeUInt8(isDirectory ? FLAG_DIRECTORY : 0, 25);
  rec.writeUInt8(0, 26); // file unit size: not interleaved
  rec.writeUInt8(0, 27); // interleave gap
  writeBoth16(rec, 28, 1); // volume sequence number
  rec.writeUInt8(id.length, 32);
  rec.set(id, 33);
  return rec;
}

interface DirectoryLayout {
  sectors: number;
  offsets: number[]; // byte offset of each child record within the directory
}

// `.` and `..` use the one-byte identifiers 0x00 and 0x01 (in Joliet too).
const DOT_ID = Uint8Array.of(0x00);
const DOTDOT_ID = Uint8Array.of(0x01);

/** Places the child records after `.` and `..`; a record may not cross a sector boundary. */
function layoutDirectory(idLengths: readonly number[]): DirectoryLayout {
  let pos = 2 * dirRecordLength(1);
  const offsets = idLengths.map((idLength) => {
    const len = dirRecordLength(idLength);
    if ((pos % SECTOR) + len > SECTOR) pos += SECTOR - (pos % SECTOR);
    const at = pos;
    pos += len;
    return at;
  });
  return { sectors: sectorsFor(pos), offsets };
}

function writeRootDirectory(
  image: Buffer,
  root: Extent,
  layout: DirectoryLayout,
  children: readonly { id: Uint8Array; extent: number; size: number }[],
  date: Date,
): void {
  const base = root.extent * SECTOR;
  const self = dirRecord(root, DOT_ID, true, date);
  self.copy(image, base);
  // The root's parent is the root itself.
  dirRecord(root, DOTDOT_ID, true, date).copy(image, base + self.length);
  children.forEach((child, i) => {
    dirRecord(child, child.id, false, date).copy(image, base + (layout.offsets[i] as number));
  });
}

/** ECMA-119 9.4: a path table holding just the root directory (number 1, its own parent). */
function pathTable(rootExtent: number, endian: 'LE' | 'BE'): Buffer {
  const rec = Buffer.alloc(10);
  rec.writeUInt8(1, 0); // identifier length
  rec.writeUInt8(0, 1); // extended attribute record length
  if (endian === 'LE') {
    rec.writeUInt32LE(rootExtent, 2);
    rec.writeUInt16LE(1, 6);
  } else {
    rec.writeUInt32BE(rootExtent, 2);
    rec.writeUInt16BE(1, 6);
  }
  rec.writeUInt8(0x00, 8); // root identifier; byte 9 pads to an even length
  return rec;
}

/** Bytes 0-6 shared by every volume descriptor: type, "CD001", version 1. */
function descriptorHeader(type: number): Buffer {
  const vd = Buffer.alloc(SECTOR);
  vd.writeUInt8(type, 0);
  vd.write('CD001', 1, 'ascii');
  vd.writeUInt8(1, 6);
  return vd;
}

/** ECMA-119 8.4 (primary, type 1) or 8.5 (supplementary, type 2, here Joliet). */
function volumeDescriptor(opts: {
  type: 1 | 2;
  encoding: Encoding;
  volumeId: string;
  totalSectors: number;
  pathTableL: number;
  pathTableM: number;
  root: Extent;
  date: Date;
}): Buffer {
  const { encoding } = opts;
  const vd = descriptorHeader(opts.type);
  // byte 7: unused in the PVD; volume flags 0 in the SVD (UCS-2 is registered per ISO 2375)
  writeText(vd, 8, 32, '', encoding); // system identifier
  writeText(vd, 40, 32, opts.volumeId, encoding);
  writeBoth32(vd, 80, opts.totalSectors); // volume space size
  if (opts.type === 2) vd.set(JOLIET_ESCAPE, 88);
  writeBoth16(vd, 120, 1); // volume set size
  writeBoth16(vd, 124, 1); // volume sequence number
  writeBoth16(vd, 128, SECTOR); // logical block size
  writeBoth32(vd, 132, PATH_TABLE_SIZE);
  vd.writeUInt32LE(opts.pathTableL, 140); // 144: optional L table, none
  vd.writeUInt32BE(opts.pathTableM, 148); // 152: optional M table, none
  dirRecord(opts.root, DOT_ID, true, opts.date).copy(vd, 156);
  writeText(vd, 190, 128, '', encoding); // volume set identifier
  writeText(vd, 318, 128, '', encoding); // publisher identifier
  writeText(vd, 446, 128, '', encoding); // data preparer identifier
  writeText(vd, 574, 128, APPLICATION_ID, encoding);
  writeText(vd, 702, 37, '', encoding); // copyright file identifier
  writeText(vd, 739, 37, '', encoding); // abstract file identifier
  writeText(vd, 776, 37, '', encoding); // bibliographic file identifier
  descriptorDate(opts.date).copy(vd, 813); // creation
  descriptorDate(opts.date).copy(vd, 830); // modification
  descriptorDate(undefined).copy(vd, 847); // expiration: none
  descriptorDate(undefined).copy(vd, 864); // effective: none
  vd.writeUInt8(1, 881); // file structure version
  return vd;
}

/** ECMA-119 8.3: the Volume Descriptor Set Terminator (type 255). */
function terminatorDescriptor(): Buffer {
  return descriptorHeader(255);
}
