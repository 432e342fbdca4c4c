#!/usr/bin/env bash
# Install the Debian/Ubuntu packages pvmlab and its tests use. Needs root.
#   scripts/install-deps.sh          what `pvmlab` itself needs
#   scripts/install-deps.sh --test   plus what the test suite needs
set -euo pipefail

RUNTIME=(
  qemu-system-x86 qemu-system-arm qemu-utils # QEMU for x86_64 and aarch64 guests, qemu-img
  ovmf qemu-efi-aarch64                      # UEFI firmware (OVMF, AAVMF)
  openssh-client iproute2 procps             # vm shell/copy; bridge and TAP devices; pgrep
  dnsmasq-base ipxe                          # the pxeboot stack natively: DHCP/DNS/TFTP, iPXE binaries
  mmdebstrap e2fsprogs zstd                  # distro pull: debian-12 built here, an ext4 image, zstd
  cpio gzip binutils xz-utils                # the installer initrd (readelf), root tarballs
  qemu-user-static binfmt-support arch-test  # ...and an aarch64 root file system on an x86_64 host
)
TEST=(
  xorriso                                     # reads back the seed ISOs we write
  shellcheck                                  # lint of the installer's shell scripts
  busybox-static linux-image-cloud-amd64      # a tiny real guest OS for lifecycle tests
  grub-efi-amd64-bin mtools gdisk e2fsprogs   # ...on a UEFI-bootable disk built without mounting
  mmdebstrap                                  # a real Debian cloud image (cloud-init, sshd) for disk-VM tests
  fish python3                                # completion and plist checks with the real parsers
  atftp                                       # a real TFTP client
  isc-dhcp-client ndisc6                      # a real DHCPv6 client (dhclient -6) and RA dump (rdisc6)
  nginx-light wrk                             # the boot server's benchmark: nginx baseline, wrk load
  podman runc make                            # the pxeboot_stack image: built and run by podman (make -C pxeboot_stack tar)
)

pkgs=("${RUNTIME[@]}")
[[ "${1:-}" == "--test" ]] && pkgs+=("${TEST[@]}")

if [[ $(id -u) -ne 0 ]]; then
  echo "install-deps: run as root (sudo $0 $*)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Everything already installed: nothing to fetch, so this works offline (a second quickstart).
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed || missing+=("$p")
done
if ((${#missing[@]})); then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  echo "install-deps: installed ${#missing[@]} packages (${missing[*]})"
else
  echo "install-deps: all ${#pkgs[@]} packages present"
fi

# Foreign-architecture root file systems run the other architecture's programs through
# qemu-user: binfmt_misc must be mounted and the aarch64 interpreter registered.
if ! grep -qs '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 && [[ $(uname -m) != aarch64 ]]; then
  mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || true
  update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
  if grep -qs '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64; then
    echo "install-deps: binfmt_misc runs aarch64 programs through qemu-aarch64-static"
  else
    echo "install-deps: warning: cannot register qemu-aarch64 in binfmt_misc; aarch64 distros cannot be built here" >&2
  fi
fi

# podman as the tests run it: crun fails on some kernels (runc works), and the default ulimits
# cannot be set inside some sandboxes (an empty list keeps the process's own).
CONTAINERS_CONF=/etc/containers/containers.conf
if [[ "${1:-}" == "--test" ]]; then
  if [[ ! -e $CONTAINERS_CONF ]]; then
    mkdir -p "$(dirname "$CONTAINERS_CONF")"
    printf '[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"\n' >"$CONTAINERS_CONF"
    echo "install-deps: $CONTAINERS_CONF (podman: runc, no default ulimits)"
  elif ! grep -qs '^default_ulimits = \[\]' "$CONTAINERS_CONF"; then
    if grep -qs '^\[containers\]' "$CONTAINERS_CONF"; then
      sed -i '/^\[containers\]/a default_ulimits = []' "$CONTAINERS_CONF"
    else
      printf '[containers]\ndefault_ulimits = []\n' >>"$CONTAINERS_CONF"
    fi
    echo "install-deps: $CONTAINERS_CONF: default_ulimits = []"
  fi
  if ! grep -qs '^runtime *=' "$CONTAINERS_CONF"; then
    if grep -qs '^\[engine\]' "$CONTAINERS_CONF"; then
      sed -i '/^\[engine\]/a runtime = "runc"' "$CONTAINERS_CONF"
    else
      printf '\n[engine]\nruntime = "runc"\n' >>"$CONTAINERS_CONF"
    fi
    echo "install-deps: $CONTAINERS_CONF: runtime = \"runc\""
  fi
fi

here=$(cd "$(dirname "$0")" && pwd)
# Debian 12's ipxe has no arm64 build; Debian 13's (architecture: all) does. Take only that file,
# verified by apt against Debian's keyring, without adding a suite to this system's apt sources.
ARM64_IPXE=/usr/local/lib/pvmlab/ipxe/ipxe-arm64.efi
if [[ ! -e /usr/lib/ipxe/ipxe-arm64.efi && ! -e $ARM64_IPXE ]]; then
  tmp=$(mktemp -d)
  if "$here/debian-fetch.sh" trixie amd64 "$tmp" ipxe >/dev/null &&
    install -D -m 0644 "$tmp/usr/lib/ipxe/ipxe-arm64.efi" "$ARM64_IPXE"; then
    echo "install-deps: $ARM64_IPXE (from Debian 13's ipxe)"
  elif [[ "${1:-}" == "--test" ]]; then
    echo "install-deps: could not get ipxe-arm64.efi from Debian 13 (the aarch64 PXE test needs it)" >&2
    exit 1
  else
    # Only aarch64 network boot needs it: x86_64 labs work without.
    echo "install-deps: warning: no arm64 iPXE (Debian 13 unreachable?); aarch64 VMs cannot PXE-boot" >&2
  fi
  rm -rf "$tmp"
fi

# The tests boot an aarch64 guest too: Debian's arm64 cloud kernel and busybox, unpacked.
ARM64_GUEST=/var/cache/pvmlab/arm64-guest
if [[ "${1:-}" == "--test" && ! -x $ARM64_GUEST/bin/busybox ]]; then
  rm -rf "$ARM64_GUEST.tmp"
  "$here/debian-fetch.sh" bookworm arm64 "$ARM64_GUEST.tmp" linux-image-cloud-arm64 busybox-static >/dev/null
  rm -rf "$ARM64_GUEST" && mv "$ARM64_GUEST.tmp" "$ARM64_GUEST"
  echo "install-deps: $ARM64_GUEST (Debian's arm64 cloud kernel and busybox)"
fi
