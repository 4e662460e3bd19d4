"""Route: what a request names, found in the catalogue.

A request names a tool or prompt by its advertised name, and a resource by its URI (or, for
completion, a resource template). Routing turns that into a `Target`: the backend that owns it,
the name the backend knows, and the reshaping and policies its arguments meet. Every later stage
(authorize, reshape, police, forward, observe) reads the target, never the catalogue again, so a
request is judged by exactly what it will reach.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from vmcp.catalog.aggregate import Catalog
from vmcp.catalog.shaping import ToolShape
from vmcp.config.overrides import ParameterPolicy

Kind = Literal["tool", "prompt", "resource"]
UNKNOWN = "(unknown)"  # the name metrics count a request under when it names nothing vmcp offers

# The argument a resource request's URI is policed as (`aggregation.backends.<b>.resources.policy`).
URI_ARGUMENT = "uri"


@dataclass(frozen=True)
class Target:
    """What one request reaches."""

    kind: Kind
    name: str  # as the caller named it: the advertised tool or prompt, or the URI
    backend: str | None = None  # None: one of vmcp's own tools (composite or built-in run tools)
    original: str | None = None  # the backend's own name; for a URI read through a template, the template
    shape: ToolShape | None = None
    policies: Mapping[str, ParameterPolicy] = field(default_factory=dict)

    @property
    def rule_names(self) -> tuple[str, ...]:
        """The names authorization rules may use for it: the advertised name and
        `backend.original` (tools, prompts), or the URI and the template it matched (resources)."""
        if self.kind == "resource":
            return (self.name, self.original) if self.original else (self.name,)
        if self.backend is None or self.original is None:
            return (self.name,)
        return (self.name, f"{self.backend}.{self.original}")

    @property
    def label(self) -> str:
        """How metrics name it: a name the catalogue offers (never a caller-chosen string)."""
        if self.kind == "resource":
            return self.original or self.name  # a template, or a URI the backend listed
        return self.name


def tool(catalog: Catalog, name: str) -> Target | None:
    route = catalog.tool_routes.get(name)
    if route is None:
        return None
    policies = route.shape.policies if route.shape is not None else {}
    return Target("tool", name, route.backend, route.original, route.shape, policies)


def own_tool(name: str) -> Target:
    """A composite tool or a built-in run tool: vmcp answers it, no backend does."""
    return Target("tool", name)


def prompt(catalog: Catalog, name: str) -> Target | None:
    route = catalog.prompt_routes.get(name)
    if route is None:
        return None
    return Target("prompt", name, route.backend, route.original, None, route.policies)


def resource(catalog: Catalog, uri: str) -> Target | None:
    """A URI: a listed resource first, then the first template that can expand to it."""
    found = catalog.resource_route(uri)
    if found is None:
        return None
    backend, template = found
    return Target("resource", uri, backend, template, None, _uri_policy(catalog, backend))


def template(catalog: Catalog, uri_template: str) -> Target | None:
    """A resource template named as such (completion of one of its variables)."""
    backend = catalog.template_backend(uri_template)
    if backend is None:
        return resource(catalog, uri_template)  # completion may also name a listed resource
    return Target("resource", uri_template, backend, uri_template, None, {})


def _uri_policy(catalog: Catalog, backend: str) -> Mapping[str, ParameterPolicy]:
    policy = catalog.resource_policies.get(backend)
    return {URI_ARGUMENT: policy} if policy is not None else {}
