/**
 * Resumable, streaming, checksum-verified download of a cloud image.
 * Bytes land in `<dest>.part`, which is renamed over `dest` only once complete and verified,
 * so `dest` is either absent or a whole file.
 */
import { createHash, type Hash } from 'node:crypto';
import { createReadStream, promises as fs, type Stats } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { STATUS_CODES } from 'node:http';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PvmlabError, errorMessage, isErrno } from '../core/errors.js';
import { removePath } from '../core/fsutil.js';

export interface DownloadProgress {
  /** Bytes now in the .part file, including any resumed from an earlier run. */
  received: number;
  /** Full size of the file, when the server said. */
  total: number | undefined;
  /** Bytes kept from an earlier run (0 for a fresh download). */
  resumedFrom: number;
}

export interface DownloadOptions {
  url: string;
  /** Final path; the download goes to `<dest>.part` first. */
  dest: string;
  /** Expected SHA-256 in hex; verified when given. */
  sha256?: string;
  onProgress?: (p: DownloadProgress) => void;
  /** Aborting keeps the .part so a later call resumes it. */
  signal?: AbortSignal;
  /** Defaults to the global fetch (undici). */
  fetchImpl?: typeof fetch;
}

export interface DownloadResult {
  path: string;
  bytes: number;
  /** True when bytes from an earlier .part were kept (a 206 resume). */
  resumed: boolean;
  /** True when `dest` existed already and nothing was fetched. */
  alreadyPresent: boolean;
  sha256: string;
}

export async function download(opts: DownloadOptions): Promise<DownloadResult> {
  const { url, dest, signal } = opts;
  const expected = normaliseSha256(opts.sha256);

  const present = await statIfExists(dest);
  if (present !== undefined) {
    if (!present.isFile()) throw new PvmlabError(`${dest} exists and is not a file`);
    const actual = await hashFile(dest, signal);
    if (expected !== undefined && actual !== expected) {
      throw new PvmlabError(
        `${dest} exists but its checksum does not match: expected ${expected}, got ${actual}; delete it to download it again`,
      );
    }
    return { path: dest, bytes: present.size, resumed: false, alreadyPresent: true, sha256: actual };
  }

  await fs.mkdir(dirname(dest), { recursive: true });
  const part = `${dest}.part`;
  const fetchImpl = opts.fetchImpl ?? fetch;

  let offset = (await statIfExists(part))?.size ?? 0;
  let res = await request(fetchImpl, url, offset, signal);
  let append = false;
  let total: number | undefined;

  if (offset > 0) {
    const range = res.status === 206 ? parseContentRange(res.headers.get('content-range')) : undefined;
    if (range !== undefined && range.start === offset) {
      append = true;
      total = range.total;
    } else if (res.status === 416 || res.status === 206) {
      // 416: the .part is not a prefix the server recognises (e.g. the file shrank);
      // a 206 for some other range is unusable. Either way start over, once.
      await discard(res);
      await removePath(part);
      offset = 0;
      res = await request(fetchImpl, url, 0, signal);
    }
    // A 200 here means the server ignored Range: the body is the whole file, written from zero below.
  }

  if (!res.ok || (!append && res.status === 206)) {
    await discard(res);
    await removeIfEmpty(part);
    const text = res.statusText || STATUS_CODES[res.status] || '';
    throw new PvmlabError(`download of ${url} failed: HTTP ${res.status}${text ? ` ${text}` : ''}`);
  }

  if (!append) {
    offset = 0;
    total = contentLength(res);
  }

  const hash = createHash('sha256');
  // 'w' truncates: a full body must never be appended to an old .part.
  const fh = await fs.open(part, append ? 'a' : 'w');
  let received = offset;
  let closed = false;
  try {
    if (append) await hashInto(hash, part, offset, signal);
    const report = (): void => opts.onProgress?.({ received, total, resumedFrom: offset });
    report();

    const reader = res.body?.getReader();
    for (;;) {
      let chunk: Uint8Array | undefined;
      try {
        const r = await reader?.read();
        chunk = r === undefined || r.done ? undefined : r.value;
      } catch (err) {
        throw signal?.aborted ? aborted(url, signal) : interrupted(url, received, err);
      }
      if (chunk === undefined) break;
      await writeAll(fh, chunk, part);
      hash.update(chunk);
      received += chunk.length;
      report();
    }
    // A clean end short of the advertised size is still a cut (e.g. a proxy closing early).
    if (total !== undefined && received !== total) {
      throw interrupted(url, received, new Error(`got ${received} of ${total} bytes`));
    }

    await fh.sync();
    await fh.close();
    closed = true;
  } catch (err) {
    if (!closed) await fh.close().catch(() => undefined);
    // Keep a .part with bytes in it: that is what lets the next run resume.
    if (received === 0) await removePath(part);
    if (signal?.aborted && !(err instanceof PvmlabError)) throw aborted(url, signal);
    throw err;
  }

  const actual = hash.digest('hex');
  if (expected !== undefined && actual !== expected) {
    await removePath(part);
    throw new PvmlabError(`checksum mismatch for ${url}: expected ${expected}, got ${actual}`);
  }
  await fs.rename(part, dest);
  return { path: dest, bytes: received, resumed: append, alreadyPresent: false, sha256: actual };
}

/**
 * The SHA-256 for `fileName` in a SHA256SUMS-style file: GNU lines `<hex>  name` / `<hex> *name`,
 * or BSD lines `SHA256 (name) = <hex>`. Lower-case hex, or undefined when the file is not listed.
 */
export function parseChecksumFile(text: string, fileName: string): string | undefined {
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const gnu = /^([0-9a-fA-F]{64}) [ *]?(.+)$/.exec(line);
    const bsd = gnu ? null : /^SHA256 ?\((.+)\) ?= ?([0-9a-fA-F]{64})$/.exec(line);
    const hex = gnu?.[1] ?? bsd?.[2];
    const name = gnu?.[2] ?? bsd?.[1];
    if (hex === undefined || name === undefined) continue;
    if (name === fileName || name === `./${fileName}`) return hex.toLowerCase();
  }
  return undefined;
}

function normaliseSha256(sha256: string | undefined): string | undefined {
  if (sha256 === undefined) return undefined;
  const hex = sha256.trim().toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(hex)) throw new PvmlabError(`not a SHA-256 checksum: ${sha256}`);
  return hex;
}

async function request(
  fetchImpl: typeof fetch,
  url: string,
  offset: number,
  signal: AbortSignal | undefined,
): Promise<Response> {
  // identity: Content-Length and byte ranges must refer to the file's own bytes, not a gzip of them.
  const headers: Record<string, string> = { 'accept-encoding': 'identity' };
  if (offset > 0) headers.range = `bytes=${offset}-`;
  try {
    return await fetchImpl(url, { headers, signal, redirect: 'follow' });
  } catch (err) {
    if (signal?.aborted) throw aborted(url, signal);
    throw new PvmlabError(`download of ${url} failed: ${rootCause(err)}`, { cause: err });
  }
}

function interrupted(url: string, received: number, err: unknown): PvmlabError {
  return new PvmlabError(
    `download of ${url} was interrupted after ${received} bytes (${rootCause(err)}); run the command again to resume it`,
    { cause: err },
  );
}

function aborted(url: string, signal: AbortSignal): PvmlabError {
  return new PvmlabError(`download of ${url} was aborted; run the command again to resume it`, {
    cause: signal.reason,
  });
}

/** undici wraps socket errors ("fetch failed", "terminated"); the innermost message says what happened. */
function rootCause(err: unknown): string {
  let cur: unknown = err;
  while (cur instanceof Error && cur.cause instanceof Error) cur = cur.cause;
  return errorMessage(cur);
}

function parseContentRange(
  header: string | null,
): { start: number; end: number; total: number | undefined } | undefined {
  const m = header === null ? null : /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(header.trim());
  if (!m) return undefined;
  return { start: Number(m[1]), end: Number(m[2]), total: m[3] === '*' ? undefined : Number(m[3]) };
}

function contentLength(res: Response): number | undefined {
  const enc = res.headers.get('content-encoding');
  // fetch decodes a compressed body, so its Content-Length would not be the size we write.
  if (enc !== null && enc.trim().toLowerCase() !== 'identity') return undefined;
  const len = res.headers.get('content-length');
  return len !== null && /^\d+$/.test(len.trim()) ? Number(len) : undefined;
}

/** Release the connection of a response whose body we do not want. */
async function discard(res: Response): Promise<void> {
  await res.body?.cancel().catch(() => undefined);
}

async function writeAll(fh: FileHandle, chunk: Uint8Array, path: string): Promise<void> {
  try {
    let off = 0;
    while (off < chunk.length) {
      const { bytesWritten } = await fh.write(chunk, off, chunk.length - off);
      off += bytesWritten;
    }
  } catch (err) {
    throw new PvmlabError(`could not write ${path}: ${errorMessage(err)}`, { cause: err });
  }
}

async function hashInto(hash: Hash, path: string, length: number, signal?: AbortSignal): Promise<void> {
  if (length === 0) return;
  for await (const chunk of createReadStream(path, { start: 0, end: length - 1, signal })) {
    hash.update(chunk as Buffer);
  }
}

async function hashFile(path: string, signal?: AbortSignal): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { signal })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

async function statIfExists(path: string): Promise<Stats | undefined> {
  try {
    return await fs.stat(path);
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return undefined;
    throw err;
  }
}

/** A 404 must leave nothing behind, but a .part with bytes from an earlier run is worth keeping. */
async function removeIfEmpty(path: string): Promise<void> {
  const st = await statIfExists(path);
  if (st !== undefined && st.size === 0) await removePath(path);
}

/**
 * A `file://` image (a local or offline mirror): copied into the image cache with the same
 * guarantees as a download: checksum verified, `.part` then rename, nothing left on failure.
 */
export async function copyLocalImage(opts: {
  url: string;
  dest: string;
  sha256?: string;
}): Promise<DownloadResult> {
  const src = fileURLToPath(opts.url);
  const expected = normaliseSha256(opts.sha256);
  const st = await statIfExists(src);
  if (!st?.isFile()) throw new PvmlabError(`image ${src} (from ${opts.url}) does not exist or is not a file`);
  await fs.mkdir(dirname(opts.dest), { recursive: true });
  const part = `${opts.dest}.part`;
  try {
    await fs.copyFile(src, part);
    const actual = await hashFile(part);
    if (expected !== undefined && actual !== expected)
      throw new PvmlabError(`checksum mismatch for ${opts.url}: expected ${expected}, got ${actual}`);
    await fs.rename(part, opts.dest);
    return { path: opts.dest, bytes: st.size, resumed: false, alreadyPresent: false, sha256: actual };
  } catch (err) {
    await removePath(part);
    throw err;
  }
}
