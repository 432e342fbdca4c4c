import { join } from 'node:path';
import { MANIFEST_FILE, parseManifest, type DistroManifest } from '../core/distro-manifest.js';
import { readTextIfExists } from '../core/fsutil.js';
import { labDirs } from '../core/paths.js';

/** `images/<distro>/<arch>`: where a pulled distro's kernel, modules and root file system live. */
export function distroDir(app: string, distro: string, arch: string): string {
  return join(labDirs(app).images, distro, arch);
}

/** The manifest of a pulled distro, or undefined if it is not pulled (or its manifest is unusable). */
export async function readManifest(
  app: string,
  distro: string,
  arch: string,
): Promise<DistroManifest | undefined> {
  const text = await readTextIfExists(join(distroDir(app, distro, arch), MANIFEST_FILE));
  if (text === undefined) return undefined;
  const r = parseManifest(text);
  return r.ok ? r.value : undefined;
}
