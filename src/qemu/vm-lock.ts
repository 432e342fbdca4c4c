import { join } from 'node:path';
import { labDirs } from '../core/paths.js';
import { acquireLock, withLock, type HeldLock, type LockHolder } from '../core/lockfile.js';

export { formatHolder, holderGone, parseHolder, processStartTime } from '../core/lockfile.js';

/**
 * One VM's start/stop lock: `locks/vm-<name>.lock` (src/core/lockfile.ts). Starts, stops and cleans
 * of one VM run one at a time, so a losing start never undoes what the winner made (its TAP, its
 * QMP socket). Not the lab lock: a start holds this one for seconds and must not hold up
 * `vm create` of other VMs.
 */
export type VmLockHolder = LockHolder & { operation: string };

export interface VmLockOptions {
  timeoutMs?: number;
  /** Called once when the lock is busy, with its holder, before waiting. */
  onWait?: (holder: VmLockHolder) => void;
}

export type VmLock = HeldLock;

export function vmLockPath(app: string, name: string): string {
  return join(labDirs(app).locks, `vm-${name}.lock`);
}

function lockOptions(name: string, operation: string, options: VmLockOptions) {
  const { onWait } = options;
  return {
    timeoutMs: options.timeoutMs ?? 300_000,
    operation,
    what: `VM '${name}'`,
    command: (op: string) => `pvmlab vm ${op}`,
    ...(onWait ? { onWait: (h: LockHolder) => onWait({ ...h, operation: h.operation ?? '?' }) } : {}),
  };
}

export function acquireVmLock(
  app: string,
  name: string,
  operation: string,
  options: VmLockOptions = {},
): Promise<VmLock> {
  return acquireLock(vmLockPath(app, name), lockOptions(name, operation, options));
}

export function withVmLock<T>(
  app: string,
  name: string,
  operation: string,
  fn: () => Promise<T>,
  options: VmLockOptions = {},
): Promise<T> {
  return withLock(vmLockPath(app, name), fn, lockOptions(name, operation, options));
}
