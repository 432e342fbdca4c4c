import { readdirSync } from 'node:fs';
import { PvmlabError, errorMessage } from '../core/errors.js';
import { removePath } from '../core/fsutil.js';
import { labDirs, vmFiles, type LabDirs } from '../core/paths.js';
import { withLabLock } from '../lab/store.js';
import type { Context } from './context.js';

/**
 * `vm clean`: a VM's files go whatever state they are in. A definition that is corrupt, from a
 * newer pvmlab, a directory, or missing while a disk, seed, log or pid file is left over (kill -9
 * during `vm create`) must not stop the user from removing the VM: cleaning reads no definition.
 * Which files belong to a VM is decided by their names alone, exactly: `web1` never takes
 * `web10.qcow2` or `web1-db.json`.
 */

/** A VM name (a DNS label); `stack_serve`'s files never match it. */
const NAME = '[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?';

/** Per directory: the names of a VM's files, and of the temporary files writing one leaves behind. */
function ownerPatterns(d: LabDirs): { dir: string; re: RegExp }[] {
  const files = (suffixes: string) => [
    new RegExp(`^(${NAME})(?:${suffixes})$`),
    // writeFileAtomic's temp files: `.<file>.<pid>.<n>.tmp` (and any other `.<file>.<...>.tmp`).
    new RegExp(`^\\.(${NAME})(?:${suffixes})\\..*\\.tmp$`),
  ];
  return [
    ...files('\\.json|\\.qcow2|-vars\\.fd|\\.noreboot').map((re) => ({ dir: d.vms, re })),
    ...files('\\.iso|').map((re) => ({ dir: d.cloudInit, re })),
    ...files('\\.log').map((re) => ({ dir: d.logs, re })),
    ...files('\\.pid').map((re) => ({ dir: d.pids, re })),
    ...files('\\.qmp|\\.console').map((re) => ({ dir: d.monitors, re })),
  ];
}

function readdirOrEmpty(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/** Every path under the lab's directories that belongs to a VM, by owner name. */
export function filesByOwner(app: string): Map<string, string[]> {
  const owners = new Map<string, string[]>();
  const listings = new Map<string, string[]>();
  for (const { dir, re } of ownerPatterns(labDirs(app))) {
    let entries = listings.get(dir);
    if (!entries) listings.set(dir, (entries = readdirOrEmpty(dir)));
    for (const entry of entries) {
      const owner = re.exec(entry)?.[1];
      if (owner === undefined) continue;
      const list = owners.get(owner) ?? [];
      const path = `${dir}/${entry}`;
      if (!list.includes(path)) list.push(path);
      owners.set(owner, list);
    }
  }
  return owners;
}

/** The files of one VM that exist now: its known paths and any temp files named after them. */
export function vmOwnedFiles(app: string, name: string): string[] {
  return filesByOwner(app).get(name) ?? [];
}

/** Every VM name that has any file in the lab: definitions readable or not, and orphans. */
export function vmOwners(app: string): string[] {
  return [...filesByOwner(app).keys()].sort();
}

export interface CleanResult {
  /** How the VM was stopped, when it was running. */
  stopped?: string;
  removed: string[];
}

/**
 * Stop the VM if its pid file names its running QEMU (identity checked, so a reused pid is never
 * signalled), detach its network device, and remove every file it owns, under the lab lock so a
 * `vm create` of the same name is never cut in half. Throws when the VM has no file at all.
 */
export async function cleanVmFiles(
  ctx: Context,
  name: string,
  o: { onStep?: (m: string) => void; warn?: (m: string) => void; mustExist?: boolean } = {},
): Promise<CleanResult> {
  const warn = o.warn ?? (() => undefined);
  const files = vmFiles(ctx.app, name);
  if (o.mustExist !== false && vmOwnedFiles(ctx.app, name).length === 0)
    throw new PvmlabError(`VM '${name}' does not exist (no files for it in ${labDirs(ctx.app).vms})`);
  const result: CleanResult = { removed: [] };
  const { vmProcess } = await import('../qemu/process.js');
  // A pid file that cannot be read (a directory in its place) names no process: not running.
  const running = await vmProcess(files.pid, ctx.runner).catch(() => ({ state: 'stopped' as const }));
  if (running.state === 'running') {
    const { stopQemu } = await import('../qemu/lifecycle.js');
    result.stopped = await stopQemu(files, {
      graceMs: 10_000,
      ...(o.onStep ? { onStep: o.onStep } : {}),
    });
  }
  try {
    const { loadLabConfig } = await import('../lab/config.js');
    const { networkDriver } = await import('./network-driver.js');
    await networkDriver(ctx, await loadLabConfig(ctx.app)).detach({ name });
  } catch (err) {
    // Only worth a word if the VM was running: a stopped VM has no device to remove.
    if (result.stopped) warn(`could not remove the VM's network device: ${errorMessage(err)}`);
  }
  await withLabLock(ctx.app, async () => {
    // Listed again under the lock: what a create finished meanwhile goes too, nothing half.
    for (const p of vmOwnedFiles(ctx.app, name)) {
      try {
        await removePath(p);
      } catch (err) {
        throw new PvmlabError(`cannot remove ${p}: ${errorMessage(err)}`);
      }
      result.removed.push(p);
    }
  });
  return result;
}
