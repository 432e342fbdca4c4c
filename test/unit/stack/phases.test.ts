import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatPhases, provisionPhases, type PhaseEvent } from '../../../src/stack/phases.js';

const at = (s: number) => new Date(Date.UTC(2026, 11, 1, 3, 0, 0) + s * 1000).toISOString();
const ev = (s: number, type: string, detail?: PhaseEvent['detail']): PhaseEvent => ({
  at: at(s),
  type,
  ...(detail ? { detail } : {}),
});

/** A first install that failed, then a full one: the phases are the last install's. */
const TIMELINE: PhaseEvent[] = [
  ev(0, 'dhcp.discover'),
  ev(3, 'tftp.sent'),
  ev(5, 'http.ipxe', { script: 'install' }),
  ev(9, 'installer.started'),
  ev(12, 'installer.failed', { phase: 'rootfs', reason: '404' }),
  ev(100, 'dhcp.discover'),
  ev(104, 'dhcp.discover'),
  ev(107.5, 'tftp.sent'),
  ev(109, 'http.ipxe', { script: 'install' }),
  ev(111, 'installer.started', { seconds: 0.6 }),
  ev(114, 'installer.disk', { seconds: 2.7 }),
  ev(120, 'installer.rootfs', { percent: 50 }),
  ev(131, 'installer.rootfs', { percent: 100, seconds: 17.3 }),
  ev(131.2, 'installer.seed', { seconds: 0.2 }),
  ev(134.5, 'installer.bootloader', { seconds: 3.3 }),
  ev(134.7, 'installer.done', { seconds: 24.6 }),
  ev(170, 'dhcp.discover'),
  ev(196, 'ready'),
];

test('provisionPhases: the last install, from its first DHCP discover to ready', () => {
  const p = provisionPhases(TIMELINE);
  assert.deepEqual(
    p.phases.map((x) => [x.name, Number(x.seconds.toFixed(1))]),
    [
      ['firmware + DHCP', 7.5],
      ['iPXE + downloads', 3.5],
      ['installer', 23.7],
      ['first boot + cloud-init', 61.3],
    ],
  );
  assert.deepEqual(p.installer, [
    { name: 'disk', seconds: 2.7 },
    { name: 'rootfs', seconds: 17.3 },
    { name: 'seed', seconds: 0.2 },
    { name: 'bootloader', seconds: 3.3 },
  ]);
  assert.equal(p.total, 96);
});

test('provisionPhases: from `since` (when vm start ran), and what is missing is left out', () => {
  const since = new Date(Date.parse(at(98)));
  const p = provisionPhases(TIMELINE, since);
  assert.equal(p.phases[0]?.seconds, 9.5, 'from vm start, not from the first discover');
  assert.equal(p.total, 98);
  const running = provisionPhases(TIMELINE.slice(0, 13), since);
  assert.deepEqual(
    running.phases.map((x) => x.name),
    ['firmware + DHCP', 'iPXE + downloads'],
  );
  assert.equal(running.total, undefined);
  assert.deepEqual(provisionPhases([ev(0, 'dhcp.discover')]), { phases: [], installer: [] });
  assert.deepEqual(provisionPhases(TIMELINE, new Date(Date.parse(at(500)))), { phases: [], installer: [] });
});

test('formatPhases', () => {
  assert.equal(
    formatPhases(provisionPhases(TIMELINE)),
    [
      'firmware + DHCP 7.5 s | iPXE + downloads 3.5 s | installer 23.7 s | first boot + cloud-init 61.3 s',
      'installer: disk 2.7 s, rootfs 17.3 s, seed 0.2 s, bootloader 3.3 s',
      'total 96.0 s',
    ].join('\n'),
  );
});
