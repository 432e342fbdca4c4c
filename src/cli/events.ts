import { PvmlabError } from '../core/errors.js';
import { log } from '../core/log.js';
import type { VmDefinition } from '../core/vmdef.js';
import { loadLabConfig } from '../lab/config.js';
import { listVms } from '../lab/store.js';
import type { Context } from './context.js';

/** A timeline event as the stack's API returns it. */
export interface StackEvent {
  at: string;
  mac: string;
  type: string;
  source: string;
  detail?: Record<string, string | number | boolean>;
}

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
  const r = await stackFetch(`${await stackUrl(ctx)}/api/machines/${vm.mac}/timeline`);
  return ((await r.json()) as { events: StackEvent[] }).events;
}

/** `10:02:03.456  +12.3s  dhcp.ack        ip=10.0.0.2 ...` */
export function formatEvent(ev: StackEvent, first: StackEvent | undefined): string {
  const t = ev.at.slice(11, 23);
  const rel = first ? `+${((Date.parse(ev.at) - Date.parse(first.at)) / 1000).toFixed(1)}s` : '';
  const detail = Object.entries(ev.detail ?? {})
    .map(([k, v]) => `${k}=${String(v)}`)
    .join(' ');
  return `${t}  ${rel.padStart(8)}  ${ev.type.padEnd(18)} ${detail}`.trimEnd();
}

/** Print the timeline; with `follow`, keep printing until 'ready' or Ctrl-C. */
export async function showEvents(
  ctx: Context,
  vm: VmDefinition,
  o: { follow: boolean; json: boolean },
): Promise<void> {
  if (!vm.mac) throw new PvmlabError(`VM '${vm.name}' has no MAC address`);
  const base = await stackUrl(ctx);
  if (!o.follow) {
    const events = await fetchTimeline(ctx, vm);
    if (o.json) return log.out(JSON.stringify(events, null, 2));
    if (events.length === 0) return log.info(`No events for ${vm.name} yet.`);
    for (const ev of events) log.out(formatEvent(ev, events[0]));
    return;
  }
  const abort = new AbortController();
  process.once('SIGINT', () => abort.abort());
  const r = await stackFetch(`${base}/api/machines/${vm.mac}/timeline?follow=1`, abort.signal);
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
        const ev = JSON.parse(line) as StackEvent;
        first ??= ev;
        log.out(o.json ? JSON.stringify(ev) : formatEvent(ev, first));
      }
    }
  } catch (err) {
    if (!abort.signal.aborted) throw err;
  }
}

/** `vm start --wait` for a PXE VM: wait for a 'ready' event newer than `since`. */
export async function waitForReady(
  ctx: Context,
  vm: VmDefinition,
  since: Date,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  log.info(
    `Waiting for ${vm.name} to be installed and report ready (up to ${Math.round(timeoutMs / 1000)} s)`,
  );
  let lastType = '';
  while (Date.now() < deadline) {
    const events = await fetchTimeline(ctx, vm).catch((err: Error) => {
      lastType = err.message;
      return [] as StackEvent[];
    });
    const fresh = events.filter((e) => Date.parse(e.at) >= since.getTime());
    if (fresh.some((e) => e.type === 'ready')) return;
    const failed = fresh.find((e) => e.type === 'installer.failed');
    if (failed)
      throw new PvmlabError(`the installer on ${vm.name} failed: ${JSON.stringify(failed.detail ?? {})}`);
    if (fresh.length) lastType = fresh[fresh.length - 1]?.type ?? lastType;
    await new Promise((r) => setTimeout(r, 2000));
  }
  throw new PvmlabError(
    `timed out waiting for ${vm.name} to be ready${lastType ? ` (last: ${lastType})` : ''}`,
  );
}
