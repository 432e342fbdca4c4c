import assert from 'node:assert/strict';
import { test } from 'node:test';
import { log } from '../../../src/core/log.js';
import { jsonText, safeLines, safeText } from '../../../src/core/safe-text.js';

test('safeText: C0, DEL, C1, line separators and bidi controls are escaped; the rest is left alone', () => {
  assert.equal(safeText('\u001b[31mred\u001b[0m'), '\\x1b[31mred\\x1b[0m');
  assert.equal(safeText('a\nError: fake\r\tb'), 'a\\nError: fake\\r\\tb');
  assert.equal(safeText('\u0000\u0007\u007f\u0085\u009b2J'), '\\x00\\x07\\x7f\\x85\\x9b2J');
  assert.equal(
    safeText('abc\u202edef\u2066\u2069\u200f\u061c\u2028'),
    'abc\\u202edef\\u2066\\u2069\\u200f\\u061c\\u2028',
  );
  const plain = 'web1 10.0.0.2 fd00::2 ünïcødé ✔ 日本 C:\\path';
  assert.equal(safeText(plain), plain);
});

test('safeLines keeps newlines and tabs, escapes the rest', () => {
  assert.equal(safeLines('line 1\n\tline 2\r\u001b[2K'), 'line 1\n\tline 2\\r\\x1b[2K');
});

test('jsonText is the same JSON value with DEL, C1 and bidi controls as \\u escapes', () => {
  const value = { type: '\u001b[31m\n', detail: { 'k\u202e': 'v\u009b\u007f' } };
  const text = jsonText(value, 2);
  assert.deepEqual(JSON.parse(text), value);
  // eslint-disable-next-line no-control-regex
  assert.doesNotMatch(text, /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u202e]/);
  assert.match(text, /\\u202e/);
});

test('log.info/success/warn/error escape what a message quotes; newlines stay', (t) => {
  const written: string[] = [];
  t.mock.method(process.stderr, 'write', (chunk: string) => {
    written.push(chunk);
    return true;
  });
  try {
    for (const f of [log.info, log.success, log.warn, log.error])
      f(`vms/\u001b[31mred\u202e.json: bad\n  second line\r`);
  } finally {
    t.mock.restoreAll();
  }
  assert.equal(written.length, 4);
  for (const w of written) {
    assert.ok(!w.includes('\u001b[31m') && !w.includes('\u202e') && !w.includes('\r'), JSON.stringify(w));
    assert.match(w, /vms\/\\x1b\[31mred\\u202e\.json: bad\n {2}second line\\r\n$/);
  }
});
