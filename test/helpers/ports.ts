import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

/** A TCP port on loopback that was free a moment ago (the kernel picked it). */
export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}
