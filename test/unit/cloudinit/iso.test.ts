import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildIso, type IsoFile } from '../../../src/cloudinit/iso.js';

// These tests read the images back with real tools: xorriso (package xorriso) and blkid
// (util-linux), the probe cloud-init's ds-identify relies on to find the `cidata` volume.

const SECTOR = 2048;
const DATE = new Date(Date.UTC(2024, 1, 29, 13, 45, 30, 120));

function pattern(length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = (i * 31 + 7) & 0xff;
  return out;
}

const NOCLOUD: IsoFile[] = [
  { name: 'meta-data', data: Buffer.from('instance-id: iid-local01\nlocal-hostname: node1\n') },
  {
    name: 'user-data',
    data: Buffer.from('#cloud-config\npassword: passw0rd\nchpasswd: { expire: False }\n'),
  },
  { name: 'network-config', data: pattern(5000) }, // spans three sectors
  { name: 'vendor-data', data: new Uint8Array(0) },
];

function xorriso(args: readonly string[]): string {
  // xorriso reports progress on stderr; the listings asked for come on stdout.
  return execFileSync('xorriso', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Lists the root directory names xorriso sees (`-ls` quotes each name on its own line). */
function listRoot(iso: string, readFsArgs: readonly string[] = []): string[] {
  return xorriso([...readFsArgs, '-indev', iso, '-ls', '/'])
    .split('\n')
    .filter((line) => line.startsWith("'"))
    .map((line) => line.slice(1, -1))
    .sort();
}

/** Extracts the whole image with xorriso into a fresh directory and returns it. */
function extract(iso: string, dir: string): string {
  const out = join(dir, 'extracted');
  rmSync(out, { recursive: true, force: true });
  xorriso(['-osirrox', 'on', '-indev', iso, '-extract', '/', out]);
  chmodSync(out, 0o755); // xorriso restores the read-only mode of the ISO root; keep it removable
  return out;
}

function assertSameFiles(dir: string, files: readonly IsoFile[]): void {
  assert.deepEqual(readdirSync(dir).sort(), files.map((f) => f.name).sort());
  for (const f of files) {
    assert.deepEqual(readFileSync(join(dir, f.name)), Buffer.from(f.data), `content of ${f.name}`);
  }
}

describe('buildIso read back by real tools', () => {
  let dir = '';
  let iso = '';

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'pvmlab-iso-'));
    iso = join(dir, 'seed.iso');
    writeFileSync(iso, buildIso(NOCLOUD, { volumeId: 'cidata', date: DATE }));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('xorriso extracts the Joliet tree with the original names and exact bytes', () => {
    // With no Rock Ridge present xorriso loads the Joliet tree by default (-read_fs any).
    assertSameFiles(extract(iso, dir), NOCLOUD);
  });

  it('the primary tree holds unique ISO level 1 names', () => {
    const names = listRoot(iso, ['-read_fs', 'ecma119', '-ecma119_map', 'unmapped']);
    assert.deepEqual(names, ['META_DAT.;1', 'NETWORK_.;1', 'USER_DAT.;1', 'VENDOR_D.;1']);
  });

  it('records the volume id and dates in the primary volume descriptor', () => {
    const info = xorriso(['-indev', iso, '-pvd_info']);
    assert.match(info, /^Volume Id\s*: cidata$/m);
    assert.match(info, /^Creation Time: 2024022913453012$/m);
    assert.match(info, /^Modif\. Time\s*: 2024022913453012$/m);
  });

  it('blkid sees an iso9660 volume labelled cidata with Joliet', () => {
    const out = execFileSync('blkid', ['-p', '-o', 'export', iso], {
      encoding: 'utf8',
      env: { ...process.env, PATH: `${process.env.PATH ?? ''}:/usr/sbin:/sbin` },
    });
    assert.match(out, /^TYPE=iso9660$/m);
    assert.match(out, /^LABEL=cidata$/m);
    assert.match(out, /^VERSION=Joliet\\ Extension$/m); // export format escapes the space
  });

  it('handles a directory spanning several sectors and colliding 8.3 names', () => {
    // 60 names of 64 characters: ~10 KiB of Joliet records, ~2.6 KiB of ISO records, and all
    // map to the same 8.3 stem (CLOUD_CO).
    const files: IsoFile[] = Array.from({ length: 60 }, (_, i) => ({
      name: `cloud-config-${String(i).padStart(2, '0')}-`.padEnd(64, 'x'),
      data: pattern(i * 100),
    }));
    const image = buildIso(files, { volumeId: 'MANY_FILES', date: DATE });
    const rootSize = (offset: number): number => image.readUInt32LE(offset + 156 + 10);
    assert.ok(rootSize(16 * SECTOR) > SECTOR, 'ISO root directory spans sectors');
    assert.ok(rootSize(17 * SECTOR) > 2 * SECTOR, 'Joliet root directory spans sectors');

    const many = join(dir, 'many.iso');
    writeFileSync(many, image);
    assertSameFiles(extract(many, dir), files);
    const isoNames = listRoot(many, ['-read_fs', 'ecma119', '-ecma119_map', 'unmapped']);
    assert.equal(isoNames.length, 60);
    assert.equal(new Set(isoNames).size, 60);
    for (const name of isoNames) assert.match(name, /^[A-Z0-9_]{1,8}\.;1$/);
  });
});

describe('buildIso image structure', () => {
  it('lays out descriptors, volume size and sector alignment as ECMA-119 says', () => {
    const image = buildIso(NOCLOUD, { volumeId: 'cidata', date: DATE });
    assert.equal(image.length % SECTOR, 0);
    const descriptor = (n: number) => image.subarray(n * SECTOR, (n + 1) * SECTOR);
    assert.deepEqual(
      [16, 17, 18].map((n) => [descriptor(n)[0], descriptor(n).toString('latin1', 1, 6)]),
      [
        [1, 'CD001'],
        [2, 'CD001'],
        [255, 'CD001'],
      ],
    );
    assert.equal(descriptor(17).toString('latin1', 88, 91), '%/E');
    for (const n of [16, 17]) {
      assert.equal(descriptor(n).readUInt32LE(80), image.length / SECTOR, 'volume space size (LE)');
      assert.equal(descriptor(n).readUInt32BE(84), image.length / SECTOR, 'volume space size (BE)');
    }
    assert.equal(Buffer.from(descriptor(17).subarray(40, 52)).swap16().toString('utf16le'), 'cidata');
  });

  it('is deterministic for a given date, whatever the input order', () => {
    const a = buildIso(NOCLOUD, { volumeId: 'cidata', date: DATE });
    const b = buildIso([...NOCLOUD].reverse(), { volumeId: 'cidata', date: DATE });
    assert.ok(a.equals(b));
  });

  it('builds an image with no files', () => {
    const image = buildIso([], { volumeId: 'cidata', date: DATE });
    assert.equal(image.readUInt32LE(16 * SECTOR + 80), image.length / SECTOR);
  });
});

describe('buildIso validation', () => {
  const file = (name: string): IsoFile => ({ name, data: new Uint8Array(1) });
  const build = (files: IsoFile[], volumeId = 'cidata', date: Date = DATE) =>
    buildIso(files, { volumeId, date });

  it('accepts a 64-character name', () => {
    assert.doesNotThrow(() => build([file('a'.repeat(64))]));
  });

  for (const [what, files, message] of [
    ['an empty name', [file('')], /empty/],
    ['a name over 64 characters', [file('a'.repeat(65))], /longer than 64/],
    ['a slash', [file('a/b')], /contains "\/"/],
    ['a NUL', [file('a\0b')], /control character/],
    ['a Joliet-forbidden character', [file('a;1')], /contains ";"/],
    ['a reserved name', [file('..')], /reserved/],
    ['a trailing dot', [file('a.')], /ends with '\.'/],
    ['duplicate names', [file('user-data'), file('user-data')], /duplicate ISO file name "user-data"/],
  ] as const) {
    it(`rejects ${what}`, () => {
      assert.throws(() => build([...files]), { name: 'Error', message });
    });
  }

  for (const volumeId of ['', 'a'.repeat(33), 'ci-data', 'cidatá']) {
    it(`rejects volume id ${JSON.stringify(volumeId)}`, () => {
      assert.throws(() => build([file('meta-data')], volumeId), /invalid ISO volume id/);
    });
  }

  it('accepts a 32-character volume id', () => {
    assert.doesNotThrow(() => build([file('meta-data')], 'A'.repeat(32)));
  });

  it('rejects a date it cannot record', () => {
    assert.throws(() => build([file('meta-data')], 'cidata', new Date(Number.NaN)), /invalid ISO date/);
    assert.throws(
      () => build([file('meta-data')], 'cidata', new Date(Date.UTC(2200, 0))),
      /invalid ISO date/,
    );
  });
});
