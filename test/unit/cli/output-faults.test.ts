import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { BIN, runCli, tempHome } from '../../helpers/cli.js';

/** Run the CLI with its stdout a pipe whose reader is already gone. */
function runWithClosedStdout(
  args: string[],
  home: string,
): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      env: { ...process.env, NO_COLOR: '1', PVMLAB_HOME: home },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout.destroy();
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stderr });
    });
  });
}

const VM = {
  name: 'pxe1',
  role: 'target',
  arch: 'x86_64',
  ip: '192.168.100.2',
  mac: '52:54:00:aa:bb:02',
  pxeboot: true,
};

describe('output faults: a reader that goes away, files that are not what they should be', () => {
  let home: string;
  let app: string;
  let cleanup: () => Promise<void>;
  before(async () => {
    ({ home, app, cleanup } = await tempHome('pvout-'));
    await mkdir(join(app, 'vms'), { recursive: true });
    await mkdir(join(app, 'logs'), { recursive: true });
    await writeFile(join(app, 'vms', 'pxe1.json'), JSON.stringify(VM));
    await writeFile(join(app, 'logs', 'pxe1.log'), 'boot\n'.repeat(50_000));
  });
  after(() => cleanup());

  test('every printing command exits quietly when its reader goes away (EPIPE)', async () => {
    for (const args of [
      ['--help'],
      ['--version'],
      ['vm', '--help'],
      ['vm'],
      ['vm', 'list'],
      ['vm', 'list', '--json'],
      ['vm', 'logs', 'pxe1', '--no-follow'],
      ['distro', 'ls'],
      ['distro', 'ls', '--json'],
      ['completion', 'bash'],
      ['__vms'],
    ]) {
      const r = await runWithClosedStdout(args, home);
      assert.equal(r.code, 0, `${args.join(' ')}: ${r.code} ${r.signal} ${r.stderr}`);
      assert.doesNotMatch(r.stderr, /EPIPE|Unhandled|\n {4}at /, args.join(' '));
    }
  });

  test('stack serve: a bad address, interface or directory is a usage error before anything is written', async () => {
    const fresh = await tempHome('pvserve-');
    try {
      for (const [flags, re] of [
        [['--address', '999.1.1.1'], /invalid --address '999\.1\.1\.1'/],
        [['--address', 'localhost'], /invalid --address 'localhost'/],
        [['--address', '10.0.0.1/24'], /without a \/prefix/],
        [['--address', '224.0.0.1'], /not a host address/],
        [['--interface', 'br 0'], /invalid --interface 'br 0'/],
        [['--interface', 'a'.repeat(16)], /invalid --interface/],
        [['--state-dir', '/etc/hostname'], /--state-dir \/etc\/hostname is not a directory/],
        [['--vms-dir', ''], /--vms-dir must not be empty/],
      ] as const) {
        for (const cmd of ['serve', 'start']) {
          const r = await runCli(['stack', cmd, ...flags, '--no-dnsmasq', '--http-port', '1'], {
            home: fresh.home,
          });
          assert.equal(r.code, 2, `${cmd} ${flags.join(' ')}: ${r.code} ${r.stderr}`);
          assert.match(r.stderr, re);
          assert.equal(existsSync(fresh.app), false, `${cmd} ${flags.join(' ')} wrote ${fresh.app}`);
        }
      }
    } finally {
      await fresh.cleanup();
    }
  });

  test('a log or a pid file that is a directory: the error names the file', async () => {
    const other = await tempHome('pvdir-');
    try {
      await mkdir(join(other.app, 'vms'), { recursive: true });
      await writeFile(join(other.app, 'vms', 'pxe1.json'), JSON.stringify(VM));
      await mkdir(join(other.app, 'logs', 'pxe1.log'), { recursive: true });
      await mkdir(join(other.app, 'logs', 'stack_serve.log'), { recursive: true });
      await mkdir(join(other.app, 'pids', 'pxe1.pid'), { recursive: true });
      const logs = await runCli(['vm', 'logs', 'pxe1', '--no-follow'], { home: other.home });
      assert.equal(logs.code, 1);
      assert.match(logs.stderr, /cannot read the console log of 'pxe1' .*logs\/pxe1\.log: it is a directory/);
      const stackLogs = await runCli(['stack', 'logs'], { home: other.home });
      assert.equal(stackLogs.code, 1);
      assert.match(stackLogs.stderr, /cannot read the stack log .*stack_serve\.log: it is a directory/);
      const list = await runCli(['vm', 'list', '--json'], { home: other.home });
      assert.equal(list.code, 0, list.stderr);
      assert.match(list.stderr, /cannot read .*pids\/pxe1\.pid/);
      assert.equal((JSON.parse(list.stdout) as { status: string }[])[0]?.status, 'Stopped');

      await rm(join(other.app, 'vms', 'pxe1.json'));
      await mkdir(join(other.app, 'vms', 'pxe1.json'));
      const events = await runCli(['vm', 'events', 'pxe1'], { home: other.home });
      assert.equal(events.code, 1);
      assert.match(
        events.stderr,
        /vms\/pxe1\.json\): it is a directory, not a definition file; remove the VM with 'pvmlab vm clean pxe1'/,
      );
    } finally {
      await other.cleanup();
    }
  });
});
