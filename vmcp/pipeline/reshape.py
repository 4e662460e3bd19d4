"""Reshape: a tool call's arguments as the backend wants them.

An operator's override may rename parameters, pre-fill defaults, hide some and fix their values
(templates over `caller`) — `vmcp.catalog.shaping` holds the shape; this stage applies it. What a
caller may not send (a fixed or hidden parameter, a renamed one under its old name) is refused
with a message naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vmcp.catalog.shaping import ShapeRefusal
from vmcp.pipeline.police import Refusal
from vmcp.pipeline.route import Target


def reshape(target: Target, arguments: Mapping[str, Any] | None, caller: Mapping[str, Any]) -> dict[str, Any] | None:
    if target.shape is None:
        return dict(arguments) if arguments is not None else None
    try:
        return target.shape.backend_arguments(arguments, caller)
    except ShapeRefusal as exc:
        raise Refusal(str(exc), "arguments") from None
