#!/usr/bin/env bash
# Install the Debian/Ubuntu packages pvmlab and its tests use. Needs root.
#   scripts/install-deps.sh          what `pvmlab` itself needs
#   scripts/install-deps.sh --test   plus what the test suite needs
set -euo pipefail

RUNTIME=(
  qemu-system-x86 qemu-system-arm qemu-utils # QEMU for x86_64 and aarch64 guests, qemu-img
  ovmf qemu-efi-aarch64                      # UEFI firmware (OVMF, AAVMF)
  openssh-client iproute2                    # vm shell/copy; bridge and TAP devices
  dnsmasq-base ipxe                          # the pxeboot stack natively: DHCP/DNS/TFTP, iPXE binaries
)
TEST=(
  xorriso                                     # reads back the seed ISOs we write
  cpio                                        # reads back the initramfs archives we write
  busybox-static linux-image-cloud-amd64      # a tiny real guest OS for lifecycle tests
  grub-efi-amd64-bin mtools gdisk e2fsprogs   # ...on a UEFI-bootable disk built without mounting
  mmdebstrap                                  # a real Debian cloud image (cloud-init, sshd) for disk-VM tests
  fish python3                                # completion and plist checks with the real parsers
  atftp                                       # a real TFTP client
  isc-dhcp-client ndisc6                      # a real DHCPv6 client (dhclient -6) and RA dump (rdisc6)
  nginx-light wrk                             # the boot server's benchmark: nginx baseline, wrk load
)

pkgs=("${RUNTIME[@]}")
[[ "${1:-}" == "--test" ]] && pkgs+=("${TEST[@]}")

if [[ $(id -u) -ne 0 ]]; then
  echo "install-deps: run as root (sudo $0 $*)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
echo "install-deps: installed ${#pkgs[@]} packages"

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
