import { Argument, Command, CommanderError } from '@commander-js/extra-typings';
import { promises as fs } from 'node:fs';
import { EXIT_FAILURE, EXIT_USAGE, PvmlabError, isErrno } from '../core/errors.js';
import { log } from '../core/log.js';
import { labDirs } from '../core/paths.js';
import { bashCompletion, commandTree, fishCompletion, zshCompletion } from './completion.js';
import { defaultContext, type Context } from './context.js';
import { distroCommand } from './distro.js';
import { networkCommand, socketVmnetCommand, systemCommand } from './network.js';
import { provisionerCommand } from './provisioner.js';
import { safeLines, safeText } from '../core/safe-text.js';
import { cleanCommand, setupCommand } from './setup.js';
import { stackCommand } from './stack.js';
import { vmCommand } from './vm.js';
import { addProvisionerCreate } from './provisioner-create.js';

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
  const provisioner = provisionerCommand(ctx);
  addProvisionerCreate(provisioner, ctx);
  program.addCommand(provisioner);
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
          // Only names a VM can have: a file name is not to be trusted with a shell's screen.
          .filter((n) => VM_NAME_RE.test(n))
          .join('\n'),
      );
    });
  const root = program as unknown as import('commander').Command;
  root.on('command:*', (operands: string[]) => unknownSubcommand(root, operands[0] ?? ''));
  configureTree(root);
  return program;
}

const VM_NAME_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** addCommand() does not pass settings down: apply them to every command. */
function configureTree(cmd: import('commander').Command): void {
  cmd.exitOverride();
  cmd.showHelpAfterError('(run with --help for usage)');
  // Commander echoes the user's argv in its errors (`unknown option '...'`): escape it.
  cmd.configureOutput({
    outputError: (str, write) => write(`${safeText(str.replace(/\n$/, ''))}\n`),
  });
  if (cmd.commands.length && cmd.parent) {
    // A command group called bare prints its help (exit 0), as `pvmlab vm` did in the original;
    // with a word that is none of its commands, it says so (commander would call it an extra argument).
    cmd.allowExcessArguments(true);
    cmd.action(() => {
      const [word, topic] = cmd.args;
      // `pvmlab vm help create`: commander adds no help command to a group with an action.
      if (word === 'help') (cmd.commands.find((c) => c.name() === topic) ?? cmd).help();
      if (word !== undefined) unknownSubcommand(cmd, word);
      cmd.help();
    });
  }
  for (const c of cmd.commands) configureTree(c);
}

/** `unknown command 'vm frobnicate'`, the closest command if one is close, and the list: exit 2. */
export function unknownSubcommand(cmd: import('commander').Command, word: string): never {
  const names = cmd
    .createHelp()
    .visibleCommands(cmd)
    .flatMap((c) => [c.name(), ...c.aliases()])
    .filter((n) => n !== 'help');
  const path: string[] = [];
  for (let c: import('commander').Command | null = cmd; c?.parent; c = c.parent) path.unshift(c.name());
  const prefix = path.length ? `${path.join(' ')} ` : '';
  const close = closestCommand(word, names);
  cmd.error(
    `error: unknown command '${prefix}${word}'` +
      (close ? `; did you mean '${prefix}${close}'?` : '') +
      ` (${prefix ? `'${prefix.trim()}' commands` : 'commands'}: ${names.join(', ')})`,
    { exitCode: EXIT_USAGE, code: 'commander.unknownCommand' },
  );
}

/** The candidate nearest to `word` (edit distance, transpositions count 1), if near enough to be meant. */
export function closestCommand(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const c of candidates) {
    // A prefix (`ev` for `events`) is a match whatever its length.
    const d = c.startsWith(word) && word.length > 0 ? 0.5 : editDistance(word, c);
    if (d < bestDistance) [best, bestDistance] = [c, d];
  }
  if (best === undefined) return undefined;
  return bestDistance <= Math.max(1, Math.floor(Math.max(word.length, best.length) / 3)) ? best : undefined;
}

function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) =>
    Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)),
  );
  const at = (i: number, j: number) => d[i]?.[j] ?? Infinity;
  for (let i = 1; i <= a.length; i++)
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(at(i - 1, j) + 1, at(i, j - 1) + 1, at(i - 1, j - 1) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        v = Math.min(v, at(i - 2, j - 2) + 1);
      (d[i] as number[])[j] = v;
    }
  return at(a.length, b.length);
}

/**
 * When the reader of our output goes away (`pvmlab vm events x | head -1`), writes fail with
 * EPIPE: exit quietly, as a program killed by SIGPIPE would, instead of a stack trace. Output on
 * stdout is all a reading command is for, so it stops there (exit 0: the reader had what it
 * wanted); a closed stderr only loses messages, so a command that changes things carries on.
 */
let outputHandled = false;
export function handleClosedOutput(): void {
  if (outputHandled) return;
  outputHandled = true;
  process.stdout.on('error', (err) => {
    if (isErrno(err, 'EPIPE') || isErrno(err, 'ERR_STREAM_DESTROYED')) process.exit(0);
    process.stderr.write(`pvmlab: cannot write to standard output: ${err.message}\n`);
    process.exit(EXIT_FAILURE);
  });
  process.stderr.on('error', () => undefined);
}

/**
 * An error message as one block: control characters escaped, and lines after the first indented,
 * so text quoted from elsewhere (a tool's output, a name) cannot pass for a line of pvmlab's own.
 */
export function errorText(message: string): string {
  return safeLines(message).replace(/\n(?!$)/g, '\n  ');
}

/** Parse argv, run the command, map failures to exit codes: 1 failure, 2 usage error. */
export async function main(argv: string[] = process.argv): Promise<number> {
  handleClosedOutput();
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
      log.error(errorText(err.message));
      return err.exitCode;
    }
    log.error(
      errorText(
        err instanceof Error
          ? process.env.PVMLAB_DEBUG
            ? (err.stack ?? err.message)
            : err.message
          : String(err),
      ),
    );
    return EXIT_FAILURE;
  }
}
