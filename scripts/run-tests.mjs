// Runs the compiled test tiers with node's built-in runner.
// Usage: node scripts/run-tests.mjs unit [integration] [e2e]
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

const tiers = process.argv.slice(2);
if (tiers.length === 0) tiers.push('unit');

function collect(dir) {
  const out = [];
  for (const entry of readdirSync(dir)) {
    const p = join(dir, entry);
    if (statSync(p).isDirectory()) out.push(...collect(p));
    else if (entry.endsWith('.test.js')) out.push(p);
  }
  return out.sort();
}

const files = [];
for (const tier of tiers) {
  if ((tier === 'integration' || tier === 'e2e') && process.getuid?.() !== 0) {
    console.error(`${tier} tests need root (network namespaces, bridges, TAPs): run them as root`);
    process.exit(2);
  }
  files.push(...collect(join('dist', 'test', tier)));
}
if (files.length === 0) {
  console.error('no test files found: run `npm run build` first');
  process.exit(2);
}
// Integration and e2e tests share the CPU with QEMU guests under TCG: run files one at a time.
const concurrency = tiers.includes('integration') || tiers.includes('e2e') ? '1' : '2';
const r = spawnSync(
  process.execPath,
  ['--test', `--test-concurrency=${concurrency}`, '--test-reporter=spec', ...files],
  { stdio: 'inherit' },
);
process.exit(r.status ?? 1);
