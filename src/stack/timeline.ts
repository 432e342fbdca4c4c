import {
  appendFileSync,
  closeSync,
  fdatasyncSync,
  fstatSync,
  fsyncSync,
  openSync,
  readFileSync,
  readSync,
  renameSync,
  rmSync,
  writeSync,
} from 'node:fs';
import { EventEmitter } from 'node:events';
import { basename, dirname, join } from 'node:path';

/** One step in a machine's provisioning, from DHCP to "ready". */
export interface TimelineEvent {
  /** ISO 8601 with milliseconds. */
  at: string;
  mac: string;
  /** `dhcp.discover`, `tftp.sent`, `http.ipxe`, `http.kernel`, `installer.partition`, `ready`, ... */
  type: string;
  source: 'dhcp' | 'tftp' | 'http' | 'installer' | 'cloud-init' | 'stack';
  detail?: Record<string, string | number | boolean>;
}

export interface TimelineOptions {
  /** Append-only JSON lines file, reloaded at start, so a restarted stack keeps history. */
  file?: string;
  /**
   * Each machine's latest event of the `sticky` types (`ready`: "installed"), rewritten atomically
   * when one changes; read at start before the file. Default: `<file without .jsonl>.state.json`.
   */
  stateFile?: string;
  /** Events kept per machine (default 1000)... */
  maxPerMachine?: number;
  /** ...and at most this many bytes of them, as JSON (default 512 KiB). */
  maxBytesPerMachine?: number;
  /** Event types whose latest event `last()` remembers per machine (default 256). */
  maxTypesPerMachine?: number;
  /** Machines kept (default 4096); the least recently heard of without sticky state go first. */
  maxMachines?: number;
  /** Past this size the file is rewritten with what is kept in memory (default 32 MiB). */
  maxFileBytes?: number;
  /** Events held in memory while the file cannot be written (default 8 MiB); older ones are dropped. */
  maxPendingBytes?: number;
  /** How soon a failed write is tried again (default 1000 ms). */
  retryMs?: number;
  /** Types that are state, not history: never trimmed or evicted (default `ready`). */
  sticky?: string[];
  log?: (msg: string) => void;
  now?: () => Date;
}

/** An event could not be written to the timeline file (it is kept in memory and retried). */
export class TimelineWriteError extends Error {}

/** The state file: the sticky events per machine. */
interface StateFile {
  schema_version: 1;
  machines: Record<string, Record<string, TimelineEvent>>;
}

interface Machine {
  /** events[head..] are the kept ones; the head moves rather than splicing on every event. */
  events: TimelineEvent[];
  sizes: number[];
  head: number;
  bytes: number;
  /** Latest event per type: `last()` is asked on every /ipxe request. */
  latest: Map<string, TimelineEvent>;
  /** When it was last heard of (a counter), for eviction. */
  touched: number;
}

interface Pending {
  data: Buffer;
  /** Bytes of `data` already in the file (a short write on a full disk). */
  done: number;
  /** A sticky event's line: never dropped while the file cannot be written. */
  sticky: boolean;
  waiter?: { resolve: () => void; reject: (err: Error) => void };
}

/** A line longer than this in the file is junk, not an event (a POSTed body is at most 16 KiB). */
const MAX_LINE = 1 << 20;

function isEvent(v: unknown): v is TimelineEvent {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const e = v as Record<string, unknown>;
  return typeof e.mac === 'string' && typeof e.type === 'string';
}

/**
 * Per-MAC provisioning timelines, kept in memory and (optionally) in a JSONL file.
 *
 * Bounded everywhere a client can make it grow: events per machine (count and bytes), types per
 * machine, machines, and the file (compacted past `maxFileBytes`). State a flood must not erase
 * (the latest `ready`: /ipxe's "installed") is never trimmed, is kept by compaction, and is
 * also in a small state file written atomically. Write errors (a full disk, a directory at the
 * path) are logged and retried, never thrown at the caller; `addDurable` says whether its event
 * reached the disk.
 */
export class Timeline extends EventEmitter {
  private readonly machines = new Map<string, Machine>();
  private readonly max: number;
  private readonly maxBytes: number;
  private readonly maxTypes: number;
  private readonly maxMachines: number;
  private readonly maxFileBytes: number;
  private readonly maxPendingBytes: number;
  private readonly retryMs: number;
  private readonly sticky: ReadonlySet<string>;
  private readonly stateFile: string | undefined;
  private readonly log: (msg: string) => void;
  private readonly now: () => Date;
  private fd: number | undefined;
  private pending: Pending[] = [];
  private pendingBytes = 0;
  private flushScheduled = false;
  private retryTimer: NodeJS.Timeout | undefined;
  private stateDirty = false;
  private fileBytes = 0;
  private compactAt: number;
  private clock = 0;
  /** The current write error, logged once until writes succeed again. */
  private writeError: string | undefined;
  private dropped = 0;

  constructor(private readonly options: TimelineOptions = {}) {
    super();
    this.max = options.maxPerMachine ?? 1000;
    this.maxBytes = options.maxBytesPerMachine ?? 512 * 1024;
    this.maxTypes = options.maxTypesPerMachine ?? 256;
    this.maxMachines = options.maxMachines ?? 4096;
    this.maxFileBytes = options.maxFileBytes ?? 32 * 1024 * 1024;
    this.maxPendingBytes = options.maxPendingBytes ?? 8 * 1024 * 1024;
    this.retryMs = options.retryMs ?? 1000;
    this.sticky = new Set(options.sticky ?? ['ready']);
    this.log = options.log ?? ((m) => process.stderr.write(`${m}\n`));
    this.now = options.now ?? (() => new Date());
    this.compactAt = this.maxFileBytes;
    const file = options.file;
    this.stateFile = file
      ? (options.stateFile ?? join(dirname(file), `${basename(file).replace(/\.jsonl$/, '')}.state.json`))
      : undefined;
    if (file) {
      this.loadState();
      this.load(file);
    }
  }

  // ---- memory ---------------------------------------------------------------------------------

  private machine(mac: string): Machine {
    let m = this.machines.get(mac);
    if (!m) {
      m = { events: [], sizes: [], head: 0, bytes: 0, latest: new Map(), touched: 0 };
      this.machines.set(mac, m);
      if (this.machines.size > this.maxMachines) this.evictMachine(m);
    }
    m.touched = ++this.clock;
    return m;
  }

  /** Forget the least recently heard of machine that holds no sticky state (not `keep`). */
  private evictMachine(keep: Machine): void {
    let victim: [string, Machine] | undefined;
    for (const entry of this.machines) {
      const m = entry[1];
      if (m === keep || [...this.sticky].some((t) => m.latest.has(t))) continue;
      if (!victim || m.touched < victim[1].touched) victim = entry;
    }
    if (victim) this.machines.delete(victim[0]);
  }

  /** Remember the latest event of its type (sticky types only if newer: the state file loads first). */
  private remember(m: Machine, ev: TimelineEvent): void {
    const old = m.latest.get(ev.type);
    if (old && this.sticky.has(ev.type) && old.at > ev.at) return;
    m.latest.delete(ev.type);
    m.latest.set(ev.type, ev);
    if (m.latest.size <= this.maxTypes) return;
    // Too many types (a client inventing them): forget the oldest-updated non-sticky one.
    for (const t of m.latest.keys())
      if (!this.sticky.has(t)) {
        m.latest.delete(t);
        return;
      }
  }

  private push(ev: TimelineEvent, size: number): void {
    const m = this.machine(ev.mac);
    m.events.push(ev);
    m.sizes.push(size);
    m.bytes += size;
    while (m.events.length - m.head > this.max || (m.bytes > this.maxBytes && m.events.length - m.head > 1)) {
      m.bytes -= m.sizes[m.head] as number;
      m.head++;
    }
    if (m.head > 1024 && m.head * 2 > m.events.length) {
      m.events.splice(0, m.head);
      m.sizes.splice(0, m.head);
      m.head = 0;
    }
    this.remember(m, ev);
  }

  // ---- loading --------------------------------------------------------------------------------

  private loadState(): void {
    const path = this.stateFile as string;
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFileSync(path, 'utf8'));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
        this.log(
          `timeline: cannot read ${path} (${(err as Error).message}); the timeline file alone says which machines are installed`,
        );
      return;
    }
    const machines = (parsed as Partial<StateFile> | null)?.machines;
    if (typeof machines !== 'object' || machines === null) {
      this.log(`timeline: ignoring ${path}: not a pvmlab timeline state file`);
      return;
    }
    for (const byType of Object.values(machines))
      if (typeof byType === 'object' && byType !== null)
        for (const ev of Object.values(byType as Record<string, unknown>))
          if (isEvent(ev) && this.sticky.has(ev.type)) this.remember(this.machine(ev.mac), ev);
  }

  /** Read the file a chunk at a time: any size loads (the whole-file string failed past 512 MiB). */
  private load(file: string): void {
    let fd: number;
    try {
      fd = openSync(file, 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
        this.log(`timeline: cannot read ${file} (${(err as Error).message}); its history is not loaded`);
      return;
    }
    let bad = 0;
    let size = 0;
    let lastByte = 0x0a;
    let read = false;
    try {
      const st = fstatSync(fd);
      // Only a regular file: a device (/dev/full, /dev/zero) would be read for ever.
      if (!st.isFile()) {
        const code = st.isDirectory() ? 'EISDIR: a directory' : 'not a regular file';
        throw Object.assign(new Error(code), { code: st.isDirectory() ? 'EISDIR' : 'EINVAL' });
      }
      size = st.size;
      const buf = Buffer.allocUnsafe(1 << 20);
      let carry: Buffer[] = [];
      let carryLen = 0;
      const line = (b: Buffer) => {
        if (b.length === 0) return;
        try {
          const ev: unknown = JSON.parse(b.toString('utf8'));
          if (isEvent(ev)) this.push(ev, b.length + 1);
          else bad++;
        } catch {
          bad++; // a torn line after a crash, or junk
        }
      };
      for (;;) {
        const n = readSync(fd, buf, 0, buf.length, null);
        if (n === 0) break;
        read = true;
        lastByte = buf[n - 1] as number;
        let start = 0;
        for (let nl = buf.indexOf(0x0a, 0); nl >= 0 && nl < n; nl = buf.indexOf(0x0a, start)) {
          if (carryLen) {
            if (carryLen + nl - start <= MAX_LINE) line(Buffer.concat([...carry, buf.subarray(start, nl)]));
            else bad++;
            carry = [];
            carryLen = 0;
          } else line(buf.subarray(start, nl));
          start = nl + 1;
        }
        if (start < n) {
          // Part of a line: keep it for the next chunk, unless it is already too long to be one.
          if (carryLen <= MAX_LINE) carry.push(Buffer.from(buf.subarray(start, n)));
          carryLen += n - start;
        }
      }
      if (carryLen) {
        if (carryLen <= MAX_LINE) line(Buffer.concat(carry));
        else bad++;
      }
    } catch (err) {
      this.log(
        `timeline: cannot read ${file} (${(err as Error).message}); ${read ? 'part of ' : ''}its history is not loaded`,
      );
    } finally {
      closeSync(fd);
    }
    if (bad) this.log(`timeline: skipped ${bad} unreadable line(s) of ${file}`);
    this.fileBytes = size;
    // Terminate a torn last line, or the next append would be glued to it and lost too.
    if (size > 0 && lastByte !== 0x0a) {
      try {
        appendFileSync(file, '\n');
        this.fileBytes++;
      } catch (err) {
        this.log(`timeline: cannot repair the last line of ${file}: ${(err as Error).message}`);
      }
    }
    if (this.fileBytes > this.maxFileBytes) this.compact();
  }

  // ---- adding ---------------------------------------------------------------------------------

  private make(mac: string, type: string, source: TimelineEvent['source'], detail?: TimelineEvent['detail']) {
    const ev: TimelineEvent = { at: this.now().toISOString(), mac: mac.toLowerCase(), type, source };
    if (detail && Object.keys(detail).length) ev.detail = detail;
    return ev;
  }

  private record(ev: TimelineEvent, waiter?: Pending['waiter']): void {
    const data = Buffer.from(`${JSON.stringify(ev)}\n`);
    this.push(ev, data.length);
    if (this.options.file) {
      const sticky = this.sticky.has(ev.type);
      this.pending.push({ data, done: 0, sticky, ...(waiter ? { waiter } : {}) });
      this.pendingBytes += data.length;
      if (sticky) this.stateDirty = true;
      if (this.pendingBytes > this.maxPendingBytes) this.dropPending();
      // While writes fail, the retry timer writes; someone waiting for an answer gets an attempt now.
      if (!this.flushScheduled && (!this.retryTimer || waiter)) {
        this.flushScheduled = true;
        setImmediate(() => this.flush());
      }
    } else waiter?.resolve();
    this.emit('event', ev);
  }

  /** Over the pending bound (the file cannot be written): drop the oldest lines nobody waits for. */
  private dropPending(): void {
    const keep: Pending[] = [];
    for (const p of this.pending) {
      if (this.pendingBytes > this.maxPendingBytes && !p.waiter && !p.sticky && p.done === 0) {
        this.pendingBytes -= p.data.length;
        this.dropped++;
      } else keep.push(p);
    }
    this.pending = keep;
  }

  /** Record an event; it reaches the file within the event-loop turn, or when the file can be written again. */
  add(
    mac: string,
    type: string,
    source: TimelineEvent['source'],
    detail?: TimelineEvent['detail'],
  ): TimelineEvent {
    const ev = this.make(mac, type, source, detail);
    this.record(ev);
    return ev;
  }

  /**
   * Record an event and resolve once it is in the file and synced to disk (at once without a
   * file). Rejects with TimelineWriteError if it cannot be written now; it stays in memory (and
   * followers saw it), and is written when the file can be again.
   */
  addDurable(
    mac: string,
    type: string,
    source: TimelineEvent['source'],
    detail?: TimelineEvent['detail'],
  ): Promise<TimelineEvent> {
    const ev = this.make(mac, type, source, detail);
    return new Promise((resolve, reject) => this.record(ev, { resolve: () => resolve(ev), reject }));
  }

  // ---- writing --------------------------------------------------------------------------------

  /**
   * Write pending events to the file now: one write of whole lines, so a crash tears at most one;
   * synced if someone waits for it. Never throws: false = not written (logged, retried later).
   */
  flush(): boolean {
    this.flushScheduled = false;
    const file = this.options.file;
    if (!file) return true;
    if (this.pending.length > 0 && !this.writePending(file)) return false;
    if (this.stateDirty) this.writeState();
    if (this.writeError !== undefined) {
      this.log(
        `timeline: ${file} is written again${this.dropped ? `; ${this.dropped} event(s) could not be kept until then and are missing from it` : ''}`,
      );
      this.writeError = undefined;
      this.dropped = 0;
    }
    if (this.fileBytes > this.compactAt) this.compact();
    return true;
  }

  private writePending(file: string): boolean {
    const batch = this.pending;
    const data = Buffer.concat(batch.map((p) => (p.done ? p.data.subarray(p.done) : p.data)));
    let written = 0;
    try {
      this.fd ??= openSync(file, 'a');
      while (written < data.length) written += writeSync(this.fd, data, written);
      this.fileBytes += written;
      if (batch.some((p) => p.waiter)) fdatasyncSync(this.fd);
    } catch (err) {
      this.fileBytes += written;
      this.failed(file, err as Error, batch, written);
      return false;
    }
    this.pending = [];
    this.pendingBytes = 0;
    for (const p of batch) p.waiter?.resolve();
    return true;
  }

  /** A write failed after `written` bytes of the batch: keep what is not in the file, tell waiters, retry. */
  private failed(file: string, err: Error, batch: Pending[], written: number): void {
    const msg = `cannot write ${file}: ${err.message}`;
    if (this.writeError !== msg)
      this.log(
        `timeline: ${msg}; events are kept in memory and written when it can be (retrying every ${this.retryMs} ms)`,
      );
    this.writeError = msg;
    let left = written;
    const keep: Pending[] = [];
    for (const p of batch) {
      const rest = p.data.length - p.done;
      if (left >= rest) {
        left -= rest;
        this.pendingBytes -= p.data.length;
      } else {
        p.done += left;
        left = 0;
        keep.push(p);
      }
      // Not synced (or not written): not durable. The waiter's client is told so and may resend.
      p.waiter?.reject(new TimelineWriteError(msg));
      delete p.waiter;
    }
    this.pending = keep;
    // Open the path again next time: it may be another file by then (a directory removed, a link
    // changed); appends continue where the last whole byte went.
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
    this.retryTimer ??= setTimeout(() => {
      this.retryTimer = undefined;
      this.flush();
    }, this.retryMs).unref();
  }

  /** Write `data` to a temp file beside `path`, sync it, rename it over `path`. */
  private writeAtomic(path: string, data: string): void {
    const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.tmp`);
    try {
      const fd = openSync(tmp, 'w', 0o644);
      try {
        let off = 0;
        const buf = Buffer.from(data);
        while (off < buf.length) off += writeSync(fd, buf, off);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(tmp, path);
    } catch (err) {
      rmSync(tmp, { force: true });
      throw err;
    }
    try {
      const dfd = openSync(dirname(path), 'r');
      try {
        fsyncSync(dfd);
      } finally {
        closeSync(dfd);
      }
    } catch {
      /* the rename is done; a directory that cannot be synced is the file system's business */
    }
  }

  private writeState(): void {
    const path = this.stateFile as string;
    const state: StateFile = { schema_version: 1, machines: {} };
    for (const [mac, m] of this.machines) {
      const byType: Record<string, TimelineEvent> = {};
      for (const t of this.sticky) {
        const ev = m.latest.get(t);
        if (ev) byType[t] = ev;
      }
      if (Object.keys(byType).length) state.machines[mac] = byType;
    }
    try {
      this.writeAtomic(path, `${JSON.stringify(state)}\n`);
      this.stateDirty = false;
    } catch (err) {
      this.log(`timeline: cannot write ${path} (${(err as Error).message}); retrying with the next event`);
    }
  }

  /** Everything kept in memory, oldest first: each machine's events, and the latest of each type. */
  private kept(): TimelineEvent[] {
    const all: TimelineEvent[] = [];
    for (const m of this.machines.values()) {
      const listed = new Set(m.events.slice(m.head));
      for (const ev of m.latest.values()) if (!listed.has(ev)) all.push(ev);
      for (const ev of listed) all.push(ev);
    }
    // Stable: a machine's events with the same timestamp keep their order.
    return all.sort((a, b) => (a.at < b.at ? -1 : a.at > b.at ? 1 : 0));
  }

  /** Rewrite the file with what is kept in memory (past `maxFileBytes`). */
  private compact(): void {
    const file = this.options.file as string;
    const before = this.fileBytes;
    const text = this.kept()
      .map((ev) => `${JSON.stringify(ev)}\n`)
      .join('');
    const after = Buffer.byteLength(text);
    try {
      this.writeAtomic(file, text);
    } catch (err) {
      this.log(
        `timeline: cannot compact ${file} (${(err as Error).message}); it keeps growing until it can be`,
      );
      this.compactAt = this.fileBytes + this.maxFileBytes;
      return;
    }
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
    this.fileBytes = after;
    // Never less than twice what compaction leaves, or a large lab would compact on every event.
    this.compactAt = Math.max(this.maxFileBytes, 2 * after);
    this.log(
      `timeline: compacted ${file} from ${before} to ${after} bytes (each machine's latest events, and the latest of each type, are kept)`,
    );
    this.stateDirty = true;
    this.writeState();
  }

  /** Flush and close the file. */
  close(): void {
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.flush();
    if (this.pending.length)
      this.log(
        `timeline: ${this.pending.length} event(s) could not be written to ${this.options.file} before closing and are lost (${this.writeError ?? 'unknown error'})`,
      );
    for (const p of this.pending)
      p.waiter?.reject(new TimelineWriteError(this.writeError ?? 'timeline closed'));
    this.pending = [];
    this.pendingBytes = 0;
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }

  // ---- reading --------------------------------------------------------------------------------

  list(mac: string): TimelineEvent[] {
    const m = this.machines.get(mac.toLowerCase());
    return m ? m.events.slice(m.head) : [];
  }

  /** The latest event of a type, e.g. `ready` (kept even when older events are trimmed). */
  last(mac: string, type: string): TimelineEvent | undefined {
    return this.machines.get(mac.toLowerCase())?.latest.get(type);
  }

  macs(): string[] {
    return [...this.machines.keys()];
  }

  /** Whether the file is being written, and what waits in memory: for health reports. */
  status(): { ok: boolean; error?: string; pendingEvents: number; fileBytes: number } {
    return {
      ok: this.writeError === undefined,
      ...(this.writeError !== undefined ? { error: this.writeError } : {}),
      pendingEvents: this.pending.length,
      fileBytes: this.fileBytes,
    };
  }
}
