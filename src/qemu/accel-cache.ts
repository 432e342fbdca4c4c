import { promises as fs } from 'node:fs';
import { hostname, release } from 'node:os';
import { dirname, join } from 'node:path';
import { which } from '../core/exec.js';
import { writeFileAtomic } from '../core/fsutil.js';
import type { Arch } from '../lab/validate.js';
import type { Accel } from './accel.js';
import { qemuBinary } from './argv.js';

/**
 * What an accelerator verdict depends on. Any change (kernel update, new QEMU, other firmware,
 * /dev/kvm appearing, a home directory shared with another host) makes the verdict stale.
 */
export interface HostKey {
  hostname: string;
  release: string;
  platform: string;
  arch: string;
  /** The QEMU binary stands in for its version: resolved path, size and mtime need no spawn. */
  qemu: { path: string; size: number; mtimeMs: number };
  firmware: { path: string; size: number };
  /** The accelerator device as this user sees it (Linux: /dev/kvm), so a newly usable one re-probes. */
  device: string;
}

export interface CachedVerdict {
  accel: Accel;
  reason: string;
  /** 'probe': the probe guest decided; 'runtime': a real VM failed under the hardware accelerator. */
  source: 'probe' | 'runtime';
  at: string;
  probeMs?: number;
  host: HostKey;
}

export interface AccelCache {
  verdicts: Partial<Record<Arch, CachedVerdict>>;
}

export function accelCacheFile(app: string): string {
  return join(app, 'cache', 'accel.json');
}

/** This host's key for guests of `guestArch`; undefined when QEMU or the firmware is not there. */
export async function readHostKey(
  guestArch: Arch,
  firmwareCode: string,
  device: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<HostKey | undefined> {
  const found = which(qemuBinary(guestArch), env);
  if (!found) return undefined;
  try {
    const path = await fs.realpath(found);
    const [bin, fw] = await Promise.all([fs.stat(path), fs.stat(firmwareCode)]);
    return {
      hostname: hostname(),
      release: release(),
      platform: process.platform,
      arch: process.arch,
      qemu: { path, size: bin.size, mtimeMs: bin.mtimeMs },
      firmware: { path: firmwareCode, size: fw.size },
      device,
    };
  } catch {
    return undefined;
  }
}

/** One string per key, field by field, so a stored key missing a field never matches. */
export function hostKeyId(k: HostKey): string {
  return JSON.stringify([
    k.hostname,
    k.release,
    k.platform,
    k.arch,
    k.qemu?.path,
    k.qemu?.size,
    k.qemu?.mtimeMs,
    k.firmware?.path,
    k.firmware?.size,
    k.device,
  ]);
}

const ACCEL_VALUES: readonly string[] = ['kvm', 'hvf', 'tcg'];

function isVerdict(v: unknown): v is CachedVerdict {
  if (typeof v !== 'object' || v === null) return false;
  const r = v as Record<string, unknown>;
  return (
    typeof r.accel === 'string' &&
    ACCEL_VALUES.includes(r.accel) &&
    typeof r.reason === 'string' &&
    typeof r.host === 'object' &&
    r.host !== null
  );
}

/** The cache file's verdicts; a missing, unreadable or corrupt file reads as empty (it is rewritten). */
export async function readAccelCache(file: string): Promise<AccelCache> {
  const verdicts: AccelCache['verdicts'] = {};
  try {
    const data = JSON.parse(await fs.readFile(file, 'utf8')) as { verdicts?: Record<string, unknown> };
    for (const arch of ['x86_64', 'aarch64'] as const) {
      const v = data?.verdicts?.[arch];
      if (isVerdict(v)) verdicts[arch] = v;
    }
  } catch {
    // no cache yet, or not ours to trust: probe again
  }
  return { verdicts };
}

/** The cached verdict for this arch if it was made for this very host key. */
export function cachedVerdict(cache: AccelCache, arch: Arch, key: HostKey): CachedVerdict | undefined {
  const v = cache.verdicts[arch];
  return v && hostKeyId(v.host) === hostKeyId(key) ? v : undefined;
}

/** Replace this arch's verdict, keeping the others; an atomic write, so readers never see half a file. */
export async function recordVerdict(file: string, arch: Arch, verdict: CachedVerdict): Promise<void> {
  const cache = await readAccelCache(file);
  cache.verdicts[arch] = verdict;
  await fs.mkdir(dirname(file), { recursive: true });
  await writeFileAtomic(file, `${JSON.stringify(cache, null, 2)}\n`);
}
