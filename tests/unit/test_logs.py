"""JSON log lines carry the run and the trace they belong to."""

from __future__ import annotations

import json
import logging

from opentelemetry.sdk.trace import TracerProvider

from vmcp.ops.logs import JsonFormatter, about_run


def _line(message: str) -> dict[str, object]:
    record = logging.LogRecord("vmcp.test", logging.WARNING, __file__, 1, message, None, None)
    return dict(json.loads(JsonFormatter().format(record)))


def test_a_plain_line() -> None:
    line = _line("hello")
    assert line["message"] == "hello" and line["level"] == "warning" and line["logger"] == "vmcp.test"
    assert "run_id" not in line and "trace_id" not in line


def test_a_line_inside_a_run_step_and_a_span() -> None:
    tracer = TracerProvider().get_tracer("test")
    with about_run("vmcp-pair-1234", "second"), tracer.start_as_current_span("step") as span:
        line = _line("calling")
    context = span.get_span_context()
    assert line["run_id"] == "vmcp-pair-1234" and line["step"] == "second"
    assert line["trace_id"] == format(context.trace_id, "032x") and line["span_id"] == format(context.span_id, "016x")
    assert "run_id" not in _line("after")  # the context ended with the block
