import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { PvmlabError } from '../../../src/core/errors.js';
import { withLock } from '../../../src/lab/lock.js';

type TestContext = { after: (fn: () => unknown) => void };

async function tempDir(t: TestContext): Promise<string> {
  const dir = await fs.mkdtemp(join(tmpdir(), 'pvmlab-lock-'));
  t.after(() => fs.rm(dir, { recursive: true, force: true }));
  return dir;
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
          assert.equal(await fs.readFile(path, 'utf8'), String(process.pid));
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
    const got = await withLock(path, async () => {
      assert.equal(await fs.readFile(path, 'utf8'), String(process.pid));
      return 42;
    });
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

  it('takes over a lock left by a pid that cannot exist', async (t) => {
    const dir = await tempDir(t);
    const path = join(dir, 'state.lock');
    await fs.writeFile(path, '2147483646');
    let ran = false;
    await withLock(
      path,
      async () => {
        ran = true;
        assert.equal(await fs.readFile(path, 'utf8'), String(process.pid));
      },
      { timeoutMs: 2000 },
    );
    assert.equal(ran, true);
    assert.deepEqual(await fs.readdir(dir), [], 'lock and stale copies are removed');
  });

  it('takes over a lock left by a process that exited', async (t) => {
    const dir = await tempDir(t);
    const path = join(dir, 'state.lock');
    await fs.writeFile(path, `${await deadPid()}\n`);
    const started = Date.now();
    assert.equal(await withLock(path, async () => 'mine', { timeoutMs: 5000 }), 'mine');
    assert.ok(Date.now() - started < 2000, 'a stale lock is taken over at once, not after the timeout');
    assert.deepEqual(await fs.readdir(dir), []);
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
    const lockModule = new URL('../../../src/lab/lock.js', import.meta.url).href;
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

  it('times out while a live process holds the lock, naming the pid, and leaves its lock alone', async (t) => {
    const dir = await tempDir(t);
    const path = join(dir, 'state.lock');
    const holder = await liveProcess(t);
    await fs.writeFile(path, String(holder.pid));
    let ran = false;
    const started = Date.now();
    await assert.rejects(
      withLock(
        path,
        async () => {
          ran = true;
        },
        { timeoutMs: 300 },
      ),
      (err: unknown) => {
        assert.ok(err instanceof PvmlabError);
        assert.equal(err.exitCode, 1);
        assert.equal(err.message, `timed out waiting for the lab lock ${path} (held by pid ${holder.pid})`);
        return true;
      },
    );
    const waited = Date.now() - started;
    assert.ok(waited >= 300, `gave up after ${waited} ms`);
    assert.ok(waited < 3000, `waited ${waited} ms`);
    assert.equal(ran, false);
    assert.equal(await fs.readFile(path, 'utf8'), String(holder.pid));
  });

  it('times out on a lock file without a pid, without naming one', async (t) => {
    const dir = await tempDir(t);
    const path = join(dir, 'state.lock');
    await fs.writeFile(path, '');
    await assert.rejects(
      withLock(path, async () => undefined, { timeoutMs: 100 }),
      {
        message: `timed out waiting for the lab lock ${path}`,
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
    assert.equal(ran, String(process.pid));
    assert.deepEqual(await fs.readdir(dir), []);
  });

  it('waits for a fresh empty lock (it may be being written) rather than breaking it', async (t) => {
    const dir = await tempDir(t);
    const path = join(dir, 'state.lock');
    await fs.writeFile(path, '');
    await assert.rejects(
      withLock(path, async () => undefined, { timeoutMs: 300 }),
      (err: unknown) => err instanceof PvmlabError && /timed out waiting for the lab lock/.test(err.message),
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
});
