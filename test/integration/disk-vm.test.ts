import assert from 'node:assert/strict';
import { readFileSync, existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { runCli, tempHome, type CliResult } from '../helpers/cli.js';
import { debianCloudImage } from '../helpers/debian-image.js';
import { createNetns, deleteNetns } from '../helpers/netns.js';

/**
 * A disk VM from a real cloud image (Debian with cloud-init and OpenSSH): the seed pvmlab
 * writes configures it, `vm start --wait` waits for cloud-init over SSH, and `vm shell` /
 * `vm copy` reach it through the lab bridge, all inside a network namespace.
 */
describe('disk VM from a cloud image, end to end', { timeout: 1_500_000 }, () => {
  let ns: string;
  let home: string;
  let app: string;
  let cleanup: () => Promise<void>;
  let work: string;
  const cli = (args: string[], timeoutMs = 120_000): Promise<CliResult> =>
    runCli(args, { home, netns: ns, env: { PVMLAB_ACCEL: 'tcg' }, timeoutMs });
  const ok = async (args: string[], timeoutMs?: number) => {
    const r = await cli(args, timeoutMs);
    assert.equal(r.code, 0, `pvmlab ${args.join(' ')} failed (${r.code}):\n${r.stderr}\n${consoleTail()}`);
    return r;
  };
  const consoleTail = () => {
    const p = join(app, 'logs', 'web1.log');
    return existsSync(p) ? `--- console ---\n${readFileSync(p, 'utf8').slice(-3000)}` : '';
  };

  before(async () => {
    ({ home, app, cleanup } = await tempHome('pvdisk-'));
    work = await mkdtemp(join(tmpdir(), 'pvdisk-work-'));
    ns = createNetns('pvdk');
    await ok(['setup', '--bridge', 'pvdkbr0', '--subnet', '10.215.0.0/24']);
    const image = await debianCloudImage();
    await writeFile(
      join(app, 'distros.yaml'),
      `- name: debian-test\n  distro_name: debian\n  version: "12"\n  arch:\n    x86_64:\n      qcow2_url: ${pathToFileURL(image).href}\n`,
    );
    await ok(['network', 'start']);
  });

  after(async () => {
    await cli(['clean', '--purge']).catch(() => undefined);
    deleteNetns(ns);
    await rm(work, { recursive: true, force: true });
    await cleanup();
  });

  test('create, start --wait, shell, copy, stop, clean', async () => {
    await ok([
      'vm',
      'create',
      'web1',
      '--distro',
      'debian-test',
      '--arch',
      'x86_64',
      '--disk-size',
      '4G',
      '--memory',
      '1G',
    ]);
    // TCG: firmware, GRUB, kernel, systemd and cloud-init take a minute or two here.
    await ok(['vm', 'start', 'web1', '--wait'], 900_000);

    const host = await ok(['vm', 'shell', 'web1', '--', 'hostname']);
    assert.equal(host.stdout.trim(), 'web1');
    const addr = await ok(['vm', 'shell', 'web1', '--', 'ip', '-4', '-o', 'addr', 'show']);
    assert.match(addr.stdout, /inet 10\.215\.0\.2\/24/);
    const disk = await ok(['vm', 'shell', 'web1', '--', 'lsblk', '-b', '-d', '-n', '-o', 'SIZE', '/dev/vda']);
    assert.equal(Number(disk.stdout.trim()), 4 * 2 ** 30, 'the overlay was grown to --disk-size');
    const failed = await cli(['vm', 'shell', 'web1', '--', 'false']);
    assert.equal(failed.code, 1, 'vm shell passes on the remote exit status');

    const local = join(work, 'hello.txt');
    await writeFile(local, 'hello from the host\n');
    await ok(['vm', 'copy', local, 'web1:/tmp/hello.txt']);
    await ok(['vm', 'copy', 'web1:/tmp/hello.txt', join(work, 'back.txt')]);
    assert.equal(await readFile(join(work, 'back.txt'), 'utf8'), 'hello from the host\n');

    // A real OS honours ACPI power-down.
    const stop = await ok(['vm', 'stop', 'web1', '--timeout', '120'], 200_000);
    assert.match(stop.stderr, /stopped \(powered off\)/);
    await ok(['vm', 'clean', 'web1']);
  });
});
