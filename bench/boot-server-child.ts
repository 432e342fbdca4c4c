/** Runs the boot server on loopback for the benchmark, in its own process (its own CPU). */
import { MachineRegistry } from '../src/stack/registry.js';
import { Timeline } from '../src/stack/timeline.js';
import { createBootServer } from '../src/stack/http.js';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';

const [vmsDir, imagesDir, stateDir] = process.argv.slice(2) as [string, string, string];
const registry = new MachineRegistry({ dir: vmsDir, pollMs: 60_000 });
await registry.start();
const server = createBootServer({
  machines: registry,
  // A timeline file, as `stack serve` has: every /ipxe and /config request records an event.
  timeline: new Timeline({ file: join(stateDir, 'timeline.jsonl') }),
  imagesDir,
  initrdsDir: imagesDir,
  vmsDir,
});
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${(server.address() as AddressInfo).port}\n`);
});
