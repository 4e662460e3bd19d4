#!/usr/bin/env bash
# Installs the MCP conformance suite (@modelcontextprotocol/conformance, pinned in package.json)
# and the Node 22 it needs into tests/conformance/node_modules. Idempotent: a complete install is
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

wanted() { # the version package.json pins for a dependency (read with npm's own node)
    node -p "require('$here/package.json').dependencies['$1']"
}

installed() {
    [[ -x "$node22" && -f "$suite/package.json" && -f "$suite/dist/index.js" ]] || return 1
    [[ "$("$node22" --version 2>/dev/null)" == "v$(wanted node)" ]] || return 1
    [[ "$("$node22" -p "require('$suite/package.json').version" 2>/dev/null)" == "$(wanted @modelcontextprotocol/conformance)" ]]
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
echo "conformance suite ready: $("$node22" --version), @modelcontextprotocol/conformance $(wanted @modelcontextprotocol/conformance)"
