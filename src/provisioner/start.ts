/**
 * What starting the provisioner VM adds to a target's start: its kernel (the image has no boot
 * loader), the user-mode uplink with SSH forwarded to a loopback port, and the lab directories
 * shared over 9p. Also the lab-side checks: the native stack and the provisioner's container
 * would be two DHCP servers on one segment, and an address the native stack left on the bridge
 * would answer for the provisioner's.
 */
import { createServer } from 'node:net';
import { resolve, sep } from 'node:path';
import { PvmlabError } from '../core/errors.js';
import { runChecked, type Runner } from '../core/exec.js';
import { labDirs } from '../core/paths.js';
import type { VmDefinition } from '../core/vmdef.js';
import { SHARES, uplinkMac } from '../cloudinit/provisioner.js';
import type { QemuSpec } from '../qemu/argv.js';
import { parseSubnet, subnetsOverlap } from '../lab/validate.js';
import { kernelCmdline } from './image.js';

export type ProvisionerBoot = Required<Pick<QemuSpec, 'uplink' | 'shares'>> & Pick<QemuSpec, 'kernel'>;

/** A file named by the definition, inside images/ (a hand-edited definition may say anything). */
function imageFile(imagesDir: string, rel: string, what: string): string {
  const p = resolve(imagesDir, rel);
  if (!p.startsWith(resolve(imagesDir) + sep))
    throw new PvmlabError(`the provisioner's ${what} '${rel}' is outside ${imagesDir}`);
  return p;
}

/** QEMU's user-mode networks, then others for a lab that is numbered in them. */
const UPLINK_NETS = ['10.0.2.0/24', '10.0.3.0/24', '172.31.254.0/24', '192.168.254.0/24'];
const UPLINK_NETS_V6 = ['fec0::/64', 'fd6c:7670:6c61:6275::/64'];

/**
 * Pure: the uplink's networks, apart from the lab's. QEMU numbers its user-mode network
 * 10.0.2.0/24 (and fec0::/64): a lab in the same range would give the provisioner one subnet on
 * two NICs, and its replies to the targets would leave through the uplink.
 */
export function uplinkNetworks(vm: Pick<VmDefinition, 'ip' | 'subnet' | 'ipv6' | 'subnetv6'>): {
  net: string;
  ipv6Net: string;
} {
  const pick = (candidates: string[], kind: 'ipv4' | 'ipv6', lab: string | undefined) => {
    if (!lab) return candidates[0] as string;
    const labNet = parseSubnet(lab, kind, 'lab subnet');
    const free = candidates.find((c) => !subnetsOverlap(parseSubnet(c, kind, 'uplink'), labNet));
    if (!free)
      throw new PvmlabError(
        `the lab subnet ${lab} covers every network the provisioner's uplink can take (${candidates.join(', ')})`,
      );
    return free;
  };
  const v4 = vm.subnet ?? (vm.ip ? `${vm.ip}/32` : undefined);
  const v6 = vm.subnetv6 ?? (vm.ipv6 ? `${vm.ipv6}/128` : undefined);
  return { net: pick(UPLINK_NETS, 'ipv4', v4), ipv6Net: pick(UPLINK_NETS_V6, 'ipv6', v6) };
}

/** Pure: the provisioner's QEMU additions, given its SSH port. */
export function provisionerBoot(app: string, vm: VmDefinition, sshPort: number): ProvisionerBoot {
  if (!vm.mac) throw new PvmlabError(`provisioner '${vm.name}' has no MAC address in its definition`);
  const d = labDirs(app);
  const boot: ProvisionerBoot = {
    uplink: { mac: uplinkMac(vm.mac), sshPort, ...uplinkNetworks(vm) },
    shares: [
      { tag: SHARES.vms.tag, path: vm.vms_path ?? d.vms },
      { tag: SHARES.images.tag, path: d.images, readonly: true },
      { tag: SHARES.dockerImages.tag, path: vm.docker_images_path ?? d.dockerImages },
    ],
  };
  if (vm.kernel && vm.initrd)
    boot.kernel = {
      kernel: imageFile(d.images, vm.kernel, 'kernel'),
      initrd: imageFile(d.images, vm.initrd, 'initrd'),
      append: kernelCmdline(vm.arch),
    };
  return boot;
}

/** A TCP port on 127.0.0.1 that is free now: `preferred` if it is, else one the kernel picks. */
export async function freeLoopbackPort(preferred?: number): Promise<number> {
  const tryPort = (port: number) =>
    new Promise<number | undefined>((res) => {
      const srv = createServer();
      srv.once('error', () => res(undefined));
      srv.listen(port, '127.0.0.1', () => {
        const a = srv.address();
        const got = typeof a === 'object' && a ? a.port : undefined;
        srv.close(() => res(got));
      });
    });
  if (preferred) {
    const p = await tryPort(preferred);
    if (p) return p;
  }
  const p = await tryPort(0);
  if (!p) throw new PvmlabError('could not find a free TCP port on 127.0.0.1 for the provisioner SSH');
  return p;
}

/** Pure: `ip addr del` for the provisioner's addresses the host holds on `bridge`. */
export function strayAddressArgv(
  bridge: string,
  held: readonly { family: string; local: string; prefixlen: number }[],
  vm: Pick<VmDefinition, 'ip' | 'ipv6'>,
): string[][] {
  return held
    .filter((a) => a.local === vm.ip || (vm.ipv6 !== undefined && a.local === vm.ipv6))
    .map((a) => [
      ...(a.family === 'inet6' ? ['-6'] : []),
      'addr',
      'del',
      `${a.local}/${a.prefixlen}`,
      'dev',
      bridge,
    ]);
}

/**
 * The native stack (`pvmlab stack serve`) puts the provisioner's address on the bridge: once it
 * is stopped, that address must go before the VM takes it over.
 */
export async function releaseBridgeAddresses(
  runner: Runner,
  bridge: string,
  vm: Pick<VmDefinition, 'ip' | 'ipv6'>,
): Promise<string[]> {
  const r = await runner('ip', ['-j', 'addr', 'show', 'dev', bridge]);
  if (r.code !== 0) return []; // no bridge yet: nothing to release
  let held: { family: string; local: string; prefixlen: number }[] = [];
  try {
    const links = JSON.parse(r.stdout) as {
      addr_info?: { family: string; local: string; prefixlen: number }[];
    }[];
    held = links.flatMap((l) => l.addr_info ?? []);
  } catch {
    return [];
  }
  const dels = strayAddressArgv(bridge, held, vm);
  for (const argv of dels) await runChecked(runner, 'ip', argv);
  return dels.map((a) => a[a.length - 3] as string);
}
