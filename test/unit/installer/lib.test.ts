import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { resolve } from 'node:path';
import { test } from 'node:test';

/** Run installer/lib.sh's event_body in busybox sh, as the installer does, and parse what it prints. */
function body(...args: string[]): unknown {
  const out = execFileSync(
    'busybox',
    ['sh', '-c', `. ${resolve('installer/lib.sh')}; event_body "$@"`, 'sh', ...args],
    {
      encoding: 'utf8',
    },
  );
  return JSON.parse(out);
}

test('event_body: valid JSON whatever the values; numbers and booleans bare, the rest strings', () => {
  assert.deepEqual(body('done'), { type: 'installer.done' });
  assert.deepEqual(
    body(
      'started',
      'kernel',
      '6.1.0-57-cloud-amd64',
      'ip',
      '10.0.0.2/24',
      'seconds',
      '1.5',
      'bytes',
      '142344718',
    ),
    {
      type: 'installer.started',
      detail: { kernel: '6.1.0-57-cloud-amd64', ip: '10.0.0.2/24', seconds: 1.5, bytes: 142344718 },
    },
  );
  assert.deepEqual(body('done', 'reboot', 'false', 'ok', 'true'), {
    type: 'installer.done',
    detail: { reboot: false, ok: true },
  });
  // Not numbers in JSON: a leading zero, two dots, a bare dot, empty.
  assert.deepEqual(body('x', 'a', '007', 'b', '1.2.3', 'c', '.5', 'd', '5.', 'e', ''), {
    type: 'installer.x',
    detail: { a: '007', b: '1.2.3', c: '.5', d: '5.', e: '' },
  });
  // A reason echoes whatever a tool printed: quotes, backslashes, newlines, escape sequences.
  const reason = 'wget: server returned "HTTP/1.1 404 Not Found"\\ \n\u001b[31mred\ttab';
  assert.deepEqual(body('failed', 'phase', 'rootfs', 'reason', reason), {
    type: 'installer.failed',
    detail: { phase: 'rootfs', reason: 'wget: server returned "HTTP/1.1 404 Not Found"\\ [31mredtab' },
  });
});
