/**
 * Whether a VM that something waits on can still get there: its QEMU is running, and its
 * serial console does not show a dead end a guest never leaves by itself. Without this, a VM
 * that powered off or panicked kept `vm start --wait` waiting for its whole timeout.
 */
import { readFileEnd } from '../core/fsutil.js';
import { vmProcess } from './process.js';

/** Console text after which the guest goes no further; `why` completes "VM 'x' …". */
const DEAD_ENDS: readonly { re: RegExp; why: string }[] = [
  { re: /Kernel panic - not syncing[^\r\n]*/, why: 'panicked' },
  { re: /Gave up waiting for root[^\r\n]*/, why: 'found no root file system' },
  { re: /^\(initramfs\) /m, why: 'stopped at an initramfs shell' },
];

/** How much of the console's end is read: a dead end is the last thing a guest prints. */
const TAIL_BYTES = 64 * 1024;

/** Pure: the dead end this console text shows, as "<why>: <the line>", or undefined. */
export function consoleDeadEnd(text: string): string | undefined {
  for (const d of DEAD_ENDS) {
    const m = d.re.exec(text);
    if (m) return `${d.why}: ${m[0].trim()}`;
  }
  return undefined;
}

/**
 * Why the VM will not become ready, or undefined while it may: its QEMU is gone, or its console
 * (truncated at each start, so this boot's) ends in a dead end.
 */
export async function whyStuck(
  name: string,
  files: { pid: string; log: string },
): Promise<string | undefined> {
  if ((await vmProcess(files.pid)).state !== 'running')
    return `VM '${name}' is not running any more (its QEMU exited); its console: ${files.log}`;
  const dead = consoleDeadEnd(
    await readFileEnd(files.log, { maxBytes: TAIL_BYTES }).catch(() => ''), // unreadable: nothing to judge by
  );
  return dead ? `VM '${name}' ${dead}; its console: ${files.log}` : undefined;
}
