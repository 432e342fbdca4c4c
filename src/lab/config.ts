import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import * as v from 'valibot';
import { PvmlabError, UsageError } from '../core/errors.js';
import { namedFsError, writeFileAtomic, readTextIfExists } from '../core/fsutil.js';
import { describeIssues } from '../core/vmdef.js';
import {
  bigIntToIpv6,
  checkLabSubnet,
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
    v.check((b) => b !== '.' && b !== '..', "bridge must not be '.' or '..'"),
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
  const s = checkLabSubnet(parseSubnet(cidr, 'ipv4', '--subnet'), '--subnet');
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
  return checkLabSubnet(s, what);
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
  const subnet = checkLabSubnet(parseSubnet(config.subnet, 'ipv4', 'subnet'), 'subnet');
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

/** What to do about a lab.yaml pvmlab cannot use: setup rewrites it (see repairLabConfig). */
function fixHint(path: string): string {
  return `fix ${path} by hand, or run 'pvmlab setup' (with --subnet/--bridge as needed) to rewrite it`;
}

async function readLabYaml(path: string): Promise<string | undefined> {
  try {
    return await readTextIfExists(path);
  } catch (err) {
    throw new PvmlabError(
      `${namedFsError(err, `cannot read ${path}`).message}${isDir(err) ? ` (then run 'pvmlab setup')` : ''}`,
      { cause: err },
    );
  }
}

const isDir = (err: unknown) => (err as { code?: unknown } | null)?.code === 'EISDIR';

/** lab.yaml as a mapping of settings (not yet checked). */
async function parseLabYaml(path: string, text: string): Promise<Record<string, unknown> | null> {
  let data: unknown;
  try {
    // yaml is large: load it only when a command reads settings (keeps `vm list` fast).
    const { parse } = await import('../core/yaml.js');
    data = parse(text);
  } catch (err) {
    throw new PvmlabError(`${path} is not valid YAML: ${(err as Error).message}; ${fixHint(path)}`);
  }
  // Spreading a scalar or a list would silently give the defaults.
  if (data !== null && (typeof data !== 'object' || Array.isArray(data)))
    throw new PvmlabError(`${path}: expected a mapping of settings (key: value); ${fixHint(path)}`);
  return data as Record<string, unknown> | null;
}

/** The rules lab.yaml is read by, and written by: the schema, then the addresses' consistency. */
export function checkLabConfig(data: unknown, source: string): LabConfig {
  const r = v.safeParse(LabConfigSchema, data);
  if (!r.success) throw new PvmlabError(`${source}: ${describeIssues(r.issues)}`);
  try {
    resolveLabConfig(r.output, source);
  } catch (err) {
    // A bad address in the file is not a usage error, and the message must say which file.
    if (err instanceof UsageError) throw new PvmlabError(`${source}: ${err.message}`);
    throw err;
  }
  return r.output;
}

export async function loadLabConfig(app: string): Promise<LabConfig> {
  const path = labConfigPath(app);
  const text = await readLabYaml(path);
  if (text === undefined) return defaultLabConfig();
  const data = await parseLabYaml(path, text);
  try {
    return checkLabConfig({ ...defaultLabConfig(), ...data }, path);
  } catch (err) {
    if (err instanceof PvmlabError) throw new PvmlabError(`${err.message}; ${fixHint(path)}`);
    throw err;
  }
}

export interface RepairedLabConfig {
  config: LabConfig;
  /** What was dropped from the file, one line per setting ("bridge 'a b': ..."); empty if none. */
  dropped: string[];
  /** The file's text, when it was not usable as it was (kept by setup as lab.yaml.bak). */
  original?: string;
}

/**
 * lab.yaml for `setup`, which must be able to repair any file: each setting that passes the
 * rules on its own is kept, the others fall back to their defaults (addresses derived from the
 * subnet when they no longer fit it). Only a path setup cannot write over (a directory) fails.
 */
export async function repairLabConfig(app: string): Promise<RepairedLabConfig> {
  const path = labConfigPath(app);
  const text = await readLabYaml(path);
  if (text === undefined) return { config: defaultLabConfig(), dropped: [] };
  let data: Record<string, unknown> | null;
  try {
    data = await parseLabYaml(path, text);
  } catch (err) {
    return { config: defaultLabConfig(), dropped: [(err as Error).message], original: text };
  }
  const merged: Record<string, unknown> = { ...defaultLabConfig(), ...data };
  try {
    return { config: checkLabConfig(merged, path), dropped: [] };
  } catch {
    // Fall through: setting by setting.
  }
  const dropped: string[] = [];
  const out: Record<string, unknown> = { ...defaultLabConfig() };
  for (const [key, schema] of Object.entries(LabConfigSchema.entries)) {
    if (!(key in merged)) continue;
    const r = v.safeParse(schema, merged[key]);
    if (r.success) out[key] = r.output;
    else dropped.push(`${key} ${JSON.stringify(merged[key])}: ${describeIssues(r.issues)}`);
  }
  let config = out as LabConfig;
  if (config.subnetv6 !== undefined) {
    try {
      parseSubnet6(config.subnetv6, 'subnetv6');
    } catch (err) {
      dropped.push(`subnetv6 ${JSON.stringify(config.subnetv6)}: ${(err as Error).message}`);
      delete config.subnetv6;
    }
  }
  try {
    resolveLabConfig(config, path);
  } catch (err) {
    // The addresses do not fit together: keep the subnet if it is usable, lay the rest out anew.
    let base: LabConfig;
    try {
      base = labConfigForSubnet(config.subnet, config);
    } catch {
      dropped.push(`subnet ${JSON.stringify(config.subnet)}: not a usable lab subnet`);
      base = { ...config, ...pickAddresses(defaultLabConfig()) };
    }
    dropped.push(`addresses: ${(err as Error).message}; laid out again from subnet ${base.subnet}`);
    config = base;
  }
  return { config, dropped, original: text };
}

function pickAddresses(c: LabConfig) {
  const { subnet, provisioner_ip, host_ip, dhcp_range_start, dhcp_range_end } = c;
  return { subnet, provisioner_ip, host_ip, dhcp_range_start, dhcp_range_end };
}

/** Write lab.yaml, refused (before anything is written) unless it passes the rules it is read by. */
export async function saveLabConfig(app: string, config: LabConfig): Promise<void> {
  const path = labConfigPath(app);
  checkLabConfig(config, path);
  await fs.mkdir(app, { recursive: true });
  const { stringify } = await import('../core/yaml.js');
  await writeFileAtomic(path, HEADER + stringify(config));
}
