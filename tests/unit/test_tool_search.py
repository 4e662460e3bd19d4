"""Ranking for search mode (`vmcp.catalog.search`): words split the way tool names are written,
stemmed, names weighing most, and nothing outside the caller's visible set."""

from __future__ import annotations

import mcp_types as types

from vmcp.catalog.search import ToolIndex


def _tool(name: str, description: str = "", **parameters: str) -> types.Tool:
    properties = {key: {"type": "string", "description": text} for key, text in parameters.items()}
    return types.Tool(name=name, description=description, input_schema={"type": "object", "properties": properties})


TOOLS = [
    _tool("time_get_current_time", "Get current time in a specific timezone", timezone="IANA timezone name"),
    _tool("filesystem_read_text_file", "Read the complete contents of a file as text", path="Path of the file"),
    _tool("github_listIssues", "List issues of a repository", repo="owner/name"),
    _tool("notes-archive-note", "Move a note out of sight"),
]
ALL = {tool.name for tool in TOOLS}


def _names(index: ToolIndex, query: str, visible: set[str] = ALL, limit: int = 5) -> list[str]:
    return [tool.name for tool, _ in index.search(query, limit, visible)]


def test_names_split_at_case_underscores_and_dashes_and_words_are_stemmed() -> None:
    index = ToolIndex(TOOLS)
    assert index.words("listIssues get_current-time HTTPServer2") == [
        "list",
        "issu",
        "get",
        "current",
        "time",
        "http",
        "server",
        "2",
    ]
    assert _names(index, "what issues are open")[0] == "github_listIssues"
    assert _names(index, "reading files")[0] == "filesystem_read_text_file"  # stems: read/reading, file/files
    assert _names(index, "archived notes")[0] == "notes-archive-note"


def test_only_visible_tools_are_found_and_limit_holds() -> None:
    index = ToolIndex(TOOLS)
    assert _names(index, "time file issues", visible={"github_listIssues"}) == ["github_listIssues"]
    assert _names(index, "time file issues", visible=set()) == []
    assert len(_names(index, "time file issues note", limit=2)) == 2


def test_no_shared_word_finds_nothing_and_an_empty_catalogue_answers() -> None:
    assert _names(ToolIndex(TOOLS), "the of and") == []  # stop words only
    assert _names(ToolIndex(TOOLS), "zebra") == []
    assert ToolIndex([]).search("time", 5, set()) == []


def test_a_parameter_name_counts() -> None:
    index = ToolIndex(TOOLS)
    assert _names(index, "timezone")[0] == "time_get_current_time"
