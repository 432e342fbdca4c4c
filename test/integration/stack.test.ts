import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { BIN, runCli, tempHome, type CliResult } from '../helpers/cli.js';
import { PXE_MARKER, markerInitrd, readyInitrd, testKernel } from '../helpers/guest.js';
import { createNetns, deleteNetns, waitFor } from '../helpers/netns.js';

const BRIDGE = 'pvskbr0';
const SUBNET = '10.218.0';
const PREFIX6 = 'fd00:218::';

interface Lease {
  ip?: string;
  boot_file?: string;
  siaddr?: string;
}

/**
 * The pxeboot stack natively on a bridge in a network namespace: real dnsmasq, the HTTP
 * boot server, scripted DHCP/TFTP clients and a real UEFI guest doing the whole chain.
 */
describe('pxeboot stack: dnsmasq + boot server in a network namespace', { timeout: 900_000 }, () => {
  let ns: string;
  let home: string;
  let app: string;
  let cleanup: () => Promise<void>;
  let work: string;
  let stack: ChildProcess | undefined;
  let stackLog = '';
  const cli = (args: string[], timeoutMs?: number): Promise<CliResult> =>
    runCli(args, { home, netns: ns, env: { PVMLAB_ACCEL: 'tcg' }, ...(timeoutMs ? { timeoutMs } : {}) });
  const ok = async (args: string[]) => {
    const r = await cli(args);
    assert.equal(
      r.code,
      0,
      `pvmlab ${args.join(' ')}:\n${r.stderr}\n--- stack ---\n${stackLog.slice(-3000)}`,
    );
    return r;
  };
  /** Run a command inside the namespace. */
  const nsx = (args: string[], opts: { input?: string } = {}) =>
    execFileSync('ip', ['netns', 'exec', ns, ...args], {
      encoding: 'utf8',
      stdio: ['pipe', 'pipe', 'pipe'],
      ...opts,
    });
  /** GET from the stack, from inside the namespace (node's fetch in a one-off process). */
  const get = (path: string): { status: number; body: string } => {
    const out = nsx([
      process.execPath,
      '-e',
      `fetch('http://${SUBNET}.1${path}').then(async r => process.stdout.write(JSON.stringify({status: r.status, body: await r.text()})))`,
    ]);
    return JSON.parse(out) as { status: number; body: string };
  };
  /** GET with the path sent exactly as given (node:http does not normalise it). */
  const rawGet = (path: string, range?: string) => {
    const out = nsx([
      process.execPath,
      '-e',
      `require('http').get({ host: '${SUBNET}.1', path: ${JSON.stringify(path)}, headers: ${JSON.stringify(range ? { Range: range } : {})} }, (r) => { const c = []; r.on('data', (d) => c.push(d)); r.on('end', () => { const b = Buffer.concat(c); process.stdout.write(JSON.stringify({ status: r.statusCode, length: b.length, body: b.toString('utf8'), bodyBase64: b.toString('base64') })); }); });`,
    ]);
    return JSON.parse(out) as { status: number; length: number; body: string; bodyBase64: string };
  };
  /** busybox udhcpc on a veth client with PXE options; returns what the server offered. */
  const dhcp = (iface: string, opts: string[]): Lease => {
    const script = join(work, 'udhcpc.sh');
    const out = join(work, `lease-${iface}`);
    writeFileSync(script, `#!/bin/sh\n[ "$1" = bound ] && env > ${out}\nexit 0\n`, { mode: 0o755 });
    nsx(['busybox', 'udhcpc', '-i', iface, '-n', '-q', '-f', '-t', '5', '-T', '1', '-s', script, ...opts]);
    const env = Object.fromEntries(
      readFileSync(out, 'utf8')
        .split('\n')
        .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
    ) as Lease;
    return env;
  };
  const addClient = (name: string, mac?: string) => {
    nsx(['ip', 'link', 'add', name, 'type', 'veth', 'peer', 'name', `${name}p`]);
    if (mac) nsx(['ip', 'link', 'set', name, 'address', mac]);
    nsx(['ip', 'link', 'set', `${name}p`, 'master', BRIDGE]);
    nsx(['ip', 'link', 'set', `${name}p`, 'up']);
    nsx(['ip', 'link', 'set', name, 'up']);
  };
  /** Wait until the interface's link-local address has left DAD (DHCPv6 clients need it). */
  const linkLocalReady = (iface: string) =>
    waitFor(
      `${iface}'s link-local address`,
      () =>
        nsx(['ip', '-6', 'addr', 'show', 'dev', iface, 'scope', 'link', '-tentative']).includes('fe80::')
          ? true
          : undefined,
      10_000,
    );
  /** ISC dhclient -6 (DUID-LLT, as systemd-networkd is told to use on targets): the address leased. */
  const dhcp6 = async (iface: string): Promise<string> => {
    await linkLocalReady(iface);
    const lease = join(work, `dhclient6-${iface}-${Date.now()}.leases`);
    const pid = join(work, `dhclient6-${iface}.pid`);
    try {
      nsx(['timeout', '30', 'dhclient', '-6', '-1', '-lf', lease, '-pf', pid, '-sf', '/bin/true', iface]);
    } finally {
      // dhclient forks into the background once bound; the child creates the pid file, then
      // writes it: wait for the number rather than read an empty file.
      if (existsSync(pid)) {
        const n = await waitFor("dhclient's pid", () => readFileSync(pid, 'utf8').trim() || undefined, 5_000);
        nsx(['kill', n]);
      }
    }
    const m = /iaaddr (\S+) \{/.exec(readFileSync(lease, 'utf8'));
    assert.ok(m, `a DHCPv6 lease in ${readFileSync(lease, 'utf8')}`);
    return m[1] as string;
  };
  const health = () =>
    JSON.parse(get('/healthz').body) as { machines: number; dnsmasq: { pid: number; restarts: number } };

  before(async () => {
    ({ home, app, cleanup } = await tempHome('pvstack-'));
    work = await mkdtemp(join(tmpdir(), 'pvstack-work-'));
    ns = createNetns('pvsk');
    // Assets: Debian's kernel as the distro kernel, a marker initrd as the "installer".
    const images = join(app, 'images', 'testos', 'x86_64');
    mkdirSync(images, { recursive: true });
    copyFileSync(testKernel(), join(images, 'vmlinuz'));
    mkdirSync(join(app, 'initrds', 'x86_64'), { recursive: true });
    writeFileSync(join(app, 'initrds', 'x86_64', 'initrd.gz'), markerInitrd());
    // The same for aarch64: Debian's arm64 kernel and an arm64 busybox marker initrd.
    mkdirSync(join(app, 'images', 'testos', 'aarch64'), { recursive: true });
    copyFileSync(testKernel('aarch64'), join(app, 'images', 'testos', 'aarch64', 'vmlinuz'));
    mkdirSync(join(app, 'initrds', 'aarch64'), { recursive: true });
    writeFileSync(join(app, 'initrds', 'aarch64', 'initrd.gz'), markerInitrd(PXE_MARKER, 'aarch64'));
    const arch = (a: string) =>
      `    ${a}:\n      qcow2_url: file:///nonexistent.qcow2\n      kernel_path: ./boot/vmlinuz\n`;
    writeFileSync(
      join(app, 'distros.yaml'),
      `- name: testos\n  distro_name: test\n  version: "1"\n  arch:\n${arch('x86_64')}${arch('aarch64')}`,
    );
    await ok(['setup', '--bridge', BRIDGE, '--subnet', `${SUBNET}.0/24`, '--subnet6', `${PREFIX6}/64`]);
    await ok(['network', 'start']);
    await ok([
      'vm',
      'create',
      'pxe1',
      '--pxeboot',
      '--distro',
      'testos',
      '--arch',
      'x86_64',
      '--memory',
      '512',
    ]);
    await ok(['vm', 'create', 'known1', '--pxeboot', '--distro', 'testos', '--mac', '52:54:00:00:aa:01']);
    await ok([
      'vm',
      'create',
      'arm1',
      '--pxeboot',
      '--distro',
      'testos',
      '--arch',
      'aarch64',
      '--memory',
      '1024',
    ]);
    stack = spawn('ip', ['netns', 'exec', ns, process.execPath, BIN, 'stack', 'serve'], {
      env: { ...process.env, PVMLAB_HOME: home, NO_COLOR: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    stack.stdout?.on('data', (d: Buffer) => (stackLog += d.toString()));
    stack.stderr?.on('data', (d: Buffer) => (stackLog += d.toString()));
    try {
      await waitFor('the stack to serve', () => /Stack serving/.test(stackLog) || undefined, 30_000);
      await waitFor('dnsmasq to start', () => (health().dnsmasq.pid > 0 ? true : undefined), 10_000);
    } catch (err) {
      throw new Error(`${(err as Error).message}\n--- stack ---\n${stackLog}`);
    }
  });

  after(async () => {
    await cli(['vm', 'stop', 'pxe1', '--timeout', '1']).catch(() => undefined);
    await cli(['vm', 'stop', 'arm1', '--timeout', '1']).catch(() => undefined);
    stack?.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 500));
    stack?.kill('SIGKILL');
    deleteNetns(ns);
    await rm(work, { recursive: true, force: true });
    await cleanup();
  });

  test('DHCP: boot file by client architecture, boot.ipxe for iPXE, reservations by MAC', () => {
    addClient('vc0');
    const x86 = dhcp('vc0', ['-V', 'PXEClient:Arch:00007:UNDI:003000', '-x', '0x5d:0007']);
    assert.equal(x86.boot_file, 'ipxe-x86_64.efi');
    assert.equal(x86.siaddr, `${SUBNET}.1`);
    assert.match(
      x86.ip ?? '',
      new RegExp(`^${SUBNET.replaceAll('.', '\\.')}\\.(1\\d\\d|200)$`),
      'unknown client from the pool',
    );
    assert.equal(
      dhcp('vc0', ['-V', 'PXEClient:Arch:00011:UNDI:003000', '-x', '0x5d:000b']).boot_file,
      'ipxe-arm64.efi',
    );
    assert.equal(
      dhcp('vc0', ['-V', 'PXEClient:Arch:00000:UNDI:002001', '-x', '0x5d:0000']).boot_file,
      'undionly.kpxe',
    );
    // iPXE sends user class "iPXE" (hex 69505845).
    assert.equal(
      dhcp('vc0', ['-V', 'PXEClient:Arch:00007:UNDI:003010', '-x', '0x5d:0007', '-x', '0x4d:69505845'])
        .boot_file,
      'boot.ipxe',
    );
    addClient('vc1', '52:54:00:00:aa:01');
    const known = dhcp('vc1', ['-V', 'PXEClient:Arch:00007:UNDI:003000', '-x', '0x5d:0007']);
    assert.equal(known.ip, `${SUBNET}.3`, "known1's reservation");
  });

  test('TFTP: the boot files download with a real client (atftp)', () => {
    const lease = dhcp('vc0', ['-V', 'PXEClient:Arch:00007:UNDI:003000', '-x', '0x5d:0007']);
    nsx(['ip', 'addr', 'replace', `${lease.ip}/24`, 'dev', 'vc0']);
    const out = join(work, 'ipxe.efi');
    nsx(['atftp', '-g', '-r', 'ipxe-x86_64.efi', '-l', out, `${SUBNET}.1`]);
    assert.deepEqual(readFileSync(out), readFileSync(join(app, 'stack', 'tftp', 'ipxe-x86_64.efi')));
    const script = join(work, 'boot.ipxe');
    nsx(['atftp', '-g', '-r', 'boot.ipxe', '-l', script, `${SUBNET}.1`]);
    assert.match(readFileSync(script, 'utf8'), /chain http:\/\/\$\{next-server\}\/ipxe\?mac=/);
  });

  test('IPv6: RAs for the lab prefix, DHCPv6 reservations by MAC, a pool for others, DNS and HTTP', async () => {
    // known1 got the IPv6 twin of its IPv4 address at creation.
    const known = JSON.parse(readFileSync(join(app, 'vms', 'known1.json'), 'utf8')) as { ipv6?: string };
    assert.equal(known.ipv6, `${PREFIX6}3`);
    await linkLocalReady('vc1');
    const ra = nsx(['rdisc6', '-1', '-w', '3000', 'vc1']);
    assert.match(ra, /Stateful address conf\.\s*:\s*Yes/, 'M flag: addresses come from DHCPv6');
    assert.match(ra, /Prefix\s*:\s*fd00:218::\/64/);
    assert.equal(await dhcp6('vc1'), `${PREFIX6}3`, "known1's DHCPv6 reservation");
    const pool = await dhcp6('vc0');
    assert.match(pool, /^fd00:218::1:[0-9a-f]{1,4}$/, 'an unknown client gets an address from the pool');
    const events = JSON.parse((await ok(['vm', 'events', 'known1', '--json'])).stdout) as {
      type: string;
      detail?: Record<string, string>;
    }[];
    assert.ok(
      events.some((e) => e.type === 'dhcp6.reply' && e.detail?.ip === `${PREFIX6}3`),
      `a dhcp6.reply on the timeline: ${events.map((e) => e.type).join(', ')}`,
    );
    // DNS answers AAAA for the lab's names; the boot server answers on the IPv6 address too.
    const dns = nsx(['busybox', 'nslookup', '-type=AAAA', 'known1.pvmlab.local', `${PREFIX6}1`]);
    assert.match(dns, /fd00:218::3/);
    const health6 = nsx([
      process.execPath,
      '-e',
      `fetch('http://[${PREFIX6}1]/healthz').then(async r => process.stdout.write(r.status + ' ' + await r.text()))`,
    ]);
    assert.match(health6, /^200 /);
  });

  test('HTTP: scripts, config, cloud-init, ranges, refusals', () => {
    const mac = '52:54:00:00:aa:01';
    const ipxe = get(`/ipxe?mac=${mac.replaceAll(':', '-')}`);
    assert.equal(ipxe.status, 200);
    assert.match(
      ipxe.body,
      new RegExp(`kernel http://${SUBNET}\\.1/images/testos/x86_64/vmlinuz initrd=initrd\\.gz`),
    );
    assert.match(ipxe.body, new RegExp(`config_url=http://${SUBNET}\\.1/config/${mac}`));
    assert.equal(get('/ipxe?mac=52:54:00:99:99:99').status, 404);
    assert.equal(get('/ipxe?mac=nonsense').status, 400);
    const config = JSON.parse(get(`/config/${mac}`).body) as Record<string, unknown>;
    assert.equal(config.name, 'known1');
    assert.equal(config.reboot_on_success, true);
    assert.equal(get('/cloud-init/known1/meta-data').status, 200);
    assert.match(get('/cloud-init/known1/user-data').body, /^#cloud-config\n/);
    // Raw request paths (fetch would normalise `..` before sending).
    for (const [path, status] of [
      ['/images/..%2f..%2fssh%2fvm_key', 403],
      ['/images/testos/..%2F..%2F..%2Fssh/vm_key', 403],
      ['/images/../../ssh/vm_key', 404],
      ['/initrds/%00', 400],
    ] as const) {
      const r = rawGet(path);
      assert.equal(r.status, status, path);
      assert.doesNotMatch(r.body, /PRIVATE KEY/);
    }
    // Ranges: the image is streamed in parts with the right headers.
    const part = rawGet('/images/testos/x86_64/vmlinuz', 'bytes=0-99');
    assert.equal(part.status, 206);
    assert.equal(part.length, 100);
    assert.deepEqual(
      Buffer.from(part.bodyBase64, 'base64'),
      readFileSync(join(app, 'images', 'testos', 'x86_64', 'vmlinuz')).subarray(0, 100),
    );
  });

  test('a real UEFI guest: firmware PXE -> TFTP iPXE -> boot.ipxe -> /ipxe -> kernel + initrd over HTTP', async () => {
    await ok(['vm', 'start', 'pxe1']);
    const log = join(app, 'logs', 'pxe1.log');
    await waitFor(
      'the kernel to start the test initrd',
      () => (existsSync(log) && readFileSync(log, 'utf8').includes(PXE_MARKER)) || undefined,
      240_000,
    );
    assert.match(
      readFileSync(log, 'utf8'),
      new RegExp(`${PXE_MARKER} cmdline: .*config_url=http://${SUBNET}\\.1/config/`),
    );
    const r = await ok(['vm', 'events', 'pxe1', '--json']);
    const events = JSON.parse(r.stdout) as { type: string; at: string; detail?: Record<string, string> }[];
    const types = events.map((e) => e.type);
    const order = ['dhcp.discover', 'dhcp.ack', 'tftp.sent', 'http.ipxe', 'http.image', 'http.initrd'];
    let at = -1;
    for (const t of order) {
      const i = types.indexOf(t, at + 1);
      assert.ok(i > at, `${t} after the previous steps in ${types.join(', ')}`);
      at = i;
    }
    assert.ok(events.some((e) => e.type === 'dhcp.bootfile' && e.detail?.file === 'ipxe-x86_64.efi'));
    assert.ok(events.some((e) => e.type === 'tftp.sent' && e.detail?.file === 'ipxe-x86_64.efi'));
    assert.ok(events.some((e) => e.type === 'tftp.sent' && e.detail?.file === 'boot.ipxe'));
    for (const e of events) assert.ok(!Number.isNaN(Date.parse(e.at)), 'every event has a timestamp');
    const human = await ok(['vm', 'events', 'pxe1']);
    assert.match(human.stdout, /http\.initrd\s+path=\/initrds\/x86_64\/initrd\.gz/);
  });

  test('a real aarch64 UEFI guest (AAVMF): firmware PXE -> TFTP ipxe-arm64.efi -> HTTP -> arm64 kernel + initrd', async () => {
    await ok(['vm', 'start', 'arm1']);
    const log = join(app, 'logs', 'arm1.log');
    try {
      await waitFor(
        'the arm64 kernel to start the test initrd',
        () => (existsSync(log) && readFileSync(log, 'utf8').includes(PXE_MARKER)) || undefined,
        400_000,
      );
    } catch (err) {
      const tail = existsSync(log) ? readFileSync(log, 'utf8').slice(-3000) : '(no console log)';
      throw new Error(`${(err as Error).message}\n--- console ---\n${tail}`);
    }
    assert.match(readFileSync(log, 'utf8'), new RegExp(`${PXE_MARKER} cmdline: .*console=ttyAMA0`));
    const events = JSON.parse((await ok(['vm', 'events', 'arm1', '--json'])).stdout) as {
      type: string;
      detail?: Record<string, string>;
    }[];
    const types = events.map((e) => e.type);
    assert.ok(
      events.some((e) => e.type === 'dhcp.bootfile' && e.detail?.file === 'ipxe-arm64.efi'),
      `arm64 boot file offered: ${types.join(', ')}`,
    );
    assert.ok(events.some((e) => e.type === 'tftp.sent' && e.detail?.file === 'ipxe-arm64.efi'));
    for (const t of ['http.ipxe', 'http.image', 'http.initrd'])
      assert.ok(types.includes(t), `${t} in ${types.join(', ')}`);
    await ok(['vm', 'stop', 'arm1', '--timeout', '1']);
  });

  test('vm start --wait on an aarch64 PXE VM returns when it reports ready', async () => {
    // The arm64 "installer": virtio-net modules of Debian's arm64 kernel, DHCP, then ready.
    writeFileSync(join(app, 'initrds', 'aarch64', 'initrd.gz'), readyInitrd('aarch64'));
    const r = await cli(['vm', 'start', 'arm1', '--wait'], 400_000);
    assert.equal(
      r.code,
      0,
      `${r.stderr}\n--- console ---\n${readFileSync(join(app, 'logs', 'arm1.log'), 'utf8').slice(-2000)}`,
    );
    assert.match(r.stderr, /VM 'arm1' is ready/);
    const arm1 = JSON.parse(readFileSync(join(app, 'vms', 'arm1.json'), 'utf8')) as { mac: string };
    assert.match(get(`/ipxe?mac=${arm1.mac}`).body, /arm1 is installed; booting from its disk/);
    await ok(['vm', 'stop', 'arm1', '--timeout', '1']);
  });

  test('vm start --wait on a PXE VM returns when the machine reports ready', async () => {
    await ok(['vm', 'stop', 'pxe1', '--timeout', '1']);
    // The "installer" now brings its NIC up and posts to the events URL on its command line.
    writeFileSync(join(app, 'initrds', 'x86_64', 'initrd.gz'), readyInitrd());
    const started = Date.now();
    const r = await cli(['vm', 'start', 'pxe1', '--wait'], 300_000);
    assert.equal(
      r.code,
      0,
      `${r.stderr}\n--- console ---\n${readFileSync(join(app, 'logs', 'pxe1.log'), 'utf8').slice(-2000)}`,
    );
    assert.match(r.stderr, /VM 'pxe1' is ready/);
    const events = JSON.parse((await ok(['vm', 'events', 'pxe1', '--json'])).stdout) as {
      type: string;
      at: string;
      source: string;
      detail?: Record<string, string>;
    }[];
    const done = events.find((e) => e.type === 'installer.done' && Date.parse(e.at) >= started - 1000);
    assert.equal(done?.source, 'installer');
    assert.equal(done?.detail?.by, 'test-initrd');
    assert.equal(events[events.length - 1]?.type, 'ready');
    // Installed: the next network boot would get the local-boot script.
    const mac = (JSON.parse(readFileSync(join(app, 'vms', 'pxe1.json'), 'utf8')) as { mac: string }).mac;
    assert.match(get(`/ipxe?mac=${mac}`).body, /pxe1 is installed; booting from its disk/);
  });

  test('vm events --follow prints the history, then new events as they happen', async () => {
    const child = spawn(
      'ip',
      ['netns', 'exec', ns, process.execPath, BIN, 'vm', 'events', 'known1', '--follow', '--json'],
      {
        env: { ...process.env, PVMLAB_HOME: home, NO_COLOR: '1' },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    try {
      await waitFor('the history', () => out.includes('"http.config"') || undefined, 15_000);
      // Post an event from "the installer" while the command follows.
      nsx([
        process.execPath,
        '-e',
        `fetch('http://${SUBNET}.1/api/machines/52:54:00:00:aa:01/events', { method: 'POST', body: JSON.stringify({ type: 'installer.partition', detail: { disk: 'vda' } }) }).then((r) => process.exit(r.status === 201 ? 0 : 1))`,
      ]);
      await waitFor('the new event', () => out.includes('"installer.partition"') || undefined, 15_000);
      const last = JSON.parse(out.trim().split('\n').pop() as string) as {
        type: string;
        source: string;
        detail: { disk: string };
      };
      assert.deepEqual(
        [last.type, last.source, last.detail.disk],
        ['installer.partition', 'installer', 'vda'],
      );
    } finally {
      child.kill('SIGINT');
    }
  });

  test('killing dnsmasq: it is back within seconds and still serves', async () => {
    const before = health().dnsmasq;
    process.kill(before.pid, 'SIGKILL');
    const after = await waitFor(
      'dnsmasq to be restarted',
      () => {
        const h = health().dnsmasq;
        return h.pid > 0 && h.pid !== before.pid ? h : undefined;
      },
      10_000,
    );
    assert.equal(after.restarts, before.restarts + 1);
    assert.equal(
      dhcp('vc0', ['-V', 'PXEClient:Arch:00007:UNDI:003000', '-x', '0x5d:0007']).boot_file,
      'ipxe-x86_64.efi',
    );
  });

  test('a VM defined while the stack runs is served without a restart', async () => {
    const pid = health().dnsmasq.pid;
    await ok([
      'vm',
      'create',
      'late1',
      '--pxeboot',
      '--distro',
      'testos',
      '--mac',
      '52:54:00:00:aa:02',
      '--ip',
      `${SUBNET}.50`,
    ]);
    addClient('vc2', '52:54:00:00:aa:02');
    const lease = await waitFor(
      'the new reservation',
      () => {
        const l = dhcp('vc2', ['-V', 'PXEClient:Arch:00007:UNDI:003000', '-x', '0x5d:0007']);
        return l.ip === `${SUBNET}.50` ? l : undefined;
      },
      20_000,
    );
    assert.equal(lease.boot_file, 'ipxe-x86_64.efi');
    assert.equal(await dhcp6('vc2'), `${PREFIX6}32`, 'the IPv6 reservation too (.50 -> ::32)');
    assert.equal(get('/ipxe?mac=52:54:00:00:aa:02').status, 200);
    assert.equal(
      health().dnsmasq.pid,
      pid,
      `dnsmasq was reloaded (SIGHUP), not restarted\n${stackLog
        .split('\n')
        .filter((l) => /lease/.test(l))
        .join('\n')}`,
    );
  });
});
