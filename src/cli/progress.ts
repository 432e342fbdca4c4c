/** A byte progress bar for downloads, on stderr so stdout stays pipeable. */
import cliProgress from 'cli-progress';
import type { DownloadProgress } from '../distro/download.js';
import { safeText } from '../core/safe-text.js';

export interface DownloadProgressBar {
  update(p: DownloadProgress): void;
  stop(): void;
}

function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} ${units[i]}` : `${v.toFixed(1)} ${units[i]}`;
}

function sizes(p: DownloadProgress): string {
  return p.total === undefined
    ? formatBytes(p.received)
    : `${formatBytes(p.received)} / ${formatBytes(p.total)}`;
}

export function downloadProgressBar(rawLabel: string): DownloadProgressBar {
  const stream = process.stderr;
  // The label names a distro from distros.yaml: escaped, and braces kept out of cli-progress's
  // placeholder syntax.
  const label = safeText(rawLabel).replace(/[{}]/g, '');
  let last: DownloadProgress | undefined;

  if (!stream.isTTY) {
    // No redraws into logs or pipes: one summary line at the end.
    return {
      update(p) {
        last = p;
      },
      stop() {
        if (last !== undefined) stream.write(`${label}: ${sizes(last)}\n`);
        last = undefined;
      },
    };
  }

  let bar: cliProgress.SingleBar | undefined;
  return {
    update(p) {
      last = p;
      if (bar === undefined) {
        // The format depends on whether the size is known, which only the first update tells.
        const known = p.total !== undefined;
        bar = new cliProgress.SingleBar(
          {
            stream,
            format: known
              ? `${label} [{bar}] {percentage}% | {sizes} | ETA {eta_formatted}`
              : `${label} {sizes}`,
            barsize: 30,
            hideCursor: true,
          },
          cliProgress.Presets.shades_classic,
        );
        bar.start(p.total ?? 0, p.received, { sizes: sizes(p) });
        return;
      }
      if (p.total !== undefined && p.total !== bar.getTotal()) bar.setTotal(p.total);
      bar.update(p.received, { sizes: sizes(p) });
    },
    stop() {
      bar?.stop();
      bar = undefined;
    },
  };
}
