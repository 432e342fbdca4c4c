/**
 * Build caches are keyed by their recipe: a new recipe (an upgrade, another mirror) makes a new
 * entry, and without pruning the old ones stay for ever (a provisioner image is ~1 GB). After a
 * build, the entries of the same kind (same name pattern, another key) go. Labs do not depend on
 * them: they hold hard links or copies of what they use.
 */
import { promises as fs } from 'node:fs';
import { join } from 'node:path';

/** A cache entry name: `<prefix><16 hex digits><suffix>` (what the builders' keys look like). */
export function cacheEntryPattern(prefix: string, suffix = ''): RegExp {
  const esc = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return new RegExp(`^${esc(prefix)}[0-9a-f]{16}${esc(suffix)}$`);
}

/**
 * Remove the entries of `dir` whose names match `pattern`, except `keep`. Work directories of
 * builds in progress (`….tmp-<pid>`) never match. Returns the names removed; a failure to remove
 * one is not an error (a cache is best effort), it stays for the next build to try.
 */
export async function pruneCache(dir: string, pattern: RegExp, keep: string): Promise<string[]> {
  const names = await fs.readdir(dir).catch(() => [] as string[]);
  const removed: string[] = [];
  for (const name of names) {
    if (name === keep || !pattern.test(name)) continue;
    try {
      await fs.rm(join(dir, name), { recursive: true, force: true });
      removed.push(name);
    } catch {
      // Kept for the next build to try.
    }
  }
  return removed;
}
