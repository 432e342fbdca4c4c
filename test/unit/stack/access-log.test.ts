import assert from 'node:assert/strict';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { ACCESS_URL_MAX, accessLogLine, watchAccess } from '../../../src/stack/access-log.js';
import { worthLogging } from '../../../src/stack/dnsmasq-log.js';

test('an access-log line: client, method, target, status, bytes, time; client text escaped', () => {
  const r = {
    client: '10.0.0.5',
    method: 'GET',
    url: '/ipxe?mac=52:54:00:00:00:01',
    status: 200,
    bytes: 612,
    ms: 3,
    complete: true,
  };
  assert.equal(accessLogLine(r), 'http: 10.0.0.5 GET /ipxe?mac=52:54:00:00:00:01 200 612 3ms');
  assert.equal(
    accessLogLine({ ...r, bytes: undefined, complete: false }),
    'http: 10.0.0.5 GET /ipxe?mac=52:54:00:00:00:01 200 - 3ms (client left)',
  );
  assert.equal(
    accessLogLine({ ...r, url: '/a\u001b[2Jb\nc' }),
    'http: 10.0.0.5 GET /a\\x1b[2Jb\\nc 200 612 3ms',
  );
  const long = accessLogLine({ ...r, url: `/${'x'.repeat(1000)}` });
  assert.ok(long.includes(`/${'x'.repeat(ACCESS_URL_MAX - 1)}… 200`), long);
});

/** A real server answering each request as `answer` says; the lines written. */
async function serve(t: { after: (fn: () => void) => void }, answer: Parameters<typeof createServer>[1]) {
  const lines: string[] = [];
  const server: Server = createServer((req, res) => {
    watchAccess(req, res, (l) => lines.push(l));
    answer?.(req, res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => server.close());
  return { lines, port: (server.address() as AddressInfo).port };
}

test('every request gets one line once its answer is done, also when the client leaves early', async (t) => {
  const s = await serve(t, (req, res) => {
    if (req.url === '/hang') {
      res.writeHead(200, { 'Content-Type': 'text/plain' });
      res.write('partial');
      return; // never ends: the client goes away
    }
    res.writeHead(req.url === '/missing' ? 404 : 200, { 'Content-Length': 5 });
    res.end('hello');
  });
  const get = (path: string) =>
    new Promise<void>((resolve) => {
      const req = request({ host: '127.0.0.1', port: s.port, path, agent: false }, (res) => {
        if (path === '/hang') {
          res.once('data', () => req.destroy());
          res.once('close', () => resolve());
          return;
        }
        res.resume();
        res.on('end', () => resolve());
      });
      req.end();
    });
  await get('/ok');
  await get('/missing');
  await get('/hang');
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(s.lines.length, 3, s.lines.join('\n'));
  assert.match(s.lines[0] as string, /^http: 127\.0\.0\.1 GET \/ok 200 \d+ \d+ms$/);
  // Bytes on the wire: the headers and the 5-byte body.
  assert.ok(Number((s.lines[0] as string).split(' ')[5]) > 5);
  assert.match(s.lines[1] as string, /^http: 127\.0\.0\.1 GET \/missing 404 \d+ \d+ms$/);
  assert.match(s.lines[2] as string, /^http: 127\.0\.0\.1 GET \/hang 200 \d+ \d+ms \(client left\)$/);
});

test("dnsmasq's lines on the console: its messages, DHCP messages, TFTP, failures; not option dumps or RAs", () => {
  const shown = [
    'dnsmasq[16]: started, version 2.90 cachesize 150',
    'dnsmasq-dhcp[16]: DHCP, IP range 10.219.0.100 -- 10.219.0.200, lease time 1h',
    'dnsmasq-dhcp[16]: 4171316604 DHCPDISCOVER(br0) 52:54:00:21:90:05 ',
    'dnsmasq-dhcp[16]: 4171316604 DHCPACK(br0) 10.219.0.5 52:54:00:21:90:05 img1',
    'dnsmasq-dhcp[1]: 78 DHCPNAK(enp0s2) 10.0.0.9 52:54:00:ab:cd:ef',
    'dnsmasq-dhcp[10208]: 14831681 DHCPSOLICIT(br0) 00:01:00:01:32:9a:d6:8d:52:54:00:00:aa:01 ',
    'dnsmasq-dhcp[10208]: 9955011 DHCPREPLY(br0) fd00:9::3 00:01:00:01:32:9a:d6:8d:52:54:00:00:aa:01 known1',
    'dnsmasq-dhcp[10208]: 9955011 DHCPINFORMATION-REQUEST(br0) 00:01:00:01:32:9a:d6:8d:52:54:00:00:aa:01 ',
    'dnsmasq-tftp[16]: sent /var/lib/pvmlab/stack/tftp/boot.ipxe to 10.219.0.5',
    'dnsmasq-tftp[123]: file /tmp/x/tftp/nope not found for 10.217.0.2',
    'dnsmasq-dhcp[16]: RTR-SOLICIT(br0) 52:54:00:21:90:05',
    'dnsmasq: failed to create listening socket for 10.0.0.1: Address already in use',
    'dnsmasq[123]: exiting on receipt of SIGTERM',
  ];
  const hidden = [
    'dnsmasq-dhcp[123]: 2952164633 available DHCP range: 10.9.0.100 -- 10.9.0.200',
    'dnsmasq-dhcp[123]: 2952164633 vendor class: PXEClient:Arch:00007:UNDI:003000',
    'dnsmasq-dhcp[123]: 2952164633 tags: efi-x86_64, br0',
    'dnsmasq-dhcp[123]: 2952164633 requested options: 1:netmask, 2:time-offset, 3:router, 4, 5,',
    'dnsmasq-dhcp[123]: 2952164633 sent size:  1 option: 53 message-type  2',
    'dnsmasq-dhcp[123]: 2952164633 next server: 10.9.0.1',
    'dnsmasq-dhcp[10208]: 14831681 client MAC address: 52:54:00:00:AA:01',
    'dnsmasq-dhcp[123]: RTR-ADVERT(br0) fd00:ad9:0::',
    'some other program',
  ];
  for (const l of shown) assert.equal(worthLogging(l), true, l);
  for (const l of hidden) assert.equal(worthLogging(l), false, l);
});
