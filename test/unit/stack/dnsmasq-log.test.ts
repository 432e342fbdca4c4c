import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DnsmasqLogParser, macFromDuid, type LogEvent } from '../../../src/stack/dnsmasq-log.js';

const MAC1 = 'b6:c0:84:d1:b6:01';
const MAC2 = 'be:b9:f9:8b:f5:ee';

function feedAll(p: DnsmasqLogParser, lines: string[]): LogEvent[] {
  return lines.flatMap((l) => p.feed(l));
}

test('firmware PXE exchange: discover/offer/request/ack with the vendor class, then the boot file', () => {
  const p = new DnsmasqLogParser();
  // dnsmasq 2.90 with log-dhcp, as relayed by --log-facility=- (trailing blanks included).
  const events = feedAll(p, [
    'dnsmasq-dhcp[123]: 2952164633 available DHCP range: 10.9.0.100 -- 10.9.0.200',
    'dnsmasq-dhcp[123]: 2952164633 vendor class: PXEClient:Arch:00007:UNDI:003000',
    `dnsmasq-dhcp[123]: 2952164633 DHCPDISCOVER(br0) ${MAC1} `,
    'dnsmasq-dhcp[123]: 2952164633 tags: efi-x86_64, br0',
    `dnsmasq-dhcp[123]: 2952164633 DHCPOFFER(br0) 10.9.0.175 ${MAC1} `,
    'dnsmasq-dhcp[123]: 2952164633 requested options: 1:netmask, 2:time-offset, 3:router, 4, 5,',
    'dnsmasq-dhcp[123]: 2952164633 bootfile name: ipxe-x86_64.efi',
    'dnsmasq-dhcp[123]: 2952164633 next server: 10.9.0.1',
    'dnsmasq-dhcp[123]: 2952164633 sent size:  1 option: 53 message-type  2',
    'dnsmasq-dhcp[123]: 2952164633 vendor class: PXEClient:Arch:00007:UNDI:003000',
    `dnsmasq-dhcp[123]: 2952164633 DHCPREQUEST(br0) 10.9.0.175 ${MAC1} `,
    `dnsmasq-dhcp[123]: 2952164633 DHCPACK(br0) 10.9.0.175 ${MAC1} `,
    'dnsmasq-dhcp[123]: 2952164633 bootfile name: ipxe-x86_64.efi',
  ]);
  const vendorClass = 'PXEClient:Arch:00007:UNDI:003000';
  assert.deepEqual(events, [
    { mac: MAC1, type: 'dhcp.discover', detail: { iface: 'br0', vendorClass } },
    { mac: MAC1, type: 'dhcp.offer', detail: { iface: 'br0', vendorClass, ip: '10.9.0.175' } },
    { mac: MAC1, type: 'dhcp.bootfile', detail: { file: 'ipxe-x86_64.efi' } },
    // The repeated vendor class and boot file of the same transaction add nothing.
    {
      mac: MAC1,
      type: 'dhcp.request',
      detail: { iface: 'br0', vendorClass, bootfile: 'ipxe-x86_64.efi', ip: '10.9.0.175' },
    },
    {
      mac: MAC1,
      type: 'dhcp.ack',
      detail: { iface: 'br0', vendorClass, bootfile: 'ipxe-x86_64.efi', ip: '10.9.0.175' },
    },
  ]);
  assert.equal(p.macFor('10.9.0.175'), MAC1);
});

test('iPXE exchange: user class, hostname on the ACK, the script as boot file', () => {
  const p = new DnsmasqLogParser();
  const events = feedAll(p, [
    'dnsmasq-dhcp[123]: 1430934325 vendor class: PXEClient:Arch:00007:UNDI:003010',
    'dnsmasq-dhcp[123]: 1430934325 user class: iPXE',
    `dnsmasq-dhcp[123]: 1430934325 DHCPDISCOVER(br0) ${MAC2} `,
    `dnsmasq-dhcp[123]: 1430934325 DHCPOFFER(br0) 10.217.0.2 ${MAC2} `,
    'dnsmasq-dhcp[123]: 1430934325 bootfile name: boot.ipxe',
    `dnsmasq-dhcp[123]: 1430934325 DHCPREQUEST(br0) 10.217.0.2 ${MAC2} `,
    `dnsmasq-dhcp[123]: 1430934325 DHCPACK(br0) 10.217.0.2 ${MAC2} pxe1`,
  ]);
  const base = { iface: 'br0', vendorClass: 'PXEClient:Arch:00007:UNDI:003010', userClass: 'iPXE' };
  assert.deepEqual(events, [
    { mac: MAC2, type: 'dhcp.discover', detail: base },
    { mac: MAC2, type: 'dhcp.offer', detail: { ...base, ip: '10.217.0.2' } },
    { mac: MAC2, type: 'dhcp.bootfile', detail: { file: 'boot.ipxe' } },
    { mac: MAC2, type: 'dhcp.request', detail: { ...base, bootfile: 'boot.ipxe', ip: '10.217.0.2' } },
    {
      mac: MAC2,
      type: 'dhcp.ack',
      detail: { ...base, bootfile: 'boot.ipxe', ip: '10.217.0.2', hostname: 'pxe1' },
    },
  ]);
});

test('lines without a pid, upper-case MACs and NAKs', () => {
  const p = new DnsmasqLogParser();
  assert.deepEqual(p.feed('dnsmasq-dhcp: 77 DHCPDISCOVER(enp0s2) 52:54:00:AB:CD:EF'), [
    { mac: '52:54:00:ab:cd:ef', type: 'dhcp.discover', detail: { iface: 'enp0s2' } },
  ]);
  assert.deepEqual(p.feed('dnsmasq-dhcp[9]: 78 DHCPNAK(enp0s2) 10.0.0.9 52:54:00:ab:cd:ef'), [
    { mac: '52:54:00:ab:cd:ef', type: 'dhcp.nak', detail: { iface: 'enp0s2', ip: '10.0.0.9' } },
  ]);
  // A NAK or REQUEST does not claim the address for the MAC; only OFFER and ACK do.
  assert.equal(p.macFor('10.0.0.9'), undefined);
  assert.deepEqual(p.feed('dnsmasq-dhcp[9]: 79 DHCPREQUEST(enp0s2) 10.0.0.8 52:54:00:ab:cd:ef'), [
    { mac: '52:54:00:ab:cd:ef', type: 'dhcp.request', detail: { iface: 'enp0s2', ip: '10.0.0.8' } },
  ]);
  assert.equal(p.macFor('10.0.0.8'), undefined);
});

test('a boot file logged before any DHCP line of its transaction is kept, not reported', () => {
  const p = new DnsmasqLogParser();
  assert.deepEqual(p.feed('dnsmasq-dhcp[1]: 5 bootfile name: undionly.kpxe'), []);
  assert.deepEqual(p.feed(`dnsmasq-dhcp[1]: 5 DHCPACK(br0) 10.9.0.7 ${MAC1}`), [
    { mac: MAC1, type: 'dhcp.ack', detail: { iface: 'br0', bootfile: 'undionly.kpxe', ip: '10.9.0.7' } },
  ]);
  // Transactions are separate: another xid starts with no attributes.
  assert.deepEqual(p.feed(`dnsmasq-dhcp[1]: 6 DHCPDISCOVER(br0) ${MAC1}`), [
    { mac: MAC1, type: 'dhcp.discover', detail: { iface: 'br0' } },
  ]);
});

test('TFTP: sent and not-found map the client address to the MAC of the last offer/ack', () => {
  const p = new DnsmasqLogParser();
  p.feed(`dnsmasq-dhcp[123]: 1 DHCPOFFER(br0) 10.217.0.2 ${MAC2} `);
  assert.deepEqual(p.feed('dnsmasq-tftp[123]: sent /tmp/x/tftp/ipxe-x86_64.efi to 10.217.0.2'), [
    { mac: MAC2, type: 'tftp.sent', detail: { file: 'ipxe-x86_64.efi', ip: '10.217.0.2' } },
  ]);
  // dnsmasq 2.90's own wording (checked against the binary): "file %s not found for %s".
  assert.deepEqual(p.feed('dnsmasq-tftp[123]: file /tmp/x/tftp/nope not found for 10.217.0.2'), [
    { mac: MAC2, type: 'tftp.error', detail: { file: 'nope', ip: '10.217.0.2' } },
  ]);
  assert.deepEqual(p.feed('dnsmasq-tftp[123]: failed sending /tmp/x/tftp/boot.ipxe to 10.217.0.2'), [
    { mac: MAC2, type: 'tftp.error', detail: { file: 'boot.ipxe', ip: '10.217.0.2' } },
  ]);
  // iPXE's probe for an optional autoexec.ipxe is not an error on the timeline.
  assert.deepEqual(p.feed('dnsmasq-tftp[123]: file /tmp/x/tftp/autoexec.ipxe not found for 10.217.0.2'), []);
  // Without a client address there is no machine to put the error on.
  assert.deepEqual(p.feed('dnsmasq-tftp[123]: file /tmp/x/tftp/nope not found'), []);
  // An address nobody was given and no reservation knows: nothing.
  assert.deepEqual(p.feed('dnsmasq-tftp[123]: sent /tmp/x/tftp/ipxe-x86_64.efi to 10.217.0.99'), []);
  assert.deepEqual(p.feed('dnsmasq-tftp[123]: file /tmp/x/tftp/nope not found for 10.217.0.99'), []);
});

test('macForIp is the fallback for addresses not seen in an offer or ack', () => {
  const asked: string[] = [];
  const p = new DnsmasqLogParser((ip) => {
    asked.push(ip);
    return ip === '10.217.0.3' ? '52:54:00:aa:bb:03' : ip === '10.217.0.2' ? 'fallback-not-used' : undefined;
  });
  assert.deepEqual(p.feed('dnsmasq-tftp[1]: sent /srv/tftp/ipxe-arm64.efi to 10.217.0.3'), [
    { mac: '52:54:00:aa:bb:03', type: 'tftp.sent', detail: { file: 'ipxe-arm64.efi', ip: '10.217.0.3' } },
  ]);
  assert.deepEqual(p.feed('dnsmasq-tftp[1]: file /srv/tftp/x.efi not found for 10.217.0.3'), [
    { mac: '52:54:00:aa:bb:03', type: 'tftp.error', detail: { file: 'x.efi', ip: '10.217.0.3' } },
  ]);
  // The lease seen in the log wins over the reservation lookup.
  p.feed(`dnsmasq-dhcp[1]: 9 DHCPACK(br0) 10.217.0.2 ${MAC2} pxe1`);
  assert.deepEqual(p.feed('dnsmasq-tftp[1]: sent /srv/tftp/boot.ipxe to 10.217.0.2'), [
    { mac: MAC2, type: 'tftp.sent', detail: { file: 'boot.ipxe', ip: '10.217.0.2' } },
  ]);
  assert.deepEqual(asked, ['10.217.0.3', '10.217.0.3']);
  // macFor() reports only what the log showed, never the fallback.
  assert.equal(p.macFor('10.217.0.3'), undefined);
  assert.equal(p.macFor('10.217.0.2'), MAC2);
});

test('macFor follows the latest offer/ack for an address', () => {
  const p = new DnsmasqLogParser();
  assert.equal(p.macFor('10.9.0.175'), undefined);
  p.feed(`dnsmasq-dhcp[1]: 1 DHCPOFFER(br0) 10.9.0.175 ${MAC1}`);
  assert.equal(p.macFor('10.9.0.175'), MAC1);
  p.feed(`dnsmasq-dhcp[1]: 2 DHCPACK(br0) 10.9.0.175 ${MAC2.toUpperCase()} pxe1`);
  assert.equal(p.macFor('10.9.0.175'), MAC2);
});

test('unrelated lines produce no events', () => {
  const p = new DnsmasqLogParser(() => MAC1);
  const lines = [
    '',
    'dnsmasq[123]: started, version 2.90 DNS disabled',
    'dnsmasq[123]: compile time options: IPv6 GNU-getopt DBus no-UBus i18n IDN2 DHCP DHCPv6 no-Lua TFTP',
    'dnsmasq-dhcp[123]: DHCP, IP range 10.217.0.100 -- 10.217.0.200, lease time 1h',
    'dnsmasq-dhcp[123]: DHCPv6 stateless on br0',
    'dnsmasq-dhcp[123]: router advertisement on fd00:ad9:0::',
    'dnsmasq-dhcp[123]: RTR-ADVERT(br0) fd00:ad9:0::',
    'dnsmasq-tftp[123]: TFTP root is /tmp/x/tftp',
    'dnsmasq[123]: read /tmp/x/dns-hosts - 3 names',
    'dnsmasq-dhcp[123]: read /tmp/x/dhcp-hosts',
    'dnsmasq-dhcp[123]: 2952164633 tags: efi-x86_64, br0',
    'dnsmasq-dhcp[123]: 2952164633 next server: 10.9.0.1',
    'dnsmasq-dhcp[123]: 2952164633 sent size:  4 option: 54 server-identifier  10.9.0.1',
    'dnsmasq[123]: exiting on receipt of SIGTERM',
    'some other program: DHCPACK(br0) 10.9.0.175 b6:c0:84:d1:b6:01',
    'dnsmasq-tftp[123]: error 8 User aborted the transfer received from 10.217.0.2',
  ];
  for (const l of lines) assert.deepEqual(p.feed(l), [], l);
});

// Recorded from dnsmasq 2.90 answering `dhclient -6` (DUID-LLT) for a reserved MAC.
const V6_EXCHANGE = [
  'dnsmasq-dhcp[10208]: 14831681 available DHCP range: fd00:9::1:0 -- fd00:9::1:ffff',
  'dnsmasq-dhcp[10208]: 14831681 client MAC address: 52:54:00:00:AA:01',
  'dnsmasq-dhcp[10208]: 14831681 DHCPSOLICIT(br0) 00:01:00:01:32:9a:d6:8d:52:54:00:00:aa:01 ',
  'dnsmasq-dhcp[10208]: 14831681 DHCPADVERTISE(br0) fd00:9::3 00:01:00:01:32:9a:d6:8d:52:54:00:00:aa:01 known1',
  'dnsmasq-dhcp[10208]: 14831681 tags: known, dhcpv6, br0',
  'dnsmasq-dhcp[10208]: 9955011 client MAC address: 52:54:00:00:aa:01',
  'dnsmasq-dhcp[10208]: 9955011 DHCPREQUEST(br0) 00:01:00:01:32:9a:d6:8d:52:54:00:00:aa:01 ',
  'dnsmasq-dhcp[10208]: 9955011 DHCPREPLY(br0) fd00:9::3 00:01:00:01:32:9a:d6:8d:52:54:00:00:aa:01 known1',
  'dnsmasq-dhcp[10208]: 9955011 sent size: 14 option:  1 client-id  00:01:00:01:32:9a:d6:8d:52:54:00:00:aa:01',
];

test('DHCPv6 exchange: the MAC line of each xid names the machine; DUIDs are not taken for MACs', () => {
  const p = new DnsmasqLogParser();
  const events = feedAll(p, V6_EXCHANGE);
  const duid = '00:01:00:01:32:9a:d6:8d:52:54:00:00:aa:01';
  assert.deepEqual(events, [
    { mac: '52:54:00:00:aa:01', type: 'dhcp6.solicit', detail: { iface: 'br0', duid } },
    {
      mac: '52:54:00:00:aa:01',
      type: 'dhcp6.advertise',
      detail: { iface: 'br0', duid, ip: 'fd00:9::3', hostname: 'known1' },
    },
    { mac: '52:54:00:00:aa:01', type: 'dhcp6.request', detail: { iface: 'br0', duid } },
    {
      mac: '52:54:00:00:aa:01',
      type: 'dhcp6.reply',
      detail: { iface: 'br0', duid, ip: 'fd00:9::3', hostname: 'known1' },
    },
  ]);
  assert.equal(p.macFor('fd00:9::3'), '52:54:00:00:aa:01');
});

test('DHCPv6 without a MAC line: the MAC from a DUID-LL(T), else no event', () => {
  const p = new DnsmasqLogParser();
  assert.deepEqual(p.feed('dnsmasq-dhcp[1]: 7 DHCPSOLICIT(br0) 00:03:00:01:52:54:00:12:34:56 '), [
    {
      mac: '52:54:00:12:34:56',
      type: 'dhcp6.solicit',
      detail: { iface: 'br0', duid: '00:03:00:01:52:54:00:12:34:56' },
    },
  ]);
  // A DUID-EN (type 2) carries no MAC.
  assert.deepEqual(p.feed('dnsmasq-dhcp[1]: 8 DHCPSOLICIT(br0) 00:02:00:00:ab:11:01:02:03:04:05:06 '), []);
});

test('macFromDuid: LLT and LL of Ethernet only', () => {
  assert.equal(macFromDuid('00:01:00:01:32:9a:d6:8d:52:54:00:00:aa:01'), '52:54:00:00:aa:01');
  assert.equal(macFromDuid('00:03:00:01:52:54:00:00:AA:02'), '52:54:00:00:aa:02');
  assert.equal(macFromDuid('00:03:00:06:52:54:00:00:aa:02'), undefined, 'not Ethernet');
  assert.equal(macFromDuid('00:04:11:22:33:44:55:66:77:88:99:00:11:22:33:44:55:66'), undefined, 'UUID');
  assert.equal(macFromDuid('00:03:00:01:52:54'), undefined, 'truncated');
});

test('a boot file sent as option 67 (UEFI firmware asks for it) is the same bootfile event', () => {
  const p = new DnsmasqLogParser();
  const events = feedAll(p, [
    'dnsmasq-dhcp[17328]: 596609885 vendor class: PXEClient:Arch:00011:UNDI:003000',
    `dnsmasq-dhcp[17328]: 596609885 DHCPOFFER(br0) 10.9.0.175 ${MAC1} `,
    'dnsmasq-dhcp[17328]: 596609885 requested options: 67:bootfile-name',
    'dnsmasq-dhcp[17328]: 596609885 sent size: 15 option: 67 bootfile-name  ipxe-arm64.efi',
    `dnsmasq-dhcp[17328]: 596609885 DHCPACK(br0) 10.9.0.175 ${MAC1} `,
    'dnsmasq-dhcp[17328]: 596609885 sent size: 15 option: 67 bootfile-name  ipxe-arm64.efi',
  ]);
  assert.deepEqual(
    events.map((e) => [e.type, e.detail.file ?? e.detail.bootfile]),
    [
      ['dhcp.offer', undefined],
      ['dhcp.bootfile', 'ipxe-arm64.efi'],
      ['dhcp.ack', 'ipxe-arm64.efi'],
    ],
  );
});

test('the address-to-MAC map is bounded: a client walking the pool cannot grow it without end', () => {
  const p = new DnsmasqLogParser();
  for (let i = 0; i < 10_000; i++) {
    const ip = `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
    p.feed(`dnsmasq-dhcp[1]: ${i} DHCPACK(br0) ${ip} 52:54:00:00:00:01 `);
  }
  assert.equal(p.macFor('10.0.0.0'), undefined, 'the oldest went');
  assert.equal(p.macFor('10.0.39.15'), '52:54:00:00:00:01', 'the newest is kept');
  // A mapping seen again is renewed, not evicted as old.
  const q = new DnsmasqLogParser();
  q.feed('dnsmasq-dhcp[1]: 1 DHCPACK(br0) 10.1.0.1 52:54:00:00:00:02 ');
  for (let i = 0; i < 5000; i++) {
    q.feed(`dnsmasq-dhcp[1]: ${i} DHCPACK(br0) 10.2.${(i >> 8) & 255}.${i & 255} 52:54:00:00:00:03 `);
    if (i % 1000 === 0) q.feed('dnsmasq-dhcp[1]: 1 DHCPACK(br0) 10.1.0.1 52:54:00:00:00:02 ');
  }
  assert.equal(q.macFor('10.1.0.1'), '52:54:00:00:00:02');
});
