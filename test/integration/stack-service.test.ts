import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { runCli, tempHome, type CliResult } from '../helpers/cli.js';
import { createNetns, deleteNetns, waitFor } from '../helpers/netns.js';
import { processesWith } from '../helpers/procs.js';

const BRIDGE = 'pvssbr0';
const SUBNET = '10.219.0';

interface Status {
  running: boolean;
  healthy: boolean;
  pid?: number;
  url?: string;
  stale_pid_file: boolean;
  health?: { ok: boolean; machines: number; dnsmasq: { pid: number | null; restarts: number } };
}

/**
 * `stack start|stop|status|logs` for real: the background stack (dnsmasq and the boot server)
 * on a bridge in a network namespace, no VMs.
 */
describe('the pxeboot stack in the background: stack start|stop|status|logs', { timeout: 300_000 }, () => {
  let ns: string;
  let home: string;
  let app: string;
  let cleanup: () => Promise<void>;
  const cli = (args: string[]): Promise<CliResult> =>
    runCli(args, { home, netns: ns, env: { PVMLAB_ACCEL: undefined } });
  const ok = async (args: string[]) => {
    const r = await cli(args);
    assert.equal(r.code, 0, `pvmlab ${args.join(' ')}:\n${r.stderr}`);
    return r;
  };
  const pidFile = () => join(app, 'pids', 'stack_serve.pid');
  const dnsmasqConf = () => join(app, 'stack', 'dnsmasq.conf');
  const assertNothingLeft = () => {
    assert.equal(existsSync(pidFile()), false, 'no pid file');
    assert.deepEqual(processesWith(pidFile()), [], 'no stack process');
    assert.deepEqual(processesWith(dnsmasqConf()), [], 'no dnsmasq of this lab');
  };
  /** GET from inside the namespace. */
  const get = (path: string): { status: number; body: string } =>
    JSON.parse(
      execFileSync(
        'ip',
        [
          'netns',
          'exec',
          ns,
          process.execPath,
          '-e',
          `fetch('http://${SUBNET}.1${path}').then(async r => process.stdout.write(JSON.stringify({status: r.status, body: await r.text()})))`,
        ],
        { encoding: 'utf8' },
      ),
    ) as { status: number; body: string };
  const status = async (): Promise<Status> =>
    JSON.parse((await ok(['stack', 'status', '--json'])).stdout) as Status;
  const dnsmasqUp = () =>
    waitFor(
      'dnsmasq to run',
      async () => {
        const s = await status();
        return s.health?.dnsmasq.pid ? s : undefined;
      },
      15_000,
    );

  before(async () => {
    ({ home, app, cleanup } = await tempHome('pvstksvc-'));
    ns = createNetns('pvss');
    await ok(['setup', '--bridge', BRIDGE, '--subnet', `${SUBNET}.0/24`]);
    await ok(['network', 'start']);
  });

  after(async () => {
    await cli(['stack', 'stop', '--timeout', '2']).catch(() => undefined);
    // Anything of this lab still running (a failed test): its paths are unique to this run.
    for (const pid of processesWith(app)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    deleteNetns(ns);
    await cleanup();
  });

  let pid = 0;

  test('stack start returns once /healthz answers, from inside the namespace', async () => {
    const r = await ok(['stack', 'start']);
    const m = new RegExp(
      `Stack started \\(pid (\\d+)\\): http://${SUBNET.replaceAll('.', '\\.')}\\.1:80`,
    ).exec(r.stderr);
    assert.ok(m, r.stderr);
    pid = Number(m[1]);
    assert.equal(Number(readFileSync(pidFile(), 'utf8')), pid);
    const h = get('/healthz');
    assert.equal(h.status, 200);
    assert.equal((JSON.parse(h.body) as { ok: boolean }).ok, true);
  });

  test('stack start again: already running, the same pid', async () => {
    const r = await ok(['stack', 'start']);
    assert.match(r.stderr, new RegExp(`already running \\(pid ${pid}\\)`));
    assert.equal(Number(readFileSync(pidFile(), 'utf8')), pid);
  });

  test('stack status: running and healthy, with machines and dnsmasq', async () => {
    const s = await dnsmasqUp();
    assert.equal(s.running, true);
    assert.equal(s.healthy, true);
    assert.equal(s.pid, pid);
    assert.equal(s.url, `http://${SUBNET}.1:80`);
    assert.equal(s.health?.machines, 0);
    assert.equal(s.health?.dnsmasq.restarts, 0);
    const human = await ok(['stack', 'status']);
    assert.match(human.stdout, new RegExp(`^stack: running \\(pid ${pid}, up \\d+s\\)\\n`));
    assert.match(human.stdout, /health: ok, 0 machine\(s\), dnsmasq pid \d+ \(0 restart\(s\)\)/);
  });

  test('stack logs shows the serving line', async () => {
    const r = await ok(['stack', 'logs']);
    assert.match(
      r.stdout,
      new RegExp(`Stack serving 0 machine\\(s\\) on ${BRIDGE}: http://${SUBNET}\\.1:80`),
    );
  });

  test('stack stop: no stack and no dnsmasq left; status then says stopped', async () => {
    const dnsmasq = (await status()).health?.dnsmasq.pid as number;
    assert.ok(processesWith(dnsmasqConf()).includes(dnsmasq), 'dnsmasq runs before');
    const r = await ok(['stack', 'stop']);
    assert.match(r.stderr, new RegExp(`Stack stopped \\(pid ${pid}\\)`));
    assertNothingLeft();
    const s = await status();
    assert.equal(s.running, false);
    assert.equal(s.stale_pid_file, false);
    assert.match((await ok(['stack', 'status'])).stdout, /^stack: stopped\n/);
    const again = await ok(['stack', 'stop']);
    assert.match(again.stderr, /The stack is not running/);
  });

  test('a stack killed with SIGKILL: status says stopped, stop removes the pid file and its orphaned dnsmasq', async () => {
    await ok(['stack', 'start']);
    const s = await dnsmasqUp();
    const dnsmasq = s.health?.dnsmasq.pid as number;
    process.kill(s.pid as number, 'SIGKILL');
    await waitFor('the stack to die', () => processesWith(pidFile()).length === 0 || undefined, 5000);
    assert.ok(processesWith(dnsmasqConf()).includes(dnsmasq), 'its dnsmasq outlives it');
    const after = await status();
    assert.equal(after.running, false);
    assert.equal(after.stale_pid_file, true);
    const r = await ok(['stack', 'stop']);
    assert.match(r.stderr, new RegExp(`killed an orphaned dnsmasq \\(pid ${dnsmasq}\\)`));
    assert.match(r.stderr, /removed a stale pid file/);
    assertNothingLeft();
  });

  test('stack start that cannot bind its port exits 1 quickly with the reason, leaving nothing', async (t) => {
    // Something else serves on the stack's address and port (and even answers /healthz).
    const squatter: ChildProcess = spawn(
      'ip',
      [
        'netns',
        'exec',
        ns,
        process.execPath,
        '-e',
        `require('http').createServer((q, s) => s.end('{"ok":true}')).listen(80, '${SUBNET}.1', () => console.log('listening'))`,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    t.after(() => squatter.kill('SIGKILL'));
    await new Promise<void>((resolve) => squatter.stdout?.once('data', () => resolve()));
    const started = Date.now();
    const r = await cli(['stack', 'start']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /the stack exited \(code 1\) before it was ready; the end of its log/);
    assert.match(r.stderr, /EADDRINUSE/);
    assert.ok(Date.now() - started < 20_000, `quickly (${Date.now() - started} ms)`);
    assertNothingLeft();
  });

  test('stack start on an interface that does not exist exits 1 with the reason, leaving nothing', async () => {
    const started = Date.now();
    const r = await cli(['stack', 'start', '--interface', 'nosuch0']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /the stack exited \(code 1\) before it was ready/);
    assert.match(r.stderr, /nosuch0/);
    assert.ok(Date.now() - started < 20_000, `quickly (${Date.now() - started} ms)`);
    assertNothingLeft();
    assert.match((await ok(['stack', 'status'])).stdout, /^stack: stopped\n/);
  });
});
