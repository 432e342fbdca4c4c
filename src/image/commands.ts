/**
 * The pxeboot_stack image's build, as command lines (pure): which engine, which architecture,
 * the Debian base made by mmdebstrap and its cache tag, and the engine's import, build and save.
 */
import { createHash } from 'node:crypto';
import { UsageError } from '../core/errors.js';

export type ImageArch = 'amd64' | 'arm64';
export type Engine = 'docker' | 'podman';

/** The image and the tar `make -C pxeboot_stack tar` writes; the seed's commands load that name. */
export const IMAGE = 'pxeboot_stack:latest';
/** Base images (Debian + dnsmasq + Node) are kept under this name, tagged by recipe. */
export const BASE_REPO = 'pxeboot_stack-base';

/** ARCH=amd64|arm64 (also x86_64/aarch64); unset: the host's. */
export function parseImageArch(text: string | undefined, hostArch: string = process.arch): ImageArch {
  const value = text === undefined || text === '' ? hostArch : text;
  if (value === 'amd64' || value === 'x64' || value === 'x86_64') return 'amd64';
  if (value === 'arm64' || value === 'aarch64') return 'arm64';
  throw new UsageError(
    text === undefined || text === ''
      ? `this host's architecture (${hostArch}) has no pxeboot_stack image: set ARCH=amd64 or ARCH=arm64`
      : `ARCH=${text} is not an image architecture: use amd64 or arm64`,
  );
}

/**
 * Docker when its daemon answers (`docker info`: a client alone is not enough), else podman.
 * ENGINE=docker|podman insists on one.
 */
export function chooseEngine(
  requested: string | undefined,
  works: { docker: boolean; podman: boolean },
): Engine {
  if (requested !== undefined && requested !== '') {
    if (requested !== 'docker' && requested !== 'podman')
      throw new UsageError(`ENGINE=${requested} is not supported: use docker or podman`);
    if (!works[requested])
      throw new UsageError(
        requested === 'docker'
          ? 'ENGINE=docker, but `docker info` fails: is the Docker daemon running?'
          : 'ENGINE=podman, but podman is not installed (apt-get install podman)',
      );
    return requested;
  }
  if (works.docker) return 'docker';
  if (works.podman) return 'podman';
  throw new UsageError(
    'no container engine: `docker info` fails (no daemon?) and podman is not installed (apt-get install podman)',
  );
}

/** The engine's "does it work" probe: docker must reach its daemon; podman needs none. */
export function probeArgv(engine: Engine): string[] {
  return engine === 'docker' ? ['info', '--format', '{{.ServerVersion}}'] : ['--version'];
}

/** What goes into the base image: Debian 12 with dnsmasq and Node, nothing else to speak of. */
export interface BaseRecipe {
  suite: string;
  arch: ImageArch;
  /** Essential packages only (no apt), plus `packages` and what they need. */
  variant: 'essential';
  packages: string[];
  /** dpkg path filters: documentation, manuals and translations are left out (copyrights kept). */
  dpkgOptions: string[];
}

/** Bump when the recipe changes in a way its fields do not show. */
const RECIPE_VERSION = 1;

export function baseRecipe(arch: ImageArch): BaseRecipe {
  return {
    suite: 'bookworm',
    arch,
    variant: 'essential',
    // dnsmasq: DHCP/DNS/TFTP; nodejs: Debian 12's Node 18 runs the stack; iproute2: `ip` to look
    // at the host's network from inside (docker exec).
    packages: ['dnsmasq-base', 'nodejs', 'iproute2'],
    dpkgOptions: [
      'path-exclude=/usr/share/man/*',
      'path-exclude=/usr/share/info/*',
      'path-exclude=/usr/share/locale/*',
      'path-exclude=/usr/share/doc/*',
      'path-include=/usr/share/doc/*/copyright',
    ],
  };
}

/** `pxeboot_stack-base:bookworm-amd64-<hash>`: a changed recipe is a new tag, so a new base. */
export function baseTag(r: BaseRecipe): string {
  const hash = createHash('sha256')
    .update(JSON.stringify({ v: RECIPE_VERSION, ...r }))
    .digest('hex')
    .slice(0, 12);
  return `${BASE_REPO}:${r.suite}-${r.arch}-${hash}`;
}

/**
 * mmdebstrap writing the base's root file system as a tar. The maybe-merged-usr hook sets up
 * merged /usr without the usrmerge package (which would pull in Perl). A foreign architecture
 * runs its maintainer scripts through qemu-user (binfmt_misc), as `distro pull` does.
 */
export function mmdebstrapArgv(r: BaseRecipe, mirror: string, outTar: string): string[] {
  return [
    `--variant=${r.variant}`,
    `--architectures=${r.arch}`,
    `--include=${r.packages.join(',')}`,
    '--hook-dir=/usr/share/mmdebstrap/hooks/maybe-merged-usr',
    ...r.dpkgOptions.map((o) => `--dpkgopt=${o}`),
    r.suite,
    outTar,
    mirror,
  ];
}

/** The command lines given to docker or podman. */
export const engineArgv = {
  /** Prints the image id, or fails when there is no such image. */
  exists: (tag: string): string[] => ['image', 'inspect', '--format', '{{.Id}}', tag],
  /** A root file system tar as an image of that architecture. */
  importBase(engine: Engine, arch: ImageArch, tarFile: string, tag: string): string[] {
    return engine === 'docker'
      ? ['import', '--platform', `linux/${arch}`, tarFile, tag]
      : ['import', '--os', 'linux', '--arch', arch, tarFile, tag];
  },
  /**
   * The image from the Dockerfile on the local base; never a registry (podman is told so,
   * docker pulls only with --pull). No RUN step, so no foreign binary runs.
   */
  build(
    engine: Engine,
    o: { arch: ImageArch; base: string; tag: string; dockerfile: string; context: string },
  ): string[] {
    return [
      'build',
      ...(engine === 'podman' ? ['--pull=never'] : []),
      '--platform',
      `linux/${o.arch}`,
      '--build-arg',
      `BASE=${o.base}`,
      '--tag',
      o.tag,
      '--file',
      o.dockerfile,
      o.context,
    ];
  },
  /** A docker-archive (what `docker load` reads). */
  save(engine: Engine, tag: string, outTar: string): string[] {
    return engine === 'docker'
      ? ['save', '--output', outTar, tag]
      : ['save', '--format', 'docker-archive', '--output', outTar, tag];
  },
  size: (tag: string): string[] => ['image', 'inspect', '--format', '{{.Size}}', tag],
  /** Every base image, as `repository:tag` lines. */
  listBases: (): string[] => ['images', '--format', '{{.Repository}}:{{.Tag}}', BASE_REPO],
  remove: (tags: readonly string[]): string[] => ['rmi', ...tags],
};
