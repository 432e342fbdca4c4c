/**
 * The socket_vmnet launchd daemon (macOS): the files `sudo pvmlab system setup-launchd` installs and the
 * launchctl calls behind `pvmlab socket_vmnet start|stop|status`. Generators and argv builders are pure;
 * everything that runs a process takes a Runner so tests can record the calls.
 */
import { existsSync, promises as fs } from 'node:fs';
import { PvmlabError, errorMessage } from '../core/errors.js';
import { which as whichOnPath, type RunResult, type Runner } from '../core/exec.js';
import { writeFileAtomic } from '../core/fsutil.js';

export const LAUNCHD_LABEL = 'io.github.pallotron.pvmlab.socket_vmnet';
export const LAUNCHD_PLIST_PATH = `/Library/LaunchDaemons/${LAUNCHD_LABEL}.plist`;
export const LIBEXEC_DIR = '/opt/pvmlab/libexec';
export const WRAPPER_PATH = `${LIBEXEC_DIR}/socket_vmnet_wrapper.sh`;
export const LOG_DIR = '/var/log/vmlab.socket_vmnet';
export const STATE_DIR = '/var/run/pvmlab';
/** Where the daemon listens unless the user points pvmlab elsewhere ($PVMLAB_SOCKET_VMNET_PATH). */
export const DEFAULT_SOCKET_VMNET_PATH = '/var/run/vmlab.socket_vmnet';
/** launchctl's name for the job in the system domain. */
export const SERVICE_TARGET = `system/${LAUNCHD_LABEL}`;

/** Apple Silicon Homebrew first, then Intel Homebrew. */
export const SOCKET_VMNET_BINARY_CANDIDATES = [
  '/opt/homebrew/opt/socket_vmnet/bin/socket_vmnet',
  '/usr/local/opt/socket_vmnet/bin/socket_vmnet',
] as const;

const INSTALL_HINT = 'install it with: brew install socket_vmnet';

// ---------------------------------------------------------------------------------------------------------
// Generated files

function xmlEscape(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** Single-quote for bash, so any path survives word splitting and expansion. */
export function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** The LaunchDaemon plist: run the wrapper as root at boot and restart it whenever it exits. */
export function launchdPlist(): string {
  const entries: [string, string | boolean][] = [
    ['Label', LAUNCHD_LABEL],
    ['Program', WRAPPER_PATH],
    ['RunAtLoad', true],
    ['KeepAlive', true],
    ['UserName', 'root'],
    // Interactive: launchd must not throttle the process that carries every VM's packets.
    ['ProcessType', 'Interactive'],
    ['StandardOutPath', `${LOG_DIR}/stdout`],
    ['StandardErrorPath', `${LOG_DIR}/stderr`],
  ];
  const body = entries
    .map(([key, value]) => {
      const v = typeof value === 'boolean' ? `<${value}/>` : `<string>${xmlEscape(value)}</string>`;
      return `\t<key>${xmlEscape(key)}</key>\n\t${v}`;
    })
    .join('\n');
  return [
    '<?xml version="1.0" encoding="UTF-8"?>',
    '<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">',
    '<plist version="1.0">',
    '<dict>',
    body,
    '</dict>',
    '</plist>',
    '',
  ].join('\n');
}

/**
 * The script launchd runs. It keeps one network identifier per boot (the file lives under /var/run), so
 * daemon restarts rejoin the same host-only vmnet network; host mode with an identifier runs no vmnet
 * DHCP, which leaves DHCP to the provisioner's dnsmasq.
 */
export function socketVmnetWrapperScript(
  socketVmnetBinary: string,
  socketPath: string,
  stateDir: string = STATE_DIR,
): string {
  return `#!/bin/bash
# Run by launchd as ${LAUNCHD_LABEL}; written by 'pvmlab system setup-launchd' (re-running it overwrites this file).
set -euo pipefail

STATE_DIR=${shellQuote(stateDir)}
IDENTIFIER_FILE="$STATE_DIR/socket_vmnet_network_identifier"
SOCKET_VMNET=${shellQuote(socketVmnetBinary)}
SOCKET_PATH=${shellQuote(socketPath)}

if [ ! -x "$SOCKET_VMNET" ]; then
  echo "socket_vmnet not found at $SOCKET_VMNET (${INSTALL_HINT}, then re-run: sudo pvmlab system setup-launchd)" >&2
  exit 1
fi

mkdir -p "$STATE_DIR"
if [ ! -s "$IDENTIFIER_FILE" ]; then
  # Write then rename, so a crash never leaves an empty identifier behind.
  uuidgen > "$IDENTIFIER_FILE.tmp"
  mv -f "$IDENTIFIER_FILE.tmp" "$IDENTIFIER_FILE"
fi
NETWORK_ID="$(tr -d '[:space:]' < "$IDENTIFIER_FILE")"

exec "$SOCKET_VMNET" --vmnet-mode=host --vmnet-network-identifier="$NETWORK_ID" "$SOCKET_PATH"
`;
}

/** socket_vmnet itself (the daemon), for the wrapper: Homebrew locations, then PATH. */
export function resolveSocketVmnetBinary(
  env: NodeJS.ProcessEnv = process.env,
  exists: (p: string) => boolean = existsSync,
  which: (c: string) => string | undefined = (c) => whichOnPath(c, env),
): string {
  for (const p of SOCKET_VMNET_BINARY_CANDIDATES) if (exists(p)) return p;
  const found = which('socket_vmnet');
  if (found) return found;
  throw new PvmlabError(
    `socket_vmnet not found in ${SOCKET_VMNET_BINARY_CANDIDATES.join(' or ')} or on PATH; ${INSTALL_HINT}`,
  );
}

// ---------------------------------------------------------------------------------------------------------
// launchctl argv builders (arguments after `launchctl`)

export const launchctlArgs = {
  /** Load the job into the system domain; RunAtLoad starts it. */
  bootstrap: (): string[] => ['bootstrap', 'system', LAUNCHD_PLIST_PATH],
  /** Unload by label: works even if the plist file is gone. */
  bootout: (): string[] => ['bootout', SERVICE_TARGET],
  /** Unload by plist path, as setup does before replacing the plist. */
  bootoutPlist: (): string[] => ['bootout', 'system', LAUNCHD_PLIST_PATH],
  /** Persistent enable/disable: the modern half of `load -w` / `unload -w`. */
  enable: (): string[] => ['enable', SERVICE_TARGET],
  disable: (): string[] => ['disable', SERVICE_TARGET],
  /** -k kills a running instance first, -p prints the new pid. */
  kickstart: (): string[] => ['kickstart', '-kp', SERVICE_TARGET],
  print: (): string[] => ['print', SERVICE_TARGET],
} as const;

/** A command line, prefixed with sudo unless we are already root. */
export function privileged(
  isRoot: boolean,
  command: string,
  args: readonly string[],
): { command: string; args: string[] } {
  return isRoot ? { command, args: [...args] } : { command: 'sudo', args: [command, ...args] };
}

function defaultIsRoot(): boolean {
  return process.getuid?.() === 0;
}

function output(r: RunResult): string {
  return (r.stderr.trim() || r.stdout.trim()).split('\n').slice(-5).join('\n');
}

function failure(what: string, r: RunResult): PvmlabError {
  const how = r.timedOut ? 'timed out' : r.code === null ? `was killed (${r.signal})` : `exited ${r.code}`;
  const detail = output(r);
  return new PvmlabError(`${what}: ${r.command} ${how}${detail ? `: ${detail}` : ''}`);
}

// ---------------------------------------------------------------------------------------------------------
// `pvmlab socket_vmnet start|stop|status`

export interface ServiceOptions {
  /** Skip the sudo prefix; defaults to process.getuid() === 0. */
  isRoot?: boolean;
}

export interface ServiceStatus {
  /** launchd knows the job (it was bootstrapped). */
  loaded: boolean;
  running: boolean;
  pid?: number;
  /** launchd's own word: running, not running, spawn scheduled, ... */
  state?: string;
}

/**
 * Read `state` and `pid` from `launchctl print` output. Only the job's top-level lines count: nested blocks
 * (endpoints, event triggers, environment) can hold keys with the same names.
 */
export function parseLaunchctlPrint(text: string): { state?: string; pid?: number } {
  const out: { state?: string; pid?: number } = {};
  let depth = 0;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '') continue;
    if (line.startsWith('}')) {
      depth--;
      continue;
    }
    if (depth === 1) {
      const m = /^([a-z ]+?)\s*=\s*(.*)$/.exec(line);
      if (m?.[1] === 'state') out.state = m[2]?.trim();
      else if (m?.[1] === 'pid' && /^\d+$/.test(m[2]?.trim() ?? '')) out.pid = Number(m[2]?.trim());
    }
    if (line.endsWith('{')) depth++;
  }
  return out;
}

export async function serviceStatus(runner: Runner, options: ServiceOptions = {}): Promise<ServiceStatus> {
  const c = privileged(options.isRoot ?? defaultIsRoot(), 'launchctl', launchctlArgs.print());
  const r = await runner(c.command, c.args);
  if (r.code !== 0) {
    // A failed sudo (no password, not in sudoers) says nothing about the service: don't report "not loaded".
    if (/^sudo: /m.test(r.stderr)) throw failure('cannot query the socket_vmnet service', r);
    return { loaded: false, running: false };
  }
  const parsed = parseLaunchctlPrint(r.stdout);
  const status: ServiceStatus = { loaded: true, running: parsed.state === 'running' };
  if (parsed.state !== undefined) status.state = parsed.state;
  if (parsed.pid !== undefined) status.pid = parsed.pid;
  return status;
}

/**
 * Create the log and state directories, enable the job and bootstrap it. Bootstrapping a job launchd already
 * has fails (`Bootstrap failed: 5: Input/output error`); launchctl gives the same error for other causes,
 * so a failure counts as success only when `launchctl print` then shows the job loaded.
 */
export async function serviceStart(runner: Runner, options: ServiceOptions = {}): Promise<void> {
  const isRoot = options.isRoot ?? defaultIsRoot();
  const call = async (command: string, args: readonly string[]): Promise<RunResult> => {
    const c = privileged(isRoot, command, args);
    return runner(c.command, c.args);
  };
  let r = await call('mkdir', ['-p', LOG_DIR]);
  if (r.code !== 0) throw failure(`failed to create log directory ${LOG_DIR}`, r);
  r = await call('mkdir', ['-p', STATE_DIR]);
  if (r.code !== 0) throw failure(`failed to create state directory ${STATE_DIR}`, r);
  // `stop` disables the job (like the original's `unload -w`); a disabled job refuses to bootstrap.
  r = await call('launchctl', launchctlArgs.enable());
  if (r.code !== 0) throw failure(`failed to enable ${SERVICE_TARGET}`, r);
  r = await call('launchctl', launchctlArgs.bootstrap());
  if (r.code === 0) return;
  const status = await serviceStatus(runner, { isRoot });
  if (status.loaded) return;
  const err = failure(`failed to start ${LAUNCHD_LABEL}`, r);
  throw new PvmlabError(`${err.message}\nIs the service installed? Run: sudo pvmlab system setup-launchd`);
}

/** Boot the job out and disable it so it stays off across reboots; a job that is not loaded is fine. */
export async function serviceStop(runner: Runner, options: ServiceOptions = {}): Promise<void> {
  const isRoot = options.isRoot ?? defaultIsRoot();
  const call = async (args: readonly string[]): Promise<RunResult> => {
    const c = privileged(isRoot, 'launchctl', args);
    return runner(c.command, c.args);
  };
  let r = await call(launchctlArgs.bootout());
  // "No such process" / "Could not find service" both mean it was not loaded; confirm rather than match text.
  if (r.code !== 0 && (await serviceStatus(runner, { isRoot })).loaded) {
    throw failure(`failed to stop ${LAUNCHD_LABEL}`, r);
  }
  r = await call(launchctlArgs.disable());
  if (r.code !== 0) throw failure(`failed to disable ${SERVICE_TARGET}`, r);
}

// ---------------------------------------------------------------------------------------------------------
// `sudo pvmlab system setup-launchd`

export interface SetupStep {
  /** 'warning' steps went wrong in a way that need not stop the setup. */
  kind: 'done' | 'warning';
  message: string;
}

export interface SetupLaunchdOptions {
  runner: Runner;
  /** Defaults to writeFileAtomic. */
  writeFile?: (path: string, data: string, mode: number) => Promise<void>;
  /** Recursive mkdir; defaults to fs.mkdir(path, { recursive: true, mode }). */
  mkdir?: (path: string, mode: number) => Promise<void>;
  /** Defaults to process.getuid() === 0. */
  isRoot?: boolean;
  /** Defaults to resolveSocketVmnetBinary(). */
  socketVmnetBinary?: string;
  /** Where the daemon listens; defaults to DEFAULT_SOCKET_VMNET_PATH. */
  socketPath?: string;
}

/** Install the wrapper and the plist, then (re)load and start the daemon. Needs root; never calls sudo. */
export async function setupLaunchd(options: SetupLaunchdOptions): Promise<SetupStep[]> {
  if (!(options.isRoot ?? defaultIsRoot())) {
    throw new PvmlabError('this command must be run as root (use sudo)', { exitCode: 1 });
  }
  const { runner } = options;
  const writeFile = options.writeFile ?? writeFileAtomic;
  const mkdir =
    options.mkdir ??
    (async (path: string, mode: number): Promise<void> => {
      await fs.mkdir(path, { recursive: true, mode });
    });
  const binary = options.socketVmnetBinary ?? resolveSocketVmnetBinary();
  const socketPath = options.socketPath ?? DEFAULT_SOCKET_VMNET_PATH;
  const steps: SetupStep[] = [];
  const launchctl = (args: readonly string[]): Promise<RunResult> => runner('launchctl', args);

  const fsStep = async (what: string, done: string, action: () => Promise<void>): Promise<void> => {
    try {
      await action();
    } catch (err) {
      throw new PvmlabError(`failed to ${what}: ${errorMessage(err)}`, { cause: err });
    }
    steps.push({ kind: 'done', message: done });
  };

  await fsStep(`create ${LIBEXEC_DIR}`, `Created ${LIBEXEC_DIR}`, () => mkdir(LIBEXEC_DIR, 0o755));
  // launchd does not create the directory of StandardOutPath/StandardErrorPath.
  await fsStep(`create ${LOG_DIR}`, `Created ${LOG_DIR}`, () => mkdir(LOG_DIR, 0o755));
  await fsStep('install wrapper script', `Installed wrapper script to ${WRAPPER_PATH} (runs ${binary})`, () =>
    writeFile(WRAPPER_PATH, socketVmnetWrapperScript(binary, socketPath), 0o755),
  );

  // Unload any previous instance so the new plist is read; "not loaded" is the usual answer.
  const out = await launchctl(launchctlArgs.bootoutPlist());
  steps.push({
    kind: 'done',
    message: out.code === 0 ? 'Unloaded the previous service' : 'No previous service to unload',
  });

  await fsStep('install plist', `Installed plist to ${LAUNCHD_PLIST_PATH}`, () =>
    writeFile(LAUNCHD_PLIST_PATH, launchdPlist(), 0o644),
  );

  let r = await launchctl(launchctlArgs.enable());
  if (r.code !== 0) throw failure('failed to enable service', r);
  steps.push({ kind: 'done', message: `Enabled ${SERVICE_TARGET}` });

  r = await launchctl(launchctlArgs.bootstrap());
  steps.push(
    r.code === 0
      ? { kind: 'done', message: `Bootstrapped ${LAUNCHD_PLIST_PATH}` }
      : {
          kind: 'warning',
          message: `launchctl bootstrap failed (the service may already be loaded): ${output(r) || `exit ${r.code}`}`,
        },
  );

  r = await launchctl(launchctlArgs.kickstart());
  if (r.code !== 0) throw failure('failed to kickstart service', r);
  const pid = /\d+/.exec(r.stdout)?.[0];
  steps.push({ kind: 'done', message: `Started ${SERVICE_TARGET}${pid ? ` (pid ${pid})` : ''}` });
  return steps;
}
