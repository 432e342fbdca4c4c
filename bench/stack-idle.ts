/**
 * The idle stack with many definitions (issue 8, item 14): CPU used to start serving N
 * machines, then CPU used over `seconds` of doing nothing. HTTP only (no dnsmasq) on
 * loopback, so it runs anywhere; the definitions are what `vm create` writes.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serializeVm, VM_SCHEMA_VERSION } from '../src/core/vmdef.js';
import { startStack } from '../src/stack/serve.js';

export interface StackIdleResult {
  machines: number;
  seconds: number;
  /** CPU (user + system) from startStack() until it resolved, in ms. */
  startCpuMs: number;
  /** CPU over the idle period as a share of one core, in percent. */
  idleCpuPercent: number;
}

const cpuMs = (u: NodeJS.CpuUsage) => (u.user + u.system) / 1000;

export async function stackIdleScenario(machines: number, seconds: number): Promise<StackIdleResult> {
  const home = await mkdtemp(join(tmpdir(), 'pvmlab-bench-idle-'));
  try {
    const vms = join(home, 'vms');
    await mkdir(vms, { recursive: true });
    for (let i = 0; i < machines; i++) {
      const name = `vm${String(i).padStart(5, '0')}`;
      const hex = (n: number) => n.toString(16).padStart(2, '0');
      await writeFile(
        join(vms, `${name}.json`),
        serializeVm({
          name,
          role: 'target',
          arch: 'x86_64',
          ip: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`,
          subnet: '10.0.0.0/8',
          mac: `52:54:00:${hex((i >> 16) & 255)}:${hex((i >> 8) & 255)}:${hex(i & 255)}`,
          pxeboot: true,
          distro: 'ubuntu-24.04',
          memory: 2048,
          cpus: 2,
          schema_version: VM_SCHEMA_VERSION,
        }),
      );
    }
    const start = process.cpuUsage();
    const stack = await startStack({
      iface: 'lo',
      address: '127.0.0.1',
      rangeStart: '127.0.0.100',
      rangeEnd: '127.0.0.200',
      vmsDir: vms,
      imagesDir: join(home, 'images'),
      initrdsDir: join(home, 'initrds'),
      stateDir: join(home, 'stack'),
      ipxeDirs: [],
      httpPort: 0,
      dnsmasq: false,
      log: () => undefined,
    });
    const startCpuMs = cpuMs(process.cpuUsage(start));
    try {
      if (stack.registry.size !== machines)
        throw new Error(`the stack serves ${stack.registry.size} of ${machines} machines`);
      // Let anything start-up scheduled settle before measuring.
      await new Promise((r) => setTimeout(r, 1000));
      const idle = process.cpuUsage();
      await new Promise((r) => setTimeout(r, seconds * 1000));
      const idleCpuPercent = (cpuMs(process.cpuUsage(idle)) / (seconds * 1000)) * 100;
      return { machines, seconds, startCpuMs, idleCpuPercent };
    } finally {
      await stack.close();
    }
  } finally {
    await rm(home, { recursive: true, force: true });
  }
}

// `node dist/bench/stack-idle.js [machines] [seconds]` runs it alone.
if (process.argv[1]?.endsWith('stack-idle.js')) {
  const r = await stackIdleScenario(Number(process.argv[2] ?? 10_000), Number(process.argv[3] ?? 10));
  console.log(JSON.stringify(r));
}
