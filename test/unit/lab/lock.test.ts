import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { withLabLock } from '../../../src/lab/store.js';

/** withLabLock is a thin wrapper over src/core/lockfile.ts (tested in test/unit/core/lockfile.test.ts). */
type TestContext = { after: (fn: () => unknown) => void };

async function tempApp(t: TestContext): Promise<string> {
  const dir = await fs.mkdtemp(join(tmpdir(), 'pvmlab-lablock-'));
  t.after(() => fs.rm(dir, { recursive: true, force: true }));
  return join(dir, '.pvmlab');
}

test('withLabLock holds locks/state.lock, naming its operation, and leaves nothing behind', async (t) => {
  const app = await tempApp(t);
  const path = join(app, 'locks', 'state.lock');
  const got = await withLabLock(app, async () => fs.readFile(path, 'utf8'));
  assert.match(got, new RegExp(`^${process.pid} \\d+ lab-state [0-9a-f]+\\n$`));
  const other = await withLabLock(app, async () => fs.readFile(path, 'utf8'), 'vm-create');
  assert.equal(other.split(' ')[2], 'vm-create');
  assert.deepEqual(await fs.readdir(join(app, 'locks')), []);
});

test('withLabLock waits for an older pvmlab\'s "<pid>" state.lock while that pid lives', async (t) => {
  const app = await tempApp(t);
  const path = join(app, 'locks', 'state.lock');
  await fs.mkdir(join(app, 'locks'), { recursive: true });
  const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' });
  const exited = new Promise((r) => child.once('exit', r));
  t.after(() => child.kill('SIGKILL'));
  await new Promise((r) => child.once('spawn', r));
  await fs.writeFile(path, String(child.pid));
  let ran = false;
  const locked = withLabLock(app, async () => {
    ran = true;
  });
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(ran, false, 'a live old-format holder is waited for');
  assert.equal(await fs.readFile(path, 'utf8'), String(child.pid));
  child.kill('SIGKILL');
  await exited;
  await locked;
  assert.equal(ran, true, 'taken over once its pid is dead');
  assert.deepEqual(await fs.readdir(join(app, 'locks')), []);
});
