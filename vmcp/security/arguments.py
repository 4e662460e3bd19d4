"""Argument policies: what may reach a backend.

Pure. The façade checks a plain call after shaping it (so defaults and fixed values are checked
too); the worker checks a composite step's call before the activity sends it. Either way the rules
speak the backend's own parameter names, so they hold however the call arrives, and a refusal
names the parameter (as the caller knows it) and the rule it broke.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from vmcp.security.url_policy import UrlRule, check_url

if TYPE_CHECKING:  # the rules read these models; config imports the URL judge at load time
    from vmcp.config.overrides import ParameterPolicy, UrlPolicy

POLICY_VIOLATION = "PolicyViolation"


@functools.lru_cache(maxsize=256)
def _url_rule(schemes: tuple[str, ...], hosts: tuple[str, ...], ports: tuple[int, ...], ip: bool) -> UrlRule:
    return UrlRule(schemes, hosts, ports, ip)


@functools.lru_cache(maxsize=256)
def _pattern(text: str) -> re.Pattern[str]:
    return re.compile(text)


def violation(
    policies: Mapping[str, ParameterPolicy],
    arguments: Mapping[str, Any],
    label: Mapping[str, str] | None = None,
) -> tuple[str, str] | None:
    """The first argument that breaks its policy, as (rule, message); None when all pass. `label`
    maps backend parameter names to the names the caller used. An absent argument is not checked:
    whether it may be left out is the schema's business, not the policy's."""
    for name, policy in policies.items():
        if name not in arguments:
            continue
        broken = _broken(policy, arguments[name])
        if broken is not None:
            rule, reason = broken
            shown = (label or {}).get(name, name)
            return rule, f"argument `{shown}` refused by policy ({rule}): {reason}"
    return None


def _broken(policy: ParameterPolicy, value: Any) -> tuple[str, str] | None:
    if policy.url is not None:
        reason = check_url(value, _rule(policy.url))
        if reason is not None:
            return "url", reason
    if policy.pattern is not None:
        if not isinstance(value, str):
            return "pattern", f"expected a string, got {type(value).__name__}"
        if _pattern(policy.pattern).fullmatch(value) is None:
            return "pattern", f"{_clip(value)} does not match {policy.pattern!r}"
    if policy.enum is not None and not any(_same(value, allowed) for allowed in policy.enum):
        return "enum", f"{_clip(value)} is not one of {policy.enum}"
    if policy.minimum is not None or policy.maximum is not None:
        if not isinstance(value, int | float) or isinstance(value, bool):
            return "range", f"expected a number, got {type(value).__name__}"
        if not math.isfinite(value):  # NaN compares false with every bound, infinity passes one side
            return "range", f"expected a finite number, got {value!r}"
        if policy.minimum is not None and value < policy.minimum:
            return "minimum", f"{value:g} is below the minimum {policy.minimum:g}"
        if policy.maximum is not None and value > policy.maximum:
            return "maximum", f"{value:g} is above the maximum {policy.maximum:g}"
    if policy.max_length is not None and isinstance(value, str | list) and len(value) > policy.max_length:
        unit = "characters" if isinstance(value, str) else "items"
        return "max_length", f"{len(value)} {unit}, more than {policy.max_length}"
    return None


def _same(value: Any, allowed: Any) -> bool:
    """Equal and of the same JSON type, all the way down: `True` is not `1`, `1.0` is not `1`."""
    if type(value) is not type(allowed):
        return False
    if isinstance(value, dict):
        return value.keys() == allowed.keys() and all(_same(value[k], allowed[k]) for k in value)
    if isinstance(value, list):
        return len(value) == len(allowed) and all(_same(a, b) for a, b in zip(value, allowed, strict=True))
    return bool(value == allowed)


def _rule(url: UrlPolicy) -> UrlRule:
    return _url_rule(tuple(url.schemes), tuple(url.hosts), tuple(url.ports), url.allow_ip_literals)


def _clip(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def describe(policies: Mapping[str, ParameterPolicy]) -> dict[str, dict[str, Any]]:
    """The policies as plain data (`vmcp tools --json`), without unset rules."""
    return {name: policy.model_dump(mode="json", exclude_none=True) for name, policy in policies.items()}
