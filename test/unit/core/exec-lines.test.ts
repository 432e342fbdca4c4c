import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startProcess, type OutputStream } from '../../../src/core/exec.js';

test('startProcess: each line says which stream it came from; closed follows every line', async () => {
  const lines: [string, OutputStream][] = [];
  const p = await startProcess('sh', ['-c', 'echo out; echo err >&2; echo last >&2; exit 3'], {
    onLine: (line, stream) => lines.push([line, stream]),
  });
  assert.deepEqual(await p.closed, { code: 3, signal: null });
  assert.deepEqual(await p.done, { code: 3, signal: null });
  assert.deepEqual(
    lines.sort(([a], [b]) => a.localeCompare(b)),
    [
      ['err', 'stderr'],
      ['last', 'stderr'],
      ['out', 'stdout'],
    ],
  );
  const missing = await startProcess('/nonexistent/pvmlab-probe', [], { onLine: () => undefined });
  assert.match((await missing.closed).error?.message ?? '', /ENOENT/);
});
