import { EventEmitter } from 'node:events';
import { watch, type FSWatcher } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { parseVm, type VmDefinition } from '../core/vmdef.js';

/** The file system calls the registry makes (injectable: tests count them). */
export interface RegistryFs {
  readdir(dir: string): Promise<string[]>;
  stat(path: string): Promise<{ mtimeMs: number; size: number; ino: number }>;
  readFile(path: string): Promise<string>;
}

const nodeFs: RegistryFs = {
  readdir: (dir) => readdir(dir),
  stat: (path) => stat(path),
  readFile: (path) => readFile(path, 'utf8'),
};

export interface RegistryOptions {
  /** Directory of VM definitions (`~/.pvmlab/vms`, or `/mnt/host/vms` in the container). */
  dir: string;
  /**
   * Safety-net poll: one stat of the directory, and a listing only when its mtime changed
   * (a rename, create or delete). 9p shares deliver no inotify events; pvmlab writes
   * definitions by rename, so this still sees them.
   */
  pollMs?: number;
  /** Full rescan (a stat of every file): catches in-place edits that no watcher reported. */
  rescanMs?: number;
  /** Coalesce bursts of changes (an editor writes several times) into one reload. */
  debounceMs?: number;
  /** Use fs.watch (default); off, the polls alone find changes. */
  watch?: boolean;
  fs?: RegistryFs;
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
  ino: number;
  /** What was read (undefined: unreadable): a re-read that finds the same text changes nothing. */
  text: string | undefined;
}

/** A definition file: `<name>.json`, not hidden (temporary files of atomic writes are neither). */
const isDefinition = (f: string) => f.endsWith('.json') && !f.startsWith('.');

/**
 * A directory mtime this recent may not be final: a change in the same clock tick as our
 * listing leaves it as it was. Such a listing is done again at the next poll.
 */
const SETTLED_MS = 2000;

/**
 * The machines the stack serves, indexed by MAC and by name, so each request is a map
 * lookup. File-watch events name the files to re-read; a poll of the directory's mtime and
 * a rare full rescan are the safety net, so an idle stack with thousands of definitions
 * costs nothing. An invalid or half-written file is logged and skipped (the previous good
 * version of that machine is dropped).
 */
export class MachineRegistry extends EventEmitter {
  private byMacMap = new Map<string, VmDefinition>();
  private byNameMap = new Map<string, VmDefinition>();
  /** Every TFTP and file request is looked up by client address. */
  private byIpMap = new Map<string, VmDefinition>();
  private files = new Map<string, FileState>();
  private watcher: FSWatcher | undefined;
  private watchedIno: number | undefined;
  private poller: NodeJS.Timeout | undefined;
  private debounce: NodeJS.Timeout | undefined;
  private reloading: Promise<void> | undefined;
  private stopped = false;
  /** Work waiting for the next reload: names a watcher reported, a listing, a full rescan. */
  private dirty = new Set<string>();
  private needListing = false;
  private needFull = false;
  /** The directory as last listed (undefined: list it at the next poll). */
  private dirState: { mtimeMs: number; ino: number } | undefined;
  private lastFull = 0;
  private readonly log: (msg: string) => void;
  private readonly fs: RegistryFs;

  constructor(private readonly options: RegistryOptions) {
    super();
    this.log = options.log ?? (() => undefined);
    this.fs = options.fs ?? nodeFs;
  }

  async start(): Promise<void> {
    this.stopped = false;
    await this.reload();
    const st = await this.fs.stat(this.options.dir).catch(() => undefined);
    this.startWatching(st?.ino, true);
    this.poller = setInterval(() => void this.poll(), this.options.pollMs ?? 2000);
    this.poller.unref();
  }

  stop(): void {
    this.stopped = true;
    this.watcher?.close();
    this.watcher = undefined;
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

  /** Watch the directory (inode `ino`), unless it is watched already. */
  private startWatching(ino: number | undefined, first: boolean): void {
    if (this.options.watch === false || this.watcher || this.stopped) return;
    try {
      this.watchedIno = ino;
      this.watcher = watch(this.options.dir, (_event, file) => {
        // Without a name (some platforms), anything may have changed.
        if (typeof file !== 'string') this.needFull = true;
        else if (isDefinition(file)) this.dirty.add(file);
        else if (file === basename(this.options.dir)) {
          // The directory itself went (its inode may come back with a new one): watch anew.
          this.watcher?.close();
          this.watcher = undefined;
          this.needListing = true;
        } else return; // temporary files of atomic writes: the rename names the definition
        this.schedule();
      });
      this.watcher.on('error', () => {
        // The directory went (or the watch broke): the polls carry on and watch again.
        this.watcher?.close();
        this.watcher = undefined;
        this.dirState = undefined;
      });
    } catch {
      if (first) this.log(`registry: cannot watch ${this.options.dir}; polling only`);
    }
  }

  /** The safety net: one stat of the directory; a listing when it changed, a full rescan rarely. */
  private async poll(): Promise<void> {
    if (Date.now() - this.lastFull >= (this.options.rescanMs ?? 60_000)) {
      this.needFull = true;
      return this.schedule();
    }
    const st = await this.fs.stat(this.options.dir).catch(() => undefined);
    if (this.stopped) return;
    const prev = this.dirState;
    if (this.watcher && (!st || st.ino !== this.watchedIno)) {
      // Removed or replaced: a watch on the old directory reports nothing more.
      this.watcher.close();
      this.watcher = undefined;
    }
    if (st) this.startWatching(st.ino, false);
    if (st && prev && st.mtimeMs === prev.mtimeMs && st.ino === prev.ino) return;
    if (!st && !prev && this.files.size === 0) return; // still missing
    this.needListing = true;
    this.schedule();
  }

  private schedule(): void {
    if (this.stopped) return;
    if (this.debounce) clearTimeout(this.debounce);
    this.debounce = setTimeout(() => void this.run(), this.options.debounceMs ?? 200);
  }

  /** Re-read every file that changed (by mtime, size and inode); emits 'change' when the set of machines changed. */
  async reload(): Promise<void> {
    this.needFull = true;
    return this.run();
  }

  /** One reload at a time; work that arrives during one gets a reload of its own after it. */
  private async run(): Promise<void> {
    while (this.reloading) await this.reloading;
    if (!this.needFull && !this.needListing && this.dirty.size === 0) return;
    this.reloading = this.doReload().finally(() => (this.reloading = undefined));
    return this.reloading;
  }

  private async doReload(): Promise<void> {
    const full = this.needFull;
    const listing = full || this.needListing;
    const dirty = this.dirty;
    this.needFull = false;
    this.needListing = false;
    this.dirty = new Set();
    const dir = this.options.dir;
    let check: Iterable<string>;
    const gone: string[] = [];
    if (listing) {
      // The directory's state before the listing: a change after it shows at the next poll.
      const st = await this.fs.stat(dir).catch(() => undefined);
      let entries: string[];
      try {
        entries = (await this.fs.readdir(dir)).filter(isDefinition);
      } catch (err) {
        this.log(`registry: cannot read ${dir}: ${(err as Error).message}`);
        entries = [];
      }
      this.dirState =
        st && Date.now() - st.mtimeMs > SETTLED_MS ? { mtimeMs: st.mtimeMs, ino: st.ino } : undefined;
      if (full) this.lastFull = Date.now();
      const listed = new Set(entries);
      for (const f of this.files.keys()) if (!listed.has(f)) gone.push(f);
      // A listing without a full rescan stats only names it did not know, and reported ones.
      check = full ? entries : entries.filter((f) => !this.files.has(f) || dirty.has(f));
    } else check = dirty;
    let changed = false;
    for (const f of gone) changed = this.forget(f) || changed;
    for (const f of check) {
      const path = join(dir, f);
      const st = await this.fs.stat(path).catch(() => undefined);
      if (!st) {
        changed = this.forget(f) || changed;
        continue;
      }
      const prev = this.files.get(f);
      const same = prev && prev.mtimeMs === st.mtimeMs && prev.size === st.size && prev.ino === st.ino;
      // A reported file is read again even when it looks the same: a write within one mtime tick.
      if (same && !dirty.has(f)) continue;
      const text = await this.fs.readFile(path).catch(() => undefined);
      const state = { mtimeMs: st.mtimeMs, size: st.size, ino: st.ino, text };
      if (prev && prev.text === text) {
        this.files.set(f, state);
        continue;
      }
      this.files.set(f, state);
      changed = true;
      this.removeFile(f);
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
    if (changed) this.emit('change', this.all());
  }

  /** A file that is gone; true if it was known. */
  private forget(f: string): boolean {
    if (!this.files.delete(f)) return false;
    this.removeFile(f);
    return true;
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
