import { constants, accessSync } from 'node:fs';
import { startProcess, which, type Runner } from '../core/exec.js';
import { UsageError, isErrno } from '../core/errors.js';
import type { Arch } from '../lab/validate.js';
import {
  accelCacheFile,
  cachedVerdict,
  readAccelCache,
  readHostKey,
  recordVerdict,
  type HostKey,
} from './accel-cache.js';
import { probeVerdict, runAccelProbe, type StartProcess, type Verdict } from './accel-probe.js';
import { qemuBinary } from './argv.js';
import { findFirmware, type Firmware } from './firmware.js';

export const ACCELS = ['kvm', 'hvf', 'tcg'] as const;
export type Accel = (typeof ACCELS)[number];

export function parseAccel(value: string, source: string): Accel {
  if ((ACCELS as readonly string[]).includes(value)) return value as Accel;
  throw new UsageError(`${source} must be one of ${ACCELS.join(', ')} (got '${value}')`);
}

/** The accelerator the user forced: --accel, else PVMLAB_ACCEL, else the older PVMLAB_QEMU_ACCEL. */
export function forcedAccel(
  override: string | undefined,
  env: NodeJS.ProcessEnv,
): { accel: Accel; source: string } | undefined {
  const [value, source] =
    override !== undefined
      ? [override, '--accel']
      : env.PVMLAB_ACCEL
        ? [env.PVMLAB_ACCEL, 'PVMLAB_ACCEL']
        : [env.PVMLAB_QEMU_ACCEL, 'PVMLAB_QEMU_ACCEL'];
  if (value === undefined || value === '') return undefined;
  return { accel: parseAccel(value, source), source };
}

/** Node's arch name for the host, in pvmlab's words. */
export function hostArch(nodeArch: string = process.arch): Arch | undefined {
  if (nodeArch === 'x64') return 'x86_64';
  if (nodeArch === 'arm64') return 'aarch64';
  return undefined;
}

/** The hardware accelerator this platform's QEMU can use, if any. */
export function hardwareAccel(platform: NodeJS.Platform): 'kvm' | 'hvf' | undefined {
  if (platform === 'linux') return 'kvm';
  if (platform === 'darwin') return 'hvf';
  return undefined;
}

export type KvmDevice = 'ok' | 'missing' | 'denied';

/** Can this user open /dev/kvm read-write? (A stat, no spawn: it is part of every cache key.) */
export function kvmDevice(path = '/dev/kvm'): KvmDevice {
  try {
    accessSync(path, constants.R_OK | constants.W_OK);
    return 'ok';
  } catch (err) {
    return isErrno(err, 'ENOENT') ? 'missing' : 'denied';
  }
}

/** macOS: `sysctl -n kern.hv_support` prints 1 when Hypervisor.framework can be used. */
export async function probeHvf(runner: Runner): Promise<boolean> {
  try {
    const r = await runner('sysctl', ['-n', 'kern.hv_support'], { timeoutMs: 3000 });
    return r.code === 0 && r.stdout.trim() === '1';
  } catch {
    return false;
  }
}

/** Everything the choice depends on; `accelHost` gives the real ones, tests inject their own. */
export interface AccelHost {
  platform: NodeJS.Platform;
  hostArch: Arch | undefined;
  env: NodeJS.ProcessEnv;
  /** Runs `sysctl` on macOS. */
  runner: Runner;
  /** Starts the probe QEMU. */
  start: StartProcess;
  kvmDevice: () => KvmDevice;
  hostKey: (guestArch: Arch, firmwareCode: string) => Promise<HostKey | undefined>;
  cacheFile: string;
  probeTimeoutMs?: number;
}

export function accelHost(app: string, runner: Runner, env: NodeJS.ProcessEnv = process.env): AccelHost {
  const host: AccelHost = {
    platform: process.platform,
    hostArch: hostArch(),
    env,
    runner,
    start: startProcess,
    kvmDevice: () => kvmDevice(),
    hostKey: (guestArch, code) =>
      readHostKey(guestArch, code, host.platform === 'linux' ? `/dev/kvm ${host.kvmDevice()}` : '', env),
    cacheFile: accelCacheFile(app),
  };
  return host;
}

export interface AccelChoice extends Verdict {
  /** override: the user's; fixed: no hardware accelerator applies; cache or probe: this host's verdict. */
  source: 'override' | 'fixed' | 'cache' | 'probe';
  /** --accel, PVMLAB_ACCEL or PVMLAB_QEMU_ACCEL, for an override. */
  forcedBy?: string;
  probeMs?: number;
  /** Where the verdict is (or would be) recorded, and under which key: a runtime failure updates it. */
  cache?: { file: string; key: HostKey; recorded: boolean };
}

/** Decide without the cache: prechecks that need no QEMU, then the probe guest. */
async function hardwareVerdict(
  accel: 'kvm' | 'hvf',
  guestArch: Arch,
  firmware: Firmware,
  host: AccelHost,
): Promise<Verdict> {
  if (accel === 'kvm') {
    const device = host.kvmDevice();
    if (device === 'missing') return { accel: 'tcg', reason: 'no /dev/kvm' };
    if (device === 'denied') return { accel: 'tcg', reason: 'no read-write access to /dev/kvm' };
  } else if (!(await probeHvf(host.runner))) {
    return { accel: 'tcg', reason: 'Hypervisor.framework is not available (kern.hv_support is not 1)' };
  }
  const outcome = await runAccelProbe({
    arch: guestArch,
    accel,
    firmware,
    start: host.start,
    ...(host.probeTimeoutMs !== undefined ? { timeoutMs: host.probeTimeoutMs } : {}),
  });
  return probeVerdict(accel, outcome);
}

/**
 * The accelerator for a guest: the user's override as is; TCG for a guest of another arch or
 * a platform without one; else this host's verdict, from the cache when its key still matches,
 * otherwise from a probe guest (recorded for next time).
 */
export async function resolveAccel(
  req: { guestArch: Arch; firmware: Firmware; override?: string },
  host: AccelHost,
): Promise<AccelChoice> {
  const forced = forcedAccel(req.override, host.env);
  if (forced)
    return {
      accel: forced.accel,
      reason: `forced by ${forced.source}`,
      source: 'override',
      forcedBy: forced.source,
    };
  if (host.hostArch !== req.guestArch)
    return {
      accel: 'tcg',
      reason: `${req.guestArch} guest on a ${host.hostArch ?? 'different'} host is emulated`,
      source: 'fixed',
    };
  const hw = hardwareAccel(host.platform);
  if (!hw) return { accel: 'tcg', reason: `no hardware accelerator on ${host.platform}`, source: 'fixed' };

  const key = await host.hostKey(req.guestArch, req.firmware.code);
  if (key) {
    const hit = cachedVerdict(await readAccelCache(host.cacheFile), req.guestArch, key);
    if (hit)
      return {
        accel: hit.accel,
        reason: hit.reason,
        source: 'cache',
        cache: { file: host.cacheFile, key, recorded: true },
      };
  }
  const started = Date.now();
  const verdict = await hardwareVerdict(hw, req.guestArch, req.firmware, host);
  const probeMs = Date.now() - started;
  let recorded = false;
  if (key)
    recorded = await recordVerdict(host.cacheFile, req.guestArch, {
      accel: verdict.accel,
      reason: verdict.reason,
      source: 'probe',
      at: new Date().toISOString(),
      probeMs,
      host: key,
    }).then(
      () => true,
      () => false, // an unwritable cache costs a probe next time, nothing more
    );
  return {
    accel: verdict.accel,
    reason: verdict.reason,
    source: 'probe',
    probeMs,
    ...(key ? { cache: { file: host.cacheFile, key, recorded } } : {}),
  };
}

/** The verdict for guests of the host's own arch; undefined without QEMU or firmware for it. */
export async function resolveHostAccel(
  app: string,
  runner: Runner,
  env: NodeJS.ProcessEnv = process.env,
): Promise<{ arch: Arch; choice: AccelChoice } | undefined> {
  const arch = hostArch();
  if (!arch || !which(qemuBinary(arch), env)) return undefined;
  let firmware: Firmware;
  try {
    firmware = findFirmware(arch, env);
  } catch {
    return undefined;
  }
  return { arch, choice: await resolveAccel({ guestArch: arch, firmware }, accelHost(app, runner, env)) };
}

/** One line for the user: "kvm (ok; probed in 0.9 s, recorded in ...)". */
export function describeChoice(c: AccelChoice): string {
  const how =
    c.source === 'probe'
      ? `probed in ${((c.probeMs ?? 0) / 1000).toFixed(1)} s${c.cache?.recorded ? `, recorded in ${c.cache.file}` : ''}`
      : c.source === 'cache'
        ? `cached in ${c.cache?.file ?? 'the cache'}`
        : undefined;
  return `${c.accel} (${c.reason}${how ? `; ${how}` : ''})`;
}
