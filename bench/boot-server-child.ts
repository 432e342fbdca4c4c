/** Runs the boot server on loopback for the benchmark, in its own process (its own CPU). */
import { MachineRegistry } from '../src/stack/registry.js';
import { Timeline } from '../src/stack/timeline.js';
import { createBootServer } from '../src/stack/http.js';
import type { AddressInfo } from 'node:net';

const [vmsDir, imagesDir] = process.argv.slice(2) as [string, string];
const registry = new MachineRegistry({ dir: vmsDir, pollMs: 60_000 });
await registry.start();
const server = createBootServer({
  machines: registry,
  timeline: new Timeline(),
  imagesDir,
  initrdsDir: imagesDir,
  vmsDir,
});
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${(server.address() as AddressInfo).port}\n`);
});
