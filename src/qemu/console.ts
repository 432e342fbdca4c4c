import { createConnection, type Socket } from 'node:net';
import type { Readable, Writable } from 'node:stream';
import { PvmlabError, isErrno } from '../core/errors.js';
import { pathExists } from '../core/fsutil.js';
import type { VmFiles } from '../core/paths.js';
import { SERIAL_CHARDEV } from './argv.js';
import { vmProcess } from './process.js';
import { QmpClient } from './qmp.js';

/** Ctrl-] (0x1d) detaches, as in telnet and `virsh console`. */
export const DETACH_KEY = 0x1d;
export const DETACH_KEY_NAME = 'Ctrl-]';

/** Why an attached session ended. */
export type DetachReason =
  /** The detach key was typed (or piped in). */
  | 'detach-key'
  /** Input that is not a terminal ended, and the console then went quiet. */
  | 'input-ended'
  /** QEMU closed the socket: the VM stopped. */
  | 'closed'
  /** SIGINT, SIGTERM or SIGHUP reached pvmlab. */
  | 'signal';

/** stdin, or any readable; a terminal is switched to raw mode while attached. */
export type ConsoleInput = Readable & { isTTY?: boolean; setRawMode?: (raw: boolean) => unknown };

export interface AttachOptions {
  input?: ConsoleInput;
  output?: Writable;
  detachKey?: number;
  /** After non-terminal input ends: detach once the console has been quiet this long. */
  quietMs?: number;
  /** ...and at the latest this long after the input ended (a chatty guest is never quiet). */
  lingerMs?: number;
}

/** The bytes to pass on before the detach key, and whether the key was in the chunk. Pure. */
export function splitAtDetachKey(chunk: Uint8Array, key = DETACH_KEY): { send: Uint8Array; detach: boolean } {
  const i = chunk.indexOf(key);
  return i < 0 ? { send: chunk, detach: false } : { send: chunk.subarray(0, i), detach: true };
}

/** Connect to a console socket: a missing socket or one nobody listens on is a clear error. */
export function connectConsole(path: string, timeoutMs = 3000): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = createConnection(path);
    const fail = (message: string) => {
      clearTimeout(timer);
      socket.destroy();
      reject(new PvmlabError(message));
    };
    const timer = setTimeout(() => fail(`console socket ${path} does not answer`), timeoutMs);
    socket.once('error', (err) => {
      if (isErrno(err, 'ENOENT')) fail(`console socket ${path} is missing`);
      else if (isErrno(err, 'ECONNREFUSED')) fail(`nothing listens on console socket ${path}`);
      else if (isErrno(err, 'EACCES'))
        fail(`no permission to use console socket ${path}: run as the user who started the VM`);
      else fail(`cannot connect to console socket ${path}: ${err.message}`);
    });
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      resolve(socket);
    });
  });
}

/**
 * Whether a client already holds the VM's serial console, from QMP `query-chardev` (QEMU serves
 * one client at a time; a second one would sit silently in the backlog). Undefined when QMP does
 * not answer.
 */
export async function consoleInUse(qmpPath: string): Promise<boolean | undefined> {
  let qmp: QmpClient | undefined;
  try {
    qmp = await QmpClient.connect(qmpPath, 1000);
    const devices = await qmp.execute('query-chardev');
    if (!Array.isArray(devices)) return undefined;
    for (const d of devices)
      if (typeof d === 'object' && d !== null && !Array.isArray(d) && d.label === SERIAL_CHARDEV)
        return typeof d.filename === 'string' ? !d.filename.startsWith('disconnected:') : undefined;
    return undefined;
  } catch {
    return undefined;
  } finally {
    qmp?.close();
  }
}

/** The running VM's console socket, connected; a clear error when the VM cannot be reached. */
export async function openVmConsole(
  name: string,
  files: Pick<VmFiles, 'pid' | 'qmp' | 'console'>,
): Promise<Socket> {
  if ((await vmProcess(files.pid)).state !== 'running')
    throw new PvmlabError(`VM '${name}' is not running: start it with 'pvmlab vm start ${name}'`);
  if (!(await pathExists(files.console)))
    throw new PvmlabError(
      `VM '${name}' has no console socket (${files.console}): it was started with -i (its console is ` +
        'on that terminal) or by an older pvmlab; stop and start it again',
    );
  if ((await consoleInUse(files.qmp)) === true)
    throw new PvmlabError(`another client is attached to the console of VM '${name}'`);
  return connectConsole(files.console);
}

const SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

/**
 * Pass bytes both ways between `input`/`output` (stdin/stdout by default) and a connected console
 * socket until the detach key, the end of the input, the VM going away or a signal. A terminal is
 * in raw mode meanwhile (Ctrl-C reaches the guest) and is restored before this resolves. The
 * socket is closed at the end; the VM keeps running.
 */
export function attachConsole(socket: Socket, options: AttachOptions = {}): Promise<DetachReason> {
  const input: ConsoleInput = options.input ?? process.stdin;
  const output: Writable = options.output ?? process.stdout;
  const key = options.detachKey ?? DETACH_KEY;
  const quietMs = options.quietMs ?? 1500;
  const lingerMs = options.lingerMs ?? 15_000;
  const raw = input.isTTY === true && typeof input.setRawMode === 'function';

  return new Promise<DetachReason>((resolve, reject) => {
    let done = false;
    let inputEnded = false;
    let quiet: NodeJS.Timeout | undefined;
    let linger: NodeJS.Timeout | undefined;

    const finish = (reason: DetachReason | undefined, err?: Error) => {
      if (done) return;
      done = true;
      clearTimeout(quiet);
      clearTimeout(linger);
      input.off('data', onInput);
      input.off('end', onInputEnd);
      input.off('error', onError);
      input.pause();
      if (raw) input.setRawMode?.(false);
      for (const s of SIGNALS) process.off(s, onSignal);
      socket.off('data', onOutput);
      socket.off('close', onClose);
      socket.off('error', onError);
      // Whatever was typed before the detach key is flushed, then QEMU sees the client leave.
      socket.on('error', () => undefined);
      socket.end();
      socket.unref();
      if (err) reject(err);
      else resolve(reason as DetachReason);
    };
    const armQuiet = () => {
      clearTimeout(quiet);
      quiet = setTimeout(() => finish('input-ended'), quietMs);
    };
    const onOutput = (chunk: Buffer) => {
      if (!output.write(chunk)) {
        socket.pause();
        output.once('drain', () => socket.resume());
      }
      if (inputEnded) armQuiet();
    };
    const onInput = (chunk: Buffer | string) => {
      const { send, detach } = splitAtDetachKey(typeof chunk === 'string' ? Buffer.from(chunk) : chunk, key);
      if (send.length > 0) socket.write(send);
      if (detach) finish('detach-key');
    };
    const onInputEnd = () => {
      inputEnded = true;
      linger = setTimeout(() => finish('input-ended'), lingerMs);
      armQuiet();
    };
    const onClose = () => finish('closed');
    const onError = (err: Error) => finish(undefined, new PvmlabError(`console: ${err.message}`));
    const onSignal = () => finish('signal');

    socket.on('data', onOutput);
    socket.on('close', onClose);
    socket.on('error', onError);
    for (const s of SIGNALS) process.on(s, onSignal);
    if (raw) input.setRawMode?.(true);
    input.on('data', onInput);
    input.on('end', onInputEnd);
    input.on('error', onError);
    input.resume();
  });
}
