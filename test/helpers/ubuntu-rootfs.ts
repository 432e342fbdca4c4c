/**
 * A small stand-in for Ubuntu's published root tarball (`noble-server-cloudimg-amd64-root.tar.xz`)
 * and the SHA256SUMS next to it, with the same layout: members named `./...`, a kernel in
 * `boot/vmlinuz-<version>` (0600, as Ubuntu ships it) with a `boot/vmlinuz` symlink, merged /usr
 * (`lib -> usr/lib`), zstd-compressed modules under `usr/lib/modules/<version>/` with a
 * modules.dep naming `.ko.zst` files, and a user's files owned by uid 1000.
 *
 * Made without root: the archive is written in two passes, the second appending the user's home
 * with tar's `--owner`/`--group`, so ownership does not depend on who runs the tests. Needs tar,
 * xz and zstd.
 */
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { dirname, join } from 'node:path';

export const FIXTURE_KERNEL_VERSION = '6.8.0-31-generic';

/** The user's files: owned by 1000:1000, the key with mode 0600. */
export const USER_UID = 1000;
export const USER_HOME = 'home/ubuntu';
export const USER_SECRET = 'home/ubuntu/.ssh/authorized_keys';
/** Owned by 2000, recorded under the name `daemon` (see below). */
export const ID_CHECK = 'var/lib/id-check';
export const ID_CHECK_UID = 2000;

/** modules.dep of the fixture, Ubuntu 24.04 style: paths relative to the version directory, `.ko.zst`. */
const MODULES_DEP: [string, string[]][] = [
  [
    'kernel/drivers/net/virtio_net.ko.zst',
    ['kernel/drivers/net/net_failover.ko.zst', 'kernel/net/core/failover.ko.zst'],
  ],
  ['kernel/drivers/net/net_failover.ko.zst', ['kernel/net/core/failover.ko.zst']],
  ['kernel/net/core/failover.ko.zst', []],
  ['kernel/drivers/block/virtio_blk.ko.zst', []],
  ['kernel/drivers/nvme/host/nvme.ko.zst', ['kernel/drivers/nvme/host/nvme-core.ko.zst']],
  ['kernel/drivers/nvme/host/nvme-core.ko.zst', []],
  ['kernel/fs/nls/nls_iso8859-1.ko.zst', []],
  // Not wanted by the installer, nor needed by anything it wants.
  ['kernel/sound/pci/hda/snd-hda-intel.ko.zst', ['kernel/sound/core/snd.ko.zst']],
  ['kernel/sound/core/snd.ko.zst', []],
];

/** What the installer's modules.cpio.gz must hold (uncompressed names), in modules.dep order. */
export const FIXTURE_INSTALLER_MODULES = [
  'kernel/drivers/net/virtio_net.ko',
  'kernel/drivers/net/net_failover.ko',
  'kernel/net/core/failover.ko',
  'kernel/drivers/block/virtio_blk.ko',
  'kernel/drivers/nvme/host/nvme.ko',
  'kernel/drivers/nvme/host/nvme-core.ko',
  'kernel/fs/nls/nls_iso8859-1.ko',
];
/** Modules in the tarball the installer must not get. */
export const FIXTURE_OTHER_MODULES = ['kernel/sound/pci/hda/snd-hda-intel.ko', 'kernel/sound/core/snd.ko'];

export interface RootTarball {
  /** Directory holding the tarball and SHA256SUMS (as on cloud-images.ubuntu.com/noble/current/). */
  dir: string;
  name: string;
  path: string;
  bytes: Buffer;
  sha256: string;
  /** SHA256SUMS listing the tarball (and, like Ubuntu's, other files) in binary mode: `<sha> *name`. */
  sums: string;
  kernelVersion: string;
  /** The kernel's bytes (boot/vmlinuz-<version>). */
  kernel: Buffer;
  /** Uncompressed bytes of every module, by its uncompressed path under usr/lib/modules/<version>/. */
  modules: Map<string, Buffer>;
}

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** `<sha> *name` lines, as Ubuntu publishes them. */
export function sumsFile(entries: Record<string, string>): string {
  return Object.entries(entries)
    .map(([name, sha]) => `${sha} *${name}\n`)
    .join('');
}

async function write(root: string, rel: string, data: string | Buffer, mode = 0o644): Promise<void> {
  const p = join(root, rel);
  await fs.mkdir(dirname(p), { recursive: true });
  await fs.writeFile(p, data);
  await fs.chmod(p, mode);
}

/** Build the tarball and SHA256SUMS in `dir` (created if needed). */
export async function makeUbuntuRootTarball(
  dir: string,
  o: { arch?: 'amd64' | 'arm64'; kernelVersion?: string } = {},
): Promise<RootTarball> {
  const arch = o.arch ?? 'amd64';
  const kernelVersion = o.kernelVersion ?? FIXTURE_KERNEL_VERSION;
  const name = `noble-server-cloudimg-${arch}-root.tar.xz`;
  await fs.mkdir(dir, { recursive: true });
  const stage = await fs.mkdtemp(join(dir, '.stage-'));
  try {
    const root = join(stage, 'root');
    await fs.mkdir(root);
    const kernel = Buffer.concat([Buffer.from('MZ fake bzImage\n'), randomBytes(64 * 1024)]);
    await write(root, `boot/vmlinuz-${kernelVersion}`, kernel, 0o600);
    await fs.symlink(`vmlinuz-${kernelVersion}`, join(root, 'boot/vmlinuz'));
    await fs.symlink('usr/lib', join(root, 'lib'));
    await fs.symlink('usr/bin', join(root, 'bin'));
    await write(root, 'etc/hostname', 'ubuntu\n');
    await write(root, 'etc/shadow', 'root:*:19800:0:99999:7:::\n', 0o640);
    await write(root, 'usr/bin/true', '#!/bin/sh\n', 0o755);
    await write(root, 'usr/bin/fake-su', 'setuid\n', 0o4755);

    const modDir = join(root, 'usr/lib/modules', kernelVersion);
    const modules = new Map<string, Buffer>();
    for (const [path] of MODULES_DEP) {
      const plain = path.replace(/\.zst$/, '');
      const data = Buffer.concat([Buffer.from(`\x7fELF fake module ${plain}\n`), randomBytes(2048)]);
      modules.set(plain, data);
      await write(modDir, plain, data);
      execFileSync('zstd', ['-q', '--rm', join(modDir, plain), '-o', join(modDir, path)]);
    }
    await write(
      modDir,
      'modules.dep',
      MODULES_DEP.map(([m, d]) => `${m}:${d.map((x) => ` ${x}`).join('')}\n`).join(''),
    );
    await write(modDir, 'modules.order', MODULES_DEP.map(([m]) => `${m.replace(/\.zst$/, '')}\n`).join(''));
    await write(modDir, 'modules.builtin', 'kernel/drivers/virtio/virtio_pci.ko\nkernel/fs/ext4/ext4.ko\n');

    // The user's home: appended in a second pass, owned by 1000.
    await fs.mkdir(join(root, USER_HOME, '.ssh'), { recursive: true });
    await fs.chmod(join(root, USER_HOME), 0o750);
    await fs.chmod(join(root, USER_HOME, '.ssh'), 0o700);
    await write(root, USER_SECRET, 'ssh-ed25519 AAAAfake user@host\n', 0o600);

    // Recorded with a name the host knows under another id (daemon is 1 or 2 on Linux hosts):
    // unpacking must keep the tarball's numeric ids, never map names through the host's passwd.
    await write(root, ID_CHECK, 'numeric owners only\n', 0o600);

    const tar = join(stage, 'root.tar');
    // NAME:ID, as tar records both; `+ID` alone would be stored as a name.
    const common = ['--sort=name', '--mtime=2024-04-25 00:00Z', '-C', root];
    const tarPass = (mode: '-c' | '-r', owner: string, members: string[], exclude: string[] = []) =>
      execFileSync('tar', [
        ...common,
        `--owner=${owner}`,
        `--group=${owner}`,
        ...exclude.map((e) => `--exclude=./${e}`),
        `${mode}f`,
        tar,
        ...members,
      ]);
    tarPass('-c', 'root:0', ['.'], [USER_HOME, ID_CHECK]);
    tarPass('-r', `ubuntu:${USER_UID}`, [`./${USER_HOME}`]);
    tarPass('-r', `daemon:${ID_CHECK_UID}`, [`./${ID_CHECK}`]);
    execFileSync('xz', ['-q', '-T1', '-6', tar]);
    const path = join(dir, name);
    await fs.rename(`${tar}.xz`, path);
    const bytes = await fs.readFile(path);
    const sha = sha256(bytes);
    const sums = sumsFile({
      [`noble-server-cloudimg-${arch}.img`]: 'a'.repeat(64),
      [name]: sha,
      [`noble-server-cloudimg-${arch === 'amd64' ? 'arm64' : 'amd64'}-root.tar.xz`]: 'b'.repeat(64),
    });
    await fs.writeFile(join(dir, 'SHA256SUMS'), sums);
    return { dir, name, path, bytes, sha256: sha, sums, kernelVersion, kernel, modules };
  } finally {
    await fs.rm(stage, { recursive: true, force: true });
  }
}
