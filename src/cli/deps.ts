import { existsSync } from 'node:fs';
import { which } from '../core/exec.js';
import { FIRMWARE_CANDIDATES } from '../qemu/firmware.js';
import { SOCKET_VMNET_BINARY_CANDIDATES } from '../net/launchd.js';

/** One external dependency, and the package that provides it on Debian/Ubuntu and Homebrew. */
export interface Dependency {
  name: string;
  why: string;
  debian?: string;
  brew?: string;
  /** How to get it when no package name says it (replaces the apt/brew hints). */
  hint?: string;
  platforms: NodeJS.Platform[];
  /** Missing it stops pvmlab working (as opposed to one feature). */
  required: boolean;
  find: (env: NodeJS.ProcessEnv) => string | undefined;
}

const onPath = (cmd: string) => (env: NodeJS.ProcessEnv) => which(cmd, env);
const firstFile = (paths: readonly string[]) => () => paths.find((p) => existsSync(p));

export const DEPENDENCIES: readonly Dependency[] = [
  {
    name: 'qemu-system-x86_64',
    why: 'runs x86_64 VMs',
    debian: 'qemu-system-x86',
    brew: 'qemu',
    platforms: ['linux', 'darwin'],
    required: true,
    find: onPath('qemu-system-x86_64'),
  },
  {
    name: 'qemu-system-aarch64',
    why: 'runs aarch64 VMs',
    debian: 'qemu-system-arm',
    brew: 'qemu',
    platforms: ['linux', 'darwin'],
    required: false,
    find: onPath('qemu-system-aarch64'),
  },
  {
    name: 'qemu-img',
    why: 'creates VM disks',
    debian: 'qemu-utils',
    brew: 'qemu',
    platforms: ['linux', 'darwin'],
    required: true,
    find: onPath('qemu-img'),
  },
  {
    name: 'OVMF (x86_64 UEFI)',
    why: 'firmware for x86_64 VMs',
    debian: 'ovmf',
    brew: 'qemu',
    platforms: ['linux', 'darwin'],
    required: true,
    find: firstFile(FIRMWARE_CANDIDATES.x86_64.map((f) => f.code)),
  },
  {
    name: 'AAVMF (aarch64 UEFI)',
    why: 'firmware for aarch64 VMs',
    debian: 'qemu-efi-aarch64',
    brew: 'qemu',
    platforms: ['linux', 'darwin'],
    required: false,
    find: firstFile(FIRMWARE_CANDIDATES.aarch64.map((f) => f.code)),
  },
  {
    name: 'ssh',
    why: 'vm shell, vm start --wait',
    debian: 'openssh-client',
    brew: 'openssh',
    platforms: ['linux', 'darwin'],
    required: true,
    find: onPath('ssh'),
  },
  {
    name: 'scp',
    why: 'vm copy',
    debian: 'openssh-client',
    brew: 'openssh',
    platforms: ['linux', 'darwin'],
    required: false,
    find: onPath('scp'),
  },
  {
    name: 'ip',
    why: 'the bridge network (bridge, TAP devices)',
    debian: 'iproute2',
    platforms: ['linux'],
    required: true,
    find: onPath('ip'),
  },
  {
    name: 'tail',
    why: 'vm logs',
    debian: 'coreutils',
    platforms: ['linux', 'darwin'],
    required: false,
    find: onPath('tail'),
  },
  {
    name: 'dnsmasq',
    why: 'pvmlab stack serve (DHCP/DNS/TFTP)',
    debian: 'dnsmasq-base',
    platforms: ['linux'],
    required: false,
    find: (env) => which('dnsmasq', { ...env, PATH: `${env.PATH ?? ''}:/usr/sbin:/sbin` }),
  },
  {
    name: 'iPXE (x86_64 EFI, BIOS)',
    why: 'pvmlab stack serve (network boot loaders)',
    debian: 'ipxe',
    platforms: ['linux'],
    required: false,
    find: firstFile(['/usr/lib/ipxe/snponly.efi', '/usr/lib/ipxe/ipxe.efi']),
  },
  {
    name: 'iPXE (arm64 EFI)',
    why: 'pvmlab stack serve: network boot of aarch64 VMs',
    // Debian 13's ipxe package has it; Debian 12's has no arm64 build.
    hint: "run scripts/install-deps.sh (takes it from Debian 13's ipxe package), or pvmlab stack serve --ipxe-dir <dir>",
    platforms: ['linux'],
    required: false,
    find: firstFile(['/usr/lib/ipxe/ipxe-arm64.efi', '/usr/local/lib/pvmlab/ipxe/ipxe-arm64.efi']),
  },
  {
    name: 'socket_vmnet',
    why: 'the lab network on macOS',
    brew: 'socket_vmnet',
    platforms: ['darwin'],
    required: true,
    find: (env) => SOCKET_VMNET_BINARY_CANDIDATES.find((p) => existsSync(p)) ?? which('socket_vmnet', env),
  },
];

export interface DependencyReport {
  name: string;
  found: boolean;
  path: string | null;
  required: boolean;
  why: string;
  install: string | null;
}

export function installHint(d: Dependency, platform: NodeJS.Platform): string | null {
  if (d.hint) return d.hint;
  if (platform === 'darwin') return d.brew ? `brew install ${d.brew}` : null;
  return d.debian ? `apt-get install ${d.debian}` : null;
}

export function checkDependencies(platform: NodeJS.Platform, env: NodeJS.ProcessEnv): DependencyReport[] {
  return DEPENDENCIES.filter((d) => d.platforms.includes(platform)).map((d) => {
    const path = d.find(env);
    return {
      name: d.name,
      found: path !== undefined,
      path: path ?? null,
      required: d.required,
      why: d.why,
      install: path ? null : installHint(d, platform),
    };
  });
}

/** Both package names, whatever the host: 'Debian/Ubuntu: apt-get install X; Homebrew: brew install Y'. */
export function packageHints(name: string): string {
  const d = DEPENDENCIES.find((x) => x.name === name);
  if (d?.hint) return d.hint;
  const hints = [
    d?.debian ? `Debian/Ubuntu: apt-get install ${d.debian}` : undefined,
    d?.brew ? `Homebrew: brew install ${d.brew}` : undefined,
  ].filter(Boolean);
  return hints.length ? `install it with ${hints.join('; ')}` : 'see its documentation';
}
