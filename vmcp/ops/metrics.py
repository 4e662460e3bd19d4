"""`/metrics` in the Prometheus text format.

Counted by this façade: tool calls by tool, backend and outcome, their latency, the other requests
(prompts, resources, completion, subscriptions) by method, backend and outcome, and refusals by
authorization and argument policy. Labels take only names the catalogue offers (`(unknown)` for the
rest), so their number stays bounded whatever callers send. Read at scrape time: each backend's
state (from the pool), and
composite runs by tool and state and the approvals waiting, from Temporal visibility, so every
replica reports the same cluster-wide figures (cached for `RUN_COUNTS_TTL`: a scrape costs a
few count queries at most that often).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

RUN_COUNTS_TTL = 10.0
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.calls = Counter(
            "vmcp_tool_calls", "Tool calls by tool, backend and outcome.", ["tool", "backend", "outcome"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "vmcp_tool_call_seconds", "Tool call latency through the façade.", ["tool", "backend"],
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.denials = Counter(
            "vmcp_denials", "Requests refused before reaching a backend, by method, what they named and reason.",
            ["method", "target", "reason"], registry=self.registry,
        )  # fmt: skip
        self.requests = Counter(
            "vmcp_requests", "Prompt, resource, completion and subscription requests by backend and outcome.",
            ["method", "backend", "outcome"], registry=self.registry,
        )  # fmt: skip
        self._run_counts: dict[tuple[str, str], int] = {}
        self._approvals_waiting: int | None = None
        self._counted_at = 0.0

    def observe_call(self, tool: str, backend: str | None, outcome: str, seconds: float) -> None:
        self.calls.labels(tool, backend or "", outcome).inc()
        self.latency.labels(tool, backend or "").observe(seconds)

    def observe_request(self, method: str, backend: str | None, outcome: str, seconds: float) -> None:
        self.requests.labels(method, backend or "", outcome).inc()

    def watch_backends(self, statuses: Callable[[], Iterable[Any]]) -> None:
        self.registry.register(_BackendStates(statuses))
        self.registry.register(_RunCounts(self))

    @property
    def run_counts_stale(self) -> bool:
        return time.monotonic() - self._counted_at > RUN_COUNTS_TTL

    def set_run_counts(self, counts: dict[tuple[str, str], int], approvals_waiting: int) -> None:
        self._run_counts, self._approvals_waiting = counts, approvals_waiting
        self._counted_at = time.monotonic()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _BackendStates(Collector):
    def __init__(self, statuses: Callable[[], Iterable[Any]]) -> None:
        self._statuses = statuses

    def collect(self) -> Iterable[GaugeMetricFamily]:
        up = GaugeMetricFamily("vmcp_backend_up", "1 when the backend is connected and answering.", labels=["backend"])
        tools = GaugeMetricFamily("vmcp_backend_tools", "Tools the backend offers.", labels=["backend"])
        reconnects = GaugeMetricFamily("vmcp_backend_reconnects", "Reconnections since start.", labels=["backend"])
        for status in self._statuses():
            up.add_metric([status.name], 1.0 if status.state == "ready" else 0.0)
            tools.add_metric([status.name], float(status.tools))
            reconnects.add_metric([status.name], float(status.reconnects))
        return [up, tools, reconnects]


class _RunCounts(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Sequence[GaugeMetricFamily]:
        metrics = self._metrics
        if metrics._approvals_waiting is None:
            return []  # Temporal not asked yet (or unreachable): better no figure than a wrong one
        runs = GaugeMetricFamily(
            "vmcp_composite_runs", "Composite runs kept by Temporal, by tool and state.", labels=["tool", "state"]
        )
        for (tool, state), count in sorted(metrics._run_counts.items()):
            runs.add_metric([tool, state], float(count))
        waiting = GaugeMetricFamily("vmcp_approvals_waiting", "Composite runs waiting at an approval gate.")
        waiting.add_metric([], float(metrics._approvals_waiting))
        return [runs, waiting]
