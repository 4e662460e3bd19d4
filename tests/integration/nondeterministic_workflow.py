"""A workflow that reads the host clock: the control for the strict sandbox (see test_composite_replay).

Its own module, because the sandbox re-imports a workflow's module for every run, and the test
module's imports (pytest and friends) do not import cleanly there."""

from __future__ import annotations

import datetime
from typing import Any

from temporalio import workflow


@workflow.defn(name="vmcp.CompositeTool")
class ClockReadingInterpreter:
    @workflow.run
    async def run(self, run: dict[str, Any]) -> None:
        datetime.datetime.now()
