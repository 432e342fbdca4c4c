import ipaddr from 'ipaddr.js';
import { UsageError } from '../core/errors.js';

export const ARCHES = ['x86_64', 'aarch64'] as const;
export type Arch = (typeof ARCHES)[number];

/** Longest name: a DNS label, and short enough for socket paths under ~/.pvmlab. */
export const MAX_NAME_LENGTH = 63;
const NAME_RE = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/;

/** A VM name becomes a hostname, a DNS record in pvmlab.local and file names: one DNS label. */
export function validateName(name: string): string {
  if (name.length === 0) throw new UsageError('VM name must not be empty');
  if (name.length > MAX_NAME_LENGTH)
    throw new UsageError(
      `VM name '${name}' is too long (${name.length} characters, at most ${MAX_NAME_LENGTH})`,
    );
  if (!NAME_RE.test(name))
    throw new UsageError(
      `VM name '${name}' is not a valid hostname: use lowercase letters, digits and '-', not starting or ending with '-'`,
    );
  return name;
}

export function validateArch(arch: string): Arch {
  if ((ARCHES as readonly string[]).includes(arch)) return arch as Arch;
  throw new UsageError(`--arch must be either 'aarch64' or 'x86_64' (got '${arch}')`);
}

const MAC_RE =
  /^([0-9a-f]{2})([:-])([0-9a-f]{2})\2([0-9a-f]{2})\2([0-9a-f]{2})\2([0-9a-f]{2})\2([0-9a-f]{2})$/i;

/** Accepts `aa:bb:..` or `aa-bb-..`, any case; returns lowercase with colons. Refuses multicast and zero. */
export function normalizeMac(mac: string): string {
  const m = MAC_RE.exec(mac.trim());
  if (!m) throw new UsageError(`invalid MAC address '${mac}': expected six hex pairs like 52:54:00:12:34:56`);
  const octets = [m[1], m[3], m[4], m[5], m[6], m[7]].map((o) => (o as string).toLowerCase());
  const first = parseInt(octets[0] as string, 16);
  if (first & 1) throw new UsageError(`invalid MAC address '${mac}': it is a multicast address`);
  if (octets.every((o) => o === '00')) throw new UsageError(`invalid MAC address '${mac}': all zeros`);
  return octets.join(':');
}

/** A random locally administered unicast MAC. */
export function randomMac(random: (n: number) => Uint8Array): string {
  const b = Array.from(random(6));
  b[0] = ((b[0] as number) | 0x02) & 0xfe;
  return b.map((x) => x.toString(16).padStart(2, '0')).join(':');
}

export interface ParsedAddress {
  /** Canonical text form (IPv6 compressed). */
  address: string;
  /** Prefix length given with the address, if any. */
  prefix?: number;
}

/** Parse `a.b.c.d`, `a.b.c.d/nn` (or the IPv6 forms); the flag name goes into the error. */
export function parseAddress(value: string, kind: 'ipv4' | 'ipv6', flag: string): ParsedAddress {
  const [addr, prefixText, extra] = value.split('/');
  const example = kind === 'ipv4' ? '192.168.100.10/24' : 'fd00:cafe:babe::10/64';
  const bad = (why: string) => new UsageError(`invalid ${flag} '${value}': ${why} (e.g. ${example})`);
  if (addr === undefined || extra !== undefined) throw bad('expected an address with an optional /prefix');
  let parsed: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    parsed = kind === 'ipv4' ? ipaddr.IPv4.parse(addr) : ipaddr.IPv6.parse(addr);
  } catch {
    throw bad(`not an ${kind === 'ipv4' ? 'IPv4' : 'IPv6'} address`);
  }
  if (kind === 'ipv4' && !ipaddr.IPv4.isValidFourPartDecimal(addr))
    throw bad('not a dotted-quad IPv4 address');
  if (parsed instanceof ipaddr.IPv6 && parsed.zoneId !== undefined)
    throw bad('a zone id (%...) is not allowed in a static address');
  let prefix: number | undefined;
  if (prefixText !== undefined) {
    const max = kind === 'ipv4' ? 32 : 128;
    if (!/^\d{1,3}$/.test(prefixText) || Number(prefixText) > max) throw bad(`prefix must be 0-${max}`);
    prefix = Number(prefixText);
  }
  return prefix === undefined ? { address: parsed.toString() } : { address: parsed.toString(), prefix };
}

export interface Subnet {
  kind: 'ipv4' | 'ipv6';
  /** Network address in canonical form. */
  network: string;
  prefix: number;
  /** `network/prefix`. */
  cidr: string;
}

export function parseSubnet(cidr: string, kind: 'ipv4' | 'ipv6', what: string): Subnet {
  const p = parseAddress(cidr, kind, what);
  if (p.prefix === undefined) throw new UsageError(`invalid ${what} '${cidr}': a prefix length is required`);
  const [net] = ipaddr.parseCIDR(`${p.address}/${p.prefix}`);
  const network = networkAddress(net, p.prefix);
  return { kind, network, prefix: p.prefix, cidr: `${network}/${p.prefix}` };
}

function networkAddress(addr: ipaddr.IPv4 | ipaddr.IPv6, prefix: number): string {
  if (addr.kind() === 'ipv4')
    return ipaddr.IPv4.networkAddressFromCIDR(`${addr.toString()}/${prefix}`).toString();
  return ipaddr.IPv6.networkAddressFromCIDR(`${addr.toString()}/${prefix}`).toString();
}

/** Address space a lab cannot number its hosts in. */
const UNUSABLE_V4 = new Set(['unspecified', 'multicast', 'loopback', 'linkLocal', 'reserved', 'broadcast']);
const UNUSABLE_V6 = new Set([
  'unspecified',
  'multicast',
  'loopback',
  'linkLocal',
  'ipv4Mapped',
  'rfc6145',
  'rfc6052',
  '6to4',
  'teredo',
]);
const RANGE_WORDS: Record<string, string> = {
  unspecified: 'the unspecified address range',
  multicast: 'multicast',
  loopback: 'loopback',
  linkLocal: 'link-local',
  reserved: 'reserved address space',
  broadcast: 'the broadcast address',
};

/** Why an address cannot be a lab host or network, or undefined. */
function unusable(address: string): string | undefined {
  const a = ipaddr.parse(address);
  const range = a.range();
  const bad = a.kind() === 'ipv4' ? UNUSABLE_V4 : UNUSABLE_V6;
  return bad.has(range) ? (RANGE_WORDS[range] ?? `${range} address space`) : undefined;
}

/**
 * A subnet a lab can live in: unicast space (private, global, unique-local), neither multicast,
 * loopback, link-local, unspecified nor reserved; an IPv4 one no larger than a /8 (both ends are
 * checked, so a huge prefix cannot reach into such space).
 */
export function checkLabSubnet(s: Subnet, what: string): Subnet {
  const bad = (why: string) => new UsageError(`invalid ${what} '${s.cidr}': ${why}`);
  if (s.kind === 'ipv4') {
    if (s.prefix < 8) throw bad('too large for a lab (use a /8 to /28)');
    const last = intToIpv4(ipv4ToInt(s.network) + 2 ** (32 - s.prefix) - 1);
    const why = unusable(s.network) ?? unusable(last);
    if (why) throw bad(`it is ${why}, not unicast space (e.g. 192.168.100.0/24)`);
  } else {
    const why = unusable(s.network);
    if (why) throw bad(`it is ${why}, not unicast space (e.g. fd00:cafe:babe::/64)`);
  }
  return s;
}

/** A host address in `subnet`: not the network (or subnet-router anycast) address, not unusable space. */
export function checkHostAddress(address: string, subnet: Subnet, what: string): void {
  if (sameAddress(address, subnet.network))
    throw new UsageError(
      `${what} ${address} is the ${subnet.kind === 'ipv4' ? 'network' : 'subnet-router anycast'} address of ${subnet.cidr}, not a host address`,
    );
  const why = unusable(address);
  if (why) throw new UsageError(`${what} ${address} is ${why}, not a host address`);
}

export function inSubnet(address: string, subnet: Subnet): boolean {
  const a = ipaddr.parse(address);
  if (a.kind() !== subnet.kind) return false;
  return a.match(ipaddr.parse(subnet.network), subnet.prefix);
}

/** Whether two networks share an address (one holds the other's network address). */
export function subnetsOverlap(a: Subnet, b: Subnet): boolean {
  return a.kind === b.kind && (inSubnet(a.network, b) || inSubnet(b.network, a));
}

export function sameAddress(a: string, b: string): boolean {
  try {
    return ipaddr.parse(a).toNormalizedString() === ipaddr.parse(b).toNormalizedString();
  } catch {
    return false;
  }
}

/** IPv4 address <-> 32-bit integer, for walking a subnet. */
export function ipv4ToInt(address: string): number {
  return ipaddr.IPv4.parse(address).octets.reduce((acc, o) => acc * 256 + o, 0);
}
export function intToIpv4(n: number): string {
  return [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join('.');
}

/** IPv6 address <-> 128-bit integer, for deriving lab addresses from the prefix. */
export function ipv6ToBigInt(address: string): bigint {
  return ipaddr.IPv6.parse(address).parts.reduce((acc, part) => (acc << 16n) | BigInt(part), 0n);
}
export function bigIntToIpv6(n: bigint): string {
  const parts: number[] = [];
  for (let i = 7; i >= 0; i--) parts.push(Number((n >> BigInt(i * 16)) & 0xffffn));
  return new ipaddr.IPv6(parts).toString();
}

/** Parse sizes like `10G`, `512M`, `2048` (bytes); binary multiples. Used for --disk-size. */
export function parseSize(text: string, flag = '--disk-size'): number {
  const m = /^(\d+)\s*([KMGT]i?B?|B)?$/i.exec(text.trim());
  if (!m) throw new UsageError(`invalid ${flag} '${text}': expected a size like 10G, 512M or 2048`);
  const units: Record<string, number> = { '': 1, B: 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 };
  const unit = (m[2] ?? '').toUpperCase().replace(/I?B?$/, '') || (m[2]?.toUpperCase() === 'B' ? 'B' : '');
  const mult = units[unit];
  if (mult === undefined) throw new UsageError(`invalid ${flag} '${text}': unknown unit`);
  const bytes = Number(m[1]) * mult;
  if (bytes <= 0) throw new UsageError(`invalid ${flag} '${text}': must be greater than zero`);
  if (!Number.isSafeInteger(bytes)) throw new UsageError(`invalid ${flag} '${text}': far too large`);
  return bytes;
}

/**
 * Disk sizes `vm create` accepts: 1 MiB (below that no installer or cloud image fits, and
 * qemu-img rounds to sectors anyway) to 64 TiB (qcow2 with its default clusters stops between
 * 1 and 4 PiB; a lab VM never needs more, and a typo like 100000T must not reach qemu-img).
 */
export const DISK_MIN_BYTES = 2 ** 20;
export const DISK_MAX_BYTES = 64 * 2 ** 40;

export function checkDiskSize(bytes: number, flag = '--disk-size'): number {
  if (!Number.isSafeInteger(bytes) || bytes < DISK_MIN_BYTES || bytes > DISK_MAX_BYTES)
    throw new UsageError(
      `invalid ${flag} ${Number.isSafeInteger(bytes) ? `${bytes} bytes` : 'value'}: use 1M to 64T (e.g. 10G)`,
    );
  return bytes;
}

export function parsePositiveInt(text: string, flag: string, max: number): number {
  if (!/^\d+$/.test(text) || Number(text) < 1 || Number(text) > max)
    throw new UsageError(`invalid ${flag} '${text}': expected a whole number from 1 to ${max}`);
  return Number(text);
}
