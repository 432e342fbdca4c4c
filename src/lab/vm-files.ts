import { readdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { labDirs, type LabDirs } from '../core/paths.js';

/**
 * Which files belong to which VM, by name alone: `vm clean` removes a VM's files whatever state
 * they are in, and `vm create` refuses a name that has any. A definition that is corrupt, from a
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

/**
 * The files that take a name for `vm create`: all of a VM's files but its console log (a log
 * left behind is harmless; a start truncates it).
 */
export function vmClaimingFiles(app: string, name: string): string[] {
  const logs = labDirs(app).logs;
  return vmOwnedFiles(app, name)
    .filter((p) => dirname(p) !== logs)
    .sort();
}
