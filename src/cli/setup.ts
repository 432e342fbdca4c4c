import { Command, Option } from '@commander-js/extra-typings';
import { promises as fs } from 'node:fs';
import { PvmlabError, UsageError } from '../core/errors.js';
import { writeFileAtomic } from '../core/fsutil.js';
import { log } from '../core/log.js';
import { labDirs } from '../core/paths.js';
import type { Context } from './context.js';
import type { LabConfig } from '../lab/config.js';
import { printJson } from './output.js';

export function setupCommand(ctx: Context): Command {
  return new Command('setup')
    .description('Create ~/.pvmlab, the lab SSH key and settings, and check the tools pvmlab needs')
    .option('--subnet <cidr>', 'lab IPv4 subnet (provisioner at .1, the host at the last address)')
    .option(
      '--subnet6 <cidr>',
      'lab IPv6 /64: DHCPv6 reservations and router advertisements, e.g. fd00:cafe:babe::/64',
    )
    .option('--bridge <name>', 'Linux bridge name for the lab network')
    .addOption(
      new Option('--network <driver>', 'lab network driver').choices(['bridge', 'socket_vmnet'] as const),
    )
    .option('--json', 'print the dependency report as JSON', false)
    .action(async (o) => {
      const { ensureLabDirs } = await import('./context.js');
      const {
        checkLabConfig,
        labConfigForSubnet,
        labConfigPath,
        parseSubnet6,
        repairLabConfig,
        saveLabConfig,
      } = await import('../lab/config.js');
      const { ensureDistrosFile, loadDistros } = await import('../distro/distros.js');
      const { ensureLabSshKey } = await import('../lab/sshkey.js');
      const { checkDependencies, packageHints } = await import('./deps.js');
      // Every flag is checked before anything is written: a refused setup leaves no trace.
      // The file is read leniently, so that setup can always repair a lab.yaml nothing else accepts.
      const current = await repairLabConfig(ctx.app);
      let config: LabConfig = current.config;
      if (o.subnet !== undefined) config = labConfigForSubnet(o.subnet, config);
      if (o.subnet6 !== undefined)
        config = { ...config, subnetv6: parseSubnet6(o.subnet6, '--subnet6').cidr };
      if (o.bridge !== undefined) config = { ...config, bridge: await checkBridgeName(o.bridge) };
      if (o.network) config = { ...config, network: o.network };
      try {
        checkLabConfig(config, 'the new settings');
      } catch (err) {
        throw new UsageError((err as Error).message);
      }
      await refuseRenumbering(ctx.app, current.config, config);
      if (!o.json) log.info(`Setting up pvmlab in ${ctx.app}`);
      await ensureLabDirs(ctx.app);
      if (current.original !== undefined) {
        const path = labConfigPath(ctx.app);
        await writeFileAtomic(`${path}.bak`, current.original);
        for (const d of current.dropped) log.warn(`${path}: ${d}`);
        log.warn(`${path} repaired (the old file is kept as ${path}.bak)`);
      }
      await saveLabConfig(ctx.app, config);
      await ensureDistrosFile(ctx.app);
      await loadDistros(ctx.app); // a broken distros.yaml is reported here, not at the first create
      const key = await ensureLabSshKey(ctx.app);
      const deps = checkDependencies(process.platform, ctx.env);
      const missing = deps.filter((d) => !d.found && d.required);
      if (o.json)
        printJson({
          app: ctx.app,
          lab: config,
          sshKey: key.path,
          sshKeyCreated: key.created,
          dependencies: deps,
        });
      else {
        log.success(
          `Lab settings: subnet ${config.subnet}, ${config.network} network${config.network === 'bridge' ? ` on ${config.bridge}` : ''}`,
        );
        log.success(
          key.created
            ? `SSH key generated: ${key.path}`
            : `SSH key present: ${key.path}${key.kind === 'go-rsa' ? ' (made by the Go pvmlab; kept)' : ''}`,
        );
        for (const d of deps) {
          if (d.found) log.success(`${d.name}: ${d.path}`);
          else (d.required ? log.error : log.warn)(`${d.name} not found (${d.why}); ${packageHints(d.name)}`);
        }
        await reportAccelerator(ctx);
      }
      if (missing.length)
        throw new PvmlabError(`missing required tools: ${missing.map((d) => d.name).join(', ')}`);
      if (!o.json) log.success('Setup complete.');
    });
}

/** `--bridge`, by the rule lab.yaml is read by. */
async function checkBridgeName(name: string): Promise<string> {
  const v = await import('valibot');
  const { LabConfigSchema } = await import('../lab/config.js');
  if (!v.safeParse(LabConfigSchema.entries.bridge, name).success)
    throw new UsageError(
      `invalid --bridge '${name}': a Linux interface name is 1-15 letters, digits, '-', '_' or '.' (e.g. pvmlab0)`,
    );
  return name;
}

/**
 * The lab's addresses are in every VM's definition (and its seed and the stack's hosts files):
 * a subnet change with VMs defined would renumber nothing and strand them, so it is refused.
 */
async function refuseRenumbering(app: string, from: LabConfig, to: LabConfig): Promise<void> {
  const changed = [
    from.subnet !== to.subnet ? `subnet ${from.subnet} -> ${to.subnet}` : undefined,
    // Adding a first IPv6 subnet moves nothing; changing or removing one would.
    from.subnetv6 !== undefined && from.subnetv6 !== to.subnetv6
      ? `subnetv6 ${from.subnetv6 ?? '(none)'} -> ${to.subnetv6 ?? '(none)'}`
      : undefined,
  ].filter((c): c is string => c !== undefined);
  if (changed.length === 0) return;
  const { listVms } = await import('../lab/store.js');
  const { vms, invalid } = await listVms(app);
  const names = [...vms.map((v) => v.name), ...invalid.map((i) => i.claim.name)];
  if (names.length === 0) return;
  throw new UsageError(
    `cannot change the lab's addresses (${changed.join(', ')}) while VMs are defined: ${names.join(', ')} keep their addresses in the old subnet and pvmlab does not renumber them; remove them first (pvmlab vm clean <name>), then run setup again`,
  );
}

/** Probe (once, then cached) which accelerator host-arch guests get, so `vm start` need not. */
async function reportAccelerator(ctx: Context): Promise<void> {
  const { describeChoice, resolveHostAccel } = await import('../qemu/accel.js');
  try {
    const r = await resolveHostAccel(ctx.app, ctx.runner, ctx.env);
    if (r) log.success(`Accelerator for ${r.arch} guests: ${describeChoice(r.choice)}`);
  } catch (err) {
    log.warn(`accelerator not checked: ${(err as Error).message}`);
  }
}

export function cleanCommand(ctx: Context): Command {
  return new Command('clean')
    .description(
      'Stop the background stack and all VMs, remove their files; downloaded images, the SSH key and settings are kept',
    )
    .option('--purge', 'remove the whole ~/.pvmlab directory, images included', false)
    .action(async (o) => {
      // First the background stack (`stack start`): removing pids/ and logs/ under it would
      // orphan it, and its dnsmasq with it. A failure to stop it stops `clean`, nothing removed.
      const { pathExists } = await import('../core/fsutil.js');
      if (await pathExists(ctx.app)) {
        const { stopStackService } = await import('../lab/stack-service.js');
        const r = await stopStackService(ctx.app, { timeoutMs: 10_000, runner: ctx.runner });
        if (r.status === 'stopped')
          log.info(`Stack stopped (pid ${r.pid}${r.forced ? ', killed after the timeout' : ''})`);
        if (r.killedDnsmasq !== undefined)
          log.warn(`killed an orphaned dnsmasq (pid ${r.killedDnsmasq}) left by a stack that died`);
      }
      const { vmOwners } = await import('../lab/vm-files.js');
      const { cleanVm } = await import('./vm-run.js');
      const { loadLabConfig } = await import('../lab/config.js');
      const { networkDriver } = await import('./network-driver.js');
      // Every VM with a file, its definition readable or not: a running one is stopped first.
      for (const name of vmOwners(ctx.app)) {
        log.info(`Cleaning VM ${name}`);
        await cleanVm(ctx, name, false);
      }
      const config = await loadLabConfig(ctx.app).catch(() => undefined);
      if (config && config.network === 'bridge' && process.platform === 'linux') {
        await networkDriver(ctx, config)
          .stop()
          .catch((err: Error) => log.warn(`lab network not removed: ${err.message}`));
      }
      const d = labDirs(ctx.app);
      if (o.purge) {
        log.warn(`Purging ${ctx.app}`);
        await fs.rm(ctx.app, { recursive: true, force: true });
      } else {
        for (const p of [d.vms, d.pids, d.monitors, d.logs, d.cloudInit, d.locks])
          await fs.rm(p, { recursive: true, force: true });
      }
      log.success('Cleanup complete.');
    });
}
