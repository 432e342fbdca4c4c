/**
 * Provision scenario: `vm start --wait` → ready for a blank PXE target on the default path (no
 * accelerator override, as a user runs it), split into the four stretches of its timeline and the
 * installer's own phases, against the floor measured in the same run: the same installed disk,
 * reset to the state the installer leaves it in, booted directly to the end of cloud-init's first
 * boot. Needs root: the lab runs in a network namespace made (and deleted) here.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { provisionPhases, type Phase, type PhaseEvent } from '../src/stack/phases.js';

const BIN = resolve('bin/pvmlab.js');
const VM = 't1';
/** The optional cross-check's VM (BENCH_PROVISION_PRISTINE=1). */
const PRISTINE_VM = 'p1';
const BRIDGE = 'pvbenchbr0';
const SUBNET = '10.234.0.0/24';
/** Variables that would take the lab off the path a user gets by default. */
const OFF_PATH = ['PVMLAB_ACCEL', 'PVMLAB_QEMU_ACCEL', 'PVMLAB_STACK_URL', 'PVMLAB_NETWORK'];
const START_TIMEOUT_MS = 40 * 60_000;

/**
 * Undo, inside the installed guest, what its first boot did, back to the state the installer
 * leaves the disk in: cloud-init's state and logs gone (the NoCloud seed stays), no SSH host keys,
 * an empty /etc/machine-id (as the image ships it; cloud-init 22.4's `clean --machine-id` deletes
 * the file instead, and systemd 252 then boots with no machine-id: networkd gets no DHCP lease).
 */
export const FLOOR_RESET =
  'sudo cloud-init clean --logs && sudo rm -f /etc/ssh/ssh_host_* /var/lib/dbus/machine-id && sudo truncate -s 0 /etc/machine-id && sync';

/** Per-instance modules: their semaphores are there only once a first boot has run them. */
const PER_INSTANCE = ['config_users_groups', 'config_ssh', 'config_set_hostname', 'config_phone_home'];

/** What the guest says about its boot: `systemd-analyze` fails until the boot has finished. */
const BOOT_FACTS =
  'systemd-analyze && systemd-analyze blame --no-pager | head -n 5 && echo --- && cloud-init analyze show && echo --- && cloud-init analyze blame | head -n 8';

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** What the guest says about a boot: systemd's summary and slowest units, cloud-init's stages. */
export interface BootFacts {
  systemd?: string;
  blame?: string[];
  cloudInit?: Phase[];
  cloudInitBlame?: string[];
  error?: string;
}

export interface ProvisionRun {
  /** `vm start` called → `ready` on the timeline (the stack's clock, the same host's). */
  provisionSeconds: number;
  /** `vm start --wait` called → returned (adds the CLI's polling, up to 2 s). */
  provisionWallSeconds: number;
  phases: Phase[];
  installer: Phase[];
  /** `vm start` called → the new `ready` of the installed disk's direct boot. */
  floorSeconds: number;
  floorWallSeconds: number;
  ratio: number;
  /** `vm stop` before the floor boot: `powered off` (ACPI) or `forced`. */
  stop: string;
  firstBoot: BootFacts;
  floorBoot: BootFacts;
  /** The checks that the floor boot was a full cloud-init first boot, as found. */
  floorCheck: { cloudInit: string; machineIdChanged: boolean; perInstance: string[]; dhcp: boolean };
  /**
   * With BENCH_PROVISION_PRISTINE=1: a second machine installed with --installer-no-reboot, its
   * never-booted disk then booted directly (`vm start` → ready), the floor's cross-check.
   */
  pristine?: { seconds: number; wallSeconds: number; boot: BootFacts; load: number[] };
  /** 1, 5 and 15-minute load averages at the start of the run, of the floor, and at the end. */
  load: { start: number[]; floor: number[]; end: number[] };
}

export type ProvisionResult =
  | { skipped: string }
  | {
      name: string;
      baseline: string;
      goal: string;
      distro: string;
      arch: string;
      accel: string;
      runs: number;
      provisionSeconds: number;
      floorSeconds: number;
      ratio: number;
      phases: Phase[];
      installer: Phase[];
      perRun: ProvisionRun[];
      /** The same install served by the pxeboot_stack container in the provisioner VM. */
      container?: ContainerRun | { error: string };
    };

/** The containerised install (BENCH_PROVISION_CONTAINER=0 leaves it out). */
export interface ContainerRun {
  /** `vm start` called → `ready`, served by the container. */
  provisionSeconds: number;
  phases: Phase[];
  installer: Phase[];
  /** Against the floor and the native stack's install of this same run. */
  ratio: number;
  vsNative: number;
  /** What it takes to get there: the provisioner's start to cloud-init's end, the image, docker start. */
  setup: { provisionerStartSeconds: number; makeTarSeconds: number; dockerStartSeconds: number };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

/** Per name, the median of its seconds over the runs (in the first run's order). */
function medianPhases(lists: Phase[][]): Phase[] {
  return (lists[0] ?? []).map(({ name }) => ({
    name,
    seconds: median(lists.map((l) => l.find((p) => p.name === name)?.seconds ?? NaN)),
  }));
}

function env(home: string): NodeJS.ProcessEnv {
  const e: NodeJS.ProcessEnv = {
    ...process.env,
    PVMLAB_HOME: home,
    NO_COLOR: '1',
    // Only when to give up: under load a TCG install can pass the default 600 s.
    PVMLAB_WAIT_TIMEOUT: process.env.PVMLAB_WAIT_TIMEOUT ?? '1800',
  };
  for (const k of OFF_PATH) delete e[k];
  return e;
}

function pvmlab(home: string, ns: string | undefined, args: string[], timeoutMs = 120_000): Promise<Result> {
  const argv = ns
    ? ['ip', 'netns', 'exec', ns, process.execPath, BIN, ...args]
    : [process.execPath, BIN, ...args];
  return new Promise((res, rej) => {
    const child = spawn(argv[0] as string, argv.slice(1), {
      env: env(home),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', rej);
    child.on('close', (code) => {
      clearTimeout(timer);
      res({ code, stdout, stderr });
    });
  });
}

function since(t: bigint): number {
  return Number(process.hrtime.bigint() - t) / 1e9;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Parse BOOT_FACTS' output: systemd-analyze (and blame), then cloud-init analyze show and blame. */
export function parseBootFacts(out: string): BootFacts {
  const [systemdPart = '', cloudPart = '', blamePart = ''] = out.split('\n---\n');
  const lines = systemdPart.split('\n').map((l) => l.trim());
  const systemd = lines.find((l) => l.startsWith('Startup finished in'));
  // `37.455s cloud-init.service`, `1min 2.345s cloud-init.service`
  const blame = lines.filter((l) => /^(?:\d+min )?[\d.]+m?s \S+$/.test(l));
  const cloudInit: Phase[] = [];
  for (const m of cloudPart.matchAll(/Finished stage: \((\S+)\) ([\d.]+) seconds/g))
    cloudInit.push({ name: m[1] as string, seconds: Number(m[2]) });
  // `     05.84300s (init-network/config-ssh)`: cloud-init's slowest modules.
  const cloudInitBlame = blamePart
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => /^[\d.]+s \(/.test(l));
  return { ...(systemd ? { systemd } : {}), blame, cloudInit, cloudInitBlame };
}

export function provisionScenarioNeedsRoot(): string | undefined {
  return process.getuid?.() === 0
    ? undefined
    : 'the provision scenario needs root (a network namespace with a bridge, TAP devices, dnsmasq); run `npm run bench` as root';
}

export async function provisionScenario(
  runs: number,
  progress: (line: string) => void = (l) => console.error(l),
): Promise<ProvisionResult> {
  const why = provisionScenarioNeedsRoot();
  if (why) return { skipped: why };
  const home = await mkdtemp(join(tmpdir(), 'pvmlab-bench-provision-'));
  const app = join(home, '.pvmlab');
  const ns = `pvbench${process.pid}`.slice(0, 15);
  execFileSync('ip', ['netns', 'add', ns]);
  execFileSync('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
  /** Everything this scenario started lives in its namespace: end it there, then the rest. */
  const teardown = () => {
    try {
      const pids = execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' })
        .split(/\s+/)
        .filter(Boolean);
      for (const pid of pids) {
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch {
          /* already gone */
        }
      }
    } catch {
      /* no namespace */
    }
    try {
      execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
    } catch {
      /* already gone */
    }
    rmSync(home, { recursive: true, force: true });
  };
  const onSignal = (sig: NodeJS.Signals) => {
    teardown();
    process.kill(process.pid, sig);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  const cli = (args: string[], timeoutMs?: number) => pvmlab(home, ns, args, timeoutMs);
  /** The console's and the stack's last lines, for an error. */
  const context = (vm: string) => {
    const tail = (p: string) => (existsSync(p) ? readFileSync(p, 'utf8').slice(-2000) : `(no ${p})`);
    return `--- ${vm} console ---\n${tail(join(app, 'logs', `${vm}.log`))}\n--- stack ---\n${tail(join(app, 'logs', 'stack_serve.log'))}`;
  };
  const ok = async (args: string[], timeoutMs?: number): Promise<Result> => {
    const r = await cli(args, timeoutMs);
    if (r.code !== 0)
      throw new Error(
        `pvmlab ${args.join(' ')} exited ${r.code}:\n${r.stdout}${r.stderr}\n${context(args[0] === 'vm' ? (args[2] ?? VM) : VM)}`,
      );
    return r;
  };
  const shell = async (vm: string, command: string) => (await ok(['vm', 'shell', vm, '--', command])).stdout;
  const events = async (vm: string) =>
    JSON.parse((await ok(['vm', 'events', vm, '--json'])).stdout) as PhaseEvent[];
  /** Once the boot has finished (systemd-analyze fails until then), what the guest reports. */
  const bootFacts = async (vm: string): Promise<BootFacts> => {
    let last = '';
    for (let i = 0; i < 40; i++) {
      const r = await cli(['vm', 'shell', vm, '--', BOOT_FACTS]);
      if (r.code === 0) return parseBootFacts(r.stdout);
      last = `${r.stdout}${r.stderr}`.trim();
      await sleep(3000);
    }
    return { error: last };
  };
  /**
   * A direct boot of an installed disk (powered off), timed from `vm start` to its new `ready`,
   * checked to be a full cloud-init first boot: no network boot, cloud-init done, a machine-id
   * written again (the file was emptied; systemd derives it from the VM's stable SMBIOS UUID, so
   * it may equal `oldId`), the per-instance modules run (their semaphores were not there before).
   */
  const directBoot = async (vm: string, oldId: string) => {
    const at = new Date();
    const t = process.hrtime.bigint();
    // The disk boots first; were it to fall back to PXE, the stack's local-boot answer fails --wait.
    await ok(['vm', 'start', vm, '--wait'], START_TIMEOUT_MS);
    const wallSeconds = since(t);
    const after = (await events(vm)).filter((e) => Date.parse(e.at) >= at.getTime());
    const ready = after.find((e) => e.type === 'ready');
    if (!ready)
      throw new Error(`no new ready after ${vm}'s disk boot: ${after.map((e) => e.type).join(', ')}`);
    const network = after.filter((e) => e.type === 'http.ipxe' || e.type.startsWith('installer.'));
    if (network.length)
      throw new Error(`${vm}'s disk boot went to the network: ${network.map((e) => e.type).join(', ')}`);
    const boot = await bootFacts(vm);
    const status = (await shell(vm, 'cloud-init status')).trim();
    const machineId = (await shell(vm, 'cat /etc/machine-id')).trim();
    const sem = (await shell(vm, 'ls /var/lib/cloud/instance/sem')).split(/\s+/).filter(Boolean);
    const missing = PER_INSTANCE.filter((x) => !sem.includes(x));
    if (!/status: done/.test(status) || !machineId || missing.length)
      throw new Error(
        `${vm}'s disk boot was not a full first boot: ${status}; machine-id ${machineId || '(none)'} (before: ${oldId || '(none)'}); missing semaphores: ${missing.join(' ')}`,
      );
    return {
      seconds: (Date.parse(ready.at) - at.getTime()) / 1000,
      wallSeconds,
      boot,
      check: {
        cloudInit: status,
        machineIdChanged: machineId !== oldId,
        perInstance: PER_INSTANCE.filter((x) => sem.includes(x)),
        dhcp: after.some((e) => e.type === 'dhcp.ack'),
      },
    };
  };
  /** `vm stop`: how it went, `powered off` (ACPI) or `forced`. */
  const stop = async (vm: string, seconds: number) => {
    const r = await ok(['vm', 'stop', vm, '--timeout', String(seconds)], (seconds + 60) * 1000);
    return /powered off/.test(r.stderr) ? 'powered off' : 'forced';
  };

  /**
   * The same blank install, served by the pxeboot_stack container in the provisioner VM instead
   * of the native stack: the provisioner started, the image built, the container started, then
   * the subject timed as above.
   */
  const containerRun = async (floorSeconds: number, nativeSeconds: number): Promise<ContainerRun> => {
    await ok(['stack', 'stop']);
    await ok(['vm', 'clean', VM]);
    progress('provision (container): provisioner create (image from the cache, or built)');
    const ip = SUBNET.replace(/\.0\/24$/, '.1/24');
    const created = await pvmlab(home, undefined, ['provisioner', 'create', 'prov', '--ip', ip], 60 * 60_000);
    if (created.code !== 0) throw new Error(`provisioner create exited ${created.code}:\n${created.stderr}`);
    let t = process.hrtime.bigint();
    progress('provision (container): vm start prov --wait');
    await ok(['vm', 'start', 'prov', '--wait'], START_TIMEOUT_MS);
    const provisionerStartSeconds = since(t);
    t = process.hrtime.bigint();
    progress('provision (container): make -C pxeboot_stack tar');
    execFileSync('make', ['-C', 'pxeboot_stack', 'tar'], { stdio: ['ignore', 'ignore', 'pipe'] });
    const makeTarSeconds = since(t);
    t = process.hrtime.bigint();
    progress('provision (container): provisioner docker start');
    const tar = 'pxeboot_stack/pxeboot_stack.tar';
    await ok(['provisioner', 'docker', 'start', tar, '--network-host', '--privileged'], START_TIMEOUT_MS);
    const dockerStartSeconds = since(t);
    await ok(['vm', 'create', VM, '--pxeboot']);
    progress(`provision (container): vm start ${VM} --wait (load ${loadavg()[0]?.toFixed(2)})`);
    const startedAt = new Date();
    await ok(['vm', 'start', VM, '--wait'], START_TIMEOUT_MS);
    const p = provisionPhases(await events(VM), startedAt);
    if (p.phases.length !== 4 || p.total === undefined)
      throw new Error(`the timeline lacks a stretch: ${JSON.stringify(p)}`);
    progress(`provision (container): ${p.total.toFixed(1)} s (native ${nativeSeconds.toFixed(1)} s)`);
    return {
      provisionSeconds: p.total,
      phases: p.phases,
      installer: p.installer,
      ratio: p.total / floorSeconds,
      vsNative: p.total / nativeSeconds,
      setup: { provisionerStartSeconds, makeTarSeconds, dockerStartSeconds },
    };
  };

  try {
    // From the build cache (built there, from Debian's mirror, on a miss): outside the namespace.
    progress('provision: distro pull debian-12 (cache)');
    const pull = await pvmlab(home, undefined, ['distro', 'pull', '--distro', 'debian-12'], 60 * 60_000);
    if (pull.code !== 0) throw new Error(`distro pull exited ${pull.code}:\n${pull.stderr}`);
    await ok(['setup', '--bridge', BRIDGE, '--subnet', SUBNET]);
    await ok(['network', 'start']);
    await ok(['stack', 'start']);
    let arch = '';
    let accel = '';
    const perRun: ProvisionRun[] = [];
    for (let i = 0; i < runs; i++) {
      const tag = `provision run ${i + 1}/${runs}`;
      if (i > 0) await ok(['vm', 'clean', VM]);
      await ok(['vm', 'create', VM, '--pxeboot']);
      const load: ProvisionRun['load'] = { start: loadavg(), floor: [], end: [] };
      progress(`${tag}: vm start ${VM} --wait (load ${load.start[0]?.toFixed(2)})`);

      // The subject: a blank PXE target installed and first-booted to cloud-init's phone-home.
      const startedAt = new Date();
      const t = process.hrtime.bigint();
      const started = await ok(['vm', 'start', VM, '--wait'], START_TIMEOUT_MS);
      const provisionWallSeconds = since(t);
      const how = /Starting VM '[^']+' \(([^,]+), ([^,]+), PXE\)/.exec(started.stderr + started.stdout);
      arch = how?.[1] ?? arch;
      accel = how?.[2] ?? accel;
      const p = provisionPhases(await events(VM), startedAt);
      if (p.phases.length !== 4 || p.total === undefined)
        throw new Error(`the timeline lacks a stretch: ${JSON.stringify(p)}`);
      const firstBoot = await bootFacts(VM);
      const firstId = (await shell(VM, 'cat /etc/machine-id')).trim();

      // The floor: the same disk put back as the installer left it, powered off, booted directly.
      load.floor = loadavg();
      progress(`${tag}: floor, ${VM}'s disk booted directly (load ${load.floor[0]?.toFixed(2)})`);
      await shell(VM, FLOOR_RESET);
      const stopped = await stop(VM, 300);
      const floor = await directBoot(VM, firstId);
      await stop(VM, 60);

      // Optional cross-check: a never-booted installed disk (installer left at its shell).
      let pristine: ProvisionRun['pristine'];
      if (process.env.BENCH_PROVISION_PRISTINE === '1') {
        progress(`${tag}: pristine floor, ${PRISTINE_VM} installed without reboot, then booted`);
        await ok(['vm', 'create', PRISTINE_VM, '--pxeboot']);
        await ok(['vm', 'start', PRISTINE_VM, '--installer-no-reboot']);
        const deadline = Date.now() + START_TIMEOUT_MS;
        for (;;) {
          const evs = await events(PRISTINE_VM);
          if (evs.some((e) => e.type === 'installer.done')) break;
          if (evs.some((e) => e.type === 'installer.failed') || Date.now() > deadline)
            throw new Error(`${PRISTINE_VM}'s install: ${evs.map((e) => e.type).join(', ')}`);
          await sleep(2000);
        }
        // The installer has unmounted and synced the disk before it reports done.
        await stop(PRISTINE_VM, 5);
        const load0 = loadavg();
        const b = await directBoot(PRISTINE_VM, '');
        pristine = { seconds: b.seconds, wallSeconds: b.wallSeconds, boot: b.boot, load: load0 };
        await ok(['vm', 'clean', PRISTINE_VM]);
      }

      load.end = loadavg();
      const run: ProvisionRun = {
        provisionSeconds: p.total,
        provisionWallSeconds,
        phases: p.phases,
        installer: p.installer,
        floorSeconds: floor.seconds,
        floorWallSeconds: floor.wallSeconds,
        ratio: p.total / floor.seconds,
        stop: stopped,
        firstBoot,
        floorBoot: floor.boot,
        floorCheck: floor.check,
        ...(pristine ? { pristine } : {}),
        load,
      };
      perRun.push(run);
      progress(
        `${tag}: ${run.provisionSeconds.toFixed(1)} s vs floor ${run.floorSeconds.toFixed(1)} s = ${run.ratio.toFixed(2)}x${pristine ? ` (pristine floor ${pristine.seconds.toFixed(1)} s)` : ''} (load ${load.end[0]?.toFixed(2)})`,
      );
    }
    const floorMedian = median(perRun.map((r) => r.floorSeconds));
    const nativeMedian = median(perRun.map((r) => r.provisionSeconds));
    let container: ContainerRun | { error: string } | undefined;
    if (process.env.BENCH_PROVISION_CONTAINER !== '0') {
      try {
        container = await containerRun(floorMedian, nativeMedian);
      } catch (err) {
        container = { error: (err as Error).message.slice(0, 2000) };
        progress(`provision (container): failed: ${container.error}`);
      }
    }
    return {
      name: 'provision: vm start --wait → ready, blank PXE target (debian-12)',
      baseline: "the installed disk booted directly to cloud-init's end (floor)",
      goal: 'ratio <= 1.5',
      distro: 'debian-12',
      arch,
      accel,
      runs,
      provisionSeconds: median(perRun.map((r) => r.provisionSeconds)),
      floorSeconds: median(perRun.map((r) => r.floorSeconds)),
      ratio: median(perRun.map((r) => r.ratio)),
      phases: medianPhases(perRun.map((r) => r.phases)),
      installer: medianPhases(perRun.map((r) => r.installer)),
      perRun,
      ...(container ? { container } : {}),
    };
  } finally {
    await cli(['clean'], 180_000).catch(() => undefined);
    teardown();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

/** The report's lines for this scenario. */
export function formatProvision(r: ProvisionResult): string[] {
  if ('skipped' in r) return [`provision: skipped: ${r.skipped}`];
  const part = (x: Phase) => `${x.name} ${x.seconds.toFixed(1)} s`;
  const load = (l: number[]) => (l[0] ?? 0).toFixed(2);
  const lines = [
    `${r.name}, ${r.arch}, ${r.accel}, median of ${r.runs}: ${r.provisionSeconds.toFixed(1)} s vs ${r.baseline} ${r.floorSeconds.toFixed(1)} s = ${r.ratio.toFixed(2)}x (${r.goal})`,
    `  stretches: ${r.phases.map(part).join(' | ')}`,
    `  installer: ${r.installer.map(part).join(', ')}`,
  ];
  r.perRun.forEach((x, i) => {
    const stretch = (name: string) => x.phases.find((p) => p.name === name)?.seconds ?? 0;
    const pxe = stretch('firmware + DHCP') + stretch('iPXE + downloads');
    lines.push(
      `  run ${i + 1} (load ${load(x.load.start)}, floor at ${load(x.load.floor)}, end ${load(x.load.end)} on ${availableParallelism()} CPUs): ${x.provisionSeconds.toFixed(1)} s vs ${x.floorSeconds.toFixed(1)} s = ${x.ratio.toFixed(2)}x; over the floor ${(x.provisionSeconds - x.floorSeconds).toFixed(1)} s = firmware, DHCP, iPXE ${pxe.toFixed(1)} s + installer ${stretch('installer').toFixed(1)} s + first boot over the floor ${(stretch('first boot + cloud-init') - x.floorSeconds).toFixed(1)} s`,
      `    first boot: ${x.firstBoot.systemd ?? x.firstBoot.error ?? '?'}; cloud-init ${(x.firstBoot.cloudInit ?? []).map(part).join(', ')}`,
      `    floor boot: ${x.floorBoot.systemd ?? x.floorBoot.error ?? '?'}; cloud-init ${(x.floorBoot.cloudInit ?? []).map(part).join(', ')}`,
    );
    if (x.pristine)
      lines.push(
        `    pristine floor (never-booted disk, load ${load(x.pristine.load)}): ${x.pristine.seconds.toFixed(1)} s; ${x.pristine.boot.systemd ?? x.pristine.boot.error ?? '?'}`,
      );
  });
  const c = r.container;
  if (c && 'error' in c)
    lines.push(`  through the provisioner's container: failed: ${c.error.split('\n')[0] ?? ''}`);
  else if (c)
    lines.push(
      `  through the provisioner's container: ${c.provisionSeconds.toFixed(1)} s = ${c.ratio.toFixed(2)}x the floor, ${c.vsNative.toFixed(2)}x the native stack; stretches: ${c.phases.map(part).join(' | ')}`,
      `    setup: provisioner start ${c.setup.provisionerStartSeconds.toFixed(1)} s, make tar ${c.setup.makeTarSeconds.toFixed(1)} s, docker start ${c.setup.dockerStartSeconds.toFixed(1)} s`,
    );
  return lines;
}
