import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { UsageError } from '../../../src/core/errors.js';
import { run } from '../../../src/core/exec.js';
import {
  chooseAccel,
  detectAccel,
  hostArch,
  kvmProbeArgv,
  parseAccel,
  probeHvf,
  probeKvm,
  x86ProbeBios,
  type AccelFacts,
} from '../../../src/qemu/accel.js';
import { fakeRunner, shortTempDir } from '../../helpers/qemu.js';

const facts = (over: Partial<AccelFacts>): AccelFacts => ({
  platform: 'linux',
  hostArch: 'x86_64',
  guestArch: 'x86_64',
  kvmWorks: false,
  hvfAvailable: false,
  ...over,
});

test('chooseAccel matrix', () => {
  const cases: [Partial<AccelFacts>, string][] = [
    [{ platform: 'linux', kvmWorks: true }, 'kvm'],
    [{ platform: 'linux', kvmWorks: false }, 'tcg'],
    [{ platform: 'linux', kvmWorks: true, hvfAvailable: true }, 'kvm'],
    [{ platform: 'linux', hvfAvailable: true }, 'tcg'],
    [{ platform: 'darwin', hostArch: 'aarch64', guestArch: 'aarch64', hvfAvailable: true }, 'hvf'],
    [{ platform: 'darwin', hostArch: 'aarch64', guestArch: 'aarch64', hvfAvailable: false }, 'tcg'],
    [{ platform: 'darwin', hvfAvailable: true, kvmWorks: true }, 'hvf'],
    // Cross-arch guests are always emulated, whatever the host offers.
    [{ platform: 'linux', hostArch: 'x86_64', guestArch: 'aarch64', kvmWorks: true }, 'tcg'],
    [{ platform: 'darwin', hostArch: 'aarch64', guestArch: 'x86_64', hvfAvailable: true }, 'tcg'],
    [{ platform: 'linux', hostArch: undefined, guestArch: 'x86_64', kvmWorks: true }, 'tcg'],
    [{ platform: 'win32', kvmWorks: true, hvfAvailable: true }, 'tcg'],
  ];
  for (const [f, want] of cases) assert.equal(chooseAccel(facts(f)), want, JSON.stringify(f));
});

test('hostArch maps Node arch names', () => {
  assert.equal(hostArch('x64'), 'x86_64');
  assert.equal(hostArch('arm64'), 'aarch64');
  assert.equal(hostArch('ia32'), undefined);
  assert.equal(hostArch('riscv64'), undefined);
});

test('parseAccel accepts kvm, hvf, tcg and rejects anything else with a UsageError (exit 2)', () => {
  assert.equal(parseAccel('kvm', '--accel'), 'kvm');
  assert.equal(parseAccel('hvf', '--accel'), 'hvf');
  assert.equal(parseAccel('tcg', 'PVMLAB_ACCEL'), 'tcg');
  for (const bad of ['xen', 'KVM', '', 'tcg,thread=multi']) {
    assert.throws(
      () => parseAccel(bad, 'PVMLAB_ACCEL'),
      (e: unknown) => {
        assert.ok(e instanceof UsageError);
        assert.equal(e.exitCode, 2);
        assert.equal(e.message, `PVMLAB_ACCEL must be one of kvm, hvf, tcg (got '${bad}')`);
        return true;
      },
    );
  }
});

test('detectAccel: an explicit choice wins and probes nothing', async () => {
  const { runner, calls } = fakeRunner();
  assert.equal(await detectAccel(runner, 'x86_64', 'hvf', {}), 'hvf');
  assert.equal(await detectAccel(runner, 'x86_64', undefined, { PVMLAB_ACCEL: 'kvm' }), 'kvm');
  assert.equal(await detectAccel(runner, 'aarch64', undefined, { PVMLAB_QEMU_ACCEL: 'hvf' }), 'hvf');
  // The flag beats the environment, and PVMLAB_ACCEL beats the older PVMLAB_QEMU_ACCEL.
  assert.equal(await detectAccel(runner, 'x86_64', 'tcg', { PVMLAB_ACCEL: 'kvm' }), 'tcg');
  assert.equal(
    await detectAccel(runner, 'x86_64', undefined, { PVMLAB_ACCEL: 'tcg', PVMLAB_QEMU_ACCEL: 'kvm' }),
    'tcg',
  );
  assert.deepEqual(calls, []);
});

test('detectAccel: a bad explicit value names where it came from', async () => {
  const { runner } = fakeRunner();
  await assert.rejects(detectAccel(runner, 'x86_64', 'qemu', {}), {
    name: 'UsageError',
    message: "--accel must be one of kvm, hvf, tcg (got 'qemu')",
  });
  await assert.rejects(detectAccel(runner, 'x86_64', undefined, { PVMLAB_ACCEL: 'fast' }), {
    name: 'UsageError',
    message: "PVMLAB_ACCEL must be one of kvm, hvf, tcg (got 'fast')",
  });
});

test('detectAccel on this host (x86_64 Linux, no /dev/kvm): TCG for both arches, nothing spawned', async () => {
  assert.equal(process.platform, 'linux');
  assert.equal(hostArch(), 'x86_64');
  assert.equal(existsSync('/dev/kvm'), false);
  const { runner, calls } = fakeRunner(() => ({ code: 3 }));
  assert.equal(await detectAccel(runner, 'x86_64', undefined, {}), 'tcg');
  assert.equal(await detectAccel(runner, 'aarch64', undefined, {}), 'tcg');
  assert.deepEqual(calls, []);
});

test('probeKvm is false without /dev/kvm, even if the probe would pass', async () => {
  const { runner, calls } = fakeRunner(() => ({ code: 3 }));
  assert.equal(await probeKvm(runner, 'x86_64'), false);
  assert.equal(await probeKvm(runner, 'aarch64'), false);
  assert.deepEqual(calls, []);
});

test('probeHvf reads kern.hv_support', async () => {
  const yes = fakeRunner(() => ({ stdout: '1\n' }));
  assert.equal(await probeHvf(yes.runner), true);
  assert.deepEqual(yes.calls, ['sysctl -n kern.hv_support']);
  assert.equal(await probeHvf(fakeRunner(() => ({ stdout: '0\n' })).runner), false);
  assert.equal(await probeHvf(fakeRunner(() => ({ code: 1, stdout: '1' })).runner), false);
  assert.equal(
    await probeHvf(async () => {
      throw new Error('sysctl: command not found');
    }),
    false,
  );
});

test('x86ProbeBios: 64 KiB of hlt with the exit code at the reset vector (0xfff0)', () => {
  const bios = x86ProbeBios();
  assert.equal(bios.length, 65536);
  // mov al,1 ; out 0xf4,al ; hlt ; jmp $-1
  assert.deepEqual([...bios.subarray(0xfff0, 0xfff7)], [0xb0, 0x01, 0xe6, 0xf4, 0xf4, 0xeb, 0xfd]);
  const rest = [...bios.subarray(0, 0xfff0), ...bios.subarray(0xfff7)];
  assert.equal(rest.length, 65536 - 7);
  assert.ok(
    rest.every((b) => b === 0xf4),
    'everything else is hlt',
  );
});

test('kvmProbeArgv', () => {
  assert.deepEqual(kvmProbeArgv('/tmp/p/probe.bin'), [
    '-accel',
    'kvm',
    '-M',
    'pc',
    '-m',
    '16',
    '-nodefaults',
    '-display',
    'none',
    '-serial',
    'none',
    '-bios',
    '/tmp/p/probe.bin',
    '-device',
    'isa-debug-exit,iobase=0xf4,iosize=0x04',
  ]);
});

/** The probe argv with TCG in place of KVM: runs anywhere. */
function tcgProbeArgv(bios: string): string[] {
  const argv = kvmProbeArgv(bios);
  const i = argv.indexOf('kvm');
  assert.equal(argv[i - 1], '-accel');
  argv[i] = 'tcg';
  return argv;
}

test(
  'REAL: the probe image exits QEMU with status 3 under TCG within seconds',
  { timeout: 30_000 },
  async (t) => {
    const { dir, cleanup } = await shortTempDir('pv-probe-');
    t.after(cleanup);
    const bios = join(dir, 'probe.bin');
    await writeFile(bios, x86ProbeBios());
    const started = Date.now();
    const r = await run('qemu-system-x86_64', tcgProbeArgv(bios), { timeoutMs: 10_000 });
    assert.equal(r.timedOut, false, r.stderr);
    assert.equal(r.code, 3, r.stderr);
    assert.ok(Date.now() - started < 5000, `took ${Date.now() - started} ms`);
  },
);

test('REAL control: without the reset-vector code the guest just halts and the run times out', async (t) => {
  // Proves status 3 above comes from the probe code, so a probe that times out means the guest did not run.
  const { dir, cleanup } = await shortTempDir('pv-probe-');
  t.after(cleanup);
  const bios = join(dir, 'halt.bin');
  await writeFile(bios, Buffer.alloc(65536, 0xf4));
  const r = await run('qemu-system-x86_64', tcgProbeArgv(bios), { timeoutMs: 1500 });
  assert.equal(r.timedOut, true);
  assert.equal(r.code, null);
  assert.equal(r.signal, 'SIGKILL');
});
