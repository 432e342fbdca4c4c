import { readdirSync } from 'node:fs';
import { labDirs, vmFiles } from '../core/paths.js';
import { listVms } from '../lab/store.js';
import { vmProcess, type ProcessInfo } from '../qemu/process.js';
import type { Context } from './context.js';
import { errorMessage } from '../core/errors.js';
import { log } from '../core/log.js';
import { safeText } from '../core/safe-text.js';

export interface VmStatusRow {
  name: string;
  role: string;
  arch: string;
  boot: 'pxe' | 'disk';
  ip: string | null;
  ipv6: string | null;
  mac: string | null;
  distro: string | null;
  status: 'Running' | 'Stopped';
  pid: number | null;
}

export async function vmStatusRows(
  ctx: Context,
): Promise<{ rows: VmStatusRow[]; invalid: { file: string; error: string }[] }> {
  const { vms, invalid } = await listVms(ctx.app);
  // One directory read instead of a failed open per stopped VM.
  const pidFiles = new Set(readdirIfExists(labDirs(ctx.app).pids));
  const rows = await Promise.all(
    vms.map(async (vm): Promise<VmStatusRow> => {
      const pidFile = vmFiles(ctx.app, vm.name).pid;
      // A pid file that cannot be read (a directory in its place) names no running QEMU; the
      // listing goes on, and says which file is wrong.
      const p: ProcessInfo = pidFiles.has(`${vm.name}.pid`)
        ? await vmProcess(pidFile, ctx.runner).catch((err: unknown) => {
            log.warn(
              `cannot read ${safeText(pidFile)}: ${safeText(errorMessage(err))}; 'pvmlab vm clean ${vm.name}' removes it`,
            );
            return { state: 'stopped' as const };
          })
        : { state: 'stopped' };
      return {
        name: vm.name,
        role: vm.role,
        arch: vm.arch,
        boot: vm.pxeboot ? 'pxe' : 'disk',
        ip: vm.ip ?? null,
        ipv6: vm.ipv6 ?? null,
        mac: vm.mac ?? null,
        distro: vm.distro ?? null,
        status: p.state === 'running' ? 'Running' : 'Stopped',
        pid: p.pid ?? null,
      };
    }),
  );
  return { rows, invalid };
}

function readdirIfExists(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}
