import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parse } from 'yaml';
import {
  metaData,
  networkConfig,
  targetSeedFiles,
  userData,
  type TargetSeedInput,
} from '../../../src/cloudinit/nocloud.js';

const input: TargetSeedInput = {
  name: 'web1',
  mac: '52:54:00:12:34:56',
  ip: '192.168.100.10',
  prefix: 24,
  gateway: '192.168.100.1',
  sshPublicKey: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample pvmlab\n',
};

test('meta-data names the instance after the VM', () => {
  assert.deepEqual(parse(metaData(input)), { 'instance-id': 'iid-pvmlab-web1', 'local-hostname': 'web1' });
});

test('user-data: #cloud-config, key-only login for the lab user, no password SSH', () => {
  const text = userData(input);
  assert.ok(text.startsWith('#cloud-config\n'));
  assert.deepEqual(parse(text), {
    hostname: 'web1',
    fqdn: 'web1.pvmlab.local',
    manage_etc_hosts: true,
    ssh_pwauth: false,
    users: [
      {
        name: 'ubuntu',
        sudo: 'ALL=(ALL) NOPASSWD:ALL',
        shell: '/bin/bash',
        lock_passwd: true,
        ssh_authorized_keys: ['ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample pvmlab'],
      },
    ],
  });
});

test('network-config v2: static address on the NIC with our MAC, provisioner as gateway and DNS', () => {
  assert.deepEqual(parse(networkConfig(input)), {
    version: 2,
    ethernets: {
      lab0: {
        match: { macaddress: '52:54:00:12:34:56' },
        dhcp4: false,
        addresses: ['192.168.100.10/24'],
        // cloud-init 22.x (Debian 12) rejects `to: default`.
        routes: [{ to: '0.0.0.0/0', via: '192.168.100.1' }],
        nameservers: { addresses: ['192.168.100.1'], search: ['pvmlab.local'] },
      },
    },
  });
  const v6 = parse(networkConfig({ ...input, ipv6: 'fd00::10', prefix6: 64 })) as {
    ethernets: { lab0: { addresses: string[] } };
  };
  assert.deepEqual(v6.ethernets.lab0.addresses, ['192.168.100.10/24', 'fd00::10/64']);
});

test('the seed has the four NoCloud files, vendor-data empty', () => {
  const files = targetSeedFiles(input);
  assert.deepEqual(
    files.map((f) => f.name),
    ['meta-data', 'user-data', 'network-config', 'vendor-data'],
  );
  assert.equal(files[3]?.content, '');
});
