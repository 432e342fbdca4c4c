// Bundle the stack alone for the pxeboot_stack container: one file, Node 18 (Debian 12's nodejs),
// no CLI code (src/stack imports only src/core).
import { build } from 'esbuild';
import { readFileSync } from 'node:fs';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
await build({
  entryPoints: ['src/stack/main.ts'],
  outfile: 'dist/stack/pvmlab-stack.mjs',
  bundle: true,
  minify: true,
  platform: 'node',
  target: 'node18',
  format: 'esm',
  legalComments: 'none',
  define: { PVMLAB_VERSION: JSON.stringify(pkg.version) },
  // valibot and ipaddr.js are ESM- and CommonJS-safe; a CommonJS dependency calling require()
  // for a Node built-in would need it.
  banner: {
    js: "import { createRequire as __pvmlabCreateRequire } from 'node:module'; const require = __pvmlabCreateRequire(import.meta.url);",
  },
  logLevel: 'warning',
});
