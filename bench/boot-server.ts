/**
 * Boot server scenario: requests/s and latency of /ipxe?mac= and /config/<mac> with 10,
 * 1,000 and 10,000 VM definitions, and the throughput of a 200 MB image, each against
 * nginx (Debian's) serving a file in the same run.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmod, mkdir, mkdtemp, rm, writeFile, open } from 'node:fs/promises';
import { Agent, get } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { which } from '../src/core/exec.js';
import { serializeVm, VM_SCHEMA_VERSION } from '../src/core/vmdef.js';

interface LoadResult {
  rps: number;
  p50: number;
  p99: number;
  requests: number;
}

/** Milliseconds from wrk's latency notation (`812.00us`, `1.23ms`, `2.01s`). */
export function wrkMs(text: string): number {
  const m = /^([\d.]+)(us|ms|s)$/.exec(text);
  if (!m) throw new Error(`unexpected wrk latency '${text}'`);
  const v = Number(m[1]);
  return m[2] === 'us' ? v / 1000 : m[2] === 's' ? v * 1000 : v;
}

/** Parse `wrk --latency` output. */
export function parseWrk(out: string): LoadResult {
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(out);
  const total = /(\d+) requests in/.exec(out);
  const p50 = /^\s*50%\s+(\S+)/m.exec(out);
  const p99 = /^\s*99%\s+(\S+)/m.exec(out);
  if (!rps || !total || !p50 || !p99) throw new Error(`cannot read wrk's output:\n${out}`);
  if (/Non-2xx or 3xx responses/.test(out)) throw new Error(`wrk saw error responses:\n${out}`);
  return {
    rps: Number(rps[1]),
    requests: Number(total[1]),
    p50: wrkMs(p50[1] as string),
    p99: wrkMs(p99[1] as string),
  };
}

/** The same load from wrk (C, two threads): a generator that is not the bottleneck. */
async function loadWrk(port: number, paths: string[], ms: number, concurrency = 16): Promise<LoadResult> {
  const dir = await mkdtemp(join(tmpdir(), 'pvmlab-bench-wrk-'));
  try {
    const script = join(dir, 'paths.lua');
    await writeFile(
      script,
      `local paths = {${paths.map((p) => JSON.stringify(p)).join(',')}}\nlocal i = 0\nrequest = function()\n  i = i % #paths + 1\n  return wrk.format(nil, paths[i])\nend\n`,
    );
    const args = [
      '-t2',
      `-c${concurrency}`,
      `-d${Math.max(1, Math.round(ms / 1000))}s`,
      '--latency',
      '-s',
      script,
    ];
    const out = await new Promise<string>((res, rej) => {
      const child = spawn('wrk', [...args, `http://127.0.0.1:${port}`], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      let text = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => (text += d));
      child.once('error', rej);
      child.once('exit', (code) => (code === 0 ? res(text) : rej(new Error(`wrk exited ${code}`))));
    });
    return parseWrk(out);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))] ?? 0;
}

/** `concurrency` keep-alive clients for `ms` milliseconds; paths cycle through `paths`. */
async function loadNode(port: number, paths: string[], ms: number, concurrency = 16): Promise<LoadResult> {
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency });
  const lat: number[] = [];
  const end = Date.now() + ms;
  let i = 0;
  const worker = async () => {
    while (Date.now() < end) {
      const path = paths[i++ % paths.length] as string;
      const t = process.hrtime.bigint();
      await new Promise<void>((res, rej) => {
        get({ host: '127.0.0.1', port, path, agent }, (r) => {
          r.resume();
          r.on('end', () => (r.statusCode === 200 ? res() : rej(new Error(`${path}: HTTP ${r.statusCode}`))));
        }).on('error', rej);
      });
      lat.push(Number(process.hrtime.bigint() - t) / 1e6);
    }
  };
  const t0 = Date.now();
  await Promise.all(Array.from({ length: concurrency }, worker));
  const secs = (Date.now() - t0) / 1000;
  agent.destroy();
  lat.sort((a, b) => a - b);
  return { rps: lat.length / secs, p50: pct(lat, 50), p99: pct(lat, 99), requests: lat.length };
}

async function throughput(port: number, path: string, runs = 3): Promise<number> {
  const rates: number[] = [];
  for (let r = 0; r < runs; r++) {
    const t = process.hrtime.bigint();
    const bytes = await new Promise<number>((res, rej) => {
      get({ host: '127.0.0.1', port, path }, (resp) => {
        let n = 0;
        resp.on('data', (c: Buffer) => (n += c.length));
        resp.on('end', () => res(n));
      }).on('error', rej);
    });
    rates.push(bytes / 2 ** 20 / (Number(process.hrtime.bigint() - t) / 1e9));
  }
  return rates.sort((a, b) => a - b)[Math.floor(runs / 2)] as number;
}

function startProcess(cmd: string, args: string[]): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((res, rej) => {
    child.stdout?.once('data', (d: Buffer) => res({ child, port: Number(d.toString().trim()) }));
    child.once('exit', (c) => rej(new Error(`${cmd} exited ${c}`)));
  });
}

async function startNginx(root: string, dir: string): Promise<{ child: ChildProcess; port: number }> {
  const port = 20000 + Math.floor(Math.random() * 20000);
  const conf = join(dir, 'nginx.conf');
  await writeFile(
    conf,
    `worker_processes 1; daemon off; pid ${dir}/nginx.pid; error_log ${dir}/error.log;
events { worker_connections 1024; }
http { access_log off; sendfile on; tcp_nopush on; keepalive_requests 100000;
  client_body_temp_path ${dir}/t1; proxy_temp_path ${dir}/t2; fastcgi_temp_path ${dir}/t3; uwsgi_temp_path ${dir}/t4; scgi_temp_path ${dir}/t5;
  server { listen 127.0.0.1:${port}; root ${root}; } }
`,
  );
  const child = spawn('nginx', ['-c', conf, '-p', dir], { stdio: 'inherit' });
  await new Promise((r) => setTimeout(r, 500));
  if (child.exitCode !== null) throw new Error('nginx did not start (is nginx-light installed?)');
  return { child, port };
}

export async function bootServerScenario(seconds: number) {
  // wrk when installed (install-deps.sh --test): a single Node client saturates before the servers do.
  const generator = process.env.BENCH_GENERATOR ?? (which('wrk') ? 'wrk' : 'node');
  const load = generator === 'wrk' ? loadWrk : loadNode;
  const dir = await mkdtemp(join(tmpdir(), 'pvmlab-bench-http-'));
  await chmod(dir, 0o755); // nginx's workers run unprivileged and must read the files
  const results: Record<string, unknown>[] = [];
  const images = join(dir, 'images');
  await mkdir(join(images, 'bench', 'x86_64'), { recursive: true });
  // The small file nginx serves as the request-rate baseline: about the size of an iPXE script.
  await writeFile(join(images, 'small.txt'), 'x'.repeat(400));
  const big = join(images, 'bench', 'x86_64', 'rootfs.img');
  const fh = await open(big, 'w');
  await fh.write(Buffer.alloc(2 ** 20, 7), 0, 2 ** 20, 200 * 2 ** 20 - 2 ** 20); // 200 MB, sparse
  await fh.close();
  const nginx = await startNginx(images, dir);
  try {
    // Each measurement follows a 1 s warm-up (JIT, connection set-up) whose numbers are dropped.
    const measure = async (port: number, paths: string[]) => {
      await load(port, paths, 1000);
      return load(port, paths, seconds * 1000);
    };
    const baseline = await measure(nginx.port, ['/small.txt']);
    for (const n of [10, 1000, 10000]) {
      const vms = join(dir, `vms-${n}`);
      await mkdir(vms);
      const macs: string[] = [];
      for (let i = 0; i < n; i++) {
        const mac = `52:54:00:${((i >> 16) & 255).toString(16).padStart(2, '0')}:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`;
        macs.push(mac);
        await writeFile(
          join(vms, `vm${i}.json`),
          serializeVm({
            name: `vm${i}`,
            role: 'target',
            arch: 'x86_64',
            mac,
            pxeboot: true,
            distro: 'bench',
            kernel: 'vmlinuz',
            schema_version: VM_SCHEMA_VERSION,
          }),
        );
      }
      const server = await startProcess(process.execPath, [
        resolve('dist/bench/boot-server-child.js'),
        vms,
        images,
        await mkdtemp(join(dir, 'state-')),
      ]);
      try {
        for (const [name, paths] of [
          ['/ipxe?mac=', macs.slice(0, 500).map((m) => `/ipxe?mac=${m}`)],
          ['/config/<mac>', macs.slice(0, 500).map((m) => `/config/${m}`)],
        ] as const) {
          const r = await measure(server.port, [...paths]);
          results.push({
            scenario: `boot server ${name}, ${n} VMs`,
            ...r,
            baselineRps: baseline.rps,
            ratio: r.rps / baseline.rps,
          });
        }
        if (n === 10) {
          const ours = await throughput(server.port, '/images/bench/x86_64/rootfs.img');
          const theirs = await throughput(nginx.port, '/bench/x86_64/rootfs.img');
          results.push({
            scenario: 'boot server 200 MB image',
            mibPerSec: ours,
            baselineMibPerSec: theirs,
            ratio: ours / theirs,
          });
        }
      } finally {
        server.child.kill();
      }
    }
    return { generator, baseline: { name: 'nginx, 400-byte static file', ...baseline }, results };
  } finally {
    nginx.child.kill();
    await rm(dir, { recursive: true, force: true });
  }
}
