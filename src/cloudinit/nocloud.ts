import { stringify } from 'yaml';
import { baseUserData } from '../core/labuser.js';

/** What a disk VM's NoCloud seed needs to know. */
export interface TargetSeedInput {
  name: string;
  mac: string;
  ip: string;
  prefix: number;
  ipv6?: string;
  prefix6?: number;
  /** The provisioner: default route (it NATs to the uplink) and DNS server for pvmlab.local. */
  gateway: string;
  sshPublicKey: string;
  user?: string;
}

export const DNS_DOMAIN = 'pvmlab.local';

export function metaData(s: TargetSeedInput): string {
  return stringify({ 'instance-id': `iid-pvmlab-${s.name}`, 'local-hostname': s.name });
}

/**
 * The lab user logs in with the lab key only: no password SSH, locked password.
 * Passwordless sudo, as on cloud images.
 */
export function userData(s: TargetSeedInput): string {
  const doc = baseUserData(s.name, s.sshPublicKey, s.user);
  return `#cloud-config\n${stringify(doc)}`;
}

/**
 * Static addressing from the VM definition, matched on the MAC, so a disk VM is reachable
 * whether or not the provisioner's DHCP is up yet.
 */
export function networkConfig(s: TargetSeedInput): string {
  const addresses = [`${s.ip}/${s.prefix}`];
  if (s.ipv6 && s.prefix6 !== undefined) addresses.push(`${s.ipv6}/${s.prefix6}`);
  const doc = {
    version: 2,
    ethernets: {
      lab0: {
        match: { macaddress: s.mac },
        dhcp4: false,
        addresses,
        // 0.0.0.0/0 rather than `default`: cloud-init before 23.x rejects the keyword.
        routes: [{ to: '0.0.0.0/0', via: s.gateway }],
        nameservers: { addresses: [s.gateway], search: [DNS_DOMAIN] },
      },
    },
  };
  return stringify(doc);
}

export interface SeedFile {
  name: string;
  content: string;
}

export function targetSeedFiles(s: TargetSeedInput): SeedFile[] {
  return [
    { name: 'meta-data', content: metaData(s) },
    { name: 'user-data', content: userData(s) },
    { name: 'network-config', content: networkConfig(s) },
    { name: 'vendor-data', content: '' },
  ];
}
