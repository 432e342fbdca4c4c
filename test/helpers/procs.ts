import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

/**
 * Pids of the processes whose command line contains `text` (a fixed string), this process
 * excluded: `pgrep -f`, or a scan of /proc where procps is not installed. Zombies have no
 * command line, so they never match.
 */
export function processesWith(text: string): number[] {
  let out: string;
  try {
    out = execFileSync('pgrep', ['-f', '--', text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { status?: number };
    if (e.status === 1) return []; // none
    if (e.code !== 'ENOENT') throw err;
    return readdirSync('/proc')
      .filter((d) => /^\d+$/.test(d))
      .map(Number)
      .filter((pid) => {
        try {
          return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').includes(text);
        } catch {
          return false;
        }
      })
      .filter((pid) => pid !== process.pid);
  }
  return out
    .split('\n')
    .filter((l) => l.trim())
    .map(Number)
    .filter((pid) => pid !== process.pid);
}
