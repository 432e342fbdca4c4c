/**
 * The pxeboot_stack container's settings: its environment variables, checked before anything
 * starts. Every bad value is one line naming the variable and what it must be.
 */
import ipaddr from 'ipaddr.js';
import { UsageError } from '../core/errors.js';
import type { LabSegment } from './dnsmasq.js';

/** What the container entrypoint hands to startStack. */
export interface StackEnv extends LabSegment {
  /** The provisioner's IPv4 prefix length: PROVISIONER_IP's /prefix, else the interface's. */
  prefix: number;
  httpPort: number;
  dns: boolean;
}

/** One address of an interface, as os.networkInterfaces() reports it (family: 'IPv4' or 4 on old Node). */
export interface InterfaceAddress {
  address: string;
  family: string | number;
  /** a.b.c.d for IPv4 (the prefix length the kernel has). */
  netmask: string;
}
export type Interfaces = Record<string, readonly InterfaceAddress[] | undefined>;

const DEFAULT_PREFIX = 24;
/** DHCPv6 pool for unknown clients, as a lab has it (src/lab/config.ts DHCP6_POOL): prefix + ::1:0-::1:ffff. */
const DHCP6_POOL = { start: 0x1_0000n, end: 0x1_ffffn } as const;

const bad = (name: string, value: string, want: string) =>
  new UsageError(`${name}=${JSON.stringify(value)} is invalid: ${want}`);

const ipv4ToInt = (a: string) => ipaddr.IPv4.parse(a).octets.reduce((acc, o) => acc * 256 + o, 0);
const intToIpv4 = (n: number) => [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join('.');
const ipv6ToBig = (a: string) => ipaddr.IPv6.parse(a).parts.reduce((acc, p) => (acc << 16n) | BigInt(p), 0n);
function bigToIpv6(n: bigint): string {
  const parts: number[] = [];
  for (let i = 7; i >= 0; i--) parts.push(Number((n >> BigInt(i * 16)) & 0xffffn));
  return new ipaddr.IPv6(parts).toString();
}

function plainIpv4(name: string, value: string, want: string): string {
  if (!ipaddr.IPv4.isValidFourPartDecimal(value)) throw bad(name, value, want);
  return ipaddr.IPv4.parse(value).toString();
}

interface Net4 {
  address: string;
  prefix: number;
  /** First and last address of the subnet (network and broadcast). */
  first: number;
  last: number;
}

/** PROVISIONER_IP's address and the /prefix given with it, if any (8-30: room for a pool). */
function parseProvisioner(value: string): { address: string; prefix?: number } {
  const want = 'an IPv4 host address with an optional /prefix (8-30), e.g. 192.168.100.1/24';
  const [addr = '', prefixText, extra] = value.split('/');
  if (extra !== undefined) throw bad('PROVISIONER_IP', value, want);
  const address = plainIpv4('PROVISIONER_IP', addr, want);
  const range = ipaddr.IPv4.parse(address).range();
  if (range !== 'private' && range !== 'unicast' && range !== 'carrierGradeNat')
    throw bad('PROVISIONER_IP', value, `${address} is ${range} address space, not a host address`);
  if (prefixText === undefined) return { address };
  if (!/^\d{1,2}$/.test(prefixText) || Number(prefixText) < 8 || Number(prefixText) > 30)
    throw bad('PROVISIONER_IP', value, want);
  return { address, prefix: Number(prefixText) };
}

/** The subnet of `address`/`prefix`; the address must be a host in it. */
function subnet4(value: string, address: string, prefix: number): Net4 {
  const size = 2 ** (32 - prefix);
  const n = ipv4ToInt(address);
  const first = Math.floor(n / size) * size;
  if (n === first || n === first + size - 1)
    throw bad(
      'PROVISIONER_IP',
      value,
      `${address} is the ${n === first ? 'network' : 'broadcast'} address of ${intToIpv4(first)}/${prefix}, not a host address`,
    );
  return { address, prefix, first, last: first + size - 1 };
}

/**
 * The default pool: .100-.200 of the /24 holding the address, as the original had it; in a
 * subnet smaller than a /24 the same share of it (as src/lab/config.ts scales a lab's pool).
 */
export function defaultRange4(net: Net4): { start: string; end: string } {
  if (net.prefix <= 24) {
    const base = Math.floor(ipv4ToInt(net.address) / 256) * 256;
    return { start: intToIpv4(base + 100), end: intToIpv4(base + 200) };
  }
  const size = net.last - net.first + 1;
  return {
    start: intToIpv4(Math.max(net.first + 1, net.first + Math.floor((size * 100) / 256))),
    end: intToIpv4(Math.min(net.last - 1, net.first + Math.floor((size * 200) / 256))),
  };
}

function rangeAddress4(name: string, value: string, net: Net4): number {
  const cidr = `${intToIpv4(net.first)}/${net.prefix}`;
  const want = `an IPv4 address in ${cidr} (PROVISIONER_IP's subnet), not its network or broadcast address`;
  const n = ipv4ToInt(plainIpv4(name, value, want));
  if (n <= net.first || n >= net.last) throw bad(name, value, want);
  return n;
}

interface Net6 {
  address: string;
  network: bigint;
}

function parseProvisioner6(value: string): Net6 {
  const want = 'an IPv6 address in a /64, e.g. fd00:cafe:babe::1/64';
  const [addr = '', prefixText, extra] = value.split('/');
  if (extra !== undefined || !ipaddr.IPv6.isValid(addr) || addr.includes('%'))
    throw bad('PROVISIONER_IPV6', value, want);
  // Router advertisements and the DHCPv6 pool assume a /64 (as a lab's subnetv6 is).
  if (prefixText !== undefined && prefixText !== '64')
    throw bad('PROVISIONER_IPV6', value, `the prefix must be /64 (${want})`);
  const parsed = ipaddr.IPv6.parse(addr);
  const range = parsed.range();
  if (range !== 'uniqueLocal' && range !== 'unicast')
    throw bad('PROVISIONER_IPV6', value, `${parsed.toString()} is ${range} address space, not ${want}`);
  const full = ipv6ToBig(addr);
  const network = (full >> 64n) << 64n;
  if (full === network)
    throw bad('PROVISIONER_IPV6', value, `it is the subnet-router anycast address; ${want}`);
  return { address: parsed.toString(), network };
}

/**
 * A DHCPv6 pool end: an address in the provisioner's /64, or only a host part such as `::64`
 * (what the original pvmlab's provisioner passed), which is put under that prefix.
 */
function rangeAddress6(name: string, value: string, net: Net6): bigint {
  const prefix = `${bigToIpv6(net.network)}/64`;
  const want = `an IPv6 address in ${prefix} (PROVISIONER_IPV6's subnet) or a host part like ::1:0`;
  if (!ipaddr.IPv6.isValid(value) || value.includes('%')) throw bad(name, value, want);
  const n = ipv6ToBig(value);
  const host = n >> 64n === 0n ? net.network | n : n;
  if (host >> 64n !== net.network >> 64n || host === net.network) throw bad(name, value, want);
  return host;
}

function parsePort(value: string): number {
  if (!/^\d{1,5}$/.test(value) || Number(value) < 1 || Number(value) > 65535)
    throw bad('HTTP_PORT', value, 'a TCP port number, 1-65535');
  return Number(value);
}

function parseDns(value: string): boolean {
  if (value === 'on') return true;
  if (value === 'off') return false;
  throw bad('PVMLAB_DNS', value, "'on' (the default: DNS for pvmlab.local) or 'off'");
}

/** A Linux interface name: 1-15 bytes, no '/', ':' or white space. */
function checkInterfaceName(value: string): string {
  // eslint-disable-next-line no-control-regex
  if (!/^[^/:\s\u0000-\u001f\u007f]{1,15}$/.test(value) || value === '.' || value === '..')
    throw bad(
      'PVMLAB_INTERFACE',
      value,
      "an interface name (1-15 characters, none of '/', ':' or white space)",
    );
  return value;
}

const isV4 = (a: InterfaceAddress) => a.family === 'IPv4' || a.family === 4;
const isV6 = (a: InterfaceAddress) => a.family === 'IPv6' || a.family === 6;
const sameV6 = (a: string, b: string) => {
  try {
    return ipv6ToBig(a.split('%')[0] ?? '') === ipv6ToBig(b);
  } catch {
    return false;
  }
};

function describe(ifaces: Interfaces): string {
  const list = Object.entries(ifaces)
    .map(([name, addrs]) => `${name} (${(addrs ?? []).map((a) => a.address).join(', ') || 'no address'})`)
    .join(', ');
  return list || 'none';
}

/** How many leading one bits an IPv4 netmask has. */
function maskBits(netmask: string): number | undefined {
  try {
    return ipaddr.IPv4.parse(netmask).prefixLengthFromSubnetMask() ?? undefined;
  } catch {
    return undefined;
  }
}

/**
 * The interface dnsmasq serves: PVMLAB_INTERFACE, else the one holding the provisioner's address.
 * Either way it must hold the address (the HTTP server listens on it, dnsmasq binds to it); the
 * prefix is the one the kernel has there.
 */
function pickInterface(
  env: NodeJS.ProcessEnv,
  address: string,
  ifaces: Interfaces,
): { iface: string; prefix: number | undefined } {
  const holding = (name: string) => (ifaces[name] ?? []).find((a) => isV4(a) && a.address === address);
  const holders = Object.keys(ifaces).filter((name) => holding(name));
  const given = opt(env, 'PVMLAB_INTERFACE');
  let iface: string;
  if (given !== undefined) {
    iface = checkInterfaceName(given);
    if (!holders.includes(iface))
      throw new UsageError(
        ifaces[iface] === undefined
          ? `PVMLAB_INTERFACE=${JSON.stringify(given)}: no such interface with an address here (interfaces: ${describe(ifaces)}); run the container with --network host`
          : `PVMLAB_INTERFACE=${JSON.stringify(given)} does not hold PROVISIONER_IP ${address} (interfaces: ${describe(ifaces)})`,
      );
  } else {
    const [first] = holders;
    if (first === undefined)
      throw new UsageError(
        `PROVISIONER_IP ${address} is not on any interface here (interfaces: ${describe(ifaces)}): run the container with --network host on the machine whose lab interface has that address`,
      );
    iface = first;
  }
  const a = holding(iface);
  return { iface, prefix: a ? maskBits(a.netmask) : undefined };
}

/** Unset and empty are the same: `docker run -e X=` is how a value is cleared. */
function opt(env: NodeJS.ProcessEnv, name: string): string | undefined {
  const v = env[name]?.trim();
  return v === undefined || v === '' ? undefined : v;
}

function parseV6(env: NodeJS.ProcessEnv): StackEnv['ipv6'] {
  const ip6 = opt(env, 'PROVISIONER_IPV6');
  if (ip6 === undefined) {
    for (const name of ['DHCP_RANGE_V6_START', 'DHCP_RANGE_V6_END'])
      if (opt(env, name) !== undefined)
        throw new UsageError(`${name} is set but PROVISIONER_IPV6 is not: set both, or neither`);
    return undefined;
  }
  const net6 = parseProvisioner6(ip6);
  const s6 = opt(env, 'DHCP_RANGE_V6_START');
  const e6 = opt(env, 'DHCP_RANGE_V6_END');
  const s =
    s6 === undefined ? net6.network + DHCP6_POOL.start : rangeAddress6('DHCP_RANGE_V6_START', s6, net6);
  const e = e6 === undefined ? net6.network + DHCP6_POOL.end : rangeAddress6('DHCP_RANGE_V6_END', e6, net6);
  if (s > e)
    throw new UsageError(
      `DHCP_RANGE_V6_START ${bigToIpv6(s)} is after DHCP_RANGE_V6_END ${bigToIpv6(e)}: the pool is start-end`,
    );
  const self = ipv6ToBig(net6.address);
  if (self >= s && self <= e)
    throw new UsageError(
      `DHCP_RANGE_V6_START-DHCP_RANGE_V6_END (${bigToIpv6(s)}-${bigToIpv6(e)}) holds PROVISIONER_IPV6 ${net6.address}: the pool must leave it out`,
    );
  return { address: net6.address, prefix: 64, rangeStart: bigToIpv6(s), rangeEnd: bigToIpv6(e) };
}

/**
 * Read and check the container's environment; `ifaces` is os.networkInterfaces(). Values are
 * checked first, then the interface (so a typo is reported as such, not as a missing address).
 */
export function parseStackEnv(env: NodeJS.ProcessEnv, ifaces: Interfaces): StackEnv {
  const ip = opt(env, 'PROVISIONER_IP');
  if (ip === undefined)
    throw new UsageError(
      "PROVISIONER_IP is not set: give the provisioner's IPv4 address on the lab network, e.g. -e PROVISIONER_IP=192.168.100.1/24",
    );
  const given = parseProvisioner(ip);
  const ipv6 = parseV6(env);
  const portText = opt(env, 'HTTP_PORT');
  const httpPort = portText === undefined ? 80 : parsePort(portText);
  const dnsText = opt(env, 'PVMLAB_DNS');
  const dns = dnsText === undefined ? true : parseDns(dnsText);

  const { iface, prefix: kernelPrefix } = pickInterface(env, given.address, ifaces);
  // dnsmasq hands out the netmask it is given: it must be the one the interface has.
  if (given.prefix !== undefined && kernelPrefix !== undefined && given.prefix !== kernelPrefix)
    throw bad(
      'PROVISIONER_IP',
      ip,
      `${iface} has ${given.address}/${kernelPrefix}: give that prefix, or none (the interface's is used)`,
    );
  const net = subnet4(ip, given.address, given.prefix ?? kernelPrefix ?? DEFAULT_PREFIX);
  const def = defaultRange4(net);
  const startText = opt(env, 'DHCP_RANGE_START') ?? def.start;
  const endText = opt(env, 'DHCP_RANGE_END') ?? def.end;
  const start = rangeAddress4('DHCP_RANGE_START', startText, net);
  const end = rangeAddress4('DHCP_RANGE_END', endText, net);
  if (start > end)
    throw new UsageError(
      `DHCP_RANGE_START ${startText} is after DHCP_RANGE_END ${endText}: the pool is start-end`,
    );
  const self = ipv4ToInt(net.address);
  if (self >= start && self <= end)
    throw new UsageError(
      `DHCP_RANGE_START-DHCP_RANGE_END (${startText}-${endText}) holds PROVISIONER_IP ${net.address}: the pool must leave it out`,
    );
  if (ipv6 && !(ifaces[iface] ?? []).some((a) => isV6(a) && sameV6(a.address, ipv6.address)))
    throw new UsageError(
      `PROVISIONER_IPV6 ${ipv6.address} is not on ${iface} (interfaces: ${describe(ifaces)}): add it to the interface first`,
    );
  return {
    iface,
    address: net.address,
    prefix: net.prefix,
    rangeStart: intToIpv4(start),
    rangeEnd: intToIpv4(end),
    ...(ipv6 ? { ipv6 } : {}),
    httpPort,
    dns,
  };
}
