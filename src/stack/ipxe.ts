import { consoleArg } from '../core/distro-manifest.js';
import type { VmDefinition } from '../core/vmdef.js';

export { consoleArg };

/**
 * iPXE setting a per-machine script sets before it leaves iPXE on purpose (`exit 1`: the firmware
 * then tries its next boot option, the disk). `exit 1` also fails the `chain` in boot.ipxe, which
 * reads the setting to tell that apart from "the stack had no script for this machine".
 */
export const EXIT_SETTING = 'pvmlab-exit';

/** The script TFTP serves to iPXE: hand over to the HTTP server with the MAC. */
export function bootScript(): string {
  return `#!ipxe
# pvmlab: ask the stack what this machine should boot
chain http://\${next-server}/ipxe?mac=\${mac:hexhyp} || goto failed
exit
:failed
# The machine's script left iPXE on purpose and said why: leave too, to the next boot option.
isset \${${EXIT_SETTING}} && exit 1 ||
echo pvmlab: no boot script for \${mac} (not a VM of this lab?): see the stack's log
sleep 10
exit 1
`;
}

export interface InstallScriptInput {
  vm: VmDefinition;
  mac: string;
  /** `http://<provisioner>` as the client reached us. */
  base: string;
  kernel: string;
  /** initrds in load order; the names become the `initrd=` arguments the EFI stub needs. */
  initrds: { name: string; url: string }[];
  extraArgs?: string[];
}

/** The iPXE steps of the install script; a failing one is reported to `/ipxe/failed`. */
export const IPXE_STEPS = ['kernel', 'initrd', 'boot'] as const;
export type IpxeStep = (typeof IPXE_STEPS)[number];

/**
 * Per-machine script: kernel and initrds over HTTP, with the installer's config URL. Each step
 * that fails jumps to its own label, which reports the step and iPXE's last error code
 * (`\${errno}`, explained at https://ipxe.org/err/<code>) to the stack before the iPXE shell.
 */
export function installScript(i: InstallScriptInput): string {
  const args = [
    ...i.initrds.map((r) => `initrd=${r.name}`),
    'ip=dhcp',
    consoleArg(i.vm.arch),
    `config_url=${i.base}/config/${i.mac}`,
    `pvmlab_events=${i.base}/api/machines/${i.mac}/events`,
    // Warnings and errors only: the installer prints its own progress, and every line the kernel
    // writes to an emulated UART costs boot time under TCG.
    'quiet',
    ...(i.extraArgs ?? []),
  ];
  // The report is an empty file: fetched, then freed; a report that cannot be sent is ignored.
  const report = (label: string, query: string) => [
    `:${label}`,
    `imgfetch --name pvmlab-report ${i.base}/ipxe/failed?mac=${i.mac}&${query}&errno=\${errno} && imgfree pvmlab-report ||`,
    'goto failed',
  ];
  return [
    '#!ipxe',
    `echo pvmlab: ${i.vm.name} (${i.mac}) ${i.vm.distro ?? ''} ${i.vm.arch}`,
    `kernel ${i.kernel} ${args.join(' ')} || goto failed-kernel`,
    ...i.initrds.map((r, n) => `initrd --name ${r.name} ${r.url} || goto failed-initrd-${n + 1}`),
    'boot || goto failed-boot',
    ...report('failed-boot', 'step=boot'),
    ...report('failed-kernel', 'step=kernel'),
    ...i.initrds.flatMap((r, n) => report(`failed-initrd-${n + 1}`, `step=initrd&file=${r.name}`)),
    ':failed',
    `echo pvmlab: boot of ${i.vm.name} failed (see: pvmlab vm events ${i.vm.name}); dropping to the iPXE shell`,
    'shell',
    '',
  ].join('\n');
}

/** Why a machine is sent to its own disk instead of being installed. */
export type LocalBootReason = 'installed' | 'disk-vm';

/**
 * Leave iPXE so the firmware tries the next boot option (the disk): for an installed PXE machine,
 * and always for a disk VM (one without `pxeboot: true`) that fell back to the network, which the
 * stack never installs: that would wipe its disk.
 */
export function localBootScript(vm: VmDefinition, reason: LocalBootReason = 'installed'): string {
  const why =
    reason === 'installed'
      ? `${vm.name} is installed; booting from its disk (ask for a reinstall to install again)`
      : `${vm.name} is a disk VM (not created with --pxeboot): the stack does not install it; booting from its disk`;
  return `#!ipxe
echo pvmlab: ${why}
set ${EXIT_SETTING} 1
exit 1
`;
}

/** A PXE VM created without a distro: say so on its console instead of failing obscurely. */
export function nothingToBootScript(vm: VmDefinition): string {
  const why = vm.distro
    ? `${vm.name}'s distro ${vm.distro} (${vm.arch}) is not pulled (run: pvmlab distro pull --distro ${vm.distro} --arch ${vm.arch})`
    : `${vm.name} has no distro to install (create it with: pvmlab vm create ${vm.name} --pxeboot --distro <name>)`;
  return `#!ipxe
echo pvmlab: ${why}
set ${EXIT_SETTING} 1
sleep 5
exit 1
`;
}
