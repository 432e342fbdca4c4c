import { copyFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { LineProcess, OutputStream } from '../core/exec.js';
import type { Arch } from '../lab/validate.js';
import type { Accel } from './accel.js';
import { firmwareArgs, machineArgs, qemuBinary } from './argv.js';
import type { Firmware } from './firmware.js';

export const ACCEL_NAME: Record<Accel, string> = { kvm: 'KVM', hvf: 'HVF', tcg: 'TCG' };

/**
 * OVMF and AAVMF print this on the serial console when BDS loads the first boot option: by
 * then SEC, PEI and DXE have run and every vCPU has been brought up under the accelerator.
 * (AAVMF prints a "UEFI firmware (version ...)" banner before it; OVMF only escape sequences.)
 */
export const FIRMWARE_MARKER = 'BdsDxe';

/** A working KVM reaches the marker in about a second; a hung guest never does. */
export const PROBE_TIMEOUT_MS = 10_000;

/**
 * The probe guest: the real VM's machine type, accelerator, CPU model and firmware, with its
 * serial console on stdout and nothing else (no disk, no network). Pure.
 */
export function accelProbeArgv(p: {
  arch: Arch;
  accel: Accel;
  firmware: { code: string; vars: string };
}): string[] {
  return [
    ...machineArgs(p.arch, p.accel),
    // Two vCPUs, as a VM gets by default: bringing up the second one is part of what can fail.
    '-smp',
    '2',
    '-m',
    '256',
    '-nodefaults',
    '-nic',
    'none',
    ...firmwareArgs(p.firmware),
    '-display',
    'none',
    '-serial',
    'stdio',
  ];
}

/** How a probe run ended. */
export type ProbeOutcome =
  | { kind: 'marker'; ms: number }
  | { kind: 'internal-error'; line: string }
  | { kind: 'exited'; code: number | null; signal: NodeJS.Signals | null; stderr: string[] }
  | { kind: 'timeout'; ms: number }
  | { kind: 'spawn-error'; message: string };

export interface Verdict {
  accel: Accel;
  reason: string;
}

/** The first line that says what went wrong, without QEMU's `qemu-system-x: ` and `error: ` prefixes. */
function errorDetail(stderr: readonly string[]): string | undefined {
  const lines = stderr
    .map((l) => l.replace(/^qemu-system-[\w-]+:\s*/, '').trim())
    .filter((l) => l.length > 0);
  const error = lines.find((l) => /^error:/i.test(l));
  if (error) return error.replace(/^error:\s*/i, '');
  return lines.find((l) => !/^warning:/i.test(l));
}

/** "KVM aborted: failed to set MSR 0x10a to 0x69", "KVM exited with status 1: ...". */
export function describeQemuFailure(
  accel: Accel,
  exit: { code: number | null; signal: NodeJS.Signals | null; stderr: readonly string[] },
): string {
  // A daemonising QEMU whose child aborts exits 1, but the assertion is on stderr.
  const aborted =
    exit.signal === 'SIGABRT' || exit.code === 134 || exit.stderr.some((l) => /Assertion .* failed/.test(l));
  const how = aborted
    ? 'aborted'
    : exit.signal
      ? `was killed (${exit.signal})`
      : `exited with status ${String(exit.code)}`;
  const detail = errorDetail(exit.stderr);
  return `${ACCEL_NAME[accel]} ${how}${detail ? `: ${detail}` : ''}`;
}

const seconds = (ms: number): string => (ms % 1000 === 0 ? String(ms / 1000) : (ms / 1000).toFixed(1));

/** Turn a probe run under `accel` into a verdict: the hardware accelerator only if the marker was reached. Pure. */
export function probeVerdict(accel: Accel, outcome: ProbeOutcome): Verdict {
  const name = ACCEL_NAME[accel];
  switch (outcome.kind) {
    case 'marker':
      return { accel, reason: 'ok' };
    case 'internal-error':
      return {
        accel: 'tcg',
        reason: outcome.line.startsWith(name) ? outcome.line : `${name}: ${outcome.line}`,
      };
    case 'exited':
      return { accel: 'tcg', reason: describeQemuFailure(accel, outcome) };
    case 'timeout':
      return {
        accel: 'tcg',
        reason: `${name} timed out: no firmware output within ${seconds(outcome.ms)} s`,
      };
    case 'spawn-error':
      return { accel: 'tcg', reason: `${name} probe could not run: ${outcome.message}` };
  }
}

/** startProcess's shape, so tests can stand in a fake QEMU. */
export type StartProcess = (
  command: string,
  args: readonly string[],
  options: { onLine: (line: string, stream: OutputStream) => void },
) => Promise<LineProcess>;

/** Run `command` until the firmware marker shows on stdout, an internal error on stderr, an exit, or the timeout. */
export async function watchProbe(
  start: StartProcess,
  command: string,
  argv: readonly string[],
  timeoutMs: number,
): Promise<ProbeOutcome> {
  const started = Date.now();
  const stderr: string[] = [];
  let seen: { kind: 'marker'; ms: number } | { kind: 'internal-error'; line: string } | undefined;
  let onSeen = (): void => undefined;
  const seenOnce = new Promise<void>((resolve) => (onSeen = resolve));
  const onLine = (line: string, stream: OutputStream): void => {
    if (seen) return;
    if (stream === 'stdout' && line.includes(FIRMWARE_MARKER))
      seen = { kind: 'marker', ms: Date.now() - started };
    else if (stream === 'stderr') {
      stderr.push(line);
      // KVM stops the guest and keeps QEMU alive: waiting would only end in the timeout.
      if (/internal error/i.test(line)) seen = { kind: 'internal-error', line: line.trim() };
    }
    if (seen) onSeen();
  };
  let child: LineProcess;
  try {
    child = await start(command, argv, { onLine });
  } catch (err) {
    return { kind: 'spawn-error', message: (err as Error).message };
  }
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), timeoutMs)));
  const late = await Promise.race([seenOnce.then(() => false), child.done.then(() => false), timedOut]);
  clearTimeout(timer);
  child.kill('SIGKILL');
  const exit = await child.closed; // every line is in by now
  if (exit.error) return { kind: 'spawn-error', message: exit.error.message };
  if (seen) return seen;
  if (late) return { kind: 'timeout', ms: timeoutMs };
  return { kind: 'exited', code: exit.code, signal: exit.signal, stderr };
}

/** Boot the probe guest under `accel` on a throwaway copy of the firmware's vars. */
export async function runAccelProbe(p: {
  arch: Arch;
  accel: Accel;
  firmware: Firmware;
  start: StartProcess;
  timeoutMs?: number;
}): Promise<ProbeOutcome> {
  let dir: string | undefined;
  try {
    dir = await mkdtemp(join(tmpdir(), 'pvmlab-accel-'));
    const vars = join(dir, 'vars.fd');
    await copyFile(p.firmware.varsTemplate, vars);
    const argv = accelProbeArgv({ arch: p.arch, accel: p.accel, firmware: { code: p.firmware.code, vars } });
    return await watchProbe(p.start, qemuBinary(p.arch), argv, p.timeoutMs ?? PROBE_TIMEOUT_MS);
  } catch (err) {
    return { kind: 'spawn-error', message: (err as Error).message };
  } finally {
    if (dir) await rm(dir, { recursive: true, force: true });
  }
}
