import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { formatPhases, provisionPhases, type PhaseEvent } from '../../src/stack/phases.js';
import { runCli, tempHome, type CliResult } from '../helpers/cli.js';
import { createNetns, deleteNetns } from '../helpers/netns.js';

const BRIDGE = 'pve2epbr0';
/** QEMU's own user-mode network: the provisioner's uplink must move out of the lab's way. */
const SUBNET = '10.0.2';
const PROV_IP = `${SUBNET}.1`;
/** The default path: whatever accelerator pvmlab picks on this host. */
const DEFAULT_PATH = ['PVMLAB_ACCEL', 'PVMLAB_QEMU_ACCEL'];
const INSTALL_MS = 20 * 60_000;
const TAR = 'pxeboot_stack/pxeboot_stack.tar';

interface ContainerStatus {
  name: string;
  state: string;
  id?: string;
  image?: string;
}

/**
 * The seed document's workflow, end to end, inside a network namespace with no route out: the
 * provisioner VM (built here from Debian's packages, with docker.io in it) runs the
 * pxeboot_stack container built by `make -C pxeboot_stack tar`; a blank target is installed
 * through it; the container is replaced with a rebuilt tar and the lab keeps serving.
 */
describe('e2e: the provisioner VM and its pxeboot_stack container', { timeout: 60 * 60_000 }, () => {
  let ns: string;
  let home: string;
  let app: string;
  let cleanup: () => Promise<void>;
  const timings: string[] = [];
  const cli = (args: string[], timeoutMs = 120_000): Promise<CliResult> =>
    runCli(args, { home, netns: ns, unset: DEFAULT_PATH, timeoutMs });
  const context = (vm?: string) => {
    const tail = (p: string) => (existsSync(p) ? readFileSync(p, 'utf8').slice(-3000) : `(no ${p})`);
    return vm ? `--- ${vm} console ---\n${tail(join(app, 'logs', `${vm}.log`))}` : '';
  };
  const ok = async (args: string[], timeoutMs?: number, vm?: string) => {
    const r = await cli(args, timeoutMs);
    assert.equal(
      r.code,
      0,
      `pvmlab ${args.join(' ')} exited ${r.code}:\n${r.stdout}\n${r.stderr}\n${context(vm)}`,
    );
    return r;
  };
  /** Run a stage, print how long it took. */
  const stage = async <T>(what: string, fn: () => Promise<T>): Promise<T> => {
    const t0 = Date.now();
    const v = await fn();
    timings.push(`${what}: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    return v;
  };
  const shell = async (vm: string, ...command: string[]) =>
    (await ok(['vm', 'shell', vm, '--', ...command], 120_000, vm)).stdout;
  const status = async (): Promise<ContainerStatus[]> => {
    const r = await ok(['provisioner', 'docker', 'status', '--json']);
    const data = JSON.parse(r.stdout) as ContainerStatus[] | { containers: ContainerStatus[] };
    return Array.isArray(data) ? data : data.containers;
  };
  const stackContainer = async () => (await status()).find((c) => c.name === 'pxeboot_stack');
  const makeTar = () => {
    const r = spawnSync('make', ['-C', 'pxeboot_stack', 'tar'], { encoding: 'utf8', timeout: 40 * 60_000 });
    assert.equal(
      r.status,
      0,
      `make -C pxeboot_stack tar:\n${r.stdout.slice(-3000)}\n${r.stderr.slice(-3000)}`,
    );
    assert.ok(existsSync(TAR));
  };

  before(async () => {
    ({ home, app, cleanup } = await tempHome('pve2ep-'));
    ns = createNetns('pve2ep');
    // debian-12 and the provisioner image come from the build cache outside the repo (built
    // there on a miss, from Debian's mirror: outside the namespace, which has no route out).
    const r = await runCli(['distro', 'pull', '--distro', 'debian-12', '--arch', 'x86_64'], {
      home,
      unset: DEFAULT_PATH,
      timeoutMs: 60 * 60_000,
    });
    assert.equal(r.code, 0, `distro pull:\n${r.stderr}`);
    await ok(['setup', '--bridge', BRIDGE, '--subnet', `${SUBNET}.0/24`]);
    await ok(['network', 'start']);
    // The image build needs the mirror: made outside the namespace, then created inside it.
    await stage('provisioner create (image from the cache or built)', async () => {
      const c = await runCli(['provisioner', 'create', 'prov', '--ip', `${PROV_IP}/24`, '--arch', 'x86_64'], {
        home,
        unset: DEFAULT_PATH,
        timeoutMs: 40 * 60_000,
      });
      assert.equal(c.code, 0, `provisioner create:\n${c.stdout}\n${c.stderr}`);
    });
  });

  after(async () => {
    process.stderr.write(`provisioner e2e stages:\n  ${timings.join('\n  ')}\n`);
    await cli(['clean'], 180_000).catch(() => undefined);
    try {
      execFileSync('sh', ['-c', `ip netns pids ${ns} | xargs -r kill -9`]);
    } catch {
      /* nothing left */
    }
    deleteNetns(ns);
    await cleanup();
  });

  test('vm start provisioner --wait: docker answers, the lab directories are shared, NAT is set up', async () => {
    await stage('vm start prov --wait', () => ok(['vm', 'start', 'prov', '--wait'], INSTALL_MS, 'prov'));
    assert.equal((await shell('prov', 'hostname')).trim(), 'prov');
    assert.match(await shell('prov', 'docker', 'info', '--format', '{{.ServerVersion}}'), /^\d+\.\d+/);
    assert.match(await shell('prov', 'ls', '/mnt/host/vms'), /prov\.json/);
    assert.match(await shell('prov', 'ls', '/mnt/host/images'), /debian-12/);
    assert.match(
      await shell('prov', 'ip', '-4', '-o', 'addr'),
      new RegExp(`inet ${PROV_IP.replaceAll('.', '\\.')}/24`),
    );
    // The uplink took the next user-mode network (uplinkNetworks), so 10.0.2.0/24 is the lab's alone.
    assert.match(await shell('prov', 'ip', '-4', '-o', 'addr'), /inet 10\.0\.3\.15\/24/);
    assert.match(
      await shell('prov', 'ip', '-4', 'route', 'get', `${SUBNET}.50`),
      new RegExp(`src ${PROV_IP.replaceAll('.', '\\.')} `),
    );
    assert.equal((await shell('prov', 'cat', '/proc/sys/net/ipv4/ip_forward')).trim(), '1');
    assert.match(await shell('prov', 'sudo', 'iptables', '-t', 'nat', '-S', 'POSTROUTING'), /MASQUERADE/);
  });

  test('make -C pxeboot_stack tar, then provisioner docker start <tar> --network-host --privileged', async () => {
    await stage('make -C pxeboot_stack tar', async () => makeTar());
    await stage('provisioner docker start', () =>
      ok(['provisioner', 'docker', 'start', TAR, '--network-host', '--privileged'], 600_000, 'prov'),
    );
    const c = await stackContainer();
    assert.equal(c?.state, 'running', JSON.stringify(await status()));
    const text = (await ok(['provisioner', 'docker', 'status'])).stdout;
    assert.match(text, /pxeboot_stack/);
    // Exactly the options given reached docker run.
    // One remote command line (ssh joins the words, and the remote shell splits them again).
    const inspect = await shell(
      'prov',
      "docker inspect --format '{{.HostConfig.NetworkMode}} {{.HostConfig.Privileged}}' pxeboot_stack",
    );
    assert.equal(inspect.trim(), 'host true');
    // The host reaches the stack on the lab network.
    const health = await fetchInNs(`http://${PROV_IP}/healthz`);
    assert.match(health, /"ok":\s*true/);
  });

  test('a blank target is installed through the container, and vm shell reaches it', async (t) => {
    await ok(['vm', 'create', 't1', '--pxeboot', '--arch', 'x86_64']);
    const since = new Date();
    await stage('t1: vm start --wait (PXE install through the container)', () =>
      ok(['vm', 'start', 't1', '--wait'], INSTALL_MS, 't1'),
    );
    assert.equal((await shell('t1', 'hostname')).trim(), 't1');
    const evs = JSON.parse((await ok(['vm', 'events', 't1', '--json'])).stdout) as (PhaseEvent & {
      type: string;
    })[];
    const phases = provisionPhases(evs, since);
    t.diagnostic(`t1 through the container: ${formatPhases(phases).replaceAll('\n', '; ')}`);
    timings.push(`t1 phases: ${formatPhases(phases).replaceAll('\n', '; ')}`);
    for (const type of ['dhcp.discover', 'tftp.sent', 'http.ipxe', 'installer.done', 'ready'])
      assert.ok(
        evs.some((e) => e.type === type),
        `${type} in ${evs.map((e) => e.type).join(', ')}`,
      );
    const logs = await shell('prov', 'docker', 'logs', 'pxeboot_stack');
    const mac = (JSON.parse(readFileSync(join(app, 'vms', 't1.json'), 'utf8')) as { mac: string }).mac;
    assert.match(logs, new RegExp(`DHCP\\w*\\(\\S+\\) .*${mac}`, 'i'), 'the target DHCP in docker logs');
  });

  test('the host without a lab address reaches the target through the provisioner (jump host)', async () => {
    execFileSync('ip', ['-n', ns, 'addr', 'del', `${SUBNET}.254/24`, 'dev', BRIDGE]);
    try {
      assert.equal((await shell('t1', 'hostname')).trim(), 't1');
    } finally {
      execFileSync('ip', ['-n', ns, 'addr', 'add', `${SUBNET}.254/24`, 'dev', BRIDGE]);
    }
  });

  test('the development loop: stop, rebuild the tar, start again; the container is replaced and the lab keeps serving', async () => {
    const before = await stackContainer();
    await ok(['provisioner', 'docker', 'stop']);
    assert.notEqual((await stackContainer())?.state, 'running');
    await stage('make -C pxeboot_stack tar (rebuild)', async () => makeTar());
    await stage('provisioner docker start (replace)', () =>
      ok(['provisioner', 'docker', 'start', TAR, '--network-host', '--privileged'], 600_000, 'prov'),
    );
    const now = await stackContainer();
    assert.equal(now?.state, 'running');
    assert.notEqual(now?.id, before?.id, 'a new container');
    // The timeline survived the replacement (kept on the provisioner's disk).
    const evs = JSON.parse((await ok(['vm', 'events', 't1', '--json'])).stdout) as { type: string }[];
    assert.ok(evs.some((e) => e.type === 'ready'));
    // The new container serves: t1 reboots from its disk and gets its address by DHCP from it.
    await ok(['vm', 'stop', 't1']);
    await stage('t1: restart from disk through the new container', async () => {
      await ok(['vm', 'start', 't1']);
      const deadline = Date.now() + 10 * 60_000;
      for (;;) {
        const r = await cli(['vm', 'shell', 't1', '--', 'hostname'], 60_000);
        if (r.code === 0 && r.stdout.trim() === 't1') break;
        assert.ok(Date.now() < deadline, `t1 did not come back:\n${context('t1')}`);
        await new Promise((res) => setTimeout(res, 5000));
      }
    });
    const mac = (JSON.parse(readFileSync(join(app, 'vms', 't1.json'), 'utf8')) as { mac: string }).mac;
    assert.match(
      await shell('prov', 'docker', 'logs', 'pxeboot_stack'),
      new RegExp(`DHCP\\w*\\(\\S+\\) .*${mac}`, 'i'),
    );
  });

  /** An HTTP GET from inside the namespace (the host's side of the lab bridge). */
  function fetchInNs(url: string): Promise<string> {
    const js = `fetch(${JSON.stringify(url)}, { signal: AbortSignal.timeout(10000) }).then((r) => r.text()).then((t) => process.stdout.write(t), (e) => process.stdout.write(String(e)))`;
    const r = spawnSync('ip', ['netns', 'exec', ns, process.execPath, '-e', js], { encoding: 'utf8' });
    return Promise.resolve(r.stdout + r.stderr);
  }
});
