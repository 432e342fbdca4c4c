import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { PvmlabError } from '../../../src/core/errors.js';
import {
  acquireLock,
  formatHolder,
  holderGone,
  holderOf,
  parseHolder,
  processStartTime,
  withLock,
} from '../../../src/core/lockfile.js';

type TestContext = { after: (fn: () => unknown) => void };

async function tempDir(t: TestContext): Promise<string> {
  const dir = await fs.mkdtemp(join(tmpdir(), 'pvmlab-lock-'));
  t.after(() => fs.rm(dir, { recursive: true, force: true }));
  return dir;
}

/** The lock file names this process as its holder, in the current format. */
async function heldByUs(path: string): Promise<void> {
  assert.match(await fs.readFile(path, 'utf8'), new RegExp(`^${process.pid} \\d+ \\S+ [0-9a-f]+\\n$`));
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A pid that belonged to a process that has exited (and been reaped). */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', ''], { stdio: 'ignore' });
  const pid = child.pid;
  assert.ok(pid);
  await new Promise<void>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', () => resolve());
  });
  return pid;
}

/** A live process that sleeps until killed; killed again (by its pid) when the test ends. */
async function liveProcess(t: TestContext): Promise<ChildProcess & { pid: number }> {
  const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  t.after(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  });
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', () => resolve());
    child.once('error', reject);
  });
  assert.ok(child.pid);
  return child as ChildProcess & { pid: number };
}

/** Runs `n` concurrent critical sections and checks that no two overlapped. */
async function runConcurrent(path: string, n: number): Promise<number[]> {
  let inside = 0;
  let maxInside = 0;
  const order: number[] = [];
  await Promise.all(
    Array.from({ length: n }, (_, i) =>
      withLock(
        path,
        async () => {
          inside++;
          maxInside = Math.max(maxInside, inside);
          // The holder's pid is in the file while the section runs.
          await heldByUs(path);
          await sleep(1 + (i % 4));
          order.push(i);
          inside--;
        },
        { timeoutMs: 20_000 },
      ),
    ),
  );
  assert.equal(maxInside, 1, 'critical sections overlapped');
  return order;
}

describe('withLock', () => {
  it('returns the value of the critical section and removes the lock file', async (t) => {
    const dir = await tempDir(t);
    const path = join(dir, 'state.lock');
    const got = await withLock(
      path,
      async () => {
        assert.match(
          await fs.readFile(path, 'utf8'),
          new RegExp(`^${process.pid} \\d+ create [0-9a-f]{12}\\n$`),
        );
        return 42;
      },
      { operation: 'create' },
    );
    assert.equal(got, 42);
    assert.deepEqual(await fs.readdir(dir), []);
  });

  it('creates the lock directory', async (t) => {
    const dir = await tempDir(t);
    const path = join(dir, 'locks', 'deeper', 'state.lock');
    await withLock(path, async () => {
      await fs.stat(path);
    });
    assert.deepEqual(await fs.readdir(join(dir, 'locks', 'deeper')), []);
  });

  it('releases the lock when the critical section throws', async (t) => {
    const dir = await tempDir(t);
    const path = join(dir, 'state.lock');
    await assert.rejects(
      withLock(path, async () => {
        throw new Error('boom');
      }),
      { message: 'boom' },
    );
    assert.deepEqual(await fs.readdir(dir), []);
    assert.equal(await withLock(path, async () => 'again', { timeoutMs: 500 }), 'again');
  });

  it('serialises 20 concurrent critical sections in one process', async (t) => {
    const dir = await tempDir(t);
    const path = join(dir, 'state.lock');
    const order = await runConcurrent(path, 20);
    assert.deepEqual(
      [...order].sort((a, b) => a - b),
      Array.from({ length: 20 }, (_, i) => i),
    );
    assert.deepEqual(await fs.readdir(dir), []);
  });

  it('takes over an older pvmlab\'s "<pid>" lock left by a pid that cannot exist', async (t) => {
    const dir = await tempDir(t);
    const path = join(dir, 'state.lock');
    await fs.writeFile(path, '2147483646');
    let ran = false;
    await withLock(
      path,
      async () => {
        ran = true;
        await heldByUs(path);
      },
      { timeoutMs: 2000 },
    );
    assert.equal(ran, true);
    assert.deepEqual(await fs.readdir(dir), [], 'lock and stale copies are removed');
  });

  it('takes over a lock left by a process that exited (kill -9), in either format', async (t) => {
    const dir = await tempDir(t);
    const path = join(dir, 'state.lock');
    const dead = await deadPid();
    for (const text of [`${dead}\n`, formatHolder({ pid: dead, operation: 'start', token: 'abc' })]) {
      await fs.writeFile(path, text);
      const started = Date.now();
      assert.equal(await withLock(path, async () => 'mine', { timeoutMs: 5000 }), 'mine');
      assert.ok(Date.now() - started < 2000, 'a stale lock is taken over at once, not after the timeout');
      assert.deepEqual(await fs.readdir(dir), []);
    }
  });

  it('takes over a lock whose pid was reused by another process (start time differs)', async (t) => {
    const dir = await tempDir(t);
    const path = join(dir, 'state.lock');
    // Our own pid with another start time: the pid is alive, but it is not the holder.
    await fs.writeFile(path, formatHolder({ pid: process.pid, startTime: '1', operation: 'start' }));
    assert.equal(await withLock(path, async () => 'mine', { timeoutMs: 2000 }), 'mine');
  });

  it('keeps sections serial when many waiters find the same stale lock', async (t) => {
    const dir = await tempDir(t);
    const path = join(dir, 'state.lock');
    const dead = await deadPid();
    for (let round = 0; round < 15; round++) {
      await fs.writeFile(path, String(dead));
      await runConcurrent(path, 10);
      assert.deepEqual(await fs.readdir(dir), [], `round ${round}`);
    }
  });

  it('serialises critical sections across processes, starting from a stale lock', async (t) => {
    const dir = await tempDir(t);
    const path = join(dir, 'state.lock');
    const counter = join(dir, 'counter');
    await fs.writeFile(counter, '0');
    await fs.writeFile(path, String(await deadPid()));
    const lockModule = new URL('../../../src/core/lockfile.js', import.meta.url).href;
    // Each child increments the counter 20 times by read, pause, write: lost updates show overlap.
    const script = `
      import { readFile, writeFile } from 'node:fs/promises';
      const { withLock } = await import(${JSON.stringify(lockModule)});
      const [path, counter] = process.argv.slice(-2);
      for (let i = 0; i < 20; i++)
        await withLock(path, async () => {
          const n = Number(await readFile(counter, 'utf8'));
          await new Promise((r) => setTimeout(r, 1));
          await writeFile(counter, String(n + 1));
        }, { timeoutMs: 30000 });
    `;
    const codes = await Promise.all(
      Array.from({ length: 4 }, () => {
        const child = spawn(process.execPath, ['--input-type=module', '-e', script, path, counter], {
          stdio: ['ignore', 'ignore', 'inherit'],
        });
        return new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      }),
    );
    assert.deepEqual(codes, [0, 0, 0, 0]);
    assert.equal(await fs.readFile(counter, 'utf8'), '80');
    assert.deepEqual((await fs.readdir(dir)).sort(), ['counter']);
  });

  it('names a live holder once to onWait, times out naming it and what to do, and leaves its lock alone', async (t) => {
    const dir = await tempDir(t);
    const path = join(dir, 'state.lock');
    const holder = await liveProcess(t);
    const text = formatHolder({
      pid: holder.pid,
      startTime: processStartTime(holder.pid),
      operation: 'stop',
      token: 'abc',
    });
    await fs.writeFile(path, text);
    const waited: string[] = [];
    let ran = false;
    const started = Date.now();
    await assert.rejects(
      withLock(
        path,
        async () => {
          ran = true;
        },
        {
          timeoutMs: 300,
          what: "VM 'vm1'",
          command: (op) => `pvmlab vm ${op}`,
          onWait: (h) => waited.push(`${h.pid} ${h.operation}`),
        },
      ),
      (err: unknown) => {
        assert.ok(err instanceof PvmlabError);
        assert.equal(err.exitCode, 1);
        assert.equal(
          err.message,
          `timed out waiting for VM 'vm1': pid ${holder.pid} (pvmlab vm stop) holds its lock ${path}; ` +
            'wait for it to finish, or remove the file if that process is not pvmlab',
        );
        return true;
      },
    );
    const waitedMs = Date.now() - started;
    assert.ok(waitedMs >= 300, `gave up after ${waitedMs} ms`);
    assert.ok(waitedMs < 3000, `waited ${waitedMs} ms`);
    assert.equal(ran, false);
    assert.deepEqual(waited, [`${holder.pid} stop`]);
    assert.equal(await fs.readFile(path, 'utf8'), text);
  });

  it('waits for an older pvmlab\'s "<pid>" lock while that pid lives, naming it', async (t) => {
    const dir = await tempDir(t);
    const path = join(dir, 'state.lock');
    const holder = await liveProcess(t);
    await fs.writeFile(path, String(holder.pid));
    await assert.rejects(
      withLock(path, async () => undefined, { timeoutMs: 300, what: 'the lab state' }),
      {
        message: `timed out waiting for the lab state: pid ${holder.pid} (pvmlab) holds its lock ${path}; wait for it to finish, or remove the file if that process is not pvmlab`,
      },
    );
    assert.equal(await fs.readFile(path, 'utf8'), String(holder.pid));
  });

  it('times out on a lock file without a pid, without naming one', async (t) => {
    const dir = await tempDir(t);
    const path = join(dir, 'state.lock');
    await fs.writeFile(path, '');
    await assert.rejects(
      withLock(path, async () => undefined, { timeoutMs: 100 }),
      (err: unknown) => {
        assert.ok(err instanceof PvmlabError);
        assert.match(err.message, /^timed out waiting for the lock: its lock .* names no holder/);
        assert.doesNotMatch(err.message, / pid /);
        return true;
      },
    );
  });

  it('waits for a holder in this process to finish', async (t) => {
    const dir = await tempDir(t);
    const path = join(dir, 'state.lock');
    const events: string[] = [];
    const first = withLock(path, async () => {
      events.push('first in');
      await sleep(100);
      events.push('first out');
    });
    await sleep(10);
    const second = withLock(path, async () => {
      events.push('second in');
    });
    await Promise.all([first, second]);
    assert.deepEqual(events, ['first in', 'first out', 'second in']);
  });
  it('takes over an empty lock once it is a few seconds old (a writer died or ran out of space)', async (t) => {
    const dir = await tempDir(t);
    const path = join(dir, 'state.lock');
    await fs.writeFile(path, '');
    const old = new Date(Date.now() - 10_000);
    await fs.utimes(path, old, old);
    const ran = await withLock(path, async () => fs.readFile(path, 'utf8'), { timeoutMs: 2_000 });
    assert.equal(holderOf(ran)?.pid, process.pid);
    assert.deepEqual(await fs.readdir(dir), []);
  });

  it('waits for a fresh empty lock (it may be being written) rather than breaking it', async (t) => {
    const dir = await tempDir(t);
    const path = join(dir, 'state.lock');
    await fs.writeFile(path, '');
    await assert.rejects(
      withLock(path, async () => undefined, { timeoutMs: 300 }),
      (err: unknown) => err instanceof PvmlabError && /timed out waiting for the lock/.test(err.message),
    );
    assert.equal(await fs.readFile(path, 'utf8'), '');
  });

  it('removes the temp files of lockers that were killed', async (t) => {
    const dir = await tempDir(t);
    const path = join(dir, 'state.lock');
    const dead = await deadPid();
    await fs.writeFile(`${path}.${dead}.1.tmp`, String(dead));
    await withLock(path, async () => undefined);
    assert.deepEqual(await fs.readdir(dir), []);
  });

  it('a release never removes a lock another holder took after ours was broken', async (t) => {
    const dir = await tempDir(t);
    const path = join(dir, 'state.lock');
    const mine = await acquireLock(path);
    const other = formatHolder({ pid: process.pid, operation: 'start', token: 'other' });
    await fs.writeFile(path, other);
    await mine.release();
    assert.equal(await fs.readFile(path, 'utf8'), other);
  });
});

describe('lock holder', () => {
  it('round-trips its text; garbage is not a holder; an old "<pid>" lock is a holder without start time', () => {
    const h = { pid: 42, startTime: '12345', operation: 'start', token: 'abc' };
    assert.equal(formatHolder(h), '42 12345 start abc\n');
    assert.deepEqual(parseHolder(formatHolder(h)), h);
    assert.deepEqual(parseHolder('7 - stop\n'), { pid: 7, operation: 'stop' });
    for (const bad of ['', '\n', 'x 1 start', '0 1 start', '-3 1 start', '12'])
      assert.equal(parseHolder(bad), undefined, JSON.stringify(bad));
    assert.deepEqual(holderOf('12'), { pid: 12 });
    assert.deepEqual(holderOf('12\n'), { pid: 12 });
    for (const bad of ['', '\n', '0', '-3', 'x', '1.5'])
      assert.equal(holderOf(bad), undefined, JSON.stringify(bad));
  });

  it('is gone when its pid is dead, or names a process that started at another time (pid reuse)', async () => {
    const startTime = processStartTime(process.pid);
    assert.ok(startTime, 'Linux gives a start time');
    assert.equal(holderGone({ pid: process.pid, startTime }), false);
    assert.equal(holderGone({ pid: process.pid }), false, 'no start time (old lock): alive is enough');
    assert.equal(holderGone({ pid: process.pid, startTime: '1' }), true, 'same pid, another process');
    assert.equal(holderGone({ pid: await deadPid() }), true);
  });
});
