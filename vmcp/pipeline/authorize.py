"""Authorize: may this caller use what the request reaches?

One decision for every kind of thing a backend offers, made by the rules of `authorization:`
(`vmcp.security.authorization`): a tool, a prompt, a resource (by URI or by the template it is
read through). Lists are filtered by the same decision, so a caller never sees what it may not
use, and a composite tool needs permission for itself and for every tool its steps call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import mcp_types as types

from vmcp.catalog.aggregate import Catalog
from vmcp.config.auth import AuthorizationConfig
from vmcp.pipeline import route
from vmcp.pipeline.route import Target
from vmcp.security.authorization import Authorizer

_T = TypeVar("_T")

# A composite tool's name -> the rule names of every tool its steps call (None: not a composite).
StepNeeds = Callable[[str, Catalog], Sequence[tuple[str, ...]] | None]


class Authorization:
    def __init__(self, config: AuthorizationConfig | None, step_needs: StepNeeds) -> None:
        self.rules = Authorizer(config)
        self._step_needs = step_needs

    @property
    def active(self) -> bool:
        return self.rules.active

    def permits(self, caller: Mapping[str, Any], target: Target, catalog: Catalog) -> bool:
        if not self.rules.active:
            return True
        if not self.rules.allows(caller, target.kind, *target.rule_names):
            return False
        if target.kind == "tool" and target.backend is None:
            needs = self._step_needs(target.name, catalog)
            return needs is None or all(self.rules.allows(caller, "tool", *names) for names in needs)
        return True

    # ------------------------------------------------------------------ lists

    def view(self, caller: Mapping[str, Any]) -> tuple[bool, ...]:
        """Callers with equal views see equal lists (`vmcp.pipeline.lists`)."""
        return self.rules.view(caller)

    def tools(self, caller: Mapping[str, Any], tools: Sequence[types.Tool], catalog: Catalog) -> list[types.Tool]:
        return self._visible(caller, tools, catalog, lambda t: route.tool(catalog, t.name) or route.own_tool(t.name))

    def prompts(
        self, caller: Mapping[str, Any], prompts: Sequence[types.Prompt], catalog: Catalog
    ) -> list[types.Prompt]:
        return self._visible(caller, prompts, catalog, lambda p: route.prompt(catalog, p.name))

    def resources(
        self, caller: Mapping[str, Any], resources: Sequence[types.Resource], catalog: Catalog
    ) -> list[types.Resource]:
        return self._visible(caller, resources, catalog, lambda r: route.resource(catalog, str(r.uri)))

    def templates(
        self, caller: Mapping[str, Any], templates: Sequence[types.ResourceTemplate], catalog: Catalog
    ) -> list[types.ResourceTemplate]:
        return self._visible(caller, templates, catalog, lambda t: route.template(catalog, t.uri_template))

    def _visible(
        self,
        caller: Mapping[str, Any],
        items: Iterable[_T],
        catalog: Catalog,
        target_of: Callable[[_T], Target | None],
    ) -> list[_T]:
        if not self.rules.active:
            return list(items)
        visible = []
        for item in items:
            target = target_of(item)
            if target is not None and self.permits(caller, target, catalog):
                visible.append(item)
        return visible
