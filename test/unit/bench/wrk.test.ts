import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { parseWrk, wrkMs } from '../../../bench/boot-server.js';

test('wrkMs: wrk latency units', () => {
  assert.equal(wrkMs('812.00us'), 0.812);
  assert.equal(wrkMs('1.50ms'), 1.5);
  assert.equal(wrkMs('2.00s'), 2000);
  assert.throws(() => wrkMs('fast'), /unexpected wrk latency 'fast'/);
});

test("parseWrk reads the real wrk's output; error responses are refused", async (t) => {
  let status = 200;
  const server = createServer((_req, res) => res.writeHead(status).end('ok'));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.after(() => {
    server.closeAllConnections();
    server.close();
  });
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  // Asynchronously: the server answers from this same process.
  const wrk = () =>
    new Promise<string>((res, rej) =>
      execFile('wrk', ['-t1', '-c2', '-d1s', '--latency', url], (err, out) => (err ? rej(err) : res(out))),
    );
  const r = parseWrk(await wrk());
  assert.ok(r.requests > 10 && r.rps > 10, `requests ${r.requests}, rps ${r.rps}`);
  assert.ok(r.p50 > 0 && r.p99 >= r.p50);
  status = 500;
  assert.throws(() => parseWrk(''), /cannot read wrk's output/);
  await assert.rejects(async () => parseWrk(await wrk()), /wrk saw error responses/);
});
