import { Command, Option } from '@commander-js/extra-typings';
import { log } from '../core/log.js';
import { validateArch, type Arch } from '../lab/validate.js';
import type { Context } from './context.js';
import { safeLines, safeText } from '../core/safe-text.js';

function formatBytes(n: number): string {
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 / 1024).toFixed(0)} MiB`;
  return `${(n / 1024 ** 3).toFixed(1)} GiB`;
}

export function distroCommand(ctx: Context): Command {
  const distro = new Command('distro').description('Distributions to install on PXE targets: list, pull');

  distro
    .command('ls')
    .alias('list')
    .description('List the distros: how each is installed, what is pulled, sizes')
    .option('--json', 'print JSON', false)
    .action(async (o) => {
      const { distroStatus } = await import('../distro/status.js');
      const rows = await distroStatus(ctx.app);
      if (o.json) {
        const { printJson } = await import('./output.js');
        return printJson(rows);
      }
      if (rows.length === 0) return log.info('No distributions defined.');
      const { printTable } = await import('./output.js');
      await printTable(
        ['DISTRO', 'ARCH', 'PXE SOURCE', 'STATUS', 'KERNEL', 'ROOT FS', 'SIZE', 'DISK VMS'],
        // distros.yaml and the pulled manifests are files: their strings are escaped for the terminal.
        rows.map((r) => [
          safeText(r.name),
          safeText(r.arch),
          r.pxe_source === 'build' ? 'built here' : r.pxe_source === 'rootfs' ? 'root tarball' : '-',
          r.pulled ? 'Pulled' : 'Not pulled',
          safeText(r.kernel_version ?? ''),
          safeText(r.rootfs_format ?? ''),
          r.bytes ? formatBytes(r.bytes) : '',
          r.cloud_image ? (r.cloud_image_present ? 'image present' : 'yes') : '-',
        ]),
      );
    });

  distro
    .command('pull')
    .description(
      'Build or download a distro for PXE installs: kernel, installer modules and root file system under images/<distro>/<arch>',
    )
    .option('--distro <name>', 'the distro (default: debian-12)')
    .option('--arch <arch>', "'x86_64' or 'aarch64' (default: the host's)")
    .addOption(
      new Option('--format <format>', 'how the root file system is stored').choices([
        'ext4.zst',
        'tar.zst',
      ] as const),
    )
    .option('--force', 'build or convert again even if already pulled', false)
    .action(async (o) => {
      const { hostArch } = await import('../qemu/accel.js');
      const arch: Arch = validateArch(o.arch ?? hostArch() ?? 'x86_64');
      const { DEFAULT_PXE_DISTRO, findDistroEntry, loadDistros } = await import('../distro/distros.js');
      const entry = findDistroEntry(await loadDistros(ctx.app), o.distro ?? DEFAULT_PXE_DISTRO);
      const { pullDistro } = await import('../distro/pull.js');
      const { downloadProgressBar } = await import('./progress.js');
      const started = Date.now();
      const elapsed = () => `${((Date.now() - started) / 1000).toFixed(0).padStart(4)} s`;
      const bar = downloadProgressBar(`${entry.name} ${arch}`);
      const abort = new AbortController();
      const onSigint = () => abort.abort(new Error('interrupted'));
      process.once('SIGINT', onSigint);
      try {
        const r = await pullDistro({
          app: ctx.app,
          distro: entry,
          arch,
          runner: ctx.runner,
          env: ctx.env,
          ...(o.format ? { format: o.format } : {}),
          force: o.force,
          // Steps quote tools' output and URLs from distros.yaml.
          onStep: (m) => log.info(`${elapsed()}  ${safeLines(m)}`),
          onDownload: (p) => bar.update(p),
          signal: abort.signal,
        });
        bar.stop();
        const how = {
          present: 'already pulled',
          cache: 'taken from the build cache',
          built: 'built',
          downloaded: 'downloaded and converted',
        }[r.how];
        log.success(
          `${safeText(entry.name)} (${arch}) ${how} in ${((Date.now() - started) / 1000).toFixed(0)} s: kernel ${safeText(r.manifest.kernel_version ?? '')}, ` +
            `root file system ${safeText(r.manifest.rootfs)} (${formatBytes(r.manifest.rootfs_bytes)}) in ${safeText(r.dir)}`,
        );
        log.success(`installer initrd: ${safeText(r.initrd)}`);
      } finally {
        bar.stop();
        process.off('SIGINT', onSigint);
      }
    });
  return distro;
}
