"""Tracing: one OpenTelemetry trace per tool call, from the client's request through the façade,
the composite run (workflow) and each step (activity) to the backend call.

Off unless an OTLP endpoint is configured — `telemetry.otlp_endpoint`, or the standard
`OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` variables (the exporter reads
the other `OTEL_*` settings itself; `OTEL_SDK_DISABLED=true` wins). Off, no span is made and the
cost is one flag test per call. On, the caller's W3C trace context in the request's `_meta`
(`traceparent`, `tracestate`) is the parent, Temporal's tracing interceptor carries the context
into the workflow and its activities, and each backend call carries it on in its own `_meta`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

logger = logging.getLogger(__name__)

_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_TRACE_KEYS = ("traceparent", "tracestate")
_state = {"enabled": False}
tracer = trace.get_tracer("vmcp")


def enabled() -> bool:
    return _state["enabled"]


def setup(endpoint: str | None, service_name: str = "vmcp") -> bool:
    """Install the OTLP exporter once per process; True when tracing is on."""
    if _state["enabled"]:
        return True
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    if endpoint is None and not any(os.environ.get(name) for name in _ENDPOINT_VARIABLES):
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    if endpoint is not None and not endpoint.rstrip("/").endswith("/v1/traces"):
        endpoint = endpoint.rstrip("/") + "/v1/traces"
    name = os.environ.get("OTEL_SERVICE_NAME") or service_name
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)
    _state["enabled"] = True
    logger.info("tracing to %s", endpoint or "the OTEL_EXPORTER_OTLP endpoint")
    return True


def shutdown() -> None:
    """Flush what is buffered (a stopping process would lose its last spans)."""
    provider = trace.get_tracer_provider()
    if _state["enabled"] and hasattr(provider, "shutdown"):
        provider.shutdown()


@contextmanager
def span(name: str, meta: Mapping[str, Any] | None, **attributes: Any) -> Iterator[None]:
    """A server span for one request, child of the caller's context in `meta` when it sent one."""
    if not _state["enabled"]:
        yield
        return
    carrier = {key: str(meta[key]) for key in _TRACE_KEYS if meta and isinstance(meta.get(key), str)}
    parent = propagate.extract(carrier)
    clean = {key: value for key, value in attributes.items() if value is not None}
    with tracer.start_as_current_span(name, context=parent, kind=trace.SpanKind.SERVER, attributes=clean):
        yield


def inject(meta: dict[str, Any]) -> dict[str, Any]:
    """`meta` with the current trace context added (for a backend call); unchanged when off."""
    if _state["enabled"]:
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=otel_context.get_current())
        meta.update(carrier)
    return meta
