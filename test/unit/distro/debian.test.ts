import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import {
  CLOUD_CFG,
  aptSources,
  basePackages,
  debianArch,
  enableNetworkdArgv,
  genericise,
  mmdebstrapArgv,
} from '../../../src/distro/debian.js';
import { parse } from '../../../src/core/yaml.js';

test('debianArch and basePackages follow the architecture', () => {
  assert.equal(debianArch('x86_64'), 'amd64');
  assert.equal(debianArch('aarch64'), 'arm64');
  const amd = basePackages('x86_64');
  for (const p of [
    'linux-image-cloud-amd64',
    'grub-efi-amd64',
    'cloud-init',
    'openssh-server',
    'systemd-sysv',
  ])
    assert.ok(amd.includes(p), p);
  assert.ok(basePackages('aarch64').includes('linux-image-cloud-arm64'));
  assert.ok(basePackages('aarch64').includes('grub-efi-arm64'));
});

test('aptSources: the suite, its updates and security (only next to the official layout)', () => {
  assert.deepEqual(aptSources({ suite: 'bookworm', mirror: 'http://deb.debian.org/debian' }), [
    'deb http://deb.debian.org/debian bookworm main',
    'deb http://deb.debian.org/debian bookworm-updates main',
    'deb http://deb.debian.org/debian-security bookworm-security main',
  ]);
  assert.deepEqual(aptSources({ suite: 'bookworm', mirror: 'http://mirror.lan/apt' }), [
    'deb http://mirror.lan/apt bookworm main',
    'deb http://mirror.lan/apt bookworm-updates main',
  ]);
});

test('mmdebstrapArgv', () => {
  const argv = mmdebstrapArgv(
    { suite: 'bookworm', arch: 'aarch64', packages: ['a', 'b'], mirror: 'http://deb.debian.org/debian' },
    '/w/root',
  );
  assert.deepEqual(argv.slice(0, 3), ['--variant=minbase', '--arch=arm64', '--include=a,b']);
  assert.ok(argv.includes('--dpkgopt=path-exclude=/usr/share/doc/*'));
  assert.ok(argv.includes('--dpkgopt=path-exclude=/usr/share/man/*'));
  assert.ok(
    argv.includes(
      '--essential-hook=echo "grub-efi-arm64 grub2/force_efi_extra_removable boolean true" | chroot "$1" debconf-set-selections',
    ),
  );
  const i = argv.indexOf('bookworm');
  assert.deepEqual(argv.slice(i), [
    'bookworm',
    '/w/root',
    'deb http://deb.debian.org/debian bookworm main',
    'deb http://deb.debian.org/debian bookworm-updates main',
    'deb http://deb.debian.org/debian-security bookworm-security main',
  ]);
  assert.deepEqual(enableNetworkdArgv('/w/root'), ['--root=/w/root', 'enable', 'systemd-networkd.service']);
});

test('CLOUD_CFG is YAML cloud-init reads: NoCloud, a locale the image has, networkd', () => {
  assert.deepEqual(parse(CLOUD_CFG), {
    datasource_list: ['NoCloud', 'None'],
    locale: 'C.UTF-8',
    system_info: { network: { renderers: ['networkd'] } },
  });
});

test('genericise removes what ties a root to one machine', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'pvmlab-root-'));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  mkdirSync(join(root, 'etc/ssh'), { recursive: true });
  mkdirSync(join(root, 'var/lib/dbus'), { recursive: true });
  for (const f of ['ssh_host_ed25519_key', 'ssh_host_ed25519_key.pub', 'ssh_host_rsa_key', 'sshd_config'])
    writeFileSync(join(root, 'etc/ssh', f), 'x');
  writeFileSync(join(root, 'etc/machine-id'), '0123456789abcdef0123456789abcdef\n');
  writeFileSync(join(root, 'var/lib/dbus/machine-id'), '0123456789abcdef0123456789abcdef\n');
  await genericise(root);
  assert.ok(existsSync(join(root, 'etc/ssh/sshd_config')), 'the configuration stays');
  assert.ok(!existsSync(join(root, 'etc/ssh/ssh_host_ed25519_key')));
  assert.ok(!existsSync(join(root, 'etc/ssh/ssh_host_rsa_key')));
  assert.equal(readFileSync(join(root, 'etc/machine-id'), 'utf8'), '', 'systemd makes one at first boot');
  assert.ok(!existsSync(join(root, 'var/lib/dbus/machine-id')));
  assert.equal(readFileSync(join(root, 'etc/cloud/cloud.cfg.d/90-pvmlab.cfg'), 'utf8'), CLOUD_CFG);
});
