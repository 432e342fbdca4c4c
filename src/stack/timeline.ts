import { appendFileSync, closeSync, openSync, readFileSync, writeSync } from 'node:fs';
import { EventEmitter } from 'node:events';

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
  maxPerMachine?: number;
  now?: () => Date;
}

/** Per-MAC provisioning timelines, kept in memory and (optionally) in a JSONL file. */
export class Timeline extends EventEmitter {
  private readonly events = new Map<string, TimelineEvent[]>();
  /** Latest event per MAC and type: `last()` is asked on every /ipxe request. */
  private readonly latest = new Map<string, Map<string, TimelineEvent>>();
  private readonly max: number;
  private readonly now: () => Date;
  private fd: number | undefined;
  /** Lines not yet written: appended once per event-loop turn, not once per event. */
  private pending: string[] = [];
  private flushScheduled = false;

  constructor(private readonly options: TimelineOptions = {}) {
    super();
    this.max = options.maxPerMachine ?? 1000;
    this.now = options.now ?? (() => new Date());
    if (options.file) this.load(options.file);
  }

  private load(file: string): void {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      return;
    }
    for (const line of text.split('\n')) {
      if (!line) continue;
      try {
        const ev = JSON.parse(line) as TimelineEvent;
        if (typeof ev.mac === 'string' && typeof ev.type === 'string') this.push(ev);
      } catch {
        /* a torn last line after a crash: skip it */
      }
    }
    // Terminate a torn last line, or the next append would be glued to it and lost too.
    if (text && !text.endsWith('\n')) appendFileSync(file, '\n');
  }

  private push(ev: TimelineEvent): void {
    let list = this.events.get(ev.mac);
    if (!list) this.events.set(ev.mac, (list = []));
    list.push(ev);
    if (list.length > this.max) list.splice(0, list.length - this.max);
    let byType = this.latest.get(ev.mac);
    if (!byType) this.latest.set(ev.mac, (byType = new Map()));
    byType.set(ev.type, ev);
  }

  add(
    mac: string,
    type: string,
    source: TimelineEvent['source'],
    detail?: TimelineEvent['detail'],
  ): TimelineEvent {
    const ev: TimelineEvent = { at: this.now().toISOString(), mac: mac.toLowerCase(), type, source };
    if (detail && Object.keys(detail).length) ev.detail = detail;
    this.push(ev);
    if (this.options.file) {
      this.pending.push(`${JSON.stringify(ev)}\n`);
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(() => this.flush());
      }
    }
    this.emit('event', ev);
    return ev;
  }

  /** Write pending events to the file now (one write of whole lines, so a crash tears at most one). */
  flush(): void {
    this.flushScheduled = false;
    if (!this.options.file || this.pending.length === 0) return;
    const data = this.pending.join('');
    this.pending = [];
    this.fd ??= openSync(this.options.file, 'a');
    writeSync(this.fd, data);
  }

  /** Flush and close the file. */
  close(): void {
    this.flush();
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }

  list(mac: string): TimelineEvent[] {
    return [...(this.events.get(mac.toLowerCase()) ?? [])];
  }

  /** The latest event of a type, e.g. `ready` (kept even when older events are trimmed). */
  last(mac: string, type: string): TimelineEvent | undefined {
    return this.latest.get(mac.toLowerCase())?.get(type);
  }

  macs(): string[] {
    return [...this.events.keys()];
  }
}
