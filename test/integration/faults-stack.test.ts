import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { serializeVm } from '../../src/core/vmdef.js';
import { BIN, runCli, tempHome } from '../helpers/cli.js';
import { createNetns, deleteNetns, waitFor } from '../helpers/netns.js';
import { processesWith } from '../helpers/procs.js';

const BRIDGE = 'dnsmbr0';
const SUBNET = '10.231.0';

interface Health {
  ok: boolean;
  machines: number;
  dnsmasq: { pid: number | null; restarts: number; serving: boolean; error?: string };
}

/**
 * Faults under the stack (issue 8): `stack serve` killed with -9 at random points (before it
 * serves, while it serves, in the middle of a definition change), leaving its dnsmasq; each
 * time the next stack must replace that dnsmasq, hand out the current reservations and say
 * truthfully in /healthz whether dnsmasq serves. And a port held by someone else: health
 * says so, and that process is left alone. Real dnsmasq and busybox udhcpc in a namespace.
 */
describe('faults: the stack killed with -9, its dnsmasq left behind', { timeout: 600_000 }, () => {
  let ns: string;
  let home: string;
  let app: string;
  let cleanup: () => Promise<void>;
  let work: string;
  let stack: ChildProcess | undefined;
  let stackLog = '';
  const conf = () => join(app, 'stack', 'dnsmasq.conf');
  const nsx = (args: string[]) =>
    execFileSync('ip', ['netns', 'exec', ns, ...args], { encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });
  const ok = async (args: string[]) => {
    const r = await runCli(args, { home, netns: ns });
    assert.equal(r.code, 0, `pvmlab ${args.join(' ')}:\n${r.stderr}`);
  };
  /** /healthz from inside the namespace, or undefined while nothing answers. */
  const health = (): Health | undefined => {
    try {
      return JSON.parse(
        nsx([
          process.execPath,
          '-e',
          `fetch('http://${SUBNET}.1/healthz', { signal: AbortSignal.timeout(2000) }).then(async r => process.stdout.write(await r.text()))`,
        ]),
      ) as Health;
    } catch {
      return undefined;
    }
  };
  /** The address busybox udhcpc is offered on the client veth with this MAC. */
  const dhcp = (mac: string): string | undefined => {
    nsx(['ip', 'link', 'set', 'dc0', 'down']);
    nsx(['ip', 'link', 'set', 'dc0', 'address', mac]);
    nsx(['ip', 'link', 'set', 'dc0', 'up']);
    const script = join(work, 'udhcpc.sh');
    const out = join(work, 'lease');
    rmSync(out, { force: true });
    writeFileSync(script, `#!/bin/sh\n[ "$1" = bound ] && echo "$ip" > ${out}\nexit 0\n`, { mode: 0o755 });
    try {
      nsx(['busybox', 'udhcpc', '-i', 'dc0', '-n', '-q', '-f', '-t', '6', '-T', '1', '-s', script]);
    } catch {
      return undefined;
    }
    return existsSync(out) ? readFileSync(out, 'utf8').trim() : undefined;
  };
  const mac = (i: number) => `52:54:00:dd:00:${i.toString(16).padStart(2, '0')}`;
  const ip = (i: number) => `${SUBNET}.${10 + i}`;
  const define = (i: number) =>
    writeFileSync(
      join(app, 'vms', `m${i}.json`),
      serializeVm({ name: `m${i}`, role: 'target', arch: 'x86_64', ip: ip(i), mac: mac(i), pxeboot: true }),
    );
  const startServe = () => {
    stackLog = '';
    stack = spawn('ip', ['netns', 'exec', ns, process.execPath, BIN, 'stack', 'serve'], {
      env: { ...process.env, PVMLAB_HOME: home, NO_COLOR: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    stack.stdout?.on('data', (d: Buffer) => (stackLog += d.toString()));
    stack.stderr?.on('data', (d: Buffer) => (stackLog += d.toString()));
    return stack;
  };
  const kill9 = async (s: ChildProcess) => {
    s.kill('SIGKILL');
    await new Promise((r) =>
      s.exitCode !== null || s.signalCode !== null ? r(undefined) : s.once('exit', r),
    );
  };
  /** The stack serves with its own, single, dnsmasq and says so. */
  const assertServing = async (s: ChildProcess, what: string): Promise<Health> => {
    let h: Health | undefined;
    try {
      h = await waitFor(
        `${what}: /healthz ok`,
        () => {
          const x = health();
          return x?.ok ? x : undefined;
        },
        30_000,
      );
    } catch (err) {
      throw new Error(`${(err as Error).message}: ${JSON.stringify(health())}\n--- stack ---\n${stackLog}`);
    }
    const pid = h.dnsmasq.pid as number;
    const ours = processesWith(conf());
    assert.deepEqual(ours, [pid], `${what}: one dnsmasq runs this lab's config, the one /healthz names`);
    const ppid = Number(readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ')[1]);
    assert.equal(ppid, s.pid, `${what}: the new stack's own child`);
    assert.equal(h.dnsmasq.serving, true, what);
    return h;
  };

  before(async () => {
    ({ home, app, cleanup } = await tempHome('dnsmfault-'));
    work = await mkdtemp(join(tmpdir(), 'dnsmfault-work-'));
    ns = createNetns('dnsm');
    await ok(['setup', '--bridge', BRIDGE, '--subnet', `${SUBNET}.0/24`]);
    await ok(['network', 'start']);
    nsx(['ip', 'link', 'add', 'dc0', 'type', 'veth', 'peer', 'name', 'dc0p']);
    nsx(['ip', 'link', 'set', 'dc0p', 'master', BRIDGE]);
    nsx(['ip', 'link', 'set', 'dc0p', 'up']);
    define(0);
  });

  after(async () => {
    if (stack) await kill9(stack);
    for (const pid of processesWith(app)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    deleteNetns(ns);
    await rm(work, { recursive: true, force: true });
    await cleanup();
  });

  test('kill -9 at random points, start again: the old dnsmasq is replaced, current reservations are served', async (t) => {
    const points = ['while starting', 'while serving', 'during a definition change'] as const;
    let previous = startServe();
    await assertServing(previous, 'first start');
    assert.equal(dhcp(mac(0)), ip(0));
    for (let i = 1; i <= 6; i++) {
      const point = points[i % points.length] as (typeof points)[number];
      const delay = Math.floor(Math.random() * (point === 'while starting' ? 1500 : 400));
      t.diagnostic(`round ${i}: kill -9 ${point}, after ${delay} ms`);
      if (point === 'while starting') {
        await kill9(previous);
        previous = startServe();
        define(i); // a machine the orphan (if any) does not know
        await new Promise((r) => setTimeout(r, delay));
      } else if (point === 'while serving') {
        define(i);
        await new Promise((r) => setTimeout(r, 2500 + delay)); // served, hosts reloaded
      } else {
        define(i);
        await new Promise((r) => setTimeout(r, delay)); // registry debounce, hosts, SIGHUP
      }
      const before = processesWith(conf());
      await kill9(previous);
      t.diagnostic(`round ${i}: dnsmasq left running: ${before.join(', ') || 'none'}`);
      previous = startServe();
      const h = await assertServing(previous, `round ${i}`);
      assert.equal(h.machines, i + 1);
      // The newest machine and the first one get their reservations from the new dnsmasq.
      assert.equal(dhcp(mac(i)), ip(i), `round ${i}: m${i}'s reservation\n--- stack ---\n${stackLog}`);
      assert.equal(dhcp(mac(0)), ip(0), `round ${i}: m0's reservation`);
    }
    assert.ok(
      readFileSync(join(app, 'stack', 'dnsmasq.leases'), 'utf8').includes(ip(0)),
      'the lease file carried over',
    );
  });

  test('a DNS port held by another process: /healthz says dnsmasq does not serve, and why; that process is left alone', async () => {
    // The stack of the previous test still runs: stop it (and the dnsmasq it leaves), then
    // hold its DNS port.
    if (stack) await kill9(stack);
    for (const pid of processesWith(conf())) process.kill(pid, 'SIGKILL');
    await waitFor('no dnsmasq', () => processesWith(conf()).length === 0 || undefined, 5000);
    const squatter = spawn(
      'ip',
      [
        'netns',
        'exec',
        ns,
        process.execPath,
        '-e',
        `require('dgram').createSocket('udp4').bind(53, '${SUBNET}.1', () => console.log('bound'))`,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    try {
      await new Promise<void>((resolve, reject) => {
        squatter.stdout?.once('data', () => resolve());
        squatter.once('exit', (code) => reject(new Error(`the squatter exited (${code})`)));
      });
      const s = startServe();
      await waitFor('Stack serving', () => /Stack serving/.test(stackLog) || undefined, 30_000);
      const h = await waitFor(
        'dnsmasq to fail and be restarted',
        () => {
          const x = health();
          return x && x.dnsmasq.restarts >= 1 && /Address already in use/.test(x.dnsmasq.error ?? '')
            ? x
            : undefined;
        },
        30_000,
      );
      assert.equal(h.ok, false, JSON.stringify(h));
      assert.equal(h.dnsmasq.serving, false);
      assert.equal(squatter.exitCode, null, 'the squatter is not ours: never signalled');
      squatter.kill('SIGKILL');
      await assertServing(s, 'once the port is free');
      assert.equal(dhcp(mac(0)), ip(0));
    } finally {
      squatter.kill('SIGKILL');
    }
  });
});
