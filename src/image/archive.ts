/**
 * The saved image is a docker-archive: layers plus `manifest.json` (RepoTags: the name `docker
 * load` gives the image) and the legacy `repositories`. podman names its images
 * `localhost/<name>`, and writes that; Docker writes the short name. The tar must say
 * `pxeboot_stack:latest` whoever built it, so those two small files are rewritten when needed.
 */
import * as v from 'valibot';
import { PvmlabError } from '../core/errors.js';
import { describeIssues } from '../core/vmdef.js';

const ManifestSchema = v.pipe(
  v.array(
    v.looseObject({
      Config: v.string(),
      RepoTags: v.nullish(v.array(v.string())),
      Layers: v.array(v.string()),
    }),
  ),
  v.length(1, 'one image'),
);
export type ArchiveManifest = v.InferOutput<typeof ManifestSchema>;

const RepositoriesSchema = v.record(v.string(), v.record(v.string(), v.string()));

export function parseManifest(text: string): ArchiveManifest {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    throw new PvmlabError(`the image archive's manifest.json is not JSON: ${(err as Error).message}`);
  }
  const r = v.safeParse(ManifestSchema, data);
  if (!r.success) throw new PvmlabError(`the image archive's manifest.json: ${describeIssues(r.issues)}`);
  return r.output;
}

/** `pxeboot_stack:latest` -> [`pxeboot_stack`, `latest`]. */
function splitTag(tag: string): [string, string] {
  const i = tag.lastIndexOf(':');
  return i > tag.lastIndexOf('/') ? [tag.slice(0, i), tag.slice(i + 1)] : [tag, 'latest'];
}

/**
 * The archive's two name files with `tag` as the image's only name, or undefined when the
 * manifest already says exactly that (Docker's own save).
 */
export function retagArchive(
  manifestText: string,
  repositoriesText: string | undefined,
  tag: string,
): { manifest: string; repositories?: string } | undefined {
  const [image] = parseManifest(manifestText) as [ArchiveManifest[number]];
  if (image.RepoTags?.length === 1 && image.RepoTags[0] === tag) return undefined;
  const manifest2 = JSON.stringify([{ ...image, RepoTags: [tag] }]);
  if (repositoriesText === undefined) return { manifest: manifest2 };
  let data: unknown;
  try {
    data = JSON.parse(repositoriesText);
  } catch (err) {
    throw new PvmlabError(`the image archive's repositories file is not JSON: ${(err as Error).message}`);
  }
  const r = v.safeParse(RepositoriesSchema, data);
  if (!r.success) throw new PvmlabError(`the image archive's repositories file: ${describeIssues(r.issues)}`);
  // Its one entry names the image's top layer; it keeps that, under the new name.
  const topLayer = Object.values(r.output).flatMap((tags) => Object.values(tags))[0];
  const [repo, name] = splitTag(tag);
  return {
    manifest: manifest2,
    repositories: JSON.stringify(topLayer === undefined ? {} : { [repo]: { [name]: topLayer } }),
  };
}
