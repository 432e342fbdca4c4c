import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parse } from 'yaml';
import {
  natScript,
  provisionerSeedFiles,
  stackBootScript,
  uplinkMac,
  type ProvisionerSeedInput,
} from '../../../src/cloudinit/provisioner.js';
import { defaultLabConfig, resolveLabConfig } from '../../../src/lab/config.js';
import { UsageError } from '../../../src/core/errors.js';
import { provisionerAddresses } from '../../../src/provisioner/create.js';
import {
  kernelCmdline,
  provisionerMmdebstrapArgv,
  provisionerRecipe,
  recipeKey,
} from '../../../src/provisioner/image.js';
import { provisionerBoot, strayAddressArgv, uplinkNetworks } from '../../../src/provisioner/start.js';
import type { VmDefinition } from '../../../src/core/vmdef.js';

const lab = resolveLabConfig(defaultLabConfig());

test('provisionerAddresses: the lab subnet, not the host, network, broadcast, pool or another VM', () => {
  assert.deepEqual(provisionerAddresses(lab, [], '192.168.100.1/24'), {
    ip: '192.168.100.1',
    subnet: '192.168.100.0/24',
    prefix: 24,
  });
  assert.equal(provisionerAddresses(lab, [], '192.168.100.2').ip, '192.168.100.2');
  const bad: [string, RegExp][] = [
    ['', /must be specified/],
    ['10.0.0.1/24', /outside the lab subnet/],
    ['192.168.100.1/16', /outside the lab subnet/],
    ['192.168.100.0', /network address/],
    ['192.168.100.255', /broadcast/],
    ['192.168.100.254', /host's address/],
    ['192.168.100.150', /DHCP pool/],
    ['192.168.100.7', /already used by VM 't1'/],
    ['fd00::1', /IPv4/],
  ];
  for (const [ip, re] of bad)
    assert.throws(
      () => provisionerAddresses(lab, [{ name: 't1', ip: '192.168.100.7' }], ip),
      (e: Error) => {
        assert.ok(e instanceof UsageError, `${ip}: ${e.message}`);
        assert.match(e.message, re);
        return true;
      },
    );
  const v6 = provisionerAddresses(lab, [], '192.168.100.1/24', 'fd00:cafe:babe::1/64');
  assert.deepEqual([v6.ipv6, v6.subnetv6, v6.prefix6], ['fd00:cafe:babe::1', 'fd00:cafe:babe::/64', 64]);
  assert.throws(() => provisionerAddresses(lab, [], '192.168.100.1', 'fd00::1'), /needs a prefix/);
  assert.throws(() => provisionerAddresses(lab, [], '192.168.100.1', ''), /invalid --ipv6/);
});

const seed: ProvisionerSeedInput = {
  name: 'prov',
  labMac: '52:54:00:aa:bb:cc',
  uplinkMac: uplinkMac('52:54:00:aa:bb:cc'),
  ip: '192.168.100.1',
  prefix: 24,
  subnet: '192.168.100.0/24',
  ipv6: 'fd00:cafe:babe::1',
  prefix6: 64,
  subnet6: 'fd00:cafe:babe::/64',
  dhcpRangeStart: '192.168.100.100',
  dhcpRangeEnd: '192.168.100.200',
  sshPublicKey: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample pvmlab',
  stackTar: 'pxeboot_stack.tar',
  bootRunOptions: ['--network', 'host', '-e', 'PROVISIONER_IP=192.168.100.1/24'],
};

test('the uplink MAC differs from the lab MAC in the last bit only', () => {
  assert.equal(uplinkMac('52:54:00:aa:bb:cc'), '52:54:00:aa:bb:cd');
  assert.equal(uplinkMac('52:54:00:aa:bb:ff'), '52:54:00:aa:bb:fe');
});

test('provisioner seed: hostname, NICs matched by MAC, 9p mounts, units, the lab user in the docker group', () => {
  const files = Object.fromEntries(provisionerSeedFiles(seed).map((f) => [f.name, f.content]));
  const meta = parse(files['meta-data'] as string) as Record<string, unknown>;
  assert.equal(meta['local-hostname'], 'prov');
  assert.equal(meta.pxe_boot_stack_tar, 'pxeboot_stack.tar');
  assert.equal(meta.provisioner_ip, '192.168.100.1');
  const user = files['user-data'] as string;
  assert.ok(user.startsWith('#cloud-config\n'));
  const ud = parse(user) as {
    users: { name: string; groups: string[]; ssh_authorized_keys: string[] }[];
    mounts: string[][];
    write_files: { path: string; content: string }[];
    runcmd: string[][];
    ssh_pwauth: boolean;
  };
  assert.equal(ud.ssh_pwauth, false);
  assert.deepEqual(ud.users[0]?.groups, ['docker']);
  assert.deepEqual(ud.users[0]?.ssh_authorized_keys, [seed.sshPublicKey]);
  assert.deepEqual(
    ud.mounts.map((m) => [m[0], m[1], m[2]]),
    [
      ['host_share_vms', '/mnt/host/vms', '9p'],
      ['host_share_images', '/mnt/host/images', '9p'],
      ['host_share_docker_images', '/mnt/host/docker_images', '9p'],
    ],
  );
  assert.match(ud.mounts[1]?.[3] ?? '', /,ro$/);
  for (const m of ud.mounts) assert.match(m[3] ?? '', /nofail/);
  const paths = ud.write_files.map((f) => f.path);
  for (const p of [
    '/etc/sysctl.d/90-pvmlab.conf',
    '/usr/local/sbin/pvmlab-nat',
    '/etc/systemd/system/pvmlab-nat.service',
    '/usr/local/sbin/pxeboot-stack-boot',
    '/etc/systemd/system/pxeboot-stack.service',
  ])
    assert.ok(paths.includes(p), p);
  assert.match(ud.write_files[0]?.content ?? '', /net\.ipv4\.ip_forward=1/);
  assert.ok(ud.runcmd.some((c) => c.includes('pxeboot-stack.service')));
  const net = parse(files['network-config'] as string) as {
    ethernets: Record<string, { match: { macaddress: string }; dhcp4: boolean; addresses?: string[] }>;
  };
  assert.deepEqual(net.ethernets.uplink?.match.macaddress, '52:54:00:aa:bb:cd');
  assert.equal(net.ethernets.uplink?.dhcp4, true);
  assert.deepEqual(net.ethernets.lab?.addresses, ['192.168.100.1/24', 'fd00:cafe:babe::1/64']);
  assert.equal(files['vendor-data'], '');
});

test('NAT script: masquerade the lab out, accept its forwarding in DOCKER-USER, idempotent (-C before -A/-I)', () => {
  const s = natScript(seed);
  assert.match(
    s,
    /iptables -t nat -C POSTROUTING -s 192\.168\.100\.0\/24 ! -d 192\.168\.100\.0\/24 -j MASQUERADE/,
  );
  assert.match(s, /ip6tables -C DOCKER-USER -s fd00:cafe:babe::\/64 -j ACCEPT/);
  for (const line of s.split('\n').filter((l) => / -[AI] /.test(l))) assert.match(line, / -C .*\|\| /);
  assert.doesNotMatch(natScript({ subnet: '10.1.0.0/16' }), /ip6tables/);
});

test('boot script: leaves an existing container to docker, loads and runs the tar otherwise, quoted', () => {
  const s = stackBootScript({ stackTar: "it's.tar", bootRunOptions: ['--network', 'host', '-e', 'A=b c'] });
  assert.match(s, /docker container inspect pxeboot_stack/);
  assert.match(s, /tar='\/mnt\/host\/docker_images\/it'\\''s\.tar'/);
  assert.match(s, /docker run -d --name pxeboot_stack --network host -e 'A=b c' "\$image"/);
  assert.match(stackBootScript({ stackTar: '', bootRunOptions: [] }), /^tar=''$/m);
});

test('provisionerBoot: kernel files inside images/ only, shares from the definition, uplink MAC', () => {
  const vm: VmDefinition = {
    name: 'prov',
    role: 'provisioner',
    arch: 'x86_64',
    mac: '52:54:00:aa:bb:cc',
    kernel: 'provisioner/x86_64-k/vmlinuz',
    initrd: 'provisioner/x86_64-k/initrd.img',
    docker_images_path: '/srv/dockerimgs',
  };
  const b = provisionerBoot('/lab', vm, 2222);
  assert.equal(b.kernel?.kernel, '/lab/images/provisioner/x86_64-k/vmlinuz');
  assert.equal(b.kernel?.append, kernelCmdline('x86_64'));
  assert.deepEqual(b.uplink, {
    mac: '52:54:00:aa:bb:cd',
    sshPort: 2222,
    net: '10.0.2.0/24',
    ipv6Net: 'fec0::/64',
  });
  assert.deepEqual(
    b.shares.map((s) => [s.tag, s.path]),
    [
      ['host_share_vms', '/lab/vms'],
      ['host_share_images', '/lab/images'],
      ['host_share_docker_images', '/srv/dockerimgs'],
    ],
  );
  assert.throws(() => provisionerBoot('/lab', { ...vm, kernel: '../../etc/passwd' }, 1), /outside/);
  assert.equal(provisionerBoot('/lab', { ...vm, kernel: undefined }, 1).kernel, undefined);
});

test("uplinkNetworks: QEMU's user-mode networks unless the lab is numbered in them", () => {
  const nets = (vm: Parameters<typeof uplinkNetworks>[0]) => uplinkNetworks(vm);
  assert.deepEqual(nets({ ip: '192.168.100.1', subnet: '192.168.100.0/24' }), {
    net: '10.0.2.0/24',
    ipv6Net: 'fec0::/64',
  });
  assert.equal(nets({ ip: '10.0.2.2', subnet: '10.0.2.0/24' }).net, '10.0.3.0/24');
  assert.equal(nets({ ip: '10.0.2.2', subnet: '10.0.0.0/16' }).net, '172.31.254.0/24');
  assert.equal(nets({ ip: '10.1.0.1', subnet: '10.0.0.0/8' }).net, '172.31.254.0/24');
  assert.equal(nets({ ip: '10.0.2.9' }).net, '10.0.3.0/24', 'no subnet saved: the address alone');
  assert.equal(nets({ ip: '10.0.9.9', subnet: '10.0.9.0/24' }).net, '10.0.2.0/24', 'a neighbour is no clash');
  assert.equal(
    nets({ ip: '10.0.9.9', ipv6: 'fec0::5', subnetv6: 'fec0::/48' }).ipv6Net,
    'fd6c:7670:6c61:6275::/64',
  );
  assert.equal(nets({ ip: '10.0.9.9', ipv6: 'fd00::5', subnetv6: 'fd00::/64' }).ipv6Net, 'fec0::/64');
});

test('strayAddressArgv: only the provisioner addresses the host holds on the bridge', () => {
  const held = [
    { family: 'inet', local: '192.168.100.254', prefixlen: 24 },
    { family: 'inet', local: '192.168.100.1', prefixlen: 24 },
    { family: 'inet6', local: 'fd00::1', prefixlen: 64 },
  ];
  assert.deepEqual(strayAddressArgv('pvmlab0', held, { ip: '192.168.100.1', ipv6: 'fd00::1' }), [
    ['addr', 'del', '192.168.100.1/24', 'dev', 'pvmlab0'],
    ['-6', 'addr', 'del', 'fd00::1/64', 'dev', 'pvmlab0'],
  ]);
  assert.deepEqual(strayAddressArgv('pvmlab0', held, { ip: '192.168.100.9' }), []);
});

test('image recipe: docker.io and the generic kernel (9p), a small initramfs set before the kernel installs', () => {
  const r = provisionerRecipe('x86_64', {});
  assert.ok(r.packages.includes('docker.io') && r.packages.includes('linux-image-amd64'));
  assert.ok(provisionerRecipe('aarch64', {}).packages.includes('linux-image-arm64'));
  const argv = provisionerMmdebstrapArgv(r, '/t/root');
  const hook = argv.findIndex((a) => a.includes('initramfs-tools/conf.d'));
  assert.ok(hook > 0 && hook < argv.indexOf('bookworm'));
  assert.equal(argv[argv.indexOf('bookworm') + 1], '/t/root');
  assert.notEqual(recipeKey(r), recipeKey({ ...r, packages: [...r.packages, 'x'] }));
  assert.match(kernelCmdline('aarch64'), /console=ttyAMA0/);
});
