import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PvmlabError } from '../../../src/core/errors.js';
import { vmFiles, type VmFiles } from '../../../src/core/paths.js';
import { ensureVarsFile, queryStatus, stopQemu } from '../../../src/qemu/lifecycle.js';
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
