import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { runCli, tempHome } from '../../helpers/cli.js';

/** Issue 8: usage errors, unreadable VMs, lab.yaml repair, the lab lock; through the CLI. */
describe('vm create and setup under bad input (issue 8)', () => {
  test('usage errors exit 2 and write nothing, not even ~/.pvmlab', async (t) => {
    const { home, app, cleanup } = await tempHome('pvlab-usage-');
    t.after(cleanup);
    const cases: [string[], RegExp][] = [
      [['--ip', ''], /invalid --ip ''/],
      [['--ipv6', ''], /invalid --ipv6 ''/],
      [['--ipv6', '::/0'], /--ipv6/],
      [['--ipv6', 'ff02::1/64'], /multicast/],
      [['--ipv6', '::1/128'], /must be \/64/],
      [['--ipv6', 'fd00::/64'], /not a host address/],
      [['--memory', '1'], /invalid --memory 1: at least 64 MiB/],
      [['--memory', '63'], /invalid --memory 63: at least 64 MiB/],
      [['--disk-size', '100000T'], /invalid --disk-size/],
      [['--disk-size', '99999999999999999999T'], /invalid --disk-size/],
      [['--disk-size', '1'], /use 1M to 64T/],
      [['--distro', 'nope'], /unknown distro 'nope'/],
      [['--distro', ''], /invalid --distro ''/],
      [['--ip', '10.0.0.5'], /outside the lab subnet/],
    ];
    for (const [flags, re] of cases) {
      for (const pxe of [['--pxeboot'], []]) {
        const args = ['vm', 'create', 'x', ...pxe, ...flags];
        const r = await runCli(args, { home });
        assert.equal(r.code, 2, `${args.join(' ')} -> ${r.code}: ${r.stderr}`);
        assert.match(r.stderr, re, args.join(' '));
        await assert.rejects(fs.stat(app), { code: 'ENOENT' }, `${args.join(' ')} wrote ${app}`);
      }
    }
    // vm start --memory takes the same rule as the definition (the VM need not exist to refuse it).
    for (const m of ['63', '1', '63M', '64.5M']) {
      const r = await runCli(['vm', 'start', 'x', '--memory', m], { home });
      assert.equal(r.code, 2, `vm start --memory ${m} -> ${r.code}: ${r.stderr}`);
      assert.match(r.stderr, /invalid --memory/);
    }
    for (const [flag, value] of [
      ['--subnet', '0.0.0.0/0'],
      ['--subnet', '224.0.0.0/24'],
      ['--subnet', '127.0.0.0/24'],
      ['--subnet', '255.255.255.0/24'],
      ['--subnet', ''],
      ['--subnet6', 'fe80::/64'],
      ['--subnet6', 'ff00::/64'],
      ['--subnet6', '::/64'],
      ['--bridge', 'a b'],
      ['--bridge', 'b'.repeat(16)],
      ['--bridge', 'br;x'],
      ['--bridge', ''],
    ] as const) {
      const r = await runCli(['setup', '--json', flag, value], { home });
      assert.equal(r.code, 2, `setup ${flag} '${value}' -> ${r.code}: ${r.stderr}`);
      await assert.rejects(fs.stat(app), { code: 'ENOENT' }, `setup ${flag} '${value}' wrote ${app}`);
    }
  });

  test('a VM that cannot be read keeps its name, files and address', async (t) => {
    const { home, app, cleanup } = await tempHome('pvlab-unread-');
    t.after(cleanup);
    const create = (name: string, ...flags: string[]) =>
      runCli(['vm', 'create', name, '--pxeboot', '--disk-size', '1M', ...flags], { home });
    assert.equal((await create('web1')).code, 0);
    const json = join(app, 'vms', 'web1.json');
    const disk = join(app, 'vms', 'web1.qcow2');
    await fs.writeFile(disk, 'the old disk');
    const def = JSON.parse(await fs.readFile(json, 'utf8')) as { ip: string };
    for (const text of [
      '{"name": "web1", "ip": "192.168.100.2", "role": ',
      JSON.stringify({ ...def, schema_version: 2 }),
      JSON.stringify({ ...def, memory: 63 }),
    ]) {
      await fs.writeFile(json, text);
      const again = await create('web1');
      assert.equal(again.code, 2, again.stderr);
      assert.match(again.stderr, /a VM named 'web1' already exists .*web1\.json.*pvmlab vm clean web1/);
      assert.equal(await fs.readFile(json, 'utf8'), text);
      assert.equal(await fs.readFile(disk, 'utf8'), 'the old disk');
      // Its address is not handed out again while the file is there.
      const other = await create('other', '--ip', def.ip);
      assert.equal(other.code, 2);
      assert.match(other.stderr, /already used by VM 'web1'/);
    }
    const web2 = await create('web2');
    assert.equal(web2.code, 0, web2.stderr);
    assert.notEqual(
      (JSON.parse(await fs.readFile(join(app, 'vms', 'web2.json'), 'utf8')) as { ip: string }).ip,
      def.ip,
    );

    // Whatever is left of a VM takes its name: an orphan disk, a temp file, a directory.
    for (const [name, path] of [
      ['orphan', join(app, 'vms', 'orphan.qcow2')],
      ['half', join(app, 'vms', '.half.json.4242.1.tmp')],
      ['isdir', join(app, 'vms', 'isdir.json')],
    ] as const) {
      if (name === 'isdir') await fs.mkdir(path);
      else await fs.writeFile(path, 'x');
      const r = await create(name);
      assert.equal(r.code, 2, `${name}: ${r.stderr}`);
      assert.match(r.stderr, new RegExp(`a VM named '${name}' already exists`));
      assert.ok(await fs.stat(path));
    }
    const list = await runCli(['vm', 'list'], { home });
    assert.match(list.stderr, /vms\/isdir\.json: it is a directory, not a definition file/);
  });

  test('a seed left in cloud-init takes the name too, and is left alone', async (t) => {
    const { home, app, cleanup } = await tempHome('pvlab-fail-');
    t.after(cleanup);
    // A seed directory in the way of the ISO: the create fails after making the disk.
    await fs.mkdir(join(app, 'configs', 'cloud-init', 'd1.iso', 'x'), { recursive: true });
    const r = await runCli(['vm', 'create', 'd1', '--pxeboot', '--disk-size', '1M'], { home });
    assert.equal(r.code, 2, r.stderr);
    assert.ok(
      await fs.stat(join(app, 'configs', 'cloud-init', 'd1.iso', 'x')),
      'the existing file was removed',
    );
  });

  test('setup refuses a bad bridge and repairs a broken lab.yaml', async (t) => {
    const { home, app, cleanup } = await tempHome('pvlab-setup-');
    t.after(cleanup);
    assert.equal((await runCli(['setup', '--json'], { home })).code, 0);
    const path = join(app, 'lab.yaml');
    const before = await fs.readFile(path, 'utf8');
    const bad = await runCli(['setup', '--json', '--bridge', 'a b'], { home });
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /invalid --bridge 'a b'/);
    assert.equal(await fs.readFile(path, 'utf8'), before);

    // A lab.yaml broken by hand (or by an older pvmlab): commands name it, setup repairs it.
    await fs.writeFile(path, before.replace('bridge: pvmlab0', 'bridge: a b'));
    const create = await runCli(['vm', 'create', 'v1', '--pxeboot'], { home });
    assert.equal(create.code, 1);
    assert.match(create.stderr, /lab\.yaml: bridge: .*run 'pvmlab setup'/);
    const fix = await runCli(['setup', '--json', '--bridge', 'pvmlab0'], { home });
    assert.equal(fix.code, 0, fix.stderr);
    assert.match(fix.stderr, /lab\.yaml repaired \(the old file is kept as .*lab\.yaml\.bak\)/);
    assert.equal((await runCli(['vm', 'create', 'v1', '--pxeboot'], { home })).code, 0);

    // lab.yaml a directory: the message names it and says what to do.
    await fs.rm(path);
    await fs.mkdir(path);
    const dir = await runCli(['vm', 'create', 'v2', '--pxeboot'], { home });
    assert.equal(dir.code, 1);
    assert.match(dir.stderr, /cannot read .*lab\.yaml: it is a directory.*pvmlab setup/);
    assert.doesNotMatch(dir.stderr, /EISDIR/);
  });

  test('changing the subnet with VMs defined is refused; without VMs it is done', async (t) => {
    const { home, app, cleanup } = await tempHome('pvlab-subnet-');
    t.after(cleanup);
    assert.equal((await runCli(['setup', '--json', '--subnet', '10.9.0.0/24'], { home })).code, 0);
    assert.equal((await runCli(['vm', 'create', 'a1', '--pxeboot', '--disk-size', '1M'], { home })).code, 0);
    const before = await fs.readFile(join(app, 'lab.yaml'), 'utf8');
    const r = await runCli(['setup', '--json', '--subnet', '10.8.0.0/24'], { home });
    assert.equal(r.code, 2, r.stderr);
    assert.match(
      r.stderr,
      /cannot change the lab's addresses \(subnet 10\.9\.0\.0\/24 -> 10\.8\.0\.0\/24\) while VMs are defined: a1/,
    );
    assert.equal(await fs.readFile(join(app, 'lab.yaml'), 'utf8'), before);
    // The same subnet again is no change.
    assert.equal((await runCli(['setup', '--json', '--subnet', '10.9.0.0/24'], { home })).code, 0);
  });

  test('an empty lock file left by a dead writer does not wedge the lab', async (t) => {
    const { home, app, cleanup } = await tempHome('pvlab-lock-');
    t.after(cleanup);
    await fs.mkdir(join(app, 'locks'), { recursive: true });
    const lock = join(app, 'locks', 'state.lock');
    await fs.writeFile(lock, '');
    const old = new Date(Date.now() - 60_000);
    await fs.utimes(lock, old, old);
    const started = Date.now();
    const r = await runCli(['vm', 'create', 'l1', '--pxeboot', '--disk-size', '1M'], {
      home,
      timeoutMs: 30_000,
    });
    assert.equal(r.code, 0, r.stderr);
    assert.ok(Date.now() - started < 15_000);
    assert.deepEqual(await fs.readdir(join(app, 'locks')), []);
  });
});
