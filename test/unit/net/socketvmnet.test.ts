import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PvmlabError } from '../../../src/core/errors.js';
import { LAUNCHD_PLIST_PATH, SERVICE_TARGET } from '../../../src/net/launchd.js';
import {
  SocketVmnetDriver,
  resolveSocketVmnetClient,
  socketVmnetSocketPath,
} from '../../../src/net/socketvmnet.js';
import { fakeRunner, type Reply } from '../../helpers/runner.js';

const ARM = '/opt/homebrew/opt/socket_vmnet/bin/socket_vmnet_client';
const INTEL = '/usr/local/opt/socket_vmnet/bin/socket_vmnet_client';
const DEFAULT_SOCKET = '/var/run/vmlab.socket_vmnet';
const VM = { name: 'target1', mac: '52:54:00:12:34:56' };

// ---------------------------------------------------------------------------------------------------------
// resolution

test('client: $PVMLAB_SOCKET_VMNET_CLIENT wins and is taken as-is', () => {
  const looked: string[] = [];
  const exists = (p: string) => (looked.push(p), true);
  assert.equal(
    resolveSocketVmnetClient({ PVMLAB_SOCKET_VMNET_CLIENT: '/custom/client' }, exists, () => '/path/client'),
    '/custom/client',
  );
  assert.deepEqual(looked, [], 'the env path is not checked');
});

test('client: an empty $PVMLAB_SOCKET_VMNET_CLIENT counts as unset', () => {
  assert.equal(
    resolveSocketVmnetClient(
      { PVMLAB_SOCKET_VMNET_CLIENT: '' },
      () => true,
      () => undefined,
    ),
    ARM,
  );
});

test('client: Apple Silicon Homebrew, then Intel Homebrew, then PATH', () => {
  const looked: string[] = [];
  const record = (hit: string | undefined) => (p: string) => (looked.push(p), p === hit);
  assert.equal(
    resolveSocketVmnetClient({}, record(ARM), () => '/p'),
    ARM,
  );
  assert.equal(
    resolveSocketVmnetClient({}, record(INTEL), () => '/p'),
    INTEL,
  );
  assert.deepEqual(looked, [ARM, ARM, INTEL]);
  const asked: string[] = [];
  assert.equal(
    resolveSocketVmnetClient(
      {},
      () => false,
      (c) => (asked.push(c), '/usr/bin/socket_vmnet_client'),
    ),
    '/usr/bin/socket_vmnet_client',
  );
  assert.deepEqual(asked, ['socket_vmnet_client']);
});

test('client: the default PATH lookup uses the env given', () => {
  // No socket_vmnet_client on this Linux host: an empty PATH must not find one either.
  assert.throws(() => resolveSocketVmnetClient({ PATH: '' }, () => false), PvmlabError);
});

test('client: nothing found is a PvmlabError naming brew install socket_vmnet', () => {
  assert.throws(
    () =>
      resolveSocketVmnetClient(
        {},
        () => false,
        () => undefined,
      ),
    (e: unknown) => {
      assert.ok(e instanceof PvmlabError);
      assert.equal(e.exitCode, 1);
      assert.match(e.message, /socket_vmnet_client not found/);
      assert.match(e.message, /brew install socket_vmnet/);
      return true;
    },
  );
});

test('socket path: $PVMLAB_SOCKET_VMNET_PATH, else /var/run/vmlab.socket_vmnet', () => {
  assert.equal(socketVmnetSocketPath({}), DEFAULT_SOCKET);
  assert.equal(socketVmnetSocketPath({ PVMLAB_SOCKET_VMNET_PATH: '' }), DEFAULT_SOCKET);
  assert.equal(socketVmnetSocketPath({ PVMLAB_SOCKET_VMNET_PATH: '/tmp/lab.sock' }), '/tmp/lab.sock');
});

// ---------------------------------------------------------------------------------------------------------
// driver

function driver(opts: { files?: string[]; env?: NodeJS.ProcessEnv; reply?: (line: string) => Reply }) {
  const files = new Set(opts.files ?? []);
  const fake = fakeRunner(opts.reply);
  const d = new SocketVmnetDriver({
    runner: fake.runner,
    env: opts.env ?? {},
    exists: (p) => files.has(p),
    which: () => undefined,
    isRoot: false,
  });
  return { d, calls: fake.calls };
}

test('driver name', () => {
  assert.equal(driver({}).d.name, 'socket_vmnet');
});

test('attach: socket_vmnet_client <socket> wraps QEMU, NIC is socket,fd=3', async () => {
  const { d, calls } = driver({ files: [ARM, DEFAULT_SOCKET] });
  assert.deepEqual(await d.attach(VM), { wrapper: [ARM, DEFAULT_SOCKET], netdev: 'socket,fd=3' });
  assert.deepEqual(calls, [], 'attach runs nothing');
});

test('attach honours both environment overrides', async () => {
  const env = { PVMLAB_SOCKET_VMNET_CLIENT: '/x/client', PVMLAB_SOCKET_VMNET_PATH: '/tmp/lab.sock' };
  const { d } = driver({ files: ['/tmp/lab.sock'], env });
  assert.deepEqual(await d.attach(VM), { wrapper: ['/x/client', '/tmp/lab.sock'], netdev: 'socket,fd=3' });
});

test('attach: a missing socket says how to start the service', async () => {
  const { d } = driver({ files: [ARM] });
  await assert.rejects(d.attach(VM), (e: unknown) => {
    assert.ok(e instanceof PvmlabError);
    assert.match(e.message, /\/var\/run\/vmlab\.socket_vmnet not found/);
    assert.match(e.message, /pvmlab socket_vmnet start/);
    assert.match(e.message, /sudo pvmlab system setup-launchd/);
    return true;
  });
});

test('attach: a missing client is reported before the socket', async () => {
  const { d } = driver({ files: [] });
  await assert.rejects(d.attach(VM), /brew install socket_vmnet/);
});

test('detach does nothing', async () => {
  const { d, calls } = driver({});
  await d.detach({ name: 'target1' });
  assert.deepEqual(calls, []);
});

test('start and stop delegate to launchctl through sudo', async () => {
  const { d, calls } = driver({});
  await d.start();
  await d.stop();
  assert.deepEqual(calls, [
    'sudo mkdir -p /var/log/vmlab.socket_vmnet',
    'sudo mkdir -p /var/run/pvmlab',
    `sudo launchctl enable ${SERVICE_TARGET}`,
    `sudo launchctl bootstrap system ${LAUNCHD_PLIST_PATH}`,
    `sudo launchctl bootout ${SERVICE_TARGET}`,
    `sudo launchctl disable ${SERVICE_TARGET}`,
  ]);
});

test('status: up comes from launchctl print', async () => {
  const print = `system/io.github.pallotron.pvmlab.socket_vmnet = {
\tactive count = 1
\tstate = running
\tpid = 501
}
`;
  const { d, calls } = driver({ files: [DEFAULT_SOCKET], reply: () => ({ stdout: print }) });
  assert.deepEqual(await d.status(), {
    driver: 'socket_vmnet',
    name: DEFAULT_SOCKET,
    up: true,
    detail: {
      label: 'io.github.pallotron.pvmlab.socket_vmnet',
      loaded: true,
      socketExists: true,
      state: 'running',
      pid: 501,
    },
  });
  assert.deepEqual(calls, [`sudo launchctl print ${SERVICE_TARGET}`]);
});

test('status: not loaded is down', async () => {
  const { d } = driver({ reply: () => ({ code: 113, stderr: 'Could not find service' }) });
  const s = await d.status();
  assert.equal(s.up, false);
  assert.deepEqual(s.detail, {
    label: 'io.github.pallotron.pvmlab.socket_vmnet',
    loaded: false,
    socketExists: false,
  });
});
