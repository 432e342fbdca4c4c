import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, it } from 'node:test';
import { PvmlabError } from '../../../src/core/errors.js';
import type { VmDefinition } from '../../../src/core/vmdef.js';
import {
  LAB_USER,
  parseRemote,
  scpArgv,
  sshArgv,
  sshOptions,
  sshTargetFor,
  type SshTarget,
} from '../../../src/lab/ssh.js';

const run = promisify(execFile);
const KEY = '/home/u/.pvmlab/ssh/vm_key';
const OPTS = [
  '-i',
  KEY,
  '-o',
  'StrictHostKeyChecking=no',
  '-o',
  'UserKnownHostsFile=/dev/null',
  '-o',
  'LogLevel=ERROR',
  '-o',
  'ConnectTimeout=10',
];
const PROXY =
  'ProxyCommand=ssh -i /home/u/.pvmlab/ssh/vm_key -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null ' +
  '-o LogLevel=ERROR -o ConnectTimeout=10 -o BatchMode=yes -p 2222 -W %h:%p ubuntu@127.0.0.1';

const direct: SshTarget = { host: '192.168.100.5' };
const forwarded: SshTarget = { host: '127.0.0.1', port: 2222 };
const jumped: SshTarget = { host: '192.168.100.5', jump: { host: '127.0.0.1', port: 2222 } };

describe('sshOptions', () => {
  it('uses the lab key and never prompts about host keys', () => {
    assert.equal(LAB_USER, 'ubuntu');
    assert.deepEqual(sshOptions(KEY), OPTS);
    assert.deepEqual(sshOptions(KEY, { batch: true }), [...OPTS, '-o', 'BatchMode=yes']);
  });
});

describe('sshArgv', () => {
  it('reaches a VM directly', () => {
    assert.deepEqual(sshArgv(KEY, direct), [...OPTS, 'ubuntu@192.168.100.5']);
  });

  it('passes a command after --', () => {
    assert.deepEqual(sshArgv(KEY, direct, ['uname', '-a']), [
      ...OPTS,
      'ubuntu@192.168.100.5',
      '--',
      'uname',
      '-a',
    ]);
  });

  it('adds BatchMode in batch mode', () => {
    assert.deepEqual(sshArgv(KEY, direct, ['true'], true), [
      ...OPTS,
      '-o',
      'BatchMode=yes',
      'ubuntu@192.168.100.5',
      '--',
      'true',
    ]);
  });

  it('uses -p for a forwarded port', () => {
    assert.deepEqual(sshArgv(KEY, forwarded), [...OPTS, '-p', '2222', 'ubuntu@127.0.0.1']);
  });

  it('goes through the provisioner with a ProxyCommand', () => {
    assert.deepEqual(sshArgv(KEY, jumped, ['hostname']), [
      ...OPTS,
      '-o',
      PROXY,
      'ubuntu@192.168.100.5',
      '--',
      'hostname',
    ]);
  });
});

describe('scpArgv', () => {
  it('copies directly', () => {
    assert.deepEqual(scpArgv(KEY, direct, './a.txt', 'ubuntu@192.168.100.5:/tmp/a.txt', false), [
      ...OPTS,
      './a.txt',
      'ubuntu@192.168.100.5:/tmp/a.txt',
    ]);
  });

  it('puts -r first when recursive', () => {
    assert.deepEqual(scpArgv(KEY, direct, 'ubuntu@192.168.100.5:/etc', 'out', true), [
      '-r',
      ...OPTS,
      'ubuntu@192.168.100.5:/etc',
      'out',
    ]);
  });

  it('uses -P (capital) for a forwarded port', () => {
    assert.deepEqual(scpArgv(KEY, forwarded, 'ubuntu@127.0.0.1:x', 'y', false), [
      ...OPTS,
      '-P',
      '2222',
      'ubuntu@127.0.0.1:x',
      'y',
    ]);
  });

  it('goes through the provisioner with the same ProxyCommand as ssh', () => {
    assert.deepEqual(scpArgv(KEY, jumped, 'a', 'ubuntu@192.168.100.5:b', false), [
      ...OPTS,
      '-o',
      PROXY,
      'a',
      'ubuntu@192.168.100.5:b',
    ]);
  });
});

describe('ProxyCommand quoting', () => {
  /** What the shell that ssh starts for ProxyCommand would run, as argv (ssh expands % first). */
  async function proxyArgv(option: string): Promise<string[]> {
    const command = option
      .replace(/^ProxyCommand=/, '')
      .replace(/%(%|h|p)/g, (_, c: string) => (c === '%' ? '%' : c === 'h' ? '192.168.100.5' : '22'));
    const { stdout } = await run('sh', ['-c', `ssh() { printf '%s\\n' "$@"; }; ${command}`]);
    return stdout.split('\n').slice(0, -1);
  }

  it('keeps a key path with spaces, quotes and % as one word', async () => {
    const key = "/Users/Jane Doe/it's 100%/.pvmlab/ssh/vm_key";
    const argv = sshArgv(key, jumped);
    const proxy = argv[argv.indexOf('-o', OPTS.length) + 1] ?? '';
    assert.ok(proxy.startsWith('ProxyCommand=ssh '), proxy);
    assert.equal(argv[1], key, 'the outer ssh gets the path as an argument, unquoted');
    assert.deepEqual(await proxyArgv(proxy), [
      ...sshOptions(key, { batch: true }),
      '-p',
      '2222',
      '-W',
      '192.168.100.5:22',
      'ubuntu@127.0.0.1',
    ]);
  });

  it('runs the plain ProxyCommand as the expected argv', async () => {
    assert.deepEqual(await proxyArgv(PROXY), [
      ...sshOptions(KEY, { batch: true }),
      '-p',
      '2222',
      '-W',
      '192.168.100.5:22',
      'ubuntu@127.0.0.1',
    ]);
  });
});

describe('sshTargetFor', () => {
  const prov: VmDefinition = {
    name: 'provisioner',
    role: 'provisioner',
    arch: 'aarch64',
    ip: '192.168.100.1',
    ssh_port: 2222,
  };
  const vm: VmDefinition = { name: 'web', role: 'target', arch: 'aarch64', ip: '192.168.100.5' };

  it('reaches the provisioner through its forwarded port on localhost', () => {
    assert.deepEqual(sshTargetFor(prov, prov, false), { host: '127.0.0.1', port: 2222 });
    assert.deepEqual(sshTargetFor(prov, undefined, true), { host: '127.0.0.1', port: 2222 });
  });

  it('refuses a provisioner without a forwarded port', () => {
    assert.throws(
      () => sshTargetFor({ ...prov, ssh_port: undefined }, undefined, true),
      (err: unknown) =>
        err instanceof PvmlabError &&
        err.exitCode === 1 &&
        err.message === "provisioner 'provisioner' has no forwarded SSH port: is it running?",
    );
    assert.throws(() => sshTargetFor({ ...prov, ssh_port: 0 }, undefined, true), /no forwarded SSH port/);
  });

  it('reaches a target directly when the host is on the lab network', () => {
    assert.deepEqual(sshTargetFor(vm, prov, true), { host: '192.168.100.5' });
    assert.deepEqual(sshTargetFor(vm, undefined, true), { host: '192.168.100.5' });
  });

  it('reaches a target through the provisioner otherwise (macOS)', () => {
    assert.deepEqual(sshTargetFor(vm, prov, false), {
      host: '192.168.100.5',
      jump: { host: '127.0.0.1', port: 2222 },
    });
  });

  it('needs a running provisioner to jump through', () => {
    const msg =
      "VM 'web' cannot be reached: the host has no address on the lab network (pvmlab network start gives it one on Linux) and no running provisioner can relay the connection";
    assert.throws(
      () => sshTargetFor(vm, undefined, false),
      (err: unknown) => err instanceof PvmlabError && err.message === msg,
    );
    assert.throws(
      () => sshTargetFor(vm, { ...prov, ssh_port: undefined }, false),
      (err: unknown) => err instanceof PvmlabError && err.message === msg,
    );
  });

  it('refuses a target without an address', () => {
    assert.throws(
      () => sshTargetFor({ ...vm, ip: undefined }, prov, true),
      (err: unknown) => err instanceof PvmlabError && err.message === "VM 'web' has no IP address",
    );
  });
});

describe('parseRemote', () => {
  it('splits vm:path', () => {
    assert.deepEqual(parseRemote('vm1:/tmp/x'), { vm: 'vm1', path: '/tmp/x' });
    assert.deepEqual(parseRemote('web-01:relative/file.txt'), { vm: 'web-01', path: 'relative/file.txt' });
    assert.deepEqual(parseRemote('a:'), { vm: 'a', path: '' });
    assert.deepEqual(parseRemote('vm1:'), { vm: 'vm1', path: '' });
  });

  it('splits at the first colon only', () => {
    assert.deepEqual(parseRemote('vm1:/a:b'), { vm: 'vm1', path: '/a:b' });
    assert.deepEqual(parseRemote('vm1::x'), { vm: 'vm1', path: ':x' });
  });

  it('leaves local paths alone', () => {
    for (const spec of [
      '/local/path',
      './vm1:x',
      'relative/file',
      'C:\\x',
      'C:/x',
      '',
      ':x',
      '-vm:x',
      'vm-:x',
      'VM1:/tmp',
      'my_vm:/tmp',
      'dir/vm1:x',
    ])
      assert.equal(parseRemote(spec), undefined, spec);
  });
});
