import type { IncomingMessage, ServerResponse } from 'node:http';
import { safeText } from '../core/safe-text.js';

/** What one access-log line says about a request. */
export interface AccessRecord {
  client: string;
  method: string;
  url: string;
  status: number;
  /** Bytes sent for this answer, headers included (as Apache's %O). */
  bytes: number | undefined;
  ms: number;
  /** False when the client went away before the answer was complete (a cut download, a follower leaving). */
  complete: boolean;
}

/** Longest request target shown: a line stays a line. */
export const ACCESS_URL_MAX = 256;

/** `http: 10.0.0.5 GET /ipxe?mac=52:54:00:00:00:01 200 612 3ms`, client text escaped. */
export function accessLogLine(r: AccessRecord): string {
  const url = r.url.length > ACCESS_URL_MAX ? `${r.url.slice(0, ACCESS_URL_MAX)}…` : r.url;
  return (
    `http: ${r.client} ${safeText(r.method)} ${safeText(url)} ${r.status} ${r.bytes ?? '-'} ${r.ms}ms` +
    (r.complete ? '' : ' (client left)')
  );
}

/** Write one line once the answer is done (or the connection closed): every request gets one. */
export function watchAccess(
  req: IncomingMessage,
  res: ServerResponse,
  write: (line: string) => void,
  now: () => number = Date.now,
): void {
  const started = now();
  // Read now: a socket the client closed has no address any more.
  const client = (req.socket.remoteAddress ?? '?').replace(/^::ffff:/, '');
  // The socket's count: answers written with writeHead(status, headers) keep no header map.
  const sentBefore = req.socket.bytesWritten;
  res.once('close', () => {
    const sent = req.socket.bytesWritten - sentBefore;
    write(
      accessLogLine({
        client,
        method: req.method ?? '?',
        url: req.url ?? '',
        status: res.statusCode,
        bytes: Number.isInteger(sent) && sent >= 0 ? sent : undefined,
        ms: now() - started,
        complete: res.writableFinished,
      }),
    );
  });
}
