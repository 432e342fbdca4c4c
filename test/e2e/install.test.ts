import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import { formatPhases, provisionPhases, type PhaseEvent } from '../../src/stack/phases.js';
import { runCli, tempHome, type CliResult } from '../helpers/cli.js';
import { createNetns, deleteNetns } from '../helpers/netns.js';

const BRIDGE = 'pve2ebr0';
const SUBNET = '10.231.0';
/** The default path: whatever accelerator pvmlab picks on this host. */
const DEFAULT_PATH = ['PVMLAB_ACCEL', 'PVMLAB_QEMU_ACCEL'];
const INSTALL_MS = 20 * 60_000;

interface Event extends PhaseEvent {
  source: string;
}

/**
 * The main job, end to end, the way a user runs it (no accelerator override): the quickstart
 * installs a blank target over the network inside a namespace with no route out, the target
 * answers `vm shell`, a clean + create + start installs it again, failures are reported, a disk
 * VM that falls back to PXE keeps its disk, and an aarch64 target is installed too.
 */
describe('e2e: blank targets PXE-installed on the default path', { timeout: 90 * 60_000 }, () => {
  let ns: string;
  let home: string;
  let app: string;
  let cleanup: () => Promise<void>;
  const cli = (args: string[], timeoutMs = 120_000): Promise<CliResult> =>
    runCli(args, { home, netns: ns, unset: DEFAULT_PATH, timeoutMs });
  /** What helps when a step fails: the console's tail and the stack's log. */
  const context = (vm?: string) => {
    const tail = (p: string) => (existsSync(p) ? readFileSync(p, 'utf8').slice(-2500) : `(no ${p})`);
    return `${vm ? `--- ${vm} console ---\n${tail(join(app, 'logs', `${vm}.log`))}\n` : ''}--- stack ---\n${tail(join(app, 'logs', 'stack_serve.log'))}`;
  };
  const ok = async (args: string[], timeoutMs?: number, vm?: string) => {
    const r = await cli(args, timeoutMs);
    assert.equal(r.code, 0, `pvmlab ${args.join(' ')} exited ${r.code}:\n${r.stderr}\n${context(vm)}`);
    return r;
  };
  const events = async (vm: string): Promise<Event[]> =>
    JSON.parse((await ok(['vm', 'events', vm, '--json'])).stdout) as Event[];
  const definition = (vm: string) =>
    JSON.parse(readFileSync(join(app, 'vms', `${vm}.json`), 'utf8')) as {
      mac: string;
      ip: string;
      arch: string;
    };
  const shell = async (vm: string, command: string) => (await ok(['vm', 'shell', vm, '--', command])).stdout;

  /** The install phases in order on the timeline, and their durations printed. */
  const checkInstall = async (t: TestContext, vm: string, since?: Date) => {
    const evs = await events(vm);
    const types = evs.map((e) => e.type);
    const order = [
      'dhcp.discover',
      'tftp.sent',
      'http.ipxe',
      'http.image',
      'http.initrd',
      'installer.started',
      'http.config',
      'installer.disk',
      'installer.rootfs',
      'installer.seed',
      'installer.bootloader',
      'installer.done',
      'ready',
    ];
    let at = -1;
    for (const type of order) {
      const i = types.indexOf(type, at + 1);
      assert.ok(i > at, `${type} after the previous phases in: ${types.join(', ')}`);
      at = i;
    }
    assert.ok(!types.includes('installer.failed'), types.join(', '));
    const rootfs = evs.filter((e) => e.type === 'installer.rootfs');
    assert.ok(rootfs.length >= 2, 'rootfs progress events');
    assert.equal(rootfs.at(-1)?.detail?.percent, 100);
    const phases = provisionPhases(evs, since);
    t.diagnostic(`${vm} (${definition(vm).arch}): ${formatPhases(phases).replaceAll('\n', '; ')}`);
    assert.equal(phases.phases.length, 4, formatPhases(phases));
  };

  /** The installed system: its name, its address, nothing of the installer left behind. */
  const checkInstalled = async (vm: string) => {
    assert.equal((await shell(vm, 'hostname')).trim(), vm);
    const cmdline = await shell(vm, 'cat /proc/cmdline');
    for (const arg of ['config_url=', 'pvmlab_events=', 'initrd='])
      assert.ok(!cmdline.includes(arg), `${arg} left on the installed kernel command line: ${cmdline}`);
    assert.match(await shell(vm, 'cat /etc/fstab'), /^UUID=[0-9a-f-]{36}\s+\/\s+ext4/m);
    assert.match(
      await shell(vm, 'ip -4 -o addr show'),
      new RegExp(`inet ${definition(vm).ip.replaceAll('.', '\\.')}/`),
    );
    assert.match(await shell(vm, 'cloud-init status'), /status: done/);
    // The root file system was grown to the disk (10 GiB), not left at the image's size.
    const size = Number((await shell(vm, 'df -B1 --output=size / | tail -n 1')).trim());
    assert.ok(size > 8 * 2 ** 30, `root file system of ${size} bytes`);
  };

  before(async () => {
    ({ home, app, cleanup } = await tempHome('pve2e-'));
    ns = createNetns('pve2e');
    // debian-12 for both architectures, from the build cache outside the repo (built there on a
    // miss, from Debian's mirror: outside the namespace, which has no route out).
    for (const arch of ['x86_64', 'aarch64']) {
      const r = await runCli(['distro', 'pull', '--distro', 'debian-12', '--arch', arch], {
        home,
        unset: DEFAULT_PATH,
        timeoutMs: 60 * 60_000,
      });
      assert.equal(r.code, 0, `distro pull ${arch}:\n${r.stderr}`);
    }
    await ok(['setup', '--bridge', BRIDGE, '--subnet', `${SUBNET}.0/24`]);
  });

  after(async () => {
    await cli(['clean'], 120_000).catch(() => undefined);
    try {
      execFileSync('sh', ['-c', `ip netns pids ${ns} | xargs -r kill -9`]);
    } catch {
      /* nothing left */
    }
    deleteNetns(ns);
    await cleanup();
  });

  test('the quickstart, offline inside the namespace, ends with target1 installed and ready', async (t) => {
    const started = Date.now();
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      PVMLAB_HOME: home,
      PVMLAB_QUICKSTART_SKIP_DEPS: '1',
      NO_COLOR: '1',
    };
    for (const k of DEFAULT_PATH) delete env[k];
    const r = await new Promise<CliResult>((res) => {
      const child = spawn('ip', ['netns', 'exec', ns, 'bash', resolve('scripts/quickstart.sh')], { env });
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      const timer = setTimeout(() => child.kill('SIGKILL'), INSTALL_MS);
      child.on('close', (code) => {
        clearTimeout(timer);
        res({ code, stdout, stderr });
      });
    });
    const out = `${r.stdout}${r.stderr}`;
    assert.equal(r.code, 0, `quickstart exited ${r.code}:\n${out.slice(-4000)}\n${context('target1')}`);
    const lastLine = r.stdout.trimEnd().split('\n').pop() ?? '';
    assert.match(lastLine, /vm shell target1/, `last line: ${lastLine}`);
    t.diagnostic(`quickstart (second, offline run) took ${((Date.now() - started) / 1000).toFixed(0)} s`);
    await checkInstall(t, 'target1');
    await checkInstalled('target1');
    // The stack runs in the background under pvmlab's control.
    assert.match((await ok(['stack', 'status'])).stdout, /running/);
  });

  test('vm clean, create and start again: target1 is installed again (new MAC, same address)', async (t) => {
    const before = definition('target1');
    await ok(['vm', 'clean', 'target1']);
    await ok(['vm', 'create', 'target1', '--pxeboot']);
    assert.notEqual(definition('target1').mac, before.mac);
    assert.equal(definition('target1').ip, before.ip);
    const since = new Date();
    await ok(['vm', 'start', 'target1', '--wait'], INSTALL_MS, 'target1');
    await checkInstall(t, 'target1', since);
    await checkInstalled('target1');
  });

  test('a root file system that 404s: installer.failed with the reason; vm start --wait exits non-zero', async () => {
    // A distro whose kernel and modules are there but whose root file system is not.
    const src = join(app, 'images', 'debian-12', 'x86_64');
    const dir = join(app, 'images', 'broken', 'x86_64');
    mkdirSync(dir, { recursive: true });
    for (const f of ['vmlinuz', 'modules.cpio.gz']) execFileSync('ln', ['-f', join(src, f), join(dir, f)]);
    const manifest = JSON.parse(readFileSync(join(src, 'manifest.json'), 'utf8')) as Record<string, unknown>;
    writeFileSync(join(dir, 'manifest.json'), JSON.stringify({ ...manifest, distro: 'broken' }));
    writeFileSync(
      join(app, 'distros.yaml'),
      `${readFileSync(join(app, 'distros.yaml'), 'utf8')}\n- name: broken\n  distro_name: debian\n  version: "0"\n  arch:\n    x86_64:\n      kernel_path: ./boot/vmlinuz\n`,
    );
    await ok(['vm', 'create', 'broken1', '--pxeboot', '--distro', 'broken', '--arch', 'x86_64']);
    const r = await cli(['vm', 'start', 'broken1', '--wait'], INSTALL_MS);
    assert.notEqual(r.code, 0, 'vm start --wait must fail');
    assert.match(r.stderr, /rootfs\.ext4\.zst/, `the reason names the missing file:\n${r.stderr}`);
    // --wait stops at the stack's 404; the installer's own report follows a moment later.
    let evs = await events('broken1');
    for (let i = 0; i < 60 && !evs.some((e) => e.type === 'installer.failed'); i++) {
      await new Promise((r) => setTimeout(r, 1000));
      evs = await events('broken1');
    }
    const failed = evs.find((e) => e.type === 'installer.failed');
    assert.ok(failed, evs.map((e) => e.type).join(', '));
    assert.equal(failed.detail?.phase, 'rootfs');
    assert.match(String(failed.detail?.reason), /404/);
    assert.ok(
      evs.some(
        (e) => e.type === 'http.error' && e.detail?.status === 404 && /rootfs/.test(String(e.detail?.path)),
      ),
      'the stack recorded the 404 with its path',
    );
    await ok(['vm', 'stop', 'broken1', '--timeout', '1']);
  });

  test('--installer-no-reboot: installed, no reboot, the installer stays at a shell on the console', async () => {
    await ok(['vm', 'create', 'stay1', '--pxeboot', '--arch', 'x86_64']);
    const r = await ok(['vm', 'start', 'stay1', '--installer-no-reboot', '--wait'], INSTALL_MS, 'stay1');
    assert.match(r.stderr, /stays at a shell/);
    const evs = await events('stay1');
    const done = evs.find((e) => e.type === 'installer.done');
    assert.equal(done?.detail?.reboot, false);
    assert.ok(!evs.some((e) => e.type === 'ready'), 'it did not boot the installed system');
    const c = await runCli(['vm', 'console', 'stay1'], {
      home,
      netns: ns,
      unset: DEFAULT_PATH,
      // Only the shell's answer can contain the digits: the echoed command line has the formula.
      input: 'echo cmdline-$(grep -c pvmlab_events= /proc/cmdline)$((40+2))\n',
      timeoutMs: 60_000,
    });
    assert.equal(c.code, 0, c.stderr);
    assert.match(c.stdout, /cmdline-142/, `still the installer (its kernel command line):\n${c.stdout}`);
    await ok(['vm', 'stop', 'stay1', '--timeout', '1']);
    await ok(['vm', 'clean', 'stay1']);
  });

  test('a disk VM started with --boot pxe keeps its disk', async () => {
    // A tiny "cloud image" with a pattern where the installer would write a partition table.
    const image = join(home, 'disk-vm.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', image, '64M']);
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0xab 0 1M', image], { stdio: 'ignore' });
    writeFileSync(
      join(app, 'distros.yaml'),
      `${readFileSync(join(app, 'distros.yaml'), 'utf8')}\n- name: localdisk\n  distro_name: test\n  version: "1"\n  arch:\n    x86_64:\n      qcow2_url: file://${image}\n`,
    );
    await ok(['vm', 'create', 'web1', '--distro', 'localdisk', '--arch', 'x86_64', '--disk-size', '1G']);
    const r = await cli(['vm', 'start', 'web1', '--boot', 'pxe', '--wait'], INSTALL_MS);
    assert.notEqual(r.code, 0, 'a disk VM is never installed, so --wait stops');
    assert.match(r.stderr, /disk/, r.stderr);
    const evs = await events('web1');
    assert.ok(
      evs.some(
        (e) => e.type === 'http.ipxe' && e.detail?.script === 'local-boot' && e.detail?.reason === 'disk-vm',
      ),
      evs.map((e) => `${e.type} ${JSON.stringify(e.detail ?? {})}`).join('\n'),
    );
    assert.ok(!evs.some((e) => e.type.startsWith('installer.') || e.type === 'http.config'));
    await ok(['vm', 'stop', 'web1', '--timeout', '1']);
    // Every byte of the pattern is still there.
    const check = execFileSync(
      'qemu-io',
      ['-f', 'qcow2', '-c', 'read -P 0xab 0 1M', join(app, 'vms', 'web1.qcow2')],
      {
        encoding: 'utf8',
      },
    );
    assert.doesNotMatch(check, /Pattern verification failed/, check);
  });

  test('an aarch64 target is installed too (debian-12 arm64, built here)', async (t) => {
    await ok(['vm', 'create', 'arm1', '--pxeboot', '--arch', 'aarch64']);
    const since = new Date();
    await ok(['vm', 'start', 'arm1', '--wait'], 40 * 60_000, 'arm1');
    await checkInstall(t, 'arm1', since);
    await checkInstalled('arm1');
    assert.equal((await shell('arm1', 'uname -m')).trim(), 'aarch64');
  });
});
