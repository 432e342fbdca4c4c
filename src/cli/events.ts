import { PvmlabError } from '../core/errors.js';
import { log } from '../core/log.js';
import type { VmDefinition } from '../core/vmdef.js';
import { loadLabConfig } from '../lab/config.js';
import { listVms } from '../lab/store.js';
import type { Context } from './context.js';
import { vmStuckCheck, type StuckCheck } from './wait.js';
import { jsonText, safeText } from '../core/safe-text.js';
import {
  StackAnswerError,
  StackEventSchema,
  TimelineSchema,
  parseStackJson,
  type StackEvent,
} from './stack-api.js';

export type { StackEvent } from './stack-api.js';

/** The stack's base URL: PVMLAB_STACK_URL, else the provisioner's address (lab.yaml or its VM). */
export async function stackUrl(ctx: Context): Promise<string> {
  if (ctx.env.PVMLAB_STACK_URL) return ctx.env.PVMLAB_STACK_URL.replace(/\/+$/, '');
  const { vms } = await listVms(ctx.app);
  const prov = vms.find((v) => v.role === 'provisioner');
  return `http://${prov?.ip ?? (await loadLabConfig(ctx.app)).provisioner_ip}`;
}

async function stackFetch(url: string, signal?: AbortSignal): Promise<Response> {
  try {
    const r = await fetch(url, signal ? { signal } : {});
    if (r.status === 404) throw new PvmlabError(`the stack does not know this machine (${url})`);
    if (!r.ok) throw new PvmlabError(`the stack answered ${r.status} for ${url}`);
    return r;
  } catch (err) {
    if (err instanceof PvmlabError) throw err;
    throw new PvmlabError(
      `cannot reach the pxeboot stack at ${url}: ${(err as Error).message}; is it running?`,
    );
  }
}

export async function fetchTimeline(ctx: Context, vm: VmDefinition): Promise<StackEvent[]> {
  if (!vm.mac) throw new PvmlabError(`VM '${vm.name}' has no MAC address`);
  const url = `${await stackUrl(ctx)}/api/machines/${vm.mac}/timeline`;
  const r = await stackFetch(url);
  const text = await r.text().catch((err: Error) => {
    throw new PvmlabError(`reading the answer of the stack at ${url} failed: ${err.message}; is it running?`);
  });
  return parseStackJson(TimelineSchema, text, url, 'a timeline').events;
}

/**
 * The event with every string it carries made safe for a terminal: any lab client can POST
 * events, with escape sequences or newlines in the type or the details. For human output only.
 */
export function displayEvent(ev: StackEvent): StackEvent {
  return {
    at: safeText(ev.at),
    mac: safeText(ev.mac),
    type: safeText(ev.type),
    source: safeText(ev.source),
    ...(ev.detail
      ? {
          detail: Object.fromEntries(
            Object.entries(ev.detail).map(([k, v]) => [safeText(k), typeof v === 'string' ? safeText(v) : v]),
          ),
        }
      : {}),
  };
}

/** `k=v k=v`, escaped for a terminal. */
function details(ev: StackEvent): string {
  return Object.entries(ev.detail ?? {})
    .map(([k, v]) => `${safeText(k)}=${safeText(String(v))}`)
    .join(' ');
}

/** `10:02:03.456  +12.3s  dhcp.ack        ip=10.0.0.2 ...` */
export function formatEvent(ev: StackEvent, first: StackEvent | undefined): string {
  const t = safeText(ev.at.slice(11, 23));
  const rel = first ? `+${((Date.parse(ev.at) - Date.parse(first.at)) / 1000).toFixed(1)}s` : '';
  return `${t}  ${rel.padStart(8)}  ${safeText(ev.type).padEnd(18)} ${details(ev)}`.trimEnd();
}

/** Print the timeline; with `follow`, keep printing until 'ready' or Ctrl-C. */
/** `vm events --phases`: the last install's stretches and installer phases, from the timeline. */
export async function showPhases(ctx: Context, vm: VmDefinition, json: boolean): Promise<void> {
  const { formatPhases, provisionPhases } = await import('../stack/phases.js');
  const events = await fetchTimeline(ctx, vm);
  if (json) return log.out(jsonText(provisionPhases(events), 2));
  // The phases quote event types and details: computed from escaped events for the terminal.
  const p = provisionPhases(events.map(displayEvent));
  if (p.phases.length === 0) return log.info(`No install of ${vm.name} on its timeline yet.`);
  log.out(formatPhases(p));
}

export async function showEvents(
  ctx: Context,
  vm: VmDefinition,
  o: { follow: boolean; json: boolean },
): Promise<void> {
  if (!vm.mac) throw new PvmlabError(`VM '${vm.name}' has no MAC address`);
  const base = await stackUrl(ctx);
  if (!o.follow) {
    const events = await fetchTimeline(ctx, vm);
    if (o.json) return log.out(jsonText(events, 2));
    if (events.length === 0) return log.info(`No events for ${vm.name} yet.`);
    for (const ev of events) log.out(formatEvent(ev, events[0]));
    return;
  }
  const abort = new AbortController();
  process.once('SIGINT', () => abort.abort());
  const url = `${base}/api/machines/${vm.mac}/timeline?follow=1`;
  const r = await stackFetch(url, abort.signal);
  let first: StackEvent | undefined;
  let buf = '';
  const decoder = new TextDecoder();
  try {
    for await (const chunk of r.body as unknown as AsyncIterable<Uint8Array>) {
      buf += decoder.decode(chunk, { stream: true });
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (!line.trim()) continue;
        const ev = parseStackJson(StackEventSchema, line, url, 'a timeline line');
        first ??= ev;
        log.out(o.json ? jsonText(ev) : formatEvent(ev, first));
      }
    }
    // The last line may come without its newline when the stack closes the stream.
    if (buf.trim()) {
      const ev = parseStackJson(StackEventSchema, buf, url, 'a timeline line');
      log.out(o.json ? jsonText(ev) : formatEvent(ev, first ?? ev));
    }
  } catch (err) {
    if (!abort.signal.aborted) throw err;
  }
}

/** Files under these roots are what a network install loads: kernel, initrds, modules, rootfs. */
const BOOT_ASSET_RE = /^\/(?:images|initrds)\//;

/**
 * Why this event means the installation `vm start --wait` waits for cannot succeed, or undefined:
 * the installer failed, an iPXE step failed, the boot server had an error for a file the boot
 * needs, or the stack chose not to install the machine at all.
 */
export function installBlocker(vm: VmDefinition, ev: StackEvent): string | undefined {
  const d = ev.detail ?? {};
  const what =
    ev.detail && Object.keys(ev.detail).length
      ? `(${safeText(ev.type)}: ${details(ev)})`
      : `(${safeText(ev.type)})`;
  switch (ev.type) {
    case 'installer.failed':
      return `the installer on ${vm.name} failed ${what}`;
    case 'ipxe.failed': {
      const step =
        d.step === 'kernel'
          ? 'load the kernel'
          : d.step === 'initrd'
            ? `load the initrd${d.file ? ` ${safeText(String(d.file))}` : ''}`
            : d.step === 'boot'
              ? 'boot the kernel'
              : `complete step ${safeText(String(d.step))}`;
      return `iPXE on ${vm.name} could not ${step} ${what}`;
    }
    case 'http.error':
      // 416: a range past the end of a file that is there (a resumed download), not a missing file.
      if (typeof d.path !== 'string' || !BOOT_ASSET_RE.test(d.path) || d.status === 416) return undefined;
      return `the boot server could not serve ${vm.name} a file its boot needs ${what}`;
    case 'http.ipxe':
      if (d.script === 'nothing-to-boot') return `the stack has no distro to install on ${vm.name} ${what}`;
      if (d.script !== 'local-boot') return undefined;
      return d.reason === 'disk-vm'
        ? `${vm.name} is not a PXE VM: the stack does not install it and sent it back to its disk ${what}`
        : `${vm.name} is installed: the stack sent it to its disk instead of installing it again ${what}`;
    default:
      return undefined;
  }
}

/**
 * `vm start --wait` for a PXE VM: wait for a 'ready' event newer than `since`; fail as soon as a
 * newer event says the installation cannot succeed (see `installBlocker`).
 */
/**
 * `ready`: cloud-init phoned home. `installed`: the installer finished and, as asked with
 * --installer-no-reboot, stays at its shell instead of rebooting (no `ready` will come).
 */
export type WaitOutcome = 'ready' | 'installed';

export async function waitForReady(
  ctx: Context,
  vm: VmDefinition,
  since: Date,
  timeoutMs: number,
  pollMs = 2000,
  stuck: StuckCheck = vmStuckCheck(ctx, vm),
): Promise<WaitOutcome> {
  const deadline = Date.now() + timeoutMs;
  log.info(
    `Waiting for ${vm.name} to be installed and report ready (up to ${Math.round(timeoutMs / 1000)} s)`,
  );
  let lastType = '';
  while (Date.now() < deadline) {
    const events = await fetchTimeline(ctx, vm).catch((err: Error) => {
      // An answer that is not a timeline will not become one: fail now, not at the timeout.
      if (err instanceof StackAnswerError) throw err;
      lastType = err.message;
      return [] as StackEvent[];
    });
    const fresh = events.filter((e) => Date.parse(e.at) >= since.getTime());
    if (fresh.some((e) => e.type === 'ready')) return 'ready';
    if (fresh.some((e) => e.type === 'installer.done' && e.detail?.reboot === false)) return 'installed';
    for (const e of fresh) {
      const blocker = installBlocker(vm, e);
      if (blocker) throw new PvmlabError(`${blocker}; see: pvmlab vm events ${vm.name}`);
    }
    if (fresh.length) lastType = safeText(fresh[fresh.length - 1]?.type ?? lastType);
    const why = await stuck();
    if (why)
      throw new PvmlabError(`${vm.name} will not become ready: ${why}; see: pvmlab vm events ${vm.name}`);
    await new Promise((r) => setTimeout(r, Math.max(0, Math.min(pollMs, deadline - Date.now()))));
  }
  throw new PvmlabError(
    `timed out waiting for ${vm.name} to be ready${lastType ? ` (last: ${lastType})` : ''}`,
  );
}
