import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PvmlabError } from '../../../src/core/errors.js';
import { runChecked, type RunResult, type Runner } from '../../../src/core/exec.js';
import { vmFiles, type VmFiles } from '../../../src/core/paths.js';
import type { AccelChoice } from '../../../src/qemu/accel.js';
import type { CachedVerdict, HostKey } from '../../../src/qemu/accel-cache.js';
import {
  acceleratorFailure,
  earlyDecision,
  fallbackWarning,
  startWithAccel,
  watchEarly,
  type AccelStartDeps,
  type EarlyObservation,
  type VmSpec,
} from '../../../src/qemu/accel-start.js';
import type { Accel } from '../../../src/qemu/accel.js';
import { readPidFile } from '../../../src/qemu/process.js';
import { execStatus, killQuietly, shortTempDir, waitForFile } from '../../helpers/qemu.js';

const MSR_STDERR =
  'qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69\n' +
  "qemu-system-x86_64: ../../target/i386/kvm/kvm.c:3183: kvm_buf_set_msrs: Assertion `ret == cpu->kvm_msr_buf->nmsrs' failed.\n";
const MSR = 'KVM aborted: failed to set MSR 0x10a to 0x69';
const KEY = { hostname: 'h' } as HostKey;
const FILES = vmFiles('/lab/.pvmlab', 'n1');

const failedStart = (
  code: number | null,
  stderr: string,
  signal: NodeJS.Signals | null = null,
): EarlyObservation => ({
  kind: 'start-failed',
  code,
  signal,
  stderr,
});

test('acceleratorFailure: what counts as the accelerator failing a VM', () => {
  const cases: [EarlyObservation, string | undefined][] = [
    [{ kind: 'healthy' }, undefined],
    // The daemonising parent exits 1 when its child aborts; the assertion is on stderr.
    [failedStart(1, MSR_STDERR), MSR],
    [failedStart(134, ''), 'KVM aborted'],
    [failedStart(null, '', 'SIGABRT'), 'KVM aborted'],
    [failedStart(null, '', 'SIGSEGV'), 'KVM was killed (SIGSEGV)'],
    [
      failedStart(1, 'qemu-system-x86_64: failed to initialize kvm: Permission denied\n'),
      'KVM exited with status 1: failed to initialize kvm: Permission denied',
    ],
    [failedStart(0, ''), 'QEMU exited at once under KVM'],
    [{ kind: 'exited' }, 'QEMU exited within 3 s under KVM'],
    [{ kind: 'status', status: 'internal-error' }, 'KVM internal error (QEMU status internal-error)'],
    [{ kind: 'status', status: 'guest-panicked' }, 'the guest panicked under KVM'],
    [{ kind: 'status', status: 'running' }, undefined],
    [{ kind: 'status', status: 'paused' }, undefined],
    // Not the accelerator: a locked disk, a busy TAP, a killed start.
    [failedStart(1, 'qemu-system-x86_64: -drive if=none: Failed to get "write" lock\n'), undefined],
    [failedStart(1, 'could not configure /dev/net/tun (pvt0): Device or resource busy\n'), undefined],
    [failedStart(null, '', 'SIGTERM'), undefined],
  ];
  for (const [o, want] of cases) assert.equal(acceleratorFailure('kvm', o), want, JSON.stringify(o));
  assert.equal(acceleratorFailure('hvf', { kind: 'exited' }), 'QEMU exited within 3 s under HVF');
  // TCG is never blamed (and never watched).
  assert.equal(acceleratorFailure('tcg', failedStart(134, MSR_STDERR)), undefined);
  assert.equal(acceleratorFailure('tcg', { kind: 'status', status: 'internal-error' }), undefined);
});

test('earlyDecision: keep, rethrow, fall back to TCG, or fail a forced accelerator', () => {
  const probed = { accel: 'kvm', source: 'probe' } as const;
  const cached = { accel: 'kvm', source: 'cache' } as const;
  assert.deepEqual(earlyDecision(probed, { kind: 'healthy' }), { action: 'keep' });
  assert.deepEqual(earlyDecision(cached, failedStart(1, 'Failed to get "write" lock')), {
    action: 'rethrow',
  });
  assert.deepEqual(earlyDecision(cached, failedStart(1, MSR_STDERR)), { action: 'fallback', reason: MSR });
  assert.deepEqual(earlyDecision(probed, { kind: 'status', status: 'internal-error' }), {
    action: 'fallback',
    reason: 'KVM internal error (QEMU status internal-error)',
  });
  assert.deepEqual(earlyDecision({ accel: 'tcg', source: 'probe' }, failedStart(1, MSR_STDERR)), {
    action: 'rethrow',
  });
  assert.deepEqual(
    earlyDecision({ accel: 'kvm', source: 'override', forcedBy: 'PVMLAB_ACCEL' }, failedStart(1, MSR_STDERR)),
    {
      action: 'fail',
      message: `QEMU cannot run this VM with the KVM accelerator forced by PVMLAB_ACCEL (${MSR}); drop PVMLAB_ACCEL to let pvmlab choose`,
    },
  );
  assert.deepEqual(
    earlyDecision({ accel: 'hvf', source: 'override', forcedBy: '--accel' }, { kind: 'exited' }),
    {
      action: 'fail',
      message:
        'QEMU cannot run this VM with the HVF accelerator forced by --accel (QEMU exited within 3 s under HVF); drop --accel to let pvmlab choose',
    },
  );
  // A forced accelerator that is fine, or fails for another reason, is left alone.
  assert.deepEqual(earlyDecision({ accel: 'kvm', source: 'override' }, { kind: 'healthy' }), {
    action: 'keep',
  });
  assert.deepEqual(earlyDecision({ accel: 'kvm', source: 'override' }, failedStart(1, 'no such file')), {
    action: 'rethrow',
  });
});

test('fallbackWarning names the accelerator, the reason and the cache file', () => {
  assert.equal(
    fallbackWarning('kvm', MSR, '/h/.pvmlab/cache/accel.json'),
    `KVM cannot run this VM on this host (${MSR}); using TCG (recorded in /h/.pvmlab/cache/accel.json)`,
  );
  assert.equal(fallbackWarning('hvf', 'x', undefined), 'HVF cannot run this VM on this host (x); using TCG');
});

/** A start whose QEMU answers from `attempts` in order (by accelerator), through the given runner. */
function fakeDeps(
  attempts: Partial<Record<Accel, { code?: number; stderr?: string; signal?: NodeJS.Signals }>>,
  watch: EarlyObservation = { kind: 'healthy' },
) {
  const log: string[] = [];
  const records: { file: string; arch: string; v: CachedVerdict }[] = [];
  const deps: AccelStartDeps = {
    start: async (spec, runner) => {
      log.push(`start ${spec.accel}`);
      await runChecked(runner, 'qemu', [spec.accel]);
      return { pid: 99, argv: [] };
    },
    stop: async () => void log.push('stop'),
    watch: async () => {
      log.push('watch');
      return watch;
    },
    record: async (file, arch, v) => void records.push({ file, arch, v }),
    windowMs: 3000,
  };
  const runner: Runner = async (command, args): Promise<RunResult> => {
    const a = attempts[args[0] as Accel] ?? {};
    return {
      command,
      args,
      code: a.signal ? null : (a.code ?? 0),
      signal: a.signal ?? null,
      stdout: '',
      stderr: a.stderr ?? '',
      timedOut: false,
    };
  };
  return { deps, runner, log, records };
}

const SPEC: Omit<VmSpec, 'accel'> = {
  name: 'n1',
  arch: 'x86_64',
  memoryMiB: 2048,
  cpus: 2,
  firmware: { code: '/fw/CODE.fd', vars: FILES.varsFd },
  disk: FILES.disk,
  boot: 'pxe',
  mac: '52:54:00:12:34:56',
  nic: { wrapper: [], netdev: 'tap,ifname=pvt0' },
  files: FILES,
  interactive: false,
};

const choice = (over: Partial<AccelChoice>): AccelChoice => ({
  accel: 'kvm',
  reason: 'ok',
  source: 'cache',
  cache: { file: '/lab/.pvmlab/cache/accel.json', key: KEY, recorded: true },
  ...over,
});

test('startWithAccel: TCG starts once and pays nothing (no watch)', async () => {
  const f = fakeDeps({});
  const warned: string[] = [];
  const r = await startWithAccel(SPEC, choice({ accel: 'tcg' }), f.runner, (m) => warned.push(m), f.deps);
  assert.deepEqual([r.accel, r.fallback], ['tcg', undefined]);
  assert.deepEqual(f.log, ['start tcg']);
  assert.deepEqual(warned, []);
});

test('startWithAccel: a healthy KVM start is watched, then kept', async () => {
  const f = fakeDeps({});
  const r = await startWithAccel(SPEC, choice({}), f.runner, () => assert.fail('no fallback'), f.deps);
  assert.deepEqual([r.accel, r.result.pid], ['kvm', 99]);
  assert.deepEqual(f.log, ['start kvm', 'watch']);
});

test('startWithAccel: the MSR abort at start: stop, record TCG, warn once, start again under TCG', async () => {
  const f = fakeDeps({ kvm: { code: 1, stderr: MSR_STDERR } });
  const warned: [string, string | undefined][] = [];
  const r = await startWithAccel(SPEC, choice({}), f.runner, (m, at) => warned.push([m, at]), f.deps);
  assert.deepEqual(r.fallback, { reason: MSR, recordedIn: '/lab/.pvmlab/cache/accel.json' });
  assert.equal(r.accel, 'tcg');
  assert.deepEqual(f.log, ['start kvm', 'stop', 'start tcg']);
  assert.deepEqual(warned, [[MSR, '/lab/.pvmlab/cache/accel.json']]);
  assert.equal(f.records.length, 1);
  const rec = f.records[0];
  assert.deepEqual(
    [rec?.file, rec?.arch, rec?.v.accel, rec?.v.reason, rec?.v.source, rec?.v.host],
    ['/lab/.pvmlab/cache/accel.json', 'x86_64', 'tcg', MSR, 'runtime', KEY],
  );
});

test("startWithAccel: QMP says 'internal-error' in the first seconds: the same fallback", async () => {
  const f = fakeDeps({}, { kind: 'status', status: 'internal-error' });
  const warned: string[] = [];
  const r = await startWithAccel(SPEC, choice({ source: 'probe' }), f.runner, (m) => warned.push(m), f.deps);
  assert.equal(r.accel, 'tcg');
  assert.deepEqual(f.log, ['start kvm', 'watch', 'stop', 'start tcg']);
  assert.deepEqual(warned, ['KVM internal error (QEMU status internal-error)']);
});

test('startWithAccel: nowhere to record (no host key) still falls back, and says so without a file', async () => {
  const f = fakeDeps({}, { kind: 'exited' });
  const warned: [string, string | undefined][] = [];
  const { cache: _none, ...noCache } = choice({});
  await startWithAccel(SPEC, noCache, f.runner, (m, at) => warned.push([m, at]), f.deps);
  assert.deepEqual(warned, [['QEMU exited within 3 s under KVM', undefined]]);
  assert.deepEqual(f.records, []);
});

test('startWithAccel: a failing cache write is not fatal', async () => {
  const f = fakeDeps({ kvm: { code: 134 } });
  f.deps.record = async () => {
    throw new Error('EROFS');
  };
  const warned: [string, string | undefined][] = [];
  const r = await startWithAccel(SPEC, choice({}), f.runner, (m, at) => warned.push([m, at]), f.deps);
  assert.equal(r.accel, 'tcg');
  assert.deepEqual(warned, [['KVM aborted', undefined]]);
});

test('startWithAccel: a forced KVM that fails stops QEMU and says which accelerator and how to undo it', async () => {
  const f = fakeDeps({ kvm: { code: 1, stderr: MSR_STDERR } });
  await assert.rejects(
    startWithAccel(
      SPEC,
      { accel: 'kvm', reason: 'forced by --accel', source: 'override', forcedBy: '--accel' },
      f.runner,
      () => assert.fail('no fallback for an override'),
      f.deps,
    ),
    (e: unknown) =>
      e instanceof PvmlabError &&
      e.message ===
        `QEMU cannot run this VM with the KVM accelerator forced by --accel (${MSR}); drop --accel to let pvmlab choose`,
  );
  assert.deepEqual(f.log, ['start kvm', 'stop']);
  assert.deepEqual(f.records, []);
});

test('startWithAccel: a failure that is not the accelerator is reported as it is, no retry', async () => {
  const f = fakeDeps({ kvm: { code: 1, stderr: 'qemu-system-x86_64: Failed to get "write" lock\n' } });
  await assert.rejects(
    startWithAccel(SPEC, choice({}), f.runner, () => assert.fail('no fallback'), f.deps),
    /qemu exited 1: qemu-system-x86_64: Failed to get "write" lock/,
  );
  assert.deepEqual(f.log, ['start kvm']);
  assert.deepEqual(f.records, []);
});

test('startWithAccel: an attached console that aborts at once falls back; a session ending later does not', async () => {
  const interactive = { ...SPEC, interactive: true };
  const abort = fakeDeps({ kvm: { signal: 'SIGABRT' } });
  const r = await startWithAccel(interactive, choice({}), abort.runner, () => undefined, abort.deps);
  assert.equal(r.accel, 'tcg');
  assert.deepEqual(abort.log, ['start kvm', 'stop', 'start tcg']);

  const late = fakeDeps({ kvm: { code: 1, stderr: MSR_STDERR } });
  late.deps.windowMs = -1; // the session already lasted longer than the window
  await assert.rejects(
    startWithAccel(interactive, choice({}), late.runner, () => assert.fail('no'), late.deps),
  );
  assert.deepEqual(late.log, ['start kvm']);
});

/** A daemonised machine-less QEMU with a pid file and a QMP socket, as a VM has. */
async function daemon(t: { after: (fn: () => unknown) => void }, files: VmFiles, extra: string[] = []) {
  for (const f of [files.pid, files.qmp, files.log]) mkdirSync(join(f, '..'), { recursive: true });
  const pid: { value?: number } = {};
  t.after(async () => killQuietly(pid.value ?? (await readPidFile(files.pid).catch(() => undefined))));
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
    ...extra,
  ]);
  assert.equal(r.code, 0, r.stderr);
  pid.value = await readPidFile(files.pid);
  await waitForFile(files.qmp);
  return pid.value;
}

test('REAL watchEarly: a running QEMU is healthy after the window; one that dies is seen to exit', async (t) => {
  const { dir, cleanup } = await shortTempDir('pv-watch-');
  t.after(cleanup);
  const files = vmFiles(join(dir, '.pvmlab'), 'w1');
  const pid = await daemon(t, files);
  const started = Date.now();
  assert.deepEqual(await watchEarly(files, 600), { kind: 'healthy' });
  assert.ok(Date.now() - started >= 600);
  killQuietly(pid);
  assert.deepEqual(await watchEarly(files, 3000), { kind: 'exited' });
});

test('REAL watchEarly: firmware output in the serial log ends the watch early', async (t) => {
  const { dir, cleanup } = await shortTempDir('pv-watch-');
  t.after(cleanup);
  const files = vmFiles(join(dir, '.pvmlab'), 'w2');
  await daemon(t, files);
  writeFileSync(files.log, '\u001b[2JBdsDxe: loading Boot0001\r\n');
  const started = Date.now();
  assert.deepEqual(await watchEarly(files, 10_000), { kind: 'healthy' });
  assert.ok(Date.now() - started < 2000, `took ${Date.now() - started} ms`);
});
