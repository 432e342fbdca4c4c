import assert from 'node:assert/strict';
import { existsSync, promises as fs, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { PvmlabError } from '../../../src/core/errors.js';
import { acquireVmLock, vmLockPath, withVmLock } from '../../../src/qemu/vm-lock.js';

/** The VM lock is a thin wrapper over src/core/lockfile.ts (tested in test/unit/core/lockfile.test.ts). */
type TestContext = { after: (fn: () => unknown) => void };

async function tempApp(t: TestContext): Promise<string> {
  const dir = await fs.mkdtemp(join(tmpdir(), 'pv-vmlock-'));
  t.after(() => fs.rm(dir, { recursive: true, force: true }));
  return join(dir, '.pvmlab');
}

test('withVmLock holds locks/vm-<name>.lock with its operation, one holder at a time', async (t) => {
  const app = await tempApp(t);
  const path = vmLockPath(app, 'vm1');
  assert.equal(path, join(app, 'locks', 'vm-vm1.lock'));
  let inside = 0;
  let most = 0;
  await Promise.all(
    Array.from({ length: 4 }, () =>
      withVmLock(app, 'vm1', 'start', async () => {
        most = Math.max(most, ++inside);
        assert.match(readFileSync(path, 'utf8'), new RegExp(`^${process.pid} \\d+ start [0-9a-f]+\\n$`));
        await new Promise((r) => setTimeout(r, 5));
        inside--;
      }),
    ),
  );
  assert.equal(most, 1);
  assert.equal(existsSync(path), false);
  assert.deepEqual(await fs.readdir(join(app, 'locks')), [], 'no temp or guard files left');
});

test('separate VMs do not wait for each other', async (t) => {
  const app = await tempApp(t);
  const a = await acquireVmLock(app, 'a', 'start', { timeoutMs: 200 });
  const b = await acquireVmLock(app, 'b', 'start', { timeoutMs: 200 });
  await a.release();
  await b.release();
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
