import { promises as fs, readFileSync, readdirSync } from 'node:fs';
import { isIP } from 'node:net';
import { join, sep } from 'node:path';
import { PvmlabError, isErrno } from '../core/errors.js';
import { namedFsError, writeFileAtomic } from '../core/fsutil.js';
import { log } from '../core/log.js';
import { labDirs, vmFiles } from '../core/paths.js';
import { withLock } from '../core/lockfile.js';
import { vmClaimingFiles } from './vm-files.js';
import { checkVmForWrite, parseVm, type VmDefinition } from '../core/vmdef.js';

export interface InvalidDefinition {
  file: string;
  error: string;
  /**
   * What the unreadable file still claims, as far as it can be made out: its name (from the
   * file name) and any address or MAC that reads as one. Allocation keeps these taken, so a VM
   * that cannot be read does not lose its address to the next `vm create`.
   */
  claim: AddressClaim;
}

/** A name and the addresses it holds (a VM, or what is left of one). */
export interface AddressClaim {
  name: string;
  ip?: string;
  ipv6?: string;
  mac?: string;
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
    throw new PvmlabError(
      `${namedFsError(err, `cannot list the VM definitions in ${dir}`).message}; it must be a directory (move the file away)`,
      { cause: err },
    );
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
    const claim = (t?: string) => ({ name: f.slice(0, -'.json'.length), ...(t ? guessClaim(t) : {}) });
    if (text instanceof Error) {
      invalid.push({ file: f, error: describeReadError(text, claim().name), claim: claim() });
      continue;
    }
    const r = parseVm(text);
    if (!r.ok) invalid.push({ file: f, error: r.error, claim: claim(text) });
    else if (`${r.value.name}.json` !== f)
      invalid.push({
        file: f,
        error: `name '${r.value.name}' does not match the file name`,
        claim: claim(text),
      });
    else {
      warnNormalized(`${dir}${sep}${f}`, r.normalized);
      vms.push(r.value);
    }
  }
  // Names are ASCII labels: plain comparison (localeCompare would load ICU collation, ~10 ms).
  vms.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return { vms, invalid };
}

/** Why a definition file could not be read, with what to do about it. */
function describeReadError(err: Error, name: string): string {
  if (isErrno(err, 'EISDIR'))
    return `it is a directory, not a definition file; remove the VM with 'pvmlab vm clean ${name}'`;
  if (isErrno(err, 'EACCES')) return 'permission denied (check the owner and mode of the file)';
  return err.message;
}

/** Addresses and MAC from a definition that fails the schema, where they still read as such. */
function guessClaim(text: string): Omit<AddressClaim, 'name'> {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    // Not JSON at all: the addresses may still be there as `"ip": "a.b.c.d"`.
    const field = (k: string) => new RegExp(`"${k}"\\s*:\\s*"([^"]{1,64})"`).exec(text)?.[1];
    data = { ip: field('ip'), ipv6: field('ipv6'), mac: field('mac') };
  }
  if (typeof data !== 'object' || data === null) return {};
  const d = data as Record<string, unknown>;
  const out: Omit<AddressClaim, 'name'> = {};
  if (typeof d.ip === 'string' && isIP(d.ip) === 4) out.ip = d.ip;
  if (typeof d.ipv6 === 'string' && isIP(d.ipv6) === 6) out.ipv6 = d.ipv6;
  if (typeof d.mac === 'string' && /^([0-9a-f]{2}[:-]){5}[0-9a-f]{2}$/i.test(d.mac))
    out.mac = d.mac.toLowerCase().replace(/-/g, ':');
  return out;
}

export async function loadVm(app: string, name: string): Promise<VmDefinition> {
  const path = vmFiles(app, name).definition;
  let text: string;
  try {
    text = await fs.readFile(path, 'utf8');
  } catch (err) {
    if (isErrno(err, 'ENOENT')) throw new PvmlabError(`VM '${name}' does not exist (no ${path})`);
    throw new PvmlabError(
      `cannot read the definition of VM '${name}' (${path}): ${describeReadError(err as Error, name)}`,
      {
        cause: err,
      },
    );
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

/**
 * Every file of VM `name` that takes its name, whatever state it is in: its definition (readable
 * or not), disk, firmware vars, seed, pid and sockets, and the temp files of an interrupted write.
 */
/** What the existing VMs hold: the readable ones, what unreadable files still claim, the name's files. */
export async function labState(app: string, name: string) {
  const { vms, invalid } = await listVms(app);
  return { vms, others: invalid.map((i) => i.claim), paths: await vmPaths(app, name) };
}

export async function vmPaths(app: string, name: string): Promise<string[]> {
  return vmClaimingFiles(app, name);
}

/** Write a definition, refused (before anything is written) if it would not be read back. */
export async function saveVm(app: string, vm: VmDefinition): Promise<void> {
  const path = vmFiles(app, vm.name).definition;
  const r = checkVmForWrite(vm);
  if (!r.ok) throw new PvmlabError(`refusing to write ${path}: ${r.error}`);
  await fs.mkdir(labDirs(app).vms, { recursive: true });
  await writeFileAtomic(path, r.value);
}

/** Serialise commands that read-then-write lab state (create, clean): `locks/state.lock`, src/core/lockfile.ts. */
export function withLabLock<T>(app: string, fn: () => Promise<T>, operation = 'lab-state'): Promise<T> {
  return withLock(join(labDirs(app).locks, 'state.lock'), fn, { operation, what: 'the lab state' });
}
