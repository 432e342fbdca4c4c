import { copyFileSync, existsSync, mkdirSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { writeFileAtomic } from '../core/fsutil.js';
import { DnsmasqLogParser, worthLogging } from './dnsmasq-log.js';
import {
  BOOT_FILES,
  DnsmasqSupervisor,
  IPXE_SCRIPT,
  type LabSegment,
  dhcpHosts,
  dropStaleLeases,
  dnsHosts,
  dnsmasqArgv,
  dnsmasqConf,
  replaceStaleDnsmasq,
  type DnsmasqStatus,
} from './dnsmasq.js';
import { createBootServer, type BootServerOptions } from './http.js';
import { bootScript } from './ipxe.js';
import { MachineRegistry, normalizeMacKey } from './registry.js';
import { Timeline } from './timeline.js';

export interface StackOptions extends LabSegment {
  vmsDir: string;
  imagesDir: string;
  initrdsDir: string;
  /** dnsmasq config, hosts files, TFTP root, the timeline file. */
  stateDir: string;
  /** Where the iPXE binaries come from (Debian's `ipxe` package: /usr/lib/ipxe). */
  ipxeDirs?: string[];
  httpPort?: number;
  /** Run dnsmasq (DHCP/DNS/TFTP); off serves HTTP only. */
  dnsmasq?: boolean;
  dns?: boolean;
  pollMs?: number;
  log?: (msg: string) => void;
  /** One line per HTTP request (the container logs them; natively they are off). */
  accessLog?: (line: string) => void;
}

/**
 * Where iPXE builds are looked for: Debian's `ipxe` package, and the copy of a newer Debian
 * build `scripts/install-deps.sh` installs where the distribution has no arm64 one.
 */
export const DEFAULT_IPXE_DIRS = ['/usr/lib/ipxe', '/usr/share/ipxe', '/usr/local/lib/pvmlab/ipxe'];

/** iPXE builds by the names we serve them under, first match wins. */
export const IPXE_SOURCES: Record<string, string[]> = {
  // snponly uses the firmware's own NIC driver: what works on any UEFI machine.
  [BOOT_FILES['efi-x86_64']]: ['ipxe-x86_64.efi', 'snponly.efi', 'ipxe.efi'],
  [BOOT_FILES['efi-arm64']]: ['ipxe-arm64.efi', 'snponly-arm64.efi', 'arm64-efi/snponly.efi'],
  [BOOT_FILES.bios]: ['undionly.kpxe'],
};

export interface RunningStack {
  url: string;
  /** The same service on the provisioner's IPv6 address, when the lab has one. */
  url6?: string;
  registry: MachineRegistry;
  timeline: Timeline;
  supervisor?: DnsmasqSupervisor;
  close(): Promise<void>;
}

/** Fill the TFTP root: the iPXE binaries found on this system, and boot.ipxe. */
export function prepareTftpRoot(root: string, ipxeDirs: string[], log: (m: string) => void): string[] {
  mkdirSync(root, { recursive: true });
  const served: string[] = [];
  for (const [name, candidates] of Object.entries(IPXE_SOURCES)) {
    const src = ipxeDirs.flatMap((d) => candidates.map((c) => join(d, c))).find((p) => existsSync(p));
    if (!src) {
      log(`stack: no iPXE build for ${name} in ${ipxeDirs.join(', ')}; those clients cannot boot`);
      continue;
    }
    copyFileSync(src, join(root, name));
    served.push(name);
  }
  return served;
}

/**
 * The stack's part of /healthz: `ok: false` while dnsmasq does not serve (not started yet,
 * exited and waiting for its restart, or unable to bind its ports), with the reason.
 */
export function stackHealth(supervisor: Pick<DnsmasqSupervisor, 'status'> | undefined): {
  ok?: false;
  dnsmasq: DnsmasqStatus | 'off';
} {
  if (!supervisor) return { dnsmasq: 'off' };
  const s = supervisor.status;
  return s.serving ? { dnsmasq: s } : { ok: false, dnsmasq: s };
}

export async function startStack(o: StackOptions): Promise<RunningStack> {
  const log = o.log ?? ((m: string) => process.stderr.write(`${m}\n`));
  mkdirSync(o.stateDir, { recursive: true });
  const conf = join(o.stateDir, 'dnsmasq.conf');
  const pidFile = join(o.stateDir, 'dnsmasq.pid');
  // Before the lease file is touched: a stale dnsmasq writes it when it stops. Also with
  // --no-dnsmasq: one left running would go on serving the old hosts.
  const replaceStale = () => replaceStaleDnsmasq({ pidFile, confPath: conf, log }).then(() => undefined);
  await replaceStale();
  const tftpRoot = join(o.stateDir, 'tftp');
  prepareTftpRoot(tftpRoot, o.ipxeDirs ?? DEFAULT_IPXE_DIRS, log);
  await writeFileAtomic(join(tftpRoot, IPXE_SCRIPT), bootScript());

  const registry = new MachineRegistry({ dir: o.vmsDir, pollMs: o.pollMs ?? 2000, log });
  const timeline = new Timeline({ file: join(o.stateDir, 'timeline.jsonl'), log });
  const macForIp = (ip: string) => {
    const vm = registry.byIp(ip);
    return vm?.mac ? normalizeMacKey(vm.mac) : undefined;
  };
  const parser = new DnsmasqLogParser(macForIp);
  const hostsFile = join(o.stateDir, 'dhcp-hosts');
  const dnsHostsFile = join(o.stateDir, 'dns-hosts');
  const writeHosts = async () => {
    const vms = registry.all();
    await writeFileAtomic(hostsFile, dhcpHosts(vms));
    await writeFileAtomic(dnsHostsFile, dnsHosts(vms));
  };
  await registry.start();
  await writeHosts();
  const leaseFile = join(o.stateDir, 'dnsmasq.leases');
  /** Drop leases that block reservations (write=false: only say whether there are any). */
  const cleanLeases = async (write: boolean): Promise<boolean> => {
    const text = await readFile(leaseFile, 'utf8').catch(() => '');
    const r = dropStaleLeases(text, registry.all());
    if (r.dropped.length === 0) return false;
    if (write) {
      await writeFileAtomic(leaseFile, r.text);
      for (const d of r.dropped) log(`stack: dropped a lease that blocked a reservation: ${d}`);
    }
    return true;
  };
  await cleanLeases(true);

  let supervisor: DnsmasqSupervisor | undefined;
  if (o.dnsmasq !== false) {
    await writeFileAtomic(
      conf,
      dnsmasqConf({
        iface: o.iface,
        address: o.address,
        rangeStart: o.rangeStart,
        rangeEnd: o.rangeEnd,
        ...(o.netmask ? { netmask: o.netmask } : {}),
        ...(o.ipv6 ? { ipv6: o.ipv6 } : {}),
        tftpRoot,
        hostsFile,
        dnsHostsFile,
        leaseFile,
        dns: o.dns !== false,
      }),
    );
    supervisor = new DnsmasqSupervisor({
      argv: dnsmasqArgv(conf, pidFile, userInfo().username),
      log,
      // Every start and restart: a dnsmasq of ours still holding the ports would make it fail
      // with "Address already in use" for ever.
      prepare: replaceStale,
      onLine: (line) => {
        for (const ev of parser.feed(line))
          timeline.add(ev.mac, ev.type, ev.type.startsWith('tftp') ? 'tftp' : 'dhcp', ev.detail);
        if (worthLogging(line)) log(line);
      },
    });
    try {
      await supervisor.start();
    } catch (err) {
      registry.stop();
      timeline.close();
      throw err;
    }
  }
  // One update at a time: a burst of definition changes must not restart dnsmasq twice at once.
  let updating = Promise.resolve();
  registry.on('change', () => {
    updating = updating
      .then(async () => {
        await writeHosts();
        if (!supervisor) return;
        // A lease that blocks a new reservation survives a SIGHUP: only a restart drops it.
        if (await cleanLeases(false)) await supervisor.restart(() => cleanLeases(true).then(() => undefined));
        else supervisor.reload();
      })
      .catch((err: Error) => log(`stack: cannot update dnsmasq for the changed machines: ${err.message}`));
  });

  const serverOptions: BootServerOptions = {
    machines: registry,
    timeline,
    imagesDir: o.imagesDir,
    initrdsDir: o.initrdsDir,
    vmsDir: o.vmsDir,
    macForIp: (ip) => parser.macFor(ip) ?? macForIp(ip),
    health: () => stackHealth(supervisor),
    log,
    ...(o.accessLog ? { accessLog: o.accessLog } : {}),
  };
  const listen = (server: Server, host: string, port: number) =>
    new Promise<void>((res, rej) => {
      server.once('error', rej);
      server.listen(port, host, () => res());
    });
  const server = createBootServer(serverOptions);
  const servers = [server];
  try {
    await listen(server, o.address, o.httpPort ?? 80);
    // The same service on the provisioner's IPv6 address (same port: one URL scheme for both).
    if (o.ipv6) {
      const v6 = createBootServer(serverOptions);
      servers.push(v6);
      await listen(v6, o.ipv6.address, (server.address() as AddressInfo).port);
    }
  } catch (err) {
    registry.stop();
    for (const s of servers) s.close();
    await supervisor?.stop();
    timeline.close();
    throw err;
  }
  const addr = server.address() as AddressInfo;
  return {
    url: `http://${o.address}:${addr.port}`,
    ...(o.ipv6 ? { url6: `http://[${o.ipv6.address}]:${addr.port}` } : {}),
    registry,
    timeline,
    ...(supervisor ? { supervisor } : {}),
    async close() {
      registry.stop();
      await Promise.all(
        servers.map((s) => {
          s.closeAllConnections();
          return new Promise((r) => s.close(r));
        }),
      );
      await supervisor?.stop();
      timeline.close();
    },
  };
}
