import { Command } from '@commander-js/extra-typings';
import { PvmlabError } from '../core/errors.js';
import { log } from '../core/log.js';
import type { Context } from './context.js';
import { printJson } from './output.js';
import { safeText } from '../core/safe-text.js';

/** Implementations load on use, so `pvmlab --help` and `vm list` stay quick. */
async function labDriver(ctx: Context) {
  const { loadLabConfig } = await import('../lab/config.js');
  const { networkDriver } = await import('./network-driver.js');
  return networkDriver(ctx, await loadLabConfig(ctx.app));
}
const launchd = () => import('../net/launchd.js');

export function networkCommand(ctx: Context): Command {
  const net = new Command('network').description(
    'Start, stop or inspect the lab network (bridge on Linux, socket_vmnet on macOS)',
  );
  net
    .command('start')
    .description('Create the lab network')
    .action(async () => {
      const driver = await labDriver(ctx);
      await driver.start();
      const s = await driver.status();
      log.success(`Lab network ${safeText(s.name)} (${safeText(s.driver)}) is up`);
    });
  net
    .command('stop')
    .description('Remove the lab network')
    .option('--force', 'remove it even while VMs run on it (they lose their network)', false)
    .action(async (o) => {
      // Removing the bridge under running VMs cuts them off: refused unless asked for.
      const { runningVms } = await import('../qemu/process.js');
      const running = o.force ? [] : await runningVms(ctx.app);
      if (running.length)
        throw new PvmlabError(
          `VM(s) ${running.join(', ')} still run on the lab network: stop them first (pvmlab vm stop <name>), or use --force`,
        );
      const driver = await labDriver(ctx);
      await driver.stop();
      log.success('Lab network stopped');
    });
  net
    .command('status')
    .description('Show the lab network')
    .option('--json', 'print JSON', false)
    .action(async (o) => {
      const s = await (await labDriver(ctx)).status();
      if (o.json) return printJson(s);
      // Names and details come from lab.yaml and from `ip`: escaped for the terminal.
      const detail = Object.entries(s.detail)
        .map(([k, v]) => `${safeText(k)}=${safeText(String(v))}`)
        .join(' ');
      log.out(
        `${safeText(s.driver)} ${safeText(s.name)}: ${s.up ? 'up' : 'down'}${detail ? ` (${detail})` : ''}`,
      );
    });
  return net;
}

export function socketVmnetCommand(ctx: Context): Command {
  const cmd = new Command('socket_vmnet').description('Manage the socket_vmnet launchd service (macOS)');
  cmd
    .command('start')
    .description('Start the socket_vmnet service (may ask for your sudo password)')
    .action(async () => {
      await (await launchd()).serviceStart(ctx.runner);
      log.success('socket_vmnet service started');
    });
  cmd
    .command('stop')
    .description('Stop the socket_vmnet service')
    .action(async () => {
      await (await launchd()).serviceStop(ctx.runner);
      log.success('socket_vmnet service stopped');
    });
  cmd
    .command('status')
    .description('Is the socket_vmnet service running?')
    .option('--json', 'print JSON', false)
    .action(async (o) => {
      const s = await (await launchd()).serviceStatus(ctx.runner);
      const { socketVmnetSocketPath } = await import('../net/socketvmnet.js');
      if (o.json) return printJson({ ...s, socket: socketVmnetSocketPath(ctx.env) });
      log.out(
        s.running
          ? `socket_vmnet is running${s.pid ? ` (pid ${s.pid})` : ''}`
          : `socket_vmnet is ${s.loaded ? 'loaded but not running' : 'not loaded'}`,
      );
    });
  return cmd;
}

export function systemCommand(ctx: Context): Command {
  const sys = new Command('system').description('System-level setup');
  sys
    .command('setup-launchd')
    .description('Install and start the socket_vmnet launchd service (macOS, run with sudo)')
    .action(async () => {
      const { setupLaunchd, resolveSocketVmnetBinary } = await launchd();
      const { socketVmnetSocketPath } = await import('../net/socketvmnet.js');
      const steps = await setupLaunchd({
        runner: ctx.runner,
        socketVmnetBinary: resolveSocketVmnetBinary(ctx.env),
        socketPath: socketVmnetSocketPath(ctx.env),
      });
      for (const s of steps) (s.kind === 'done' ? log.success : log.warn)(safeText(s.message));
    });
  return sys;
}
