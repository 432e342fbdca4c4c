import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { run } from '../../../src/core/exec.js';
import { vmFiles } from '../../../src/core/paths.js';
import { saveVm } from '../../../src/lab/store.js';
import {
  DETACH_KEY,
  attachConsole,
  connectConsole,
  consoleInUse,
  openVmConsole,
  splitAtDetachKey,
} from '../../../src/qemu/console.js';
import type { QemuSpec } from '../../../src/qemu/argv.js';
import { createOverlayDisk } from '../../../src/qemu/img.js';
import { queryStatus, startQemu, stopQemu } from '../../../src/qemu/lifecycle.js';
import { vmProcess } from '../../../src/qemu/process.js';
import { BIN } from '../../helpers/cli.js';
import { GUEST_POWEROFF, GUEST_READY, testGuestDisk } from '../../helpers/guest.js';
import { connectQmp, killQuietly, shortTempDir, waitFor } from '../../helpers/qemu.js';

const CTRL_RBRACKET = String.fromCharCode(DETACH_KEY);

test('splitAtDetachKey: bytes before Ctrl-] are sent, the key and what follows are not', () => {
  const none = splitAtDetachKey(Buffer.from('ls -l\r'));
  assert.equal(Buffer.from(none.send).toString(), 'ls -l\r');
  assert.equal(none.detach, false);
  const mid = splitAtDetachKey(Buffer.from(`ab${CTRL_RBRACKET}cd`));
  assert.equal(Buffer.from(mid.send).toString(), 'ab');
  assert.equal(mid.detach, true);
  const only = splitAtDetachKey(Buffer.from([DETACH_KEY]));
  assert.equal(only.send.length, 0);
  assert.equal(only.detach, true);
  assert.equal(splitAtDetachKey(Buffer.from('x\x01y'), 0x01).detach, true);
});

/** A unix socket server standing in for QEMU's console chardev; `handle` gets each client. */
async function fakeConsole(
  t: { after: (fn: () => unknown) => void },
  handle: (client: Socket) => void,
): Promise<{ path: string; server: Server; received: () => string; clientEnded: Promise<void> }> {
  const { dir, cleanup } = await shortTempDir('pv-con-');
  const path = join(dir, 'c.console');
  let received = '';
  let ended: () => void = () => undefined;
  const clientEnded = new Promise<void>((r) => (ended = r));
  const server = createServer((c) => {
    c.on('data', (d) => (received += d.toString('latin1')));
    c.on('end', () => ended());
    c.on('error', () => undefined);
    handle(c);
  });
  await new Promise<void>((r) => server.listen(path, r));
  t.after(async () => {
    await new Promise<void>((r) => server.close(() => r()));
    await cleanup();
  });
  return { path, server, received: () => received, clientEnded };
}

function collect(): { stream: PassThrough; text: () => string } {
  const stream = new PassThrough();
  let text = '';
  stream.on('data', (d: Buffer) => (text += d.toString('latin1')));
  return { stream, text: () => text };
}

test('attachConsole: bytes both ways, Ctrl-] detaches (not sent) and closes the connection', async (t) => {
  const fake = await fakeConsole(t, (c) => {
    c.write('login banner\r\n');
    c.on('data', (d) => c.write(`echo:${d.toString()}`));
  });
  const input = new PassThrough();
  const out = collect();
  const socket = await connectConsole(fake.path);
  const done = attachConsole(socket, { input, output: out.stream });
  await waitFor(() => out.text().includes('login banner'), 5000, 'the banner');
  input.write('uname\n');
  await waitFor(() => out.text().includes('echo:uname\n'), 5000, 'the echo');
  input.write(`exit\n${CTRL_RBRACKET}ignored`);
  assert.equal(await done, 'detach-key');
  await fake.clientEnded;
  assert.equal(fake.received(), 'uname\nexit\n');
  assert.equal(input.isPaused(), true, 'stdin is released');
});

test('attachConsole: a terminal is in raw mode while attached and restored after', async (t) => {
  const fake = await fakeConsole(t, () => undefined);
  const modes: boolean[] = [];
  const input = Object.assign(new PassThrough(), {
    isTTY: true,
    setRawMode: (raw: boolean) => modes.push(raw),
  });
  const done = attachConsole(await connectConsole(fake.path), { input, output: new PassThrough() });
  await waitFor(() => modes.length > 0, 2000, 'raw mode');
  assert.deepEqual(modes, [true]);
  // Raw mode: Ctrl-C is a byte for the guest, not a signal for pvmlab.
  input.write('\x03');
  await waitFor(() => fake.received() === '\x03', 2000, 'Ctrl-C passed on');
  input.write(CTRL_RBRACKET);
  assert.equal(await done, 'detach-key');
  assert.deepEqual(modes, [true, false]);
});

test('attachConsole: piped input that ends: the answer is printed, then it detaches once quiet', async (t) => {
  const fake = await fakeConsole(t, (c) =>
    c.on('data', () => setTimeout(() => c.write('answer after 300 ms\r\n'), 300)),
  );
  const input = new PassThrough();
  const out = collect();
  const started = Date.now();
  const done = attachConsole(await connectConsole(fake.path), {
    input,
    output: out.stream,
    quietMs: 500,
  });
  input.end('cat /etc/hostname\n');
  assert.equal(await done, 'input-ended');
  assert.match(out.text(), /answer after 300 ms/);
  const took = Date.now() - started;
  assert.ok(took >= 800 && took < 3000, `took ${took} ms`);
});

test('attachConsole: a chatty console still detaches lingerMs after the input ended', async (t) => {
  const fake = await fakeConsole(t, (c) => {
    const timer = setInterval(() => c.write('tick\r\n'), 50);
    c.on('close', () => clearInterval(timer));
  });
  const input = new PassThrough();
  const started = Date.now();
  const done = attachConsole(await connectConsole(fake.path), {
    input,
    output: new PassThrough(),
    quietMs: 300,
    lingerMs: 800,
  });
  input.end();
  assert.equal(await done, 'input-ended');
  const took = Date.now() - started;
  assert.ok(took >= 700 && took < 2500, `took ${took} ms`);
});

test('attachConsole: QEMU closing the socket ends the session as closed', async (t) => {
  const fake = await fakeConsole(t, (c) => setTimeout(() => c.end('bye\r\n'), 200));
  const out = collect();
  const input = new PassThrough();
  const reason = await attachConsole(await connectConsole(fake.path), { input, output: out.stream });
  assert.equal(reason, 'closed');
  assert.equal(out.text(), 'bye\r\n');
});

test('connectConsole: a missing socket and one nobody listens on are clear errors', async (t) => {
  const { dir, cleanup } = await shortTempDir('pv-con-');
  t.after(cleanup);
  await assert.rejects(
    connectConsole(join(dir, 'none.console')),
    /console socket .*none\.console is missing/,
  );
  // A file that is not a listening socket (what a QEMU killed with SIGKILL leaves).
  writeFileSync(join(dir, 'stale.console'), '');
  await assert.rejects(connectConsole(join(dir, 'stale.console')), /nothing listens on console socket/);
});

test('openVmConsole: a VM that is not running is a clear error', async (t) => {
  const { dir, cleanup } = await shortTempDir('pv-con-');
  t.after(cleanup);
  const files = vmFiles(join(dir, '.pvmlab'), 'off1');
  await assert.rejects(
    openVmConsole('off1', files),
    /^PvmlabError: VM 'off1' is not running: start it with 'pvmlab vm start off1'$/,
  );
  mkdirSync(join(files.pid, '..'), { recursive: true });
  writeFileSync(files.pid, `${process.pid}\n`); // alive, but not this VM's QEMU
  await assert.rejects(openVmConsole('off1', files), /is not running/);
});

test('startQemu refuses a console socket path a unix socket cannot hold, before running QEMU', async () => {
  const files = vmFiles(`/${'x'.repeat(63)}/.pvmlab`, 'long-vm-name');
  assert.ok(Buffer.byteLength(files.qmp) <= 100, 'the QMP path alone would fit');
  assert.ok(Buffer.byteLength(files.console) > 100);
  let ran = false;
  const spec: QemuSpec = {
    name: 'long-vm-name',
    arch: 'x86_64',
    accel: 'tcg',
    memoryMiB: 512,
    cpus: 1,
    firmware: { code: '/c.fd', vars: files.varsFd },
    disk: files.disk,
    boot: 'disk',
    mac: '52:54:00:12:34:57',
    nic: { wrapper: [], netdev: 'hubport,hubid=0' },
    files,
    interactive: false,
  };
  const runner = async (command: string, args: readonly string[]) => {
    ran = true;
    return { command, args, code: 0, signal: null, stdout: '', stderr: '', timedOut: false };
  };
  await assert.rejects(
    startQemu(spec, runner),
    /^PvmlabError: console socket path is too long for a unix socket \(\d+ bytes\): use a shorter PVMLAB_HOME or VM name$/,
  );
  assert.equal(ran, false);
});

/** Poll an async condition until it holds; throws after `ms`. */
async function until(cond: () => Promise<boolean>, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Run the built CLI with stdin piped; resolves with its exit status and output. */
function cli(
  home: string,
  args: string[],
  input: string,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      env: { ...process.env, NO_COLOR: '1', PVMLAB_HOME: home },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('latin1').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(input);
  });
}

test(
  'REAL: a background VM logs its console with nobody attached; vm console attaches, talks, detaches; the VM runs on',
  { timeout: 300_000 },
  async (t) => {
    const { dir: home, cleanup } = await shortTempDir('pv-rc-');
    const app = join(home, '.pvmlab');
    const name = 'con1';
    const files = vmFiles(app, name);
    // Hooks run in order: QEMU is killed (found through its pid file) before the lab is removed.
    t.after(async () => killQuietly((await vmProcess(files.pid)).pid));
    t.after(cleanup);
    for (const f of [files.definition, files.pid, files.log, files.qmp])
      mkdirSync(join(f, '..'), { recursive: true });
    await saveVm(app, { name, role: 'target', arch: 'x86_64', mac: '52:54:00:12:34:57', schema_version: 1 });
    await createOverlayDisk(run, await testGuestDisk(), files.disk, 64 * 2 ** 20);
    writeFileSync(files.varsFd, readFileSync('/usr/share/OVMF/OVMF_VARS_4M.fd'));
    // The last boot's log and a stale socket file (a QEMU killed with SIGKILL leaves one).
    writeFileSync(files.log, 'LAST BOOT\n');
    writeFileSync(files.console, '');

    await startQemu(
      {
        name,
        arch: 'x86_64',
        accel: 'tcg',
        memoryMiB: 512, // GRUB's memdisk does not fit in 256 MiB
        cpus: 1,
        firmware: { code: '/usr/share/OVMF/OVMF_CODE_4M.fd', vars: files.varsFd },
        disk: files.disk,
        boot: 'disk',
        mac: '52:54:00:12:34:57',
        // A NIC on an empty hub: no network at all.
        nic: { wrapper: [], netdev: 'hubport,hubid=0' },
        files,
        interactive: false,
      },
      run,
    );
    assert.equal((await vmProcess(files.pid)).state, 'running');
    const log = () => readFileSync(files.log, 'latin1');
    assert.ok(!log().includes('LAST BOOT'), 'the log starts empty at each start');
    assert.equal(await consoleInUse(files.qmp), false);

    // Nobody is attached: the firmware, GRUB and the kernel still run, and all of it is logged.
    await waitFor(() => log().includes(GUEST_READY), 240_000, 'the guest marker in the log');
    assert.match(log(), /BdsDxe/);

    // Attach with the console module: what is sent comes back (the guest's tty echoes it).
    const input = new PassThrough();
    const out = collect();
    const session = attachConsole(await openVmConsole(name, files), { input, output: out.stream });
    await until(async () => (await consoleInUse(files.qmp)) === true, 5000, 'QMP to see the client');
    // A second client is refused instead of hanging in QEMU's backlog.
    await assert.rejects(
      openVmConsole(name, files),
      /another client is attached to the console of VM 'con1'/,
    );
    input.write('hello-from-the-console-1\n');
    await waitFor(() => out.text().includes('hello-from-the-console-1'), 20_000, 'the echo');
    input.write(CTRL_RBRACKET);
    assert.equal(await session, 'detach-key');
    assert.equal(await queryStatus(files), 'running', 'the VM keeps running after a detach');

    // The CLI with a line piped in: it attaches, prints the guest's echo, detaches once quiet, exits 0.
    await until(async () => (await consoleInUse(files.qmp)) === false, 5000, 'QEMU to see the client leave');
    const r = await cli(home, ['vm', 'console', name], 'hello-from-the-cli-2\n');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /hello-from-the-cli-2/);
    assert.match(r.stderr, /Attached to the console of 'con1'; Ctrl-\] detaches/);
    assert.equal(await queryStatus(files), 'running');
    assert.match(log(), /hello-from-the-console-1[\s\S]*hello-from-the-cli-2/, 'the sessions are logged too');

    // Nobody attached again: the guest's answer to the power button still reaches the log.
    await until(async () => (await consoleInUse(files.qmp)) === false, 5000, 'QEMU to see the client leave');
    const qmp = await connectQmp(files.qmp);
    await qmp.execute('system_powerdown');
    qmp.close();
    await waitFor(() => log().includes(GUEST_POWEROFF), 60_000, 'the power-off line in the log');
    await until(async () => (await vmProcess(files.pid)).state === 'stopped', 30_000, 'QEMU to exit');
    assert.equal(await stopQemu(files), 'not-running');
    assert.equal(existsSync(files.console), false, 'the console socket is removed with the VM');
    const after = await cli(home, ['vm', 'console', name], '');
    assert.equal(after.code, 1);
    assert.match(after.stderr, /VM 'con1' is not running: start it with 'pvmlab vm start con1'/);
  },
);
