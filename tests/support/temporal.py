"""A real Temporal dev server for tests: `temporal server start-dev` with the command line
`vmcp dev` builds (vmcp's search attributes registered, its dynamic config), headless, on a
database file and a port that stay the same across restarts, so a test can kill it -9 and start
it again on the same data. The suite shares one (the `temporal_server` fixture), each module on
task queues of its own; a test that kills Temporal starts its own."""

from __future__ import annotations

import sys
from pathlib import Path

from temporalio.client import Client as TemporalClient

from tests.support.processes import Child, free_port, poll, tail
from vmcp.config.loading import parse_config
from vmcp.dev.temporal import temporal_command
from vmcp.runs.temporal_client import TemporalUnreachable, check_namespace, connect

TEMPORAL = str(Path(sys.executable).parent / "temporal")
# a workflow task that failed is retried within a second (the default backs off to minutes), so a
# test that fixes a failing workflow sees it resume at once
FAST_TASK_RETRY = ["--dynamic-config-value", 'history.workflowTaskRetryMaxInterval="1s"']


class TemporalServer:
    def __init__(self, directory: Path, *, port: int | None = None, extra_args: list[str] | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.db_file = directory / "temporal.db"
        self.config = parse_config(
            {
                "temporal": {
                    "address": self.address,
                    "dev_server": {"db_file": str(self.db_file), "ui_port": free_port()},
                }
            },
            base_dir=directory,
        )
        ui_port = self.config.temporal.dev_server.ui_port
        command = temporal_command(self.config, TEMPORAL, ip="127.0.0.1", port=self.port, ui_port=ui_port)
        self.command = [*command, "--headless", *(extra_args or [])]
        self.starts = 0
        self.child: Child | None = None

    async def start(self) -> TemporalServer:
        self.starts += 1
        child = Child(self.command, self.directory / f"temporal-{self.starts}.log", self.directory)
        self.child = child.start()

        async def ready() -> bool:
            if not child.running:
                raise AssertionError(f"the Temporal dev server exited:\n{tail(child.log)}")
            try:
                client = await connect(self.config)
                await check_namespace(client, self.config.temporal.namespace)
            except TemporalUnreachable:
                return False
            return True

        await poll(ready, f"Temporal on {self.address} (start {self.starts})")
        return self

    async def ensure_running(self) -> None:
        if self.child is None or not self.child.running:
            await self.start()

    def kill(self) -> None:
        assert self.child is not None
        self.child.kill()

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()

    async def client(self) -> TemporalClient:
        return await connect(self.config)
