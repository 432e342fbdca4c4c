import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import {
  closeSync,
  existsSync,
  ftruncateSync,
  fstatSync,
  openSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeSync,
} from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, test } from 'node:test';
import { BIN, runCli, tempHome } from '../helpers/cli.js';

/**
 * Issue 8's fault suite for the lab state (`vm create`, the lock, the key, the definitions):
 * a full disk, kill -9 at random points, parallel creates in a new lab. None of it touches the
 * network (`vm create --pxeboot` writes files only), so no network namespace is needed; the full
 * disk is a small tmpfs mounted in a private mount namespace (`unshare -m`).
 */

/** What one create on a (nearly) full disk did, as seen from inside the mount namespace. */
interface FullDiskCase {
  scenario: 'new lab' | 'existing lab';
  freeKiB: number;
  code: number | null;
  stderr: string;
  /** Lab files after the failed (or not) create, relative to the lab dir. */
  files: string[];
  /** Definitions that do not parse as JSON. */
  badJson: string[];
  /** `vm list` warnings (skipped definitions). */
  listWarnings: string;
  /** The same create once the space is back. */
  afterCode: number | null;
  afterStderr: string;
  afterVms: string[];
  /** vm_key.pub is the public half of vm_key (ssh-keygen -y). */
  keyPairOk: boolean;
}

const CHILD_ENV = 'PVMLAB_FAULTS_LAB_CHILD';
const FREE_KIB = [0, 4, 8, 16, 24, 32, 48, 64, 128, 192, 256, 512];

function cli(home: string, args: string[]) {
  const r = spawnSync(process.execPath, [BIN, ...args], {
    env: { ...process.env, NO_COLOR: '1', PVMLAB_HOME: home },
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function walk(dir: string, root = dir): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    return e.isDirectory() ? [`${relative(root, p)}/`, ...walk(p, root)] : [relative(root, p)];
  });
}

/** Fill the file system to the last byte, then give back `freeKiB`. */
function fill(path: string, freeKiB: number): void {
  const fd = openSync(path, 'w');
  const chunk = Buffer.alloc(64 * 1024);
  try {
    for (;;) writeSync(fd, chunk);
  } catch (err) {
    if ((err as { code?: string }).code !== 'ENOSPC') throw err;
  }
  // Byte-sized tail writes use the last partial page too.
  try {
    for (;;) writeSync(fd, chunk, 0, 512);
  } catch {
    // full
  }
  ftruncateSync(fd, Math.max(0, fstatSync(fd).size - freeKiB * 1024));
  closeSync(fd);
}

/** Runs inside `unshare -m`: mounts a tmpfs on the home, creates VMs on a full disk, reports. */
function fullDiskChild(home: string): void {
  const mount = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=3m,mode=0755', 'pvlabfull', home]);
  if (mount.status !== 0) throw new Error(`mount: ${mount.stderr}`);
  const app = join(home, '.pvmlab');
  const filler = join(home, 'filler');
  const out: FullDiskCase[] = [];
  for (const scenario of ['new lab', 'existing lab'] as const) {
    for (const freeKiB of FREE_KIB) {
      rmSync(app, { recursive: true, force: true });
      rmSync(filler, { force: true });
      if (scenario === 'existing lab') {
        const base = cli(home, ['vm', 'create', 'base', '--pxeboot', '--disk-size', '1M']);
        if (base.code !== 0) throw new Error(`base: ${base.stderr}`);
      }
      fill(filler, freeKiB);
      const r = cli(home, ['vm', 'create', 'v1', '--pxeboot', '--disk-size', '1M']);
      const files = walk(app);
      const badJson = files
        .filter((f) => f.endsWith('.json'))
        .filter((f) => {
          try {
            JSON.parse(readFileSync(join(app, f), 'utf8'));
            return false;
          } catch {
            return true;
          }
        });
      const listWarnings = cli(home, ['vm', 'list', '--json']).stderr;
      rmSync(filler);
      const after = cli(home, ['vm', 'create', 'v1', '--pxeboot', '--disk-size', '1M']);
      const list = cli(home, ['vm', 'list', '--json']);
      const key = join(app, 'ssh', 'vm_key');
      const derived = spawnSync('ssh-keygen', ['-y', '-f', key], { encoding: 'utf8' }).stdout.split(' ')[1];
      const pub = existsSync(`${key}.pub`) ? readFileSync(`${key}.pub`, 'utf8').split(' ')[1] : undefined;
      out.push({
        scenario,
        freeKiB,
        code: r.code,
        stderr: r.stderr,
        files,
        badJson,
        listWarnings,
        afterCode: after.code,
        afterStderr: after.stderr,
        afterVms: list.code === 0 ? (JSON.parse(list.stdout) as { name: string }[]).map((v) => v.name) : [],
        keyPairOk: derived !== undefined && derived === pub,
      });
    }
  }
  process.stdout.write(JSON.stringify(out));
}

if (process.env[CHILD_ENV]) {
  fullDiskChild(process.env[CHILD_ENV]);
} else {
  describe('lab state under faults (issue 8)', { timeout: 900_000 }, () => {
    test('vm create on a full disk: a clear error naming the file, no partial files, usable after', async (t) => {
      const { home, cleanup } = await tempHome('pvlab-full-');
      t.after(cleanup);
      const self = fileURLToPath(import.meta.url);
      const r = spawnSync('unshare', ['-m', '--propagation', 'private', process.execPath, self], {
        env: { ...process.env, [CHILD_ENV]: home },
        encoding: 'utf8',
        timeout: 600_000,
        maxBuffer: 64 * 1024 * 1024,
      });
      assert.equal(r.status, 0, `child failed: ${r.stderr}`);
      const cases = JSON.parse(r.stdout) as FullDiskCase[];
      let failures = 0;
      for (const c of cases) {
        const what = `${c.scenario}, ${c.freeKiB} KiB free`;
        t.diagnostic(`${what}: exit ${c.code}${c.code ? `: ${c.stderr.trim().split('\n').pop()}` : ''}`);
        assert.ok(c.code === 0 || c.code === 1, `${what}: exit ${c.code}: ${c.stderr}`);
        if (c.code === 1) {
          failures++;
          // The message names a file of the lab and says why.
          assert.match(c.stderr, /\/\.pvmlab\/\S*.*no space left/i, `${what}: ${c.stderr}`);
          assert.doesNotMatch(c.stderr, /ENOSPC: no space left on device, write\s*$/m, what);
          assert.doesNotMatch(c.stderr, /\n\s+at /, `${what}: a stack trace`);
          // Nothing of v1 is left, no temp file, no lock.
          assert.deepEqual(
            c.files.filter((f) => /(^|\/)\.?v1[.-]|\.tmp$|state\.lock/.test(f)),
            [],
            `${what}: leftovers`,
          );
        }
        assert.deepEqual(c.badJson, [], `${what}: partial JSON`);
        assert.equal(c.listWarnings, '', `${what}: vm list warned`);
        // Space back: the same command works (or says the VM exists, if the first one did).
        assert.equal(c.afterCode, c.code === 0 ? 2 : 0, `${what}: after: ${c.afterStderr}`);
        assert.deepEqual(
          c.afterVms,
          c.scenario === 'existing lab' ? ['base', 'v1'] : ['v1'],
          `${what}: vm list after`,
        );
        assert.ok(c.keyPairOk, `${what}: vm_key and vm_key.pub are not one pair`);
      }
      // The sizes must actually have hit the disk limit in several places.
      assert.ok(failures >= 6, `only ${failures} creates ran out of space`);
    });

    test('kill -9 of vm create at random points: no partial JSON, no wedged lock, orphans named and removable', async (t) => {
      const { home, app, cleanup } = await tempHome('pvlab-kill-');
      t.after(cleanup);
      const ROUNDS = 30;
      const killed: string[] = [];
      for (let i = 0; i < ROUNDS; i++) {
        const name = `k${i}`;
        const child = spawn(process.execPath, [BIN, 'vm', 'create', name, '--pxeboot', '--disk-size', '1M'], {
          env: { ...process.env, NO_COLOR: '1', PVMLAB_HOME: home },
          stdio: 'ignore',
        });
        const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
        // Node starts in ~100-200 ms here; the create itself takes ~100-300 ms more.
        const delay = 80 + Math.floor(Math.random() * 400);
        const timer = setTimeout(() => child.kill('SIGKILL'), delay);
        const code = await exited;
        clearTimeout(timer);
        if (code !== 0) killed.push(name);
        // After every kill: each definition is whole JSON.
        // (A create killed before its checks ended has written nothing, not even vms/.)
        const vms = join(app, 'vms');
        for (const f of (existsSync(vms) ? readdirSync(vms) : []).filter((f) => f.endsWith('.json')))
          JSON.parse(readFileSync(join(app, 'vms', f), 'utf8'));
      }
      t.diagnostic(`${killed.length} of ${ROUNDS} creates killed before they finished`);
      // No wedged lock: the next create gets through at once.
      const started = Date.now();
      const next = await runCli(['vm', 'create', 'after', '--pxeboot', '--disk-size', '1M'], {
        home,
        timeoutMs: 30_000,
      });
      assert.equal(next.code, 0, next.stderr);
      assert.ok(Date.now() - started < 10_000, 'the create waited for a dead lock');
      assert.deepEqual(readdirSync(join(app, 'locks')), [], 'lock or lock temp files left');

      const list = await runCli(['vm', 'list', '--json'], { home });
      assert.equal(list.stderr, '', 'vm list skipped a definition');
      const defined = new Set((JSON.parse(list.stdout) as { name: string }[]).map((v) => v.name));
      // Every file left belongs to a name; a name with files but no definition is refused by
      // vm create (naming the files and `vm clean`), and is free again once they are gone.
      const owner = (f: string) => /^\.?(k\d+|after)[.-]/.exec(f)?.[1];
      const stray = [join(app, 'vms'), join(app, 'configs', 'cloud-init')].flatMap((d) =>
        existsSync(d) ? readdirSync(d).filter((f) => owner(f) === undefined) : [],
      );
      assert.deepEqual(stray, [], 'files that belong to no VM name');
      const orphans = new Map<string, string[]>();
      for (const f of readdirSync(join(app, 'vms'))) {
        const n = owner(f) as string;
        if (!defined.has(n)) orphans.set(n, [...(orphans.get(n) ?? []), f]);
      }
      t.diagnostic(
        `names with orphan files: ${[...orphans].map(([n, fs]) => `${n} (${fs.join(', ')})`).join('; ') || 'none'}`,
      );
      for (const [name, files] of orphans) {
        const r = await runCli(['vm', 'create', name, '--pxeboot', '--disk-size', '1M'], { home });
        assert.equal(r.code, 2, `${name}: ${r.stderr}`);
        assert.match(r.stderr, new RegExp(`a VM named '${name}' already exists .*pvmlab vm clean ${name}`));
        const clean = await runCli(['vm', 'clean', name], { home });
        t.diagnostic(`vm clean ${name} (orphan): exit ${clean.code} ${clean.stderr.trim()}`);
        if (clean.code !== 0) for (const f of files) rmSync(join(app, 'vms', f), { force: true });
        const again = await runCli(['vm', 'create', name, '--pxeboot', '--disk-size', '1M'], { home });
        assert.equal(again.code, 0, `${name} after removing its orphans: ${again.stderr}`);
      }
    });

    test('parallel creates in a new lab: one key pair, distinct names, IPs and MACs, all readable', async (t) => {
      for (let round = 0; round < 3; round++) {
        const { home, app, cleanup } = await tempHome('pvlab-par-');
        t.after(cleanup);
        const names = Array.from({ length: 10 }, (_, i) => `p${i}`);
        const results = await Promise.all(
          names.map((n) => runCli(['vm', 'create', n, '--pxeboot', '--disk-size', '1M'], { home })),
        );
        for (const [i, r] of results.entries()) assert.equal(r.code, 0, `${names[i]}: ${r.stderr}`);
        const list = await runCli(['vm', 'list', '--json'], { home });
        assert.equal(list.stderr, '');
        const rows = JSON.parse(list.stdout) as { name: string; ip: string; mac: string }[];
        assert.deepEqual(rows.map((r) => r.name).sort(), [...names].sort());
        assert.equal(new Set(rows.map((r) => r.ip)).size, names.length, 'IPs must be distinct');
        assert.equal(new Set(rows.map((r) => r.mac)).size, names.length, 'MACs must be distinct');
        // One key pair, and every VM authorised for it.
        const key = join(app, 'ssh', 'vm_key');
        assert.deepEqual(readdirSync(join(app, 'ssh')).sort(), ['vm_key', 'vm_key.pub']);
        const derived = spawnSync('ssh-keygen', ['-y', '-f', key], { encoding: 'utf8' }).stdout.split(' ')[1];
        assert.equal(readFileSync(`${key}.pub`, 'utf8').split(' ')[1], derived, 'vm_key.pub is not vm_key');
        for (const n of names) {
          const def = JSON.parse(readFileSync(join(app, 'vms', `${n}.json`), 'utf8')) as { ssh_key: string };
          assert.equal(def.ssh_key.split(' ')[1], derived, `${n} is authorised for another key`);
        }
        assert.ok(statSync(key).mode % 0o1000 === 0o600);
      }
    });
  });
}
