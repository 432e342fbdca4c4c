import { constants, accessSync } from 'node:fs';
import { writeFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Runner } from '../core/exec.js';
import { UsageError } from '../core/errors.js';
import type { Arch } from '../lab/validate.js';

export const ACCELS = ['kvm', 'hvf', 'tcg'] as const;
export type Accel = (typeof ACCELS)[number];

export function parseAccel(value: string, source: string): Accel {
  if ((ACCELS as readonly string[]).includes(value)) return value as Accel;
  throw new UsageError(`${source} must be one of ${ACCELS.join(', ')} (got '${value}')`);
}

/** Node's arch name for the host, in pvmlab's words. */
export function hostArch(nodeArch: string = process.arch): Arch | undefined {
  if (nodeArch === 'x64') return 'x86_64';
  if (nodeArch === 'arm64') return 'aarch64';
  return undefined;
}

export interface AccelFacts {
  platform: NodeJS.Platform;
  hostArch: Arch | undefined;
  guestArch: Arch;
  /** A probe guest really ran under KVM (Linux). */
  kvmWorks: boolean;
  /** Hypervisor.framework is available (macOS). */
  hvfAvailable: boolean;
}

/** Pick the accelerator: hardware only for a same-arch guest where it really works, TCG otherwise. */
export function chooseAccel(f: AccelFacts): Accel {
  if (f.hostArch !== f.guestArch) return 'tcg';
  if (f.platform === 'linux' && f.kvmWorks) return 'kvm';
  if (f.platform === 'darwin' && f.hvfAvailable) return 'hvf';
  return 'tcg';
}

/**
 * A 64 KiB x86 "BIOS" whose reset vector writes 1 to the isa-debug-exit port, so QEMU exits
 * with status (1<<1)|1 = 3. If that happens under KVM, KVM runs guest code here; if the guest
 * hangs (as nested KVM does on some hosts) the probe times out.
 */
export function x86ProbeBios(): Buffer {
  const image = Buffer.alloc(65536, 0xf4); // hlt everywhere
  // mov al,1 ; out 0xf4,al ; hlt ; jmp $-1
  Buffer.from([0xb0, 0x01, 0xe6, 0xf4, 0xf4, 0xeb, 0xfd]).copy(image, 0xfff0);
  return image;
}

export function kvmProbeArgv(biosPath: string): string[] {
  return [
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
    biosPath,
    '-device',
    'isa-debug-exit,iobase=0xf4,iosize=0x04',
  ];
}

/** Run the probe guest under KVM; true only if it ran to its exit port within the timeout. */
export async function probeKvm(runner: Runner, guestArch: Arch, timeoutMs = 5000): Promise<boolean> {
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
  } catch {
    return false;
  }
  if (guestArch !== 'x86_64') return true; // no probe image for arm64 hosts yet: trust /dev/kvm
  const dir = await mkdtemp(join(tmpdir(), 'pvmlab-kvm-probe-'));
  try {
    const bios = join(dir, 'probe.bin');
    await writeFile(bios, x86ProbeBios());
    const r = await runner('qemu-system-x86_64', kvmProbeArgv(bios), { timeoutMs });
    return r.code === 3;
  } catch {
    return false;
  } finally {
    await rm(dir, { recursive: true, force: true });
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

/** Resolve the accelerator: an explicit choice (flag or PVMLAB_ACCEL) wins, else detect. */
export async function detectAccel(
  runner: Runner,
  guestArch: Arch,
  override?: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<Accel> {
  const explicit = override ?? env.PVMLAB_ACCEL ?? env.PVMLAB_QEMU_ACCEL;
  if (explicit) return parseAccel(explicit, override ? '--accel' : 'PVMLAB_ACCEL');
  const facts: AccelFacts = {
    platform: process.platform,
    hostArch: hostArch(),
    guestArch,
    kvmWorks: false,
    hvfAvailable: false,
  };
  if (facts.hostArch === guestArch) {
    if (facts.platform === 'linux') facts.kvmWorks = await probeKvm(runner, guestArch);
    if (facts.platform === 'darwin') facts.hvfAvailable = await probeHvf(runner);
  }
  return chooseAccel(facts);
}
