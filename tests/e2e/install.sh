#!/usr/bin/env bash
# Installs the real MCP clients and published servers the end-to-end tests drive (pinned in
# package.json) and the Node 22 they need into tests/e2e/node_modules: the MCP Inspector (its
# --cli mode), the TypeScript SDK (for ts_client.mjs), and the reference servers everything,
# filesystem and memory. Idempotent: a complete install is left alone. Needs only npm (any
# Node >= 18 to run npm itself): Node 22 comes from npm as the package `node`, so the machine's
# own Node may stay at 20.
#
#   tests/e2e/install.sh          # then, for example:
#   tests/e2e/node_modules/.bin/node tests/e2e/node_modules/.bin/mcp-inspector \
#       --cli http://127.0.0.1:PORT/mcp --transport http --method tools/list
#   tests/e2e/node_modules/.bin/node tests/e2e/ts_client.mjs http://127.0.0.1:PORT/mcp TOOL '{"k": "v"}'
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
node22="$here/node_modules/.bin/node"
packages=(
    @modelcontextprotocol/inspector
    @modelcontextprotocol/sdk
    @modelcontextprotocol/server-everything
    @modelcontextprotocol/server-filesystem
    @modelcontextprotocol/server-memory
)

wanted() { # the version package.json pins for a dependency (read with npm's own node)
    node -p "require('$here/package.json').dependencies['$1']"
}

installed() {
    [[ -x "$node22" ]] || return 1
    [[ "$("$node22" --version 2>/dev/null)" == "v$(wanted node)" ]] || return 1
    local pkg
    for pkg in "${packages[@]}"; do
        [[ -f "$here/node_modules/$pkg/package.json" ]] || return 1
        [[ "$("$node22" -p "require('$here/node_modules/$pkg/package.json').version" 2>/dev/null)" == "$(wanted "$pkg")" ]] ||
            return 1
    done
}

install() {
    installed && return 0
    command -v npm >/dev/null || { echo "install.sh: npm is required" >&2; return 1; }
    # The lock file records versions and integrity hashes only, never the registry it came from.
    npm install --no-audit --no-fund --loglevel=error --omit-lockfile-registry-resolved --prefix "$here"
    installed || { echo "install.sh: install finished but the pinned versions are not in place" >&2; return 1; }
}

# Concurrent test runs on one checkout take turns instead of writing node_modules at once.
if command -v flock >/dev/null; then
    mkdir -p "$here/node_modules"
    exec 9>"$here/node_modules/.vmcp-install.lock"
    flock 9
fi
install
echo "e2e clients and servers ready: $("$node22" --version)$(for p in "${packages[@]}"; do printf ', %s %s' "$p" "$(wanted "$p")"; done)"
