import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { PvmlabError } from '../../../src/core/errors.js';
import { BridgeDriver, hasNetAdmin, ipArgv, tapName } from '../../../src/net/bridge.js';
import { fakeRunner } from '../../helpers/qemu.js';

const BR = 'pvmlab0';
const VM = { name: 'vm1', mac: '52:54:00:12:34:56' };
const TAP = 'pvt3d7538386f'; // sha256("pvmlab0/vm1"), first 10 hex digits

test('ipArgv builders', () => {
  assert.deepEqual(ipArgv.show('br0'), ['-j', 'link', 'show', 'dev', 'br0']);
  assert.deepEqual(ipArgv.addrShow('br0'), ['-j', 'addr', 'show', 'dev', 'br0']);
  assert.deepEqual(ipArgv.addBridge('br0'), ['link', 'add', 'name', 'br0', 'type', 'bridge']);
  assert.deepEqual(ipArgv.addrReplace('br0', '192.168.100.254/24'), [
    'addr',
    'replace',
    '192.168.100.254/24',
    'dev',
    'br0',
  ]);
  assert.deepEqual(ipArgv.addrReplace6('br0', 'fd00:1::fe/64'), [
    '-6',
    'addr',
    'replace',
    'fd00:1::fe/64',
    'dev',
    'br0',
    'nodad',
  ]);
  assert.deepEqual(ipArgv.up('tap0'), ['link', 'set', 'dev', 'tap0', 'up']);
  assert.deepEqual(ipArgv.del('tap0'), ['link', 'del', 'dev', 'tap0']);
  assert.deepEqual(ipArgv.addTap('tap0'), ['tuntap', 'add', 'dev', 'tap0', 'mode', 'tap']);
  assert.deepEqual(ipArgv.master('tap0', 'br0'), ['link', 'set', 'dev', 'tap0', 'master', 'br0']);
});

test('tapName: at most 15 bytes, stable, different per bridge and per VM', () => {
  assert.equal(tapName(BR, 'vm1'), TAP);
  assert.equal(tapName(BR, 'vm1'), tapName(BR, 'vm1'));
  assert.equal(tapName(BR, 'vm2'), 'pvta64a5f3c2d');
  assert.equal(tapName('pvmlab1', 'vm1'), 'pvtfdcb095004');
  const long = tapName(BR, 'a-very-long-vm-name-for-testing');
  assert.equal(long, 'pvt040e2d4ae2');
  for (const n of [TAP, long]) {
    assert.ok(Buffer.byteLength(n) <= 15, n);
    assert.match(n, /^pvt[0-9a-f]{10}$/);
  }
  const names = new Set<string>();
  for (const br of ['pvmlab0', 'pvmlab1', 'br-lab'])
    for (const vm of ['vm1', 'vm2', 'vm10', 'web']) names.add(tapName(br, vm));
  assert.equal(names.size, 12);
});

const status = (capEff: string) =>
  `Name:\tpvmlab\nUmask:\t0022\nState:\tR (running)\nCapInh:\t0000000000000000\n` +
  `CapPrm:\t000001ffffffffff\nCapEff:\t${capEff}\nCapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\n`;

test('hasNetAdmin reads bit 12 of CapEff', () => {
  assert.equal(hasNetAdmin(status('000001ffffffffff')), true); // root
  assert.equal(hasNetAdmin(status('0000000000001000')), true); // only CAP_NET_ADMIN
  assert.equal(hasNetAdmin(status('0000000000000000')), false); // permitted but not effective
  assert.equal(hasNetAdmin(status('0000000000000fff')), false); // bits 0-11
  assert.equal(hasNetAdmin(status('0000000000002000')), false); // bit 13 (CAP_NET_RAW)
  assert.equal(hasNetAdmin(status('00000000a80425fb')), false); // Docker's default set
  assert.equal(hasNetAdmin(status('00000000a80435fb')), true); // ... with --cap-add NET_ADMIN
  assert.equal(hasNetAdmin('Name:\tx\nCapPrm:\t000001ffffffffff\n'), false);
  assert.equal(hasNetAdmin(''), false);
});

test('hasNetAdmin without text reads this process’s /proc/self/status', () => {
  const text = readFileSync('/proc/self/status', 'utf8');
  assert.equal(hasNetAdmin(), hasNetAdmin(text));
});

/**
 * A fake `ip`: `show` of a device succeeds only for the devices in `present`, with their flags
 * (default UP: a free TAP); `link set dev X up` adds UP, and `carrier` devices (a process holds
 * them) then show LOWER_UP too.
 */
function ip(present: string[], flags: Record<string, string[]> = {}, carrier: string[] = []) {
  const state = new Map(present.map((d) => [d, flags[d] ?? ['BROADCAST', 'MULTICAST', 'UP']]));
  const shown = (d: string) => {
    const f = state.get(d) ?? [];
    return f.includes('UP') && carrier.includes(d) && !f.includes('LOWER_UP') ? [...f, 'LOWER_UP'] : f;
  };
  return fakeRunner((line) => {
    const m = /^ip -j link show dev (\S+)$/.exec(line);
    if (m)
      return state.has(m[1] ?? '')
        ? { stdout: JSON.stringify([{ ifname: m[1], flags: shown(m[1] ?? '') }]) }
        : { code: 1, stderr: 'Device does not exist.' };
    const up = /^ip link set dev (\S+) up$/.exec(line);
    if (up && state.has(up[1] ?? '')) state.set(up[1] ?? '', [...(state.get(up[1] ?? '') ?? []), 'UP']);
    return {};
  });
}

test('start with the bridge missing: create, address, up', async () => {
  const { runner, calls } = ip([]);
  await new BridgeDriver({ bridge: BR, hostAddress: '192.168.100.254/24' }, runner, () => true).start();
  assert.deepEqual(calls, [
    'ip -j link show dev pvmlab0',
    'ip link add name pvmlab0 type bridge',
    'ip addr replace 192.168.100.254/24 dev pvmlab0',
    'ip link set dev pvmlab0 up',
  ]);
});

test('start with an IPv6 lab: the host gets its IPv6 address too', async () => {
  const { runner, calls } = ip([BR]);
  await new BridgeDriver(
    { bridge: BR, hostAddress: '192.168.100.254/24', hostAddress6: 'fd00:1::fe/64' },
    runner,
    () => true,
  ).start();
  assert.deepEqual(calls, [
    'ip -j link show dev pvmlab0',
    'ip addr replace 192.168.100.254/24 dev pvmlab0',
    'ip -6 addr replace fd00:1::fe/64 dev pvmlab0 nodad',
    'ip link set dev pvmlab0 up',
  ]);
});

test('start with the bridge present: no add; no address when none is configured', async () => {
  const { runner, calls } = ip([BR]);
  await new BridgeDriver({ bridge: BR }, runner, () => true).start();
  assert.deepEqual(calls, ['ip -j link show dev pvmlab0', 'ip link set dev pvmlab0 up']);
});

test('stop deletes the bridge only if it exists', async () => {
  const present = ip([BR]);
  await new BridgeDriver({ bridge: BR }, present.runner, () => true).stop();
  assert.deepEqual(present.calls, ['ip -j link show dev pvmlab0', 'ip link del dev pvmlab0']);
  const missing = ip([]);
  await new BridgeDriver({ bridge: BR }, missing.runner, () => true).stop();
  assert.deepEqual(missing.calls, ['ip -j link show dev pvmlab0']);
});

test('attach creates the TAP, enslaves it, brings it up and returns the tap netdev', async () => {
  const { runner, calls } = ip([BR]);
  const nic = await new BridgeDriver({ bridge: BR }, runner, () => true).attach(VM);
  assert.deepEqual(nic, { wrapper: [], netdev: `tap,ifname=${TAP},script=no,downscript=no` });
  assert.deepEqual(calls, [
    'ip -j link show dev pvmlab0',
    `ip -j link show dev ${TAP}`,
    `ip tuntap add dev ${TAP} mode tap`,
    `ip link set dev ${TAP} master pvmlab0`,
    `ip link set dev ${TAP} up`,
  ]);
});

test('attach is idempotent: an existing TAP no process holds (a QEMU killed -9) is reused', async () => {
  const { runner, calls } = ip([BR, TAP]);
  const nic = await new BridgeDriver({ bridge: BR }, runner, () => true).attach(VM);
  assert.equal(nic.netdev, `tap,ifname=${TAP},script=no,downscript=no`);
  assert.deepEqual(calls, [
    'ip -j link show dev pvmlab0',
    `ip -j link show dev ${TAP}`,
    `ip link set dev ${TAP} master pvmlab0`,
    `ip link set dev ${TAP} up`,
  ]);
});

test('attach refuses a TAP a running process holds: another start or a running VM keeps it', async () => {
  const { runner, calls } = ip([BR, TAP], {}, [TAP]);
  await assert.rejects(new BridgeDriver({ bridge: BR }, runner, () => true).attach(VM), (e: unknown) => {
    assert.ok(e instanceof PvmlabError);
    assert.match(e.message, new RegExp(`TAP device ${TAP} of VM 'vm1' is in use by a running process`));
    return true;
  });
  assert.deepEqual(calls, ['ip -j link show dev pvmlab0', `ip -j link show dev ${TAP}`], 'nothing changed');
});

test('attach: a TAP that is down is brought up to tell whether a process holds it', async () => {
  const held = ip([BR, TAP], { [TAP]: ['BROADCAST', 'MULTICAST'] }, [TAP]);
  await assert.rejects(new BridgeDriver({ bridge: BR }, held.runner, () => true).attach(VM), /in use/);
  assert.deepEqual(held.calls.slice(1), [
    `ip -j link show dev ${TAP}`,
    `ip link set dev ${TAP} up`,
    `ip -j link show dev ${TAP}`,
  ]);
  const free = ip([BR, TAP], { [TAP]: ['BROADCAST', 'MULTICAST'] });
  await new BridgeDriver({ bridge: BR }, free.runner, () => true).attach(VM);
  assert.equal(free.calls.filter((c) => c === `ip link set dev ${TAP} master pvmlab0`).length, 1);
});

test('attach refuses when the bridge is missing', async () => {
  const { runner, calls } = ip([]);
  await assert.rejects(new BridgeDriver({ bridge: BR }, runner, () => true).attach(VM), (e: unknown) => {
    assert.ok(e instanceof PvmlabError);
    assert.equal(e.message, "the lab bridge pvmlab0 does not exist: run 'pvmlab network start' first");
    return true;
  });
  assert.deepEqual(calls, ['ip -j link show dev pvmlab0']);
});

test('a failing ip command surfaces its error output', async () => {
  const { runner, calls } = fakeRunner((line) => {
    if (line === `ip -j link show dev ${TAP}`) return { code: 1 };
    if (line.startsWith('ip tuntap'))
      return { code: 2, stderr: 'ioctl(TUNSETIFF): Operation not permitted\n' };
    return {};
  });
  await assert.rejects(new BridgeDriver({ bridge: BR }, runner, () => true).attach(VM), {
    name: 'PvmlabError',
    message: 'ip exited 2: ioctl(TUNSETIFF): Operation not permitted',
  });
  assert.equal(calls.at(-1), `ip tuntap add dev ${TAP} mode tap`, 'nothing runs after the failure');
});

test('detach removes only an existing TAP', async () => {
  const present = ip([BR, TAP]);
  await new BridgeDriver({ bridge: BR }, present.runner, () => true).detach(VM);
  assert.deepEqual(present.calls, [`ip -j link show dev ${TAP}`, `ip link del dev ${TAP}`]);
  const missing = ip([BR]);
  await new BridgeDriver({ bridge: BR }, missing.runner, () => true).detach(VM);
  assert.deepEqual(missing.calls, [`ip -j link show dev ${TAP}`]);
});

test('detach never removes a TAP a running process holds (a losing start must not cut off the winner)', async () => {
  const { runner, calls } = ip([BR, TAP], {}, [TAP]);
  await assert.rejects(new BridgeDriver({ bridge: BR }, runner, () => true).detach(VM), (e: unknown) => {
    assert.ok(e instanceof PvmlabError);
    assert.equal(
      e.message,
      `the TAP device ${TAP} of VM 'vm1' is still in use by a running process: left in place`,
    );
    return true;
  });
  assert.deepEqual(calls, [`ip -j link show dev ${TAP}`]);
});

test('without CAP_NET_ADMIN start, stop and attach fail before running anything', async () => {
  const { runner, calls } = ip([BR, TAP]);
  const driver = new BridgeDriver({ bridge: BR }, runner, () => false);
  for (const op of [() => driver.start(), () => driver.stop(), () => driver.attach(VM)]) {
    await assert.rejects(op(), (e: unknown) => {
      assert.ok(e instanceof PvmlabError);
      assert.equal(e.exitCode, 1);
      assert.equal(
        e.message,
        'the bridge network needs root or CAP_NET_ADMIN to create pvmlab0 and TAP devices: run pvmlab with sudo',
      );
      return true;
    });
  }
  assert.deepEqual(calls, []);
});

test('status parses ip -j addr show', async () => {
  const json = JSON.stringify([
    {
      ifname: BR,
      flags: ['BROADCAST', 'MULTICAST', 'UP', 'LOWER_UP'],
      operstate: 'UP',
      addr_info: [
        { family: 'inet', local: '192.168.100.254', prefixlen: 24 },
        { family: 'inet6', local: 'fe80::1', prefixlen: 64 },
      ],
    },
  ]);
  const up = fakeRunner(() => ({ stdout: json }));
  assert.deepEqual(await new BridgeDriver({ bridge: BR }, up.runner, () => false).status(), {
    driver: 'bridge',
    name: BR,
    up: true,
    detail: { exists: true, state: 'UP', addresses: '192.168.100.254/24 fe80::1/64' },
  });
  assert.deepEqual(up.calls, ['ip -j addr show dev pvmlab0']);
  const gone = fakeRunner(() => ({ code: 1 }));
  assert.deepEqual(await new BridgeDriver({ bridge: BR }, gone.runner, () => false).status(), {
    driver: 'bridge',
    name: BR,
    up: false,
    detail: { exists: false },
  });
});
