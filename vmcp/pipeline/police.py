"""Police: the argument policies a request must meet before it reaches a backend.

The same rules (`vmcp.security.arguments`) guard a tool's arguments (after reshaping, so defaults
and fixed values are checked too), a prompt's arguments, and the URI of a resource read, whether
it names a listed resource or a template's expansion. A refusal names the argument as the caller
knows it and the rule it broke; the backend never sees the request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vmcp.pipeline.route import URI_ARGUMENT, Target
from vmcp.security.arguments import violation


class Refusal(Exception):
    """A request the pipeline will not forward. `reason` is what metrics and the audit trail
    count it under (`authorization`, `policy`, `arguments`); the message is for the caller."""

    def __init__(self, message: str, reason: str, rule: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.rule = rule

    @property
    def decision(self) -> str:
        """The audit trail's word for it: `deny` (authorization) or `policy` (what was sent)."""
        return "deny" if self.reason == "authorization" else "policy"


def police(target: Target, arguments: Mapping[str, Any] | None) -> None:
    """Refuse (`Refusal`) arguments that break the target's policies. Tool arguments are the
    backend's, named in refusals as the caller sent them."""
    if not target.policies:
        return
    label = {original: name for name, original in target.shape.advertised.items()} if target.shape else None
    broken = violation(target.policies, arguments or {}, label)
    if broken is not None:
        rule, message = broken
        raise Refusal(message, "policy", rule)


def police_uri(target: Target) -> None:
    """A resource request: its URI is judged as the `uri` argument of the backend's resources."""
    police(target, {URI_ARGUMENT: target.name})
