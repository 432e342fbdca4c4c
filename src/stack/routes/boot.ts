import { join } from 'node:path';
import { consoleArg } from '../../core/distro-manifest.js';
import type { VmDefinition } from '../../core/vmdef.js';
import { shellAssignments } from '../assets.js';
import { targetMetaData, targetNetworkConfig, targetUserData } from '../cloudinit.js';
import { HttpError, send, sendJson, type Route, type RouteContext } from '../http-core.js';
import {
  IPXE_STEPS,
  bootScript,
  installScript,
  localBootScript,
  nothingToBootScript,
  type IpxeStep,
} from '../ipxe.js';
import { normalizeMacKey } from '../registry.js';
import type { BootContext } from './context.js';

/** iPXE's `${errno}`: an unsigned 32-bit number it prints as `%#lx` (`0x3e11623b`). */
const IPXE_ERRNO_RE = /^(?:0x)?([0-9a-f]{1,8})$/i;
/** An initrd name from the install script. */
const INITRD_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** `0x3e11623b` (or `3e11623b`) -> the code as iPXE prints it and its explanation page. */
export function ipxeErrno(value: string | null): { errno: string; help: string } | undefined {
  const m = IPXE_ERRNO_RE.exec(value ?? '');
  if (!m) return undefined;
  const hex = (m[1] as string).toLowerCase().padStart(8, '0');
  return { errno: `0x${hex}`, help: `https://ipxe.org/err/${hex}` };
}

/** The NoCloud documents by name: a Map, so `__proto__` or `toString` is no document. */
type CloudInitDoc = (vm: VmDefinition, phoneHomeUrl: string) => string;
const CLOUD_INIT_DOCS: ReadonlyMap<string, CloudInitDoc> = new Map<string, CloudInitDoc>([
  ['meta-data', (vm) => targetMetaData(vm)],
  ['user-data', (vm, url) => targetUserData(vm, url)],
  ['network-config', (vm) => targetNetworkConfig(vm)],
  ['vendor-data', () => ''],
]);

/** iPXE and installer routes: what a machine fetches while it boots and installs. */
export function bootRoutes(x: BootContext): Route[] {
  function chainScript({ req, res }: RouteContext): void {
    x.record(x.clientMac(req), 'http.boot-script');
    send(res, 200, bootScript());
  }

  function ipxe({ req, res, url }: RouteContext): void {
    const { mac, vm } = x.machineFor(url.searchParams.get('mac'));
    const base = x.baseUrl(req);
    // Only a PXE VM is ever installed: a disk VM that fell back to the network (`--boot pxe`,
    // a blank or broken disk) goes back to its disk, reinstall marker or not.
    if (vm.pxeboot !== true) {
      x.record(mac, 'http.ipxe', { script: 'local-boot', reason: 'disk-vm' });
      return send(res, 200, localBootScript(vm, 'disk-vm'));
    }
    const installed = x.timeline.last(mac, 'ready') !== undefined;
    const reinstall = x.exists(join(x.vmsDir, `${vm.name}.reinstall`));
    if (installed && !reinstall) {
      x.record(mac, 'http.ipxe', { script: 'local-boot', reason: 'installed' });
      return send(res, 200, localBootScript(vm, 'installed'));
    }
    // A pulled distro's manifest names its kernel and modules; a definition's `kernel` covers
    // assets placed by hand.
    const m = vm.distro ? x.distros.manifest(vm.distro, vm.arch) : undefined;
    const kernel = m?.kernel ?? vm.kernel;
    if (!vm.distro || !kernel) {
      // 200, not 404: iPXE prints a script's echo, but only an error code for a 404.
      x.record(mac, 'http.ipxe', { script: 'nothing-to-boot' });
      return send(res, 200, nothingToBootScript(vm));
    }
    const assets = `${base}/images/${vm.distro}/${vm.arch}`;
    const initrds = [{ name: 'initrd.gz', url: `${base}/initrds/${vm.arch}/initrd.gz` }];
    const modules = m ? m.modules : 'modules.cpio.gz';
    if (modules && x.exists(join(x.imagesDir, vm.distro, vm.arch, modules)))
      initrds.push({ name: modules, url: `${assets}/${modules}` });
    x.record(mac, 'http.ipxe', { script: 'install' });
    send(res, 200, installScript({ vm, mac, base, kernel: `${assets}/${kernel}`, initrds }));
  }

  /** The install script's report of a failed step, with iPXE's error code. */
  function ipxeFailed({ res, url }: RouteContext): void {
    const q = url.searchParams;
    const { mac } = x.machineFor(q.get('mac'));
    const step = q.get('step') ?? '';
    if (!(IPXE_STEPS as readonly string[]).includes(step))
      throw new HttpError(400, `step must be one of ${IPXE_STEPS.join(', ')}`);
    const code = ipxeErrno(q.get('errno'));
    if (!code) throw new HttpError(400, "errno must be iPXE's ${errno}, a hex number such as 0x3e11623b");
    const file = q.get('file');
    if (file !== null && (step !== 'initrd' || !INITRD_NAME_RE.test(file)))
      throw new HttpError(400, 'file must be the name of an initrd, with step=initrd');
    x.record(mac, 'ipxe.failed', { step: step as IpxeStep, ...(file !== null ? { file } : {}), ...code });
    // 200 and empty: iPXE's imgfetch succeeds, the script frees the image and goes to its shell.
    send(res, 200, '');
  }

  function config({ req, res, url, params }: RouteContext): void {
    const { mac, vm } = x.machineFor(params[0]);
    const base = x.baseUrl(req);
    const assets = `${base}/images/${vm.distro ?? ''}/${vm.arch}`;
    // A pulled distro's manifest says where its root file system is and in which format.
    const m = vm.distro ? x.distros.manifest(vm.distro, vm.arch) : undefined;
    const kernel = m?.kernel ?? vm.kernel;
    x.record(mac, 'http.config');
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
      reboot_on_success: !x.exists(join(x.vmsDir, `${vm.name}.noreboot`)),
    };
    // The installer is busybox sh: it sources `KEY='value'` lines rather than parse JSON.
    if (url.searchParams.get('format') === 'sh') return send(res, 200, shellAssignments('PVMLAB_', cfg));
    sendJson(res, 200, cfg);
  }

  function cloudInit({ req, res, params }: RouteContext): void {
    const [name, file] = params as [string, string];
    const vm = x.machines.byName(name);
    if (!vm) throw new HttpError(404, `no VM named '${name}'`);
    const doc = CLOUD_INIT_DOCS.get(file);
    if (!doc) throw new HttpError(404, `no cloud-init document '${file}'`);
    const mac = vm.mac ? normalizeMacKey(vm.mac) : undefined;
    x.record(mac, 'http.cloud-init', { file });
    send(res, 200, doc(vm, `${x.baseUrl(req)}/api/machines/${mac ?? ''}/phone-home`));
  }

  return [
    { method: 'GET', path: '/boot.ipxe', handler: chainScript },
    { method: 'GET', path: '/ipxe', handler: ipxe },
    { method: 'GET', path: '/ipxe/failed', handler: ipxeFailed },
    { method: 'GET', path: /^\/config\/([^/]+)$/, handler: config },
    { method: 'GET', path: /^\/cloud-init\/([^/]+)\/([^/]+)$/, handler: cloudInit },
  ];
}
