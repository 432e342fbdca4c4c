import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { runCli, tempHome } from '../../helpers/cli.js';

test('network stop refuses while a VM runs on the network, and names it', async (t) => {
  const { home, app, cleanup } = await tempHome('pvnet-stop-');
  t.after(cleanup);
  const pidFile = join(app, 'pids', 'web1.pid');
  await mkdir(join(app, 'pids'), { recursive: true });
  await mkdir(join(app, 'vms'), { recursive: true });
  await writeFile(join(app, 'vms', 'web1.json'), '{}');
  // A process that passes for web1's QEMU: its name and its -pidfile (the identity check).
  const fake = spawn(
    'bash',
    [
      '-c',
      'exec -a qemu-system-x86_64 "$0" -e "setTimeout(() => {}, 60000)" -- -pidfile "$1"',
      process.execPath,
      pidFile,
    ],
    { stdio: 'ignore' },
  );
  t.after(() => fake.kill('SIGKILL'));
  await new Promise((r) => setTimeout(r, 200));
  await writeFile(pidFile, `${fake.pid}\n`);
  const r = await runCli(['network', 'stop'], { home });
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /web1 still run on the lab network: stop them first .* or use --force/);
});
