/**
 * The pxeboot_stack container's layout: where its mounts and its own files are, and how the
 * checked environment becomes startStack's options. Pure but for the directory checks.
 */
import { mkdirSync, statSync, type Stats } from 'node:fs';
import { UsageError } from '../core/errors.js';
import type { StackEnv } from './env.js';
import type { StackOptions } from './serve.js';

export const CONTAINER_PATHS = {
  /** VM definitions (the host's ~/.pvmlab/vms, shared into the provisioner): a mount, required. */
  vmsDir: '/mnt/host/vms',
  /** Distro assets served at /images: a mount, required. */
  imagesDir: '/www/images',
  /** dnsmasq config, leases, TFTP root, the timeline: created if missing; a bind mount keeps the timeline. */
  stateDir: '/var/lib/pvmlab/stack',
  /** In the image: the installer initrds (served at /initrds) and the iPXE builds. */
  initrdsDir: '/www/initrds',
  ipxeDir: '/usr/lib/pvmlab/ipxe',
} as const;
export type ContainerPaths = { [K in keyof typeof CONTAINER_PATHS]: string };

type StatFn = (path: string) => Pick<Stats, 'isDirectory'> | undefined;
const statOrUndefined: StatFn = (p) => statSync(p, { throwIfNoEntry: false });

/**
 * The two mounts must be directories. The image has neither path, so a missing `-v` shows
 * here rather than as a lab with no machines.
 */
export function checkMounts(paths: ContainerPaths, stat: StatFn = statOrUndefined): void {
  const mounts = [
    [paths.vmsDir, 'the VM definitions', '~/.pvmlab/vms'],
    [paths.imagesDir, 'the distro assets', '~/.pvmlab/images'],
  ] as const;
  for (const [path, what, example] of mounts) {
    const st = stat(path);
    if (!st)
      throw new UsageError(`${path} is missing: bind-mount ${what} there (e.g. -v ${example}:${path})`);
    if (!st.isDirectory())
      throw new UsageError(`${path} is not a directory: bind-mount the directory of ${what} there`);
  }
}

/** The state directory: created if missing (a bind mount keeps it across replaced containers). */
export function ensureStateDir(path: string): void {
  try {
    const st = statOrUndefined(path);
    if (st && !st.isDirectory()) throw new UsageError(`${path} is not a directory`);
    if (!st) mkdirSync(path, { recursive: true });
  } catch (err) {
    if (err instanceof UsageError) throw err;
    throw new UsageError(
      `${path} cannot be created (${(err as Error).message}): mount a writable directory there`,
    );
  }
}

/** startStack's options for the container: the checked environment on the container's paths. */
export function containerStackOptions(
  env: StackEnv,
  paths: ContainerPaths,
): Omit<StackOptions, 'log' | 'accessLog'> {
  return {
    iface: env.iface,
    address: env.address,
    rangeStart: env.rangeStart,
    rangeEnd: env.rangeEnd,
    ...(env.ipv6 ? { ipv6: env.ipv6 } : {}),
    vmsDir: paths.vmsDir,
    imagesDir: paths.imagesDir,
    initrdsDir: paths.initrdsDir,
    stateDir: paths.stateDir,
    ipxeDirs: [paths.ipxeDir],
    httpPort: env.httpPort,
    dnsmasq: true,
    dns: env.dns,
  };
}
