import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { UsageError } from '../../../src/core/errors.js';
import {
  CONTAINER_PATHS,
  checkMounts,
  containerStackOptions,
  ensureStateDir,
  type ContainerPaths,
} from '../../../src/stack/container.js';

function layout(t: { after: (fn: () => void) => void }): ContainerPaths {
  const root = mkdtempSync(join(tmpdir(), 'pvml-container-'));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  return {
    vmsDir: join(root, 'mnt/host/vms'),
    imagesDir: join(root, 'www/images'),
    stateDir: join(root, 'var/lib/pvmlab/stack'),
    initrdsDir: join(root, 'www/initrds'),
    ipxeDir: join(root, 'usr/lib/pvmlab/ipxe'),
  };
}

const usage = (fn: () => void, re: RegExp) =>
  assert.throws(
    fn,
    (err: unknown) => err instanceof UsageError && err.exitCode === 2 && re.test(err.message),
  );

test('the mounts: both required, both directories', (t) => {
  const p = layout(t);
  usage(
    () => checkMounts(p),
    /\/mnt\/host\/vms is missing: bind-mount the VM definitions there \(e\.g\. -v ~\/\.pvmlab\/vms:.*\/mnt\/host\/vms\)$/,
  );
  mkdirSync(p.vmsDir, { recursive: true });
  usage(() => checkMounts(p), /\/www\/images is missing: bind-mount the distro assets there/);
  mkdirSync(join(p.imagesDir, '..'), { recursive: true });
  writeFileSync(p.imagesDir, 'a file');
  usage(
    () => checkMounts(p),
    /\/www\/images is not a directory: bind-mount the directory of the distro assets there$/,
  );
  rmSync(p.imagesDir);
  mkdirSync(p.imagesDir);
  checkMounts(p);
});

test('the state directory is created when missing; something else in its place is an error', (t) => {
  const p = layout(t);
  ensureStateDir(p.stateDir);
  ensureStateDir(p.stateDir); // already there
  rmSync(p.stateDir, { recursive: true });
  writeFileSync(p.stateDir, 'x');
  usage(() => ensureStateDir(p.stateDir), /stack is not a directory$/);
  rmSync(p.stateDir);
  writeFileSync(join(p.stateDir, '..', 'blocker'), 'x');
  usage(
    () => ensureStateDir(join(p.stateDir, '..', 'blocker', 'stack')),
    /cannot be created \(.*\): mount a writable directory there$/,
  );
});

test("startStack's options: the checked environment on the container's paths", () => {
  const env = {
    iface: 'enp0s2',
    address: '192.168.100.1',
    prefix: 24,
    rangeStart: '192.168.100.100',
    rangeEnd: '192.168.100.200',
    httpPort: 8080,
    dns: false,
  };
  assert.deepEqual(containerStackOptions(env, CONTAINER_PATHS), {
    iface: 'enp0s2',
    address: '192.168.100.1',
    rangeStart: '192.168.100.100',
    rangeEnd: '192.168.100.200',
    vmsDir: '/mnt/host/vms',
    imagesDir: '/www/images',
    initrdsDir: '/www/initrds',
    stateDir: '/var/lib/pvmlab/stack',
    ipxeDirs: ['/usr/lib/pvmlab/ipxe'],
    httpPort: 8080,
    dnsmasq: true,
    dns: false,
  });
  const ipv6 = { address: 'fd00::1', prefix: 64, rangeStart: 'fd00::1:0', rangeEnd: 'fd00::1:ffff' };
  assert.deepEqual(containerStackOptions({ ...env, ipv6 }, CONTAINER_PATHS).ipv6, ipv6);
});
