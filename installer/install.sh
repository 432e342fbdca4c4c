#!/bin/sh
# pvmlab's installer, run by the initrd's /init (POSIX sh on busybox). It brings up the NIC,
# fetches /config/<mac> from the stack, partitions the disk (GPT: ESP + root), streams the root
# file system onto it, writes the cloud-init NoCloud seed, fstab (by UUID) and the bootloader the
# root file system already holds, and reports every phase to the stack's timeline.
# Exit status: 0 installed (reboot), 10 installed (stay: --installer-no-reboot), 1 failed.
set -u
PATH=/sbin:/bin:/usr/sbin:/usr/bin
TARGET=/target
PHASE=started
EVENTS_URL=
CONFIG_URL=
for a in $(cat /proc/cmdline); do
  case $a in
    config_url=*) CONFIG_URL=${a#*=} ;;
    pvmlab_events=*) EVENTS_URL=${a#*=} ;;
  esac
done

log() { echo "pvmlab installer: $*"; }

# Seconds since boot, with hundredths (busybox date has no sub-second format).
now() { cut -d ' ' -f 1 /proc/uptime; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

. /usr/share/pvmlab/lib.sh

# event <phase> [key value]...: POST {"type":"installer.<phase>","detail":{...}} to the stack.
# (busybox 1.35's wget -T crashes: timeouts come from the timeout applet.)
event() {
  _body=$(event_body "$@")
  [ -n "$EVENTS_URL" ] || return 0
  timeout 15 wget -q -O /dev/null --header 'Content-Type: application/json' --post-data "$_body" "$EVENTS_URL" 2>/dev/null ||
    log "could not report installer.$1 to the stack"
}

fail() {
  log "FAILED ($PHASE): $*"
  REPORTED=1
  event failed phase "$PHASE" reason "$*"
  exit 1
}
# Anything that stops the script without a verdict (a bug, an unset variable) still reaches the
# timeline, so `vm start --wait` does not wait for nothing.
REPORTED=0
on_exit() {
  _rc=$?
  [ $_rc -eq 0 ] || [ $_rc -eq 10 ] || [ $REPORTED = 1 ] || {
    REPORTED=1
    event failed phase "$PHASE" reason "the installer stopped unexpectedly (status $_rc); see the console"
  }
}
trap on_exit EXIT

# run <command...>: quiet on success; on failure its last lines become the reason.
run() {
  if ! "$@" >/tmp/run.out 2>&1; then
    cat /tmp/run.out
    fail "$1 failed: $(tail -n 3 /tmp/run.out | tr '\n' ' ')"
  fi
}

wait_for() { # <seconds> <test args...>
  _n=$(($1 * 10))
  shift
  while ! test "$@"; do
    _n=$((_n - 1))
    [ $_n -gt 0 ] || return 1
    usleep 100000
  done
}

T0=$(now)
[ -n "$CONFIG_URL" ] || fail "no config_url= on the kernel command line"
MAC=$(echo "${CONFIG_URL##*/}" | tr 'A-F-' 'a-f:')

# --- network: the NIC with this machine's MAC, DHCP -------------------------------------------
PHASE=network
# Drivers from modules.cpio.gz; those built into the kernel are simply not found.
for m in virtio_pci virtio_mmio virtio_net virtio_blk virtio_scsi sd_mod ahci nvme e1000 e1000e \
  vfat nls_cp437 nls_ascii nls_iso8859-1 ext4 crc32c_generic; do
  modprobe -q "$m" 2>/dev/null
done
IFACE=
_n=100
while [ -z "$IFACE" ] && [ $_n -gt 0 ]; do
  for d in /sys/class/net/*; do
    [ "$(cat "$d/address" 2>/dev/null)" = "$MAC" ] && IFACE=${d##*/}
  done
  [ -n "$IFACE" ] || usleep 100000
  _n=$((_n - 1))
done
[ -n "$IFACE" ] || {
  log "no network interface with MAC $MAC (have: $(ls /sys/class/net | tr '\n' ' '))"
  exit 1
}
ip link set lo up
ip link set "$IFACE" up
udhcpc -i "$IFACE" -n -q -f -t 10 -T 2 -s /usr/share/pvmlab/udhcpc.sh >/tmp/udhcpc.out 2>&1 || {
  cat /tmp/udhcpc.out
  log "no DHCP lease on $IFACE"
  exit 1
}
IP=$(ip -4 -o addr show dev "$IFACE" | awk '{ print $4; exit }')
PHASE=started
event started kernel "$(uname -r)" iface "$IFACE" ip "$IP" seconds "$(since "$T0")"

# --- config --------------------------------------------------------------------------------------
PHASE=config
timeout 60 wget -q -O /tmp/config.sh "$CONFIG_URL?format=sh" 2>/tmp/wget.err ||
  fail "cannot fetch $CONFIG_URL: $(cat /tmp/wget.err)"
PVMLAB_DISK=
PVMLAB_ROOTFS_BYTES=0
. /tmp/config.sh
log "installing ${PVMLAB_DISTRO} ($PVMLAB_ARCH) on ${PVMLAB_NAME}"

# --- disk: GPT with an EFI system partition and the root partition ------------------------------
PHASE=disk
T=$(now)
DISK=$PVMLAB_DISK
if [ -z "$DISK" ]; then
  for _try in 1 2 3 4 5 6 7 8 9 10; do
    for d in /dev/vda /dev/sda /dev/nvme0n1 /dev/xvda; do
      [ -b "$d" ] && DISK=$d && break 2
    done
    sleep 1
  done
fi
[ -n "$DISK" ] && [ -b "$DISK" ] || fail "no disk to install on (looked for ${PVMLAB_DISK:-/dev/vda, /dev/sda, /dev/nvme0n1, /dev/xvda})"
case $DISK in
  *[0-9]) PART=${DISK}p ;;
  *) PART=$DISK ;;
esac
DISK_BYTES=$(($(cat "/sys/class/block/${DISK##*/}/size") * 512))
case $PVMLAB_ARCH in
  aarch64) ROOT_TYPE=8305 GRUB_TARGET=arm64-efi ;;
  *) ROOT_TYPE=8304 GRUB_TARGET=x86_64-efi ;;
esac
# One call: a new, empty GPT (-o, which also rewrites the protective MBR and the backup table)
# and both partitions.
run sgdisk -o -n 1:1MiB:+256MiB -t 1:ef00 -c 1:EFI -n "2:0:0" -t "2:$ROOT_TYPE" -c 2:root "$DISK"
blockdev --rereadpt "$DISK" 2>/dev/null
wait_for 10 -b "${PART}2" || fail "the kernel does not show ${PART}2 after partitioning"
ROOT_UUID=$(cat /proc/sys/kernel/random/uuid)
ESP_ID=$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n' | tr 'a-f' 'A-F')
ESP_UUID=$(echo "$ESP_ID" | sed 's/\(....\)\(....\)/\1-\2/')
# The ESP is formatted while the root file system streams in; its mount waits for it.
(mkfs.fat -F 32 -n EFI -i "$ESP_ID" "${PART}1" >/tmp/mkfs.out 2>&1 && echo ok >/tmp/mkfs.out) &
MKFS=$!
event disk device "$DISK" bytes "$DISK_BYTES" esp "${PART}1" root "${PART}2" seconds "$(since "$T")"

# --- rootfs: streamed from the stack straight onto the disk -------------------------------------
PHASE=rootfs
T=$(now)
URL=$PVMLAB_ROOTFS_URL
case $PVMLAB_ROOTFS_FORMAT in
  ext4.zst) DECOMPRESS="zstd -dc" SINK=image ;;
  ext4.lz4) DECOMPRESS="zstd -dc --format=lz4" SINK=image ;;
  tar.zst) DECOMPRESS="zstd -dc" SINK=tar ;;
  tar.lz4) DECOMPRESS="zstd -dc --format=lz4" SINK=tar ;;
  tar.gz) DECOMPRESS="gzip -dc" SINK=tar ;;
  tar.xz) DECOMPRESS="xz -dc" SINK=tar ;;
  *) fail "unknown root file system format '$PVMLAB_ROOTFS_FORMAT'" ;;
esac
mkdir -p "$TARGET"
if [ $SINK = tar ]; then
  run mkfs.ext4 -F -q -L root -U "$ROOT_UUID" "${PART}2"
  run mount -t ext4 "${PART}2" "$TARGET"
fi
rm -f /tmp/rootfs.pipe
mkfifo /tmp/rootfs.pipe
wget -q -O - "$URL" >/tmp/rootfs.pipe 2>/tmp/wget.err &
WGET=$!
if [ $SINK = tar ]; then
  ($DECOMPRESS </tmp/rootfs.pipe | tar -x -C "$TARGET") >/tmp/sink.err 2>&1 &
else
  # O_DIRECT: no copy through the page cache and no writeback afterwards (measured under TCG:
  # 9-10 s instead of 17 s for the debian-12 image).
  ($DECOMPRESS </tmp/rootfs.pipe | dd of="${PART}2" bs=4M iflag=fullblock oflag=direct) >/tmp/sink.err 2>&1 &
fi
SINK_PID=$!
# Progress: the bytes wget has written so far (its I/O accounting), every 10 %.
NEXT=10
while kill -0 $WGET 2>/dev/null; do
  sleep 1
  GOT=$(awk '/^wchar/ { print $2 }' /proc/$WGET/io 2>/dev/null)
  [ -n "$GOT" ] && [ "$PVMLAB_ROOTFS_BYTES" -gt 0 ] || continue
  PCT=$((GOT * 100 / PVMLAB_ROOTFS_BYTES))
  if [ $PCT -ge $NEXT ] && [ $PCT -lt 100 ]; then
    event rootfs bytes "$GOT" total "$PVMLAB_ROOTFS_BYTES" percent "$PCT"
    NEXT=$((PCT / 10 * 10 + 10))
  fi
done
wait $WGET
WGET_RC=$?
wait $SINK_PID
SINK_RC=$?
[ $WGET_RC -eq 0 ] || fail "download of $URL failed: $(tr '\n' ' ' </tmp/wget.err)"
[ $SINK_RC -eq 0 ] || fail "writing the root file system failed: $(tail -n 3 /tmp/sink.err | tr '\n' ' ')"
log "root file system written in $(since "$T") s"
if [ $SINK = image ]; then
  # The image is as small as its files (checked when it was built, and zstd checks every frame):
  # give it this machine's UUID while it is small (tune2fs rewrites every metadata checksum),
  # then grow it to the partition.
  T2=$(now)
  run tune2fs -U "$ROOT_UUID" "${PART}2"
  run resize2fs "${PART}2"
  run mount -t ext4 "${PART}2" "$TARGET"
  log "new UUID, grown to the partition and mounted in $(since "$T2") s"
fi
event rootfs bytes "$PVMLAB_ROOTFS_BYTES" total "$PVMLAB_ROOTFS_BYTES" percent 100 format "$PVMLAB_ROOTFS_FORMAT" seconds "$(since "$T")"

# --- seed: cloud-init's NoCloud documents for the installed system -------------------------------
PHASE=seed
T=$(now)
mkdir -p "$TARGET/boot/efi"
wait $MKFS
[ "$(cat /tmp/mkfs.out)" = ok ] || fail "mkfs.fat ${PART}1 failed: $(tail -n 3 /tmp/mkfs.out | tr '\n' ' ')"
run mount -t vfat "${PART}1" "$TARGET/boot/efi"
SEED=$TARGET/var/lib/cloud/seed/nocloud-net
mkdir -p "$SEED"
for f in meta-data user-data network-config vendor-data; do
  timeout 60 wget -q -O "$SEED/$f" "$PVMLAB_CLOUD_INIT_URL/$f" 2>/tmp/wget.err ||
    fail "cannot fetch $PVMLAB_CLOUD_INIT_URL/$f: $(cat /tmp/wget.err)"
done
chmod 0600 "$SEED/user-data"
cat >"$TARGET/etc/fstab" <<EOF
# Written by the pvmlab installer.
UUID=$ROOT_UUID	/	ext4	errors=remount-ro	0	1
UUID=$ESP_UUID	/boot/efi	vfat	umask=0077	0	2
EOF
echo "$PVMLAB_NAME" >"$TARGET/etc/hostname"
event seed source "$PVMLAB_CLOUD_INIT_URL" seconds "$(since "$T")"

# --- bootloader: the GRUB the root file system holds, no package downloads ---------------------
PHASE=bootloader
T=$(now)
[ -x "$TARGET/usr/sbin/grub-install" ] || fail "the root file system has no grub-install: its image must include the bootloader (the installer downloads no packages)"
for d in dev dev/pts proc sys run; do
  mkdir -p "$TARGET/$d"
  run mount --bind "/$d" "$TARGET/$d"
done
ID=$(sed -n 's/^ID=//p' "$TARGET/etc/os-release" 2>/dev/null | tr -d '"')
mkdir -p "$TARGET/etc/default/grub.d"
# Only the console: none of the installer's arguments (config_url=, pvmlab_events=, initrd=) stay.
cat >"$TARGET/etc/default/grub.d/90-pvmlab.cfg" <<EOF
# Written by the pvmlab installer.
GRUB_CMDLINE_LINUX_DEFAULT="$PVMLAB_KERNEL_CMDLINE"
GRUB_TIMEOUT=0
GRUB_DISABLE_OS_PROBER=true
EOF
run chroot "$TARGET" grub-install --target="$GRUB_TARGET" --efi-directory=/boot/efi --bootloader-id="${ID:-linux}" --no-nvram
# Also at the removable-media path, which firmware boots with no boot entry in its NVRAM: the same
# files (a signed GRUB reads grub.cfg from its own directory; shim loads grub*.efi beside it).
ESP=$TARGET/boot/efi/EFI
[ -d "$ESP/${ID:-linux}" ] || fail "grub-install left nothing in EFI/${ID:-linux}"
case $GRUB_TARGET in
  arm64-efi) SUFFIX=aa64 ;;
  *) SUFFIX=x64 ;;
esac
mkdir -p "$ESP/BOOT"
run cp "$ESP/${ID:-linux}/"* "$ESP/BOOT/"
FIRST=shim$SUFFIX.efi
[ -e "$ESP/BOOT/$FIRST" ] || FIRST=grub$SUFFIX.efi
[ -e "$ESP/BOOT/$FIRST" ] || fail "grub-install left no grub$SUFFIX.efi in EFI/${ID:-linux}"
run cp "$ESP/BOOT/$FIRST" "$ESP/BOOT/BOOT$(echo $SUFFIX | tr a-z A-Z).EFI"
# The first boot's grub.cfg, written here: grub-mkconfig takes ~18 s under emulation. It says
# what update-grub would for the newest kernel; the next update-grub (any kernel upgrade)
# rewrites it from /etc/default/grub and the settings above.
KERNEL=$(cd "$TARGET/boot" && ls vmlinuz-* 2>/dev/null | sort -V | tail -n 1)
[ -n "$KERNEL" ] || fail "the root file system has no kernel in /boot"
KVER=${KERNEL#vmlinuz-}
INITRD=
for i in "initrd.img-$KVER" "initramfs-$KVER.img"; do
  [ -e "$TARGET/boot/$i" ] && INITRD="initrd /boot/$i"
done
cat >"$TARGET/boot/grub/grub.cfg" <<EOF
# Written by the pvmlab installer for the first boot; update-grub replaces it.
set timeout=0
insmod part_gpt
insmod ext2
search --no-floppy --fs-uuid --set=root $ROOT_UUID
linux /boot/$KERNEL root=UUID=$ROOT_UUID ro $PVMLAB_KERNEL_CMDLINE
$INITRD
boot
EOF
event bootloader target "$GRUB_TARGET" id "${ID:-linux}" seconds "$(since "$T")"

# --- done ----------------------------------------------------------------------------------------
PHASE="done"
for d in run sys proc dev/pts dev boot/efi; do umount "$TARGET/$d" 2>/dev/null; done
umount "$TARGET" || fail "cannot unmount the root file system"
sync
event "done" seconds "$(since "$T0")" reboot "$PVMLAB_REBOOT_ON_SUCCESS"
log "installed ${PVMLAB_DISTRO} on $DISK in $(since "$T0") s"
[ "$PVMLAB_REBOOT_ON_SUCCESS" = true ] && exit 0
exit 10
