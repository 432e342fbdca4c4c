import { Command } from '@commander-js/extra-typings';
import { join } from 'node:path';
import { UsageError } from '../core/errors.js';
import { log } from '../core/log.js';
import { labDirs } from '../core/paths.js';
import type { Context } from './context.js';

export function stackCommand(ctx: Context): Command {
  const stack = new Command('stack').description(
    'The pxeboot stack: DHCP/DNS/TFTP (dnsmasq) and the HTTP boot server',
  );
  stack
    .command('serve')
    .description(
      'Run the stack in the foreground (the container entrypoint; natively on a Linux host on the lab bridge)',
    )
    .option('--interface <name>', 'lab network interface (default: the lab bridge)')
    .option('--address <ip>', "the provisioner's address to serve on (default: lab.yaml provisioner_ip)")
    .option('--vms-dir <dir>', 'VM definitions (default: ~/.pvmlab/vms)')
    .option('--images-dir <dir>', 'distro assets served at /images (default: ~/.pvmlab/images)')
    .option('--initrds-dir <dir>', 'installer initrds served at /initrds (default: ~/.pvmlab/initrds)')
    .option('--state-dir <dir>', 'dnsmasq config, TFTP root, timeline (default: ~/.pvmlab/stack)')
    .option('--http-port <port>', 'HTTP port', '80')
    .option(
      '--ipxe-dir <dir>',
      'look here first for iPXE builds (ipxe-x86_64.efi, ipxe-arm64.efi, undionly.kpxe), e.g. your own',
    )
    .option('--no-dnsmasq', 'serve HTTP only (another DHCP/TFTP server is in charge)')
    .option('--no-dns', 'no DNS for pvmlab.local (DHCP and TFTP only)')
    .action(async (o) => {
      const { loadLabConfig, resolveLabConfig } = await import('../lab/config.js');
      const { parsePositiveInt } = await import('../lab/validate.js');
      const { DEFAULT_IPXE_DIRS, startStack } = await import('../stack/serve.js');
      const lab = resolveLabConfig(await loadLabConfig(ctx.app));
      // Every flag is checked before anything touches the network.
      const httpPort = parsePositiveInt(o.httpPort, '--http-port', 65535);
      if (o.ipxeDir !== undefined) {
        const { statSync } = await import('node:fs');
        if (!statSync(o.ipxeDir, { throwIfNoEntry: false })?.isDirectory())
          throw new UsageError(`--ipxe-dir ${o.ipxeDir} is not a directory`);
      }
      const d = labDirs(ctx.app);
      const iface = o.interface ?? lab.config.bridge;
      const address = o.address ?? lab.config.provisioner_ip;
      if (!o.address && process.platform === 'linux') {
        // Natively, the provisioner's address lives on the lab bridge beside the host's.
        const { runChecked } = await import('../core/exec.js');
        const { ipArgv } = await import('../net/bridge.js');
        await runChecked(ctx.runner, 'ip', ipArgv.addrReplace(iface, `${address}/${lab.subnet.prefix}`));
        if (lab.v6) {
          await runChecked(ctx.runner, 'ip', ipArgv.addrReplace6(iface, `${lab.v6.provisioner}/64`));
        } else {
          // An IPv6 prefix for router advertisements (iPXE boots ~16 s sooner when it gets one).
          const { labUlaPrefix } = await import('../stack/dnsmasq.js');
          await runChecked(
            ctx.runner,
            'ip',
            ipArgv.addrReplace6(iface, `${labUlaPrefix(lab.subnet.network)}1/64`),
          );
        }
      }
      const running = await startStack({
        iface,
        address,
        rangeStart: lab.config.dhcp_range_start,
        rangeEnd: lab.config.dhcp_range_end,
        ...(lab.v6
          ? {
              ipv6: {
                address: lab.v6.provisioner,
                prefix: lab.v6.subnet.prefix,
                rangeStart: lab.v6.rangeStart,
                rangeEnd: lab.v6.rangeEnd,
              },
            }
          : {}),
        vmsDir: o.vmsDir ?? d.vms,
        imagesDir: o.imagesDir ?? d.images,
        initrdsDir: o.initrdsDir ?? join(ctx.app, 'initrds'),
        stateDir: o.stateDir ?? join(ctx.app, 'stack'),
        httpPort,
        ipxeDirs: [...(o.ipxeDir !== undefined ? [o.ipxeDir] : []), ...DEFAULT_IPXE_DIRS],
        dnsmasq: o.dnsmasq,
        dns: o.dns,
        log: (m) => log.info(m),
      });
      log.success(
        `Stack serving ${running.registry.size} machine(s) on ${iface}: ${running.url}${running.url6 ? ` and ${running.url6}` : ''}`,
      );
      await new Promise<void>((resolve) => {
        const stop = () => resolve();
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
      await running.close();
    });
  return stack;
}
