import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { BIN, runCli, tempHome, type CliResult } from '../helpers/cli.js';
import { markerInitrd, testGuestDisk } from '../helpers/guest.js';
import { createNetns, deleteNetns, waitFor } from '../helpers/netns.js';

const BRIDGE = 'pvsgbr0';
const SUBNET = '10.221.0';

interface Ev {
  type: string;
  at: string;
  detail?: Record<string, string | number>;
}

/**
 * Real UEFI guests against the stack, for what a script's text cannot prove: a disk VM that
 * PXE-boots is sent back to its own disk by real iPXE, and a failing iPXE step reports its
 * step and iPXE's error code, so `vm start --wait` fails at once with the reason.
 */
describe(
  'pxeboot stack: installs only machines that asked for it, reports failed boots',
  { timeout: 900_000 },
  () => {
    let ns: string;
    let home: string;
    let app: string;
    let cleanup: () => Promise<void>;
    let stack: ChildProcess | undefined;
    let stackLog = '';
    const cli = (args: string[], timeoutMs?: number): Promise<CliResult> =>
      runCli(args, { home, netns: ns, env: { PVMLAB_ACCEL: 'tcg' }, ...(timeoutMs ? { timeoutMs } : {}) });
    const ok = async (args: string[], timeoutMs?: number) => {
      const r = await cli(args, timeoutMs);
      assert.equal(
        r.code,
        0,
        `pvmlab ${args.join(' ')}:\n${r.stderr}\n--- stack ---\n${stackLog.slice(-3000)}`,
      );
      return r;
    };
    const consoleLog = (name: string) => {
      const p = join(app, 'logs', `${name}.log`);
      return existsSync(p) ? readFileSync(p, 'utf8') : '';
    };
    const events = async (name: string) =>
      JSON.parse((await ok(['vm', 'events', name, '--json'])).stdout) as Ev[];

    before(async () => {
      ({ home, app, cleanup } = await tempHome('pvsguard-'));
      ns = createNetns('pvsg');
      // The installer initrd is there; the 'nokernel' distro's kernel is not.
      mkdirSync(join(app, 'initrds', 'x86_64'), { recursive: true });
      writeFileSync(join(app, 'initrds', 'x86_64', 'initrd.gz'), markerInitrd());
      mkdirSync(join(app, 'images', 'nokernel', 'x86_64'), { recursive: true });
      const disk = await testGuestDisk();
      writeFileSync(
        join(app, 'distros.yaml'),
        `- name: testguest\n  distro_name: test\n  version: "1"\n  arch:\n    x86_64:\n      qcow2_url: ${pathToFileURL(disk).href}\n` +
          `- name: nokernel\n  distro_name: test\n  version: "1"\n  arch:\n    x86_64:\n      qcow2_url: file:///nonexistent.qcow2\n      kernel_path: ./boot/vmlinuz\n`,
      );
      await ok(['setup', '--bridge', BRIDGE, '--subnet', `${SUBNET}.0/24`]);
      await ok(['network', 'start']);
      // A disk VM from a cloud image (a real bootable disk), and a PXE VM whose kernel is missing.
      await ok(['vm', 'create', 'web1', '--distro', 'testguest', '--arch', 'x86_64', '--memory', '512']);
      await ok([
        'vm',
        'create',
        'broken1',
        '--pxeboot',
        '--distro',
        'nokernel',
        '--arch',
        'x86_64',
        '--memory',
        '512',
      ]);
      stack = spawn('ip', ['netns', 'exec', ns, process.execPath, BIN, 'stack', 'serve'], {
        env: { ...process.env, PVMLAB_HOME: home, NO_COLOR: '1' },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      stack.stdout?.on('data', (d: Buffer) => (stackLog += d.toString()));
      stack.stderr?.on('data', (d: Buffer) => (stackLog += d.toString()));
      try {
        await waitFor('the stack to serve', () => /Stack serving/.test(stackLog) || undefined, 30_000);
      } catch (err) {
        throw new Error(`${(err as Error).message}\n--- stack ---\n${stackLog}`);
      }
    });

    after(async () => {
      await cli(['vm', 'stop', 'web1', '--timeout', '1']).catch(() => undefined);
      await cli(['vm', 'stop', 'broken1', '--timeout', '1']).catch(() => undefined);
      stack?.kill('SIGTERM');
      await new Promise((r) => setTimeout(r, 500));
      stack?.kill('SIGKILL');
      deleteNetns(ns);
      await cleanup();
    });

    test('a disk VM started with --boot pxe is sent back to its disk, reinstall marker or not; --wait says why', async () => {
      writeFileSync(join(app, 'vms', 'web1.reinstall'), '');
      const r = await cli(['vm', 'start', 'web1', '--boot', 'pxe', '--wait'], 400_000);
      assert.equal(r.code, 1, `${r.stderr}\n--- console ---\n${consoleLog('web1').slice(-2000)}`);
      assert.match(
        r.stderr,
        /web1 is not a PXE VM: the stack does not install it and sent it back to its disk \(http\.ipxe: script=local-boot reason=disk-vm\)/,
      );
      assert.doesNotMatch(r.stderr, /timed out/);
      // iPXE said why and handed back to the firmware, which goes on to its next boot option. (With
      // `--boot pxe` OVMF tries PXEv6 and HTTP boot before the disk: minutes under TCG, so the test
      // stops here; the disk itself boots in the VM lifecycle test.)
      try {
        await waitFor(
          'iPXE to hand back to the firmware',
          () => /BdsDxe: failed to start Boot\d+ "UEFI PXEv4/.test(consoleLog('web1')) || undefined,
          120_000,
        );
      } catch (err) {
        throw new Error(`${(err as Error).message}\n--- console ---\n${consoleLog('web1').slice(-3000)}`);
      }
      const con = consoleLog('web1');
      assert.match(
        con,
        /pvmlab: web1 is a disk VM \(not created with --pxeboot\): the stack does not install it/,
      );
      assert.doesNotMatch(con, /no boot script/, 'boot.ipxe left quietly after the local-boot script');
      const evs = await events('web1');
      assert.ok(
        evs.some(
          (e) => e.type === 'http.ipxe' && e.detail?.script === 'local-boot' && e.detail.reason === 'disk-vm',
        ),
        evs.map((e) => e.type).join(', '),
      );
      assert.ok(
        !evs.some((e) => e.type === 'http.image' || e.type === 'http.initrd' || e.type === 'http.config'),
      );
      await ok(['vm', 'stop', 'web1', '--timeout', '1']);
    });

    test('a failing iPXE step is on the timeline (http.error, ipxe.failed with the error code); --wait fails at once', async () => {
      const r = await cli(['vm', 'start', 'broken1', '--wait'], 400_000);
      assert.equal(
        r.code,
        1,
        `${r.stderr}\n--- console ---\n${consoleLog('broken1').slice(-2000)}\n--- stack ---\n${stackLog.slice(-2000)}`,
      );
      assert.doesNotMatch(r.stderr, /timed out/);
      // The 404 comes first; the report of the failed step right after it.
      assert.match(
        r.stderr,
        /the boot server could not serve broken1 a file its boot needs \(http\.error: path=\/images\/nokernel\/x86_64\/vmlinuz status=404\)|iPXE on broken1 could not load the kernel \(ipxe\.failed: step=kernel errno=0x[0-9a-f]{8} help=https:\/\/ipxe\.org\/err\/[0-9a-f]{8}\)/,
      );
      const evs = await waitFor(
        'the ipxe.failed report',
        async () => {
          const e = await events('broken1');
          return e.some((x) => x.type === 'ipxe.failed') ? e : undefined;
        },
        60_000,
      );
      const failed = evs.find((e) => e.type === 'ipxe.failed');
      assert.equal(failed?.detail?.step, 'kernel');
      const errno = String(failed?.detail?.errno);
      assert.match(errno, /^0x[0-9a-f]{8}$/, "iPXE's ${errno}");
      assert.equal(failed?.detail?.help, `https://ipxe.org/err/${errno.slice(2)}`);
      const notFound = evs.find((e) => e.type === 'http.error');
      assert.deepEqual(notFound?.detail, { path: '/images/nokernel/x86_64/vmlinuz', status: 404 });
      // The report itself was answered (no error for /ipxe/failed), and the script went on to its shell.
      assert.equal(evs.filter((e) => e.type === 'http.error').length, 1, JSON.stringify(evs));
      await waitFor(
        'the script to reach its shell',
        () =>
          consoleLog('broken1').includes('pvmlab: boot of broken1 failed (see: pvmlab vm events broken1)') ||
          undefined,
        30_000,
      );
      await ok(['vm', 'stop', 'broken1', '--timeout', '1']);
    });
  },
);
