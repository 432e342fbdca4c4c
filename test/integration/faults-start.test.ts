import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { BIN, runCli, tempHome, type CliResult } from '../helpers/cli.js';
import { createNetns, deleteNetns, nsJson, waitFor } from '../helpers/netns.js';
import { tapName } from '../../src/net/bridge.js';
import { QmpClient } from '../../src/qemu/qmp.js';

/**
 * Fault suite for `vm start` (issue 8, item 9): parallel starts of one VM, kill -9 of QEMU and of
 * `vm start` at random points, start racing stop, stale and foreign runtime files. After each
 * fault the VM is in one consistent state: running (one QEMU, its TAP on the bridge with carrier,
 * QMP answering) or stopped (no QEMU, no TAP, no pid file or QMP socket).
 */
const BRIDGE = 'pvstfbr0';
const VM = 'f1';
const TAP = tapName(BRIDGE, VM);

interface Link {
  ifname: string;
  flags?: string[];
  master?: string;
}

/** Live (not zombie) processes whose command line names this pid file: this VM's QEMUs. */
function qemusOf(pidFile: string): number[] {
  const out: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const argv = readFileSync(`/proc/${e}/cmdline`, 'utf8').split('\0');
      const i = argv.indexOf('-pidfile');
      if (i < 0 || argv[i + 1] !== pidFile || !/qemu-system-/.test(argv[0] ?? '')) continue;
      if (/^\d+ \(.*\) [ZX]/.test(readFileSync(`/proc/${e}/stat`, 'utf8'))) continue;
      out.push(Number(e));
    } catch {
      /* exited meanwhile */
    }
  }
  return out;
}

function kill9(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    /* gone */
  }
}

async function gone(pid: number): Promise<void> {
  await waitFor(
    `pid ${pid} to exit`,
    () => {
      try {
        return /^\d+ \(.*\) [ZX]/.test(readFileSync(`/proc/${pid}/stat`, 'utf8')) || undefined;
      } catch {
        return true;
      }
    },
    10_000,
  );
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('vm start under faults, in a network namespace', { timeout: 240_000 }, () => {
  let ns: string;
  let home: string;
  let app: string;
  let cleanup: () => Promise<void>;
  let pidFile: string;
  let qmpFile: string;
  const cli = (args: string[]): Promise<CliResult> =>
    runCli(args, { home, netns: ns, env: { PVMLAB_ACCEL: 'tcg' } });
  const ok = async (args: string[]) => {
    const r = await cli(args);
    assert.equal(r.code, 0, `pvmlab ${args.join(' ')} failed:\n${r.stderr}`);
    return r;
  };
  const taps = () => nsJson<Link[]>(ns, ['link', 'show']).filter((l) => l.ifname.startsWith('pvt'));

  /** Running: exactly one QEMU, its TAP enslaved with carrier, QMP answering. */
  async function assertRunning(why: string): Promise<number> {
    const qemus = qemusOf(pidFile);
    assert.equal(qemus.length, 1, `${why}: one QEMU, found ${qemus.length}`);
    assert.equal(Number(readFileSync(pidFile, 'utf8').trim()), qemus[0], `${why}: the pid file names it`);
    const all = taps();
    assert.equal(all.length, 1, `${why}: one TAP, found ${all.map((l) => l.ifname).join(' ')}`);
    assert.equal(all[0]?.ifname, TAP);
    assert.equal(all[0]?.master, BRIDGE, `${why}: the TAP is on the bridge`);
    assert.ok(
      all[0]?.flags?.includes('UP') && all[0].flags.includes('LOWER_UP'),
      `${why}: TAP up with carrier`,
    );
    const q = await QmpClient.connect(qmpFile, 3000);
    try {
      assert.ok(['running', 'prelaunch', 'paused'].includes(await q.status()), `${why}: QMP answers`);
    } finally {
      q.close();
    }
    return qemus[0] as number;
  }

  /** Stopped: nothing left behind. */
  function assertStopped(why: string): void {
    assert.deepEqual(qemusOf(pidFile), [], `${why}: no QEMU`);
    assert.deepEqual(
      taps().map((l) => l.ifname),
      [],
      `${why}: no TAP`,
    );
    assert.equal(existsSync(pidFile), false, `${why}: no pid file`);
    assert.equal(existsSync(qmpFile), false, `${why}: no QMP socket`);
  }

  before(async () => {
    ({ home, app, cleanup } = await tempHome('pvstf-'));
    pidFile = join(app, 'pids', `${VM}.pid`);
    qmpFile = join(app, 'monitors', `${VM}.qmp`);
    ns = createNetns('startf');
    await ok(['setup', '--bridge', BRIDGE, '--subnet', '10.232.0.0/24']);
    await ok(['network', 'start']);
    // A PXE VM with a blank disk: it only has to run, not boot an OS.
    await ok(['vm', 'create', VM, '--pxeboot', '--memory', '128']);
  });

  after(async () => {
    for (const pid of qemusOf(pidFile)) kill9(pid);
    deleteNetns(ns);
    await cleanup();
  });

  test('4 parallel starts of one VM: one QEMU, its TAP on the bridge, the others say already running', async () => {
    const results = await Promise.all([1, 2, 3, 4].map(() => cli(['vm', 'start', VM])));
    const codes = results.map((r) => r.code).sort();
    assert.deepEqual(codes, [0, 1, 1, 1], results.map((r) => r.stderr).join('\n---\n'));
    for (const r of results.filter((x) => x.code === 1))
      assert.match(r.stderr, new RegExp(`VM '${VM}' is already running`));
    await assertRunning('after parallel starts');
    // And again while it runs: all refuse, nothing is touched.
    const pid = await assertRunning('before');
    const again = await Promise.all([1, 2, 3].map(() => cli(['vm', 'start', VM])));
    assert.deepEqual(
      again.map((r) => r.code),
      [1, 1, 1],
    );
    assert.equal(await assertRunning('after starts of a running VM'), pid);
    await ok(['vm', 'stop', VM, '--timeout', '1']);
    assertStopped('after stop');
  });

  test('kill -9 of QEMU (and of vm start) at random points, in a loop: the next start works', async () => {
    for (let i = 0; i < 6; i++) {
      // Odd rounds: kill `vm start` itself mid-way (its lock, a half-made TAP); even: QEMU.
      const child = spawn('ip', ['netns', 'exec', ns, process.execPath, BIN, 'vm', 'start', VM], {
        env: { ...process.env, NO_COLOR: '1', PVMLAB_HOME: home, PVMLAB_ACCEL: 'tcg' },
        stdio: 'ignore',
      });
      const exited = new Promise<number | null>((r) => child.on('close', r));
      const delay = Math.floor(Math.random() * 1500);
      if (i % 2 === 1) {
        await sleep(delay);
        kill9(child.pid as number);
        await exited;
      } else {
        assert.equal(await exited, 0, `round ${i}: start`);
        await sleep(delay);
      }
      for (const pid of qemusOf(pidFile)) {
        kill9(pid);
        await gone(pid);
      }
      // Left behind now, as after a crash: maybe a pid file, a QMP socket, a TAP, a lock.
      const r = await cli(['vm', 'start', VM]);
      assert.equal(r.code, 0, `round ${i} (killed after ${delay} ms): start after kill -9:\n${r.stderr}`);
      await assertRunning(`round ${i}`);
      await ok(['vm', 'stop', VM, '--timeout', '1']);
      assertStopped(`round ${i}`);
    }
    assert.deepEqual(
      readdirSync(join(app, 'locks')).filter((f) => f.startsWith(`vm-${VM}`)),
      [],
    );
  });

  test('start racing stop: the VM ends running or stopped, never half-made', async () => {
    for (let i = 0; i < 6; i++) {
      // The stop lands at a random point of the start: before its TAP, before QEMU, after.
      const start = cli(['vm', 'start', VM]);
      const delay = Math.floor(Math.random() * 1200);
      await sleep(delay);
      const stop = cli(['vm', 'stop', VM, '--timeout', '1']);
      for (const r of await Promise.all([start, stop]))
        assert.equal(r.code, 0, `round ${i} (stop after ${delay} ms): ${r.stderr}`);
      if (qemusOf(pidFile).length > 0) {
        await assertRunning(`round ${i} (stop after ${delay} ms)`);
        await ok(['vm', 'stop', VM, '--timeout', '1']);
      }
      assertStopped(`round ${i} (stop after ${delay} ms)`);
    }
  });

  test('stop with a pid file naming a reused pid signals nothing; start then works', async () => {
    const sleeper = spawn('sleep', ['60'], { stdio: 'ignore' });
    try {
      writeFileSync(pidFile, `${sleeper.pid}\n`);
      const stop = await ok(['vm', 'stop', VM]);
      assert.doesNotMatch(stop.stderr, /signalling/);
      assert.equal(sleeper.exitCode, null);
      assert.equal(sleeper.signalCode, null, 'the unrelated process lives');
      writeFileSync(pidFile, `${sleeper.pid}\n`);
      await ok(['vm', 'start', VM]);
      await assertRunning('start over a reused pid file');
      assert.equal(sleeper.signalCode, null);
      await ok(['vm', 'stop', VM, '--timeout', '1']);
    } finally {
      sleeper.kill('SIGKILL');
    }
  });

  test('a QEMU running without its pid file keeps its TAP and QMP socket: start and stop refuse to touch them', async () => {
    await ok(['vm', 'start', VM]);
    const pid = await assertRunning('started');
    const saved = readFileSync(pidFile, 'utf8');
    // A clumsy user removes the pid file: pvmlab no longer knows this QEMU is the VM.
    writeFileSync(pidFile, '');
    const start = await cli(['vm', 'start', VM]);
    assert.equal(start.code, 1);
    assert.match(start.stderr, /in use although its pid file .* names no running QEMU/);
    const stop = await ok(['vm', 'stop', VM]);
    assert.match(stop.stderr, /left in place/);
    writeFileSync(pidFile, saved);
    assert.equal(await assertRunning('untouched'), pid);
    await ok(['vm', 'stop', VM, '--timeout', '1']);
    assertStopped('end');
  });
});
