import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { VM_SCHEMA_VERSION, parseVm, serializeVm, type VmDefinition } from '../../../src/core/vmdef.js';

/** Every field set, in deliberately scrambled insertion order. */
const full: VmDefinition = {
  schema_version: 1,
  cpus: 2,
  memory: 2048,
  initrd: './boot/initrd.img',
  kernel: './boot/vmlinuz',
  ssh_key: '/home/u/.pvmlab/ssh/vm_key.pub',
  distro: 'ubuntu-24.04',
  pxeboot: true,
  ssh_port: 2222,
  vms_path: '/home/u/.pvmlab/vms',
  docker_images_path: '/home/u/.pvmlab/docker_images',
  pxe_boot_stack_tar: 'pxeboot_stack.tar',
  mac: '52:54:00:12:34:56',
  subnetv6: 'fd00:cafe:babe::/64',
  ipv6: 'fd00:cafe:babe::1',
  subnet: '192.168.100.0/24',
  ip: '192.168.100.1',
  arch: 'aarch64',
  role: 'provisioner',
  name: 'provisioner',
};

/** The original's field order (its Go struct), followed by our schema_version. */
const ORIGINAL_ORDER = [
  'name',
  'role',
  'arch',
  'ip',
  'subnet',
  'ipv6',
  'subnetv6',
  'mac',
  'pxe_boot_stack_tar',
  'docker_images_path',
  'vms_path',
  'ssh_port',
  'pxeboot',
  'distro',
  'ssh_key',
  'kernel',
  'initrd',
  'memory',
  'cpus',
  'schema_version',
];

describe('serializeVm', () => {
  it("writes keys in the original's order", () => {
    const text = serializeVm(full);
    assert.deepEqual(Object.keys(JSON.parse(text) as object), ORIGINAL_ORDER);
  });

  it('is two-space indented JSON without a trailing newline', () => {
    const text = serializeVm({ name: 'vm1', role: 'target', arch: 'x86_64', ip: '192.168.100.2' });
    assert.equal(
      text,
      '{\n  "name": "vm1",\n  "role": "target",\n  "arch": "x86_64",\n  "ip": "192.168.100.2"\n}',
    );
    assert.ok(!text.endsWith('\n'));
  });

  it('omits unset, empty, false and zero fields (omitempty)', () => {
    const text = serializeVm({
      name: 'vm1',
      role: 'target',
      arch: 'x86_64',
      ip: '',
      mac: undefined,
      ssh_port: 0,
      pxeboot: false,
      distro: '',
    });
    assert.equal(text, '{\n  "name": "vm1",\n  "role": "target",\n  "arch": "x86_64"\n}');
  });

  it('keeps true and non-zero values', () => {
    const parsed = JSON.parse(
      serializeVm({ name: 'vm1', role: 'target', arch: 'x86_64', pxeboot: true, ssh_port: 1 }),
    ) as Record<string, unknown>;
    assert.equal(parsed.pxeboot, true);
    assert.equal(parsed.ssh_port, 1);
  });

  it('keeps unknown fields, after the known ones, in their order', () => {
    const vm: VmDefinition = {
      zeta: { nested: [1, 2] },
      name: 'vm1',
      alpha: 'kept',
      role: 'target',
      arch: 'x86_64',
      empty_unknown: '',
      gone: undefined,
    };
    const parsed = JSON.parse(serializeVm(vm)) as Record<string, unknown>;
    assert.deepEqual(Object.keys(parsed), ['name', 'role', 'arch', 'zeta', 'alpha', 'empty_unknown']);
    assert.deepEqual(parsed.zeta, { nested: [1, 2] });
    assert.equal(parsed.alpha, 'kept');
  });
});

describe('parseVm', () => {
  it('reads a file the original wrote (no schema_version), its MAC in lowercase colon form', () => {
    const r = parseVm(
      '{\n  "name": "target1",\n  "role": "target",\n  "arch": "aarch64",\n  "ip": "192.168.254.10",\n  "mac": "52:54:00:AB:CD:EF",\n  "pxeboot": true\n}\n',
    );
    assert.deepEqual(r, {
      ok: true,
      value: {
        name: 'target1',
        role: 'target',
        arch: 'aarch64',
        ip: '192.168.254.10',
        mac: '52:54:00:ab:cd:ef',
        pxeboot: true,
      },
      normalized: ['mac "52:54:00:AB:CD:EF" read as "52:54:00:ab:cd:ef"'],
    });
  });

  it("reads every MAC spelling the original's --mac accepted, and says what it changed", () => {
    const cases: [string, string][] = [
      ['52-54-00-AB-CD-EF', '52:54:00:ab:cd:ef'],
      ['52-54-00-ab-cd-ef', '52:54:00:ab:cd:ef'],
      ['52:54-00:aB-Cd:ef', '52:54:00:ab:cd:ef'],
      // A multicast MAC was accepted too: kept (QEMU says what is wrong with it at start).
      ['01:00:5E:00:00:01', '01:00:5e:00:00:01'],
    ];
    for (const [given, read] of cases) {
      const r = parseVm(JSON.stringify({ name: 'vm1', role: 'target', arch: 'x86_64', mac: given }));
      assert.ok(r.ok, given);
      if (!r.ok) continue;
      assert.equal(r.value.mac, read, given);
      assert.deepEqual(r.normalized, [`mac "${given}" read as "${read}"`]);
    }
  });

  it('reports nothing normalised for a file in our own form', () => {
    const r = parseVm(serializeVm(full));
    assert.ok(r.ok);
    if (r.ok) assert.deepEqual(r.normalized, []);
  });

  it('rejects invalid JSON', () => {
    const r = parseVm('{"name": "vm1",');
    assert.equal(r.ok, false);
    if (!r.ok) assert.match(r.error, /^not valid JSON \(/);
    const empty = parseVm('');
    assert.equal(empty.ok, false);
    if (!empty.ok) assert.match(empty.error, /^not valid JSON/);
  });

  it('rejects a non-object', () => {
    for (const text of ['null', '[]', '"vm1"', '42']) {
      const r = parseVm(text);
      assert.equal(r.ok, false, text);
    }
  });

  const base = { name: 'vm1', role: 'target', arch: 'x86_64' };
  const rejects = (data: Record<string, unknown>, field: RegExp) => {
    const r = parseVm(JSON.stringify(data));
    assert.equal(r.ok, false, JSON.stringify(data));
    if (!r.ok) assert.match(r.error, field);
  };

  it('rejects a bad or missing role', () => {
    rejects({ ...base, role: 'server' }, /^role: /);
    rejects({ name: 'vm1', arch: 'x86_64' }, /^role: /);
  });

  it('rejects a bad arch', () => {
    rejects({ ...base, arch: 'arm64' }, /^arch: /);
    rejects({ ...base, arch: 'X86_64' }, /^arch: /);
  });

  it('rejects a bad mac', () => {
    rejects({ ...base, mac: '52:54:00:12:34' }, /^mac: mac must be six hex pairs$/);
    rejects({ ...base, mac: '525400123456' }, /^mac: mac must be six hex pairs$/);
    rejects({ ...base, mac: '52.54.00.12.34.56' }, /^mac: mac must be six hex pairs$/);
    rejects({ ...base, mac: ' 52:54:00:12:34:56' }, /^mac: mac must be six hex pairs$/);
    rejects({ ...base, mac: 525400123456 }, /^mac: /);
  });

  it('rejects a bad name', () => {
    for (const name of ['', 'VM1', 'my_vm', '-vm', 'vm-', 'a'.repeat(64)])
      rejects({ ...base, name }, /^name: name must be a hostname label$/);
    assert.equal(parseVm(JSON.stringify({ ...base, name: 'a'.repeat(63) })).ok, true);
  });

  it('rejects bad numbers', () => {
    rejects({ ...base, ssh_port: 70000 }, /^ssh_port: /);
    rejects({ ...base, ssh_port: '22' }, /^ssh_port: /);
    rejects({ ...base, cpus: 0 }, /^cpus: /);
    rejects({ ...base, memory: 1.5 }, /^memory: /);
  });

  it('lists every problem', () => {
    const r = parseVm(JSON.stringify({ name: 'Bad', role: 'x', arch: 'y' }));
    assert.equal(r.ok, false);
    if (!r.ok) {
      const parts = r.error.split('; ').map((p) => p.split(':')[0]);
      assert.deepEqual(parts, ['name', 'role', 'arch']);
    }
  });

  it('accepts the current schema_version and refuses a newer one', () => {
    assert.equal(VM_SCHEMA_VERSION, 1);
    assert.equal(parseVm(JSON.stringify({ ...base, schema_version: 1 })).ok, true);
    assert.deepEqual(parseVm(JSON.stringify({ ...base, schema_version: 2 })), {
      ok: false,
      error: 'schema_version 2 is newer than this pvmlab understands (1)',
    });
    rejects({ ...base, schema_version: 0 }, /^schema_version: /);
  });

  it('keeps unknown fields', () => {
    const r = parseVm(JSON.stringify({ ...base, future_field: { a: 1 } }));
    assert.ok(r.ok);
    if (r.ok) assert.deepEqual(r.value.future_field, { a: 1 });
  });
});

describe('round trip', () => {
  it('parseVm(serializeVm(vm)) gives the VM back', () => {
    const vm: VmDefinition = { ...full, extra: ['x', { y: 1 }] };
    const r = parseVm(serializeVm(vm));
    assert.deepEqual(r, { ok: true, value: vm, normalized: [] });
  });

  it('serializeVm(parseVm(text)) reproduces a file it wrote', () => {
    const text = serializeVm(full);
    const r = parseVm(text);
    assert.ok(r.ok);
    if (r.ok) assert.equal(serializeVm(r.value), text);
  });
});
