import { safeLines } from './safe-text.js';

/**
 * User-facing output: info, success, warning, failure lines; colour only on a TTY without NO_COLOR.
 * Messages often quote what came from outside (file names, a peer's answer, argv): their control
 * characters are escaped here, once for every message, so none can rewrite the operator's screen.
 */
type Stream = NodeJS.WriteStream;

function useColour(stream: Stream): boolean {
  if (process.env.NO_COLOR !== undefined && process.env.NO_COLOR !== '') return false;
  if (process.env.FORCE_COLOR !== undefined && process.env.FORCE_COLOR !== '0') return true;
  return stream.isTTY === true;
}

const codes = {
  red: [31, 39],
  green: [32, 39],
  yellow: [33, 39],
  cyan: [36, 39],
  bold: [1, 22],
  dim: [2, 22],
};
export type Colour = keyof typeof codes;

export function paint(colour: Colour, text: string, stream: Stream = process.stdout): string {
  if (!useColour(stream)) return text;
  const [open, close] = codes[colour];
  return `\u001b[${open}m${text}\u001b[${close}m`;
}

export const log = {
  info(msg: string): void {
    process.stderr.write(`${paint('cyan', 'i', process.stderr)} ${safeLines(msg)}\n`);
  },
  success(msg: string): void {
    process.stderr.write(`${paint('green', '✔', process.stderr)} ${safeLines(msg)}\n`);
  },
  warn(msg: string): void {
    process.stderr.write(`${paint('yellow', '!', process.stderr)} ${safeLines(msg)}\n`);
  },
  error(msg: string): void {
    process.stderr.write(`${paint('red', 'Error:', process.stderr)} ${safeLines(msg)}\n`);
  },
  /** Results (tables, JSON) go to stdout so they can be piped. */
  out(text: string): void {
    process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
  },
};
