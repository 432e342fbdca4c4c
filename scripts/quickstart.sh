#!/usr/bin/env bash
# Set up pvmlab on this Linux machine and bring up a lab: the bridge network and one
# blank-disk target that network-boots. Needs root (bridge and TAP devices).
# Works offline once the Debian packages are installed; no image is downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
npm ci --no-audit --no-fund
npm run build
pvmlab() { node bin/pvmlab.js "$@"; }

pvmlab setup
pvmlab network start
pvmlab vm list --json | grep -q '"name": "target1"' || pvmlab vm create target1 --pxeboot
pvmlab vm start target1 || true   # already running is fine
echo "Waiting for target1's firmware to start PXE (about 30 s under TCG)..."
log="${PVMLAB_HOME:-$HOME}/.pvmlab/logs/target1.log"
for _ in $(seq 1 120); do
  if grep -q "Start PXE" "$log" 2>/dev/null; then break; fi
  sleep 1
done
pvmlab vm list
echo
echo "target1 is on the lab bridge, asking for a network boot (console: pvmlab vm logs target1)."
echo "Stop it with: pvmlab vm stop target1; remove everything with: pvmlab clean"
