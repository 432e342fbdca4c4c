import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { UsageError } from '../../../src/core/errors.js';
import { startProcess, type ProcessExit, type Runner } from '../../../src/core/exec.js';
import {
  accelHost,
  describeChoice,
  forcedAccel,
  hostArch,
  kvmDevice,
  parseAccel,
  probeHvf,
  resolveAccel,
  resolveHostAccel,
  type AccelHost,
} from '../../../src/qemu/accel.js';
import type { HostKey } from '../../../src/qemu/accel-cache.js';
import {
  FIRMWARE_MARKER,
  accelProbeArgv,
  describeQemuFailure,
  probeVerdict,
  watchProbe,
  type StartProcess,
} from '../../../src/qemu/accel-probe.js';
import { buildQemuArgv, qemuBinary } from '../../../src/qemu/argv.js';
import { findFirmware, type Firmware } from '../../../src/qemu/firmware.js';
import type { Arch } from '../../../src/lab/validate.js';
import { fakeRunner, shortTempDir } from '../../helpers/qemu.js';

const MSR_STDERR = [
  'qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69',
  "qemu-system-x86_64: ../../target/i386/kvm/kvm.c:3183: kvm_buf_set_msrs: Assertion `ret == cpu->kvm_msr_buf->nmsrs' failed.",
];
const OVMF_FIRST_LINE =
  '\u001b[2J\u001b[01;01H\u001b[=3h\u001b[2J\u001b[01;01HBdsDxe: loading Boot0001 "EFI Internal Shell" from Fv(7CB8BDC9)\r';

/** A fake QEMU for the probe: `behave` writes lines and exits; kill ends it as a signal would. */
interface FakeQemu {
  argv: readonly string[];
  out(line: string): void;
  err(line: string): void;
  exit(code: number | null, signal?: NodeJS.Signals | null): void;
}

function fakeStart(behave: (q: FakeQemu) => void = () => undefined): {
  start: StartProcess;
  calls: string[][];
  kills: NodeJS.Signals[];
} {
  const calls: string[][] = [];
  const kills: NodeJS.Signals[] = [];
  const start: StartProcess = async (command, args, { onLine }) => {
    calls.push([command, ...args]);
    let settle: (e: ProcessExit) => void = () => undefined;
    const done = new Promise<ProcessExit>((resolve) => (settle = resolve));
    let exited = false;
    const exit = (code: number | null, signal: NodeJS.Signals | null = null): void => {
      if (exited) return;
      exited = true;
      settle({ code, signal });
    };
    setImmediate(() =>
      behave({ argv: args, out: (l) => onLine(l, 'stdout'), err: (l) => onLine(l, 'stderr'), exit }),
    );
    return {
      pid: 4242,
      kill: (signal = 'SIGTERM') => {
        kills.push(signal);
        exit(null, signal);
      },
      done,
      closed: done,
    };
  };
  return { start, calls, kills };
}

const KEY: HostKey = {
  hostname: 'lab1',
  release: '6.1.0-test',
  platform: 'linux',
  arch: 'x64',
  qemu: { path: '/usr/bin/qemu-system-x86_64', size: 1000, mtimeMs: 1 },
  firmware: { path: '/fw/CODE.fd', size: 2000 },
  device: '/dev/kvm ok',
};

interface TestHost extends AccelHost {
  calls: string[][];
  kills: NodeJS.Signals[];
  sysctl: string[];
}

/** A host with every fact injected: a KVM-capable x86_64 Linux box unless told otherwise. */
async function testHost(
  t: { after: (fn: () => unknown) => void },
  over: Partial<AccelHost> & { behave?: (q: FakeQemu) => void; key?: HostKey | undefined } = {},
): Promise<{ host: TestHost; firmware: Firmware; dir: string }> {
  const { dir, cleanup } = await shortTempDir('pv-accel-');
  t.after(cleanup);
  const firmware = { code: join(dir, 'CODE.fd'), varsTemplate: join(dir, 'VARS.fd') };
  await writeFile(firmware.code, 'code');
  await writeFile(firmware.varsTemplate, 'vars template');
  const { behave, key: keyOver, ...facts } = over;
  const { start, calls, kills } = fakeStart(behave);
  const sys = fakeRunner(() => ({ stdout: '1\n' }));
  const key = 'key' in over ? keyOver : KEY;
  const host: TestHost = {
    platform: 'linux',
    hostArch: 'x86_64',
    env: {},
    runner: sys.runner,
    start,
    kvmDevice: () => 'ok',
    hostKey: async () => key,
    cacheFile: join(dir, 'app', 'cache', 'accel.json'),
    probeTimeoutMs: 2000,
    ...facts,
    calls,
    kills,
    sysctl: sys.calls,
  };
  return { host, firmware, dir };
}

const cacheOf = (host: AccelHost): { verdicts: Record<string, { accel: string; reason: string }> } =>
  JSON.parse(readFileSync(host.cacheFile, 'utf8')) as {
    verdicts: Record<string, { accel: string; reason: string }>;
  };

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

test('forcedAccel: --accel beats PVMLAB_ACCEL beats PVMLAB_QEMU_ACCEL; empty means unset', () => {
  assert.deepEqual(forcedAccel('hvf', {}), { accel: 'hvf', source: '--accel' });
  assert.deepEqual(forcedAccel(undefined, { PVMLAB_ACCEL: 'kvm' }), { accel: 'kvm', source: 'PVMLAB_ACCEL' });
  assert.deepEqual(forcedAccel(undefined, { PVMLAB_QEMU_ACCEL: 'hvf' }), {
    accel: 'hvf',
    source: 'PVMLAB_QEMU_ACCEL',
  });
  assert.deepEqual(forcedAccel('tcg', { PVMLAB_ACCEL: 'kvm' }), { accel: 'tcg', source: '--accel' });
  assert.deepEqual(forcedAccel(undefined, { PVMLAB_ACCEL: 'tcg', PVMLAB_QEMU_ACCEL: 'kvm' }), {
    accel: 'tcg',
    source: 'PVMLAB_ACCEL',
  });
  assert.equal(forcedAccel(undefined, {}), undefined);
  assert.equal(forcedAccel(undefined, { PVMLAB_ACCEL: '' }), undefined);
});

test('resolveAccel: an override wins with no probe, no cache, whatever the host', async (t) => {
  const { host, firmware } = await testHost(t, {
    kvmDevice: () => assert.fail('no device check'),
    hostKey: () => assert.fail('no cache key'),
  });
  const cases: [string | undefined, NodeJS.ProcessEnv, string, string][] = [
    ['hvf', {}, 'hvf', '--accel'],
    [undefined, { PVMLAB_ACCEL: 'kvm' }, 'kvm', 'PVMLAB_ACCEL'],
    [undefined, { PVMLAB_QEMU_ACCEL: 'kvm' }, 'kvm', 'PVMLAB_QEMU_ACCEL'],
    ['tcg', { PVMLAB_ACCEL: 'kvm' }, 'tcg', '--accel'],
  ];
  for (const [override, env, accel, by] of cases) {
    const c = await resolveAccel(
      { guestArch: 'aarch64', firmware, ...(override ? { override } : {}) },
      { ...host, env },
    );
    assert.deepEqual(c, { accel, reason: `forced by ${by}`, source: 'override', forcedBy: by });
  }
  assert.deepEqual(host.calls, []);
  assert.equal(existsSync(host.cacheFile), false);
});

test('resolveAccel: a bad explicit value names where it came from', async (t) => {
  const { host, firmware } = await testHost(t);
  await assert.rejects(resolveAccel({ guestArch: 'x86_64', firmware, override: 'qemu' }, host), {
    name: 'UsageError',
    message: "--accel must be one of kvm, hvf, tcg (got 'qemu')",
  });
  await assert.rejects(
    resolveAccel({ guestArch: 'x86_64', firmware }, { ...host, env: { PVMLAB_ACCEL: 'fast' } }),
    {
      name: 'UsageError',
      message: "PVMLAB_ACCEL must be one of kvm, hvf, tcg (got 'fast')",
    },
  );
});

test('machine without /dev/kvm (or without access): TCG, nothing spawned, the reason recorded', async (t) => {
  for (const [device, reason] of [
    ['missing', 'no /dev/kvm'],
    ['denied', 'no read-write access to /dev/kvm'],
  ] as const) {
    const { host, firmware } = await testHost(t, { kvmDevice: () => device });
    const c = await resolveAccel({ guestArch: 'x86_64', firmware }, host);
    assert.equal(c.accel, 'tcg');
    assert.equal(c.reason, reason);
    assert.equal(c.source, 'probe');
    assert.deepEqual(host.calls, []);
    const stored = cacheOf(host).verdicts.x86_64;
    assert.deepEqual([stored?.accel, stored?.reason], ['tcg', reason]);
  }
});

test('machine whose KVM guest hangs: the probe times out, is killed, TCG', async (t) => {
  const { host, firmware } = await testHost(t, { probeTimeoutMs: 200 });
  const started = Date.now();
  const c = await resolveAccel({ guestArch: 'x86_64', firmware }, host);
  assert.equal(c.accel, 'tcg');
  assert.equal(c.reason, 'KVM timed out: no firmware output within 0.2 s');
  assert.ok(Date.now() - started < 2000);
  assert.deepEqual(host.kills, ['SIGKILL']);
  assert.equal(cacheOf(host).verdicts.x86_64?.accel, 'tcg');
});

test('machine where KVM aborts on an MSR (exit 134 with that stderr): TCG with the MSR reason', async (t) => {
  for (const [code, signal] of [
    [134, null],
    [null, 'SIGABRT'],
  ] as const) {
    const { host, firmware } = await testHost(t, {
      behave: (q) => {
        for (const l of MSR_STDERR) q.err(l);
        q.exit(code, signal);
      },
    });
    const c = await resolveAccel({ guestArch: 'x86_64', firmware }, host);
    assert.deepEqual([c.accel, c.reason], ['tcg', 'KVM aborted: failed to set MSR 0x10a to 0x69']);
    assert.equal(cacheOf(host).verdicts.x86_64?.reason, 'KVM aborted: failed to set MSR 0x10a to 0x69');
  }
});

test("machine where OVMF stops with 'KVM internal error': TCG at once, the paused QEMU killed", async (t) => {
  const { host, firmware } = await testHost(t, {
    probeTimeoutMs: 5000,
    behave: (q) => {
      q.err("qemu-system-x86_64: warning: host doesn't support requested feature: CPUID.01H:ECX.pni [bit 0]");
      q.err('KVM internal error. Suberror: 1');
      q.err('extra data[0]: 0x0000000000000001');
      // ...and QEMU stays alive with the guest paused.
    },
  });
  const started = Date.now();
  const c = await resolveAccel({ guestArch: 'x86_64', firmware }, host);
  assert.deepEqual([c.accel, c.reason], ['tcg', 'KVM internal error. Suberror: 1']);
  assert.ok(Date.now() - started < 1000, 'no waiting for the timeout');
  assert.deepEqual(host.kills, ['SIGKILL']);
});

test('machine where KVM works: the probe reaches the firmware marker, KVM, recorded', async (t) => {
  let varsDuringProbe: string | undefined;
  const { host, firmware } = await testHost(t, {
    behave: (q) => {
      const vars = /unit=1,file=(.*)$/.exec(q.argv.find((a) => a.includes('unit=1')) ?? '')?.[1];
      varsDuringProbe = vars;
      assert.ok(vars && existsSync(vars), 'a copy of the vars template exists while the probe runs');
      assert.equal(readFileSync(vars, 'utf8'), 'vars template');
      q.out(OVMF_FIRST_LINE);
    },
  });
  const c = await resolveAccel({ guestArch: 'x86_64', firmware }, host);
  assert.equal(c.accel, 'kvm');
  assert.equal(c.reason, 'ok');
  assert.equal(c.source, 'probe');
  assert.deepEqual(c.cache, { file: host.cacheFile, key: KEY, recorded: true });
  assert.match(describeChoice(c), /^kvm \(ok; probed in \d+\.\d s, recorded in .*accel\.json\)$/);
  // The probe: the VM's own machine type, accelerator, CPU and firmware code; a temp vars copy.
  assert.equal(host.calls.length, 1);
  const [bin, ...argv] = host.calls[0] ?? [];
  assert.equal(bin, 'qemu-system-x86_64');
  assert.deepEqual(argv.slice(0, 6), ['-machine', 'q35', '-accel', 'kvm', '-cpu', 'host']);
  assert.ok(argv.includes(`if=pflash,format=raw,unit=0,readonly=on,file=${firmware.code}`));
  assert.ok(varsDuringProbe && varsDuringProbe !== firmware.varsTemplate);
  assert.equal(existsSync(varsDuringProbe), false, 'the temp vars copy is removed');
  assert.deepEqual(host.kills, ['SIGKILL']);
  const stored = cacheOf(host).verdicts.x86_64;
  assert.equal(stored?.accel, 'kvm');
  assert.equal(stored?.reason, 'ok');
});

test('cross-arch guests are always emulated, whatever the host offers: nothing probed or cached', async (t) => {
  const cases: [Partial<AccelHost>, Arch, string][] = [
    [{ platform: 'linux', hostArch: 'x86_64' }, 'aarch64', 'aarch64 guest on a x86_64 host is emulated'],
    [{ platform: 'linux', hostArch: 'aarch64' }, 'x86_64', 'x86_64 guest on a aarch64 host is emulated'],
    [{ platform: 'darwin', hostArch: 'aarch64' }, 'x86_64', 'x86_64 guest on a aarch64 host is emulated'],
    [{ platform: 'linux', hostArch: undefined }, 'x86_64', 'x86_64 guest on a different host is emulated'],
  ];
  for (const [over, guestArch, reason] of cases) {
    const { host, firmware } = await testHost(t, { ...over, behave: (q) => q.out(OVMF_FIRST_LINE) });
    assert.deepEqual(await resolveAccel({ guestArch, firmware }, host), {
      accel: 'tcg',
      reason,
      source: 'fixed',
    });
    assert.deepEqual(host.calls, []);
    assert.deepEqual(host.sysctl, []);
    assert.equal(existsSync(host.cacheFile), false);
  }
});

test('a platform with no hardware accelerator: TCG', async (t) => {
  const { host, firmware } = await testHost(t, { platform: 'win32' });
  assert.deepEqual(await resolveAccel({ guestArch: 'x86_64', firmware }, host), {
    accel: 'tcg',
    reason: 'no hardware accelerator on win32',
    source: 'fixed',
  });
});

test('macOS: HVF after kern.hv_support and a probe under -accel hvf; without hv_support TCG, no probe', async (t) => {
  const mac = {
    platform: 'darwin',
    hostArch: 'aarch64',
    kvmDevice: () => assert.fail('no /dev/kvm on macOS'),
  } as const;
  const ok = await testHost(t, { ...mac, behave: (q) => q.out(OVMF_FIRST_LINE) });
  const c = await resolveAccel({ guestArch: 'aarch64', firmware: ok.firmware }, ok.host);
  assert.deepEqual([c.accel, c.reason], ['hvf', 'ok']);
  assert.deepEqual(ok.host.sysctl, ['sysctl -n kern.hv_support']);
  const [bin, ...argv] = ok.host.calls[0] ?? [];
  assert.equal(bin, 'qemu-system-aarch64');
  assert.deepEqual(argv.slice(0, 6), ['-machine', 'virt,gic-version=3', '-accel', 'hvf', '-cpu', 'host']);

  const no = await testHost(t, { ...mac, runner: fakeRunner(() => ({ stdout: '0\n' })).runner });
  const n = await resolveAccel({ guestArch: 'aarch64', firmware: no.firmware }, no.host);
  assert.deepEqual(
    [n.accel, n.reason],
    ['tcg', 'Hypervisor.framework is not available (kern.hv_support is not 1)'],
  );
  assert.deepEqual(no.host.calls, []);

  const broken = await testHost(t, {
    ...mac,
    behave: (q) => {
      q.err('qemu-system-aarch64: Error: HV_UNSUPPORTED');
      q.exit(1);
    },
  });
  const b = await resolveAccel({ guestArch: 'aarch64', firmware: broken.firmware }, broken.host);
  assert.deepEqual([b.accel, b.reason], ['tcg', 'HVF exited with status 1: HV_UNSUPPORTED']);
});

test('cache hit: the second call spawns nothing; a miss for the other arch; a stale key re-probes', async (t) => {
  let probes = 0;
  const { host, firmware } = await testHost(t, {
    behave: (q) => {
      probes++;
      q.out(OVMF_FIRST_LINE);
    },
  });
  const first = await resolveAccel({ guestArch: 'x86_64', firmware }, host);
  assert.deepEqual([first.source, probes], ['probe', 1]);
  const hit = await resolveAccel({ guestArch: 'x86_64', firmware }, host);
  assert.deepEqual(hit, {
    accel: 'kvm',
    reason: 'ok',
    source: 'cache',
    cache: { file: host.cacheFile, key: KEY, recorded: true },
  });
  assert.equal(probes, 1, 'a cache hit spawns nothing');
  assert.match(describeChoice(hit), /^kvm \(ok; cached in .*accel\.json\)$/);

  // The same host with an aarch64 host key has no aarch64 verdict yet: a miss.
  const arm = await resolveAccel({ guestArch: 'aarch64', firmware }, { ...host, hostArch: 'aarch64' });
  assert.deepEqual([arm.source, probes], ['probe', 2]);
  assert.deepEqual(Object.keys(cacheOf(host).verdicts).sort(), ['aarch64', 'x86_64']);

  // A QEMU upgrade (another mtime), a kernel update, /dev/kvm access changing: each re-probes.
  const stale: HostKey[] = [
    { ...KEY, qemu: { ...KEY.qemu, mtimeMs: 2 } },
    { ...KEY, release: '6.1.0-next' },
    { ...KEY, device: '/dev/kvm denied' },
    { ...KEY, firmware: { ...KEY.firmware, size: 1 } },
  ];
  for (const key of stale) {
    const before: number = probes;
    const c = await resolveAccel({ guestArch: 'x86_64', firmware }, { ...host, hostKey: async () => key });
    assert.deepEqual([c.source, probes], ['probe', before + 1], JSON.stringify(key));
  }
});

test('a corrupt cache file is ignored and rewritten, never fatal; an unwritable one costs only the record', async (t) => {
  const { host, firmware, dir } = await testHost(t, { behave: (q) => q.out(OVMF_FIRST_LINE) });
  await mkdir(join(host.cacheFile, '..'), { recursive: true });
  for (const junk of ['{not json', 'null', '[]', '{"verdicts":{"x86_64":{"accel":"warp","reason":1}}}', '']) {
    await writeFile(host.cacheFile, junk);
    const c = await resolveAccel({ guestArch: 'x86_64', firmware }, host);
    assert.deepEqual([c.accel, c.source], ['kvm', 'probe'], junk);
    assert.equal(cacheOf(host).verdicts.x86_64?.accel, 'kvm', 'rewritten');
  }
  // The cache's directory is a file: the verdict still comes back, just not recorded.
  await writeFile(join(dir, 'blocker'), '');
  const c = await resolveAccel(
    { guestArch: 'x86_64', firmware },
    { ...host, cacheFile: join(dir, 'blocker', 'a.json') },
  );
  assert.deepEqual([c.accel, c.cache?.recorded], ['kvm', false]);
  assert.doesNotMatch(describeChoice(c), /recorded/);
});

test('without a host key (QEMU not installed) the verdict is made but not cached', async (t) => {
  const { host, firmware } = await testHost(t, { key: undefined, behave: (q) => q.out(OVMF_FIRST_LINE) });
  const c = await resolveAccel({ guestArch: 'x86_64', firmware }, host);
  assert.deepEqual([c.accel, c.cache], ['kvm', undefined]);
  assert.equal(existsSync(host.cacheFile), false);
});

test('probeVerdict: the hardware accelerator only when the marker was reached', () => {
  assert.deepEqual(probeVerdict('kvm', { kind: 'marker', ms: 900 }), { accel: 'kvm', reason: 'ok' });
  assert.deepEqual(probeVerdict('hvf', { kind: 'marker', ms: 900 }), { accel: 'hvf', reason: 'ok' });
  assert.deepEqual(probeVerdict('kvm', { kind: 'timeout', ms: 10_000 }), {
    accel: 'tcg',
    reason: 'KVM timed out: no firmware output within 10 s',
  });
  assert.deepEqual(probeVerdict('kvm', { kind: 'internal-error', line: 'KVM internal error. Suberror: 1' }), {
    accel: 'tcg',
    reason: 'KVM internal error. Suberror: 1',
  });
  assert.deepEqual(probeVerdict('hvf', { kind: 'internal-error', line: 'internal error 7' }), {
    accel: 'tcg',
    reason: 'HVF: internal error 7',
  });
  assert.deepEqual(probeVerdict('kvm', { kind: 'exited', code: 134, signal: null, stderr: MSR_STDERR }), {
    accel: 'tcg',
    reason: 'KVM aborted: failed to set MSR 0x10a to 0x69',
  });
  assert.deepEqual(probeVerdict('kvm', { kind: 'spawn-error', message: 'spawn qemu-system-x86_64 ENOENT' }), {
    accel: 'tcg',
    reason: 'KVM probe could not run: spawn qemu-system-x86_64 ENOENT',
  });
  // A probe guest that powers off without the marker did not prove anything either.
  assert.equal(probeVerdict('kvm', { kind: 'exited', code: 0, signal: null, stderr: [] }).accel, 'tcg');
});

test('describeQemuFailure: abort by signal, by 134, by a daemonising parent (exit 1 + assertion); others', () => {
  const msr = 'KVM aborted: failed to set MSR 0x10a to 0x69';
  assert.equal(describeQemuFailure('kvm', { code: null, signal: 'SIGABRT', stderr: MSR_STDERR }), msr);
  assert.equal(describeQemuFailure('kvm', { code: 134, signal: null, stderr: MSR_STDERR }), msr);
  assert.equal(describeQemuFailure('kvm', { code: 1, signal: null, stderr: MSR_STDERR }), msr);
  assert.equal(
    describeQemuFailure('kvm', {
      code: 1,
      signal: null,
      stderr: [
        'qemu-system-x86_64: warning: something',
        'Could not access KVM kernel module: Permission denied',
      ],
    }),
    'KVM exited with status 1: Could not access KVM kernel module: Permission denied',
  );
  assert.equal(
    describeQemuFailure('hvf', { code: null, signal: 'SIGSEGV', stderr: [] }),
    'HVF was killed (SIGSEGV)',
  );
});

test('watchProbe: lines that arrive after the exit still count; a spawn failure is a verdict, not a throw', async () => {
  // The exit is known before the last stderr lines are read: `closed` waits for them.
  const late: StartProcess = async (_c, _a, { onLine }) => {
    let close: (e: ProcessExit) => void = () => undefined;
    const closed = new Promise<ProcessExit>((r) => (close = r));
    setImmediate(() => {
      for (const l of MSR_STDERR) onLine(l, 'stderr');
      close({ code: null, signal: 'SIGABRT' });
    });
    return {
      pid: 1,
      kill: () => undefined,
      done: Promise.resolve({ code: null, signal: 'SIGABRT' }),
      closed,
    };
  };
  assert.deepEqual(await watchProbe(late, 'qemu', [], 1000), {
    kind: 'exited',
    code: null,
    signal: 'SIGABRT',
    stderr: MSR_STDERR,
  });
  const cannot: StartProcess = async () => {
    throw new Error('spawn EACCES');
  };
  assert.deepEqual(await watchProbe(cannot, 'qemu', [], 1000), {
    kind: 'spawn-error',
    message: 'spawn EACCES',
  });
  // The marker on stderr is not the firmware's serial console.
  const wrong = fakeStart((q) => {
    q.err(FIRMWARE_MARKER);
    q.exit(0);
  });
  assert.equal((await watchProbe(wrong.start, 'qemu', [], 1000)).kind, 'exited');
});

test('accelProbeArgv: the real VM argv pieces, serial on stdout, no disk, no network', () => {
  const fw = { code: '/fw/OVMF_CODE_4M.fd', vars: '/tmp/p/vars.fd' };
  assert.deepEqual(accelProbeArgv({ arch: 'x86_64', accel: 'kvm', firmware: fw }), [
    '-machine',
    'q35',
    '-accel',
    'kvm',
    '-cpu',
    'host',
    '-smp',
    '2',
    '-m',
    '256',
    '-nodefaults',
    '-nic',
    'none',
    '-drive',
    'if=pflash,format=raw,unit=0,readonly=on,file=/fw/OVMF_CODE_4M.fd',
    '-drive',
    'if=pflash,format=raw,unit=1,file=/tmp/p/vars.fd',
    '-display',
    'none',
    '-serial',
    'stdio',
  ]);
  // Whatever buildQemuArgv gives a VM for machine, accelerator, CPU and firmware, the probe has too.
  for (const arch of ['x86_64', 'aarch64'] as const)
    for (const accel of ['kvm', 'hvf', 'tcg'] as const) {
      const vm = buildQemuArgv({
        name: 'n1',
        arch,
        accel,
        memoryMiB: 2048,
        cpus: 2,
        firmware: fw,
        disk: '/lab/n1.qcow2',
        boot: 'pxe',
        mac: '52:54:00:12:34:56',
        nic: { wrapper: [], netdev: 'tap,ifname=t0' },
        files: { pid: '/p', qmp: '/q', log: '/l' },
        interactive: false,
      });
      const probe = accelProbeArgv({ arch, accel, firmware: fw });
      const i = vm.indexOf('-machine');
      assert.deepEqual(probe.slice(0, 6), vm.slice(i, i + 6), `${arch} ${accel}`);
      for (const d of vm.filter((a) => a.startsWith('if=pflash'))) assert.ok(probe.includes(d));
      assert.ok(
        !probe.some((a) => a.includes('qcow2') || a.startsWith('-netdev') || a.includes('virtio-net')),
      );
    }
});

test('kvmDevice: present and read-write, or missing', async (t) => {
  const { dir, cleanup } = await shortTempDir('pv-kvmdev-');
  t.after(cleanup);
  const dev = join(dir, 'kvm');
  await writeFile(dev, '');
  assert.equal(kvmDevice(dev), 'ok');
  assert.equal(kvmDevice(join(dir, 'none')), 'missing');
});

test('accelHost: the real facts, with a cache file under the app dir', () => {
  const host = accelHost('/lab/.pvmlab', fakeRunner().runner, {});
  assert.equal(host.cacheFile, '/lab/.pvmlab/cache/accel.json');
  assert.equal(host.platform, process.platform);
  assert.equal(host.start, startProcess);
});

test('resolveHostAccel: nothing to decide (and nothing spawned) without QEMU on PATH', async () => {
  const { runner, calls } = fakeRunner();
  assert.equal(await resolveHostAccel('/nonexistent/.pvmlab', runner, { PATH: '/nonexistent' }), undefined);
  assert.deepEqual(calls, []);
});

test('probeHvf reads kern.hv_support', async () => {
  const yes = fakeRunner(() => ({ stdout: '1\n' }));
  assert.equal(await probeHvf(yes.runner), true);
  assert.deepEqual(yes.calls, ['sysctl -n kern.hv_support']);
  assert.equal(await probeHvf(fakeRunner(() => ({ stdout: '0\n' })).runner), false);
  assert.equal(await probeHvf(fakeRunner(() => ({ code: 1, stdout: '1' })).runner), false);
  const missing: Runner = async () => {
    throw new Error('sysctl: command not found');
  };
  assert.equal(await probeHvf(missing), false);
});

/** The probe argv under TCG (runs anywhere) on a temp copy of the real firmware's vars. */
async function tcgProbe(t: { after: (fn: () => unknown) => void }, arch: Arch): Promise<string[]> {
  const { dir, cleanup } = await shortTempDir('pv-probe-');
  t.after(cleanup);
  const fw = findFirmware(arch, {});
  const vars = join(dir, 'vars.fd');
  await writeFile(vars, readFileSync(fw.varsTemplate));
  return accelProbeArgv({ arch, accel: 'tcg', firmware: { code: fw.code, vars } });
}

for (const arch of ['x86_64', 'aarch64'] as const)
  test(
    `REAL: the probe guest (${arch}, real firmware) under TCG prints ${FIRMWARE_MARKER} and is seen`,
    { timeout: 90_000 },
    async (t) => {
      const argv = await tcgProbe(t, arch);
      const outcome = await watchProbe(startProcess, qemuBinary(arch), argv, 60_000);
      assert.equal(outcome.kind, 'marker', JSON.stringify(outcome));
    },
  );

test('REAL control: the same guest held at reset (-S) prints nothing and the probe times out', async (t) => {
  // Proves the marker above comes from the firmware running, so a timeout means the guest did not run.
  const argv = await tcgProbe(t, 'x86_64');
  const started = Date.now();
  const outcome = await watchProbe(startProcess, 'qemu-system-x86_64', [...argv, '-S'], 1500);
  assert.deepEqual(outcome, { kind: 'timeout', ms: 1500 });
  assert.ok(Date.now() - started < 5000, `took ${Date.now() - started} ms`);
});
