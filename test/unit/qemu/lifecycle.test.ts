import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PvmlabError } from '../../../src/core/errors.js';
import { vmFiles, type VmFiles } from '../../../src/core/paths.js';
import { createServer, type Server } from 'node:net';
import {
  clearStaleRuntime,
  ensureVarsFile,
  queryStatus,
  removeStaleRuntime,
  socketLive,
  startQemu,
  stopQemu,
} from '../../../src/qemu/lifecycle.js';
import type { QemuSpec } from '../../../src/qemu/argv.js';
import { fakeRunner } from '../../helpers/runner.js';
import { pidAlive, readPidFile, vmProcess } from '../../../src/qemu/process.js';
import { execStatus, killQuietly, shortTempDir, waitForFile } from '../../helpers/qemu.js';

interface Lab {
  files: VmFiles;
  dir: string;
}

async function lab(t: { after: (fn: () => unknown) => void }): Promise<Lab> {
  const { dir, cleanup } = await shortTempDir('pv-lc-');
  t.after(cleanup);
  const files = vmFiles(join(dir, '.pvmlab'), 'vm1');
  for (const f of [files.pid, files.qmp, files.log, files.varsFd])
    mkdirSync(join(f, '..'), { recursive: true });
  return { files, dir };
}

/** A daemonised machine-less QEMU (no guest, so ACPI power-down is ignored), as pvmlab starts VMs. */
async function startDaemon(t: { after: (fn: () => unknown) => void }, files: VmFiles): Promise<number> {
  const started: { pid?: number } = {};
  // Registered first: QEMU is killed even if an assertion below fails (stopQemu removes the pid file).
  t.after(async () => killQuietly(started.pid ?? (await readPidFile(files.pid).catch(() => undefined))));
  const r = await execStatus('qemu-system-x86_64', [
    '-machine',
    'none',
    '-display',
    'none',
    '-nodefaults',
    '-daemonize',
    '-pidfile',
    files.pid,
    '-qmp',
    `unix:${files.qmp},server=on,wait=off`,
  ]);
  assert.equal(r.code, 0, r.stderr);
  const pid = await readPidFile(files.pid);
  started.pid = pid;
  assert.ok(pid !== undefined && pid > 0);
  await waitForFile(files.qmp);
  assert.deepEqual(await vmProcess(files.pid), { state: 'running', pid });
  return pid;
}

test('vmFiles paths here fit a unix socket', async (t) => {
  const { files } = await lab(t);
  assert.ok(Buffer.byteLength(files.qmp) < 100, files.qmp);
});

test(
  'stopQemu: a guest that ignores ACPI power-down is ended with QMP quit',
  { timeout: 30_000 },
  async (t) => {
    const { files } = await lab(t);
    const pid = await startDaemon(t, files);
    assert.equal(await queryStatus(files), 'running');
    const steps: string[] = [];
    const started = Date.now();
    const outcome = await stopQemu(files, { graceMs: 300, onStep: (m) => steps.push(m) });
    assert.equal(outcome, 'quit');
    assert.deepEqual(steps, [
      'asking the guest to power off (ACPI)',
      'the guest did not power off: stopping QEMU',
    ]);
    assert.ok(Date.now() - started < 5000, `took ${Date.now() - started} ms`);
    assert.equal(pidAlive(pid), false);
    assert.equal(existsSync(files.pid), false);
    assert.equal(existsSync(files.qmp), false);
    assert.deepEqual(await vmProcess(files.pid), { state: 'stopped' });
    assert.equal(await queryStatus(files), undefined);
  },
);

test('stopQemu: without a QMP socket it falls back to signals', { timeout: 30_000 }, async (t) => {
  const { files } = await lab(t);
  const pid = await startDaemon(t, files);
  rmSync(files.qmp);
  const steps: string[] = [];
  const outcome = await stopQemu(files, { graceMs: 300, onStep: (m) => steps.push(m) });
  assert.equal(outcome, 'killed');
  assert.equal(steps.length, 1);
  assert.match(
    steps[0] ?? '',
    /^QMP unavailable \(cannot connect to QMP socket .*ENOENT.*\): signalling the process$/,
  );
  assert.equal(pidAlive(pid), false);
  assert.equal(existsSync(files.pid), false);
});

test('stopQemu on a VM that is not running: not-running, stale runtime files removed', async (t) => {
  const { files } = await lab(t);
  assert.equal(await stopQemu(files), 'not-running');
  // A stale pid file (this test process is alive but is not QEMU) and a leftover socket file.
  writeFileSync(files.pid, `${process.pid}\n`);
  writeFileSync(files.qmp, '');
  const steps: string[] = [];
  assert.equal(await stopQemu(files, { onStep: (m) => steps.push(m) }), 'not-running');
  assert.deepEqual(steps, []);
  assert.equal(pidAlive(process.pid), true, 'the pid in a stale file is never signalled');
  assert.equal(existsSync(files.pid), false);
  assert.equal(existsSync(files.qmp), false);
});

test('ensureVarsFile copies the template once and never overwrites', async (t) => {
  const { files, dir } = await lab(t);
  const template = join(dir, 'VARS.fd');
  writeFileSync(template, 'template-1');
  await ensureVarsFile(template, files.varsFd);
  assert.equal(readFileSync(files.varsFd, 'utf8'), 'template-1');
  // The guest has written its variables; a newer template must not replace them.
  writeFileSync(files.varsFd, 'guest-state');
  writeFileSync(template, 'template-2');
  await ensureVarsFile(template, files.varsFd);
  assert.equal(readFileSync(files.varsFd, 'utf8'), 'guest-state');
});

test('ensureVarsFile: a missing template is a clear error', async (t) => {
  const { files, dir } = await lab(t);
  const template = join(dir, 'missing.fd');
  await assert.rejects(ensureVarsFile(template, files.varsFd), (e: unknown) => {
    assert.ok(e instanceof PvmlabError);
    assert.match(e.message, new RegExp(`^cannot create UEFI vars ${files.varsFd}: ENOENT`));
    return true;
  });
  assert.equal(existsSync(files.varsFd), false);
});

test('ensureVarsFile with the real OVMF template', async (t) => {
  const { files } = await lab(t);
  await ensureVarsFile('/usr/share/OVMF/OVMF_VARS_4M.fd', files.varsFd);
  assert.deepEqual(readFileSync(files.varsFd), readFileSync('/usr/share/OVMF/OVMF_VARS_4M.fd'));
});

/** A unix socket someone listens on: a live VM's QMP socket as far as anyone can tell. */
async function listen(t: { after: (fn: () => unknown) => void }, path: string): Promise<Server> {
  const server = createServer((c) => {
    c.on('error', () => undefined); // the prober hangs up at once
    c.end('{"QMP": {}}\n');
  });
  await new Promise<void>((res) => server.listen(path, res));
  t.after(() => new Promise<void>((res) => server.close(() => res())));
  return server;
}

function specFor(files: VmFiles): QemuSpec {
  return {
    name: 'vm1',
    arch: 'x86_64',
    accel: 'tcg',
    memoryMiB: 256,
    cpus: 1,
    firmware: { code: '/nonexistent/code.fd', vars: files.varsFd },
    disk: files.disk,
    boot: 'disk',
    mac: '52:54:00:12:34:56',
    nic: { wrapper: [], netdev: 'user' },
    files,
    interactive: false,
  };
}

test('socketLive: a listener is live; a missing file or a socket nobody listens on is not', async (t) => {
  const { files } = await lab(t);
  assert.equal(await socketLive(files.qmp), false, 'missing');
  writeFileSync(files.console, '');
  assert.equal(await socketLive(files.console), false, 'a plain file');
  const server = await listen(t, files.qmp);
  assert.equal(await socketLive(files.qmp), true);
  server.close();
});

test('startQemu never removes a QMP socket a live process listens on (a losing start must not cut off the winner)', async (t) => {
  const { files } = await lab(t);
  await listen(t, files.qmp);
  const { runner, calls } = fakeRunner();
  await assert.rejects(startQemu(specFor(files), runner), (e: unknown) => {
    assert.ok(e instanceof PvmlabError);
    assert.match(e.message, /in use although its pid file .* names no running QEMU/);
    assert.match(e.message, /pgrep -af /);
    return true;
  });
  assert.deepEqual(calls, [], 'no QEMU launched');
  assert.equal(existsSync(files.qmp), true, 'the live socket is still there');
  assert.equal(await socketLive(files.qmp), true);
});

test(
  'kill -9 of QEMU leaves a pid file and sockets; the next start clears them, a running VM keeps them',
  { timeout: 30_000 },
  async (t) => {
    const { files } = await lab(t);
    const pid = await startDaemon(t, files);
    // Running: clearStaleRuntime refuses and touches nothing; removeStaleRuntime keeps everything.
    await assert.rejects(clearStaleRuntime('vm1', files), /VM 'vm1' is already running \(pid \d+\)/);
    assert.deepEqual(await removeStaleRuntime(files), [files.pid]);
    assert.equal(existsSync(files.pid) && existsSync(files.qmp), true);
    assert.equal(await queryStatus(files), 'running');

    process.kill(pid, 'SIGKILL');
    await waitForGone(pid);
    assert.equal(existsSync(files.pid), true, 'kill -9 leaves the pid file');
    assert.equal(existsSync(files.qmp), true, 'and the QMP socket file');
    assert.equal(await socketLive(files.qmp), false);
    await clearStaleRuntime('vm1', files);
    assert.equal(existsSync(files.pid), false);
    assert.equal(existsSync(files.qmp), false);
  },
);

test('stopQemu of a VM with no running QEMU leaves a socket another process listens on', async (t) => {
  const { files } = await lab(t);
  writeFileSync(files.pid, `${process.pid}\n`); // a reused pid: alive, not QEMU
  await listen(t, files.qmp);
  const steps: string[] = [];
  assert.equal(await stopQemu(files, { onStep: (m) => steps.push(m) }), 'not-running');
  assert.equal(pidAlive(process.pid), true, 'the reused pid is never signalled');
  assert.equal(existsSync(files.pid), false, 'the stale pid file goes');
  assert.equal(existsSync(files.qmp), true, 'the live socket stays');
  assert.deepEqual(steps, [`${files.qmp} is in use by a process the pid file does not name: left in place`]);
});

async function waitForGone(pid: number): Promise<void> {
  const deadline = Date.now() + 5000;
  while (pidAlive(pid)) {
    if (Date.now() > deadline) throw new Error(`pid ${pid} did not exit`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
