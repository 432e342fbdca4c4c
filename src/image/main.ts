/**
 * `make -C pxeboot_stack <target>` runs this (from dist/): tar | image | base | clean-base.
 * ARCH=amd64|arm64 (default: the host's), ENGINE=docker|podman (default: docker if its daemon
 * answers, else podman), PVMLAB_DEBIAN_MIRROR (default deb.debian.org).
 */
import { relative } from 'node:path';
import { EXIT_FAILURE, PvmlabError, UsageError, errorMessage } from '../core/errors.js';
import { run } from '../core/exec.js';
import { packageRoot } from '../core/paths.js';
import { buildImage, ensureBase, imagePaths, probeEngines, removeBases, saveImageTar } from './build.js';
import { IMAGE, chooseEngine, parseImageArch } from './commands.js';

const TARGETS = ['tar', 'image', 'base', 'clean-base'] as const;
type Target = (typeof TARGETS)[number];

const say = (m: string) => process.stdout.write(`${m}\n`);
const mb = (bytes: number) => `${(bytes / 1e6).toFixed(1)} MB`;
const secs = (since: number) => `${((Date.now() - since) / 1000).toFixed(1)} s`;

async function main(argv: string[]): Promise<void> {
  const target = argv[0] as Target | undefined;
  if (argv.length !== 1 || !target || !TARGETS.includes(target))
    throw new UsageError(`usage: main.js <${TARGETS.join('|')}> (ARCH=amd64|arm64, ENGINE=docker|podman)`);
  const started = Date.now();
  const root = packageRoot();
  const arch = parseImageArch(process.env.ARCH);
  const engine = chooseEngine(process.env.ENGINE, await probeEngines(run));
  const o = { root, arch, engine, runner: run, log: say };
  if (target === 'clean-base') {
    const removed = await removeBases(o);
    say(removed.length ? `removed ${removed.join(', ')}` : 'no base image to remove');
    return;
  }
  if (target === 'base') {
    const b = await ensureBase(o);
    say(`${b.tag}: ${b.built ? `built in ${secs(started)}` : 'already built'} (${engine})`);
    return;
  }
  const built = await buildImage(o);
  say(
    `${IMAGE} (linux/${arch}, ${engine}): ${mb(built.bytes)}, built in ${secs(started)}` +
      (built.baseBuilt ? ` (new base ${built.base})` : ` (base ${built.base} from the cache)`),
  );
  if (target === 'image') return;
  const saving = Date.now();
  const p = imagePaths(root);
  const bytes = await saveImageTar(o, p.tar);
  say(
    `wrote ${relative(process.cwd(), p.tar) || p.tar} (${mb(bytes)}) in ${secs(saving)}; total ${secs(started)}`,
  );
}

main(process.argv.slice(2)).catch((err: unknown) => {
  process.stderr.write(`pxeboot_stack: ${errorMessage(err)}\n`);
  process.exitCode = err instanceof PvmlabError ? err.exitCode : EXIT_FAILURE;
});
