import { promises as fs } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import * as v from 'valibot';
import { PvmlabError, UsageError, isErrno } from '../core/errors.js';
import type { RunResult, Runner } from '../core/exec.js';
import { namedFsError } from '../core/fsutil.js';
import { safeText } from '../core/safe-text.js';
import type { VmDefinition } from '../core/vmdef.js';
import { DHCP6_POOL, resolveLabConfig, type LabConfig } from '../lab/config.js';
import { sshArgv, type SshTarget } from '../lab/ssh.js';
import { bigIntToIpv6, ipv6ToBigInt, parseSubnet } from '../lab/validate.js';
import { CONTAINER_SCRIPT, PREVIOUS_SUFFIX, SCRIPT_EXIT, shQuote } from './container-script.js';

/** The container the pxeboot stack runs in, unless `--name` says otherwise. */
export const DEFAULT_CONTAINER = 'pxeboot_stack';

/** Where the provisioner has what the container needs (its 9p mounts, and the stack's state). */
export interface GuestPaths {
  /** The host's docker_images directory. */
  dockerImages: string;
  /** The host's vms directory (VM definitions). */
  vms: string;
  /** The host's images directory (distro assets). */
  images: string;
  /** The stack's own state, kept in the VM across container replacements. */
  stackState: string;
}

export const GUEST_PATHS: GuestPaths = {
  dockerImages: '/mnt/host/docker_images',
  vms: '/mnt/host/vms',
  images: '/mnt/host/images',
  stackState: '/var/lib/pvmlab/stack',
};

/** How pvmlab reaches the provisioner: its name (for messages), the lab key and the SSH target. */
export interface ProvisionerSession {
  name: string;
  key: string;
  target: SshTarget;
}

/** The user's `docker run` choices. */
export interface RunFlags {
  networkHost: boolean;
  privileged: boolean;
}

// ------------------------------------------------------------------------------------------------
// Pure builders

/** Docker's rule for container names; a name is also a word in a remote command line. */
const CONTAINER_NAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$/;

export function validateContainerName(name: string): string {
  if (!CONTAINER_NAME_RE.test(name))
    throw new UsageError(
      `invalid container name '${safeText(name)}': letters, digits, '_', '.' and '-', starting with a letter or digit (at most 128)`,
    );
  if (name.endsWith(PREVIOUS_SUFFIX))
    throw new UsageError(`invalid container name '${name}': names ending in ${PREVIOUS_SUFFIX} are pvmlab's`);
  return name;
}

/** The tar to start: the positional argument or `--docker-tar`, one of them, not two different ones. */
export function chooseTar(positional: string | undefined, flag: string | undefined): string {
  if (positional !== undefined && flag !== undefined && resolve(positional) !== resolve(flag))
    throw new UsageError(
      `two different tars given ('${safeText(positional)}' and --docker-tar '${safeText(flag)}'): give one`,
    );
  const tar = positional ?? flag;
  if (tar === undefined || tar === '')
    throw new UsageError(
      'give the image tar to start, e.g. ./pxeboot_stack/pxeboot_stack.tar (make -C pxeboot_stack tar builds it)',
    );
  // The file name travels to the provisioner and into messages.
  if (/[\p{Cc}]/u.test(basename(tar))) throw new UsageError(`the tar's file name has control characters`);
  return tar;
}

/**
 * The stack's environment: the provisioner's own address with its prefix (from its definition),
 * the DHCP pools (from the lab settings), and the IPv6 side when the provisioner has an IPv6 address.
 */
export function stackEnv(prov: VmDefinition, config: LabConfig): [string, string][] {
  if (!prov.ip) throw new PvmlabError(`the provisioner '${prov.name}' has no ip in its definition`);
  const prefix = parseSubnet(prov.subnet ?? config.subnet, 'ipv4', 'subnet').prefix;
  const env: [string, string][] = [
    ['PROVISIONER_IP', `${prov.ip}/${prefix}`],
    ['DHCP_RANGE_START', config.dhcp_range_start],
    ['DHCP_RANGE_END', config.dhcp_range_end],
  ];
  if (!prov.ipv6) return env;
  const cidr6 = prov.subnetv6 ?? config.subnetv6;
  const subnet6 = cidr6 === undefined ? undefined : parseSubnet(cidr6, 'ipv6', 'subnetv6');
  env.push(['PROVISIONER_IPV6', `${prov.ipv6}/${subnet6?.prefix ?? 64}`]);
  // The lab's DHCPv6 pool; a provisioner in a lab without subnetv6 gets the same pool in its own subnet.
  const lab6 = config.subnetv6 ? resolveLabConfig(config).v6 : undefined;
  if (lab6) {
    env.push(['DHCP_RANGE_V6_START', lab6.rangeStart], ['DHCP_RANGE_V6_END', lab6.rangeEnd]);
  } else if (subnet6) {
    const net = ipv6ToBigInt(subnet6.network);
    env.push(
      ['DHCP_RANGE_V6_START', bigIntToIpv6(net + DHCP6_POOL.start)],
      ['DHCP_RANGE_V6_END', bigIntToIpv6(net + DHCP6_POOL.end)],
    );
  }
  return env;
}

/**
 * `docker run` options (without `-d --name`, which the script adds): the user's flags exactly,
 * then pvmlab's restart policy, environment and mounts. `--pull never`: the image was just
 * loaded, and a provisioner may have no registry to ask.
 */
export function dockerRunOptions(
  flags: RunFlags,
  env: readonly (readonly [string, string])[],
  paths: GuestPaths = GUEST_PATHS,
): string[] {
  return [
    ...(flags.networkHost ? ['--network', 'host'] : []),
    ...(flags.privileged ? ['--privileged'] : []),
    '--restart',
    'unless-stopped',
    '--pull',
    'never',
    ...env.flatMap(([k, val]) => ['-e', `${k}=${val}`]),
    '-v',
    `${paths.vms}:/mnt/host/vms`,
    '-v',
    `${paths.images}:/www/images`,
    '-v',
    `${paths.stackState}:/var/lib/pvmlab/stack`,
  ];
}

export type ScriptAction = 'start' | 'stop' | 'check' | 'status';

/** The remote command line that runs the script (sent on stdin) as root; every word quoted. */
export function scriptCommand(action: ScriptAction, args: readonly string[] = []): string {
  return ['sudo', 'sh', '-s', '--', action, ...args].map(shQuote).join(' ');
}

/** The arguments of `start`. */
export function startArgs(tarInGuest: string, name: string, options: readonly string[], paths: GuestPaths) {
  return ['--tar', tarInGuest, '--name', name, '--mkdir', paths.stackState, '--', ...options];
}

/** `docker logs [--follow] <name>`, as root in the provisioner. */
export function logsCommand(name: string, follow: boolean): string {
  return ['sudo', 'docker', 'logs', ...(follow ? ['--follow'] : []), name].map(shQuote).join(' ');
}

/** ssh's argv for one remote command line; `tty` gives it a terminal (Ctrl-C reaches the command). */
export function sessionArgv(session: ProvisionerSession, remote: string, tty = false): string[] {
  // Batch mode: a key the VM does not accept fails at once instead of asking for a password.
  return [...(tty ? ['-t'] : []), ...sshArgv(session.key, session.target, [remote], true)];
}

// ------------------------------------------------------------------------------------------------
// Parsers

/** The script's `<word> <text>` lines. */
export function scriptLines(stdout: string): { word: string; text: string }[] {
  return stdout
    .split('\n')
    .map((l) => l.replace(/\r$/, ''))
    .filter((l) => l.length > 0)
    .map((l) => {
      const i = l.indexOf(' ');
      return i < 0 ? { word: l, text: '' } : { word: l.slice(0, i), text: l.slice(i + 1) };
    });
}

export interface StartReport {
  /** The image `docker load` named (or the one already there). */
  image?: string;
  /** The engine already had the tar's image: it was not loaded again. */
  present?: boolean;
  /** The container that was there before (state and image). */
  previous?: { state: string; image: string };
  /** The new container's ID. */
  id?: string;
  /** The previous container's state when it was brought back after a failed start. */
  restored?: string;
  warnings: string[];
}

export function parseStartReport(stdout: string): StartReport {
  const report: StartReport = { warnings: [] };
  for (const { word, text } of scriptLines(stdout)) {
    if (word === 'loaded') report.image = text;
    else if (word === 'present') report.present = true;
    else if (word === 'started') report.id = text;
    else if (word === 'restored') report.restored = text;
    else if (word === 'warning') report.warnings.push(text);
    else if (word === 'previous') {
      const i = text.indexOf(' ');
      report.previous =
        i < 0 ? { state: text, image: '' } : { state: text.slice(0, i), image: text.slice(i + 1) };
    }
  }
  return report;
}

/** Engines write a never-set time as Go's zero time. */
const ZERO_TIME = /^0001-01-01T/;
const time = v.pipe(
  v.string(),
  v.transform((s) => (ZERO_TIME.test(s) || s === '' ? null : s)),
  v.check((s) => s === null || !Number.isNaN(Date.parse(s)), 'must be an RFC 3339 time'),
);

/** One `container` line of the status script, as STATUS_FORMAT writes it. */
export const ContainerRecordSchema = v.object({
  id: v.string(),
  // docker writes `/name`, podman `name`.
  name: v.pipe(
    v.string(),
    v.transform((s) => s.replace(/^\//, '')),
  ),
  image: v.string(),
  imageId: v.string(),
  state: v.string(),
  exitCode: v.number(),
  created: time,
  startedAt: time,
  finishedAt: time,
  restartPolicy: v.string(),
  restartCount: v.number(),
  networkMode: v.string(),
  privileged: v.boolean(),
});
export type ContainerRecord = v.InferOutput<typeof ContainerRecordSchema>;

export interface StatusReport {
  /** The provisioner's clock (seconds), which ages are measured against. */
  now: number;
  containers: ContainerRecord[];
  /** Lines that did not read as a container record (kept for a warning). */
  unreadable: string[];
}

export function parseStatusOutput(stdout: string): StatusReport {
  let now: number | undefined;
  const containers: ContainerRecord[] = [];
  const unreadable: string[] = [];
  for (const { word, text } of scriptLines(stdout)) {
    if (word === 'now' && /^\d+$/.test(text)) now = Number(text);
    else if (word === 'container') {
      let data: unknown;
      try {
        data = JSON.parse(text);
      } catch {
        unreadable.push(text);
        continue;
      }
      const r = v.safeParse(ContainerRecordSchema, data);
      if (r.success) containers.push(r.output);
      else unreadable.push(text);
    }
  }
  if (now === undefined)
    throw new PvmlabError(`the provisioner's status answer has no time line: ${stdout.slice(0, 200)}`);
  containers.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return { now, containers, unreadable };
}

/** `3 minutes`, `an hour`-free plain English: seconds, minutes, hours, then days. */
export function humanDuration(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const unit = (n: number, w: string) => `${n} ${w}${n === 1 ? '' : 's'}`;
  if (s < 1) return 'less than a second';
  if (s < 60) return unit(s, 'second');
  if (s < 3600) return unit(Math.floor(s / 60), 'minute');
  if (s < 48 * 3600) return unit(Math.floor(s / 3600), 'hour');
  return unit(Math.floor(s / 86400), 'day');
}

/** A status line in docker's manner (`Up 3 minutes`, `Exited (0) 2 hours ago`), from the record's fields. */
export function describeState(c: ContainerRecord, now: number): string {
  const since = (t: string | null) => (t === null ? undefined : humanDuration(now - Date.parse(t) / 1000));
  const up = since(c.startedAt);
  const down = since(c.finishedAt);
  switch (c.state) {
    case 'running':
      return up ? `Up ${up}` : 'Up';
    case 'paused':
      return `Up ${up ?? ''} (paused)`.replace('  ', ' ');
    case 'restarting':
      return `Restarting (${c.exitCode})${down ? ` ${down} ago` : ''}`;
    case 'exited':
    case 'stopped':
      return `Exited (${c.exitCode})${down ? ` ${down} ago` : ''}`;
    case 'created':
    case 'configured':
      return 'Created';
    default:
      return c.state.charAt(0).toUpperCase() + c.state.slice(1);
  }
}

// ------------------------------------------------------------------------------------------------
// Failures

/** The last lines of a command's error output, for a message. */
function detailOf(r: RunResult): string {
  return (r.stderr.trim() || r.stdout.trim()).split('\n').slice(-5).join('\n');
}

export interface FailureContext {
  tarInGuest?: string;
  hostDir?: string;
  name?: string;
  image?: string;
}

/** What went wrong in the provisioner, in pvmlab's words, from the script's exit code. */
export function scriptFailure(
  session: ProvisionerSession,
  r: RunResult,
  ctx: FailureContext = {},
): PvmlabError {
  const p = session.name;
  const detail = detailOf(r);
  const tail = detail ? `:\n${detail}` : '';
  const name = ctx.name ?? DEFAULT_CONTAINER;
  if (r.timedOut) return new PvmlabError(`the command in the provisioner '${p}' timed out${tail}`);
  switch (r.code) {
    case 255:
      return new PvmlabError(
        `cannot reach the provisioner '${p}' over SSH; 'pvmlab vm shell ${p}' shows why${tail}`,
      );
    case SCRIPT_EXIT.engineNotReady:
      return new PvmlabError(
        `the container engine in the provisioner '${p}' is not ready yet (it may still be booting: ` +
          `retry in a minute, or look with 'pvmlab vm shell ${p} -- sudo docker info')${tail}`,
      );
    case SCRIPT_EXIT.noTar:
      return new PvmlabError(
        `the provisioner '${p}' does not see ${ctx.tarInGuest ?? 'the tar'}: its docker_images share` +
          `${ctx.hostDir ? ` (${ctx.hostDir} on this host)` : ''} is not mounted (yet); ` +
          `look with 'pvmlab vm shell ${p} -- ls -l ${GUEST_PATHS.dockerImages}'${tail}`,
      );
    case SCRIPT_EXIT.loadFailed:
      return new PvmlabError(
        `docker load of ${ctx.tarInGuest ?? 'the tar'} failed, so nothing was changed (is it an image ` +
          `archive, as 'make -C pxeboot_stack tar' or 'docker save' writes?)${tail}`,
      );
    case SCRIPT_EXIT.noImageName:
      return new PvmlabError(`docker load named no image, so nothing was changed${tail}`);
    case SCRIPT_EXIT.setAsideFailed:
      return new PvmlabError(
        `could not stop the container '${name}' to replace it; it was left as it was${tail}`,
      );
    case SCRIPT_EXIT.runFailedRestored: {
      const state = parseStartReport(r.stdout).restored;
      return new PvmlabError(
        `the new container '${name}' (${ctx.image ?? 'the new image'}) did not start; the previous ` +
          `container is back${state ? ` (${state})` : ''}${tail}`,
      );
    }
    case SCRIPT_EXIT.runFailed: {
      const previous = parseStartReport(r.stdout).previous;
      return new PvmlabError(
        `the new container '${name}' (${ctx.image ?? 'the new image'}) did not start` +
          (previous
            ? `, and the previous one could not be brought back: it is kept as '${name}${PREVIOUS_SUFFIX}'`
            : '') +
          tail,
      );
    }
    case SCRIPT_EXIT.noContainer:
      return new PvmlabError(`there is no container '${name}' in the provisioner '${p}'`);
    case SCRIPT_EXIT.engineFailed:
      return new PvmlabError(`docker failed in the provisioner '${p}'${tail}`);
    default:
      return new PvmlabError(
        `the command in the provisioner '${p}' ${r.code === null ? `was killed (${r.signal})` : `exited ${r.code}`}${tail}`,
      );
  }
}

// ------------------------------------------------------------------------------------------------
// Work

/** A missing or unreadable tar on the host is the user's to fix: exit 2, before anything happens. */
export async function checkHostTar(tar: string): Promise<void> {
  let st;
  try {
    st = await fs.stat(tar);
  } catch (err) {
    if (isErrno(err, 'ENOENT') || isErrno(err, 'ENOTDIR'))
      throw new UsageError(
        `${safeText(tar)}: no such file (build it with 'make -C pxeboot_stack tar', or give its path)`,
      );
    throw new UsageError(namedFsError(err, `cannot read ${safeText(tar)}`).message);
  }
  if (!st.isFile()) throw new UsageError(`${safeText(tar)} is not a file`);
}

let copyCounter = 0;

/**
 * Put the tar into the directory the provisioner sees as its docker_images share: copied to a
 * temp name and renamed, so the VM never reads half a file. The file already there is left alone.
 */
export async function copyTarToShare(tar: string, dir: string): Promise<{ dest: string; copied: boolean }> {
  const dest = join(dir, basename(tar));
  const [src, there] = await Promise.all([fs.stat(tar), fs.stat(dest).catch(() => undefined)]);
  if (there && there.dev === src.dev && there.ino === src.ino) return { dest, copied: false };
  await fs.mkdir(dir, { recursive: true }).catch((err: unknown) => {
    throw new PvmlabError(namedFsError(err, `cannot create ${dir}`).message);
  });
  const tmp = join(dir, `.${basename(tar)}.${process.pid}.${++copyCounter}.tmp`);
  try {
    await fs.copyFile(tar, tmp);
    await fs.rename(tmp, dest);
  } catch (err) {
    await fs.rm(tmp, { force: true }).catch(() => undefined);
    throw new PvmlabError(namedFsError(err, `cannot copy ${tar} to ${dest}`).message);
  }
  return { dest, copied: true };
}

export interface StartOptions {
  /** The image tar on this host. */
  tar: string;
  /** The host directory shared into the provisioner as its docker_images. */
  hostDockerImages: string;
  name: string;
  /** `docker run` options (dockerRunOptions). */
  options: readonly string[];
  paths?: GuestPaths;
  /** Told each step as it begins. */
  onStep?: (message: string) => void;
}

export interface StartResult extends StartReport {
  dest: string;
  copied: boolean;
}

const START_TIMEOUT_MS = 20 * 60_000; // a large image over 9p on a slow disk
const SHORT_TIMEOUT_MS = 2 * 60_000;

/**
 * Replace (or first start) the container: copy the tar into the share, then in the provisioner
 * load it, and only once it loaded, set the old container aside, run the new one and drop the old.
 * A new container that does not start gives way to the previous one again.
 */
export async function startContainer(
  runner: Runner,
  session: ProvisionerSession,
  o: StartOptions,
): Promise<StartResult> {
  const paths = o.paths ?? GUEST_PATHS;
  await checkHostTar(o.tar);
  const { dest, copied } = await copyTarToShare(o.tar, o.hostDockerImages);
  o.onStep?.(copied ? `Copied ${o.tar} to ${dest}` : `${dest} is already in place`);
  const tarInGuest = `${paths.dockerImages}/${basename(dest)}`;
  o.onStep?.(`Loading ${tarInGuest} and starting '${o.name}' in the provisioner '${session.name}'`);
  const r = await runner(
    'ssh',
    sessionArgv(session, scriptCommand('start', startArgs(tarInGuest, o.name, o.options, paths))),
    {
      input: CONTAINER_SCRIPT,
      timeoutMs: START_TIMEOUT_MS,
    },
  );
  const report = parseStartReport(r.stdout);
  if (r.code !== 0)
    throw scriptFailure(session, r, {
      tarInGuest,
      hostDir: o.hostDockerImages,
      name: o.name,
      ...(report.image ? { image: report.image } : {}),
    });
  return { ...report, dest, copied };
}

/** Stop the container (it stays, and `start` replaces it); says what state it was in. */
export async function stopContainer(
  runner: Runner,
  session: ProvisionerSession,
  name: string,
): Promise<{ was: string }> {
  const r = await runner('ssh', sessionArgv(session, scriptCommand('stop', [name])), {
    input: CONTAINER_SCRIPT,
    timeoutMs: SHORT_TIMEOUT_MS,
  });
  if (r.code !== 0) throw scriptFailure(session, r, { name });
  const was = scriptLines(r.stdout).find((l) => l.word === 'was')?.text ?? 'unknown';
  return { was };
}

/** Every container in the provisioner, as the engine describes it. */
export async function containerStatus(runner: Runner, session: ProvisionerSession): Promise<StatusReport> {
  const r = await runner('ssh', sessionArgv(session, scriptCommand('status')), {
    input: CONTAINER_SCRIPT,
    timeoutMs: SHORT_TIMEOUT_MS,
  });
  if (r.code !== 0) throw scriptFailure(session, r);
  return parseStatusOutput(r.stdout);
}

export interface LogsOptions {
  name: string;
  follow: boolean;
  /**
   * 'inherit' hands ssh this process's terminal (with `tty`, so Ctrl-C ends `docker logs
   * --follow` in the VM too); 'pipe' passes the output to `onStdout`/`onStderr` as it comes,
   * or returns it in the result when they are not given.
   */
  stdio: 'inherit' | 'pipe';
  tty?: boolean;
  onStdout?: (chunk: string) => void;
  onStderr?: (chunk: string) => void;
}

/**
 * The container's output. The engine and the container are checked first (in pvmlab's words);
 * the logs themselves stream straight from `docker logs`.
 */
export async function containerLogs(
  runner: Runner,
  session: ProvisionerSession,
  o: LogsOptions,
): Promise<RunResult> {
  const check = await runner('ssh', sessionArgv(session, scriptCommand('check', [o.name])), {
    input: CONTAINER_SCRIPT,
    timeoutMs: SHORT_TIMEOUT_MS,
  });
  if (check.code !== 0) throw scriptFailure(session, check, { name: o.name });
  const tty = o.stdio === 'inherit' && o.tty === true;
  return runner('ssh', sessionArgv(session, logsCommand(o.name, o.follow), tty), {
    stdio: o.stdio,
    ...(o.onStdout ? { onStdout: o.onStdout } : {}),
    ...(o.onStderr ? { onStderr: o.onStderr } : {}),
  });
}
