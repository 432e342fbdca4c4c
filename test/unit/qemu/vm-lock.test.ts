import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, promises as fs, readFileSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { PvmlabError } from '../../../src/core/errors.js';
import {
  acquireVmLock,
  formatHolder,
  holderGone,
  parseHolder,
  processStartTime,
  vmLockPath,
  withVmLock,
} from '../../../src/qemu/vm-lock.js';

type TestContext = { after: (fn: () => unknown) => void };

async function tempApp(t: TestContext): Promise<string> {
  const dir = await fs.mkdtemp(join(tmpdir(), 'pv-vmlock-'));
  t.after(() => fs.rm(dir, { recursive: true, force: true }));
  return join(dir, '.pvmlab');
}

async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', ''], { stdio: 'ignore' });
  await new Promise((r) => child.once('exit', r));
  assert.ok(child.pid);
  return child.pid;
}

test('holder text round-trips; garbage is not a holder', () => {
  const h = { pid: 42, startTime: '12345', operation: 'start', token: 'abc' };
  assert.equal(formatHolder(h), '42 12345 start abc\n');
  assert.deepEqual(parseHolder(formatHolder(h)), h);
  assert.deepEqual(parseHolder('7 - stop\n'), { pid: 7, operation: 'stop' });
  for (const bad of ['', '\n', 'x 1 start', '0 1 start', '-3 1 start', '12'])
    assert.equal(parseHolder(bad), undefined, JSON.stringify(bad));
});

test('holderGone: dead pid, or a live pid that started at another time (pid reuse)', async () => {
  const me = { pid: process.pid, startTime: processStartTime(process.pid), operation: 'start' };
  assert.ok(me.startTime, 'Linux gives a start time');
  assert.equal(holderGone(me as { pid: number; startTime: string; operation: string }), false);
  assert.equal(holderGone({ ...me, startTime: '1' }), true, 'same pid, another process');
  assert.equal(holderGone({ pid: await deadPid(), operation: 'start' }), true);
});

test('one holder at a time within a process; release removes the file', async (t) => {
  const app = await tempApp(t);
  let inside = 0;
  let most = 0;
  await Promise.all(
    Array.from({ length: 8 }, () =>
      withVmLock(app, 'vm1', 'start', async () => {
        most = Math.max(most, ++inside);
        await new Promise((r) => setTimeout(r, 5));
        inside--;
      }),
    ),
  );
  assert.equal(most, 1);
  assert.equal(existsSync(vmLockPath(app, 'vm1')), false);
  assert.deepEqual(await fs.readdir(join(app, 'locks')), [], 'no temp or guard files left');
});

test('separate VMs do not wait for each other', async (t) => {
  const app = await tempApp(t);
  const a = await acquireVmLock(app, 'a', 'start', { timeoutMs: 200 });
  const b = await acquireVmLock(app, 'b', 'start', { timeoutMs: 200 });
  await a.release();
  await b.release();
});

test('a lock held by a killed process (kill -9 of vm start) is taken over', async (t) => {
  const app = await tempApp(t);
  const path = vmLockPath(app, 'vm1');
  await fs.mkdir(join(app, 'locks'), { recursive: true });
  writeFileSync(path, formatHolder({ pid: await deadPid(), operation: 'start' }));
  const lock = await acquireVmLock(app, 'vm1', 'start', { timeoutMs: 2000 });
  assert.match(readFileSync(path, 'utf8'), new RegExp(`^${process.pid} \\d+ start [0-9a-f]+\\n$`));
  await lock.release();
});

test('a lock whose pid was reused by another process is taken over', async (t) => {
  const app = await tempApp(t);
  await fs.mkdir(join(app, 'locks'), { recursive: true });
  // Our own pid with another start time: the pid is alive, but it is not the holder.
  writeFileSync(
    vmLockPath(app, 'vm1'),
    formatHolder({ pid: process.pid, startTime: '1', operation: 'start' }),
  );
  const lock = await acquireVmLock(app, 'vm1', 'start', { timeoutMs: 2000 });
  await lock.release();
});

test('an unreadable lock (empty, not ours) is waited for, then taken over once old', async (t) => {
  const app = await tempApp(t);
  const path = vmLockPath(app, 'vm1');
  await fs.mkdir(join(app, 'locks'), { recursive: true });
  writeFileSync(path, '');
  await assert.rejects(acquireVmLock(app, 'vm1', 'start', { timeoutMs: 300 }), /timed out/);
  const old = (Date.now() - 60_000) / 1000;
  utimesSync(path, old, old);
  const lock = await acquireVmLock(app, 'vm1', 'start', { timeoutMs: 2000 });
  await lock.release();
});

test('a live holder is waited for and named; the timeout says what to do', async (t) => {
  const app = await tempApp(t);
  const held = await acquireVmLock(app, 'vm1', 'stop');
  const waited: string[] = [];
  await assert.rejects(
    acquireVmLock(app, 'vm1', 'start', {
      timeoutMs: 300,
      onWait: (h) => waited.push(`${h.pid} ${h.operation}`),
    }),
    (e: unknown) => {
      assert.ok(e instanceof PvmlabError);
      assert.match(
        e.message,
        new RegExp(
          `^timed out waiting for VM 'vm1': pid ${process.pid} \\(pvmlab vm stop\\) holds its lock .*vm-vm1\\.lock; wait for it to finish`,
        ),
      );
      return true;
    },
  );
  assert.deepEqual(waited, [`${process.pid} stop`]);
  // A waiter gets it once the holder lets go.
  const next = acquireVmLock(app, 'vm1', 'start', { timeoutMs: 5000 });
  setTimeout(() => void held.release(), 100);
  await (await next).release();
});

test('a release never removes a lock another holder took after ours was broken', async (t) => {
  const app = await tempApp(t);
  const path = vmLockPath(app, 'vm1');
  const mine = await acquireVmLock(app, 'vm1', 'start');
  const other = formatHolder({ pid: process.pid, operation: 'start', token: 'other' });
  writeFileSync(path, other);
  await mine.release();
  assert.equal(readFileSync(path, 'utf8'), other);
});

test('processes started at once: one critical section at a time', { timeout: 60_000 }, async (t) => {
  const app = await tempApp(t);
  const log = join(app, '..', 'log');
  const mod = fileURLToPath(new URL('../../../src/qemu/vm-lock.js', import.meta.url));
  const script = `
    const { withVmLock } = await import(${JSON.stringify(mod)});
    const { appendFileSync } = await import('node:fs');
    for (let i = 0; i < 5; i++)
      await withVmLock(${JSON.stringify(app)}, 'vm1', 'start', async () => {
        appendFileSync(${JSON.stringify(log)}, 'in\\n');
        await new Promise((r) => setTimeout(r, 2));
        appendFileSync(${JSON.stringify(log)}, 'out\\n');
      });
  `;
  const codes = await Promise.all(
    Array.from({ length: 4 }, () => {
      const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: 'inherit' });
      return new Promise<number | null>((r) => child.once('exit', r));
    }),
  );
  assert.deepEqual(codes, [0, 0, 0, 0]);
  const lines = readFileSync(log, 'utf8').trim().split('\n');
  assert.equal(lines.length, 40);
  for (let i = 0; i < lines.length; i += 2) assert.deepEqual(lines.slice(i, i + 2), ['in', 'out'], `at ${i}`);
});
