import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { processAlive, spawnDetached } from '../../../src/core/exec.js';
import {
  StackStartError,
  isStackServeArgv,
  serveArgv,
  stackProcess,
  stackServiceFiles,
  stackUrl,
  startStackService,
  stopStackService,
  urlFromArgv,
  type ServeFlags,
} from '../../../src/lab/stack-service.js';
import { killQuietly, shortTempDir, waitFor } from '../../helpers/qemu.js';

const DEFAULTS: ServeFlags = { httpPort: 80, dnsmasq: true, dns: true };

test('serveArgv: only the flags given, --flag=value, absolute directories, the pid file last', () => {
  assert.deepEqual(serveArgv(DEFAULTS, '/lab/pids/stack_serve.pid', '/home/u'), [
    'stack',
    'serve',
    '--http-port=80',
    '--pid-file=/lab/pids/stack_serve.pid',
  ]);
  assert.deepEqual(
    serveArgv(
      {
        interface: '-odd',
        address: '10.0.0.1',
        vmsDir: 'vms',
        imagesDir: '/srv/images',
        initrdsDir: '../initrds',
        stateDir: './state',
        ipxeDir: 'ipxe',
        httpPort: 8080,
        dnsmasq: false,
        dns: false,
      },
      '/lab/pids/stack_serve.pid',
      '/home/u/lab',
    ),
    [
      'stack',
      'serve',
      '--interface=-odd',
      '--address=10.0.0.1',
      '--vms-dir=/home/u/lab/vms',
      '--images-dir=/srv/images',
      '--initrds-dir=/home/u/initrds',
      '--state-dir=/home/u/lab/state',
      '--ipxe-dir=/home/u/lab/ipxe',
      '--http-port=8080',
      '--no-dnsmasq',
      '--no-dns',
      '--pid-file=/lab/pids/stack_serve.pid',
    ],
  );
  assert.deepEqual(serveArgv({ ...DEFAULTS, dns: false }, '/p', '/').slice(2), [
    '--http-port=80',
    '--no-dns',
    '--pid-file=/p',
  ]);
});

test('isStackServeArgv: `stack serve` with this pid file, run by any program', () => {
  const PID = '/lab/pids/stack_serve.pid';
  const yes = [
    ['/usr/bin/node', '/opt/pvmlab/bin/pvmlab.js', 'stack', 'serve', `--pid-file=${PID}`],
    ['node', 'pvmlab', 'stack', 'serve', '--http-port=80', '--no-dns', `--pid-file=${PID}`],
  ];
  for (const argv of yes) assert.equal(isStackServeArgv(argv, PID), true, argv.join(' '));
  const no = [
    [],
    ['node', 'pvmlab', 'stack', 'serve'],
    ['node', 'pvmlab', 'stack', 'serve', '--pid-file=/other/lab/pids/stack_serve.pid'],
    ['node', 'pvmlab', 'stack', 'serve', `--pid-file=${PID}.old`],
    ['node', 'pvmlab', 'stack', 'start', `--pid-file=${PID}`],
    ['stack', 'serve', `--pid-file=${PID}`],
    ['node', 'pvmlab', 'vm', 'logs', 'stack', `--pid-file=${PID}`],
    ['sleep', `--pid-file=${PID}`],
  ];
  for (const argv of no) assert.equal(isStackServeArgv(argv, PID), false, argv.join(' '));
});

test('stackUrl and urlFromArgv', () => {
  assert.equal(stackUrl('10.0.0.1', 80), 'http://10.0.0.1:80');
  assert.equal(stackUrl('0.0.0.0', 8080), 'http://127.0.0.1:8080');
  assert.equal(stackUrl('fd00::1', 80), 'http://[fd00::1]:80');
  assert.equal(stackUrl('::', 80), 'http://[::1]:80');
  assert.equal(
    urlFromArgv(['node', 'p', 'stack', 'serve', '--pid-file=/p'], '10.0.0.1'),
    'http://10.0.0.1:80',
  );
  assert.equal(
    urlFromArgv(['node', 'p', 'stack', 'serve', '--address=127.0.0.1', '--http-port=8081'], '10.0.0.1'),
    'http://127.0.0.1:8081',
  );
});

/** A long-running node process whose argv reads as `stack serve --pid-file=<pidFile>`. */
function fakeStack(pidFile: string, script = 'setInterval(() => {}, 1000)') {
  const child = spawn(process.execPath, ['-e', script, 'stack', 'serve', `--pid-file=${pidFile}`], {
    stdio: 'ignore',
  });
  assert.ok(child.pid);
  return child;
}

/** The pid of a process that has exited (and been reaped). */
async function deadPid(): Promise<number> {
  const child = spawn('true', { stdio: 'ignore' });
  await new Promise((r) => child.on('exit', r));
  return child.pid as number;
}

test('stackProcess: running only if the pid file names this lab`s live `stack serve` (a reused pid reads as stopped)', async (t) => {
  const { dir: app, cleanup } = await shortTempDir('pv-stk-');
  t.after(cleanup);
  const files = stackServiceFiles(app);
  mkdirSync(join(app, 'pids'), { recursive: true });
  assert.deepEqual(await stackProcess(app), { state: 'stopped' });

  writeFileSync(files.pid, 'garbage\n');
  assert.deepEqual(await stackProcess(app), { state: 'stopped', pid: -1, stalePidFile: true });

  const dead = await deadPid();
  writeFileSync(files.pid, `${dead}\n`);
  assert.deepEqual(await stackProcess(app), { state: 'stopped', pid: dead, stalePidFile: true });

  // The pid was reused by some other process (this test runner).
  writeFileSync(files.pid, `${process.pid}\n`);
  assert.deepEqual(await stackProcess(app), { state: 'stopped', pid: process.pid, stalePidFile: true });

  // ... or by another lab's stack.
  const other = fakeStack('/another/lab/pids/stack_serve.pid');
  t.after(() => killQuietly(other.pid));
  await waitFor(() => readFileSync(`/proc/${other.pid}/cmdline`, 'utf8').includes('serve'), 5000, 'argv');
  writeFileSync(files.pid, `${other.pid}\n`);
  assert.equal((await stackProcess(app)).state, 'stopped');

  const ours = fakeStack(files.pid);
  t.after(() => killQuietly(ours.pid));
  await waitFor(() => readFileSync(`/proc/${ours.pid}/cmdline`, 'utf8').includes('serve'), 5000, 'argv');
  writeFileSync(files.pid, `${ours.pid}\n`);
  const p = await stackProcess(app);
  assert.equal(p.state, 'running');
  assert.equal(p.pid, ours.pid);
  assert.ok(p.startedAt && Date.now() - p.startedAt.getTime() < 60_000);
});

test('stop: a stale pid file is removed and its process never signalled', async (t) => {
  const { dir: app, cleanup } = await shortTempDir('pv-stk-');
  t.after(cleanup);
  const files = stackServiceFiles(app);
  mkdirSync(join(app, 'pids'), { recursive: true });
  assert.deepEqual(await stopStackService(app, { timeoutMs: 1000 }), { status: 'not-running' });

  const foreign = spawn('sleep', ['30'], { stdio: 'ignore' });
  t.after(() => killQuietly(foreign.pid));
  writeFileSync(files.pid, `${foreign.pid}\n`);
  assert.deepEqual(await stopStackService(app, { timeoutMs: 1000 }), {
    status: 'not-running',
    stalePid: foreign.pid,
  });
  assert.equal(existsSync(files.pid), false);
  assert.equal(processAlive(foreign.pid as number), true, 'the foreign process still runs');

  const dead = await deadPid();
  writeFileSync(files.pid, `${dead}\n`);
  assert.deepEqual(await stopStackService(app, { timeoutMs: 1000 }), {
    status: 'not-running',
    stalePid: dead,
  });
  assert.equal(existsSync(files.pid), false);
});

/**
 * A stand-in for the stack, started as `stack start` starts it (own process group), with a
 * child in its group as dnsmasq is; writes that child's pid to `childPidFile`.
 */
async function fakeStackWithChild(app: string, onTerm: string) {
  const files = stackServiceFiles(app);
  const childPidFile = join(app, 'child.pid');
  const script =
    `const c = require('child_process').spawn('sleep', ['60'], { stdio: 'ignore' });` +
    `require('fs').writeFileSync(${JSON.stringify(childPidFile)}, String(c.pid));` +
    `process.on('SIGTERM', () => { ${onTerm} }); setInterval(() => {}, 1000);`;
  mkdirSync(join(app, 'logs'), { recursive: true });
  const p = await spawnDetached(
    process.execPath,
    ['-e', script, 'stack', 'serve', `--pid-file=${files.pid}`],
    {
      logFile: files.log,
    },
  );
  writeFileSync(files.pid, `${p.pid}\n`);
  await waitFor(() => existsSync(childPidFile), 5000, 'the fake stack`s child');
  return { pid: p.pid, child: Number(readFileSync(childPidFile, 'utf8')) };
}

test('stop: SIGTERM, SIGKILL after the timeout; nothing of the stack`s process group is left', async (t) => {
  const { dir: app, cleanup } = await shortTempDir('pv-stk-');
  t.after(cleanup);
  mkdirSync(join(app, 'pids'), { recursive: true });
  const files = stackServiceFiles(app);

  // Ignores SIGTERM: killed after the timeout, with its child.
  const stubborn = await fakeStackWithChild(app, '/* ignored */');
  t.after(() => killQuietly(-stubborn.pid));
  const r1 = await stopStackService(app, { timeoutMs: 300 });
  assert.deepEqual(r1, { status: 'stopped', pid: stubborn.pid, forced: true });
  await waitFor(() => !processAlive(stubborn.pid) && !processAlive(stubborn.child), 5000, 'the group to die');
  assert.equal(existsSync(files.pid), false);

  // Exits on SIGTERM but leaves its child behind (a stack that could not stop dnsmasq).
  const sloppy = await fakeStackWithChild(app, 'process.exit(0)');
  t.after(() => killQuietly(-sloppy.pid));
  const r2 = await stopStackService(app, { timeoutMs: 5000 });
  assert.deepEqual(r2, { status: 'stopped', pid: sloppy.pid, forced: false });
  await waitFor(() => !processAlive(sloppy.child), 5000, 'the orphaned child to be killed');
  assert.match(readFileSync(files.log, 'utf8'), /pvmlab stack stop: pid \d+ stopped\n$/);
});

test('start: a stack that never serves is killed after the timeout, with the log`s last lines', async (t) => {
  const { dir: app, cleanup } = await shortTempDir('pv-stk-');
  t.after(cleanup);
  const files = stackServiceFiles(app);
  const script = join(app, 'fake-pvmlab.js');
  // "pvmlab" that logs a line and hangs: argv is `stack serve ... --pid-file=...`.
  writeFileSync(script, `console.error('starting slowly'); setInterval(() => {}, 1000);\n`);
  const started = Date.now();
  const err = await startStackService({
    app,
    command: [process.execPath, script],
    flags: { ...DEFAULTS, address: '127.0.0.1', httpPort: 9 },
    defaultAddress: '10.0.0.1',
    timeoutMs: 1000,
  }).then(
    () => assert.fail('started'),
    (e: unknown) => e,
  );
  assert.ok(err instanceof StackStartError, String(err));
  assert.match(err.message, /did not start serving within 1 s/);
  assert.match(err.message, /starting slowly/);
  assert.ok(Date.now() - started < 8000);
  assert.equal(existsSync(files.pid), false, 'no pid file left');
  assert.equal((await stackProcess(app)).state, 'stopped');
  const log = readFileSync(files.log, 'utf8');
  assert.match(
    log,
    /^--- \S+ pvmlab stack start: .* stack serve --address=127\.0\.0\.1 --http-port=9 --pid-file=/m,
  );
});

test('start: a program that exits at once fails at once', async (t) => {
  const { dir: app, cleanup } = await shortTempDir('pv-stk-');
  t.after(cleanup);
  const script = join(app, 'fake-pvmlab.js');
  writeFileSync(script, `console.error('Error: listen EADDRINUSE'); process.exit(1);\n`);
  const started = Date.now();
  await assert.rejects(
    startStackService({
      app,
      command: [process.execPath, script],
      flags: DEFAULTS,
      defaultAddress: '127.0.0.1',
      timeoutMs: 30_000,
    }),
    /the stack exited \(code 1\) before it was ready; the end of its log \(.*\):\n {2}Error: listen EADDRINUSE$/,
  );
  assert.ok(Date.now() - started < 5000, 'well before the timeout');
  assert.equal(existsSync(stackServiceFiles(app).pid), false);
});
