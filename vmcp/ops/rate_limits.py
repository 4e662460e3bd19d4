"""Rate limits on tool calls (`limits:`): per caller, per caller and tool, per tool, per backend.

Counted with the `limits` library's moving window (exact: N calls in any window of the period,
no burst at a window's edge), in this process's memory, or in Redis/Valkey when `limits.storage`
names one — then every façade replica and worker shares the counts, and a per-caller limit of N a
minute admits N calls in total however the caller's requests are spread. A hit is one atomic
operation in the store, so two replicas never both admit the Nth call.

A call takes one unit from each limit that applies, in order (caller, caller and tool, tool; the
backend's when the call reaches it) and is refused by the first that has none left, saying which
limit and when a unit frees up. If the shared store cannot be reached, calls are admitted (a rate
limit protects backends; an unreachable Redis must not take every tool down) and the failure is
logged, at most every `_WARN_EVERY` seconds.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

logger = logging.getLogger(__name__)

_WARN_EVERY = 30.0
_KEY_PREFIX = "vmcp-limits"


@dataclass(frozen=True)
class Limited:
    """A refused call: which limit (its config key path), the rate, and seconds until a unit frees."""

    where: str
    rate: str
    retry_after: float

    @property
    def message(self) -> str:
        wait = max(1, math.ceil(self.retry_after))
        return f"Rate limit reached ({self.where}: at most {self.rate}); try again in {wait} s."


class RateLimits:
    def __init__(
        self,
        storage: str = "memory://",
        per_caller: str | None = None,
        per_caller_tool: Mapping[str, str] | None = None,
        per_tool: Mapping[str, str] | None = None,
        per_backend: Mapping[str, str] | None = None,
    ) -> None:
        self._storage_uri = storage
        self._per_caller = parse_many(per_caller) if per_caller else []
        self._per_caller_tool = [(glob, parse_many(rate)) for glob, rate in (per_caller_tool or {}).items()]
        self._per_tool = [(glob, parse_many(rate)) for glob, rate in (per_tool or {}).items()]
        self._per_backend = {name: parse_many(rate) for name, rate in (per_backend or {}).items()}
        self._limiter: MovingWindowRateLimiter | None = None
        self._warned = -math.inf

    @classmethod
    def from_config(cls, config: Any) -> RateLimits | None:
        """From a `LimitsConfig` (None: no limits)."""
        if config is None:
            return None
        return cls(config.storage, config.per_caller, config.per_caller_tool, config.per_tool, config.per_backend)

    @property
    def limits_backends(self) -> bool:
        return bool(self._per_backend)

    async def admit_call(self, caller: Mapping[str, Any], tool: str) -> Limited | None:
        """Take a unit for a tool call from the caller's and the tool's limits; the refusal, if any."""
        who = caller_key(caller)
        checks: list[tuple[str, list[RateLimitItem], tuple[str, ...]]] = []
        if self._per_caller:
            checks.append(("limits.per_caller", self._per_caller, ("caller", who)))
        for glob, items in self._per_caller_tool:
            if fnmatch.fnmatchcase(tool, glob):
                checks.append((f"limits.per_caller_tool.{glob}", items, ("caller-tool", who, tool)))
                break
        for glob, items in self._per_tool:
            if fnmatch.fnmatchcase(tool, glob):
                checks.append((f"limits.per_tool.{glob}", items, ("tool", tool)))
                break
        for where, items, key in checks:
            refused = await self._hit(where, items, key)
            if refused is not None:
                return refused
        return None

    async def admit_backend(self, backend: str) -> Limited | None:
        items = self._per_backend.get(backend)
        return await self._hit(f"limits.per_backend.{backend}", items, ("backend", backend)) if items else None

    async def backend_refusal(self, backend: str) -> tuple[str, float] | None:
        """`admit_backend` as the backend pool asks it (`vmcp.backends.common.Admission`)."""
        limited = await self.admit_backend(backend)
        return (limited.message, limited.retry_after) if limited is not None else None

    async def _hit(self, where: str, items: list[RateLimitItem], key: tuple[str, ...]) -> Limited | None:
        limiter = self._limiter or self._open()
        try:
            for item in items:
                if not await limiter.hit(item, *key):
                    stats = await limiter.get_window_stats(item, *key)
                    return Limited(where, str(item), max(0.0, stats.reset_time - time.time()))
        except Exception as exc:  # the shared store is unreachable: admit, and say so now and then
            if time.monotonic() - self._warned > _WARN_EVERY:
                self._warned = time.monotonic()
                logger.warning("rate limits not enforced: %s unreachable (%s)", self._storage_uri, exc)
        return None

    def _open(self) -> MovingWindowRateLimiter:
        self._limiter = MovingWindowRateLimiter(_storage(self._storage_uri))
        return self._limiter


def _storage(uri: str) -> Storage:
    scheme, _, rest = uri.partition("://")
    if scheme == "memory":
        return MemoryStorage()
    # the library's Redis storage speaks to Valkey as well; redis-py is the client vmcp ships with
    redis_scheme = {"valkey": "redis", "valkeys": "rediss"}.get(scheme, scheme)
    return RedisStorage(f"async+{redis_scheme}://{rest}", implementation="redispy", key_prefix=_KEY_PREFIX)


def caller_key(caller: Mapping[str, Any]) -> str:
    """Who a per-caller limit counts: the token's issuer and subject; an anonymous caller, by the
    name its client gives (the only thing that tells anonymous callers apart)."""
    subject = str(caller.get("subject"))
    if caller.get("issuer") is not None:
        return f"{caller['issuer']}|{subject}"
    return f"{subject}|{caller.get('client')}"
