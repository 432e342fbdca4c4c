import assert from 'node:assert/strict';
import {
  closeSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import {
  request as httpRequest,
  type ClientRequest,
  type IncomingHttpHeaders,
  type IncomingMessage,
} from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { VmDefinition } from '../../../src/core/vmdef.js';
import { createBootServer, type BootServerOptions, type MachineLookup } from '../../../src/stack/http.js';
import { normalizeMacKey } from '../../../src/stack/registry.js';
import { Timeline, type TimelineEvent, type TimelineOptions } from '../../../src/stack/timeline.js';

type After = { after: (fn: () => unknown) => void };

const PXE1_MAC = '52:54:00:aa:bb:01';
const pxe1: VmDefinition = {
  name: 'pxe1',
  role: 'target',
  arch: 'x86_64',
  ip: '10.217.0.2',
  mac: PXE1_MAC,
  pxeboot: true,
  distro: 'ubuntu-24.04',
  kernel: 'vmlinuz',
};

function lookup(vms: VmDefinition[]): MachineLookup {
  return {
    byMac: (mac) => vms.find((v) => v.mac && normalizeMacKey(v.mac) === normalizeMacKey(mac)),
    byName: (name) => vms.find((v) => v.name === name),
    all: () => [...vms],
  };
}

const BIG_SIZE = 50 * 1024 * 1024;

interface Lab {
  port: number;
  dir: string;
  imagesDir: string;
  timelineFile: string;
  timeline: Timeline;
  logs: string[];
}

async function startLab(
  t: After,
  opts: Partial<BootServerOptions> & {
    tl?: TimelineOptions;
    imagesLink?: boolean;
    timelineIsDir?: boolean;
  } = {},
): Promise<Lab> {
  const dir = mkdtempSync(join(tmpdir(), 'pvml-httpf-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  // The images root is reached through a symlink (another disk): that is not leaving it.
  const realImages = join(dir, 'real-images');
  const imagesDir = opts.imagesLink === false ? realImages : join(dir, 'images');
  if (opts.imagesLink !== false) symlinkSync(realImages, imagesDir);
  const initrdsDir = join(dir, 'initrds');
  const ubuntu = join(realImages, 'ubuntu-24.04', 'x86_64');
  mkdirSync(ubuntu, { recursive: true });
  mkdirSync(join(initrdsDir, 'x86_64'), { recursive: true });
  mkdirSync(join(dir, 'vms'));
  writeFileSync(join(ubuntu, 'vmlinuz'), 'kernel');
  writeFileSync(join(ubuntu, 'empty'), '');
  writeFileSync(join(initrdsDir, 'x86_64', 'initrd.gz'), 'initrd');
  const fd = openSync(join(ubuntu, 'rootfs.tar.gz'), 'w');
  writeSync(fd, Buffer.from('end'), 0, 3, BIG_SIZE - 3);
  closeSync(fd);
  const logs: string[] = [];
  const timelineFile = join(dir, 'state', 'timeline.jsonl');
  mkdirSync(join(dir, 'state'));
  if (opts.timelineIsDir) mkdirSync(timelineFile);
  const timeline = new Timeline({ file: timelineFile, log: (m) => logs.push(m), ...opts.tl });
  t.after(() => timeline.close());
  const { tl: _tl, imagesLink: _il, timelineIsDir: _td, ...serverOpts } = opts;
  const server = createBootServer({
    machines: lookup([pxe1]),
    timeline,
    imagesDir,
    initrdsDir,
    vmsDir: join(dir, 'vms'),
    existsCacheMs: 0,
    log: (m) => logs.push(m),
    ...serverOpts,
  });
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', () => res()));
  t.after(
    () =>
      new Promise<void>((res) => {
        server.closeAllConnections();
        server.close(() => res());
      }),
  );
  return { port: (server.address() as AddressInfo).port, dir, imagesDir, timelineFile, timeline, logs };
}

interface Res {
  status: number;
  headers: IncomingHttpHeaders;
  text: string;
}

function req(
  lab: Lab,
  path: string,
  r: { method?: string; body?: string; headers?: Record<string, string> } = {},
): Promise<Res> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string | number> = { ...r.headers };
    if (r.body !== undefined) headers['Content-Length'] = Buffer.byteLength(r.body);
    const cr = httpRequest(
      { host: '127.0.0.1', port: lab.port, method: r.method ?? 'GET', path, headers, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            text: Buffer.concat(chunks).toString(),
          }),
        );
      },
    );
    cr.on('error', reject);
    if (r.body !== undefined) cr.write(r.body);
    cr.end();
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

// ---- 10: symlinks out of a served root ----------------------------------------------------------

test('static roots: a symlink that leads out of the root is refused (403); one inside it is served', async (t) => {
  const lab = await startLab(t);
  const outside = join(lab.dir, 'outside');
  mkdirSync(outside);
  writeFileSync(join(outside, 'shadow'), 'root:secret');
  const ubuntu = join(lab.imagesDir, 'ubuntu-24.04', 'x86_64');
  symlinkSync(outside, join(lab.imagesDir, 'etc-link'));
  symlinkSync('/etc', join(lab.imagesDir, 'etc'));
  symlinkSync(join(outside, 'shadow'), join(ubuntu, 'leak'));
  symlinkSync('../../../outside/shadow', join(ubuntu, 'relative-leak'));
  symlinkSync(outside, join(lab.dir, 'initrds', 'x86_64', 'dir-link'));
  // Inside the root: served.
  symlinkSync('vmlinuz', join(ubuntu, 'vmlinuz-6.8'));
  symlinkSync('ubuntu-24.04', join(lab.imagesDir, 'ubuntu'));

  const refused = 'pvmlab stack: path traversal refused\n';
  for (const path of [
    '/images/etc-link/shadow',
    '/images/etc/passwd',
    '/images/etc/hostname',
    '/images/ubuntu-24.04/x86_64/leak',
    '/images/ubuntu-24.04/x86_64/relative-leak',
    '/initrds/x86_64/dir-link/shadow',
    // What does not exist out there is refused the same way: no oracle for the host's files.
    '/images/etc-link/nothing-here',
    '/images/etc/no-such-file',
  ])
    for (const method of ['GET', 'HEAD']) {
      const r = await req(lab, path, { method });
      assert.equal(r.status, 403, `${method} ${path}: ${r.text}`);
      if (method === 'GET') assert.equal(r.text, refused);
    }
  for (const path of [
    '/images/ubuntu-24.04/x86_64/vmlinuz',
    '/images/ubuntu-24.04/x86_64/vmlinuz-6.8',
    '/images/ubuntu/x86_64/vmlinuz',
  ]) {
    const r = await req(lab, path);
    assert.equal(r.status, 200, path);
    assert.equal(r.text, 'kernel');
  }
  assert.equal((await req(lab, '/images/ubuntu-24.04/x86_64/nope')).status, 404);
  assert.equal(lab.logs.filter((l) => l.startsWith('http:')).length, 0, lab.logs.join('\n'));
});

// ---- 12: prototype names ------------------------------------------------------------------------

const PROTO_NAMES = ['__proto__', 'constructor', 'hasOwnProperty', 'toString', 'valueOf', '__defineGetter__'];

test('prototype names are no documents, machines or keys: 404/400, nothing recorded, nothing logged', async (t) => {
  const lab = await startLab(t);
  for (const name of PROTO_NAMES) {
    const r = await req(lab, `/cloud-init/pxe1/${name}`);
    assert.equal(r.status, 404, `${name}: ${r.text}`);
    assert.equal(r.text, `pvmlab stack: no cloud-init document '${name}'\n`);
    assert.equal((await req(lab, `/cloud-init/${name}/meta-data`)).status, 404, name);
    assert.equal((await req(lab, `/config/${name}`)).status, 400, name);
    assert.equal((await req(lab, `/ipxe?mac=${name}`)).status, 400, name);
    assert.equal((await req(lab, `/api/machines/${name}/timeline`)).status, 400, name);
    assert.equal((await req(lab, `/ipxe/failed?mac=${PXE1_MAC}&step=${name}&errno=0x1`)).status, 400, name);
  }
  assert.deepEqual(lab.timeline.list(PXE1_MAC), []);
  assert.deepEqual(lab.logs, []);
  // The real documents are still there.
  assert.equal((await req(lab, '/cloud-init/pxe1/meta-data')).status, 200);
});

test('POSTed events: prototype names in the body are neither the type nor detail keys', async (t) => {
  const lab = await startLab(t);
  const path = `/api/machines/${PXE1_MAC}/events`;
  const post = (body: string) => req(lab, path, { method: 'POST', body });
  const detail = Object.fromEntries([
    ...PROTO_NAMES.map((k) => [k, 'x']),
    ['ok', true],
    ['disk', '/dev/vda'],
    ['weird key', 1],
    ['', 2],
  ]);
  const r = await post(JSON.stringify({ type: 'installer.step', detail }));
  assert.equal(r.status, 201, r.text);
  const ev = JSON.parse(r.text) as TimelineEvent;
  assert.deepEqual(ev.detail, { ok: true, disk: '/dev/vda' });
  assert.deepEqual(Object.keys(JSON.parse(readFileSync(lab.timelineFile, 'utf8').trim()).detail), [
    'ok',
    'disk',
  ]);
  // A type only through the prototype is no type.
  assert.equal((await post('{"__proto__":{"type":"ready"}}')).status, 400);
  assert.equal((await post('{"detail":{"x":1},"__proto__":{"type":"ready"}}')).status, 400);
  // Types are names in the timeline's maps, not object keys: `constructor` is an ordinary type.
  assert.equal((await post('{"type":"constructor"}')).status, 201);
  assert.equal(lab.timeline.last(PXE1_MAC, 'constructor')?.type, 'constructor');
  for (const name of ['toString', 'hasOwnProperty', '__proto__', 'valueOf'])
    assert.equal(lab.timeline.last(PXE1_MAC, name), undefined, name);
  assert.equal(lab.timeline.last(PXE1_MAC, 'ready'), undefined);
  // Too many keys: the first 64 are kept.
  const many = Object.fromEntries(Array.from({ length: 100 }, (_, i) => [`k${i}`, i]));
  const r2 = await post(JSON.stringify({ type: 'many', detail: many }));
  assert.equal(Object.keys((JSON.parse(r2.text) as TimelineEvent).detail ?? {}).length, 64);
});

// ---- 13: aborted downloads ----------------------------------------------------------------------

/** This process's descriptors open on `name`. */
function fdsOn(name: string): number {
  let n = 0;
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      if (readlinkSync(`/proc/self/fd/${fd}`).endsWith(name)) n++;
    } catch {
      /* closed meanwhile */
    }
  }
  return n;
}

/** Start a download, take its headers and a little data, then hang up. */
function abortedDownload(lab: Lab, path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const cr: ClientRequest = httpRequest(
      { host: '127.0.0.1', port: lab.port, path, agent: false },
      (res: IncomingMessage) => {
        res.once('data', () => {
          cr.destroy();
          resolve();
        });
        res.on('error', () => undefined);
      },
    );
    cr.on('error', (err) => (cr.destroyed ? undefined : reject(err)));
    cr.end();
  });
}

test('aborted downloads close their files: descriptors return to the baseline', async (t) => {
  const lab = await startLab(t);
  const base = readdirSync('/proc/self/fd').length;
  assert.equal(fdsOn('rootfs.tar.gz'), 0);
  for (let i = 0; i < 50; i++) await abortedDownload(lab, '/images/ubuntu-24.04/x86_64/rootfs.tar.gz');
  // Ranged, HEAD, 416 and empty answers open the file too: each closes it.
  for (let i = 0; i < 10; i++) {
    await abortedDownload(lab, '/images/ubuntu-24.04/x86_64/rootfs.tar.gz?r');
    assert.equal(
      (await req(lab, '/images/ubuntu-24.04/x86_64/rootfs.tar.gz', { method: 'HEAD' })).status,
      200,
    );
    const r416 = await req(lab, '/images/ubuntu-24.04/x86_64/rootfs.tar.gz', {
      headers: { Range: `bytes=${BIG_SIZE}-` },
    });
    assert.equal(r416.status, 416);
    assert.equal((await req(lab, '/images/ubuntu-24.04/x86_64/empty')).status, 200);
  }
  await until('the rootfs descriptors to close', () => fdsOn('rootfs.tar.gz') === 0 && fdsOn('/empty') === 0);
  await until('descriptors back to the baseline', () => readdirSync('/proc/self/fd').length <= base);
});

test('a 416 answer has Content-Length: 0 (not a chunked empty body)', async (t) => {
  const lab = await startLab(t);
  const r = await req(lab, '/images/ubuntu-24.04/x86_64/vmlinuz', { headers: { Range: 'bytes=100-' } });
  assert.equal(r.status, 416);
  assert.equal(r.headers['content-length'], '0');
  assert.equal(r.headers['transfer-encoding'], undefined);
  assert.equal(r.headers['content-range'], 'bytes */6');
  assert.equal(r.text, '');
});

// ---- 11: followers ------------------------------------------------------------------------------

interface FollowClient {
  req: ClientRequest;
  status: Promise<number>;
  res: Promise<IncomingMessage>;
  lines: string[];
  closed: Promise<void>;
}

function follow(lab: Lab, opts: { read: boolean }): FollowClient {
  const lines: string[] = [];
  let resolveRes!: (r: IncomingMessage) => void;
  const res = new Promise<IncomingMessage>((r) => (resolveRes = r));
  const cr = httpRequest({
    host: '127.0.0.1',
    port: lab.port,
    path: `/api/machines/${PXE1_MAC}/timeline?follow=1`,
    agent: false,
  });
  const closed = new Promise<void>((r) => cr.on('close', () => r()));
  cr.on('error', () => undefined);
  cr.on('response', (m) => {
    resolveRes(m);
    m.on('error', () => undefined);
    if (!opts.read) return void m.pause();
    let buf = '';
    m.setEncoding('utf8');
    m.on('data', (s: string) => {
      buf += s;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        lines.push(buf.slice(0, i));
        buf = buf.slice(i + 1);
      }
    });
  });
  cr.end();
  return { req: cr, res, status: res.then((m) => m.statusCode ?? 0), lines, closed };
}

test('followers: at most maxFollowers at a time (503 beyond); a place frees when one leaves', async (t) => {
  const lab = await startLab(t, { maxFollowers: 2 });
  const a = follow(lab, { read: true });
  const b = follow(lab, { read: true });
  t.after(() => {
    a.req.destroy();
    b.req.destroy();
  });
  assert.equal(await a.status, 200);
  assert.equal(await b.status, 200);
  const c = await req(lab, `/api/machines/${PXE1_MAC}/timeline?follow=1`);
  assert.equal(c.status, 503);
  assert.equal(c.text, 'pvmlab stack: too many timeline followers (2); try again later\n');
  assert.equal(c.headers['retry-after'], '5');
  // The plain timeline is not a follower.
  assert.equal((await req(lab, `/api/machines/${PXE1_MAC}/timeline`)).status, 200);
  a.req.destroy();
  await until('a follower place to free', () => lab.timeline.listenerCount('event') === 1);
  const d = follow(lab, { read: true });
  t.after(() => d.req.destroy());
  assert.equal(await d.status, 200);
  lab.timeline.add(PXE1_MAC, 'hello', 'stack');
  await until('both followers to see the event', () => b.lines.length === 1 && d.lines.length === 1);
});

test('followers: one that does not read is disconnected at its buffer bound; readers get everything', async (t) => {
  const bound = 256 * 1024;
  const lab = await startLab(t, {
    maxFollowerBufferBytes: bound,
    tl: { maxPerMachine: 5000, maxBytesPerMachine: 64 << 20 },
  });
  // A history larger than the bound: streamed at the reader's pace, not counted against it.
  const pad = 'p'.repeat(4000);
  for (let i = 0; i < 500; i++) lab.timeline.add(PXE1_MAC, 'history', 'stack', { i, pad });
  const reader = follow(lab, { read: true });
  const sleeper = follow(lab, { read: false });
  t.after(() => {
    reader.req.destroy();
    sleeper.req.destroy();
  });
  assert.equal(await reader.status, 200);
  assert.equal(await sleeper.status, 200);
  await until('the reader to get the history', () => reader.lines.length === 500);
  // 16 MB of new events: the sleeper cannot hold them.
  for (let i = 0; i < 4000; i++) {
    lab.timeline.add(PXE1_MAC, 'live', 'stack', { i, pad });
    // A pace a reader keeps up with (it shares this process): 40 KB, then a turn of the loop.
    if (i % 10 === 0) await sleep(1);
  }
  await until(
    'the sleeper to be disconnected',
    () => lab.logs.some((l) => l.includes('does not read')),
    20_000,
  );
  assert.ok(
    lab.logs.some((l) =>
      l.startsWith(
        `http: disconnected a timeline follower of ${PXE1_MAC} that does not read (more than ${bound} bytes waiting)`,
      ),
    ),
    lab.logs.join('\n'),
  );
  await until('the reader to get every event', () => reader.lines.length === 4500, 20_000);
  assert.equal(lab.logs.filter((l) => l.includes('does not read')).length, 1, 'only the sleeper');
  assert.deepEqual(
    reader.lines.slice(-2).map((l) => (JSON.parse(l) as TimelineEvent).detail?.i),
    [3998, 3999],
  );
  assert.equal(lab.timeline.listenerCount('event'), 1, 'the reader is still subscribed');
  reader.req.destroy();
  await until('no listener left', () => lab.timeline.listenerCount('event') === 0);
});

// ---- 7: events are acknowledged once written ----------------------------------------------------

test('POSTed events and phone-home answer 201 once the event is in the file, 503 while it cannot be written', async (t) => {
  const lab = await startLab(t);
  const ok = await req(lab, `/api/machines/${PXE1_MAC}/events`, {
    method: 'POST',
    body: '{"type":"installer.start"}',
  });
  assert.equal(ok.status, 201);
  // Answered after the write: the line is in the file already.
  assert.deepEqual(JSON.parse(readFileSync(lab.timelineFile, 'utf8')), JSON.parse(ok.text));

  // A directory where the file should be: refused with 503, and the stack keeps serving.
  const bad = await startLab(t, { tl: { retryMs: 50 }, timelineIsDir: true });
  const events = `/api/machines/${PXE1_MAC}/events`;
  const phoneHome = `/api/machines/${PXE1_MAC}/phone-home`;
  const r1 = await req(bad, events, { method: 'POST', body: '{"type":"installer.done"}' });
  assert.equal(r1.status, 503, r1.text);
  assert.match(
    r1.text,
    /^pvmlab stack: cannot write \S*timeline\.jsonl: EISDIR.*; the event is not recorded, send it again\n$/,
  );
  assert.equal(r1.headers['retry-after'], '5');
  const r2 = await req(bad, phoneHome, { method: 'POST', body: 'hostname=pxe1' });
  assert.equal(r2.status, 503, r2.text);
  // Health says so (503, with the reason) while the timeline cannot be written; the rest serves.
  const h = await req(bad, '/healthz');
  assert.equal(h.status, 503);
  const hb = JSON.parse(h.text) as { ok: boolean; timeline: { ok: boolean; error?: string } };
  assert.equal(hb.ok, false);
  assert.equal(hb.timeline.ok, false);
  assert.match(hb.timeline.error ?? '', /timeline\.jsonl/);
  assert.equal((await req(bad, `/ipxe?mac=${PXE1_MAC}`)).status, 200);
  await sleep(200); // a few retries: logged once
  assert.equal(bad.logs.filter((l) => l.includes('cannot write')).length, 1, bad.logs.join('\n'));

  // The path can be a file again: the held events are written, and a resent ready is acknowledged.
  rmSync(bad.timelineFile, { recursive: true });
  const r3 = await req(bad, phoneHome, { method: 'POST', body: 'hostname=pxe1' });
  assert.equal(r3.status, 201, r3.text);
  const types = readFileSync(bad.timelineFile, 'utf8')
    .trim()
    .split('\n')
    .map((l) => (JSON.parse(l) as TimelineEvent).type);
  assert.deepEqual(
    types.filter((x) => x !== 'http.ipxe'),
    ['installer.done', 'ready', 'ready'],
  );
  assert.ok(
    bad.logs.some((l) => / is written again/.test(l)),
    bad.logs.join('\n'),
  );
});

test('POSTed events: a burst per machine, then a rate (429 beyond)', async (t) => {
  const lab = await startLab(t, { eventRate: { perSecond: 1, burst: 3 } });
  const post = () => req(lab, `/api/machines/${PXE1_MAC}/events`, { method: 'POST', body: '{"type":"x"}' });
  for (let i = 0; i < 3; i++) assert.equal((await post()).status, 201);
  const r = await post();
  assert.equal(r.status, 429);
  assert.equal(r.text, `pvmlab stack: too many events for ${PXE1_MAC}; slow down\n`);
  assert.equal(lab.timeline.list(PXE1_MAC).length, 3);
});
