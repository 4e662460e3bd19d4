"""How an operator reshapes one backend tool (`aggregation.backends.<name>.overrides.<tool>`).

Pure configuration models: a new advertised name and description, per-parameter renames, defaults
and fixed values, the parameters exposed, and argument policies. `vmcp.shaping` applies them to the
backend's listing; `vmcp.policy` checks the policies. Every model here validates what can be known
without the backend, so `vmcp validate` names the key of a broken rule.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from vmcp.composite.templating import TemplateFailure, check_syntax
from vmcp.security.url_policy import UrlRule


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ParameterOverride(_Strict):
    """How one backend parameter is advertised (keys are the backend's own parameter names)."""

    name: str | None = Field(default=None, min_length=1)  # advertised under this name instead
    description: str | None = None
    default: Any = None  # pre-filled: shown in the schema, sent when the caller leaves it out
    fixed: Any = None  # never advertised, always sent; strings may be templates over `caller`

    @model_validator(mode="after")
    def _one_value(self) -> ParameterOverride:
        if {"default", "fixed"} <= self.model_fields_set:
            raise ValueError("a parameter is either `fixed` (hidden) or has a `default` (shown), not both")
        if "fixed" in self.model_fields_set and (self.name is not None or self.description is not None):
            raise ValueError("a `fixed` parameter is not advertised: it takes no `name` or `description`")
        if "fixed" in self.model_fields_set:
            try:
                check_syntax(self.fixed)
            except TemplateFailure as exc:
                raise ValueError(f"`fixed` template does not parse: {exc}") from None
        return self

    @property
    def is_fixed(self) -> bool:
        return "fixed" in self.model_fields_set

    @property
    def has_default(self) -> bool:
        return "default" in self.model_fields_set


class UrlPolicy(_Strict):
    schemes: list[str] = Field(default_factory=lambda: ["https"])
    hosts: list[str] = Field(default_factory=list)  # globs: docs.example.test, *.example.test (not the apex)
    ports: list[int] = Field(default_factory=list)  # empty: only the scheme's default port
    allow_ip_literals: bool = False

    def rule(self) -> UrlRule:
        return UrlRule(tuple(self.schemes), tuple(self.hosts), tuple(self.ports), self.allow_ip_literals)


class ParameterPolicy(_Strict):
    """Rules one argument must meet before a call reaches the backend."""

    url: UrlPolicy | None = None
    pattern: str | None = None  # a regular expression the whole value must match
    enum: list[Any] | None = None
    minimum: float | None = None
    maximum: float | None = None
    max_length: int | None = Field(default=None, ge=0)  # characters of a string, items of a list

    @model_validator(mode="after")
    def _coherent(self) -> ParameterPolicy:
        if self.url is not None:
            self.url.rule()  # a rule that could never match is refused here, with its reason
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern {self.pattern!r} is not a regular expression: {exc}") from None
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError(f"minimum {self.minimum:g} is above maximum {self.maximum:g}")
        return self


class ToolOverride(_Strict):
    name: str | None = Field(default=None, min_length=1)
    description: str | None = None
    annotations: dict[str, Any] | None = None
    parameters: dict[str, ParameterOverride] = Field(default_factory=dict)
    # advertise only these backend parameters; the rest are sent with their default or fixed value
    expose: list[str] | None = None
    # per backend parameter; checked on what the backend would receive, for plain calls and
    # composite steps alike
    policy: dict[str, ParameterPolicy] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _expose_what_is_shown(self) -> ToolOverride:
        if self.expose is not None:
            fixed = [name for name in self.expose if name in self.parameters and self.parameters[name].is_fixed]
            if fixed:
                raise ValueError(f"expose lists fixed parameters {fixed}: a fixed parameter is never advertised")
        return self

    @property
    def reshapes(self) -> bool:
        return bool(self.parameters or self.expose is not None or self.policy)


class PromptOverride(_Strict):
    """How one backend prompt is advertised, and the policies its arguments must meet."""

    name: str | None = Field(default=None, min_length=1)  # advertised exactly as written
    description: str | None = None
    policy: dict[str, ParameterPolicy] = Field(default_factory=dict)  # per prompt argument


class PromptAggregation(_Strict):
    """`aggregation.backends.<name>.prompts`: the same filters and overrides as tools have."""

    include: list[str] = Field(default_factory=list)  # globs over the backend's prompt names
    exclude: list[str] = Field(default_factory=list)
    overrides: dict[str, PromptOverride] = Field(default_factory=dict)


class ResourceAggregation(_Strict):
    """`aggregation.backends.<name>.resources`: which resources and templates are offered, and the
    policy every URI read from this backend must meet (a template's expansion included), judged
    like a URL argument."""

    include: list[str] = Field(default_factory=list)  # globs over URIs and URI templates
    exclude: list[str] = Field(default_factory=list)
    policy: ParameterPolicy | None = None
