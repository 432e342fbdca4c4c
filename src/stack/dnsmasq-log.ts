/** Timeline events read from dnsmasq's `log-dhcp` output. */
export interface LogEvent {
  mac: string;
  type: string;
  detail: Record<string, string>;
}

// The lookahead keeps a DHCPv6 line's DUID (also hex pairs) from passing for a MAC.
const DHCP_RE =
  /^dnsmasq-dhcp(?:\[\d+\])?: (\d+) (DHCPDISCOVER|DHCPOFFER|DHCPREQUEST|DHCPACK|DHCPNAK)\(([^)]+)\)\s+(?:(\d+\.\d+\.\d+\.\d+)\s+)?([0-9a-f]{2}(?::[0-9a-f]{2}){5})(?=\s|$)(?:\s+(\S+))?/i;
// DHCPv6: `<xid> DHCPREPLY(br0) fd00::3 <duid> <name>`; the MAC comes on an earlier line of the xid.
const DHCP6_RE =
  /^dnsmasq-dhcp(?:\[\d+\])?: (\d+) DHCP(SOLICIT|ADVERTISE|REQUEST|REPLY|RENEW|REBIND|CONFIRM|RELEASE|DECLINE|INFORMATION-REQUEST)\(([^)]+)\)\s+(?:([0-9a-f]*::?[0-9a-f:]*)\s+)?((?:[0-9a-f]{2}:){9,}[0-9a-f]{2})(?:\s+(\S+))?/i;
const MAC6_RE = /^dnsmasq-dhcp(?:\[\d+\])?: (\d+) client MAC address: ([0-9a-f]{2}(?::[0-9a-f]{2}){5})\s*$/i;
const ATTR_RE = /^dnsmasq-dhcp(?:\[\d+\])?: (\d+) (vendor class|user class|bootfile name): (.*)$/;
// A client that asks for option 67 (UEFI firmware does) gets the boot file there, logged so.
const OPT67_RE = /^dnsmasq-dhcp(?:\[\d+\])?: (\d+) sent size:\s*\d+ option:\s*67 bootfile-name\s+(.*)$/;
const TFTP_SENT_RE = /^dnsmasq-tftp(?:\[\d+\])?: sent (\S+) to (\S+)/;
// dnsmasq 2.90 logs "file %s not found for %s" (the client's address) and "failed sending %s to %s".
const TFTP_ERR_RE =
  /^dnsmasq-tftp(?:\[\d+\])?: (?:file (\S+) not found(?: for (\S+))?|failed sending (\S+) to (\S+))/;

/**
 * Turns log lines into per-MAC events. dnsmasq logs a transaction over several lines keyed by
 * its xid, so the parser keeps the xid's MAC and attributes; TFTP lines carry only an IP,
 * mapped to the MAC that was last given that address (or by `macForIp`, the reservations).
 */
const MAX_ADDRESSES = 4096;

export class DnsmasqLogParser {
  private readonly xid = new Map<string, { mac?: string; attrs: Record<string, string> }>();
  private readonly ipToMac = new Map<string, string>();

  constructor(private readonly macForIp: (ip: string) => string | undefined = () => undefined) {}

  feed(line: string): LogEvent[] {
    const m6 = MAC6_RE.exec(line);
    if (m6) {
      this.tx(m6[1] as string).mac = (m6[2] as string).toLowerCase();
      return [];
    }
    const d6 = DHCP6_RE.exec(line);
    if (d6) {
      const [, xid, kind, iface, ip, duid, name] = d6 as unknown as string[];
      const tx = this.tx(xid as string);
      const mac = tx.mac ?? macFromDuid(duid as string);
      if (!mac) return [];
      if (ip && (kind === 'ADVERTISE' || kind === 'REPLY')) this.remember(ip, mac);
      const detail: Record<string, string> = { iface: iface as string, duid: duid as string };
      if (ip) detail.ip = ip;
      if (name) detail.hostname = name;
      return [{ mac, type: `dhcp6.${(kind as string).toLowerCase()}`, detail }];
    }
    const d = DHCP_RE.exec(line);
    if (d) {
      const [, xid, kind, iface, ip, macRaw, name] = d as unknown as string[];
      const mac = (macRaw as string).toLowerCase();
      const tx = this.tx(xid as string);
      tx.mac = mac;
      if (ip && (kind === 'DHCPOFFER' || kind === 'DHCPACK')) this.remember(ip, mac);
      const detail: Record<string, string> = { iface: iface as string, ...tx.attrs };
      if (ip) detail.ip = ip;
      if (name) detail.hostname = name;
      return [{ mac, type: `dhcp.${(kind as string).slice(4).toLowerCase()}`, detail }];
    }
    const a = transactionAttribute(line);
    if (a) {
      const tx = this.tx(a.xid);
      if (tx.attrs[a.key] === a.value) return [];
      tx.attrs[a.key] = a.value;
      // The boot file is decided after the offer line: report it as its own event.
      if (a.key === 'bootfile' && tx.mac)
        return [{ mac: tx.mac, type: 'dhcp.bootfile', detail: { file: a.value } }];
      return [];
    }
    const t = TFTP_SENT_RE.exec(line);
    if (t) {
      const [, path, ip] = t as unknown as [string, string, string];
      const mac = this.ipToMac.get(ip) ?? this.macForIp(ip);
      return mac ? [{ mac, type: 'tftp.sent', detail: { file: path.split('/').pop() ?? path, ip } }] : [];
    }
    const e = TFTP_ERR_RE.exec(line);
    if (e) {
      const ip = e[2] ?? e[4];
      const mac = ip ? (this.ipToMac.get(ip) ?? this.macForIp(ip)) : undefined;
      const file = (e[1] ?? e[3] ?? '').split('/').pop() ?? '';
      // iPXE always looks for an optional autoexec.ipxe first: not a failure worth a timeline entry.
      if (file === 'autoexec.ipxe' && e[1] !== undefined) return [];
      return mac ? [{ mac, type: 'tftp.error', detail: { file, ip: ip ?? '' } }] : [];
    }
    return [];
  }

  /** The MAC last offered or acknowledged this address. */
  macFor(ip: string): string | undefined {
    return this.ipToMac.get(ip);
  }

  /**
   * Address -> MAC, newest last and bounded: a client can walk the DHCPv6 pool (65,536 addresses)
   * and more; the oldest mappings go first (reservations still come from `macForIp`).
   */
  private remember(ip: string, mac: string): void {
    this.ipToMac.delete(ip);
    this.ipToMac.set(ip, mac);
    if (this.ipToMac.size > MAX_ADDRESSES) this.ipToMac.delete(this.ipToMac.keys().next().value as string);
  }

  private tx(id: string) {
    let t = this.xid.get(id);
    if (!t) {
      t = { attrs: {} };
      this.xid.set(id, t);
      // Transactions are short-lived; keep the map bounded.
      if (this.xid.size > 1000) this.xid.delete(this.xid.keys().next().value as string);
    }
    return t;
  }
}

/** A per-transaction attribute line: vendor/user class, or the boot file (as a field or option 67). */
function transactionAttribute(
  line: string,
): { xid: string; key: 'vendorClass' | 'userClass' | 'bootfile'; value: string } | undefined {
  const o67 = OPT67_RE.exec(line);
  if (o67) return { xid: o67[1] as string, key: 'bootfile', value: (o67[2] as string).trim() };
  const a = ATTR_RE.exec(line);
  if (!a) return undefined;
  const key = a[2] === 'vendor class' ? 'vendorClass' : a[2] === 'user class' ? 'userClass' : 'bootfile';
  return { xid: a[1] as string, key, value: (a[3] as string).trim() };
}

/** The MAC inside a DUID-LLT (type 1) or DUID-LL (type 3) of an Ethernet client (hardware type 1). */
export function macFromDuid(duid: string): string | undefined {
  const b = duid.toLowerCase().split(':');
  const type = b.slice(0, 2).join('');
  const hw = b.slice(2, 4).join('');
  if (hw !== '0001') return undefined;
  const mac = type === '0001' ? b.slice(8) : type === '0003' ? b.slice(4) : undefined;
  return mac?.length === 6 ? mac.join(':') : undefined;
}

// dnsmasq's own lines (start-up, TFTP transfers, reloads) carry no transaction number.
const PLAIN_RE = /^dnsmasq(?:-dhcp|-tftp)?(?:\[\d+\])?: (?!\d+ )/;
// With log-dhcp every transaction takes ~20 numbered lines; the message lines say what happened.
const DHCP_MESSAGE_RE = /^dnsmasq-dhcp(?:\[\d+\])?: \d+ DHCP[A-Z-]+\(/;
// Sent every few seconds to minutes whether anyone listens: routine, not news.
const ROUTINE_RE = /^dnsmasq-dhcp(?:\[\d+\])?: RTR-ADVERT\(/;

/**
 * Which of dnsmasq's lines the stack prints: its own messages, one line per DHCP/DHCPv6
 * message (DHCPDISCOVER, DHCPOFFER, ..., DHCPREPLY) and per TFTP transfer, and anything that
 * failed; not the option dumps of log-dhcp nor the periodic router advertisements.
 */
export function worthLogging(line: string): boolean {
  if (/failed|error/i.test(line)) return true;
  if (ROUTINE_RE.test(line)) return false;
  return PLAIN_RE.test(line) || DHCP_MESSAGE_RE.test(line);
}
