/**
 * Benchmarks, each reported as a ratio to a baseline measured in the same run, so the
 * numbers mean something on any machine. Run with `npm run bench`; BENCH_ONLY=provision (or a
 * comma-separated list of vm-list, boot-server, provision) runs only those scenarios.
 */
import { spawnSync } from 'node:child_process';
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { serializeVm, VM_SCHEMA_VERSION } from '../src/core/vmdef.js';
import { bootServerScenario } from './boot-server.js';
import { formatProvision, provisionScenario } from './provision.js';
import { stackIdleScenario } from './stack-idle.js';

const BIN = resolve('bin/pvmlab.js');

function timeOnce(args: string[], env: NodeJS.ProcessEnv): number {
  const t = process.hrtime.bigint();
  const r = spawnSync(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const ms = Number(process.hrtime.bigint() - t) / 1e6;
  if (r.status !== 0) throw new Error(`${args.join(' ')} exited ${r.status}: ${r.stderr.toString()}`);
  return ms;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

/** Alternate baseline and subject so drift in machine load hits both alike. */
function compare(baseline: string[], subject: string[], env: NodeJS.ProcessEnv, runs: number) {
  for (let i = 0; i < 3; i++) {
    timeOnce(baseline, env);
    timeOnce(subject, env);
  }
  const b: number[] = [];
  const s: number[] = [];
  for (let i = 0; i < runs; i++) {
    b.push(timeOnce(baseline, env));
    s.push(timeOnce(subject, env));
  }
  return { baselineMs: median(b), subjectMs: median(s), ratio: median(s) / median(b) };
}

async function vmListScenario(runs: number) {
  const home = await mkdtemp(join(tmpdir(), 'pvmlab-bench-'));
  try {
    const vms = join(home, '.pvmlab', 'vms');
    await mkdir(vms, { recursive: true });
    for (let i = 0; i < 100; i++) {
      const name = `vm${String(i).padStart(3, '0')}`;
      const mac = `52:54:00:00:${(i >> 8).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`;
      await writeFile(
        join(vms, `${name}.json`),
        serializeVm({
          name,
          role: 'target',
          arch: 'x86_64',
          ip: `10.${(i >> 8) & 255}.${i & 255}.10`,
          subnet: '10.0.0.0/8',
          mac,
          pxeboot: i % 2 === 0,
          distro: 'ubuntu-24.04',
          ssh_key: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBench pvmlab\n',
          memory: 2048,
          cpus: 2,
          schema_version: VM_SCHEMA_VERSION,
        }),
      );
    }
    const env = { ...process.env, PVMLAB_HOME: home };
    return compare(['-e', '0'], [BIN, 'vm', 'list', '--json'], env, runs);
  } finally {
    await rm(home, { recursive: true, force: true });
  }
}

const SCENARIOS = ['vm-list', 'boot-server', 'stack-idle', 'provision'] as const;
const only = (process.env.BENCH_ONLY ?? '')
  .split(',')
  .map((x) => x.trim())
  .filter(Boolean);
for (const o of only)
  if (!(SCENARIOS as readonly string[]).includes(o))
    throw new Error(`BENCH_ONLY: unknown scenario '${o}' (known: ${SCENARIOS.join(', ')})`);
const wanted = (s: (typeof SCENARIOS)[number]) => only.length === 0 || only.includes(s);

const loadAtStart = loadavg();
const runs = Number(process.env.BENCH_RUNS ?? 21);
const list = wanted('vm-list') ? await vmListScenario(runs) : undefined;
const http = wanted('boot-server')
  ? await bootServerScenario(Number(process.env.BENCH_SECONDS ?? 3))
  : undefined;
// Issue 8 item 14: an idle stack with 10,000 definitions used 17-29 % of a core.
const idle = wanted('stack-idle') ? await stackIdleScenario(10_000, 10) : undefined;
// Last: minutes per run, and root only (it is skipped, and says so, otherwise).
const provisionRuns = Number(process.env.BENCH_PROVISION_RUNS ?? 1);
const provision = wanted('provision')
  ? await provisionScenario(provisionRuns).catch((err: Error) => {
      process.exitCode = 1;
      return { error: err.message };
    })
  : undefined;
const report = {
  date: new Date().toISOString(),
  node: process.version,
  ...(only.length ? { only } : {}),
  runs,
  /** 1, 5 and 15-minute load averages when the run started and ended: the machine is shared. */
  load: { start: loadAtStart, end: loadavg() },
  ...(http ? { bootServer: http } : {}),
  ...(idle ? { stackIdle: { ...idle, goal: 'idleCpuPercent < 1' } } : {}),
  ...(provision ? { provision } : {}),
  scenarios: list
    ? [
        {
          name: 'vm list --json, 100 VMs',
          baseline: 'node -e 0',
          goal: 'ratio <= 1.5',
          ...list,
        },
      ]
    : [],
};
if (http) {
  console.log(`boot server load generator: ${http.generator}`);
  for (const r of http.results) {
    if ('mibPerSec' in r)
      console.log(
        `${String(r.scenario)}: ${(r.mibPerSec as number).toFixed(0)} MiB/s vs nginx ${(r.baselineMibPerSec as number).toFixed(0)} MiB/s = ${(r.ratio as number).toFixed(2)}x`,
      );
    else
      console.log(
        `${String(r.scenario)}: ${(r.rps as number).toFixed(0)} req/s (p50 ${(r.p50 as number).toFixed(2)} ms, p99 ${(r.p99 as number).toFixed(2)} ms) vs nginx ${(r.baselineRps as number).toFixed(0)} req/s = ${(r.ratio as number).toFixed(2)}x`,
      );
  }
}
for (const s of report.scenarios)
  console.log(
    `${s.name}: ${s.subjectMs.toFixed(1)} ms vs ${s.baseline} ${s.baselineMs.toFixed(1)} ms = ${s.ratio.toFixed(2)}x (${s.goal})`,
  );
if (idle)
  console.log(
    `stack idle, ${idle.machines} definitions: ${idle.idleCpuPercent.toFixed(2)} % of a core over ${idle.seconds} s (start-up ${idle.startCpuMs.toFixed(0)} ms CPU; goal < 1 %)`,
  );
if (provision)
  for (const line of 'error' in provision
    ? [`provision: failed: ${provision.error}`]
    : formatProvision(provision))
    console.log(line);
await mkdir('bench/results', { recursive: true });
await writeFile(
  join('bench/results', `${report.date.replace(/[:.]/g, '-')}.json`),
  JSON.stringify(report, null, 2),
);
