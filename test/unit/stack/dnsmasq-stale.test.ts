import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { DNSMASQ, alive, orphanedDnsmasq, waitFor, type T } from '../../helpers/dnsmasq.js';
import { DnsmasqSupervisor, isOwnDnsmasq, replaceStaleDnsmasq } from '../../../src/stack/dnsmasq.js';
import { stackHealth } from '../../../src/stack/serve.js';

/**
 * A dnsmasq left by a stack that died, and processes that only look like one. The real
 * dnsmasq runs a config with `port=0` and no DHCP range: it binds nothing, so it is safe
 * outside a network namespace.
 */

function tempDir(t: T): string {
  const dir = mkdtempSync(join(tmpdir(), 'pvml-dnsmasq-stale-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function track(t: T, child: ChildProcess): ChildProcess {
  t.after(() => {
    child.kill('SIGKILL');
  });
  return child;
}

test('isOwnDnsmasq: a dnsmasq by executable (else argv[0]) running exactly our config', () => {
  const argv = ['/usr/sbin/dnsmasq', '--keep-in-foreground', '--conf-file=/s/dnsmasq.conf'];
  assert.equal(isOwnDnsmasq(argv, '/usr/sbin/dnsmasq', '/s/dnsmasq.conf'), true);
  assert.equal(isOwnDnsmasq(argv, undefined, '/s/dnsmasq.conf'), true);
  assert.equal(isOwnDnsmasq(['dnsmasq', '--conf-file=/s/dnsmasq.conf'], undefined, '/s/dnsmasq.conf'), true);
  // Another lab's config, or a prefix of ours.
  assert.equal(isOwnDnsmasq(argv, '/usr/sbin/dnsmasq', '/t/dnsmasq.conf'), false);
  assert.equal(isOwnDnsmasq(argv, '/usr/sbin/dnsmasq', '/s/dnsmasq.con'), false);
  // Something else carrying our config path in its arguments.
  assert.equal(
    isOwnDnsmasq(
      ['sh', '-c', 'x', 'dnsmasq', '--conf-file=/s/dnsmasq.conf'],
      '/usr/bin/dash',
      '/s/dnsmasq.conf',
    ),
    false,
  );
  assert.equal(isOwnDnsmasq(argv, '/usr/bin/python3', '/s/dnsmasq.conf'), false);
});

test('replaceStaleDnsmasq: stops a dnsmasq left running our config, found by its pid file', async (t) => {
  const dir = tempDir(t);
  const pid = await orphanedDnsmasq(t, dir);
  const logs: string[] = [];
  const conf = join(dir, 'dnsmasq.conf');
  const stopped = await replaceStaleDnsmasq({
    pidFile: join(dir, 'dnsmasq.pid'),
    confPath: conf,
    log: (m) => logs.push(m),
  });
  assert.deepEqual(stopped, [pid]);
  assert.equal(alive(pid), false);
  assert.deepEqual(logs, [
    `stack: stopped a stale dnsmasq (pid ${pid}) left running ${conf} by a stack that died`,
  ]);
  // Nothing left: a second call stops nothing.
  assert.deepEqual(await replaceStaleDnsmasq({ pidFile: join(dir, 'dnsmasq.pid'), confPath: conf }), []);
});

test('replaceStaleDnsmasq: without its pid file (killed before dnsmasq wrote it), found by its config', async (t) => {
  const dir = tempDir(t);
  const pid = await orphanedDnsmasq(t, dir);
  unlinkSync(join(dir, 'dnsmasq.pid'));
  const stopped = await replaceStaleDnsmasq({
    pidFile: join(dir, 'dnsmasq.pid'),
    confPath: join(dir, 'dnsmasq.conf'),
  });
  assert.deepEqual(stopped, [pid]);
  assert.equal(alive(pid), false);
});

test('replaceStaleDnsmasq: never signals a process that is not ours', async (t) => {
  const dir = tempDir(t);
  const conf = join(dir, 'dnsmasq.conf');
  const pidFile = join(dir, 'dnsmasq.pid');
  // A reused pid: the pid file names a shell that carries our config path in its arguments.
  const impostor = track(
    t,
    spawn('sh', ['-c', 'sleep 30', 'dnsmasq', `--conf-file=${conf}`], { stdio: 'ignore' }),
  );
  writeFileSync(pidFile, `${impostor.pid}\n`);
  // Another lab's dnsmasq (its own config), its pid in our pid file too at one point.
  const otherDir = tempDir(t);
  const other = await orphanedDnsmasq(t, otherDir);
  assert.deepEqual(await replaceStaleDnsmasq({ pidFile, confPath: conf }), []);
  writeFileSync(pidFile, `${other}\n`);
  assert.deepEqual(await replaceStaleDnsmasq({ pidFile, confPath: conf }), []);
  // Garbage and a dead pid.
  writeFileSync(pidFile, 'not a pid\n');
  assert.deepEqual(await replaceStaleDnsmasq({ pidFile, confPath: conf }), []);
  writeFileSync(pidFile, '999999999\n');
  assert.deepEqual(await replaceStaleDnsmasq({ pidFile, confPath: conf }), []);
  assert.equal(alive(impostor.pid as number), true);
  assert.equal(alive(other), true);
});

test('replaceStaleDnsmasq: a dnsmasq of a live stack is not stopped: an error names both', async (t) => {
  const dir = tempDir(t);
  const conf = join(dir, 'dnsmasq.conf');
  writeFileSync(conf, 'port=0\n');
  // A live "stack serve" (by its command line) that runs our config's dnsmasq as its child.
  const code = `const c = require('child_process').spawn(${JSON.stringify(DNSMASQ)}, ['--keep-in-foreground', ${JSON.stringify(`--conf-file=${conf}`)}, '--log-facility=-'], { stdio: 'ignore' }); console.log(c.pid); process.on('SIGTERM', () => { c.kill('SIGKILL'); process.exit(0); }); setInterval(() => {}, 1000);`;
  const stack = track(
    t,
    spawn(process.execPath, ['-e', code, 'stack', 'serve'], { stdio: ['ignore', 'pipe', 'inherit'] }),
  );
  t.after(() => {
    stack.kill('SIGTERM');
  });
  const pid = await new Promise<number>((resolve) =>
    stack.stdout?.once('data', (d: Buffer) => resolve(Number(d.toString().trim()))),
  );
  t.after(() => {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone with its stack */
    }
  });
  await waitFor('the child dnsmasq', () => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(conf);
    } catch {
      return false;
    }
  });
  await assert.rejects(
    replaceStaleDnsmasq({ pidFile: join(dir, 'dnsmasq.pid'), confPath: conf }),
    (err: Error) => {
      assert.match(
        err.message,
        new RegExp(
          `^dnsmasq \\(pid ${pid}\\) running .*dnsmasq\\.conf belongs to another stack \\(pid ${stack.pid}\\): stop that stack first`,
        ),
      );
      return true;
    },
  );
  assert.equal(alive(pid), true);
});

/** A stand-in that logs as dnsmasq does once its sockets are bound, then runs until killed. */
function script(dir: string, name: string, body: string): string {
  const p = join(dir, name);
  writeFileSync(p, `#!/bin/sh\n${body}\n`);
  chmodSync(p, 0o755);
  return p;
}

test('DnsmasqSupervisor.status: serving only once dnsmasq says it started; why not, when it is not', async (t) => {
  const dir = tempDir(t);
  const bin = script(
    dir,
    'dnsmasq.sh',
    'sleep 0.2\necho "dnsmasq[$$]: started, version 2.90 cachesize 150" >&2\nwhile :; do sleep 0.05; done',
  );
  const sup = new DnsmasqSupervisor({ binary: bin, argv: [], onLine: () => undefined, backoffMs: 50 });
  t.after(() => sup.stop());
  await sup.start();
  const pid1 = sup.pid as number;
  assert.deepEqual(sup.status, { pid: pid1, restarts: 0, serving: false, error: 'starting' });
  await waitFor('serving', () => sup.status.serving);
  assert.deepEqual(sup.status, { pid: pid1, restarts: 0, serving: true });
  process.kill(pid1, 'SIGKILL');
  const exited = await waitFor('the exit', () => (sup.status.pid === null ? sup.status : undefined));
  assert.deepEqual(exited, { pid: null, restarts: 0, serving: false, error: 'exited (SIGKILL)' });
  const again = await waitFor('serving again', () =>
    sup.status.serving && sup.status.pid !== pid1 ? sup.status : undefined,
  );
  assert.equal(again.restarts, 1);
  assert.equal(again.error, undefined);
});

test('DnsmasqSupervisor.status: "Address already in use" for ever shows, with the restarts', async (t) => {
  const dir = tempDir(t);
  const bin = script(
    dir,
    'dnsmasq.sh',
    'echo "dnsmasq: failed to create listening socket for 10.217.0.1: Address already in use" >&2\nexit 2',
  );
  const sup = new DnsmasqSupervisor({
    binary: bin,
    argv: [],
    onLine: () => undefined,
    backoffMs: 10,
    maxBackoffMs: 20,
  });
  t.after(() => sup.stop());
  await sup.start();
  await waitFor('restarts', () => sup.status.restarts >= 3);
  const s = await waitFor('the reason', () =>
    sup.status.error?.includes('Address') ? sup.status : undefined,
  );
  assert.equal(s.serving, false);
  assert.equal(
    s.error,
    'exited (2): dnsmasq: failed to create listening socket for 10.217.0.1: Address already in use',
  );
  assert.deepEqual(stackHealth(sup), { ok: false, dnsmasq: sup.status });
});

test('DnsmasqSupervisor: prepare runs before every start; a failing prepare at a restart is tried again', async (t) => {
  const dir = tempDir(t);
  const bin = script(dir, 'dnsmasq.sh', 'echo "dnsmasq: started, version x"\nsleep 0.1\nexit 1');
  let calls = 0;
  const sup = new DnsmasqSupervisor({
    binary: bin,
    argv: [],
    onLine: () => undefined,
    backoffMs: 10,
    maxBackoffMs: 10,
    prepare: async () => {
      calls++;
      if (calls === 2) throw new Error('dnsmasq (pid 1) running x belongs to another stack (pid 2)');
    },
  });
  t.after(() => sup.stop());
  await sup.start();
  assert.equal(calls, 1);
  await waitFor('the failed prepare', () => sup.status.error?.includes('another stack'));
  await waitFor('a start after it', () => calls >= 3 && sup.status.serving);
  // A prepare that fails at start() fails the start: nothing runs.
  const failing = new DnsmasqSupervisor({
    binary: bin,
    argv: [],
    onLine: () => undefined,
    prepare: () => Promise.reject(new Error('nope')),
  });
  await assert.rejects(failing.start(), /nope/);
  assert.equal(failing.pid, undefined);
  await failing.stop();
});

test('DnsmasqSupervisor: a missing binary is not serving, and says why', async (t) => {
  const sup = new DnsmasqSupervisor({
    binary: join(tmpdir(), 'pvmlab-no-dnsmasq', 'dnsmasq'),
    argv: [],
    onLine: () => undefined,
  });
  t.after(() => sup.stop());
  await sup.start();
  const s = await waitFor('the spawn error', () =>
    sup.status.error?.startsWith('cannot run') ? sup.status : undefined,
  );
  assert.equal(s.serving, false);
  assert.match(s.error ?? '', /^cannot run dnsmasq: spawn .*ENOENT$/);
  assert.equal(stackHealth(sup).ok, false);
  assert.deepEqual(stackHealth(undefined), { dnsmasq: 'off' });
});
