import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { PvmlabError } from '../../../src/core/errors.js';
import { run, runChecked, startProcess, which } from '../../../src/core/exec.js';

test('run: output, exit code, input, timeout', async () => {
  const r = await run('sh', ['-c', 'read x; echo "out $x"; echo err >&2; exit 3'], { input: 'hello\n' });
  assert.deepEqual([r.code, r.stdout, r.stderr, r.timedOut], [3, 'out hello\n', 'err\n', false]);
  const slow = await run('sleep', ['5'], { timeoutMs: 100 });
  assert.deepEqual([slow.timedOut, slow.signal], [true, 'SIGKILL']);
  await assert.rejects(run('pvmlab-no-such-command', []), /pvmlab-no-such-command: command not found/);
});

test('run: onStdout/onStderr receive the output as it comes, before the exit', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'pvmlab-exec-'));
  const out: string[] = [];
  const err: string[] = [];
  try {
    // The child waits until its first line has been seen: streamed, not handed over at the end.
    const r = await run(
      'sh',
      ['-c', 'mkfifo "$1/go"; echo first; echo warn >&2; read x < "$1/go"; echo "second $x"', 'sh', dir],
      {
        onStdout: (d) => {
          out.push(d);
          if (d.includes('first')) void writeFile(join(dir, 'go'), 'go\n');
        },
        onStderr: (d) => err.push(d),
        timeoutMs: 10_000,
      },
    );
    assert.deepEqual([r.code, r.stdout, r.stderr], [0, '', '']);
    assert.equal(out.join(''), 'first\nsecond go\n');
    assert.equal(err.join(''), 'warn\n');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('runChecked: a non-zero exit becomes an error with the tail of the output', async () => {
  await assert.rejects(
    runChecked(run, 'sh', ['-c', 'echo one >&2; echo two >&2; exit 4']),
    (e: Error) => e instanceof PvmlabError && e.message === 'sh exited 4: one\ntwo',
  );
});

test('startProcess: lines from stdout and stderr, kill, the exit', async () => {
  const lines: string[] = [];
  const p = await startProcess('sh', ['-c', 'echo first; echo second >&2; exec sleep 30'], {
    onLine: (l) => lines.push(l),
  });
  assert.ok(p.pid && p.pid > 0);
  const deadline = Date.now() + 5000;
  while (lines.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(lines.sort(), ['first', 'second']);
  p.kill('SIGTERM');
  assert.deepEqual(await p.done, { code: null, signal: 'SIGTERM' });
  p.kill('SIGKILL'); // after the exit: a no-op, not an error
});

test('startProcess: an exit code; a binary that cannot start settles done with the error', async () => {
  const p = await startProcess('sh', ['-c', 'exit 7'], { onLine: () => undefined });
  assert.deepEqual(await p.done, { code: 7, signal: null });
  const missing = await startProcess('/nonexistent/pvmlab-daemon', [], { onLine: () => undefined });
  const exit = await missing.done;
  assert.equal(missing.pid, undefined);
  assert.match(exit.error?.message ?? '', /ENOENT/);
});

test('which: PATH lookup and explicit paths', () => {
  assert.equal(which('sh', { PATH: '/nonexistent:/bin' }), '/bin/sh');
  assert.equal(which('sh', { PATH: '/nonexistent' }), undefined);
  assert.equal(which('/bin/sh'), '/bin/sh');
  assert.equal(which('/nonexistent/sh'), undefined);
});
