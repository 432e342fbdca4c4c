import type { IncomingMessage } from 'node:http';
import type { VmDefinition } from '../../core/vmdef.js';
import type { DistroAssets } from '../assets.js';
import type { Followers } from '../http-follow.js';
import type { RateLimiter } from '../http-limit.js';
import type { MachineLookup } from '../http.js';
import type { Timeline, TimelineEvent } from '../timeline.js';

/** What the routes share: the lab's machines and timeline, and per-request helpers. */
export interface BootContext {
  machines: MachineLookup;
  timeline: Timeline;
  imagesDir: string;
  initrdsDir: string;
  vmsDir: string;
  maxBody: number;
  /** Does this marker or asset exist (briefly cached). */
  exists(path: string): boolean;
  distros: DistroAssets;
  followers: Followers;
  /** One bucket per machine for POSTed events. */
  eventLimiter: RateLimiter;
  health(): Record<string, unknown>;
  log(msg: string): void;
  /** The MAC of the machine behind the request's source address, if the stack knows it. */
  clientMac(req: IncomingMessage): string | undefined;
  /** `http://<host>` as the client reached us. */
  baseUrl(req: IncomingMessage): string;
  /** The machine a route's MAC names: 400 if malformed, 404 if not a VM of this lab. */
  machineFor(macParam: string | null | undefined): { mac: string; vm: VmDefinition };
  /** An event on a machine's timeline (nothing without a MAC). */
  record(mac: string | undefined, type: string, detail?: TimelineEvent['detail']): void;
}
