import { Command, Option } from '@commander-js/extra-typings';
import { PvmlabError, UsageError, errorMessage } from '../core/errors.js';
import { log, paint } from '../core/log.js';
import { vmFiles } from '../core/paths.js';
import { pathExists } from '../core/fsutil.js';
import { loadVm } from '../lab/store.js';
import { MIN_MEMORY_MIB } from '../core/vmdef.js';
import {
  normalizeMac,
  parsePositiveInt,
  parseSize,
  validateArch,
  validateName,
  type Arch,
} from '../lab/validate.js';
import { hostArch } from '../qemu/accel.js';
import type { Context } from './context.js';
import { printJson, printTable } from './output.js';
import { safeText } from '../core/safe-text.js';
import { vmStatusRows } from './vm-status.js';

/** `--memory 2048` (MiB), or with a unit: `2G`, `512M`. */
export function parseMemory(text: string): number {
  // One rule for create and start: the definition schema's minimum.
  const mib = /^\d+$/.test(text)
    ? parsePositiveInt(text, '--memory', 1024 * 1024)
    : parseSize(text, '--memory') / 2 ** 20;
  if (!Number.isInteger(mib)) throw new UsageError(`invalid --memory '${text}': use whole MiB`);
  if (mib < MIN_MEMORY_MIB) throw new UsageError(`invalid --memory ${text}: at least ${MIN_MEMORY_MIB} MiB`);
  return mib;
}

export function vmCommand(ctx: Context): Command {
  const vm = new Command('vm').description('Create, run and remove target VMs');

  vm.command('create')
    .description('Create a target VM: a disk VM from a cloud image, or a blank-disk PXE VM')
    .argument('<vm-name>', 'VM name (a hostname: lowercase letters, digits, -)')
    .option(
      '--ip <address>',
      'IPv4 address inside the lab subnet, e.g. 192.168.100.10 or 192.168.100.10/24 (default: next free)',
    )
    .option('--ipv6 <address>', 'IPv6 address with prefix, e.g. fd00:cafe:babe::10/64')
    .option('--mac <mac>', 'MAC address of the lab NIC (default: random, locally administered)')
    .option('--disk-size <size>', 'disk size, e.g. 10G', '10G')
    .option(
      '--pxeboot',
      'blank disk: the VM boots from the network and is installed by the provisioner',
      false,
    )
    .option('--arch <arch>', "'x86_64' or 'aarch64' (default: the host's)")
    .option('--distro <name>', 'distribution from distros.yaml (default for disk VMs: ubuntu-24.04)')
    .option('--memory <size>', 'memory in MiB (or with a unit, e.g. 4G)', '2048')
    .option('--cpus <n>', 'virtual CPUs', '2')
    .action(async (name, o) => {
      validateName(name);
      const arch: Arch = validateArch(o.arch ?? hostArch() ?? 'x86_64');
      const { createVm } = await import('./vm-create.js');
      const vmDef = await createVm(ctx, {
        name,
        arch,
        ...(o.ip !== undefined ? { ip: o.ip } : {}),
        ...(o.ipv6 !== undefined ? { ipv6: o.ipv6 } : {}),
        ...(o.mac !== undefined ? { mac: normalizeMac(o.mac) } : {}),
        diskBytes: parseSize(o.diskSize),
        pxeboot: o.pxeboot,
        ...(o.distro !== undefined ? { distro: o.distro } : {}),
        memoryMiB: parseMemory(o.memory),
        cpus: parsePositiveInt(o.cpus, '--cpus', 64),
      });
      log.success(
        `VM '${vmDef.name}' created: ${vmDef.ip} ${vmDef.mac} (${vmDef.pxeboot ? 'PXE' : safeText(String(vmDef.distro))})`,
      );
    });

  vm.command('start')
    .description('Start a VM in the background (or attached to its serial console with -i)')
    .argument('<vm-name>')
    .option('--wait', 'wait until cloud-init has finished in the guest (disk VMs)', false)
    .option('-i, --interactive', "attach to the VM's serial console", false)
    .addOption(new Option('--boot <device>', 'boot first from this device').choices(['disk', 'pxe'] as const))
    .option(
      '--installer-no-reboot',
      'leave the installer at a shell instead of rebooting after a PXE install',
      false,
    )
    .addOption(
      new Option('--accel <accel>', 'accelerator (default: detected)').choices([
        'kvm',
        'hvf',
        'tcg',
      ] as const),
    )
    .option('--memory <size>', 'memory for this run, in MiB or with a unit')
    .option('--cpus <n>', 'virtual CPUs for this run')
    .action(async (name, o) => {
      validateName(name);
      const { startVm } = await import('./vm-run.js');
      await startVm(ctx, name, {
        interactive: o.interactive,
        wait: o.wait,
        installerNoReboot: o.installerNoReboot,
        ...(o.boot ? { boot: o.boot } : {}),
        ...(o.accel ? { accel: o.accel } : {}),
        ...(o.memory ? { memoryMiB: parseMemory(o.memory) } : {}),
        ...(o.cpus ? { cpus: parsePositiveInt(o.cpus, '--cpus', 64) } : {}),
      });
    });

  vm.command('stop')
    .description('Stop a VM: ACPI power-off through QMP, then force if the guest ignores it')
    .argument('<vm-name>')
    .option('--timeout <seconds>', 'how long the guest gets to power off', '30')
    .action(async (name, o) => {
      validateName(name);
      const { stopVm } = await import('./vm-run.js');
      const outcome = await stopVm(ctx, name, parsePositiveInt(o.timeout, '--timeout', 3600) * 1000);
      if (outcome === 'not-running') log.warn(`VM '${name}' is not running`);
      else log.success(`VM '${name}' stopped (${outcome === 'powered-off' ? 'powered off' : 'forced'})`);
    });

  vm.command('list')
    .description('List VMs and their status')
    .option('--json', 'print JSON', false)
    .action(async (o) => {
      const { rows, invalid } = await vmStatusRows(ctx);
      for (const i of invalid) log.warn(`skipping vms/${safeText(i.file)}: ${safeText(i.error)}`);
      if (o.json) return printJson(rows);
      if (rows.length === 0) return log.info('No VMs have been created yet.');
      // Definitions are files anyone with access to ~/.pvmlab can write: every cell is escaped.
      await printTable(
        ['NAME', 'ARCH', 'BOOT TYPE', 'PRIVATE IP', 'PRIVATE IPV6', 'MAC', 'DISTRO', 'STATUS'],
        rows.map((r) => [
          r.role === 'provisioner' ? paint('red', safeText(r.name)) : safeText(r.name),
          safeText(r.arch),
          r.boot,
          safeText(r.ip ?? ''),
          safeText(r.ipv6 ?? 'N/A'),
          safeText(r.mac ?? ''),
          r.role === 'provisioner' ? 'N/A (Provisioner)' : safeText(r.distro ?? ''),
          r.status === 'Running' ? paint('green', 'Running') : paint('red', 'Stopped'),
        ]),
      );
    });

  vm.command('shell')
    .description('Open an SSH session on a VM, or run a command there (put it after --)')
    .argument('<vm-name>')
    .argument('[command...]')
    .action(async (name, command) => {
      validateName(name);
      const def = await loadVm(ctx.app, name);
      const { sshArgv } = await import('../lab/ssh.js');
      const { labSshKey } = await import('../lab/sshkey.js');
      const { sshTarget } = await import('./wait.js');
      const argv = sshArgv((await labSshKey(ctx.app)).path, await sshTarget(ctx, def), command);
      if (command.length === 0) log.info(`Connecting to ${name} over SSH`);
      const r = await ctx.runner('ssh', argv, { stdio: 'inherit' });
      if (r.code !== 0) process.exitCode = r.code ?? 1;
    });

  vm.command('events')
    .description("Show a VM's provisioning timeline from the stack (DHCP, TFTP, HTTP, installer, ready)")
    .argument('<vm-name>')
    .option('-f, --follow', 'keep printing new events', false)
    .option('--json', 'print JSON', false)
    .option(
      '--phases',
      "where the last install's time went (firmware + DHCP, iPXE, installer, first boot)",
      false,
    )
    .action(async (name, o) => {
      validateName(name);
      if (o.phases && o.follow) throw new UsageError('--phases and --follow cannot be used together');
      const def = await loadVm(ctx.app, name);
      const { showEvents, showPhases } = await import('./events.js');
      if (o.phases) await showPhases(ctx, def, o.json);
      else await showEvents(ctx, def, o);
    });

  vm.command('logs')
    .description("Show a VM's serial console log and follow it")
    .argument('<vm-name>')
    .option('--no-follow', 'print the log and exit')
    .action(async (name, o) => {
      validateName(name);
      await loadVm(ctx.app, name);
      const log_ = vmFiles(ctx.app, name).log;
      if (!(await pathExists(log_)))
        throw new PvmlabError(`VM '${name}' has no console log yet (${log_}): start it first`);
      if (!o.follow) {
        const { printFile } = await import('./output-file.js');
        return printFile(log_, `the console log of '${name}'`);
      }
      const r = await ctx.runner('tail', ['-n', '+1', '-F', log_], { stdio: 'inherit' });
      // SIGPIPE: the reader went away (`| head`), which is how a follow ends too.
      if (r.code !== 0 && r.signal !== 'SIGINT' && r.signal !== 'SIGPIPE') process.exitCode = r.code ?? 1;
    });

  vm.command('console')
    .description("Attach to a background VM's serial console (Ctrl-] detaches; the VM keeps running)")
    .argument('<vm-name>')
    .action(async (name) => {
      validateName(name);
      await loadVm(ctx.app, name);
      const { DETACH_KEY_NAME, attachConsole, openVmConsole } = await import('../qemu/console.js');
      const socket = await openVmConsole(name, vmFiles(ctx.app, name));
      log.info(
        `Attached to the console of '${name}'; ${DETACH_KEY_NAME} detaches (press Enter for a prompt)`,
      );
      const reason = await attachConsole(socket);
      // The guest's last line may have no newline: start ours on a fresh line.
      if (process.stdin.isTTY) process.stderr.write('\n');
      if (reason === 'closed') log.warn(`VM '${name}' closed its console: it has stopped`);
      else if (reason !== 'input-ended') log.info(`Detached from '${name}'; it keeps running`);
    });

  vm.command('clean')
    .description('Stop a VM and remove all its files (disk, seed, logs, definition)')
    .argument('[vm-name]')
    .option('--all', 'clean every VM', false)
    .action(async (name, o) => {
      if (o.all && name !== undefined) throw new UsageError('give a VM name or --all, not both');
      if (!o.all && name === undefined) throw new UsageError('give a VM name, or --all');
      // Definitions are not read: a corrupt one, or files a killed `vm create` left, go too.
      const { cleanVm } = await import('./vm-run.js');
      if (name !== undefined) {
        validateName(name);
        const r = await cleanVm(ctx, name);
        log.success(`VM '${name}' cleaned${r.stopped ? ' (stopped first)' : ''}`);
        return;
      }
      const { vmOwners } = await import('../lab/vm-files.js');
      const owners = vmOwners(ctx.app);
      if (owners.length === 0) return log.info('No VMs to clean.');
      let failed = 0;
      for (const owner of owners) {
        try {
          // Gone since the listing (another clean): nothing left to do, not a failure.
          const r = await cleanVm(ctx, owner, false);
          log.success(`VM '${owner}' cleaned${r.stopped ? ' (stopped first)' : ''}`);
        } catch (err) {
          failed++;
          log.error(`cleaning '${owner}': ${errorMessage(err)}`);
        }
      }
      if (failed) throw new PvmlabError(`${failed} VM(s) could not be cleaned`);
    });

  vm.command('copy')
    .description('Copy files to or from a VM with scp; one side is vm-name:/path')
    .argument('<source>')
    .argument('<destination>')
    .option('-r, --recursive', 'copy directories', false)
    .action(async (src, dst, o) => {
      const { LAB_USER, scpArgv, parseRemote } = await import('../lab/ssh.js');
      const { labSshKey } = await import('../lab/sshkey.js');
      const { sshTarget } = await import('./wait.js');
      const rs = parseRemote(src);
      const rd = parseRemote(dst);
      if (rs && rd) throw new UsageError('copying between two VMs is not supported');
      if (!rs && !rd)
        throw new UsageError('one of source or destination must be a VM path, e.g. vm1:/tmp/file');
      const remote = (rs ?? rd) as { vm: string; path: string };
      if (remote.path === '') throw new UsageError(`missing path after '${remote.vm}:'`);
      const def = await loadVm(ctx.app, remote.vm);
      const target = await sshTarget(ctx, def);
      const spec = `${LAB_USER}@${target.host}:${remote.path}`;
      const key = (await labSshKey(ctx.app)).path;
      const argv = scpArgv(key, target, rs ? spec : src, rd ? spec : dst, o.recursive);
      const r = await ctx.runner('scp', argv, { stdio: 'inherit' });
      if (r.code !== 0) throw new PvmlabError(`scp exited with status ${r.code}`);
    });

  return vm;
}
