#!/usr/bin/env bash
# Build pvmlab's installer initrd for one architecture from Debian packages: busybox, sgdisk,
# e2fsprogs, dosfstools and zstd with exactly the shared libraries they need, plus the
# installer's own scripts. No container engine: the packages (of any architecture) come through
# scripts/debian-fetch.sh, verified by apt against Debian's keyring.
#
#   installer/build-initrd.sh <x86_64|aarch64> <out.gz>
#
# The unpacked packages are kept in $PVMLAB_CACHE/installer (default /var/cache/pvmlab), so a
# rebuild needs no network. Same packages + same scripts = the same bytes: entries sorted, owned
# by root, mtime 0, gzip without a name or time stamp.
set -euo pipefail
[[ $# -eq 2 ]] || { echo "usage: $0 <x86_64|aarch64> <out.gz>" >&2; exit 2; }
arch=$1 out=$2
here=$(cd "$(dirname "$0")" && pwd)
suite=${PVMLAB_INSTALLER_SUITE:-bookworm}
case $arch in
  x86_64) debarch=amd64 ;;
  aarch64) debarch=arm64 ;;
  *) echo "build-initrd: unknown architecture '$arch' (x86_64 or aarch64)" >&2; exit 2 ;;
esac
for tool in readelf cpio gzip sha256sum; do
  command -v "$tool" >/dev/null || { echo "build-initrd: $tool is needed (Debian: binutils, cpio, gzip, coreutils)" >&2; exit 1; }
done

# What goes in, and the packages that provide it (libraries are resolved from the tools' ELF
# NEEDED entries; a library no package here provides fails the build).
TOOLS=(
  usr/sbin/sgdisk          # GPT partitioning
  usr/sbin/mke2fs usr/sbin/resize2fs usr/sbin/e2fsck usr/sbin/tune2fs
  usr/sbin/mkfs.fat        # the EFI system partition
  usr/bin/zstd             # root filesystem streams
)
PACKAGES=(
  busybox-static gdisk e2fsprogs dosfstools zstd
  libc6 libgcc-s1 libstdc++6 libpopt0 libuuid1 libblkid1 libext2fs2 libcom-err2
  zlib1g liblzma5 liblz4-1
)

cache=${PVMLAB_CACHE:-/var/cache/pvmlab}/installer
key=$(printf '%s\n' "$suite" "$debarch" "${PACKAGES[@]}" | sha256sum | cut -c1-16)
pkgroot=$cache/pkgroot-$suite-$debarch-$key
if [[ ! -d $pkgroot ]]; then
  echo "build-initrd: fetching ${#PACKAGES[@]} Debian packages ($suite, $debarch)" >&2
  rm -rf "$pkgroot.tmp"
  "$here/../scripts/debian-fetch.sh" "$suite" "$debarch" "$pkgroot.tmp" "${PACKAGES[@]}" >&2
  # Which package versions went in, for the record (and for the bytes: a new version is a new input).
  (cd /var/cache/pvmlab/apt/"$suite-$debarch"/archives && for p in "${PACKAGES[@]}"; do ls -t "${p}"_*.deb | head -1; done) >"$pkgroot.tmp/.packages"
  mv "$pkgroot.tmp" "$pkgroot"
  # The package roots of earlier package lists are not used again.
  for old in "$cache/pkgroot-$suite-$debarch-"????????????????; do
    if [[ -d $old && $old != "$pkgroot" ]]; then rm -rf "$old"; fi
  done
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"/{bin,sbin,lib,etc,dev,proc,sys,run,tmp,mnt,target,usr/bin,usr/sbin,usr/share/pvmlab}
chmod 1777 "$root/tmp"

# Where the dynamic linker and libraries live in Debian's multiarch layout.
case $arch in
  x86_64) triplet=x86_64-linux-gnu interp=lib64/ld-linux-x86-64.so.2 ;;
  aarch64) triplet=aarch64-linux-gnu interp=lib/ld-linux-aarch64.so.1 ;;
esac
libdirs=("$pkgroot/usr/lib/$triplet" "$pkgroot/lib/$triplet" "$pkgroot/usr/lib" "$pkgroot/lib")

declare -A copied=()
copy_lib() { # soname
  local so=$1 dir src
  [[ -n ${copied[$so]:-} ]] && return 0
  for dir in "${libdirs[@]}"; do
    if [[ -e $dir/$so ]]; then src=$(readlink -f "$dir/$so"); break; fi
  done
  [[ -n ${src:-} ]] || { echo "build-initrd: no package provides $so (add it to PACKAGES)" >&2; exit 1; }
  copied[$so]=1
  install -D -m 0755 "$src" "$root/lib/$triplet/$so"
  copy_needed "$src"
}
copy_needed() { # elf file
  local so
  for so in $(readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do copy_lib "$so"; done
}

install -m 0755 "$pkgroot/bin/busybox" "$root/bin/busybox"
for t in "${TOOLS[@]}"; do
  [[ -e $pkgroot/$t ]] || t=${t#usr/}
  install -m 0755 "$pkgroot/$t" "$root/sbin/$(basename "$t")"
  copy_needed "$pkgroot/$t"
done
ln -s mke2fs "$root/sbin/mkfs.ext4"
mkdir -p "$root/$(dirname "$interp")"
# Relative, so it resolves inside the initrd from anywhere (also when inspected on the host).
up=$(dirname "$interp" | sed 's|[^/]*|..|g')
ln -sf "$up/lib/$triplet/$(basename "$interp")" "$root/$interp"
[[ -e $root/lib/$triplet/$(basename "$interp") ]] || copy_lib "$(basename "$interp")"

install -m 0755 "$here/init" "$root/init"
install -m 0755 "$here/install.sh" "$root/usr/share/pvmlab/install.sh"
install -m 0755 "$here/udhcpc.sh" "$root/usr/share/pvmlab/udhcpc.sh"
install -m 0644 "$here/lib.sh" "$root/usr/share/pvmlab/lib.sh"
{
  echo "pvmlab installer initrd ($arch, Debian $suite)"
  cat "$pkgroot/.packages"
} >"$root/etc/pvmlab-installer"

# Reproducible archive: sorted names, root-owned, every time stamp 0, no gzip name/time.
find "$root" -exec touch -h -d @0 {} +
mkdir -p "$(dirname "$out")"
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 --reproducible) |
  gzip -9 -n >"$out.tmp"
mv "$out.tmp" "$out"
echo "build-initrd: $out ($(du -h "$out" | cut -f1), $arch)" >&2
