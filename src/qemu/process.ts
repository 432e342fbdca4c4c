import { promises as fs, readFileSync } from 'node:fs';
import { isErrno } from '../core/errors.js';
import { processAlive, run, type Runner } from '../core/exec.js';
import { vmFiles } from '../core/paths.js';
import { vmOwners } from '../lab/vm-files.js';

export type VmState = 'running' | 'stopped';

export interface ProcessInfo {
  state: VmState;
  pid?: number;
  /** A pid file whose process is gone or is not this VM's QEMU (pid reuse). */
  stalePidFile?: boolean;
}

export async function readPidFile(path: string): Promise<number | undefined> {
  let text: string;
  try {
    // Sync: `vm list` checks one pid file per VM, and most do not exist.
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return undefined;
    throw err;
  }
  const pid = Number(text.trim());
  return Number.isInteger(pid) && pid > 0 ? pid : -1;
}

/**
 * Alive, and not an exited process waiting to be reaped (a daemonised QEMU stays a zombie until
 * init reaps it; some container inits reap late or never): core's one check.
 */
export const pidAlive = processAlive;

/** The process's argv: /proc on Linux, `ps` elsewhere (macOS). */
export async function processArgv(pid: number, runner: Runner = run): Promise<string[] | undefined> {
  if (process.platform === 'linux') {
    try {
      const raw = await fs.readFile(`/proc/${pid}/cmdline`, 'utf8');
      return raw.split('\0').filter((s) => s.length > 0);
    } catch {
      return undefined;
    }
  }
  const r = await runner('ps', ['-p', String(pid), '-o', 'command=']).catch(() => undefined);
  return r && r.code === 0 ? r.stdout.trim().split(/\s+/) : undefined;
}

/** Is this argv our QEMU for this VM? Its `-pidfile` names this VM's pid file. */
export function isVmArgv(argv: readonly string[], pidFile: string): boolean {
  const i = argv.indexOf('-pidfile');
  const exe = argv[0] ?? '';
  return i >= 0 && argv[i + 1] === pidFile && /qemu-system-/.test(exe);
}

/** Running only when the pid file's process is alive *and* is this VM's QEMU. */
export async function vmProcess(pidFile: string, runner: Runner = run): Promise<ProcessInfo> {
  const pid = await readPidFile(pidFile);
  if (pid === undefined) return { state: 'stopped' };
  if (pid < 0 || !pidAlive(pid)) return { state: 'stopped', stalePidFile: true };
  const argv = await processArgv(pid, runner);
  if (!argv || !isVmArgv(argv, pidFile)) return { state: 'stopped', stalePidFile: true };
  return { state: 'running', pid };
}

/** The VMs whose QEMU runs now (identity checked by the pid file), by name. */
export async function runningVms(app: string): Promise<string[]> {
  const names = vmOwners(app);
  const states = await Promise.all(
    names.map((n) => vmProcess(vmFiles(app, n).pid).catch(() => ({ state: 'stopped' as const }))),
  );
  return names.filter((_, i) => states[i]?.state === 'running');
}
