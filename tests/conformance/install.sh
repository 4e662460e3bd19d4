#!/usr/bin/env bash
# Installs the MCP conformance suite (@modelcontextprotocol/conformance, pinned in package.json:
# 0.1.16, the 2025-11-25 revision's suite, and under the alias conformance-2026-07-28 the 0.2
# prerelease that holds the 2026-07-28 revision's requirements) and the Node 22 it needs into tests/conformance/node_modules. Idempotent: a complete install is
# left alone. Needs only npm (any Node >= 18 to run npm itself): Node 22 comes from npm as the
# package `node`, so the machine's own Node may stay at 20.
#
#   tests/conformance/install.sh          # then:
#   tests/conformance/node_modules/.bin/node \
#       tests/conformance/node_modules/@modelcontextprotocol/conformance/dist/index.js \
#       server --url http://127.0.0.1:PORT/mcp
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
node22="$here/node_modules/.bin/node"
suite="$here/node_modules/@modelcontextprotocol/conformance"
next_suite="$here/node_modules/conformance-2026-07-28"

wanted() { # the version package.json pins for a dependency (read with npm's own node)
    node -p "require('$here/package.json').dependencies['$1']"
}

suite_version() { # the version of the suite installed under a dependency name, or nothing
    "$node22" -p "require('$here/node_modules/$1/package.json').version" 2>/dev/null
}

installed() {
    [[ -x "$node22" && -f "$suite/dist/index.js" && -f "$next_suite/dist/index.js" ]] || return 1
    [[ "$("$node22" --version 2>/dev/null)" == "v$(wanted node)" ]] || return 1
    [[ "$(suite_version @modelcontextprotocol/conformance)" == "$(wanted @modelcontextprotocol/conformance)" ]] || return 1
    [[ "npm:@modelcontextprotocol/conformance@$(suite_version conformance-2026-07-28)" == "$(wanted conformance-2026-07-28)" ]]
}

install() {
    installed && return 0
    command -v npm >/dev/null || { echo "install.sh: npm is required" >&2; return 1; }
    npm install --no-audit --no-fund --loglevel=error --prefix "$here"
    installed || { echo "install.sh: install finished but the pinned versions are not in place" >&2; return 1; }
}

# Concurrent test runs on one checkout take turns instead of writing node_modules at once.
if command -v flock >/dev/null; then
    mkdir -p "$here/node_modules"
    exec 9>"$here/node_modules/.vmcp-install.lock"
    flock 9
fi
install
echo "conformance suites ready: $("$node22" --version), @modelcontextprotocol/conformance $(suite_version @modelcontextprotocol/conformance) and $(suite_version conformance-2026-07-28)"
