import { promises as fs } from 'node:fs';
import { PvmlabError, errorMessage, isErrno } from '../core/errors.js';

/**
 * Copy a file (a console log, the stack log) to stdout. A read error names the file: node's own
 * message for a directory in its place is a bare "EISDIR: illegal operation on a directory, read".
 */
export async function printFile(path: string, what: string): Promise<void> {
  let data: Buffer;
  try {
    data = await fs.readFile(path);
  } catch (err) {
    const why = isErrno(err, 'EISDIR') ? 'it is a directory' : errorMessage(err);
    throw new PvmlabError(`cannot read ${what} ${path}: ${why}; remove or fix it`);
  }
  // A console log is the guest's own bytes (escape sequences included) and is printed as such,
  // like `cat`: it is what `vm logs` is for, and it goes where the user sends stdout.
  await new Promise<void>((resolve) => process.stdout.write(data, () => resolve()));
}
