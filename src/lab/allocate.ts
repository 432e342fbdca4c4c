import { PvmlabError, UsageError } from '../core/errors.js';
import type { ResolvedLab } from './config.js';
import type { VmDefinition } from '../core/vmdef.js';
import {
  inSubnet,
  intToIpv4,
  ipv4ToInt,
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

/** Check or allocate a target's addresses against the lab and the existing VMs. */
export function assignAddresses(
  lab: ResolvedLab,
  vms: readonly VmDefinition[],
  req: AddressRequest,
): AssignedAddresses {
  const subnet = labSubnet(lab, vms);
  const isReserved = reserved(lab, subnet, vms);
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
  if (req.ipv6 !== undefined) {
    const p = parseAddress(req.ipv6, 'ipv6', '--ipv6');
    const prov = vms.find((v) => v.role === 'provisioner');
    const s6 = prov?.subnetv6 ? parseSubnet(prov.subnetv6, 'ipv6', 'provisioner subnetv6') : lab.subnet6;
    let subnetv6: string;
    if (s6) {
      if (!inSubnet(p.address, s6) || (p.prefix !== undefined && p.prefix !== s6.prefix))
        throw new UsageError(`--ipv6 ${req.ipv6} is outside the lab IPv6 subnet ${s6.cidr}`);
      subnetv6 = s6.cidr;
    } else {
      if (p.prefix === undefined)
        throw new UsageError(
          `--ipv6 ${req.ipv6} needs a prefix length: the lab has no IPv6 subnet configured`,
        );
      subnetv6 = parseSubnet(`${p.address}/${p.prefix}`, 'ipv6', '--ipv6').cidr;
    }
    const owner = vms.find((v) => v.ipv6 !== undefined && sameAddress(v.ipv6, p.address));
    if (owner) throw new UsageError(`IPv6 address ${p.address} is already used by VM '${owner.name}'`);
    out.ipv6 = p.address;
    out.subnetv6 = subnetv6;
  }
  return out;
}

function nextFreeIpv4(
  subnet: Subnet,
  vms: readonly VmDefinition[],
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

export function checkNameFree(vms: readonly VmDefinition[], name: string): void {
  if (vms.some((v) => v.name === name)) throw new UsageError(`a VM named '${name}' already exists`);
}

/** Check a requested MAC, or make a random one no VM uses. */
export function assignMac(
  vms: readonly VmDefinition[],
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
