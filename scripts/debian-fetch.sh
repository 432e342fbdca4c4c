#!/usr/bin/env bash
# Fetch and unpack Debian packages of another suite or architecture without touching the
# system's apt configuration: a private apt tree verifies them against Debian's keyring.
#   scripts/debian-fetch.sh <suite> <arch> <dest-dir> <package>...
# A package named `linux-image-*` that is a metapackage is replaced by the kernel it depends on.
set -euo pipefail
[[ $# -ge 4 ]] || { echo "usage: $0 <suite> <arch> <dest-dir> <package>..." >&2; exit 2; }
suite=$1 arch=$2 dest=$3
shift 3
mirror=${PVMLAB_DEBIAN_MIRROR:-http://deb.debian.org/debian}
tree=/var/cache/pvmlab/apt/$suite-$arch
mkdir -p "$tree"/{lists/partial,archives/partial,etc/preferences.d,etc/sources.list.d} "$dest"
: >"$tree/status"
cat >"$tree/etc/sources.list" <<SRC
deb [arch=$arch signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main
SRC
opts=(
  -o "Dir::Etc=$tree/etc" -o "Dir::State=$tree" -o "Dir::State::Lists=$tree/lists"
  -o "Dir::State::status=$tree/status" -o "Dir::Cache=$tree" -o "Dir::Cache::archives=$tree/archives"
  -o "APT::Architecture=$arch" -o "APT::Architectures::=$arch" -o "Debug::NoLocking=1"
)
apt-get "${opts[@]}" update -qq
cd "$tree/archives"
for pkg in "$@"; do
  real=$pkg
  if [[ $pkg == linux-image-* ]]; then
    dep=$(apt-cache "${opts[@]}" depends "$pkg" | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    [[ -n $dep ]] && real=$dep
  fi
  apt-get "${opts[@]}" download -qq "$real:$arch" 2>/dev/null || apt-get "${opts[@]}" download -qq "$real"
  deb=$(ls -t "${real}"_*.deb | head -1)
  dpkg-deb -x "$deb" "$dest"
  echo "debian-fetch: $deb -> $dest"
done
