import type { RunOptions, RunResult, Runner } from '../../src/core/exec.js';

export type Reply = Partial<Pick<RunResult, 'code' | 'stdout' | 'stderr'>>;

/** A Runner that records `command arg...` lines and answers from `reply` (default: exit 0, no output). */
export function fakeRunner(reply: (line: string) => Reply = () => ({})): { runner: Runner; calls: string[] } {
  const calls: string[] = [];
  const runner: Runner = async (command: string, args: readonly string[], _options?: RunOptions) => {
    const line = [command, ...args].join(' ');
    calls.push(line);
    const r = reply(line);
    return {
      command,
      args,
      code: r.code ?? 0,
      signal: null,
      stdout: r.stdout ?? '',
      stderr: r.stderr ?? '',
      timedOut: false,
    };
  };
  return { runner, calls };
}
