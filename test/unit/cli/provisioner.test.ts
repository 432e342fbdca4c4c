import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, beforeEach, describe, test } from 'node:test';
import { readPidFile } from '../../../src/qemu/process.js';
import { runCli, tempHome } from '../../helpers/cli.js';
import { freePort } from '../../helpers/ports.js';
import { execStatus, killQuietly } from '../../helpers/qemu.js';

describe('pvmlab provisioner docker', () => {
  let home: string;
  let app: string;
  let cleanup: () => Promise<void>;
  let tar: string;
  before(async () => {
    ({ home, app, cleanup } = await tempHome());
    tar = join(home, 'pxeboot_stack.tar');
    await writeFile(tar, 'not really an image');
  });
  after(() => cleanup());
  beforeEach(() => rm(app, { recursive: true, force: true }));

  const cli = (args: string[]) => runCli(['provisioner', 'docker', ...args], { home });

  test('help lists the subcommands', async () => {
    const r = await runCli(['provisioner', 'docker', '--help'], { home });
    assert.equal(r.code, 0);
    for (const c of ['start', 'stop', 'status', 'logs'])
      assert.match(r.stdout, new RegExp(`^  ${c}\\b`, 'm'));
    const start = await cli(['start', '--help']);
    assert.match(
      start.stdout,
      /--docker-tar <tar>[\s\S]*--network-host[\s\S]*--privileged[\s\S]*--name <container>/,
    );
  });

  test('usage errors exit 2 and write nothing', async () => {
    const cases: [string[], RegExp][] = [
      [['start'], /give the image tar to start/],
      [['start', '--network-host', '--privileged'], /give the image tar to start/],
      [['start', tar, '--docker-tar', join(home, 'other.tar')], /two different tars given/],
      [['start', join(home, 'missing.tar')], /missing\.tar: no such file/],
      [['start', '--docker-tar', home], /is not a file/],
      [['start', tar, '--name', 'bad name'], /invalid container name 'bad name'/],
      [['start', tar, '--bogus'], /unknown option '--bogus'/],
      [['stop', 'a/b'], /invalid container name/],
      [['stop', 'a', 'b'], /too many arguments|error:/],
      [['logs', '-x'], /unknown option/],
      [['logs', "it's"], /invalid container name/],
      [['status', 'extra'], /error:/],
    ];
    for (const [args, re] of cases) {
      const r = await cli(args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, re, args.join(' '));
      assert.ok(!existsSync(app), `${args.join(' ')} wrote ${app}`);
    }
  });

  test('the same tar as the argument and --docker-tar is fine (fails later: no provisioner)', async () => {
    const r = await cli(['start', tar, '--docker-tar', tar, '--network-host', '--privileged']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /no provisioner: create one with 'pvmlab provisioner create <name> --ip …'/);
  });

  test('no provisioner: exit 1 for every subcommand, nothing copied', async () => {
    for (const args of [['start', tar], ['stop'], ['status'], ['logs'], ['logs', '-f', 'x']]) {
      const r = await cli(args);
      assert.equal(r.code, 1, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, /no provisioner: create one/);
    }
    assert.ok(!existsSync(join(app, 'docker_images')));
  });

  const writeProvisioner = (sshPort: number) =>
    mkdir(join(app, 'vms'), { recursive: true }).then(() =>
      writeFile(
        join(app, 'vms', 'prov.json'),
        JSON.stringify({
          name: 'prov',
          role: 'provisioner',
          arch: 'x86_64',
          ip: '192.168.100.1',
          subnet: '192.168.100.0/24',
          mac: '52:54:00:00:00:01',
          ssh_port: sshPort,
        }),
      ),
    );

  test(
    'a running provisioner that SSH cannot reach: exit 1, naming vm shell',
    { timeout: 60_000 },
    async (t) => {
      // A real QEMU (no machine) holding the provisioner's pid file is what "running" means;
      // nothing listens on its SSH port, so the real ssh fails to connect (on loopback).
      await writeProvisioner(await freePort());
      const pidFile = join(app, 'pids', 'prov.pid');
      await mkdir(join(app, 'pids'), { recursive: true });
      t.after(async () => killQuietly(await readPidFile(pidFile).catch(() => undefined)));
      const q = await execStatus('qemu-system-x86_64', [
        '-machine',
        'none',
        '-display',
        'none',
        '-nodefaults',
        '-daemonize',
        '-pidfile',
        pidFile,
      ]);
      assert.equal(q.code, 0, q.stderr);

      const r = await cli(['start', tar, '--network-host', '--privileged']);
      assert.equal(r.code, 1, r.stderr);
      assert.match(
        r.stderr,
        /cannot reach the provisioner 'prov' over SSH; 'pvmlab vm shell prov' shows why/,
      );
      assert.match(r.stderr, /Connection refused/);
      // The tar was put in the share first (atomically: no temp file left), and no lock is left.
      assert.deepEqual(await readdir(join(app, 'docker_images')), ['pxeboot_stack.tar']);
      assert.equal(
        await readFile(join(app, 'docker_images', 'pxeboot_stack.tar'), 'utf8'),
        'not really an image',
      );
      assert.deepEqual(await readdir(join(app, 'locks')), []);
      for (const args of [['stop'], ['status'], ['logs']]) {
        const s = await cli(args);
        assert.equal(s.code, 1, `${args.join(' ')}: ${s.stderr}`);
        assert.match(s.stderr, /cannot reach the provisioner 'prov' over SSH/);
      }
    },
  );

  test('a provisioner that is not running: exit 1, named, with how to start it; nothing copied', async () => {
    await writeProvisioner(40022);
    for (const args of [['start', tar, '--network-host', '--privileged'], ['stop'], ['status'], ['logs']]) {
      const r = await cli(args);
      assert.equal(r.code, 1, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, /the provisioner 'prov' is not running: start it with 'pvmlab vm start prov'/);
    }
    assert.deepEqual(await readdir(app), ['vms']);
  });
});
