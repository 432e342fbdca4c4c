import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { which } from '../../../src/core/exec.js';
import {
  accelCacheFile,
  cachedVerdict,
  hostKeyId,
  readAccelCache,
  readHostKey,
  recordVerdict,
  type CachedVerdict,
  type HostKey,
} from '../../../src/qemu/accel-cache.js';
import { shortTempDir } from '../../helpers/qemu.js';

const KEY: HostKey = {
  hostname: 'lab1',
  release: '6.1.0',
  platform: 'linux',
  arch: 'x64',
  qemu: { path: '/usr/bin/qemu-system-x86_64', size: 10, mtimeMs: 5 },
  firmware: { path: '/fw/CODE.fd', size: 20 },
  device: '/dev/kvm ok',
};

const verdict = (over: Partial<CachedVerdict> = {}): CachedVerdict => ({
  accel: 'tcg',
  reason: 'KVM aborted: failed to set MSR 0x10a to 0x69',
  source: 'probe',
  at: '2025-01-01T00:00:00.000Z',
  probeMs: 40,
  host: KEY,
  ...over,
});

test('accelCacheFile lives under the app dir', () => {
  assert.equal(accelCacheFile('/home/u/.pvmlab'), '/home/u/.pvmlab/cache/accel.json');
});

test('readHostKey: the QEMU binary resolved and stat-ed, the firmware sized, no spawn', async (t) => {
  const { dir, cleanup } = await shortTempDir('pv-key-');
  t.after(cleanup);
  const code = join(dir, 'CODE.fd');
  await writeFile(code, 'x'.repeat(123));
  const key = await readHostKey('x86_64', code, '/dev/kvm ok');
  const bin = realpathSync(which('qemu-system-x86_64') ?? '');
  assert.deepEqual(key, {
    hostname: hostname(),
    release: key?.release,
    platform: process.platform,
    arch: process.arch,
    qemu: { path: bin, size: statSync(bin).size, mtimeMs: statSync(bin).mtimeMs },
    firmware: { path: code, size: 123 },
    device: '/dev/kvm ok',
  });
  // No QEMU on PATH, or no firmware: no key (nothing to cache under).
  assert.equal(await readHostKey('x86_64', code, '', { PATH: dir }), undefined);
  assert.equal(await readHostKey('x86_64', join(dir, 'missing.fd'), ''), undefined);
});

test('hostKeyId: equal keys match, any field changed does not, a stored key missing fields never matches', () => {
  assert.equal(hostKeyId({ ...KEY }), hostKeyId(KEY));
  for (const other of [
    { ...KEY, hostname: 'lab2' },
    { ...KEY, release: '6.2.0' },
    { ...KEY, platform: 'darwin' },
    { ...KEY, arch: 'arm64' },
    { ...KEY, qemu: { ...KEY.qemu, path: '/opt/qemu' } },
    { ...KEY, qemu: { ...KEY.qemu, size: 11 } },
    { ...KEY, qemu: { ...KEY.qemu, mtimeMs: 6 } },
    { ...KEY, firmware: { ...KEY.firmware, path: '/fw/other.fd' } },
    { ...KEY, firmware: { ...KEY.firmware, size: 21 } },
    { ...KEY, device: '/dev/kvm missing' },
  ])
    assert.notEqual(hostKeyId(other), hostKeyId(KEY), JSON.stringify(other));
  const partial = { hostname: 'lab1' } as unknown as HostKey;
  assert.notEqual(hostKeyId(partial), hostKeyId(KEY));
});

test('recordVerdict then readAccelCache: per arch, atomic, the directory made, other arches kept', async (t) => {
  const { dir, cleanup } = await shortTempDir('pv-cache-');
  t.after(cleanup);
  const file = join(dir, 'app', 'cache', 'accel.json');
  assert.deepEqual(await readAccelCache(file), { verdicts: {} });
  await recordVerdict(file, 'x86_64', verdict());
  await recordVerdict(file, 'aarch64', verdict({ accel: 'kvm', reason: 'ok' }));
  await recordVerdict(file, 'x86_64', verdict({ source: 'runtime', reason: 'KVM internal error' }));
  const cache = await readAccelCache(file);
  assert.equal(cache.verdicts.aarch64?.accel, 'kvm');
  assert.deepEqual(cache.verdicts.x86_64, verdict({ source: 'runtime', reason: 'KVM internal error' }));
  assert.deepEqual(readdirSync(join(dir, 'app', 'cache')), ['accel.json'], 'no temp files left');
  assert.ok(readFileSync(file, 'utf8').endsWith('}\n'));
  assert.deepEqual(cachedVerdict(cache, 'x86_64', KEY)?.reason, 'KVM internal error');
  assert.equal(cachedVerdict(cache, 'x86_64', { ...KEY, release: 'other' }), undefined);
});

test('readAccelCache: corrupt or foreign content reads as empty; bad entries are dropped, good ones kept', async (t) => {
  const { dir, cleanup } = await shortTempDir('pv-cache-');
  t.after(cleanup);
  const file = join(dir, 'accel.json');
  for (const junk of ['', '{', 'null', '42', '[]', '{"verdicts":null}', '{"verdicts":{"x86_64":"kvm"}}']) {
    await writeFile(file, junk);
    assert.deepEqual(await readAccelCache(file), { verdicts: {} }, junk);
  }
  await writeFile(
    file,
    JSON.stringify({
      verdicts: {
        x86_64: { accel: 'warp', reason: 'x', host: KEY },
        aarch64: verdict({ accel: 'kvm', reason: 'ok' }),
        riscv64: verdict(),
      },
    }),
  );
  const cache = await readAccelCache(file);
  assert.deepEqual(Object.keys(cache.verdicts), ['aarch64']);
  // A directory where the file should be reads as empty too.
  assert.deepEqual(await readAccelCache(dir), { verdicts: {} });
});
