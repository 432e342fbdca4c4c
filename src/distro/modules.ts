/**
 * The kernel modules the installer needs, cut from a distro's /lib/modules/<version> tree:
 * NIC, disk and file system drivers with everything they depend on (from modules.dep), stored
 * uncompressed so busybox's modprobe can load them whatever the distro compresses them with.
 */
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { PvmlabError } from '../core/errors.js';
import type { Runner } from '../core/exec.js';
import { runChecked } from '../core/exec.js';
import { buildCpio, type CpioEntry } from './cpio.js';

/** What the installer loads: virtio (QEMU), common NICs and disk controllers, the ESP's file system. */
export const INSTALLER_MODULES = [
  'virtio_pci',
  'virtio_mmio',
  'virtio_net',
  'virtio_blk',
  'virtio_scsi',
  'sd_mod',
  'ahci',
  'nvme',
  'e1000',
  'e1000e',
  'ext4',
  'vfat',
  'nls_cp437',
  'nls_ascii',
  'nls_iso8859-1',
  'efivarfs',
] as const;

/** modules.dep: `kernel/x/a.ko[.zst]: kernel/y/b.ko ...` → module path → its dependencies. */
export function parseModulesDep(text: string): Map<string, string[]> {
  const deps = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const path = line.slice(0, colon).trim();
    deps.set(
      path,
      line
        .slice(colon + 1)
        .trim()
        .split(/\s+/)
        .filter(Boolean),
    );
  }
  return deps;
}

/** A module's name as modprobe knows it: the file name without `.ko*`, `-` read as `_`. */
export function moduleName(path: string): string {
  const base = path.slice(path.lastIndexOf('/') + 1);
  return base.replace(/\.ko(\.(xz|zst|gz))?$/, '').replaceAll('-', '_');
}

/**
 * The module files `wanted` needs, dependencies included, in modules.dep's order. Names that
 * are not modules (built into the kernel, or absent from this flavour) are skipped.
 */
export function moduleClosure(deps: Map<string, string[]>, wanted: readonly string[]): string[] {
  const byName = new Map<string, string>();
  for (const path of deps.keys()) byName.set(moduleName(path), path);
  const out = new Set<string>();
  const visit = (path: string) => {
    if (out.has(path)) return;
    out.add(path);
    for (const d of deps.get(path) ?? []) visit(d);
  };
  for (const w of wanted) {
    const path = byName.get(w.replaceAll('-', '_'));
    if (path) visit(path);
  }
  return [...deps.keys()].filter((p) => out.has(p));
}

/** A compressed module's file name once unpacked. */
export function uncompressedName(path: string): string {
  return path.replace(/\.ko\.(xz|zst|gz)$/, '.ko');
}

const DECOMPRESSORS: Record<string, string> = { xz: 'xz', zst: 'zstd', gz: 'gzip' };

/** A module's bytes, unpacked with the distro's compressor (each tool turns `m.ko.<ext>` into `m.ko`). */
async function moduleBytes(runner: Runner, file: string, tmpDir: string): Promise<Buffer> {
  const m = /\.ko\.(xz|zst|gz)$/.exec(file);
  if (!m) return fs.readFile(file);
  const ext = m[1] as string;
  const copy = join(tmpDir, `m.ko.${ext}`);
  const out = join(tmpDir, 'm.ko');
  try {
    await fs.copyFile(file, copy);
    await runChecked(runner, DECOMPRESSORS[ext] as string, ['-d', '-f', '-q', copy]);
    return await fs.readFile(out);
  } finally {
    await fs.rm(copy, { force: true });
    await fs.rm(out, { force: true });
  }
}

/**
 * `modules.cpio.gz` for one kernel: the closure of INSTALLER_MODULES under
 * `lib/modules/<version>/`, with a modules.dep naming only what is inside. The kernel appends
 * this archive to the installer's initrd (iPXE loads both).
 */
export async function buildModulesCpio(
  runner: Runner,
  modulesDir: string,
  version: string,
  wanted: readonly string[] = INSTALLER_MODULES,
): Promise<{ data: Buffer; modules: string[] }> {
  const depText = await fs.readFile(join(modulesDir, 'modules.dep'), 'utf8').catch(() => {
    throw new PvmlabError(`${modulesDir} has no modules.dep: not a kernel's module tree`);
  });
  const deps = parseModulesDep(depText);
  const files = moduleClosure(deps, wanted);
  const root = `lib/modules/${version}`;
  const dirs = new Set<string>(['lib', 'lib/modules', root]);
  const entries: CpioEntry[] = [];
  const tmpDir = await fs.mkdtemp(join(tmpdir(), 'pvmlab-modules-'));
  try {
    for (const f of files) {
      const out = `${root}/${uncompressedName(f)}`;
      for (
        let d = out.slice(0, out.lastIndexOf('/'));
        d.length > root.length;
        d = d.slice(0, d.lastIndexOf('/'))
      )
        dirs.add(d);
      entries.push({
        path: out,
        type: 'file',
        mode: 0o644,
        data: await moduleBytes(runner, join(modulesDir, f), tmpDir),
      });
    }
  } finally {
    await fs.rm(tmpDir, { recursive: true, force: true });
  }
  const depLines = files.map(
    (f) => `${uncompressedName(f)}:${(deps.get(f) ?? []).map((d) => ` ${uncompressedName(d)}`).join('')}\n`,
  );
  entries.push({ path: `${root}/modules.dep`, type: 'file', mode: 0o644, data: depLines.join('') });
  for (const extra of ['modules.builtin', 'modules.order']) {
    const text = await fs.readFile(join(modulesDir, extra), 'utf8').catch(() => undefined);
    if (text !== undefined)
      entries.push({
        path: `${root}/${extra}`,
        type: 'file',
        mode: 0o644,
        data: text.replace(/\.ko\.(xz|zst|gz)$/gm, '.ko'),
      });
  }
  const dirEntries: CpioEntry[] = [...dirs].sort().map((path) => ({ path, type: 'dir', mode: 0o755 }));
  // gzip from zlib writes no name and a zero time stamp: the same modules give the same bytes.
  return {
    data: gzipSync(buildCpio([...dirEntries, ...entries]), { level: 9 }),
    modules: files.map(moduleName),
  };
}
