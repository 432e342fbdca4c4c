import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { parseManifest, type DistroManifest } from '../../src/core/distro-manifest.js';
import { packageRoot } from '../../src/core/paths.js';
import { installerKey } from '../../src/distro/installer-initrd.js';
import { INSTALLER_MODULES, moduleName } from '../../src/distro/modules.js';
import type { DistroStatusRow } from '../../src/distro/status.js';
import { runCli, tempHome, type CliResult } from '../helpers/cli.js';
import { snapshotTree } from '../helpers/tree.js';
import {
  FIXTURE_INSTALLER_MODULES,
  FIXTURE_OTHER_MODULES,
  ID_CHECK,
  ID_CHECK_UID,
  USER_SECRET,
  USER_UID,
  makeUbuntuRootTarball,
  sumsFile,
  type RootTarball,
} from '../helpers/ubuntu-rootfs.js';

/**
 * `distro pull` of a distro defined by a root tarball (Ubuntu's kind), through the real CLI and
 * the real tools (tar, mke2fs, zstd), from fixtures laid out like cloud-images.ubuntu.com:
 * a file:// mirror, a wrong checksum, and an HTTP server that cuts the first download.
 * Root: unpacking keeps the tarball's owners. No network: the installer initrd is seeded in the
 * cache under the key `distro pull` looks for.
 */
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

function sh(cmd: string, args: string[], input?: Buffer): Buffer {
  return execFileSync(cmd, args, {
    ...(input ? { input } : {}),
    maxBuffer: 256 * 1024 * 1024,
    env: { ...process.env, DEBUGFS_PAGER: '__none__', PAGER: 'cat' },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
}

interface E2Stat {
  type: string;
  mode: string;
  uid: number;
  gid: number;
  size: number;
  link?: string;
}

/** One inode of an ext4 image, read with debugfs (no mount). */
function e2stat(image: string, path: string): E2Stat {
  const out = sh('debugfs', ['-R', `stat ${path}`, image]).toString();
  const m = /Type:\s+(\w+)\s+Mode:\s+(\d+)/.exec(out);
  const u = /User:\s+(\d+)\s+Group:\s+(\d+)/.exec(out);
  const s = /Size:\s+(\d+)/.exec(out);
  assert.ok(m && u && s, `debugfs stat ${path}:\n${out}`);
  const link = /Fast link dest:\s+"([^"]*)"/.exec(out)?.[1];
  return {
    type: m[1] as string,
    mode: m[2] as string,
    uid: Number(u[1]),
    gid: Number(u[2]),
    size: Number(s[1]),
    ...(link !== undefined ? { link } : {}),
  };
}

describe(
  'distro pull of a root tarball (Ubuntu layout), end to end',
  // The integration tier runs as root (scripts/run-tests.mjs refuses otherwise): unpacking keeps owners.
  { timeout: 600_000 },
  () => {
    let home: string;
    let app: string;
    let cleanup: () => Promise<void>;
    let work: string;
    let cache: string;
    let fx: RootTarball;
    let initrd: Buffer;
    let server: Server | undefined;
    let tarballRequests: IncomingHttpHeaders[] = [];
    let baseUrl = '';
    const ARCH = 'x86_64';

    const cli = (args: string[]): Promise<CliResult> =>
      runCli(args, { home, env: { PVMLAB_CACHE: cache }, timeoutMs: 300_000 });
    const pull = (distro: string, ...extra: string[]) =>
      cli(['distro', 'pull', '--distro', distro, '--arch', ARCH, ...extra]);
    const ok = async (args: string[]): Promise<CliResult> => {
      const r = await cli(args);
      assert.equal(r.code, 0, `pvmlab ${args.join(' ')} failed (${r.code}):\n${r.stdout}\n${r.stderr}`);
      return r;
    };
    const dirOf = (d: string) => join(app, 'images', d, ARCH);
    const lsRow = async (d: string): Promise<DistroStatusRow> => {
      const rows = JSON.parse((await ok(['distro', 'ls', '--json'])).stdout) as DistroStatusRow[];
      const row = rows.find((r) => r.name === d && r.arch === ARCH);
      assert.ok(row, `distro ls has no ${d} ${ARCH}`);
      return row;
    };
    const manifestOf = async (d: string): Promise<DistroManifest> => {
      const r = parseManifest(await fs.readFile(join(dirOf(d), 'manifest.json'), 'utf8'));
      assert.ok(r.ok, `manifest.json of ${d}: ${r.ok ? '' : r.error}`);
      return r.value;
    };
    const exists = (p: string) =>
      fs.stat(p).then(
        () => true,
        () => false,
      );

    /** A distros.yaml entry whose x86_64 image is the root tarball at `url`. */
    const entry = (name: string, url: string, sumsUrl: string) =>
      `- name: ${name}\n  distro_name: ubuntu\n  version: "24.04"\n  arch:\n    ${ARCH}:\n` +
      `      rootfs_url: ${url}\n      rootfs_checksum_url: ${sumsUrl}\n`;

    before(async () => {
      ({ home, app, cleanup } = await tempHome('pvtarball-'));
      work = await fs.mkdtemp(join(tmpdir(), 'pvtarball-work-'));
      cache = join(work, 'cache');
      fx = await makeUbuntuRootTarball(join(work, 'mirror', 'noble', 'current'));

      // A mirror whose SHA256SUMS lists another sha for the tarball.
      const bad = join(work, 'bad', 'noble', 'current');
      await fs.mkdir(bad, { recursive: true });
      await fs.copyFile(fx.path, join(bad, fx.name));
      await fs.writeFile(join(bad, 'SHA256SUMS'), sumsFile({ [fx.name]: sha(Buffer.from('another file')) }));

      // The HTTP mirror: ranges honoured, but the first download of the tarball is cut half way.
      const half = Math.floor(fx.bytes.length / 2);
      server = createServer((req, res) => {
        if (req.url?.endsWith('/SHA256SUMS')) return void res.writeHead(200).end(fx.sums);
        if (!req.url?.endsWith(`/${fx.name}`)) return void res.writeHead(404).end();
        tarballRequests.push(req.headers);
        const body = fx.bytes;
        if (tarballRequests.length === 1) {
          res.writeHead(200, { 'content-length': body.length });
          res.write(body.subarray(0, half), () => setTimeout(() => res.socket?.destroy(), 100));
          return;
        }
        const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
        if (m) {
          const start = Number(m[1]);
          res.writeHead(206, {
            'content-length': body.length - start,
            'content-range': `bytes ${start}-${body.length - 1}/${body.length}`,
          });
          return void res.end(body.subarray(start));
        }
        res.writeHead(200, { 'content-length': body.length }).end(body);
      });
      await new Promise<void>((resolve) => server?.listen(0, '127.0.0.1', resolve));
      baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/noble/current`;

      await fs.mkdir(app, { recursive: true });
      const url = (d: string, f: string) => pathToFileURL(join(work, d, 'noble', 'current', f)).href;
      await fs.writeFile(
        join(app, 'distros.yaml'),
        entry('noble-file', url('mirror', fx.name), url('mirror', 'SHA256SUMS')) +
          entry('noble-badsum', url('bad', fx.name), url('bad', 'SHA256SUMS')) +
          entry('noble-http', `${baseUrl}/${fx.name}`, `${baseUrl}/SHA256SUMS`),
      );

      // The installer initrd, where `distro pull` looks for it: building it needs the network.
      initrd = Buffer.from('fake installer initrd\n');
      const key = await installerKey(packageRoot(), ARCH);
      await fs.mkdir(join(cache, 'installer'), { recursive: true });
      await fs.writeFile(join(cache, 'installer', `initrd-${ARCH}-${key}.gz`), initrd);
    });

    after(async () => {
      server?.closeAllConnections();
      await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
      await fs.rm(work, { recursive: true, force: true });
      await cleanup();
    });

    test('the fixture is shaped like Ubuntu’s root tarball', () => {
      const list = sh('tar', ['--numeric-owner', '-tvJf', fx.path]).toString();
      const names = sh('tar', ['-tJf', fx.path]).toString().trim().split('\n');
      assert.equal(names[0], './');
      assert.ok(names.every((n) => n.startsWith('./')));
      assert.match(list, new RegExp(`-rw------- ${USER_UID}/${USER_UID} .* \\./${USER_SECRET}\\n`));
      assert.match(list, /-rw------- 0\/0 .* \.\/boot\/vmlinuz-6\.8\.0-31-generic\n/);
      assert.match(list, /\.\/lib -> usr\/lib\n/);
      assert.match(list, new RegExp(`-rw------- ${ID_CHECK_UID}/${ID_CHECK_UID} .* \\./${ID_CHECK}\\n`));
      assert.match(
        sh('tar', ['-tvJf', fx.path]).toString(),
        new RegExp(`daemon/daemon .* \\./${ID_CHECK}\\n`),
        'recorded under a name the host maps to another id',
      );
      assert.match(
        list,
        /\.\/usr\/lib\/modules\/6\.8\.0-31-generic\/kernel\/drivers\/net\/virtio_net\.ko\.zst\n/,
      );
      assert.ok(fx.sums.includes(`${fx.sha256} *${fx.name}\n`));
      // The installer really wants the fixture's top-level modules.
      for (const m of ['virtio_net', 'virtio_blk', 'nvme', 'nls_iso8859-1'])
        assert.ok((INSTALLER_MODULES as readonly string[]).includes(m), m);
      assert.ok(
        !FIXTURE_OTHER_MODULES.some((m) => (INSTALLER_MODULES as readonly string[]).includes(moduleName(m))),
      );
    });

    test('file:// mirror: converted into vmlinuz, modules.cpio.gz, rootfs.ext4.zst, SHA256SUMS, manifest.json', async () => {
      const r = await ok(['distro', 'pull', '--distro', 'noble-file', '--arch', ARCH]);
      assert.match(
        r.stderr,
        /noble-file \(x86_64\) downloaded and converted in \d+ s: kernel 6\.8\.0-31-generic/,
      );
      const dir = dirOf('noble-file');
      assert.deepEqual((await fs.readdir(dir)).sort(), [
        'SHA256SUMS',
        'manifest.json',
        'modules.cpio.gz',
        fx.name,
        'rootfs.ext4.zst',
        'vmlinuz',
      ]);
      assert.deepEqual(await fs.readFile(join(dir, fx.name)), fx.bytes, 'the tarball is kept, as downloaded');
      assert.deepEqual(await fs.readFile(join(dir, 'vmlinuz')), fx.kernel);
      assert.deepEqual(await fs.readFile(join(app, 'initrds', ARCH, 'initrd.gz')), initrd);

      // manifest.json, as the stack reads it.
      const m = await manifestOf('noble-file');
      assert.equal(m.distro, 'noble-file');
      assert.equal(m.arch, ARCH);
      assert.equal(m.kernel, 'vmlinuz');
      assert.equal(m.kernel_version, fx.kernelVersion);
      assert.equal(m.modules, 'modules.cpio.gz');
      assert.equal(m.rootfs, 'rootfs.ext4.zst');
      assert.equal(m.rootfs_format, 'ext4.zst');
      assert.equal(m.rootfs_bytes, (await fs.stat(join(dir, 'rootfs.ext4.zst'))).size);
      assert.equal(m.source, pathToFileURL(fx.path).href);
      assert.deepEqual(Object.keys(m.sha256).sort(), ['modules.cpio.gz', 'rootfs.ext4.zst', 'vmlinuz']);
      for (const [f, h] of Object.entries(m.sha256)) assert.equal(sha(await fs.readFile(join(dir, f))), h, f);
      // SHA256SUMS: the same sums, checked by sha256sum itself.
      const sums = await fs.readFile(join(dir, 'SHA256SUMS'), 'utf8');
      assert.deepEqual(
        sums.trim().split('\n').sort(),
        Object.entries(m.sha256)
          .map(([f, h]) => `${h}  ${f}`)
          .sort(),
      );
      execFileSync('sha256sum', ['--quiet', '-c', 'SHA256SUMS'], { cwd: dir });

      // modules.cpio.gz: only the installer's modules and their dependencies, uncompressed.
      const cpio = sh('gzip', ['-dc', join(dir, 'modules.cpio.gz')]);
      const listed = sh('cpio', ['-t', '--quiet'], cpio).toString().trim().split('\n');
      const root = `lib/modules/${fx.kernelVersion}`;
      const kos = listed.filter((p) => /\.ko/.test(p)).sort();
      assert.deepEqual(kos, FIXTURE_INSTALLER_MODULES.map((p) => `${root}/${p}`).sort());
      for (const f of ['modules.dep', 'modules.order', 'modules.builtin'])
        assert.ok(listed.includes(`${root}/${f}`), f);
      const unpacked = join(work, 'modules-file');
      await fs.mkdir(unpacked);
      execFileSync('cpio', ['-i', '-d', '--quiet', '--no-absolute-filenames'], {
        cwd: unpacked,
        input: cpio,
      });
      for (const p of FIXTURE_INSTALLER_MODULES)
        assert.deepEqual(await fs.readFile(join(unpacked, root, p)), fx.modules.get(p), p);
      const dep = (await fs.readFile(join(unpacked, root, 'modules.dep'), 'utf8')).trim().split('\n');
      assert.deepEqual(dep, [
        'kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko',
        'kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko',
        'kernel/net/core/failover.ko:',
        'kernel/drivers/block/virtio_blk.ko:',
        'kernel/drivers/nvme/host/nvme.ko: kernel/drivers/nvme/host/nvme-core.ko',
        'kernel/drivers/nvme/host/nvme-core.ko:',
        'kernel/fs/nls/nls_iso8859-1.ko:',
      ]);
      assert.ok(!/\.zst/.test(await fs.readFile(join(unpacked, root, 'modules.order'), 'utf8')));

      // rootfs.ext4.zst: an ext4 image that kept owners, modes and symlinks.
      const image = join(work, 'rootfs-file.ext4');
      execFileSync('zstd', ['-q', '-d', join(dir, 'rootfs.ext4.zst'), '-o', image]);
      execFileSync('e2fsck', ['-f', '-n', image], { stdio: 'pipe' });
      const top = sh('debugfs', ['-R', 'ls -p /', image])
        .toString()
        .split('\n')
        .map((l) => l.split('/')[5])
        .filter((n): n is string => !!n && n !== '.' && n !== '..');
      assert.deepEqual(top.sort(), ['bin', 'boot', 'etc', 'home', 'lib', 'lost+found', 'usr', 'var']);
      assert.deepEqual(e2stat(image, `/${USER_SECRET}`), {
        type: 'regular',
        mode: '0600',
        uid: USER_UID,
        gid: USER_UID,
        size: 31,
      });
      assert.deepEqual(e2stat(image, '/home/ubuntu'), {
        type: 'directory',
        mode: '0750',
        uid: USER_UID,
        gid: USER_UID,
        size: 4096,
      });
      assert.deepEqual(e2stat(image, '/etc/hostname'), {
        type: 'regular',
        mode: '0644',
        uid: 0,
        gid: 0,
        size: 7,
      });
      assert.equal(e2stat(image, '/etc/shadow').mode, '0640');
      assert.deepEqual(e2stat(image, `/${ID_CHECK}`), {
        type: 'regular',
        mode: '0600',
        uid: ID_CHECK_UID,
        gid: ID_CHECK_UID,
        size: 20,
      });
      assert.equal(e2stat(image, '/usr/bin/fake-su').mode, '04755');
      assert.deepEqual(e2stat(image, '/lib'), {
        type: 'symlink',
        mode: '0777',
        uid: 0,
        gid: 0,
        size: 7,
        link: 'usr/lib',
      });
      assert.equal(e2stat(image, '/boot/vmlinuz').link, `vmlinuz-${fx.kernelVersion}`);
      const kernelOut = join(work, 'kernel-from-image');
      sh('debugfs', ['-R', `dump /boot/vmlinuz-${fx.kernelVersion} ${kernelOut}`, image]);
      assert.deepEqual(await fs.readFile(kernelOut), fx.kernel);

      // distro ls: pulled, with the kernel and the directory's bytes.
      const row = await lsRow('noble-file');
      let bytes = 0;
      for (const f of await fs.readdir(dir)) bytes += (await fs.stat(join(dir, f))).size;
      assert.deepEqual(
        { ...row },
        {
          ...row,
          pxe_source: 'rootfs',
          pulled: true,
          kernel_version: fx.kernelVersion,
          rootfs_format: 'ext4.zst',
          bytes,
          files: (await fs.readdir(dir)).sort(),
          cloud_image: false,
        },
      );
    });

    test('a second pull says it is already pulled and changes nothing', async () => {
      const before = await snapshotTree(app);
      const r = await ok(['distro', 'pull', '--distro', 'noble-file', '--arch', ARCH]);
      assert.match(r.stderr, /noble-file \(x86_64\) already pulled in \d+ s: kernel 6\.8\.0-31-generic/);
      assert.deepEqual(await snapshotTree(app), before);
    });

    test('--format tar.zst converts again from the kept tarball, into a tarball instead', async () => {
      const dir = dirOf('noble-file');
      const tarballBefore = await fs.stat(join(dir, fx.name));
      const r = await ok(['distro', 'pull', '--distro', 'noble-file', '--arch', ARCH, '--format', 'tar.zst']);
      assert.doesNotMatch(r.stderr, /downloading/, 'the kept tarball is used');
      const tarballAfter = await fs.stat(join(dir, fx.name));
      assert.equal(tarballAfter.ino, tarballBefore.ino);
      assert.equal(tarballAfter.mtimeMs, tarballBefore.mtimeMs);

      const m = await manifestOf('noble-file');
      assert.equal(m.rootfs, 'rootfs.tar.zst');
      assert.equal(m.rootfs_format, 'tar.zst');
      assert.equal(m.kernel_version, fx.kernelVersion);
      assert.deepEqual(Object.keys(m.sha256).sort(), ['modules.cpio.gz', 'rootfs.tar.zst', 'vmlinuz']);
      execFileSync('sha256sum', ['--quiet', '-c', 'SHA256SUMS'], { cwd: dir });
      // The ext4 image it replaces is gone: nothing lists it, and it is not left taking space.
      assert.deepEqual((await fs.readdir(dir)).sort(), [
        'SHA256SUMS',
        'manifest.json',
        'modules.cpio.gz',
        fx.name,
        'rootfs.tar.zst',
        'vmlinuz',
      ]);
      const list = sh(
        'tar',
        ['--numeric-owner', '-tv'],
        sh('zstd', ['-dc', join(dir, 'rootfs.tar.zst')]),
      ).toString();
      assert.match(list, new RegExp(`-rw------- ${USER_UID}/${USER_UID} .* \\./${USER_SECRET}\\n`));
      assert.match(list, /-rwsr-xr-x 0\/0 .* \.\/usr\/bin\/fake-su\n/);
      assert.match(list, new RegExp(`-rw------- ${ID_CHECK_UID}/${ID_CHECK_UID} .* \\./${ID_CHECK}\\n`));
      assert.match(list, /\.\/lib -> usr\/lib\n/);
      const row = await lsRow('noble-file');
      assert.equal(row.pulled, true);
      assert.equal(row.rootfs_format, 'tar.zst');
    });

    test('a wrong checksum fails, names the mismatch and leaves the lab as it was', async () => {
      const lsBefore = (await ok(['distro', 'ls', '--json'])).stdout;
      const labBefore = await snapshotTree(app);
      const cacheBefore = await snapshotTree(cache);
      const r = await pull('noble-badsum');
      assert.equal(r.code, 1, r.stderr);
      assert.match(
        r.stderr,
        /checksum mismatch for file:\/\/\S+\/bad\/noble\/current\/noble-server-cloudimg-amd64-root\.tar\.xz/,
      );
      assert.ok(
        r.stderr.includes(`expected ${sha(Buffer.from('another file'))}, got ${fx.sha256}`),
        r.stderr,
      );
      assert.equal(await exists(join(dirOf('noble-badsum'), 'manifest.json')), false);
      assert.deepEqual(await snapshotTree(app), labBefore, 'no tarball, no .part, no directories');
      assert.deepEqual(await snapshotTree(cache), cacheBefore);
      assert.equal((await ok(['distro', 'ls', '--json'])).stdout, lsBefore);
      assert.equal((await lsRow('noble-badsum')).pulled, false);

      // Fixed upstream: the next pull fetches the tarball again and succeeds.
      await fs.writeFile(join(work, 'bad', 'noble', 'current', 'SHA256SUMS'), fx.sums);
      await ok(['distro', 'pull', '--distro', 'noble-badsum', '--arch', ARCH]);
      assert.equal((await manifestOf('noble-badsum')).kernel_version, fx.kernelVersion);
      assert.equal((await lsRow('noble-badsum')).pulled, true);
    });

    test('over HTTP: a download cut half way is resumed with Range by the next pull', async () => {
      tarballRequests = [];
      const dir = dirOf('noble-http');
      const first = await pull('noble-http');
      assert.equal(first.code, 1, first.stderr);
      assert.match(
        first.stderr,
        /download of http:\/\/127\.0\.0\.1:\d+\/noble\/current\/\S+ was interrupted after \d+ bytes/,
      );
      assert.match(first.stderr, /run the command again to resume it/);
      assert.equal(await exists(join(dir, 'manifest.json')), false);
      assert.equal(await exists(join(dir, fx.name)), false);
      const part = (await fs.stat(join(dir, `${fx.name}.part`))).size;
      assert.equal(part, Math.floor(fx.bytes.length / 2));
      assert.equal((await lsRow('noble-http')).pulled, false);

      const second = await ok(['distro', 'pull', '--distro', 'noble-http', '--arch', ARCH]);
      assert.match(second.stderr, /downloaded and converted/);
      assert.deepEqual(
        tarballRequests.map((h) => h.range),
        [undefined, `bytes=${part}-`],
      );
      assert.deepEqual(await fs.readFile(join(dir, fx.name)), fx.bytes);
      assert.equal(await exists(join(dir, `${fx.name}.part`)), false);
      const m = await manifestOf('noble-http');
      assert.equal(m.rootfs_format, 'ext4.zst');
      assert.equal(m.kernel_version, fx.kernelVersion);
      assert.equal(m.source, `${baseUrl}/${fx.name}`);
      assert.deepEqual(await fs.readFile(join(dir, 'vmlinuz')), fx.kernel);
      execFileSync('sha256sum', ['--quiet', '-c', 'SHA256SUMS'], { cwd: dir });
      assert.equal((await lsRow('noble-http')).pulled, true);
    });
  },
);
