import { constants, type Stats } from 'node:fs';
import { open, readlink, realpath, stat, type FileHandle } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { dirname, isAbsolute, relative, resolve, sep } from 'node:path';
import { pipeline } from 'node:stream';

/**
 * The HTTP plumbing every route shares: errors, answers, bodies, safe paths, file streaming and
 * the route table. Routes (src/stack/routes/*.ts) hold only what is particular to them.
 */

/** An answer with this status and a plain-text message (iPXE prints it). */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Record<string, string | number> = {},
  ) {
    super(message);
  }
}

export function send(
  res: ServerResponse,
  status: number,
  body: string,
  type = 'text/plain; charset=utf-8',
  headers: Record<string, string | number> = {},
): void {
  res.writeHead(status, {
    ...headers,
    'Content-Type': type,
    'Content-Length': Buffer.byteLength(body),
    'Cache-Control': 'no-store',
  });
  res.end(body);
}

export function sendJson(res: ServerResponse, status: number, value: unknown): void {
  send(res, status, `${JSON.stringify(value, null, 2)}\n`, 'application/json');
}

/** The whole request body, refused with 413 past `max` bytes (declared or counted). */
export async function readBody(req: IncomingMessage, max: number): Promise<string> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > max) throw new HttpError(413, `body larger than ${max} bytes`);
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of req) {
    total += (chunk as Buffer).length;
    if (total > max) throw new HttpError(413, `body larger than ${max} bytes`);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** `bytes=a-b`, `bytes=a-`, `bytes=-n` (one range); undefined = unsatisfiable. */
export function parseRange(header: string, size: number): { start: number; end: number } | undefined {
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return undefined;
  let start: number;
  let end: number;
  if (m[1] === '') {
    const n = Number(m[2]);
    if (n === 0) return undefined;
    start = Math.max(0, size - n);
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  }
  if (start > end || start >= size) return undefined;
  return { start, end };
}

const TRAVERSAL = 'path traversal refused';

/** A path under `root`, or an error: no `..`, no NUL, no escaping through absolute parts. */
export function safeJoin(root: string, urlPath: string): string {
  let decoded: string;
  try {
    decoded = decodeURIComponent(urlPath);
  } catch {
    throw new HttpError(400, 'bad path encoding');
  }
  if (decoded.includes('\0') || decoded.includes('\\')) throw new HttpError(400, 'bad path');
  if (decoded.split('/').some((seg) => seg === '..')) throw new HttpError(403, TRAVERSAL);
  const full = resolve(root, `.${decoded.startsWith('/') ? '' : '/'}${decoded}`);
  if (!isInside(resolve(root), full)) throw new HttpError(403, TRAVERSAL);
  return full;
}

function isInside(root: string, path: string): boolean {
  const rel = relative(root, path);
  return rel === '' || (!rel.startsWith(`..${sep}`) && rel !== '..' && !isAbsolute(rel));
}

/**
 * Where an open file really is: the kernel's name for the descriptor, so a symlink swapped after
 * the check cannot redirect the read. Falls back to realpath where /proc is not mounted.
 */
async function realPathOf(fh: FileHandle, path: string): Promise<string> {
  try {
    return await readlink(`/proc/self/fd/${fh.fd}`);
  } catch {
    return realpath(path);
  }
}

/** What a static root answers for a file, before the body is streamed. */
export interface OpenedFile {
  fh: FileHandle;
  st: Stats;
}

/**
 * Open `urlPath` under `root` for reading, refusing (403) anything whose real path (symlinks
 * resolved) is outside the root's real path, and answering 404 for what is not a regular file.
 * The caller owns the returned handle.
 */
export async function openUnder(root: string, urlPath: string, notFound: string): Promise<OpenedFile> {
  const path = safeJoin(root, urlPath);
  const realRoot = await realpath(root).catch(() => undefined);
  if (realRoot === undefined) throw new HttpError(404, notFound);
  let fh: FileHandle;
  try {
    // O_NONBLOCK: a FIFO planted in the root must not hang a thread; regular files ignore it.
    fh = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch {
    // Missing: say 403 rather than 404 when the directory it would be in is outside the root,
    // or the answer tells a client which files exist elsewhere on the host.
    const dir = await realpath(dirname(path)).catch(() => undefined);
    if (dir !== undefined && !isInside(realRoot, dir)) throw new HttpError(403, TRAVERSAL);
    throw new HttpError(404, notFound);
  }
  try {
    if (!isInside(realRoot, await realPathOf(fh, path))) throw new HttpError(403, TRAVERSAL);
    const st = await fh.stat();
    if (!st.isFile()) throw new HttpError(404, notFound);
    return { fh, st };
  } catch (err) {
    await fh.close().catch(() => undefined);
    throw err;
  }
}

/** Is `path` a regular file (following symlinks)? */
export async function isFile(path: string): Promise<boolean> {
  return (await stat(path).catch(() => undefined))?.isFile() === true;
}

/**
 * Send an opened file (or a single range of it). The handle is closed in every case: when the
 * body is sent, when the client goes away mid-download (pipeline destroys the read stream), and
 * when nothing is streamed (HEAD, empty file, 416).
 */
export function streamFile(
  req: IncomingMessage,
  res: ServerResponse,
  { fh, st }: OpenedFile,
  onRange416: () => void,
  onServe: () => void,
): void {
  let streaming = false;
  try {
    const headers: Record<string, string | number> = {
      'Content-Type': 'application/octet-stream',
      'Accept-Ranges': 'bytes',
      'Last-Modified': st.mtime.toUTCString(),
    };
    let start = 0;
    let end = st.size - 1;
    let status = 200;
    const range = req.headers.range;
    if (range) {
      const r = parseRange(range, st.size);
      if (!r) {
        onRange416();
        // A length, or Node sends the empty body chunked.
        res.writeHead(416, { 'Content-Range': `bytes */${st.size}`, 'Content-Length': 0 });
        res.end();
        return;
      }
      ({ start, end } = r);
      status = 206;
      headers['Content-Range'] = `bytes ${start}-${end}/${st.size}`;
    }
    headers['Content-Length'] = st.size === 0 ? 0 : end - start + 1;
    onServe();
    res.writeHead(status, headers);
    if (req.method === 'HEAD' || st.size === 0) return void res.end();
    // Streamed, never buffered whole: rootfs tarballs are hundreds of MB.
    // 1 MiB reads: with the default 64 KiB chunks a 200 MB image ran at a third of nginx's rate.
    const stream = fh.createReadStream({ start, end, highWaterMark: 1 << 20 });
    streaming = true;
    pipeline(stream, res, () => undefined);
  } finally {
    if (!streaming) void fh.close().catch(() => undefined);
  }
}

// ---- the route table ----------------------------------------------------------------------------

/** What a handler gets: the request, its parsed URL and the route's captured path parts. */
export interface RouteContext {
  req: IncomingMessage;
  res: ServerResponse;
  url: URL;
  method: string;
  /** The pattern's capture groups (still percent-encoded, as in the URL). */
  params: string[];
}

export type Handler = (c: RouteContext) => void | Promise<void>;

export interface Route {
  /**
   * `GET` (which also answers HEAD), `POST`, or `*`: every method reaches the handler, which
   * answers 405 itself (after checking its path parameters, as the API routes do).
   */
  method: 'GET' | 'POST' | '*';
  /** An exact path, or a pattern over the whole path. */
  path: string | RegExp;
  handler: Handler;
}

/** The route for a request, with its captured parts; undefined = 404. */
export function matchRoute(
  routes: readonly Route[],
  method: string,
  path: string,
): [Route, string[]] | undefined {
  const get = method === 'GET' || method === 'HEAD';
  for (const r of routes) {
    if (r.method === 'GET' ? !get : r.method !== '*' && r.method !== method) continue;
    if (typeof r.path === 'string') {
      if (r.path === path) return [r, []];
      continue;
    }
    const m = r.path.exec(path);
    if (m) return [r, m.slice(1).map((s) => s ?? '')];
  }
  return undefined;
}

/** A handler for routes that take several methods: 405 for the others. */
export function byMethod(handlers: Partial<Record<'GET' | 'POST', Handler>>): Handler {
  return (c) => {
    const h =
      c.method === 'HEAD'
        ? handlers.GET
        : Object.hasOwn(handlers, c.method)
          ? handlers[c.method as 'GET' | 'POST']
          : undefined;
    if (!h) throw new HttpError(405, `${c.method} not allowed on ${c.url.pathname}`);
    return h(c);
  };
}
