import assert from 'node:assert/strict';
import { existsSync, promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { PvmlabError, UsageError } from '../../../src/core/errors.js';
import {
  DEFAULT_DISTROS_YAML,
  distrosPath,
  ensureDistrosFile,
  findDistro,
  imagePath,
  loadDistros,
  parseDistros,
  pxeSource,
  type DistroEntry,
} from '../../../src/distro/distros.js';

async function tempApp(t: { after: (fn: () => Promise<void>) => void }): Promise<string> {
  const dir = await fs.mkdtemp(join(tmpdir(), 'pvmlab-distros-'));
  t.after(() => fs.rm(dir, { recursive: true, force: true }));
  return join(dir, '.pvmlab');
}

async function rejectsWith(p: Promise<unknown>, message: string | RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof PvmlabError, `expected a PvmlabError, got ${String(err)}`);
    assert.equal(err.exitCode, 1);
    if (typeof message === 'string') assert.equal(err.message, message);
    else assert.match(err.message, message);
    return true;
  });
}

function throwsUsage(fn: () => unknown, message: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof UsageError, `expected a UsageError, got ${String(err)}`);
    assert.equal(err.exitCode, 2);
    assert.equal(err.message, message);
    return true;
  });
}

const ONE = `- name: mini
  distro_name: mini
  version: 1
  arch:
    x86_64:
      qcow2_url: https://example.com/mini.qcow2
`;

describe('DEFAULT_DISTROS_YAML', () => {
  it('parses into the built-in distros', async () => {
    const distros = await parseDistros(DEFAULT_DISTROS_YAML, 'defaults');
    assert.deepEqual(
      distros.map((d) => d.name),
      ['debian-12', 'ubuntu-24.04', 'fedora-40'],
    );
    for (const d of distros) assert.deepEqual(Object.keys(d.arch).sort(), ['aarch64', 'x86_64']);
    const debian = distros[0] as DistroEntry;
    assert.deepEqual(debian.build, { tool: 'mmdebstrap', suite: 'bookworm' });
    assert.equal(pxeSource(debian, 'x86_64'), 'build');
    assert.equal(pxeSource(debian, 'aarch64'), 'build');
    const ubuntu = distros[1] as DistroEntry;
    assert.equal(ubuntu.distro_name, 'ubuntu');
    assert.equal(ubuntu.version, '24.04', 'quoted so YAML keeps it a string');
    assert.deepEqual(ubuntu.arch.x86_64, {
      qcow2_url: 'https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64.img',
      checksum_url: 'https://cloud-images.ubuntu.com/noble/current/SHA256SUMS',
      rootfs_url: 'https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64-root.tar.xz',
      kernel_path: './boot/vmlinuz',
      initrd_path: './boot/initrd.img',
    });
    assert.equal(pxeSource(ubuntu, 'x86_64'), 'rootfs', 'the official root tarball');
    // Fedora publishes disk images only: disk VMs, no PXE source.
    assert.equal(pxeSource(distros[2] as DistroEntry, 'x86_64'), undefined);
    assert.equal(pxeSource(debian, 'riscv64'), undefined);
  });
});

describe('parseDistros', () => {
  it('accepts an empty file as no distros', async () => {
    assert.deepEqual(await parseDistros('', 'f.yaml'), []);
    assert.deepEqual(await parseDistros('# nothing yet\n', 'f.yaml'), []);
  });

  it('accepts a numeric version and an sha256', async () => {
    const sha = 'a'.repeat(64);
    const [d] = await parseDistros(ONE.replace('.qcow2\n', `.qcow2\n      sha256: ${sha}\n`), 'f.yaml');
    assert.equal(d?.version, 1);
    assert.equal(d?.arch.x86_64?.sha256, sha);
  });

  it('reads a build recipe with extra packages, and a root tarball with its checksum', async () => {
    const sha = 'b'.repeat(64);
    const text = ONE.replace(
      '  arch:',
      '  build:\n    tool: mmdebstrap\n    suite: trixie\n    packages: [vim, htop]\n  arch:',
    ).replace(
      '.qcow2\n',
      `.qcow2\n      rootfs_url: https://example.com/root.tar.xz\n      rootfs_sha256: "${sha}"\n`,
    );
    const [d] = await parseDistros(text, 'f.yaml');
    assert.deepEqual(d?.build, { tool: 'mmdebstrap', suite: 'trixie', packages: ['vim', 'htop'] });
    assert.equal(d?.arch.x86_64?.rootfs_url, 'https://example.com/root.tar.xz');
    assert.equal(d?.arch.x86_64?.rootfs_sha256, sha);
  });

  it('refuses a distro listed twice, naming the file', async () => {
    await rejectsWith(
      parseDistros(ONE + ONE, '/x/distros.yaml'),
      "/x/distros.yaml: distro 'mini' is listed twice",
    );
  });

  it('refuses invalid YAML, naming the file', async () => {
    await rejectsWith(
      parseDistros('- name: [oops\n', '/x/distros.yaml'),
      /^\/x\/distros\.yaml is not valid YAML: /,
    );
  });

  it('refuses invalid fields, naming the file and the field', async () => {
    const cases: [string, RegExp][] = [
      [
        ONE.replace('name: mini', 'name: Mini'),
        /^\/x\/d\.yaml: 0\.name: name must be lowercase letters, digits, \. _ -$/,
      ],
      [
        ONE.replace('https://example.com/mini.qcow2', 'not a url'),
        /^\/x\/d\.yaml: 0\.arch\.x86_64\.qcow2_url: /,
      ],
      [ONE.replace('x86_64:', 'riscv64:'), /^\/x\/d\.yaml: 0\.arch\.riscv64: /],
      [
        ONE.replace('.qcow2\n', '.qcow2\n      sha256: abc\n'),
        /^\/x\/d\.yaml: 0\.arch\.x86_64\.sha256: sha256 must be 64 hex digits$/,
      ],
      [ONE.replace('  distro_name: mini\n', ''), /^\/x\/d\.yaml: 0\.distro_name: /],
      [
        ONE.replace('.qcow2\n', '.qcow2\n      rootfs_url: root.tar.xz\n'),
        /^\/x\/d\.yaml: 0\.arch\.x86_64\.rootfs_url: /,
      ],
      [
        ONE.replace('.qcow2\n', '.qcow2\n      rootfs_sha256: "12"\n'),
        /^\/x\/d\.yaml: 0\.arch\.x86_64\.rootfs_sha256: sha256 must be 64 hex digits$/,
      ],
      [
        ONE.replace('  arch:', '  build:\n    tool: debootstrap\n    suite: bookworm\n  arch:'),
        /^\/x\/d\.yaml: 0\.build\.tool: /,
      ],
      [
        ONE.replace('  arch:', '  build:\n    tool: mmdebstrap\n    suite: "bookworm; rm -rf /"\n  arch:'),
        /^\/x\/d\.yaml: 0\.build\.suite: suite must be a Debian suite name$/,
      ],
      [
        ONE.replace(
          '  arch:',
          '  build:\n    tool: mmdebstrap\n    suite: bookworm\n    packages: [vim, "--root"]\n  arch:',
        ),
        /^\/x\/d\.yaml: 0\.build\.packages\.1: a Debian package name$/,
      ],
      ['name: not-a-list\n', /^\/x\/d\.yaml: /],
    ];
    for (const [text, message] of cases) await rejectsWith(parseDistros(text, '/x/d.yaml'), message);
  });
});

describe('loadDistros', () => {
  it('reads the defaults without writing; ensureDistrosFile writes them once; the user-edited file wins', async (t) => {
    const app = await tempApp(t);
    const path = distrosPath(app);
    assert.equal(path, join(app, 'distros.yaml'));

    const first = await loadDistros(app);
    assert.deepEqual(first, await parseDistros(DEFAULT_DISTROS_YAML, 'defaults'));
    assert.equal(existsSync(app), false, 'reading writes nothing');
    await ensureDistrosFile(app);
    assert.equal(await fs.readFile(path, 'utf8'), DEFAULT_DISTROS_YAML);
    assert.deepEqual(await fs.readdir(app), ['distros.yaml']);

    await fs.writeFile(path, ONE);
    const second = await loadDistros(app);
    // The user's entries first; built-in distros the file does not mention are still known
    // (a lab made before debian-12 existed can install it).
    assert.deepEqual(
      second.map((d) => d.name),
      ['mini', 'debian-12', 'ubuntu-24.04', 'fedora-40'],
    );
    // An entry with a built-in's name replaces it.
    await fs.writeFile(path, ONE.replace('name: mini', 'name: debian-12'));
    const third = await loadDistros(app);
    assert.deepEqual(
      third.map((d) => d.name),
      ['debian-12', 'ubuntu-24.04', 'fedora-40'],
    );
    assert.equal(third[0]?.build, undefined, "the user's debian-12, not the built-in");
    assert.equal(
      await fs.readFile(path, 'utf8'),
      ONE.replace('name: mini', 'name: debian-12'),
      'an existing file is never overwritten',
    );
  });

  it('names the file in errors', async (t) => {
    const app = await tempApp(t);
    await fs.mkdir(app, { recursive: true });
    await fs.writeFile(distrosPath(app), ONE + ONE);
    await rejectsWith(loadDistros(app), `${distrosPath(app)}: distro 'mini' is listed twice`);
  });
});

describe('findDistro', () => {
  it('returns the image entry for the distro and arch', async () => {
    const distros = await parseDistros(DEFAULT_DISTROS_YAML, 'defaults');
    assert.equal(
      findDistro(distros, 'fedora-40', 'aarch64').kernel_path,
      './boot/vmlinuz-6.8.5-301.fc40.aarch64',
    );
  });

  it('refuses an unknown distro, listing the known ones', async () => {
    const distros = await parseDistros(DEFAULT_DISTROS_YAML, 'defaults');
    throwsUsage(
      () => findDistro(distros, 'debian-11', 'x86_64'),
      "unknown distro 'debian-11' (known: debian-12, ubuntu-24.04, fedora-40)",
    );
    throwsUsage(() => findDistro([], 'debian-12', 'x86_64'), "unknown distro 'debian-12' (known: none)");
  });

  it('gives an empty entry for an architecture listed with no fields (built distros)', async () => {
    const distros = await parseDistros(DEFAULT_DISTROS_YAML, 'defaults');
    assert.deepEqual(findDistro(distros, 'debian-12', 'aarch64'), {});
    const [bare] = await parseDistros(ONE.replace(/x86_64:\n.*\n/, 'x86_64:\n'), 'f.yaml');
    assert.deepEqual(findDistro([bare as DistroEntry], 'mini', 'x86_64'), {});
  });

  it('refuses names from the object prototype as architectures', async () => {
    const distros = await parseDistros(ONE, 'f.yaml');
    for (const arch of ['toString', '__proto__', 'constructor'])
      throwsUsage(
        () => findDistro(distros, 'mini', arch),
        `distro 'mini' has no ${arch} image (has: x86_64)`,
      );
  });

  it('refuses a missing architecture, listing the ones it has', async () => {
    const distros = await parseDistros(ONE, 'f.yaml');
    throwsUsage(
      () => findDistro(distros, 'mini', 'aarch64'),
      "distro 'mini' has no aarch64 image (has: x86_64)",
    );
  });
});

describe('imagePath', () => {
  const app = '/home/u/.pvmlab';

  it('is images/<distro>/<arch>/<basename of the URL>', () => {
    assert.equal(
      imagePath(
        app,
        'ubuntu-24.04',
        'x86_64',
        'https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64.img',
      ),
      '/home/u/.pvmlab/images/ubuntu-24.04/x86_64/noble-server-cloudimg-amd64.img',
    );
  });

  it('ignores the query and fragment and decodes the name', () => {
    assert.equal(
      imagePath(app, 'd', 'aarch64', 'https://h/x/My%20Image.qcow2?token=1#frag'),
      '/home/u/.pvmlab/images/d/aarch64/My Image.qcow2',
    );
  });

  it('falls back to image.qcow2 when the URL has no file name', () => {
    assert.equal(
      imagePath(app, 'd', 'x86_64', 'https://h/x/'),
      '/home/u/.pvmlab/images/d/x86_64/image.qcow2',
    );
    assert.equal(imagePath(app, 'd', 'x86_64', 'https://h'), '/home/u/.pvmlab/images/d/x86_64/image.qcow2');
  });

  it('stays inside the image directory whatever the URL encodes', () => {
    assert.equal(
      imagePath(app, 'd', 'x86_64', 'https://h/x/..%2F..%2F..%2Fevil.img'),
      '/home/u/.pvmlab/images/d/x86_64/evil.img',
    );
    assert.equal(
      imagePath(app, 'd', 'x86_64', 'https://h/x/%2E%2E'),
      '/home/u/.pvmlab/images/d/x86_64/image.qcow2',
    );
    assert.equal(
      imagePath(app, 'd', 'x86_64', 'https://h/x/a%5Cb.img'),
      '/home/u/.pvmlab/images/d/x86_64/b.img',
    );
  });

  it('keeps a name with a stray % as written', () => {
    assert.equal(
      imagePath(app, 'd', 'x86_64', 'https://h/x/100%.img'),
      '/home/u/.pvmlab/images/d/x86_64/100%.img',
    );
  });
});
