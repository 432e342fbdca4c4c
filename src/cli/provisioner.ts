import { Command } from '@commander-js/extra-typings';
import type { LockHolder } from '../core/lockfile.js';
import { log, paint } from '../core/log.js';
import { safeText } from '../core/safe-text.js';
import type { Context } from './context.js';
import { printJson, printTable } from './output.js';

/**
 * `pvmlab provisioner`: the parent of `docker` (here) and `create` (added beside it in main.ts),
 * so both live under one command.
 */
export function provisionerCommand(ctx: Context): Command {
  const provisioner = new Command('provisioner').description(
    'Manage the provisioner VM, which serves PXE boot and the other lab services to the target VMs',
  );
  provisioner.addCommand(dockerCommand(ctx));
  return provisioner;
}

function dockerCommand(ctx: Context): Command {
  const docker = new Command('docker').description(
    'Control the pxeboot stack container in the provisioner VM',
  );

  docker
    .command('start')
    .description(
      'Load an image tar into the provisioner and (re)start the stack container from it; a running one is replaced',
    )
    .argument('[tar]', 'the image tar, e.g. ./pxeboot_stack/pxeboot_stack.tar')
    .option('--docker-tar <tar>', 'the image tar (the same as the argument)')
    .option('--network-host', "use the provisioner's network (needed to serve DHCP to the lab)", false)
    .option('--privileged', 'run the container privileged (needed by the stack)', false)
    .option('--name <container>', 'container name', 'pxeboot_stack')
    .action(async (tarArg, o) => {
      const c = await import('../provisioner/container.js');
      const name = c.validateContainerName(o.name);
      const tar = c.chooseTar(tarArg, o.dockerTar);
      await c.checkHostTar(tar);
      const { provisionerSession, hostDockerImagesDir, withContainerLock } =
        await import('../provisioner/session.js');
      const { loadLabConfig } = await import('../lab/config.js');
      const session = await provisionerSession(ctx.app, ctx.runner);
      const options = c.dockerRunOptions(
        { networkHost: o.networkHost, privileged: o.privileged },
        c.stackEnv(session.vm, await loadLabConfig(ctx.app)),
      );
      const missing = [o.networkHost ? '' : '--network-host', o.privileged ? '' : '--privileged'].filter(
        Boolean,
      );
      if (missing.length)
        log.warn(
          `the stack needs --network-host and --privileged to serve the lab; starting without ${missing.join(' and ')}, as asked`,
        );
      const r = await withContainerLock(
        ctx.app,
        'start',
        () =>
          c.startContainer(ctx.runner, session, {
            tar,
            hostDockerImages: hostDockerImagesDir(ctx.app, session.vm),
            name,
            options,
            onStep: (m) => log.info(m),
          }),
        waiting,
      );
      for (const w of r.warnings) log.warn(w);
      const replaced = r.previous
        ? `; it replaced the previous container (${r.previous.image || 'unknown image'})`
        : '';
      log.success(
        `Container '${name}' started from ${safeText(r.image ?? 'the loaded image')}${r.present ? ' (already loaded in the provisioner: not loaded again)' : ''} (${safeText((r.id ?? '').slice(0, 12))})${safeText(replaced)}`,
      );
    });

  docker
    .command('stop')
    .description('Stop the stack container (it is kept; start replaces it)')
    .argument('[name]', 'container name', 'pxeboot_stack')
    .action(async (nameArg) => {
      const c = await import('../provisioner/container.js');
      const name = c.validateContainerName(nameArg);
      const { provisionerSession, withContainerLock } = await import('../provisioner/session.js');
      const session = await provisionerSession(ctx.app, ctx.runner);
      log.info(`Stopping '${name}' in the provisioner '${session.name}'`);
      const { was } = await withContainerLock(
        ctx.app,
        'stop',
        () => c.stopContainer(ctx.runner, session, name),
        waiting,
      );
      if (was === 'exited' || was === 'created' || was === 'stopped')
        log.info(`Container '${name}' was not running (${safeText(was)})`);
      else log.success(`Container '${name}' stopped`);
    });

  docker
    .command('status')
    .description('Show the containers in the provisioner')
    .option('--json', 'print JSON', false)
    .action(async (o) => {
      const c = await import('../provisioner/container.js');
      const { provisionerSession } = await import('../provisioner/session.js');
      const session = await provisionerSession(ctx.app, ctx.runner);
      const s = await c.containerStatus(ctx.runner, session);
      for (const line of s.unreadable)
        log.warn(`skipping a status line pvmlab cannot read: ${safeText(line)}`);
      const rows = s.containers.map((x) => ({ ...x, status: c.describeState(x, s.now) }));
      if (o.json) return printJson({ provisioner: session.name, containers: rows });
      if (!rows.some((r) => r.name === c.DEFAULT_CONTAINER))
        log.info(`no ${c.DEFAULT_CONTAINER} container in the provisioner '${session.name}'`);
      if (rows.length === 0) return;
      // Names and images come from the VM: every cell is escaped.
      await printTable(
        ['CONTAINER ID', 'NAME', 'IMAGE', 'STATE', 'STATUS', 'CREATED', 'STARTED'],
        rows.map((r) => [
          safeText(r.id.slice(0, 12)),
          safeText(r.name),
          safeText(r.image),
          r.state === 'running' ? paint('green', safeText(r.state)) : paint('red', safeText(r.state)),
          safeText(r.status),
          shortTime(r.created),
          shortTime(r.startedAt),
        ]),
      );
    });

  docker
    .command('logs')
    .description("Show the stack container's output")
    .argument('[name]', 'container name', 'pxeboot_stack')
    .option('-f, --follow', 'keep printing new output', false)
    .action(async (nameArg, o) => {
      const c = await import('../provisioner/container.js');
      const name = c.validateContainerName(nameArg);
      const { provisionerSession } = await import('../provisioner/session.js');
      const session = await provisionerSession(ctx.app, ctx.runner);
      // Following on a terminal: ssh gets the terminal, so Ctrl-C reaches `docker logs` in the
      // VM. Otherwise the output passes through here, where a reader that goes away (`| head`)
      // is seen (EPIPE) and ends the command quietly.
      const r =
        o.follow && process.stdin.isTTY === true && process.stdout.isTTY === true
          ? await c.containerLogs(ctx.runner, session, { name, follow: true, stdio: 'inherit', tty: true })
          : await c.containerLogs(ctx.runner, session, {
              name,
              follow: o.follow,
              stdio: 'pipe',
              onStdout: (d) => process.stdout.write(d),
              onStderr: (d) => process.stderr.write(d),
            });
      // The reader went away (`| head`), or Ctrl-C ended a follow: not a failure.
      if (r.code !== 0 && r.signal !== 'SIGINT' && r.signal !== 'SIGPIPE') process.exitCode = r.code ?? 1;
    });

  return docker;
}

/** Said once when another pvmlab holds the container lock. */
function waiting(holder: LockHolder): void {
  log.info(
    `waiting for ${holder.operation ? `'pvmlab ${holder.operation.replace(/-/g, ' ')}'` : 'another pvmlab'} (pid ${holder.pid}) to finish`,
  );
}

/** `2024-05-01 10:30:54 UTC` from an RFC 3339 time; `-` when never. */
function shortTime(t: string | null): string {
  if (t === null) return '-';
  const ms = Date.parse(t);
  return Number.isNaN(ms) ? safeText(t) : `${new Date(ms).toISOString().slice(0, 19).replace('T', ' ')} UTC`;
}
