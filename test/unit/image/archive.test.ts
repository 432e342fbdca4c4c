import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PvmlabError } from '../../../src/core/errors.js';
import { parseManifest, retagArchive } from '../../../src/image/archive.js';

const image = (tags: string[] | null) =>
  JSON.stringify([{ Config: 'abc.json', RepoTags: tags, Layers: ['l1.tar', 'l2.tar'] }]);

test("podman's localhost/ name becomes pxeboot_stack:latest; Docker's own is left alone", () => {
  const r = retagArchive(
    image(['localhost/pxeboot_stack:latest']),
    '{"localhost/pxeboot_stack":{"latest":"top"}}',
    'pxeboot_stack:latest',
  );
  assert.ok(r);
  assert.deepEqual(JSON.parse(r.manifest), [
    { Config: 'abc.json', RepoTags: ['pxeboot_stack:latest'], Layers: ['l1.tar', 'l2.tar'] },
  ]);
  assert.deepEqual(JSON.parse(r.repositories as string), { pxeboot_stack: { latest: 'top' } });
  assert.equal(retagArchive(image(['pxeboot_stack:latest']), undefined, 'pxeboot_stack:latest'), undefined);
  // No name at all, or several, or no repositories file: still exactly the one name.
  assert.deepEqual(
    JSON.parse(retagArchive(image(null), undefined, 'pxeboot_stack:latest')?.manifest ?? '')[0].RepoTags,
    ['pxeboot_stack:latest'],
  );
  const two = retagArchive(image(['a:1', 'pxeboot_stack:latest']), undefined, 'pxeboot_stack:latest');
  assert.equal(two?.repositories, undefined);
  assert.deepEqual(JSON.parse(two?.manifest ?? '')[0].RepoTags, ['pxeboot_stack:latest']);
  // A registry host with a port is not a tag.
  const port = retagArchive(image(['x:1']), '{"x":{"1":"top"}}', 'localhost:5000/pxeboot_stack');
  assert.deepEqual(JSON.parse(port?.repositories as string), {
    'localhost:5000/pxeboot_stack': { latest: 'top' },
  });
});

test('an archive that is not a one-image docker-archive is refused', () => {
  const refused = (fn: () => unknown, re: RegExp) =>
    assert.throws(fn, (err: unknown) => err instanceof PvmlabError && re.test(err.message));
  refused(() => parseManifest('{'), /manifest\.json is not JSON/);
  refused(() => parseManifest('{}'), /manifest\.json: /);
  refused(() => parseManifest('[]'), /manifest\.json: .*one image/);
  refused(() => parseManifest(`[${image([]).slice(1, -1)},${image([]).slice(1, -1)}]`), /one image/);
  refused(
    () => retagArchive(image(['x:1']), 'nope', 'pxeboot_stack:latest'),
    /repositories file is not JSON/,
  );
  refused(() => retagArchive(image(['x:1']), '{"x":[1]}', 'pxeboot_stack:latest'), /repositories file: /);
});
