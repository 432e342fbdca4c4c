import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

/** Helpers for tests that run a real dnsmasq as a killed stack leaves it. */
export const DNSMASQ = '/usr/sbin/dnsmasq';

export type T = { after: (fn: () => void | Promise<void>) => void };

/** Poll `fn` every 10 ms until it gives a value (not undefined/false). */
export async function waitFor<V>(
  what: string,
  fn: () => V | undefined | false,
  timeoutMs = 5000,
): Promise<V> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Alive and not a zombie. */
export const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !'ZX'.includes(stat.charAt(stat.lastIndexOf(')') + 2));
  } catch {
    return false;
  }
};

/**
 * A real dnsmasq running `conf` (written with port=0, so it binds nothing), orphaned as a killed
 * stack leaves it (its parent, a shell, has exited), its pid file in `dir`; its pid.
 */
export async function orphanedDnsmasq(t: T, dir: string, conf = join(dir, 'dnsmasq.conf')): Promise<number> {
  mkdirSync(dirname(conf), { recursive: true });
  mkdirSync(dir, { recursive: true });
  writeFileSync(conf, 'port=0\n');
  const pidFile = join(dir, 'dnsmasq.pid');
  const argv = [
    DNSMASQ,
    '--keep-in-foreground',
    `--conf-file=${conf}`,
    '--log-facility=-',
    `--pid-file=${pidFile}`,
  ];
  spawn('sh', ['-c', `${argv.join(' ')} >/dev/null 2>&1 &`], { stdio: 'ignore' });
  const pid = await waitFor(
    'its pid file',
    () => Number(existsSync(pidFile) && readFileSync(pidFile, 'utf8').trim()) || undefined,
  );
  t.after(() => {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* stopped by the test */
    }
  });
  return pid;
}
