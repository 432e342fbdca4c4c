import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { gunzipSync } from 'node:zlib';
import { run } from '../../../src/core/exec.js';
import {
  buildModulesCpio,
  moduleClosure,
  moduleName,
  parseModulesDep,
  uncompressedName,
} from '../../../src/distro/modules.js';

const DEP = `kernel/drivers/net/virtio_net.ko.zst: kernel/drivers/net/net_failover.ko.zst kernel/net/core/failover.ko.zst kernel/drivers/virtio/virtio.ko.zst
kernel/drivers/net/net_failover.ko.zst: kernel/net/core/failover.ko.zst
kernel/net/core/failover.ko.zst:
kernel/drivers/virtio/virtio.ko.zst:
kernel/fs/nls/nls_iso8859-1.ko.zst:
kernel/drivers/gpu/drm/huge.ko.zst: kernel/drivers/virtio/virtio.ko.zst
`;

test('parseModulesDep reads each module and its dependencies', () => {
  const deps = parseModulesDep(DEP);
  assert.equal(deps.size, 6);
  assert.deepEqual(deps.get('kernel/net/core/failover.ko.zst'), []);
  assert.deepEqual(deps.get('kernel/drivers/net/net_failover.ko.zst'), ['kernel/net/core/failover.ko.zst']);
});

test('moduleName and uncompressedName: what modprobe calls a module, and its unpacked file', () => {
  assert.equal(moduleName('kernel/fs/nls/nls_iso8859-1.ko.zst'), 'nls_iso8859_1');
  assert.equal(moduleName('kernel/drivers/block/virtio_blk.ko'), 'virtio_blk');
  assert.equal(moduleName('a/b.ko.xz'), 'b');
  assert.equal(uncompressedName('kernel/a/b.ko.zst'), 'kernel/a/b.ko');
  assert.equal(uncompressedName('kernel/a/b.ko.gz'), 'kernel/a/b.ko');
  assert.equal(uncompressedName('kernel/a/b.ko'), 'kernel/a/b.ko');
});

test('moduleClosure: the wanted modules and everything they depend on, in modules.dep order', () => {
  const deps = parseModulesDep(DEP);
  assert.deepEqual(moduleClosure(deps, ['virtio_net', 'nls_iso8859-1', 'ext4' /* built in: skipped */]), [
    'kernel/drivers/net/virtio_net.ko.zst',
    'kernel/drivers/net/net_failover.ko.zst',
    'kernel/net/core/failover.ko.zst',
    'kernel/drivers/virtio/virtio.ko.zst',
    'kernel/fs/nls/nls_iso8859-1.ko.zst',
  ]);
  assert.deepEqual(moduleClosure(deps, []), []);
});

test('REAL: buildModulesCpio unpacks zstd modules, keeps only the closure, writes a matching modules.dep, same bytes twice', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'pvmlab-mods-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const mods = join(dir, 'lib/modules/6.9.0-test');
  for (const path of parseModulesDep(DEP).keys()) {
    const plain = join(mods, path.replace(/\.zst$/, ''));
    mkdirSync(join(plain, '..'), { recursive: true });
    writeFileSync(plain, `module ${path}\n`);
    execFileSync('zstd', ['-q', '--rm', plain, '-o', join(mods, path)]);
  }
  writeFileSync(join(mods, 'modules.dep'), DEP);
  writeFileSync(join(mods, 'modules.builtin'), 'kernel/fs/ext4/ext4.ko\n');
  const a = await buildModulesCpio(run, mods, '6.9.0-test', ['virtio_net']);
  const b = await buildModulesCpio(run, mods, '6.9.0-test', ['virtio_net']);
  assert.deepEqual(a.data, b.data, 'reproducible');
  assert.deepEqual(a.modules, ['virtio_net', 'net_failover', 'failover', 'virtio']);
  // Read it back with GNU cpio.
  const out = join(dir, 'out');
  mkdirSync(out);
  execFileSync('cpio', ['-i', '-d', '--quiet'], { cwd: out, input: gunzipSync(a.data) });
  const root = join(out, 'lib/modules/6.9.0-test');
  assert.equal(
    readFileSync(join(root, 'kernel/drivers/net/virtio_net.ko'), 'utf8'),
    'module kernel/drivers/net/virtio_net.ko.zst\n',
    'stored uncompressed',
  );
  assert.equal(
    readFileSync(join(root, 'modules.dep'), 'utf8'),
    [
      'kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko',
      'kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko',
      'kernel/net/core/failover.ko:',
      'kernel/drivers/virtio/virtio.ko:',
      '',
    ].join('\n'),
  );
  assert.equal(readFileSync(join(root, 'modules.builtin'), 'utf8'), 'kernel/fs/ext4/ext4.ko\n');
  assert.throws(
    () => readFileSync(join(root, 'kernel/drivers/gpu/drm/huge.ko')),
    /ENOENT/,
    'not in the closure',
  );
});

test('buildModulesCpio refuses a directory that is not a module tree', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'pvmlab-mods-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  await assert.rejects(buildModulesCpio(run, dir, '1'), /has no modules\.dep: not a kernel's module tree/);
});
