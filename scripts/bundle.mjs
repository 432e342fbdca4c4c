// Bundle the CLI: one small entry module plus chunks loaded on demand, so start-up parses
// only the command framework and the command being run (yaml, tables, progress load lazily).
import { build } from 'esbuild';
import { readFileSync } from 'node:fs';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
await build({
  entryPoints: ['src/cli/entry.ts'],
  outdir: 'dist/bundle',
  outExtension: { '.js': '.mjs' },
  entryNames: 'pvmlab',
  chunkNames: 'chunks/[name]-[hash]',
  splitting: true,
  minify: true,
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  sourcemap: true,
  legalComments: 'none',
  define: { PVMLAB_VERSION: JSON.stringify(pkg.version) },
  // CommonJS dependencies (commander, cli-table3) call require() for Node built-ins.
  banner: {
    js: "import { createRequire as __pvmlabCreateRequire } from 'node:module'; const require = __pvmlabCreateRequire(import.meta.url);",
  },
  logLevel: 'warning',
});
