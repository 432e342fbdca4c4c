/**
 * The installer initrd the stack serves at /initrds/<arch>/initrd.gz, built by
 * installer/build-initrd.sh from Debian packages and kept in the cache under a key made from
 * the installer's sources, so a changed installer is rebuilt and an unchanged one never is.
 */
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { basename, join } from 'node:path';
import { PvmlabError } from '../core/errors.js';
import { runChecked, type Runner } from '../core/exec.js';
import { cacheEntryPattern, pruneCache } from '../core/cache.js';
import { writeFileAtomic } from '../core/fsutil.js';
import { cacheDir, packageRoot } from '../core/paths.js';
import type { Arch } from '../lab/validate.js';

/** Everything that decides the initrd's bytes besides the Debian packages (whose list is in the builder). */
export const INSTALLER_SOURCES = [
  'installer/build-initrd.sh',
  'installer/init',
  'installer/install.sh',
  'installer/udhcpc.sh',
  'installer/lib.sh',
  'scripts/debian-fetch.sh',
];

export async function installerKey(root: string, arch: Arch): Promise<string> {
  const h = createHash('sha256').update(`${arch}\n`);
  for (const f of INSTALLER_SOURCES) h.update(`${f}\n`).update(await fs.readFile(join(root, f)));
  return h.digest('hex').slice(0, 16);
}

export function initrdPath(app: string, arch: Arch): string {
  return join(app, 'initrds', arch, 'initrd.gz');
}

export interface InitrdResult {
  path: string;
  /** Built now (else taken from the cache, or already in place). */
  built: boolean;
}

/** Make sure `<app>/initrds/<arch>/initrd.gz` is the current installer's initrd. */
export async function ensureInstallerInitrd(o: {
  app: string;
  arch: Arch;
  runner: Runner;
  env?: NodeJS.ProcessEnv;
  onStep?: (msg: string) => void;
}): Promise<InitrdResult> {
  const env = o.env ?? process.env;
  const root = packageRoot();
  const key = await installerKey(root, o.arch);
  const cached = join(cacheDir(env), 'installer', `initrd-${o.arch}-${key}.gz`);
  let built = false;
  if (!(await fs.stat(cached).catch(() => undefined))) {
    if (process.getuid?.() !== 0)
      throw new PvmlabError(
        'building the installer initrd needs root (it unpacks Debian packages): run it with sudo',
      );
    o.onStep?.(`building the ${o.arch} installer initrd from Debian packages`);
    await fs.mkdir(join(cacheDir(env), 'installer'), { recursive: true });
    await runChecked(o.runner, 'bash', [join(root, 'installer/build-initrd.sh'), o.arch, cached], {
      env: { ...env, PVMLAB_CACHE: cacheDir(env) },
      timeoutMs: 30 * 60_000,
    });
    built = true;
    await pruneCache(
      join(cacheDir(env), 'installer'),
      cacheEntryPattern(`initrd-${o.arch}-`, '.gz'),
      basename(cached),
    );
  }
  const dest = initrdPath(o.app, o.arch);
  const want = await fs.readFile(cached);
  const have = await fs.readFile(dest).catch(() => undefined);
  if (!have || !have.equals(want)) {
    await fs.mkdir(join(o.app, 'initrds', o.arch), { recursive: true });
    await writeFileAtomic(dest, want);
  }
  return { path: dest, built };
}
