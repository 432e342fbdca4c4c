import { log } from '../core/log.js';
import { jsonText } from '../core/safe-text.js';

/** Print rows as a box table on a TTY-friendly layout, or as JSON with --json. */
export async function printTable(head: string[], rows: string[][]): Promise<void> {
  const { default: Table } = await import('cli-table3');
  const t = new Table({ head, style: { head: [], border: [] } });
  t.push(...rows);
  log.out(t.toString());
}

export function printJson(value: unknown): void {
  log.out(jsonText(value, 2));
}
