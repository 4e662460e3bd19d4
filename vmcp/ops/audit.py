"""The audit trail: one JSON line per client request that reaches for a backend's offer (tool calls,
prompts, resource reads, completion, subscriptions) and per composite step.

Each line says when, who (the caller's subject and client, never a token), which method, which tool
(or prompt, or URI: `target`) on which backend, what was decided (`allow`, `deny`, `policy`), how it
ended, how long it took, and the run id for composite steps. Written by the façade and by workers
(each step's backend call), to `audit.file` (`-` for standard error). A line is written whole with one `write`, so
several processes may share a file opened in append mode.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import mcp_types as types

logger = logging.getLogger(__name__)


class AuditLog:
    def __init__(self, target: str | None, base_dir: Path) -> None:
        self._lock = threading.Lock()
        self._out: TextIO | None = None
        self._fd: int | None = None
        if target == "-":
            self._out = sys.stderr
        elif target:
            path = Path(target).expanduser()
            path = path if path.is_absolute() else base_dir / path
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)

    @property
    def enabled(self) -> bool:
        return self._out is not None or self._fd is not None

    def record(
        self,
        *,
        caller: dict[str, Any] | None,
        tool: str | None,
        backend: str | None,
        decision: str,
        outcome: str,
        started: float,
        run_id: str | None = None,
        step: str | None = None,
        detail: str | None = None,
        method: str | None = None,
        target: str | None = None,
    ) -> None:
        """`started` is a `time.monotonic()` reading taken when the call began. `tool` names a
        tool call's tool; `target` what another request named (a prompt, a URI)."""
        if not self.enabled:
            return
        entry = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "subject": (caller or {}).get("subject"),
            "client": (caller or {}).get("client"),
            "method": method,
            "tool": tool,
            "target": target,
            "backend": backend,
            "decision": decision,
            "outcome": outcome,
            "duration_ms": round((time.monotonic() - started) * 1000, 1),
            "run_id": run_id,
            "step": step,
            "detail": detail[:300] if detail else None,
        }
        line = json.dumps({k: v for k, v in entry.items() if v is not None}, separators=(",", ":")) + "\n"
        try:
            with self._lock:
                if self._fd is not None:
                    os.write(self._fd, line.encode())
                elif self._out is not None:
                    self._out.write(line)
        except OSError as exc:  # the audit trail failing must be loud, but must not fail the call
            logger.error("could not write the audit log: %s", exc)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def audit_outcome(result: Any) -> tuple[str, str | None]:
    """(`ok` | `tool_error` | `input_required` | `running`, a short detail) of a tools/call result:
    a model, or the raw dict the lean path relays."""
    if isinstance(result, types.InputRequiredResult):
        return "input_required", None
    if isinstance(result, types.CallToolResult):  # read as it is: every call passes here, no dump
        data: Any = {"isError": result.is_error, "structuredContent": result.structured_content}
        if result.is_error:
            data["content"] = [{"text": b.text} for b in result.content if isinstance(b, types.TextContent)]
    else:
        data = result
    if not isinstance(data, dict):
        return "ok", None
    if isinstance(data.get("error"), dict) and "jsonrpc" in data:  # the backend's JSON-RPC error, relayed
        return "error", str(data["error"].get("message") or "") or None
    if data.get("resultType") == "input_required":
        return "input_required", None
    if data.get("isError"):
        texts = [block.get("text", "") for block in data.get("content", []) if isinstance(block, dict)]
        return "tool_error", " ".join(texts).strip() or None
    structured = data.get("structuredContent")
    if isinstance(structured, dict) and structured.get("state") in ("running", "awaiting_approval", "awaiting_input"):
        return str(structured["state"]), None
    return "ok", None


def run_id_in(result: Any) -> str | None:
    """The composite run a result belongs to, when it says so."""
    meta = getattr(result, "meta", None) or (result.get("_meta") if isinstance(result, dict) else None) or {}
    structured = getattr(result, "structured_content", None)
    if not isinstance(structured, dict) and isinstance(result, dict):
        structured = result.get("structuredContent")
    run = meta.get("io.vmcp/run_id") or (structured.get("run_id") if isinstance(structured, dict) else None)
    return str(run) if run else None
