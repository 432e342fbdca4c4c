import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { PvmlabError } from '../../../src/core/errors.js';
import { QmpClient } from '../../../src/qemu/qmp.js';
import { connectQmp, killQuietly, shortTempDir } from '../../helpers/qemu.js';

interface Qemu {
  child: ChildProcess;
  socket: string;
  exited: Promise<number | null>;
}

/** A machine-less QEMU with a QMP server, as a child of this process; killed after the test. */
async function startQemu(t: { after: (fn: () => unknown) => void }): Promise<Qemu> {
  const { dir, cleanup } = await shortTempDir('pv-qmp-');
  const socket = join(dir, 'q.sock');
  const child = spawn(
    'qemu-system-x86_64',
    ['-machine', 'none', '-display', 'none', '-nodefaults', '-qmp', `unix:${socket},server=on,wait=off`],
    { stdio: 'ignore' },
  );
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  t.after(async () => {
    killQuietly(child.pid);
    await cleanup();
  });
  return { child, socket, exited };
}

/** The version QEMU prints, to compare with what QMP reports. */
function cliVersion(): { major: number; minor: number; micro: number } {
  const out = execFileSync('qemu-system-x86_64', ['--version'], { encoding: 'utf8' });
  const m = /QEMU emulator version (\d+)\.(\d+)\.(\d+)/.exec(out);
  assert.ok(m, out);
  return { major: Number(m[1]), minor: Number(m[2]), micro: Number(m[3]) };
}

test(
  'QMP against a real QEMU: status, query-version, errors, quit, closed',
  { timeout: 30_000 },
  async (t) => {
    const q = await startQemu(t);
    const qmp = await connectQmp(q.socket);
    t.after(() => qmp.close());

    // A machine-less QEMU started without -S runs straight away.
    assert.equal(await qmp.status(), 'running');

    const version = await qmp.execute('query-version');
    assert.ok(version !== null && typeof version === 'object' && !Array.isArray(version));
    assert.deepEqual(version.qemu, cliVersion());
    assert.equal(typeof version.package, 'string');

    const status = await qmp.execute('query-status');
    assert.deepEqual(status, { status: 'running', singlestep: false, running: true });

    // Arguments are passed through.
    const schema = await qmp.execute('query-command-line-options', { option: 'machine' });
    assert.ok(Array.isArray(schema) && schema.length === 1);

    await assert.rejects(qmp.execute('no-such-command'), (e: unknown) => {
      assert.ok(e instanceof PvmlabError);
      assert.equal(e.message, 'QMP error: The command no-such-command has not been found');
      return true;
    });
    await assert.rejects(qmp.execute('query-command-line-options', { option: 'no-such-option' }), {
      name: 'PvmlabError',
      message: 'QMP error: invalid option name: no-such-option',
    });
    // The connection is still usable after an error.
    assert.equal(await qmp.status(), 'running');

    assert.deepEqual(await qmp.execute('quit'), {});
    assert.equal(await q.exited, 0);
    await assert.rejects(qmp.execute('query-status'), {
      name: 'PvmlabError',
      message: 'QMP connection closed',
    });
    assert.deepEqual(
      qmp.events.map((e) => e.event),
      ['SHUTDOWN'],
    );
  },
);

test('commands after close() reject without touching the socket', { timeout: 30_000 }, async (t) => {
  const q = await startQemu(t);
  const qmp = await connectQmp(q.socket);
  assert.equal(await qmp.status(), 'running');
  qmp.close();
  await assert.rejects(qmp.execute('query-status'), (e: unknown) => {
    assert.ok(e instanceof PvmlabError);
    assert.equal(e.message, 'QMP connection closed');
    return true;
  });
  // QEMU itself is unaffected: a new client still gets answers.
  const again = await QmpClient.connect(q.socket);
  t.after(() => again.close());
  assert.equal(await again.status(), 'running');
});

test('connecting to a missing socket rejects with a clear message', async (t) => {
  const { dir, cleanup } = await shortTempDir('pv-qmp-');
  t.after(cleanup);
  const path = join(dir, 'missing.sock');
  await assert.rejects(QmpClient.connect(path), (e: unknown) => {
    assert.ok(e instanceof PvmlabError);
    assert.equal(e.message, `cannot connect to QMP socket ${path}: Error: connect ENOENT ${path}`);
    return true;
  });
});

test('a socket that never sends the QMP greeting times out', async (t) => {
  const { dir, cleanup } = await shortTempDir('pv-qmp-');
  const path = join(dir, 'mute.sock');
  const server = createServer(() => undefined);
  await new Promise<void>((resolve) => server.listen(path, resolve));
  t.after(async () => {
    server.close();
    await cleanup();
  });
  const started = Date.now();
  await assert.rejects(QmpClient.connect(path, 300), {
    name: 'PvmlabError',
    message: `no QMP greeting on ${path}`,
  });
  assert.ok(Date.now() - started < 2000);
});
