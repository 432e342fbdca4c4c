import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, readlink, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { buildCpio } from '../../../src/distro/cpio.js';

test('newc archive unpacks with GNU cpio: files, modes, dirs, symlinks', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'pvmlab-cpio-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const big = Buffer.alloc(5001, 7);
  const archive = buildCpio([
    { path: 'bin', type: 'dir', mode: 0o755 },
    { path: 'bin/init', type: 'file', mode: 0o755, data: '#!/bin/sh\necho hi\n' },
    { path: 'bin/sh', type: 'symlink', mode: 0o777, data: 'busybox' },
    { path: 'data.bin', type: 'file', mode: 0o600, data: big },
    { path: 'empty', type: 'file', mode: 0o644 },
  ]);
  assert.equal(archive.length % 4, 0);
  const listing = execFileSync('cpio', ['-t', '--quiet'], { input: archive, encoding: 'utf8' });
  assert.deepEqual(listing.trim().split('\n'), ['bin', 'bin/init', 'bin/sh', 'data.bin', 'empty']);
  execFileSync('cpio', ['-id', '--quiet', '--no-absolute-filenames'], { input: archive, cwd: dir });
  assert.equal(await readFile(join(dir, 'bin/init'), 'utf8'), '#!/bin/sh\necho hi\n');
  assert.equal((await stat(join(dir, 'bin/init'))).mode & 0o777, 0o755);
  assert.equal((await stat(join(dir, 'data.bin'))).mode & 0o777, 0o600);
  assert.deepEqual(await readFile(join(dir, 'data.bin')), big);
  assert.equal(await readlink(join(dir, 'bin/sh')), 'busybox');
  assert.equal((await readFile(join(dir, 'empty'))).length, 0);
});

test('refuses absolute and parent paths', () => {
  assert.throws(() => buildCpio([{ path: '/etc/x', type: 'file', mode: 0o644 }]), /invalid path/);
  assert.throws(() => buildCpio([{ path: 'a/../../x', type: 'file', mode: 0o644 }]), /invalid path/);
});
