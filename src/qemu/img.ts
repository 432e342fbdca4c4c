import { PvmlabError } from '../core/errors.js';
import { runChecked, type Runner } from '../core/exec.js';

/** Pure argv builders for qemu-img. */
export const qemuImgArgv = {
  info: (path: string) => ['info', '--output=json', path],
  /** A copy-on-write overlay: the base image stays untouched and shared. */
  overlay: (base: string, baseFormat: string, disk: string) => [
    'create',
    '-q',
    '-f',
    'qcow2',
    '-F',
    baseFormat,
    '-b',
    base,
    disk,
  ],
  resize: (disk: string, bytes: number) => ['resize', '-q', disk, String(bytes)],
  /**
   * A blank disk for a PXE install, its qcow2 metadata allocated up front: the installer's first
   * writes then need no table updates (measured under TCG: root file system written in 29 s
   * instead of 37 s). The file stays sparse (~2 MiB on the host for 10 GiB).
   */
  blank: (disk: string, bytes: number) => [
    'create',
    '-q',
    '-f',
    'qcow2',
    '-o',
    'preallocation=metadata',
    disk,
    String(bytes),
  ],
};

export interface ImageInfo {
  format: string;
  virtualSize: number;
}

export async function imageInfo(runner: Runner, path: string): Promise<ImageInfo> {
  const r = await runChecked(runner, 'qemu-img', qemuImgArgv.info(path));
  try {
    const j = JSON.parse(r.stdout) as { format?: unknown; 'virtual-size'?: unknown };
    if (typeof j.format !== 'string' || typeof j['virtual-size'] !== 'number')
      throw new Error('missing fields');
    return { format: j.format, virtualSize: j['virtual-size'] };
  } catch (err) {
    throw new PvmlabError(`qemu-img info ${path}: unexpected output (${(err as Error).message})`);
  }
}

/** Overlay on the base image, grown to `bytes`; refuses to shrink. */
export async function createOverlayDisk(
  runner: Runner,
  base: string,
  disk: string,
  bytes: number,
): Promise<void> {
  const info = await imageInfo(runner, base);
  if (bytes < info.virtualSize)
    throw new PvmlabError(
      `requested disk size (${gib(bytes)}) is smaller than the base image (${gib(info.virtualSize)}); shrinking is not supported`,
    );
  await runChecked(runner, 'qemu-img', qemuImgArgv.overlay(base, info.format, disk));
  if (bytes > info.virtualSize) await runChecked(runner, 'qemu-img', qemuImgArgv.resize(disk, bytes));
}

export async function createBlankDisk(runner: Runner, disk: string, bytes: number): Promise<void> {
  await runChecked(runner, 'qemu-img', qemuImgArgv.blank(disk, bytes));
}

function gib(bytes: number): string {
  return `${(bytes / 2 ** 30).toFixed(2)}G`;
}
