"""A workflow history as searchable text: its JSON with every payload decoded.

`WorkflowHistory.to_json()` keeps payloads (activity inputs, results, signals, search attributes)
base64-encoded, so a plain substring search of it would miss a secret inside them."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from temporalio.client import WorkflowHistory


def readable(history: WorkflowHistory) -> str:
    decoded: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("data"), str) and "metadata" in node:  # a Payload
                try:
                    decoded.append(base64.b64decode(node["data"]).decode("utf-8", "replace"))
                except (binascii.Error, ValueError):
                    decoded.append(node["data"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    text = history.to_json()
    walk(json.loads(text))
    return text + "\n" + "\n".join(decoded)
