import { PvmlabError } from '../core/errors.js';
import type { RunResult, Runner } from '../core/exec.js';
import { readTextIfExists } from '../core/fsutil.js';
import type { VmFiles } from '../core/paths.js';
import type { Accel, AccelChoice } from './accel.js';
import { recordVerdict } from './accel-cache.js';
import { ACCEL_NAME, FIRMWARE_MARKER, describeQemuFailure } from './accel-probe.js';
import type { QemuSpec } from './argv.js';
import { queryStatus, removeStaleRuntime, startQemu, stopQemu, type StartResult } from './lifecycle.js';
import { vmProcess } from './process.js';

/** How long a VM started under KVM/HVF is watched before it counts as running fine. */
export const EARLY_WINDOW_MS = 3000;

/** What the first seconds of a VM under a hardware accelerator showed. */
export type EarlyObservation =
  | { kind: 'healthy' }
  | { kind: 'start-failed'; code: number | null; signal: NodeJS.Signals | null; stderr: string }
  | { kind: 'exited' }
  | { kind: 'status'; status: string };

export type EarlyDecision =
  | { action: 'keep' }
  /** A failure that is not the accelerator's (a locked disk, a busy TAP): report it as it is. */
  | { action: 'rethrow' }
  | { action: 'fallback'; reason: string }
  /** The user forced this accelerator: no fallback, a clear error instead. */
  | { action: 'fail'; message: string };

/** QMP run states that mean the guest cannot go on. */
const FAILED_STATES = new Set(['internal-error', 'guest-panicked']);

/** QEMU's own words when the accelerator is at fault, or a crash (abort, segfault). */
function accelAtFault(o: Extract<EarlyObservation, { kind: 'start-failed' }>): boolean {
  if (o.signal !== null && ['SIGABRT', 'SIGSEGV', 'SIGBUS', 'SIGILL'].includes(o.signal)) return true;
  if (o.code === 134 || o.code === 139) return true;
  return /kvm|hvf|\bhv_|\bMSR\b|assertion|internal error/i.test(o.stderr);
}

/** Why the accelerator failed this VM, or undefined when it did not. Pure. */
export function acceleratorFailure(accel: Accel, o: EarlyObservation): string | undefined {
  if (accel === 'tcg') return undefined;
  const name = ACCEL_NAME[accel];
  switch (o.kind) {
    case 'healthy':
      return undefined;
    case 'start-failed':
      // Exit 0 with no VM running: the daemonised QEMU died right after starting.
      if (o.code === 0) return `QEMU exited at once under ${name}`;
      if (!accelAtFault(o)) return undefined;
      return describeQemuFailure(accel, { ...o, stderr: o.stderr.split('\n') });
    case 'exited':
      return `QEMU exited within ${EARLY_WINDOW_MS / 1000} s under ${name}`;
    case 'status':
      if (!FAILED_STATES.has(o.status)) return undefined;
      return o.status === 'internal-error'
        ? `${name} internal error (QEMU status internal-error)`
        : `the guest panicked under ${name}`;
  }
}

/** What `vm start` does after the first seconds under `choice`. Pure. */
export function earlyDecision(
  choice: Pick<AccelChoice, 'accel' | 'source' | 'forcedBy'>,
  o: EarlyObservation,
): EarlyDecision {
  const reason = acceleratorFailure(choice.accel, o);
  if (!reason) return o.kind === 'start-failed' ? { action: 'rethrow' } : { action: 'keep' };
  if (choice.source === 'override') {
    const by = choice.forcedBy ?? '--accel';
    return {
      action: 'fail',
      message:
        `QEMU cannot run this VM with the ${ACCEL_NAME[choice.accel]} accelerator forced by ${by} (${reason}); ` +
        `drop ${by} to let pvmlab choose`,
    };
  }
  return { action: 'fallback', reason };
}

/** Watch a daemonised VM for its first seconds: gone, a failed run state, or the firmware getting going. */
export async function watchEarly(files: VmFiles, windowMs = EARLY_WINDOW_MS): Promise<EarlyObservation> {
  const deadline = Date.now() + windowMs;
  for (;;) {
    if ((await vmProcess(files.pid)).state !== 'running') return { kind: 'exited' };
    const status = await queryStatus(files);
    if (status && FAILED_STATES.has(status)) return { kind: 'status', status };
    // Past the point the probe checked: no need to wait out the window.
    if ((await readTextIfExists(files.log))?.includes(FIRMWARE_MARKER)) return { kind: 'healthy' };
    if (Date.now() >= deadline) return { kind: 'healthy' };
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** A VM's QEMU spec with every file of the VM (a failed attempt is cleaned up through them). */
export type VmSpec = QemuSpec & { files: VmFiles };

export interface AccelStartDeps {
  start: (spec: QemuSpec, runner: Runner) => Promise<StartResult>;
  /**
   * Stop what the failed attempt left (a paused QEMU, a pid file, the QMP socket): the QEMU it
   * started (`pid`), never another; without a pid only files no live process uses.
   */
  stop: (files: VmFiles, pid: number | undefined) => Promise<unknown>;
  watch: (files: VmFiles) => Promise<EarlyObservation>;
  record: typeof recordVerdict;
  /** An attached console that ends badly after this long ended on its own, not at start. */
  windowMs: number;
}

const realDeps: AccelStartDeps = {
  start: startQemu,
  stop: (files, pid) =>
    pid === undefined ? removeStaleRuntime(files) : stopQemu(files, { graceMs: 0, onlyPid: pid }),
  watch: (files) => watchEarly(files),
  record: recordVerdict,
  windowMs: EARLY_WINDOW_MS,
};

/** What the user is told, once, when TCG takes over. */
export function fallbackWarning(accel: Accel, reason: string, recordedIn: string | undefined): string {
  const where = recordedIn ? ` (recorded in ${recordedIn})` : '';
  return `${ACCEL_NAME[accel]} cannot run this VM on this host (${reason}); using TCG${where}`;
}

export interface AccelStarted {
  accel: Accel;
  result: StartResult;
  /** Set when the hardware accelerator failed this VM and TCG took over. */
  fallback?: { reason: string; recordedIn?: string };
}

/** Start once under `accel`, keeping QEMU's own result (its stderr) for the decision. */
async function attempt(
  spec: VmSpec,
  runner: Runner,
  deps: AccelStartDeps,
): Promise<{ observed: EarlyObservation; result?: StartResult; error?: unknown }> {
  let last: RunResult | undefined;
  const capturing: Runner = async (command, args, options) => (last = await runner(command, args, options));
  const started = Date.now();
  const failed = (): EarlyObservation => {
    const r = last as RunResult | undefined;
    return {
      kind: 'start-failed',
      code: r?.code ?? null,
      signal: r?.signal ?? null,
      stderr: r?.stderr ?? '',
    };
  };
  try {
    const result = await deps.start(spec, capturing);
    if (!spec.interactive) return { observed: await deps.watch(spec.files), result };
    // An attached console has run its course; one killed by a signal (an abort) at once did not start.
    const early = Date.now() - started <= deps.windowMs;
    return {
      observed: early && (last as RunResult | undefined)?.signal ? failed() : { kind: 'healthy' },
      result,
    };
  } catch (error) {
    if (spec.interactive && Date.now() - started > deps.windowMs) throw error;
    return { observed: failed(), error };
  }
}

/**
 * Start QEMU under the chosen accelerator. TCG starts as before. Under KVM/HVF the first seconds
 * are watched; if the accelerator fails the VM, QEMU is stopped and, unless the user forced the
 * accelerator, the verdict becomes TCG in the cache, `onFallback` is told once and the VM
 * starts again under TCG (the network attachment is reused as is).
 */
export async function startWithAccel(
  spec: Omit<VmSpec, 'accel'>,
  choice: AccelChoice,
  runner: Runner,
  onFallback: (reason: string, recordedIn: string | undefined) => void,
  deps: AccelStartDeps = realDeps,
): Promise<AccelStarted> {
  if (choice.accel === 'tcg')
    return { accel: 'tcg', result: await deps.start({ ...spec, accel: 'tcg' }, runner) };
  const { observed, result, error } = await attempt({ ...spec, accel: choice.accel }, runner, deps);
  const decision = earlyDecision(choice, observed);
  // Not the accelerator's doing: a start that returned stands, one that threw is reported as is.
  if (decision.action === 'keep' || decision.action === 'rethrow') {
    if (result) return { accel: choice.accel, result };
    throw error;
  }
  await deps.stop(spec.files, result?.pid).catch(() => undefined);
  if (decision.action === 'fail') throw new PvmlabError(decision.message);

  let recordedIn: string | undefined;
  if (choice.cache) {
    const { file, key } = choice.cache;
    recordedIn = await deps
      .record(file, spec.arch, {
        accel: 'tcg',
        reason: decision.reason,
        source: 'runtime',
        at: new Date().toISOString(),
        host: key,
      })
      .then(
        () => file,
        () => undefined,
      );
  }
  onFallback(decision.reason, recordedIn);
  const fallback = { reason: decision.reason, ...(recordedIn ? { recordedIn } : {}) };
  return { accel: 'tcg', result: await deps.start({ ...spec, accel: 'tcg' }, runner), fallback };
}
