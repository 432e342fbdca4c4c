import assert from 'node:assert/strict';
import { test } from 'node:test';
import { waitTimeout } from '../../../src/cli/vm-run.js';

test('waitTimeout: PVMLAB_WAIT_TIMEOUT seconds, else 10 minutes, 30 for an emulated architecture', () => {
  assert.equal(waitTimeout({}), 600_000);
  assert.equal(waitTimeout({}, true), 1_800_000);
  assert.equal(waitTimeout({ PVMLAB_WAIT_TIMEOUT: '90' }, true), 90_000, 'the user says');
  for (const bad of ['', '0', '-5', 'soon'])
    assert.equal(waitTimeout({ PVMLAB_WAIT_TIMEOUT: bad }), 600_000, bad);
});
