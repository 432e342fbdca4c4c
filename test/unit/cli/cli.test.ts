import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { runCli, tempHome } from '../../helpers/cli.js';

describe('pvmlab CLI', () => {
  let home: string;
  let app: string;
  let cleanup: () => Promise<void>;
  before(async () => {
    ({ home, app, cleanup } = await tempHome());
  });
  after(() => cleanup());

  test('--version and --help exit 0', async () => {
    const v = await runCli(['--version'], { home });
    assert.equal(v.code, 0);
    assert.match(v.stdout, /^\d+\.\d+\.\d+\n$/);
    for (const args of [
      ['--help'],
      ['vm', '--help'],
      ['vm', 'create', '--help'],
      ['network', 'status', '--help'],
    ]) {
      const r = await runCli(args, { home });
      assert.equal(r.code, 0, args.join(' '));
      assert.match(r.stdout, /Usage: pvmlab/);
    }
  });

  test('a bare command group prints its help', async () => {
    const r = await runCli(['vm'], { home });
    assert.equal(r.code, 0);
    assert.match(r.stdout, /create \[options\] <vm-name>/);
  });

  test('usage errors exit 2', async () => {
    for (const args of [
      ['bogus'],
      ['vm', 'create'],
      ['vm', 'start', 'x', '--boot', 'floppy'],
      ['vm', 'list', '--nope'],
    ]) {
      const r = await runCli(args, { home });
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, /error:/);
    }
  });

  test('vm create refuses bad input with exit 2 and writes nothing', async () => {
    const cases: [string[], RegExp][] = [
      [['vm', 'create', 'Bad_Name', '--pxeboot'], /not a valid hostname/],
      [['vm', 'create', `a${'b'.repeat(63)}`, '--pxeboot'], /too long \(64 characters, at most 63\)/],
      [['vm', 'create', '-x', '--pxeboot'], /unknown option/],
      [['vm', 'create', 'ok1', '--pxeboot', '--mac', '52:54:00:zz:00:01'], /invalid MAC address/],
      [['vm', 'create', 'ok1', '--pxeboot', '--mac', '01:00:5e:00:00:01'], /multicast/],
      [
        ['vm', 'create', 'ok1', '--pxeboot', '--ip', '10.1.2.3'],
        /outside the lab subnet 192\.168\.100\.0\/24/,
      ],
      [['vm', 'create', 'ok1', '--pxeboot', '--ip', '192.168.100.7/16'], /outside the lab subnet/],
      [['vm', 'create', 'ok1', '--pxeboot', '--ip', '192.168.100.1'], /provisioner's address/],
      [['vm', 'create', 'ok1', '--pxeboot', '--ip', '192.168.100.300'], /invalid --ip/],
      [['vm', 'create', 'ok1', '--pxeboot', '--arch', 'riscv64'], /--arch must be either/],
      [['vm', 'create', 'ok1', '--pxeboot', '--disk-size', '10X'], /invalid --disk-size/],
      [['vm', 'create', 'ok1', '--pxeboot', '--memory', '0'], /invalid --memory/],
      [['vm', 'create', 'ok1', '--pxeboot', '--cpus', 'two'], /invalid --cpus/],
      [['vm', 'create', 'ok1', '--distro', 'nosuch'], /unknown distro 'nosuch'/],
    ];
    for (const [args, re] of cases) {
      const r = await runCli(args, { home });
      assert.equal(r.code, 2, `${args.join(' ')} -> ${r.code}: ${r.stderr}`);
      assert.match(r.stderr, re, args.join(' '));
    }
    const vms = await readdir(join(app, 'vms')).catch(() => []);
    assert.deepEqual(vms, []);
  });

  test('PXE VMs: addresses allocated, duplicates refused, list --json, clean', async () => {
    const a = await runCli(['vm', 'create', 'pxe-a', '--pxeboot', '--arch', 'x86_64'], { home });
    assert.equal(a.code, 0, a.stderr);
    const b = await runCli(
      [
        'vm',
        'create',
        'pxe-b',
        '--pxeboot',
        '--ip',
        '192.168.100.20/24',
        '--mac',
        '52-54-00-AB-CD-EF',
        '--arch',
        'aarch64',
      ],
      { home },
    );
    assert.equal(b.code, 0, b.stderr);
    const def = JSON.parse(await readFile(join(app, 'vms', 'pxe-b.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(def.mac, '52:54:00:ab:cd:ef');
    assert.equal(def.ip, '192.168.100.20');
    assert.equal(def.subnet, '192.168.100.0/24');
    assert.equal(def.arch, 'aarch64');
    assert.equal(def.pxeboot, true);
    assert.equal(def.schema_version, 1);

    for (const [args, re] of [
      [['vm', 'create', 'pxe-a', '--pxeboot'], /a VM named 'pxe-a' already exists/],
      [['vm', 'create', 'pxe-c', '--pxeboot', '--ip', '192.168.100.20'], /already used by VM 'pxe-b'/],
      [['vm', 'create', 'pxe-c', '--pxeboot', '--mac', '52:54:00:ab:cd:ef'], /already used by VM 'pxe-b'/],
    ] as [string[], RegExp][]) {
      const r = await runCli(args, { home });
      assert.equal(r.code, 2, args.join(' '));
      assert.match(r.stderr, re);
    }

    const list = await runCli(['vm', 'list', '--json'], { home });
    assert.equal(list.code, 0);
    const rows = JSON.parse(list.stdout) as { name: string; ip: string; status: string; boot: string }[];
    assert.deepEqual(
      rows.map((r) => [r.name, r.ip, r.boot, r.status]),
      [
        ['pxe-a', '192.168.100.2', 'pxe', 'Stopped'],
        ['pxe-b', '192.168.100.20', 'pxe', 'Stopped'],
      ],
    );
    const table = await runCli(['vm', 'list'], { home });
    assert.match(table.stdout, /pxe-a .*x86_64 .*pxe .*192\.168\.100\.2 /);

    const cleaned = await runCli(['vm', 'clean', 'pxe-a'], { home });
    assert.equal(cleaned.code, 0, cleaned.stderr);
    assert.deepEqual((await readdir(join(app, 'vms'))).sort(), ['pxe-b.json', 'pxe-b.qcow2']);
    const unknown = await runCli(['vm', 'clean', 'nope'], { home });
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /VM 'nope' does not exist/);
  });

  test('an invalid definition file is reported and skipped, not fatal', async () => {
    const { writeFile } = await import('node:fs/promises');
    await writeFile(join(app, 'vms', 'broken.json'), '{"name": "broken", "role": ');
    const list = await runCli(['vm', 'list', '--json'], { home });
    assert.equal(list.code, 0);
    assert.match(list.stderr, /skipping vms\/broken\.json: not valid JSON/);
    assert.ok(!(JSON.parse(list.stdout) as { name: string }[]).some((r) => r.name === 'broken'));
  });

  test('setup reports a missing tool with its Debian and Homebrew packages, and fails', async () => {
    const r = await runCli(['setup'], { home, env: { PATH: '/nonexistent' } });
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /qemu-img not found \(creates VM disks\); install it with Debian\/Ubuntu: apt-get install qemu-utils; Homebrew: brew install qemu/,
    );
    assert.match(r.stderr, /missing required tools: .*qemu-img/);
    const ok = await runCli(['setup', '--json'], { home });
    assert.equal(ok.code, 0, ok.stderr);
    const report = JSON.parse(ok.stdout) as {
      lab: { subnet: string };
      dependencies: { name: string; found: boolean }[];
    };
    assert.equal(report.lab.subnet, '192.168.100.0/24');
    assert.ok(report.dependencies.find((d) => d.name === 'qemu-img')?.found);
  });

  test('setup --subnet6 and stack serve flags: bad values exit 2 and change nothing', async () => {
    const before = await readFile(join(app, 'lab.yaml'), 'utf8');
    for (const [args, re] of [
      [['setup', '--subnet6', 'fd00:1::/48'], /--subnet6 'fd00:1::\/48' must be a \/64/],
      [['setup', '--subnet6', 'nope'], /invalid --subnet6 'nope'/],
      [
        ['stack', 'serve', '--ipxe-dir', '/nonexistent/ipxe'],
        /--ipxe-dir \/nonexistent\/ipxe is not a directory/,
      ],
      [['stack', 'serve', '--http-port', '0'], /invalid --http-port '0'/],
    ] as const) {
      const r = await runCli([...args], { home });
      assert.equal(r.code, 2, `${args.join(' ')} -> ${r.code}: ${r.stderr}`);
      assert.match(r.stderr, re);
    }
    assert.equal(await readFile(join(app, 'lab.yaml'), 'utf8'), before);
  });

  test('an IPv6 lab gives new targets the IPv6 twin of their IPv4 address', async (t) => {
    const six = await tempHome('pvcli6-');
    t.after(() => six.cleanup());
    assert.equal(
      (await runCli(['setup', '--json', '--subnet6', 'fd00:c0de::/64'], { home: six.home })).code,
      0,
    );
    const r = await runCli(['vm', 'create', 'six1', '--pxeboot', '--ip', '192.168.100.42'], {
      home: six.home,
    });
    assert.equal(r.code, 0, r.stderr);
    const list = JSON.parse((await runCli(['vm', 'list', '--json'], { home: six.home })).stdout) as {
      name: string;
      ipv6?: string;
    }[];
    assert.equal(list.find((v) => v.name === 'six1')?.ipv6, 'fd00:c0de::2a');
  });

  test('completion scripts', async () => {
    for (const shell of ['bash', 'zsh', 'fish']) {
      const r = await runCli(['completion', shell], { home });
      assert.equal(r.code, 0);
      assert.match(r.stdout, /pvmlab/);
    }
    const bad = await runCli(['completion', 'tcsh'], { home });
    assert.equal(bad.code, 2);
  });
});
