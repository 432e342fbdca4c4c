import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { DistroStatusRow } from '../../../src/distro/status.js';
import { runCli, tempHome, type CliResult } from '../../helpers/cli.js';
import { snapshotTree } from '../../helpers/tree.js';

/**
 * The built-in distros stay defined: debian-12 built here, ubuntu-24.04 from its root tarball,
 * fedora-40 for disk VMs only; and `distro pull` refuses what it cannot do before touching anything.
 */
describe('distro ls / pull: the built-in distros', () => {
  let home: string;
  let app: string;
  let cache: string;
  let cleanup: () => Promise<void>;
  const cli = (args: string[]): Promise<CliResult> => runCli(args, { home, env: { PVMLAB_CACHE: cache } });

  before(async () => {
    ({ home, app, cleanup } = await tempHome('pvdistro-'));
    cache = join(home, 'cache');
  });
  after(() => cleanup());

  it('distro ls --json in a fresh lab lists debian-12, ubuntu-24.04 and fedora-40 for both arches, not pulled', async () => {
    const r = await cli(['distro', 'ls', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const rows = JSON.parse(r.stdout) as DistroStatusRow[];
    const expected = (
      name: string,
      distro_name: string,
      version: string,
      pxe_source: DistroStatusRow['pxe_source'],
      cloud_image: boolean,
    ): DistroStatusRow[] =>
      (['aarch64', 'x86_64'] as const).map((arch) => ({
        name,
        distro_name,
        version,
        arch,
        pxe_source,
        pulled: false,
        kernel_version: null,
        rootfs_format: null,
        bytes: 0,
        files: [],
        cloud_image,
        cloud_image_present: false,
      }));
    assert.deepEqual(rows, [
      ...expected('debian-12', 'debian', '12', 'build', false),
      ...expected('fedora-40', 'fedora', '40', null, true),
      ...expected('ubuntu-24.04', 'ubuntu', '24.04', 'rootfs', true),
    ]);
    // The table says the same.
    const table = await cli(['distro', 'ls']);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /ubuntu-24\.04\s+│ x86_64\s+│ root tarball\s+│ Not pulled/);
    assert.match(table.stdout, /fedora-40\s+│ x86_64\s+│ -\s+│ Not pulled/);
    assert.match(table.stdout, /debian-12\s+│ x86_64\s+│ built here\s+│ Not pulled/);
  });

  /** Run a pull that must be refused: exit 2 with `message`, and nothing written anywhere. */
  const refused = async (args: string[], message: RegExp): Promise<void> => {
    await fs.mkdir(app, { recursive: true });
    const labBefore = await snapshotTree(app);
    const r = await cli(['distro', 'pull', ...args]);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, message);
    assert.deepEqual(await snapshotTree(app), labBefore);
    assert.deepEqual(await snapshotTree(cache), {}, 'the cache is not touched');
  };

  for (const arch of ['x86_64', 'aarch64'])
    it(`distro pull --distro fedora-40 --arch ${arch}: disk VMs only, exit 2, nothing touched`, async () => {
      await refused(
        ['--distro', 'fedora-40', '--arch', arch],
        new RegExp(
          `^Error: distro 'fedora-40' cannot be installed over the network: it has no build recipe and no rootfs_url for ${arch} \\(disk VMs only\\)\\n$`,
        ),
      );
      assert.equal(await fs.stat(join(app, 'images')).catch(() => undefined), undefined);
      assert.equal(await fs.stat(join(app, 'initrds')).catch(() => undefined), undefined);
    });

  it('distro pull --distro nope: exit 2, naming the known distros', async () => {
    await refused(
      ['--distro', 'nope', '--arch', 'x86_64'],
      /^Error: unknown distro 'nope' \(known: debian-12, ubuntu-24\.04, fedora-40\)\n$/,
    );
  });

  it('distro pull --arch riscv64: exit 2', async () => {
    await refused(
      ['--distro', 'ubuntu-24.04', '--arch', 'riscv64'],
      /--arch must be either 'aarch64' or 'x86_64' \(got 'riscv64'\)/,
    );
  });

  it('a distros.yaml without the built-ins still knows them (the user’s entries first)', async () => {
    await fs.writeFile(
      join(app, 'distros.yaml'),
      '- name: mine\n  distro_name: ubuntu\n  version: "24.04"\n  arch:\n    x86_64:\n      rootfs_url: https://example.com/root.tar.xz\n',
    );
    const r = await cli(['distro', 'ls', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const rows = JSON.parse(r.stdout) as DistroStatusRow[];
    assert.deepEqual(
      rows.map((x) => `${x.name} ${x.arch} ${x.pxe_source}`),
      [
        'debian-12 aarch64 build',
        'debian-12 x86_64 build',
        'fedora-40 aarch64 null',
        'fedora-40 x86_64 null',
        'mine x86_64 rootfs',
        'ubuntu-24.04 aarch64 rootfs',
        'ubuntu-24.04 x86_64 rootfs',
      ],
    );
    await refused(
      ['--distro', 'fedora-40', '--arch', 'x86_64'],
      /cannot be installed over the network: .* \(disk VMs only\)/,
    );
    await refused(
      ['--distro', 'mine', '--arch', 'aarch64'],
      /^Error: distro 'mine' has no aarch64 image \(has: x86_64\)\n$/,
    );
  });
});
