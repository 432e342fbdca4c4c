/**
 * Where a PXE install's time went, from a machine's timeline: the four stretches a user waits
 * through (firmware + DHCP, iPXE + downloads, the installer, first boot + cloud-init) and the
 * installer's own phases. Pure; used by `vm events --phases`, the e2e tests and the benchmark.
 */
export interface PhaseEvent {
  at: string;
  type: string;
  detail?: Record<string, string | number | boolean>;
}

export interface Phase {
  name: string;
  seconds: number;
}

export interface ProvisionPhases {
  /** The four stretches, in order; a stretch whose end is missing is left out. */
  phases: Phase[];
  /** installer.<phase> events with their own `seconds`: disk, rootfs, seed, bootloader. */
  installer: Phase[];
  /** First event (or `since`) to `ready`, when there is one. */
  total?: number;
}

const INSTALLER_PHASES = ['disk', 'rootfs', 'seed', 'bootloader'];

/**
 * The last install on a timeline: the last `http.ipxe` install script at or after `since` and
 * what followed it. `since` (e.g. when `vm start` ran) is the start of the first stretch; without
 * it, the first DHCP discover of that boot.
 */
export function provisionPhases(events: readonly PhaseEvent[], since?: Date): ProvisionPhases {
  const t = (e: PhaseEvent) => Date.parse(e.at);
  const from = since?.getTime() ?? -Infinity;
  const recent = events.filter((e) => t(e) >= from);
  const installIdx = recent
    .map((e) => e.type === 'http.ipxe' && e.detail?.script === 'install')
    .lastIndexOf(true);
  if (installIdx < 0) return { phases: [], installer: [] };
  // This boot's firmware DHCP: the discovers just before the install script, after any earlier ready.
  let startIdx = installIdx;
  for (let i = installIdx - 1; i >= 0; i--) {
    const e = recent[i] as PhaseEvent;
    if (e.type === 'ready' || e.type.startsWith('installer.')) break;
    if (e.type === 'dhcp.discover') startIdx = i;
  }
  const after = recent.slice(installIdx);
  const find = (type: string) => after.find((e) => e.type === type);
  const start = since ? since.getTime() : t(recent[startIdx] as PhaseEvent);
  const marks: [string, PhaseEvent | undefined][] = [
    ['firmware + DHCP', recent.slice(startIdx, installIdx).find((e) => e.type === 'tftp.sent')],
    ['iPXE + downloads', find('installer.started')],
    ['installer', find('installer.done')],
    ['first boot + cloud-init', find('ready')],
  ];
  const phases: Phase[] = [];
  let prev = start;
  for (const [name, e] of marks) {
    if (!e) break;
    phases.push({ name, seconds: (t(e) - prev) / 1000 });
    prev = t(e);
  }
  const installer: Phase[] = [];
  for (const p of INSTALLER_PHASES) {
    // rootfs reports progress too: the phase's last event carries its seconds.
    const last = [...after]
      .reverse()
      .find((x) => x.type === `installer.${p}` && typeof x.detail?.seconds === 'number');
    if (last) installer.push({ name: p, seconds: last.detail?.seconds as number });
  }
  const ready = find('ready');
  return { phases, installer, ...(ready ? { total: (t(ready) - start) / 1000 } : {}) };
}

/** `firmware + DHCP 7.6 s | iPXE + downloads 3.5 s | ...` */
export function formatPhases(p: ProvisionPhases): string {
  const part = (x: Phase) => `${x.name} ${x.seconds.toFixed(1)} s`;
  const lines = [p.phases.map(part).join(' | ')];
  if (p.installer.length) lines.push(`installer: ${p.installer.map(part).join(', ')}`);
  if (p.total !== undefined) lines.push(`total ${p.total.toFixed(1)} s`);
  return lines.join('\n');
}
