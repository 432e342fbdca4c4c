import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { DNSMASQ, alive, orphanedDnsmasq, waitFor, type T } from '../../helpers/dnsmasq.js';
import { startStack, type StackOptions } from '../../../src/stack/serve.js';

/**
 * startStack on loopback, HTTP only (no dnsmasq of its own), against a dnsmasq that a stack
 * killed with -9 left running its config: the real dnsmasq with `port=0` binds nothing.
 */

function lab(t: T): { home: string; options: StackOptions; logs: string[] } {
  const home = mkdtempSync(join(tmpdir(), 'pvml-serve-'));
  t.after(() => rmSync(home, { recursive: true, force: true }));
  const vmsDir = join(home, 'vms');
  mkdirSync(vmsDir);
  const logs: string[] = [];
  return {
    home,
    logs,
    options: {
      iface: 'lo',
      address: '127.0.0.1',
      rangeStart: '127.0.0.100',
      rangeEnd: '127.0.0.200',
      vmsDir,
      imagesDir: join(home, 'images'),
      initrdsDir: join(home, 'initrds'),
      stateDir: join(home, 'stack'),
      ipxeDirs: [],
      httpPort: 0,
      dnsmasq: false,
      log: (m) => logs.push(m),
    },
  };
}

test('startStack stops the dnsmasq a killed stack left running its config (with --no-dnsmasq too)', async (t) => {
  const { options, logs } = lab(t);
  const pid = await orphanedDnsmasq(t, options.stateDir);
  // A lease file from the last run stays usable.
  writeFileSync(
    join(options.stateDir, 'dnsmasq.leases'),
    '1796098781 52:54:00:99:00:01 127.0.0.168 * 01:52\n',
  );
  const stack = await startStack(options);
  t.after(() => stack.close());
  assert.equal(alive(pid), false);
  assert.ok(
    logs.includes(
      `stack: stopped a stale dnsmasq (pid ${pid}) left running ${join(options.stateDir, 'dnsmasq.conf')} by a stack that died`,
    ),
    logs.join('\n'),
  );
  const health = (await (await fetch(`${stack.url}/healthz`)).json()) as Record<string, unknown>;
  assert.deepEqual(health, { ok: true, machines: 0, timeline: { ok: true }, dnsmasq: 'off' });
  assert.match(readFileSync(join(options.stateDir, 'dnsmasq.leases'), 'utf8'), /127\.0\.0\.168/);
});

test('startStack refuses to start beside a live stack that runs dnsmasq from the same state directory', async (t) => {
  const { options } = lab(t);
  mkdirSync(options.stateDir, { recursive: true });
  const conf = join(options.stateDir, 'dnsmasq.conf');
  writeFileSync(conf, 'port=0\n');
  const code = `const c = require('child_process').spawn(${JSON.stringify(DNSMASQ)}, ['--keep-in-foreground', ${JSON.stringify(`--conf-file=${conf}`)}, '--log-facility=-'], { stdio: 'ignore' }); console.log(c.pid); process.on('SIGTERM', () => { c.kill('SIGKILL'); process.exit(0); }); setInterval(() => {}, 1000);`;
  const other = spawn(process.execPath, ['-e', code, 'stack', 'serve'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const pid = await new Promise<number>((resolve) =>
    other.stdout?.once('data', (d: Buffer) => resolve(Number(d.toString().trim()))),
  );
  t.after(() => {
    other.kill('SIGTERM');
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone with its stack */
    }
  });
  await waitFor('its dnsmasq', () => alive(pid));
  await assert.rejects(startStack(options), /belongs to another stack/);
  assert.equal(alive(pid), true);
});
