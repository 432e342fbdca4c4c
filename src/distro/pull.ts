/**
 * `distro pull`: make `images/<distro>/<arch>/` hold what a PXE install needs — the kernel
 * (`vmlinuz`), the installer's kernel modules (`modules.cpio.gz`), the root file system and a
 * manifest saying what they are — plus the installer initrd for that architecture.
 *
 * A distro with a `build` recipe (debian-12) is built here with mmdebstrap and kept in the cache,
 * so other labs and later runs take it from there with no network. One with a `rootfs_url`
 * (Ubuntu's root tarball) is downloaded (resumable, checksummed) and converted.
 */
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import {
  MANIFEST_FILE,
  MANIFEST_VERSION,
  parseManifest,
  type DistroManifest,
  type RootfsFormat,
} from '../core/distro-manifest.js';
import { PvmlabError, UsageError } from '../core/errors.js';
import { runChecked, startProcess, type Runner } from '../core/exec.js';
import { cacheEntryPattern, pruneCache } from '../core/cache.js';
import { writeFileAtomic } from '../core/fsutil.js';
import { cacheDir } from '../core/paths.js';
import type { Arch } from '../lab/validate.js';
import {
  DEFAULT_MIRROR,
  basePackages,
  enableNetworkdArgv,
  genericise,
  mmdebstrapArgv,
  type DebianRecipe,
} from './debian.js';
import { pxeSource, type DistroEntry } from './distros.js';
import { copyLocalImage, download, parseChecksumFile, type DownloadProgress } from './download.js';
import { ensureInstallerInitrd } from './installer-initrd.js';
import { distroDir } from './manifest.js';
import { buildModulesCpio } from './modules.js';
import { findKernel, packRootfs, sha256File } from './rootfs.js';

/** Bump when the pipeline's output changes, so cached builds are made again. */
export const PIPELINE_VERSION = 2;

export type PackFormat = Extract<RootfsFormat, 'ext4.zst' | 'tar.zst'>;

export interface PullOptions {
  app: string;
  distro: DistroEntry;
  arch: Arch;
  runner: Runner;
  env?: NodeJS.ProcessEnv;
  /** How the root file system is stored (default ext4.zst: the faster install, see docs/installer.md). */
  format?: PackFormat;
  /** Build or convert again even if pulled. */
  force?: boolean;
  onStep?: (msg: string) => void;
  onDownload?: (p: DownloadProgress) => void;
  signal?: AbortSignal;
}

export interface PullResult {
  dir: string;
  manifest: DistroManifest;
  /** How it got there this time. */
  how: 'present' | 'cache' | 'built' | 'downloaded';
  initrd: string;
}

/** The manifest and files of a pulled distro in `dir`, if every file is there with its size. */
export async function completePull(dir: string): Promise<DistroManifest | undefined> {
  const text = await fs.readFile(join(dir, MANIFEST_FILE), 'utf8').catch(() => undefined);
  if (text === undefined) return undefined;
  const r = parseManifest(text);
  if (!r.ok) return undefined;
  const m = r.value;
  const files = new Set([m.kernel, m.rootfs, ...(m.modules ? [m.modules] : []), ...Object.keys(m.sha256)]);
  for (const f of files)
    if (!(await fs.stat(join(dir, f)).catch(() => undefined))?.isFile()) return undefined;
  return m;
}

export function debianRecipe(d: DistroEntry, arch: Arch, env: NodeJS.ProcessEnv): DebianRecipe {
  if (!d.build) throw new PvmlabError(`distro '${d.name}' has no build recipe`);
  return {
    suite: d.build.suite,
    arch,
    packages: [...basePackages(arch), ...(d.build.packages ?? [])],
    mirror: d.build.mirror ?? env.PVMLAB_DEBIAN_MIRROR ?? DEFAULT_MIRROR,
  };
}

/** The cache key of a build: everything that decides what it contains. */
export function buildKey(name: string, recipe: DebianRecipe, format: PackFormat): string {
  return createHash('sha256')
    .update(JSON.stringify({ v: PIPELINE_VERSION, name, recipe, format }))
    .digest('hex')
    .slice(0, 16);
}

async function linkOrCopy(src: string, dest: string): Promise<void> {
  await fs.rm(dest, { force: true });
  // Images are never modified in place: a hard link shares the cache's bytes.
  await fs.link(src, dest).catch(() => fs.copyFile(src, dest));
}

/** The files a manifest in `dir` lists (plain names only), or none if there is no usable one. */
async function listedFiles(dir: string): Promise<string[]> {
  const text = await fs.readFile(join(dir, MANIFEST_FILE), 'utf8').catch(() => undefined);
  const r = text === undefined ? undefined : parseManifest(text);
  if (!r?.ok) return [];
  const m = r.value;
  return [m.kernel, m.rootfs, ...(m.modules ? [m.modules] : []), ...Object.keys(m.sha256)].filter((f) =>
    /^[A-Za-z0-9][A-Za-z0-9._+-]*$/.test(f),
  );
}

/**
 * Put a complete set of files (manifest last: it marks the set complete) into `dir`, then remove
 * what the set it replaces had and this one has not (the root file system in the other format).
 */
async function installInto(from: string, dir: string, m: DistroManifest): Promise<void> {
  await fs.mkdir(dir, { recursive: true });
  const previous = await listedFiles(dir);
  await fs.rm(join(dir, MANIFEST_FILE), { force: true });
  const files = [...Object.keys(m.sha256), 'SHA256SUMS'];
  for (const f of files) await linkOrCopy(join(from, f), join(dir, f));
  await writeFileAtomic(join(dir, MANIFEST_FILE), `${JSON.stringify(m, null, 2)}\n`);
  for (const f of previous)
    if (!files.includes(f) && f !== MANIFEST_FILE) await fs.rm(join(dir, f), { force: true });
}

/** After a failed download: remove `dir` and its parents up to `top` (which this pull made), if empty. */
async function removeEmptyDirs(dir: string, top: string): Promise<void> {
  for (let d = dir; ; d = dirname(d)) {
    try {
      await fs.rmdir(d); // only an empty directory
    } catch {
      return;
    }
    if (d === top || dirname(d) === d) return;
  }
}

/** Kernel, modules, packed root and manifest from an unpacked root in `work/root`, into `out`. */
async function artifactsFromRoot(
  o: PullOptions,
  root: string,
  out: string,
  source: string,
  format: PackFormat,
): Promise<DistroManifest> {
  const step = o.onStep ?? (() => undefined);
  const kernel = await findKernel(root);
  step(`kernel ${kernel.version}`);
  await fs.copyFile(kernel.image, join(out, 'vmlinuz'));
  const mods = await buildModulesCpio(o.runner, kernel.modulesDir, kernel.version);
  await fs.writeFile(join(out, 'modules.cpio.gz'), mods.data);
  step(`installer modules: ${mods.modules.length} (${mods.modules.join(' ')})`);
  const rootfs = await packRootfs(o.runner, root, out, format, step);
  const files = ['vmlinuz', 'modules.cpio.gz', rootfs];
  const sha256: Record<string, string> = {};
  for (const f of files) sha256[f] = await sha256File(join(out, f));
  await fs.writeFile(join(out, 'SHA256SUMS'), files.map((f) => `${sha256[f]}  ${f}\n`).join(''));
  return {
    schema_version: MANIFEST_VERSION,
    distro: o.distro.name,
    arch: o.arch,
    kernel: 'vmlinuz',
    kernel_version: kernel.version,
    modules: 'modules.cpio.gz',
    rootfs,
    rootfs_format: format,
    rootfs_bytes: (await fs.stat(join(out, rootfs))).size,
    source,
    created: new Date().toISOString(),
    sha256,
  };
}

/** Stream a long-running tool's output lines to `onStep` (mmdebstrap's `I: ...` phases). */
async function runStreaming(
  cmd: string,
  args: string[],
  onLine: (line: string) => void,
  env?: NodeJS.ProcessEnv,
): Promise<void> {
  const tail: string[] = [];
  const p = await startProcess(cmd, args, {
    onLine: (line) => {
      tail.push(line);
      if (tail.length > 20) tail.shift();
      onLine(line);
    },
    ...(env ? { env } : {}),
  });
  const r = await p.closed;
  if (r.error) throw new PvmlabError(`${cmd}: ${r.error.message}`);
  if (r.code !== 0)
    throw new PvmlabError(`${cmd} failed (${r.signal ?? `exit ${r.code}`}):\n${tail.slice(-8).join('\n')}`);
}

const FOREIGN_HINT =
  'needs qemu-user-static and binfmt_misc: apt-get install qemu-user-static binfmt-support arch-test; ' +
  'mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; update-binfmts --enable';

async function buildDebian(o: PullOptions, format: PackFormat): Promise<{ dir: string; built: boolean }> {
  const env = o.env ?? process.env;
  const step = o.onStep ?? (() => undefined);
  const recipe = debianRecipe(o.distro, o.arch, env);
  const key = buildKey(o.distro.name, recipe, format);
  const cached = join(cacheDir(env), 'distros', `${o.distro.name}-${o.arch}-${key}`);
  if (!o.force && (await completePull(cached))) return { dir: cached, built: false };
  if (process.getuid?.() !== 0)
    throw new PvmlabError(
      `building ${o.distro.name} needs root (mmdebstrap, file ownership): run it with sudo`,
    );
  const work = `${cached}.tmp-${process.pid}`;
  await fs.rm(work, { recursive: true, force: true });
  await fs.mkdir(work, { recursive: true });
  try {
    const root = join(work, 'root');
    step(`building ${o.distro.name} (${recipe.suite}, ${o.arch}) with mmdebstrap from ${recipe.mirror}`);
    try {
      await runStreaming('mmdebstrap', mmdebstrapArgv(recipe, root), (line) => {
        if (/^[IEW]: /.test(line)) step(`mmdebstrap: ${line.slice(3)}`);
      });
    } catch (err) {
      const msg = (err as Error).message;
      if (/arch-test|foreign architecture|binfmt|exec format/i.test(msg))
        throw new PvmlabError(`building ${o.arch} on this host ${FOREIGN_HINT}\n${msg}`);
      throw err;
    }
    await genericise(root);
    await runChecked(o.runner, 'systemctl', enableNetworkdArgv(root));
    const out = join(work, 'out');
    await fs.mkdir(out);
    const m = await artifactsFromRoot(
      o,
      root,
      out,
      `mmdebstrap ${recipe.suite} (${recipe.mirror}): ${recipe.packages.join(' ')}`,
      format,
    );
    await fs.writeFile(join(out, MANIFEST_FILE), `${JSON.stringify(m, null, 2)}\n`);
    await fs.rm(cached, { recursive: true, force: true });
    await fs.rename(out, cached);
    await pruneCache(
      join(cacheDir(env), 'distros'),
      cacheEntryPattern(`${o.distro.name}-${o.arch}-`),
      basename(cached),
    );
    return { dir: cached, built: true };
  } finally {
    await fs.rm(work, { recursive: true, force: true });
  }
}

/** Download (or copy a file:// URL) into `dest`, verified against a sha256 or a SHA256SUMS file. */
async function fetchVerified(
  o: PullOptions,
  url: string,
  dest: string,
  sha256?: string,
  sumsUrl?: string,
): Promise<void> {
  let expected = sha256;
  if (!expected && sumsUrl) {
    const name = basename(new URL(url).pathname);
    const text = await fetchText(sumsUrl);
    expected = parseChecksumFile(text, name);
    if (!expected) throw new PvmlabError(`${sumsUrl} does not list ${name}`);
  }
  if (url.startsWith('file:')) {
    await copyLocalImage({ url, dest, ...(expected ? { sha256: expected } : {}) });
    return;
  }
  await download({
    url,
    dest,
    ...(expected ? { sha256: expected } : {}),
    ...(o.onDownload ? { onProgress: o.onDownload } : {}),
    ...(o.signal ? { signal: o.signal } : {}),
  });
}

async function fetchText(url: string): Promise<string> {
  if (url.startsWith('file:')) return fs.readFile(new URL(url), 'utf8');
  const r = await fetch(url).catch((err: Error) => {
    throw new PvmlabError(`cannot fetch ${url}: ${err.message}`);
  });
  if (!r.ok) throw new PvmlabError(`cannot fetch ${url}: HTTP ${r.status}`);
  return r.text();
}

/** tar's decompression flag for a root tarball, by its name. */
export function tarFlag(name: string): string {
  if (/\.tar\.xz$|\.txz$/.test(name)) return '-J';
  if (/\.tar\.gz$|\.tgz$/.test(name)) return '-z';
  if (/\.tar\.zst$/.test(name)) return '--zstd';
  if (/\.tar$/.test(name)) return '';
  throw new UsageError(`rootfs_url must be a .tar, .tar.gz, .tar.xz or .tar.zst file (got ${name})`);
}

async function convertTarball(o: PullOptions, dir: string, format: PackFormat): Promise<DistroManifest> {
  const entry = o.distro.arch[o.arch] ?? {};
  const url = entry.rootfs_url as string;
  const name = basename(new URL(url).pathname);
  const flag = tarFlag(name);
  const tarball = join(dir, name);
  const step = o.onStep ?? (() => undefined);
  // Said before a download of hundreds of MB, not after it.
  if (process.getuid?.() !== 0)
    throw new PvmlabError(`unpacking ${name} needs root (file ownership): run it with sudo`);
  // --force fetches the tarball again too (`current/` files upstream change under one name).
  if (o.force) await fs.rm(tarball, { force: true });
  // The first directory this made, if any: a failed download must not leave empty ones behind.
  const made = await fs.mkdir(dir, { recursive: true });
  if (!(await fs.stat(tarball).catch(() => undefined))) {
    step(`downloading ${url}`);
    try {
      await fetchVerified(
        o,
        url,
        tarball,
        entry.rootfs_sha256,
        entry.rootfs_checksum_url ?? entry.checksum_url,
      );
    } catch (err) {
      // A .part kept for resuming keeps the directory.
      if (made !== undefined) await removeEmptyDirs(dir, made);
      throw err;
    }
  }
  const work = join(dir, `.pull-${process.pid}`);
  await fs.rm(work, { recursive: true, force: true });
  await fs.mkdir(join(work, 'root'), { recursive: true });
  try {
    step(`unpacking ${name}`);
    await runChecked(
      o.runner,
      'tar',
      [
        '--numeric-owner',
        '--xattrs',
        '--xattrs-include=*',
        ...(flag ? [flag] : []),
        '-xf',
        tarball,
        '-C',
        join(work, 'root'),
      ],
      { timeoutMs: 30 * 60_000 },
    );
    const out = join(work, 'out');
    await fs.mkdir(out);
    const m = await artifactsFromRoot(o, join(work, 'root'), out, url, format);
    await installInto(out, dir, m);
    return m;
  } finally {
    await fs.rm(work, { recursive: true, force: true });
  }
}

export async function pullDistro(o: PullOptions): Promise<PullResult> {
  const format = o.format ?? 'ext4.zst';
  const source = pxeSource(o.distro, o.arch);
  if (!source)
    throw new UsageError(
      Object.hasOwn(o.distro.arch, o.arch)
        ? `distro '${o.distro.name}' cannot be installed over the network: it has no build recipe and no rootfs_url for ${o.arch} (disk VMs only)`
        : `distro '${o.distro.name}' has no ${o.arch} image (has: ${Object.keys(o.distro.arch).join(', ')})`,
    );
  const dir = distroDir(o.app, o.distro.name, o.arch);
  const present = o.force ? undefined : await completePull(dir);
  let manifest: DistroManifest;
  let how: PullResult['how'];
  if (present && present.rootfs_format === format) {
    manifest = present;
    how = 'present';
  } else if (source === 'build') {
    const b = await buildDebian(o, format);
    manifest = (await completePull(b.dir)) as DistroManifest;
    await installInto(b.dir, dir, manifest);
    how = b.built ? 'built' : 'cache';
  } else {
    manifest = await convertTarball(o, dir, format);
    how = 'downloaded';
  }
  const initrd = await ensureInstallerInitrd({
    app: o.app,
    arch: o.arch,
    runner: o.runner,
    ...(o.env ? { env: o.env } : {}),
    ...(o.onStep ? { onStep: o.onStep } : {}),
  });
  return { dir, manifest, how, initrd: initrd.path };
}
