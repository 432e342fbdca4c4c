import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { download, parseChecksumFile, type DownloadProgress } from '../../../src/distro/download.js';

type Handler = (req: IncomingMessage, res: ServerResponse, n: number) => void;

interface TestServer {
  url: string;
  /** Request headers, in arrival order. */
  seen: IncomingHttpHeaders[];
  close(): Promise<void>;
}

async function startServer(handler: Handler): Promise<TestServer> {
  const seen: IncomingHttpHeaders[] = [];
  const server = createServer((req, res) => {
    seen.push(req.headers);
    handler(req, res, seen.length);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/noble-server-cloudimg-amd64.img`,
    seen,
    async close() {
      // fetch keeps connections alive; close them or server.close() waits for them.
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** Serves `body`, honouring `Range: bytes=N-` with a 206 (and 416 past the end). */
function rangedHandler(body: Buffer): Handler {
  return (req, res) => {
    const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    if (m) {
      const start = Number(m[1]);
      if (start >= body.length) {
        res.writeHead(416, { 'content-range': `bytes */${body.length}` }).end();
        return;
      }
      res.writeHead(206, {
        'content-length': body.length - start,
        'content-range': `bytes ${start}-${body.length - 1}/${body.length}`,
      });
      res.end(body.subarray(start));
      return;
    }
    res.writeHead(200, { 'content-length': body.length }).end(body);
  };
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

async function exists(p: string): Promise<boolean> {
  return fs.access(p).then(
    () => true,
    () => false,
  );
}

describe('download', () => {
  const body = randomBytes(300 * 1024 + 17);
  const half = Math.floor(body.length / 2);
  let dir: string;
  let n = 0;
  const dest = (): string => join(dir, `img-${++n}`, 'disk.img');

  before(async () => {
    dir = await fs.mkdtemp(join(tmpdir(), 'pvmlab-download-'));
  });
  after(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  it('downloads, verifies the checksum and creates the parent directory', async () => {
    const srv = await startServer(rangedHandler(body));
    try {
      const path = dest();
      const progress: DownloadProgress[] = [];
      const r = await download({
        url: srv.url,
        dest: path,
        sha256: sha(body),
        onProgress: (p) => progress.push(p),
      });
      assert.deepEqual(r, {
        path,
        bytes: body.length,
        resumed: false,
        alreadyPresent: false,
        sha256: sha(body),
      });
      assert.deepEqual(await fs.readFile(path), body);
      assert.equal(await exists(`${path}.part`), false);
      assert.equal(srv.seen.length, 1);
      assert.equal(srv.seen[0]?.range, undefined);
      assert.equal(srv.seen[0]?.['accept-encoding'], 'identity');
      assert.deepEqual(progress.at(-1), { received: body.length, total: body.length, resumedFrom: 0 });
    } finally {
      await srv.close();
    }
  });

  it('keeps the .part after a cut and resumes it with Range', async () => {
    let cut: (() => void) | undefined;
    const ranged = rangedHandler(body);
    const srv = await startServer((req, res, count) => {
      if (count > 1) return ranged(req, res, count);
      // First request: half the body, then the connection dies once the client has written it.
      res.writeHead(200, { 'content-length': body.length });
      res.write(body.subarray(0, half));
      cut = () => res.socket?.destroy();
    });
    try {
      const path = dest();
      await assert.rejects(
        download({
          url: srv.url,
          dest: path,
          sha256: sha(body),
          onProgress: (p) => {
            if (p.received === half) cut?.();
          },
        }),
        (err: Error) => {
          assert.equal(err.name, 'PvmlabError');
          assert.match(err.message, /interrupted/);
          assert.match(err.message, /again to resume/);
          return true;
        },
      );
      assert.equal((await fs.stat(`${path}.part`)).size, half);
      assert.equal(await exists(path), false);

      const progress: DownloadProgress[] = [];
      const r = await download({
        url: srv.url,
        dest: path,
        sha256: sha(body),
        onProgress: (p) => progress.push(p),
      });
      assert.equal(srv.seen[1]?.range, `bytes=${half}-`);
      assert.equal(r.resumed, true);
      assert.equal(r.bytes, body.length);
      assert.equal(r.sha256, sha(body));
      assert.deepEqual(await fs.readFile(path), body);
      assert.equal(await exists(`${path}.part`), false);
      assert.deepEqual(progress[0], { received: half, total: body.length, resumedFrom: half });
    } finally {
      await srv.close();
    }
  });

  it('starts over, without appending, when the server ignores Range', async () => {
    const srv = await startServer((_req, res) => {
      res.writeHead(200, { 'content-length': body.length }).end(body);
    });
    try {
      const path = dest();
      await fs.mkdir(join(path, '..'), { recursive: true });
      await fs.writeFile(`${path}.part`, body.subarray(0, half));
      // No sha256: byte-exactness must not depend on the checksum catching an append.
      const r = await download({ url: srv.url, dest: path });
      assert.equal(srv.seen[0]?.range, `bytes=${half}-`);
      assert.equal(r.resumed, false);
      assert.equal(r.bytes, body.length);
      assert.equal(r.sha256, sha(body));
      assert.deepEqual(await fs.readFile(path), body);
    } finally {
      await srv.close();
    }
  });

  it('starts over when a 206 covers a different range than asked', async () => {
    const srv = await startServer((req, res) => {
      // A broken server: the whole file, labelled 206, whatever range was asked for.
      const status = req.headers.range === undefined ? 200 : 206;
      res.writeHead(status, {
        'content-length': body.length,
        'content-range': `bytes 0-${body.length - 1}/${body.length}`,
      });
      res.end(body);
    });
    try {
      const path = dest();
      await fs.mkdir(join(path, '..'), { recursive: true });
      await fs.writeFile(`${path}.part`, body.subarray(0, half));
      const r = await download({ url: srv.url, dest: path });
      assert.deepEqual(
        srv.seen.map((h) => h.range),
        [`bytes=${half}-`, undefined],
      );
      assert.equal(r.resumed, false);
      assert.deepEqual(await fs.readFile(path), body);
    } finally {
      await srv.close();
    }
  });

  it('restarts with one full GET after a 416', async () => {
    const srv = await startServer(rangedHandler(body));
    try {
      const path = dest();
      await fs.mkdir(join(path, '..'), { recursive: true });
      // Longer than the file: a stale .part from some other, bigger image.
      await fs.writeFile(`${path}.part`, randomBytes(body.length + 10));
      const r = await download({ url: srv.url, dest: path, sha256: sha(body) });
      assert.deepEqual(
        srv.seen.map((h) => h.range),
        [`bytes=${body.length + 10}-`, undefined],
      );
      assert.equal(r.resumed, false);
      assert.deepEqual(await fs.readFile(path), body);
    } finally {
      await srv.close();
    }
  });

  it('on a checksum mismatch leaves neither dest nor .part', async () => {
    const srv = await startServer(rangedHandler(body));
    try {
      const path = dest();
      const wrong = 'ab'.repeat(32);
      await assert.rejects(download({ url: srv.url, dest: path, sha256: wrong }), (err: Error) => {
        assert.match(err.message, /checksum mismatch/);
        assert.ok(err.message.includes(`expected ${wrong}, got ${sha(body)}`));
        return true;
      });
      assert.equal(await exists(path), false);
      assert.equal(await exists(`${path}.part`), false);
    } finally {
      await srv.close();
    }
  });

  it('on a 404 fails with the status and leaves nothing behind', async () => {
    const srv = await startServer((_req, res) => {
      res.writeHead(404).end('no such image');
    });
    try {
      const path = dest();
      await assert.rejects(download({ url: srv.url, dest: path, sha256: sha(body) }), (err: Error) => {
        assert.equal(err.message, `download of ${srv.url} failed: HTTP 404 Not Found`);
        return true;
      });
      assert.equal(await exists(path), false);
      assert.equal(await exists(`${path}.part`), false);
    } finally {
      await srv.close();
    }
  });

  it('makes no request when dest is present with the right checksum', async () => {
    const srv = await startServer(rangedHandler(body));
    try {
      const path = dest();
      await fs.mkdir(join(path, '..'), { recursive: true });
      await fs.writeFile(path, body);
      const r = await download({ url: srv.url, dest: path, sha256: sha(body).toUpperCase() });
      assert.deepEqual(r, {
        path,
        bytes: body.length,
        resumed: false,
        alreadyPresent: true,
        sha256: sha(body),
      });
      assert.equal(srv.seen.length, 0);
    } finally {
      await srv.close();
    }
  });

  it('refuses a present dest with the wrong checksum, and leaves it alone', async () => {
    const srv = await startServer(rangedHandler(body));
    try {
      const path = dest();
      await fs.mkdir(join(path, '..'), { recursive: true });
      await fs.writeFile(path, 'old');
      await assert.rejects(download({ url: srv.url, dest: path, sha256: sha(body) }), /does not match/);
      assert.equal(await fs.readFile(path, 'utf8'), 'old');
      assert.equal(srv.seen.length, 0);
    } finally {
      await srv.close();
    }
  });

  it('on abort keeps the .part for a later resume', async () => {
    const srv = await startServer((_req, res) => {
      // Half the body, then stall: only the abort ends this download.
      res.writeHead(200, { 'content-length': body.length });
      res.write(body.subarray(0, half));
    });
    try {
      const path = dest();
      const ac = new AbortController();
      await assert.rejects(
        download({
          url: srv.url,
          dest: path,
          signal: ac.signal,
          onProgress: (p) => {
            if (p.received === half) ac.abort();
          },
        }),
        /aborted/,
      );
      assert.equal((await fs.stat(`${path}.part`)).size, half);
    } finally {
      await srv.close();
    }
  });
});

describe('parseChecksumFile', () => {
  const a = 'a'.repeat(64);
  const b = 'B'.repeat(64);
  const sums = [`${a} *noble-server-cloudimg-amd64.img`, `${b}  noble-server-cloudimg-arm64.img`, ''].join(
    '\r\n',
  );

  it('reads binary-mode (*name) and text-mode (two spaces) lines', () => {
    assert.equal(parseChecksumFile(sums, 'noble-server-cloudimg-amd64.img'), a);
    assert.equal(parseChecksumFile(sums, 'noble-server-cloudimg-arm64.img'), 'b'.repeat(64));
  });

  it('returns undefined for an unlisted name or a prefix of one', () => {
    assert.equal(parseChecksumFile(sums, 'noble-server-cloudimg-riscv64.img'), undefined);
    assert.equal(parseChecksumFile(sums, 'noble-server-cloudimg-amd64'), undefined);
    assert.equal(parseChecksumFile('', 'x.img'), undefined);
  });

  it('skips comments and malformed lines, and accepts ./name and BSD-style lines', () => {
    const text = [`# ${a}  x.img`, 'deadbeef  x.img', `${a}  ./x.img`, `SHA256 (y.img) = ${b}`].join('\n');
    assert.equal(parseChecksumFile(text, 'x.img'), a);
    assert.equal(parseChecksumFile(text, 'y.img'), 'b'.repeat(64));
  });
});
