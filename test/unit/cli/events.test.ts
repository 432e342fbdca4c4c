import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import type { Context } from '../../../src/cli/context.js';
import { waitForReady, type StackEvent } from '../../../src/cli/events.js';
import { waitForCloudInit } from '../../../src/cli/wait.js';
import { defaultLabConfig } from '../../../src/lab/config.js';
import type { VmDefinition } from '../../../src/core/vmdef.js';
import { fakeRunner } from '../../helpers/runner.js';

type After = { after: (fn: () => unknown) => void };

const MAC = '52:54:00:aa:bb:02';
const pxe1: VmDefinition = {
  name: 'pxe1',
  role: 'target',
  arch: 'x86_64',
  ip: '10.217.0.2',
  mac: MAC,
  pxeboot: true,
  distro: 'testos',
  kernel: 'vmlinuz',
};

/**
 * A fake stack on loopback: `/api/machines/<mac>/timeline` answers with `events(n)`, n the number
 * of the request (from 1), so a test decides what the timeline holds at each poll.
 */
async function fakeStack(
  t: After,
  events: (n: number) => StackEvent[],
): Promise<{ ctx: Context; polls: () => number }> {
  let n = 0;
  const server = createServer((req, res) => {
    if (req.url !== `/api/machines/${MAC}/timeline`) return void res.writeHead(404).end('no route\n');
    n++;
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ name: 'pxe1', mac: MAC, events: events(n) }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(
    () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  );
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  const ctx: Context = {
    app: '/nonexistent/.pvmlab',
    runner: fakeRunner().runner,
    env: { PVMLAB_STACK_URL: url },
  };
  return { ctx, polls: () => n };
}

const START = new Date('2030-01-01T10:00:00.000Z');
/** An event `s` seconds after the start (negative: before it, from an earlier boot). */
function ev(s: number, type: string, detail?: StackEvent['detail']): StackEvent {
  return {
    at: new Date(START.getTime() + s * 1000).toISOString(),
    mac: MAC,
    type,
    source: type.split('.')[0] as string,
    ...(detail ? { detail } : {}),
  };
}

/** The VM is up the whole time (the stuck check's own tests are in test/unit/qemu/liveness.test.ts). */
const RUNNING = () => Promise.resolve(undefined);

const BOOT = [ev(1, 'dhcp.ack', { ip: '10.217.0.2' }), ev(2, 'http.ipxe', { script: 'install' })];

test('waitForReady fails fast with the reason on each kind of failure event, and still returns on ready', async (t) => {
  const cases: [string, StackEvent, RegExp][] = [
    [
      'the installer failed',
      ev(9, 'installer.failed', { phase: 'disk', reason: 'no disk to install on' }),
      /^the installer on pxe1 failed \(installer\.failed: phase=disk reason=no disk to install on\); see: pvmlab vm events pxe1$/,
    ],
    [
      'iPXE could not load the kernel',
      ev(3, 'ipxe.failed', { step: 'kernel', errno: '0x2d0c618e', help: 'https://ipxe.org/err/2d0c618e' }),
      /^iPXE on pxe1 could not load the kernel \(ipxe\.failed: step=kernel errno=0x2d0c618e help=https:\/\/ipxe\.org\/err\/2d0c618e\);/,
    ],
    [
      'iPXE could not load an initrd',
      ev(3, 'ipxe.failed', {
        step: 'initrd',
        file: 'modules.cpio.gz',
        errno: '0x3e11623b',
        help: 'https://ipxe.org/err/3e11623b',
      }),
      /^iPXE on pxe1 could not load the initrd modules\.cpio\.gz \(ipxe\.failed: step=initrd file=modules\.cpio\.gz errno=0x3e11623b help=https:\/\/ipxe\.org\/err\/3e11623b\);/,
    ],
    [
      'iPXE could not boot',
      ev(3, 'ipxe.failed', { step: 'boot', errno: '0x2e008081', help: 'https://ipxe.org/err/2e008081' }),
      /^iPXE on pxe1 could not boot the kernel \(ipxe\.failed: step=boot errno=0x2e008081 help=https:\/\/ipxe\.org\/err\/2e008081\);/,
    ],
    [
      'the kernel is missing',
      ev(3, 'http.error', { path: '/images/testos/x86_64/vmlinuz', status: 404 }),
      /^the boot server could not serve pxe1 a file its boot needs \(http\.error: path=\/images\/testos\/x86_64\/vmlinuz status=404\);/,
    ],
    [
      'the installer initrd is unreadable',
      ev(3, 'http.error', { path: '/initrds/x86_64/initrd.gz', status: 500 }),
      /\(http\.error: path=\/initrds\/x86_64\/initrd\.gz status=500\)/,
    ],
    [
      'the root file system is missing',
      ev(30, 'http.error', { path: '/images/testos/x86_64/rootfs.tar.zst', status: 404 }),
      /\(http\.error: path=\/images\/testos\/x86_64\/rootfs\.tar\.zst status=404\)/,
    ],
    [
      'the machine is a disk VM',
      ev(2, 'http.ipxe', { script: 'local-boot', reason: 'disk-vm' }),
      /^pxe1 is not a PXE VM: the stack does not install it and sent it back to its disk \(http\.ipxe: script=local-boot reason=disk-vm\);/,
    ],
    [
      'the machine is installed already',
      ev(2, 'http.ipxe', { script: 'local-boot', reason: 'installed' }),
      /^pxe1 is installed: the stack sent it to its disk instead of installing it again \(http\.ipxe: script=local-boot reason=installed\);/,
    ],
    [
      'there is no distro',
      ev(2, 'http.ipxe', { script: 'nothing-to-boot' }),
      /^the stack has no distro to install on pxe1 \(http\.ipxe: script=nothing-to-boot\);/,
    ],
  ];
  for (const [what, failure, message] of cases) {
    // The failure shows up on the third poll; the timeout is far away.
    const { ctx, polls } = await fakeStack(t, (n) => (n < 3 ? BOOT : [...BOOT, failure]));
    const started = Date.now();
    await assert.rejects(waitForReady(ctx, pxe1, START, 60_000, 20, RUNNING), { message }, what);
    assert.ok(Date.now() - started < 5000, `${what}: failed fast`);
    assert.equal(polls(), 3, what);
  }

  // It still returns on ready: stale failures and errors for files the boot does not need do not stop it.
  const harmless = [
    // From an earlier boot: older than the start.
    ev(-60, 'installer.failed', { phase: 'disk', reason: 'no disk' }),
    ev(-50, 'ipxe.failed', { step: 'kernel', errno: '0x2d0c618e', help: 'https://ipxe.org/err/2d0c618e' }),
    ev(-40, 'http.ipxe', { script: 'local-boot', reason: 'installed' }),
    // Not a file the boot needs, or a range past the end of one that is there.
    ev(5, 'http.error', { path: '/cloud-init/pxe1/vendor-data', status: 404 }),
    ev(6, 'http.error', { path: '/nope', status: 404 }),
    ev(7, 'http.error', { path: '/images/testos/x86_64/rootfs.tar.zst', status: 416 }),
    ...BOOT,
  ];
  const { ctx, polls } = await fakeStack(t, (n) =>
    n < 4 ? harmless : [...harmless, ev(60, 'installer.done'), ev(90, 'ready')],
  );
  assert.equal(await waitForReady(ctx, pxe1, START, 60_000, 20, RUNNING), 'ready');
  assert.equal(polls(), 4);

  // --installer-no-reboot: the installer says it is done and stays; no ready will come.
  const stays = await fakeStack(t, (n) =>
    n < 2 ? BOOT : [...BOOT, ev(60, 'installer.done', { seconds: 24.6, reboot: false })],
  );
  assert.equal(await waitForReady(stays.ctx, pxe1, START, 60_000, 20, RUNNING), 'installed');
  // A done that reboots is not the end: it goes on waiting for ready.
  const reboots = await fakeStack(t, () => [...BOOT, ev(60, 'installer.done', { reboot: true })]);
  await assert.rejects(waitForReady(reboots.ctx, pxe1, START, 300, 20, RUNNING), { message: /^timed out/ });

  // Without a ready, the same events run into the timeout, not into a failure.
  const slow = await fakeStack(t, () => harmless);
  await assert.rejects(waitForReady(slow.ctx, pxe1, START, 300, 20, RUNNING), {
    message: /^timed out waiting for pxe1 to be ready \(last: http\.ipxe\)$/,
  });
  assert.ok(slow.polls() > 3);

  // A ready outranks a failure reported in the same poll (the machine made it after all).
  const both = await fakeStack(t, () => [
    ...BOOT,
    ev(3, 'http.error', { path: '/images/testos/x86_64/vmlinuz', status: 404 }),
    ev(90, 'ready'),
  ]);
  await waitForReady(both.ctx, pxe1, START, 60_000, 20, RUNNING);
});

test('waitForReady: a VM that cannot get there any more (QEMU gone, console at a dead end) fails at once', async (t) => {
  const { ctx, polls } = await fakeStack(t, () => BOOT);
  let checks = 0;
  const stuck = () =>
    Promise.resolve(++checks < 3 ? undefined : "VM 'pxe1' is not running any more (its QEMU exited)");
  const started = Date.now();
  await assert.rejects(waitForReady(ctx, pxe1, START, 60_000, 20, stuck), {
    message:
      "pxe1 will not become ready: VM 'pxe1' is not running any more (its QEMU exited); see: pvmlab vm events pxe1",
  });
  assert.ok(Date.now() - started < 5000);
  assert.equal(polls(), 3);
  // The default check looks at the VM's own files: with no QEMU behind them, the first poll ends it.
  const none = await fakeStack(t, () => BOOT);
  await assert.rejects(
    waitForReady(none.ctx, pxe1, START, 60_000, 20),
    /will not become ready: VM 'pxe1' is not running/,
  );
  assert.equal(none.polls(), 1);
});

test('waitForCloudInit: a VM that stopped ends the wait with the reason, not at the timeout', async () => {
  // The host holds the default lab's address on its bridge: the VM is reached directly.
  const onLab = JSON.stringify([{ addr_info: [{ local: defaultLabConfig().host_ip }] }]);
  const { runner, calls } = fakeRunner((line) =>
    line.startsWith('ip -j addr show')
      ? { stdout: onLab }
      : line.startsWith('ssh ')
        ? { code: 255, stderr: 'ssh: connect to host 10.217.0.9 port 22: No route to host' }
        : {},
  );
  const ctx: Context = { app: '/nonexistent/.pvmlab', runner, env: {} };
  const disk1: VmDefinition = { name: 'disk1', role: 'target', arch: 'x86_64', ip: '10.217.0.9', mac: MAC };
  let checks = 0;
  const stuck = () =>
    Promise.resolve(++checks < 2 ? undefined : "VM 'disk1' panicked: Kernel panic - not syncing: x");
  const started = Date.now();
  await assert.rejects(waitForCloudInit(ctx, disk1, 60_000, stuck), {
    message: "disk1 will not become ready: VM 'disk1' panicked: Kernel panic - not syncing: x",
  });
  assert.ok(Date.now() - started < 10_000);
  assert.equal(calls.filter((c) => c.startsWith('ssh ')).length, 2);
});
