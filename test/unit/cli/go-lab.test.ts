import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmod, mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parse } from 'yaml';
import { sshArgv } from '../../../src/lab/ssh.js';
import { labSshKey } from '../../../src/lab/sshkey.js';
import { dhcpHosts } from '../../../src/stack/dnsmasq.js';
import { MachineRegistry } from '../../../src/stack/registry.js';
import { runCli, tempHome } from '../../helpers/cli.js';

/**
 * Definitions as the Go pvmlab wrote them (json.MarshalIndent, no trailing newline): `--mac`
 * stored as typed, no schema_version, memory or cpus; the provisioner with its forwarded port.
 */
const GO_DEFINITIONS = (sshKey: string): Record<string, object> => ({
  provisioner: {
    name: 'provisioner',
    role: 'provisioner',
    arch: 'aarch64',
    ip: '192.168.100.1',
    subnet: '192.168.100.0/24',
    mac: '52:54:00:00:00:01',
    docker_images_path: '/Users/jane/.pvmlab/docker_images',
    vms_path: '/Users/jane/.pvmlab/vms',
    ssh_port: 50123,
    ssh_key: sshKey,
  },
  pxe1: {
    name: 'pxe1',
    role: 'target',
    arch: 'aarch64',
    ip: '192.168.100.2',
    subnet: '192.168.100.0/24',
    mac: '52-54-00-AA-BB-01',
    pxeboot: true,
    distro: 'ubuntu-24.04',
    ssh_key: sshKey,
    kernel: 'vmlinuz-6.8.0-87-generic',
    initrd: 'initrd.img-6.8.0-87-generic',
  },
  web1: {
    name: 'web1',
    role: 'target',
    arch: 'x86_64',
    ip: '192.168.100.3',
    subnet: '192.168.100.0/24',
    mac: 'BE:EF:00:12:34:56',
    distro: 'ubuntu-24.04',
    ssh_key: sshKey,
  },
  mixed: { name: 'mixed', role: 'target', arch: 'x86_64', ip: '192.168.100.4', mac: '52:54-00:Ab-cD:03' },
});

/** A lab the Go pvmlab made: `ssh/vm_rsa` (RSA 2048, PKCS#1 PEM) and its definitions. */
async function makeGoLab(app: string, work: string): Promise<{ rsaPub: string; files: Map<string, string> }> {
  await mkdir(join(app, 'ssh'), { recursive: true });
  await mkdir(join(app, 'vms'), { recursive: true });
  const key = join(app, 'ssh', 'vm_rsa');
  execFileSync('ssh-keygen', ['-q', '-t', 'rsa', '-b', '2048', '-m', 'PEM', '-N', '', '-f', key]);
  assert.match(await readFile(key, 'utf8'), /^-----BEGIN RSA PRIVATE KEY-----\n/);
  // The Go tool wrote `ssh-rsa <base64>\n`, with no comment.
  const [type, blob] = (await readFile(`${key}.pub`, 'utf8')).split(' ');
  const rsaPub = `${type} ${blob}\n`;
  await writeFile(`${key}.pub`, rsaPub);
  const files = new Map<string, string>();
  for (const [name, def] of Object.entries(GO_DEFINITIONS(rsaPub))) {
    const text = JSON.stringify(def, null, 2);
    await writeFile(join(app, 'vms', `${name}.json`), text);
    files.set(name, text);
  }
  // A local "cloud image" so `vm create` can make a disk VM offline.
  const img = join(work, 'testos.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', img, '64M']);
  await writeFile(
    join(app, 'distros.yaml'),
    `- name: testos\n  distro_name: debian\n  version: "1"\n  arch:\n    x86_64:\n      qcow2_url: file://${img}\n`,
  );
  return { rsaPub, files };
}

/** `ssh` and `scp` stand-ins that record their argv, one word a line. */
async function fakeSshTools(dir: string): Promise<{ path: string; argvFile: string }> {
  const bin = join(dir, 'bin');
  await mkdir(bin, { recursive: true });
  const argvFile = join(dir, 'argv');
  for (const tool of ['ssh', 'scp']) {
    await writeFile(join(bin, tool), `#!/bin/sh\nprintf '%s\\n' "$@" > '${argvFile}'\n`);
    await chmod(join(bin, tool), 0o755);
  }
  return { path: `${bin}:${process.env.PATH ?? ''}`, argvFile };
}

const count = (text: string, needle: string) => text.split(needle).length - 1;

describe('a lab made by the Go pvmlab', () => {
  let home: string;
  let app: string;
  let cleanup: () => Promise<void>;
  let rsaPub: string;
  let goFiles: Map<string, string>;
  let tools: { path: string; argvFile: string };

  before(async () => {
    ({ home, app, cleanup } = await tempHome('pvmlab-golab-'));
    ({ rsaPub, files: goFiles } = await makeGoLab(app, home));
    tools = await fakeSshTools(home);
  });
  after(() => cleanup());

  test('the stack serves its VMs by their normalised MAC; dnsmasq gets the normalised MAC', async (t) => {
    const logs: string[] = [];
    const reg = new MachineRegistry({ dir: join(app, 'vms'), pollMs: 60_000, log: (m) => logs.push(m) });
    t.after(() => reg.stop());
    await reg.start();
    assert.deepEqual(
      reg.all().map((v) => [v.name, v.mac]),
      [
        ['mixed', '52:54:00:ab:cd:03'],
        ['provisioner', '52:54:00:00:00:01'],
        ['pxe1', '52:54:00:aa:bb:01'],
        ['web1', 'be:ef:00:12:34:56'],
      ],
    );
    assert.equal(reg.byMac('52:54:00:aa:bb:01')?.name, 'pxe1');
    assert.equal(reg.byMac('be:ef:00:12:34:56')?.name, 'web1');
    assert.equal(reg.byName('pxe1')?.kernel, 'vmlinuz-6.8.0-87-generic');
    assert.deepEqual(dhcpHosts(reg.all()).split('\n'), [
      '52:54:00:ab:cd:03,192.168.100.4,mixed',
      '52:54:00:aa:bb:01,192.168.100.2,pxe1',
      'be:ef:00:12:34:56,192.168.100.3,web1',
      '',
    ]);
    assert.deepEqual(logs.sort(), [
      'registry: mixed.json: mac "52:54-00:Ab-cD:03" read as "52:54:00:ab:cd:03"',
      'registry: pxe1.json: mac "52-54-00-AA-BB-01" read as "52:54:00:aa:bb:01"',
      'registry: web1.json: mac "BE:EF:00:12:34:56" read as "be:ef:00:12:34:56"',
    ]);
  });

  test('vm list --json shows every VM with its MAC normalised, and warns once per file', async () => {
    const r = await runCli(['vm', 'list', '--json'], { home });
    assert.equal(r.code, 0, r.stderr);
    const rows = JSON.parse(r.stdout) as { name: string; mac: string; arch: string; boot: string }[];
    assert.deepEqual(
      rows.map((row) => [row.name, row.mac, row.arch, row.boot]),
      [
        ['mixed', '52:54:00:ab:cd:03', 'x86_64', 'disk'],
        ['provisioner', '52:54:00:00:00:01', 'aarch64', 'disk'],
        ['pxe1', '52:54:00:aa:bb:01', 'aarch64', 'pxe'],
        ['web1', 'be:ef:00:12:34:56', 'x86_64', 'disk'],
      ],
    );
    const pxe1Warning = `${join(app, 'vms', 'pxe1.json')}: mac "52-54-00-AA-BB-01" read as "52:54:00:aa:bb:01"`;
    assert.equal(count(r.stderr, pxe1Warning), 1, r.stderr);
    assert.equal(count(r.stderr, 'web1.json: mac "BE:EF:00:12:34:56" read as "be:ef:00:12:34:56"'), 1);
    assert.doesNotMatch(r.stderr, /provisioner\.json/);
    assert.doesNotMatch(r.stderr, /skipping/);
  });

  test('the key picked is vm_rsa, and the ssh argv names it', async () => {
    const key = await labSshKey(app);
    assert.deepEqual(key, { path: join(app, 'ssh', 'vm_rsa'), kind: 'go-rsa' });
    const argv = sshArgv(key.path, { host: '192.168.100.2' }, ['true']);
    assert.deepEqual(argv.slice(0, 2), ['-i', join(app, 'ssh', 'vm_rsa')]);
  });

  test('vm shell and vm copy run ssh and scp with vm_rsa', async () => {
    const env = { PATH: tools.path, PVMLAB_NETWORK: 'bridge' };
    const shell = await runCli(['vm', 'shell', 'pxe1', '--', 'uname', '-a'], { home, env });
    assert.equal(shell.code, 0, shell.stderr);
    const sshArgs = (await readFile(tools.argvFile, 'utf8')).split('\n');
    assert.deepEqual(sshArgs.slice(0, 2), ['-i', join(app, 'ssh', 'vm_rsa')]);
    assert.deepEqual(sshArgs.slice(-5), ['ubuntu@192.168.100.2', '--', 'uname', '-a', '']);
    // loadVm and the provisioner lookup both read pxe1.json: still one warning.
    assert.equal(count(shell.stderr, 'pxe1.json: mac "52-54-00-AA-BB-01"'), 1, shell.stderr);

    const copy = await runCli(['vm', 'copy', './a.txt', 'web1:/tmp/a.txt'], { home, env });
    assert.equal(copy.code, 0, copy.stderr);
    const scpArgs = (await readFile(tools.argvFile, 'utf8')).split('\n');
    assert.deepEqual(scpArgs.slice(0, 2), ['-i', join(app, 'ssh', 'vm_rsa')]);
    assert.deepEqual(scpArgs.slice(-3), ['./a.txt', 'ubuntu@192.168.100.3:/tmp/a.txt', '']);
  });

  test('vm create authorises the vm_rsa key, makes no vm_key, and stores --mac normalised', async () => {
    const dup = await runCli(['vm', 'create', 'dup', '--pxeboot', '--mac', '52:54:00:aa:bb:01'], { home });
    assert.equal(dup.code, 2, dup.stderr);
    assert.match(dup.stderr, /already used by VM 'pxe1'/);

    const pxe = await runCli(['vm', 'create', 'pxe2', '--pxeboot', '--mac', '52-54-00-AA-BB-CC'], { home });
    assert.equal(pxe.code, 0, pxe.stderr);
    const pxeDef = JSON.parse(await readFile(join(app, 'vms', 'pxe2.json'), 'utf8')) as Record<
      string,
      string
    >;
    assert.equal(pxeDef.mac, '52:54:00:aa:bb:cc');
    assert.equal(pxeDef.ip, '192.168.100.5');
    assert.equal(pxeDef.ssh_key, rsaPub);

    const disk = await runCli(
      ['vm', 'create', 'disk1', '--distro', 'testos', '--arch', 'x86_64', '--disk-size', '1G'],
      { home },
    );
    assert.equal(disk.code, 0, disk.stderr);
    const diskDef = JSON.parse(await readFile(join(app, 'vms', 'disk1.json'), 'utf8')) as Record<
      string,
      string
    >;
    assert.equal(diskDef.ssh_key, rsaPub);
    const userData = parse(
      await readFile(join(app, 'configs', 'cloud-init', 'disk1', 'user-data'), 'utf8'),
    ) as { users: { ssh_authorized_keys: string[] }[] };
    assert.deepEqual(userData.users[0]?.ssh_authorized_keys, [rsaPub.trim()]);

    assert.deepEqual((await readdir(join(app, 'ssh'))).sort(), ['vm_rsa', 'vm_rsa.pub']);
    assert.equal(await readFile(join(app, 'ssh', 'vm_rsa.pub'), 'utf8'), rsaPub);
  });

  test("setup keeps vm_rsa and says so; the Go tool's definition files were never rewritten", async () => {
    const r = await runCli(['setup', '--json'], { home });
    const report = JSON.parse(r.stdout) as { sshKey: string; sshKeyCreated: boolean };
    assert.deepEqual([report.sshKey, report.sshKeyCreated], [join(app, 'ssh', 'vm_rsa'), false]);
    assert.deepEqual((await readdir(join(app, 'ssh'))).sort(), ['vm_rsa', 'vm_rsa.pub']);
    // Every command above read them.
    for (const [name, text] of goFiles)
      assert.equal(await readFile(join(app, 'vms', `${name}.json`), 'utf8'), text, name);
  });
});
