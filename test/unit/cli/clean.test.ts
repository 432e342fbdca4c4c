import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { runCli, tempHome, type CliResult } from '../../helpers/cli.js';
import { freePort } from '../../helpers/ports.js';
import { processesWith } from '../../helpers/procs.js';

/**
 * `pvmlab clean` removes pids/ and logs/: it must stop the background stack first, or the stack
 * (and its dnsmasq) would run on with no pid file to stop it by. The stack runs on loopback
 * (--address 127.0.0.1 --no-dnsmasq), so no root and no bridge are needed.
 */
describe('pvmlab clean stops the background stack', { timeout: 120_000 }, () => {
  let home: string;
  let app: string;
  let cleanup: () => Promise<void>;
  const cli = (args: string[]): Promise<CliResult> => runCli(args, { home });
  const pidFile = () => join(app, 'pids', 'stack_serve.pid');

  before(async () => {
    ({ home, app, cleanup } = await tempHome('pvclean-'));
    // A bridge name no host has: as root, `clean` removes the lab's bridge (here: nothing to remove).
    await mkdir(app, { recursive: true });
    await writeFile(join(app, 'lab.yaml'), `bridge: pvcl${process.pid.toString(36).slice(-8)}\n`);
  });
  after(async () => {
    for (const pid of processesWith(pidFile())) process.kill(pid, 'SIGKILL');
    await cleanup();
  });

  test('a running stack is stopped before its pid file and log are removed', async () => {
    const port = await freePort();
    const start = await cli([
      'stack',
      'start',
      '--address',
      '127.0.0.1',
      '--no-dnsmasq',
      '--http-port',
      String(port),
    ]);
    assert.equal(start.code, 0, start.stderr);
    const pid = Number(readFileSync(pidFile(), 'utf8'));
    assert.ok(pid > 0);
    assert.deepEqual(processesWith(pidFile()), [pid]);

    const clean = await cli(['clean']);
    assert.equal(clean.code, 0, clean.stderr);
    assert.match(clean.stderr, new RegExp(`Stack stopped \\(pid ${pid}\\)`));
    assert.match(clean.stderr, /Cleanup complete/);
    assert.deepEqual(processesWith(pidFile()), [], 'no stack left running');
    await assert.rejects(fetch(`http://127.0.0.1:${port}/healthz`), 'nothing answers on its port');
    assert.equal(existsSync(join(app, 'pids')), false);
    assert.equal(existsSync(join(app, 'logs')), false);
    assert.equal(existsSync(join(app, 'lab.yaml')), true, 'settings are kept');

    // Nothing running: clean says nothing about the stack and still succeeds.
    const again = await cli(['clean']);
    assert.equal(again.code, 0, again.stderr);
    assert.doesNotMatch(again.stderr, /Stack stopped/);
  });

  test('clean --purge stops it too before removing the lab', async () => {
    const port = await freePort();
    const start = await cli([
      'stack',
      'start',
      '--address',
      '127.0.0.1',
      '--no-dnsmasq',
      '--http-port',
      String(port),
    ]);
    assert.equal(start.code, 0, start.stderr);
    const pid = Number(readFileSync(pidFile(), 'utf8'));
    const purge = await cli(['clean', '--purge']);
    assert.equal(purge.code, 0, purge.stderr);
    assert.match(purge.stderr, new RegExp(`Stack stopped \\(pid ${pid}\\)`));
    assert.deepEqual(processesWith(pidFile()), []);
    assert.equal(existsSync(app), false);
  });
});
