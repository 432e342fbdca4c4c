/**
 * The lab's login on every target, as a cloud-init `users` entry: key-only SSH, a locked
 * password, passwordless sudo (as on cloud images). Shared by the host-written seed and the
 * stack's documents for PXE-installed machines, so both log in the same way.
 */
export const LAB_USER = 'ubuntu';

export function labUserEntry(sshPublicKey: string | undefined, name = LAB_USER) {
  return {
    name,
    sudo: 'ALL=(ALL) NOPASSWD:ALL',
    shell: '/bin/bash',
    lock_passwd: true,
    ssh_authorized_keys: sshPublicKey ? [sshPublicKey.trim()] : [],
  };
}

/** The common `#cloud-config` keys: hostname, FQDN in pvmlab.local, no password SSH, the lab user. */
export function baseUserData(hostname: string, sshPublicKey: string | undefined, user = LAB_USER) {
  return {
    hostname,
    fqdn: `${hostname}.pvmlab.local`,
    manage_etc_hosts: true,
    ssh_pwauth: false,
    users: [labUserEntry(sshPublicKey, user)],
  };
}
