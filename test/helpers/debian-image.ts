import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * A real cloud image for disk-VM tests: Debian bookworm with systemd, cloud-init and
 * OpenSSH, built with mmdebstrap from Debian's mirror (the only network this project
 * may use), laid onto a GPT disk without mounting anything (mke2fs -d, mtools), and
 * booted by a standalone GRUB on the ESP. Built once per machine and cached in the
 * temp dir (about two minutes).
 */
const PACKAGES = [
  'systemd-sysv',
  'linux-image-cloud-amd64',
  'cloud-init',
  'openssh-server',
  'ifupdown',
  'sudo',
  'iproute2',
  'netbase',
  // udev loads the ACPI button driver and logind acts on it: what makes ACPI power-down work.
  'udev',
  'kmod',
  'dbus',
];
const ROOT_LABEL = 'pvmroot';
const BUILD_VERSION = 3; // bump when the build below changes, to rebuild cached images

const GRUB_CFG = `set timeout=0
search --no-floppy --label ${ROOT_LABEL} --set root
linux /vmlinuz root=LABEL=${ROOT_LABEL} ro console=ttyS0,115200 quiet
initrd /initrd.img
boot
`;

const IMAGE = join(
  tmpdir(),
  `pvmlab-test-debian-${createHash('sha256')
    .update(`${BUILD_VERSION}\n${PACKAGES.join(',')}\n${GRUB_CFG}`)
    .digest('hex')
    .slice(0, 12)}.qcow2`,
);

function sh(cmd: string, args: string[], opts: { cwd?: string } = {}): void {
  execFileSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], ...opts });
}

export async function debianCloudImage(): Promise<string> {
  if (existsSync(IMAGE)) return IMAGE;
  const work = await mkdtemp(join(tmpdir(), 'pvmlab-debian-build-'));
  try {
    const root = join(work, 'root');
    sh('mmdebstrap', [
      '--variant=minbase',
      `--include=${PACKAGES.join(',')}`,
      // Keep the image small: no docs, man pages or locales.
      '--dpkgopt=path-exclude=/usr/share/{doc,man,locale}/*',
      'bookworm',
      root,
    ]);
    await writeFile(join(root, 'etc/fstab'), `LABEL=${ROOT_LABEL} / ext4 errors=remount-ro 0 1\n`);
    await writeFile(join(root, 'etc/hostname'), 'localhost\n');
    // NoCloud from the seed disk only (no waiting on network datasources), and the built-in
    // C.UTF-8 locale: a minbase image has no generated en_US.UTF-8, cloud-init's default.
    await writeFile(
      join(root, 'etc/cloud/cloud.cfg.d/90-pvmlab-test.cfg'),
      'datasource_list: [ NoCloud, None ]\nlocale: C.UTF-8\n',
    );

    const rootImg = join(work, 'root.ext4');
    sh('mke2fs', ['-q', '-t', 'ext4', '-L', ROOT_LABEL, '-d', root, rootImg, '2G']);

    await writeFile(join(work, 'grub.cfg'), GRUB_CFG);
    const efi = join(work, 'BOOTX64.EFI');
    sh('grub-mkstandalone', [
      '--format=x86_64-efi',
      `--output=${efi}`,
      '--modules=part_gpt fat ext2 search search_label linux',
      `boot/grub/grub.cfg=${join(work, 'grub.cfg')}`,
    ]);
    const espImg = join(work, 'esp.img');
    sh('qemu-img', ['create', '-q', '-f', 'raw', espImg, '32M']);
    sh('mformat', ['-i', espImg, '-h', '64', '-s', '32', '::']);
    sh('mmd', ['-i', espImg, '::/EFI', '::/EFI/BOOT']);
    sh('mcopy', ['-i', espImg, efi, '::/EFI/BOOT/BOOTX64.EFI']);

    // GPT: ESP at 1 MiB (32 MiB), root after it (2 GiB), room for the backup table.
    const raw = join(work, 'disk.raw');
    sh('qemu-img', ['create', '-q', '-f', 'raw', raw, `${1 + 32 + 2048 + 1}M`]);
    sh('sgdisk', ['-n', '1:2048:+32M', '-t', '1:ef00', '-n', '2:0:+2048M', '-t', '2:8300', raw]);
    sh('dd', [`if=${espImg}`, `of=${raw}`, 'bs=1M', 'seek=1', 'conv=notrunc,sparse']);
    sh('dd', [`if=${rootImg}`, `of=${raw}`, 'bs=1M', 'seek=33', 'conv=notrunc,sparse']);
    const tmp = `${IMAGE}.${process.pid}.tmp`;
    sh('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', raw, tmp]);
    await rename(tmp, IMAGE);
    return IMAGE;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
