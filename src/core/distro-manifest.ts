import * as v from 'valibot';
import { describeIssues, type ParseResult } from './vmdef.js';

/**
 * `images/<distro>/<arch>/manifest.json`: what `distro pull` produced, read by the stack to tell
 * the installer where the root file system is and how to write it. A contract between the host
 * (src/distro) and the stack (which may run in a container), so it lives in core.
 */
export const MANIFEST_FILE = 'manifest.json';
export const MANIFEST_VERSION = 1;

/**
 * How the root file system is stored, which decides how the installer writes it:
 * `ext4.zst` is an ext4 image (shrunk to its files) streamed onto the root partition and grown;
 * the `tar.*` kinds are unpacked onto a fresh ext4.
 */
export const ROOTFS_FORMATS = ['ext4.zst', 'tar.zst', 'tar.gz', 'tar.xz'] as const;
export type RootfsFormat = (typeof ROOTFS_FORMATS)[number];

const fileName = v.pipe(v.string(), v.regex(/^[A-Za-z0-9][A-Za-z0-9._+-]*$/, 'a plain file name'));

export const DistroManifestSchema = v.object({
  schema_version: v.pipe(v.number(), v.integer(), v.minValue(1)),
  distro: v.string(),
  arch: v.picklist(['x86_64', 'aarch64']),
  /** File names in the same directory. */
  kernel: fileName,
  kernel_version: v.optional(v.string()),
  modules: v.optional(fileName),
  rootfs: fileName,
  rootfs_format: v.picklist(ROOTFS_FORMATS),
  rootfs_bytes: v.pipe(v.number(), v.integer(), v.minValue(1)),
  /** How it was made: the build recipe or the URLs it came from. */
  source: v.string(),
  created: v.string(),
  /** sha256 of each file above, hex. */
  sha256: v.record(v.string(), v.pipe(v.string(), v.regex(/^[0-9a-f]{64}$/))),
});
export type DistroManifest = v.InferOutput<typeof DistroManifestSchema>;

export function parseManifest(text: string): ParseResult<DistroManifest> {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    return { ok: false, error: `not valid JSON (${(err as Error).message})` };
  }
  const r = v.safeParse(DistroManifestSchema, data);
  if (!r.success) return { ok: false, error: describeIssues(r.issues) };
  if (r.output.schema_version > MANIFEST_VERSION)
    return {
      ok: false,
      error: `schema_version ${r.output.schema_version} is newer than this pvmlab understands (${MANIFEST_VERSION})`,
    };
  return { ok: true, value: r.output };
}

/** Kernel console per architecture: the first UART of q35 / virt. */
export function consoleArg(arch: 'x86_64' | 'aarch64'): string {
  return arch === 'aarch64' ? 'console=ttyAMA0,115200' : 'console=ttyS0,115200';
}
