"""One-shot look at the backends: connect to all, build the catalogue, disconnect.

Used by `vmcp validate` (name clashes can only be found in what the backends really offer)
and `vmcp tools`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vmcp.backends.pool import BackendPool, BackendStatus
from vmcp.catalog.aggregate import Catalog, CatalogError, build_catalog
from vmcp.catalog.steps import resolve
from vmcp.config.models import VmcpConfig
from vmcp.config.types import ConfigIssue


@dataclass
class ProbeOutcome:
    catalog: Catalog = field(default_factory=Catalog)
    error: CatalogError | None = None
    statuses: list[BackendStatus] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def reachable(self) -> int:
        return sum(1 for status in self.statuses if status.state == "ready")


async def probe_catalog(config: VmcpConfig, timeout: float = 20.0) -> ProbeOutcome:
    outcome = ProbeOutcome()
    async with BackendPool(config.backends, config.base_dir) as pool:
        await pool.wait_settled(timeout)
        outcome.statuses = pool.statuses()
        for status in outcome.statuses:
            if status.state != "ready":
                outcome.warnings.append(
                    f"backends.{status.name}: not reachable ({status.last_error or status.state}); "
                    "its names were not checked"
                )
        try:
            outcome.catalog = build_catalog(config.aggregation, [b.name for b in config.backends], pool.listings())
            outcome.warnings.extend(outcome.catalog.warnings)
        except CatalogError as exc:
            outcome.error = exc
            return outcome
        backends = [b.name for b in config.backends]
        issues = [
            issue
            for index, tool in enumerate(config.composite_tools)
            for issue in resolve(tool, outcome.catalog, backends, index)[1]
        ]
        issues += [
            ConfigIssue(f"composite_tools[{i}].name", f"composite tool {t.name!r} has the name of a backend tool")
            for i, t in enumerate(config.composite_tools)
            if t.name in outcome.catalog.tool_routes
        ]
        if issues:
            outcome.error = CatalogError(issues)
    return outcome
