/**
 * The provisioner's disk image, built here from Debian's packages (no download of a prebuilt
 * image: labs and tests run with no internet): Debian 12 with a real container engine
 * (docker.io), cloud-init and OpenSSH, as one ext4 file system that is the whole disk. The VM
 * boots its kernel directly (QEMU -kernel under the UEFI firmware): no partition table and no
 * boot loader to build, and the firmware's boot menu is skipped.
 *
 * Built once per recipe and kept in the cache (`<cache>/provisioner/<arch>-<key>/`), then
 * linked into the lab's `images/provisioner/` (the disk is an overlay on it).
 */
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { basename, join } from 'node:path';
import { PvmlabError } from '../core/errors.js';
import { runChecked, startProcess, type Runner } from '../core/exec.js';
import { cacheEntryPattern, pruneCache } from '../core/cache.js';
import { writeFileAtomic } from '../core/fsutil.js';
import { cacheDir } from '../core/paths.js';
import {
  DEFAULT_MIRROR,
  debianArch,
  enableNetworkdArgv,
  genericise,
  mmdebstrapArgv,
} from '../distro/debian.js';
import { findKernel, imageSizesMiB, mke2fsArgv } from '../distro/rootfs.js';
import type { Arch } from '../lab/validate.js';
import * as v from 'valibot';

/** Bump when the build below changes what an image holds (the cache key includes it). */
export const PROVISIONER_IMAGE_VERSION = 1;

/** The file system label of the root (the kernel's `root=`). */
export const ROOT_LABEL = 'pvmlab-prov';

export function provisionerPackages(arch: Arch): string[] {
  const a = debianArch(arch);
  return [
    'systemd-sysv',
    'udev',
    'kmod',
    'dbus',
    // The generic kernel: the cloud one has no 9p, which the lab's shares use.
    `linux-image-${a}`,
    'cloud-init',
    'openssh-server',
    'sudo',
    'iproute2',
    'netbase',
    'procps',
    'docker.io',
    'iptables',
    'ca-certificates',
    'curl',
    'less',
  ];
}

/**
 * Only the modules the root needs in the initramfs (virtio PCI and block, ext4):
 * `MODULES=most` made a 35 MiB initrd for a machine whose devices are known.
 */
export const INITRAMFS_CONF = 'MODULES=list\nCOMPRESS=zstd\n';
export const INITRAMFS_MODULES = 'virtio_pci\nvirtio_blk\next4\n';

export interface ProvisionerRecipe {
  suite: string;
  arch: Arch;
  packages: string[];
  mirror: string;
}

export function provisionerRecipe(arch: Arch, env: NodeJS.ProcessEnv = process.env): ProvisionerRecipe {
  return {
    suite: 'bookworm',
    arch,
    packages: provisionerPackages(arch),
    mirror: env.PVMLAB_DEBIAN_MIRROR ?? DEFAULT_MIRROR,
  };
}

export function recipeKey(r: ProvisionerRecipe): string {
  return createHash('sha256')
    .update(
      JSON.stringify({ v: PROVISIONER_IMAGE_VERSION, r, INITRAMFS_CONF, INITRAMFS_MODULES, ROOT_LABEL }),
    )
    .digest('hex')
    .slice(0, 16);
}

/** The kernel command line: the root by label, the serial console of the machine type. */
export function kernelCmdline(arch: Arch): string {
  const console = arch === 'x86_64' ? 'ttyS0,115200' : 'ttyAMA0,115200';
  return `root=LABEL=${ROOT_LABEL} rw console=${console} quiet`;
}

/** mmdebstrap for the provisioner: the lab's Debian build options, plus a small initramfs. */
export function provisionerMmdebstrapArgv(r: ProvisionerRecipe, target: string): string[] {
  const argv = mmdebstrapArgv(r, target);
  // Before the kernel's postinst makes the initramfs: initramfs-tools reads these then.
  const hook =
    `--essential-hook=mkdir -p "$1/etc/initramfs-tools/conf.d" && ` +
    `printf '${INITRAMFS_CONF.replace(/\n/g, '\\n')}' > "$1/etc/initramfs-tools/conf.d/pvmlab.conf" && ` +
    `printf '${INITRAMFS_MODULES.replace(/\n/g, '\\n')}' >> "$1/etc/initramfs-tools/modules"`;
  // The suite and target come after the options: insert before them.
  const at = argv.indexOf(r.suite);
  return [...argv.slice(0, at), hook, ...argv.slice(at)];
}

const ManifestSchema = v.object({
  schema_version: v.literal(1),
  arch: v.picklist(['x86_64', 'aarch64']),
  key: v.string(),
  disk: v.literal('disk.qcow2'),
  kernel: v.literal('vmlinuz'),
  initrd: v.literal('initrd.img'),
  kernel_version: v.string(),
  cmdline: v.string(),
  created: v.string(),
  source: v.string(),
});
export type ProvisionerImage = v.InferOutput<typeof ManifestSchema> & { dir: string };

const MANIFEST = 'manifest.json';

export async function readImage(dir: string): Promise<ProvisionerImage | undefined> {
  const text = await fs.readFile(join(dir, MANIFEST), 'utf8').catch(() => undefined);
  if (text === undefined) return undefined;
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    return undefined;
  }
  const r = v.safeParse(ManifestSchema, data);
  if (!r.success) return undefined;
  for (const f of [r.output.disk, r.output.kernel, r.output.initrd])
    if (!(await fs.stat(join(dir, f)).catch(() => undefined))?.isFile()) return undefined;
  return { ...r.output, dir };
}

export interface BuildOptions {
  arch: Arch;
  runner: Runner;
  env?: NodeJS.ProcessEnv;
  force?: boolean;
  onStep?: (msg: string) => void;
}

export function cachedImageDir(arch: Arch, env: NodeJS.ProcessEnv = process.env): string {
  return join(cacheDir(env), 'provisioner', `${arch}-${recipeKey(provisionerRecipe(arch, env))}`);
}

/** The cached provisioner image for `arch`, built when missing (root: mmdebstrap). */
export async function ensureProvisionerImage(o: BuildOptions): Promise<ProvisionerImage> {
  const env = o.env ?? process.env;
  const step = o.onStep ?? (() => undefined);
  const recipe = provisionerRecipe(o.arch, env);
  const key = recipeKey(recipe);
  const dir = cachedImageDir(o.arch, env);
  if (!o.force) {
    const hit = await readImage(dir);
    if (hit) return hit;
  }
  if (process.getuid?.() !== 0)
    throw new PvmlabError(
      'building the provisioner image needs root (mmdebstrap, file ownership): run it with sudo, or give one with --image',
    );
  const work = `${dir}.tmp-${process.pid}`;
  await fs.rm(work, { recursive: true, force: true });
  await fs.mkdir(work, { recursive: true });
  try {
    const root = join(work, 'root');
    step(`building the provisioner image (Debian ${recipe.suite}, ${o.arch}, docker.io) with mmdebstrap`);
    await streaming('mmdebstrap', provisionerMmdebstrapArgv(recipe, root), (line) => {
      if (/^[IEW]: /.test(line)) step(`mmdebstrap: ${line.slice(3)}`);
    });
    await genericise(root);
    await runChecked(o.runner, 'systemctl', enableNetworkdArgv(root));
    await fs.writeFile(join(root, 'etc/fstab'), `LABEL=${ROOT_LABEL} / ext4 errors=remount-ro 0 1\n`);
    const kernel = await findKernel(root);
    const initrd = join(root, 'boot', `initrd.img-${kernel.version}`);
    if (!(await fs.stat(initrd).catch(() => undefined)))
      throw new PvmlabError(`the build made no initramfs for kernel ${kernel.version}`);
    const out = join(work, 'out');
    await fs.mkdir(out);
    await fs.copyFile(kernel.image, join(out, 'vmlinuz'));
    await fs.copyFile(initrd, join(out, 'initrd.img'));
    step('making the disk image (mke2fs -d, qemu-img convert)');
    const raw = join(work, 'root.ext4');
    const used = Number((await runChecked(o.runner, 'du', ['-s', '-k', '-x', root])).stdout.split(/\s/)[0]);
    // Room to start with; cloud-init grows the file system to the disk at first boot.
    const size = (imageSizesMiB(used)[1] ?? 2048) + 512;
    await runChecked(o.runner, 'mke2fs', mke2fsArgv(root, raw, size, ROOT_LABEL));
    await runChecked(o.runner, 'qemu-img', [
      'convert',
      '-q',
      '-f',
      'raw',
      '-O',
      'qcow2',
      raw,
      join(out, 'disk.qcow2'),
    ]);
    const manifest = {
      schema_version: 1 as const,
      arch: o.arch,
      key,
      disk: 'disk.qcow2' as const,
      kernel: 'vmlinuz' as const,
      initrd: 'initrd.img' as const,
      kernel_version: kernel.version,
      cmdline: kernelCmdline(o.arch),
      created: new Date().toISOString(),
      source: `mmdebstrap ${recipe.suite} (${recipe.mirror}): ${recipe.packages.join(' ')}`,
    };
    await writeFileAtomic(join(out, MANIFEST), `${JSON.stringify(manifest, null, 2)}\n`);
    await fs.rm(dir, { recursive: true, force: true });
    await fs.rename(out, dir);
    const built = await readImage(dir);
    if (!built) throw new PvmlabError(`the provisioner image in ${dir} is incomplete after its build`);
    await pruneCache(join(cacheDir(env), 'provisioner'), cacheEntryPattern(`${o.arch}-`), basename(dir));
    return built;
  } finally {
    await fs.rm(work, { recursive: true, force: true });
  }
}

/**
 * Link the image's files into the lab (`images/provisioner/<arch>-<key>/`): VM disks are
 * overlays on it, and the lab keeps working if the cache is cleared.
 */
export async function installImage(img: ProvisionerImage, imagesDir: string): Promise<ProvisionerImage> {
  const dest = join(imagesDir, 'provisioner', `${img.arch}-${img.key}`);
  const have = await readImage(dest);
  if (have) return have;
  const tmp = `${dest}.tmp-${process.pid}`;
  await fs.rm(tmp, { recursive: true, force: true });
  await fs.mkdir(tmp, { recursive: true });
  for (const f of [img.disk, img.kernel, img.initrd, MANIFEST]) {
    const src = join(img.dir, f);
    await fs.link(src, join(tmp, f)).catch(() => fs.copyFile(src, join(tmp, f)));
  }
  await fs.rm(dest, { recursive: true, force: true });
  await fs.rename(tmp, dest);
  const r = await readImage(dest);
  if (!r) throw new PvmlabError(`cannot install the provisioner image into ${dest}`);
  return r;
}

async function streaming(cmd: string, args: string[], onLine: (line: string) => void): Promise<void> {
  const tail: string[] = [];
  const p = await startProcess(cmd, args, {
    onLine: (line) => {
      tail.push(line);
      if (tail.length > 20) tail.shift();
      onLine(line);
    },
  });
  const r = await p.closed;
  if (r.error) throw new PvmlabError(`${cmd}: ${r.error.message}`);
  if (r.code !== 0)
    throw new PvmlabError(`${cmd} failed (${r.signal ?? `exit ${r.code}`}):\n${tail.slice(-8).join('\n')}`);
}
