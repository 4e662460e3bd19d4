"""Which backend tool each composite step calls: a definition resolved against the catalogue.

Pure. A run carries its resolved definition, so what it calls is fixed when it starts.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from vmcp.catalog.aggregate import Catalog
from vmcp.config.composite import WEBHOOK_IN_CONFIG, ApprovalStep, CompositeTool, ForEachStep, ToolStep
from vmcp.config.types import ConfigIssue


def resolve(
    tool: CompositeTool, catalog: Catalog, backends: Iterable[str], index: int = 0
) -> tuple[CompositeTool, list[ConfigIssue]]:
    """The definition a run carries: every step's `tool` resolved to (backend, original name).

    `backend.original_tool` wins over an advertised name of the same spelling; a qualified name
    on a configured backend whose listing is not known yet (it is down) is accepted as written —
    the call itself will say if the tool does not exist.
    """
    known = set(backends)
    issues: list[ConfigIssue] = []
    steps: list[Any] = []
    for position, step in enumerate(tool.steps):
        if isinstance(step, ToolStep | ForEachStep):
            call = step if isinstance(step, ToolStep) else step.step
            target = resolve_tool(call.tool, catalog, known)
            if target is None:
                key = "tool" if isinstance(step, ToolStep) else "step.tool"
                issues.append(
                    ConfigIssue(
                        f"composite_tools[{index}].steps[{position}].{key}",
                        f"composite {tool.name!r}, step {step.id!r}: unknown tool {call.tool!r} "
                        "(write `backend.original_tool` or an advertised name)",
                    )
                )
                steps.append(step)
                continue
            resolved = call.model_copy(update={"backend": target[0], "original": target[1]})
            steps.append(resolved if isinstance(step, ToolStep) else step.model_copy(update={"step": resolved}))
        elif isinstance(step, ApprovalStep) and step.webhook is not None:
            steps.append(step.model_copy(update={"webhook": WEBHOOK_IN_CONFIG}))
        else:
            steps.append(step)
    return tool.model_copy(update={"steps": steps}), issues


def resolve_tool(name: str, catalog: Catalog, backends: set[str]) -> tuple[str, str] | None:
    backend, dot, original = name.partition(".")
    if dot and backend in backends:
        listed = any(b == backend for b, _ in catalog.all_tools)
        if (backend, original) in catalog.all_tools or not listed:
            return backend, original
    route = catalog.tool_routes.get(name)
    if route is not None:
        return route.backend, route.original
    return None
