import { createConnection, type Socket } from 'node:net';
import { PvmlabError } from '../core/errors.js';

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

interface Pending {
  resolve: (v: Json) => void;
  reject: (e: Error) => void;
}

export interface QmpEvent {
  event: string;
  data?: Json;
}

/**
 * A small QMP client: newline-delimited JSON over a unix socket. Greeting, then
 * `qmp_capabilities`, then commands matched to replies by id; events are kept.
 */
export class QmpClient {
  private buffer = '';
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  readonly events: QmpEvent[] = [];
  private closed = false;

  private constructor(private readonly socket: Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.onData(chunk));
    socket.on('close', () => this.failAll(new PvmlabError('QMP connection closed')));
    socket.on('error', (err) => this.failAll(err));
  }

  static async connect(path: string, timeoutMs = 3000): Promise<QmpClient> {
    const socket = createConnection(path);
    const client = new QmpClient(socket);
    await withTimeout(
      new Promise<void>((resolve, reject) => {
        socket.once('error', reject);
        client.pending.set('greeting', { resolve: () => resolve(), reject });
      }),
      timeoutMs,
      `no QMP greeting on ${path}`,
    ).catch((err: unknown) => {
      socket.destroy();
      throw err instanceof PvmlabError
        ? err
        : new PvmlabError(`cannot connect to QMP socket ${path}: ${String(err)}`);
    });
    await client.execute('qmp_capabilities');
    return client;
  }

  execute(command: string, args?: Record<string, Json>, timeoutMs = 5000): Promise<Json> {
    if (this.closed) return Promise.reject(new PvmlabError('QMP connection closed'));
    const id = String(this.nextId++);
    const msg = JSON.stringify(args ? { execute: command, arguments: args, id } : { execute: command, id });
    const reply = new Promise<Json>((resolve, reject) => this.pending.set(id, { resolve, reject }));
    this.socket.write(`${msg}\n`);
    return withTimeout(reply, timeoutMs, `QMP command ${command} got no reply`).finally(() =>
      this.pending.delete(id),
    );
  }

  /** `running`, `paused`, `shutdown`, ... from query-status. */
  async status(): Promise<string> {
    const r = await this.execute('query-status');
    return typeof r === 'object' && r !== null && !Array.isArray(r) && typeof r.status === 'string'
      ? r.status
      : 'unknown';
  }

  close(): void {
    this.closed = true;
    this.socket.destroy();
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    let nl: number;
    while ((nl = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, nl).trim();
      this.buffer = this.buffer.slice(nl + 1);
      if (line) this.onMessage(line);
    }
  }

  private onMessage(line: string): void {
    let msg: { [k: string]: Json };
    try {
      msg = JSON.parse(line) as { [k: string]: Json };
    } catch {
      return; // not QMP; ignore
    }
    if ('QMP' in msg) {
      this.pending.get('greeting')?.resolve(msg.QMP ?? null);
      this.pending.delete('greeting');
    } else if (typeof msg.event === 'string') {
      this.events.push({ event: msg.event, data: msg.data ?? null });
    } else if (msg.id !== undefined) {
      const p = this.pending.get(String(msg.id));
      if (!p) return;
      if ('error' in msg) {
        const e = msg.error as { desc?: string } | null;
        p.reject(new PvmlabError(`QMP error: ${e?.desc ?? JSON.stringify(msg.error)}`));
      } else p.resolve(msg.return ?? null);
    }
  }

  private failAll(err: Error): void {
    this.closed = true;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new PvmlabError(message)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}
