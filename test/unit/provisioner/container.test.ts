import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { EXIT_USAGE, PvmlabError, UsageError } from '../../../src/core/errors.js';
import type { RunResult } from '../../../src/core/exec.js';
import type { VmDefinition } from '../../../src/core/vmdef.js';
import { defaultLabConfig } from '../../../src/lab/config.js';
import {
  CONTAINER_SCRIPT,
  LOADED_IMAGE_FN,
  PREVIOUS_SUFFIX,
  SCRIPT_EXIT,
  STATUS_FORMAT,
  shQuote,
} from '../../../src/provisioner/container-script.js';
import {
  GUEST_PATHS,
  checkHostTar,
  chooseTar,
  containerLogs,
  containerStatus,
  copyTarToShare,
  describeState,
  dockerRunOptions,
  humanDuration,
  logsCommand,
  parseStartReport,
  parseStatusOutput,
  scriptCommand,
  scriptFailure,
  scriptLines,
  sessionArgv,
  stackEnv,
  startArgs,
  startContainer,
  stopContainer,
  validateContainerName,
  type ContainerRecord,
  type ProvisionerSession,
} from '../../../src/provisioner/container.js';
import { fakeRunner } from '../../helpers/runner.js';

const sh = promisify(execFile);

const session: ProvisionerSession = {
  name: 'prov',
  key: '/home/u/.pvmlab/ssh/vm_key',
  target: { host: '127.0.0.1', port: 40022 },
};

const prov: VmDefinition = {
  name: 'prov',
  role: 'provisioner',
  arch: 'x86_64',
  ip: '192.168.100.1',
  subnet: '192.168.100.0/24',
  ssh_port: 40022,
};

function result(code: number | null, stdout = '', stderr = '', extra: Partial<RunResult> = {}): RunResult {
  return { command: 'ssh', args: [], code, signal: null, stdout, stderr, timedOut: false, ...extra };
}

/** What a real sh makes of a command line: its words, one per element. */
async function words(line: string): Promise<string[]> {
  const { stdout } = await sh('sh', ['-c', `for w in ${line}; do printf '%s\\0' "$w"; done`]);
  return stdout.split('\0').slice(0, -1);
}

describe('validateContainerName', () => {
  it("accepts docker's names", () => {
    for (const n of ['pxeboot_stack', 'a', 'Stack-2.test', '0abc']) assert.equal(validateContainerName(n), n);
  });
  it('refuses others with a usage error', () => {
    for (const n of ['', '-x', '_x', 'a b', 'a/b', "it's", 'x'.repeat(129), `a${PREVIOUS_SUFFIX}`, 'a\nb']) {
      assert.throws(
        () => validateContainerName(n),
        (e: unknown) => e instanceof UsageError && e.exitCode === EXIT_USAGE,
        JSON.stringify(n),
      );
    }
  });
});

describe('chooseTar', () => {
  it('takes the argument or --docker-tar, or both when they name one file', () => {
    assert.equal(chooseTar('a.tar', undefined), 'a.tar');
    assert.equal(chooseTar(undefined, 'b.tar'), 'b.tar');
    assert.equal(chooseTar('./x/a.tar', 'x/a.tar'), './x/a.tar');
  });
  it('refuses none, two different ones, and control characters', () => {
    assert.throws(() => chooseTar(undefined, undefined), /give the image tar to start/);
    assert.throws(() => chooseTar('', undefined), UsageError);
    assert.throws(() => chooseTar('a.tar', 'b.tar'), /two different tars given/);
    assert.throws(() => chooseTar('dir/a\u001b[2J.tar', undefined), /control characters/);
  });
});

describe('stackEnv', () => {
  const lab = defaultLabConfig('linux');
  it("gives the provisioner's address with its prefix and the lab's DHCP pool", () => {
    assert.deepEqual(stackEnv(prov, lab), [
      ['PROVISIONER_IP', '192.168.100.1/24'],
      ['DHCP_RANGE_START', '192.168.100.100'],
      ['DHCP_RANGE_END', '192.168.100.200'],
    ]);
  });
  it("takes the prefix from the lab's subnet when the definition has none", () => {
    const { subnet: _s, ...noSubnet } = prov;
    const env = stackEnv(noSubnet, { ...lab, subnet: '192.168.100.0/23' });
    assert.deepEqual(env[0], ['PROVISIONER_IP', '192.168.100.1/23']);
  });
  it("adds the IPv6 side: address with prefix, the lab's DHCPv6 pool", () => {
    const v6 = { ...prov, ipv6: 'fd00:cafe:babe::1', subnetv6: 'fd00:cafe:babe::/64' };
    assert.deepEqual(stackEnv(v6, { ...lab, subnetv6: 'fd00:cafe:babe::/64' }).slice(3), [
      ['PROVISIONER_IPV6', 'fd00:cafe:babe::1/64'],
      ['DHCP_RANGE_V6_START', 'fd00:cafe:babe::1:0'],
      ['DHCP_RANGE_V6_END', 'fd00:cafe:babe::1:ffff'],
    ]);
    // A lab without subnetv6: the same pool in the provisioner's own subnet.
    assert.deepEqual(stackEnv(v6, lab).slice(4), [
      ['DHCP_RANGE_V6_START', 'fd00:cafe:babe::1:0'],
      ['DHCP_RANGE_V6_END', 'fd00:cafe:babe::1:ffff'],
    ]);
  });
  it('fails clearly for a provisioner without an address', () => {
    const { ip: _ip, ...noIp } = prov;
    assert.throws(() => stackEnv(noIp, lab), /the provisioner 'prov' has no ip in its definition/);
  });
});

describe('dockerRunOptions', () => {
  const env: [string, string][] = [['PROVISIONER_IP', '192.168.100.1/24']];
  const tail = [
    '--restart',
    'unless-stopped',
    '--pull',
    'never',
    '-e',
    'PROVISIONER_IP=192.168.100.1/24',
    '-v',
    '/mnt/host/vms:/mnt/host/vms',
    '-v',
    '/mnt/host/images:/www/images',
    '-v',
    '/var/lib/pvmlab/stack:/var/lib/pvmlab/stack',
  ];
  it("passes exactly the user's flags, then pvmlab's own", () => {
    assert.deepEqual(dockerRunOptions({ networkHost: true, privileged: true }, env), [
      '--network',
      'host',
      '--privileged',
      ...tail,
    ]);
    assert.deepEqual(dockerRunOptions({ networkHost: false, privileged: true }, env), [
      '--privileged',
      ...tail,
    ]);
    assert.deepEqual(dockerRunOptions({ networkHost: true, privileged: false }, env), [
      '--network',
      'host',
      ...tail,
    ]);
    assert.deepEqual(dockerRunOptions({ networkHost: false, privileged: false }, env), tail);
  });
  it('mounts from the guest paths given', () => {
    const o = dockerRunOptions({ networkHost: false, privileged: false }, [], {
      ...GUEST_PATHS,
      vms: '/t/vms',
      images: '/t/img',
      stackState: '/t/st',
    });
    assert.deepEqual(o.slice(-6), [
      '-v',
      '/t/vms:/mnt/host/vms',
      '-v',
      '/t/img:/www/images',
      '-v',
      '/t/st:/var/lib/pvmlab/stack',
    ]);
  });
});

describe('remote command lines', () => {
  it('scriptCommand quotes every word so the remote shell reads them back unchanged', async () => {
    const args = ['--tar', "/mnt/host/docker_images/it's a $HOME `x`.tar", '--', '-e', 'A=b c;d'];
    const line = scriptCommand('start', args);
    assert.match(line, /^'sudo' 'sh' '-s' '--' 'start' /);
    assert.deepEqual(await words(line), ['sudo', 'sh', '-s', '--', 'start', ...args]);
  });
  it('startArgs: the tar, the name, the directory to make, then the run options', () => {
    assert.deepEqual(
      startArgs('/mnt/host/docker_images/p.tar', 'pxeboot_stack', ['--privileged'], GUEST_PATHS),
      [
        '--tar',
        '/mnt/host/docker_images/p.tar',
        '--name',
        'pxeboot_stack',
        '--mkdir',
        '/var/lib/pvmlab/stack',
        '--',
        '--privileged',
      ],
    );
  });
  it('logsCommand', async () => {
    assert.deepEqual(await words(logsCommand('pxeboot_stack', false)), [
      'sudo',
      'docker',
      'logs',
      'pxeboot_stack',
    ]);
    assert.deepEqual(await words(logsCommand('x', true)), ['sudo', 'docker', 'logs', '--follow', 'x']);
  });
  it('sessionArgv: batch-mode ssh to the forwarded port, the command line last; -t on request', () => {
    const a = sessionArgv(session, 'echo hi');
    assert.deepEqual(a.slice(-3), ['ubuntu@127.0.0.1', '--', 'echo hi']);
    assert.ok(a.join(' ').includes('-o BatchMode=yes'));
    assert.ok(a.join(' ').includes('-p 40022'));
    assert.ok(a.join(' ').includes(`-i ${session.key}`));
    assert.notEqual(a[0], '-t');
    assert.equal(sessionArgv(session, 'x', true)[0], '-t');
  });
});

describe('the container script', () => {
  it('is POSIX sh that shellcheck passes', async () => {
    await sh('sh', ['-n', '-c', CONTAINER_SCRIPT]);
    const dir = await mkdtemp(join(tmpdir(), 'pvmlab-script-'));
    try {
      await writeFile(join(dir, 'container.sh'), CONTAINER_SCRIPT);
      await sh('shellcheck', ['-s', 'sh', '-S', 'warning', join(dir, 'container.sh')]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
  it("finds the image in docker's and podman's load output", async () => {
    const loaded = async (output: string) =>
      (await sh('sh', ['-c', `${LOADED_IMAGE_FN}\nloaded_image "$1"`, 'sh', output])).stdout;
    // docker, replacing an image of the same tag
    assert.equal(
      await loaded(
        'The image pxeboot_stack:latest already exists, renaming the old one with ID sha256:aa to empty string\r\n' +
          'Loaded image: pxeboot_stack:latest\n',
      ),
      'pxeboot_stack:latest',
    );
    // docker, an untagged image
    assert.equal(await loaded('Loaded image ID: sha256:0123abcd\n'), 'sha256:0123abcd');
    // podman 4, after its progress lines; older podman's list
    assert.equal(
      await loaded('Getting image source signatures\nCopying blob sha256:db\nLoaded image: localhost/x:1\n'),
      'localhost/x:1',
    );
    assert.equal(await loaded('Loaded image(s): localhost/a:1,localhost/b:2\n'), 'localhost/a:1');
    // several tags: the first
    assert.equal(await loaded('Loaded image: a:1\nLoaded image: a:2\n'), 'a:1');
    assert.equal(await loaded('open /x.tar: no such file\n'), '');
  });
  it('carries the status template and the exit codes', () => {
    assert.ok(CONTAINER_SCRIPT.includes(`STATUS_FORMAT=${shQuote(STATUS_FORMAT)}`));
    for (const code of Object.values(SCRIPT_EXIT))
      assert.ok(CONTAINER_SCRIPT.includes(` ${code}`), String(code));
  });
  it('refuses an unknown action or missing arguments with its usage code, before touching docker', async () => {
    // execFile cannot feed stdin: the same text with -c, the same arguments.
    const runC = (args: string[]) =>
      sh('/bin/sh', ['-c', CONTAINER_SCRIPT, 'pvmlab', ...args], { env: { PATH: '/usr/bin:/bin' } }).then(
        () => 0,
        (e: { code: number }) => e.code,
      );
    assert.equal(await runC(['frobnicate']), SCRIPT_EXIT.usage);
    assert.equal(await runC([]), SCRIPT_EXIT.usage);
    assert.equal(await runC(['start', '--name', 'x']), SCRIPT_EXIT.usage);
    assert.equal(await runC(['start', '--tar']), SCRIPT_EXIT.usage);
    assert.equal(await runC(['stop']), SCRIPT_EXIT.usage);
    assert.equal(await runC(['status', 'extra']), SCRIPT_EXIT.usage);
  });
});

describe('parsers', () => {
  it('scriptLines splits word and text', () => {
    assert.deepEqual(scriptLines('loaded a:b\r\n\nstarted\nwarning two words\n'), [
      { word: 'loaded', text: 'a:b' },
      { word: 'started', text: '' },
      { word: 'warning', text: 'two words' },
    ]);
  });
  it('parseStartReport', () => {
    assert.deepEqual(
      parseStartReport(
        'loaded pxeboot_stack:latest\nprevious running pxeboot_stack:old\nstarted 0123abc\nwarning could not prune: x\n',
      ),
      {
        image: 'pxeboot_stack:latest',
        previous: { state: 'running', image: 'pxeboot_stack:old' },
        id: '0123abc',
        warnings: ['could not prune: x'],
      },
    );
    assert.deepEqual(parseStartReport('loaded x\nrestored exited\n'), {
      image: 'x',
      restored: 'exited',
      warnings: [],
    });
    assert.deepEqual(parseStartReport(''), { warnings: [] });
  });

  // What docker (strings, `/name`) and podman (time values, bare name) print for STATUS_FORMAT.
  const dockerLine =
    'container {"id":"0123456789abcdef","name":"/pxeboot_stack","image":"pxeboot_stack:latest","imageId":"sha256:aa","state":"running","exitCode":0,' +
    '"created":"2024-05-01T10:00:00.123456789Z","startedAt":"2024-05-01T10:00:01.5Z","finishedAt":"0001-01-01T00:00:00Z",' +
    '"restartPolicy":"unless-stopped","restartCount":0,"networkMode":"host","privileged":true}';
  const podmanLine =
    'container {"id":"fedcba","name":"other","image":"localhost/x:1","imageId":"bb","state":"exited","exitCode":137,' +
    '"created":"2024-05-01T09:00:00.1+02:00","startedAt":"2024-05-01T09:00:01Z","finishedAt":"2024-05-01T10:00:00Z",' +
    '"restartPolicy":"","restartCount":2,"networkMode":"bridge","privileged":false}';

  it('parseStatusOutput reads both engines, sorted by name; zero times are null', () => {
    const s = parseStatusOutput(`now 1714557600\n${podmanLine}\n${dockerLine}\n`);
    assert.equal(s.now, 1714557600);
    assert.deepEqual(s.unreadable, []);
    assert.deepEqual(
      s.containers.map((c) => [c.id, c.name, c.state, c.startedAt, c.finishedAt]),
      [
        ['fedcba', 'other', 'exited', '2024-05-01T09:00:01Z', '2024-05-01T10:00:00Z'],
        ['0123456789abcdef', 'pxeboot_stack', 'running', '2024-05-01T10:00:01.5Z', null],
      ],
    );
    assert.equal(s.containers[1]?.privileged, true);
  });
  it('keeps lines it cannot read aside, and needs the time line', () => {
    const s = parseStatusOutput(
      'now 5\ncontainer {not json\ncontainer {"name":"x"}\ncontainer {"id":"c","name":"x","image":"i","imageId":"","state":"running","exitCode":0,' +
        '"created":"yesterday","startedAt":"","finishedAt":"","restartPolicy":"","restartCount":0,"networkMode":"","privileged":false}\n',
    );
    assert.equal(s.containers.length, 0);
    assert.equal(s.unreadable.length, 3);
    assert.throws(() => parseStatusOutput(dockerLine), PvmlabError);
  });
  it('parseStatusOutput with no containers', () => {
    assert.deepEqual(parseStatusOutput('now 7\n'), { now: 7, containers: [], unreadable: [] });
  });
});

describe('describeState and humanDuration', () => {
  const base: ContainerRecord = {
    id: 'c1',
    name: 'x',
    image: 'i',
    imageId: 'id',
    state: 'running',
    exitCode: 0,
    created: '2024-05-01T10:00:00Z',
    startedAt: '2024-05-01T10:00:00Z',
    finishedAt: null,
    restartPolicy: 'unless-stopped',
    restartCount: 0,
    networkMode: 'host',
    privileged: true,
  };
  const t0 = Date.parse('2024-05-01T10:00:00Z') / 1000;
  it('words durations as docker does', () => {
    assert.equal(humanDuration(0.5), 'less than a second');
    assert.equal(humanDuration(1), '1 second');
    assert.equal(humanDuration(59), '59 seconds');
    assert.equal(humanDuration(60), '1 minute');
    assert.equal(humanDuration(3599), '59 minutes');
    assert.equal(humanDuration(7200), '2 hours');
    assert.equal(humanDuration(47 * 3600), '47 hours');
    assert.equal(humanDuration(3 * 86400), '3 days');
    assert.equal(humanDuration(-5), 'less than a second');
  });
  it('describes each state from the fields', () => {
    assert.equal(describeState(base, t0 + 180), 'Up 3 minutes');
    assert.equal(describeState({ ...base, state: 'paused' }, t0 + 5), 'Up 5 seconds (paused)');
    const exited = { ...base, state: 'exited', exitCode: 137, finishedAt: '2024-05-01T11:00:00Z' };
    assert.equal(describeState(exited, t0 + 3 * 3600), 'Exited (137) 2 hours ago');
    assert.equal(describeState({ ...exited, finishedAt: null }, t0), 'Exited (137)');
    assert.equal(describeState({ ...base, state: 'created', startedAt: null }, t0), 'Created');
    assert.equal(
      describeState({ ...exited, state: 'restarting' }, t0 + 3660),
      'Restarting (137) 1 minute ago',
    );
    assert.equal(describeState({ ...base, state: 'dead' }, t0), 'Dead');
    assert.equal(describeState({ ...base, startedAt: null }, t0), 'Up');
  });
});

describe('scriptFailure', () => {
  const msg = (code: number | null, stdout = '', stderr = 'engine says no', extra: Partial<RunResult> = {}) =>
    scriptFailure(session, result(code, stdout, stderr, extra), {
      tarInGuest: '/mnt/host/docker_images/p.tar',
      hostDir: '/home/u/.pvmlab/docker_images',
      name: 'pxeboot_stack',
      image: 'pxeboot_stack:latest',
    }).message;
  it("words each of the script's failures, with the engine's own message under it", () => {
    assert.match(
      msg(255, '', 'ssh: connect to host 127.0.0.1 port 40022: Connection refused'),
      /cannot reach the provisioner 'prov' over SSH; 'pvmlab vm shell prov' shows why:\nssh: connect/,
    );
    assert.match(
      msg(SCRIPT_EXIT.engineNotReady),
      /^the container engine in the provisioner 'prov' is not ready yet .*:\nengine says no$/s,
    );
    assert.match(
      msg(SCRIPT_EXIT.noTar),
      /does not see \/mnt\/host\/docker_images\/p\.tar: its docker_images share \(\/home\/u\/\.pvmlab\/docker_images on this host\) is not mounted/,
    );
    assert.match(
      msg(SCRIPT_EXIT.loadFailed),
      /docker load of \/mnt\/host\/docker_images\/p\.tar failed, so nothing was changed/,
    );
    assert.match(msg(SCRIPT_EXIT.noImageName), /named no image, so nothing was changed/);
    assert.match(
      msg(SCRIPT_EXIT.setAsideFailed),
      /could not stop the container 'pxeboot_stack' to replace it; it was left as it was/,
    );
    assert.match(
      msg(SCRIPT_EXIT.runFailedRestored, 'loaded x\nprevious running y\nrestored running\n'),
      /the new container 'pxeboot_stack' \(pxeboot_stack:latest\) did not start; the previous container is back \(running\)/,
    );
    assert.match(msg(SCRIPT_EXIT.runFailed, 'loaded x\n'), /did not start:\nengine says no$/);
    assert.match(
      msg(SCRIPT_EXIT.runFailed, 'loaded x\nprevious running y\n'),
      /could not be brought back: it is kept as 'pxeboot_stack\.pvmlab-previous'/,
    );
    assert.match(
      msg(SCRIPT_EXIT.noContainer, '', ''),
      /^there is no container 'pxeboot_stack' in the provisioner 'prov'$/,
    );
    assert.match(msg(SCRIPT_EXIT.engineFailed), /docker failed in the provisioner 'prov'/);
    assert.match(
      msg(1, '', 'sudo: a password is required'),
      /the command in the provisioner 'prov' exited 1:\nsudo: a password is required/,
    );
    assert.match(msg(null, '', '', { signal: 'SIGTERM' }), /was killed \(SIGTERM\)/);
    assert.match(msg(null, '', '', { timedOut: true }), /timed out/);
  });
  it('keeps only the last lines of a long error', () => {
    const long = Array.from({ length: 20 }, (_, i) => `line ${i}`).join('\n');
    const m = msg(SCRIPT_EXIT.engineFailed, '', long);
    assert.ok(!m.includes('line 14\n') && m.includes('line 15') && m.endsWith('line 19'));
  });
});

describe('tar on the host', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'pvmlab-tar-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('checkHostTar: a missing file or a directory is a usage error', async () => {
    await assert.rejects(
      checkHostTar(join(dir, 'nope.tar')),
      (e: unknown) => e instanceof UsageError && /no such file/.test(e.message),
    );
    await assert.rejects(
      checkHostTar(dir),
      (e: unknown) => e instanceof UsageError && /is not a file/.test(e.message),
    );
  });

  it('copyTarToShare copies through a temp name, and leaves the file in place alone', async () => {
    const tar = join(dir, 'p.tar');
    await writeFile(tar, 'image bytes');
    const share = join(dir, 'share', 'docker_images');
    assert.deepEqual(await copyTarToShare(tar, share), { dest: join(share, 'p.tar'), copied: true });
    assert.equal(await readFile(join(share, 'p.tar'), 'utf8'), 'image bytes');
    // A newer build replaces the copy.
    await writeFile(tar, 'newer bytes');
    assert.equal((await copyTarToShare(tar, share)).copied, true);
    assert.equal(await readFile(join(share, 'p.tar'), 'utf8'), 'newer bytes');
    // The file in the share itself: nothing to copy.
    assert.deepEqual(await copyTarToShare(join(share, 'p.tar'), share), {
      dest: join(share, 'p.tar'),
      copied: false,
    });
    assert.deepEqual(await readdir(share), ['p.tar'], 'no temp files left');
  });

  it('copyTarToShare: a share that cannot be made fails with its name, leaving nothing', async () => {
    const tar = join(dir, 'q.tar');
    await writeFile(tar, 'x');
    await writeFile(join(dir, 'file'), '');
    await assert.rejects(copyTarToShare(tar, join(dir, 'file', 'sub')), /cannot create .*file\/sub/);
  });
});

describe('operations over a recorded SSH session', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'pvmlab-ops-'));
    await mkdir(join(dir, 'host'));
    await writeFile(join(dir, 'host', 'pxeboot_stack.tar'), 'tar');
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('startContainer: copies, then runs the start script once, with the script on stdin', async () => {
    const inputs: (string | undefined)[] = [];
    const { runner, calls } = fakeRunner(() => ({ stdout: 'loaded pxeboot_stack:latest\nstarted abc\n' }));
    const r = await startContainer(
      (c, a, o) => {
        inputs.push(o?.input);
        return runner(c, a, o);
      },
      session,
      {
        tar: join(dir, 'host', 'pxeboot_stack.tar'),
        hostDockerImages: join(dir, 'share'),
        name: 'pxeboot_stack',
        options: ['--privileged'],
      },
    );
    assert.equal(r.image, 'pxeboot_stack:latest');
    assert.equal(r.id, 'abc');
    assert.equal(calls.length, 1);
    assert.ok(calls[0]?.startsWith('ssh '));
    assert.ok(
      calls[0]?.endsWith(
        `-- ${scriptCommand('start', startArgs('/mnt/host/docker_images/pxeboot_stack.tar', 'pxeboot_stack', ['--privileged'], GUEST_PATHS))}`,
      ),
      calls[0],
    );
    assert.deepEqual(inputs, [CONTAINER_SCRIPT]);
  });

  it('startContainer: a missing tar is a usage error before anything runs or is written', async () => {
    const { runner, calls } = fakeRunner();
    await assert.rejects(
      startContainer(runner, session, {
        tar: join(dir, 'host', 'missing.tar'),
        hostDockerImages: join(dir, 'share2'),
        name: 'pxeboot_stack',
        options: [],
      }),
      UsageError,
    );
    assert.deepEqual(calls, []);
    await assert.rejects(readdir(join(dir, 'share2')), /ENOENT/);
  });

  it("startContainer: the script's failure becomes pvmlab's message", async () => {
    const { runner } = fakeRunner(() => ({ code: SCRIPT_EXIT.loadFailed, stderr: 'unexpected EOF' }));
    await assert.rejects(
      startContainer(runner, session, {
        tar: join(dir, 'host', 'pxeboot_stack.tar'),
        hostDockerImages: join(dir, 'share'),
        name: 'pxeboot_stack',
        options: [],
      }),
      /docker load of \/mnt\/host\/docker_images\/pxeboot_stack\.tar failed, so nothing was changed[\s\S]*unexpected EOF/,
    );
  });

  it('stop, status and logs send their actions', async () => {
    const { runner, calls } = fakeRunner((line) =>
      line.includes("'stop'")
        ? { stdout: 'was running\n' }
        : line.includes("'status'")
          ? { stdout: 'now 1\n' }
          : {},
    );
    assert.deepEqual(await stopContainer(runner, session, 'pxeboot_stack'), { was: 'running' });
    assert.deepEqual(await containerStatus(runner, session), { now: 1, containers: [], unreadable: [] });
    await containerLogs(runner, session, { name: 'pxeboot_stack', follow: true, stdio: 'pipe' });
    assert.equal(calls.length, 4);
    assert.ok(calls[0]?.endsWith(`-- ${scriptCommand('stop', ['pxeboot_stack'])}`));
    assert.ok(calls[1]?.endsWith(`-- ${scriptCommand('status')}`));
    assert.ok(calls[2]?.endsWith(`-- ${scriptCommand('check', ['pxeboot_stack'])}`));
    assert.ok(calls[3]?.endsWith(`-- ${logsCommand('pxeboot_stack', true)}`));
  });

  it('logs: a missing container is reported before any streaming', async () => {
    const { runner, calls } = fakeRunner(() => ({ code: SCRIPT_EXIT.noContainer }));
    await assert.rejects(
      containerLogs(runner, session, { name: 'nope', follow: false, stdio: 'pipe' }),
      /there is no container 'nope'/,
    );
    assert.equal(calls.length, 1);
  });
});
