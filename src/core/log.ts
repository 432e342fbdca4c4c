/** User-facing output: info, success, warning, failure lines; colour only on a TTY without NO_COLOR. */
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
    process.stderr.write(`${paint('cyan', 'i', process.stderr)} ${msg}\n`);
  },
  success(msg: string): void {
    process.stderr.write(`${paint('green', '✔', process.stderr)} ${msg}\n`);
  },
  warn(msg: string): void {
    process.stderr.write(`${paint('yellow', '!', process.stderr)} ${msg}\n`);
  },
  error(msg: string): void {
    process.stderr.write(`${paint('red', 'Error:', process.stderr)} ${msg}\n`);
  },
  /** Results (tables, JSON) go to stdout so they can be piped. */
  out(text: string): void {
    process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
  },
};
