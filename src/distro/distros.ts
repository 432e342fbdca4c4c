import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import * as v from 'valibot';
import { PvmlabError, UsageError } from '../core/errors.js';
import { readTextIfExists, writeFileAtomic } from '../core/fsutil.js';

const ArchEntry = v.object({
  qcow2_url: v.pipe(v.string(), v.url()),
  kernel_path: v.optional(v.string()),
  initrd_path: v.optional(v.string()),
  /** Expected sha256 of the image, hex. */
  sha256: v.optional(
    v.pipe(
      // YAML reads an all-digit checksum as a number: tell the user to quote it.
      v.string('sha256 must be a quoted string of 64 hex digits'),
      v.regex(/^[0-9a-f]{64}$/i, 'sha256 must be 64 hex digits'),
    ),
  ),
  /** A SHA256SUMS-style file listing the image (used when sha256 is not given). */
  checksum_url: v.optional(v.pipe(v.string(), v.url())),
});

const Distro = v.object({
  name: v.pipe(
    v.string(),
    v.regex(/^[a-z0-9][a-z0-9._-]*$/, 'name must be lowercase letters, digits, . _ -'),
  ),
  distro_name: v.string(),
  version: v.union([v.string(), v.number()]),
  arch: v.record(v.picklist(['x86_64', 'aarch64']), ArchEntry),
});

export const DistrosSchema = v.array(Distro);
export type DistroEntry = v.InferOutput<typeof Distro>;
export type DistroArch = v.InferOutput<typeof ArchEntry>;

/** Written to ~/.pvmlab/distros.yaml on first use; the user may edit it. */
export const DEFAULT_DISTROS_YAML = `# Distributions pvmlab can create VMs from. Created at ~/.pvmlab/distros.yaml on first use;
# add, remove or change entries freely. Per architecture:
#   qcow2_url     cloud image used as the base of disk VMs
#   sha256        expected checksum of the image (optional), or
#   checksum_url  a SHA256SUMS file that lists the image (optional)
#   kernel_path / initrd_path   paths inside the rootfs, for PXE installs (version-specific)
- name: ubuntu-24.04
  distro_name: ubuntu
  version: "24.04"
  arch:
    aarch64:
      qcow2_url: https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-arm64.img
      checksum_url: https://cloud-images.ubuntu.com/noble/current/SHA256SUMS
      kernel_path: ./boot/vmlinuz
      initrd_path: ./boot/initrd.img
    x86_64:
      qcow2_url: https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64.img
      checksum_url: https://cloud-images.ubuntu.com/noble/current/SHA256SUMS
      kernel_path: ./boot/vmlinuz
      initrd_path: ./boot/initrd.img
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

/** Read ~/.pvmlab/distros.yaml, creating it from the defaults the first time. */
export async function loadDistros(app: string): Promise<DistroEntry[]> {
  const path = distrosPath(app);
  let text = await readTextIfExists(path);
  if (text === undefined) {
    await fs.mkdir(app, { recursive: true });
    await writeFileAtomic(path, DEFAULT_DISTROS_YAML);
    text = DEFAULT_DISTROS_YAML;
  }
  return parseDistros(text, path);
}

export function findDistro(distros: readonly DistroEntry[], name: string, arch: string): DistroArch {
  const d = distros.find((x) => x.name === name);
  if (!d)
    throw new UsageError(
      `unknown distro '${name}' (known: ${distros.map((x) => x.name).join(', ') || 'none'})`,
    );
  const a = d.arch[arch as 'x86_64' | 'aarch64'];
  if (!a)
    throw new UsageError(`distro '${name}' has no ${arch} image (has: ${Object.keys(d.arch).join(', ')})`);
  return a;
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
