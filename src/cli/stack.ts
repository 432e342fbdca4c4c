import { Command, Option, type OptionValues } from '@commander-js/extra-typings';
import { join } from 'node:path';
import { PvmlabError, UsageError } from '../core/errors.js';
import { log } from '../core/log.js';
import { labDirs } from '../core/paths.js';
import type { Context } from './context.js';

/** The flags of `stack serve`; `stack start` takes the same ones and passes them on. */
function withServeOptions<A extends unknown[], O extends OptionValues>(cmd: Command<A, O>) {
  return cmd
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
    .option('--no-dns', 'no DNS for pvmlab.local (DHCP and TFTP only)');
}

/** Every flag of `stack serve` (and `stack start`) is checked before anything touches the network. */
async function checkServeFlags(ctx: Context, o: { httpPort: string; ipxeDir?: string | undefined }) {
  const { loadLabConfig, resolveLabConfig } = await import('../lab/config.js');
  const { parsePositiveInt } = await import('../lab/validate.js');
  const lab = resolveLabConfig(await loadLabConfig(ctx.app));
  const httpPort = parsePositiveInt(o.httpPort, '--http-port', 65535);
  if (o.ipxeDir !== undefined) {
    const { statSync } = await import('node:fs');
    if (!statSync(o.ipxeDir, { throwIfNoEntry: false })?.isDirectory())
      throw new UsageError(`--ipxe-dir ${o.ipxeDir} is not a directory`);
  }
  return { lab, httpPort };
}

const service = () => import('../lab/stack-service.js');

function seconds(text: string, flag: string): number {
  if (!/^\d+(\.\d+)?$/.test(text) || Number(text) <= 0 || Number(text) > 3600)
    throw new UsageError(`invalid ${flag} '${text}': expected seconds, more than 0 and at most 3600`);
  return Number(text) * 1000;
}

function formatUptime(s: number): string {
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  const parts = [d && `${d}d`, h && `${h}h`, m && `${m}m`, `${s % 60}s`].filter(Boolean);
  return parts.slice(0, 2).join(' ');
}

export function stackCommand(ctx: Context): Command {
  const stack = new Command('stack').description(
    'The pxeboot stack: DHCP/DNS/TFTP (dnsmasq) and the HTTP boot server',
  );
  withServeOptions(
    stack
      .command('serve')
      .description(
        'Run the stack in the foreground (the container entrypoint; natively on a Linux host on the lab bridge)',
      ),
  )
    // Set by `stack start`: names this process's pid file, which ties it to its lab; removed at exit.
    .addOption(new Option('--pid-file <file>').hideHelp())
    .action(async (o) => {
      const { lab, httpPort } = await checkServeFlags(ctx, o);
      const { DEFAULT_IPXE_DIRS, startStack } = await import('../stack/serve.js');
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
      // `stack start` waits for this line (src/lab/stack-service.ts).
      log.success(
        `Stack serving ${running.registry.size} machine(s) on ${iface}: ${running.url}${running.url6 ? ` and ${running.url6}` : ''}`,
      );
      await new Promise<void>((resolve) => {
        const stop = () => resolve();
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
      await running.close();
      if (o.pidFile !== undefined) await (await service()).releasePidFile(o.pidFile, process.pid);
    });

  withServeOptions(
    stack
      .command('start')
      .description(
        'Run `stack serve` with these flags in the background; returns once it answers /healthz (exit 0 if it already runs)',
      ),
  )
    .option('--timeout <seconds>', 'how long the stack may take to answer /healthz', '30')
    .action(async (o) => {
      const { lab, httpPort } = await checkServeFlags(ctx, o);
      const timeoutMs = seconds(o.timeout, '--timeout');
      const script = process.argv[1];
      if (!script) throw new UsageError('cannot tell how pvmlab was started (no script in argv)');
      const r = await (
        await service()
      ).startStackService({
        app: ctx.app,
        runner: ctx.runner,
        env: ctx.env,
        command: [process.execPath, script],
        flags: {
          interface: o.interface,
          address: o.address,
          vmsDir: o.vmsDir,
          imagesDir: o.imagesDir,
          initrdsDir: o.initrdsDir,
          stateDir: o.stateDir,
          ipxeDir: o.ipxeDir,
          httpPort,
          dnsmasq: o.dnsmasq,
          dns: o.dns,
        },
        defaultAddress: lab.config.provisioner_ip,
        timeoutMs,
      });
      if (r.status === 'already-running') {
        log.info(`The stack is already running (pid ${r.pid}): ${r.url}`);
        if (!r.sameFlags) log.warn('it runs with other flags: `pvmlab stack stop` first to change them');
        return;
      }
      if (r.killedDnsmasq !== undefined)
        log.warn(`killed an orphaned dnsmasq (pid ${r.killedDnsmasq}) left by a stack that died`);
      log.success(`Stack started (pid ${r.pid}): ${r.url}; log: ${r.log}`);
    });

  stack
    .command('stop')
    .description(
      'Stop the stack `stack start` runs (SIGTERM, SIGKILL after --timeout); exit 0 if it is not running',
    )
    .option('--timeout <seconds>', 'how long it may take to shut down before it is killed', '10')
    .action(async (o) => {
      const timeoutMs = seconds(o.timeout, '--timeout');
      const r = await (await service()).stopStackService(ctx.app, { timeoutMs, runner: ctx.runner });
      if (r.killedDnsmasq !== undefined)
        log.warn(`killed an orphaned dnsmasq (pid ${r.killedDnsmasq}) left by a stack that died`);
      if (r.status === 'not-running') {
        if (r.stalePid !== undefined)
          log.warn(
            `The stack is not running; removed a stale pid file (${r.stalePid > 0 ? `pid ${r.stalePid} is not this lab's stack` : 'unreadable'})`,
          );
        else log.warn('The stack is not running');
        return;
      }
      log.success(`Stack stopped (pid ${r.pid}${r.forced ? ', killed after the timeout' : ''})`);
    });

  stack
    .command('status')
    .description(
      'Is the background stack running, and healthy? Exits 0 either way, like `network status` (read `running` from --json)',
    )
    .option('--json', 'print JSON', false)
    .action(async (o) => {
      const { loadLabConfig } = await import('../lab/config.js');
      const s = await (
        await service()
      ).stackServiceStatus(ctx.app, {
        defaultAddress: (await loadLabConfig(ctx.app)).provisioner_ip,
        runner: ctx.runner,
      });
      if (o.json) {
        const { printJson } = await import('./output.js');
        return printJson(s);
      }
      if (!s.running) {
        log.out(
          `stack: stopped${s.stale_pid_file ? ` (stale pid file ${s.pid_file}${s.pid && s.pid > 0 ? `: pid ${s.pid} is not this lab's stack` : ''})` : ''}`,
        );
        log.out(`log: ${s.log}`);
        return;
      }
      const h = s.health;
      const dnsmasq =
        h?.dnsmasq === undefined
          ? ''
          : h.dnsmasq === 'off'
            ? ', dnsmasq off'
            : `, dnsmasq ${h.dnsmasq.pid === null ? 'not running' : `pid ${h.dnsmasq.pid}`} (${h.dnsmasq.restarts} restart(s))`;
      log.out(
        [
          `stack: running (pid ${s.pid}${s.uptime_s !== undefined ? `, up ${formatUptime(s.uptime_s)}` : ''})`,
          `url: ${s.url}`,
          h
            ? `health: ok, ${h.machines ?? 0} machine(s)${dnsmasq}`
            : `health: not answering (${s.health_error ?? 'no answer'})`,
          `log: ${s.log}`,
        ].join('\n'),
      );
    });

  stack
    .command('logs')
    .description("Print the background stack's log (stdout and stderr of `stack serve`)")
    .option('-f, --follow', 'keep printing new lines (Ctrl-C to stop)', false)
    .action(async (o) => {
      const { stackServiceFiles } = await service();
      const file = stackServiceFiles(ctx.app).log;
      const { pathExists } = await import('../core/fsutil.js');
      if (!(await pathExists(file)))
        throw new PvmlabError(`the stack has no log yet (${file}): run \`pvmlab stack start\` first`);
      if (!o.follow) {
        const { promises: fs } = await import('node:fs');
        process.stdout.write(await fs.readFile(file));
        return;
      }
      const r = await ctx.runner('tail', ['-n', '+1', '-F', file], { stdio: 'inherit' });
      if (r.code !== 0 && r.signal !== 'SIGINT') process.exitCode = r.code ?? 1;
    });
  return stack;
}
