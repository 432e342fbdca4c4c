import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { parseManifest, type DistroManifest } from '../../../src/core/distro-manifest.js';
import { DistroAssets, shellAssignments } from '../../../src/stack/assets.js';

const MANIFEST: DistroManifest = {
  schema_version: 1,
  distro: 'debian-12',
  arch: 'x86_64',
  kernel: 'vmlinuz',
  kernel_version: '6.1.0-57-cloud-amd64',
  modules: 'modules.cpio.gz',
  rootfs: 'rootfs.ext4.zst',
  rootfs_format: 'ext4.zst',
  rootfs_bytes: 1234,
  source: 'test',
  created: '2026-12-01T00:00:00.000Z',
  sha256: { vmlinuz: 'a'.repeat(64) },
};

test('parseManifest accepts a manifest and refuses bad ones with the reason', () => {
  const ok = parseManifest(JSON.stringify(MANIFEST));
  assert.ok(ok.ok);
  const bad: [unknown, RegExp][] = [
    [{ ...MANIFEST, rootfs: '../../etc/shadow' }, /rootfs: a plain file name/],
    [{ ...MANIFEST, kernel: '/boot/vmlinuz' }, /kernel: a plain file name/],
    [{ ...MANIFEST, rootfs_format: 'squashfs' }, /rootfs_format/],
    [{ ...MANIFEST, rootfs_bytes: 0 }, /rootfs_bytes/],
    [{ ...MANIFEST, schema_version: 2 }, /schema_version 2 is newer/],
    [{ ...MANIFEST, sha256: { vmlinuz: 'xyz' } }, /sha256/],
  ];
  for (const [value, re] of bad) {
    const r = parseManifest(JSON.stringify(value));
    assert.ok(!r.ok && re.test(r.error), `${JSON.stringify(value)} -> ${JSON.stringify(r)}`);
  }
  const r = parseManifest('{');
  assert.ok(!r.ok && /not valid JSON/.test(r.error));
});

test('shellAssignments: values busybox sh can source, whatever they contain', (t) => {
  const text = shellAssignments('PVMLAB_', {
    name: 't1',
    rootfs_url: "http://10.0.0.1/images/it's here/rootfs.ext4.zst",
    'kernel-cmdline': 'console=ttyS0,115200 $(reboot) `x` "q"',
    rootfs_bytes: 42,
    reboot_on_success: false,
    kernel_url: null,
  });
  assert.match(text, /^PVMLAB_NAME='t1'$/m);
  assert.match(text, /^PVMLAB_KERNEL_CMDLINE=/m, 'names are upper case with _ for anything else');
  assert.match(text, /^PVMLAB_KERNEL_URL=''$/m, 'null is empty');
  // Sourced by a real shell, every value comes back exactly, nothing is run.
  const dir = mkdtempSync(join(tmpdir(), 'pvmlab-sh-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'config.sh'), text);
  const out = execFileSync(
    'busybox',
    [
      'sh',
      '-c',
      `. ${join(dir, 'config.sh')}; printf '%s\\n' "$PVMLAB_ROOTFS_URL" "$PVMLAB_KERNEL_CMDLINE" "$PVMLAB_ROOTFS_BYTES" "$PVMLAB_REBOOT_ON_SUCCESS"`,
    ],
    { encoding: 'utf8' },
  );
  assert.equal(
    out,
    'http://10.0.0.1/images/it\'s here/rootfs.ext4.zst\nconsole=ttyS0,115200 $(reboot) `x` "q"\n42\nfalse\n',
  );
});

test('DistroAssets: reads a manifest, re-reads it when it changes, ignores a bad one, refuses odd names', (t) => {
  const images = mkdtempSync(join(tmpdir(), 'pvmlab-assets-'));
  t.after(() => rmSync(images, { recursive: true, force: true }));
  const logs: string[] = [];
  let now = 0;
  const assets = new DistroAssets(
    images,
    1000,
    (m) => logs.push(m),
    () => now,
  );
  assert.equal(assets.manifest('debian-12', 'x86_64'), undefined, 'not pulled');
  const dir = join(images, 'debian-12', 'x86_64');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, 'manifest.json');
  writeFileSync(file, JSON.stringify(MANIFEST));
  assert.equal(assets.manifest('debian-12', 'x86_64'), undefined, 'the answer is reused for 1 s');
  now = 1500;
  assert.equal(assets.manifest('debian-12', 'x86_64')?.rootfs, 'rootfs.ext4.zst');
  writeFileSync(file, JSON.stringify({ ...MANIFEST, rootfs: 'rootfs.tar.zst', rootfs_format: 'tar.zst' }));
  utimesSync(file, new Date(), new Date(Date.now() + 5000));
  now = 3000;
  assert.equal(assets.manifest('debian-12', 'x86_64')?.rootfs_format, 'tar.zst');
  writeFileSync(file, '{"schema_version": 1}');
  utimesSync(file, new Date(), new Date(Date.now() + 10_000));
  now = 4500;
  assert.equal(assets.manifest('debian-12', 'x86_64'), undefined);
  assert.match(logs.join('\n'), /ignoring .*manifest\.json: /);
  for (const [d, a] of [
    ['..', 'x86_64'],
    ['debian-12', '../x86_64'],
    ['a/b', 'x86_64'],
    ['__proto__', 'x86_64'],
  ] as const)
    assert.equal(assets.manifest(d, a), undefined, `${d} ${a}`);
});
