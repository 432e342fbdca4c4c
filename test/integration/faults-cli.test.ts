/* eslint-disable no-control-regex -- these tests look for control characters in the output */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { BIN, runCli, tempHome } from '../helpers/cli.js';
import { waitFor } from '../helpers/netns.js';
import { freePort } from '../helpers/ports.js';

/**
 * The CLI's fault suite (issue 8): a real `stack serve` on loopback fed hostile events, a peer
 * that answers nonsense, readers that go away, and `vm create` killed at random points followed
 * by `vm clean`. No VM runs, nothing leaves loopback.
 */

const MAC = '52:54:00:fa:17:01';
const PXE1 = { name: 'pxe1', role: 'target', arch: 'x86_64', ip: '192.168.100.7', mac: MAC, pxeboot: true };
/** Anything a terminal would act on, or that would forge a line. */
const CONTROL = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/;

/** `bash -o pipefail -c '<cli> | head -c1'`: the CLI's exit status, its stderr. */
function pipedToHead(args: string[], home: string, env: NodeJS.ProcessEnv = {}) {
  const quoted = [process.execPath, BIN, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  const r = spawnSync(
    'bash',
    ['-c', `${quoted} 2>"$ERRFILE" | head -c1 >/dev/null; echo "\${PIPESTATUS[0]}"`],
    {
      env: { ...process.env, ...env, NO_COLOR: '1', PVMLAB_HOME: home, ERRFILE: join(home, 'stderr') },
      encoding: 'utf8',
      timeout: 60_000,
    },
  );
  const stderr = spawnSync('cat', [join(home, 'stderr')], { encoding: 'utf8' }).stdout;
  return { code: Number(r.stdout.trim()), stderr };
}

describe('CLI fault suite', { timeout: 600_000 }, () => {
  let home: string;
  let app: string;
  let cleanup: () => Promise<void>;
  let stack: ChildProcess | undefined;
  let stackUrl: string;
  let nonsense: Server;
  let nonsenseUrl: string;
  const extra: ChildProcess[] = [];

  before(async () => {
    ({ home, app, cleanup } = await tempHome('pvfaultcli-'));
    await mkdir(join(app, 'vms'), { recursive: true });
    await writeFile(join(app, 'vms', 'pxe1.json'), JSON.stringify(PXE1));
    // A real stack on loopback: HTTP only, its state in this lab.
    const port = await freePort();
    stack = spawn(
      process.execPath,
      [BIN, 'stack', 'serve', '--address', '127.0.0.1', '--no-dnsmasq', '--http-port', String(port)],
      { env: { ...process.env, NO_COLOR: '1', PVMLAB_HOME: home }, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let log = '';
    stack.stderr?.setEncoding('utf8').on('data', (d: string) => (log += d));
    stackUrl = `http://127.0.0.1:${port}`;
    await waitFor('the stack to serve', () => (log.includes('Stack serving') ? true : undefined), 30_000);

    // A peer that answers every request with something that is not what a pvmlab stack answers.
    nonsense = createServer((req, res) => {
      const url = req.url ?? '';
      res.writeHead(200, { 'Content-Type': 'application/json' });
      if (url === '/healthz') return res.end(HEALTH[healthVariant]);
      if (url.includes('follow=1')) return res.end('{"type":"x"}\n');
      res.end(url.includes('/timeline') ? '{"events":[{"type":null}]}' : '<html>hello</html>');
    });
    await new Promise<void>((r) => nonsense.listen(0, '127.0.0.1', r));
    nonsenseUrl = `http://127.0.0.1:${(nonsense.address() as AddressInfo).port}`;
  });

  after(async () => {
    for (const c of [stack, ...extra]) c?.kill('SIGKILL');
    nonsense.closeAllConnections();
    await new Promise((r) => nonsense.close(r));
    await cleanup();
  });

  const post = (body: unknown) =>
    fetch(`${stackUrl}/api/machines/${MAC}/events`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });

  test('events POSTed with escape sequences, newlines and bidi overrides reach the terminal escaped', async () => {
    const hostile = [
      {
        type: 'installer.partition',
        // (The stack keeps only plain detail keys: the bidi override goes in a value.)
        detail: { note: '\u001b[31mRED\u001b[0m\nError: forged line', key: '\u202eevil' },
      },
      {
        type: 'installer.step',
        detail: { title: '\u001b]0;owned\u0007', clear: '\u001b[2J\u001b[H', c1: '\u009b31m' },
      },
    ];
    for (const ev of hostile) assert.equal((await post(ev)).status, 201);
    const env = { PVMLAB_STACK_URL: stackUrl };
    const plain = await runCli(['vm', 'events', 'pxe1'], { home, env });
    assert.equal(plain.code, 0, plain.stderr);
    assert.doesNotMatch(plain.stdout + plain.stderr, CONTROL, JSON.stringify(plain.stdout));
    assert.doesNotMatch(plain.stdout, /^Error: forged/m);
    assert.match(plain.stdout, /note=\\x1b\[31mRED\\x1b\[0m\\nError: forged line/);
    assert.match(plain.stdout, /key=\\u202eevil/);

    const phases = await runCli(['vm', 'events', 'pxe1', '--phases'], { home, env });
    assert.equal(phases.code, 0, phases.stderr);
    assert.doesNotMatch(phases.stdout + phases.stderr, CONTROL);

    const json = await runCli(['vm', 'events', 'pxe1', '--json'], { home, env });
    const events = JSON.parse(json.stdout) as { detail?: Record<string, unknown> }[];
    assert.deepEqual(
      events.slice(-2).map((e) => e.detail),
      hostile.map((h) => h.detail),
      'JSON keeps the values exact',
    );

    // -f: the history, then a new hostile event as it comes.
    const follow = spawn(process.execPath, [BIN, 'vm', 'events', 'pxe1', '-f'], {
      env: { ...process.env, ...env, NO_COLOR: '1', PVMLAB_HOME: home },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    extra.push(follow);
    let out = '';
    follow.stdout?.setEncoding('utf8').on('data', (d: string) => (out += d));
    await waitFor('the history', () => (out.includes('installer.step') ? true : undefined), 20_000);
    assert.equal((await post({ type: 'late.one', detail: { x: '\r\u001b[1Afake' } })).status, 201);
    await waitFor('the new event', () => (out.includes('late.one') ? true : undefined), 20_000);
    follow.kill('SIGINT');
    assert.doesNotMatch(out, CONTROL, JSON.stringify(out));
    assert.match(out, /x=\\r\\x1b\[1Afake/);
  });

  test('every printing command exits quietly when piped into head -c1', async () => {
    // Enough events that the output overflows the pipe (64 KiB) after head has gone.
    await Promise.all(
      Array.from({ length: 400 }, (_, i) =>
        post({ type: 'bulk.event', detail: { i, pad: 'x'.repeat(300) } }),
      ),
    );
    const env = { PVMLAB_STACK_URL: stackUrl };
    for (const args of [
      ['vm', 'events', 'pxe1', '--json'],
      ['vm', 'events', 'pxe1'],
      ['vm', 'events', 'pxe1', '-f', '--json'],
      ['vm', 'events', 'pxe1', '-f'],
      ['vm', 'events', 'pxe1', '--phases', '--json'],
      ['vm', 'list'],
      ['vm', 'list', '--json'],
      ['stack', 'status'],
      ['stack', 'status', '--json'],
      ['distro', 'ls'],
      ['--help'],
      ['completion', 'bash'],
    ]) {
      const r = pipedToHead(args, home, env);
      assert.equal(r.code, 0, `${args.join(' ')}: exit ${r.code}: ${r.stderr}`);
      assert.doesNotMatch(r.stderr, /EPIPE|Unhandled|\n {4}at /, args.join(' '));
    }
  });

  test('a peer that answers nonsense: exit 1, the URL named, no TypeError', async () => {
    const env = { PVMLAB_STACK_URL: nonsenseUrl };
    for (const args of [
      ['vm', 'events', 'pxe1'],
      ['vm', 'events', 'pxe1', '-f'],
      ['vm', 'events', 'pxe1', '--phases'],
      ['vm', 'events', 'pxe1', '--json'],
    ]) {
      const r = await runCli(args, { home, env, timeoutMs: 20_000 });
      assert.equal(r.code, 1, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, new RegExp(`the stack at ${nonsenseUrl}/api/machines/${MAC}/timeline`));
      assert.doesNotMatch(r.stderr, /Cannot read properties|TypeError|\n {4}at /);
    }
  });

  test('stack status with a /healthz that answers nonsense says so instead of crashing', async () => {
    for (const variant of Object.keys(HEALTH)) {
      const other = await tempHome('pvfaultst-');
      try {
        // A stand-in for this lab's `stack serve`: the argv stackProcess identifies, and an address
        // and port that lead to the nonsense peer.
        const pidFile = join(other.app, 'pids', 'stack_serve.pid');
        await mkdir(join(other.app, 'pids'), { recursive: true });
        const { port } = new URL(nonsenseUrl);
        const fake = spawn(
          process.execPath,
          [
            '-e',
            'setTimeout(() => {}, 60_000)',
            'stack',
            'serve',
            `--pid-file=${pidFile}`,
            `--address=127.0.0.1`,
            `--http-port=${port}`,
          ],
          { stdio: 'ignore' },
        );
        extra.push(fake);
        await writeFile(pidFile, `${fake.pid}\n`);
        healthVariant = variant;
        const r = await runCli(['stack', 'status'], { home: other.home });
        fake.kill('SIGKILL');
        assert.equal(r.code, 0, `${variant}: ${r.stderr}`);
        assert.match(r.stdout, /stack: running/);
        assert.match(
          r.stdout,
          /health: not answering \(.*healthz answered with something pvmlab does not understand/,
        );
        assert.doesNotMatch(r.stderr, /Cannot read properties|TypeError/);
      } finally {
        await other.cleanup();
      }
    }
  });

  test('vm create killed at random points, then vm clean: nothing left, and nothing of another VM taken', async (t) => {
    const lab = await tempHome('pvfaultcl-');
    try {
      const cli = (args: string[]) => runCli(args, { home: lab.home });
      assert.equal((await cli(['vm', 'create', 'web10', '--pxeboot'])).code, 0);
      assert.equal((await cli(['vm', 'create', 'web1-db', '--pxeboot'])).code, 0);
      const survivors = () =>
        ['vms', 'configs/cloud-init', 'logs', 'pids', 'monitors']
          .flatMap((d) => readdirSafe(join(lab.app, d)).map((e) => `${d}/${e}`))
          .filter((p) => /web10|web1-db/.test(p))
          .sort();
      const kept = survivors();
      assert.ok(kept.length >= 4, kept.join(' '));
      const tried: number[] = [];
      let killedMidway = 0;
      for (let i = 0; i < 8; i++) {
        // `vm create --pxeboot` takes ~300 ms here: most kills land inside it.
        const delay = 50 + Math.floor(Math.random() * 300);
        tried.push(delay);
        const name = i % 2 ? 'web1' : `k${i}`;
        await createKilledAfter(lab.home, name, delay);
        const left = readdirSafe(join(lab.app, 'vms')).filter((e) => e.includes(name)).length;
        if (left) killedMidway++;
        if (name === 'web1' && existsSync(join(lab.app, 'vms', 'web1.json')))
          await writeFile(join(lab.app, 'vms', 'web1.json'), '{corrupt'); // as a torn write would leave it
        const r = await cli(['vm', 'clean', name]);
        // Killed before it wrote anything: nothing to clean is the right answer too.
        assert.ok(r.code === 0 || /does not exist/.test(r.stderr), `${name} after ${delay} ms: ${r.stderr}`);
        assert.equal(
          readdirSafe(join(lab.app, 'vms')).filter((e) => new RegExp(`^\\.?${name}(\\.|-vars\\.fd)`).test(e))
            .length,
          0,
          `${name} after ${delay} ms: ${readdirSafe(join(lab.app, 'vms')).join(' ')}`,
        );
        assert.deepEqual(survivors(), kept, `web10 and web1-db untouched (${name} after ${delay} ms)`);
      }
      t.diagnostic(
        `${killedMidway} of ${tried.length} killed creates left files (delays ${tried.join(',')} ms)`,
      );
      // Orphans of every kind, then --all: only the stack's files may stay.
      for (let i = 0; i < 4; i++) {
        await createKilledAfter(lab.home, `o${i}`, 60 + i * 60);
      }
      await writeFile(join(lab.app, 'vms', '.o9.json.12345.1.tmp'), '{');
      await writeFile(join(lab.app, 'vms', 'o8.qcow2'), '');
      const all = await cli(['vm', 'clean', '--all']);
      assert.equal(all.code, 0, all.stderr);
      for (const d of ['vms', 'configs/cloud-init', 'pids', 'monitors'])
        assert.deepEqual(
          readdirSafe(join(lab.app, d)),
          [],
          `${d} after clean --all (delays ${tried.join(',')})`,
        );
      assert.deepEqual((await cli(['vm', 'list', '--json'])).stdout.trim(), '[]');
    } finally {
      await lab.cleanup();
    }
  });
});

/** What the nonsense peer answers to /healthz: `ok` with the rest of the wrong shape. */
const HEALTH: Record<string, string> = {
  nullDnsmasq: '{"ok":true,"machines":1,"dnsmasq":null}',
  wrongTypes: '{"ok":true,"machines":"many","dnsmasq":{}}',
};
let healthVariant = 'nullDnsmasq';

/** `vm create <name> --pxeboot`, SIGKILLed after `ms` (or finished before). */
async function createKilledAfter(home: string, name: string, ms: number): Promise<void> {
  const child = spawn(process.execPath, [BIN, 'vm', 'create', name, '--pxeboot'], {
    env: { ...process.env, PVMLAB_HOME: home, NO_COLOR: '1' },
    stdio: 'ignore',
  });
  const closed = new Promise((r) => child.once('close', r));
  await new Promise((r) => setTimeout(r, ms));
  child.kill('SIGKILL');
  await closed;
}

function readdirSafe(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}
