import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import { runCli, tempHome } from '../../helpers/cli.js';

const MAC = '52:54:00:12:34:56';
const at = (s: number) => new Date(Date.UTC(2026, 11, 1, 3, 0, 0) + s * 1000).toISOString();

test('vm events --phases: where the last install went, in words and as JSON', async (t) => {
  const { home, app, cleanup } = await tempHome('pvphases-');
  t.after(cleanup);
  mkdirSync(join(app, 'vms'), { recursive: true });
  writeFileSync(
    join(app, 'vms', 't1.json'),
    JSON.stringify({ name: 't1', role: 'target', arch: 'x86_64', ip: '10.0.0.2', mac: MAC, pxeboot: true }),
  );
  const events = [
    [0, 'dhcp.discover'],
    [4, 'tftp.sent'],
    [6, 'http.ipxe', { script: 'install' }],
    [10, 'installer.started'],
    [13, 'installer.disk', { seconds: 3 }],
    [30, 'installer.rootfs', { seconds: 17, percent: 100 }],
    [31, 'installer.seed', { seconds: 0.5 }],
    [34, 'installer.bootloader', { seconds: 3 }],
    [34.5, 'installer.done', { seconds: 24.5 }],
    [94.5, 'ready'],
  ].map(([s, type, detail]) => ({
    at: at(s as number),
    mac: MAC,
    type,
    source: 'x',
    ...(detail ? { detail } : {}),
  }));
  const server = createServer((req, res) => {
    res.writeHead(req.url === `/api/machines/${MAC}/timeline` ? 200 : 404, {
      'Content-Type': 'application/json',
    });
    res.end(JSON.stringify({ name: 't1', mac: MAC, events }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => server.close());
  const env = { PVMLAB_STACK_URL: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
  const r = await runCli(['vm', 'events', 't1', '--phases'], { home, env });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(
    r.stdout,
    'firmware + DHCP 4.0 s | iPXE + downloads 6.0 s | installer 24.5 s | first boot + cloud-init 60.0 s\n' +
      'installer: disk 3.0 s, rootfs 17.0 s, seed 0.5 s, bootloader 3.0 s\ntotal 94.5 s\n',
  );
  const j = await runCli(['vm', 'events', 't1', '--phases', '--json'], { home, env });
  assert.equal((JSON.parse(j.stdout) as { total: number }).total, 94.5);
  const both = await runCli(['vm', 'events', 't1', '--phases', '--follow'], { home, env });
  assert.equal(both.code, 2);
});
