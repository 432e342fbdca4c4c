import { Command } from '@commander-js/extra-typings';
import type { Context } from './context.js';

/** Temporary parent until the docker subcommands land. */
export function provisionerCommand(_ctx: Context): Command {
  return new Command('provisioner').description('The provisioner VM and its pxeboot_stack container');
}
