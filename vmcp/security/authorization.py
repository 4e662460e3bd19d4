"""Authorization rules: which caller may use which tool, prompt or resource. Pure."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the rules read these models; config imports the URL judge at load time
    from vmcp.config.auth import AuthorizationConfig, CallerCondition


class Authorizer:
    """Which caller may use which tool, prompt or resource (`authorization:`). Without a
    configuration, everybody may use everything. A tool or prompt is known by its advertised name
    and by `backend.original`, so a rule can name a backend's tools however they are advertised,
    and composite steps (which call backend tools, advertised or not) are judged by the same rules
    as plain calls. A resource is known by its URI and by the template it was read through."""

    def __init__(self, config: AuthorizationConfig | None) -> None:
        self.config = config

    @property
    def active(self) -> bool:
        return self.config is not None

    def allows(self, caller: Mapping[str, Any], kind: str, *names: str) -> bool:
        """Whether `caller` may use the `kind` (`tool`, `prompt`, `resource`) known by `names`."""
        if self.config is None:
            return True
        for rule in self.config.rules:
            globs = rule.globs(kind)
            if any(fnmatch.fnmatchcase(name, glob) for name in names for glob in globs) and _matches(rule.when, caller):
                return rule.effect == "allow"
        return self.config.default == "allow"

    def view(self, caller: Mapping[str, Any]) -> tuple[bool, ...]:
        """What `allows` depends on of the caller: which rules' conditions it meets. Callers with
        the same view are allowed the same things, so they may share prepared lists."""
        if self.config is None:
            return ()
        return tuple(_matches(rule.when, caller) for rule in self.config.rules)

    def reaches_others_runs(self, caller: Mapping[str, Any], tool: str) -> bool:
        """Whether `caller` may use run tool `tool` on runs other callers started: only a rule that
        says `runs: any` can allow it (without `authorization:`, nobody may)."""
        if self.config is None:
            return False
        for rule in self.config.rules:
            if rule.runs != "any":
                continue
            if any(fnmatch.fnmatchcase(tool, glob) for glob in rule.tools) and _matches(rule.when, caller):
                return rule.effect == "allow"
        return False


def _matches(when: CallerCondition, caller: Mapping[str, Any]) -> bool:
    if when.subjects and caller.get("subject") not in when.subjects:
        return False
    if when.clients and caller.get("client") not in when.clients:
        return False
    if when.groups and not set(when.groups) & set(caller.get("groups") or ()):
        return False
    if when.scopes and not set(when.scopes) <= set(caller.get("scopes") or ()):
        return False
    claims = caller.get("claims") or {}
    for name, wanted in when.claims.items():
        allowed = wanted if isinstance(wanted, list) else [wanted]
        if str(claims.get(name)) not in allowed:
            return False
    return True
