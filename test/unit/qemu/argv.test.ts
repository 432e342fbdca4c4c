import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { run } from '../../../src/core/exec.js';
import { buildQemuArgv, escapeOpt, machineUuid, qemuBinary, type QemuSpec } from '../../../src/qemu/argv.js';
import { createBlankDisk } from '../../../src/qemu/img.js';
import type { QmpClient } from '../../../src/qemu/qmp.js';
import { connectQmp, killQuietly, shortTempDir, waitFor } from '../../helpers/qemu.js';
import { testKernel } from '../../helpers/guest.js';

const FILES = {
  pid: '/lab/pids/n1.pid',
  qmp: '/lab/monitors/n1.qmp',
  log: '/lab/logs/n1.log',
  console: '/lab/monitors/n1.console',
};
const NO_PXE6 = ['-fw_cfg', 'name=opt/org.tianocore/IPv6PXESupport,string=n'];
const TAP = 'tap,ifname=pvt0123456789,script=no,downscript=no';

function diskSpec(over: Partial<QemuSpec> = {}): QemuSpec {
  return {
    name: 'n1',
    arch: 'x86_64',
    accel: 'tcg',
    memoryMiB: 2048,
    cpus: 2,
    firmware: { code: '/usr/share/OVMF/OVMF_CODE_4M.fd', vars: '/lab/vms/n1-vars.fd' },
    disk: '/lab/vms/n1.qcow2',
    seedIso: '/lab/configs/cloud-init/n1.iso',
    boot: 'disk',
    mac: '52:54:00:12:34:56',
    nic: { wrapper: [], netdev: TAP },
    files: FILES,
    interactive: false,
    ...over,
  };
}

test('qemuBinary per arch', () => {
  assert.equal(qemuBinary('x86_64'), 'qemu-system-x86_64');
  assert.equal(qemuBinary('aarch64'), 'qemu-system-aarch64');
});

test('x86_64 disk VM with a seed ISO under TCG: the full argv', () => {
  assert.deepEqual(buildQemuArgv(diskSpec()), [
    'qemu-system-x86_64',
    '-name',
    'pvmlab-n1',
    '-uuid',
    'a98e8d04-8d68-5c92-afdf-63cebd2c7596',
    '-machine',
    'q35',
    '-accel',
    'tcg,thread=multi',
    '-cpu',
    'max',
    '-smp',
    '2',
    '-m',
    '2048',
    '-nodefaults',
    '-drive',
    'if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd',
    '-drive',
    'if=pflash,format=raw,unit=1,file=/lab/vms/n1-vars.fd',
    ...NO_PXE6,
    '-drive',
    'if=none,id=disk0,format=qcow2,file=/lab/vms/n1.qcow2',
    '-device',
    'virtio-blk-pci,drive=disk0,bootindex=1',
    '-drive',
    'if=none,id=seed0,format=raw,readonly=on,file=/lab/configs/cloud-init/n1.iso',
    '-device',
    'virtio-blk-pci,drive=seed0',
    '-netdev',
    `${TAP},id=net0`,
    '-device',
    'virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56,romfile=,bootindex=2',
    '-pidfile',
    '/lab/pids/n1.pid',
    '-qmp',
    'unix:/lab/monitors/n1.qmp,server=on,wait=off',
    '-display',
    'none',
    '-chardev',
    'socket,id=ser0,path=/lab/monitors/n1.console,server=on,wait=off,logfile=/lab/logs/n1.log',
    '-serial',
    'chardev:ser0',
    '-daemonize',
  ]);
});

test('aarch64 PXE VM under HVF behind socket_vmnet_client: wrapper first, socket,fd=3', () => {
  const client = '/opt/homebrew/opt/socket_vmnet/bin/socket_vmnet_client';
  const socket = '/opt/homebrew/var/run/socket_vmnet';
  const argv = buildQemuArgv({
    name: 'pxe1',
    arch: 'aarch64',
    accel: 'hvf',
    memoryMiB: 4096,
    cpus: 4,
    firmware: { code: '/opt/homebrew/share/qemu/edk2-aarch64-code.fd', vars: '/lab/vms/pxe1-vars.fd' },
    disk: '/lab/vms/pxe1.qcow2',
    boot: 'pxe',
    mac: '52:54:00:aa:bb:cc',
    nic: { wrapper: [client, socket], netdev: 'socket,fd=3' },
    files: {
      pid: '/lab/pids/pxe1.pid',
      qmp: '/lab/monitors/pxe1.qmp',
      log: '/lab/logs/pxe1.log',
      console: '/lab/monitors/pxe1.console',
    },
    interactive: false,
  });
  assert.deepEqual(argv, [
    client,
    socket,
    'qemu-system-aarch64',
    '-name',
    'pvmlab-pxe1',
    '-uuid',
    '99b124e5-b079-54a3-8556-8b72a9491041',
    '-machine',
    'virt,gic-version=3',
    '-accel',
    'hvf',
    '-cpu',
    'host',
    '-smp',
    '4',
    '-m',
    '4096',
    '-nodefaults',
    '-drive',
    'if=pflash,format=raw,unit=0,readonly=on,file=/opt/homebrew/share/qemu/edk2-aarch64-code.fd',
    '-drive',
    'if=pflash,format=raw,unit=1,file=/lab/vms/pxe1-vars.fd',
    ...NO_PXE6,
    '-drive',
    'if=none,id=disk0,format=qcow2,file=/lab/vms/pxe1.qcow2',
    '-device',
    'virtio-blk-pci,drive=disk0,bootindex=2',
    '-netdev',
    'socket,fd=3,id=net0',
    '-device',
    'virtio-net-pci,netdev=net0,mac=52:54:00:aa:bb:cc,romfile=,bootindex=1',
    '-pidfile',
    '/lab/pids/pxe1.pid',
    '-qmp',
    'unix:/lab/monitors/pxe1.qmp,server=on,wait=off',
    '-device',
    'virtio-rng-pci',
    '-display',
    'none',
    '-chardev',
    'socket,id=ser0,path=/lab/monitors/pxe1.console,server=on,wait=off,logfile=/lab/logs/pxe1.log',
    '-serial',
    'chardev:ser0',
    '-daemonize',
  ]);
});

test('interactive: serial and monitor muxed on stdio, no -daemonize, no log file, no console socket', () => {
  const argv = buildQemuArgv(diskSpec({ interactive: true, seedIso: undefined }));
  const tail = argv.slice(argv.indexOf('-qmp') + 2);
  assert.deepEqual(tail, [
    '-nographic',
    '-chardev',
    'stdio,id=con0,mux=on,signal=off',
    '-serial',
    'chardev:con0',
    '-mon',
    'chardev=con0,mode=readline',
  ]);
  assert.equal(argv.includes('-daemonize'), false);
  assert.equal(
    argv.some((a) => a.includes('/lab/logs/n1.log') || a.includes('n1.console')),
    false,
  );
  assert.deepEqual(argv.slice(argv.indexOf('-fw_cfg'), argv.indexOf('-fw_cfg') + 2), NO_PXE6);
  assert.equal(
    argv.some((a) => a.includes('seed0')),
    false,
    'no seed drive without a seed ISO',
  );
});

test("boot 'pxe' vs 'disk' swaps the bootindex of disk and NIC and nothing else", () => {
  const disk = buildQemuArgv(diskSpec({ boot: 'disk' }));
  const pxe = buildQemuArgv(diskSpec({ boot: 'pxe' }));
  const devices = (argv: string[]) => argv.filter((_, i) => argv[i - 1] === '-device');
  assert.deepEqual(devices(disk), [
    'virtio-blk-pci,drive=disk0,bootindex=1',
    'virtio-blk-pci,drive=seed0',
    'virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56,romfile=,bootindex=2',
  ]);
  assert.deepEqual(devices(pxe), [
    'virtio-blk-pci,drive=disk0,bootindex=2',
    'virtio-blk-pci,drive=seed0',
    'virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56,romfile=,bootindex=1',
  ]);
  const differing = disk.map((a, i) => (a === pxe[i] ? -1 : i)).filter((i) => i >= 0);
  assert.equal(disk.length, pxe.length);
  assert.equal(differing.length, 2);
});

test('escapeOpt doubles commas; option values with paths use it, plain path arguments do not', () => {
  assert.equal(escapeOpt('/plain/path.qcow2'), '/plain/path.qcow2');
  assert.equal(escapeOpt('/a,b/c,,d,'), '/a,,b/c,,,,d,,');
  const argv = buildQemuArgv(
    diskSpec({
      firmware: { code: '/fw,1/code.fd', vars: '/l,ab/vars.fd' },
      disk: '/l,ab/d.qcow2',
      seedIso: '/l,ab/s.iso',
      files: { pid: '/l,ab/p.pid', qmp: '/l,ab/q.sock', log: '/l,ab/s.log', console: '/l,ab/c.sock' },
    }),
  );
  assert.ok(argv.includes('if=pflash,format=raw,unit=0,readonly=on,file=/fw,,1/code.fd'));
  assert.ok(argv.includes('if=pflash,format=raw,unit=1,file=/l,,ab/vars.fd'));
  assert.ok(argv.includes('if=none,id=disk0,format=qcow2,file=/l,,ab/d.qcow2'));
  assert.ok(argv.includes('if=none,id=seed0,format=raw,readonly=on,file=/l,,ab/s.iso'));
  assert.ok(argv.includes('unix:/l,,ab/q.sock,server=on,wait=off'));
  assert.ok(argv.includes('socket,id=ser0,path=/l,,ab/c.sock,server=on,wait=off,logfile=/l,,ab/s.log'));
  // -pidfile takes a bare path, not an option list: no escaping.
  assert.equal(argv[argv.indexOf('-pidfile') + 1], '/l,ab/p.pid');
});

test('without a console socket path the background serial goes to the log file only', () => {
  const { console: _console, ...files } = FILES;
  const argv = buildQemuArgv(diskSpec({ files }));
  assert.deepEqual(argv.slice(argv.indexOf('-chardev'), argv.indexOf('-chardev') + 4), [
    '-chardev',
    'file,id=ser0,path=/lab/logs/n1.log',
    '-serial',
    'chardev:ser0',
  ]);
});

test('every VM tells the firmware not to try PXE over IPv6: each arch and accelerator, attached or not', () => {
  for (const arch of ['x86_64', 'aarch64'] as const)
    for (const interactive of [false, true]) {
      const argv = buildQemuArgv(diskSpec({ arch, interactive, accel: arch === 'x86_64' ? 'kvm' : 'hvf' }));
      const i = argv.indexOf('-fw_cfg');
      assert.deepEqual(argv.slice(i, i + 2), NO_PXE6, `${arch} interactive=${interactive}`);
      assert.equal(argv.lastIndexOf('-fw_cfg'), i, 'once');
    }
});

test('KVM uses -cpu host and -accel kvm; TCG uses -cpu max and multi-threaded TCG', () => {
  const pick = (argv: string[]) => argv.slice(argv.indexOf('-machine'), argv.indexOf('-smp'));
  assert.deepEqual(pick(buildQemuArgv(diskSpec({ accel: 'kvm' }))), [
    '-machine',
    'q35',
    '-accel',
    'kvm',
    '-cpu',
    'host',
  ]);
  assert.deepEqual(pick(buildQemuArgv(diskSpec({ arch: 'aarch64', accel: 'tcg' }))), [
    '-machine',
    'virt,gic-version=3',
    '-accel',
    'tcg,thread=multi',
    '-cpu',
    'max',
  ]);
});

/** The QMP socket path back out of `-qmp unix:<escaped path>,server=on,wait=off`. */
function qmpPathFromArgv(argv: string[]): string {
  const value = argv[argv.indexOf('-qmp') + 1] ?? '';
  const m = /^unix:(.*),server=on,wait=off$/.exec(value);
  assert.ok(m, `unexpected -qmp value ${value}`);
  return (m[1] ?? '').replaceAll(',,', ',');
}

/**
 * Start the argv (minus -daemonize, plus -S, user networking instead of a TAP) under the real
 * binary and check QEMU accepted every option: QMP answers and the machine sits in prelaunch.
 */
async function assertQemuAccepts(
  interactive: boolean,
  arch: 'x86_64' | 'aarch64' = 'x86_64',
  extra: (dir: string) => Partial<QemuSpec> = () => ({}),
): Promise<void> {
  // A comma in the directory name exercises escapeOpt against QEMU's own option parser.
  const { dir, cleanup } = await shortTempDir('pv,a-');
  const fw =
    arch === 'x86_64'
      ? { code: '/usr/share/OVMF/OVMF_CODE_4M.fd', template: '/usr/share/OVMF/OVMF_VARS_4M.fd' }
      : { code: '/usr/share/AAVMF/AAVMF_CODE.fd', template: '/usr/share/AAVMF/AAVMF_VARS.fd' };
  const vars = join(dir, 'vars.fd');
  copyFileSync(fw.template, vars);
  const disk = join(dir, 'd.qcow2');
  await createBlankDisk(run, disk, 64 * 2 ** 20);
  const files = {
    pid: join(dir, 'p.pid'),
    qmp: join(dir, 'q.sock'),
    log: join(dir, 's.log'),
    console: join(dir, 'c.sock'),
  };
  const argv = buildQemuArgv({
    name: 'real1',
    arch,
    accel: 'tcg',
    memoryMiB: 256,
    cpus: 1,
    firmware: { code: fw.code, vars },
    disk,
    boot: 'pxe',
    mac: '52:54:00:12:34:56',
    nic: { wrapper: [], netdev: 'user' },
    files,
    interactive,
    ...extra(dir),
  });
  assert.equal(argv.includes('-daemonize'), !interactive);
  const [cmd, ...args] = argv.filter((a) => a !== '-daemonize') as [string, ...string[]];
  assert.equal(cmd, `qemu-system-${arch}`);
  assert.ok(argv.includes('name=opt/org.tianocore/IPv6PXESupport,string=n'));
  const child = spawn(cmd, [...args, '-S'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  let exitCode: number | null | undefined;
  void exited.then((c) => (exitCode = c));
  let qmp: QmpClient | undefined;
  try {
    const socket = qmpPathFromArgv(argv);
    assert.equal(socket, files.qmp);
    await waitFor(() => exitCode !== undefined || existsSync(socket), 10_000, 'the QMP socket');
    assert.equal(exitCode, undefined, `QEMU rejected the command line: ${stderr}`);
    qmp = await connectQmp(socket);
    assert.equal(await qmp.status(), 'prelaunch');
    assert.equal(readFileSync(files.pid, 'utf8').trim(), String(child.pid));
    const serial = ((await qmp.execute('query-chardev')) as { label: string; filename: string }[]).find(
      (c) => c.label === 'ser0',
    );
    if (interactive) assert.equal(serial, undefined);
    else {
      // The console socket listens (nobody attached yet) and the log file exists.
      assert.equal(serial?.filename, `disconnected:unix:${files.console},server=on`);
      assert.ok(existsSync(files.console));
      assert.ok(existsSync(files.log));
    }
    await qmp.execute('quit');
    assert.equal(await exited, 0);
  } finally {
    qmp?.close();
    killQuietly(child.pid);
    await cleanup();
  }
}

test(
  'real qemu-system-x86_64 accepts the daemon argv (OVMF, qcow2, -S, user netdev)',
  { timeout: 30_000 },
  () => assertQemuAccepts(false),
);

test('real qemu-system-x86_64 accepts the interactive argv', { timeout: 30_000 }, () =>
  assertQemuAccepts(true),
);

test(
  'real qemu-system-aarch64 accepts the daemon argv (AAVMF, fw_cfg, console socket)',
  { timeout: 30_000 },
  () => assertQemuAccepts(false, 'aarch64'),
);

test(
  'real qemu-system-x86_64 accepts the provisioner argv (kernel, user-mode uplink on its own networks with SSH forward, 9p shares)',
  { timeout: 30_000 },
  () =>
    assertQemuAccepts(false, 'x86_64', (dir) => ({
      kernel: { kernel: testKernel(), initrd: testKernel(), append: 'root=LABEL=x console=ttyS0' },
      // The networks a lab in 10.0.2.0/24 and fec0::/48 moves the uplink to (uplinkNetworks).
      uplink: {
        mac: '52:54:00:12:34:57',
        sshPort: 0,
        net: '10.0.3.0/24',
        ipv6Net: 'fd6c:7670:6c61:6275::/64',
      },
      shares: [
        { tag: 'host_share_vms', path: dir },
        { tag: 'host_share_images', path: dir, readonly: true },
      ],
    })),
);

test('provisioner additions: uplink on loopback only, 9p shares with security_model=none, kernel, rng', () => {
  const argv = buildQemuArgv(
    diskSpec({
      kernel: { kernel: '/i/vmlinuz', initrd: '/i/initrd.img', append: 'root=LABEL=p rw' },
      uplink: { mac: '52:54:00:12:34:57', sshPort: 2222 },
      shares: [
        { tag: 'host_share_vms', path: '/lab,x/vms' },
        { tag: 'host_share_images', path: '/lab/images', readonly: true },
      ],
    }),
  );
  const after = (flag: string) => argv.filter((_, i) => argv[i - 1] === flag);
  assert.deepEqual(after('-netdev').slice(-1), ['user,id=uplink0,hostfwd=tcp:127.0.0.1:2222-:22']);
  const moved = buildQemuArgv(
    diskSpec({
      uplink: { mac: '52:54:00:12:34:57', sshPort: 2222, net: '10.0.3.0/24', ipv6Net: 'fd00:1::/64' },
    }),
  );
  assert.ok(
    moved.includes('user,id=uplink0,net=10.0.3.0/24,ipv6-net=fd00:1::/64,hostfwd=tcp:127.0.0.1:2222-:22'),
  );
  assert.ok(after('-device').includes('virtio-net-pci,netdev=uplink0,mac=52:54:00:12:34:57,romfile='));
  assert.deepEqual(after('-virtfs'), [
    'local,path=/lab,,x/vms,mount_tag=host_share_vms,security_model=none',
    'local,path=/lab/images,mount_tag=host_share_images,security_model=none,readonly=on',
  ]);
  assert.deepEqual(
    [after('-kernel'), after('-initrd'), after('-append')],
    [['/i/vmlinuz'], ['/i/initrd.img'], ['root=LABEL=p rw']],
  );
  assert.ok(after('-device').includes('virtio-rng-pci'));
  // A target has none of it.
  const plain = buildQemuArgv(diskSpec());
  for (const f of ['-virtfs', '-kernel', '-initrd', '-append']) assert.ok(!plain.includes(f));
});

test('machineUuid: a stable RFC 4122 v5 UUID per MAC, any case', () => {
  const u = machineUuid('52:54:00:12:34:56');
  assert.match(u, /^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.equal(machineUuid('52:54:00:12:34:56'), u);
  assert.equal(machineUuid('52:54:00:12:34:56'.toUpperCase()), u);
  assert.notEqual(machineUuid('52:54:00:12:34:57'), u);
});
