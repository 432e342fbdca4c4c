/**
 * The boot server as `stack serve` wires it (registry, timeline file in a state directory, HTTP),
 * without dnsmasq, on loopback, in a process of its own: the fault suite measures its descriptors
 * and memory, kills it and starts it again.
 *
 * node faults-http-server.js <root> [json options]; prints {"url", "pid"} once listening.
 * <root> holds vms/, images/, initrds/ and state/ (timeline.jsonl).
 */
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { createBootServer, type BootServerOptions } from '../../src/stack/http.js';
import { MachineRegistry } from '../../src/stack/registry.js';
import { Timeline, type TimelineOptions } from '../../src/stack/timeline.js';

type Options = Pick<BootServerOptions, 'maxFollowers' | 'maxFollowerBufferBytes' | 'eventRate'> & {
  timeline?: Omit<TimelineOptions, 'file' | 'log' | 'now'>;
};

const root = process.argv[2];
if (!root) {
  process.stderr.write('usage: faults-http-server <root> [json options]\n');
  process.exit(2);
}
const opts = JSON.parse(process.argv[3] ?? '{}') as Options;
const log = (m: string) => process.stderr.write(`${m}\n`);
const registry = new MachineRegistry({ dir: join(root, 'vms'), pollMs: 60_000, log });
const timeline = new Timeline({ file: join(root, 'state', 'timeline.jsonl'), log, ...opts.timeline });
await registry.start();
const server = createBootServer({
  machines: registry,
  timeline,
  imagesDir: join(root, 'images'),
  initrdsDir: join(root, 'initrds'),
  vmsDir: join(root, 'vms'),
  log,
  ...(opts.maxFollowers !== undefined ? { maxFollowers: opts.maxFollowers } : {}),
  ...(opts.maxFollowerBufferBytes !== undefined
    ? { maxFollowerBufferBytes: opts.maxFollowerBufferBytes }
    : {}),
  ...(opts.eventRate ? { eventRate: opts.eventRate } : {}),
});
server.listen(0, '127.0.0.1', () => {
  const port = (server.address() as AddressInfo).port;
  process.stdout.write(`${JSON.stringify({ url: `http://127.0.0.1:${port}`, pid: process.pid })}\n`);
});
// SIGUSR2: collect garbage (the test starts node with --expose-gc) and print what is live, so a
// leak is told from memory the allocator has not given back yet (RSS).
process.on('SIGUSR2', () => {
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  gc?.();
  const m = process.memoryUsage();
  process.stdout.write(
    `${JSON.stringify({ memory: { heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers, collected: gc !== undefined } })}\n`,
  );
});
process.on('SIGTERM', () => {
  registry.stop();
  server.closeAllConnections();
  server.close(() => {
    timeline.close();
    process.exit(0);
  });
});
