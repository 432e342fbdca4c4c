/**
 * The pxeboot_stack container's entrypoint: checks its environment and mounts, then runs the
 * same stack as `pvmlab stack serve` (startStack) until SIGTERM (docker stop) or SIGINT.
 * Everything goes to stdout, one line per event, so `docker logs -f` shows DHCP, TFTP and HTTP.
 * Bundled alone (scripts/bundle-stack.mjs) for Debian 12's Node 18.
 */
import { networkInterfaces } from 'node:os';
import { EXIT_FAILURE, PvmlabError, errorMessage } from '../core/errors.js';
import { safeLines } from '../core/safe-text.js';
import { CONTAINER_PATHS, checkMounts, containerStackOptions, ensureStateDir } from './container.js';
import { parseStackEnv } from './env.js';
import { startStack } from './serve.js';

declare const PVMLAB_VERSION: string;
const VERSION = typeof PVMLAB_VERSION === 'string' ? PVMLAB_VERSION : 'dev';

/** How long closing may take before the process leaves anyway (docker stop waits 10 s, then kills). */
const CLOSE_TIMEOUT_MS = 8000;

const out = (line: string) => process.stdout.write(`${safeLines(line)}\n`);
const fail = (message: string, code: number) => {
  process.stderr.write(`pxeboot_stack: ${safeLines(message)}\n`);
  process.exitCode = code;
};

async function main(): Promise<void> {
  const env = parseStackEnv(process.env, networkInterfaces());
  checkMounts(CONTAINER_PATHS);
  ensureStateDir(CONTAINER_PATHS.stateDir);
  out(
    `pxeboot_stack ${VERSION} (node ${process.version}): ${env.address}/${env.prefix} on ${env.iface}, ` +
      `DHCP pool ${env.rangeStart}-${env.rangeEnd}` +
      (env.ipv6 ? `, ${env.ipv6.address}/64 pool ${env.ipv6.rangeStart}-${env.ipv6.rangeEnd}` : '') +
      `, HTTP port ${env.httpPort}, DNS ${env.dns ? 'on' : 'off'}`,
  );
  // Registered before the start: a stop that arrives while dnsmasq starts is acted on once it has.
  const stopped = new Promise<string>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
  const running = await startStack({
    ...containerStackOptions(env, CONTAINER_PATHS),
    log: out,
    accessLog: out,
  });
  out(
    `Stack serving ${running.registry.size} machine(s) on ${env.iface}: ${running.url}${running.url6 ? ` and ${running.url6}` : ''}`,
  );
  const sig = await stopped;
  out(`pxeboot_stack: ${sig}: stopping dnsmasq and the HTTP server`);
  const timer = setTimeout(() => {
    fail(`did not stop within ${CLOSE_TIMEOUT_MS} ms; leaving`, EXIT_FAILURE);
    process.exit();
  }, CLOSE_TIMEOUT_MS);
  timer.unref();
  await running.close();
  out('pxeboot_stack: stopped');
}

main().catch((err: unknown) => {
  if (err instanceof PvmlabError) fail(err.message, err.exitCode);
  else fail(`cannot start: ${errorMessage(err)}`, EXIT_FAILURE);
});
