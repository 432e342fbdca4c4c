import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { PvmlabError } from '../core/errors.js';
import { runChecked, type Runner } from '../core/exec.js';
import type { NetworkDriver, NetworkStatus, NicAttachment } from './driver.js';

export interface BridgeConfig {
  bridge: string;
  /** The host's address on the bridge with its prefix, e.g. 192.168.100.254/24; reaches the VMs directly. */
  hostAddress?: string;
  /** The host's IPv6 address with its prefix when the lab has an IPv6 subnet. */
  hostAddress6?: string;
}

/** TAP names are at most 15 bytes; hash bridge and VM name so two labs never collide. */
export function tapName(bridge: string, vmName: string): string {
  return `pvt${createHash('sha256').update(`${bridge}/${vmName}`).digest('hex').slice(0, 10)}`;
}

/** Pure builders for every `ip` command the driver runs. */
export const ipArgv = {
  show: (dev: string) => ['-j', 'link', 'show', 'dev', dev],
  addrShow: (dev: string) => ['-j', 'addr', 'show', 'dev', dev],
  addBridge: (br: string) => ['link', 'add', 'name', br, 'type', 'bridge'],
  addrReplace: (dev: string, cidr: string) => ['addr', 'replace', cidr, 'dev', dev],
  // nodad: the address is usable at once (duplicate detection would hold it back ~1 s).
  addrReplace6: (dev: string, cidr: string) => ['-6', 'addr', 'replace', cidr, 'dev', dev, 'nodad'],
  up: (dev: string) => ['link', 'set', 'dev', dev, 'up'],
  del: (dev: string) => ['link', 'del', 'dev', dev],
  addTap: (tap: string) => ['tuntap', 'add', 'dev', tap, 'mode', 'tap'],
  master: (tap: string, br: string) => ['link', 'set', 'dev', tap, 'master', br],
};

/** CAP_NET_ADMIN (bit 12) in the effective set, which root normally has. */
export function hasNetAdmin(statusText?: string): boolean {
  let text = statusText;
  if (text === undefined) {
    try {
      text = readFileSync('/proc/self/status', 'utf8');
    } catch {
      return false;
    }
  }
  const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(text);
  return m ? (BigInt(`0x${m[1]}`) & (1n << 12n)) !== 0n : false;
}

/** Linux: a bridge for the lab segment, one TAP per VM NIC. */
export class BridgeDriver implements NetworkDriver {
  readonly name = 'bridge' as const;

  constructor(
    private readonly config: BridgeConfig,
    private readonly runner: Runner,
    private readonly netAdmin: () => boolean = () => hasNetAdmin(),
  ) {}

  private requireNetAdmin(): void {
    if (!this.netAdmin())
      throw new PvmlabError(
        `the bridge network needs root or CAP_NET_ADMIN to create ${this.config.bridge} and TAP devices: run pvmlab with sudo`,
      );
  }

  private async ip(args: string[]): Promise<string> {
    return (await runChecked(this.runner, 'ip', args)).stdout;
  }

  private async exists(dev: string): Promise<boolean> {
    const r = await this.runner('ip', ipArgv.show(dev));
    return r.code === 0;
  }

  private async linkFlags(dev: string): Promise<string[] | undefined> {
    const r = await this.runner('ip', ipArgv.show(dev));
    if (r.code !== 0) return undefined;
    try {
      const links = JSON.parse(r.stdout) as { flags?: unknown }[];
      const flags = links[0]?.flags;
      return Array.isArray(flags) ? flags.filter((f): f is string => typeof f === 'string') : [];
    } catch {
      return [];
    }
  }

  /**
   * Whether a process (a QEMU) holds the TAP open. A TAP has carrier exactly while a process is
   * attached to it, which shows as LOWER_UP once the link is up; a TAP that is down is brought up
   * to tell (pvmlab's TAPs are always up anyway).
   */
  private async tapState(tap: string): Promise<'absent' | 'free' | 'in-use'> {
    let flags = await this.linkFlags(tap);
    if (flags === undefined) return 'absent';
    if (!flags.includes('UP')) {
      await this.ip(ipArgv.up(tap));
      flags = await this.linkFlags(tap);
      if (flags === undefined) return 'absent';
    }
    return flags.includes('LOWER_UP') ? 'in-use' : 'free';
  }

  async start(): Promise<void> {
    this.requireNetAdmin();
    const br = this.config.bridge;
    if (!(await this.exists(br))) await this.ip(ipArgv.addBridge(br));
    if (this.config.hostAddress) await this.ip(ipArgv.addrReplace(br, this.config.hostAddress));
    if (this.config.hostAddress6) await this.ip(ipArgv.addrReplace6(br, this.config.hostAddress6));
    await this.ip(ipArgv.up(br));
  }

  async stop(): Promise<void> {
    this.requireNetAdmin();
    if (await this.exists(this.config.bridge)) await this.ip(ipArgv.del(this.config.bridge));
  }

  async status(): Promise<NetworkStatus> {
    const br = this.config.bridge;
    const r = await this.runner('ip', ipArgv.addrShow(br));
    if (r.code !== 0) return { driver: this.name, name: br, up: false, detail: { exists: false } };
    const links = JSON.parse(r.stdout) as {
      operstate?: string;
      flags?: string[];
      addr_info?: { local: string; prefixlen: number }[];
    }[];
    const link = links[0];
    const up = link?.flags?.includes('UP') ?? false;
    const addresses = (link?.addr_info ?? []).map((a) => `${a.local}/${a.prefixlen}`).join(' ');
    return {
      driver: this.name,
      name: br,
      up,
      detail: { exists: true, state: link?.operstate ?? 'unknown', addresses },
    };
  }

  async attach(vm: { name: string; mac: string }): Promise<NicAttachment> {
    this.requireNetAdmin();
    const br = this.config.bridge;
    if (!(await this.exists(br)))
      throw new PvmlabError(`the lab bridge ${br} does not exist: run 'pvmlab network start' first`);
    const tap = tapName(br, vm.name);
    const state = await this.tapState(tap);
    // A TAP left by a QEMU that died is reused; one a live process holds belongs to a running VM.
    if (state === 'in-use')
      throw new PvmlabError(
        `the TAP device ${tap} of VM '${vm.name}' is in use by a running process (a QEMU of this VM without its pid file?): stop it, then start again`,
      );
    if (state === 'absent') await this.ip(ipArgv.addTap(tap));
    await this.ip(ipArgv.master(tap, br));
    await this.ip(ipArgv.up(tap));
    return { wrapper: [], netdev: `tap,ifname=${tap},script=no,downscript=no` };
  }

  /** Removes the TAP unless a process still holds it: never cut a running VM off the network. */
  async detach(vm: { name: string }): Promise<void> {
    const tap = tapName(this.config.bridge, vm.name);
    const state = await this.tapState(tap);
    if (state === 'in-use')
      throw new PvmlabError(
        `the TAP device ${tap} of VM '${vm.name}' is still in use by a running process: left in place`,
      );
    if (state === 'free') await this.ip(ipArgv.del(tap));
  }
}
