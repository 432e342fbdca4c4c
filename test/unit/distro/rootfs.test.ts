import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import {
  compareVersions,
  findKernel,
  imageSizesMiB,
  mke2fsArgv,
  zstdArgv,
} from '../../../src/distro/rootfs.js';

test('compareVersions orders kernel versions by their numbers', () => {
  const v = ['6.1.0-9-cloud-amd64', '6.1.0-57-cloud-amd64', '6.1.0-10-cloud-amd64', '5.10.0-30-amd64'];
  assert.deepEqual([...v].sort(compareVersions), [
    '5.10.0-30-amd64',
    '6.1.0-9-cloud-amd64',
    '6.1.0-10-cloud-amd64',
    '6.1.0-57-cloud-amd64',
  ]);
  assert.equal(compareVersions('6.8.0-87-generic', '6.8.0-87-generic'), 0);
});

test('findKernel: the newest vmlinuz that has its modules (usr/lib or lib)', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'pvmlab-k-'));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  mkdirSync(join(root, 'boot'));
  for (const v of ['6.1.0-9', '6.1.0-10', '6.2.0-1']) writeFileSync(join(root, 'boot', `vmlinuz-${v}`), 'k');
  // 6.2.0-1 has no modules (a half-removed kernel); 6.1.0-10 has them under lib/.
  mkdirSync(join(root, 'lib/modules/6.1.0-10'), { recursive: true });
  writeFileSync(join(root, 'lib/modules/6.1.0-10/modules.dep'), '');
  mkdirSync(join(root, 'usr/lib/modules/6.1.0-9'), { recursive: true });
  writeFileSync(join(root, 'usr/lib/modules/6.1.0-9/modules.dep'), '');
  assert.deepEqual(await findKernel(root), {
    version: '6.1.0-10',
    image: join(root, 'boot/vmlinuz-6.1.0-10'),
    modulesDir: join(root, 'lib/modules/6.1.0-10'),
  });
});

test('findKernel says what it found when nothing fits', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'pvmlab-k-'));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  await assert.rejects(findKernel(root), /no kernel in .*\/boot with its modules \(found: none\)/);
  mkdirSync(join(root, 'boot'));
  writeFileSync(join(root, 'boot/vmlinuz-1.0'), 'k');
  await assert.rejects(findKernel(root), /\(found: vmlinuz-1\.0\)/);
});

test('image size and tool command lines', () => {
  assert.deepEqual(imageSizesMiB(400 * 1024), [448, 505, 648], 'tight first, then roomier');
  assert.deepEqual(mke2fsArgv('/w/root', '/w/rootfs.ext4', 564), [
    '-q',
    '-F',
    '-t',
    'ext4',
    '-b',
    '4096',
    '-L',
    'root',
    '-d',
    '/w/root',
    '/w/rootfs.ext4',
    '564M',
  ]);
  assert.ok(!mke2fsArgv('/r', '/i', 1).join(' ').includes('metadata_csum_seed'), 'GRUB 2.06 cannot read it');
  assert.deepEqual(zstdArgv('/w/a', '/w/a.zst'), [
    '-q',
    '-f',
    '-T0',
    '-3',
    '--check',
    '/w/a',
    '-o',
    '/w/a.zst',
  ]);
});
