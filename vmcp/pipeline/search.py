"""Search mode (`aggregation.search`): two tools for catalogues too large to hand an agent whole.

`find_tools(query, limit)` ranks the tools the caller may call (`vmcp.catalog.search`) and
answers with their definitions — name, description, input schema — so the agent can call one;
`call_tool(name, arguments)` calls it. Both are vmcp's own tools, judged by the authorization
rules like any other. What a search may find is exactly what `tools/list` would show the caller
(the same authorization decision, the same view key), composite tools included; `call_tool` hands
the inner call to the same pipeline as a direct call, so policies, audit, metrics and every
refusal apply to it as to the tool called by name. With `mode: instead` the two tools replace the
full list; with `beside` they are added to it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from typing import Any

import mcp_types as types

from vmcp.catalog.search import ToolIndex
from vmcp.config.models import SearchConfig
from vmcp.pipeline.envelope import error_result

FIND_DESCRIPTION = (
    "Search the tools available to you by what you want to do. Answers with the best matches "
    "(name, description, input schema), best first; call one with the call tool."
)
CALL_DESCRIPTION = "Call a tool found with the search tool, by its name, with arguments matching its input schema."
MAX_QUERY = 1000

CallTool = Callable[[Mapping[str, Any]], Awaitable[Any]]


class ToolSearch:
    def __init__(
        self,
        config: SearchConfig | None,
        visible: Callable[[Mapping[str, Any], Sequence[types.Tool]], Sequence[types.Tool]],
        view_of: Callable[[Mapping[str, Any]], Hashable],
    ) -> None:
        self.config = config
        self._visible = visible
        self._view_of = view_of
        self._searchable: list[types.Tool] = []
        self._index: ToolIndex | None = None
        self._views: dict[Hashable, frozenset[str]] = {}

    @property
    def names(self) -> set[str]:
        if self.config is None:
            return set()
        return {self.config.find_tools.name, self.config.call_tool.name}

    def advertised(self, searchable: Sequence[types.Tool]) -> list[types.Tool]:
        """The tools to list: the searchable ones, the search tools, or both (and re-index)."""
        self._searchable, self._index, self._views = list(searchable), None, {}
        if self.config is None:
            return list(searchable)
        own = self._definitions(self.config)
        return own if self.config.mode == "instead" else [*searchable, *own]

    def input_schema(self, name: str) -> Mapping[str, Any] | None:
        if self.config is None or name not in self.names:
            return None
        return next(t.input_schema for t in self._definitions(self.config) if t.name == name)

    async def call(self, caller: Mapping[str, Any], params: Mapping[str, Any], call_tool: CallTool) -> Any:
        assert self.config is not None
        arguments = params.get("arguments") or {}
        if params.get("name") == self.config.find_tools.name:
            return self._find(caller, arguments)
        name, inner = arguments.get("name"), arguments.get("arguments")
        if not isinstance(name, str) or not name:
            return error_result("`name` must be the name of a tool (a string), as find_tools gives it.")
        if inner is not None and not isinstance(inner, dict):
            return error_result("`arguments` must be an object: the tool's arguments.")
        if name in self.names:
            return error_result(f"{name!r} is a search tool itself: call it directly.")
        forwarded: dict[str, Any] = {"name": name, "arguments": inner or {}}
        if isinstance(params.get("_meta"), dict):
            forwarded["_meta"] = params["_meta"]
        return await call_tool(forwarded)

    def _find(self, caller: Mapping[str, Any], arguments: Mapping[str, Any]) -> dict[str, Any]:
        assert self.config is not None
        query, limit = arguments.get("query"), arguments.get("limit", self.config.default_limit)
        if not isinstance(query, str) or not query.strip():
            return error_result("`query` must be a non-empty string: what you want to do.")
        if len(query) > MAX_QUERY:
            return error_result(f"`query` is too long: at most {MAX_QUERY} characters.")
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= self.config.max_limit:
            return error_result(f"`limit` must be an integer from 1 to {self.config.max_limit}.")
        if self._index is None:
            self._index = ToolIndex(self._searchable)
        view = self._view_of(caller)
        visible = self._views.get(view)
        if visible is None:
            visible = self._views[view] = frozenset(t.name for t in self._visible(caller, self._searchable))
        found = [
            {
                "name": tool.name,
                "description": tool.description or "",
                "inputSchema": tool.input_schema,
                "score": round(score, 3),
            }
            for tool, score in self._index.search(query, limit, visible)
        ]
        answer = {"tools": found}
        text = json.dumps(answer, separators=(",", ":")) if found else "No tool matches; try other words."
        return {
            "content": [{"type": "text", "text": text}],
            "structuredContent": answer,
            "isError": False,
            "resultType": "complete",
        }

    @staticmethod
    def _definitions(config: SearchConfig) -> list[types.Tool]:
        find = types.Tool(
            name=config.find_tools.name,
            description=config.find_tools.description or FIND_DESCRIPTION,
            input_schema={
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": "What you want to do, in a few words."},
                    "limit": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": config.max_limit,
                        "default": config.default_limit,
                        "description": "How many tools to return at most.",
                    },
                },
                "required": ["query"],
            },
            annotations=types.ToolAnnotations(read_only_hint=True, open_world_hint=False),
        )
        call = types.Tool(
            name=config.call_tool.name,
            description=config.call_tool.description or CALL_DESCRIPTION,
            input_schema={
                "type": "object",
                "properties": {
                    "name": {"type": "string", "description": "The tool's name, as the search gave it."},
                    "arguments": {"type": "object", "description": "The tool's arguments."},
                },
                "required": ["name"],
            },
        )
        return [find, call]
