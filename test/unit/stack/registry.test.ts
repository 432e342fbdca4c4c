import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, renameSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { serializeVm, type VmDefinition } from '../../../src/core/vmdef.js';
import { MachineRegistry, normalizeMacKey, type RegistryFs } from '../../../src/stack/registry.js';

type After = { after: (fn: () => void) => void };

function tempDir(t: After): string {
  const dir = mkdtempSync(join(tmpdir(), 'pvml-registry-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function writeVm(dir: string, vm: VmDefinition, file = `${vm.name}.json`): void {
  writeFileSync(join(dir, file), serializeVm(vm));
}

function startRegistry(t: After, dir: string, logs: string[]): MachineRegistry {
  const reg = new MachineRegistry({ dir, pollMs: 40, debounceMs: 15, log: (m) => logs.push(m) });
  t.after(() => reg.stop());
  return reg;
}

/** Resolves with the next 'change' payload; rejects if none comes in time. */
function nextChange(reg: MachineRegistry, timeoutMs = 3000): Promise<VmDefinition[]> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      reg.off('change', on);
      reject(new Error('no change event'));
    }, timeoutMs);
    const on = (vms: VmDefinition[]) => {
      clearTimeout(timer);
      resolve(vms);
    };
    reg.once('change', on);
  });
}

async function waitFor(what: string, cond: () => boolean, timeoutMs = 3000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const provisioner: VmDefinition = {
  name: 'provisioner',
  role: 'provisioner',
  arch: 'x86_64',
  ip: '10.217.0.1',
  ipv6: 'fd00:217::1',
  mac: '52:54:00:00:00:01',
};
const pxe1: VmDefinition = {
  name: 'pxe1',
  role: 'target',
  arch: 'x86_64',
  ip: '10.217.0.2',
  mac: 'BE:B9:F9:8B:F5:EE',
  pxeboot: true,
  distro: 'ubuntu-24.04',
  kernel: 'vmlinuz',
};
const pxe2: VmDefinition = {
  name: 'pxe2',
  role: 'target',
  arch: 'aarch64',
  ip: '10.217.0.3',
  ipv6: 'fd00:217::3',
  mac: '52:54:00:aa:bb:03',
  pxeboot: true,
};

test('normalizeMacKey', () => {
  const ok: [string, string][] = [
    ['52:54:00:aa:bb:03', '52:54:00:aa:bb:03'],
    ['52:54:00:AA:BB:03', '52:54:00:aa:bb:03'],
    ['52-54-00-AA-BB-03', '52:54:00:aa:bb:03'],
    ['525400aabb03', '52:54:00:aa:bb:03'],
    ['  52:54:00:aa:bb:03\n', '52:54:00:aa:bb:03'],
    ['52:54-00aa:bb-03', '52:54:00:aa:bb:03'],
  ];
  for (const [input, want] of ok) assert.equal(normalizeMacKey(input), want, input);
  for (const bad of [
    '',
    '52:54:00:aa:bb',
    '52:54:00:aa:bb:03:04',
    '52:54:00:aa:bb:0g',
    '5:54:00:aa:bb:03',
    '52::54:00:aa:bb:03',
    '52.54.00.aa.bb.03',
    'pxe1',
    '../etc/passwd',
  ])
    assert.equal(normalizeMacKey(bad), undefined, JSON.stringify(bad));
});

test('start() loads the directory; lookups by MAC (any case, dashes), name and IP; all() sorted', async (t) => {
  const dir = tempDir(t);
  writeVm(dir, pxe2);
  writeVm(dir, provisioner);
  writeVm(dir, pxe1);
  const logs: string[] = [];
  const reg = startRegistry(t, dir, logs);
  assert.equal(reg.size, 0);
  await reg.start();
  assert.equal(reg.size, 3);
  assert.deepEqual(
    reg.all().map((v) => v.name),
    ['provisioner', 'pxe1', 'pxe2'],
  );
  // Its file spells the MAC in upper case: served (and logged) in lowercase colon form.
  assert.deepEqual(reg.byName('pxe1'), { ...pxe1, mac: 'be:b9:f9:8b:f5:ee' });
  for (const mac of ['be:b9:f9:8b:f5:ee', 'BE:B9:F9:8B:F5:EE', 'be-b9-f9-8b-f5-ee', 'beb9f98bf5ee'])
    assert.equal(reg.byMac(mac)?.name, 'pxe1', mac);
  assert.equal(reg.byMac('52-54-00-AA-BB-03')?.name, 'pxe2');
  assert.equal(reg.byMac('52:54:00:00:00:01')?.name, 'provisioner');
  assert.equal(reg.byMac('52:54:00:00:00:99'), undefined);
  assert.equal(reg.byMac('not-a-mac'), undefined);
  assert.equal(reg.byName('pxe3'), undefined);
  assert.equal(reg.byName('PXE1'), undefined);
  assert.equal(reg.byIp('10.217.0.3')?.name, 'pxe2');
  assert.equal(reg.byIp('fd00:217::3')?.name, 'pxe2');
  assert.equal(reg.byIp('10.217.0.1')?.name, 'provisioner');
  assert.equal(reg.byIp('10.217.0.99'), undefined);
  assert.deepEqual(logs, ['registry: pxe1.json: mac "BE:B9:F9:8B:F5:EE" read as "be:b9:f9:8b:f5:ee"']);
});

test('a Go pvmlab file (dash MAC, no schema_version, no newline) is served by its normalised MAC', async (t) => {
  const dir = tempDir(t);
  writeFileSync(
    join(dir, 'go1.json'),
    '{\n  "name": "go1",\n  "role": "target",\n  "arch": "aarch64",\n  "ip": "10.217.0.9",\n  "mac": "52-54-00-AA-BB-09",\n  "pxeboot": true\n}',
  );
  const logs: string[] = [];
  const reg = startRegistry(t, dir, logs);
  await reg.start();
  assert.equal(reg.byMac('52:54:00:aa:bb:09')?.name, 'go1');
  assert.equal(reg.byName('go1')?.mac, '52:54:00:aa:bb:09');
  assert.deepEqual(logs, ['registry: go1.json: mac "52-54-00-AA-BB-09" read as "52:54:00:aa:bb:09"']);
});

test('invalid, half-written, misnamed and foreign files are logged and skipped; the rest is served', async (t) => {
  const dir = tempDir(t);
  writeVm(dir, pxe1);
  writeVm(dir, pxe2);
  writeFileSync(join(dir, 'torn.json'), serializeVm({ ...pxe2, name: 'torn' }).slice(0, 40));
  writeFileSync(join(dir, 'badmac.json'), serializeVm({ ...pxe2, name: 'badmac', mac: 'zz:zz' }));
  writeFileSync(join(dir, 'future.json'), serializeVm({ ...pxe2, name: 'future', schema_version: 99 }));
  writeVm(dir, { ...pxe2, name: 'pxe9', mac: '52:54:00:00:00:09' }, 'other.json');
  writeVm(dir, { ...pxe2, name: 'hidden' }, '.hidden.json');
  writeVm(dir, { ...pxe2, name: 'tmp' }, 'tmp.json.tmp');
  writeFileSync(join(dir, 'notes.txt'), 'hello');
  mkdirSync(join(dir, 'sub.json'));
  const logs: string[] = [];
  const reg = startRegistry(t, dir, logs);
  await reg.start();
  assert.deepEqual(
    reg.all().map((v) => v.name),
    ['pxe1', 'pxe2'],
  );
  assert.equal(reg.byMac('52:54:00:00:00:09'), undefined);
  assert.equal(reg.byName('pxe9'), undefined);
  const sorted = logs.filter((l) => l.startsWith('registry: skipping ')).sort();
  assert.equal(sorted.length, 5, sorted.join('\n'));
  assert.equal(sorted[0], 'registry: skipping badmac.json: mac: mac must be six hex pairs');
  assert.match(sorted[1] ?? '', /^registry: skipping future\.json: schema_version 99 is newer than/);
  assert.equal(sorted[2], "registry: skipping other.json: name 'pxe9' does not match the file name");
  assert.match(sorted[3] ?? '', /^registry: skipping sub\.json: /);
  assert.match(sorted[4] ?? '', /^registry: skipping torn\.json: not valid JSON/);
});

test('files added, changed, broken and removed after start are picked up and emit change', async (t) => {
  const dir = tempDir(t);
  writeVm(dir, pxe1);
  const logs: string[] = [];
  const reg = startRegistry(t, dir, logs);
  await reg.start();
  assert.equal(reg.size, 1);

  // Added.
  let change = nextChange(reg);
  writeVm(dir, pxe2);
  let vms = await change;
  assert.deepEqual(
    vms.map((v) => v.name),
    ['pxe1', 'pxe2'],
  );
  assert.equal(reg.byMac('52:54:00:aa:bb:03')?.name, 'pxe2');

  // Changed: the new address and MAC are served, the old MAC is gone.
  change = nextChange(reg);
  writeVm(dir, { ...pxe2, ip: '10.217.0.30', mac: '52:54:00:aa:bb:30' });
  vms = await change;
  assert.equal(vms.find((v) => v.name === 'pxe2')?.ip, '10.217.0.30');
  assert.equal(reg.byIp('10.217.0.30')?.name, 'pxe2');
  assert.equal(reg.byIp('10.217.0.3'), undefined);
  assert.equal(reg.byMac('52:54:00:aa:bb:03'), undefined);
  assert.equal(reg.byMac('52:54:00:AA:BB:30')?.name, 'pxe2');

  // Half-written: the machine is dropped (not served stale), the others stay.
  change = nextChange(reg);
  writeFileSync(join(dir, 'pxe2.json'), '{"name": "pxe2", "ro');
  vms = await change;
  assert.deepEqual(
    vms.map((v) => v.name),
    ['pxe1'],
  );
  assert.equal(reg.byMac('52:54:00:aa:bb:30'), undefined);
  assert.ok(logs.some((l) => /^registry: skipping pxe2\.json: not valid JSON/.test(l)));
  // ... and back once the write completes.
  change = nextChange(reg);
  writeVm(dir, pxe2);
  vms = await change;
  assert.deepEqual(
    vms.map((v) => v.name),
    ['pxe1', 'pxe2'],
  );
  assert.equal(reg.byMac('52:54:00:aa:bb:03')?.name, 'pxe2');

  // Removed.
  change = nextChange(reg);
  unlinkSync(join(dir, 'pxe1.json'));
  vms = await change;
  assert.deepEqual(
    vms.map((v) => v.name),
    ['pxe2'],
  );
  assert.equal(reg.byMac('be:b9:f9:8b:f5:ee'), undefined);
  assert.equal(reg.byName('pxe1'), undefined);
  assert.equal(reg.size, 1);
});

test('no change event when nothing changed', async (t) => {
  const dir = tempDir(t);
  writeVm(dir, pxe1);
  const reg = startRegistry(t, dir, []);
  await reg.start();
  let changes = 0;
  reg.on('change', () => changes++);
  await reg.reload();
  // Several poll periods.
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(changes, 0);
  assert.equal(reg.size, 1);
});

test('a missing directory is logged; polling picks the machines up once it exists', async (t) => {
  const parent = tempDir(t);
  const dir = join(parent, 'vms');
  const logs: string[] = [];
  const reg = startRegistry(t, dir, logs);
  await reg.start();
  assert.equal(reg.size, 0);
  assert.ok(
    logs.some((l) => l.startsWith(`registry: cannot read ${dir}: ENOENT`)),
    logs.join('\n'),
  );
  assert.ok(logs.includes(`registry: cannot watch ${dir}; polling only`), logs.join('\n'));
  const change = nextChange(reg);
  mkdirSync(dir);
  writeVm(dir, pxe1);
  const vms = await change;
  assert.deepEqual(
    vms.map((v) => v.name),
    ['pxe1'],
  );
  assert.equal(reg.byMac('be-b9-f9-8b-f5-ee')?.name, 'pxe1');
});

test('duplicate MACs are logged; removing one machine keeps the other reachable by MAC', async (t) => {
  const dir = tempDir(t);
  writeVm(dir, pxe1);
  writeVm(dir, { ...pxe2, name: 'copy', mac: pxe1.mac?.toLowerCase() });
  const all: string[] = [];
  const reg = startRegistry(t, dir, all);
  await reg.start();
  assert.equal(reg.size, 2);
  const logs = all.filter((l) => l.includes(' is also used by '));
  assert.equal(logs.length, 1, all.join('\n'));
  assert.match(
    logs[0] ?? '',
    /^registry: MAC be:b9:f9:8b:f5:ee of '(pxe1|copy)' is also used by '(pxe1|copy)'$/,
  );
  const winner = reg.byMac('be:b9:f9:8b:f5:ee')?.name;
  assert.ok(winner === 'pxe1' || winner === 'copy');
  const survivor = winner === 'pxe1' ? 'copy' : 'pxe1';

  const change = nextChange(reg);
  unlinkSync(join(dir, `${winner}.json`));
  await change;
  assert.equal(reg.byName(winner), undefined);
  assert.equal(reg.byMac('be:b9:f9:8b:f5:ee')?.name, survivor);
});

test('stop() ends watching and polling', async (t) => {
  const dir = tempDir(t);
  const reg = startRegistry(t, dir, []);
  await reg.start();
  reg.stop();
  let changes = 0;
  reg.on('change', () => changes++);
  writeVm(dir, pxe1);
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(changes, 0);
  assert.equal(reg.size, 0);
  // reload() still works on demand.
  await reg.reload();
  await waitFor('manual reload', () => reg.size === 1);
  assert.equal(changes, 1);
});

/** The real file system, counting calls: stats of the directory apart from stats of files. */
function countingFs(dir: string) {
  const n = { dirStat: 0, fileStat: 0, readdir: 0, readFile: 0 };
  const fs: RegistryFs = {
    readdir: (d) => (n.readdir++, readdir(d)),
    stat: (p) => (p === dir ? n.dirStat++ : n.fileStat++, stat(p)),
    readFile: (p) => (n.readFile++, readFile(p, 'utf8')),
  };
  return { n, fs };
}

function manyVms(dir: string, count: number): void {
  for (let i = 0; i < count; i++)
    writeVm(dir, {
      ...pxe2,
      name: `m${i}`,
      ip: `10.217.${i >> 8}.${i & 255}`,
      mac: undefined,
      ipv6: undefined,
    });
}

test('idle, the polls stat the directory only: no stat of every file on each poll', async (t) => {
  const dir = tempDir(t);
  manyVms(dir, 300);
  const { n, fs } = countingFs(dir);
  const reg = new MachineRegistry({ dir, pollMs: 10, rescanMs: 3_600_000, debounceMs: 5, fs });
  t.after(() => reg.stop());
  await reg.start();
  assert.equal(reg.size, 300);
  assert.equal(n.fileStat, 300, 'start-up reads each file once');
  // The directory was just written: its mtime may still move within the tick, so it is listed
  // again (without stats of known files) until it has settled; none of that stats a file.
  const before = { ...n };
  await new Promise((r) => setTimeout(r, 300));
  assert.ok(n.dirStat - before.dirStat >= 5, `the directory is polled (${n.dirStat - before.dirStat} stats)`);
  assert.equal(n.fileStat, before.fileStat, 'no file is stat()ed while nothing changes');
  assert.equal(n.readFile, before.readFile);
});

test('a watch event re-reads only the file it names', async (t) => {
  const dir = tempDir(t);
  manyVms(dir, 300);
  const { n, fs } = countingFs(dir);
  const reg = new MachineRegistry({ dir, pollMs: 3_600_000, rescanMs: 3_600_000, debounceMs: 5, fs });
  t.after(() => reg.stop());
  await reg.start();
  const before = { ...n };
  const change = nextChange(reg);
  writeVm(dir, { ...pxe2, name: 'm7', ip: '10.217.9.9', mac: undefined, ipv6: undefined });
  await change;
  assert.equal(reg.byName('m7')?.ip, '10.217.9.9');
  assert.ok(n.fileStat - before.fileStat <= 2, `${n.fileStat - before.fileStat} stats`);
  assert.ok(n.readFile - before.readFile <= 2, `${n.readFile - before.readFile} reads`);
  assert.equal(n.readdir, before.readdir, 'no listing');
  // Re-written with the same text (a touch): read, but no change event.
  let changes = 0;
  reg.on('change', () => changes++);
  writeVm(dir, { ...pxe2, name: 'm7', ip: '10.217.9.9', mac: undefined, ipv6: undefined });
  await waitFor('the re-read', () => n.readFile - before.readFile >= 2);
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(changes, 0);
});

test('without file-watch events (9p): a rename is found by the directory poll, an in-place edit by the rescan', async (t) => {
  const dir = tempDir(t);
  writeVm(dir, pxe1);
  const { n, fs } = countingFs(dir);
  const reg = new MachineRegistry({ dir, watch: false, pollMs: 20, rescanMs: 600, debounceMs: 5, fs });
  t.after(() => reg.stop());
  await reg.start();
  // As pvmlab writes a definition: a temporary file renamed into place.
  let change = nextChange(reg);
  writeFileSync(join(dir, '.pxe2.json.tmp'), serializeVm(pxe2));
  renameSync(join(dir, '.pxe2.json.tmp'), join(dir, 'pxe2.json'));
  await change;
  assert.equal(reg.byName('pxe2')?.ip, pxe2.ip);
  // Edited in place: the directory does not change; the full rescan finds it.
  const rescans = n.readdir;
  change = nextChange(reg);
  writeFileSync(join(dir, 'pxe1.json'), serializeVm({ ...pxe1, ip: '10.217.0.77' }));
  await change;
  assert.equal(reg.byName('pxe1')?.ip, '10.217.0.77');
  assert.ok(n.readdir > rescans);
  // Removed by rename-over / unlink: the directory poll drops it.
  change = nextChange(reg);
  unlinkSync(join(dir, 'pxe2.json'));
  await change;
  assert.equal(reg.byName('pxe2'), undefined);
});

test('a directory removed and created again is watched again', async (t) => {
  const parent = tempDir(t);
  const dir = join(parent, 'vms');
  mkdirSync(dir);
  writeVm(dir, pxe1);
  const reg = new MachineRegistry({ dir, pollMs: 20, rescanMs: 3_600_000, debounceMs: 5 });
  t.after(() => reg.stop());
  await reg.start();
  let change = nextChange(reg);
  rmSync(dir, { recursive: true });
  await change;
  assert.equal(reg.size, 0);
  change = nextChange(reg);
  mkdirSync(dir);
  writeVm(dir, pxe2);
  await change;
  assert.equal(reg.byName('pxe2')?.name, 'pxe2');
  // An in-place edit, which only a watch (or the hour-long rescan) sees.
  await new Promise((r) => setTimeout(r, 100));
  change = nextChange(reg);
  writeFileSync(join(dir, 'pxe2.json'), serializeVm({ ...pxe2, ip: '10.217.0.66' }));
  await change;
  assert.equal(reg.byName('pxe2')?.ip, '10.217.0.66');
});
