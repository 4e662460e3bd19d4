"""Prepared lists: pages made on first request, in any order, from one snapshot of the view."""

from __future__ import annotations

import json
from typing import Any

import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError

from vmcp.pipeline.lists import PreparedLists, _cursor

SCHEMA = {"type": "object", "properties": {"target": {"type": "string"}}}


class Catalogue:
    def __init__(self, count: int) -> None:
        self.tools = [types.Tool(name=f"t{i:04}", description="d", inputSchema=SCHEMA) for i in range(count)]
        self.asked = 0

    def visible(self, method: str, caller: Any) -> list[types.Tool]:
        self.asked += 1
        return list(self.tools)


def _names(lists: PreparedLists, cursor: str | None, version: str = "2026-07-28") -> tuple[list[str], str | None]:
    body = json.loads(lists.page("tools/list", {}, version, cursor).body)
    return [tool["name"] for tool in body["tools"]], body.get("nextCursor")


def test_a_later_page_asked_first_is_the_right_one_and_the_view_is_read_once() -> None:
    catalogue = Catalogue(2500)
    lists = PreparedLists(catalogue.visible, lambda caller: "all", 1000, lambda: {"name": "vmcp", "version": "1"})
    last, after_last = _names(lists, _cursor(2))
    assert last == [f"t{i:04}" for i in range(2000, 2500)] and after_last is None
    first, next_cursor = _names(lists, None)
    assert first == [f"t{i:04}" for i in range(1000)] and next_cursor == _cursor(1)
    middle, _ = _names(lists, next_cursor)
    assert middle == [f"t{i:04}" for i in range(1000, 2000)]
    assert catalogue.asked == 1  # one snapshot of the view for all its pages
    with pytest.raises(MCPError):
        lists.page("tools/list", {}, "2026-07-28", _cursor(3))


def test_after_a_change_the_view_is_read_again_and_old_cursors_past_its_end_are_invalid() -> None:
    catalogue = Catalogue(2500)
    lists = PreparedLists(catalogue.visible, lambda caller: "all", 1000, lambda: {"name": "vmcp", "version": "1"})
    assert _names(lists, _cursor(2))[0][0] == "t2000"
    catalogue.tools = catalogue.tools[:1500]
    lists.reset()
    with pytest.raises(MCPError):
        lists.page("tools/list", {}, "2026-07-28", _cursor(2))
    assert _names(lists, _cursor(1))[0] == [f"t{i:04}" for i in range(1000, 1500)]
    assert catalogue.asked == 2
    # each version is prepared apart, from its own snapshot
    assert _names(lists, None, "2025-11-25")[0][0] == "t0000" and catalogue.asked == 3


class _Unlistable(types.Tool):
    def model_dump(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        raise AssertionError(f"{self.name} was prepared although its page was never asked for")


def test_a_page_is_prepared_only_when_asked_for() -> None:
    """After a change the first list prepares its own page, not the whole catalogue (at 5,000
    tools, 80-120 ms on the event loop): the third page's items are never dumped here."""
    catalogue = Catalogue(2000)
    catalogue.tools += [_Unlistable(name=f"u{i}", description="d", inputSchema=SCHEMA) for i in range(500)]
    lists = PreparedLists(catalogue.visible, lambda caller: "all", 1000, lambda: {"name": "vmcp", "version": "1"})
    first, next_cursor = _names(lists, None)
    second, last_cursor = _names(lists, next_cursor)
    assert len(first) == len(second) == 1000 and last_cursor == _cursor(2)
    with pytest.raises(AssertionError, match="was prepared"):
        lists.page("tools/list", {}, "2026-07-28", last_cursor)
