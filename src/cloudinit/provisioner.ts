import { stringify } from 'yaml';
import { baseUserData } from '../core/labuser.js';
import type { SeedFile } from './nocloud.js';

/** What the provisioner's NoCloud seed needs to know. */
export interface ProvisionerSeedInput {
  name: string;
  /** Its NIC on the lab network, and the user-mode uplink's. */
  labMac: string;
  uplinkMac: string;
  ip: string;
  prefix: number;
  /** The lab's IPv4 network (a.b.c.d/nn): NAT for the targets. */
  subnet: string;
  ipv6?: string;
  prefix6?: number;
  subnet6?: string;
  dhcpRangeStart: string;
  dhcpRangeEnd: string;
  sshPublicKey: string;
  /** A pxeboot_stack tar in the docker_images share to load and run at first boot ('' = none). */
  stackTar: string;
  /** `docker run` options for that first start (pvmlab's env and mounts, --network host...). */
  bootRunOptions: readonly string[];
  user?: string;
}

/** Where the lab's host directories appear in the provisioner (9p mount tags and paths). */
export const SHARES = {
  vms: { tag: 'host_share_vms', path: '/mnt/host/vms' },
  images: { tag: 'host_share_images', path: '/mnt/host/images' },
  dockerImages: { tag: 'host_share_docker_images', path: '/mnt/host/docker_images' },
} as const;

/** The stack's state (timeline, leases) in the provisioner: kept when the container is replaced. */
export const STACK_STATE_DIR = '/var/lib/pvmlab/stack';
export const CONTAINER_NAME = 'pxeboot_stack';

/** 9p: bigger messages than the kernel's 8 KiB default (docker load reads a large tar over it). */
const NINEP_OPTS = 'trans=virtio,version=9p2000.L,msize=524288,nofail';

/** POSIX sh single-quoting. */
export function shQuote(s: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

export function provisionerMetaData(s: ProvisionerSeedInput): string {
  return stringify({
    'instance-id': `iid-pvmlab-provisioner-${s.name}`,
    'local-hostname': s.name,
    pxe_boot_stack_tar: s.stackTar,
    pxe_boot_stack_name: CONTAINER_NAME,
    provisioner_ip: s.ip,
    ...(s.ipv6 ? { provisioner_ipv6: s.ipv6 } : {}),
    dhcp_range_start: s.dhcpRangeStart,
    dhcp_range_end: s.dhcpRangeEnd,
    ...(s.ipv6 && s.prefix6 !== undefined ? { ipv6_subnet: `${s.ipv6}/${s.prefix6}` } : {}),
  });
}

/**
 * NAT for the targets out of the uplink. Docker sets the FORWARD policy to DROP, so the
 * forwarding rules go into DOCKER-USER, which it evaluates first and never flushes.
 */
export function natScript(s: Pick<ProvisionerSeedInput, 'subnet' | 'subnet6'>): string {
  const lines = [
    '#!/bin/sh',
    '# Written by pvmlab: the lab reaches the outside through this machine.',
    'set -e',
  ];
  const rules = (ipt: string, net: string) => [
    `${ipt} -t nat -C POSTROUTING -s ${net} ! -d ${net} -j MASQUERADE 2>/dev/null || ${ipt} -t nat -A POSTROUTING -s ${net} ! -d ${net} -j MASQUERADE`,
    `${ipt} -N DOCKER-USER 2>/dev/null || true`,
    `${ipt} -C DOCKER-USER -s ${net} -j ACCEPT 2>/dev/null || ${ipt} -I DOCKER-USER -s ${net} -j ACCEPT`,
    `${ipt} -C DOCKER-USER -d ${net} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT 2>/dev/null || ${ipt} -I DOCKER-USER -d ${net} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`,
  ];
  lines.push(...rules('iptables', s.subnet));
  if (s.subnet6) lines.push(...rules('ip6tables', s.subnet6));
  return `${lines.join('\n')}\n`;
}

/**
 * At boot: a pxeboot_stack container that exists is left to docker's restart policy (a
 * container the user stopped stays stopped); with none yet, the tar named at create time is
 * loaded and run once.
 */
export function stackBootScript(s: Pick<ProvisionerSeedInput, 'stackTar' | 'bootRunOptions'>): string {
  const tar = s.stackTar ? `${SHARES.dockerImages.path}/${s.stackTar}` : '';
  return [
    '#!/bin/sh',
    '# Written by pvmlab: start the pxeboot stack at boot once an image is there.',
    'set -e',
    `if docker container inspect ${CONTAINER_NAME} >/dev/null 2>&1; then exit 0; fi`,
    `tar=${shQuote(tar)}`,
    'if [ -z "$tar" ] || [ ! -s "$tar" ]; then echo "pxeboot-stack: no container and no image to load yet"; exit 0; fi',
    'image=$(docker load -i "$tar" | sed -n "s/^Loaded image: //p; s/^Loaded image ID: //p" | tail -n 1)',
    '[ -n "$image" ] || { echo "pxeboot-stack: $tar holds no image" >&2; exit 1; }',
    `mkdir -p ${STACK_STATE_DIR}`,
    `docker run -d --name ${CONTAINER_NAME} ${s.bootRunOptions.map(shQuote).join(' ')} "$image"`,
    '',
  ].join('\n');
}

const NAT_UNIT = `[Unit]
Description=pvmlab: NAT and forwarding for the lab network
After=docker.service network-online.target
Wants=docker.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/pvmlab-nat

[Install]
WantedBy=multi-user.target
`;

const STACK_UNIT = `[Unit]
Description=pvmlab: start the pxeboot_stack container once an image is loaded
After=docker.service remote-fs.target pvmlab-nat.service
Requires=docker.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/pxeboot-stack-boot

[Install]
WantedBy=multi-user.target
`;

/** Forwarding for the targets; RAs still accepted on the uplink (forwarding=1 turns them off). */
const SYSCTL = `net.ipv4.ip_forward=1
net.ipv6.conf.all.forwarding=1
net.ipv6.conf.all.accept_ra=2
net.ipv6.conf.default.accept_ra=2
`;

export function provisionerUserData(s: ProvisionerSeedInput): string {
  const base = baseUserData(s.name, s.sshPublicKey, s.user);
  // The lab user runs docker without sudo, as the seed document's `docker exec|logs|inspect` do.
  const users = base.users.map((u) => ({ ...u, groups: ['docker'] }));
  const doc = {
    ...base,
    users,
    // growpart has no partition to grow: the file system is the whole disk. (`mode: off` would
    // read as the boolean false in cloud-init's YAML 1.1; `devices: []` says it plainly.)
    growpart: { devices: [] },
    resize_rootfs: true,
    // RSA host keys take seconds to generate under emulation; ed25519 and ECDSA are enough.
    ssh_genkeytypes: ['ed25519', 'ecdsa'],
    mounts: [
      [SHARES.vms.tag, SHARES.vms.path, '9p', NINEP_OPTS, '0', '0'],
      [SHARES.images.tag, SHARES.images.path, '9p', `${NINEP_OPTS},ro`, '0', '0'],
      [SHARES.dockerImages.tag, SHARES.dockerImages.path, '9p', NINEP_OPTS, '0', '0'],
    ],
    write_files: [
      { path: '/etc/sysctl.d/90-pvmlab.conf', permissions: '0644', content: SYSCTL },
      { path: '/usr/local/sbin/pvmlab-nat', permissions: '0755', content: natScript(s) },
      { path: '/etc/systemd/system/pvmlab-nat.service', permissions: '0644', content: NAT_UNIT },
      { path: '/usr/local/sbin/pxeboot-stack-boot', permissions: '0755', content: stackBootScript(s) },
      { path: '/etc/systemd/system/pxeboot-stack.service', permissions: '0644', content: STACK_UNIT },
    ],
    runcmd: [
      ['mkdir', '-p', STACK_STATE_DIR],
      ['sysctl', '--system'],
      ['systemctl', 'daemon-reload'],
      ['systemctl', 'enable', '--now', 'docker.service', 'pvmlab-nat.service', 'pxeboot-stack.service'],
    ],
  };
  return `#cloud-config\n${stringify(doc)}`;
}

/** Uplink by DHCP from QEMU's user-mode network; the lab NIC static, no gateway on it. */
export function provisionerNetworkConfig(s: ProvisionerSeedInput): string {
  const addresses = [`${s.ip}/${s.prefix}`];
  if (s.ipv6 && s.prefix6 !== undefined) addresses.push(`${s.ipv6}/${s.prefix6}`);
  return stringify({
    version: 2,
    ethernets: {
      uplink: { match: { macaddress: s.uplinkMac }, dhcp4: true },
      lab: { match: { macaddress: s.labMac }, dhcp4: false, 'accept-ra': false, addresses },
    },
  });
}

export function provisionerSeedFiles(s: ProvisionerSeedInput): SeedFile[] {
  return [
    { name: 'meta-data', content: provisionerMetaData(s) },
    { name: 'user-data', content: provisionerUserData(s) },
    { name: 'network-config', content: provisionerNetworkConfig(s) },
    { name: 'vendor-data', content: '' },
  ];
}

/**
 * The uplink NIC's MAC: the lab MAC with its last bit flipped. It lives on QEMU's private
 * user-mode network only; it just has to differ from the lab NIC's for cloud-init's match.
 */
export function uplinkMac(labMac: string): string {
  const parts = labMac.split(':');
  const last = parseInt(parts[5] ?? '0', 16) ^ 1;
  parts[5] = last.toString(16).padStart(2, '0');
  return parts.join(':');
}
