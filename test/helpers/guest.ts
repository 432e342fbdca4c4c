import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildCpio } from '../../src/distro/cpio.js';

export const GUEST_READY = 'PVMLAB-TEST-GUEST-READY';
export const GUEST_POWEROFF = 'PVMLAB-TEST-GUEST-POWEROFF';

/**
 * A tiny real guest for lifecycle tests: a UEFI disk whose ESP holds GRUB (standalone, with
 * Debian's cloud kernel and a busybox initramfs in its memdisk). The guest prints a marker,
 * then powers off when the ACPI power button is pressed, as a real OS does.
 */
const INIT = `#!/bin/busybox sh
B=/bin/busybox
$B mkdir -p /proc /sys /dev
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
$B mount -t devtmpfs dev /dev
$B insmod /lib/evdev.ko
$B insmod /lib/button.ko
dev=""
for i in 1 2 3 4 5 6 7 8 9 10; do
  for d in /sys/class/input/event*; do
    if $B grep -q "Power Button" "$d/device/name" 2>/dev/null; then dev=/dev/input/$($B basename "$d"); fi
  done
  [ -n "$dev" ] && break
  $B sleep 1
done
echo "${GUEST_READY} power-button=$dev"
$B head -c 1 "$dev" > /dev/null
echo "${GUEST_POWEROFF}"
$B poweroff -f
`;

const GRUB_CFG = `set timeout=0
linux (memdisk)/vmlinuz console=ttyS0,115200 panic=-1 loglevel=4
initrd (memdisk)/initrd.img
boot
`;

function newestCloudKernel(): { kernel: string; version: string } {
  const k = readdirSync('/boot')
    .filter((f) => /^vmlinuz-.*amd64$/.test(f))
    .sort()
    .pop();
  if (!k) throw new Error('no Debian kernel in /boot: install linux-image-cloud-amd64 (.ci/run does)');
  return { kernel: join('/boot', k), version: k.slice('vmlinuz-'.length) };
}

/** Build (once per kernel version, cached in the temp dir) and return the qcow2 path. */
export async function testGuestDisk(): Promise<string> {
  const { kernel, version } = newestCloudKernel();
  const out = join(tmpdir(), `pvmlab-test-guest-${version}.qcow2`);
  if (existsSync(out)) return out;
  const work = await mkdtemp(join(tmpdir(), 'pvmlab-guest-build-'));
  try {
    const mod = (p: string) => readFileSync(join('/lib/modules', version, 'kernel', p));
    const initrd = buildCpio([
      { path: 'bin', type: 'dir', mode: 0o755 },
      { path: 'lib', type: 'dir', mode: 0o755 },
      { path: 'bin/busybox', type: 'file', mode: 0o755, data: readFileSync('/bin/busybox') },
      { path: 'lib/evdev.ko', type: 'file', mode: 0o644, data: mod('drivers/input/evdev.ko') },
      { path: 'lib/button.ko', type: 'file', mode: 0o644, data: mod('drivers/acpi/button.ko') },
      { path: 'init', type: 'file', mode: 0o755, data: INIT },
    ]);
    await writeFile(join(work, 'initrd.img'), initrd);
    await writeFile(join(work, 'grub.cfg'), GRUB_CFG);
    const efi = join(work, 'BOOTX64.EFI');
    execFileSync(
      'grub-mkstandalone',
      [
        '--format=x86_64-efi',
        `--output=${efi}`,
        '--modules=part_gpt fat linux memdisk',
        `boot/grub/grub.cfg=${join(work, 'grub.cfg')}`,
        `vmlinuz=${kernel}`,
        `initrd.img=${join(work, 'initrd.img')}`,
      ],
      { stdio: 'pipe' },
    );
    const raw = join(work, 'disk.raw');
    execFileSync('qemu-img', ['create', '-q', '-f', 'raw', raw, '64M']);
    // ESP: 60 MiB from 1 MiB; the FAT file system must end inside the partition (before the backup GPT).
    execFileSync('sgdisk', ['-n', '1:2048:+60M', '-t', '1:ef00', raw], { stdio: 'pipe' });
    const esp = `${raw}@@1M`;
    execFileSync('mformat', ['-i', esp, '-T', String(60 * 2048), '-h', '64', '-s', '32', '::'], {
      stdio: 'pipe',
    });
    execFileSync('mmd', ['-i', esp, '::/EFI', '::/EFI/BOOT'], { stdio: 'pipe' });
    execFileSync('mcopy', ['-i', esp, efi, '::/EFI/BOOT/BOOTX64.EFI'], { stdio: 'pipe' });
    await mkdir(tmpdir(), { recursive: true });
    const tmp = `${out}.${process.pid}.tmp`;
    execFileSync('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', raw, tmp]);
    await rename(tmp, out);
    return out;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

export const PXE_MARKER = 'PVMLAB-PXE-INITRD-REACHED';

/** Debian's arm64 cloud kernel and static busybox, unpacked by `scripts/install-deps.sh --test`. */
export const ARM64_GUEST = '/var/cache/pvmlab/arm64-guest';

function arm64File(dir: string, prefix: string): string {
  const d = join(ARM64_GUEST, dir);
  const name = existsSync(d)
    ? readdirSync(d)
        .filter((f) => f.startsWith(prefix))
        .sort()
        .pop()
    : undefined;
  if (!name) throw new Error(`no ${prefix}* in ${d}: run scripts/install-deps.sh --test`);
  return join(d, name);
}

/** The kernel the PXE tests boot: Debian's cloud kernel (an EFI stub kernel) for the guest's arch. */
export function testKernel(arch: 'x86_64' | 'aarch64' = 'x86_64'): string {
  return arch === 'aarch64' ? arm64File('boot', 'vmlinuz-') : newestCloudKernel().kernel;
}

/** A gzip-free initramfs that prints a marker on the console and powers off. */
export function markerInitrd(marker = PXE_MARKER, arch: 'x86_64' | 'aarch64' = 'x86_64'): Buffer {
  const busybox = arch === 'aarch64' ? arm64File('bin', 'busybox') : '/bin/busybox';
  return buildCpio([
    { path: 'bin', type: 'dir', mode: 0o755 },
    { path: 'bin/busybox', type: 'file', mode: 0o755, data: readFileSync(busybox) },
    {
      path: 'init',
      type: 'file',
      mode: 0o755,
      data: `#!/bin/busybox sh\n/bin/busybox mkdir -p /proc /dev\n/bin/busybox mount -t proc proc /proc\n/bin/busybox mount -t devtmpfs dev /dev\necho "${marker} cmdline: $(/bin/busybox cat /proc/cmdline)"\n/bin/busybox sleep 2\n/bin/busybox poweroff -f\n`,
    },
  ]);
}

// In dependency order (modinfo -F depends): busybox insmod does not resolve dependencies.
const NET_MODULES = [
  'drivers/virtio/virtio_ring.ko',
  'drivers/virtio/virtio.ko',
  'drivers/virtio/virtio_pci_modern_dev.ko',
  'drivers/virtio/virtio_pci_legacy_dev.ko',
  'drivers/virtio/virtio_pci.ko',
  'net/core/failover.ko',
  'drivers/net/net_failover.ko',
  'drivers/net/virtio_net.ko',
];

/**
 * A stand-in for the installer: brings up the NIC (virtio modules, busybox udhcpc), then
 * reports `ready` to the `pvmlab_events=` URL from its kernel command line, as a finished
 * install's phone-home would, and powers off.
 */
export function readyInitrd(arch: 'x86_64' | 'aarch64' = 'x86_64'): Buffer {
  // The modules of the kernel the test serves for this arch (testKernel).
  const modules =
    arch === 'aarch64' ? arm64File('lib/modules', '') : join('/lib/modules', newestCloudKernel().version);
  const mods = NET_MODULES.map((p, i) => ({
    path: `lib/m${i}.ko`,
    type: 'file' as const,
    mode: 0o644,
    data: readFileSync(join(modules, 'kernel', p)),
  }));
  const init = `#!/bin/busybox sh
B=/bin/busybox
$B mkdir -p /proc /sys /dev /tmp
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
$B mount -t devtmpfs dev /dev
for m in ${mods.map((m) => `/${m.path}`).join(' ')}; do $B insmod $m; done
events=$($B sed -n 's/.*pvmlab_events=\\([^ ]*\\).*/\\1/p' /proc/cmdline)
$B ip link set eth0 up
$B udhcpc -i eth0 -n -q -f -t 10 -s /udhcpc.sh
$B wget -q -O /dev/null --header 'Content-Type: application/json' --post-data '{"type":"installer.done","detail":{"by":"test-initrd"}}' "$events"
$B wget -q -O /dev/null --header 'Content-Type: application/json' --post-data '{"type":"ready"}' "$events"
echo "${PXE_MARKER} reported ready to $events"
$B sleep 1
$B poweroff -f
`;
  const script = `#!/bin/busybox sh
[ "$1" = bound ] && /bin/busybox ip addr add "$ip/\${mask:-24}" dev "$interface"
exit 0
`;
  return buildCpio([
    { path: 'bin', type: 'dir', mode: 0o755 },
    { path: 'lib', type: 'dir', mode: 0o755 },
    {
      path: 'bin/busybox',
      type: 'file',
      mode: 0o755,
      data: readFileSync(arch === 'aarch64' ? arm64File('bin', 'busybox') : '/bin/busybox'),
    },
    ...mods,
    { path: 'udhcpc.sh', type: 'file', mode: 0o755, data: script },
    { path: 'init', type: 'file', mode: 0o755, data: init },
  ]);
}
