/**
 * `provisioner create`: the provisioner VM's definition, its disk (an overlay on the image built
 * from Debian's packages, or on `--image`), and its NoCloud seed. As with `vm create`, every
 * check runs before anything is written, and a failure removes only what this create made.
 */
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { PvmlabError, UsageError } from '../core/errors.js';
import type { Runner } from '../core/exec.js';
import { namedFsError } from '../core/fsutil.js';
import { labDirs, vmFiles } from '../core/paths.js';
import { VM_SCHEMA_VERSION, checkVmForWrite, MIN_MEMORY_MIB, type VmDefinition } from '../core/vmdef.js';
import { buildIso } from '../cloudinit/iso.js';
import { provisionerSeedFiles, uplinkMac } from '../cloudinit/provisioner.js';
import { assignMac, checkNameFree } from '../lab/allocate.js';
import { loadLabConfig, resolveLabConfig, type ResolvedLab } from '../lab/config.js';
import { ensureLabSshKey } from '../lab/sshkey.js';
import { labState, saveVm, withLabLock } from '../lab/store.js';
import {
  checkDiskSize,
  inSubnet,
  ipv4ToInt,
  parseAddress,
  parseSubnet,
  sameAddress,
  type Arch,
} from '../lab/validate.js';
import { createOverlayDisk, imageInfo } from '../qemu/img.js';
import { ensureProvisionerImage, installImage } from './image.js';
import { dockerRunOptions, stackEnv } from './container.js';

export interface ProvisionerRequest {
  name: string;
  arch: Arch;
  /** `--ip` a.b.c.d/nn (the prefix may be left out: the lab's). */
  ip: string;
  ipv6?: string;
  mac?: string;
  diskBytes: number;
  /** A pxeboot_stack tar to load and run at first boot (copied into the docker_images share). */
  stackTar?: string;
  dockerImagesPath?: string;
  vmsPath?: string;
  /** A qcow2 to use instead of the built image (it boots from its own disk). */
  image?: string;
  memoryMiB?: number;
  cpus?: number;
}

export interface Deps {
  app: string;
  env: NodeJS.ProcessEnv;
  runner: Runner;
  onStep?: (msg: string) => void;
  warn?: (msg: string) => void;
}

export const DEFAULT_PROVISIONER_DISK = '15G';

export interface ProvisionerAddresses {
  ip: string;
  subnet: string;
  prefix: number;
  ipv6?: string;
  subnetv6?: string;
  prefix6?: number;
}

/**
 * The provisioner's addresses: inside the lab subnet (its prefix), not the network, broadcast or
 * host address, not in the DHCP pool, not another VM's.
 */
export function provisionerAddresses(
  lab: ResolvedLab,
  taken: readonly { name: string; ip?: string; ipv6?: string }[],
  ip: string,
  ipv6?: string,
): ProvisionerAddresses {
  if (ip.trim() === '')
    throw new UsageError('--ip must be specified for the provisioner VM, e.g. --ip 192.168.100.1/24');
  const p = parseAddress(ip, 'ipv4', '--ip');
  const s = lab.subnet;
  if (!inSubnet(p.address, s) || (p.prefix !== undefined && p.prefix !== s.prefix))
    throw new UsageError(`--ip ${ip} is outside the lab subnet ${s.cidr} (pvmlab setup --subnet changes it)`);
  const n = ipv4ToInt(p.address);
  const net = ipv4ToInt(s.network);
  const reserved = new Map<number, string>([
    [net, 'the network address'],
    [net + 2 ** (32 - s.prefix) - 1, 'the broadcast address'],
    [ipv4ToInt(lab.config.host_ip), "the host's address on the lab bridge"],
  ]);
  const why = reserved.get(n);
  if (why) throw new UsageError(`--ip ${p.address} is ${why}`);
  if (n >= ipv4ToInt(lab.config.dhcp_range_start) && n <= ipv4ToInt(lab.config.dhcp_range_end))
    throw new UsageError(
      `--ip ${p.address} is inside the DHCP pool for unknown clients (${lab.config.dhcp_range_start}-${lab.config.dhcp_range_end})`,
    );
  const owner = taken.find((v) => v.ip !== undefined && sameAddress(v.ip, p.address));
  if (owner) throw new UsageError(`IP address ${p.address} is already used by VM '${owner.name}'`);
  const out: ProvisionerAddresses = { ip: p.address, subnet: s.cidr, prefix: s.prefix };
  if (ipv6 === undefined) return out;
  if (ipv6.trim() === '')
    throw new UsageError("invalid --ipv6 '': give an address with its prefix, e.g. fd00:cafe:babe::1/64");
  const q = parseAddress(ipv6, 'ipv6', '--ipv6');
  let s6 = lab.subnet6;
  if (s6) {
    if (!inSubnet(q.address, s6) || (q.prefix !== undefined && q.prefix !== s6.prefix))
      throw new UsageError(`--ipv6 ${ipv6} is outside the lab IPv6 subnet ${s6.cidr}`);
    if (lab.v6 && sameAddress(q.address, lab.v6.host))
      throw new UsageError(`--ipv6 ${q.address} is the host's IPv6 address on the lab bridge`);
  } else {
    if (q.prefix === undefined)
      throw new UsageError(`--ipv6 ${ipv6} needs a prefix, e.g. fd00:cafe:babe::1/64`);
    s6 = parseSubnet(`${q.address}/${q.prefix}`, 'ipv6', '--ipv6');
  }
  const owner6 = taken.find((v) => v.ipv6 !== undefined && sameAddress(v.ipv6, q.address));
  if (owner6) throw new UsageError(`IPv6 address ${q.address} is already used by VM '${owner6.name}'`);
  return { ...out, ipv6: q.address, subnetv6: s6.cidr, prefix6: s6.prefix };
}

/** Checks that need no lab: values, and the files the flags name. */
async function checkRequest(req: ProvisionerRequest): Promise<void> {
  checkDiskSize(req.diskBytes);
  if (req.memoryMiB !== undefined && (!Number.isInteger(req.memoryMiB) || req.memoryMiB < MIN_MEMORY_MIB))
    throw new UsageError(`invalid --memory ${req.memoryMiB}: at least ${MIN_MEMORY_MIB} MiB`);
  if (req.cpus !== undefined && (!Number.isInteger(req.cpus) || req.cpus < 1))
    throw new UsageError(`invalid --cpus ${req.cpus}: at least 1`);
  if (req.stackTar !== undefined) {
    const st = await fs.stat(req.stackTar).catch(() => undefined);
    if (!st?.isFile())
      throw new UsageError(
        `--docker-pxeboot-stack-tar ${req.stackTar}: no such file (make -C pxeboot_stack tar builds it)`,
      );
  }
  if (req.image !== undefined) {
    const st = await fs.stat(req.image).catch(() => undefined);
    if (!st?.isFile()) throw new UsageError(`--image ${req.image}: no such file`);
  }
  for (const [flag, dir] of [
    ['--docker-images-path', req.dockerImagesPath],
    ['--vms-path', req.vmsPath],
  ] as const) {
    if (dir === undefined) continue;
    if (dir.trim() === '') throw new UsageError(`${flag} must not be empty`);
    const st = await fs.stat(dir).catch(() => undefined);
    if (st && !st.isDirectory()) throw new UsageError(`${flag} ${dir} is not a directory`);
  }
}

/** Copy a file into `dir` under its own name (temp + rename); nothing to do if it is that file. */
async function copyInto(src: string, dir: string): Promise<string> {
  const dest = join(dir, src.split(sep).pop() ?? 'pxeboot_stack.tar');
  if (resolve(src) === resolve(dest)) return dest;
  const tmp = `${dest}.tmp-${process.pid}`;
  try {
    await fs.copyFile(src, tmp);
    await fs.rename(tmp, dest);
  } catch (err) {
    await fs.rm(tmp, { force: true });
    throw namedFsError(err, `cannot copy ${src} to ${dest}`);
  }
  return dest;
}

export async function createProvisioner(d: Deps, req: ProvisionerRequest): Promise<VmDefinition> {
  await checkRequest(req);
  const lab = resolveLabConfig(await loadLabConfig(d.app));
  const dirs = labDirs(d.app);
  const check = async () => {
    const st = await labState(d.app, req.name);
    checkNameFree(st.vms, req.name, st.paths);
    const prov = st.vms.find((v) => v.role === 'provisioner');
    if (prov)
      throw new UsageError(
        `a provisioner VM named '${prov.name}' already exists; a lab has one (pvmlab vm clean ${prov.name} removes it)`,
      );
    const addr = provisionerAddresses(lab, [...st.vms, ...st.others], req.ip, req.ipv6);
    if (req.mac) assignMac([...st.vms, ...st.others], req.mac, randomBytes);
    return { st, addr };
  };
  await check();
  const vmsPath = resolve(req.vmsPath ?? dirs.vms);
  if (vmsPath !== resolve(dirs.vms))
    d.warn?.(
      `--vms-path ${vmsPath}: the stack in the provisioner reads VM definitions from there, while pvmlab writes them to ${dirs.vms}`,
    );
  const dockerImagesPath = resolve(req.dockerImagesPath ?? dirs.dockerImages);

  // The image: outside the lock (a first build takes minutes).
  let base: string;
  let kernel: { kernel: string; initrd: string } | undefined;
  if (req.image !== undefined) {
    const info = await imageInfo(d.runner, req.image);
    if (!['qcow2', 'raw'].includes(info.format))
      throw new UsageError(`--image ${req.image} is a ${info.format} image; a qcow2 or raw disk is needed`);
    base = resolve(req.image);
  } else {
    const built = await ensureProvisionerImage({
      arch: req.arch,
      runner: d.runner,
      env: d.env,
      ...(d.onStep ? { onStep: d.onStep } : {}),
    });
    await fs.mkdir(dirs.images, { recursive: true });
    const img = await installImage(built, dirs.images);
    base = join(img.dir, img.disk);
    // Relative to images/: the definition stays valid if the lab directory moves.
    kernel = {
      kernel: relative(dirs.images, join(img.dir, img.kernel)),
      initrd: relative(dirs.images, join(img.dir, img.initrd)),
    };
  }

  return withLabLock(d.app, async () => {
    const key = await ensureLabSshKey(d.app);
    const { st, addr } = await check();
    const mac = assignMac([...st.vms, ...st.others], req.mac, randomBytes);
    const files = vmFiles(d.app, req.name);
    const created: string[] = [];
    try {
      let stackTar = '';
      if (req.stackTar !== undefined) {
        await fs.mkdir(dockerImagesPath, { recursive: true });
        const dest = await copyInto(req.stackTar, dockerImagesPath);
        if (resolve(dest) !== resolve(req.stackTar)) created.push(dest);
        stackTar = dest.split(sep).pop() ?? '';
      }
      const vm: VmDefinition = {
        name: req.name,
        role: 'provisioner',
        arch: req.arch,
        ip: addr.ip,
        subnet: addr.subnet,
        ...(addr.ipv6 && addr.subnetv6 ? { ipv6: addr.ipv6, subnetv6: addr.subnetv6 } : {}),
        mac,
        ...(stackTar ? { pxe_boot_stack_tar: stackTar } : {}),
        docker_images_path: dockerImagesPath,
        vms_path: vmsPath,
        ssh_key: key.publicKey,
        ...(kernel ?? {}),
        ...(req.memoryMiB !== undefined ? { memory: req.memoryMiB } : {}),
        ...(req.cpus !== undefined ? { cpus: req.cpus } : {}),
        schema_version: VM_SCHEMA_VERSION,
      };
      const ok = checkVmForWrite(vm);
      if (!ok.ok) throw new PvmlabError(`provisioner '${req.name}' would not be readable: ${ok.error}`);
      created.push(files.disk);
      await createOverlayDisk(d.runner, base, files.disk, req.diskBytes);
      const seed = provisionerSeedFiles({
        name: req.name,
        labMac: mac,
        uplinkMac: uplinkMac(mac),
        ip: addr.ip,
        prefix: addr.prefix,
        subnet: addr.subnet,
        ...(addr.ipv6 && addr.prefix6 !== undefined && addr.subnetv6
          ? { ipv6: addr.ipv6, prefix6: addr.prefix6, subnet6: addr.subnetv6 }
          : {}),
        dhcpRangeStart: lab.config.dhcp_range_start,
        dhcpRangeEnd: lab.config.dhcp_range_end,
        sshPublicKey: key.publicKey,
        stackTar,
        bootRunOptions: dockerRunOptions({ networkHost: true, privileged: true }, stackEnv(vm, lab.config)),
      });
      created.push(files.seedDir);
      await fs.mkdir(files.seedDir, { recursive: true });
      for (const f of seed) await fs.writeFile(join(files.seedDir, f.name), f.content, { flag: 'wx' });
      created.push(files.seedIso);
      await fs.mkdir(dirname(files.seedIso), { recursive: true });
      const iso = buildIso(
        seed.map((f) => ({ name: f.name, data: Buffer.from(f.content) })),
        { volumeId: 'cidata' },
      );
      await fs.writeFile(files.seedIso, iso, { flag: 'wx' });
      created.push(files.definition);
      await saveVm(d.app, vm);
      return vm;
    } catch (err) {
      await Promise.all(
        created.map((p) => fs.rm(p, { recursive: true, force: true }).catch(() => undefined)),
      );
      if (err instanceof UsageError || err instanceof PvmlabError) throw err;
      throw new PvmlabError(`creating provisioner '${req.name}' failed: ${(err as Error).message}`, {
        cause: err,
      });
    }
  });
}
