import type { VmDefinition } from '../../core/vmdef.js';
import {
  HttpError,
  byMethod,
  readBody,
  sendJson,
  type Handler,
  type Route,
  type RouteContext,
} from '../http-core.js';
import { normalizeMacKey } from '../registry.js';
import { TimelineWriteError, type TimelineEvent } from '../timeline.js';
import type { BootContext } from './context.js';

const EVENT_TYPE_RE = /^[a-z][a-z0-9_.-]{0,63}$/;
/** A key of a POSTed event's detail (what the installer and cloud-init send). */
const DETAIL_KEY_RE = /^[A-Za-z][A-Za-z0-9_.-]{0,63}$/;
/** At most this many keys of a detail are kept. */
const DETAIL_KEYS_MAX = 64;

type Detail = Record<string, string | number | boolean>;

/**
 * A POSTed detail's scalar values, under keys that are plain names: never `__proto__`, nor a
 * name every object inherits (`constructor`, `toString`), which readers of the event would
 * confuse with the object's own machinery.
 */
export function cleanDetail(raw: object): Detail {
  const detail: Detail = {};
  let n = 0;
  for (const [k, v] of Object.entries(raw)) {
    if (n >= DETAIL_KEYS_MAX) break;
    if (!DETAIL_KEY_RE.test(k) || k in Object.prototype) continue;
    if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') {
      detail[k] = v;
      n++;
    }
  }
  return detail;
}

type MachineHandler = (c: RouteContext, m: { mac: string; vm: VmDefinition }) => void | Promise<void>;

/** The lab API: machines, their timelines, and what installers and cloud-init report. */
export function apiRoutes(x: BootContext): Route[] {
  /** Routes under /api/machines/<mac>/: the machine first (400/404), then the method (405). */
  const machineRoute = (handlers: Partial<Record<'GET' | 'POST', MachineHandler>>): Handler => {
    return (c) => {
      const m = x.machineFor(c.params[0]);
      const bound: Partial<Record<'GET' | 'POST', Handler>> = {};
      for (const k of ['GET', 'POST'] as const) {
        const h = handlers[k];
        if (h) bound[k] = (cc) => h(cc, m);
      }
      return byMethod(bound)(c);
    };
  };

  /** Record a reported event once it is on disk: 201 means it survives a crash or restart. */
  async function durable(
    mac: string,
    type: string,
    source: TimelineEvent['source'],
    detail: Detail,
  ): Promise<TimelineEvent> {
    if (!x.eventLimiter.take(mac))
      throw new HttpError(429, `too many events for ${mac}; slow down`, { 'Retry-After': 1 });
    try {
      return await x.timeline.addDurable(mac, type, source, detail);
    } catch (err) {
      if (!(err instanceof TimelineWriteError)) throw err;
      throw new HttpError(503, `${err.message}; the event is not recorded, send it again`, {
        'Retry-After': 5,
      });
    }
  }

  function health({ res }: RouteContext): void {
    const t = x.timeline.status();
    const body = {
      ok: t.ok,
      machines: x.machines.all().length,
      timeline: { ok: t.ok, ...(t.error ? { error: t.error } : {}) },
      ...x.health(),
    };
    // 503 while something the lab depends on is down: a load balancer or `curl -f` sees it too.
    sendJson(res, body.ok ? 200 : 503, body);
  }

  function machines({ res }: RouteContext): void {
    sendJson(
      res,
      200,
      x.machines.all().map((vm) => {
        const mac = vm.mac ? normalizeMacKey(vm.mac) : undefined;
        const events = mac ? x.timeline.list(mac) : [];
        const last = events[events.length - 1];
        return {
          name: vm.name,
          mac: mac ?? null,
          ip: vm.ip ?? null,
          arch: vm.arch,
          distro: vm.distro ?? null,
          pxeboot: vm.pxeboot === true,
          ready: mac ? x.timeline.last(mac, 'ready') !== undefined : false,
          last_event: last ? { type: last.type, at: last.at } : null,
        };
      }),
    );
  }

  const timeline: MachineHandler = ({ req, res, url }, { mac, vm }) => {
    if (url.searchParams.get('follow') !== '1')
      return sendJson(res, 200, { name: vm.name, mac, events: x.timeline.list(mac) });
    x.followers.follow(req, res, mac);
  };

  const postEvent: MachineHandler = async ({ req, res }, { mac }) => {
    const body = await readBody(req, x.maxBody);
    let parsed: unknown;
    try {
      parsed = JSON.parse(body);
    } catch {
      throw new HttpError(400, 'body is not JSON');
    }
    // `null` or a bare string is valid JSON too: a 400 below, not a TypeError (500).
    const p = (typeof parsed === 'object' && parsed !== null ? parsed : {}) as {
      type?: unknown;
      detail?: unknown;
    };
    const type = Object.hasOwn(p, 'type') ? p.type : undefined;
    if (typeof type !== 'string' || !EVENT_TYPE_RE.test(type))
      throw new HttpError(400, 'type must match [a-z][a-z0-9_.-]{0,63}');
    const rawDetail = Object.hasOwn(p, 'detail') ? p.detail : undefined;
    if (
      rawDetail !== undefined &&
      (typeof rawDetail !== 'object' || rawDetail === null || Array.isArray(rawDetail))
    )
      throw new HttpError(400, 'detail must be an object');
    const detail = rawDetail ? cleanDetail(rawDetail) : {};
    const source = type === 'ready' ? 'cloud-init' : type.startsWith('installer.') ? 'installer' : 'stack';
    sendJson(res, 201, await durable(mac, type, source, detail));
  };

  const phoneHome: MachineHandler = async ({ req, res }, { mac }) => {
    const form = new URLSearchParams(await readBody(req, x.maxBody));
    const detail: Detail = {};
    for (const k of ['instance_id', 'hostname']) {
      const v = form.get(k);
      if (v) detail[k] = v.slice(0, 255);
    }
    sendJson(res, 201, await durable(mac, 'ready', 'cloud-init', detail));
  };

  return [
    { method: 'GET', path: '/healthz', handler: health },
    { method: 'GET', path: '/api/machines', handler: machines },
    { method: '*', path: /^\/api\/machines\/([^/]+)\/timeline$/, handler: machineRoute({ GET: timeline }) },
    { method: '*', path: /^\/api\/machines\/([^/]+)\/events$/, handler: machineRoute({ POST: postEvent }) },
    {
      method: '*',
      path: /^\/api\/machines\/([^/]+)\/phone-home$/,
      handler: machineRoute({ POST: phoneHome }),
    },
  ];
}
