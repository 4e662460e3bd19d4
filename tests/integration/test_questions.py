"""Elicitation steps through a real `vmcp dev` stack: the run's question goes to the calling client in
either protocol era, a 2026-07-28 retry works on another façade replica, and a client that cannot
answer leaves the run waiting for `vmcp answer`."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
import yaml
from mcp import Client

from tests.integration.test_composite import VMCP
from tests.support.processes import DevStack

pytestmark = [pytest.mark.integration, pytest.mark.temporal, pytest.mark.anyio]

FORM = {
    "type": "object",
    "properties": {"branch": {"type": "string"}, "copies": {"type": "integer", "minimum": 1}},
    "required": ["branch", "copies"],
}


def composites() -> list[dict[str, Any]]:
    return [
        {
            "name": "release",
            "parameters": {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]},
            "steps": [
                {
                    "id": "ask",
                    "type": "elicitation",
                    "message": "Which branch for {{ params.label }}?",
                    "requested_schema": FORM,
                    "timeout": "1h",
                },
                {
                    "id": "ship",
                    "tool": "fault.tally",
                    "arguments": {"label": "{{ params.label }}/{{ steps.ask.output.content.branch }}"},
                    "depends_on": ["ask"],
                },
            ],
            "output": {
                "branch": "{{ steps.ask.output.content.branch }}",
                "copies": "{{ steps.ask.output.content.copies }}",
                "by": "{{ steps.ask.output.responder }}",
            },
        }
    ]


class Stack:
    def __init__(self, url: str, config_file: Path, config: dict[str, Any], fault_url: str) -> None:
        self.url = url
        self.config_file = config_file
        self.config = config
        self.fault_url = fault_url

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [VMCP, *args, "--config", str(self.config_file)]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    async def tallies(self) -> dict[str, int]:
        async with Client(self.fault_url) as direct:
            result = await direct.call_tool("count", {})
        assert result.structured_content is not None
        return dict(result.structured_content["tallies"])


@pytest.fixture(scope="module")
def stack(
    module_procs: Any, tmp_path_factory: pytest.TempPathFactory, free_port: Callable[[], int], wait_until: Any
) -> Iterator[Stack]:
    yield from dev_stack(module_procs, tmp_path_factory.mktemp("questions"), free_port(), composites())


def dev_stack(
    module_procs: Any,
    directory: Path,
    temporal_port: int,
    composites: list[dict[str, Any]],
    extra: dict[str, Any] | None = None,
) -> Iterator[Stack]:
    """`vmcp dev` over a fault server with `composites` (and `extra` top-level settings), its
    request-state key in `directory`."""
    fault = module_procs.fault_http("fault")
    config = {
        "server": {"host": "127.0.0.1", "port": 0, "request_state_key_file": str(directory / "state.key")},
        "temporal": {
            "address": f"127.0.0.1:{temporal_port}",
            "task_queue": f"vmcp-{directory.name}-{uuid.uuid4().hex[:8]}",
            "dev_server": {"db_file": ".vmcp/temporal.db", "ui_port": 0},
        },
        "backends": [{"name": "fault", "transport": "streamable-http", "url": fault.url}],
        "composite_tools": composites,
        **(extra or {}),
    }
    config_file = directory / "vmcp.yaml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    dev = DevStack(config_file)
    try:
        yield Stack(dev.wait_ready()[0], config_file, config, fault.url)
    finally:
        dev.shut_down()


def answering(*answers: dict[str, Any], asked: list[str]) -> Any:
    """An elicitation callback giving `answers` in turn (the last one again if asked more often)."""

    async def callback(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        assert isinstance(params, types.ElicitRequestFormParams)
        assert params.requested_schema["properties"].keys() == FORM["properties"].keys()
        asked.append(params.message)
        content = answers[min(len(asked), len(answers)) - 1]
        return types.ElicitResult(action="accept", content=content)

    return callback


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_the_calling_client_answers_and_the_run_finishes_in_the_same_call(stack: Stack, mode: str) -> None:
    label = f"q-{mode}-{uuid.uuid4().hex[:6]}"
    asked: list[str] = []
    callback = answering({"branch": "main", "copies": 2}, asked=asked)
    async with Client(stack.url, mode=mode, elicitation_callback=callback) as client:  # type: ignore[arg-type]
        result = await client.call_tool("release", {"label": label})
    assert not result.is_error, result
    assert result.structured_content == {"branch": "main", "copies": 2, "by": "anonymous"}
    assert asked == [f"Which branch for {label}?"]
    assert (await stack.tallies())[f"{label}/main"] == 1


async def test_an_answer_that_breaks_the_form_is_refused_and_asked_again(stack: Stack) -> None:
    label = f"q-bad-{uuid.uuid4().hex[:6]}"
    asked: list[str] = []
    callback = answering({"branch": "main", "copies": 0}, {"branch": "dev", "copies": 1}, asked=asked)
    async with Client(stack.url, mode="legacy", elicitation_callback=callback) as client:
        result = await client.call_tool("release", {"label": label})
    assert not result.is_error, result
    assert result.structured_content == {"branch": "dev", "copies": 1, "by": "anonymous"}
    assert len(asked) == 2
    assert "previous answer was not accepted" in asked[1] and "copies" in asked[1], asked[1]
    run_id = (result.meta or {})["io.vmcp/run_id"]
    shown = stack.cli("runs", "show", run_id, "--json")
    decisions = json.loads(shown.stdout)["decisions"]
    assert [d["outcome"] for d in decisions] == ["accepted"]  # the refused answer never entered the run
    assert "minimum" in asked[1] or "less than" in asked[1]  # its caller was told why, at once


async def test_a_declined_question_fails_the_step_and_nothing_later_runs(stack: Stack) -> None:
    label = f"q-no-{uuid.uuid4().hex[:6]}"

    async def decline(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        return types.ElicitResult(action="decline")

    async with Client(stack.url, mode="legacy", elicitation_callback=decline) as client:
        result = await client.call_tool("release", {"label": label})
    assert result.is_error
    assert "'decline'" in result.content[0].text  # type: ignore[union-attr]
    assert not any(key.startswith(label) for key in await stack.tallies())


async def test_the_request_state_works_on_another_replica_and_cannot_be_forged(stack: Stack, module_procs: Any) -> None:
    """A 2026-07-28 client gets an InputRequiredResult from one façade and retries on another (a
    second `vmcp serve` sharing the key file): the run continues. An altered state is refused."""
    label = f"q-replica-{uuid.uuid4().hex[:6]}"
    other = module_procs.vmcp(stack.config, filename="replica.yaml")
    async with Client(stack.url, mode="2026-07-28", elicitation_callback=answering({}, asked=[])) as first:
        asked = await first.session.call_tool("release", {"label": label}, allow_input_required=True)
    assert isinstance(asked, types.InputRequiredResult), asked
    assert asked.request_state and "vmcp-release" not in asked.request_state  # sealed, not just signed
    request = (asked.input_requests or {})["ask"]
    assert isinstance(request, types.ElicitRequest)
    assert request.params.message == f"Which branch for {label}?"  # type: ignore[union-attr]

    answer = {"ask": types.ElicitResult(action="accept", content={"branch": "hotfix", "copies": 3})}
    async with Client(other.url, mode="2026-07-28", elicitation_callback=answering({}, asked=[])) as second:
        forged = asked.request_state[:-4] + ("AAAA" if not asked.request_state.endswith("AAAA") else "BBBB")
        refused = await second.session.call_tool(
            "release", {"label": label}, input_responses=answer, request_state=forged
        )
        assert refused.is_error and "not issued by this vmcp" in refused.content[0].text  # type: ignore[union-attr]
        done = await second.session.call_tool(
            "release", {"label": label}, input_responses=answer, request_state=asked.request_state
        )
    assert not done.is_error, done
    assert done.structured_content == {"branch": "hotfix", "copies": 3, "by": "anonymous"}
    assert (await stack.tallies())[f"{label}/hotfix"] == 1


async def test_a_client_that_cannot_answer_gets_the_run_id_and_the_cli_answers(stack: Stack) -> None:
    label = f"q-cli-{uuid.uuid4().hex[:6]}"
    async with Client(stack.url, mode="legacy") as client:  # no elicitation capability
        waiting = await client.call_tool("release", {"label": label})
    body = waiting.structured_content or {}
    assert body["state"] == "awaiting_input", body
    assert body["waiting_for"]["kind"] == "input" and body["waiting_for"]["requested_schema"] == FORM
    run_id = body["run_id"]

    shown = stack.cli("runs", "show", run_id)
    assert shown.returncode == 0 and f"asks: Which branch for {label}?" in shown.stdout, shown.stdout
    bad = stack.cli("answer", run_id, "--set", "branch=main", "--set", "copies=many")
    assert bad.returncode == 1 and "not an integer" in bad.stderr and "Traceback" not in bad.stderr
    refused = stack.cli("answer", run_id, "--set", "branch=main")
    assert refused.returncode == 1 and "copies" in refused.stderr, refused.stderr
    answered = stack.cli("answer", run_id, "--set", "branch=cli", "--set", "copies=4", "--as", "carol")
    assert answered.returncode == 0, answered.stderr

    async with Client(stack.url) as client:
        result = await client.call_tool("vmcp_run_result", {"run_id": run_id, "wait_seconds": 30})
    assert result.structured_content == {"branch": "cli", "copies": 4, "by": "carol"}
    again = stack.cli("answer", run_id, "--set", "branch=x", "--set", "copies=1")
    assert again.returncode == 1 and "Traceback" not in again.stderr
