import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { consoleDeadEnd, whyStuck } from '../../../src/qemu/liveness.js';

test('consoleDeadEnd: a panic, no root file system, an initramfs shell; a normal boot is none', () => {
  assert.equal(
    consoleDeadEnd(
      '[    2.1] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\r\n',
    ),
    'panicked: Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)',
  );
  assert.match(
    consoleDeadEnd(
      'Begin: Running /scripts/local-block ... done.\nGave up waiting for root file system device.\n',
    ) ?? '',
    /^found no root file system: Gave up waiting for root file system device\.$/,
  );
  assert.match(
    consoleDeadEnd('BusyBox v1.35.0 built-in shell (ash)\n\n(initramfs) ') ?? '',
    /initramfs shell/,
  );
  for (const fine of [
    '',
    'BdsDxe: starting Boot0001\nLoading Linux 6.1.0 ...\nDebian GNU/Linux 12 prov ttyS0\nprov login: ',
    // Words a healthy boot prints: not dead ends.
    'Begin: Loading essential drivers ... done.\n[  OK  ] Reached target initrd-root-fs.target\n',
    'pvmlab-installer# ',
    'echo "(initramfs) is what a failed boot shows"\n',
  ])
    assert.equal(consoleDeadEnd(fine), undefined, fine);
});

test('whyStuck: QEMU gone (no pid file, a pid file naming another process), its console at a dead end', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'pvmlab-liveness-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const files = { pid: join(dir, 'vm1.pid'), log: join(dir, 'vm1.log') };
  assert.match((await whyStuck('vm1', files)) ?? '', /^VM 'vm1' is not running any more \(its QEMU exited\)/);

  // A live process that is not this VM's QEMU (a reused pid) does not count.
  const other = spawn('sleep', ['60'], { stdio: 'ignore' });
  t.after(() => other.kill('SIGKILL'));
  await writeFile(files.pid, `${other.pid}\n`);
  assert.match((await whyStuck('vm1', files)) ?? '', /is not running any more/);

  // A stand-in QEMU (argv[0] qemu-system-*, -pidfile ours): running, so the console decides.
  const qemu = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60_000)', '--', '-pidfile', files.pid], {
    argv0: 'qemu-system-x86_64',
    stdio: 'ignore',
  });
  t.after(() => qemu.kill('SIGKILL'));
  await writeFile(files.pid, `${qemu.pid}\n`);
  assert.equal(await whyStuck('vm1', files), undefined, 'no console log yet');
  await writeFile(files.log, `${'x'.repeat(200_000)}\nLoading Linux ...\n`);
  assert.equal(await whyStuck('vm1', files), undefined, 'a long, healthy console');
  await writeFile(
    files.log,
    `${'x'.repeat(200_000)}\n[ 3.0] Kernel panic - not syncing: Attempted to kill init!\n`,
  );
  assert.equal(
    await whyStuck('vm1', files),
    `VM 'vm1' panicked: Kernel panic - not syncing: Attempted to kill init!; its console: ${files.log}`,
  );
});
