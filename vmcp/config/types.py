"""Small types shared by the config models and the composite-tool language (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import BeforeValidator

from vmcp.config.durations import parse_duration

Seconds = Annotated[float, BeforeValidator(parse_duration)]
"""A duration written as `30s`, `2m`, `1h30m`, `250ms` or a bare number of seconds."""


@dataclass(frozen=True)
class ConfigIssue:
    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f" (line {self.line})" if self.line else ""
        return f"{self.path or '<root>'}{where}: {self.message}"
