import { PvmlabError } from '../core/errors.js';
import type { VmDefinition } from '../core/vmdef.js';

import { LAB_USER } from '../core/labuser.js';

export { LAB_USER };

export interface SshTarget {
  host: string;
  port?: number;
  /** A jump host, `user@host:port`, for VMs the host cannot reach directly (macOS via the provisioner). */
  jump?: { host: string; port: number };
}

/** Options shared by ssh and scp: the lab key, no host-key prompts (VMs are recreated often). */
export function sshOptions(key: string, extra: { batch?: boolean } = {}): string[] {
  const opts = [
    '-i',
    key,
    '-o',
    'StrictHostKeyChecking=no',
    '-o',
    'UserKnownHostsFile=/dev/null',
    '-o',
    'LogLevel=ERROR',
    '-o',
    'ConnectTimeout=10',
  ];
  if (extra.batch) opts.push('-o', 'BatchMode=yes');
  return opts;
}

/**
 * A word of ProxyCommand, which ssh hands to a shell after expanding `%` tokens: quote what the
 * shell would split or expand (a key under a home with spaces), double a literal `%`.
 */
function proxyWord(word: string): string {
  const quoted = /^[A-Za-z0-9_/.,:@+=-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
  return quoted.replace(/%/g, '%%');
}

function jumpOption(key: string, t: SshTarget): string[] {
  if (!t.jump) return [];
  const inner = [
    'ssh',
    ...sshOptions(proxyWord(key), { batch: true }),
    '-p',
    String(t.jump.port),
    '-W',
    '%h:%p',
    `${LAB_USER}@${t.jump.host}`,
  ];
  return ['-o', `ProxyCommand=${inner.join(' ')}`];
}

/** `ssh ... user@host [command...]`; pure. */
export function sshArgv(key: string, t: SshTarget, command: readonly string[] = [], batch = false): string[] {
  return [
    ...sshOptions(key, { batch }),
    ...(t.port ? ['-p', String(t.port)] : []),
    ...jumpOption(key, t),
    `${LAB_USER}@${t.host}`,
    ...(command.length ? ['--', ...command] : []),
  ];
}

/** `scp [-r] ... src dst`; `remote` marks which side is `vm:path`. */
export function scpArgv(key: string, t: SshTarget, src: string, dst: string, recursive: boolean): string[] {
  return [
    ...(recursive ? ['-r'] : []),
    ...sshOptions(key),
    ...(t.port ? ['-P', String(t.port)] : []),
    ...jumpOption(key, t),
    src,
    dst,
  ];
}

/**
 * How to reach a VM: the provisioner through its forwarded port on localhost; a target
 * directly on its lab address when the host sits on the lab bridge, else through the provisioner.
 */
export function sshTargetFor(
  vm: VmDefinition,
  provisioner: VmDefinition | undefined,
  hostOnLabNet: boolean,
): SshTarget {
  if (vm.role === 'provisioner') {
    if (!vm.ssh_port)
      throw new PvmlabError(`provisioner '${vm.name}' has no forwarded SSH port: is it running?`);
    return { host: '127.0.0.1', port: vm.ssh_port };
  }
  if (!vm.ip) throw new PvmlabError(`VM '${vm.name}' has no IP address`);
  if (hostOnLabNet) return { host: vm.ip };
  if (!provisioner?.ssh_port)
    throw new PvmlabError(
      `VM '${vm.name}' cannot be reached: the host has no address on the lab network (pvmlab network start gives it one on Linux) and no running provisioner can relay the connection`,
    );
  return { host: vm.ip, jump: { host: '127.0.0.1', port: provisioner.ssh_port } };
}

/** Split `vm:path` (the VM name is a hostname label, so a colon after it is the separator). */
export function parseRemote(spec: string): { vm: string; path: string } | undefined {
  const m = /^([a-z0-9]([a-z0-9-]*[a-z0-9])?):(.*)$/.exec(spec);
  if (!m) return undefined;
  return { vm: m[1] as string, path: m[3] as string };
}
