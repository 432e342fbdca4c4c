import { appDir, labDirs } from '../core/paths.js';
import { run, type Runner } from '../core/exec.js';
import { promises as fs } from 'node:fs';

/** What every command needs: where the lab lives and how to run processes. */
export interface Context {
  app: string;
  runner: Runner;
  env: NodeJS.ProcessEnv;
}

export function defaultContext(): Context {
  return { app: appDir(process.env), runner: run, env: process.env };
}

/** Create the lab's directory tree (idempotent). */
export async function ensureLabDirs(app: string): Promise<void> {
  const d = labDirs(app);
  await Promise.all(
    [d.images, d.vms, d.pids, d.logs, d.monitors, d.cloudInit, d.dockerImages, d.locks].map((p) =>
      fs.mkdir(p, { recursive: true }),
    ),
  );
  await fs.mkdir(d.ssh, { recursive: true, mode: 0o700 });
}
