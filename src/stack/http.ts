import { existsSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { VmDefinition } from '../core/vmdef.js';
import { watchAccess } from './access-log.js';
import { DistroAssets } from './assets.js';
import { HttpError, matchRoute, send, type Route } from './http-core.js';
import { Followers } from './http-follow.js';
import { RateLimiter } from './http-limit.js';
import { normalizeMacKey } from './registry.js';
import { apiRoutes } from './routes/api.js';
import { bootRoutes } from './routes/boot.js';
import type { BootContext } from './routes/context.js';
import { ERROR_PATH_MAX, fileRoutes } from './routes/files.js';
import type { Timeline } from './timeline.js';

export { HttpError, parseRange, safeJoin } from './http-core.js';
export { ipxeErrno } from './routes/boot.js';

export interface MachineLookup {
  byMac(mac: string): VmDefinition | undefined;
  byName(name: string): VmDefinition | undefined;
  all(): VmDefinition[];
}

export interface BootServerOptions {
  machines: MachineLookup;
  timeline: Timeline;
  /** Distro assets: /images/<distro>/<arch>/{kernel,initrd,modules.cpio.gz,rootfs.tar.gz}. */
  imagesDir: string;
  /** Installer initrds: /initrds/<arch>/initrd.gz. */
  initrdsDir: string;
  /** Where `<name>.noreboot` and `<name>.reinstall` markers live (the VM definitions' directory). */
  vmsDir: string;
  /** The MAC behind a client address (DHCP leases, reservations). */
  macForIp?: (ip: string) => string | undefined;
  health?: () => Record<string, unknown>;
  maxBodyBytes?: number;
  /**
   * How long the answer to "does this marker or asset exist" is reused (default 1000 ms):
   * every /ipxe request asks, and the stat calls were a quarter of its CPU time.
   */
  existsCacheMs?: number;
  /** Concurrent `?follow=1` timeline streams (default 64); more are answered 503. */
  maxFollowers?: number;
  /** Bytes a follower may leave unread before it is disconnected (default 1 MiB). */
  maxFollowerBufferBytes?: number;
  /** POSTed events (events and phone-home) per machine: a burst, then a rate; beyond, 429. */
  eventRate?: { perSecond: number; burst: number };
  log?: (msg: string) => void;
  /** One line per request (client, method, target, status, length, time): the container's access log. */
  accessLog?: (line: string) => void;
}

/** existsSync with a short memory. */
export function cachedExists(ttlMs: number, now: () => number = Date.now): (path: string) => boolean {
  const seen = new Map<string, { exists: boolean; at: number }>();
  return (path) => {
    if (ttlMs <= 0) return existsSync(path);
    const t = now();
    const hit = seen.get(path);
    if (hit && t - hit.at < ttlMs) return hit.exists;
    const exists = existsSync(path);
    if (seen.size >= 10_000) seen.clear(); // bounded: paths come from VM names and distros
    seen.set(path, { exists, at: t });
    return exists;
  };
}

const HOST_RE = /^[A-Za-z0-9.:[\]-]{1,255}$/;

/** The shared helpers the routes are built on. */
function bootContext(o: BootServerOptions): BootContext {
  const log = o.log ?? (() => undefined);
  const x: BootContext = {
    machines: o.machines,
    timeline: o.timeline,
    imagesDir: o.imagesDir,
    initrdsDir: o.initrdsDir,
    vmsDir: o.vmsDir,
    maxBody: o.maxBodyBytes ?? 16 * 1024,
    exists: cachedExists(o.existsCacheMs ?? 1000),
    distros: new DistroAssets(o.imagesDir, o.existsCacheMs ?? 1000, o.log),
    followers: new Followers(
      o.timeline,
      { maxFollowers: o.maxFollowers ?? 64, maxBufferBytes: o.maxFollowerBufferBytes ?? 1 << 20 },
      log,
    ),
    eventLimiter: new RateLimiter(o.eventRate?.perSecond ?? 50, o.eventRate?.burst ?? 500),
    health: () => o.health?.() ?? {},
    log,
    clientMac(req) {
      const ip = (req.socket.remoteAddress ?? '').replace(/^::ffff:/, '');
      return o.macForIp?.(ip);
    },
    baseUrl(req) {
      const host = req.headers.host;
      if (host && HOST_RE.test(host)) return `http://${host}`;
      const a = req.socket.localAddress ?? '127.0.0.1';
      return `http://${a.includes(':') && !a.startsWith('::ffff:') ? `[${a}]` : a.replace(/^::ffff:/, '')}:${req.socket.localPort}`;
    },
    machineFor(macParam) {
      const mac = macParam ? normalizeMacKey(macParam) : undefined;
      if (!mac) throw new HttpError(400, `malformed MAC address '${macParam ?? ''}'`);
      const vm = o.machines.byMac(mac);
      if (!vm) throw new HttpError(404, `no VM with MAC ${mac} in this lab`);
      return { mac, vm };
    },
    record(mac, type, detail) {
      if (mac) o.timeline.add(mac, type, 'http', detail);
    },
  };
  return x;
}

/**
 * The HTTP half of the stack: iPXE scripts, installer config, cloud-init, assets, the timeline
 * API. One route table; each route is a small handler (src/stack/routes/*.ts), and what they
 * share (errors, bodies, safe paths, streaming) is in http-core.ts.
 */
export function createBootServer(o: BootServerOptions): Server {
  const x = bootContext(o);
  const routes: Route[] = [...apiRoutes(x), ...bootRoutes(x), ...fileRoutes(x)];

  async function dispatch(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://stack');
    const method = req.method ?? 'GET';
    const hit = matchRoute(routes, method, url.pathname);
    if (!hit) throw new HttpError(404, `no route for ${method} ${url.pathname}`);
    const [route, params] = hit;
    await route.handler({ req, res, url, method, params });
  }

  /** A client that is a known machine got an error answer: on its timeline, with the path it asked for. */
  const recordError = (req: IncomingMessage, status: number) => {
    try {
      const mac = x.clientMac(req);
      if (!mac) return;
      let path: string;
      try {
        path = new URL(req.url ?? '/', 'http://stack').pathname;
      } catch {
        path = (req.url ?? '').split('?')[0] ?? '';
      }
      x.record(mac, 'http.error', { path: path.slice(0, ERROR_PATH_MAX), status });
    } catch (err) {
      x.log(`http: cannot record the error of ${req.method} ${req.url}: ${(err as Error).message}`);
    }
  };

  return createServer((req, res) => {
    if (o.accessLog) watchAccess(req, res, o.accessLog);
    dispatch(req, res).catch((err: unknown) => {
      const status = err instanceof HttpError ? err.status : 500;
      const msg = err instanceof Error ? err.message : String(err);
      if (status === 500) x.log(`http: ${req.method} ${req.url}: ${msg}`);
      if (res.headersSent) return void res.destroy();
      recordError(req, status);
      // Plain text so iPXE's console shows something useful for a 404.
      send(res, status, `pvmlab stack: ${msg}\n`, undefined, err instanceof HttpError ? err.headers : {});
      if (status === 413) req.destroy();
    });
  });
}
