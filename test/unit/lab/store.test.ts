import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { PvmlabError } from '../../../src/core/errors.js';
import { labDirs, vmFiles } from '../../../src/core/paths.js';
import type { VmDefinition } from '../../../src/core/vmdef.js';
import { listVms, loadVm, saveVm, vmPaths } from '../../../src/lab/store.js';

async function tempApp(t: { after: (fn: () => Promise<void>) => void }): Promise<string> {
  const dir = await fs.mkdtemp(join(tmpdir(), 'pvmlab-store-'));
  t.after(() => fs.rm(dir, { recursive: true, force: true }));
  const app = join(dir, '.pvmlab');
  await fs.mkdir(labDirs(app).vms, { recursive: true });
  return app;
}

const vm: VmDefinition = {
  name: 'web',
  role: 'target',
  arch: 'x86_64',
  ip: '192.168.100.2',
  subnet: '192.168.100.0/24',
  mac: '52:54:00:00:00:02',
  memory: 2048,
  cpus: 2,
  schema_version: 1,
};

describe('saveVm', () => {
  it('refuses a definition it would not read back, writing nothing', async (t) => {
    const app = await tempApp(t);
    for (const bad of [
      { ...vm, memory: 63 },
      { ...vm, cpus: 1.5 },
      { ...vm, ip: '192.168.100.300' },
      { ...vm, schema_version: 99 },
      { ...vm, name: 'Bad_Name' },
    ]) {
      await assert.rejects(
        saveVm(app, bad),
        (err: unknown) => err instanceof PvmlabError && /^refusing to write .*\.json: /.test(err.message),
        JSON.stringify(bad),
      );
    }
    assert.deepEqual(await fs.readdir(labDirs(app).vms), []);
    await saveVm(app, vm);
    assert.deepEqual((await listVms(app)).vms, [vm]);
  });
});

describe('listVms', () => {
  it('keeps what an unreadable definition still claims (name, address, MAC)', async (t) => {
    const app = await tempApp(t);
    const dir = labDirs(app).vms;
    await fs.writeFile(
      join(dir, 'new.json'),
      JSON.stringify({ ...vm, name: 'new', schema_version: 2, ip: '192.168.100.7' }),
    );
    await fs.writeFile(
      join(dir, 'cut.json'),
      '{"name": "cut", "ip": "192.168.100.8", "mac": "52-54-00-AA-BB-CC", "ro',
    );
    await fs.writeFile(
      join(dir, 'low.json'),
      JSON.stringify({ ...vm, name: 'low', memory: 63, ip: '192.168.100.9' }),
    );
    await fs.mkdir(join(dir, 'dir.json'));
    const { vms, invalid } = await listVms(app);
    assert.deepEqual(vms, []);
    assert.deepEqual(
      invalid.map((i) => i.claim),
      [
        { name: 'cut', ip: '192.168.100.8', mac: '52:54:00:aa:bb:cc' },
        { name: 'dir' },
        { name: 'low', ip: '192.168.100.9', mac: vm.mac },
        { name: 'new', ip: '192.168.100.7', mac: vm.mac },
      ],
    );
    assert.match(
      invalid.find((i) => i.file === 'dir.json')?.error ?? '',
      /^it is a directory, not a definition file; remove the VM with 'pvmlab vm clean /,
    );
  });
});

describe('listVms: vms/ not a directory', () => {
  it('names the directory and what to do', async (t) => {
    const app = await tempApp(t);
    const dir = labDirs(app).vms;
    await fs.rm(dir, { recursive: true });
    await fs.writeFile(dir, 'oops');
    await assert.rejects(
      listVms(app),
      (err: unknown) =>
        err instanceof PvmlabError &&
        err.message.startsWith(`cannot list the VM definitions in ${dir}: `) &&
        err.message.endsWith('it must be a directory (move the file away)'),
    );
  });
});

describe('loadVm', () => {
  it('names the file and what to do when the definition is a directory', async (t) => {
    const app = await tempApp(t);
    const path = vmFiles(app, 'x').definition;
    await fs.mkdir(path);
    await assert.rejects(
      loadVm(app, 'x'),
      (err: unknown) =>
        err instanceof PvmlabError &&
        err.message.startsWith(
          `cannot read the definition of VM 'x' (${path}): it is a directory, not a definition file`,
        ),
    );
  });
});

describe('vmPaths', () => {
  it("lists every file of a name, temp files included, and nobody else's", async (t) => {
    const app = await tempApp(t);
    const f = vmFiles(app, 'web');
    const d = labDirs(app);
    await fs.mkdir(d.cloudInit, { recursive: true });
    assert.deepEqual(await vmPaths(app, 'web'), []);
    const mine = [f.disk, f.seedIso, join(d.vms, '.web.json.123.1.tmp')];
    const theirs = [
      vmFiles(app, 'web2').disk,
      vmFiles(app, 'web-vars').definition,
      join(d.vms, '.web2.json.1.1.tmp'),
    ];
    for (const p of [...mine, ...theirs]) await fs.writeFile(p, '');
    assert.deepEqual(await vmPaths(app, 'web'), [...mine].sort());
    assert.deepEqual(await vmPaths(app, 'nope'), []);
  });
});
