import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PvmlabError, UsageError } from '../../../src/core/errors.js';
import { assignAddresses, assignMac, checkNameFree, labSubnet } from '../../../src/lab/allocate.js';
import {
  defaultLabConfig,
  labConfigForSubnet,
  resolveLabConfig,
  type LabConfig,
} from '../../../src/lab/config.js';
import type { VmDefinition } from '../../../src/core/vmdef.js';

const lab = resolveLabConfig(defaultLabConfig('linux'));

it('uses the lab defaults the cases below assume', () => {
  const c: LabConfig = lab.config;
  assert.deepEqual(
    [c.subnet, c.provisioner_ip, c.host_ip, c.dhcp_range_start, c.dhcp_range_end],
    ['192.168.100.0/24', '192.168.100.1', '192.168.100.254', '192.168.100.100', '192.168.100.200'],
  );
});

function target(name: string, ip?: string, extra: Partial<VmDefinition> = {}): VmDefinition {
  return {
    name,
    role: 'target',
    arch: 'x86_64',
    ...(ip ? { ip, subnet: '192.168.100.0/24' } : {}),
    ...extra,
  };
}

const provisioner: VmDefinition = {
  name: 'provisioner',
  role: 'provisioner',
  arch: 'x86_64',
  ip: '192.168.100.1',
  subnet: '192.168.100.0/24',
};

function throwsUsage(fn: () => unknown, message: string | RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof UsageError, `expected a UsageError, got ${String(err)}`);
    assert.equal(err.exitCode, 2);
    if (typeof message === 'string') assert.equal(err.message, message);
    else assert.match(err.message, message);
    return true;
  });
}

/** Bytes for randomMac, one Uint8Array per call, in order. */
function randomSequence(...seq: number[][]): (n: number) => Uint8Array {
  let i = 0;
  return (n) => {
    assert.equal(n, 6);
    const next = seq[i++];
    assert.ok(next, 'random source exhausted');
    return new Uint8Array(next);
  };
}

describe('assignAddresses: allocation', () => {
  it('gives the first free address after the provisioner', () => {
    assert.deepEqual(assignAddresses(lab, [], {}), { ip: '192.168.100.2', subnet: '192.168.100.0/24' });
    assert.deepEqual(assignAddresses(lab, [provisioner], {}), {
      ip: '192.168.100.2',
      subnet: '192.168.100.0/24',
    });
  });

  it('skips used addresses and fills gaps', () => {
    const vms = [
      provisioner,
      target('a', '192.168.100.2'),
      target('b', '192.168.100.3'),
      target('c', '192.168.100.5'),
    ];
    assert.equal(assignAddresses(lab, vms, {}).ip, '192.168.100.4');
    assert.equal(assignAddresses(lab, [...vms, target('d', '192.168.100.4')], {}).ip, '192.168.100.6');
  });

  it('skips the DHCP pool (.100-.200) and the host (.254), then runs out', () => {
    const vms: VmDefinition[] = [provisioner];
    for (let n = 2; n <= 99; n++) vms.push(target(`t${n}`, `192.168.100.${n}`));
    assert.equal(assignAddresses(lab, vms, {}).ip, '192.168.100.201');
    for (let n = 201; n <= 253; n++) vms.push(target(`t${n}`, `192.168.100.${n}`));
    assert.throws(
      () => assignAddresses(lab, vms, {}),
      (err: unknown) =>
        err instanceof PvmlabError &&
        !(err instanceof UsageError) &&
        err.exitCode === 1 &&
        err.message === 'no free address left in the lab subnet 192.168.100.0/24',
    );
  });

  it('never hands out the network, provisioner, host, broadcast or a pool address', () => {
    const vms: VmDefinition[] = [provisioner];
    const seen = new Set<string>();
    for (;;) {
      let ip: string;
      try {
        ip = assignAddresses(lab, vms, {}).ip;
      } catch (err) {
        assert.ok(err instanceof PvmlabError);
        break;
      }
      assert.ok(!seen.has(ip), `${ip} handed out twice`);
      seen.add(ip);
      vms.push(target(`t${seen.size}`, ip));
    }
    const last = (ip: string) => Number(ip.split('.')[3]);
    const octets = [...seen].map(last);
    assert.equal(seen.size, 98 + 53); // .2-.99 and .201-.253
    for (const o of octets) {
      assert.ok(o >= 2 && o <= 253, `${o}`);
      assert.ok(o < 100 || o > 200, `${o} is in the DHCP pool`);
    }
  });

  it("uses the provisioner's subnet over lab.yaml's", () => {
    const prov: VmDefinition = { ...provisioner, ip: '10.9.8.1', subnet: '10.9.8.0/24' };
    assert.deepEqual(labSubnet(lab, [prov]).cidr, '10.9.8.0/24');
    assert.deepEqual(assignAddresses(lab, [prov], {}), { ip: '10.9.8.2', subnet: '10.9.8.0/24' });
    throwsUsage(
      () => assignAddresses(lab, [prov], { ip: '192.168.100.50' }),
      '--ip 192.168.100.50 is outside the lab subnet 10.9.8.0/24',
    );
    throwsUsage(
      () => assignAddresses(lab, [prov], { ip: '10.9.8.1' }),
      "--ip 10.9.8.1 is the provisioner's address",
    );
    assert.equal(assignAddresses(lab, [prov], { ip: '10.9.8.50/24' }).ip, '10.9.8.50');
  });

  it("falls back to lab.yaml's subnet when the provisioner has none", () => {
    const prov: VmDefinition = { name: 'provisioner', role: 'provisioner', arch: 'aarch64' };
    assert.equal(labSubnet(lab, [prov]).cidr, '192.168.100.0/24');
  });

  it('runs out of a /28 with a PvmlabError (exit 1)', () => {
    const small = resolveLabConfig(labConfigForSubnet('10.0.0.0/28', defaultLabConfig('linux')));
    // .0 network, .1 provisioner, .6-.12 pool, .14 host, .15 broadcast: .2-.5 and .13 are free.
    const vms: VmDefinition[] = [];
    const got: string[] = [];
    for (let i = 0; i < 5; i++) {
      const a = assignAddresses(small, vms, {});
      assert.equal(a.subnet, '10.0.0.0/28');
      got.push(a.ip);
      vms.push(target(`t${i}`, a.ip));
    }
    assert.deepEqual(got, ['10.0.0.2', '10.0.0.3', '10.0.0.4', '10.0.0.5', '10.0.0.13']);
    assert.throws(
      () => assignAddresses(small, vms, {}),
      (err: unknown) =>
        err instanceof PvmlabError &&
        !(err instanceof UsageError) &&
        err.exitCode === 1 &&
        err.message === 'no free address left in the lab subnet 10.0.0.0/28',
    );
  });
});

describe('assignAddresses: explicit --ip', () => {
  it('accepts a free address with or without the lab prefix', () => {
    assert.deepEqual(assignAddresses(lab, [provisioner], { ip: '192.168.100.50' }), {
      ip: '192.168.100.50',
      subnet: '192.168.100.0/24',
    });
    assert.deepEqual(assignAddresses(lab, [provisioner], { ip: '192.168.100.50/24' }), {
      ip: '192.168.100.50',
      subnet: '192.168.100.0/24',
    });
    assert.equal(assignAddresses(lab, [provisioner], { ip: '192.168.100.99' }).ip, '192.168.100.99');
    assert.equal(assignAddresses(lab, [provisioner], { ip: '192.168.100.201' }).ip, '192.168.100.201');
    assert.equal(assignAddresses(lab, [provisioner], { ip: '192.168.100.253' }).ip, '192.168.100.253');
  });

  it('refuses an address outside the subnet', () => {
    throwsUsage(
      () => assignAddresses(lab, [provisioner], { ip: '10.0.0.5' }),
      '--ip 10.0.0.5 is outside the lab subnet 192.168.100.0/24',
    );
    throwsUsage(
      () => assignAddresses(lab, [provisioner], { ip: '192.168.101.5/24' }),
      '--ip 192.168.101.5/24 is outside the lab subnet 192.168.100.0/24',
    );
  });

  it('refuses a prefix other than the lab subnet', () => {
    throwsUsage(
      () => assignAddresses(lab, [provisioner], { ip: '192.168.100.7/16' }),
      '--ip 192.168.100.7/16 is outside the lab subnet 192.168.100.0/24',
    );
    throwsUsage(
      () => assignAddresses(lab, [provisioner], { ip: '192.168.100.7/25' }),
      '--ip 192.168.100.7/25 is outside the lab subnet 192.168.100.0/24',
    );
  });

  it('refuses reserved addresses, saying why', () => {
    const cases: [string, string][] = [
      ['192.168.100.0', 'the network address'],
      ['192.168.100.255', 'the broadcast address'],
      ['192.168.100.1', "the provisioner's address"],
      ['192.168.100.254', "the host's address on the lab bridge"],
      ['192.168.100.100', 'inside the DHCP pool for unknown clients (192.168.100.100-192.168.100.200)'],
      ['192.168.100.150', 'inside the DHCP pool for unknown clients (192.168.100.100-192.168.100.200)'],
      ['192.168.100.200', 'inside the DHCP pool for unknown clients (192.168.100.100-192.168.100.200)'],
    ];
    for (const [ip, why] of cases) {
      throwsUsage(() => assignAddresses(lab, [provisioner], { ip }), `--ip ${ip} is ${why}`);
      throwsUsage(() => assignAddresses(lab, [provisioner], { ip: `${ip}/24` }), `--ip ${ip} is ${why}`);
    }
    // Reserved even when no provisioner is defined yet.
    throwsUsage(
      () => assignAddresses(lab, [], { ip: '192.168.100.1' }),
      "--ip 192.168.100.1 is the provisioner's address",
    );
  });

  it("reserves a provisioner's actual address, not just lab.yaml's", () => {
    const prov: VmDefinition = { ...provisioner, ip: '192.168.100.3' };
    throwsUsage(
      () => assignAddresses(lab, [prov], { ip: '192.168.100.3' }),
      "--ip 192.168.100.3 is the provisioner's address",
    );
  });

  it('refuses an address another VM uses, naming it', () => {
    const vms = [provisioner, target('web', '192.168.100.20')];
    throwsUsage(
      () => assignAddresses(lab, vms, { ip: '192.168.100.20' }),
      "IP address 192.168.100.20 is already used by VM 'web'",
    );
    throwsUsage(
      () => assignAddresses(lab, vms, { ip: '192.168.100.20/24' }),
      "IP address 192.168.100.20 is already used by VM 'web'",
    );
  });

  it('refuses a malformed --ip', () => {
    throwsUsage(() => assignAddresses(lab, [], { ip: 'nope' }), /^invalid --ip 'nope': not an IPv4 address/);
    throwsUsage(() => assignAddresses(lab, [], { ip: 'fd00::1' }), /^invalid --ip 'fd00::1'/);
  });
});

describe('assignAddresses: IPv6', () => {
  const lab6 = resolveLabConfig({ ...defaultLabConfig('linux'), subnetv6: 'fd00:cafe:babe::/64' });

  it('takes an address inside the lab IPv6 subnet, with or without the prefix', () => {
    assert.deepEqual(assignAddresses(lab6, [provisioner], { ipv6: 'fd00:cafe:babe::10' }), {
      ip: '192.168.100.2',
      subnet: '192.168.100.0/24',
      ipv6: 'fd00:cafe:babe::10',
      subnetv6: 'fd00:cafe:babe::/64',
    });
    const r = assignAddresses(lab6, [provisioner], { ipv6: 'FD00:CAFE:BABE:0::10/64' });
    assert.equal(r.ipv6, 'fd00:cafe:babe::10');
    assert.equal(r.subnetv6, 'fd00:cafe:babe::/64');
  });

  it('refuses an address outside the lab IPv6 subnet', () => {
    throwsUsage(
      () => assignAddresses(lab6, [provisioner], { ipv6: 'fd00:cafe:beef::10' }),
      '--ipv6 fd00:cafe:beef::10 is outside the lab IPv6 subnet fd00:cafe:babe::/64',
    );
  });

  it('refuses a prefix other than the lab IPv6 subnet', () => {
    throwsUsage(
      () => assignAddresses(lab6, [provisioner], { ipv6: 'fd00:cafe:babe::10/48' }),
      '--ipv6 fd00:cafe:babe::10/48 is outside the lab IPv6 subnet fd00:cafe:babe::/64',
    );
  });

  it("uses the provisioner's IPv6 subnet over lab.yaml's", () => {
    const prov: VmDefinition = { ...provisioner, ipv6: 'fd11::1', subnetv6: 'fd11::/64' };
    assert.equal(assignAddresses(lab6, [prov], { ipv6: 'fd11::20' }).subnetv6, 'fd11::/64');
    throwsUsage(
      () => assignAddresses(lab6, [prov], { ipv6: 'fd00:cafe:babe::10' }),
      '--ipv6 fd00:cafe:babe::10 is outside the lab IPv6 subnet fd11::/64',
    );
  });

  it('without a lab IPv6 subnet, needs a prefix and derives the subnet from it', () => {
    throwsUsage(
      () => assignAddresses(lab, [provisioner], { ipv6: 'fd00::10' }),
      '--ipv6 fd00::10 needs a prefix length: the lab has no IPv6 subnet configured',
    );
    const r = assignAddresses(lab, [provisioner], { ipv6: 'fd00:1:2:3::10/64' });
    assert.equal(r.ipv6, 'fd00:1:2:3::10');
    assert.equal(r.subnetv6, 'fd00:1:2:3::/64');
  });

  it('refuses an IPv6 address another VM uses, in any notation', () => {
    const vms = [provisioner, target('six', '192.168.100.2', { ipv6: 'fd00:cafe:babe::10' })];
    throwsUsage(
      () => assignAddresses(lab6, vms, { ipv6: 'fd00:cafe:babe:0:0:0:0:10' }),
      "IPv6 address fd00:cafe:babe::10 is already used by VM 'six'",
    );
  });

  it('gives every target an IPv6 address in an IPv6 lab: the IPv4 host number when free', () => {
    assert.deepEqual(assignAddresses(lab6, [provisioner], {}), {
      ip: '192.168.100.2',
      subnet: '192.168.100.0/24',
      ipv6: 'fd00:cafe:babe::2',
      subnetv6: 'fd00:cafe:babe::/64',
    });
    assert.equal(assignAddresses(lab6, [provisioner], { ip: '192.168.100.77' }).ipv6, 'fd00:cafe:babe::4d');
    // ::2 taken by a VM created with --ipv6: the lowest free address instead.
    const vms = [provisioner, target('six', '192.168.100.9', { ipv6: 'fd00:cafe:babe::2' })];
    assert.equal(assignAddresses(lab6, vms, {}).ipv6, 'fd00:cafe:babe::3');
  });

  it('refuses the provisioner, host, anycast and DHCPv6 pool addresses', () => {
    const cases: [string, RegExp][] = [
      ['fd00:cafe:babe::', /subnet-router anycast/],
      ['fd00:cafe:babe::1', /provisioner's IPv6 address/],
      ['fd00:cafe:babe::fe', /host's IPv6 address/],
      [
        'fd00:cafe:babe::1:0',
        /DHCPv6 pool for unknown clients \(fd00:cafe:babe::1:0-fd00:cafe:babe::1:ffff\)/,
      ],
      ['fd00:cafe:babe::1:ffff', /DHCPv6 pool/],
    ];
    for (const [ipv6, re] of cases) throwsUsage(() => assignAddresses(lab6, [provisioner], { ipv6 }), re);
    assert.equal(
      assignAddresses(lab6, [provisioner], { ipv6: 'fd00:cafe:babe::2:0' }).ipv6,
      'fd00:cafe:babe::2:0',
    );
  });

  it('leaves IPv6 out when the lab has no IPv6 subnet, or the provisioner brings its own', () => {
    const r = assignAddresses(lab, [provisioner], {});
    assert.equal('ipv6' in r, false);
    assert.equal('subnetv6' in r, false);
    const prov: VmDefinition = { ...provisioner, ipv6: 'fd11::1', subnetv6: 'fd11::/64' };
    assert.equal('ipv6' in assignAddresses(lab6, [prov], {}), false);
  });
});

describe('assignMac', () => {
  const vms = [target('a', '192.168.100.2', { mac: '52:54:00:AA:BB:CC' }), target('b', '192.168.100.3')];

  it('accepts a free requested MAC', () => {
    assert.equal(assignMac(vms, '52:54:00:aa:bb:cd', randomSequence()), '52:54:00:aa:bb:cd');
  });

  it('refuses a requested MAC another VM uses (stored in any case)', () => {
    throwsUsage(
      () => assignMac(vms, '52:54:00:aa:bb:cc', randomSequence()),
      "MAC address 52:54:00:aa:bb:cc is already used by VM 'a'",
    );
  });

  it('makes a random locally administered unicast MAC', () => {
    const mac = assignMac([], undefined, randomSequence([0x53, 1, 2, 3, 4, 5]));
    assert.equal(mac, '52:01:02:03:04:05');
  });

  it('draws again when the random MAC is taken', () => {
    const taken = [
      target('x', '192.168.100.2', { mac: '02:00:00:00:00:01' }),
      target('y', '192.168.100.3', { mac: '02:00:00:00:00:02' }),
    ];
    const mac = assignMac(
      taken,
      undefined,
      randomSequence([0, 0, 0, 0, 0, 1], [0x03, 0, 0, 0, 0, 2], [0, 0, 0, 0, 0, 3]),
    );
    assert.equal(mac, '02:00:00:00:00:03');
  });

  it('draws again when the random MAC is taken in a different case', () => {
    const taken = [target('x', '192.168.100.2', { mac: '02:00:00:00:00:AB' })];
    assert.equal(
      assignMac(taken, undefined, randomSequence([2, 0, 0, 0, 0, 0xab], [2, 0, 0, 0, 0, 0xac])),
      '02:00:00:00:00:ac',
    );
  });
});

describe('checkNameFree', () => {
  it('passes for a new name and refuses an existing one', () => {
    const vms = [provisioner, target('web', '192.168.100.2')];
    checkNameFree(vms, 'db');
    checkNameFree([], 'web');
    throwsUsage(
      () => checkNameFree(vms, 'web'),
      "a VM named 'web' already exists; to reuse the name, remove it first: pvmlab vm clean web",
    );
    throwsUsage(() => checkNameFree(vms, 'provisioner'), /^a VM named 'provisioner' already exists/);
  });

  it('refuses a name that only has files left (an unreadable definition, an orphan disk)', () => {
    throwsUsage(
      () => checkNameFree([], 'web', ['/lab/vms/web.json', '/lab/vms/web.qcow2']),
      "a VM named 'web' already exists (/lab/vms/web.json, /lab/vms/web.qcow2); to reuse the name, remove it first: pvmlab vm clean web",
    );
  });
});

const lab6 = resolveLabConfig({ ...defaultLabConfig('linux'), subnetv6: 'fd00:cafe:babe::/64' });

describe('unreadable definitions keep what they claim (issue 8, item 2)', () => {
  const others = [{ name: 'm1', ip: '192.168.100.2', mac: '52:54:00:00:00:01', ipv6: 'fd00:cafe:babe::2' }];
  it('their IP is not handed out again, nor taken by --ip', () => {
    assert.equal(assignAddresses(lab, [provisioner], {}, others).ip, '192.168.100.3');
    throwsUsage(
      () => assignAddresses(lab, [provisioner], { ip: '192.168.100.2' }, others),
      "IP address 192.168.100.2 is already used by VM 'm1'",
    );
  });
  it('nor their MAC or IPv6 address', () => {
    throwsUsage(
      () => assignMac([...others], '52:54:00:00:00:01', () => new Uint8Array(6)),
      /already used by VM 'm1'/,
    );
    throwsUsage(
      () => assignAddresses(lab6, [provisioner], { ipv6: 'fd00:cafe:babe::2' }, others),
      /already used by VM 'm1'/,
    );
  });
});

describe('--ipv6 must be a host address (issue 8)', () => {
  it('in a lab without an IPv6 subnet: a unicast /64 host address', () => {
    for (const [ipv6, re] of [
      ['::/0', /prefix must be \/64/],
      ['::1/128', /prefix must be \/64/],
      ['ff02::1/64', /multicast/],
      ['fd00::/64', /subnet-router anycast address of fd00::\/64/],
      ['fe80::1/64', /link-local/],
    ] as const)
      throwsUsage(() => assignAddresses(lab, [provisioner], { ipv6 }), re);
  });
  it("in an IPv6 lab: not the subnet's own address", () => {
    throwsUsage(
      () => assignAddresses(lab6, [provisioner], { ipv6: 'fd00:cafe:babe::' }),
      /subnet-router anycast/,
    );
  });
  it('an empty --ip or --ipv6 is refused', () => {
    throwsUsage(() => assignAddresses(lab, [provisioner], { ip: '' }), /invalid --ip ''/);
    throwsUsage(() => assignAddresses(lab, [provisioner], { ipv6: '' }), /invalid --ipv6 ''/);
  });
});
