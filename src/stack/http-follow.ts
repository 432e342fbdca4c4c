import type { IncomingMessage, ServerResponse } from 'node:http';
import { HttpError } from './http-core.js';
import type { Timeline, TimelineEvent } from './timeline.js';

export interface FollowLimits {
  /** Concurrent `?follow=1` streams per server; more are answered 503. */
  maxFollowers: number;
  /**
   * Bytes a follower may have waiting (queued events plus what its socket has not taken): a
   * client that stops reading is disconnected past this instead of growing the stack's memory.
   */
  maxBufferBytes: number;
}

/** Below this much unsent data the next queued lines are handed to the socket. */
const LOW_WATER = 64 * 1024;

/** One `?follow=1` stream: the history, then the machine's new events, at the client's pace. */
class Follower {
  private history: TimelineEvent[];
  private sent = 0;
  /** New events' lines not yet handed to the socket, from `live[taken]` on. */
  private live: string[] = [];
  private taken = 0;
  private liveBytes = 0;
  closed = false;

  constructor(
    readonly mac: string,
    private readonly res: ServerResponse,
    history: TimelineEvent[],
    private readonly limits: FollowLimits,
    private readonly onDrop: (why: string) => void,
  ) {
    // The history is the timeline's copy, bounded by its per-machine limits: not counted here.
    this.history = history;
    res.on('drain', () => this.pump());
  }

  push(ev: TimelineEvent): void {
    if (this.closed) return;
    const line = `${JSON.stringify(ev)}\n`;
    this.live.push(line);
    this.liveBytes += Buffer.byteLength(line);
    if (this.liveBytes + this.res.writableLength > this.limits.maxBufferBytes) {
      this.onDrop(`more than ${this.limits.maxBufferBytes} bytes waiting`);
      this.closed = true;
      this.live = [];
      this.res.destroy();
      return;
    }
    this.pump();
  }

  /** Hand queued lines to the socket while it keeps up (write() true, little unsent). */
  pump(): void {
    while (!this.closed && this.res.writableLength < LOW_WATER) {
      let line: string;
      if (this.sent < this.history.length) line = `${JSON.stringify(this.history[this.sent++])}\n`;
      else if (this.taken < this.live.length) {
        line = this.live[this.taken++] as string;
        this.liveBytes -= Buffer.byteLength(line);
      } else break;
      if (!this.res.write(line)) break;
    }
    if (this.sent === this.history.length) {
      this.history = [];
      this.sent = 0;
    }
    // Forget what was sent now and then, so the queue does not keep every line for ever.
    if (this.taken > 256 && this.taken * 2 > this.live.length) {
      this.live.splice(0, this.taken);
      this.taken = 0;
    }
  }
}

/**
 * The followers of one server. One listener on the timeline for all of them (added with the
 * first, removed with the last), each with a bounded buffer; at most `maxFollowers` at a time.
 */
export class Followers {
  private readonly all = new Set<Follower>();
  private readonly onEvent = (ev: TimelineEvent) => {
    for (const f of this.all) if (f.mac === ev.mac) f.push(ev);
  };

  constructor(
    private readonly timeline: Timeline,
    private readonly limits: FollowLimits,
    private readonly log: (msg: string) => void,
  ) {}

  get size(): number {
    return this.all.size;
  }

  follow(req: IncomingMessage, res: ServerResponse, mac: string): void {
    if (this.all.size >= this.limits.maxFollowers)
      throw new HttpError(503, `too many timeline followers (${this.limits.maxFollowers}); try again later`, {
        'Retry-After': 5,
      });
    // Newline-delimited JSON: the history, then each new event as it happens.
    res.writeHead(200, { 'Content-Type': 'application/x-ndjson', 'Cache-Control': 'no-store' });
    // Now, not with the first line: a machine without events yet would keep the client waiting.
    res.flushHeaders();
    const f = new Follower(mac, res, this.timeline.list(mac), this.limits, (why) =>
      this.log(`http: disconnected a timeline follower of ${mac} that does not read (${why})`),
    );
    if (this.all.size === 0) this.timeline.on('event', this.onEvent);
    this.all.add(f);
    const done = () => {
      f.closed = true;
      if (!this.all.delete(f)) return;
      if (this.all.size === 0) this.timeline.off('event', this.onEvent);
    };
    req.on('close', done);
    res.on('close', done);
    f.pump();
  }
}
