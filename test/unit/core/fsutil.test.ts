import assert from 'node:assert/strict';
import { appendFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { readFileEnd } from '../../../src/core/fsutil.js';

test('readFileEnd: from an offset, at most the last bytes; a missing file is empty', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'pvmlab-fsutil-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const p = join(dir, 'log');
  assert.equal(await readFileEnd(p), '', 'not written yet');
  await writeFile(p, 'first line\n');
  assert.equal(await readFileEnd(p), 'first line\n');
  const offset = 'first line\n'.length;
  assert.equal(await readFileEnd(p, { offset }), '', 'nothing new past the offset');
  await appendFile(p, 'second line\n');
  assert.equal(await readFileEnd(p, { offset }), 'second line\n');
  assert.equal(await readFileEnd(p, { maxBytes: 5 }), 'line\n');
  assert.equal(
    await readFileEnd(p, { offset, maxBytes: 100 }),
    'second line\n',
    'the later of the two starts',
  );
  assert.equal(await readFileEnd(p, { offset: 1000 }), '', 'an offset past the end');
});
