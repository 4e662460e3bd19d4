"""Many MCP backends in one process, for the catalogue benchmark: N SDK servers (streamable HTTP,
both eras) on N consecutive ports, each with T tools of realistic size (a description of a
sentence or two, three typed parameters). A tool answers with its own name and arguments.

    .venv/bin/python bench/many_servers.py --base-port P [--servers 50] [--tools 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import uvicorn
from mcp.server.mcpserver import MCPServer

VERBS = ["get", "list", "create", "update", "delete", "search", "sync", "export", "archive", "restore"]
NOUNS = ["issue", "comment", "branch", "ticket", "invoice", "record", "message", "report", "asset", "user"]


def tool_name(server: int, index: int) -> str:
    return f"{VERBS[index % 10]}_{NOUNS[index // 10 % 10]}_{index}"


def build(server: int, tools: int) -> MCPServer:
    mcp = MCPServer(f"bench-{server:02d}", log_level="WARNING")
    for index in range(tools):
        name = tool_name(server, index)
        verb, noun = VERBS[index % 10], NOUNS[index // 10 % 10]

        description = (
            f"{verb.capitalize()} a {noun} in service {server} (operation {index}). Takes the {noun}'s "
            f"identifier as `target`; `limit` caps how many related items come back."
        )
        mcp.add_tool(_answering_as(name), name=name, description=description)
    return mcp


def _answering_as(name: str) -> Any:
    def tool(target: str, limit: int = 10, include_archived: bool = False) -> str:
        return json.dumps({"tool": name, "target": target, "limit": limit, "archived": include_archived})

    return tool


async def serve(base_port: int, servers: int, tools: int) -> None:
    running: list[Any] = []
    for server in range(servers):
        app = build(server, tools).streamable_http_app()
        config = uvicorn.Config(app, host="127.0.0.1", port=base_port + server, log_level="warning", access_log=False)
        running.append(uvicorn.Server(config).serve())
    await asyncio.gather(*running)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-port", type=int, required=True)
    parser.add_argument("--servers", type=int, default=50)
    parser.add_argument("--tools", type=int, default=100)
    args = parser.parse_args()
    asyncio.run(serve(args.base_port, args.servers, args.tools))


if __name__ == "__main__":
    main()
