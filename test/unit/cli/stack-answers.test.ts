/* eslint-disable no-control-regex -- these tests look for control characters in the output */
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Context } from '../../../src/cli/context.js';
import { fetchTimeline, formatEvent, waitForReady } from '../../../src/cli/events.js';
import { StackAnswerError } from '../../../src/cli/stack-api.js';
import type { VmDefinition } from '../../../src/core/vmdef.js';
import { runCli, tempHome } from '../../helpers/cli.js';
import { fakeRunner } from '../../helpers/runner.js';

const MAC = '52:54:00:aa:bb:02';
const pxe1: VmDefinition = {
  name: 'pxe1',
  role: 'target',
  arch: 'x86_64',
  ip: '10.217.0.2',
  mac: MAC,
  pxeboot: true,
};

const HOSTILE = {
  at: '2030-01-01T10:00:00.000Z',
  mac: MAC,
  type: '\u001b[31mred\nError: forged line',
  source: 'stack\u001b[2J',
  detail: { 'k\u202eey': 'v\r\u009b2Jx', n: 3, ok: true },
};

/** What each base path answers to `/api/machines/<mac>/timeline` (plain and `?follow=1`). */
const ANSWERS: Record<string, (res: ServerResponse, follow: boolean) => void> = {
  empty: (res) => res.end('{}'),
  text: (res) => res.end('<html>not a stack</html>'),
  badEvent: (res) => res.end(JSON.stringify({ events: [{ at: 'yesterday', type: 5 }] })),
  eventsNotArray: (res) => res.end(JSON.stringify({ events: 5 })),
  nullBody: (res) => res.end('null'),
  hostile: (res, follow) =>
    res.end(follow ? `${JSON.stringify(HOSTILE)}\n` : JSON.stringify({ events: [HOSTILE] })),
  badLine: (res, follow) => res.end(follow ? '{"at":1}\n' : '{"events":[]}'),
};

describe('answers from the stack are checked before they are used, and printed escaped', () => {
  let base: string;
  let home: string;
  let cleanup: () => Promise<void>;
  const server = createServer((req, res) => {
    const [, kind, ...rest] = (req.url ?? '').split('/');
    const answer = ANSWERS[kind ?? ''];
    if (!answer || !rest.join('/').startsWith(`api/machines/${MAC}/timeline`))
      return void res.writeHead(404).end();
    res.writeHead(200, { 'Content-Type': 'application/json' });
    answer(res, (req.url ?? '').includes('follow=1'));
  });

  before(async () => {
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    ({ home, cleanup } = await tempHome('pvans-'));
    await mkdir(join(home, '.pvmlab', 'vms'), { recursive: true });
    await writeFile(join(home, '.pvmlab', 'vms', 'pxe1.json'), JSON.stringify(pxe1));
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    await cleanup();
  });

  const ctxFor = (kind: string): Context => ({
    app: '/nonexistent/.pvmlab',
    runner: fakeRunner().runner,
    env: { PVMLAB_STACK_URL: `${base}/${kind}` },
  });

  test('fetchTimeline: a nonsense answer is a StackAnswerError naming the URL', async () => {
    for (const kind of ['empty', 'text', 'badEvent', 'eventsNotArray', 'nullBody']) {
      await assert.rejects(fetchTimeline(ctxFor(kind), pxe1), (err: Error) => {
        assert.ok(err instanceof StackAnswerError, `${kind}: ${err.message}`);
        assert.match(err.message, new RegExp(`the stack at ${base}/${kind}/api/machines/${MAC}/timeline`));
        assert.match(err.message, /PVMLAB_STACK_URL/);
        return true;
      });
    }
  });

  test('vm start --wait (waitForReady) fails at once on a nonsense answer, not at its timeout', async () => {
    const t0 = Date.now();
    await assert.rejects(waitForReady(ctxFor('empty'), pxe1, new Date(0), 60_000, 50), StackAnswerError);
    assert.ok(Date.now() - t0 < 5000);
  });

  test('formatEvent escapes the type and the details', () => {
    const line = formatEvent(HOSTILE, HOSTILE);
    assert.doesNotMatch(line, /[\u0000-\u001f\u007f-\u009f\u202e]/);
    assert.match(line, /\\x1b\[31mred\\nError: forged line/);
    assert.match(line, /k\\u202eey=v\\r\\x9b2Jx n=3 ok=true/);
  });

  test('vm events against nonsense: exit 1, the peer named, no TypeError', async () => {
    for (const kind of ['empty', 'text', 'badEvent']) {
      for (const extra of [[], ['--phases'], ['--json']]) {
        const r = await runCli(['vm', 'events', 'pxe1', ...extra], {
          home,
          env: { PVMLAB_STACK_URL: `${base}/${kind}` },
        });
        assert.equal(r.code, 1, `${kind} ${extra.join(' ')}: ${r.stderr}`);
        assert.match(r.stderr, new RegExp(`the stack at ${base}/${kind}/`));
        assert.doesNotMatch(r.stderr, /Cannot read properties|TypeError|padEnd|\n {4}at /);
      }
    }
    const follow = await runCli(['vm', 'events', 'pxe1', '-f'], {
      home,
      env: { PVMLAB_STACK_URL: `${base}/badLine` },
    });
    assert.equal(follow.code, 1, follow.stderr);
    assert.match(follow.stderr, /answered with a timeline line pvmlab does not understand/);
  });

  test('vm events prints what any lab client POSTed escaped; --json keeps it exact', async () => {
    const env = { PVMLAB_STACK_URL: `${base}/hostile` };
    for (const extra of [[], ['-f'], ['--phases']]) {
      const r = await runCli(['vm', 'events', 'pxe1', ...extra], { home, env });
      assert.equal(r.code, 0, `${extra.join(' ')}: ${r.stderr}`);
      const all = r.stdout + r.stderr;
      assert.doesNotMatch(all, /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u202e]/, JSON.stringify(all));
      assert.doesNotMatch(all, /^Error: forged/m);
    }
    const plain = await runCli(['vm', 'events', 'pxe1'], { home, env });
    assert.match(plain.stdout, /\\x1b\[31mred\\nError: forged line/);
    const json = await runCli(['vm', 'events', 'pxe1', '--json'], { home, env });
    assert.deepEqual(JSON.parse(json.stdout), [HOSTILE]);
    assert.doesNotMatch(json.stdout, /[\u007f-\u009f\u202e]/);
  });
});
