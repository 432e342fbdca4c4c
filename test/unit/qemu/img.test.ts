import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PvmlabError } from '../../../src/core/errors.js';
import { run, type Runner } from '../../../src/core/exec.js';
import { createBlankDisk, createOverlayDisk, imageInfo, qemuImgArgv } from '../../../src/qemu/img.js';
import { shortTempDir } from '../../helpers/qemu.js';

const MiB = 2 ** 20;
const GiB = 2 ** 30;

interface QemuImgInfo {
  format: string;
  'virtual-size': number;
  'backing-filename'?: string;
  'backing-filename-format'?: string;
}

/** `qemu-img info --output=json`, read directly rather than through the module under test. */
function info(path: string): QemuImgInfo {
  return JSON.parse(
    execFileSync('qemu-img', ['info', '--output=json', path], { encoding: 'utf8' }),
  ) as QemuImgInfo;
}

/** The real runner, recording each qemu-img subcommand line. */
function recordingRun(): { runner: Runner; calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    runner: (command, args, options) => {
      calls.push([command, ...args].join(' '));
      return run(command, args, options);
    },
  };
}

test('qemuImgArgv builders', () => {
  assert.deepEqual(qemuImgArgv.info('/i/base.img'), ['info', '--output=json', '/i/base.img']);
  assert.deepEqual(qemuImgArgv.overlay('/i/base.img', 'qcow2', '/v/d.qcow2'), [
    'create',
    '-q',
    '-f',
    'qcow2',
    '-F',
    'qcow2',
    '-b',
    '/i/base.img',
    '/v/d.qcow2',
  ]);
  assert.deepEqual(qemuImgArgv.resize('/v/d.qcow2', 10 * GiB), ['resize', '-q', '/v/d.qcow2', '10737418240']);
  assert.deepEqual(qemuImgArgv.blank('/v/d.qcow2', 64 * MiB), [
    'create',
    '-q',
    '-f',
    'qcow2',
    '-o',
    'preallocation=metadata',
    '/v/d.qcow2',
    '67108864',
  ]);
});

test('createBlankDisk makes a qcow2 of exactly the size asked', async (t) => {
  const { dir, cleanup } = await shortTempDir('pv-img-');
  t.after(cleanup);
  const disk = join(dir, 'blank.qcow2');
  await createBlankDisk(run, disk, 3 * GiB);
  const i = info(disk);
  assert.equal(i.format, 'qcow2');
  assert.equal(i['virtual-size'], 3 * GiB);
  assert.equal(i['backing-filename'], undefined);
  assert.deepEqual(await imageInfo(run, disk), { format: 'qcow2', virtualSize: 3 * GiB });
  // Metadata allocated up front, data not: a few MiB on the host, not 3 GiB.
  const { statSync } = await import('node:fs');
  assert.ok(statSync(disk).blocks * 512 < 8 * MiB, `${statSync(disk).blocks * 512} bytes used`);
});

test('createOverlayDisk on a 64M qcow2 base: backing file set, grown to the requested size', async (t) => {
  const { dir, cleanup } = await shortTempDir('pv-img-');
  t.after(cleanup);
  const base = join(dir, 'base.qcow2');
  await createBlankDisk(run, base, 64 * MiB);
  const disk = join(dir, 'vm.qcow2');
  const rec = recordingRun();
  await createOverlayDisk(rec.runner, base, disk, 10 * GiB);
  const i = info(disk);
  assert.equal(i.format, 'qcow2');
  assert.equal(i['backing-filename'], base);
  assert.equal(i['backing-filename-format'], 'qcow2');
  assert.equal(i['virtual-size'], 10 * GiB);
  // The base is left as it was.
  assert.equal(info(base)['virtual-size'], 64 * MiB);
  assert.deepEqual(rec.calls, [
    `qemu-img info --output=json ${base}`,
    `qemu-img create -q -f qcow2 -F qcow2 -b ${base} ${disk}`,
    `qemu-img resize -q ${disk} ${10 * GiB}`,
  ]);
});

test('createOverlayDisk on a raw base of the same size: -F raw and no resize', async (t) => {
  const { dir, cleanup } = await shortTempDir('pv-img-');
  t.after(cleanup);
  const base = join(dir, 'base.img');
  writeFileSync(base, Buffer.alloc(0));
  execFileSync('truncate', ['-s', String(64 * MiB), base]);
  const disk = join(dir, 'vm.qcow2');
  const rec = recordingRun();
  await createOverlayDisk(rec.runner, base, disk, 64 * MiB);
  const i = info(disk);
  assert.equal(i['backing-filename'], base);
  assert.equal(i['backing-filename-format'], 'raw');
  assert.equal(i['virtual-size'], 64 * MiB);
  assert.equal(rec.calls.length, 2);
  assert.equal(rec.calls[1], `qemu-img create -q -f qcow2 -F raw -b ${base} ${disk}`);
});

test('createOverlayDisk refuses to shrink, and creates nothing', async (t) => {
  const { dir, cleanup } = await shortTempDir('pv-img-');
  t.after(cleanup);
  const base = join(dir, 'base.qcow2');
  await createBlankDisk(run, base, GiB);
  const disk = join(dir, 'vm.qcow2');
  await assert.rejects(createOverlayDisk(run, base, disk, 512 * MiB), (e: unknown) => {
    assert.ok(e instanceof PvmlabError);
    assert.equal(
      e.message,
      'requested disk size (0.50G) is smaller than the base image (1.00G); shrinking is not supported',
    );
    return true;
  });
  assert.equal(existsSync(disk), false);
});

test('imageInfo on a missing file fails with qemu-img’s own message', async (t) => {
  const { dir, cleanup } = await shortTempDir('pv-img-');
  t.after(cleanup);
  const missing = join(dir, 'nope.qcow2');
  await assert.rejects(imageInfo(run, missing), (e: unknown) => {
    assert.ok(e instanceof PvmlabError);
    assert.match(e.message, /^qemu-img exited 1: qemu-img: Could not open '.*nope\.qcow2'/);
    return true;
  });
});
