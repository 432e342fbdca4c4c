import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { request as httpRequest, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { VmDefinition } from '../../../src/core/vmdef.js';
import {
  cachedExists,
  createBootServer,
  parseRange,
  safeJoin,
  type MachineLookup,
} from '../../../src/stack/http.js';
import { bootScript, installScript } from '../../../src/stack/ipxe.js';
import { normalizeMacKey } from '../../../src/stack/registry.js';
import { Timeline, type TimelineEvent } from '../../../src/stack/timeline.js';

type After = { after: (fn: () => unknown) => void };

const SSH_KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExamplePvmlabKey pvmlab@host';
const PXE1_MAC = 'be:b9:f9:8b:f5:ee';
const PXE2_MAC = '52:54:00:aa:bb:03';
const BARE_MAC = '52:54:00:aa:bb:05';
const PROV_MAC = '52:54:00:00:00:01';

const provisioner: VmDefinition = {
  name: 'provisioner',
  role: 'provisioner',
  arch: 'x86_64',
  ip: '10.217.0.1',
  mac: PROV_MAC,
};
const pxe1: VmDefinition = {
  name: 'pxe1',
  role: 'target',
  arch: 'x86_64',
  ip: '10.217.0.2',
  mac: 'BE:B9:F9:8B:F5:EE',
  pxeboot: true,
  distro: 'ubuntu-24.04',
  kernel: 'vmlinuz',
  ssh_key: `${SSH_KEY}\n`,
};
const pxe2: VmDefinition = {
  name: 'pxe2',
  role: 'target',
  arch: 'aarch64',
  ip: '10.217.0.3',
  ipv6: 'fd00:217::3',
  mac: PXE2_MAC,
  pxeboot: true,
  distro: 'debian-12',
  kernel: 'linux',
};
const bare: VmDefinition = { name: 'bare', role: 'target', arch: 'x86_64', mac: BARE_MAC };
const VMS = [bare, provisioner, pxe1, pxe2];
/** A disk VM made from a distro's cloud image: it has a distro (and a kernel), but no pxeboot. */
const WEB1_MAC = '52:54:00:aa:bb:07';
const web1: VmDefinition = {
  name: 'web1',
  role: 'target',
  arch: 'x86_64',
  ip: '10.217.0.7',
  mac: WEB1_MAC,
  distro: 'ubuntu-24.04',
  kernel: 'vmlinuz',
};
/** A PXE VM created without a distro. */
const EMPTY_MAC = '52:54:00:aa:bb:08';
const empty: VmDefinition = { name: 'empty', role: 'target', arch: 'x86_64', mac: EMPTY_MAC, pxeboot: true };

/** A MachineLookup over a fixed list, as the registry would answer. */
function lookup(vms: VmDefinition[], boom?: string): MachineLookup {
  return {
    byMac: (mac) => {
      if (mac === boom) throw new Error('lookup exploded');
      return vms.find((v) => v.mac && normalizeMacKey(v.mac) === normalizeMacKey(mac));
    },
    byName: (name) => vms.find((v) => v.name === name),
    all: () => [...vms],
  };
}

const KERNEL = Buffer.from(Array.from({ length: 100 }, (_, i) => (i * 7 + 3) & 0xff));
const BIG_SIZE = 50 * 1024 * 1024;
const BIG_TAIL = Buffer.from('pvmlab-end-marker');

interface Lab {
  port: number;
  base: string;
  dir: string;
  vmsDir: string;
  timeline: Timeline;
  server: Server;
  logs: string[];
  macForIpCalls: string[];
}

interface LabOptions {
  clientMac?: string;
  /** The lab's VMs (default VMS). */
  vms?: VmDefinition[];
  maxBodyBytes?: number;
  big?: boolean;
}

async function startLab(t: After, opts: LabOptions = {}): Promise<Lab> {
  const dir = mkdtempSync(join(tmpdir(), 'pvml-http-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const imagesDir = join(dir, 'images');
  const initrdsDir = join(dir, 'initrds');
  const vmsDir = join(dir, 'vms');
  const ubuntu = join(imagesDir, 'ubuntu-24.04', 'x86_64');
  mkdirSync(ubuntu, { recursive: true });
  mkdirSync(join(imagesDir, 'debian-12', 'aarch64'), { recursive: true });
  mkdirSync(join(initrdsDir, 'x86_64'), { recursive: true });
  mkdirSync(vmsDir);
  writeFileSync(join(ubuntu, 'vmlinuz'), KERNEL);
  writeFileSync(join(ubuntu, 'modules.cpio.gz'), 'modules');
  writeFileSync(join(ubuntu, 'empty'), '');
  writeFileSync(join(imagesDir, 'debian-12', 'aarch64', 'linux'), 'arm kernel');
  writeFileSync(join(initrdsDir, 'x86_64', 'initrd.gz'), 'installer initrd');
  writeFileSync(join(dir, 'secret'), 'outside the roots');
  if (opts.big) {
    // Sparse: 50 MiB of zeros with a marker at the very end.
    const fd = openSync(join(ubuntu, 'rootfs.tar.gz'), 'w');
    writeSync(fd, BIG_TAIL, 0, BIG_TAIL.length, BIG_SIZE - BIG_TAIL.length);
    closeSync(fd);
  }
  const timeline = new Timeline();
  const logs: string[] = [];
  const macForIpCalls: string[] = [];
  const server = createBootServer({
    machines: lookup(opts.vms ?? VMS, '52:54:00:de:ad:00'),
    timeline,
    imagesDir,
    initrdsDir,
    vmsDir,
    macForIp: (ip) => {
      macForIpCalls.push(ip);
      return ip === '127.0.0.1' ? opts.clientMac : undefined;
    },
    health: () => ({ dnsmasq: 'off' }),
    existsCacheMs: 0, // these tests add and remove marker files between requests
    ...(opts.maxBodyBytes ? { maxBodyBytes: opts.maxBodyBytes } : {}),
    log: (m) => logs.push(m),
  });
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', () => res()));
  t.after(
    () =>
      new Promise<void>((res) => {
        server.closeAllConnections();
        server.close(() => res());
      }),
  );
  const port = (server.address() as AddressInfo).port;
  return { port, base: `http://127.0.0.1:${port}`, dir, vmsDir, timeline, server, logs, macForIpCalls };
}

interface Res {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  text: string;
}

interface Req {
  method?: string;
  headers?: Record<string, string | number>;
  body?: string | Buffer;
  /** Send the body chunked, without Content-Length. */
  chunked?: boolean;
}

/** node:http, so the path goes out exactly as written (no URL normalisation). */
function req(lab: Lab, path: string, r: Req = {}): Promise<Res> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string | number> = { ...r.headers };
    if (r.body !== undefined && !r.chunked) headers['Content-Length'] = Buffer.byteLength(r.body);
    const cr = httpRequest(
      { host: '127.0.0.1', port: lab.port, method: r.method ?? 'GET', path, headers, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const body = Buffer.concat(chunks);
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body, text: body.toString('utf8') });
        });
      },
    );
    cr.on('error', reject);
    if (r.body !== undefined) cr.write(r.body);
    cr.end();
  });
}

function json<T = Record<string, unknown>>(res: Res): T {
  assert.equal(res.headers['content-type'], 'application/json');
  return JSON.parse(res.text) as T;
}

function assertText(res: Res, status: number, text: string): void {
  assert.equal(res.status, status, res.text);
  assert.equal(res.headers['content-type'], 'text/plain; charset=utf-8');
  assert.equal(res.text, text);
}

/** Events without their timestamps. */
function evs(tl: Timeline, mac: string): Omit<TimelineEvent, 'at'>[] {
  return tl.list(mac).map(({ at: _at, ...rest }) => rest);
}

// ---- pure helpers -------------------------------------------------------------------------------

test('parseRange', () => {
  const cases: [string, number, { start: number; end: number } | undefined][] = [
    ['bytes=0-9', 100, { start: 0, end: 9 }],
    ['bytes=10-', 100, { start: 10, end: 99 }],
    ['bytes=-5', 100, { start: 95, end: 99 }],
    ['bytes=-500', 100, { start: 0, end: 99 }],
    ['bytes=90-1000', 100, { start: 90, end: 99 }],
    ['bytes=99-99', 100, { start: 99, end: 99 }],
    [' bytes=0-0 ', 100, { start: 0, end: 0 }],
    ['bytes=100-', 100, undefined],
    ['bytes=100-200', 100, undefined],
    ['bytes=5-2', 100, undefined],
    ['bytes=-0', 100, undefined],
    ['bytes=-', 100, undefined],
    ['bytes=0-9,20-29', 100, undefined],
    ['bytes=a-b', 100, undefined],
    ['items=0-9', 100, undefined],
    ['bytes=0-', 0, undefined],
    ['bytes=-5', 0, undefined],
  ];
  for (const [header, size, want] of cases) assert.deepEqual(parseRange(header, size), want, header);
});

test('safeJoin', () => {
  const root = '/srv/images';
  assert.equal(safeJoin(root, '/ubuntu/x86_64/vmlinuz'), '/srv/images/ubuntu/x86_64/vmlinuz');
  assert.equal(safeJoin(root, 'ubuntu/vmlinuz'), '/srv/images/ubuntu/vmlinuz');
  assert.equal(safeJoin(root, '/a%20b/c'), '/srv/images/a b/c');
  assert.equal(safeJoin(root, '/a/./b'), '/srv/images/a/b');
  assert.equal(safeJoin(root, '//etc/passwd'), '/srv/images/etc/passwd');
  assert.equal(safeJoin(root, '/'), '/srv/images');
  for (const bad of ['/../etc/passwd', '/a/../../etc', '/..%2fetc', '/a/..%2F..%2Fetc', '%2e%2e/x', '/a/..'])
    assert.throws(() => safeJoin(root, bad), { status: 403, message: 'path traversal refused' }, bad);
  assert.throws(() => safeJoin(root, '/a%00b'), { status: 400, message: 'bad path' });
  assert.throws(() => safeJoin(root, '/a%5cb'), { status: 400, message: 'bad path' });
  assert.throws(() => safeJoin(root, '/a\\..\\b'), { status: 400, message: 'bad path' });
  assert.throws(() => safeJoin(root, '/%E0%A4%A'), { status: 400, message: 'bad path encoding' });
});

// ---- routes -------------------------------------------------------------------------------------

test('/healthz', async (t) => {
  const lab = await startLab(t);
  const res = await req(lab, '/healthz');
  assert.equal(res.status, 200);
  assert.equal(res.headers['cache-control'], 'no-store');
  assert.deepEqual(json(res), { ok: true, machines: 4, timeline: { ok: true }, dnsmasq: 'off' });
  const head = await req(lab, '/healthz', { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.equal(head.body.length, 0);
  assert.equal(head.headers['content-length'], String(Buffer.byteLength(res.text)));
});

test('/boot.ipxe, recorded for the client MAC found through macForIp', async (t) => {
  const lab = await startLab(t, { clientMac: PXE2_MAC });
  const res = await req(lab, '/boot.ipxe');
  assertText(res, 200, bootScript());
  assert.ok(res.text.startsWith('#!ipxe\n'));
  assert.ok(res.text.includes('chain http://${next-server}/ipxe?mac=${mac:hexhyp} || goto failed\nexit\n'));
  // A machine's script that left iPXE on purpose (local boot) is not "no boot script": leave quietly.
  assert.ok(res.text.includes('\nisset ${pvmlab-exit} && exit 1 ||\necho pvmlab: no boot script for ${mac}'));
  assert.deepEqual(evs(lab.timeline, PXE2_MAC), [
    { mac: PXE2_MAC, type: 'http.boot-script', source: 'http' },
  ]);
  assert.deepEqual(lab.macForIpCalls, ['127.0.0.1']);
});

test('an unknown client address records nothing', async (t) => {
  const lab = await startLab(t);
  assert.equal((await req(lab, '/boot.ipxe')).status, 200);
  assert.equal((await req(lab, '/images/ubuntu-24.04/x86_64/vmlinuz')).status, 200);
  assert.deepEqual(lab.timeline.macs(), []);
  assert.deepEqual(lab.macForIpCalls, ['127.0.0.1', '127.0.0.1']);
});

/** The lines of a failed step's label: report it (iPXE's last error code included), then the shell. */
function reportLines(b: string, mac: string, label: string, query: string): string[] {
  return [
    `:${label}`,
    `imgfetch --name pvmlab-report ${b}/ipxe/failed?mac=${mac}&${query}&errno=\${errno}` +
      ' && imgfree pvmlab-report ||',
    'goto failed',
  ];
}

function installScriptFor(host: string, vm: 'pxe1' | 'pxe2'): string {
  const b = `http://${host}`;
  if (vm === 'pxe1')
    return [
      '#!ipxe',
      `echo pvmlab: pxe1 (${PXE1_MAC}) ubuntu-24.04 x86_64`,
      `kernel ${b}/images/ubuntu-24.04/x86_64/vmlinuz initrd=initrd.gz initrd=modules.cpio.gz ip=dhcp` +
        ` console=ttyS0,115200 config_url=${b}/config/${PXE1_MAC}` +
        ` pvmlab_events=${b}/api/machines/${PXE1_MAC}/events quiet || goto failed-kernel`,
      `initrd --name initrd.gz ${b}/initrds/x86_64/initrd.gz || goto failed-initrd-1`,
      `initrd --name modules.cpio.gz ${b}/images/ubuntu-24.04/x86_64/modules.cpio.gz || goto failed-initrd-2`,
      'boot || goto failed-boot',
      ...reportLines(b, PXE1_MAC, 'failed-boot', 'step=boot'),
      ...reportLines(b, PXE1_MAC, 'failed-kernel', 'step=kernel'),
      ...reportLines(b, PXE1_MAC, 'failed-initrd-1', 'step=initrd&file=initrd.gz'),
      ...reportLines(b, PXE1_MAC, 'failed-initrd-2', 'step=initrd&file=modules.cpio.gz'),
      ':failed',
      'echo pvmlab: boot of pxe1 failed (see: pvmlab vm events pxe1); dropping to the iPXE shell',
      'shell',
      '',
    ].join('\n');
  return [
    '#!ipxe',
    `echo pvmlab: pxe2 (${PXE2_MAC}) debian-12 aarch64`,
    `kernel ${b}/images/debian-12/aarch64/linux initrd=initrd.gz ip=dhcp` +
      ` console=ttyAMA0,115200 config_url=${b}/config/${PXE2_MAC}` +
      ` pvmlab_events=${b}/api/machines/${PXE2_MAC}/events quiet || goto failed-kernel`,
    `initrd --name initrd.gz ${b}/initrds/aarch64/initrd.gz || goto failed-initrd-1`,
    'boot || goto failed-boot',
    ...reportLines(b, PXE2_MAC, 'failed-boot', 'step=boot'),
    ...reportLines(b, PXE2_MAC, 'failed-kernel', 'step=kernel'),
    ...reportLines(b, PXE2_MAC, 'failed-initrd-1', 'step=initrd&file=initrd.gz'),
    ':failed',
    'echo pvmlab: boot of pxe2 failed (see: pvmlab vm events pxe2); dropping to the iPXE shell',
    'shell',
    '',
  ].join('\n');
}

test('/ipxe: install script with the Host header, per-arch console, modules initrd only if present', async (t) => {
  const lab = await startLab(t);
  // iPXE's ${mac:hexhyp} form, and the client's Host header (how it reached us).
  const r1 = await req(lab, '/ipxe?mac=be-b9-f9-8b-f5-ee', { headers: { Host: 'boot.lab:8080' } });
  assertText(r1, 200, installScriptFor('boot.lab:8080', 'pxe1'));
  const r2 = await req(lab, `/ipxe?mac=${PXE2_MAC.toUpperCase()}`);
  assertText(r2, 200, installScriptFor(`127.0.0.1:${lab.port}`, 'pxe2'));
  assert.equal(r2.text.includes('modules.cpio.gz'), false);
  // A Host header that is not a host falls back to the address the client connected to.
  const r3 = await req(lab, '/ipxe?mac=be-b9-f9-8b-f5-ee', { headers: { Host: 'evil.example/x?y' } });
  assertText(r3, 200, installScriptFor(`127.0.0.1:${lab.port}`, 'pxe1'));
  assert.deepEqual(evs(lab.timeline, PXE1_MAC), [
    { mac: PXE1_MAC, type: 'http.ipxe', source: 'http', detail: { script: 'install' } },
    { mac: PXE1_MAC, type: 'http.ipxe', source: 'http', detail: { script: 'install' } },
  ]);
  assert.deepEqual(evs(lab.timeline, PXE2_MAC), [
    { mac: PXE2_MAC, type: 'http.ipxe', source: 'http', detail: { script: 'install' } },
  ]);
});

test('/ipxe: unknown MAC 404, malformed 400 (plain text for the iPXE console)', async (t) => {
  const lab = await startLab(t);
  assertText(
    await req(lab, '/ipxe?mac=52-54-00-00-00-99'),
    404,
    'pvmlab stack: no VM with MAC 52:54:00:00:00:99 in this lab\n',
  );
  assertText(await req(lab, '/ipxe?mac=zz'), 400, "pvmlab stack: malformed MAC address 'zz'\n");
  assertText(await req(lab, '/ipxe'), 400, "pvmlab stack: malformed MAC address ''\n");
  assert.deepEqual(lab.timeline.macs(), []);
});

test('/ipxe: a PXE VM without a distro gets a script that says so on its console', async (t) => {
  const lab = await startLab(t, { vms: [...VMS, empty] });
  const r = await req(lab, `/ipxe?mac=${EMPTY_MAC}`);
  assert.equal(r.status, 200);
  const body = r.body.toString();
  assert.match(
    body,
    /^#!ipxe\necho pvmlab: empty has no distro to install \(create it with: pvmlab vm create empty --pxeboot --distro <name>\)\n/,
  );
  assert.match(body, /\nset pvmlab-exit 1\nsleep 5\nexit 1\n$/);
  assert.deepEqual(evs(lab.timeline, EMPTY_MAC), [
    { mac: EMPTY_MAC, type: 'http.ipxe', source: 'http', detail: { script: 'nothing-to-boot' } },
  ]);
});

test('/ipxe: a disk VM never gets the install script, not even with <name>.reinstall', async (t) => {
  const lab = await startLab(t, { vms: [...VMS, web1] });
  const diskVmScript = (name: string) =>
    '#!ipxe\n' +
    `echo pvmlab: ${name} is a disk VM (not created with --pxeboot): the stack does not install it;` +
    ' booting from its disk\nset pvmlab-exit 1\nexit 1\n';
  // web1 came from a cloud image: it has a distro and a kernel, and a PXE fallback must not wipe it.
  assertText(await req(lab, `/ipxe?mac=${WEB1_MAC}`), 200, diskVmScript('web1'));
  writeFileSync(join(lab.vmsDir, 'web1.reinstall'), '');
  assertText(await req(lab, `/ipxe?mac=${WEB1_MAC}`), 200, diskVmScript('web1'));
  // Without a distro, and the provisioner: the same answer (not "nothing to boot").
  writeFileSync(join(lab.vmsDir, 'bare.reinstall'), '');
  assertText(await req(lab, `/ipxe?mac=${BARE_MAC}`), 200, diskVmScript('bare'));
  assertText(await req(lab, `/ipxe?mac=${PROV_MAC}`), 200, diskVmScript('provisioner'));
  const localBoot = { script: 'local-boot', reason: 'disk-vm' };
  assert.deepEqual(evs(lab.timeline, WEB1_MAC), [
    { mac: WEB1_MAC, type: 'http.ipxe', source: 'http', detail: localBoot },
    { mac: WEB1_MAC, type: 'http.ipxe', source: 'http', detail: localBoot },
  ]);
  assert.deepEqual(evs(lab.timeline, BARE_MAC), [
    { mac: BARE_MAC, type: 'http.ipxe', source: 'http', detail: localBoot },
  ]);
  assert.deepEqual(evs(lab.timeline, PROV_MAC), [
    { mac: PROV_MAC, type: 'http.ipxe', source: 'http', detail: localBoot },
  ]);
  // A PXE VM with the same distro is still installed.
  assertText(await req(lab, `/ipxe?mac=${PXE1_MAC}`), 200, installScriptFor(`127.0.0.1:${lab.port}`, 'pxe1'));
});

test('/ipxe: a ready machine boots locally unless <name>.reinstall exists', async (t) => {
  const lab = await startLab(t);
  lab.timeline.add(PXE1_MAC, 'ready', 'cloud-init');
  const local = await req(lab, `/ipxe?mac=${PXE1_MAC}`);
  assertText(
    local,
    200,
    '#!ipxe\necho pvmlab: pxe1 is installed; booting from its disk (ask for a reinstall to install again)\n' +
      'set pvmlab-exit 1\nexit 1\n',
  );
  assert.deepEqual(evs(lab.timeline, PXE1_MAC).slice(1), [
    {
      mac: PXE1_MAC,
      type: 'http.ipxe',
      source: 'http',
      detail: { script: 'local-boot', reason: 'installed' },
    },
  ]);
  // Other machines are not affected.
  assert.equal(
    (await req(lab, `/ipxe?mac=${PXE2_MAC}`)).text.startsWith('#!ipxe\necho pvmlab: pxe2 ('),
    true,
  );

  writeFileSync(join(lab.vmsDir, 'pxe1.reinstall'), '');
  const again = await req(lab, `/ipxe?mac=${PXE1_MAC}`, { headers: { Host: '10.217.0.1' } });
  assertText(again, 200, installScriptFor('10.217.0.1', 'pxe1'));
  rmSync(join(lab.vmsDir, 'pxe1.reinstall'));
  assert.equal((await req(lab, `/ipxe?mac=${PXE1_MAC}`)).text, local.text);
});

test('installScript: each failing step jumps to its own label, which reports it before the shell', () => {
  const script = installScript({
    vm: pxe1,
    mac: PXE1_MAC,
    base: 'http://10.217.0.1',
    kernel: 'http://10.217.0.1/images/ubuntu-24.04/x86_64/vmlinuz',
    initrds: [
      { name: 'initrd.gz', url: 'http://10.217.0.1/initrds/x86_64/initrd.gz' },
      { name: 'modules.cpio.gz', url: 'http://10.217.0.1/images/ubuntu-24.04/x86_64/modules.cpio.gz' },
    ],
  });
  const lines = script.split('\n');
  const labels = lines.filter((l) => l.startsWith(':')).map((l) => l.slice(1));
  assert.deepEqual(labels, ['failed-boot', 'failed-kernel', 'failed-initrd-1', 'failed-initrd-2', 'failed']);
  // Every goto has its label; each step its own.
  const gotos = [...script.matchAll(/goto (\S+)/g)].map((m) => m[1] as string);
  for (const g of gotos) assert.ok(labels.includes(g), `label :${g}`);
  assert.match(
    script,
    /\nkernel \S+ initrd=initrd\.gz initrd=modules\.cpio\.gz ip=dhcp .* \|\| goto failed-kernel\n/,
  );
  assert.match(script, /\ninitrd --name initrd\.gz \S+ \|\| goto failed-initrd-1\n/);
  assert.match(script, /\ninitrd --name modules\.cpio\.gz \S+ \|\| goto failed-initrd-2\n/);
  assert.match(script, /\nboot \|\| goto failed-boot\n/);
  // The reports: iPXE's ${errno} (expanded by iPXE), fetched as a named image that is freed again;
  // a report that cannot be sent does not stop the script before the shell.
  const reports = lines.filter((l) => l.startsWith('imgfetch '));
  assert.deepEqual(
    reports.map((l) => new URL(l.split(' ')[3] as string).search),
    [
      `?mac=${PXE1_MAC}&step=boot&errno=\${errno}`,
      `?mac=${PXE1_MAC}&step=kernel&errno=\${errno}`,
      `?mac=${PXE1_MAC}&step=initrd&file=initrd.gz&errno=\${errno}`,
      `?mac=${PXE1_MAC}&step=initrd&file=modules.cpio.gz&errno=\${errno}`,
    ],
  );
  for (const l of reports) {
    assert.match(
      l,
      /^imgfetch --name pvmlab-report http:\/\/10\.217\.0\.1\/ipxe\/failed\?\S+ && imgfree pvmlab-report \|\|$/,
    );
    assert.equal(lines[lines.indexOf(l) + 1], 'goto failed');
  }
  assert.deepEqual(lines.slice(-3), [
    'echo pvmlab: boot of pxe1 failed (see: pvmlab vm events pxe1); dropping to the iPXE shell',
    'shell',
    '',
  ]);
});

test('/ipxe/failed: records ipxe.failed with the step, the error code and its ipxe.org page', async (t) => {
  const lab = await startLab(t);
  const r = await req(lab, `/ipxe/failed?mac=${PXE1_MAC.replaceAll(':', '-')}&step=kernel&errno=0x2d0c618e`);
  assertText(r, 200, '');
  assert.equal(r.headers['content-length'], '0');
  assertText(
    await req(lab, `/ipxe/failed?mac=${PXE1_MAC}&step=initrd&file=modules.cpio.gz&errno=0x3E11623B`),
    200,
    '',
  );
  // Short codes are iPXE's %#lx without leading zeros; the page has all eight digits.
  assertText(await req(lab, `/ipxe/failed?mac=${PXE1_MAC}&step=boot&errno=0x1`), 200, '');
  assert.deepEqual(evs(lab.timeline, PXE1_MAC), [
    {
      mac: PXE1_MAC,
      type: 'ipxe.failed',
      source: 'http',
      detail: { step: 'kernel', errno: '0x2d0c618e', help: 'https://ipxe.org/err/2d0c618e' },
    },
    {
      mac: PXE1_MAC,
      type: 'ipxe.failed',
      source: 'http',
      detail: {
        step: 'initrd',
        file: 'modules.cpio.gz',
        errno: '0x3e11623b',
        help: 'https://ipxe.org/err/3e11623b',
      },
    },
    {
      mac: PXE1_MAC,
      type: 'ipxe.failed',
      source: 'http',
      detail: { step: 'boot', errno: '0x00000001', help: 'https://ipxe.org/err/00000001' },
    },
  ]);

  // Unknown machine 404, malformed input 400; nothing recorded.
  assertText(
    await req(lab, '/ipxe/failed?mac=52:54:00:00:00:99&step=kernel&errno=0x1'),
    404,
    'pvmlab stack: no VM with MAC 52:54:00:00:00:99 in this lab\n',
  );
  assertText(
    await req(lab, '/ipxe/failed?mac=xx&step=kernel&errno=0x1'),
    400,
    "pvmlab stack: malformed MAC address 'xx'\n",
  );
  const badStep = 'pvmlab stack: step must be one of kernel, initrd, boot\n';
  const badErrno = "pvmlab stack: errno must be iPXE's ${errno}, a hex number such as 0x3e11623b\n";
  const badFile = 'pvmlab stack: file must be the name of an initrd, with step=initrd\n';
  const q = `/ipxe/failed?mac=${PXE1_MAC}`;
  for (const [query, want] of [
    ['&errno=0x1', badStep],
    ['&step=&errno=0x1', badStep],
    ['&step=shell&errno=0x1', badStep],
    ['&step=KERNEL&errno=0x1', badStep],
    [`&step=${'k'.repeat(5000)}&errno=0x1`, badStep],
    ['&step=kernel', badErrno],
    ['&step=kernel&errno=', badErrno],
    ['&step=kernel&errno=${errno}', badErrno],
    ['&step=kernel&errno=0x123456789', badErrno],
    ['&step=kernel&errno=-1', badErrno],
    ['&step=kernel&errno=0xzz', badErrno],
    ['&step=kernel&errno=0x1%0Aecho', badErrno],
    ['&step=kernel&file=initrd.gz&errno=0x1', badFile],
    ['&step=initrd&file=&errno=0x1', badFile],
    ['&step=initrd&file=../x&errno=0x1', badFile],
    ['&step=initrd&file=a%20b&errno=0x1', badFile],
    [`&step=initrd&file=${'f'.repeat(65)}&errno=0x1`, badFile],
  ] as const)
    assertText(await req(lab, `${q}${query}`), 400, want);
  assert.equal(lab.timeline.list(PXE1_MAC).length, 3);
  assert.deepEqual(lab.timeline.macs(), [PXE1_MAC]);
});

test('errors answered to a known client are http.error events with the path and status; others record nothing', async (t) => {
  const lab = await startLab(t, { clientMac: PXE1_MAC });
  const missing = '/images/ubuntu-24.04/x86_64/rootfs.tar.gz';
  assert.equal((await req(lab, missing)).status, 404);
  assert.equal((await req(lab, '/initrds/aarch64/initrd.gz', { method: 'HEAD' })).status, 404);
  assert.equal((await req(lab, '/images/..%2fsecret')).status, 403);
  assert.equal((await req(lab, '/images/vmlinuz%00')).status, 400);
  assert.equal((await req(lab, '/ipxe/failed?mac=52:54:00:00:00:99&step=kernel&errno=0x1')).status, 404);
  assert.equal((await req(lab, `/ipxe/failed?mac=${PXE1_MAC}&step=nope&errno=0x1`)).status, 400);
  assert.equal((await req(lab, '/nope')).status, 404);
  assert.equal(
    (await req(lab, `/api/machines/${PXE1_MAC}/events`, { method: 'POST', body: '{' })).status,
    400,
  );
  // Successes are their usual events, not errors.
  assert.equal((await req(lab, '/images/ubuntu-24.04/x86_64/vmlinuz')).status, 200);
  assert.deepEqual(evs(lab.timeline, PXE1_MAC), [
    { mac: PXE1_MAC, type: 'http.error', source: 'http', detail: { path: missing, status: 404 } },
    {
      mac: PXE1_MAC,
      type: 'http.error',
      source: 'http',
      detail: { path: '/initrds/aarch64/initrd.gz', status: 404 },
    },
    {
      mac: PXE1_MAC,
      type: 'http.error',
      source: 'http',
      detail: { path: '/images/..%2fsecret', status: 403 },
    },
    {
      mac: PXE1_MAC,
      type: 'http.error',
      source: 'http',
      detail: { path: '/images/vmlinuz%00', status: 400 },
    },
    { mac: PXE1_MAC, type: 'http.error', source: 'http', detail: { path: '/ipxe/failed', status: 404 } },
    { mac: PXE1_MAC, type: 'http.error', source: 'http', detail: { path: '/ipxe/failed', status: 400 } },
    { mac: PXE1_MAC, type: 'http.error', source: 'http', detail: { path: '/nope', status: 404 } },
    {
      mac: PXE1_MAC,
      type: 'http.error',
      source: 'http',
      detail: { path: `/api/machines/${PXE1_MAC}/events`, status: 400 },
    },
    {
      mac: PXE1_MAC,
      type: 'http.image',
      source: 'http',
      detail: { path: '/images/ubuntu-24.04/x86_64/vmlinuz', bytes: 100 },
    },
  ]);
  // A very long path is cut.
  await req(lab, `/images/${'x'.repeat(1000)}`);
  assert.equal(lab.timeline.last(PXE1_MAC, 'http.error')?.detail?.path, `/images/${'x'.repeat(248)}`);

  // A client the stack cannot map to a machine: nothing is recorded.
  const other = await startLab(t);
  assert.equal((await req(other, missing)).status, 404);
  assert.equal((await req(other, '/nope')).status, 404);
  assert.deepEqual(other.timeline.macs(), []);
});

test('/config/<mac>: installer configuration; reboot_on_success off with <name>.noreboot', async (t) => {
  const lab = await startLab(t);
  const res = await req(lab, '/config/BE-B9-F9-8B-F5-EE', { headers: { Host: '10.217.0.1' } });
  assert.equal(res.status, 200);
  const b = 'http://10.217.0.1';
  const want = {
    name: 'pxe1',
    mac: PXE1_MAC,
    arch: 'x86_64',
    distro: 'ubuntu-24.04',
    cloud_init_url: `${b}/cloud-init/pxe1`,
    // No manifest (assets placed by hand): the original tool's layout.
    rootfs_url: `${b}/images/ubuntu-24.04/x86_64/rootfs.tar.gz`,
    rootfs_format: 'tar.gz',
    rootfs_bytes: 0,
    kmods_url: `${b}/images/ubuntu-24.04/x86_64/modules.cpio.gz`,
    kernel_url: `${b}/images/ubuntu-24.04/x86_64/vmlinuz`,
    kernel_cmdline: 'console=ttyS0,115200',
    events_url: `${b}/api/machines/${PXE1_MAC}/events`,
    reboot_on_success: true,
  };
  assert.deepEqual(json(res), want);
  assert.deepEqual(evs(lab.timeline, PXE1_MAC), [{ mac: PXE1_MAC, type: 'http.config', source: 'http' }]);

  writeFileSync(join(lab.vmsDir, 'pxe1.noreboot'), '');
  assert.deepEqual(json(await req(lab, `/config/${PXE1_MAC}`, { headers: { Host: '10.217.0.1' } })), {
    ...want,
    reboot_on_success: false,
  });
  // Another machine's marker does not count.
  assert.equal(json(await req(lab, `/config/${PXE2_MAC}`)).reboot_on_success, true);

  const bareCfg = json(await req(lab, `/config/${BARE_MAC}`));
  assert.equal(bareCfg.distro, null);
  assert.equal(bareCfg.kernel_url, null);
  assertText(await req(lab, '/config/nope'), 400, "pvmlab stack: malformed MAC address 'nope'\n");
  assertText(
    await req(lab, '/config/52:54:00:00:00:99'),
    404,
    'pvmlab stack: no VM with MAC 52:54:00:00:00:99 in this lab\n',
  );
});

test('a pulled distro: /config and /ipxe follow its manifest; ?format=sh is the same config for busybox sh', async (t) => {
  const lab = await startLab(t);
  const dir = join(lab.dir, 'images', 'debian-12', 'aarch64');
  writeFileSync(
    join(dir, 'manifest.json'),
    JSON.stringify({
      schema_version: 1,
      distro: 'debian-12',
      arch: 'aarch64',
      kernel: 'vmlinuz',
      modules: 'modules.cpio.gz',
      rootfs: 'rootfs.ext4.zst',
      rootfs_format: 'ext4.zst',
      rootfs_bytes: 4242,
      source: 'test',
      created: '2026-12-01T00:00:00Z',
      sha256: {},
    }),
  );
  writeFileSync(join(dir, 'modules.cpio.gz'), 'arm modules');
  const b = 'http://10.217.0.1';
  const cfg = json(await req(lab, `/config/${PXE2_MAC}`, { headers: { Host: '10.217.0.1' } }));
  assert.equal(cfg.rootfs_url, `${b}/images/debian-12/aarch64/rootfs.ext4.zst`);
  assert.equal(cfg.rootfs_format, 'ext4.zst');
  assert.equal(cfg.rootfs_bytes, 4242);
  assert.equal(
    cfg.kernel_url,
    `${b}/images/debian-12/aarch64/vmlinuz`,
    "the manifest's kernel, not the definition's",
  );
  assert.equal(cfg.kernel_cmdline, 'console=ttyAMA0,115200');
  const ipxe = await req(lab, `/ipxe?mac=${PXE2_MAC}`, { headers: { Host: '10.217.0.1' } });
  assert.match(
    ipxe.body.toString(),
    new RegExp(`kernel ${b}/images/debian-12/aarch64/vmlinuz initrd=initrd.gz initrd=modules.cpio.gz `),
  );
  const sh = await req(lab, `/config/${PXE2_MAC}?format=sh`, { headers: { Host: '10.217.0.1' } });
  assert.equal(sh.status, 200);
  const out = execFileSync(
    'busybox',
    [
      'sh',
      '-c',
      `${sh.body.toString()}\nprintf '%s|' "$PVMLAB_NAME" "$PVMLAB_ROOTFS_FORMAT" "$PVMLAB_ROOTFS_BYTES" "$PVMLAB_REBOOT_ON_SUCCESS" "$PVMLAB_KERNEL_CMDLINE"`,
    ],
    {
      encoding: 'utf8',
    },
  );
  assert.equal(out, 'pxe2|ext4.zst|4242|true|console=ttyAMA0,115200|');
});

test('/ipxe for a PXE VM whose distro is not pulled says how to pull it', async (t) => {
  const lab = await startLab(t, {
    vms: [{ ...pxe2, name: 'fresh', mac: '52:54:00:aa:bb:09', distro: 'debian-12', kernel: undefined }],
  });
  const r = await req(lab, '/ipxe?mac=52:54:00:aa:bb:09');
  assert.equal(r.status, 200);
  assert.match(
    r.body.toString(),
    /fresh's distro debian-12 \(aarch64\) is not pulled \(run: pvmlab distro pull --distro debian-12 --arch aarch64\)/,
  );
});

test('/cloud-init/<name>/...: NoCloud documents', async (t) => {
  const lab = await startLab(t);
  const h = { headers: { Host: '10.217.0.1:8080' } };
  const meta = await req(lab, '/cloud-init/pxe1/meta-data', h);
  assert.equal(meta.status, 200);
  assert.deepEqual(JSON.parse(meta.text), { 'instance-id': 'iid-pvmlab-pxe1', 'local-hostname': 'pxe1' });

  const user = await req(lab, '/cloud-init/pxe1/user-data', h);
  assert.equal(user.status, 200);
  assert.ok(user.text.startsWith('#cloud-config\n'));
  const doc = JSON.parse(user.text.slice('#cloud-config\n'.length)) as {
    hostname: string;
    fqdn: string;
    users: { name: string; ssh_authorized_keys: string[] }[];
    phone_home: { url: string; post: string[]; tries: number };
  };
  assert.equal(doc.hostname, 'pxe1');
  assert.equal(doc.fqdn, 'pxe1.pvmlab.local');
  assert.deepEqual(doc.users[0]?.ssh_authorized_keys, [SSH_KEY]);
  assert.deepEqual(doc.phone_home, {
    url: `http://10.217.0.1:8080/api/machines/${PXE1_MAC}/phone-home`,
    post: ['instance_id', 'hostname'],
    tries: 10,
  });

  const net = await req(lab, '/cloud-init/pxe2/network-config');
  assert.deepEqual(JSON.parse(net.text), {
    version: 2,
    ethernets: { lab0: { match: { macaddress: PXE2_MAC }, dhcp4: true, dhcp6: true } },
  });
  const vendor = await req(lab, '/cloud-init/pxe1/vendor-data');
  assertText(vendor, 200, '');

  assertText(
    await req(lab, '/cloud-init/pxe1/secrets'),
    404,
    "pvmlab stack: no cloud-init document 'secrets'\n",
  );
  assertText(await req(lab, '/cloud-init/ghost/meta-data'), 404, "pvmlab stack: no VM named 'ghost'\n");
  assert.deepEqual(
    evs(lab.timeline, PXE1_MAC).map((e) => e.detail),
    [{ file: 'meta-data' }, { file: 'user-data' }, { file: 'vendor-data' }],
  );
  assert.deepEqual(evs(lab.timeline, PXE2_MAC), [
    { mac: PXE2_MAC, type: 'http.cloud-init', source: 'http', detail: { file: 'network-config' } },
  ]);
});

test('static files: GET, HEAD, ranges, 416, and the recorded event', async (t) => {
  const lab = await startLab(t, { clientMac: PXE1_MAC });
  const path = '/images/ubuntu-24.04/x86_64/vmlinuz';
  const full = await req(lab, path);
  assert.equal(full.status, 200);
  assert.deepEqual(full.body, KERNEL);
  assert.equal(full.headers['content-length'], '100');
  assert.equal(full.headers['content-type'], 'application/octet-stream');
  assert.equal(full.headers['accept-ranges'], 'bytes');
  assert.match(full.headers['last-modified'] ?? '', /^\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} GMT$/);
  assert.equal(full.headers['content-range'], undefined);

  const head = await req(lab, path, { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.equal(head.headers['content-length'], '100');
  assert.equal(head.body.length, 0);

  const ranges: [string, number, number][] = [
    ['bytes=0-9', 0, 9],
    ['bytes=-5', 95, 99],
    ['bytes=10-', 10, 99],
    ['bytes=50-5000', 50, 99],
  ];
  for (const [range, start, end] of ranges) {
    const r = await req(lab, path, { headers: { Range: range } });
    assert.equal(r.status, 206, range);
    assert.equal(r.headers['content-range'], `bytes ${start}-${end}/100`, range);
    assert.equal(r.headers['content-length'], String(end - start + 1), range);
    assert.deepEqual(r.body, KERNEL.subarray(start, end + 1), range);
  }
  for (const range of ['bytes=100-', 'bytes=200-300', 'bytes=9-2']) {
    const r = await req(lab, path, { headers: { Range: range } });
    assert.equal(r.status, 416, range);
    assert.equal(r.headers['content-range'], 'bytes */100', range);
    assert.equal(r.body.length, 0, range);
  }

  const initrd = await req(lab, '/initrds/x86_64/initrd.gz');
  assert.equal(initrd.status, 200);
  assert.equal(initrd.text, 'installer initrd');
  const empty = await req(lab, '/images/ubuntu-24.04/x86_64/empty');
  assert.equal(empty.status, 200);
  assert.equal(empty.headers['content-length'], '0');
  assert.equal(empty.body.length, 0);

  // One event per served (or HEAD) request; a 416 is an http.error.
  const types = evs(lab.timeline, PXE1_MAC).map((e) => e.type);
  assert.deepEqual(types, [
    'http.image',
    'http.image',
    'http.image',
    'http.image',
    'http.image',
    'http.image',
    'http.error',
    'http.error',
    'http.error',
    'http.initrd',
    'http.image',
  ]);
  assert.deepEqual(lab.timeline.list(PXE1_MAC)[0]?.detail, { path, bytes: 100 });
  assert.deepEqual(lab.timeline.list(PXE1_MAC)[6]?.detail, { path, status: 416 });
  assert.deepEqual(lab.timeline.list(PXE1_MAC)[9]?.detail, { path: '/initrds/x86_64/initrd.gz', bytes: 16 });
});

test('static files: traversal 403, NUL 400, bad encoding 400, missing or directory 404', async (t) => {
  const lab = await startLab(t);
  for (const p of [
    '/images/..%2fsecret',
    '/images/..%2F..%2F..%2Fetc%2Fpasswd',
    '/images/ubuntu-24.04/..%2f..%2fsecret',
    '/initrds/x86_64/..%2f..%2fsecret',
  ])
    assertText(await req(lab, p), 403, 'pvmlab stack: path traversal refused\n');
  assertText(await req(lab, '/images/vmlinuz%00.txt'), 400, 'pvmlab stack: bad path\n');
  assertText(await req(lab, '/images/a%5c..%5csecret'), 400, 'pvmlab stack: bad path\n');
  assertText(await req(lab, '/images/%E0%A4%A'), 400, 'pvmlab stack: bad path encoding\n');
  assertText(
    await req(lab, '/images/ubuntu-24.04/x86_64/nope'),
    404,
    'pvmlab stack: /images/ubuntu-24.04/x86_64/nope not found\n',
  );
  assertText(
    await req(lab, '/images/ubuntu-24.04/x86_64'),
    404,
    'pvmlab stack: /images/ubuntu-24.04/x86_64 not found\n',
  );
  assertText(
    await req(lab, '/initrds/aarch64/initrd.gz'),
    404,
    'pvmlab stack: /initrds/aarch64/initrd.gz not found\n',
  );
  // Plain ../ is resolved by the URL parser before routing: it cannot leave /images either.
  assertText(await req(lab, '/images/../secret'), 404, 'pvmlab stack: no route for GET /secret\n');
});

test('a 50 MiB file is streamed whole, and ranges reach its end', async (t) => {
  const lab = await startLab(t, { big: true });
  const path = '/images/ubuntu-24.04/x86_64/rootfs.tar.gz';
  const { status, length, bytes, tail, chunks } = await new Promise<{
    status: number;
    length: string | undefined;
    bytes: number;
    tail: Buffer;
    chunks: number;
  }>((resolve, reject) => {
    const cr = httpRequest({ host: '127.0.0.1', port: lab.port, path, agent: false }, (res) => {
      let bytes = 0;
      let chunks = 0;
      let tail = Buffer.alloc(0);
      res.on('data', (c: Buffer) => {
        bytes += c.length;
        chunks++;
        tail = Buffer.concat([tail, c]).subarray(-BIG_TAIL.length);
      });
      res.on('error', reject);
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, length: res.headers['content-length'], bytes, tail, chunks }),
      );
    });
    cr.on('error', reject);
    cr.end();
  });
  assert.equal(status, 200);
  assert.equal(length, String(BIG_SIZE));
  assert.equal(bytes, BIG_SIZE);
  assert.deepEqual(tail, BIG_TAIL);
  assert.ok(chunks > 1, 'arrived in pieces');

  const last = await req(lab, path, { headers: { Range: `bytes=${BIG_SIZE - 100}-` } });
  assert.equal(last.status, 206);
  assert.equal(last.headers['content-range'], `bytes ${BIG_SIZE - 100}-${BIG_SIZE - 1}/${BIG_SIZE}`);
  assert.equal(last.body.length, 100);
  assert.deepEqual(last.body.subarray(-BIG_TAIL.length), BIG_TAIL);
  assert.ok(last.body.subarray(0, 100 - BIG_TAIL.length).every((b) => b === 0));
});

test('/api/machines and /api/machines/<mac>/timeline', async (t) => {
  const lab = await startLab(t);
  const e1 = lab.timeline.add(PXE1_MAC, 'dhcp.ack', 'dhcp', { ip: '10.217.0.2' });
  const e2 = lab.timeline.add(PXE1_MAC, 'ready', 'cloud-init');
  const e3 = lab.timeline.add(PXE2_MAC, 'tftp.sent', 'tftp');
  lab.timeline.add('52:54:00:00:00:77', 'stranger', 'stack');

  const list = await req(lab, '/api/machines');
  assert.equal(list.status, 200);
  assert.deepEqual(json<unknown[]>(list), [
    {
      name: 'bare',
      mac: BARE_MAC,
      ip: null,
      arch: 'x86_64',
      distro: null,
      pxeboot: false,
      ready: false,
      last_event: null,
    },
    {
      name: 'provisioner',
      mac: PROV_MAC,
      ip: '10.217.0.1',
      arch: 'x86_64',
      distro: null,
      pxeboot: false,
      ready: false,
      last_event: null,
    },
    {
      name: 'pxe1',
      mac: PXE1_MAC,
      ip: '10.217.0.2',
      arch: 'x86_64',
      distro: 'ubuntu-24.04',
      pxeboot: true,
      ready: true,
      last_event: { type: 'ready', at: e2.at },
    },
    {
      name: 'pxe2',
      mac: PXE2_MAC,
      ip: '10.217.0.3',
      arch: 'aarch64',
      distro: 'debian-12',
      pxeboot: true,
      ready: false,
      last_event: { type: 'tftp.sent', at: e3.at },
    },
  ]);

  const tl = await req(lab, '/api/machines/BE-B9-F9-8B-F5-EE/timeline');
  assert.equal(tl.status, 200);
  assert.deepEqual(json(tl), { name: 'pxe1', mac: PXE1_MAC, events: [e1, e2] });
  assert.deepEqual(json(await req(lab, `/api/machines/${BARE_MAC}/timeline`)), {
    name: 'bare',
    mac: BARE_MAC,
    events: [],
  });
  assertText(
    await req(lab, '/api/machines/52:54:00:00:00:77/timeline'),
    404,
    'pvmlab stack: no VM with MAC 52:54:00:00:00:77 in this lab\n',
  );
  assertText(
    await req(lab, '/api/machines/pxe1/timeline'),
    400,
    "pvmlab stack: malformed MAC address 'pxe1'\n",
  );
});

test('/api/machines/<mac>/timeline?follow=1 streams the history, then new events of that machine', async (t) => {
  const lab = await startLab(t);
  const h1 = lab.timeline.add(PXE1_MAC, 'dhcp.discover', 'dhcp');
  const h2 = lab.timeline.add(PXE1_MAC, 'dhcp.ack', 'dhcp', { ip: '10.217.0.2' });
  lab.timeline.add(PXE2_MAC, 'other', 'stack');

  const received: TimelineEvent[] = [];
  let waiter: (() => void) | undefined;
  let want = 0;
  const until = (n: number) =>
    new Promise<void>((res, rej) => {
      const timer = setTimeout(() => rej(new Error(`only ${received.length} of ${n} lines`)), 3000);
      want = n;
      waiter = () => {
        clearTimeout(timer);
        res();
      };
      if (received.length >= n) waiter();
    });
  let contentType: string | undefined;
  const cr = httpRequest({
    host: '127.0.0.1',
    port: lab.port,
    path: `/api/machines/${PXE1_MAC}/timeline?follow=1`,
    agent: false,
  });
  t.after(() => cr.destroy());
  cr.on('response', (res) => {
    contentType = res.headers['content-type'];
    let buf = '';
    res.setEncoding('utf8');
    res.on('data', (s: string) => {
      buf += s;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        received.push(JSON.parse(buf.slice(0, i)) as TimelineEvent);
        buf = buf.slice(i + 1);
      }
      if (received.length >= want) waiter?.();
    });
    res.on('error', () => undefined);
  });
  cr.on('error', () => undefined);
  cr.end();

  await until(2);
  assert.equal(contentType, 'application/x-ndjson');
  assert.deepEqual(received, [h1, h2]);
  assert.equal(lab.timeline.listenerCount('event'), 1);

  lab.timeline.add(PXE2_MAC, 'not-for-this-stream', 'stack');
  const n1 = lab.timeline.add(PXE1_MAC, 'http.ipxe', 'http', { script: 'install' });
  await until(3);
  const n2 = lab.timeline.add('BE:B9:F9:8B:F5:EE', 'ready', 'cloud-init');
  await until(4);
  assert.deepEqual(received, [h1, h2, n1, n2]);

  // The client goes away: the subscription ends with it.
  cr.destroy();
  const end = Date.now() + 2000;
  while (lab.timeline.listenerCount('event') > 0 && Date.now() < end)
    await new Promise((r) => setTimeout(r, 10));
  assert.equal(lab.timeline.listenerCount('event'), 0);
});

test('POST /api/machines/<mac>/events', async (t) => {
  const lab = await startLab(t, { maxBodyBytes: 1024 });
  const path = `/api/machines/${PXE1_MAC}/events`;
  const post = (body: string | Buffer, extra: Partial<Req> = {}) =>
    req(lab, path, { method: 'POST', body, headers: { 'Content-Type': 'application/json' }, ...extra });

  const ok = await post(
    JSON.stringify({
      type: 'installer.partition',
      detail: { disk: '/dev/vda', n: 3, ok: true, nested: { x: 1 }, list: [1], nothing: null },
    }),
  );
  assert.equal(ok.status, 201, ok.text);
  const ev = json<TimelineEvent>(ok);
  assert.deepEqual(ev, {
    at: ev.at,
    mac: PXE1_MAC,
    type: 'installer.partition',
    source: 'installer',
    detail: { disk: '/dev/vda', n: 3, ok: true },
  });
  assert.deepEqual(lab.timeline.list(PXE1_MAC), [ev]);

  assert.equal(json<TimelineEvent>(await post('{"type":"ready"}')).source, 'cloud-init');
  const custom = json<TimelineEvent>(await post('{"type":"custom.step_1","detail":{}}'));
  assert.equal(custom.source, 'stack');
  assert.equal(Object.hasOwn(custom, 'detail'), false);
  // Upper-case dashed MAC in the path: recorded under the normal form.
  assert.equal(
    (await req(lab, '/api/machines/BE-B9-F9-8B-F5-EE/events', { method: 'POST', body: '{"type":"x"}' }))
      .status,
    201,
  );
  assert.deepEqual(
    lab.timeline.list(PXE1_MAC).map((e) => e.type),
    ['installer.partition', 'ready', 'custom.step_1', 'x'],
  );

  assertText(await post('{"type": '), 400, 'pvmlab stack: body is not JSON\n');
  assertText(await post(''), 400, 'pvmlab stack: body is not JSON\n');
  const badType = 'pvmlab stack: type must match [a-z][a-z0-9_.-]{0,63}\n';
  for (const body of [
    '{}',
    '{"type":5}',
    '{"type":"Ready"}',
    '{"type":"has space"}',
    '{"type":"1x"}',
    'null',
    '"ready"',
  ])
    assertText(await post(body), 400, badType);
  assertText(await post(JSON.stringify({ type: `a${'b'.repeat(64)}` })), 400, badType);
  assertText(await post('{"type":"x","detail":[1]}'), 400, 'pvmlab stack: detail must be an object\n');
  assertText(await post('{"type":"x","detail":"s"}'), 400, 'pvmlab stack: detail must be an object\n');
  assertText(await post('{"type":"x","detail":null}'), 400, 'pvmlab stack: detail must be an object\n');

  // Over the limit, declared up front or only discovered while reading a chunked body.
  const big = JSON.stringify({ type: 'x', detail: { pad: 'p'.repeat(2000) } });
  assertText(await post(big), 413, 'pvmlab stack: body larger than 1024 bytes\n');
  assertText(await post(big, { chunked: true }), 413, 'pvmlab stack: body larger than 1024 bytes\n');
  // Exactly at the limit is fine.
  const atLimit = JSON.stringify({ type: 'x', detail: { pad: '' } });
  const padded = atLimit.replace('"pad":""', `"pad":"${'p'.repeat(1024 - atLimit.length)}"`);
  assert.equal(Buffer.byteLength(padded), 1024);
  assert.equal((await post(padded)).status, 201);

  assertText(
    await req(lab, '/api/machines/52:54:00:00:00:99/events', { method: 'POST', body: '{"type":"x"}' }),
    404,
    'pvmlab stack: no VM with MAC 52:54:00:00:00:99 in this lab\n',
  );
  assertText(
    await req(lab, '/api/machines/xx/events', { method: 'POST', body: '{"type":"x"}' }),
    400,
    "pvmlab stack: malformed MAC address 'xx'\n",
  );
  // Nothing from the failed requests was recorded.
  assert.deepEqual(
    lab.timeline.list(PXE1_MAC).map((e) => e.type),
    ['installer.partition', 'ready', 'custom.step_1', 'x', 'x'],
  );
  assert.deepEqual(lab.timeline.macs(), [PXE1_MAC]);
});

test('POST phone-home (cloud-init form data) marks the machine ready', async (t) => {
  const lab = await startLab(t);
  const form = new URLSearchParams({
    instance_id: 'iid-pvmlab-pxe2',
    hostname: 'pxe2',
    pub_key_rsa: 'ssh-rsa AAAA...',
  }).toString();
  const res = await req(lab, `/api/machines/${PXE2_MAC}/phone-home`, {
    method: 'POST',
    body: form,
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
  });
  assert.equal(res.status, 201);
  const ev = json<TimelineEvent>(res);
  assert.deepEqual(ev, {
    at: ev.at,
    mac: PXE2_MAC,
    type: 'ready',
    source: 'cloud-init',
    detail: { instance_id: 'iid-pvmlab-pxe2', hostname: 'pxe2' },
  });
  assert.deepEqual(lab.timeline.list(PXE2_MAC), [ev]);
  // From now on it boots from its disk.
  assert.match((await req(lab, `/ipxe?mac=${PXE2_MAC}`)).text, /^#!ipxe\necho pvmlab: pxe2 is installed;/);

  // An empty form is still a phone-home.
  const bare = json<TimelineEvent>(
    await req(lab, `/api/machines/${PXE1_MAC}/phone-home`, { method: 'POST', body: '' }),
  );
  assert.equal(bare.type, 'ready');
  assert.equal(Object.hasOwn(bare, 'detail'), false);
  // Long values are cut.
  const long = json<TimelineEvent>(
    await req(lab, `/api/machines/${PXE1_MAC}/phone-home`, {
      method: 'POST',
      body: `hostname=${'h'.repeat(400)}`,
    }),
  );
  assert.equal(long.detail?.hostname, 'h'.repeat(255));
});

test('unknown routes 404, wrong methods 405, lookup failures 500', async (t) => {
  const lab = await startLab(t);
  assertText(await req(lab, '/nope'), 404, 'pvmlab stack: no route for GET /nope\n');
  assertText(
    await req(lab, '/healthz', { method: 'POST', body: '' }),
    404,
    'pvmlab stack: no route for POST /healthz\n',
  );
  assertText(
    await req(lab, '/api/machines', { method: 'DELETE' }),
    404,
    'pvmlab stack: no route for DELETE /api/machines\n',
  );
  assertText(
    await req(lab, `/api/machines/${PXE1_MAC}/other`),
    404,
    `pvmlab stack: no route for GET /api/machines/${PXE1_MAC}/other\n`,
  );
  assertText(
    await req(lab, `/api/machines/${PXE1_MAC}/timeline`, { method: 'DELETE' }),
    405,
    `pvmlab stack: DELETE not allowed on /api/machines/${PXE1_MAC}/timeline\n`,
  );
  assertText(
    await req(lab, `/api/machines/${PXE1_MAC}/events`),
    405,
    `pvmlab stack: GET not allowed on /api/machines/${PXE1_MAC}/events\n`,
  );
  assertText(
    await req(lab, `/api/machines/${PXE1_MAC}/phone-home`, { method: 'PUT', body: 'x' }),
    405,
    `pvmlab stack: PUT not allowed on /api/machines/${PXE1_MAC}/phone-home\n`,
  );
  assert.deepEqual(lab.logs, []);
  assertText(await req(lab, '/ipxe?mac=52:54:00:de:ad:00'), 500, 'pvmlab stack: lookup exploded\n');
  assert.deepEqual(lab.logs, ['http: GET /ipxe?mac=52:54:00:de:ad:00: lookup exploded']);
  assert.deepEqual(lab.timeline.macs(), []);
});

test('cachedExists: reuses an answer for the TTL, then looks again; 0 always looks', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'pvml-exists-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const marker = join(dir, 'vm1.reinstall');
  let now = 1000;
  const exists = cachedExists(500, () => now);
  assert.equal(exists(marker), false);
  writeFileSync(marker, '');
  now += 499;
  assert.equal(exists(marker), false, 'still the remembered answer');
  now += 1;
  assert.equal(exists(marker), true, 'looked again after the TTL');
  const always = cachedExists(0);
  rmSync(marker);
  assert.equal(always(marker), false);
  writeFileSync(marker, '');
  assert.equal(always(marker), true);
});
