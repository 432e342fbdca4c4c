import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import * as v from 'valibot';
import { PvmlabError, UsageError } from '../core/errors.js';
import { readTextIfExists, writeFileAtomic } from '../core/fsutil.js';

const sha256Hex = v.pipe(
  // YAML reads an all-digit checksum as a number: tell the user to quote it.
  v.string('sha256 must be a quoted string of 64 hex digits'),
  v.regex(/^[0-9a-f]{64}$/i, 'sha256 must be 64 hex digits'),
);

const ArchEntry = v.object({
  /** Cloud image for disk VMs (the base of their qcow2 overlay). */
  qcow2_url: v.optional(v.pipe(v.string(), v.url())),
  kernel_path: v.optional(v.string()),
  initrd_path: v.optional(v.string()),
  /** Expected sha256 of the image, hex. */
  sha256: v.optional(sha256Hex),
  /** A SHA256SUMS-style file listing the image (used when sha256 is not given). */
  checksum_url: v.optional(v.pipe(v.string(), v.url())),
  /** Root file system tarball (.tar.xz, .tar.gz, .tar.zst) for PXE installs, kernel included. */
  rootfs_url: v.optional(v.pipe(v.string(), v.url())),
  rootfs_sha256: v.optional(sha256Hex),
  /** A SHA256SUMS file listing the tarball (default: checksum_url). */
  rootfs_checksum_url: v.optional(v.pipe(v.string(), v.url())),
});

/** A distro built here from its packages instead of downloaded: Debian's, with mmdebstrap. */
const Build = v.object({
  tool: v.literal('mmdebstrap'),
  suite: v.pipe(v.string(), v.regex(/^[a-z][a-z0-9-]*$/, 'suite must be a Debian suite name')),
  /** Extra packages on top of what an installable system needs (kernel, GRUB, cloud-init, OpenSSH). */
  packages: v.optional(
    v.array(v.pipe(v.string(), v.regex(/^[a-z0-9][a-z0-9+.-]*$/, 'a Debian package name'))),
  ),
  /** Default http://deb.debian.org/debian, or PVMLAB_DEBIAN_MIRROR. */
  mirror: v.optional(v.pipe(v.string(), v.url())),
});

const Distro = v.object({
  name: v.pipe(
    v.string(),
    v.regex(/^[a-z0-9][a-z0-9._-]*$/, 'name must be lowercase letters, digits, . _ -'),
  ),
  distro_name: v.string(),
  version: v.union([v.string(), v.number()]),
  build: v.optional(Build),
  arch: v.record(v.picklist(['x86_64', 'aarch64']), v.optional(v.nullable(ArchEntry), {})),
});

export const DistrosSchema = v.array(Distro);
export type DistroEntry = v.InferOutput<typeof Distro>;
export type DistroArch = NonNullable<v.InferOutput<typeof ArchEntry>>;
export type DistroBuild = v.InferOutput<typeof Build>;

/** The distro PXE installs use when `--distro` is not given: built here, so it works offline. */
export const DEFAULT_PXE_DISTRO = 'debian-12';

/** Written to ~/.pvmlab/distros.yaml on first use; the user may edit it. */
export const DEFAULT_DISTROS_YAML = `# Distributions pvmlab can create VMs from. Created at ~/.pvmlab/distros.yaml on first use;
# add, remove or change entries freely (a built-in entry missing here is still known).
# Per architecture:
#   qcow2_url     cloud image used as the base of disk VMs
#   sha256        expected checksum of the image (optional), or
#   checksum_url  a SHA256SUMS file that lists the image (optional)
#   rootfs_url    root file system tarball (kernel and GRUB included) for PXE installs,
#                 checked with rootfs_sha256 or rootfs_checksum_url (default: checksum_url)
# A distro with a build: section is built here from its packages by \`pvmlab distro pull\`.
- name: debian-12
  distro_name: debian
  version: "12"
  build:
    tool: mmdebstrap
    suite: bookworm
  arch:
    x86_64: {}
    aarch64: {}
- name: ubuntu-24.04
  distro_name: ubuntu
  version: "24.04"
  arch:
    aarch64:
      qcow2_url: https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-arm64.img
      checksum_url: https://cloud-images.ubuntu.com/noble/current/SHA256SUMS
      rootfs_url: https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-arm64-root.tar.xz
      kernel_path: ./boot/vmlinuz
      initrd_path: ./boot/initrd.img
    x86_64:
      qcow2_url: https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64.img
      checksum_url: https://cloud-images.ubuntu.com/noble/current/SHA256SUMS
      rootfs_url: https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64-root.tar.xz
      kernel_path: ./boot/vmlinuz
      initrd_path: ./boot/initrd.img
# Fedora publishes no root file system tarball, only disk images: disk VMs only.
- name: fedora-40
  distro_name: fedora
  version: "40"
  arch:
    aarch64:
      qcow2_url: https://download.fedoraproject.org/pub/fedora/linux/releases/40/Cloud/aarch64/images/Fedora-Cloud-Base-Generic.aarch64-40-1.14.qcow2
      kernel_path: ./boot/vmlinuz-6.8.5-301.fc40.aarch64
      initrd_path: ./boot/initramfs-6.8.5-301.fc40.aarch64.img
    x86_64:
      qcow2_url: https://download.fedoraproject.org/pub/fedora/linux/releases/40/Cloud/x86_64/images/Fedora-Cloud-Base-Generic.x86_64-40-1.14.qcow2
      kernel_path: ./boot/vmlinuz-6.8.5-301.fc40.x86_64
      initrd_path: ./boot/initramfs-6.8.5-301.fc40.x86_64.img
`;

export function distrosPath(app: string): string {
  return join(app, 'distros.yaml');
}

export async function parseDistros(text: string, source: string): Promise<DistroEntry[]> {
  const { parse } = await import('../core/yaml.js');
  let data: unknown;
  try {
    data = parse(text);
  } catch (err) {
    throw new PvmlabError(`${source} is not valid YAML: ${(err as Error).message}`);
  }
  const r = v.safeParse(DistrosSchema, data ?? []);
  if (!r.success) {
    const i = r.issues[0];
    const path = i?.path?.map((p) => String(p.key)).join('.');
    throw new PvmlabError(`${source}: ${path ? `${path}: ` : ''}${i?.message ?? 'invalid'}`);
  }
  const seen = new Set<string>();
  for (const d of r.output) {
    if (seen.has(d.name)) throw new PvmlabError(`${source}: distro '${d.name}' is listed twice`);
    seen.add(d.name);
  }
  return r.output;
}

/**
 * Read ~/.pvmlab/distros.yaml (the built-in list when there is none). Reading writes nothing:
 * a refused command must leave the lab as it was; `setup` writes the file for users to edit.
 */
export async function loadDistros(app: string): Promise<DistroEntry[]> {
  const path = distrosPath(app);
  const text = (await readTextIfExists(path)) ?? DEFAULT_DISTROS_YAML;
  const user = await parseDistros(text, path);
  // A lab made before a built-in distro existed still knows it; an entry of the same name wins.
  const builtIn = await parseDistros(DEFAULT_DISTROS_YAML, 'the built-in distros');
  return [...user, ...builtIn.filter((b) => !user.some((u) => u.name === b.name))];
}

/** Write the built-in distros.yaml if the lab has none (setup), so users find a file to edit. */
export async function ensureDistrosFile(app: string): Promise<void> {
  const path = distrosPath(app);
  if ((await readTextIfExists(path)) !== undefined) return;
  await fs.mkdir(app, { recursive: true });
  await writeFileAtomic(path, DEFAULT_DISTROS_YAML);
}

export function findDistroEntry(distros: readonly DistroEntry[], name: string): DistroEntry {
  const d = distros.find((x) => x.name === name);
  if (!d)
    throw new UsageError(
      `unknown distro '${name}' (known: ${distros.map((x) => x.name).join(', ') || 'none'})`,
    );
  return d;
}

export function findDistro(distros: readonly DistroEntry[], name: string, arch: string): DistroArch {
  const d = findDistroEntry(distros, name);
  if (!Object.hasOwn(d.arch, arch))
    throw new UsageError(`distro '${name}' has no ${arch} image (has: ${Object.keys(d.arch).join(', ')})`);
  return d.arch[arch as 'x86_64' | 'aarch64'] ?? {};
}

/** Can this distro be PXE-installed: built here, or a root file system tarball to download? */
export function pxeSource(d: DistroEntry, arch: string): 'build' | 'rootfs' | undefined {
  if (!Object.hasOwn(d.arch, arch)) return undefined;
  if (d.build) return 'build';
  return d.arch[arch as 'x86_64' | 'aarch64']?.rootfs_url ? 'rootfs' : undefined;
}

/** Where a distro's image lives: images/<distro>/<arch>/<basename of the URL>. */
export function imagePath(app: string, distro: string, arch: string, url: string): string {
  const last = new URL(url).pathname.split('/').pop() ?? '';
  let base: string;
  try {
    base = decodeURIComponent(last);
  } catch {
    base = last; // a stray '%': keep the name as written
  }
  // An encoded '/' (%2F) must not lead out of the image directory.
  base = base.split(/[/\\]/).pop() ?? '';
  if (base === '' || base === '.' || base === '..') base = 'image.qcow2';
  return join(app, 'images', distro, arch, base);
}
