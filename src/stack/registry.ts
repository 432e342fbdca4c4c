import { EventEmitter } from 'node:events';
import { watch, type FSWatcher } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { parseVm, type VmDefinition } from '../core/vmdef.js';

export interface RegistryOptions {
  /** Directory of VM definitions (`~/.pvmlab/vms`, or `/mnt/host/vms` in the container). */
  dir: string;
  /** Poll interval: 9p shares deliver no inotify events, so polling is the backstop. */
  pollMs?: number;
  /** Coalesce bursts of changes (an editor writes several times) into one reload. */
  debounceMs?: number;
  log?: (msg: string) => void;
}

/** Lower-case colon form, or undefined for anything that is not a MAC. */
export function normalizeMacKey(mac: string): string | undefined {
  const m =
    /^([0-9a-f]{2})[:-]?([0-9a-f]{2})[:-]?([0-9a-f]{2})[:-]?([0-9a-f]{2})[:-]?([0-9a-f]{2})[:-]?([0-9a-f]{2})$/i.exec(
      mac.trim(),
    );
  return m ? m.slice(1).join(':').toLowerCase() : undefined;
}

interface FileState {
  mtimeMs: number;
  size: number;
}

/**
 * The machines the stack serves, indexed by MAC and by name, so each request is a map
 * lookup. Reloaded on file-watch events and by polling; an invalid or half-written file
 * is logged and skipped (the previous good version of that machine is dropped).
 */
export class MachineRegistry extends EventEmitter {
  private byMacMap = new Map<string, VmDefinition>();
  private byNameMap = new Map<string, VmDefinition>();
  /** Every TFTP and file request is looked up by client address. */
  private byIpMap = new Map<string, VmDefinition>();
  private files = new Map<string, FileState>();
  private watcher: FSWatcher | undefined;
  private poller: NodeJS.Timeout | undefined;
  private debounce: NodeJS.Timeout | undefined;
  private reloading: Promise<void> | undefined;
  private readonly log: (msg: string) => void;

  constructor(private readonly options: RegistryOptions) {
    super();
    this.log = options.log ?? (() => undefined);
  }

  async start(): Promise<void> {
    await this.reload();
    try {
      this.watcher = watch(this.options.dir, () => this.schedule());
      this.watcher.on('error', () => undefined); // polling still runs
    } catch {
      this.log(`registry: cannot watch ${this.options.dir}; polling only`);
    }
    this.poller = setInterval(() => this.schedule(), this.options.pollMs ?? 2000);
    this.poller.unref();
  }

  stop(): void {
    this.watcher?.close();
    if (this.poller) clearInterval(this.poller);
    if (this.debounce) clearTimeout(this.debounce);
  }

  byMac(mac: string): VmDefinition | undefined {
    const key = normalizeMacKey(mac);
    return key ? this.byMacMap.get(key) : undefined;
  }

  byName(name: string): VmDefinition | undefined {
    return this.byNameMap.get(name);
  }

  /** The machine reserved this IPv4/IPv6 address (TFTP and HTTP requests carry only an address). */
  byIp(ip: string): VmDefinition | undefined {
    return this.byIpMap.get(ip);
  }

  all(): VmDefinition[] {
    return [...this.byNameMap.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  get size(): number {
    return this.byNameMap.size;
  }

  private schedule(): void {
    if (this.debounce) clearTimeout(this.debounce);
    this.debounce = setTimeout(() => void this.reload(), this.options.debounceMs ?? 200);
  }

  /** Re-read changed files only (by mtime and size); emits 'change' when the set of machines changed. */
  async reload(): Promise<void> {
    if (this.reloading) return this.reloading;
    this.reloading = this.doReload().finally(() => (this.reloading = undefined));
    return this.reloading;
  }

  private async doReload(): Promise<void> {
    let entries: string[];
    try {
      entries = (await readdir(this.options.dir)).filter((f) => f.endsWith('.json') && !f.startsWith('.'));
    } catch (err) {
      this.log(`registry: cannot read ${this.options.dir}: ${(err as Error).message}`);
      entries = [];
    }
    let changed = false;
    const seen = new Set<string>();
    for (const f of entries) {
      seen.add(f);
      const path = join(this.options.dir, f);
      const st = await stat(path).catch(() => undefined);
      if (!st) continue;
      const prev = this.files.get(f);
      if (prev && prev.mtimeMs === st.mtimeMs && prev.size === st.size) continue;
      this.files.set(f, { mtimeMs: st.mtimeMs, size: st.size });
      changed = true;
      this.removeFile(f);
      const text = await readFile(path, 'utf8').catch(() => undefined);
      const r = text === undefined ? { ok: false as const, error: 'unreadable' } : parseVm(text);
      if (!r.ok) {
        this.log(`registry: skipping ${f}: ${r.error}`);
        continue;
      }
      if (`${r.value.name}.json` !== f) {
        this.log(`registry: skipping ${f}: name '${r.value.name}' does not match the file name`);
        continue;
      }
      // Once per version of the file: it is re-read only when it changes.
      if (r.normalized.length) this.log(`registry: ${f}: ${r.normalized.join('; ')}`);
      this.add(r.value);
    }
    for (const f of [...this.files.keys()]) {
      if (seen.has(f)) continue;
      this.files.delete(f);
      this.removeFile(f);
      changed = true;
    }
    if (changed) this.emit('change', this.all());
  }

  private add(vm: VmDefinition): void {
    this.byNameMap.set(vm.name, vm);
    if (vm.ip) this.byIpMap.set(vm.ip, vm);
    if (vm.ipv6) this.byIpMap.set(vm.ipv6, vm);
    const key = vm.mac ? normalizeMacKey(vm.mac) : undefined;
    if (key) {
      const other = this.byMacMap.get(key);
      if (other && other.name !== vm.name)
        this.log(`registry: MAC ${key} of '${vm.name}' is also used by '${other.name}'`);
      this.byMacMap.set(key, vm);
    }
  }

  private removeFile(file: string): void {
    const name = file.slice(0, -'.json'.length);
    const vm = this.byNameMap.get(name);
    if (!vm) return;
    this.byNameMap.delete(name);
    for (const a of [vm.ip, vm.ipv6]) if (a && this.byIpMap.get(a) === vm) this.byIpMap.delete(a);
    const key = vm.mac ? normalizeMacKey(vm.mac) : undefined;
    if (key && this.byMacMap.get(key)?.name === name) {
      this.byMacMap.delete(key);
      // A machine that shared the MAC (logged as a duplicate) is served by it again.
      for (const other of this.byNameMap.values())
        if (other.mac && normalizeMacKey(other.mac) === key) {
          this.byMacMap.set(key, other);
          break;
        }
    }
  }
}
