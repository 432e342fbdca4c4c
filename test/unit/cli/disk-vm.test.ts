import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parse } from 'yaml';
import { runCli, tempHome } from '../../helpers/cli.js';

/** Disk VMs from a "cloud image" served on loopback: download, checksum, overlay, seed ISO. */
describe('vm create (disk VM)', () => {
  let home: string;
  let app: string;
  let cleanup: () => Promise<void>;
  let server: Server;
  let base: string;
  let image: Buffer;
  let work: string;

  before(async () => {
    ({ home, app, cleanup } = await tempHome());
    work = await mkdtemp(join(tmpdir(), 'pvmlab-img-'));
    const img = join(work, 'testos-cloud.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', img, '64M']);
    image = await readFile(img);
    const sum = createHash('sha256').update(image).digest('hex');
    server = createServer((req, res) => {
      if (req.url === '/testos-cloud.qcow2' || req.url === '/bad/testos-cloud.qcow2') {
        res.writeHead(200, { 'Content-Length': image.length });
        res.end(image);
      } else if (req.url === '/SHA256SUMS') {
        res.end(`${sum} *testos-cloud.qcow2\n`);
      } else {
        res.writeHead(404).end('not found');
      }
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    await mkdir(app, { recursive: true });
    await writeFile(
      join(app, 'distros.yaml'),
      `- name: testos
  distro_name: debian
  version: "1"
  arch:
    x86_64:
      qcow2_url: ${base}/testos-cloud.qcow2
      checksum_url: ${base}/SHA256SUMS
- name: badsum
  distro_name: debian
  version: "1"
  arch:
    x86_64:
      qcow2_url: ${base}/bad/testos-cloud.qcow2
      sha256: "${'0'.repeat(64)}"
- name: gone
  distro_name: debian
  version: "1"
  arch:
    x86_64:
      qcow2_url: ${base}/missing.qcow2
`,
    );
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    await rm(work, { recursive: true, force: true });
    await cleanup();
  });

  test('downloads and verifies the image, makes an overlay and a NoCloud seed', async () => {
    const r = await runCli(
      ['vm', 'create', 'd1', '--distro', 'testos', '--arch', 'x86_64', '--disk-size', '1G'],
      {
        home,
      },
    );
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /checksum verified/);
    const cached = join(app, 'images', 'testos', 'x86_64', 'testos-cloud.qcow2');
    assert.deepEqual(await readFile(cached), image);

    const info = JSON.parse(
      execFileSync('qemu-img', ['info', '--output=json', join(app, 'vms', 'd1.qcow2')], { encoding: 'utf8' }),
    ) as { 'backing-filename': string; 'virtual-size': number; format: string };
    assert.equal(info.format, 'qcow2');
    assert.equal(info['backing-filename'], cached);
    assert.equal(info['virtual-size'], 2 ** 30);

    const def = JSON.parse(await readFile(join(app, 'vms', 'd1.json'), 'utf8')) as Record<
      string,
      string | boolean
    >;
    assert.equal(def.distro, 'testos');
    assert.equal(def.pxeboot, undefined);
    assert.equal(def.ip, '192.168.100.2');

    // Read the seed ISO back with xorriso and compare with what the VM definition says.
    const out = join(work, 'seed');
    execFileSync(
      'xorriso',
      ['-osirrox', 'on', '-indev', join(app, 'configs', 'cloud-init', 'd1.iso'), '-extract', '/', out],
      {
        stdio: 'ignore',
      },
    );
    assert.deepEqual((await readdir(out)).sort(), [
      'meta-data',
      'network-config',
      'user-data',
      'vendor-data',
    ]);
    const pvd = execFileSync(
      'xorriso',
      ['-indev', join(app, 'configs', 'cloud-init', 'd1.iso'), '-pvd_info'],
      {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    assert.match(pvd, /Volume Id\s*:\s*cidata/);
    const meta = parse(await readFile(join(out, 'meta-data'), 'utf8')) as Record<string, string>;
    assert.equal(meta['local-hostname'], 'd1');
    const userText = await readFile(join(out, 'user-data'), 'utf8');
    assert.ok(userText.startsWith('#cloud-config\n'));
    const user = parse(userText) as { ssh_pwauth: boolean; users: { ssh_authorized_keys: string[] }[] };
    assert.equal(user.ssh_pwauth, false);
    const pub = (await readFile(join(app, 'ssh', 'vm_key.pub'), 'utf8')).trim();
    assert.deepEqual(user.users[0]?.ssh_authorized_keys, [pub]);
    const net = parse(await readFile(join(out, 'network-config'), 'utf8')) as {
      ethernets: { lab0: { match: { macaddress: string }; addresses: string[] } };
    };
    assert.equal(net.ethernets.lab0.match.macaddress, def.mac);
    assert.deepEqual(net.ethernets.lab0.addresses, ['192.168.100.2/24']);
    // The files in configs/cloud-init/<name>/ are the ones in the ISO.
    for (const f of ['meta-data', 'user-data', 'network-config', 'vendor-data'])
      assert.equal(
        await readFile(join(app, 'configs', 'cloud-init', 'd1', f), 'utf8'),
        await readFile(join(out, f), 'utf8'),
      );
  });

  test('a second VM reuses the downloaded image', async () => {
    const r = await runCli(
      ['vm', 'create', 'd2', '--distro', 'testos', '--arch', 'x86_64', '--disk-size', '1G'],
      {
        home,
      },
    );
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /Downloading/);
  });

  test('refuses to shrink below the base image, leaving nothing behind', async () => {
    const r = await runCli(
      ['vm', 'create', 'd3', '--distro', 'testos', '--arch', 'x86_64', '--disk-size', '32M'],
      {
        home,
      },
    );
    assert.equal(r.code, 1);
    assert.match(r.stderr, /smaller than the base image/);
    assert.ok(!(await readdir(join(app, 'vms'))).some((f) => f.startsWith('d3')));
  });

  test('a checksum mismatch fails and leaves no file', async () => {
    const r = await runCli(['vm', 'create', 'e1', '--distro', 'badsum', '--arch', 'x86_64'], { home });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /checksum mismatch/);
    assert.deepEqual(await readdir(join(app, 'images', 'badsum', 'x86_64')).catch(() => []), []);
    assert.ok(!(await readdir(join(app, 'vms'))).some((f) => f.startsWith('e1')));
  });

  test('a 404 fails with the status and leaves no file', async () => {
    const r = await runCli(['vm', 'create', 'e2', '--distro', 'gone', '--arch', 'x86_64'], { home });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /HTTP 404/);
    assert.deepEqual(await readdir(join(app, 'images', 'gone', 'x86_64')).catch(() => []), []);
    assert.ok(!(await readdir(join(app, 'vms'))).some((f) => f.startsWith('e2')));
  });
});
