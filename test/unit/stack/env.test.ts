import assert from 'node:assert/strict';
import { test } from 'node:test';
import { UsageError } from '../../../src/core/errors.js';
import { defaultRange4, parseStackEnv, type Interfaces } from '../../../src/stack/env.js';

/** The provisioner's interfaces as os.networkInterfaces() reports them. */
const IFACES: Interfaces = {
  lo: [
    { address: '127.0.0.1', family: 'IPv4', netmask: '255.0.0.0' },
    { address: '::1', family: 'IPv6', netmask: 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff' },
  ],
  enp0s1: [{ address: '10.0.2.15', family: 'IPv4', netmask: '255.255.255.0' }],
  enp0s2: [
    { address: '192.168.100.1', family: 'IPv4', netmask: '255.255.255.0' },
    { address: 'fd00:cafe:babe::1', family: 'IPv6', netmask: 'ffff:ffff:ffff:ffff::' },
    { address: 'fe80::5054:ff:fe12:3456', family: 'IPv6', netmask: 'ffff:ffff:ffff:ffff::' },
  ],
};

const parse = (env: Record<string, string>, ifaces: Interfaces = IFACES) => parseStackEnv(env, ifaces);

/** The one-line message of the UsageError `env` gives. */
function refused(env: Record<string, string>, ifaces: Interfaces = IFACES): string {
  try {
    parse(env, ifaces);
  } catch (err) {
    assert.ok(err instanceof UsageError, String(err));
    assert.equal(err.exitCode, 2);
    assert.ok(!err.message.includes('\n'), 'one line');
    return err.message;
  }
  assert.fail(`accepted ${JSON.stringify(env)}`);
}

test('PROVISIONER_IP alone: the interface holding it, the original pool, HTTP on 80, DNS on', () => {
  assert.deepEqual(parse({ PROVISIONER_IP: '192.168.100.1' }), {
    iface: 'enp0s2',
    address: '192.168.100.1',
    prefix: 24,
    rangeStart: '192.168.100.100',
    rangeEnd: '192.168.100.200',
    httpPort: 80,
    dns: true,
  });
  // With its /prefix (the same as the interface's), and surrounding blanks ignored.
  assert.equal(parse({ PROVISIONER_IP: ' 192.168.100.1/24 ' }).prefix, 24);
  // Old Node reported the family as a number.
  const numeric: Interfaces = { eth0: [{ address: '10.1.2.3', family: 4, netmask: '255.255.0.0' }] };
  assert.deepEqual(
    { ...parse({ PROVISIONER_IP: '10.1.2.3' }, numeric) },
    {
      iface: 'eth0',
      address: '10.1.2.3',
      prefix: 16,
      rangeStart: '10.1.2.100',
      rangeEnd: '10.1.2.200',
      httpPort: 80,
      dns: true,
    },
  );
});

test('PROVISIONER_IP: missing, malformed, not a host, not here', () => {
  assert.match(refused({}), /^PROVISIONER_IP is not set: .*e\.g\. -e PROVISIONER_IP=192\.168\.100\.1\/24$/);
  assert.match(refused({ PROVISIONER_IP: '' }), /^PROVISIONER_IP is not set/);
  for (const bad of [
    '192.168.100',
    '192.168.100.256',
    'fd00::1',
    '192.168.100.1/33',
    '192.168.100.1/7',
    '1.2.3.4/24/1',
    '192.168.100.1/x',
    '0300.0.0.1',
  ])
    assert.match(
      refused({ PROVISIONER_IP: bad }),
      /^PROVISIONER_IP=".*" is invalid: an IPv4 host address with an optional \/prefix/,
      bad,
    );
  assert.match(
    refused({ PROVISIONER_IP: '127.0.0.1' }),
    /127\.0\.0\.1 is loopback address space, not a host address/,
  );
  assert.match(refused({ PROVISIONER_IP: '224.0.0.1' }), /multicast address space/);
  assert.match(
    refused(
      { PROVISIONER_IP: '192.168.100.0' },
      { eth0: [{ address: '192.168.100.0', family: 'IPv4', netmask: '255.255.255.0' }] },
    ),
    /192\.168\.100\.0 is the network address of 192\.168\.100\.0\/24, not a host address/,
  );
  assert.match(
    refused(
      { PROVISIONER_IP: '192.168.100.255' },
      { eth0: [{ address: '192.168.100.255', family: 'IPv4', netmask: '255.255.255.0' }] },
    ),
    /is the broadcast address of 192\.168\.100\.0\/24/,
  );
  assert.match(
    refused({ PROVISIONER_IP: '192.168.7.1' }),
    /^PROVISIONER_IP 192\.168\.7\.1 is not on any interface here \(interfaces: lo \(127\.0\.0\.1, ::1\), enp0s1 \(10\.0\.2\.15\), enp0s2 \(192\.168\.100\.1, .*\)\): run the container with --network host/,
  );
  assert.match(refused({ PROVISIONER_IP: '192.168.7.1' }, {}), /interfaces: none/);
  // A prefix other than the interface's: dnsmasq would hand out the wrong netmask.
  assert.match(
    refused({ PROVISIONER_IP: '192.168.100.1/16' }),
    /^PROVISIONER_IP="192\.168\.100\.1\/16" is invalid: enp0s2 has 192\.168\.100\.1\/24: give that prefix, or none/,
  );
});

test('DHCP_RANGE_START/END: defaults inside the prefix; checked against the subnet and each other', () => {
  assert.deepEqual(defaultRange4({ address: '10.9.8.7', prefix: 16, first: 0, last: 0 }), {
    start: '10.9.8.100',
    end: '10.9.8.200',
  });
  // A subnet smaller than a /24: the same share of it, never its network or broadcast address.
  const small: Interfaces = { br0: [{ address: '10.0.0.129', family: 'IPv4', netmask: '255.255.255.192' }] };
  const s = parse({ PROVISIONER_IP: '10.0.0.129' }, small);
  assert.deepEqual([s.prefix, s.rangeStart, s.rangeEnd], [26, '10.0.0.153', '10.0.0.178']);
  const tiny: Interfaces = { br0: [{ address: '10.0.0.1', family: 'IPv4', netmask: '255.255.255.252' }] };
  assert.match(
    refused({ PROVISIONER_IP: '10.0.0.1' }, tiny),
    /holds PROVISIONER_IP 10\.0\.0\.1: the pool must leave it out/,
  );

  const r = parse({
    PROVISIONER_IP: '192.168.100.1',
    DHCP_RANGE_START: '192.168.100.10',
    DHCP_RANGE_END: '192.168.100.20',
  });
  assert.deepEqual([r.rangeStart, r.rangeEnd], ['192.168.100.10', '192.168.100.20']);
  // One end given: the other keeps its default.
  assert.equal(
    parse({ PROVISIONER_IP: '192.168.100.1', DHCP_RANGE_END: '192.168.100.150' }).rangeStart,
    '192.168.100.100',
  );

  const base = { PROVISIONER_IP: '192.168.100.1' };
  for (const [name, value] of [
    ['DHCP_RANGE_START', '192.168.101.10'],
    ['DHCP_RANGE_END', '10.0.0.1'],
    ['DHCP_RANGE_START', '192.168.100.0'],
    ['DHCP_RANGE_END', '192.168.100.255'],
    ['DHCP_RANGE_START', 'nope'],
    ['DHCP_RANGE_END', '192.168.100.20/24'],
  ] as const)
    assert.match(
      refused({ ...base, [name]: value }),
      new RegExp(
        `^${name}="${value.replaceAll('.', '\\.').replace('/', '\\/')}" is invalid: an IPv4 address in 192\\.168\\.100\\.0/24 \\(PROVISIONER_IP's subnet\\)`,
      ),
    );
  assert.match(
    refused({ ...base, DHCP_RANGE_START: '192.168.100.200', DHCP_RANGE_END: '192.168.100.100' }),
    /^DHCP_RANGE_START 192\.168\.100\.200 is after DHCP_RANGE_END 192\.168\.100\.100: the pool is start-end$/,
  );
  assert.match(
    refused({ ...base, DHCP_RANGE_START: '192.168.100.1', DHCP_RANGE_END: '192.168.100.9' }),
    /^DHCP_RANGE_START-DHCP_RANGE_END \(192\.168\.100\.1-192\.168\.100\.9\) holds PROVISIONER_IP 192\.168\.100\.1/,
  );
});

test('PROVISIONER_IPV6 and its pool: a lab-style /64, host parts accepted, on the interface', () => {
  const base = { PROVISIONER_IP: '192.168.100.1' };
  assert.deepEqual(parse({ ...base, PROVISIONER_IPV6: 'fd00:cafe:babe::1/64' }).ipv6, {
    address: 'fd00:cafe:babe::1',
    prefix: 64,
    rangeStart: 'fd00:cafe:babe::1:0',
    rangeEnd: 'fd00:cafe:babe::1:ffff',
  });
  // Without /64; the pool as full addresses or (as the original's provisioner passed) host parts.
  assert.deepEqual(
    parse({
      ...base,
      PROVISIONER_IPV6: 'fd00:cafe:babe::1',
      DHCP_RANGE_V6_START: '::64',
      DHCP_RANGE_V6_END: 'fd00:cafe:babe::c8',
    }).ipv6,
    {
      address: 'fd00:cafe:babe::1',
      prefix: 64,
      rangeStart: 'fd00:cafe:babe::64',
      rangeEnd: 'fd00:cafe:babe::c8',
    },
  );
  assert.equal(parse(base).ipv6, undefined);

  for (const bad of [
    'fd00:cafe:babe::1/48',
    'fd00:cafe:babe::1/64/1',
    'nope',
    'fe80::1%eth0',
    '192.168.100.1',
  ])
    assert.match(
      refused({ ...base, PROVISIONER_IPV6: bad }),
      /^PROVISIONER_IPV6=".*" is invalid: .*a \/64/,
      bad,
    );
  assert.match(refused({ ...base, PROVISIONER_IPV6: 'fe80::1/64' }), /fe80::1 is linkLocal address space/);
  assert.match(
    refused({ ...base, PROVISIONER_IPV6: 'fd00:cafe:babe::/64' }),
    /subnet-router anycast address/,
  );
  assert.match(
    refused({ ...base, PROVISIONER_IPV6: 'fd00:1::1/64' }),
    /^PROVISIONER_IPV6 fd00:1::1 is not on enp0s2 \(interfaces: .*\): add it to the interface first$/,
  );
  const v6 = { ...base, PROVISIONER_IPV6: 'fd00:cafe:babe::1/64' };
  for (const [name, value] of [
    ['DHCP_RANGE_V6_START', 'fd00:1::5'],
    ['DHCP_RANGE_V6_END', 'x'],
    ['DHCP_RANGE_V6_START', '::'],
  ] as const)
    assert.match(
      refused({ ...v6, [name]: value }),
      new RegExp(`^${name}=".*" is invalid: an IPv6 address in fd00:cafe:babe::/64`),
    );
  assert.match(
    refused({ ...v6, DHCP_RANGE_V6_START: '::2:0', DHCP_RANGE_V6_END: '::1:0' }),
    /^DHCP_RANGE_V6_START fd00:cafe:babe::2:0 is after DHCP_RANGE_V6_END fd00:cafe:babe::1:0/,
  );
  assert.match(
    refused({ ...v6, DHCP_RANGE_V6_START: '::1', DHCP_RANGE_V6_END: '::ff' }),
    /^DHCP_RANGE_V6_START-DHCP_RANGE_V6_END \(fd00:cafe:babe::1-fd00:cafe:babe::ff\) holds PROVISIONER_IPV6 fd00:cafe:babe::1/,
  );
  assert.match(
    refused({ ...base, DHCP_RANGE_V6_START: '::64' }),
    /^DHCP_RANGE_V6_START is set but PROVISIONER_IPV6 is not: set both, or neither$/,
  );
  assert.match(
    refused({ ...base, DHCP_RANGE_V6_END: '::c8' }),
    /^DHCP_RANGE_V6_END is set but PROVISIONER_IPV6 is not/,
  );
});

test('PVMLAB_INTERFACE, HTTP_PORT, PVMLAB_DNS', () => {
  const base = { PROVISIONER_IP: '192.168.100.1' };
  assert.equal(parse({ ...base, PVMLAB_INTERFACE: 'enp0s2' }).iface, 'enp0s2');
  assert.match(
    refused({ ...base, PVMLAB_INTERFACE: 'enp0s1' }),
    /^PVMLAB_INTERFACE="enp0s1" does not hold PROVISIONER_IP 192\.168\.100\.1 \(interfaces: /,
  );
  assert.match(
    refused({ ...base, PVMLAB_INTERFACE: 'eth9' }),
    /^PVMLAB_INTERFACE="eth9": no such interface with an address here .*--network host$/,
  );
  for (const bad of ['a/b', 'a b', 'averyveryverylongname', '..'])
    assert.match(
      refused({ ...base, PVMLAB_INTERFACE: bad }),
      /^PVMLAB_INTERFACE=".*" is invalid: an interface name/,
      bad,
    );

  assert.equal(parse({ ...base, HTTP_PORT: '8080' }).httpPort, 8080);
  for (const bad of ['0', '65536', '80a', '-1', '1e3'])
    assert.match(
      refused({ ...base, HTTP_PORT: bad }),
      /^HTTP_PORT=".*" is invalid: a TCP port number, 1-65535$/,
      bad,
    );

  assert.equal(parse({ ...base, PVMLAB_DNS: 'off' }).dns, false);
  assert.equal(parse({ ...base, PVMLAB_DNS: 'on' }).dns, true);
  assert.match(
    refused({ ...base, PVMLAB_DNS: 'no' }),
    /^PVMLAB_DNS="no" is invalid: 'on' \(the default: DNS for pvmlab\.local\) or 'off'$/,
  );
  // A value error is reported before a missing address: the typo is what to fix first.
  assert.match(refused({ PROVISIONER_IP: '192.168.7.1', HTTP_PORT: '0' }), /^HTTP_PORT=/);
});
