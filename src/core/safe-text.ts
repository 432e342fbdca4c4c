/**
 * Text from outside pvmlab (a stack's answers, event details any lab client can POST, files in
 * ~/.pvmlab, a user's argv) goes through here before it reaches a terminal: an ESC would let it
 * recolour or rewrite the screen, a newline or CR would let it forge a line of pvmlab's own
 * output, a bidi override would let it reorder what the operator reads. JSON output keeps its
 * values as they are, escaped the JSON way (`jsonText`).
 */

/** C0, DEL, C1, the line/paragraph separators, and the bidi marks, embeddings and isolates. */
/* eslint-disable no-control-regex -- matching control characters is the point */
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;
const UNSAFE_KEEP_LINES =
  /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;
/* eslint-enable no-control-regex */

const NAMED: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };

function escapeChar(c: string): string {
  const named = NAMED[c];
  if (named !== undefined) return named;
  const code = c.charCodeAt(0);
  return code < 0x100
    ? `\\x${code.toString(16).padStart(2, '0')}`
    : `\\u${code.toString(16).padStart(4, '0')}`;
}

/** One line of text with every control character shown as an escape (`\x1b`, `\n`, `\u202e`). */
export function safeText(text: string): string {
  return text.replace(UNSAFE, escapeChar);
}

/**
 * Several lines (an error with a tool's output under it): newlines and tabs are kept, every other
 * control character is escaped.
 */
export function safeLines(text: string): string {
  return text.replace(UNSAFE_KEEP_LINES, escapeChar);
}

/** Any value as one safe line: strings escaped, the rest through String(). */
export function safeValue(value: unknown): string {
  return safeText(typeof value === 'string' ? value : String(value));
}

/**
 * JSON for a terminal or a pipe: JSON.stringify escapes C0 only, so DEL, C1 and the bidi and
 * line-separator characters are written as \u escapes too. Still the same JSON value.
 */
export function jsonText(value: unknown, indent?: number): string {
  return JSON.stringify(value, null, indent).replace(
    /[\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}
