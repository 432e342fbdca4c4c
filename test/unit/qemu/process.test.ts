import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { isVmArgv, pidAlive, processArgv, readPidFile, vmProcess } from '../../../src/qemu/process.js';
import { execStatus, killQuietly, shortTempDir, waitFor } from '../../helpers/qemu.js';

const PID = '/lab/pids/n1.pid';

test('isVmArgv: a qemu-system binary whose -pidfile is this VM', () => {
  const yes: string[][] = [
    ['qemu-system-x86_64', '-name', 'pvmlab-n1', '-pidfile', PID, '-daemonize'],
    ['/usr/bin/qemu-system-aarch64', '-pidfile', PID],
    ['/opt/homebrew/bin/qemu-system-x86_64', '-m', '512', '-pidfile', PID],
  ];
  for (const argv of yes) assert.equal(isVmArgv(argv, PID), true, argv.join(' '));
  const no: string[][] = [
    [],
    ['qemu-system-x86_64', '-name', 'pvmlab-n1'],
    ['qemu-system-x86_64', '-pidfile', '/lab/pids/n2.pid'],
    ['qemu-system-x86_64', '-pidfile', `${PID}.old`],
    ['qemu-system-x86_64', '-pidfile'],
    ['qemu-system-x86_64', PID],
    ['sleep', '-pidfile', PID],
    ['qemu-img', '-pidfile', PID],
    ['/usr/bin/bash', '-c', 'qemu-system-x86_64', '-pidfile', PID],
  ];
  for (const argv of no) assert.equal(isVmArgv(argv, PID), false, argv.join(' '));
});

test('readPidFile: missing, garbage, valid', async (t) => {
  const { dir, cleanup } = await shortTempDir('pv-pid-');
  t.after(cleanup);
  const p = join(dir, 'x.pid');
  assert.equal(await readPidFile(p), undefined);
  for (const garbage of ['', '\n', 'abc', '12ab', '-5', '0', '3.5']) {
    writeFileSync(p, garbage);
    assert.equal(await readPidFile(p), -1, JSON.stringify(garbage));
  }
  writeFileSync(p, '4242\n');
  assert.equal(await readPidFile(p), 4242);
  writeFileSync(p, '  17 ');
  assert.equal(await readPidFile(p), 17);
  // A directory in its place is an error, not "no VM".
  await assert.rejects(readPidFile(dir), { code: 'EISDIR' });
});

test('pidAlive and processArgv for this process', async () => {
  assert.equal(pidAlive(process.pid), true);
  const argv = await processArgv(process.pid);
  assert.ok(argv);
  assert.equal(argv[0], process.argv0);
  assert.ok(argv.length >= 2);
});

/** The pid of a process that has exited (and been reaped). */
async function deadPid(): Promise<number> {
  const child = spawn('true', { stdio: 'ignore' });
  const pid = child.pid;
  assert.ok(pid);
  await new Promise((r) => child.on('exit', r));
  return pid;
}

test('pidAlive: an exited but unreaped process (zombie) is not alive', async (t) => {
  // sh starts a short `sleep` in the background and execs a long one, which never waits for it:
  // once the short one exits it stays a zombie until the long one ends.
  const parent = spawn('sh', ['-c', 'sleep 0.3 & echo $!; exec sleep 10'], {
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  t.after(() => killQuietly(parent.pid));
  const first = await new Promise<string>((resolve) =>
    parent.stdout.setEncoding('utf8').once('data', (d: string) => resolve(d)),
  );
  const zombie = Number(first.trim());
  assert.ok(Number.isInteger(zombie) && zombie > 0, first);
  await waitFor(
    () => /^\d+ \(.*\) Z /.test(readFileSync(`/proc/${zombie}/stat`, 'utf8')),
    5000,
    'the zombie',
  );
  assert.doesNotThrow(() => process.kill(zombie, 0), 'a zombie still answers signal 0');
  assert.equal(pidAlive(zombie), false);
  assert.equal(pidAlive(parent.pid ?? -1), true);
});

test('vmProcess: no pid file -> stopped', async (t) => {
  const { dir, cleanup } = await shortTempDir('pv-pid-');
  t.after(cleanup);
  assert.deepEqual(await vmProcess(join(dir, 'n1.pid')), { state: 'stopped' });
});

test('vmProcess: garbage or a dead pid -> stopped with a stale pid file', async (t) => {
  const { dir, cleanup } = await shortTempDir('pv-pid-');
  t.after(cleanup);
  const p = join(dir, 'n1.pid');
  writeFileSync(p, 'not a pid\n');
  assert.deepEqual(await vmProcess(p), { state: 'stopped', stalePidFile: true });
  const pid = await deadPid();
  assert.equal(pidAlive(pid), false);
  writeFileSync(p, `${pid}\n`);
  assert.deepEqual(await vmProcess(p), { state: 'stopped', stalePidFile: true });
});

test('vmProcess: a live process that is not QEMU (pid reuse) -> stopped with a stale pid file', async (t) => {
  const { dir, cleanup } = await shortTempDir('pv-pid-');
  const sleeper = spawn('sleep', ['30'], { stdio: 'ignore' });
  t.after(async () => {
    killQuietly(sleeper.pid);
    await cleanup();
  });
  assert.ok(sleeper.pid);
  const p = join(dir, 'n1.pid');
  writeFileSync(p, `${sleeper.pid}\n`);
  assert.equal(pidAlive(sleeper.pid), true);
  assert.deepEqual(await processArgv(sleeper.pid), ['sleep', '30']);
  assert.deepEqual(await vmProcess(p), { state: 'stopped', stalePidFile: true });
});

test('vmProcess: a real daemonised QEMU with this -pidfile -> running', { timeout: 30_000 }, async (t) => {
  const { dir, cleanup } = await shortTempDir('pv-pid-');
  const p = join(dir, 'n1.pid');
  t.after(async () => {
    killQuietly(await readPidFile(p).catch(() => undefined));
    await cleanup();
  });
  const r = await execStatus('qemu-system-x86_64', [
    '-machine',
    'none',
    '-display',
    'none',
    '-nodefaults',
    '-daemonize',
    '-pidfile',
    p,
  ]);
  assert.equal(r.code, 0, r.stderr);
  const pid = await readPidFile(p);
  assert.ok(pid !== undefined && pid > 0);
  assert.deepEqual(await vmProcess(p), { state: 'running', pid });

  // The same pid behind another VM's pid file is not that VM.
  const other = join(dir, 'n2.pid');
  writeFileSync(other, `${pid}\n`);
  assert.deepEqual(await vmProcess(other), { state: 'stopped', stalePidFile: true });
});
