import { main } from './main.js';

// Entry point of the bundled CLI (bin/pvmlab.js imports the bundle).
main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`pvmlab: ${String(err)}\n`);
    process.exitCode = 1;
  },
);
