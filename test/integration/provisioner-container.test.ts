import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, copyFile, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { run, which, type Runner } from '../../src/core/exec.js';
import { defaultLabConfig } from '../../src/lab/config.js';
import {
  containerLogs,
  containerStatus,
  describeState,
  dockerRunOptions,
  stackEnv,
  startContainer,
  stopContainer,
  type ContainerRecord,
  type GuestPaths,
  type ProvisionerSession,
} from '../../src/provisioner/container.js';
import { createNetns, deleteNetns } from '../helpers/netns.js';

/**
 * The remote scripts run for real, against a real engine: the very text pvmlab sends over SSH
 * runs here under `sh -c` (as sshd would run it), with a `docker` that is podman (runc, its own
 * storage under a temp dir, inside a network namespace of this test) and a `sudo` that only
 * runs its command (we are root already). The images are tiny busybox ones made here.
 */
describe('provisioner container control against a real engine', { timeout: 300_000 }, () => {
  const tag = `pvmlab-ct-${process.pid}`;
  const name = `${tag}-stack`;
  const image = `localhost/${tag}:latest`;
  let dir: string;
  let ns: string;
  let shims: string;
  let podmanArgs: string[];
  let paths: GuestPaths;
  let tars: { a: string; b: string; broken: string; corrupt: string };
  const imageIds: Record<string, string> = {};
  const session: ProvisionerSession = {
    name: 'prov-test',
    key: '/nonexistent/key',
    target: { host: '127.0.0.1', port: 2222 },
  };

  const podman = (args: string[]) =>
    execFileSync('nsenter', [`--net=/run/netns/${ns}`, 'podman', ...podmanArgs, ...args], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });

  /** A Runner whose `ssh` runs the remote command line here, with `docker` and `sudo` from `bin`. */
  const localRunner =
    (bin: string): Runner =>
    (command, args, options = {}) => {
      if (command !== 'ssh') return run(command, args, options);
      // sshArgv ends with `-- <command line>`: ssh hands that line to the login shell.
      assert.equal(args[args.length - 2], '--', `not an ssh command line: ${args.join(' ')}`);
      return run('sh', ['-c', args[args.length - 1] as string], {
        ...options,
        env: { ...process.env, PATH: `${bin}:${process.env.PATH ?? ''}` },
      });
    };
  let runner: Runner;

  const env = stackEnv(
    {
      name: 'prov-test',
      role: 'provisioner',
      arch: 'x86_64',
      ip: '192.168.100.1',
      subnet: '192.168.100.0/24',
    },
    defaultLabConfig('linux'),
  );
  const options = (networkHost: boolean, privileged: boolean) =>
    dockerRunOptions({ networkHost, privileged }, env, paths);
  const start = (tar: string, flags: [boolean, boolean] = [true, true], r: Runner = runner) =>
    startContainer(r, session, {
      tar,
      hostDockerImages: paths.dockerImages,
      name,
      options: options(...flags),
      paths,
    });
  const ours = async (): Promise<{ now: number; all: ContainerRecord[]; c: ContainerRecord | undefined }> => {
    const s = await containerStatus(runner, session);
    assert.deepEqual(s.unreadable, []);
    const all = s.containers.filter((c) => c.name.startsWith(name));
    return { now: s.now, all, c: all.find((c) => c.name === name) };
  };

  before(async () => {
    for (const tool of ['podman', 'runc', 'nsenter', 'busybox', 'tar'])
      assert.ok(which(tool), `${tool} is missing: run scripts/install-deps.sh --test`);
    dir = await mkdtemp(join(tmpdir(), 'pvmlab-ct-'));
    ns = createNetns('pvct');
    podmanArgs = ['--root', join(dir, 'storage'), '--runroot', join(dir, 'run'), '--runtime', 'runc'];
    paths = {
      dockerImages: join(dir, 'share', 'docker_images'),
      vms: join(dir, 'share', 'vms'),
      images: join(dir, 'share', 'images'),
      stackState: join(dir, 'vm', 'stack'),
    };
    for (const d of [paths.vms, paths.images, join(dir, 'host')]) await mkdir(d, { recursive: true });
    await writeFile(join(paths.vms, 'marker.json'), '{"name":"marker"}\n');

    shims = join(dir, 'bin');
    await mkdir(shims);
    const q = (s: string) => `'${s}'`;
    await writeFile(
      join(shims, 'docker'),
      `#!/bin/sh\nexec nsenter --net=/run/netns/${ns} podman ${podmanArgs.map(q).join(' ')} "$@"\n`,
    );
    await writeFile(join(shims, 'sudo'), '#!/bin/sh\nexec "$@"\n');
    await chmod(join(shims, 'docker'), 0o755);
    await chmod(join(shims, 'sudo'), 0o755);
    runner = localRunner(shims);

    // A root file system of busybox alone; images differ only in what they run.
    const rootfs = join(dir, 'rootfs');
    await mkdir(join(rootfs, 'bin'), { recursive: true });
    await copyFile(which('busybox') as string, join(rootfs, 'bin', 'busybox'));
    await chmod(join(rootfs, 'bin', 'busybox'), 0o755);
    await symlink('busybox', join(rootfs, 'bin', 'sh'));
    execFileSync('tar', ['-C', rootfs, '-cf', join(dir, 'rootfs.tar'), '.']);
    // `exit` on TERM: a shell as PID 1 would ignore it and make every stop wait for SIGKILL.
    const serve = (word: string) =>
      `CMD ["/bin/sh", "-c", "echo ${word} $PROVISIONER_IP; trap 'exit 0' TERM; sleep 1000 & wait"]`;
    const make = (key: string, change: string) => {
      podman(['import', '--change', change, join(dir, 'rootfs.tar'), image]);
      imageIds[key] = podman(['image', 'inspect', '--format', '{{.Id}}', image]).trim();
      const tar = join(dir, 'host', `${key}.tar`);
      podman(['save', '--format', 'docker-archive', '-o', tar, image]);
      podman(['rmi', '-f', image]);
      return tar;
    };
    // All three carry the same tag, as every build of pxeboot_stack does.
    tars = {
      a: make('a', serve('stack-a')),
      b: make('b', serve('stack-b')),
      broken: make('broken', 'CMD ["/bin/no-such-program"]'),
      corrupt: join(dir, 'host', 'corrupt.tar'),
    };
    await writeFile(tars.corrupt, (await readFile(tars.a)).subarray(0, 3000));
    assert.equal(podman(['images', '-q']).trim(), '', 'the engine starts with no images');
  });

  after(async () => {
    if (dir) {
      try {
        podman(['rm', '-fa']);
        podman(['system', 'reset', '-f']);
      } catch {
        /* storage already gone */
      }
    }
    if (ns) deleteNetns(ns);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('start copies the tar into the share, loads it and runs the container with the options given', async () => {
    const r = await start(tars.a);
    assert.equal(r.copied, true);
    assert.equal(r.dest, join(paths.dockerImages, 'a.tar'));
    assert.deepEqual(await readFile(r.dest), await readFile(tars.a));
    assert.equal(r.image, image);
    assert.match(r.id ?? '', /^[0-9a-f]{64}$/);
    assert.equal(r.previous, undefined);
    assert.deepEqual(r.warnings, []);

    const { now, c } = await ours();
    assert.ok(c, 'the container is listed');
    assert.equal(c.id, r.id, 'status names the container start made');
    assert.equal(c.state, 'running');
    assert.equal(c.image, image);
    assert.match(c.imageId, new RegExp(imageIds.a?.replace(/^sha256:/, '') ?? 'x'));
    assert.equal(c.networkMode, 'host');
    assert.equal(c.privileged, true);
    assert.equal(c.restartPolicy, 'unless-stopped');
    assert.match(describeState(c, now), /^Up /);
    assert.ok(c.created && c.startedAt);
    // pvmlab's mounts and environment are there, and the stack's state directory was made.
    assert.equal(
      podman(['exec', name, '/bin/busybox', 'cat', '/mnt/host/vms/marker.json']),
      '{"name":"marker"}\n',
    );
    assert.equal(podman(['exec', name, '/bin/busybox', 'ls', '-d', '/www/images']).trim(), '/www/images');
    assert.ok(existsSync(paths.stackState));
    const logs = await containerLogs(runner, session, { name, follow: false, stdio: 'pipe' });
    assert.equal(logs.code, 0);
    assert.match(logs.stdout, /^stack-a 192\.168\.100\.1\/24$/m);
  });

  test('start with another tar replaces the container; the old one and its image are gone', async () => {
    const before = (await ours()).c;
    // The tar is already in the share: used in place, not copied again.
    await mkdir(paths.dockerImages, { recursive: true });
    const inShare = join(paths.dockerImages, 'b.tar');
    await copyFile(tars.b, inShare);
    const r = await start(inShare, [false, false]);
    assert.equal(r.copied, false);
    assert.equal(r.image, image);
    assert.deepEqual(r.previous, { state: 'running', image });
    assert.deepEqual(r.warnings, []);
    const { all, c } = await ours();
    assert.equal(all.length, 1, `one container left: ${all.map((x) => x.name).join(', ')}`);
    assert.ok(c && before);
    assert.equal(c.state, 'running');
    assert.notEqual(c.created, before.created, 'a new container');
    assert.match(c.imageId, new RegExp(imageIds.b?.replace(/^sha256:/, '') ?? 'x'));
    // Exactly the options given this time: no host network, not privileged.
    assert.notEqual(c.networkMode, 'host');
    assert.equal(c.privileged, false);
    // The replaced image was dangling and has been pruned.
    const ids = podman(['images', '-q', '--no-trunc']);
    assert.ok(!ids.includes(imageIds.a?.replace(/^sha256:/, '') ?? 'x'), ids);
    const logs = await containerLogs(runner, session, { name, follow: false, stdio: 'pipe' });
    assert.match(logs.stdout, /^stack-b /m);
  });

  test('the same tar again: the engine has its image, so it is not loaded again; the container is replaced', async () => {
    const before = (await ours()).c;
    const r = await start(tars.b, [false, false]);
    assert.equal(r.present, true, 'found by the archive manifest, no docker load');
    assert.equal(r.image, image);
    const { all, c } = await ours();
    assert.equal(all.length, 1);
    assert.ok(c && before);
    assert.equal(c.state, 'running');
    assert.notEqual(c.created, before.created, 'a new container');
    assert.match(c.imageId, new RegExp(imageIds.b?.replace(/^sha256:/, '') ?? 'x'));
    // A tar whose image the engine does not have is loaded as before.
    assert.notEqual((await start(tars.a, [false, false])).present, true);
    assert.equal((await start(tars.b, [false, false])).present, undefined);
  });

  test('a corrupt tar fails at load and leaves the running container as it was', async () => {
    const before = (await ours()).c;
    await assert.rejects(start(tars.corrupt), /docker load of .*corrupt\.tar failed, so nothing was changed/);
    const { all, c } = await ours();
    assert.equal(all.length, 1);
    assert.deepEqual(c, before);
  });

  test('a new image whose container does not start gives way to the previous container', async () => {
    const before = (await ours()).c;
    await assert.rejects(
      start(tars.broken, [true, true]),
      (err: Error) =>
        /the new container .* did not start; the previous container is back \(running\)/.test(err.message) &&
        /no-such-program/.test(err.message),
    );
    const { all, c } = await ours();
    assert.equal(all.length, 1, `one container left: ${all.map((x) => x.name).join(', ')}`);
    assert.ok(c && before);
    assert.equal(c.state, 'running');
    assert.equal(c.created, before.created, 'the same container');
    assert.equal(c.imageId, before.imageId);
    assert.equal(c.privileged, false);
  });

  test('logs --follow streams while the container runs; stop stops it and keeps it', async () => {
    let streamed = '';
    let seen: () => void = () => undefined;
    const firstLine = new Promise<void>((res) => (seen = res));
    const following = containerLogs(runner, session, {
      name,
      follow: true,
      stdio: 'pipe',
      onStdout: (d) => {
        streamed += d;
        if (/^stack-b /m.test(streamed)) seen();
      },
    });
    await firstLine;
    assert.deepEqual(await stopContainer(runner, session, name), { was: 'running' });
    // The follow ends with the container.
    const f = await following;
    assert.equal(f.code, 0, f.stderr);
    assert.equal(f.stdout, '', 'passed on, not kept');
    const { now, c } = await ours();
    assert.ok(c, 'still there');
    assert.equal(c.state, 'exited');
    assert.equal(c.exitCode, 0);
    assert.match(describeState(c, now), /^Exited \(0\) (less than a second|\d+ seconds?) ago$/);
    assert.deepEqual(await stopContainer(runner, session, name), { was: 'exited' });
    const logs = await containerLogs(runner, session, { name, follow: false, stdio: 'pipe' });
    assert.match(logs.stdout, /^stack-b /m);
    await assert.rejects(
      stopContainer(runner, session, `${tag}-none`),
      /there is no container 'pvmlab-ct-\d+-none'/,
    );
    await assert.rejects(
      containerLogs(runner, session, { name: `${tag}-none`, follow: false, stdio: 'pipe' }),
      /there is no container/,
    );
  });

  test('start replaces a stopped container too', async () => {
    const r = await start(tars.a);
    assert.deepEqual(r.previous, { state: 'exited', image });
    const { all, c } = await ours();
    assert.equal(all.length, 1);
    assert.equal(c?.state, 'running');
    assert.equal(c?.networkMode, 'host');
  });

  test('the provisioner does not see the tar: a clear error, nothing changed', async () => {
    const before = (await ours()).c;
    const elsewhere = join(dir, 'not-shared');
    const tar = join(dir, 'host', 'unshared.tar');
    await copyFile(tars.b, tar);
    await assert.rejects(
      startContainer(runner, session, {
        tar,
        hostDockerImages: elsewhere,
        name,
        options: options(true, true),
        paths,
      }),
      /does not see .*\/unshared\.tar: its docker_images share \(.*not-shared on this host\) is not mounted/,
    );
    assert.deepEqual((await ours()).c, before);
  });

  test('an engine that does not answer is "not ready yet"', async () => {
    // A real client whose service is not there (as in a VM where it has not started yet).
    const noDaemon = join(dir, 'bin-nodaemon');
    await mkdir(noDaemon);
    await writeFile(
      join(noDaemon, 'docker'),
      `#!/bin/sh\nexec podman --remote --url unix://${join(dir, 'no-service.sock')} "$@"\n`,
    );
    await chmod(join(noDaemon, 'docker'), 0o755);
    await copyFile(join(shims, 'sudo'), join(noDaemon, 'sudo'));
    const r = localRunner(noDaemon);
    await assert.rejects(
      containerStatus(r, session),
      /container engine in the provisioner 'prov-test' is not ready yet/,
    );
    await assert.rejects(start(tars.a, [true, true], r), /not ready yet[\s\S]*no-service\.sock/);
  });
});
