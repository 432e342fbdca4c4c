import type { VmDefinition } from '../core/vmdef.js';

/** The script TFTP serves to iPXE: hand over to the HTTP server with the MAC. */
export function bootScript(): string {
  return `#!ipxe
# pvmlab: ask the stack what this machine should boot
chain http://\${next-server}/ipxe?mac=\${mac:hexhyp} || goto unknown
exit
:unknown
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

/** Kernel console per architecture: the first UART of q35 / virt. */
export function consoleArg(arch: VmDefinition['arch']): string {
  return arch === 'aarch64' ? 'console=ttyAMA0,115200' : 'console=ttyS0,115200';
}

/** Per-machine script: kernel and initrds over HTTP, with the installer's config URL. */
export function installScript(i: InstallScriptInput): string {
  const args = [
    ...i.initrds.map((r) => `initrd=${r.name}`),
    'ip=dhcp',
    consoleArg(i.vm.arch),
    `config_url=${i.base}/config/${i.mac}`,
    `pvmlab_events=${i.base}/api/machines/${i.mac}/events`,
    ...(i.extraArgs ?? []),
  ];
  return [
    '#!ipxe',
    `echo pvmlab: ${i.vm.name} (${i.mac}) ${i.vm.distro ?? ''} ${i.vm.arch}`,
    `kernel ${i.kernel} ${args.join(' ')} || goto failed`,
    ...i.initrds.map((r) => `initrd --name ${r.name} ${r.url} || goto failed`),
    'boot || goto failed',
    ':failed',
    `echo pvmlab: boot of ${i.vm.name} failed; dropping to the iPXE shell`,
    'shell',
    '',
  ].join('\n');
}

/** An installed machine boots its own disk: leave iPXE, the firmware tries the next boot option. */
export function localBootScript(vm: VmDefinition): string {
  return `#!ipxe
echo pvmlab: ${vm.name} is installed; booting from its disk (ask for a reinstall to install again)
exit 1
`;
}

/** A PXE VM created without a distro: say so on its console instead of failing obscurely. */
export function nothingToBootScript(vm: VmDefinition): string {
  return `#!ipxe
echo pvmlab: ${vm.name} has no distro to install (create it with: pvmlab vm create ${vm.name} --pxeboot --distro <name>)
sleep 5
exit 1
`;
}
