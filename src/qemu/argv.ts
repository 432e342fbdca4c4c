import { createHash } from 'node:crypto';
import type { NicAttachment } from '../net/driver.js';
import type { Arch } from '../lab/validate.js';
import type { Accel } from './accel.js';

export type BootTarget = 'disk' | 'pxe';

export interface QemuSpec {
  name: string;
  arch: Arch;
  accel: Accel;
  memoryMiB: number;
  cpus: number;
  firmware: { code: string; vars: string };
  disk: string;
  /** NoCloud seed for disk VMs. */
  seedIso?: string;
  /** First boot device. PXE VMs boot their disk first and fall back to the network. */
  boot: BootTarget;
  mac: string;
  nic: NicAttachment;
  /**
   * `console`: the unix socket a background VM's serial console listens on (`vm console`),
   * everything it prints also going to `log`. Without it, the serial goes to `log` only.
   */
  files: { pid: string; qmp: string; log: string; console?: string };
  /** Serial console and monitor on the terminal instead of a log file. */
  interactive: boolean;
  /** Boot this kernel (the firmware loads it; the provisioner's disk has no boot loader). */
  kernel?: { kernel: string; initrd: string; append: string };
  /**
   * A second NIC on QEMU's user-mode network, with the guest's SSH forwarded to 127.0.0.1:sshPort.
   * `net`/`ipv6Net`: that network's IPv4 and IPv6 prefixes (QEMU's defaults unless given).
   */
  uplink?: { mac: string; sshPort: number; net?: string; ipv6Net?: string };
  /** Host directories shared over virtio-9p. */
  shares?: readonly { tag: string; path: string; readonly?: boolean }[];
}

export function qemuBinary(arch: Arch): string {
  return arch === 'x86_64' ? 'qemu-system-x86_64' : 'qemu-system-aarch64';
}

/** The background serial chardev's id: `vm console` asks QMP whether a client holds it. */
export const SERIAL_CHARDEV = 'ser0';

/**
 * Firmware settings through fw_cfg, read by OVMF and AAVMF alike. The lab serves IPv4 PXE only:
 * with PXEv6 on, the firmware tries it after PXEv4 and waits about a minute for a DHCPv6 answer
 * that never comes before it moves on to the next boot option (the disk, after `--boot pxe`).
 */
export const FIRMWARE_FW_CFG: readonly string[] = [
  '-fw_cfg',
  'name=opt/org.tianocore/IPv6PXESupport,string=n',
];

/**
 * The machine's SMBIOS system UUID: a name-based (v5) UUID of its MAC, so it is stable across
 * starts and differs between VMs, as on real servers. Without it every VM has the all-zero UUID,
 * and firmware and iPXE send DHCPv6 with the same DUID-UUID for all of them.
 */
export function machineUuid(mac: string): string {
  const h = createHash('sha1').update(UUID_NAMESPACE).update(mac.toLowerCase()).digest();
  h[6] = ((h[6] as number) & 0x0f) | 0x50; // version 5
  h[8] = ((h[8] as number) & 0x3f) | 0x80; // RFC 4122 variant
  const x = h.subarray(0, 16).toString('hex');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}
/** pvmlab's namespace for machineUuid (random, fixed). */
const UUID_NAMESPACE = Buffer.from('6f1d8a52c3e94b7e9a0d2c55e1b47a39', 'hex');

/** QEMU option values are comma-separated: a literal comma in a path is written twice. */
export function escapeOpt(value: string): string {
  return value.replaceAll(',', ',,');
}

/** Machine type, accelerator and CPU model; the accelerator probe runs exactly these. */
export function machineArgs(arch: Arch, accel: Accel): string[] {
  const cpu = accel === 'tcg' ? 'max' : 'host';
  const machine = arch === 'x86_64' ? 'q35' : 'virt,gic-version=3';
  // Multi-threaded TCG uses both host cores; it is the default where supported but say it.
  const accelOpt = accel === 'tcg' ? 'tcg,thread=multi' : accel;
  return ['-machine', machine, '-accel', accelOpt, '-cpu', cpu];
}

/** The UEFI firmware as two pflash drives: read-only code and a writable vars copy. */
export function firmwareArgs(firmware: { code: string; vars: string }): string[] {
  return [
    '-drive',
    `if=pflash,format=raw,unit=0,readonly=on,file=${escapeOpt(firmware.code)}`,
    '-drive',
    `if=pflash,format=raw,unit=1,file=${escapeOpt(firmware.vars)}`,
  ];
}

/** The full argv, wrapper first (socket_vmnet_client passes its socket as fd 3). Pure. */
export function buildQemuArgv(s: QemuSpec): string[] {
  const pxeFirst = s.boot === 'pxe';
  const args: string[] = [
    ...s.nic.wrapper,
    qemuBinary(s.arch),
    // The pid file path is unique per lab and VM; the identity check looks for it in the command line.
    '-name',
    `pvmlab-${s.name}`,
    '-uuid',
    machineUuid(s.mac),
    ...machineArgs(s.arch, s.accel),
    '-smp',
    String(s.cpus),
    '-m',
    String(s.memoryMiB),
    '-nodefaults',
    ...firmwareArgs(s.firmware),
    ...FIRMWARE_FW_CFG,
    '-drive',
    `if=none,id=disk0,format=qcow2,file=${escapeOpt(s.disk)}`,
    '-device',
    `virtio-blk-pci,drive=disk0,bootindex=${pxeFirst ? 2 : 1}`,
  ];
  if (s.seedIso) {
    args.push('-drive', `if=none,id=seed0,format=raw,readonly=on,file=${escapeOpt(s.seedIso)}`);
    args.push('-device', 'virtio-blk-pci,drive=seed0');
  }
  args.push(
    '-netdev',
    `${s.nic.netdev},id=net0`,
    // romfile= (empty): the firmware's own PXE, not the iPXE option ROM, as on real hardware.
    '-device',
    `virtio-net-pci,netdev=net0,mac=${s.mac},romfile=,bootindex=${pxeFirst ? 1 : 2}`,
    '-pidfile',
    s.files.pid,
    '-qmp',
    `unix:${escapeOpt(s.files.qmp)},server=on,wait=off`,
  );
  if (s.uplink) {
    // Loopback only: the forwarded SSH port must not be reachable from the host's networks.
    const nets = [
      ...(s.uplink.net ? [`net=${s.uplink.net}`] : []),
      ...(s.uplink.ipv6Net ? [`ipv6-net=${s.uplink.ipv6Net}`] : []),
    ];
    args.push(
      '-netdev',
      ['user', 'id=uplink0', ...nets, `hostfwd=tcp:127.0.0.1:${s.uplink.sshPort}-:22`].join(','),
    );
    args.push('-device', `virtio-net-pci,netdev=uplink0,mac=${s.uplink.mac},romfile=`);
  }
  for (const share of s.shares ?? []) {
    // security_model=none: files keep the host's owners, and a QEMU that is not root still works.
    const opts = [`local`, `path=${escapeOpt(share.path)}`, `mount_tag=${share.tag}`, 'security_model=none'];
    if (share.readonly) opts.push('readonly=on');
    args.push('-virtfs', opts.join(','));
  }
  if (s.kernel) {
    args.push('-kernel', s.kernel.kernel, '-initrd', s.kernel.initrd, '-append', s.kernel.append);
  }
  // Also for the provisioner on x86_64: docker, sshd and cloud-init all want entropy early.
  if (s.arch === 'aarch64' || s.uplink) args.push('-device', 'virtio-rng-pci');
  if (s.interactive) {
    // Serial and the HMP monitor multiplexed on the terminal: Ctrl-a c switches, Ctrl-a x quits.
    args.push('-nographic', '-chardev', 'stdio,id=con0,mux=on,signal=off', '-serial', 'chardev:con0');
    args.push('-mon', 'chardev=con0,mode=readline');
  } else {
    // A unix socket `vm console` attaches to, logging everything to the log file whether or not a
    // client is attached (truncated at start, as a file chardev is). With nobody attached QEMU
    // drops the output after logging it: the guest never waits on the socket.
    const serial = s.files.console
      ? `socket,id=${SERIAL_CHARDEV},path=${escapeOpt(s.files.console)},server=on,wait=off,logfile=${escapeOpt(s.files.log)}`
      : `file,id=${SERIAL_CHARDEV},path=${escapeOpt(s.files.log)}`;
    args.push('-display', 'none', '-chardev', serial, '-serial', `chardev:${SERIAL_CHARDEV}`);
    args.push('-daemonize');
  }
  return args;
}
