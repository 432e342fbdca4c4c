import { promises as fs } from 'node:fs';
import { join } from 'node:path';

/**
 * Every path under `dir` (relative, sorted) with its type, size, mode, inode and mtime: two
 * snapshots are equal only if nothing was created, removed, replaced or written.
 * A missing `dir` gives an empty snapshot.
 */
export async function snapshotTree(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (rel: string): Promise<void> => {
    const names = await fs.readdir(join(dir, rel)).catch(() => [] as string[]);
    for (const name of names.sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const st = await fs.lstat(join(dir, r));
      const type = st.isDirectory() ? 'd' : st.isSymbolicLink() ? 'l' : 'f';
      out[r] =
        `${type} ${st.mode.toString(8)} ino=${st.ino}` +
        (type === 'd' ? '' : ` size=${st.size} mtime=${st.mtimeMs}`);
      if (type === 'd') await walk(r);
    }
  };
  await walk('');
  return out;
}
