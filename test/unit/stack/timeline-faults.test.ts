import assert from 'node:assert/strict';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { Timeline, TimelineWriteError, type TimelineEvent } from '../../../src/stack/timeline.js';

function tempDir(t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'pvml-tlf-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const A = '52:54:00:aa:bb:01';
const B = '52:54:00:aa:bb:02';
const tick = () => new Promise((r) => setImmediate(r));
const lines = (file: string) =>
  readFileSync(file, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as TimelineEvent);

test('a directory at the file: writes fail without throwing, are logged once, kept and written later', async (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'timeline.jsonl');
  mkdirSync(file);
  const logs: string[] = [];
  const tl = new Timeline({ file, log: (m) => logs.push(m), retryMs: 60_000 });
  t.after(() => tl.close());
  assert.match(
    logs[0] ?? '',
    /^timeline: cannot read .*timeline\.jsonl \(EISDIR.*\); its history is not loaded$/,
  );
  const e1 = tl.add(A, 'dhcp.ack', 'dhcp');
  await tick(); // the old stack died here: writeSync threw in setImmediate
  assert.equal(tl.flush(), false);
  await assert.rejects(tl.addDurable(A, 'ready', 'cloud-init'), (err: Error) => {
    assert.ok(err instanceof TimelineWriteError);
    assert.match(err.message, /^cannot write .*timeline\.jsonl: EISDIR/);
    return true;
  });
  assert.equal(logs.filter((l) => l.includes('cannot write')).length, 1, logs.join('\n'));
  assert.deepEqual(
    tl.list(A).map((e) => e.type),
    ['dhcp.ack', 'ready'],
  );
  assert.equal(tl.last(A, 'ready')?.type, 'ready', 'kept in memory: /ipxe still knows');
  assert.equal(tl.status().ok, false);
  assert.equal(tl.status().pendingEvents, 2);

  rmSync(file, { recursive: true });
  const e3 = await tl.addDurable(A, 'installer.x', 'installer');
  assert.deepEqual(
    lines(file).map((e) => e.type),
    ['dhcp.ack', 'ready', 'installer.x'],
  );
  assert.deepEqual(lines(file)[0], e1);
  assert.deepEqual(lines(file)[2], e3);
  assert.ok(
    logs.some((l) => l.endsWith('timeline.jsonl is written again')),
    logs.join('\n'),
  );
  assert.equal(tl.status().ok, true);
  // The ready is in the state file too.
  const state = JSON.parse(readFileSync(join(dir, 'timeline.state.json'), 'utf8')) as {
    machines: Record<string, Record<string, TimelineEvent>>;
  };
  assert.equal(state.machines[A]?.ready?.type, 'ready');
});

test('a full disk (ENOSPC): no crash, durable adds rejected, memory bounded, ready never dropped', async (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'timeline.jsonl');
  // /dev/full answers every write with ENOSPC; the link keeps renames away from /dev.
  symlinkSync('/dev/full', file);
  const logs: string[] = [];
  const tl = new Timeline({ file, log: (m) => logs.push(m), maxPendingBytes: 4096, retryMs: 60_000 });
  t.after(() => tl.close());
  tl.add(A, 'first', 'stack');
  await tick();
  await assert.rejects(tl.addDurable(A, 'ready', 'cloud-init'), /cannot write .*: ENOSPC/);
  for (let i = 0; i < 200; i++) tl.add(A, 'flood', 'stack', { i, pad: 'x'.repeat(100) });
  await tick();
  assert.ok(tl.status().pendingEvents < 40, `pending bounded: ${tl.status().pendingEvents}`);
  assert.equal(tl.last(A, 'ready')?.type, 'ready');

  // Space again (the link now points at a file): the held ready is written, the dropped count said.
  rmSync(file);
  assert.equal(tl.flush(), true);
  const types = lines(file).map((e) => e.type);
  assert.ok(types.includes('ready'), types.join(','));
  assert.ok(
    logs.some((l) => /is written again; \d+ event\(s\) could not be kept until then/.test(l)),
    logs.join('\n'),
  );
});

test('the file is bounded: compacted past maxFileBytes, keeping each machine latest events and its ready', (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'timeline.jsonl');
  const logs: string[] = [];
  const opts = { file, log: (m: string) => logs.push(m), maxPerMachine: 50, maxFileBytes: 64 * 1024 };
  const tl = new Timeline(opts);
  const ready = tl.add(A, 'ready', 'cloud-init', { hostname: 'pxe1' });
  tl.add(B, 'dhcp.ack', 'dhcp');
  let max = 0;
  for (let i = 0; i < 20_000; i++) {
    tl.add(A, 'flood', 'stack', { i, pad: 'y'.repeat(50) });
    if (i % 100 === 0) {
      tl.flush();
      max = Math.max(max, statSync(file).size);
    }
  }
  tl.close();
  assert.ok(max < 2 * 64 * 1024, `file stayed bounded: ${max} bytes`);
  assert.ok(
    logs.some((l) => l.startsWith(`timeline: compacted ${file} from `)),
    logs.join('\n'),
  );

  const again = new Timeline(opts);
  t.after(() => again.close());
  assert.deepEqual(again.last(A, 'ready'), ready);
  assert.equal(again.list(A).length, 50);
  assert.equal(again.list(A).at(-1)?.detail?.i, 19_999);
  assert.equal(again.list(B).length, 1);

  // Even without the file, the state file says A is installed.
  rmSync(file);
  const stateOnly = new Timeline(opts);
  t.after(() => stateOnly.close());
  assert.deepEqual(stateOnly.last(A, 'ready'), ready);
});

test('memory is bounded: bytes per machine, types per machine, machines; ready is never evicted', () => {
  const logs: string[] = [];
  const tl = new Timeline({
    maxBytesPerMachine: 10_000,
    maxTypesPerMachine: 10,
    maxMachines: 5,
    log: (m) => logs.push(m),
  });
  const ready = tl.add(A, 'ready', 'cloud-init');
  for (let i = 0; i < 100; i++) tl.add(A, `type.${i}`, 'stack', { pad: 'z'.repeat(500) });
  const bytes = tl.list(A).reduce((n, e) => n + JSON.stringify(e).length + 1, 0);
  assert.ok(bytes <= 10_000, `${bytes} bytes kept`);
  assert.equal(tl.last(A, 'ready'), ready, 'ready outlives the types it came before');
  assert.equal(tl.last(A, 'type.0'), undefined, 'old types forgotten');
  assert.equal(tl.last(A, 'type.99')?.type, 'type.99');
  // Machines: a DHCP flood from made-up MACs does not take A's ready with it.
  for (let i = 0; i < 50; i++)
    tl.add(`52:54:00:00:01:${i.toString(16).padStart(2, '0')}`, 'dhcp.discover', 'dhcp');
  assert.equal(tl.macs().length, 5);
  assert.equal(tl.last(A, 'ready'), ready);
});

test('a file larger than the read chunk loads whole; junk and overlong lines are counted and logged', (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'timeline.jsonl');
  const evs: TimelineEvent[] = [];
  let text = '';
  for (let i = 0; i < 3000; i++) {
    const ev: TimelineEvent = {
      at: new Date(Date.UTC(2026, 0, 1) + i).toISOString(),
      mac: A,
      type: 'x',
      source: 'stack',
      detail: { i, pad: 'q'.repeat(i % 2000) },
    };
    evs.push(ev);
    text += `${JSON.stringify(ev)}\n`;
    if (i === 1000) text += `${'j'.repeat(3 << 20)}\nnot json\n`;
  }
  writeFileSync(file, text);
  const logs: string[] = [];
  const tl = new Timeline({
    file,
    maxPerMachine: 5000,
    maxBytesPerMachine: 1 << 30,
    maxFileBytes: 1 << 30,
    log: (m) => logs.push(m),
  });
  t.after(() => tl.close());
  assert.deepEqual(tl.list(A), evs);
  assert.deepEqual(logs, [`timeline: skipped 2 unreadable line(s) of ${file}`]);
});

test('addDurable: resolved once the line is in the file; without a file at once', async (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'timeline.jsonl');
  const tl = new Timeline({ file });
  t.after(() => tl.close());
  const ev = await tl.addDurable(A, 'ready', 'cloud-init', { hostname: 'h' });
  assert.deepEqual(lines(file), [ev]);
  assert.ok(existsSync(join(dir, 'timeline.state.json')));
  const mem = new Timeline();
  assert.equal((await mem.addDurable(A, 'x', 'stack')).type, 'x');
});
