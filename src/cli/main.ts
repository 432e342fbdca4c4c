import { Argument, Command, CommanderError } from '@commander-js/extra-typings';
import { promises as fs } from 'node:fs';
import { EXIT_FAILURE, EXIT_USAGE, PvmlabError } from '../core/errors.js';
import { log } from '../core/log.js';
import { labDirs } from '../core/paths.js';
import { bashCompletion, commandTree, fishCompletion, zshCompletion } from './completion.js';
import { defaultContext, type Context } from './context.js';
import { distroCommand } from './distro.js';
import { networkCommand, socketVmnetCommand, systemCommand } from './network.js';
import { cleanCommand, setupCommand } from './setup.js';
import { stackCommand } from './stack.js';
import { vmCommand } from './vm.js';

declare const PVMLAB_VERSION: string;
const VERSION = typeof PVMLAB_VERSION === 'string' ? PVMLAB_VERSION : 'dev';

export function buildProgram(ctx: Context): Command {
  const program = new Command('pvmlab')
    .description(
      'A local PXE-boot lab: a private network, a provisioner and target VMs installed over the network',
    )
    .version(VERSION, '-v, --version')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();
  program.addCommand(setupCommand(ctx));
  program.addCommand(cleanCommand(ctx));
  program.addCommand(vmCommand(ctx));
  program.addCommand(networkCommand(ctx));
  program.addCommand(socketVmnetCommand(ctx));
  program.addCommand(systemCommand(ctx));
  program.addCommand(stackCommand(ctx));
  program.addCommand(distroCommand(ctx));
  program
    .command('completion')
    .description('Print a shell completion script')
    .addArgument(new Argument('<shell>', 'bash, zsh or fish').choices(['bash', 'zsh', 'fish'] as const))
    .action((shell) => {
      const nodes = commandTree(program as unknown as import('commander').Command);
      log.out(
        shell === 'bash'
          ? bashCompletion(nodes)
          : shell === 'zsh'
            ? zshCompletion(nodes)
            : fishCompletion(nodes),
      );
    });
  program
    .command('__vms', { hidden: true })
    .description('VM names, for shell completion')
    .action(async () => {
      const names = await fs.readdir(labDirs(ctx.app).vms).catch(() => [] as string[]);
      log.out(
        names
          .filter((n) => n.endsWith('.json'))
          .map((n) => n.slice(0, -5))
          .join('\n'),
      );
    });
  configureTree(program as unknown as import('commander').Command);
  return program;
}

/** addCommand() does not pass settings down: apply them to every command. */
function configureTree(cmd: import('commander').Command): void {
  cmd.exitOverride();
  cmd.showHelpAfterError('(run with --help for usage)');
  // A command group called bare prints its help (exit 0), as `pvmlab vm` did in the original.
  if (cmd.commands.length && cmd.parent) cmd.action(() => cmd.help());
  for (const c of cmd.commands) configureTree(c);
}

/** Parse argv, run the command, map failures to exit codes: 1 failure, 2 usage error. */
export async function main(argv: string[] = process.argv): Promise<number> {
  const program = buildProgram(defaultContext());
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.exitCode === 0) return 0; // --help, --version
      return EXIT_USAGE; // commander already printed the message
    }
    if (err instanceof PvmlabError) {
      log.error(err.message);
      return err.exitCode;
    }
    log.error(
      err instanceof Error
        ? process.env.PVMLAB_DEBUG
          ? (err.stack ?? err.message)
          : err.message
        : String(err),
    );
    return EXIT_FAILURE;
  }
}
