/**
 * macOS lab network: one socket_vmnet daemon (run by launchd, see launchd.ts) in host-only mode. Every VM
 * NIC is `-netdev socket,fd=3`, where socket_vmnet_client connects to the daemon's unix socket and execs
 * QEMU with that connection as fd 3; all VMs on the socket share one L2 segment.
 */
import { existsSync } from 'node:fs';
import { PvmlabError } from '../core/errors.js';
import { run, which as whichOnPath, type Runner } from '../core/exec.js';
import type { NetworkDriver, NetworkStatus, NicAttachment } from './driver.js';
import {
  DEFAULT_SOCKET_VMNET_PATH,
  LAUNCHD_LABEL,
  serviceStart,
  serviceStatus,
  serviceStop,
  type ServiceOptions,
} from './launchd.js';

/** Apple Silicon Homebrew, then Intel Homebrew. */
export const SOCKET_VMNET_CLIENT_CANDIDATES = [
  '/opt/homebrew/opt/socket_vmnet/bin/socket_vmnet_client',
  '/usr/local/opt/socket_vmnet/bin/socket_vmnet_client',
] as const;

/** $PVMLAB_SOCKET_VMNET_CLIENT (taken as-is), the Homebrew locations, then PATH. */
export function resolveSocketVmnetClient(
  env: NodeJS.ProcessEnv = process.env,
  exists: (p: string) => boolean = existsSync,
  which: (c: string) => string | undefined = (c) => whichOnPath(c, env),
): string {
  const fromEnv = env.PVMLAB_SOCKET_VMNET_CLIENT;
  if (fromEnv) return fromEnv;
  for (const p of SOCKET_VMNET_CLIENT_CANDIDATES) if (exists(p)) return p;
  const found = which('socket_vmnet_client');
  if (found) return found;
  throw new PvmlabError(
    `socket_vmnet_client not found (checked $PVMLAB_SOCKET_VMNET_CLIENT, ${SOCKET_VMNET_CLIENT_CANDIDATES.join(', ')} and PATH); ` +
      'install it with: brew install socket_vmnet',
  );
}

/** $PVMLAB_SOCKET_VMNET_PATH, else the socket the launchd daemon listens on. */
export function socketVmnetSocketPath(env: NodeJS.ProcessEnv = process.env): string {
  const fromEnv = env.PVMLAB_SOCKET_VMNET_PATH;
  return fromEnv ? fromEnv : DEFAULT_SOCKET_VMNET_PATH;
}

export interface SocketVmnetDriverOptions {
  runner?: Runner;
  env?: NodeJS.ProcessEnv;
  exists?: (p: string) => boolean;
  which?: (c: string) => string | undefined;
  /** Skip sudo for launchctl; defaults to process.getuid() === 0. */
  isRoot?: boolean;
}

export class SocketVmnetDriver implements NetworkDriver {
  readonly name = 'socket_vmnet' as const;
  private readonly runner: Runner;
  private readonly env: NodeJS.ProcessEnv;
  private readonly exists: (p: string) => boolean;
  private readonly which: (c: string) => string | undefined;
  private readonly service: ServiceOptions;

  constructor(options: SocketVmnetDriverOptions = {}) {
    this.runner = options.runner ?? run;
    this.env = options.env ?? process.env;
    this.exists = options.exists ?? existsSync;
    const env = this.env;
    this.which = options.which ?? ((c) => whichOnPath(c, env));
    this.service = options.isRoot === undefined ? {} : { isRoot: options.isRoot };
  }

  get socketPath(): string {
    return socketVmnetSocketPath(this.env);
  }

  async start(): Promise<void> {
    await serviceStart(this.runner, this.service);
  }

  async stop(): Promise<void> {
    await serviceStop(this.runner, this.service);
  }

  async status(): Promise<NetworkStatus> {
    const s = await serviceStatus(this.runner, this.service);
    const detail: NetworkStatus['detail'] = {
      label: LAUNCHD_LABEL,
      loaded: s.loaded,
      socketExists: this.exists(this.socketPath),
    };
    if (s.state !== undefined) detail.state = s.state;
    if (s.pid !== undefined) detail.pid = s.pid;
    return { driver: this.name, name: this.socketPath, up: s.running, detail };
  }

  /**
   * Every VM uses the same socket, so there is nothing to create per VM. The socket file is checked so a
   * stopped daemon gives a clear message instead of socket_vmnet_client's connect error in the QEMU log; a
   * stale socket left by a crashed daemon still gets through and fails at connect.
   */
  async attach(_vm: { name: string; mac: string }): Promise<NicAttachment> {
    const client = resolveSocketVmnetClient(this.env, this.exists, this.which);
    const socket = this.socketPath;
    if (!this.exists(socket)) {
      throw new PvmlabError(
        `socket_vmnet socket ${socket} not found: the socket_vmnet service is not running. ` +
          "Start it with 'pvmlab socket_vmnet start' (first time: 'sudo pvmlab system setup-launchd')",
      );
    }
    return { wrapper: [client, socket], netdev: 'socket,fd=3' };
  }

  async detach(_vm: { name: string }): Promise<void> {
    // The shared socket outlives any one VM; the client's connection closes when QEMU exits.
  }
}
