"""The dependency rules that import-linter cannot state (its contracts, in pyproject.toml, hold
the layering and run as `lint-imports` in the test command): no module of vmcp imports itself
back through others, and workflows use only the deterministic parts of the Temporal SDK."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW_TEMPORAL = {"temporalio.workflow", "temporalio.common", "temporalio.exceptions"}


def import_cycles(graph: grimp.ImportGraph, prefix: str) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), among modules under `prefix`."""
    modules = sorted(m for m in graph.modules if m == prefix or m.startswith(prefix + "."))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in modules:
                continue
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for module in modules:
        if module not in index:
            visit(module)
    return cycles


def test_no_module_of_vmcp_imports_itself_back() -> None:
    graph = grimp.build_graph("vmcp", "workflows", "activities", cache_dir=None)
    assert len([m for m in graph.modules if m.startswith("vmcp.")]) > 40  # the graph really was read
    assert import_cycles(graph, "vmcp") == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for name in ("vmcp", "vmcp.a", "vmcp.b", "vmcp.c"):
        graph.add_module(name)
    graph.add_import(importer="vmcp.a", imported="vmcp.b")
    graph.add_import(importer="vmcp.b", imported="vmcp.a")
    graph.add_import(importer="vmcp.c", imported="vmcp.a")
    assert import_cycles(graph, "vmcp") == [["vmcp.a", "vmcp.b"]]


def _imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("path", sorted((ROOT / "workflows").rglob("*.py")), ids=lambda p: p.name)
def test_workflows_use_only_the_deterministic_temporal_api(path: Path) -> None:
    """import-linter sees `temporalio` as one package; which of its modules a workflow may use
    (not the client, the worker or activities) is checked here."""
    for imported in _imports_of(path):
        if imported == "temporalio" or not imported.startswith("temporalio."):
            continue
        assert any(imported == m or imported.startswith(m + ".") for m in WORKFLOW_TEMPORAL), imported
