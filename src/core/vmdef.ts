import ipaddr from 'ipaddr.js';
import * as v from 'valibot';

/**
 * The VM definition, `~/.pvmlab/vms/<name>.json`. The stack reads the same file (over 9p in the
 * provisioner), so the field names are the original's; `schema_version` is ours.
 */
export const VM_SCHEMA_VERSION = 1;

/**
 * The MAC forms the Go pvmlab accepted for `--mac` and stored as given: six hex pairs, any case,
 * `:` or `-` separated (even mixed). Read as the lowercase colon form pvmlab writes, so lookups,
 * duplicate checks and dnsmasq's hosts file see one spelling.
 */
const mac = v.pipe(
  v.string(),
  v.regex(/^([0-9a-f]{2}[:-]){5}[0-9a-f]{2}$/i, 'mac must be six hex pairs'),
  v.transform(canonicalMac),
);

/** `52-54-00-AB-CD-EF` -> `52:54:00:ab:cd:ef`, for a MAC already known to be six hex pairs. */
function canonicalMac(mac: string): string {
  return mac.toLowerCase().replace(/-/g, ':');
}

const name = v.pipe(
  v.string(),
  v.regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/, 'name must be a hostname label'),
);

/** Smallest `memory` a definition may hold (MiB): `vm create --memory` is checked against it too. */
export const MIN_MEMORY_MIB = 64;

/**
 * Addresses are checked as addresses: one garbage `ip` would otherwise throw in the middle of
 * allocating every later VM's address.
 */
const ipv4 = v.pipe(
  v.string(),
  v.check((s) => ipaddr.IPv4.isValidFourPartDecimal(s), 'must be an IPv4 address (a.b.c.d)'),
);
const ipv6 = v.pipe(
  v.string(),
  v.check((s) => ipaddr.IPv6.isValid(s) && !s.includes('%'), 'must be an IPv6 address'),
);
const cidr = (kind: 'ipv4' | 'ipv6') =>
  v.pipe(
    v.string(),
    v.check(
      (s) => {
        try {
          return ipaddr.parseCIDR(s)[0].kind() === kind;
        } catch {
          return false;
        }
      },
      `must be an ${kind === 'ipv4' ? 'IPv4' : 'IPv6'} network (address/prefix)`,
    ),
  );

export const VmDefinitionSchema = v.looseObject({
  name,
  role: v.picklist(['provisioner', 'target']),
  arch: v.picklist(['x86_64', 'aarch64']),
  ip: v.optional(ipv4),
  subnet: v.optional(cidr('ipv4')),
  ipv6: v.optional(ipv6),
  subnetv6: v.optional(cidr('ipv6')),
  mac: v.optional(mac),
  pxe_boot_stack_tar: v.optional(v.string()),
  docker_images_path: v.optional(v.string()),
  vms_path: v.optional(v.string()),
  ssh_port: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(65535))),
  pxeboot: v.optional(v.boolean()),
  distro: v.optional(v.string()),
  ssh_key: v.optional(v.string()),
  kernel: v.optional(v.string()),
  initrd: v.optional(v.string()),
  memory: v.optional(v.pipe(v.number(), v.integer(), v.minValue(MIN_MEMORY_MIB))),
  cpus: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1))),
  schema_version: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1))),
});
export type VmDefinition = v.InferOutput<typeof VmDefinitionSchema>;

/** Key order of the file; optional fields that are unset are left out (the original's omitempty). */
const KEY_ORDER: readonly (keyof VmDefinition)[] = [
  'name',
  'role',
  'arch',
  'ip',
  'subnet',
  'ipv6',
  'subnetv6',
  'mac',
  'pxe_boot_stack_tar',
  'docker_images_path',
  'vms_path',
  'ssh_port',
  'pxeboot',
  'distro',
  'ssh_key',
  'kernel',
  'initrd',
  'memory',
  'cpus',
  'schema_version',
];

export function serializeVm(vm: VmDefinition): string {
  const out: Record<string, unknown> = {};
  for (const k of KEY_ORDER) {
    const val = vm[k];
    if (val === undefined || val === '' || val === false || val === 0) continue;
    out[k] = val;
  }
  for (const [k, val] of Object.entries(vm))
    if (!(k in out) && !KEY_ORDER.includes(k) && val !== undefined) out[k] = val;
  return JSON.stringify(out, null, 2);
}

export type ParseResult<T> = { ok: true; value: T } | { ok: false; error: string };

/**
 * `normalized` says which values were read differently from how the file spells them (a Go
 * pvmlab file's `52-54-00-AB-CD-EF`), so the caller can say so; the file itself is not rewritten.
 */
export type VmParseResult =
  { ok: true; value: VmDefinition; normalized: string[] } | { ok: false; error: string };

export function parseVm(text: string): VmParseResult {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    return { ok: false, error: `not valid JSON (${(err as Error).message})` };
  }
  const r = v.safeParse(VmDefinitionSchema, data);
  if (!r.success) return { ok: false, error: describeIssues(r.issues) };
  if ((r.output.schema_version ?? 1) > VM_SCHEMA_VERSION)
    return {
      ok: false,
      error: `schema_version ${r.output.schema_version} is newer than this pvmlab understands (${VM_SCHEMA_VERSION})`,
    };
  return {
    ok: true,
    value: r.output,
    normalized: normalizedFields(data as Record<string, unknown>, r.output),
  };
}

/**
 * The check a definition passes before it is written: the very rules it is read by (the file as
 * it will be serialised, parsed back), so pvmlab never writes a VM it would then skip.
 */
export function checkVmForWrite(vm: VmDefinition): ParseResult<string> {
  const text = serializeVm(vm);
  const r = parseVm(text);
  if (!r.ok) return r;
  return { ok: true, value: text };
}

/** `mac "52-54-00-AB-CD-EF" read as "52:54:00:ab:cd:ef"` for each field the schema rewrote. */
function normalizedFields(raw: Record<string, unknown>, parsed: VmDefinition): string[] {
  const notes: string[] = [];
  for (const k of KEY_ORDER) {
    const before = raw[k];
    const after = parsed[k];
    if (before !== after && before !== undefined)
      notes.push(`${k} ${JSON.stringify(before)} read as ${JSON.stringify(after)}`);
  }
  return notes;
}

export function describeIssues(issues: readonly v.BaseIssue<unknown>[]): string {
  return issues
    .map((i) => {
      const path = i.path?.map((p) => String(p.key)).join('.');
      return path ? `${path}: ${i.message}` : i.message;
    })
    .join('; ');
}
