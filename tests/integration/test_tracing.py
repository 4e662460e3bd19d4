"""One trace per call, on a real `vmcp dev` stack exporting OTLP/HTTP to a collector on 127.0.0.1:
the client's trace context in `_meta` is the parent of the façade's span, the composite run and
each of its steps, and the backend receives the context of the step that called it."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest
import yaml
from mcp import Client
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.http_endpoint import JsonEndpoint, Received
from tests.support.processes import DevStack

pytestmark = [pytest.mark.integration, pytest.mark.temporal, pytest.mark.anyio]

PARENT_SPAN = uuid.uuid4().hex[:16]


class Collector(JsonEndpoint):
    """An OTLP/HTTP trace receiver: every span it was sent, as (trace id, span id, parent, name)."""

    def __init__(self) -> None:
        super().__init__(lambda received: (200, {}))

    def spans(self) -> list[dict[str, str]]:
        found = []
        for received in list(self.requests):
            found += _spans(received)
        return found


def _spans(received: Received) -> list[dict[str, str]]:
    if not received.path.endswith("/v1/traces"):
        return []
    request = ExportTraceServiceRequest()
    request.ParseFromString(received.body)
    return [
        {
            "trace": span.trace_id.hex(),
            "id": span.span_id.hex(),
            "parent": span.parent_span_id.hex(),
            "name": span.name,
            "service": next(a.value.string_value for a in spans.resource.attributes if a.key == "service.name"),
        }
        for spans in request.resource_spans
        for scope in spans.scope_spans
        for span in scope.spans
    ]


@pytest.fixture(scope="module")
def traced(
    module_procs: Any, tmp_path_factory: pytest.TempPathFactory, free_port: Callable[[], int], wait_until: Any
) -> Iterator[tuple[str, Collector]]:
    collector = Collector()
    fault = module_procs.fault_http("fault")
    directory = tmp_path_factory.mktemp("tracing")
    config = {
        "server": {"host": "127.0.0.1", "port": 0},
        "temporal": {
            "address": f"127.0.0.1:{free_port()}",
            "task_queue": f"vmcp-tracing-{uuid.uuid4().hex[:8]}",
            "dev_server": {"db_file": ".vmcp/temporal.db", "ui_port": 0},
        },
        "telemetry": {"otlp_endpoint": collector.url, "service_name": "vmcp-under-test"},
        "backends": [{"name": "fault", "transport": "streamable-http", "url": fault.url}],
        "composite_tools": [
            {
                "name": "pair",
                "steps": [
                    {"id": "first", "tool": "fault.echo", "arguments": {"text": "1"}},
                    {"id": "second", "tool": "fault.record_meta", "arguments": {}, "depends_on": ["first"]},
                ],
            },
            {
                # the same with its second step a local activity (it follows a regular one)
                "name": "local_pair",
                "steps": [
                    {"id": "first", "tool": "fault.echo", "arguments": {"text": "1"}, "local": False},
                    {
                        "id": "second",
                        "tool": "fault.record_meta",
                        "arguments": {},
                        "depends_on": ["first"],
                        "local": True,
                    },
                ],
            },
        ],
    }
    config_file = directory / "vmcp.yaml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    os.environ["OTEL_BSP_SCHEDULE_DELAY"] = "100"  # export within 0.1 s (the default batches 5 s)
    dev = DevStack(config_file)
    try:
        yield dev.wait_ready()[0], collector
    finally:
        dev.shut_down()
        os.environ.pop("OTEL_BSP_SCHEDULE_DELAY", None)
        collector.close()


@pytest.mark.parametrize("tool", ["pair", "local_pair"])
async def test_one_composite_call_is_one_trace_with_a_span_per_step(traced: tuple[str, Collector], tool: str) -> None:
    """Both kinds of step (regular and local activities) have their span in the caller's trace,
    and pass its context on to the backend."""
    url, collector = traced
    trace_id = uuid.uuid4().hex
    traceparent = f"00-{trace_id}-{PARENT_SPAN}-01"
    async with Client(url) as client:
        result = await client.call_tool(tool, {}, meta={"traceparent": traceparent})
    assert not result.is_error, result

    deadline = time.monotonic() + 20
    while True:
        mine = [span for span in collector.spans() if span["trace"] == trace_id]
        names = [span["name"] for span in mine]
        complete = names.count("RunActivity:vmcp.call_backend_tool") >= 2 and f"tools/call {tool}" in names
        if complete or time.monotonic() > deadline:  # the façade's span ends last: after the answer
            break
        await anyio.sleep(0.1)
    by_id = {span["id"]: span for span in mine}
    facade = next(span for span in mine if span["name"] == f"tools/call {tool}")
    assert facade["parent"] == PARENT_SPAN and facade["service"] == "vmcp-under-test"
    assert "RunWorkflow:vmcp.CompositeTool" in names, names
    steps = [span for span in mine if span["name"] == "RunActivity:vmcp.call_backend_tool"]
    assert len(steps) == 2, names  # one span per step, in the caller's trace

    def reaches_facade(span: dict[str, str]) -> bool:
        while span["id"] != facade["id"]:
            if span["parent"] not in by_id:
                return False
            span = by_id[span["parent"]]
        return True

    assert all(reaches_facade(step) for step in steps)  # a tree rooted in the façade's span
    meta = (result.structured_content or {})["second"]["output"]["meta"]
    backend_parent = meta["traceparent"].split("-")
    assert backend_parent[1] == trace_id and backend_parent[2] in {step["id"] for step in steps}
