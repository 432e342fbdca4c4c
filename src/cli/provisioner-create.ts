import type { Command } from '@commander-js/extra-typings';
import { log } from '../core/log.js';
import { normalizeMac, parsePositiveInt, parseSize, validateArch, validateName } from '../lab/validate.js';
import { hostArch } from '../qemu/accel.js';
import { ensureLabDirs, type Context } from './context.js';
import { parseMemory } from './vm.js';

/** `provisioner create <name> --ip CIDR ...`: the original's flags, plus --image, --memory, --cpus. */
export function addProvisionerCreate(parent: Command, ctx: Context): void {
  parent
    .command('create')
    .description('Create the provisioner VM, which runs the pxeboot_stack container for the lab')
    .argument('<vm-name>', 'VM name (a hostname: lowercase letters, digits, -)')
    .option('--ip <cidr>', "the provisioner's address on the lab network, e.g. 192.168.100.1/24 (required)")
    .option('--ipv6 <cidr>', 'its IPv6 address, e.g. fd00:cafe:babe::1/64')
    .option('--mac <mac>', 'MAC address of its lab NIC (default: random, locally administered)')
    .option('--disk-size <size>', 'disk size', '15G')
    .option('--arch <arch>', "'x86_64' or 'aarch64' (default: the host's)")
    .option('--docker-pxeboot-stack-tar <tar>', 'a pxeboot_stack image tar to load and run at first boot')
    .option(
      '--docker-images-path <dir>',
      'host directory shared as /mnt/host/docker_images (default: ~/.pvmlab/docker_images)',
    )
    .option('--vms-path <dir>', 'host directory shared as /mnt/host/vms (default: ~/.pvmlab/vms)')
    .option('--image <qcow2>', 'boot this disk image instead of the one built from Debian packages')
    .option('--memory <size>', 'memory in MiB (or with a unit, e.g. 4G)', '4096')
    .option('--cpus <n>', 'virtual CPUs', '2')
    .action(async (name, o) => {
      validateName(name);
      if (o.ip === undefined)
        throw new (await import('../core/errors.js')).UsageError(
          '--ip must be specified for the provisioner VM, e.g. --ip 192.168.100.1/24',
        );
      const arch = validateArch(o.arch ?? hostArch() ?? 'x86_64');
      const req = {
        name,
        arch,
        ip: o.ip,
        ...(o.ipv6 !== undefined ? { ipv6: o.ipv6 } : {}),
        ...(o.mac !== undefined ? { mac: normalizeMac(o.mac) } : {}),
        diskBytes: parseSize(o.diskSize),
        ...(o.dockerPxebootStackTar !== undefined ? { stackTar: o.dockerPxebootStackTar } : {}),
        ...(o.dockerImagesPath !== undefined ? { dockerImagesPath: o.dockerImagesPath } : {}),
        ...(o.vmsPath !== undefined ? { vmsPath: o.vmsPath } : {}),
        ...(o.image !== undefined ? { image: o.image } : {}),
        memoryMiB: parseMemory(o.memory),
        cpus: parsePositiveInt(o.cpus, '--cpus', 64),
      };
      const { createProvisioner } = await import('../provisioner/create.js');
      log.info(`Creating provisioner VM: ${name}`);
      const vm = await createProvisioner(
        {
          ...ctx,
          onStep: (m) => log.info(m),
          warn: (m) => log.warn(m),
        },
        { ...req },
      );
      await ensureLabDirs(ctx.app);
      log.success(
        `Provisioner '${vm.name}' created: ${vm.ip}${vm.ipv6 ? ` ${vm.ipv6}` : ''} ${vm.mac}. Next: pvmlab vm start ${vm.name} --wait`,
      );
    });
}
