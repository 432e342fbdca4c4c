import assert from 'node:assert/strict';
import { appendFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { Timeline, type TimelineEvent } from '../../../src/stack/timeline.js';

function tempDir(t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'pvml-timeline-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A clock that advances one second per call, from a fixed start. */
function clock(start = Date.UTC(2026, 0, 2, 3, 4, 5, 6)): () => Date {
  let n = 0;
  return () => new Date(start + 1000 * n++);
}

const A = '52:54:00:aa:bb:01';
const B = '52:54:00:aa:bb:02';

test('add returns the event; list/last/macs; MACs are case-insensitive', () => {
  const tl = new Timeline({ now: clock() });
  const e1 = tl.add('52:54:00:AA:BB:01', 'dhcp.discover', 'dhcp', { iface: 'br0' });
  assert.deepEqual(e1, {
    at: '2026-01-02T03:04:05.006Z',
    mac: A,
    type: 'dhcp.discover',
    source: 'dhcp',
    detail: { iface: 'br0' },
  });
  // An empty detail is left out.
  const e2 = tl.add(A, 'tftp.sent', 'tftp', {});
  assert.deepEqual(e2, { at: '2026-01-02T03:04:06.006Z', mac: A, type: 'tftp.sent', source: 'tftp' });
  assert.equal(Object.hasOwn(e2, 'detail'), false);
  const e3 = tl.add(B, 'http.ipxe', 'http', { script: 'install', n: 1, ok: true });
  const e4 = tl.add(A, 'ready', 'cloud-init');
  const e5 = tl.add(A, 'installer.done', 'installer', { step: 2 });
  const e6 = tl.add(A, 'ready', 'cloud-init', { hostname: 'pxe1' });

  assert.deepEqual(tl.list(A), [e1, e2, e4, e5, e6]);
  assert.deepEqual(tl.list('52:54:00:AA:BB:01'), [e1, e2, e4, e5, e6]);
  assert.deepEqual(tl.list(B), [e3]);
  assert.deepEqual(tl.list('52:54:00:00:00:00'), []);
  assert.deepEqual(tl.macs(), [A, B]);

  assert.equal(tl.last(A, 'ready'), e6);
  assert.equal(tl.last('52:54:00:AA:BB:01', 'dhcp.discover'), e1);
  assert.equal(tl.last(A, 'http.ipxe'), undefined);
  assert.equal(tl.last(B, 'http.ipxe'), e3);
  assert.equal(tl.last('52:54:00:00:00:00', 'ready'), undefined);

  // list() is a copy: callers cannot edit the timeline.
  tl.list(A).length = 0;
  assert.equal(tl.list(A).length, 5);
});

test('maxPerMachine keeps the newest events of each machine', () => {
  const tl = new Timeline({ maxPerMachine: 3, now: clock() });
  for (let i = 0; i < 5; i++) tl.add(A, `step.${i}`, 'installer');
  tl.add(B, 'only', 'stack');
  assert.deepEqual(
    tl.list(A).map((e) => e.type),
    ['step.2', 'step.3', 'step.4'],
  );
  assert.deepEqual(
    tl.list(B).map((e) => e.type),
    ['only'],
  );
  // last() still knows the trimmed step (see the test on ready below).
  assert.equal(tl.last(A, 'step.0')?.type, 'step.0');
  // The default is 1000.
  const big = new Timeline({ now: clock() });
  for (let i = 0; i < 1005; i++) big.add(A, `s.${i}`, 'stack');
  const list = big.list(A);
  assert.equal(list.length, 1000);
  assert.equal(list[0]?.type, 's.5');
  assert.equal(list[999]?.type, 's.1004');
});

test("emits 'event' for every add, after it is recorded", () => {
  const tl = new Timeline({ now: clock() });
  const seen: { ev: TimelineEvent; listed: number }[] = [];
  tl.on('event', (ev: TimelineEvent) => seen.push({ ev, listed: tl.list(ev.mac).length }));
  const e1 = tl.add('52:54:00:AA:BB:01', 'a', 'stack');
  const e2 = tl.add(B, 'b', 'http', { x: 'y' });
  assert.deepEqual(seen, [
    { ev: e1, listed: 1 },
    { ev: e2, listed: 1 },
  ]);
  assert.equal(seen[0]?.ev.mac, A);
});

test('persists to a JSONL file and a new Timeline reloads it', (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'timeline.jsonl');
  const tl = new Timeline({ file, now: clock() });
  const e1 = tl.add(A, 'dhcp.ack', 'dhcp', { ip: '10.217.0.2' });
  const e2 = tl.add(B, 'http.ipxe', 'http');
  const e3 = tl.add(A, 'ready', 'cloud-init', { hostname: 'pxe1' });
  tl.close();
  assert.equal(readFileSync(file, 'utf8'), [e1, e2, e3].map((e) => `${JSON.stringify(e)}\n`).join(''));

  const again = new Timeline({ file, now: clock(Date.UTC(2026, 5, 1)) });
  assert.deepEqual(again.list(A), [e1, e3]);
  assert.deepEqual(again.list(B), [e2]);
  assert.deepEqual(again.macs(), [A, B]);
  assert.deepEqual(again.last(A, 'ready'), e3);
  // Loading does not re-emit or rewrite anything.
  assert.equal(readFileSync(file, 'utf8').split('\n').length, 4);

  // New events go after the old ones, in the file as in memory.
  const e4 = again.add(A, 'http.ipxe', 'http', { script: 'local-boot' });
  again.flush();
  assert.equal(readFileSync(file, 'utf8').trimEnd().split('\n').length, 4);
  assert.deepEqual(new Timeline({ file }).list(A), [e1, e3, e4]);
});

test('reload trims to maxPerMachine and skips junk', (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'timeline.jsonl');
  const tl = new Timeline({ file, now: clock() });
  for (let i = 0; i < 4; i++) tl.add(A, `s.${i}`, 'stack');
  tl.close();
  appendFileSync(file, '\nnot json\n{"mac": 5, "type": "x"}\n{"type": "no-mac"}\n[]\nnull\n');
  const small = new Timeline({ file, maxPerMachine: 2 });
  assert.deepEqual(
    small.list(A).map((e) => e.type),
    ['s.2', 's.3'],
  );
  assert.deepEqual(small.macs(), [A]);
});

test('a torn last line (crash mid-write) is skipped, and the next event is not lost with it', (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'timeline.jsonl');
  const tl = new Timeline({ file, now: clock() });
  const e1 = tl.add(A, 'dhcp.ack', 'dhcp');
  const e2 = tl.add(A, 'http.kernel', 'http', { bytes: 123 });
  tl.close();
  const full = readFileSync(file, 'utf8');
  const torn = `${JSON.stringify({ at: '2026-01-02T03:04:09.006Z', mac: A, type: 'installer.x', source: 'installer' }).slice(0, 30)}`;
  writeFileSync(file, full + torn);

  const restarted = new Timeline({ file, now: clock(Date.UTC(2026, 1, 1)) });
  assert.deepEqual(restarted.list(A), [e1, e2]);
  const e3 = restarted.add(A, 'ready', 'cloud-init');
  assert.deepEqual(restarted.list(A), [e1, e2, e3]);
  restarted.close();

  // Restarted again: the event added after the torn line survives.
  assert.deepEqual(new Timeline({ file }).list(A), [e1, e2, e3]);
});

test('a missing file starts empty and is created on the first add', (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'timeline.jsonl');
  const tl = new Timeline({ file, now: clock() });
  assert.deepEqual(tl.macs(), []);
  const ev = tl.add(B, 'x', 'stack');
  tl.close();
  assert.equal(readFileSync(file, 'utf8'), `${JSON.stringify(ev)}\n`);
});

test('events reach the file once per event-loop turn, in one write, in order', async (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'timeline.jsonl');
  const tl = new Timeline({ file, now: clock() });
  t.after(() => tl.close());
  const evs = Array.from({ length: 50 }, (_, i) => tl.add(A, `burst.${i}`, 'http'));
  assert.equal(existsSync(file), false, 'nothing written inside the turn');
  await new Promise((r) => setImmediate(r));
  assert.equal(readFileSync(file, 'utf8'), evs.map((e) => `${JSON.stringify(e)}\n`).join(''));
  const more = tl.add(B, 'later', 'stack');
  await new Promise((r) => setImmediate(r));
  assert.ok(readFileSync(file, 'utf8').endsWith(`${JSON.stringify(more)}\n`));
});

test('last() remembers the latest event of a type even after older events are trimmed', () => {
  const tl = new Timeline({ maxPerMachine: 3, now: clock() });
  const ready = tl.add(A, 'ready', 'cloud-init');
  for (let i = 0; i < 5; i++) tl.add(A, `later.${i}`, 'http');
  assert.equal(
    tl.list(A).some((e) => e.type === 'ready'),
    false,
  );
  assert.deepEqual(tl.last(A, 'ready'), ready);
  assert.equal(tl.last(A, 'nope'), undefined);
  assert.equal(tl.last(B, 'ready'), undefined);
});
