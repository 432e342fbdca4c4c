import { promises as fs, readFileSync, readdirSync } from 'node:fs';
import { join, sep } from 'node:path';
import { PvmlabError, isErrno } from '../core/errors.js';
import { writeFileAtomic } from '../core/fsutil.js';
import { log } from '../core/log.js';
import { labDirs, vmFiles } from '../core/paths.js';
import { withLock } from './lock.js';
import { parseVm, serializeVm, type VmDefinition } from '../core/vmdef.js';

export interface InvalidDefinition {
  file: string;
  error: string;
}

export interface VmList {
  vms: VmDefinition[];
  /** Files in vms/ that could not be read as a definition; listed, never fatal. */
  invalid: InvalidDefinition[];
}

/** The VM definitions under `<app>/vms`, sorted by name. */
export async function listVms(app: string): Promise<VmList> {
  const dir = labDirs(app).vms;
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return { vms: [], invalid: [] };
    throw err;
  }
  const files = entries.filter((e) => e.endsWith('.json') && !e.startsWith('.')).sort();
  // Synchronous reads: for a directory of small files they cost a fraction of fs.promises'
  // per-call overhead, and `vm list` is on the start-up path.
  const results = files.map((f) => {
    try {
      return { f, text: readFileSync(`${dir}${sep}${f}`, 'utf8') };
    } catch (err) {
      return { f, text: err as Error };
    }
  });
  const vms: VmDefinition[] = [];
  const invalid: InvalidDefinition[] = [];
  for (const { f, text } of results) {
    if (text instanceof Error) {
      invalid.push({ file: f, error: text.message });
      continue;
    }
    const r = parseVm(text);
    if (!r.ok) invalid.push({ file: f, error: r.error });
    else if (`${r.value.name}.json` !== f)
      invalid.push({ file: f, error: `name '${r.value.name}' does not match the file name` });
    else {
      warnNormalized(`${dir}${sep}${f}`, r.normalized);
      vms.push(r.value);
    }
  }
  // Names are ASCII labels: plain comparison (localeCompare would load ICU collation, ~10 ms).
  vms.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return { vms, invalid };
}

export async function loadVm(app: string, name: string): Promise<VmDefinition> {
  const path = vmFiles(app, name).definition;
  let text: string;
  try {
    text = await fs.readFile(path, 'utf8');
  } catch (err) {
    if (isErrno(err, 'ENOENT')) throw new PvmlabError(`VM '${name}' does not exist (no ${path})`);
    throw err;
  }
  const r = parseVm(text);
  if (!r.ok) throw new PvmlabError(`${path}: ${r.error}`);
  warnNormalized(path, r.normalized);
  return r.value;
}

/** Definition files already warned about in this process: one warning per file per command. */
const warned = new Set<string>();

/**
 * Say what parseVm read differently from the file (a Go pvmlab file's MAC spelling). The file
 * is left as it is: rewriting it is for the commands that change the VM.
 */
function warnNormalized(path: string, normalized: readonly string[]): void {
  if (normalized.length === 0 || warned.has(path)) return;
  warned.add(path);
  log.warn(`${path}: ${normalized.join('; ')} (the file is left as written)`);
}

export async function vmExists(app: string, name: string): Promise<boolean> {
  try {
    await fs.access(vmFiles(app, name).definition);
    return true;
  } catch {
    return false;
  }
}

export async function saveVm(app: string, vm: VmDefinition): Promise<void> {
  await fs.mkdir(labDirs(app).vms, { recursive: true });
  await writeFileAtomic(vmFiles(app, vm.name).definition, serializeVm(vm));
}

export async function deleteVmDefinition(app: string, name: string): Promise<void> {
  await fs.rm(vmFiles(app, name).definition, { force: true });
}

/** Serialise commands that read-then-write lab state (create, clean). */
export function withLabLock<T>(app: string, fn: () => Promise<T>): Promise<T> {
  return withLock(join(labDirs(app).locks, 'state.lock'), fn);
}
