import { existsSync } from 'node:fs';
import { PvmlabError } from '../core/errors.js';
import type { Arch } from '../lab/validate.js';

/** UEFI firmware: a read-only code image and the template each VM's writable vars copy starts from. */
export interface Firmware {
  code: string;
  varsTemplate: string;
}

/** Known install locations, most specific first: Debian/Ubuntu, Fedora, Arch, QEMU's share dir, Homebrew. */
export const FIRMWARE_CANDIDATES: Record<Arch, readonly Firmware[]> = {
  x86_64: [
    { code: '/usr/share/OVMF/OVMF_CODE_4M.fd', varsTemplate: '/usr/share/OVMF/OVMF_VARS_4M.fd' },
    { code: '/usr/share/OVMF/OVMF_CODE.fd', varsTemplate: '/usr/share/OVMF/OVMF_VARS.fd' },
    { code: '/usr/share/edk2/ovmf/OVMF_CODE.fd', varsTemplate: '/usr/share/edk2/ovmf/OVMF_VARS.fd' },
    { code: '/usr/share/edk2/x64/OVMF_CODE.4m.fd', varsTemplate: '/usr/share/edk2/x64/OVMF_VARS.4m.fd' },
    { code: '/usr/share/qemu/edk2-x86_64-code.fd', varsTemplate: '/usr/share/qemu/edk2-i386-vars.fd' },
    {
      code: '/opt/homebrew/share/qemu/edk2-x86_64-code.fd',
      varsTemplate: '/opt/homebrew/share/qemu/edk2-i386-vars.fd',
    },
    {
      code: '/usr/local/share/qemu/edk2-x86_64-code.fd',
      varsTemplate: '/usr/local/share/qemu/edk2-i386-vars.fd',
    },
  ],
  aarch64: [
    { code: '/usr/share/AAVMF/AAVMF_CODE.fd', varsTemplate: '/usr/share/AAVMF/AAVMF_VARS.fd' },
    {
      code: '/usr/share/edk2/aarch64/QEMU_EFI-pflash.raw',
      varsTemplate: '/usr/share/edk2/aarch64/vars-template-pflash.raw',
    },
    { code: '/usr/share/edk2/aarch64/QEMU_CODE.fd', varsTemplate: '/usr/share/edk2/aarch64/QEMU_VARS.fd' },
    { code: '/usr/share/qemu/edk2-aarch64-code.fd', varsTemplate: '/usr/share/qemu/edk2-arm-vars.fd' },
    {
      code: '/opt/homebrew/share/qemu/edk2-aarch64-code.fd',
      varsTemplate: '/opt/homebrew/share/qemu/edk2-arm-vars.fd',
    },
    {
      code: '/usr/local/share/qemu/edk2-aarch64-code.fd',
      varsTemplate: '/usr/local/share/qemu/edk2-arm-vars.fd',
    },
  ],
};

const PACKAGE_HINT: Record<Arch, string> = {
  x86_64: 'Debian/Ubuntu: apt install ovmf; Fedora: dnf install edk2-ovmf; macOS: brew install qemu',
  aarch64:
    'Debian/Ubuntu: apt install qemu-efi-aarch64; Fedora: dnf install edk2-aarch64; macOS: brew install qemu',
};

/**
 * The first firmware pair present on this host. `PVMLAB_FIRMWARE_CODE` and
 * `PVMLAB_FIRMWARE_VARS` override the search (both must be set).
 */
export function findFirmware(
  arch: Arch,
  env: NodeJS.ProcessEnv = process.env,
  exists: (p: string) => boolean = existsSync,
): Firmware {
  const code = env.PVMLAB_FIRMWARE_CODE;
  const vars = env.PVMLAB_FIRMWARE_VARS;
  if (code || vars) {
    if (!code || !vars)
      throw new PvmlabError('set both PVMLAB_FIRMWARE_CODE and PVMLAB_FIRMWARE_VARS, or neither');
    for (const p of [code, vars]) if (!exists(p)) throw new PvmlabError(`firmware file ${p} does not exist`);
    return { code, varsTemplate: vars };
  }
  for (const fw of FIRMWARE_CANDIDATES[arch]) if (exists(fw.code) && exists(fw.varsTemplate)) return fw;
  throw new PvmlabError(
    `no UEFI firmware for ${arch} found (looked for ${FIRMWARE_CANDIDATES[arch].map((f) => f.code).join(', ')}). ` +
      `Install it (${PACKAGE_HINT[arch]}) or set PVMLAB_FIRMWARE_CODE and PVMLAB_FIRMWARE_VARS.`,
  );
}
