import { baseUserData } from '../core/labuser.js';
import type { VmDefinition } from '../core/vmdef.js';

/**
 * NoCloud documents for a PXE-installed target, served at /cloud-init/<name>/... and written
 * by the installer into the target's seed directory. JSON is valid YAML, and keeps the stack
 * free of a YAML dependency (it ships alone in the container).
 */
export function targetMetaData(vm: VmDefinition): string {
  return `${JSON.stringify({ 'instance-id': `iid-pvmlab-${vm.name}`, 'local-hostname': vm.name }, null, 2)}\n`;
}

export function targetUserData(vm: VmDefinition, phoneHomeUrl: string): string {
  const doc = {
    ...baseUserData(vm.name, vm.ssh_key),
    // Host keys every OpenSSH client of the last decade takes; RSA (6-15 s) and DSA keygen under
    // emulation were the slowest part of a first boot.
    ssh_genkeytypes: ['ed25519', 'ecdsa'],
    // Marks the machine "ready" on its timeline once cloud-init has finished.
    phone_home: { url: phoneHomeUrl, post: ['instance_id', 'hostname'], tries: 10 },
  };
  return `#cloud-config\n${JSON.stringify(doc, null, 2)}\n`;
}

export function targetNetworkConfig(vm: VmDefinition): string {
  const doc = {
    version: 2,
    ethernets: {
      lab0: {
        match: { macaddress: vm.mac },
        dhcp4: true,
        ...(vm.ipv6 ? { dhcp6: true } : {}),
      },
    },
  };
  return `${JSON.stringify(doc, null, 2)}\n`;
}
