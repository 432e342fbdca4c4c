import { createReadStream, existsSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { isAbsolute, join, relative, resolve } from 'node:path';
import { consoleArg } from '../core/distro-manifest.js';
import type { VmDefinition } from '../core/vmdef.js';
import { DistroAssets, shellAssignments } from './assets.js';
import { targetMetaData, targetNetworkConfig, targetUserData } from './cloudinit.js';
import {
  IPXE_STEPS,
  bootScript,
  installScript,
  localBootScript,
  nothingToBootScript,
  type IpxeStep,
} from './ipxe.js';
import { normalizeMacKey } from './registry.js';
import type { Timeline, TimelineEvent } from './timeline.js';

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
  log?: (msg: string) => void;
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

const EVENT_TYPE_RE = /^[a-z][a-z0-9_.-]{0,63}$/;
const HOST_RE = /^[A-Za-z0-9.:[\]-]{1,255}$/;
/** iPXE's `${errno}`: an unsigned 32-bit number it prints as `%#lx` (`0x3e11623b`). */
const IPXE_ERRNO_RE = /^(?:0x)?([0-9a-f]{1,8})$/i;
/** An initrd name from the install script. */
const INITRD_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
/** How much of a failed request's path an `http.error` event keeps. */
const ERROR_PATH_MAX = 256;

/** `0x3e11623b` (or `3e11623b`) -> the code as iPXE prints it and its explanation page. */
export function ipxeErrno(value: string | null): { errno: string; help: string } | undefined {
  const m = IPXE_ERRNO_RE.exec(value ?? '');
  if (!m) return undefined;
  const hex = (m[1] as string).toLowerCase().padStart(8, '0');
  return { errno: `0x${hex}`, help: `https://ipxe.org/err/${hex}` };
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

function send(res: ServerResponse, status: number, body: string, type = 'text/plain; charset=utf-8'): void {
  res.writeHead(status, {
    'Content-Type': type,
    'Content-Length': Buffer.byteLength(body),
    'Cache-Control': 'no-store',
  });
  res.end(body);
}

function sendJson(res: ServerResponse, status: number, value: unknown): void {
  send(res, status, `${JSON.stringify(value, null, 2)}\n`, 'application/json');
}

/** `bytes=a-b`, `bytes=a-`, `bytes=-n` (one range); undefined = unsatisfiable. */
export function parseRange(header: string, size: number): { start: number; end: number } | undefined {
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return undefined;
  let start: number;
  let end: number;
  if (m[1] === '') {
    const n = Number(m[2]);
    if (n === 0) return undefined;
    start = Math.max(0, size - n);
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  }
  if (start > end || start >= size) return undefined;
  return { start, end };
}

/** A path under `root`, or an error: no `..`, no NUL, no escaping through absolute parts. */
export function safeJoin(root: string, urlPath: string): string {
  let decoded: string;
  try {
    decoded = decodeURIComponent(urlPath);
  } catch {
    throw new HttpError(400, 'bad path encoding');
  }
  if (decoded.includes('\0') || decoded.includes('\\')) throw new HttpError(400, 'bad path');
  if (decoded.split('/').some((seg) => seg === '..')) throw new HttpError(403, 'path traversal refused');
  const full = resolve(root, `.${decoded.startsWith('/') ? '' : '/'}${decoded}`);
  const rel = relative(resolve(root), full);
  if (rel.startsWith('..') || isAbsolute(rel)) throw new HttpError(403, 'path traversal refused');
  return full;
}

async function readBody(req: IncomingMessage, max: number): Promise<string> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > max) throw new HttpError(413, `body larger than ${max} bytes`);
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of req) {
    total += (chunk as Buffer).length;
    if (total > max) throw new HttpError(413, `body larger than ${max} bytes`);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** The HTTP half of the stack: iPXE scripts, installer config, cloud-init, assets, the timeline API. */
export function createBootServer(o: BootServerOptions): Server {
  const maxBody = o.maxBodyBytes ?? 16 * 1024;
  const exists = cachedExists(o.existsCacheMs ?? 1000);
  const distros = new DistroAssets(o.imagesDir, o.existsCacheMs ?? 1000, o.log);
  const clientMac = (req: IncomingMessage) => {
    const ip = (req.socket.remoteAddress ?? '').replace(/^::ffff:/, '');
    return o.macForIp?.(ip);
  };
  const baseUrl = (req: IncomingMessage) => {
    const host = req.headers.host;
    if (host && HOST_RE.test(host)) return `http://${host}`;
    const a = req.socket.localAddress ?? '127.0.0.1';
    return `http://${a.includes(':') && !a.startsWith('::ffff:') ? `[${a}]` : a.replace(/^::ffff:/, '')}:${req.socket.localPort}`;
  };
  const machineFor = (macParam: string | null | undefined): { mac: string; vm: VmDefinition } => {
    const mac = macParam ? normalizeMacKey(macParam) : undefined;
    if (!mac) throw new HttpError(400, `malformed MAC address '${macParam ?? ''}'`);
    const vm = o.machines.byMac(mac);
    if (!vm) throw new HttpError(404, `no VM with MAC ${mac} in this lab`);
    return { mac, vm };
  };
  const record = (mac: string | undefined, type: string, detail?: TimelineEvent['detail']) => {
    if (mac) o.timeline.add(mac, type, 'http', detail);
  };

  async function serveFile(
    req: IncomingMessage,
    res: ServerResponse,
    root: string,
    rest: string,
    kind: string,
  ) {
    const path = safeJoin(root, rest);
    const st = await stat(path).catch(() => undefined);
    if (!st?.isFile()) throw new HttpError(404, `${kind}${rest} not found`);
    const headers: Record<string, string | number> = {
      'Content-Type': 'application/octet-stream',
      'Accept-Ranges': 'bytes',
      'Last-Modified': st.mtime.toUTCString(),
    };
    let start = 0;
    let end = st.size - 1;
    let status = 200;
    const range = req.headers.range;
    if (range) {
      const r = parseRange(range, st.size);
      if (!r) {
        record(clientMac(req), 'http.error', {
          path: `${kind}${rest}`.slice(0, ERROR_PATH_MAX),
          status: 416,
        });
        res.writeHead(416, { 'Content-Range': `bytes */${st.size}` });
        res.end();
        return;
      }
      ({ start, end } = r);
      status = 206;
      headers['Content-Range'] = `bytes ${start}-${end}/${st.size}`;
    }
    headers['Content-Length'] = st.size === 0 ? 0 : end - start + 1;
    record(clientMac(req), `http.${kind.replace(/^\//, '').replace(/s\/?$/, '')}`, {
      path: `${kind}${rest}`,
      bytes: st.size,
    });
    res.writeHead(status, headers);
    if (req.method === 'HEAD' || st.size === 0) return void res.end();
    // Streamed, never buffered whole: rootfs tarballs are hundreds of MB.
    // 1 MiB reads: with the default 64 KiB chunks a 200 MB image ran at a third of nginx's rate.
    const stream = createReadStream(path, { start, end, highWaterMark: 1 << 20 });
    stream.on('error', () => res.destroy());
    stream.pipe(res);
  }

  async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://stack');
    const path = url.pathname;
    const method = req.method ?? 'GET';
    const get = method === 'GET' || method === 'HEAD';

    if (get && path === '/healthz')
      return sendJson(res, 200, { ok: true, machines: o.machines.all().length, ...o.health?.() });
    if (get && path === '/boot.ipxe') {
      record(clientMac(req), 'http.boot-script');
      return send(res, 200, bootScript());
    }
    if (get && path === '/ipxe') {
      const { mac, vm } = machineFor(url.searchParams.get('mac'));
      const base = baseUrl(req);
      // Only a PXE VM is ever installed: a disk VM that fell back to the network (`--boot pxe`,
      // a blank or broken disk) goes back to its disk, reinstall marker or not.
      if (vm.pxeboot !== true) {
        record(mac, 'http.ipxe', { script: 'local-boot', reason: 'disk-vm' });
        return send(res, 200, localBootScript(vm, 'disk-vm'));
      }
      const installed = o.timeline.last(mac, 'ready') !== undefined;
      const reinstall = exists(join(o.vmsDir, `${vm.name}.reinstall`));
      if (installed && !reinstall) {
        record(mac, 'http.ipxe', { script: 'local-boot', reason: 'installed' });
        return send(res, 200, localBootScript(vm, 'installed'));
      }
      // A pulled distro's manifest names its kernel and modules; a definition's `kernel` covers
      // assets placed by hand.
      const m = vm.distro ? distros.manifest(vm.distro, vm.arch) : undefined;
      const kernel = m?.kernel ?? vm.kernel;
      if (!vm.distro || !kernel) {
        // 200, not 404: iPXE prints a script's echo, but only an error code for a 404.
        record(mac, 'http.ipxe', { script: 'nothing-to-boot' });
        return send(res, 200, nothingToBootScript(vm));
      }
      const assets = `${base}/images/${vm.distro}/${vm.arch}`;
      const initrds = [{ name: 'initrd.gz', url: `${base}/initrds/${vm.arch}/initrd.gz` }];
      const modules = m ? m.modules : 'modules.cpio.gz';
      if (modules && exists(join(o.imagesDir, vm.distro, vm.arch, modules)))
        initrds.push({ name: modules, url: `${assets}/${modules}` });
      record(mac, 'http.ipxe', { script: 'install' });
      return send(res, 200, installScript({ vm, mac, base, kernel: `${assets}/${kernel}`, initrds }));
    }
    if (get && path === '/ipxe/failed') {
      // The install script's report of a failed step, with iPXE's error code.
      const { mac } = machineFor(url.searchParams.get('mac'));
      const step = url.searchParams.get('step') ?? '';
      if (!(IPXE_STEPS as readonly string[]).includes(step))
        throw new HttpError(400, `step must be one of ${IPXE_STEPS.join(', ')}`);
      const code = ipxeErrno(url.searchParams.get('errno'));
      if (!code) throw new HttpError(400, "errno must be iPXE's ${errno}, a hex number such as 0x3e11623b");
      const file = url.searchParams.get('file');
      if (file !== null && (step !== 'initrd' || !INITRD_NAME_RE.test(file)))
        throw new HttpError(400, 'file must be the name of an initrd, with step=initrd');
      record(mac, 'ipxe.failed', { step: step as IpxeStep, ...(file !== null ? { file } : {}), ...code });
      // 200 and empty: iPXE's imgfetch succeeds, the script frees the image and goes to its shell.
      return send(res, 200, '');
    }
    const config = /^\/config\/([^/]+)$/.exec(path);
    if (get && config) {
      const { mac, vm } = machineFor(config[1]);
      const base = baseUrl(req);
      const assets = `${base}/images/${vm.distro ?? ''}/${vm.arch}`;
      // A pulled distro's manifest says where its root file system is and in which format.
      const m = vm.distro ? distros.manifest(vm.distro, vm.arch) : undefined;
      const kernel = m?.kernel ?? vm.kernel;
      record(mac, 'http.config');
      const cfg = {
        name: vm.name,
        mac,
        arch: vm.arch,
        distro: vm.distro ?? null,
        cloud_init_url: `${base}/cloud-init/${vm.name}`,
        rootfs_url: `${assets}/${m?.rootfs ?? 'rootfs.tar.gz'}`,
        rootfs_format: m?.rootfs_format ?? 'tar.gz',
        rootfs_bytes: m?.rootfs_bytes ?? 0,
        kmods_url: `${assets}/${m?.modules ?? 'modules.cpio.gz'}`,
        kernel_url: kernel ? `${assets}/${kernel}` : null,
        // The installed system's kernel arguments: its console, nothing of the installer's.
        kernel_cmdline: consoleArg(vm.arch),
        events_url: `${base}/api/machines/${mac}/events`,
        reboot_on_success: !exists(join(o.vmsDir, `${vm.name}.noreboot`)),
      };
      // The installer is busybox sh: it sources `KEY='value'` lines rather than parse JSON.
      if (url.searchParams.get('format') === 'sh') return send(res, 200, shellAssignments('PVMLAB_', cfg));
      return sendJson(res, 200, cfg);
    }
    const ci = /^\/cloud-init\/([^/]+)\/([^/]+)$/.exec(path);
    if (get && ci) {
      const vm = o.machines.byName(ci[1] as string);
      if (!vm) throw new HttpError(404, `no VM named '${ci[1]}'`);
      const base = baseUrl(req);
      const mac = vm.mac ? normalizeMacKey(vm.mac) : undefined;
      const docs: Record<string, () => string> = {
        'meta-data': () => targetMetaData(vm),
        'user-data': () => targetUserData(vm, `${base}/api/machines/${mac ?? ''}/phone-home`),
        'network-config': () => targetNetworkConfig(vm),
        'vendor-data': () => '',
      };
      const doc = docs[ci[2] as string];
      if (!doc) throw new HttpError(404, `no cloud-init document '${ci[2]}'`);
      record(mac, 'http.cloud-init', { file: ci[2] as string });
      return send(res, 200, doc());
    }
    if (get && path.startsWith('/images/'))
      return serveFile(req, res, o.imagesDir, path.slice('/images'.length), '/images');
    if (get && path.startsWith('/initrds/'))
      return serveFile(req, res, o.initrdsDir, path.slice('/initrds'.length), '/initrds');
    if (get && path === '/api/machines') {
      return sendJson(
        res,
        200,
        o.machines.all().map((vm) => {
          const mac = vm.mac ? normalizeMacKey(vm.mac) : undefined;
          const events = mac ? o.timeline.list(mac) : [];
          const last = events[events.length - 1];
          return {
            name: vm.name,
            mac: mac ?? null,
            ip: vm.ip ?? null,
            arch: vm.arch,
            distro: vm.distro ?? null,
            pxeboot: vm.pxeboot === true,
            ready: mac ? o.timeline.last(mac, 'ready') !== undefined : false,
            last_event: last ? { type: last.type, at: last.at } : null,
          };
        }),
      );
    }
    const api = /^\/api\/machines\/([^/]+)\/(timeline|events|phone-home)$/.exec(path);
    if (api) {
      const { mac, vm } = machineFor(api[1]);
      if (get && api[2] === 'timeline') {
        if (url.searchParams.get('follow') !== '1')
          return sendJson(res, 200, { name: vm.name, mac, events: o.timeline.list(mac) });
        // Newline-delimited JSON: the history, then each new event as it happens.
        res.writeHead(200, { 'Content-Type': 'application/x-ndjson', 'Cache-Control': 'no-store' });
        for (const ev of o.timeline.list(mac)) res.write(`${JSON.stringify(ev)}\n`);
        const onEvent = (ev: TimelineEvent) => ev.mac === mac && res.write(`${JSON.stringify(ev)}\n`);
        o.timeline.on('event', onEvent);
        req.on('close', () => o.timeline.off('event', onEvent));
        return;
      }
      if (method === 'POST' && api[2] === 'events') {
        const body = await readBody(req, maxBody);
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
        if (typeof p.type !== 'string' || !EVENT_TYPE_RE.test(p.type))
          throw new HttpError(400, 'type must match [a-z][a-z0-9_.-]{0,63}');
        const detail: Record<string, string | number | boolean> = {};
        if (p.detail !== undefined) {
          if (typeof p.detail !== 'object' || p.detail === null || Array.isArray(p.detail))
            throw new HttpError(400, 'detail must be an object');
          for (const [k, v] of Object.entries(p.detail))
            if (['string', 'number', 'boolean'].includes(typeof v))
              detail[k] = v as string | number | boolean;
        }
        const source =
          p.type === 'ready' ? 'cloud-init' : p.type.startsWith('installer.') ? 'installer' : 'stack';
        return sendJson(res, 201, o.timeline.add(mac, p.type, source, detail));
      }
      if (method === 'POST' && api[2] === 'phone-home') {
        const body = await readBody(req, maxBody);
        const form = new URLSearchParams(body);
        const detail: Record<string, string> = {};
        for (const k of ['instance_id', 'hostname']) {
          const v = form.get(k);
          if (v) detail[k] = v.slice(0, 255);
        }
        return sendJson(res, 201, o.timeline.add(mac, 'ready', 'cloud-init', detail));
      }
      throw new HttpError(405, `${method} not allowed on ${path}`);
    }
    throw new HttpError(404, `no route for ${method} ${path}`);
  }

  /** A client that is a known machine got an error answer: on its timeline, with the path it asked for. */
  const recordError = (req: IncomingMessage, status: number) => {
    try {
      const mac = clientMac(req);
      if (!mac) return;
      let path: string;
      try {
        path = new URL(req.url ?? '/', 'http://stack').pathname;
      } catch {
        path = (req.url ?? '').split('?')[0] ?? '';
      }
      record(mac, 'http.error', { path: path.slice(0, ERROR_PATH_MAX), status });
    } catch (err) {
      o.log?.(`http: cannot record the error of ${req.method} ${req.url}: ${(err as Error).message}`);
    }
  };

  return createServer((req, res) => {
    route(req, res).catch((err: unknown) => {
      const status = err instanceof HttpError ? err.status : 500;
      const msg = err instanceof Error ? err.message : String(err);
      if (status === 500) o.log?.(`http: ${req.method} ${req.url}: ${msg}`);
      if (res.headersSent) return void res.destroy();
      recordError(req, status);
      // Plain text so iPXE's console shows something useful for a 404.
      send(res, status, `pvmlab stack: ${msg}\n`);
      if (status === 413) req.destroy();
    });
  });
}
