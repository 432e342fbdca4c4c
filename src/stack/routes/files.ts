import { openUnder, streamFile, type Route, type RouteContext } from '../http-core.js';
import type { BootContext } from './context.js';

/** How much of a failed request's path an `http.error` event keeps. */
export const ERROR_PATH_MAX = 256;

/**
 * A static root: `prefix` (`/images`) serves the files under `dir`, no further than its real
 * path. The timeline event is `http.<prefix without its plural s>` (`http.image`).
 */
export function staticRoot(x: BootContext, prefix: string, dir: () => string): Route {
  const event = `http.${prefix.replace(/^\//, '').replace(/s\/?$/, '')}`;
  async function handler({ req, res, url }: RouteContext): Promise<void> {
    const rest = url.pathname.slice(prefix.length);
    const shown = `${prefix}${rest}`;
    const file = await openUnder(dir(), rest, `${shown} not found`);
    const mac = x.clientMac(req);
    streamFile(
      req,
      res,
      file,
      () => x.record(mac, 'http.error', { path: shown.slice(0, ERROR_PATH_MAX), status: 416 }),
      () => x.record(mac, event, { path: shown, bytes: file.st.size }),
    );
  }
  return { method: 'GET', path: new RegExp(`^${prefix}/`), handler };
}

/** Distro assets and installer initrds. */
export function fileRoutes(x: BootContext): Route[] {
  return [staticRoot(x, '/images', () => x.imagesDir), staticRoot(x, '/initrds', () => x.initrdsDir)];
}
