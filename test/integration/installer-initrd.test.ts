import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';

const BUILD = 'installer/build-initrd.sh';
const TOOLS = ['sgdisk', 'mke2fs', 'resize2fs', 'e2fsck', 'tune2fs', 'mkfs.fat', 'zstd'];

function build(arch: string, out: string): void {
  execFileSync('bash', [BUILD, arch, out], { stdio: ['ignore', 'ignore', 'pipe'], timeout: 20 * 60_000 });
}

function unpack(initrd: string, dir: string): void {
  mkdirSync(dir, { recursive: true });
  execFileSync('sh', ['-c', `zcat '${initrd}' | cpio -i -d --quiet`], { cwd: dir });
}

/** Every ELF's shared libraries and interpreter, resolved inside the unpacked initrd. */
function missingLibraries(root: string, triplet: string): string[] {
  const missing: string[] = [];
  const elves = [
    'bin/busybox',
    ...TOOLS.map((t) => `sbin/${t}`),
    ...readdirSync(join(root, 'lib', triplet)).map((f) => `lib/${triplet}/${f}`),
  ];
  for (const f of elves) {
    const dyn = execFileSync('readelf', ['-d', '-l', join(root, f)], { encoding: 'utf8' });
    for (const m of dyn.matchAll(/\(NEEDED\)\s+Shared library: \[(.+?)\]/g)) {
      const so = m[1] as string;
      try {
        statSync(join(root, 'lib', triplet, so));
      } catch {
        missing.push(`${f} needs ${so}`);
      }
    }
    const interp = /Requesting program interpreter: (\S+)\]/.exec(dyn)?.[1];
    if (interp) {
      try {
        statSync(join(root, interp));
      } catch {
        missing.push(`${f} needs its interpreter ${interp}`);
      }
    }
  }
  return missing;
}

/**
 * The installer initrd, built by installer/build-initrd.sh from Debian packages (the other
 * architecture's through the private apt tree): same inputs, same bytes; everything the
 * installer runs is inside, with its libraries, and runs.
 */
describe('installer initrd', { timeout: 40 * 60_000 }, () => {
  const work = mkdtempSync(join(tmpdir(), 'pvmlab-initrd-'));
  after(() => rmSync(work, { recursive: true, force: true }));

  for (const [arch, triplet, machine] of [
    ['x86_64', 'x86_64-linux-gnu', 'Advanced Micro Devices X86-64'],
    ['aarch64', 'aarch64-linux-gnu', 'AArch64'],
  ] as const) {
    test(`${arch}: reproducible, complete, and its tools run`, () => {
      const a = join(work, `${arch}-a.gz`);
      const b = join(work, `${arch}-b.gz`);
      build(arch, a);
      build(arch, b);
      const sha = (p: string) => createHash('sha256').update(readFileSync(p)).digest('hex');
      assert.equal(sha(a), sha(b), 'the same inputs give the same bytes');
      // gzip without a name or time stamp; a newc cpio inside.
      const head = readFileSync(a).subarray(0, 10);
      assert.deepEqual([...head.subarray(0, 4)], [0x1f, 0x8b, 0x08, 0x00], 'gzip, no FNAME flag');
      assert.equal(head.readUInt32LE(4), 0, 'no gzip time stamp');
      const list = execFileSync('sh', ['-c', `zcat '${a}' | cpio -t --quiet`], { encoding: 'utf8' }).split(
        '\n',
      );
      for (const f of [
        'init',
        'bin/busybox',
        'usr/share/pvmlab/install.sh',
        'usr/share/pvmlab/udhcpc.sh',
        'usr/share/pvmlab/lib.sh',
        ...TOOLS.map((t) => `sbin/${t}`),
      ])
        assert.ok(list.includes(f) || list.includes(`./${f}`), `${f} in the initrd`);
      const verbose = execFileSync('sh', ['-c', `zcat '${a}' | cpio -tv --quiet`], { encoding: 'utf8' });
      assert.doesNotMatch(verbose, /^\S+\s+\d+\s+(?!root\s+root)/m, 'every entry owned by root');
      const root = join(work, `${arch}-root`);
      unpack(a, root);
      assert.deepEqual(missingLibraries(root, triplet), []);
      assert.match(
        execFileSync('readelf', ['-h', join(root, 'sbin/sgdisk')], { encoding: 'utf8' }),
        new RegExp(`Machine:\\s+${machine}`),
      );
      // Run them: natively, or through qemu-user (binfmt_misc) for the other architecture.
      assert.match(
        execFileSync('chroot', [root, '/sbin/sgdisk', '--version'], { encoding: 'utf8' }),
        /GPT fdisk \(sgdisk\) version/,
      );
      assert.match(execFileSync('chroot', [root, '/sbin/zstd', '-V'], { encoding: 'utf8' }), /Zstandard CLI/);
      assert.match(
        execFileSync('chroot', [root, '/bin/busybox', 'sh', '-n', '/usr/share/pvmlab/install.sh'], {
          encoding: 'utf8',
        }),
        /^$/,
      );
    });
  }
});
