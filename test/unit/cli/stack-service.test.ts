import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { BIN, runCli, tempHome, type CliResult } from '../../helpers/cli.js';
import { freePort } from '../../helpers/ports.js';
import { processesWith } from '../../helpers/procs.js';
import { waitFor } from '../../helpers/qemu.js';

/**
 * `stack start|stop|status|logs` end to end on loopback: the real `stack serve` with
 * --address 127.0.0.1 --no-dnsmasq needs no root and no bridge (the netns test runs dnsmasq).
 */
describe('pvmlab stack start|stop|status|logs', { timeout: 120_000 }, () => {
  let home: string;
  let app: string;
  let cleanup: () => Promise<void>;
  const cli = (args: string[]): Promise<CliResult> => runCli(args, { home });
  const pidFile = () => join(app, 'pids', 'stack_serve.pid');

  before(async () => {
    ({ home, app, cleanup } = await tempHome('pvstksvc-'));
  });
  after(async () => {
    await cli(['stack', 'stop', '--timeout', '1']);
    await cleanup();
  });

  test('bad flags exit 2 before anything is started or written', async () => {
    for (const [args, re] of [
      [['stack', 'start', '--http-port', '0'], /invalid --http-port '0'/],
      [['stack', 'start', '--http-port', '65536'], /invalid --http-port '65536'/],
      [['stack', 'start', '--http-port', 'http'], /invalid --http-port 'http'/],
      [
        ['stack', 'start', '--ipxe-dir', '/nonexistent/ipxe'],
        /--ipxe-dir \/nonexistent\/ipxe is not a directory/,
      ],
      [['stack', 'start', '--timeout', '0'], /invalid --timeout '0'/],
      [['stack', 'start', '--bogus'], /unknown option '--bogus'/],
      [['stack', 'stop', '--timeout', 'soon'], /invalid --timeout 'soon'/],
    ] as const) {
      const r = await cli([...args]);
      assert.equal(r.code, 2, `${args.join(' ')} -> ${r.code}: ${r.stderr}`);
      assert.match(r.stderr, re);
    }
    assert.equal(existsSync(app), false, 'nothing written');
    assert.deepEqual(processesWith(pidFile()), [], 'nothing started');
  });

  test('nothing running: status says stopped (exit 0), stop warns (exit 0), logs has none (exit 1)', async () => {
    const s = await cli(['stack', 'status']);
    assert.equal(s.code, 0, s.stderr);
    assert.match(s.stdout, /^stack: stopped\n/);
    const j = JSON.parse((await cli(['stack', 'status', '--json'])).stdout) as Record<string, unknown>;
    assert.equal(j.running, false);
    assert.equal(j.healthy, false);
    const stop = await cli(['stack', 'stop']);
    assert.equal(stop.code, 0, stop.stderr);
    assert.match(stop.stderr, /The stack is not running/);
    const logs = await cli(['stack', 'logs']);
    assert.equal(logs.code, 1);
    assert.match(logs.stderr, /the stack has no log yet/);
  });

  test('start, start again, status, logs, stop', async () => {
    const port = await freePort();
    const flags = ['--address', '127.0.0.1', '--no-dnsmasq', '--http-port', String(port)];
    const r = await cli(['stack', 'start', ...flags]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, new RegExp(`Stack started \\(pid \\d+\\): http://127\\.0\\.0\\.1:${port}`));
    const pid = Number(readFileSync(pidFile(), 'utf8'));
    assert.ok(pid > 0);
    const health = (await (await fetch(`http://127.0.0.1:${port}/healthz`)).json()) as { ok: boolean };
    assert.equal(health.ok, true);

    const again = await cli(['stack', 'start', ...flags]);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stderr, new RegExp(`already running \\(pid ${pid}\\)`));
    assert.doesNotMatch(again.stderr, /other flags/);
    assert.equal(Number(readFileSync(pidFile(), 'utf8')), pid, 'same pid');

    const status = JSON.parse((await cli(['stack', 'status', '--json'])).stdout) as {
      running: boolean;
      healthy: boolean;
      pid: number;
      url: string;
      uptime_s: number;
      health: { machines: number; dnsmasq: string };
      log: string;
    };
    assert.equal(status.running, true);
    assert.equal(status.healthy, true);
    assert.equal(status.pid, pid);
    assert.equal(status.url, `http://127.0.0.1:${port}`);
    assert.equal(status.health.dnsmasq, 'off');
    assert.ok(status.uptime_s >= 0);
    assert.equal(status.log, join(app, 'logs', 'stack_serve.log'));
    const human = await cli(['stack', 'status']);
    assert.match(human.stdout, new RegExp(`^stack: running \\(pid ${pid}, up \\d+s\\)\\nurl: http://127`));
    assert.match(human.stdout, /health: ok, 0 machine\(s\), dnsmasq off/);

    const logs = await cli(['stack', 'logs']);
    assert.equal(logs.code, 0);
    assert.match(logs.stdout, /Stack serving 0 machine\(s\) on \S+: http:\/\/127\.0\.0\.1:/);

    // -f follows with tail -F; a terminal's Ctrl-C reaches the whole process group.
    const follow = spawn(process.execPath, [BIN, 'stack', 'logs', '-f'], {
      env: { ...process.env, PVMLAB_HOME: home, NO_COLOR: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    let followed = '';
    follow.stdout.setEncoding('utf8').on('data', (d: string) => (followed += d));
    try {
      await waitFor(() => /Stack serving/.test(followed), 10_000, 'stack logs -f to print the log');
    } finally {
      process.kill(-(follow.pid as number), 'SIGINT');
    }

    const stop = await cli(['stack', 'stop']);
    assert.equal(stop.code, 0, stop.stderr);
    assert.match(stop.stderr, new RegExp(`Stack stopped \\(pid ${pid}\\)`));
    assert.equal(existsSync(pidFile()), false);
    assert.deepEqual(processesWith(pidFile()), []);
    assert.match((await cli(['stack', 'status'])).stdout, /^stack: stopped\n/);
  });

  test('two starts at once: one starts the stack, the other finds it running', async () => {
    const port = await freePort();
    const flags = ['--address', '127.0.0.1', '--no-dnsmasq', '--http-port', String(port)];
    const [a, b] = await Promise.all([cli(['stack', 'start', ...flags]), cli(['stack', 'start', ...flags])]);
    assert.deepEqual([a.code, b.code], [0, 0], `${a.stderr}\n${b.stderr}`);
    const both = a.stderr + b.stderr;
    const pid = Number(readFileSync(pidFile(), 'utf8'));
    assert.equal(both.match(new RegExp(`Stack started \\(pid ${pid}\\)`, 'g'))?.length, 1, both);
    assert.equal(both.match(new RegExp(`already running \\(pid ${pid}\\)`, 'g'))?.length, 1, both);
    assert.equal((await cli(['stack', 'stop'])).code, 0);
    assert.deepEqual(processesWith(pidFile()), []);
  });

  test('start fails fast when the port is taken, even by a server that answers /healthz', async (t) => {
    const port = await freePort();
    const impostor: Server = createServer((_req, res) => res.end('{"ok":true}'));
    await new Promise<void>((r) => impostor.listen(port, '127.0.0.1', r));
    t.after(() => impostor.close());
    const started = Date.now();
    const r = await cli([
      'stack',
      'start',
      '--address',
      '127.0.0.1',
      '--no-dnsmasq',
      '--http-port',
      String(port),
    ]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /the stack exited \(code 1\) before it was ready/);
    assert.match(r.stderr, /EADDRINUSE/);
    assert.ok(Date.now() - started < 15_000);
    assert.equal(existsSync(pidFile()), false);
    assert.deepEqual(processesWith(pidFile()), []);
  });
});
