/**
 * A Debian root file system built here from Debian's packages with mmdebstrap: small (the cloud
 * kernel, no recommends, no docs), with what an installed target needs — systemd, GRUB for UEFI,
 * cloud-init, OpenSSH — and nothing that ties it to one machine (host keys, machine-id).
 */
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import type { Arch } from '../lab/validate.js';

export function debianArch(arch: Arch): 'amd64' | 'arm64' {
  return arch === 'x86_64' ? 'amd64' : 'arm64';
}

/** What every installable Debian target gets; a distro's `build.packages` come on top. */
export function basePackages(arch: Arch): string[] {
  const a = debianArch(arch);
  return [
    'systemd-sysv',
    'udev',
    'kmod',
    // logind acts on the ACPI power button, so `vm stop` powers the guest off cleanly.
    'dbus',
    `linux-image-cloud-${a}`,
    `grub-efi-${a}`,
    'cloud-init',
    'openssh-server',
    'sudo',
    'iproute2',
    'netbase',
    'procps',
  ];
}

export const DEFAULT_MIRROR = 'http://deb.debian.org/debian';

export interface DebianRecipe {
  suite: string;
  arch: Arch;
  packages: string[];
  mirror: string;
}

/** The apt sources of the build (and of the installed system): the suite, its updates and security. */
export function aptSources(r: Pick<DebianRecipe, 'suite' | 'mirror'>): string[] {
  const security = r.mirror.replace(/\/debian\/?$/, '/debian-security');
  const lines = [`deb ${r.mirror} ${r.suite} main`, `deb ${r.mirror} ${r.suite}-updates main`];
  // Only the official mirror layout has a matching security archive next to it.
  if (security !== r.mirror) lines.push(`deb ${security} ${r.suite}-security main`);
  return lines;
}

/** Pure: the mmdebstrap command line that builds the root file system into directory `target`. */
export function mmdebstrapArgv(r: DebianRecipe, target: string): string[] {
  const a = debianArch(r.arch);
  return [
    '--variant=minbase',
    `--arch=${a}`,
    `--include=${r.packages.join(',')}`,
    // No documentation, manual pages or translations: every megabyte is install time.
    ...['doc', 'man', 'locale', 'info', 'lintian'].map((d) => `--dpkgopt=path-exclude=/usr/share/${d}/*`),
    // GRUB also keeps the removable-media copy (EFI/BOOT/BOOT*.EFI) up to date on upgrades: the
    // installer boots from that path and writes no NVRAM entry.
    `--essential-hook=echo "grub-efi-${a} grub2/force_efi_extra_removable boolean true" | chroot "$1" debconf-set-selections`,
    r.suite,
    target,
    ...aptSources(r),
  ];
}

/** cloud-init on the installed system: the installer's NoCloud seed only, networkd, a locale it has. */
export const CLOUD_CFG = `# Written by pvmlab: the installer leaves a NoCloud seed in /var/lib/cloud/seed/nocloud-net.
datasource_list: [ NoCloud, None ]
locale: C.UTF-8
system_info:
  network:
    renderers: [ networkd ]
`;

/** Make a freshly built root generic: every installed machine gets its own identity at first boot. */
export async function genericise(root: string): Promise<void> {
  // sshd's host keys are made again by cloud-init on first boot; machine-id by systemd.
  for (const f of await fs.readdir(join(root, 'etc/ssh')).catch(() => [] as string[]))
    if (f.startsWith('ssh_host_')) await fs.rm(join(root, 'etc/ssh', f));
  await fs.writeFile(join(root, 'etc/machine-id'), '');
  await fs.rm(join(root, 'var/lib/dbus/machine-id'), { force: true });
  await fs.writeFile(join(root, 'etc/hostname'), 'localhost\n');
  await fs.mkdir(join(root, 'etc/cloud/cloud.cfg.d'), { recursive: true });
  await fs.writeFile(join(root, 'etc/cloud/cloud.cfg.d/90-pvmlab.cfg'), CLOUD_CFG);
}

/** systemctl works on a root directory offline, whatever its architecture. */
export function enableNetworkdArgv(root: string): string[] {
  return [`--root=${root}`, 'enable', 'systemd-networkd.service'];
}
