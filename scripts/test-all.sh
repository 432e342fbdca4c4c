#!/usr/bin/env bash
# Set up a fresh machine and run every test: lint, unit, integration (root: network namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --test
npm ci --no-audit --no-fund
npm test
