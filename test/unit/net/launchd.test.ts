import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PvmlabError } from '../../../src/core/errors.js';
import type { Runner } from '../../../src/core/exec.js';
import {
  DEFAULT_SOCKET_VMNET_PATH,
  LAUNCHD_LABEL,
  LAUNCHD_PLIST_PATH,
  LIBEXEC_DIR,
  LOG_DIR,
  SERVICE_TARGET,
  STATE_DIR,
  WRAPPER_PATH,
  launchctlArgs,
  launchdPlist,
  parseLaunchctlPrint,
  privileged,
  resolveSocketVmnetBinary,
  serviceStart,
  serviceStatus,
  serviceStop,
  setupLaunchd,
  shellQuote,
  socketVmnetWrapperScript,
} from '../../../src/net/launchd.js';
import { fakeRunner, type Reply } from '../../helpers/runner.js';

// What macOS 14 prints for the job while socket_vmnet runs (trimmed of a few jetsam lines).
const PRINT_RUNNING = `system/io.github.pallotron.pvmlab.socket_vmnet = {
\tactive count = 1
\tpath = /Library/LaunchDaemons/io.github.pallotron.pvmlab.socket_vmnet.plist
\ttype = LaunchDaemon
\tstate = running

\tprogram = /opt/pvmlab/libexec/socket_vmnet_wrapper.sh
\targuments = {
\t\t/opt/pvmlab/libexec/socket_vmnet_wrapper.sh
\t}

\tstdout path = /var/log/vmlab.socket_vmnet/stdout
\tstderr path = /var/log/vmlab.socket_vmnet/stderr
\tdefault environment = {
\t\tPATH => /usr/bin:/bin:/usr/sbin:/sbin
\t}

\tenvironment = {
\t\tXPC_SERVICE_NAME => io.github.pallotron.pvmlab.socket_vmnet
\t}

\tdomain = system
\tusername = root
\tminimum runtime = 10
\texit timeout = 5
\truns = 1
\tpid = 48213
\timmediate reason = speculative
\tforks = 0
\texecs = 1
\tinitialized = 1
\ttrampolined = 1
\tstarted suspended = 0
\tproxy enabled = 0
\tlast exit code = (never exited)

\tspawn type = interactive (4)
\tjetsam priority = 40
\tjetsam memory limit (active) = (unlimited)
\tjetsam memory limit (inactive) = (unlimited)
\tjetsamproperties category = daemon
\tcpumon = default
\tjob state = running
\tprobabilistic guard malloc policy = {
\t\tactivation rate = 1/1000
\t\tsample rate = 1/0
\t}

\tproperties = keepalive | runatload | inferred program
}
`;

// Loaded, but the wrapper keeps exiting (e.g. socket_vmnet missing) and KeepAlive waits to respawn it.
const PRINT_NOT_RUNNING = `system/io.github.pallotron.pvmlab.socket_vmnet = {
\tactive count = 0
\tpath = /Library/LaunchDaemons/io.github.pallotron.pvmlab.socket_vmnet.plist
\ttype = LaunchDaemon
\tstate = spawn scheduled

\tprogram = /opt/pvmlab/libexec/socket_vmnet_wrapper.sh
\targuments = {
\t\t/opt/pvmlab/libexec/socket_vmnet_wrapper.sh
\t}

\tdomain = system
\tusername = root
\tminimum runtime = 10
\texit timeout = 5
\truns = 14
\tlast exit code = 1

\tspawn type = interactive (4)
\tjob state = exited
\tproperties = keepalive | runatload | inferred program
}
`;

const NOT_FOUND = {
  code: 113,
  stderr: `Bad request.\nCould not find service "${LAUNCHD_LABEL}" in domain for system\n`,
};
const BOOTSTRAP_5 = {
  code: 5,
  stderr: 'Bootstrap failed: 5: Input/output error\nTry re-running the command as root for richer errors.\n',
};

// ---------------------------------------------------------------------------------------------------------
// Contracts

test('label and paths keep the original contracts', () => {
  assert.equal(LAUNCHD_LABEL, 'io.github.pallotron.pvmlab.socket_vmnet');
  assert.equal(LAUNCHD_PLIST_PATH, '/Library/LaunchDaemons/io.github.pallotron.pvmlab.socket_vmnet.plist');
  assert.equal(WRAPPER_PATH, '/opt/pvmlab/libexec/socket_vmnet_wrapper.sh');
  assert.equal(LIBEXEC_DIR, '/opt/pvmlab/libexec');
  assert.equal(LOG_DIR, '/var/log/vmlab.socket_vmnet');
  assert.equal(STATE_DIR, '/var/run/pvmlab');
  assert.equal(DEFAULT_SOCKET_VMNET_PATH, '/var/run/vmlab.socket_vmnet');
  assert.equal(SERVICE_TARGET, 'system/io.github.pallotron.pvmlab.socket_vmnet');
});

test('launchctl argv builders', () => {
  assert.deepEqual(launchctlArgs.bootstrap(), ['bootstrap', 'system', LAUNCHD_PLIST_PATH]);
  assert.deepEqual(launchctlArgs.bootout(), ['bootout', SERVICE_TARGET]);
  assert.deepEqual(launchctlArgs.bootoutPlist(), ['bootout', 'system', LAUNCHD_PLIST_PATH]);
  assert.deepEqual(launchctlArgs.enable(), ['enable', SERVICE_TARGET]);
  assert.deepEqual(launchctlArgs.disable(), ['disable', SERVICE_TARGET]);
  assert.deepEqual(launchctlArgs.kickstart(), ['kickstart', '-kp', SERVICE_TARGET]);
  assert.deepEqual(launchctlArgs.print(), ['print', SERVICE_TARGET]);
});

test('privileged prefixes sudo only when not root', () => {
  assert.deepEqual(privileged(false, 'launchctl', ['print', 'x']), {
    command: 'sudo',
    args: ['launchctl', 'print', 'x'],
  });
  assert.deepEqual(privileged(true, 'launchctl', ['print', 'x']), {
    command: 'launchctl',
    args: ['print', 'x'],
  });
});

// ---------------------------------------------------------------------------------------------------------
// plist

test('plist has the keys launchd needs, with the right values', () => {
  const xml = launchdPlist();
  assert.ok(xml.startsWith('<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE plist PUBLIC'));
  assert.match(xml, /<plist version="1\.0">\n<dict>\n[\s\S]*\n<\/dict>\n<\/plist>\n$/);
  const pairs = new Map<string, string>();
  for (const m of xml.matchAll(/<key>([^<]+)<\/key>\s*(<string>([^<]*)<\/string>|<(true|false)\/>)/g)) {
    pairs.set(m[1] ?? '', m[3] ?? m[4] ?? '');
  }
  assert.deepEqual(Object.fromEntries(pairs), {
    Label: LAUNCHD_LABEL,
    Program: WRAPPER_PATH,
    RunAtLoad: 'true',
    KeepAlive: 'true',
    UserName: 'root',
    ProcessType: 'Interactive',
    StandardOutPath: '/var/log/vmlab.socket_vmnet/stdout',
    StandardErrorPath: '/var/log/vmlab.socket_vmnet/stderr',
  });
  // Every key is followed by exactly one value, and tags balance.
  assert.equal((xml.match(/<key>/g) ?? []).length, pairs.size);
  for (const tag of ['plist', 'dict', 'key', 'string']) {
    assert.equal(
      (xml.match(new RegExp(`<${tag}[ >]`, 'g')) ?? []).length,
      (xml.match(new RegExp(`</${tag}>`, 'g')) ?? []).length,
      tag,
    );
  }
});

// python3 is on every supported dev and CI machine (.ci/run installs it); its plistlib is a real parser.
test('plist loads with a real plist parser (python plistlib)', () => {
  const script =
    'import json, plistlib, sys; print(json.dumps(plistlib.loads(sys.stdin.buffer.read(), fmt=plistlib.FMT_XML)))';
  const r = spawnSync('python3', ['-c', script], { input: launchdPlist(), encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), {
    Label: LAUNCHD_LABEL,
    Program: WRAPPER_PATH,
    RunAtLoad: true,
    KeepAlive: true,
    UserName: 'root',
    ProcessType: 'Interactive',
    StandardOutPath: '/var/log/vmlab.socket_vmnet/stdout',
    StandardErrorPath: '/var/log/vmlab.socket_vmnet/stderr',
  });
});

// ---------------------------------------------------------------------------------------------------------
// wrapper script

const BREW_BIN = '/opt/homebrew/opt/socket_vmnet/bin/socket_vmnet';

test('wrapper script passes bash -n and has the expected shape', () => {
  const script = socketVmnetWrapperScript(BREW_BIN, DEFAULT_SOCKET_VMNET_PATH);
  const r = spawnSync('bash', ['-n'], { input: script, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.ok(script.startsWith('#!/bin/bash\n'));
  assert.match(script, /^set -euo pipefail$/m);
  assert.match(script, /^STATE_DIR='\/var\/run\/pvmlab'$/m);
  assert.match(script, /^SOCKET_VMNET='\/opt\/homebrew\/opt\/socket_vmnet\/bin\/socket_vmnet'$/m);
  assert.match(script, /^SOCKET_PATH='\/var\/run\/vmlab\.socket_vmnet'$/m);
  assert.match(script, /uuidgen/);
  assert.match(
    script,
    /^exec "\$SOCKET_VMNET" --vmnet-mode=host --vmnet-network-identifier="\$NETWORK_ID" "\$SOCKET_PATH"$/m,
  );
});

test('shellQuote survives quotes and spaces', () => {
  assert.equal(shellQuote("/a b/it's"), `'/a b/it'\\''s'`);
  const r = spawnSync('bash', ['-c', `printf %s ${shellQuote("/a b/it's $HOME")}`], { encoding: 'utf8' });
  assert.equal(r.stdout, "/a b/it's $HOME");
});

test('wrapper runs: persists one uuid and execs socket_vmnet with the host-mode argv', (t) => {
  const dir = mkdtempSync(join(tmpdir(), "pvmlab wrapper '"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const bin = join(dir, 'bin');
  spawnSync('mkdir', ['-p', bin]);
  // uuidgen is a macOS tool: a fake that counts its calls and returns a new id each time.
  writeFileSync(
    join(bin, 'uuidgen'),
    `#!/bin/bash\nn=$(( $(cat "${dir}/count" 2>/dev/null || echo 0) + 1 ))\necho $n > "${dir}/count"\necho "0000000$n-AAAA-BBBB-CCCC-DDDDDDDDDDDD"\n`,
  );
  const fakeDaemon = join(dir, 'socket vmnet');
  writeFileSync(fakeDaemon, '#!/bin/bash\nprintf "%s\\n" "$@"\n');
  chmodSync(join(bin, 'uuidgen'), 0o755);
  chmodSync(fakeDaemon, 0o755);
  const stateDir = join(dir, 'state');
  const scriptPath = join(dir, 'wrapper.sh');
  writeFileSync(scriptPath, socketVmnetWrapperScript(fakeDaemon, '/tmp/x y.sock', stateDir));
  const env = { PATH: `${bin}:/usr/bin:/bin` };

  const first = spawnSync('bash', [scriptPath], { env, encoding: 'utf8' });
  assert.equal(first.status, 0, first.stderr);
  const uuid = '00000001-AAAA-BBBB-CCCC-DDDDDDDDDDDD';
  assert.deepEqual(first.stdout.split('\n'), [
    '--vmnet-mode=host',
    `--vmnet-network-identifier=${uuid}`,
    '/tmp/x y.sock',
    '',
  ]);
  assert.equal(readFileSync(join(stateDir, 'socket_vmnet_network_identifier'), 'utf8'), `${uuid}\n`);

  const second = spawnSync('bash', [scriptPath], { env, encoding: 'utf8' });
  assert.equal(second.stdout, first.stdout, 'a restart reuses the identifier');
  assert.equal(readFileSync(join(dir, 'count'), 'utf8'), '1\n', 'uuidgen ran once');
});

test('wrapper exits 1 with a clear message when socket_vmnet is missing', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'pvmlab-wrapper-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const scriptPath = join(dir, 'wrapper.sh');
  writeFileSync(scriptPath, socketVmnetWrapperScript(join(dir, 'nope'), '/tmp/s', join(dir, 'state')));
  const r = spawnSync('bash', [scriptPath], { encoding: 'utf8' });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /socket_vmnet not found at .*nope.*brew install socket_vmnet/);
});

// ---------------------------------------------------------------------------------------------------------
// binary resolution

test('resolveSocketVmnetBinary: Apple Silicon Homebrew, Intel Homebrew, PATH, else an install hint', () => {
  const intel = '/usr/local/opt/socket_vmnet/bin/socket_vmnet';
  const onPath = () => '/opt/socket_vmnet/bin/socket_vmnet';
  const none = () => undefined;
  assert.equal(
    resolveSocketVmnetBinary({}, () => true, onPath),
    BREW_BIN,
  );
  assert.equal(
    resolveSocketVmnetBinary({}, (p) => p === intel, onPath),
    intel,
  );
  const asked: string[] = [];
  assert.equal(
    resolveSocketVmnetBinary(
      {},
      () => false,
      (c) => (asked.push(c), '/somewhere/socket_vmnet'),
    ),
    '/somewhere/socket_vmnet',
  );
  assert.deepEqual(asked, ['socket_vmnet']);
  assert.throws(
    () => resolveSocketVmnetBinary({}, () => false, none),
    (e: unknown) => e instanceof PvmlabError && /brew install socket_vmnet/.test(e.message),
  );
});

// ---------------------------------------------------------------------------------------------------------
// launchctl print parsing and status

test('parseLaunchctlPrint: running job', () => {
  assert.deepEqual(parseLaunchctlPrint(PRINT_RUNNING), { state: 'running', pid: 48213 });
});

test('parseLaunchctlPrint: loaded but not running', () => {
  assert.deepEqual(parseLaunchctlPrint(PRINT_NOT_RUNNING), { state: 'spawn scheduled' });
});

test('parseLaunchctlPrint ignores same-named keys in nested blocks', () => {
  const text = `system/x = {
\tstate = not running
\tsome block = {
\t\tstate = running
\t\tpid = 1
\t\tinner = {
\t\t\tpid = 2
\t\t}
\t}
}
`;
  assert.deepEqual(parseLaunchctlPrint(text), { state: 'not running' });
});

test('serviceStatus: running, with sudo', async () => {
  const { runner, calls } = fakeRunner(() => ({ stdout: PRINT_RUNNING }));
  assert.deepEqual(await serviceStatus(runner, { isRoot: false }), {
    loaded: true,
    running: true,
    state: 'running',
    pid: 48213,
  });
  assert.deepEqual(calls, [`sudo launchctl print ${SERVICE_TARGET}`]);
});

test('serviceStatus: loaded but not running, as root (no sudo)', async () => {
  const { runner, calls } = fakeRunner(() => ({ stdout: PRINT_NOT_RUNNING }));
  assert.deepEqual(await serviceStatus(runner, { isRoot: true }), {
    loaded: true,
    running: false,
    state: 'spawn scheduled',
  });
  assert.deepEqual(calls, [`launchctl print ${SERVICE_TARGET}`]);
});

test('serviceStatus: a non-zero exit means not loaded', async () => {
  const { runner } = fakeRunner(() => NOT_FOUND);
  assert.deepEqual(await serviceStatus(runner, { isRoot: true }), { loaded: false, running: false });
});

test('serviceStatus: a sudo failure is an error, not "stopped"', async () => {
  const { runner } = fakeRunner(() => ({ code: 1, stderr: 'sudo: a password is required\n' }));
  await assert.rejects(serviceStatus(runner, { isRoot: false }), (e: unknown) => {
    assert.ok(e instanceof PvmlabError);
    assert.match(e.message, /sudo: a password is required/);
    return true;
  });
});

// ---------------------------------------------------------------------------------------------------------
// start / stop

test('serviceStart with sudo: directories, enable, bootstrap', async () => {
  const { runner, calls } = fakeRunner();
  await serviceStart(runner, { isRoot: false });
  assert.deepEqual(calls, [
    'sudo mkdir -p /var/log/vmlab.socket_vmnet',
    'sudo mkdir -p /var/run/pvmlab',
    `sudo launchctl enable ${SERVICE_TARGET}`,
    `sudo launchctl bootstrap system ${LAUNCHD_PLIST_PATH}`,
  ]);
});

test('serviceStart as root: same calls without sudo', async () => {
  const { runner, calls } = fakeRunner();
  await serviceStart(runner, { isRoot: true });
  assert.deepEqual(calls, [
    'mkdir -p /var/log/vmlab.socket_vmnet',
    'mkdir -p /var/run/pvmlab',
    `launchctl enable ${SERVICE_TARGET}`,
    `launchctl bootstrap system ${LAUNCHD_PLIST_PATH}`,
  ]);
});

test('serviceStart: "Bootstrap failed: 5" on a loaded job is success', async () => {
  const { runner, calls } = fakeRunner((line) =>
    line.includes('bootstrap') ? BOOTSTRAP_5 : line.includes(' print ') ? { stdout: PRINT_RUNNING } : {},
  );
  await serviceStart(runner, { isRoot: false });
  assert.deepEqual(calls.slice(-2), [
    `sudo launchctl bootstrap system ${LAUNCHD_PLIST_PATH}`,
    `sudo launchctl print ${SERVICE_TARGET}`,
  ]);
});

test('serviceStart: a bootstrap failure with nothing loaded is an error that points at setup-launchd', async () => {
  const { runner } = fakeRunner((line) =>
    line.includes('bootstrap') ? BOOTSTRAP_5 : line.includes(' print ') ? NOT_FOUND : {},
  );
  await assert.rejects(serviceStart(runner, { isRoot: true }), (e: unknown) => {
    assert.ok(e instanceof PvmlabError);
    assert.match(e.message, /Bootstrap failed: 5/);
    assert.match(e.message, /sudo pvmlab system setup-launchd/);
    return true;
  });
});

test('serviceStart: a failed mkdir stops before launchctl', async () => {
  const { runner, calls } = fakeRunner(() => ({ code: 1, stderr: 'mkdir: /var/log: Permission denied' }));
  await assert.rejects(serviceStart(runner, { isRoot: true }), /failed to create log directory/);
  assert.equal(calls.length, 1);
});

test('serviceStop with sudo: bootout by label, then disable', async () => {
  const { runner, calls } = fakeRunner();
  await serviceStop(runner, { isRoot: false });
  assert.deepEqual(calls, [
    `sudo launchctl bootout ${SERVICE_TARGET}`,
    `sudo launchctl disable ${SERVICE_TARGET}`,
  ]);
});

test('serviceStop: a job that is not loaded is success', async () => {
  const { runner, calls } = fakeRunner((line) =>
    line.includes('bootout')
      ? { code: 3, stderr: 'Boot-out failed: 3: No such process\n' }
      : line.includes(' print ')
        ? NOT_FOUND
        : {},
  );
  await serviceStop(runner, { isRoot: true });
  assert.deepEqual(calls, [
    `launchctl bootout ${SERVICE_TARGET}`,
    `launchctl print ${SERVICE_TARGET}`,
    `launchctl disable ${SERVICE_TARGET}`,
  ]);
});

test('serviceStop: bootout failing while the job stays loaded is an error', async () => {
  const { runner } = fakeRunner((line) =>
    line.includes('bootout')
      ? { code: 36, stderr: 'Boot-out failed: 36: Operation now in progress\n' }
      : line.includes(' print ')
        ? { stdout: PRINT_RUNNING }
        : {},
  );
  await assert.rejects(serviceStop(runner, { isRoot: true }), /failed to stop .*Operation now in progress/);
});

// ---------------------------------------------------------------------------------------------------------
// setup-launchd

function recordingSetup(reply: (line: string) => Reply = () => ({})) {
  const events: string[] = [];
  const files = new Map<string, { data: string; mode: number }>();
  const { runner } = fakeRunner(reply);
  const recordingRunner: Runner = async (command, args, options) => {
    events.push(`run ${[command, ...args].join(' ')}`);
    return runner(command, args, options);
  };
  return {
    events,
    files,
    options: {
      runner: recordingRunner,
      isRoot: true,
      socketVmnetBinary: BREW_BIN,
      writeFile: async (path: string, data: string, mode: number) => {
        events.push(`write ${path} ${mode.toString(8)}`);
        files.set(path, { data, mode });
      },
      mkdir: async (path: string, mode: number) => {
        events.push(`mkdir ${path} ${mode.toString(8)}`);
      },
    },
  };
}

test('setupLaunchd refuses to run without root and touches nothing', async () => {
  const s = recordingSetup();
  await assert.rejects(setupLaunchd({ ...s.options, isRoot: false }), (e: unknown) => {
    assert.ok(e instanceof PvmlabError);
    assert.equal(e.exitCode, 1);
    assert.match(e.message, /must be run as root \(use sudo\)/);
    return true;
  });
  assert.deepEqual(s.events, []);
});

test('setupLaunchd: exact order of file writes and launchctl calls, no sudo', async () => {
  const s = recordingSetup((line) =>
    line.startsWith('launchctl kickstart') ? { stdout: 'service spawned with pid: 4242\n' } : {},
  );
  const steps = await setupLaunchd(s.options);
  assert.deepEqual(s.events, [
    'mkdir /opt/pvmlab/libexec 755',
    'mkdir /var/log/vmlab.socket_vmnet 755',
    `write ${WRAPPER_PATH} 755`,
    `run launchctl bootout system ${LAUNCHD_PLIST_PATH}`,
    `write ${LAUNCHD_PLIST_PATH} 644`,
    `run launchctl enable ${SERVICE_TARGET}`,
    `run launchctl bootstrap system ${LAUNCHD_PLIST_PATH}`,
    `run launchctl kickstart -kp ${SERVICE_TARGET}`,
  ]);
  assert.equal(
    s.files.get(WRAPPER_PATH)?.data,
    socketVmnetWrapperScript(BREW_BIN, DEFAULT_SOCKET_VMNET_PATH),
  );
  assert.equal(s.files.get(LAUNCHD_PLIST_PATH)?.data, launchdPlist());
  assert.ok(steps.every((st) => st.kind === 'done'));
  assert.equal(steps.length, 8);
  assert.match(steps.at(-1)?.message ?? '', /pid 4242/);
});

test('setupLaunchd: bootout errors are ignored and a bootstrap error only warns', async () => {
  const s = recordingSetup((line) =>
    line.startsWith('launchctl bootout')
      ? { code: 5, stderr: 'Boot-out failed: 5: Input/output error' }
      : line.startsWith('launchctl bootstrap')
        ? BOOTSTRAP_5
        : {},
  );
  const steps = await setupLaunchd(s.options);
  const warnings = steps.filter((st) => st.kind === 'warning');
  assert.equal(warnings.length, 1);
  assert.match(warnings[0]?.message ?? '', /bootstrap failed .*already be loaded.*Bootstrap failed: 5/s);
  assert.equal(s.events.at(-1), `run launchctl kickstart -kp ${SERVICE_TARGET}`);
});

test('setupLaunchd: enable and kickstart failures are errors', async () => {
  const enable = recordingSetup((line) => (line.startsWith('launchctl enable') ? { code: 1 } : {}));
  await assert.rejects(setupLaunchd(enable.options), /failed to enable service/);
  assert.equal(enable.events.at(-1), `run launchctl enable ${SERVICE_TARGET}`);

  const kick = recordingSetup((line) =>
    line.startsWith('launchctl kickstart') ? { code: 113, stderr: 'Could not find service' } : {},
  );
  await assert.rejects(setupLaunchd(kick.options), /failed to kickstart service.*Could not find service/);
});

test('setupLaunchd: a failed write is reported with what was being installed', async () => {
  const s = recordingSetup();
  await assert.rejects(
    setupLaunchd({
      ...s.options,
      writeFile: async () => {
        throw new Error('EACCES: permission denied');
      },
    }),
    /failed to install wrapper script: EACCES/,
  );
  assert.ok(!s.events.some((e) => e.startsWith('run ')), 'no launchctl call after a failed install');
});
