import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { MANIFEST_FILE, parseManifest, type DistroManifest } from '../core/distro-manifest.js';

/**
 * The pulled distros' manifests (`images/<distro>/<arch>/manifest.json`), re-read only when the
 * file changes (checked at most once per `ttlMs`): every /ipxe and /config request asks.
 */
export class DistroAssets {
  private readonly seen = new Map<string, { at: number; mtimeMs: number; value?: DistroManifest }>();

  constructor(
    private readonly imagesDir: string,
    private readonly ttlMs = 1000,
    private readonly log: (msg: string) => void = () => undefined,
    private readonly now: () => number = Date.now,
  ) {}

  manifest(distro: string, arch: string): DistroManifest | undefined {
    // Names come from VM definitions (validated there); refuse anything that is not one path segment.
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(distro) || !/^[a-z0-9_]+$/.test(arch)) return undefined;
    const path = join(this.imagesDir, distro, arch, MANIFEST_FILE);
    const t = this.now();
    const hit = this.seen.get(path);
    if (hit && t - hit.at < this.ttlMs) return hit.value;
    const mtimeMs = statSync(path, { throwIfNoEntry: false })?.mtimeMs ?? -1;
    if (hit && hit.mtimeMs === mtimeMs) {
      hit.at = t;
      return hit.value;
    }
    let value: DistroManifest | undefined;
    if (mtimeMs >= 0) {
      let text: string | undefined;
      try {
        text = readFileSync(path, 'utf8');
      } catch (err) {
        this.log(`stack: cannot read ${path}: ${(err as Error).message}`);
      }
      const r = text === undefined ? undefined : parseManifest(text);
      if (r?.ok) value = r.value;
      else if (r) this.log(`stack: ignoring ${path}: ${r.error}`);
    }
    if (this.seen.size >= 1000) this.seen.clear(); // bounded: one entry per distro and arch
    this.seen.set(path, { at: t, mtimeMs, ...(value ? { value } : {}) });
    return value;
  }
}

/** `KEY='value'` lines a POSIX shell can source: the installer's view of /config (no JSON parser in busybox). */
export function shellAssignments(
  prefix: string,
  values: Record<string, string | number | boolean | null>,
): string {
  return Object.entries(values)
    .map(([k, val]) => {
      const name = `${prefix}${k.toUpperCase().replace(/[^A-Z0-9_]/g, '_')}`;
      const text = val === null ? '' : String(val);
      return `${name}='${text.replaceAll("'", `'\\''`)}'\n`;
    })
    .join('');
}
