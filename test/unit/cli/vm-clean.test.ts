import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { filesByOwner } from '../../../src/lab/vm-files.js';
import { runCli, tempHome } from '../../helpers/cli.js';

const DIRS = ['vms', 'logs', 'pids', 'monitors', 'configs/cloud-init'];

/** Every file a VM can have, as `vm create`/`vm start` (or a kill -9 in between) leave them. */
async function vmFilesOf(app: string, name: string, definition: string | 'dir' | 'none'): Promise<void> {
  for (const d of DIRS) await mkdir(join(app, d), { recursive: true });
  const put = (p: string, text = 'x') => writeFile(join(app, p), text);
  if (definition === 'dir') await mkdir(join(app, 'vms', `${name}.json`));
  else if (definition !== 'none') await put(`vms/${name}.json`, definition);
  await put(`vms/${name}.qcow2`);
  await put(`vms/${name}-vars.fd`);
  await put(`vms/${name}.noreboot`);
  await put(`vms/.${name}.json.4242.1.tmp`);
  await put(`configs/cloud-init/${name}.iso`);
  await mkdir(join(app, 'configs/cloud-init', name), { recursive: true });
  await put(`configs/cloud-init/${name}/user-data`);
  await put(`logs/${name}.log`);
  await put(`pids/${name}.pid`, '999999999\n');
  await put(`monitors/${name}.qmp`);
}

async function listing(app: string): Promise<string[]> {
  const out: string[] = [];
  for (const d of DIRS)
    for (const e of await readdir(join(app, d)).catch(() => [] as string[])) out.push(`${d}/${e}`);
  return out.sort();
}

const GOOD = (name: string) =>
  JSON.stringify({
    name,
    role: 'target',
    arch: 'x86_64',
    ip: '192.168.100.9',
    mac: '52:54:00:00:00:09',
    pxeboot: true,
  });

describe('vm clean removes a VM whatever state its files are in, and only its files', () => {
  let home: string;
  let app: string;
  let cleanup: () => Promise<void>;
  before(async () => ({ home, app, cleanup } = await tempHome('pvvmclean-')));
  after(() => cleanup());

  test('owners are read from exact file names: web1 never takes web10 or web1-db', async () => {
    await vmFilesOf(app, 'web1', GOOD('web1'));
    await vmFilesOf(app, 'web10', GOOD('web10'));
    await vmFilesOf(app, 'web1-db', GOOD('web1-db'));
    await writeFile(join(app, 'logs', 'stack_serve.log'), 'stack\n');
    await writeFile(join(app, 'pids', 'stack_serve.pid'), '1\n');
    const owners = filesByOwner(app);
    assert.deepEqual([...owners.keys()].sort(), ['web1', 'web1-db', 'web10']);
    assert.equal(owners.get('web1')?.length, 10);
    assert.ok(owners.get('web1')?.every((p) => /\/\.?web1[.-]|\/web1$/.test(p) && !/web10|web1-db/.test(p)));
  });

  test('a corrupt definition, one that is a directory, or none at all', async () => {
    const others = () => listing(app).then((l) => l.filter((p) => !/(^|\/)\.?web1([.-](?!db)|$)/.test(p)));
    const before = await others();
    for (const definition of ['{corrupt', '{"name":"web1","schema_version":99}', 'dir', 'none'] as const) {
      await vmFilesOf(app, 'web1', definition);
      const r = await runCli(['vm', 'clean', 'web1'], { home });
      assert.equal(r.code, 0, `${definition}: ${r.stderr}`);
      assert.match(r.stderr, /VM 'web1' cleaned/);
      assert.deepEqual(
        (await listing(app)).filter((p) => /(^|\/)\.?web1([.-](?!db)|$)/.test(p)),
        [],
        definition,
      );
      assert.deepEqual(await others(), before, `${definition}: the other VMs' files are untouched`);
    }
    const none = await runCli(['vm', 'clean', 'web1'], { home });
    assert.equal(none.code, 1);
    assert.match(none.stderr, /VM 'web1' does not exist/);
    assert.equal((await runCli(['vm', 'clean', 'web1', '--all'], { home })).code, 2);
  });

  test('vm clean --all takes corrupt definitions and orphans, and leaves the stack files', async () => {
    await vmFilesOf(app, 'bad', '{corrupt');
    await vmFilesOf(app, 'gone', 'none');
    await writeFile(join(app, 'vms', '.orphan.json.77.3.tmp'), '{');
    const r = await runCli(['vm', 'clean', '--all'], { home });
    assert.equal(r.code, 0, r.stderr);
    for (const n of ['bad', 'gone', 'orphan', 'web10', 'web1-db'])
      assert.match(r.stderr, new RegExp(`VM '${n}' cleaned`));
    assert.deepEqual(await listing(app), ['logs/stack_serve.log', 'pids/stack_serve.pid']);
  });

  test('a running VM is stopped first; a pid file naming another process is not obeyed', async (t) => {
    // A stand-in QEMU: its argv is what vmProcess identifies (argv[0] qemu-system-*, -pidfile <ours>).
    const pidFile = join(app, 'pids', 'run1.pid');
    await vmFilesOf(app, 'run1', '{corrupt');
    const fake = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60_000)', '--', '-pidfile', pidFile], {
      argv0: 'qemu-system-x86_64',
      stdio: 'ignore',
    });
    t.after(() => fake.kill('SIGKILL'));
    await writeFile(pidFile, `${fake.pid}\n`);
    const exited = new Promise((r) => fake.once('exit', r));
    const r = await runCli(['vm', 'clean', 'run1'], { home, env: { PVMLAB_NETWORK: 'socket_vmnet' } });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /VM 'run1' cleaned \(stopped first\)/);
    await exited;
    assert.equal(existsSync(pidFile), false);

    // A pid file naming a live process that is not this VM's QEMU (pid reuse): left running.
    const bystander = spawn('sleep', ['60'], { stdio: 'ignore' });
    t.after(() => bystander.kill('SIGKILL'));
    await vmFilesOf(app, 'run2', '{corrupt');
    await writeFile(join(app, 'pids', 'run2.pid'), `${bystander.pid}\n`);
    const r2 = await runCli(['vm', 'clean', 'run2'], { home });
    assert.equal(r2.code, 0, r2.stderr);
    assert.doesNotMatch(r2.stderr, /stopped first/);
    assert.equal(bystander.exitCode, null);
    assert.doesNotThrow(() => process.kill(bystander.pid as number, 0));
  });
});
