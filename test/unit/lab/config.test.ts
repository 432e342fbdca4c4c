import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { PvmlabError, UsageError } from '../../../src/core/errors.js';
import {
  defaultLabConfig,
  labConfigForSubnet,
  labConfigPath,
  loadLabConfig,
  parseSubnet6,
  repairLabConfig,
  resolveLabConfig,
  saveLabConfig,
  type LabConfig,
} from '../../../src/lab/config.js';

async function tempApp(t: { after: (fn: () => Promise<void>) => void }): Promise<string> {
  const dir = await fs.mkdtemp(join(tmpdir(), 'pvmlab-config-'));
  t.after(() => fs.rm(dir, { recursive: true, force: true }));
  return join(dir, '.pvmlab');
}

/** Asserts a PvmlabError with exit code 1 (not a usage error) whose message matches. */
async function rejectsFailure(p: Promise<unknown>, message: string | RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof PvmlabError, `expected a PvmlabError, got ${String(err)}`);
    assert.ok(!(err instanceof UsageError), `expected exit code 1, got a UsageError: ${err.message}`);
    assert.equal(err.exitCode, 1);
    if (typeof message === 'string') assert.equal(err.message, message);
    else assert.match(err.message, message);
    return true;
  });
}

function throwsFailure(fn: () => unknown, message: string | RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof PvmlabError, `expected a PvmlabError, got ${String(err)}`);
    assert.equal(err.exitCode, 1);
    if (typeof message === 'string') assert.equal(err.message, message);
    else assert.match(err.message, message);
    return true;
  });
}

const linux = defaultLabConfig('linux');

describe('defaultLabConfig', () => {
  it('uses a bridge on Linux', () => {
    assert.deepEqual(defaultLabConfig('linux'), {
      subnet: '192.168.100.0/24',
      provisioner_ip: '192.168.100.1',
      host_ip: '192.168.100.254',
      dhcp_range_start: '192.168.100.100',
      dhcp_range_end: '192.168.100.200',
      bridge: 'pvmlab0',
      network: 'bridge',
    });
  });

  it('uses socket_vmnet on macOS, with the same addresses', () => {
    assert.deepEqual(defaultLabConfig('darwin'), { ...defaultLabConfig('linux'), network: 'socket_vmnet' });
  });

  it('is self-consistent', () => {
    const r = resolveLabConfig(defaultLabConfig('linux'));
    assert.equal(r.subnet.cidr, '192.168.100.0/24');
    assert.equal(r.subnet6, undefined);
  });
});

describe('labConfigForSubnet', () => {
  it('lays out a /24', () => {
    assert.deepEqual(labConfigForSubnet('10.20.30.0/24', linux), {
      ...linux,
      subnet: '10.20.30.0/24',
      provisioner_ip: '10.20.30.1',
      host_ip: '10.20.30.254',
      dhcp_range_start: '10.20.30.100',
      dhcp_range_end: '10.20.30.200',
    });
  });

  it('lays out a /16', () => {
    assert.deepEqual(labConfigForSubnet('172.16.0.0/16', linux), {
      ...linux,
      subnet: '172.16.0.0/16',
      provisioner_ip: '172.16.0.1',
      host_ip: '172.16.255.254',
      dhcp_range_start: '172.16.100.0',
      dhcp_range_end: '172.16.200.0',
    });
  });

  it('lays out a /28, the smallest allowed', () => {
    assert.deepEqual(labConfigForSubnet('10.0.0.16/28', linux), {
      ...linux,
      subnet: '10.0.0.16/28',
      provisioner_ip: '10.0.0.17',
      host_ip: '10.0.0.30',
      dhcp_range_start: '10.0.0.22',
      dhcp_range_end: '10.0.0.28',
    });
  });

  it('normalises a host address to the network', () => {
    assert.equal(labConfigForSubnet('10.20.30.77/24', linux).subnet, '10.20.30.0/24');
  });

  it('keeps the other settings of the base', () => {
    const base: LabConfig = { ...defaultLabConfig('darwin'), bridge: 'lab2', subnetv6: 'fd00::/64' };
    const c = labConfigForSubnet('10.0.0.0/24', base);
    assert.equal(c.bridge, 'lab2');
    assert.equal(c.network, 'socket_vmnet');
    assert.equal(c.subnetv6, 'fd00::/64');
  });

  it('produces configs resolveLabConfig accepts', () => {
    for (const cidr of ['10.0.0.0/8', '172.16.0.0/16', '192.168.5.0/24', '192.168.5.128/25', '10.0.0.0/28'])
      resolveLabConfig(labConfigForSubnet(cidr, linux));
  });

  it('refuses a /29 or smaller as a usage error', () => {
    for (const cidr of ['10.0.0.0/29', '10.0.0.0/30', '10.0.0.1/32']) {
      assert.throws(
        () => labConfigForSubnet(cidr, linux),
        (err: unknown) =>
          err instanceof UsageError &&
          err.exitCode === 2 &&
          err.message === `--subnet '${cidr}' is too small: use a /28 or larger`,
      );
    }
  });

  it('refuses a malformed subnet or one without a prefix', () => {
    assert.throws(() => labConfigForSubnet('10.0.0.0', linux), UsageError);
    assert.throws(() => labConfigForSubnet('fd00::/64', linux), UsageError);
  });
});

describe('resolveLabConfig', () => {
  it('parses the IPv6 subnet when set', () => {
    const r = resolveLabConfig({ ...linux, subnetv6: 'FD00:CAFE:BABE::1/64' });
    assert.equal(r.subnet6?.cidr, 'fd00:cafe:babe::/64');
  });

  it('derives the IPv6 side from the host numbers of the IPv4 addresses', () => {
    const r = resolveLabConfig({ ...labConfigForSubnet('10.20.0.0/16', linux), subnetv6: 'fd00:77::/64' });
    assert.deepEqual(r.v6, {
      subnet: r.subnet6,
      provisioner: 'fd00:77::1',
      host: 'fd00:77::fffe',
      rangeStart: 'fd00:77::1:0',
      rangeEnd: 'fd00:77::1:ffff',
    });
    assert.equal(resolveLabConfig(linux).v6, undefined);
  });

  it('wants a /64 IPv6 subnet', () => {
    assert.throws(
      () => resolveLabConfig({ ...linux, subnetv6: 'fd00:cafe::/48' }),
      (e: Error) => e instanceof UsageError && /subnetv6 'fd00:cafe::\/48' must be a \/64/.test(e.message),
    );
    assert.equal(parseSubnet6('fd00:1::5/64', '--subnet6').cidr, 'fd00:1::/64');
  });

  it('refuses each address outside the subnet', () => {
    const cases: [keyof LabConfig, string][] = [
      ['provisioner_ip', '192.168.101.1'],
      ['host_ip', '10.0.0.254'],
      ['dhcp_range_start', '192.168.99.100'],
      ['dhcp_range_end', '192.168.101.200'],
    ];
    for (const [key, value] of cases) {
      throwsFailure(
        () => resolveLabConfig({ ...linux, [key]: value }),
        `lab.yaml: ${key} ${value} is outside the subnet 192.168.100.0/24`,
      );
    }
  });

  it('refuses a reversed DHCP pool', () => {
    throwsFailure(
      () =>
        resolveLabConfig({
          ...linux,
          dhcp_range_start: '192.168.100.200',
          dhcp_range_end: '192.168.100.100',
        }),
      'lab.yaml: dhcp_range_start is after dhcp_range_end',
    );
    // A pool of one address is fine.
    resolveLabConfig({ ...linux, dhcp_range_start: '192.168.100.150', dhcp_range_end: '192.168.100.150' });
  });

  it('refuses an address with a prefix', () => {
    throwsFailure(
      () => resolveLabConfig({ ...linux, provisioner_ip: '192.168.100.1/24' }),
      'lab.yaml: provisioner_ip 192.168.100.1/24 must be a plain address, without a /prefix',
    );
    throwsFailure(
      () => resolveLabConfig({ ...linux, dhcp_range_end: '192.168.100.200/24' }),
      /^lab\.yaml: dhcp_range_end 192\.168\.100\.200\/24 must be a plain address/,
    );
  });
});

describe('saveLabConfig / loadLabConfig', () => {
  it('returns the platform default when there is no file', async (t) => {
    const app = await tempApp(t);
    assert.deepEqual(await loadLabConfig(app), defaultLabConfig());
    await assert.rejects(fs.stat(labConfigPath(app)), { code: 'ENOENT' });
  });

  it('round-trips a config through lab.yaml', async (t) => {
    const app = await tempApp(t);
    const config: LabConfig = {
      ...labConfigForSubnet('10.77.0.0/24', defaultLabConfig('darwin')),
      subnetv6: 'fd00:77::/64',
      bridge: 'lab77',
    };
    await saveLabConfig(app, config);
    assert.equal(labConfigPath(app), join(app, 'lab.yaml'));
    const text = await fs.readFile(labConfigPath(app), 'utf8');
    assert.match(text, /^# pvmlab lab settings\./);
    assert.match(text, /^subnet: 10\.77\.0\.0\/24$/m);
    assert.deepEqual(await loadLabConfig(app), config);
    // No temp files are left next to it.
    assert.deepEqual(await fs.readdir(app), ['lab.yaml']);
  });

  it('refuses to save an inconsistent config and writes nothing', async (t) => {
    const app = await tempApp(t);
    await assert.rejects(saveLabConfig(app, { ...linux, host_ip: '10.0.0.1' }), PvmlabError);
    await assert.rejects(fs.stat(labConfigPath(app)), { code: 'ENOENT' });
  });

  it('fills settings missing from the file with the defaults', async (t) => {
    const app = await tempApp(t);
    await fs.mkdir(app, { recursive: true });
    await fs.writeFile(labConfigPath(app), 'bridge: other0\n');
    assert.deepEqual(await loadLabConfig(app), { ...defaultLabConfig(), bridge: 'other0' });
    await fs.writeFile(labConfigPath(app), '# only a comment\n');
    assert.deepEqual(await loadLabConfig(app), defaultLabConfig());
  });

  it('reports invalid YAML naming the file', async (t) => {
    const app = await tempApp(t);
    const path = labConfigPath(app);
    await fs.mkdir(app, { recursive: true });
    await fs.writeFile(path, 'subnet: [192.168.100.0/24\nbridge: x\n');
    await rejectsFailure(loadLabConfig(app), new RegExp(`^${reEscape(path)} is not valid YAML: `));
  });

  it('reports a file that is not a mapping naming the file', async (t) => {
    const app = await tempApp(t);
    const path = labConfigPath(app);
    await fs.mkdir(app, { recursive: true });
    for (const text of ['just a string\n', '- subnet: 10.0.0.0/24\n', '42\n']) {
      await fs.writeFile(path, text);
      await rejectsFailure(
        loadLabConfig(app),
        `${path}: expected a mapping of settings (key: value); fix ${path} by hand, or run 'pvmlab setup' (with --subnet/--bridge as needed) to rewrite it`,
      );
    }
  });

  it('reports invalid fields naming the file and the field', async (t) => {
    const app = await tempApp(t);
    const path = labConfigPath(app);
    await fs.mkdir(app, { recursive: true });

    await fs.writeFile(path, 'bridge: this-name-is-far-too-long\n');
    await rejectsFailure(
      loadLabConfig(app),
      `${path}: bridge: bridge must be a Linux interface name (1-15 characters); fix ${path} by hand, or run 'pvmlab setup' (with --subnet/--bridge as needed) to rewrite it`,
    );

    await fs.writeFile(path, 'network: vde\n');
    await rejectsFailure(loadLabConfig(app), new RegExp(`^${reEscape(path)}: network: `));

    await fs.writeFile(path, 'subnet: 24\n');
    await rejectsFailure(loadLabConfig(app), new RegExp(`^${reEscape(path)}: subnet: `));
  });

  it('reports bad addresses naming the file, as a failure rather than a usage error', async (t) => {
    const app = await tempApp(t);
    const path = labConfigPath(app);
    await fs.mkdir(app, { recursive: true });

    await fs.writeFile(path, 'host_ip: 10.0.0.254\n');
    await rejectsFailure(
      loadLabConfig(app),
      `${path}: host_ip 10.0.0.254 is outside the subnet 192.168.100.0/24; fix ${path} by hand, or run 'pvmlab setup' (with --subnet/--bridge as needed) to rewrite it`,
    );

    await fs.writeFile(path, 'provisioner_ip: banana\n');
    await rejectsFailure(
      loadLabConfig(app),
      new RegExp(`^${reEscape(path)}: invalid provisioner_ip 'banana': `),
    );

    await fs.writeFile(path, 'subnet: 192.168.100.0\n');
    await rejectsFailure(
      loadLabConfig(app),
      new RegExp(`^${reEscape(path)}: invalid subnet '192\\.168\\.100\\.0'`),
    );

    await fs.writeFile(path, 'dhcp_range_start: 192.168.100.201\n');
    await rejectsFailure(
      loadLabConfig(app),
      `${path}: dhcp_range_start is after dhcp_range_end; fix ${path} by hand, or run 'pvmlab setup' (with --subnet/--bridge as needed) to rewrite it`,
    );

    await fs.writeFile(path, 'subnetv6: not-an-address\n');
    await rejectsFailure(loadLabConfig(app), new RegExp(`^${reEscape(path)}: invalid subnetv6 `));
  });
});

function reEscape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

describe('lab.yaml written by the rules it is read by (issue 8, item 3)', () => {
  it('refuses to save a bridge or subnet that loading would refuse, writing nothing', async (t) => {
    const app = await tempApp(t);
    for (const bad of [
      { ...defaultLabConfig('linux'), bridge: 'a b' },
      { ...defaultLabConfig('linux'), bridge: 'b'.repeat(16) },
      { ...defaultLabConfig('linux'), bridge: 'br;x' },
      { ...defaultLabConfig('linux'), network: 'vde' as LabConfig['network'] },
    ])
      await assert.rejects(saveLabConfig(app, bad), PvmlabError, JSON.stringify(bad));
    await assert.rejects(fs.stat(labConfigPath(app)), { code: 'ENOENT' });
  });

  it('refuses subnets no lab can live in', () => {
    for (const c of ['0.0.0.0/0', '224.0.0.0/24', '127.0.0.0/24', '255.255.255.0/24', ''])
      assert.throws(() => labConfigForSubnet(c, defaultLabConfig('linux')), UsageError, c);
    for (const c of ['fe80::/64', 'ff00::/64', '::/64', ''])
      assert.throws(() => parseSubnet6(c, '--subnet6'), UsageError, c);
  });

  it('names the file and what to do when lab.yaml is a directory', async (t) => {
    const app = await tempApp(t);
    await fs.mkdir(labConfigPath(app), { recursive: true });
    await rejectsFailure(loadLabConfig(app), /^cannot read .*lab\.yaml: it is a directory, .*pvmlab setup/);
  });

  it('repairLabConfig keeps the good settings and drops the bad ones', async (t) => {
    const app = await tempApp(t);
    await fs.mkdir(app, { recursive: true });
    await fs.writeFile(labConfigPath(app), 'bridge: "a b"\nnetwork: socket_vmnet\n');
    const r = await repairLabConfig(app);
    assert.deepEqual(r.config, { ...defaultLabConfig('linux'), network: 'socket_vmnet' });
    assert.equal(r.dropped.length, 1);
    assert.match(r.dropped[0] ?? '', /^bridge "a b": /);
    assert.equal(r.original, 'bridge: "a b"\nnetwork: socket_vmnet\n');

    await fs.writeFile(
      labConfigPath(app),
      'subnet: 10.9.0.0/24\nprovisioner_ip: 10.9.0.1\nhost_ip: 10.9.0.254\ndhcp_range_start: 10.9.0.100\ndhcp_range_end: 10.9.0.200\nsubnetv6: fe80::/64\n',
    );
    const six = await repairLabConfig(app);
    assert.equal(six.config.subnet, '10.9.0.0/24');
    assert.equal(six.config.subnetv6, undefined);

    await fs.writeFile(labConfigPath(app), '[not: a mapping');
    assert.deepEqual((await repairLabConfig(app)).config, defaultLabConfig());
  });
});
