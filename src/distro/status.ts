import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { loadDistros, imagePath, pxeSource } from './distros.js';
import { distroDir } from './manifest.js';
import { completePull } from './pull.js';

export interface DistroStatusRow {
  name: string;
  distro_name: string;
  version: string;
  arch: string;
  /** How a PXE install gets it: built here, a root tarball, or not at all (disk VMs only). */
  pxe_source: 'build' | 'rootfs' | null;
  pulled: boolean;
  kernel_version: string | null;
  rootfs_format: string | null;
  /** Bytes of everything in images/<distro>/<arch>. */
  bytes: number;
  files: string[];
  cloud_image: boolean;
  cloud_image_present: boolean;
}

/** One row per distro and architecture, sorted: what `distro ls` shows. */
export async function distroStatus(app: string): Promise<DistroStatusRow[]> {
  const distros = [...(await loadDistros(app))].sort((a, b) =>
    a.name < b.name ? -1 : a.name > b.name ? 1 : 0,
  );
  const rows: DistroStatusRow[] = [];
  for (const d of distros) {
    for (const arch of Object.keys(d.arch).sort()) {
      const dir = distroDir(app, d.name, arch);
      const names = (await fs.readdir(dir).catch(() => [] as string[]))
        .filter((f) => !f.startsWith('.'))
        .sort();
      let bytes = 0;
      for (const f of names) bytes += (await fs.stat(join(dir, f)).catch(() => undefined))?.size ?? 0;
      const m = await completePull(dir);
      const entry = d.arch[arch as 'x86_64' | 'aarch64'] ?? {};
      rows.push({
        name: d.name,
        distro_name: d.distro_name,
        version: String(d.version),
        arch,
        pxe_source: pxeSource(d, arch) ?? null,
        pulled: m !== undefined,
        kernel_version: m?.kernel_version ?? null,
        rootfs_format: m?.rootfs_format ?? null,
        bytes,
        files: names,
        cloud_image: entry.qcow2_url !== undefined,
        cloud_image_present:
          entry.qcow2_url !== undefined &&
          (await fs.stat(imagePath(app, d.name, arch, entry.qcow2_url)).catch(() => undefined)) !== undefined,
      });
    }
  }
  return rows;
}
