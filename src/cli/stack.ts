import { Command, Option, type OptionValues } from '@commander-js/extra-typings';
import { join } from 'node:path';
import { PvmlabError, UsageError } from '../core/errors.js';
import { log } from '../core/log.js';
import { labDirs } from '../core/paths.js';
import type { Context } from './context.js';
import { safeLines, safeText } from '../core/safe-text.js';

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

interface ServeFlags {
  httpPort: string;
  address?: string | undefined;
  interface?: string | undefined;
  ipxeDir?: string | undefined;
  vmsDir?: string | undefined;
  imagesDir?: string | undefined;
  initrdsDir?: string | undefined;
  stateDir?: string | undefined;
}

/**
 * Every flag of `stack serve` (and `stack start`) is checked before anything touches the network
 * or the disk: a bad one is a usage error (exit 2) with nothing written.
 */
async function checkServeFlags(ctx: Context, o: ServeFlags) {
  const { loadLabConfig, resolveLabConfig } = await import('../lab/config.js');
  const { parseAddress, parsePositiveInt } = await import('../lab/validate.js');
  const httpPort = parsePositiveInt(o.httpPort, '--http-port', 65535);
  if (o.address !== undefined) checkServeAddress(parseAddress, o.address);
  if (o.interface !== undefined) checkInterfaceName(o.interface);
  const { statSync } = await import('node:fs');
  if (o.ipxeDir !== undefined && !statSync(o.ipxeDir, { throwIfNoEntry: false })?.isDirectory())
    throw new UsageError(`--ipxe-dir ${o.ipxeDir} is not a directory`);
  // These may not exist yet (the stack creates them), but something else in their place is an error.
  for (const [flag, dir] of [
    ['--vms-dir', o.vmsDir],
    ['--images-dir', o.imagesDir],
    ['--initrds-dir', o.initrdsDir],
    ['--state-dir', o.stateDir],
  ] as const) {
    if (dir === undefined) continue;
    if (dir === '') throw new UsageError(`${flag} must not be empty`);
    const st = statSync(dir, { throwIfNoEntry: false });
    if (st && !st.isDirectory()) throw new UsageError(`${flag} ${dir} is not a directory`);
  }
  const lab = resolveLabConfig(await loadLabConfig(ctx.app));
  return { lab, httpPort };
}

/** --address: the provisioner's IPv4 address, one host (the stack listens on it and hands it out). */
function checkServeAddress(
  parseAddress: typeof import('../lab/validate.js').parseAddress,
  address: string,
): void {
  const p = parseAddress(address, 'ipv4', '--address');
  if (p.prefix !== undefined)
    throw new UsageError(`invalid --address '${address}': an address without a /prefix, e.g. 192.168.100.1`);
  const first = Number(p.address.split('.')[0]);
  if (p.address === '0.0.0.0' || p.address === '255.255.255.255' || (first >= 224 && first <= 239))
    throw new UsageError(`invalid --address '${address}': not a host address, e.g. 192.168.100.1`);
}

/** --interface: a Linux interface name (IFNAMSIZ: at most 15 bytes; no '/', ':' or white space). */
export function checkInterfaceName(name: string): void {
  // eslint-disable-next-line no-control-regex
  if (!/^[^/:\s\u0000-\u001f\u007f]{1,15}$/.test(name) || name === '.' || name === '..')
    throw new UsageError(
      `invalid --interface '${name}': an interface name has 1 to 15 characters, none of them '/', ':' or white space`,
    );
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
        // The stack logs what clients send it (paths, event types): escaped for the terminal.
        log: (m) => log.info(safeLines(m)),
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
        log.info(`The stack is already running (pid ${r.pid}): ${safeText(r.url)}`);
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
          `stack: stopped${s.stale_pid_file ? ` (stale pid file ${safeText(s.pid_file)}${s.pid && s.pid > 0 ? `: pid ${s.pid} is not this lab's stack` : ''})` : ''}`,
        );
        log.out(`log: ${safeText(s.log)}`);
        return;
      }
      // /healthz is the peer's answer: checked before it is printed (a wrong one is no health).
      const { HealthSchema, checkStackValue } = await import('./stack-api.js');
      const { healthProblem } = await service();
      const checked = s.health !== undefined ? checkStackValue(HealthSchema, s.health) : undefined;
      const h = checked?.ok ? checked.value : undefined;
      const healthError =
        checked && !checked.ok
          ? `${s.url ?? 'the stack'}/healthz answered with something pvmlab does not understand: ${checked.error}`
          : (s.health_error ?? 'no answer');
      const dnsmasq =
        h?.dnsmasq === undefined
          ? ''
          : h.dnsmasq === 'off'
            ? ', dnsmasq off'
            : `, dnsmasq ${h.dnsmasq.pid === null ? 'not running' : `pid ${h.dnsmasq.pid}`} (${h.dnsmasq.restarts} restart(s))`;
      log.out(
        [
          `stack: running (pid ${s.pid}${s.uptime_s !== undefined ? `, up ${formatUptime(s.uptime_s)}` : ''})`,
          `url: ${safeText(s.url ?? '')}`,
          h
            ? `health: ${h.ok ? 'ok' : `NOT OK: ${safeText(healthProblem(h))}`}, ${h.machines ?? 0} machine(s)${dnsmasq}`
            : `health: not answering (${safeText(healthError)})`,
          `log: ${safeText(s.log)}`,
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
        const { printFile } = await import('./output-file.js');
        return printFile(file, 'the stack log');
      }
      const r = await ctx.runner('tail', ['-n', '+1', '-F', file], { stdio: 'inherit' });
      // SIGPIPE: the reader went away (`| head`), which is how a follow ends too.
      if (r.code !== 0 && r.signal !== 'SIGINT' && r.signal !== 'SIGPIPE') process.exitCode = r.code ?? 1;
    });
  return stack;
}
