import { strict as assert } from 'node:assert';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { cacheEntryPattern, pruneCache } from '../../../src/core/cache.js';

test('cacheEntryPattern: the prefix, 16 hex digits, the suffix; nothing else', () => {
  const p = cacheEntryPattern('debian-12-x86_64-');
  assert.ok(p.test('debian-12-x86_64-e78a3c10b7f6947f'));
  assert.ok(!p.test('debian-12-x86_64-e78a3c10b7f6947f.tmp-123'));
  assert.ok(!p.test('debian-12-aarch64-511be8467337d2a2'));
  assert.ok(!p.test('xdebian-12-x86_64-e78a3c10b7f6947f'));
  assert.ok(!p.test('debian-12-x86_64-E78A3C10B7F6947F'));
  const gz = cacheEntryPattern('initrd-x86_64-', '.gz');
  assert.ok(gz.test('initrd-x86_64-b4b2f1d98a46008b.gz'));
  assert.ok(!gz.test('initrd-x86_64-b4b2f1d98a46008bXgz'), 'the dot is literal');
});

test('pruneCache: other keys of the same kind go; the kept one, other kinds and builds in progress stay', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'pv-cache-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const keep = 'x86_64-3d5e675ca9935057';
  for (const d of [
    keep,
    'x86_64-e6292c37b17c09c5',
    'x86_64-e6292c37b17c09c5.tmp-99',
    'aarch64-0123456789abcdef',
  ]) {
    mkdirSync(join(dir, d));
    writeFileSync(join(dir, d, 'disk.qcow2'), 'x');
  }
  const removed = await pruneCache(dir, cacheEntryPattern('x86_64-'), keep);
  assert.deepEqual(removed, ['x86_64-e6292c37b17c09c5']);
  assert.deepEqual(readdirSync(dir).sort(), [
    'aarch64-0123456789abcdef',
    keep,
    'x86_64-e6292c37b17c09c5.tmp-99',
  ]);
  assert.deepEqual(await pruneCache(join(dir, 'missing'), cacheEntryPattern('x86_64-'), keep), []);
});
