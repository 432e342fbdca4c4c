import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { saveVm } from '../../src/lab/store.js';
import { alive } from '../helpers/dnsmasq.js';
import { createNetns, deleteNetns, waitFor } from '../helpers/netns.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const TAR = join(ROOT, 'pxeboot_stack', 'pxeboot_stack.tar');
const CONTEXT = join(ROOT, 'pxeboot_stack', 'build');
const SUBNET = '10.219.0';
const MAC = '52:54:00:21:90:05';
const IP = `${SUBNET}.5`;
const PREFIX6 = 'fd00:219::';

/**
 * The pxeboot_stack image as the seed uses it: built by `make -C pxeboot_stack tar`, loaded from
 * the tar, run with host networking and privileges, here by podman inside a network namespace
 * (the container's "host"). A scripted DHCP client, atftp and HTTP requests talk to it there.
 */
describe('pxeboot_stack image: make tar, load, run in a network namespace', { timeout: 1_800_000 }, () => {
  let ns: string;
  /** The client machine: its own namespace, on the bridge through a veth. */
  let cns: string;
  let work: string;
  let image: string;
  const name = `pvimg${process.pid}`;
  const figures: string[] = [];

  /**
   * podman in the namespace. Not `ip netns exec`: it remounts /sys, which hides the cgroup
   * mounts runc needs; nsenter switches the network namespace only.
   */
  const podman = (args: string[], opts: { timeoutMs?: number } = {}) =>
    spawnSync('nsenter', [`--net=/run/netns/${ns}`, 'podman', '--runtime', 'runc', ...args], {
      encoding: 'utf8',
      timeout: opts.timeoutMs ?? 60_000,
    });
  const nsx = (args: string[]) =>
    execFileSync('ip', ['netns', 'exec', ns, ...args], { encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });
  const csx = (args: string[]) =>
    execFileSync('ip', ['netns', 'exec', cns, ...args], {
      encoding: 'utf8',
      stdio: ['pipe', 'pipe', 'pipe'],
    });
  /** GET from the client. */
  const get = (path: string): { status: number; body: string; bytes: number } =>
    JSON.parse(
      csx([
        process.execPath,
        '-e',
        `fetch('http://${SUBNET}.1${path}').then(async r => { const b = Buffer.from(await r.arrayBuffer()); process.stdout.write(JSON.stringify({ status: r.status, body: b.toString('utf8').slice(0, 4096), bytes: b.length })); })`,
      ]),
    ) as { status: number; body: string; bytes: number };
  const mounts = (o: { images?: boolean } = {}) => [
    '-v',
    `${join(work, 'app', 'vms')}:/mnt/host/vms`,
    ...(o.images === false ? [] : ['-v', `${join(work, 'images')}:/www/images`]),
    '-v',
    `${join(work, 'state')}:/var/lib/pvmlab/stack`,
  ];
  /** A container that must refuse to start: its exit code and what it said. */
  const refuse = (env: string[], o: { images?: boolean } = {}) => {
    const r = podman([
      'run',
      '--rm',
      '--network',
      'host',
      '--privileged',
      ...env.flatMap((e) => ['-e', e]),
      ...mounts(o),
      image,
    ]);
    return { code: r.status, stderr: r.stderr, stdout: r.stdout };
  };
  const logs = () => {
    const r = podman(['logs', name]);
    return `${r.stdout}${r.stderr}`;
  };

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'pvimg-'));
    // The build: podman here (the docker client has no daemon); the base and the initrds come
    // from the caches after the first run.
    const t0 = Date.now();
    const make = spawnSync('make', ['-C', join(ROOT, 'pxeboot_stack'), 'tar'], {
      encoding: 'utf8',
      env: { ...process.env, ENGINE: 'podman' },
      timeout: 1_500_000,
    });
    assert.equal(make.status, 0, `make tar failed:\n${make.stdout}\n${make.stderr}`);
    figures.push(`make tar: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    const built = /pxeboot_stack:latest \(linux\/\w+, podman\): ([\d.]+ MB)/.exec(make.stdout);
    assert.ok(built, make.stdout);
    figures.push(`image ${built[1]}, tar ${(statSync(TAR).size / 1e6).toFixed(1)} MB`);
    ns = createNetns('pvimg');
    cns = createNetns('pvimc');
    const load = podman(['load', '--input', TAR], { timeoutMs: 300_000 });
    assert.equal(load.status, 0, load.stderr);
    const loaded = /Loaded image(?:\(s\))?: (\S+)/.exec(load.stdout);
    assert.ok(loaded, load.stdout);
    image = loaded[1] as string;

    // The lab segment: a bridge holding the provisioner's address, a client on a veth.
    nsx(['ip', 'link', 'add', 'br0', 'type', 'bridge']);
    nsx(['ip', 'addr', 'add', `${SUBNET}.1/24`, 'dev', 'br0']);
    nsx(['ip', 'addr', 'add', `${PREFIX6}1/64`, 'dev', 'br0', 'nodad']);
    nsx(['ip', 'link', 'set', 'br0', 'up']);
    nsx(['ip', 'link', 'add', 'vc0', 'type', 'veth', 'peer', 'name', 'vc0p']);
    nsx(['ip', 'link', 'set', 'vc0p', 'master', 'br0']);
    nsx(['ip', 'link', 'set', 'vc0p', 'up']);
    nsx(['ip', 'link', 'set', 'vc0', 'netns', cns]);
    csx(['ip', 'link', 'set', 'vc0', 'address', MAC]);
    csx(['ip', 'link', 'set', 'vc0', 'up']);

    // A PXE VM as `vm create` writes it, a kernel placed by hand for its distro.
    const app = join(work, 'app');
    await saveVm(app, {
      schema_version: 1,
      name: 'img1',
      role: 'target',
      arch: 'x86_64',
      ip: IP,
      subnet: `${SUBNET}.0/24`,
      mac: MAC,
      pxeboot: true,
      distro: 'testos',
      kernel: 'vmlinuz',
    });
    mkdirSync(join(work, 'images', 'testos', 'x86_64'), { recursive: true });
    writeFileSync(join(work, 'images', 'testos', 'x86_64', 'vmlinuz'), 'not really a kernel\n');
    mkdirSync(join(work, 'state'));
  });

  after(async () => {
    if (ns) {
      podman(['rm', '--force', '--time', '0', name]);
      deleteNetns(ns);
    }
    if (cns) deleteNetns(cns);
    await rm(work, { recursive: true, force: true });
    console.log(`pxeboot_stack image figures: ${figures.join('; ')}`);
  });

  test('the tar is a docker-archive named pxeboot_stack:latest', () => {
    const manifest = JSON.parse(
      execFileSync('tar', ['-xOf', TAR, 'manifest.json'], { encoding: 'utf8' }),
    ) as {
      RepoTags: string[];
      Layers: string[];
      Config: string;
    }[];
    assert.equal(manifest.length, 1);
    assert.deepEqual(manifest[0]?.RepoTags, ['pxeboot_stack:latest']);
    const members = execFileSync('tar', ['-tf', TAR], { encoding: 'utf8' }).split('\n');
    for (const f of [manifest[0]?.Config, ...(manifest[0]?.Layers ?? [])])
      assert.ok(members.includes(f as string), f);
    const repos = JSON.parse(
      execFileSync('tar', ['-xOf', TAR, 'repositories'], { encoding: 'utf8' }),
    ) as object;
    assert.deepEqual(Object.keys(repos), ['pxeboot_stack']);
    const inspect = podman(['image', 'inspect', '--format', '{{.Architecture}} {{.Os}}', image]);
    assert.equal(inspect.stdout.trim(), `${process.arch === 'x64' ? 'amd64' : process.arch} linux`);
  });

  test('a bad environment or a missing mount: exit 2 and one line naming it', () => {
    const none = refuse([]);
    assert.equal(none.code, 2, none.stderr);
    assert.match(none.stderr, /^pxeboot_stack: PROVISIONER_IP is not set: .*192\.168\.100\.1/m);
    const range = refuse([
      `PROVISIONER_IP=${SUBNET}.1/24`,
      `DHCP_RANGE_START=${SUBNET}.250`,
      `DHCP_RANGE_END=${SUBNET}.200`,
    ]);
    assert.equal(range.code, 2, range.stderr);
    assert.match(range.stderr, /DHCP_RANGE_START 10\.219\.0\.250 is after DHCP_RANGE_END 10\.219\.0\.200/);
    const outside = refuse([`PROVISIONER_IP=${SUBNET}.1`, 'DHCP_RANGE_END=10.220.0.9']);
    assert.equal(outside.code, 2, outside.stderr);
    assert.match(
      outside.stderr,
      /DHCP_RANGE_END="10\.220\.0\.9" is invalid: an IPv4 address in 10\.219\.0\.0\/24/,
    );
    const elsewhere = refuse(['PROVISIONER_IP=10.218.7.1']);
    assert.equal(elsewhere.code, 2, elsewhere.stderr);
    assert.match(
      elsewhere.stderr,
      /PROVISIONER_IP 10\.218\.7\.1 is not on any interface here .*br0 \(10\.219\.0\.1/,
    );
    const noImages = refuse([`PROVISIONER_IP=${SUBNET}.1`], { images: false });
    assert.equal(noImages.code, 2, noImages.stderr);
    assert.match(
      noImages.stderr,
      /^pxeboot_stack: \/www\/images is missing: bind-mount the distro assets there/m,
    );
    for (const r of [none, range, outside, elsewhere, noImages]) {
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
      assert.equal(r.stdout, '', 'nothing started');
    }
  });

  test('serves DHCP, TFTP and HTTP; logs them; stops cleanly on podman stop', async () => {
    const run = podman([
      'run',
      '--detach',
      '--name',
      name,
      '--network',
      'host',
      '--privileged',
      '-e',
      `PROVISIONER_IP=${SUBNET}.1`,
      '-e',
      `PROVISIONER_IPV6=${PREFIX6}1/64`,
      '-e',
      'DHCP_RANGE_V6_START=::1:0',
      ...mounts(),
      image,
    ]);
    assert.equal(run.status, 0, run.stderr);
    await waitFor(
      'the stack to serve',
      () => (/dnsmasq\[\d+\]: started/.test(logs()) ? true : undefined),
      30_000,
    );
    assert.match(
      logs(),
      /Stack serving 1 machine\(s\) on br0: http:\/\/10\.219\.0\.1:80 and http:\/\/\[fd00:219::1\]:80/,
    );
    assert.match(logs(), /dnsmasq-dhcp\[\d+\]: DHCPv6, IP range fd00:219::1:0 -- fd00:219::1:ffff/);
    assert.match(logs(), /node v18\./, "Debian 12's Node runs the stack");

    // DHCP: the reservation, and the x86_64 UEFI boot file for a PXE client, which takes the address.
    const script = join(work, 'udhcpc.sh');
    const leaseFile = join(work, 'lease');
    writeFileSync(
      script,
      `#!/bin/sh\n[ "$1" = bound ] || exit 0\nenv > ${leaseFile}\nip addr add "$ip/$mask" dev "$interface"\n`,
      { mode: 0o755 },
    );
    csx([
      'busybox',
      'udhcpc',
      '-i',
      'vc0',
      '-n',
      '-q',
      '-f',
      '-t',
      '5',
      '-T',
      '1',
      '-s',
      script,
      '-V',
      'PXEClient:Arch:00007:UNDI:003000',
      '-x',
      '0x5d:0007',
    ]);
    const lease = readFileSync(leaseFile, 'utf8');
    assert.match(lease, new RegExp(`^ip=${IP.replaceAll('.', '\\.')}$`, 'm'));
    assert.match(lease, /^boot_file=ipxe-x86_64\.efi$/m);
    assert.match(lease, /^siaddr=10\.219\.0\.1$/m);

    // TFTP: boot.ipxe and both UEFI iPXE builds, from the client's new address.
    for (const f of ['boot.ipxe', 'ipxe-x86_64.efi', 'ipxe-arm64.efi']) {
      const out = join(work, f);
      csx(['atftp', '--get', '--remote-file', f, '--local-file', out, `${SUBNET}.1`]);
      assert.ok(statSync(out).size > 0, f);
    }
    assert.match(
      readFileSync(join(work, 'boot.ipxe'), 'utf8'),
      /chain http:\/\/\$\{next-server\}\/ipxe\?mac=/,
    );

    // HTTP: health, the machine's install script, the installer initrds the image carries.
    const health = get('/healthz');
    assert.equal(health.status, 200, health.body);
    assert.equal((JSON.parse(health.body) as { ok: boolean }).ok, true);
    const ipxe = get(`/ipxe?mac=${MAC}`);
    assert.equal(ipxe.status, 200);
    assert.match(ipxe.body, /initrds\/x86_64\/initrd\.gz/);
    assert.match(ipxe.body, /images\/testos\/x86_64\/vmlinuz/);
    for (const arch of ['x86_64', 'aarch64']) {
      const initrd = get(`/initrds/${arch}/initrd.gz`);
      assert.equal(initrd.status, 200, arch);
      assert.equal(initrd.bytes, statSync(join(CONTEXT, 'initrds', arch, 'initrd.gz')).size, arch);
    }
    assert.equal(get('/ipxe?mac=52:54:00:99:99:99').status, 404);
    // The same service on the provisioner's IPv6 address.
    const v6 = nsx([
      process.execPath,
      '-e',
      `fetch('http://[${PREFIX6}1]/healthz').then((r) => process.stdout.write(String(r.status)))`,
    ]);
    assert.equal(v6, '200');

    // The log: the DHCP exchange, the TFTP transfers, one line per HTTP request.
    const text = await waitFor(
      'the HTTP lines in the log',
      () => {
        const l = logs();
        return /GET \/ipxe\?mac=52:54:00:99:99:99 404/.test(l) ? l : undefined;
      },
      5_000,
    );
    assert.match(text, new RegExp(`DHCPACK\\(br0\\) ${IP.replaceAll('.', '\\.')} ${MAC} img1`));
    assert.match(
      text,
      /dnsmasq-tftp\[\d+\]: sent \/var\/lib\/pvmlab\/stack\/tftp\/ipxe-arm64\.efi to 10\.219\.0\.5/,
    );
    assert.match(text, /^http: 10\.219\.0\.5 GET \/healthz 200 \d+ \d+ms$/m);
    assert.match(text, new RegExp(`^http: 10\\.219\\.0\\.5 GET /ipxe\\?mac=${MAC} 200 \\d+ \\d+ms$`, 'm'));
    assert.equal(text.match(/10\.219\.0\.5 GET \/healthz/g)?.length, 1, 'one line per request');
    assert.match(text, /^http: fd00:219::1 GET \/healthz 200 \d+ \d+ms$/m);
    assert.doesNotMatch(text, /sent size:|requested options:/, "not log-dhcp's option dumps");
    // docker stop: SIGTERM; dnsmasq (a child of the stack, seen from here by its host pid) goes too.
    const nodePid = Number(podman(['inspect', '--format', '{{.State.Pid}}', name]).stdout.trim());
    const dnsmasqPid = childPids(nodePid).find(
      (p) => readFileSync(`/proc/${p}/comm`, 'utf8').trim() === 'dnsmasq',
    );
    assert.ok(dnsmasqPid, 'dnsmasq runs under the stack');
    const t0 = Date.now();
    const stop = podman(['stop', '--time', '10', name]);
    const stopMs = Date.now() - t0;
    figures.push(`podman stop: ${stopMs} ms`);
    assert.equal(stop.status, 0, stop.stderr);
    assert.ok(stopMs < 5000, `stopped in ${stopMs} ms`);
    assert.equal(
      podman(['inspect', '--format', '{{.State.ExitCode}}', name]).stdout.trim(),
      '0',
      'a clean exit, not a kill',
    );
    assert.equal(alive(dnsmasqPid), false, 'no dnsmasq left');
    // The timeline went to the state directory (a bind mount: it outlives the container).
    assert.match(readFileSync(join(work, 'state', 'timeline.jsonl'), 'utf8'), /"type":"dhcp\.ack"/);
    assert.match(
      logs(),
      /SIGTERM: stopping dnsmasq and the HTTP server[\s\S]*dnsmasq\[\d+\]: exiting on receipt of SIGTERM[\s\S]*pxeboot_stack: stopped/,
    );
  });
});

/** The processes whose parent is `pid` (host pids, from /proc). */
function childPids(pid: number): number[] {
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .map(Number)
    .filter((p) => {
      try {
        const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
        return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid;
      } catch {
        return false; // gone meanwhile
      }
    });
}
