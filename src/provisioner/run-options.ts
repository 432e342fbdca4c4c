import type { VmDefinition } from '../core/vmdef.js';
import { SHARES, STACK_STATE_DIR } from '../cloudinit/provisioner.js';
import type { ResolvedLab } from '../lab/config.js';
import { parseSubnet } from '../lab/validate.js';

export interface RunFlags {
  /** `--network host`: dnsmasq must see the lab NIC's broadcasts. */
  networkHost: boolean;
  privileged: boolean;
}

/**
 * `docker run` options for the pxeboot_stack container: the user's flags, then what the image
 * needs from pvmlab (its environment and mounts, see docs/stack.md). Pure.
 */
export function stackRunOptions(prov: VmDefinition, lab: ResolvedLab, flags: RunFlags): string[] {
  const prefix = prov.subnet ? parseSubnet(prov.subnet, 'ipv4', 'subnet').prefix : lab.subnet.prefix;
  const env = [
    `PROVISIONER_IP=${prov.ip ?? lab.config.provisioner_ip}/${prefix}`,
    `DHCP_RANGE_START=${lab.config.dhcp_range_start}`,
    `DHCP_RANGE_END=${lab.config.dhcp_range_end}`,
  ];
  if (prov.ipv6 && prov.subnetv6) {
    env.push(`PROVISIONER_IPV6=${prov.ipv6}/${parseSubnet(prov.subnetv6, 'ipv6', 'subnetv6').prefix}`);
    if (lab.v6 && lab.v6.subnet.cidr === prov.subnetv6)
      env.push(`DHCP_RANGE_V6_START=${lab.v6.rangeStart}`, `DHCP_RANGE_V6_END=${lab.v6.rangeEnd}`);
  }
  return [
    '--restart',
    'unless-stopped',
    ...(flags.networkHost ? ['--network', 'host'] : []),
    ...(flags.privileged ? ['--privileged'] : []),
    ...env.flatMap((e) => ['-e', e]),
    '-v',
    `${SHARES.vms.path}:/mnt/host/vms`,
    '-v',
    `${SHARES.images.path}:/www/images:ro`,
    '-v',
    `${STACK_STATE_DIR}:${STACK_STATE_DIR}`,
  ];
}
