// Bundle the CLI: one small entry module plus chunks loaded on demand, so start-up parses
// only the command framework and the command being run (yaml, tables, progress load lazily).
import { build } from 'esbuild';
import { readFileSync, rmSync } from 'node:fs';

// commander requires child_process at load time only to run executable subcommands, which
// pvmlab does not use; loading it (and net, dgram) costs ~6 ms at every start. Give
// commander a stand-in that loads the real module on first use.
const lazyChildProcess = {
  name: 'lazy-child-process-for-commander',
  setup(b) {
    b.onResolve({ filter: /^(node:)?child_process$/ }, (args) =>
      args.importer.includes('/node_modules/commander/')
        ? { path: 'lazy', namespace: 'lazy-child-process' }
        : undefined,
    );
    b.onLoad({ filter: /.*/, namespace: 'lazy-child-process' }, () => ({
      contents:
        "let real; module.exports = new Proxy({}, { get: (_, key) => (real ??= require('node:child_process'))[key] });",
      loader: 'js',
    }));
  },
};

rmSync('dist/bundle', { recursive: true, force: true }); // chunk names change with content

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
await build({
  entryPoints: ['src/cli/entry.ts'],
  plugins: [lazyChildProcess],
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
