import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PvmlabError, UsageError } from '../../../src/core/errors.js';
import {
  MAX_NAME_LENGTH,
  inSubnet,
  intToIpv4,
  ipv4ToInt,
  normalizeMac,
  parseAddress,
  parsePositiveInt,
  parseSize,
  parseSubnet,
  checkDiskSize,
  checkHostAddress,
  checkLabSubnet,
  randomMac,
  sameAddress,
  validateArch,
  validateName,
} from '../../../src/lab/validate.js';

/** Asserts `fn` throws a UsageError (exit code 2) whose message is exactly `message` (or matches it). */
function throwsUsage(fn: () => unknown, message: string | RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof UsageError, `expected a UsageError, got ${String(err)}`);
    assert.equal(err.exitCode, 2);
    if (typeof message === 'string') assert.equal(err.message, message);
    else assert.match(err.message, message);
    return true;
  });
}

describe('validateName', () => {
  it('accepts DNS labels and returns them unchanged', () => {
    for (const n of ['a', 'vm1', 'web-01', '0', 'a-b-c', '9lives']) assert.equal(validateName(n), n);
  });

  it('refuses an empty name', () => {
    throwsUsage(() => validateName(''), 'VM name must not be empty');
  });

  it('accepts 63 characters and refuses 64', () => {
    assert.equal(MAX_NAME_LENGTH, 63);
    const ok = 'a'.repeat(63);
    assert.equal(validateName(ok), ok);
    const long = 'a'.repeat(64);
    throwsUsage(() => validateName(long), `VM name '${long}' is too long (64 characters, at most 63)`);
  });

  it('refuses uppercase, underscores, dots and leading/trailing hyphens', () => {
    for (const n of ['VM1', 'Web', 'my_vm', 'a.b', '-vm', 'vm-', '-', 'a b', 'vm1:']) {
      throwsUsage(
        () => validateName(n),
        `VM name '${n}' is not a valid hostname: use lowercase letters, digits and '-', not starting or ending with '-'`,
      );
    }
  });
});

describe('validateArch', () => {
  it('accepts the two architectures', () => {
    assert.equal(validateArch('x86_64'), 'x86_64');
    assert.equal(validateArch('aarch64'), 'aarch64');
  });

  it('refuses anything else, naming the value', () => {
    throwsUsage(() => validateArch('arm64'), "--arch must be either 'aarch64' or 'x86_64' (got 'arm64')");
    throwsUsage(() => validateArch('X86_64'), /got 'X86_64'/);
  });
});

describe('normalizeMac', () => {
  it('lowercases and uses colons', () => {
    assert.equal(normalizeMac('52:54:00:12:34:56'), '52:54:00:12:34:56');
    assert.equal(normalizeMac('52:54:00:AB:cd:EF'), '52:54:00:ab:cd:ef');
    assert.equal(normalizeMac('52-54-00-AB-CD-EF'), '52:54:00:ab:cd:ef');
    assert.equal(normalizeMac('  02:00:00:00:00:01 '), '02:00:00:00:00:01');
  });

  it('refuses malformed addresses and mixed separators', () => {
    for (const m of [
      '',
      '52:54:00:12:34',
      '52:54:00:12:34:56:78',
      '52:54:00-12:34:56',
      '5254.0012.3456',
      '525400123456',
      '52:54:00:12:34:5g',
      '52:54:0:12:34:56',
    ]) {
      throwsUsage(
        () => normalizeMac(m),
        `invalid MAC address '${m}': expected six hex pairs like 52:54:00:12:34:56`,
      );
    }
  });

  it('refuses multicast (including broadcast) addresses', () => {
    throwsUsage(
      () => normalizeMac('01:00:5e:00:00:01'),
      "invalid MAC address '01:00:5e:00:00:01': it is a multicast address",
    );
    throwsUsage(
      () => normalizeMac('FF-FF-FF-FF-FF-FF'),
      "invalid MAC address 'FF-FF-FF-FF-FF-FF': it is a multicast address",
    );
    throwsUsage(() => normalizeMac('53:54:00:12:34:56'), /multicast/);
  });

  it('refuses the all-zero address', () => {
    throwsUsage(
      () => normalizeMac('00:00:00:00:00:00'),
      "invalid MAC address '00:00:00:00:00:00': all zeros",
    );
    throwsUsage(() => normalizeMac('00-00-00-00-00-00'), /all zeros/);
  });
});

describe('randomMac', () => {
  it('sets the locally administered bit and clears the multicast bit', () => {
    assert.equal(
      randomMac(() => new Uint8Array([0xff, 1, 2, 3, 4, 5])),
      'fe:01:02:03:04:05',
    );
    assert.equal(
      randomMac(() => new Uint8Array([0x00, 0, 0, 0, 0, 0])),
      '02:00:00:00:00:00',
    );
    assert.equal(
      randomMac(() => new Uint8Array([0x53, 0xab, 0xcd, 0xef, 0x10, 0x0f])),
      '52:ab:cd:ef:10:0f',
    );
  });

  it('asks for six bytes', () => {
    const asked: number[] = [];
    randomMac((n) => {
      asked.push(n);
      return new Uint8Array(n);
    });
    assert.deepEqual(asked, [6]);
  });

  it('always yields a locally administered unicast MAC that normalizeMac accepts', () => {
    for (let first = 0; first < 256; first++) {
      const mac = randomMac(() => new Uint8Array([first, 0, 0, 0, 0, 1]));
      const b0 = parseInt(mac.slice(0, 2), 16);
      assert.equal(b0 & 0x01, 0, `${mac} is multicast`);
      assert.equal(b0 & 0x02, 0x02, `${mac} is not locally administered`);
      assert.equal(normalizeMac(mac), mac);
    }
  });
});

describe('parseAddress', () => {
  it('parses IPv4 with and without a prefix', () => {
    assert.deepEqual(parseAddress('192.168.100.10', 'ipv4', '--ip'), { address: '192.168.100.10' });
    assert.deepEqual(parseAddress('192.168.100.10/24', 'ipv4', '--ip'), {
      address: '192.168.100.10',
      prefix: 24,
    });
    assert.deepEqual(parseAddress('10.0.0.1/0', 'ipv4', '--ip'), { address: '10.0.0.1', prefix: 0 });
    assert.deepEqual(parseAddress('10.0.0.1/32', 'ipv4', '--ip'), { address: '10.0.0.1', prefix: 32 });
  });

  it('parses IPv6 with and without a prefix, in canonical compressed form', () => {
    assert.deepEqual(parseAddress('fd00:cafe:babe::10', 'ipv6', '--ipv6'), { address: 'fd00:cafe:babe::10' });
    assert.deepEqual(parseAddress('FD00:CAFE:BABE:0:0:0:0:10/64', 'ipv6', '--ipv6'), {
      address: 'fd00:cafe:babe::10',
      prefix: 64,
    });
    assert.deepEqual(parseAddress('::1/128', 'ipv6', '--ipv6'), { address: '::1', prefix: 128 });
  });

  it('names the flag and gives an example in IPv4 errors', () => {
    throwsUsage(
      () => parseAddress('banana', 'ipv4', '--ip'),
      "invalid --ip 'banana': not an IPv4 address (e.g. 192.168.100.10/24)",
    );
    throwsUsage(
      () => parseAddress('192.168.100.10/33', 'ipv4', '--ip'),
      "invalid --ip '192.168.100.10/33': prefix must be 0-32 (e.g. 192.168.100.10/24)",
    );
    throwsUsage(
      () => parseAddress('1.2.3.4/24/8', 'ipv4', '--ip'),
      "invalid --ip '1.2.3.4/24/8': expected an address with an optional /prefix (e.g. 192.168.100.10/24)",
    );
    for (const bad of ['192.168.100.10/', '192.168.100.10/x', '192.168.100.10/-1', '192.168.100.10/ 24'])
      throwsUsage(() => parseAddress(bad, 'ipv4', '--ip'), /prefix must be 0-32/);
  });

  it('refuses IPv4 forms that are not dotted quads', () => {
    for (const bad of ['10.1', '0x0a.0.0.1', '010.0.0.1', '4294967295']) {
      throwsUsage(() => parseAddress(bad, 'ipv4', '--ip'), new RegExp(`^invalid --ip '${bad}': not`));
    }
    throwsUsage(() => parseAddress('256.0.0.1', 'ipv4', '--ip'), /not an IPv4 address/);
  });

  it('refuses the wrong family', () => {
    throwsUsage(() => parseAddress('fd00::1', 'ipv4', '--ip'), /not an IPv4 address/);
    throwsUsage(
      () => parseAddress('192.168.1.1', 'ipv6', '--ipv6'),
      "invalid --ipv6 '192.168.1.1': not an IPv6 address (e.g. fd00:cafe:babe::10/64)",
    );
  });

  it('names the flag in IPv6 errors', () => {
    throwsUsage(
      () => parseAddress('fd00::1/129', 'ipv6', '--ipv6'),
      "invalid --ipv6 'fd00::1/129': prefix must be 0-128 (e.g. fd00:cafe:babe::10/64)",
    );
    throwsUsage(() => parseAddress('fd00:::1', 'ipv6', '--ipv6'), /not an IPv6 address/);
  });

  it('refuses an IPv6 zone id (it cannot be a static address)', () => {
    throwsUsage(() => parseAddress('fe80::1%eth0', 'ipv6', '--ipv6'), /^invalid --ipv6 'fe80::1%eth0': /);
    throwsUsage(() => parseAddress('fd00::10%eth0/64', 'ipv6', '--ipv6'), /^invalid --ipv6 /);
  });
});

describe('parseSubnet', () => {
  it('normalises to the network address', () => {
    assert.deepEqual(parseSubnet('192.168.100.0/24', 'ipv4', '--subnet'), {
      kind: 'ipv4',
      network: '192.168.100.0',
      prefix: 24,
      cidr: '192.168.100.0/24',
    });
    assert.deepEqual(parseSubnet('10.1.2.3/16', 'ipv4', '--subnet'), {
      kind: 'ipv4',
      network: '10.1.0.0',
      prefix: 16,
      cidr: '10.1.0.0/16',
    });
    assert.deepEqual(parseSubnet('FD00:CAFE:BABE::99/64', 'ipv6', '--subnet6'), {
      kind: 'ipv6',
      network: 'fd00:cafe:babe::',
      prefix: 64,
      cidr: 'fd00:cafe:babe::/64',
    });
  });

  it('requires a prefix length', () => {
    throwsUsage(
      () => parseSubnet('192.168.100.0', 'ipv4', '--subnet'),
      "invalid --subnet '192.168.100.0': a prefix length is required",
    );
  });

  it('passes on address errors with the given name', () => {
    throwsUsage(
      () => parseSubnet('300.0.0.0/24', 'ipv4', '--subnet'),
      /^invalid --subnet '300\.0\.0\.0\/24': /,
    );
  });
});

describe('inSubnet / sameAddress / ipv4 integers', () => {
  const v4 = parseSubnet('192.168.100.0/24', 'ipv4', 's');
  const v6 = parseSubnet('fd00:cafe:babe::/64', 'ipv6', 's');

  it('checks membership', () => {
    assert.equal(inSubnet('192.168.100.0', v4), true);
    assert.equal(inSubnet('192.168.100.77', v4), true);
    assert.equal(inSubnet('192.168.100.255', v4), true);
    assert.equal(inSubnet('192.168.101.1', v4), false);
    assert.equal(inSubnet('192.168.99.255', v4), false);
    assert.equal(inSubnet('fd00:cafe:babe::10', v6), true);
    assert.equal(inSubnet('fd00:cafe:babf::10', v6), false);
  });

  it('is false across families', () => {
    assert.equal(inSubnet('fd00:cafe:babe::10', v4), false);
    assert.equal(inSubnet('192.168.100.10', v6), false);
  });

  it('compares addresses in any notation', () => {
    assert.equal(sameAddress('fd00::1', 'FD00:0:0:0:0:0:0:1'), true);
    assert.equal(sameAddress('10.0.0.1', '10.0.0.1'), true);
    assert.equal(sameAddress('10.0.0.1', '10.0.0.2'), false);
    assert.equal(sameAddress('garbage', '10.0.0.1'), false);
  });

  it('converts IPv4 to and from integers', () => {
    assert.equal(ipv4ToInt('0.0.0.0'), 0);
    assert.equal(ipv4ToInt('192.168.100.1'), 0xc0a86401);
    assert.equal(ipv4ToInt('255.255.255.255'), 0xffffffff);
    assert.equal(intToIpv4(0xc0a86401), '192.168.100.1');
    assert.equal(intToIpv4(0xffffffff), '255.255.255.255');
    assert.equal(intToIpv4(ipv4ToInt('10.20.30.40') + 1), '10.20.30.41');
  });
});

describe('parseSize', () => {
  it('parses plain bytes and binary units in any case', () => {
    const G = 2 ** 30;
    const cases: [string, number][] = [
      ['2048', 2048],
      ['512B', 512],
      ['1K', 1024],
      ['1k', 1024],
      ['512M', 512 * 2 ** 20],
      ['10G', 10 * G],
      ['10g', 10 * G],
      ['10GB', 10 * G],
      ['10GiB', 10 * G],
      ['10gib', 10 * G],
      ['10Gi', 10 * G],
      ['2T', 2 * 2 ** 40],
      ['1 G', G],
      [' 3G ', 3 * G],
    ];
    for (const [text, bytes] of cases) assert.equal(parseSize(text), bytes, text);
  });

  it('refuses malformed sizes, naming the flag', () => {
    for (const bad of ['', 'G', '1.5G', '-1', '10X', '10GG', '10P', 'ten']) {
      throwsUsage(
        () => parseSize(bad),
        `invalid --disk-size '${bad}': expected a size like 10G, 512M or 2048`,
      );
    }
    throwsUsage(() => parseSize('lots', '--memory'), /^invalid --memory 'lots': /);
  });

  it('refuses zero', () => {
    throwsUsage(() => parseSize('0'), "invalid --disk-size '0': must be greater than zero");
    throwsUsage(() => parseSize('0G'), "invalid --disk-size '0G': must be greater than zero");
  });
});

describe('parsePositiveInt', () => {
  it('accepts 1..max', () => {
    assert.equal(parsePositiveInt('1', '--cpus', 64), 1);
    assert.equal(parsePositiveInt('64', '--cpus', 64), 64);
    assert.equal(parsePositiveInt('08', '--cpus', 64), 8);
  });

  it('refuses zero, out of range, signs, fractions and words', () => {
    for (const bad of ['0', '65', '-1', '+2', '1.0', '1e1', '', ' 2', 'two']) {
      throwsUsage(
        () => parsePositiveInt(bad, '--cpus', 64),
        `invalid --cpus '${bad}': expected a whole number from 1 to 64`,
      );
    }
  });

  it('throws PvmlabError subclasses only', () => {
    assert.throws(() => parsePositiveInt('0', '--x', 1), PvmlabError);
  });
});

describe('checkLabSubnet (issue 8: subnets no lab can live in)', () => {
  it('accepts private, global and unique-local space', () => {
    for (const c of ['192.168.100.0/24', '10.0.0.0/8', '172.16.5.0/28', '100.64.0.0/24', '8.8.8.0/24'])
      checkLabSubnet(parseSubnet(c, 'ipv4', '--subnet'), '--subnet');
    for (const c of ['fd00:cafe:babe::/64', '2001:db8:1::/64', '2a00:1:2:3::/64'])
      checkLabSubnet(parseSubnet(c, 'ipv6', '--subnet6'), '--subnet6');
  });

  it('refuses unspecified, multicast, loopback, broadcast, link-local and too-large subnets', () => {
    for (const [c, re] of [
      ['0.0.0.0/0', /too large/],
      ['0.0.0.0/24', /unspecified/],
      ['224.0.0.0/24', /multicast/],
      ['127.0.0.0/24', /loopback/],
      ['255.255.255.0/24', /reserved|broadcast/],
      ['169.254.1.0/24', /link-local/],
      ['223.255.255.0/24', /^$/],
    ] as const) {
      if (re.source === '^$') checkLabSubnet(parseSubnet(c, 'ipv4', '--subnet'), '--subnet');
      else throwsUsage(() => checkLabSubnet(parseSubnet(c, 'ipv4', '--subnet'), '--subnet'), re);
    }
    for (const [c, re] of [
      ['fe80::/64', /link-local/],
      ['ff00::/64', /multicast/],
      ['::/64', /unspecified/],
    ] as const)
      throwsUsage(() => checkLabSubnet(parseSubnet(c, 'ipv6', '--subnet6'), '--subnet6'), re);
  });
});

describe('checkHostAddress', () => {
  const s6 = parseSubnet('fd00::/64', 'ipv6', 's');
  it('refuses the network address and unusable space', () => {
    throwsUsage(
      () => checkHostAddress('fd00::', s6, '--ipv6'),
      /subnet-router anycast address of fd00::\/64/,
    );
    throwsUsage(
      () => checkHostAddress('ff02::1', parseSubnet('ff02::/64', 'ipv6', 's'), '--ipv6'),
      /multicast/,
    );
    checkHostAddress('fd00::10', s6, '--ipv6');
  });
});

describe('parseSize / checkDiskSize (issue 8: absurd sizes)', () => {
  it('refuses sizes that are not exact integers', () => {
    throwsUsage(() => parseSize('99999999999999999999T'), /far too large/);
  });
  it('keeps disks between 1M and 64T', () => {
    assert.equal(checkDiskSize(parseSize('1M')), 2 ** 20);
    assert.equal(checkDiskSize(parseSize('64T')), 64 * 2 ** 40);
    throwsUsage(() => checkDiskSize(parseSize('1')), /use 1M to 64T/);
    throwsUsage(() => checkDiskSize(parseSize('100000T')), /far too large/);
    throwsUsage(() => checkDiskSize(parseSize('65T')), /use 1M to 64T/);
  });
});
