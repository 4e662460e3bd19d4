"""A minimal MCP backend for the benchmarks: `echo` answers at once, so what is measured is
the protocol path, not the tool. Served over streamable HTTP (both protocol eras)."""

from __future__ import annotations

import argparse

import uvicorn
from mcp.server.mcpserver import MCPServer

server = MCPServer("bench-echo")


@server.tool(description="Return the text unchanged.")
def echo(text: str) -> str:
    return text


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = server.streamable_http_app()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
