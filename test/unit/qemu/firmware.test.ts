import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, statSync } from 'node:fs';
import { PvmlabError } from '../../../src/core/errors.js';
import { findFirmware } from '../../../src/qemu/firmware.js';

const X86_CODES = [
  '/usr/share/OVMF/OVMF_CODE_4M.fd',
  '/usr/share/OVMF/OVMF_CODE.fd',
  '/usr/share/edk2/ovmf/OVMF_CODE.fd',
  '/usr/share/edk2/x64/OVMF_CODE.4m.fd',
  '/usr/share/qemu/edk2-x86_64-code.fd',
  '/opt/homebrew/share/qemu/edk2-x86_64-code.fd',
  '/usr/local/share/qemu/edk2-x86_64-code.fd',
];
const ARM_CODES = [
  '/usr/share/AAVMF/AAVMF_CODE.fd',
  '/usr/share/edk2/aarch64/QEMU_EFI-pflash.raw',
  '/usr/share/edk2/aarch64/QEMU_CODE.fd',
  '/usr/share/qemu/edk2-aarch64-code.fd',
  '/opt/homebrew/share/qemu/edk2-aarch64-code.fd',
  '/usr/local/share/qemu/edk2-aarch64-code.fd',
];

/** An `exists` that records what it was asked and says yes only for `present`. */
function fakeFs(present: string[]): { exists: (p: string) => boolean; looked: string[] } {
  const looked: string[] = [];
  return { exists: (p) => (looked.push(p), present.includes(p)), looked };
}

test('x86_64 candidates are tried in order: Debian 4M, Debian, Fedora, Arch, QEMU share, Homebrew', () => {
  const fs = fakeFs([]);
  assert.throws(() => findFirmware('x86_64', {}, fs.exists), PvmlabError);
  // A missing code image skips the pair without looking at its vars template.
  assert.deepEqual(fs.looked, X86_CODES);
});

test('aarch64 candidates are tried in order', () => {
  const fs = fakeFs([]);
  assert.throws(() => findFirmware('aarch64', {}, fs.exists), PvmlabError);
  assert.deepEqual(fs.looked, ARM_CODES);
});

test('the first complete pair wins', () => {
  const all = fakeFs(['/usr/share/OVMF/OVMF_CODE_4M.fd', '/usr/share/OVMF/OVMF_VARS_4M.fd']);
  assert.deepEqual(findFirmware('x86_64', {}, all.exists), {
    code: '/usr/share/OVMF/OVMF_CODE_4M.fd',
    varsTemplate: '/usr/share/OVMF/OVMF_VARS_4M.fd',
  });
  assert.deepEqual(all.looked, ['/usr/share/OVMF/OVMF_CODE_4M.fd', '/usr/share/OVMF/OVMF_VARS_4M.fd']);

  // Code without its vars template is not a pair: fall through to the next candidate.
  const partial = fakeFs([
    '/usr/share/OVMF/OVMF_CODE_4M.fd',
    '/usr/share/edk2/ovmf/OVMF_CODE.fd',
    '/usr/share/edk2/ovmf/OVMF_VARS.fd',
  ]);
  assert.deepEqual(findFirmware('x86_64', {}, partial.exists), {
    code: '/usr/share/edk2/ovmf/OVMF_CODE.fd',
    varsTemplate: '/usr/share/edk2/ovmf/OVMF_VARS.fd',
  });

  const brew = fakeFs([
    '/opt/homebrew/share/qemu/edk2-aarch64-code.fd',
    '/opt/homebrew/share/qemu/edk2-arm-vars.fd',
    '/usr/local/share/qemu/edk2-aarch64-code.fd',
    '/usr/local/share/qemu/edk2-arm-vars.fd',
  ]);
  assert.deepEqual(findFirmware('aarch64', {}, brew.exists), {
    code: '/opt/homebrew/share/qemu/edk2-aarch64-code.fd',
    varsTemplate: '/opt/homebrew/share/qemu/edk2-arm-vars.fd',
  });
});

test('env override: both set and present wins without searching', () => {
  const fs = fakeFs(['/fw/code.fd', '/fw/vars.fd', '/usr/share/OVMF/OVMF_CODE_4M.fd']);
  const env = { PVMLAB_FIRMWARE_CODE: '/fw/code.fd', PVMLAB_FIRMWARE_VARS: '/fw/vars.fd' };
  assert.deepEqual(findFirmware('x86_64', env, fs.exists), {
    code: '/fw/code.fd',
    varsTemplate: '/fw/vars.fd',
  });
  assert.deepEqual(fs.looked, ['/fw/code.fd', '/fw/vars.fd']);
});

test('env override: only one of the two is an error', () => {
  for (const env of [{ PVMLAB_FIRMWARE_CODE: '/fw/code.fd' }, { PVMLAB_FIRMWARE_VARS: '/fw/vars.fd' }]) {
    assert.throws(
      () => findFirmware('x86_64', env, () => true),
      (e: unknown) => {
        assert.ok(e instanceof PvmlabError);
        assert.equal(e.exitCode, 1);
        assert.equal(e.message, 'set both PVMLAB_FIRMWARE_CODE and PVMLAB_FIRMWARE_VARS, or neither');
        return true;
      },
    );
  }
});

test('env override: a missing file is an error naming it', () => {
  const env = { PVMLAB_FIRMWARE_CODE: '/fw/code.fd', PVMLAB_FIRMWARE_VARS: '/fw/vars.fd' };
  assert.throws(
    () => findFirmware('x86_64', env, fakeFs(['/fw/code.fd']).exists),
    (e: unknown) => e instanceof PvmlabError && e.message === 'firmware file /fw/vars.fd does not exist',
  );
  assert.throws(
    () => findFirmware('x86_64', env, fakeFs(['/fw/vars.fd']).exists),
    (e: unknown) => e instanceof PvmlabError && e.message === 'firmware file /fw/code.fd does not exist',
  );
  // With the real file system too.
  assert.throws(
    () =>
      findFirmware('aarch64', {
        PVMLAB_FIRMWARE_CODE: '/nonexistent/pvmlab/code.fd',
        PVMLAB_FIRMWARE_VARS: '/usr/share/AAVMF/AAVMF_VARS.fd',
      }),
    /^PvmlabError: firmware file \/nonexistent\/pvmlab\/code\.fd does not exist$/,
  );
});

test('not found: the message lists the paths tried and the apt/dnf/brew packages', () => {
  assert.throws(
    () => findFirmware('x86_64', {}, () => false),
    (e: unknown) => {
      assert.ok(e instanceof PvmlabError);
      assert.equal(
        e.message,
        `no UEFI firmware for x86_64 found (looked for ${X86_CODES.join(', ')}). ` +
          'Install it (Debian/Ubuntu: apt install ovmf; Fedora: dnf install edk2-ovmf; macOS: brew install qemu) ' +
          'or set PVMLAB_FIRMWARE_CODE and PVMLAB_FIRMWARE_VARS.',
      );
      return true;
    },
  );
  assert.throws(
    () => findFirmware('aarch64', {}, () => false),
    (e: unknown) => {
      assert.ok(e instanceof PvmlabError);
      assert.match(
        e.message,
        /^no UEFI firmware for aarch64 found \(looked for \/usr\/share\/AAVMF\/AAVMF_CODE\.fd, /,
      );
      assert.match(
        e.message,
        /apt install qemu-efi-aarch64; Fedora: dnf install edk2-aarch64; macOS: brew install qemu/,
      );
      return true;
    },
  );
});

test('on this machine: Debian OVMF and AAVMF are found and exist', () => {
  const x86 = findFirmware('x86_64', {});
  assert.deepEqual(x86, {
    code: '/usr/share/OVMF/OVMF_CODE_4M.fd',
    varsTemplate: '/usr/share/OVMF/OVMF_VARS_4M.fd',
  });
  const arm = findFirmware('aarch64', {});
  assert.deepEqual(arm, {
    code: '/usr/share/AAVMF/AAVMF_CODE.fd',
    varsTemplate: '/usr/share/AAVMF/AAVMF_VARS.fd',
  });
  for (const p of [x86.code, x86.varsTemplate, arm.code, arm.varsTemplate]) {
    assert.ok(existsSync(p), p);
    assert.ok(statSync(p).size > 0, `${p} is empty`);
  }
  // The 4M OVMF build splits a 4 MiB flash into code and a 528 KiB vars store.
  assert.equal(statSync(x86.varsTemplate).size, 540672);
  assert.equal(statSync(x86.code).size + statSync(x86.varsTemplate).size, 4 * 2 ** 20);
});
