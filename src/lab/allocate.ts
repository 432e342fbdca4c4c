import { PvmlabError, UsageError } from '../core/errors.js';
import { DHCP6_POOL, mirrorIpv6, type Lab6, type ResolvedLab } from './config.js';
import type { VmDefinition } from '../core/vmdef.js';
import type { AddressClaim } from './store.js';
import {
  bigIntToIpv6,
  checkHostAddress,
  checkLabSubnet,
  inSubnet,
  intToIpv4,
  ipv4ToInt,
  ipv6ToBigInt,
  parseAddress,
  parseSubnet,
  randomMac,
  sameAddress,
  type Subnet,
} from './validate.js';

/** The lab's IPv4 subnet: the provisioner's if one is defined, else lab.yaml's. */
export function labSubnet(lab: ResolvedLab, vms: readonly VmDefinition[]): Subnet {
  const prov = vms.find((v) => v.role === 'provisioner');
  if (prov?.subnet) return parseSubnet(prov.subnet, 'ipv4', `subnet of provisioner '${prov.name}'`);
  return lab.subnet;
}

/** Addresses no target may take: network, broadcast, provisioner, host, the DHCP pool. */
function reserved(
  lab: ResolvedLab,
  subnet: Subnet,
  vms: readonly VmDefinition[],
): (n: number) => string | undefined {
  const net = ipv4ToInt(subnet.network);
  const bcast = net + 2 ** (32 - subnet.prefix) - 1;
  const prov = vms.find((v) => v.role === 'provisioner')?.ip ?? lab.config.provisioner_ip;
  const fixed = new Map<number, string>([
    [net, 'the network address'],
    [bcast, 'the broadcast address'],
    [ipv4ToInt(prov), "the provisioner's address"],
    [ipv4ToInt(lab.config.host_ip), "the host's address on the lab bridge"],
  ]);
  const poolStart = ipv4ToInt(lab.config.dhcp_range_start);
  const poolEnd = ipv4ToInt(lab.config.dhcp_range_end);
  return (n) => {
    const why = fixed.get(n);
    if (why) return why;
    if (n >= poolStart && n <= poolEnd)
      return `inside the DHCP pool for unknown clients (${lab.config.dhcp_range_start}-${lab.config.dhcp_range_end})`;
    return undefined;
  };
}

export interface AddressRequest {
  /** `--ip` as given: `a.b.c.d` or `a.b.c.d/nn`; undefined allocates one. */
  ip?: string;
  ipv6?: string;
}

export interface AssignedAddresses {
  ip: string;
  subnet: string;
  ipv6?: string;
  subnetv6?: string;
}

/**
 * Check or allocate a target's addresses against the lab, the existing VMs and `others`: what
 * definitions that cannot be read still hold (their addresses stay taken until they are cleaned).
 */
export function assignAddresses(
  lab: ResolvedLab,
  readable: readonly VmDefinition[],
  req: AddressRequest,
  others: readonly AddressClaim[] = [],
): AssignedAddresses {
  const vms: readonly AddressClaim[] = [...readable, ...others];
  const subnet = labSubnet(lab, readable);
  const isReserved = reserved(lab, subnet, readable);
  let ip: string;
  if (req.ip !== undefined) {
    const p = parseAddress(req.ip, 'ipv4', '--ip');
    if (!inSubnet(p.address, subnet) || (p.prefix !== undefined && p.prefix !== subnet.prefix))
      throw new UsageError(`--ip ${req.ip} is outside the lab subnet ${subnet.cidr}`);
    const why = isReserved(ipv4ToInt(p.address));
    if (why) throw new UsageError(`--ip ${p.address} is ${why}`);
    const owner = vms.find((v) => v.ip !== undefined && sameAddress(v.ip, p.address));
    if (owner) throw new UsageError(`IP address ${p.address} is already used by VM '${owner.name}'`);
    ip = p.address;
  } else {
    ip = nextFreeIpv4(subnet, vms, isReserved);
  }
  const out: AssignedAddresses = { ip, subnet: subnet.cidr };
  const prov = readable.find((v) => v.role === 'provisioner');
  const s6 = prov?.subnetv6 ? parseSubnet(prov.subnetv6, 'ipv6', 'provisioner subnetv6') : lab.subnet6;
  // The lab's own IPv6 plan (reserved addresses, automatic twins) applies when its prefix is the one in use.
  const v6 = lab.v6 && s6?.cidr === lab.v6.subnet.cidr ? lab.v6 : undefined;
  const isReserved6 = v6 ? reserved6(v6) : () => undefined;
  if (req.ipv6 !== undefined) {
    const p = parseAddress(req.ipv6, 'ipv6', '--ipv6');
    let subnetv6: string;
    if (s6) {
      if (!inSubnet(p.address, s6) || (p.prefix !== undefined && p.prefix !== s6.prefix))
        throw new UsageError(`--ipv6 ${req.ipv6} is outside the lab IPv6 subnet ${s6.cidr}`);
      checkHostAddress(p.address, s6, '--ipv6');
      const why = isReserved6(p.address);
      if (why) throw new UsageError(`--ipv6 ${p.address} is ${why}`);
      subnetv6 = s6.cidr;
    } else {
      if (p.prefix === undefined)
        throw new UsageError(
          `--ipv6 ${req.ipv6} needs a prefix length: the lab has no IPv6 subnet configured`,
        );
      // The same rules as a lab's own IPv6 subnet (setup --subnet6): a unicast /64.
      const own = parseSubnet(`${p.address}/${p.prefix}`, 'ipv6', '--ipv6');
      if (own.prefix !== 64)
        throw new UsageError(`--ipv6 ${req.ipv6}: the prefix must be /64 (e.g. fd00:cafe:babe::10/64)`);
      checkLabSubnet(own, '--ipv6');
      checkHostAddress(p.address, own, '--ipv6');
      subnetv6 = own.cidr;
    }
    const owner = vms.find((v) => v.ipv6 !== undefined && sameAddress(v.ipv6, p.address));
    if (owner) throw new UsageError(`IPv6 address ${p.address} is already used by VM '${owner.name}'`);
    out.ipv6 = p.address;
    out.subnetv6 = subnetv6;
  } else if (v6) {
    // An IPv6 lab gives every target a reservation too: the IPv4 host number when it is free
    // (.3 -> ::3), so the two addresses are easy to tell apart.
    out.ipv6 = nextFreeIpv6(v6, subnet, ip, vms, isReserved6);
    out.subnetv6 = v6.subnet.cidr;
  }
  return out;
}

/** IPv6 addresses no target may take: the subnet-router anycast, provisioner, host, the DHCPv6 pool. */
function reserved6(v6: Lab6): (address: string) => string | undefined {
  const net = ipv6ToBigInt(v6.subnet.network);
  const fixed = new Map<bigint, string>([
    [net, 'the subnet-router anycast address'],
    [ipv6ToBigInt(v6.provisioner), "the provisioner's IPv6 address"],
    [ipv6ToBigInt(v6.host), "the host's IPv6 address on the lab bridge"],
  ]);
  const poolStart = ipv6ToBigInt(v6.rangeStart);
  const poolEnd = ipv6ToBigInt(v6.rangeEnd);
  return (address) => {
    const n = ipv6ToBigInt(address);
    const why = fixed.get(n);
    if (why) return why;
    if (n >= poolStart && n <= poolEnd)
      return `inside the DHCPv6 pool for unknown clients (${v6.rangeStart}-${v6.rangeEnd})`;
    return undefined;
  };
}

function nextFreeIpv6(
  v6: Lab6,
  subnet: Subnet,
  ipv4: string,
  vms: readonly AddressClaim[],
  isReserved: (address: string) => string | undefined,
): string {
  const used = new Set<bigint>();
  for (const v of vms) if (v.ipv6) used.add(ipv6ToBigInt(v.ipv6));
  const free = (a: string) => !used.has(ipv6ToBigInt(a)) && !isReserved(a);
  const mirrored = mirrorIpv6(v6.subnet, subnet, ipv4);
  if (free(mirrored)) return mirrored;
  const net = ipv6ToBigInt(v6.subnet.network);
  // A /64 never runs out in a lab; the bound keeps a corrupt state from looping for long.
  for (let n = 2n; n < DHCP6_POOL.start; n++) {
    const a = bigIntToIpv6(net + n);
    if (free(a)) return a;
  }
  throw new PvmlabError(`no free IPv6 address left below the DHCPv6 pool in ${v6.subnet.cidr}`);
}

function nextFreeIpv4(
  subnet: Subnet,
  vms: readonly AddressClaim[],
  isReserved: (n: number) => string | undefined,
) {
  const used = new Set<number>();
  for (const v of vms) if (v.ip) used.add(ipv4ToInt(v.ip));
  const net = ipv4ToInt(subnet.network);
  const size = 2 ** (32 - subnet.prefix);
  for (let n = net + 1; n < net + size - 1; n++) {
    if (!used.has(n) && !isReserved(n)) return intToIpv4(n);
  }
  throw new PvmlabError(`no free address left in the lab subnet ${subnet.cidr}`);
}

/**
 * Refuse a name that is taken: by a VM, or by any file of one (`paths`: an unreadable
 * definition, a disk left by an interrupted create). Such files are removed by `vm clean`.
 */
export function checkNameFree(
  vms: readonly AddressClaim[],
  name: string,
  paths: readonly string[] = [],
): void {
  if (vms.some((v) => v.name === name) || paths.length > 0)
    throw new UsageError(
      `a VM named '${name}' already exists${paths.length ? ` (${paths.join(', ')})` : ''}; to reuse the name, remove it first: pvmlab vm clean ${name}`,
    );
}

/** Check a requested MAC, or make a random one no VM uses. */
export function assignMac(
  vms: readonly AddressClaim[],
  mac: string | undefined,
  random: (n: number) => Uint8Array,
) {
  const used = new Set(vms.map((v) => v.mac?.toLowerCase()).filter(Boolean));
  if (mac !== undefined) {
    const owner = vms.find((v) => v.mac?.toLowerCase() === mac);
    if (owner) throw new UsageError(`MAC address ${mac} is already used by VM '${owner.name}'`);
    return mac;
  }
  for (;;) {
    const m = randomMac(random);
    if (!used.has(m)) return m;
  }
}
