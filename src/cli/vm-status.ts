import { readdirSync } from 'node:fs';
import { labDirs, vmFiles } from '../core/paths.js';
import { listVms } from '../lab/store.js';
import { vmProcess, type ProcessInfo } from '../qemu/process.js';
import type { Context } from './context.js';

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
      const p: ProcessInfo = pidFiles.has(`${vm.name}.pid`)
        ? await vmProcess(vmFiles(ctx.app, vm.name).pid, ctx.runner)
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
