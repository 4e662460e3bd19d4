#!/usr/bin/env bash
# The whole stack on a fresh machine: install, then `vmcp dev` (Temporal dev server with the
# Web UI, a worker and the façade). Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/vmcp dev --config "${VMCP_CONFIG:-temporal-dev.yaml}" "$@"
