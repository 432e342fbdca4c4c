import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { dirname } from 'node:path';
import { PvmlabError, UsageError } from '../core/errors.js';
import { vmFiles } from '../core/paths.js';
import { log } from '../core/log.js';
import { buildIso } from '../cloudinit/iso.js';
import { targetSeedFiles } from '../cloudinit/nocloud.js';
import { copyLocalImage, download, parseChecksumFile } from '../distro/download.js';
import {
  DEFAULT_PXE_DISTRO,
  ensureDistrosFile,
  findDistro,
  findDistroEntry,
  imagePath,
  loadDistros,
  pxeSource,
  type DistroArch,
} from '../distro/distros.js';
import { readManifest } from '../distro/manifest.js';
import { assignAddresses, assignMac, checkNameFree } from '../lab/allocate.js';
import { loadLabConfig, resolveLabConfig } from '../lab/config.js';
import { MIN_MEMORY_MIB, VM_SCHEMA_VERSION, checkVmForWrite, type VmDefinition } from '../core/vmdef.js';
import { ensureLabSshKey } from '../lab/sshkey.js';
import { labState, saveVm, withLabLock } from '../lab/store.js';
import { checkDiskSize, parseSubnet, type Arch } from '../lab/validate.js';
import { namedFsError } from '../core/fsutil.js';
import { createBlankDisk, createOverlayDisk } from '../qemu/img.js';
import { ensureLabDirs, type Context } from './context.js';
import { downloadProgressBar } from './progress.js';

export interface CreateRequest {
  name: string;
  arch: Arch;
  ip?: string;
  ipv6?: string;
  mac?: string;
  diskBytes: number;
  pxeboot: boolean;
  distro?: string;
  memoryMiB: number;
  cpus: number;
}

export const DEFAULT_DISTRO = 'ubuntu-24.04';

/** Fetch the distro image (outside the lab lock: it can take minutes). */
async function ensureImage(
  ctx: Context,
  distro: string,
  arch: Arch,
  entry: DistroArch & { qcow2_url: string },
): Promise<string> {
  const dest = imagePath(ctx.app, distro, arch, entry.qcow2_url);
  let sha256 = entry.sha256;
  const existing = await fs.stat(dest).catch(() => undefined);
  if (existing) return dest;
  if (entry.qcow2_url.startsWith('file:')) {
    await copyLocalImage({ url: entry.qcow2_url, dest, ...(sha256 ? { sha256 } : {}) });
    return dest;
  }
  if (!sha256 && entry.checksum_url) {
    const r = await fetch(entry.checksum_url).catch((err: Error) => {
      throw new PvmlabError(`cannot fetch checksums ${entry.checksum_url}: ${err.message}`);
    });
    if (!r.ok) throw new PvmlabError(`cannot fetch checksums ${entry.checksum_url}: HTTP ${r.status}`);
    const name = dest.split('/').pop() ?? '';
    sha256 = parseChecksumFile(await r.text(), name);
    if (!sha256) throw new PvmlabError(`${entry.checksum_url} does not list ${name}`);
  }
  log.info(`Downloading ${distro} (${arch}) from ${entry.qcow2_url}`);
  const bar = downloadProgressBar(`${distro} ${arch}`);
  const abort = new AbortController();
  const onSigint = () => abort.abort(new Error('interrupted'));
  process.once('SIGINT', onSigint);
  try {
    await download({
      url: entry.qcow2_url,
      dest,
      onProgress: (p) => bar.update(p),
      signal: abort.signal,
      ...(sha256 ? { sha256 } : {}),
    });
  } finally {
    bar.stop();
    process.off('SIGINT', onSigint);
  }
  log.success(
    sha256
      ? 'Download complete, checksum verified.'
      : 'Download complete (no checksum listed for this image).',
  );
  return dest;
}

/**
 * Refuse a request whose values no VM may have, before anything is read or written: the same
 * rules the definition is read by (vmdef), named by the flag that gave the value.
 */
export function checkCreateRequest(req: CreateRequest): void {
  if (req.ip !== undefined && req.ip.trim() === '')
    throw new UsageError(
      "invalid --ip '': give an address (e.g. 192.168.100.10), or leave --ip out to get the next free one",
    );
  if (req.ipv6 !== undefined && req.ipv6.trim() === '')
    throw new UsageError(
      "invalid --ipv6 '': give an address with its prefix (e.g. fd00:cafe:babe::10/64), or leave --ipv6 out",
    );
  if (req.distro !== undefined && req.distro.trim() === '')
    throw new UsageError(
      "invalid --distro '': name an entry of distros.yaml (pvmlab distro list), or leave --distro out",
    );
  if (!Number.isInteger(req.memoryMiB) || req.memoryMiB < MIN_MEMORY_MIB)
    throw new UsageError(`invalid --memory ${req.memoryMiB}: at least ${MIN_MEMORY_MIB} MiB`);
  if (!Number.isInteger(req.cpus) || req.cpus < 1)
    throw new UsageError(`invalid --cpus ${req.cpus}: at least 1`);
  checkDiskSize(req.diskBytes);
}

/**
 * Create a VM definition with its disk (and seed ISO for disk VMs). Every check that can refuse
 * the request runs before anything is written (a usage error leaves no trace, not even
 * ~/.pvmlab); everything after the download happens under the lab lock, and a failure removes
 * only what this create made (a name with any file at all is refused, so nothing of another VM
 * is ever in the way).
 */
export async function createVm(ctx: Context, req: CreateRequest): Promise<VmDefinition> {
  checkCreateRequest(req);
  const lab = resolveLabConfig(await loadLabConfig(ctx.app));
  const want = {
    ...(req.ip !== undefined ? { ip: req.ip } : {}),
    ...(req.ipv6 !== undefined ? { ipv6: req.ipv6 } : {}),
  };
  // Fail fast on conflicts we can already see, before a long download.
  {
    const { vms, others, paths } = await labState(ctx.app, req.name);
    checkNameFree(vms, req.name, paths);
    assignAddresses(lab, vms, want, others);
    if (req.mac) assignMac([...vms, ...others], req.mac, randomBytes);
  }
  const distroName = req.distro ?? (req.pxeboot ? DEFAULT_PXE_DISTRO : DEFAULT_DISTRO);
  const distros = await loadDistros(ctx.app);
  const distro = findDistroEntry(distros, distroName);
  const entry = findDistro(distros, distroName, req.arch);
  // What the stack's iPXE script boots: a pulled distro's kernel is always `vmlinuz`; an entry
  // without a PXE source may still name one placed in images/ by hand (kernel_path).
  let kernel: string | undefined;
  let qcow2Url: string | undefined;
  let notPulled = false;
  if (req.pxeboot) {
    if (pxeSource(distro, req.arch)) {
      kernel = 'vmlinuz';
      notPulled = !(await readManifest(ctx.app, distroName, req.arch));
    } else if (entry.kernel_path) kernel = entry.kernel_path.split('/').pop();
    else
      throw new UsageError(
        `distro '${distroName}' cannot be installed over the network on ${req.arch} (it has no build recipe and no rootfs_url)`,
      );
  } else {
    kernel = entry.kernel_path?.split('/').pop();
    qcow2Url = entry.qcow2_url;
    if (!qcow2Url)
      throw new UsageError(
        `distro '${distroName}' has no cloud image for disk VMs (no qcow2_url for ${req.arch}); install it over the network instead: pvmlab vm create ${req.name} --pxeboot --distro ${distroName}`,
      );
  }

  // Checked: from here on the lab is written to.
  await ensureLabDirs(ctx.app);
  await ensureDistrosFile(ctx.app);
  if (notPulled)
    log.warn(
      `${distroName} (${req.arch}) is not pulled yet: run 'pvmlab distro pull --distro ${distroName} --arch ${req.arch}' before starting ${req.name}`,
    );
  const baseImage = qcow2Url
    ? await ensureImage(ctx, distroName, req.arch, { ...entry, qcow2_url: qcow2Url })
    : undefined;

  return withLabLock(ctx.app, async () => {
    // Under the lock: parallel creates in a new lab agree on one key pair.
    const key = await ensureLabSshKey(ctx.app);
    const { vms, others, paths } = await labState(ctx.app, req.name);
    checkNameFree(vms, req.name, paths);
    const addr = assignAddresses(lab, vms, want, others);
    const mac = assignMac([...vms, ...others], req.mac, randomBytes);
    const files = vmFiles(ctx.app, req.name);
    const vm: VmDefinition = {
      name: req.name,
      role: 'target',
      arch: req.arch,
      ip: addr.ip,
      subnet: addr.subnet,
      ...(addr.ipv6 ? { ipv6: addr.ipv6, subnetv6: addr.subnetv6 } : {}),
      mac,
      pxeboot: req.pxeboot,
      distro: distroName,
      ssh_key: key.publicKey,
      ...(kernel ? { kernel } : {}),
      ...(entry.initrd_path ? { initrd: entry.initrd_path.split('/').pop() } : {}),
      memory: req.memoryMiB,
      cpus: req.cpus,
      schema_version: VM_SCHEMA_VERSION,
    };
    // The definition must be one pvmlab will read back, before any of its files exist.
    const check = checkVmForWrite(vm);
    if (!check.ok) throw new PvmlabError(`VM '${req.name}' would not be readable: ${check.error}`);
    const created: string[] = [];
    try {
      created.push(files.disk);
      if (baseImage) await createOverlayDisk(ctx.runner, baseImage, files.disk, req.diskBytes);
      else await createBlankDisk(ctx.runner, files.disk, req.diskBytes);
      if (!req.pxeboot) {
        const prov = vms.find((v) => v.role === 'provisioner');
        const seed = targetSeedFiles({
          name: req.name,
          mac,
          ip: addr.ip,
          prefix: parseSubnet(addr.subnet, 'ipv4', 'subnet').prefix,
          ...(addr.ipv6 && addr.subnetv6
            ? { ipv6: addr.ipv6, prefix6: parseSubnet(addr.subnetv6, 'ipv6', 'subnetv6').prefix }
            : {}),
          gateway: prov?.ip ?? lab.config.provisioner_ip,
          sshPublicKey: key.publicKey,
        });
        created.push(files.seedDir);
        await fs.mkdir(files.seedDir, { recursive: true });
        for (const f of seed) await writeNamed(`${files.seedDir}/${f.name}`, f.content);
        created.push(files.seedIso);
        await fs.mkdir(dirname(files.seedIso), { recursive: true });
        const iso = buildIso(
          seed.map((f) => ({ name: f.name, data: Buffer.from(f.content) })),
          { volumeId: 'cidata' },
        );
        await writeNamed(files.seedIso, iso);
      }
      created.push(files.definition);
      await saveVm(ctx.app, vm);
      return vm;
    } catch (err) {
      // Only what this create made: the name had no file at all when the lock was taken.
      await Promise.all(
        created.map((p) => fs.rm(p, { recursive: true, force: true }).catch(() => undefined)),
      );
      if (err instanceof UsageError || err instanceof PvmlabError) throw err;
      throw new PvmlabError(`creating VM '${req.name}' failed: ${(err as Error).message}`, { cause: err });
    }
  });
}

/** fs.writeFile with the file named in the error (a full disk says only "ENOSPC ... write"). */
async function writeNamed(path: string, data: string | Uint8Array): Promise<void> {
  try {
    await fs.writeFile(path, data, { flag: 'wx' });
  } catch (err) {
    throw namedFsError(err, `cannot write ${path}`);
  }
}
