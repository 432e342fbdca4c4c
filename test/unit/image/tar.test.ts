import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { PvmlabError } from '../../../src/core/errors.js';
import {
  fileHeader,
  listTar,
  parseHeader,
  readTarMember,
  replaceTarMembers,
} from '../../../src/image/tar.js';

function dir(t: { after: (fn: () => void) => void }): string {
  const d = mkdtempSync(join(tmpdir(), 'pvml-tar-'));
  t.after(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

/** A docker-archive-shaped tree, archived by GNU tar in `format`, name files last as podman writes them. */
function archive(d: string, format: 'gnu' | 'pax' | 'ustar'): string {
  const src = join(d, `src-${format}`);
  const long = `${'d'.repeat(60)}/${'f'.repeat(60)}.json`;
  mkdirSync(join(src, 'abc'), { recursive: true });
  mkdirSync(join(src, 'd'.repeat(60)));
  // A layer larger than GNU tar's record (10 KiB) and not a multiple of 512.
  writeFileSync(join(src, 'layer1.tar'), Buffer.alloc(3 * 1024 * 1024 + 77, 7));
  writeFileSync(join(src, 'cfg.json'), '{"architecture":"amd64"}');
  writeFileSync(join(src, 'abc', 'VERSION'), '1.0');
  symlinkSync('../layer1.tar', join(src, 'abc', 'layer.tar'));
  if (format !== 'ustar') writeFileSync(join(src, long), 'long name');
  writeFileSync(join(src, 'manifest.json'), '[{"RepoTags":["localhost/x:latest"]}]');
  writeFileSync(join(src, 'repositories'), '{"localhost/x":{"latest":"abc"}}');
  const out = join(d, `a-${format}.tar`);
  const members = [
    'layer1.tar',
    'cfg.json',
    'abc',
    ...(format !== 'ustar' ? [long] : []),
    'manifest.json',
    'repositories',
  ];
  execFileSync('tar', [`--format=${format}`, '-cf', out, '-C', src, ...members]);
  return out;
}

const gnuList = (path: string) => execFileSync('tar', ['-tf', path], { encoding: 'utf8' }).trim().split('\n');

for (const format of ['gnu', 'pax', 'ustar'] as const)
  test(`${format} archive: members listed and read as GNU tar has them; name files replaced, the rest kept byte for byte`, async (t) => {
    const d = dir(t);
    const a = archive(d, format);
    assert.deepEqual(await listTar(a), gnuList(a));
    assert.equal(
      (await readTarMember(a, 'manifest.json'))?.toString(),
      '[{"RepoTags":["localhost/x:latest"]}]',
    );
    assert.equal(await readTarMember(a, 'nope'), undefined);

    const out = join(d, 'out.tar');
    await replaceTarMembers(a, out, [
      { name: 'manifest.json', data: Buffer.from('[{"RepoTags":["x:latest"]}]') },
      { name: 'repositories', data: Buffer.from('{"x":{"latest":"abc"}}') },
    ]);
    const before = gnuList(a);
    assert.deepEqual(gnuList(out), before, 'same members, the replaced ones last (where they were)');
    const x = join(d, 'x');
    mkdirSync(x);
    execFileSync('tar', ['-xf', out, '-C', x]);
    assert.equal(readFileSync(join(x, 'manifest.json'), 'utf8'), '[{"RepoTags":["x:latest"]}]');
    assert.equal(readFileSync(join(x, 'repositories'), 'utf8'), '{"x":{"latest":"abc"}}');
    assert.deepEqual(readFileSync(join(x, 'layer1.tar')), Buffer.alloc(3 * 1024 * 1024 + 77, 7));
    assert.equal(readFileSync(join(x, 'abc', 'layer.tar')).length, 3 * 1024 * 1024 + 77, 'the symlink kept');
    assert.equal(readFileSync(join(x, 'cfg.json'), 'utf8'), '{"architecture":"amd64"}');
    const v = execFileSync('tar', ['-tvf', out], { encoding: 'utf8' });
    assert.match(v, /-rw-r--r-- root\/root\s+27 1970-01-01 00:00 manifest\.json/);
  });

test('a header GNU tar reads; a damaged or truncated archive is refused', async (t) => {
  const d = dir(t);
  const h = fileHeader('hello.txt', 5);
  assert.deepEqual(parseHeader(h), { name: 'hello.txt', size: 5, type: '0' });
  const f = join(d, 'one.tar');
  writeFileSync(f, Buffer.concat([h, Buffer.from('hello'), Buffer.alloc(507), Buffer.alloc(1024)]));
  assert.equal(execFileSync('tar', ['-xOf', f, 'hello.txt'], { encoding: 'utf8' }), 'hello');
  assert.deepEqual(await listTar(f), ['hello.txt']);
  assert.equal(parseHeader(Buffer.alloc(512)), 'end');

  const refused = async (fn: () => Promise<unknown> | unknown, re: RegExp) =>
    assert.rejects(
      async () => fn(),
      (err: unknown) => err instanceof PvmlabError && re.test(err.message),
    );
  const bad = Buffer.from(h);
  bad[0] = 0x48; // 'H': the checksum no longer matches
  await refused(() => parseHeader(bad), /bad tar header checksum/);
  await refused(() => parseHeader(Buffer.alloc(100)), /truncated/);
  writeFileSync(join(d, 'cut.tar'), Buffer.concat([h, Buffer.from('hel')]));
  await refused(() => listTar(join(d, 'cut.tar')), /truncated tar archive \(hello\.txt\)/);
  writeFileSync(join(d, 'noend.tar'), Buffer.concat([h, Buffer.from('hello'), Buffer.alloc(507)]));
  await refused(() => listTar(join(d, 'noend.tar')), /no end block/);
  assert.throws(() => fileHeader('x'.repeat(101), 1), /too long/);
});
