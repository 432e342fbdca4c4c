import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { spawn } from 'node:child_process';
import { BIN, runCli, tempHome, type CliResult } from '../helpers/cli.js';
import { GUEST_POWEROFF, GUEST_READY, testGuestDisk } from '../helpers/guest.js';
import { createNetns, deleteNetns, nsJson, waitFor } from '../helpers/netns.js';

const BRIDGE = 'pvitbr0';

/** Exited: no such process, or a zombie its parent has not reaped yet. */
function processGone(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return /^\d+ \(.*\) [ZX]/.test(stat);
  } catch {
    return true;
  }
}

/** Every file under a directory, relative to it. */
function tree(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d)) {
      const p = join(d, e);
      if (statSync(p).isDirectory()) walk(p);
      else out.push(relative(dir, p));
    }
  };
  walk(dir);
  return out.sort();
}

describe('VM lifecycle on a real bridge inside a network namespace', { timeout: 600_000 }, () => {
  let ns: string;
  let home: string;
  let app: string;
  let cleanup: () => Promise<void>;
  const cli = (args: string[], timeoutMs?: number): Promise<CliResult> =>
    runCli(args, { home, netns: ns, env: { PVMLAB_ACCEL: 'tcg' }, ...(timeoutMs ? { timeoutMs } : {}) });
  const ok = async (args: string[], timeoutMs?: number) => {
    const r = await cli(args, timeoutMs);
    assert.equal(r.code, 0, `pvmlab ${args.join(' ')} failed:\n${r.stderr}`);
    return r;
  };
  const log = (name: string) => {
    const p = join(app, 'logs', `${name}.log`);
    return existsSync(p) ? readFileSync(p, 'utf8') : '';
  };

  before(async () => {
    ({ home, app, cleanup } = await tempHome('pvit-'));
    ns = createNetns('pvit');
    await ok(['setup', '--bridge', BRIDGE, '--subnet', '10.213.0.0/24']);
    const disk = await testGuestDisk();
    await writeFile(
      join(app, 'distros.yaml'),
      `- name: testguest\n  distro_name: test\n  version: "1"\n  arch:\n    x86_64:\n      qcow2_url: ${pathToFileURL(disk).href}\n`,
    );
  });

  after(async () => {
    // Whatever happened, leave no QEMU and no namespace behind.
    for (const f of tree(join(app, 'pids'))) {
      const pid = Number(readFileSync(join(app, 'pids', f), 'utf8'));
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    deleteNetns(ns);
    await cleanup();
  });

  test('network start makes the bridge with the host address; status reports it', async () => {
    await ok(['network', 'start']);
    const s = JSON.parse((await ok(['network', 'status', '--json'])).stdout) as {
      up: boolean;
      name: string;
      detail: { addresses: string };
    };
    assert.equal(s.name, BRIDGE);
    assert.equal(s.up, true);
    assert.match(s.detail.addresses, /10\.213\.0\.254\/24/);
    const links = nsJson<{ ifname: string; linkinfo?: { info_kind: string } }[]>(ns, [
      '-d',
      'link',
      'show',
      BRIDGE,
    ]);
    assert.equal(links[0]?.linkinfo?.info_kind, 'bridge');
    // Idempotent.
    await ok(['network', 'start']);
  });

  test('x86_64 PXE VM: runs on the bridge, firmware tries PXE, stop forces a guest that ignores power-down, clean removes its files', async () => {
    const before = tree(app);
    await ok(['vm', 'create', 'pxe1', '--pxeboot', '--arch', 'x86_64', '--memory', '512']);
    await ok(['vm', 'start', 'pxe1']);

    const rows = JSON.parse((await ok(['vm', 'list', '--json'])).stdout) as {
      name: string;
      status: string;
      pid: number;
      ip: string;
    }[];
    const row = rows.find((r) => r.name === 'pxe1');
    assert.equal(row?.status, 'Running');
    assert.equal(row?.ip, '10.213.0.2');
    assert.match(readFileSync(`/proc/${row?.pid}/cmdline`, 'utf8'), /qemu-system-x86_64/);

    // Its TAP is enslaved to the lab bridge.
    const ports = nsJson<{ ifname: string }[]>(ns, ['link', 'show', 'master', BRIDGE]);
    assert.equal(ports.length, 1);
    assert.match(ports[0]?.ifname ?? '', /^pvt[0-9a-f]{10}$/);

    await waitFor(
      'the firmware to start PXE',
      () => /Start PXE over IPv4/.test(log('pxe1')) || undefined,
      120_000,
    );

    const again = await cli(['vm', 'start', 'pxe1']);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /already running/);

    // UEFI firmware at its PXE prompt does not act on ACPI power-down: pvmlab must still stop it.
    const stop = await ok(['vm', 'stop', 'pxe1', '--timeout', '3']);
    assert.match(stop.stderr, /power off \(ACPI\)/);
    assert.match(stop.stderr, /stopped \(forced\)/);
    assert.ok(processGone(row?.pid ?? 0), 'QEMU has exited');
    const after1 = JSON.parse((await ok(['vm', 'list', '--json'])).stdout) as {
      name: string;
      status: string;
    }[];
    assert.equal(after1.find((r) => r.name === 'pxe1')?.status, 'Stopped');
    assert.deepEqual(nsJson<unknown[]>(ns, ['link', 'show', 'master', BRIDGE]), [], 'TAP removed on stop');

    await ok(['vm', 'clean', 'pxe1']);
    assert.deepEqual(tree(app), before, 'vm clean leaves exactly the files there were before vm create');
  });

  test('aarch64 PXE VM reaches the firmware PXE client (AAVMF under TCG)', async () => {
    await ok(['vm', 'create', 'arm1', '--pxeboot', '--arch', 'aarch64', '--memory', '1G']);
    await ok(['vm', 'start', 'arm1']);
    await waitFor('AAVMF to start PXE', () => /Start PXE over IPv4/.test(log('arm1')) || undefined, 180_000);
    await ok(['vm', 'stop', 'arm1', '--timeout', '2']);
    await ok(['vm', 'clean', 'arm1']);
  });

  test('a disk VM boots its OS from disk and powers off gracefully through QMP power-down; a --wait on it then ends', async () => {
    await ok([
      'vm',
      'create',
      'disk1',
      '--distro',
      'testguest',
      '--arch',
      'x86_64',
      '--memory',
      '512',
      '--disk-size',
      '1G',
    ]);
    // The test guest has no cloud-init or SSH: `--wait` waits until the VM stops, then says so.
    const waiting = cli(['vm', 'start', 'disk1', '--wait'], 600_000);
    await waitFor('the guest OS to come up', () => log('disk1').includes(GUEST_READY) || undefined, 240_000);
    assert.match(log('disk1'), /power-button=\/dev\/input\/event\d/);
    const stop = await ok(['vm', 'stop', 'disk1', '--timeout', '60']);
    assert.match(stop.stderr, /stopped \(powered off\)/);
    const stoppedAt = Date.now();
    const waited = await waiting;
    assert.equal(waited.code, 1, waited.stderr);
    assert.match(
      waited.stderr,
      /disk1 will not become ready: VM 'disk1' is not running any more \(its QEMU exited\)/,
    );
    // One SSH attempt (at most 20 s) and a pause after the stop, not the 10-minute timeout.
    assert.ok(Date.now() - stoppedAt < 60_000, `--wait ended ${Date.now() - stoppedAt} ms after the stop`);
    assert.ok(log('disk1').includes(GUEST_POWEROFF), 'the guest itself handled the power button');
    await ok(['vm', 'clean', 'disk1']);
  });

  test('vm start -i puts the serial console on the terminal; Ctrl-a x quits QEMU', async () => {
    await ok(['vm', 'create', 'con1', '--pxeboot', '--memory', '512']);
    const child = spawn('ip', ['netns', 'exec', ns, process.execPath, BIN, 'vm', 'start', 'con1', '-i'], {
      env: { ...process.env, NO_COLOR: '1', PVMLAB_HOME: home, PVMLAB_ACCEL: 'tcg' },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    const exited = new Promise<number | null>((res) => child.on('close', res));
    try {
      await waitFor(
        'the firmware on the attached console',
        () => /Start PXE over IPv4/.test(out) || undefined,
        120_000,
      );
      const rows = JSON.parse((await ok(['vm', 'list', '--json'])).stdout) as {
        name: string;
        status: string;
      }[];
      assert.equal(rows.find((r) => r.name === 'con1')?.status, 'Running');
      child.stdin.write('\x01x'); // QEMU's mux escape: Ctrl-a x terminates
      assert.equal(await exited, 0);
    } finally {
      child.kill('SIGKILL');
    }
    const rows = JSON.parse((await ok(['vm', 'list', '--json'])).stdout) as {
      name: string;
      status: string;
    }[];
    assert.equal(rows.find((r) => r.name === 'con1')?.status, 'Stopped');
    assert.deepEqual(
      nsJson<unknown[]>(ns, ['link', 'show', 'master', BRIDGE]),
      [],
      'TAP removed after the console session',
    );
    await ok(['vm', 'clean', 'con1']);
  });

  test('a second lab (own PVMLAB_HOME, subnet and bridge) runs beside the first', async () => {
    const second = await tempHome('pvit2-');
    const cli2 = (args: string[]) =>
      runCli(args, { home: second.home, netns: ns, env: { PVMLAB_ACCEL: 'tcg' } });
    try {
      for (const args of [
        ['setup', '--bridge', 'pvitbr1', '--subnet', '10.214.0.0/24'],
        ['network', 'start'],
        ['vm', 'create', 'twin', '--pxeboot', '--memory', '512'],
        ['vm', 'start', 'twin'],
      ]) {
        const r = await cli2(args);
        assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
      }
      await ok(['vm', 'create', 'twin', '--pxeboot', '--memory', '512']);
      await ok(['vm', 'start', 'twin']);
      const one = JSON.parse((await ok(['vm', 'list', '--json'])).stdout) as {
        name: string;
        ip: string;
        status: string;
      }[];
      const two = JSON.parse((await cli2(['vm', 'list', '--json'])).stdout) as {
        name: string;
        ip: string;
        status: string;
      }[];
      assert.deepEqual(
        one.map((r) => [r.name, r.ip, r.status]),
        [['twin', '10.213.0.2', 'Running']],
      );
      assert.deepEqual(
        two.map((r) => [r.name, r.ip, r.status]),
        [['twin', '10.214.0.2', 'Running']],
      );
      assert.equal(nsJson<unknown[]>(ns, ['link', 'show', 'master', BRIDGE]).length, 1);
      assert.equal(nsJson<unknown[]>(ns, ['link', 'show', 'master', 'pvitbr1']).length, 1);
      await ok(['vm', 'clean', 'twin']);
      const r = await cli2(['clean', '--purge']);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(
        nsJson<unknown[]>(ns, ['link', 'show']).some((l) => (l as { ifname: string }).ifname === 'pvitbr1'),
        false,
      );
    } finally {
      await cli2(['clean', '--purge']).catch(() => undefined); // stops lab 2's QEMU if a step failed
      await second.cleanup();
    }
  });

  test('network stop removes the bridge', async () => {
    await ok(['network', 'stop']);
    const s = JSON.parse((await ok(['network', 'status', '--json'])).stdout) as { up: boolean };
    assert.equal(s.up, false);
  });
});
