"""Log lines as text, or as JSON objects for a log pipeline (`--log-format json`, or
`VMCP_LOG_FORMAT=json`): time, level, logger, message, and — when there is one — the composite run
and step the line is about and the trace it belongs to, so a line finds its run in the Temporal
Web UI and its trace in the tracing backend."""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
from collections.abc import Iterator
from datetime import UTC, datetime

from opentelemetry import trace

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_run: contextvars.ContextVar[tuple[str, str | None] | None] = contextvars.ContextVar("vmcp_run", default=None)


@contextlib.contextmanager
def about_run(run_id: str, step: str | None = None) -> Iterator[None]:
    """Lines logged inside carry this run id (and step)."""
    token = _run.set((run_id, step))
    try:
        yield
    finally:
        _run.reset(token)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        run = _run.get()
        if run is not None:
            entry["run_id"], step = run
            if step is not None:
                entry["step"] = step
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            entry["trace_id"] = format(context.trace_id, "032x")
            entry["span_id"] = format(context.span_id, "016x")
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(level: int, log_format: str | None = None) -> None:
    """Root logging for a vmcp process: `log_format` `json` or `text` (default: $VMCP_LOG_FORMAT)."""
    chosen = log_format or os.environ.get("VMCP_LOG_FORMAT", "text")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if chosen == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
