import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import {
  DEPENDENCIES,
  checkDependencies,
  installHint,
  packageHints,
  type DependencyReport,
} from '../../../src/cli/deps.js';

const missing = (name: string, required: boolean, why: string, install: string | null): DependencyReport => ({
  name,
  found: false,
  path: null,
  required,
  why,
  install,
});

const found = (name: string, path: string, required: boolean, why: string): DependencyReport => ({
  name,
  found: true,
  path,
  required,
  why,
  install: null,
});

// The firmware is found by file, not on PATH: on this machine the Debian packages are installed.
const OVMF = found('OVMF (x86_64 UEFI)', '/usr/share/OVMF/OVMF_CODE_4M.fd', true, 'firmware for x86_64 VMs');
const AAVMF = found(
  'AAVMF (aarch64 UEFI)',
  '/usr/share/AAVMF/AAVMF_CODE.fd',
  false,
  'firmware for aarch64 VMs',
);

test('linux with an empty PATH: every PATH tool is missing, with its Debian package', () => {
  assert.deepEqual(checkDependencies('linux', { PATH: '' }), [
    missing('qemu-system-x86_64', true, 'runs x86_64 VMs', 'apt-get install qemu-system-x86'),
    missing('qemu-system-aarch64', false, 'runs aarch64 VMs', 'apt-get install qemu-system-arm'),
    missing('qemu-img', true, 'creates VM disks', 'apt-get install qemu-utils'),
    OVMF,
    AAVMF,
    missing('ssh', true, 'vm shell, vm start --wait', 'apt-get install openssh-client'),
    missing('scp', false, 'vm copy', 'apt-get install openssh-client'),
    missing('ip', true, 'the bridge network (bridge, TAP devices)', 'apt-get install iproute2'),
    missing('tail', false, 'vm logs', 'apt-get install coreutils'),
    // dnsmasq is also looked for in /usr/sbin and /sbin (not on a normal user's PATH); installed here.
    found('dnsmasq', '/usr/sbin/dnsmasq', false, 'pvmlab stack serve (DHCP/DNS/TFTP)'),
    found(
      'iPXE (x86_64 EFI, BIOS)',
      '/usr/lib/ipxe/snponly.efi',
      false,
      'pvmlab stack serve (network boot loaders)',
    ),
    // scripts/install-deps.sh installs it from Debian 13's ipxe package.
    found(
      'iPXE (arm64 EFI)',
      '/usr/local/lib/pvmlab/ipxe/ipxe-arm64.efi',
      false,
      'pvmlab stack serve: network boot of aarch64 VMs',
    ),
  ]);
});

test('darwin with an empty PATH: brew hints, socket_vmnet instead of ip', () => {
  assert.equal(existsSync('/opt/homebrew/opt/socket_vmnet/bin/socket_vmnet'), false);
  assert.deepEqual(checkDependencies('darwin', { PATH: '' }), [
    missing('qemu-system-x86_64', true, 'runs x86_64 VMs', 'brew install qemu'),
    missing('qemu-system-aarch64', false, 'runs aarch64 VMs', 'brew install qemu'),
    missing('qemu-img', true, 'creates VM disks', 'brew install qemu'),
    OVMF,
    AAVMF,
    missing('ssh', true, 'vm shell, vm start --wait', 'brew install openssh'),
    missing('scp', false, 'vm copy', 'brew install openssh'),
    // tail ships with macOS: no brew formula to suggest.
    missing('tail', false, 'vm logs', null),
    missing('socket_vmnet', true, 'the lab network on macOS', 'brew install socket_vmnet'),
  ]);
});

test('an unset PATH is treated as empty', () => {
  const r = checkDependencies('linux', {});
  assert.deepEqual(
    r.filter((d) => d.found).map((d) => d.name),
    ['OVMF (x86_64 UEFI)', 'AAVMF (aarch64 UEFI)', 'dnsmasq', 'iPXE (x86_64 EFI, BIOS)', 'iPXE (arm64 EFI)'],
  );
});

test('required flags', () => {
  assert.deepEqual(Object.fromEntries(DEPENDENCIES.map((d) => [d.name, d.required])), {
    'qemu-system-x86_64': true,
    'qemu-system-aarch64': false,
    'qemu-img': true,
    'OVMF (x86_64 UEFI)': true,
    'AAVMF (aarch64 UEFI)': false,
    ssh: true,
    scp: false,
    ip: true,
    tail: false,
    dnsmasq: false,
    'iPXE (x86_64 EFI, BIOS)': false,
    'iPXE (arm64 EFI)': false,
    socket_vmnet: true,
  });
  assert.deepEqual(Object.fromEntries(DEPENDENCIES.map((d) => [d.name, d.platforms])), {
    'qemu-system-x86_64': ['linux', 'darwin'],
    'qemu-system-aarch64': ['linux', 'darwin'],
    'qemu-img': ['linux', 'darwin'],
    'OVMF (x86_64 UEFI)': ['linux', 'darwin'],
    'AAVMF (aarch64 UEFI)': ['linux', 'darwin'],
    ssh: ['linux', 'darwin'],
    scp: ['linux', 'darwin'],
    ip: ['linux'],
    tail: ['linux', 'darwin'],
    dnsmasq: ['linux'],
    'iPXE (x86_64 EFI, BIOS)': ['linux'],
    'iPXE (arm64 EFI)': ['linux'],
    socket_vmnet: ['darwin'],
  });
});

test('installHint per platform', () => {
  const byName = (n: string) => {
    const d = DEPENDENCIES.find((x) => x.name === n);
    assert.ok(d, n);
    return d;
  };
  assert.equal(installHint(byName('qemu-img'), 'linux'), 'apt-get install qemu-utils');
  assert.equal(installHint(byName('qemu-img'), 'darwin'), 'brew install qemu');
  assert.equal(installHint(byName('socket_vmnet'), 'linux'), null);
  assert.equal(installHint(byName('ip'), 'darwin'), null);
  assert.match(
    installHint(byName('iPXE (arm64 EFI)'), 'linux') ?? '',
    /scripts\/install-deps\.sh .*--ipxe-dir/,
  );
});

test('with the real PATH qemu-img, qemu-system-x86_64 and ip are found where the shell finds them', () => {
  const report = checkDependencies('linux', process.env);
  for (const tool of ['qemu-img', 'qemu-system-x86_64', 'ip']) {
    const r = report.find((d) => d.name === tool);
    const expected = execFileSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' }).trim();
    assert.deepEqual(
      { found: r?.found, path: r?.path, install: r?.install },
      { found: true, path: expected, install: null },
      tool,
    );
  }
  assert.equal(
    report.find((d) => d.name === 'socket_vmnet'),
    undefined,
    'not a Linux dependency',
  );
});

test('packageHints names the Debian and the Homebrew package', () => {
  assert.equal(
    packageHints('qemu-img'),
    'install it with Debian/Ubuntu: apt-get install qemu-utils; Homebrew: brew install qemu',
  );
  assert.equal(packageHints('socket_vmnet'), 'install it with Homebrew: brew install socket_vmnet');
  assert.equal(packageHints('nope'), 'see its documentation');
});
