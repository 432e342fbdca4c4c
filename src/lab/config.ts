import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import * as v from 'valibot';
import { PvmlabError, UsageError } from '../core/errors.js';
import { writeFileAtomic, readTextIfExists } from '../core/fsutil.js';
import { describeIssues } from '../core/vmdef.js';
import {
  bigIntToIpv6,
  inSubnet,
  intToIpv4,
  ipv4ToInt,
  ipv6ToBigInt,
  parseAddress,
  parseSubnet,
  type Subnet,
} from './validate.js';

/**
 * Lab-wide settings, `~/.pvmlab/lab.yaml`. Subnet and bridge are settings so two labs
 * (two PVMLAB_HOMEs) can run side by side.
 */
export const LabConfigSchema = v.object({
  subnet: v.string(),
  provisioner_ip: v.string(),
  /** The host's own address on the lab bridge (Linux), used to reach VMs directly. */
  host_ip: v.string(),
  dhcp_range_start: v.string(),
  dhcp_range_end: v.string(),
  subnetv6: v.optional(v.string()),
  bridge: v.pipe(
    v.string(),
    v.regex(/^[A-Za-z0-9_.-]{1,15}$/, 'bridge must be a Linux interface name (1-15 characters)'),
  ),
  network: v.picklist(['bridge', 'socket_vmnet']),
});
export type LabConfig = v.InferOutput<typeof LabConfigSchema>;

export function defaultLabConfig(platform: NodeJS.Platform = process.platform): LabConfig {
  return {
    subnet: '192.168.100.0/24',
    provisioner_ip: '192.168.100.1',
    host_ip: '192.168.100.254',
    dhcp_range_start: '192.168.100.100',
    dhcp_range_end: '192.168.100.200',
    bridge: 'pvmlab0',
    network: platform === 'darwin' ? 'socket_vmnet' : 'bridge',
  };
}

/** A lab config derived from a subnet: provisioner at .1, host at the last address, DHCP pool in the middle. */
export function labConfigForSubnet(cidr: string, base: LabConfig): LabConfig {
  const s = parseSubnet(cidr, 'ipv4', '--subnet');
  if (s.prefix > 28) throw new UsageError(`--subnet '${cidr}' is too small: use a /28 or larger`);
  const first = ipv4ToInt(s.network);
  const size = 2 ** (32 - s.prefix);
  const last = first + size - 2; // last usable, before broadcast
  // The pool sits where the original put it on a /24 (.100-.200), scaled to other sizes.
  const poolStart = first + Math.floor((size * 100) / 256);
  const poolEnd = first + Math.floor((size * 200) / 256);
  return {
    ...base,
    subnet: s.cidr,
    provisioner_ip: intToIpv4(first + 1),
    host_ip: intToIpv4(last),
    dhcp_range_start: intToIpv4(poolStart),
    dhcp_range_end: intToIpv4(poolEnd),
  };
}

/** The lab's IPv6 side, derived from `subnetv6`. */
export interface Lab6 {
  subnet: Subnet;
  /** Prefix + the host number of provisioner_ip (::1 by default). */
  provisioner: string;
  /** Prefix + the host number of host_ip (::fe on a /24). */
  host: string;
  /** DHCPv6 pool for unknown clients: ::1:0-::1:ffff, above any host number an IPv4 lab can mirror. */
  rangeStart: string;
  rangeEnd: string;
}

export interface ResolvedLab {
  config: LabConfig;
  subnet: Subnet;
  subnet6?: Subnet;
  v6?: Lab6;
}

export const DHCP6_POOL = { start: 0x1_0000n, end: 0x1_ffffn } as const;

/**
 * A lab IPv6 subnet is a /64: router advertisements, SLAAC and dnsmasq's DHCPv6 ranges all
 * assume one, and every lab address is the prefix plus a host number.
 */
export function parseSubnet6(cidr: string, what: string): Subnet {
  const s = parseSubnet(cidr, 'ipv6', what);
  if (s.prefix !== 64) throw new UsageError(`${what} '${cidr}' must be a /64 (e.g. fd00:cafe:babe::/64)`);
  return s;
}

/** The IPv6 address with the same host number as an IPv4 address of the lab. */
export function mirrorIpv6(subnet6: Subnet, subnet: Subnet, ipv4: string): string {
  return bigIntToIpv6(ipv6ToBigInt(subnet6.network) + BigInt(ipv4ToInt(ipv4) - ipv4ToInt(subnet.network)));
}

function lab6(subnet6: Subnet, subnet: Subnet, config: LabConfig): Lab6 {
  const net = ipv6ToBigInt(subnet6.network);
  return {
    subnet: subnet6,
    provisioner: mirrorIpv6(subnet6, subnet, config.provisioner_ip),
    host: mirrorIpv6(subnet6, subnet, config.host_ip),
    rangeStart: bigIntToIpv6(net + DHCP6_POOL.start),
    rangeEnd: bigIntToIpv6(net + DHCP6_POOL.end),
  };
}

/** Check the addresses inside the config agree with its subnet. */
export function resolveLabConfig(config: LabConfig, source = 'lab.yaml'): ResolvedLab {
  const subnet = parseSubnet(config.subnet, 'ipv4', 'subnet');
  for (const key of ['provisioner_ip', 'host_ip', 'dhcp_range_start', 'dhcp_range_end'] as const) {
    const a = parseAddress(config[key], 'ipv4', key);
    // A prefix here would break every later use of the address (allocation, cloud-init).
    if (a.prefix !== undefined)
      throw new PvmlabError(`${source}: ${key} ${config[key]} must be a plain address, without a /prefix`);
    if (!inSubnet(a.address, subnet))
      throw new PvmlabError(`${source}: ${key} ${config[key]} is outside the subnet ${subnet.cidr}`);
  }
  if (ipv4ToInt(config.dhcp_range_start) > ipv4ToInt(config.dhcp_range_end))
    throw new PvmlabError(`${source}: dhcp_range_start is after dhcp_range_end`);
  if (!config.subnetv6) return { config, subnet };
  const subnet6 = parseSubnet6(config.subnetv6, 'subnetv6');
  return { config, subnet, subnet6, v6: lab6(subnet6, subnet, config) };
}

export function labConfigPath(app: string): string {
  return join(app, 'lab.yaml');
}

const HEADER =
  '# pvmlab lab settings. Change the subnet and bridge to run a second lab beside this one\n' +
  '# (with its own PVMLAB_HOME). `pvmlab setup --subnet <cidr> --bridge <name>` rewrites this file.\n';

export async function loadLabConfig(app: string): Promise<LabConfig> {
  const path = labConfigPath(app);
  const text = await readTextIfExists(path);
  if (text === undefined) return defaultLabConfig();
  let data: unknown;
  try {
    // yaml is large: load it only when a command reads settings (keeps `vm list` fast).
    const { parse } = await import('../core/yaml.js');
    data = parse(text);
  } catch (err) {
    throw new PvmlabError(`${path} is not valid YAML: ${(err as Error).message}`);
  }
  // Spreading a scalar or a list would silently give the defaults.
  if (data !== null && (typeof data !== 'object' || Array.isArray(data)))
    throw new PvmlabError(`${path}: expected a mapping of settings (key: value)`);
  const r = v.safeParse(LabConfigSchema, { ...defaultLabConfig(), ...(data as object | null) });
  if (!r.success) throw new PvmlabError(`${path}: ${describeIssues(r.issues)}`);
  try {
    resolveLabConfig(r.output, path);
  } catch (err) {
    // A bad address in the file is not a usage error, and the message must say which file.
    if (err instanceof UsageError) throw new PvmlabError(`${path}: ${err.message}`);
    throw err;
  }
  return r.output;
}

export async function saveLabConfig(app: string, config: LabConfig): Promise<void> {
  resolveLabConfig(config);
  await fs.mkdir(app, { recursive: true });
  const { stringify } = await import('../core/yaml.js');
  await writeFileAtomic(labConfigPath(app), HEADER + stringify(config));
}
