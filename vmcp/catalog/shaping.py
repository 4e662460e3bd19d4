"""Tool customization: the interface a backend tool is advertised with, and the way back.

Pure. From a backend tool's input schema and its `overrides` entry, `shape_tool` makes the schema
callers see — renamed parameters, new descriptions, pre-filled defaults, fixed and unexposed
parameters left out — exactly what a caller may send. The `ToolShape` it returns turns a caller's
arguments back into the backend's: its own names, defaults filled in, fixed values injected
(templates over `caller` rendered then); it carries the policies that result must meet.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import mcp_types as types

from vmcp.composite.templating import TemplateFailure, render
from vmcp.config.overrides import ParameterPolicy, ToolOverride


class ShapeRefusal(Exception):
    """The caller's arguments cannot be sent: the message says why (an `isError` result)."""


@dataclass(frozen=True)
class ToolShape:
    advertised: dict[str, str] = field(default_factory=dict)  # advertised name -> backend name
    defaults: dict[str, Any] = field(default_factory=dict)  # backend name -> value sent when left out
    fixed: dict[str, Any] = field(default_factory=dict)  # backend name -> value (or template) always sent
    hidden: frozenset[str] = frozenset()  # backend names a caller may not send
    policies: dict[str, ParameterPolicy] = field(default_factory=dict)  # by backend name

    def backend_arguments(self, arguments: Mapping[str, Any] | None, caller: Mapping[str, Any]) -> dict[str, Any]:
        """The arguments the backend receives, or ShapeRefusal naming the parameter and why. The
        policies are checked on the result by the pipeline's police stage (`vmcp.pipeline.police`)."""
        label = {original: name for name, original in self.advertised.items()}
        out: dict[str, Any] = {}
        for name, value in (arguments or {}).items():
            if name in self.advertised:
                out[self.advertised[name]] = value
            elif name in self.hidden:
                raise ShapeRefusal(f"parameter `{name}` is set by the operator and cannot be sent")
            elif name in label:
                raise ShapeRefusal(f"unknown parameter `{name}` (it is advertised as `{label[name]}`)")
            else:
                out[name] = value  # not in the schema: the backend decides, as without shaping
        for name, value in self.defaults.items():
            out.setdefault(name, copy.deepcopy(value))
        for name, value in self.fixed.items():
            try:
                out[name] = render(value, {"caller": dict(caller)})
            except TemplateFailure as exc:
                raise ShapeRefusal(f"fixed parameter `{name}` could not be filled in: {exc}") from None
        return out


def shape_tool(
    tool: types.Tool, override: ToolOverride | None, where: str
) -> tuple[types.Tool, ToolShape | None, list[str]]:
    """The advertised schema and the shape behind it; problems (which keep the tool from being
    advertised: a half-applied override could leave a guarded parameter open) name `where`."""
    if override is None or not override.reshapes:
        return tool, None, []
    schema = copy.deepcopy(dict(tool.input_schema))
    properties: dict[str, Any] = dict(schema.get("properties") or {})
    required = [name for name in schema.get("required") or [] if isinstance(name, str)]
    problems = [
        f"{where}.{key}.{name}: {tool.name!r} has no parameter {name!r} (it has: {', '.join(properties) or 'none'})"
        for key, names in (("parameters", override.parameters), ("policy", override.policy))
        for name in names
        if name not in properties
    ]
    problems += [
        f"{where}.expose: {tool.name!r} has no parameter {name!r}"
        for name in override.expose or []
        if name not in properties
    ]
    exposed = set(override.expose) if override.expose is not None else set(properties)
    settings = override.parameters
    hidden = {name for name in properties if name not in exposed or (name in settings and settings[name].is_fixed)}
    advertised: dict[str, str] = {}
    defaults: dict[str, Any] = {}
    shown: dict[str, Any] = {}
    for name, sub in properties.items():
        setting = settings.get(name)
        if setting is not None and setting.has_default:
            defaults[name] = setting.default
        if name in hidden:
            if name in required and name not in defaults and not (setting is not None and setting.is_fixed):
                if isinstance(sub, Mapping) and "default" in sub:
                    defaults[name] = sub["default"]  # the backend requires it: send its own default
                else:
                    problems.append(f"{where}.expose: required parameter {name!r} is hidden with no value to send")
            continue
        entry = dict(sub) if isinstance(sub, Mapping) else {}
        if setting is not None and setting.description is not None:
            entry["description"] = setting.description
        if setting is not None and setting.has_default:
            entry["default"] = setting.default
        public = setting.name if setting is not None and setting.name else name
        if public in shown:
            problems.append(f"{where}.parameters.{name}.name: {public!r} is already a parameter name")
        shown[public] = entry
        advertised[public] = name
    schema["properties"] = shown
    schema["required"] = [public for public, name in advertised.items() if name in required and name not in defaults]
    if not schema["required"]:
        del schema["required"]
    fixed = {name: setting.fixed for name, setting in settings.items() if setting.is_fixed}
    shape = ToolShape(advertised, defaults, fixed, frozenset(hidden), dict(override.policy))
    return tool.model_copy(update={"input_schema": schema}), shape, problems
