"""Aggregation: one catalogue of tools, prompts and resources out of many backends.

Pure: given what each backend listed and the `aggregation` settings, decide every advertised
name (conflict strategy, filters, overrides) and the routing table back to (backend, original
name). The façade swaps in a new `Catalog` whenever a backend's listing changes; the order of
everything is deterministic (backend order in the config, then the backend's own order), so
the same inputs always advertise the same names.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import mcp_types as types

from vmcp.catalog.shaping import ToolShape, shape_tool
from vmcp.config.models import RESERVED_TOOL_PREFIX, AggregationConfig, BackendAggregation
from vmcp.config.overrides import ParameterPolicy, PromptAggregation, ResourceAggregation
from vmcp.config.types import ConfigIssue


@dataclass(frozen=True)
class BackendListing:
    """Everything one backend offered when it was last listed."""

    backend: str
    tools: Sequence[types.Tool] = ()
    prompts: Sequence[types.Prompt] = ()
    resources: Sequence[types.Resource] = ()
    resource_templates: Sequence[types.ResourceTemplate] = ()
    # the backend serves the tasks extension (2026-07-28), whose tasks vmcp relays
    tasks: bool = False


@dataclass(frozen=True)
class Route:
    """Where an advertised name goes: the backend and the name the backend knows, for a
    customized tool how its arguments become the backend's (`vmcp.catalog.shaping`), and for a
    prompt the policies its arguments must meet."""

    backend: str
    original: str
    shape: ToolShape | None = None
    policies: Mapping[str, ParameterPolicy] = field(default_factory=dict)


@dataclass(frozen=True)
class TemplateRoute:
    backend: str
    template: str
    pattern: re.Pattern[str]


class CatalogError(Exception):
    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))


@dataclass(frozen=True)
class Catalog:
    tools: tuple[types.Tool, ...] = ()
    tool_routes: dict[str, Route] = field(default_factory=dict)
    tool_index: dict[str, types.Tool] = field(default_factory=dict)
    # Every tool of every backend by (backend, original), advertised or filtered out:
    # composite steps may call tools that clients do not see.
    all_tools: dict[tuple[str, str], types.Tool] = field(default_factory=dict)
    prompts: tuple[types.Prompt, ...] = ()
    prompt_routes: dict[str, Route] = field(default_factory=dict)
    resources: tuple[types.Resource, ...] = ()
    resource_routes: dict[str, str] = field(default_factory=dict)
    resource_templates: tuple[types.ResourceTemplate, ...] = ()
    template_routes: tuple[TemplateRoute, ...] = ()
    resource_policies: dict[str, ParameterPolicy] = field(default_factory=dict)  # by backend
    warnings: tuple[str, ...] = ()

    def tool(self, name: str) -> types.Tool | None:
        """The advertised tool of that name (its schema is what callers must send)."""
        return self.tool_index.get(name)

    def resource_backend(self, uri: str) -> str | None:
        """The backend that owns a URI: an exact listed resource first, then the first matching template."""
        found = self.resource_route(uri)
        return found[0] if found is not None else None

    def resource_route(self, uri: str) -> tuple[str, str | None] | None:
        """(backend, the template it expands, or None for a listed resource) for a URI."""
        backend = self.resource_routes.get(uri)
        if backend is not None:
            return backend, None
        for route in self.template_routes:
            if route.pattern.fullmatch(uri):
                return route.backend, route.template
        return None

    def template_backend(self, template: str) -> str | None:
        for route in self.template_routes:
            if route.template == template:
                return route.backend
        return None


TASKS_EXTENSION = "io.modelcontextprotocol/tasks"


def _requires_tasks(tool: types.Tool) -> bool:
    execution = tool.execution
    return execution is not None and getattr(execution, "task_support", None) == "required"


def is_included(name: str, settings: BackendAggregation | PromptAggregation | ResourceAggregation) -> bool:
    if settings.include and not any(fnmatch.fnmatchcase(name, glob) for glob in settings.include):
        return False
    return not any(fnmatch.fnmatchcase(name, glob) for glob in settings.exclude)


def build_catalog(
    config: AggregationConfig,
    backend_order: Sequence[str],
    listings: Iterable[BackendListing],
    reserved: Iterable[str] = (),
) -> Catalog:
    """Resolve names for every backend's listing; CatalogError lists every clash left unresolved."""
    by_backend = {listing.backend: listing for listing in listings}
    ordered = [by_backend[name] for name in backend_order if name in by_backend]
    reserved_names = set(reserved)
    issues: list[ConfigIssue] = []
    warnings: list[str] = []

    tool_candidates: list[_Candidate] = []
    all_tools: dict[tuple[str, str], types.Tool] = {}
    for listing in ordered:
        settings = config.for_backend(listing.backend)
        originals = {tool.name for tool in listing.tools}
        for tool_name in settings.overrides:
            if tool_name not in originals:
                warnings.append(
                    f"aggregation.backends.{listing.backend}.overrides.{tool_name}: "
                    f"backend {listing.backend!r} has no tool {tool_name!r}"
                )
        for tool in listing.tools:
            all_tools[(listing.backend, tool.name)] = tool
            if not is_included(tool.name, settings):
                continue
            if _requires_tasks(tool) and not listing.tasks:
                # the 2025-11-25 kind of task (`params.task`, `tasks/result`), which vmcp does not
                # relay: such a tool could never be called through vmcp
                warnings.append(
                    f"backend {listing.backend!r}: tool {tool.name!r} requires 2025-11-25 task-augmented calls, "
                    "which vmcp does not relay (it relays the 2026-07-28 tasks extension); not advertised"
                )
                continue
            override = settings.overrides.get(tool.name)
            tool_candidates.append(
                _Candidate(listing.backend, tool.name, override.name if override and override.name else None)
            )
    tool_names = _resolve_names(config, tool_candidates, reserved_names, "tool", issues)

    prompt_candidates = []
    for listing in ordered:
        prompt_settings = config.for_backend(listing.backend).prompts
        for prompt in listing.prompts:
            if is_included(prompt.name, prompt_settings):
                renamed = prompt_settings.overrides.get(prompt.name)
                prompt_candidates.append(_Candidate(listing.backend, prompt.name, renamed.name if renamed else None))
    prompt_names = _resolve_names(config, prompt_candidates, reserved_names, "prompt", issues)
    if issues:
        raise CatalogError(issues)

    tools: list[types.Tool] = []
    tool_routes: dict[str, Route] = {}
    for candidate, name in zip(tool_candidates, tool_names, strict=True):
        original = all_tools[(candidate.backend, candidate.original)]
        settings = config.for_backend(candidate.backend)
        where = f"aggregation.backends.{candidate.backend}.overrides.{candidate.original}"
        shaped, shape, problems = shape_tool(original, settings.overrides.get(candidate.original), where)
        if problems:
            warnings += [f"{problem}; tool {name!r} is not advertised until this is fixed" for problem in problems]
            continue
        tools.append(_advertised_tool(shaped, name, settings))
        tool_routes[name] = Route(candidate.backend, candidate.original, shape)

    prompts_by_key = {(listing.backend, p.name): p for listing in ordered for p in listing.prompts}
    prompts: list[types.Prompt] = []
    prompt_routes: dict[str, Route] = {}
    for candidate, name in zip(prompt_candidates, prompt_names, strict=True):
        prompt = prompts_by_key[(candidate.backend, candidate.original)]
        prompt_override = config.for_backend(candidate.backend).prompts.overrides.get(candidate.original)
        update: dict[str, object] = {"name": name} if name != prompt.name else {}
        if prompt_override is not None and prompt_override.description is not None:
            update["description"] = prompt_override.description
        if prompt_override is not None:
            arguments = {argument.name for argument in prompt.arguments or ()}
            missing = [argument for argument in prompt_override.policy if argument not in arguments]
            if missing:  # a guard that names nothing could leave the argument it meant open
                warnings.append(
                    f"aggregation.backends.{candidate.backend}.prompts.overrides.{candidate.original}.policy: "
                    f"prompt {candidate.original!r} has no argument {missing[0]!r}; prompt {name!r} is not "
                    "advertised until this is fixed"
                )
                continue
        prompts.append(prompt.model_copy(update=update) if update else prompt)
        prompt_routes[name] = Route(
            candidate.backend, candidate.original, policies=prompt_override.policy if prompt_override else {}
        )

    resources, resource_routes = _resources(config, ordered, _resource_precedence(config, backend_order), warnings)
    templates: list[types.ResourceTemplate] = []
    template_routes: list[TemplateRoute] = []
    for listing in sorted(ordered, key=_resource_precedence(config, backend_order)):
        for template in listing.resource_templates:
            if not is_included(template.uri_template, config.for_backend(listing.backend).resources):
                continue
            templates.append(template)
            template_routes.append(
                TemplateRoute(listing.backend, template.uri_template, template_pattern(template.uri_template))
            )
    return Catalog(
        tools=tuple(tools),
        tool_routes=tool_routes,
        tool_index={tool.name: tool for tool in tools},
        all_tools=all_tools,
        prompts=tuple(prompts),
        prompt_routes=prompt_routes,
        resources=tuple(resources),
        resource_routes=resource_routes,
        resource_templates=tuple(templates),
        template_routes=tuple(template_routes),
        resource_policies={
            listing.backend: policy
            for listing in ordered
            if (policy := config.for_backend(listing.backend).resources.policy) is not None
        },
        warnings=tuple(warnings),
    )


@dataclass(frozen=True)
class _Candidate:
    backend: str
    original: str
    fixed_name: str | None  # an override's name: advertised exactly as written


def _prefixed(config: AggregationConfig, candidate: _Candidate) -> str:
    return config.prefix_format.format(backend=candidate.backend) + candidate.original


def _resolve_names(
    config: AggregationConfig,
    candidates: Sequence[_Candidate],
    reserved: set[str],
    kind: str,
    issues: list[ConfigIssue],
) -> list[str]:
    strategy = config.conflict_resolution
    names: list[str] = []
    for candidate in candidates:
        if candidate.fixed_name is not None:
            names.append(candidate.fixed_name)
        elif strategy == "prefix":
            names.append(_prefixed(config, candidate))
        else:
            names.append(candidate.original)

    groups: dict[str, list[int]] = {}
    for index, name in enumerate(names):
        groups.setdefault(name, []).append(index)

    if strategy == "priority":
        rank = {backend: position for position, backend in enumerate(config.priority)}
        for members in list(groups.values()):
            movable = [i for i in members if candidates[i].fixed_name is None]
            if len(members) < 2 or not movable:
                continue
            listed = sorted((rank[candidates[i].backend], i) for i in movable if candidates[i].backend in rank)
            # a fixed (override) name always keeps its name; otherwise the best-ranked listed backend does
            keeper = None if len(movable) < len(members) else (listed[0][1] if listed else None)
            for i in movable:
                if i != keeper:
                    names[i] = _prefixed(config, candidates[i])
        groups = {}
        for index, name in enumerate(names):
            groups.setdefault(name, []).append(index)

    for name, members in groups.items():
        owners = [f"{candidates[i].backend}.{candidates[i].original}" for i in members]
        if len(members) > 1:
            fixed = [i for i in members if candidates[i].fixed_name is not None]
            where = candidates[fixed[0]] if fixed else candidates[members[-1]]
            hint = (
                f"; rename one with aggregation.backends.{where.backend}.overrides.{where.original}.name"
                if kind == "tool"
                else ""
            )
            issues.append(
                ConfigIssue(
                    f"aggregation.backends.{where.backend}" if kind == "tool" else "aggregation.conflict_resolution",
                    f"{kind} name {name!r} is offered by {', '.join(owners)} (conflict_resolution: {strategy}){hint}",
                )
            )
        if name in reserved or name.startswith(RESERVED_TOOL_PREFIX):
            issues.append(
                ConfigIssue(
                    f"aggregation.backends.{candidates[members[0]].backend}",
                    f"{kind} name {name!r} of {owners[0]} is taken by a composite or built-in tool",
                )
            )
    return names


def _advertised_tool(tool: types.Tool, name: str, settings: BackendAggregation) -> types.Tool:
    override = settings.overrides.get(tool.name)
    update: dict[str, object] = {}
    if name != tool.name:
        update["name"] = name
    if override is not None:
        if override.description is not None:
            update["description"] = override.description
        if override.annotations is not None:
            merged = tool.annotations.model_dump(by_alias=True, exclude_none=True) if tool.annotations else {}
            merged.update(override.annotations)
            update["annotations"] = types.ToolAnnotations.model_validate(merged)
    return tool.model_copy(update=update) if update else tool


def _resource_precedence(config: AggregationConfig, backend_order: Sequence[str]) -> _Precedence:
    return _Precedence(config.priority, backend_order)


@dataclass(frozen=True)
class _Precedence:
    """Sort key: backends named in `priority` first, in that order, then the config order."""

    priority: Sequence[str]
    order: Sequence[str]

    def __call__(self, listing: BackendListing) -> tuple[int, int]:
        first = self.priority.index(listing.backend) if listing.backend in self.priority else len(self.priority)
        return (first, self.order.index(listing.backend))


def _resources(
    config: AggregationConfig, ordered: Sequence[BackendListing], precedence: _Precedence, warnings: list[str]
) -> tuple[list[types.Resource], dict[str, str]]:
    resources: list[types.Resource] = []
    routes: dict[str, str] = {}
    for listing in sorted(ordered, key=precedence):
        for resource in listing.resources:
            if not is_included(str(resource.uri), config.for_backend(listing.backend).resources):
                continue
            if resource.uri in routes:
                warnings.append(
                    f"resource {resource.uri} is offered by {routes[resource.uri]!r} and "
                    f"{listing.backend!r}; {routes[resource.uri]!r} serves it"
                )
                continue
            routes[resource.uri] = listing.backend
            resources.append(resource)
    return resources, routes


_EXPRESSION = re.compile(r"\{([+#./;?&]?)([^}]*)\}")


def template_pattern(template: str) -> re.Pattern[str]:
    """A regex matching the URIs an RFC 6570 template can expand to (enough to route by)."""
    out, position = "", 0
    for match in _EXPRESSION.finditer(template):
        out += re.escape(template[position : match.start()])
        operator = match.group(1)
        out += ".*" if operator in ("+", "#") else ("(?:[?&].*)?" if operator in ("?", "&") else "[^/]*")
        position = match.end()
    out += re.escape(template[position:])
    return re.compile(out)
