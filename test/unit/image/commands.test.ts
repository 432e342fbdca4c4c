import assert from 'node:assert/strict';
import { test } from 'node:test';
import { UsageError } from '../../../src/core/errors.js';
import {
  baseRecipe,
  baseTag,
  chooseEngine,
  engineArgv,
  mmdebstrapArgv,
  parseImageArch,
  probeArgv,
} from '../../../src/image/commands.js';

const usage = (fn: () => unknown, re: RegExp) =>
  assert.throws(
    fn,
    (err: unknown) => err instanceof UsageError && err.exitCode === 2 && re.test(err.message),
  );

test('ARCH: amd64 or arm64 (the kernel and Node names too); unset is the host', () => {
  assert.equal(parseImageArch(undefined, 'x64'), 'amd64');
  assert.equal(parseImageArch('', 'arm64'), 'arm64');
  assert.equal(parseImageArch('arm64', 'x64'), 'arm64');
  assert.equal(parseImageArch('aarch64', 'x64'), 'arm64');
  assert.equal(parseImageArch('x86_64', 'arm64'), 'amd64');
  usage(() => parseImageArch('riscv64'), /^ARCH=riscv64 is not an image architecture: use amd64 or arm64$/);
  usage(
    () => parseImageArch(undefined, 's390x'),
    /this host's architecture \(s390x\) has no pxeboot_stack image: set ARCH=/,
  );
});

test('the engine: docker only when its daemon answers, else podman; ENGINE insists', () => {
  assert.equal(chooseEngine(undefined, { docker: true, podman: true }), 'docker');
  assert.equal(chooseEngine('', { docker: false, podman: true }), 'podman');
  assert.equal(chooseEngine('podman', { docker: true, podman: true }), 'podman');
  assert.equal(chooseEngine('docker', { docker: true, podman: false }), 'docker');
  usage(
    () => chooseEngine(undefined, { docker: false, podman: false }),
    /^no container engine: `docker info` fails/,
  );
  usage(
    () => chooseEngine('docker', { docker: false, podman: true }),
    /ENGINE=docker, but `docker info` fails/,
  );
  usage(
    () => chooseEngine('podman', { docker: true, podman: false }),
    /ENGINE=podman, but podman is not installed/,
  );
  usage(
    () => chooseEngine('buildah', { docker: true, podman: true }),
    /^ENGINE=buildah is not supported: use docker or podman$/,
  );
  // "docker exists" means its daemon answers, not that a client is installed.
  assert.deepEqual(probeArgv('docker'), ['info', '--format', '{{.ServerVersion}}']);
  assert.deepEqual(probeArgv('podman'), ['--version']);
});

test('the base: a recipe, a tag that changes with it, the mmdebstrap command line', () => {
  const r = baseRecipe('amd64');
  assert.deepEqual(r.packages, ['dnsmasq-base', 'nodejs', 'iproute2']);
  const tag = baseTag(r);
  assert.match(tag, /^pxeboot_stack-base:bookworm-amd64-[0-9a-f]{12}$/);
  assert.equal(baseTag(baseRecipe('amd64')), tag, 'stable');
  assert.notEqual(baseTag({ ...r, packages: [...r.packages, 'less'] }), tag);
  assert.match(baseTag(baseRecipe('arm64')), /^pxeboot_stack-base:bookworm-arm64-/);
  assert.deepEqual(mmdebstrapArgv(baseRecipe('arm64'), 'http://deb.debian.org/debian', '/tmp/b/base.tar'), [
    '--variant=essential',
    '--architectures=arm64',
    '--include=dnsmasq-base,nodejs,iproute2',
    '--hook-dir=/usr/share/mmdebstrap/hooks/maybe-merged-usr',
    '--dpkgopt=path-exclude=/usr/share/man/*',
    '--dpkgopt=path-exclude=/usr/share/info/*',
    '--dpkgopt=path-exclude=/usr/share/locale/*',
    '--dpkgopt=path-exclude=/usr/share/doc/*',
    '--dpkgopt=path-include=/usr/share/doc/*/copyright',
    'bookworm',
    '/tmp/b/base.tar',
    'http://deb.debian.org/debian',
  ]);
});

test("the engines' command lines: import, build (no registry), save a docker-archive", () => {
  assert.deepEqual(engineArgv.exists('t:1'), ['image', 'inspect', '--format', '{{.Id}}', 't:1']);
  assert.deepEqual(engineArgv.importBase('docker', 'arm64', '/w/b.tar', 'b:1'), [
    'import',
    '--platform',
    'linux/arm64',
    '/w/b.tar',
    'b:1',
  ]);
  assert.deepEqual(engineArgv.importBase('podman', 'amd64', '/w/b.tar', 'b:1'), [
    'import',
    '--os',
    'linux',
    '--arch',
    'amd64',
    '/w/b.tar',
    'b:1',
  ]);
  const o = {
    arch: 'arm64' as const,
    base: 'b:1',
    tag: 'pxeboot_stack:latest',
    dockerfile: '/p/Dockerfile',
    context: '/p/build',
  };
  const common = [
    '--platform',
    'linux/arm64',
    '--build-arg',
    'BASE=b:1',
    '--tag',
    'pxeboot_stack:latest',
    '--file',
    '/p/Dockerfile',
    '/p/build',
  ];
  assert.deepEqual(engineArgv.build('podman', o), ['build', '--pull=never', ...common]);
  assert.deepEqual(engineArgv.build('docker', o), ['build', ...common]);
  assert.deepEqual(engineArgv.save('docker', 'pxeboot_stack:latest', '/p/x.tar'), [
    'save',
    '--output',
    '/p/x.tar',
    'pxeboot_stack:latest',
  ]);
  assert.deepEqual(engineArgv.save('podman', 'pxeboot_stack:latest', '/p/x.tar'), [
    'save',
    '--format',
    'docker-archive',
    '--output',
    '/p/x.tar',
    'pxeboot_stack:latest',
  ]);
  assert.deepEqual(engineArgv.size('i'), ['image', 'inspect', '--format', '{{.Size}}', 'i']);
  assert.deepEqual(engineArgv.listBases(), [
    'images',
    '--format',
    '{{.Repository}}:{{.Tag}}',
    'pxeboot_stack-base',
  ]);
  assert.deepEqual(engineArgv.remove(['a:1', 'b:2']), ['rmi', 'a:1', 'b:2']);
});
