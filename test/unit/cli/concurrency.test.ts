import assert from 'node:assert/strict';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { parseVm } from '../../../src/core/vmdef.js';
import { runCli, tempHome } from '../../helpers/cli.js';

test('10 concurrent vm create processes get 10 distinct IPs and MACs and valid definitions', async (t) => {
  const { home, app, cleanup } = await tempHome();
  t.after(cleanup);
  const names = Array.from({ length: 10 }, (_, i) => `c${i}`);
  const results = await Promise.all(
    names.map((n) => runCli(['vm', 'create', n, '--pxeboot', '--disk-size', '1G'], { home })),
  );
  for (const [i, r] of results.entries()) assert.equal(r.code, 0, `${names[i]}: ${r.stderr}`);
  const files = (await readdir(join(app, 'vms'))).filter((f) => f.endsWith('.json')).sort();
  assert.deepEqual(files, names.map((n) => `${n}.json`).sort());
  const defs = await Promise.all(
    files.map(async (f) => {
      const r = parseVm(await readFile(join(app, 'vms', f), 'utf8'));
      assert.ok(r.ok, `${f}: ${r.ok ? '' : r.error}`);
      return r.value;
    }),
  );
  assert.equal(new Set(defs.map((d) => d.ip)).size, 10, 'IPs must be distinct');
  assert.equal(new Set(defs.map((d) => d.mac)).size, 10, 'MACs must be distinct');
  // No lock or temp file is left behind.
  assert.deepEqual(await readdir(join(app, 'locks')), []);
  assert.deepEqual(
    (await readdir(join(app, 'vms'))).filter((f) => f.startsWith('.')),
    [],
  );
});
