"""End to end: real published clients and servers on both sides of a real `vmcp serve`.

`install.sh` puts the pinned Node 22, the MCP Inspector, the TypeScript SDK and the reference
servers everything, filesystem and memory into `tests/e2e/node_modules`.

(a) Clients other than our own: the MCP Inspector's CLI and a TypeScript-SDK client
    (`ts_client.mjs`) list and call tools through vmcp fronting mcp-server-time and the fault
    server over stdio.
(b) One vmcp aggregates six published servers at once under `conflict_resolution: prefix`:
    mcp-server-time, mcp-server-fetch (reading a page served here), mcp-server-git (on a
    repository made here), and server-everything, server-filesystem and server-memory (stdio,
    run by the Node 22 binary). Every advertised tool is called through vmcp with valid
    arguments from a per-tool table; side effects stay in tmp directories. Tools that need the
    client's help (sampling, elicitation, roots) are called with the SDK client answering them;
    the one tool that needs task augmentation is called by the TypeScript client, which can do that.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client, StdioServerParameters

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
NODE_MODULES = HERE / "node_modules"
TS_CLIENT = HERE / "ts_client.mjs"
TEMPORAL_UNUSED = {"address": "127.0.0.1:1"}  # composite tools are not exercised: nothing listens there
CALL_TIMEOUT = 30.0
NODE_TIMEOUT = 90.0
MODES = ["legacy", "2026-07-28"]
SIX = ["time", "fetch", "git", "everything", "filesystem", "memory"]
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "E2E Author",
    "GIT_AUTHOR_EMAIL": "e2e@example.com",
    "GIT_COMMITTER_NAME": "E2E Author",
    "GIT_COMMITTER_EMAIL": "e2e@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}
PIXEL_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d4944415478da63f8cfc0f01f0005000201a5b3dc7e0000000049454e44ae426082"
)


# --------------------------------------------------------------------------- Node side


@dataclass(frozen=True)
class NodeTools:
    node: Path
    inspector: Path
    everything: Path
    filesystem: Path
    memory: Path


def _package_bin(package: str) -> Path:
    """A package's executable entry script, as its package.json names it."""
    meta = json.loads((NODE_MODULES / package / "package.json").read_text())
    bins = meta["bin"]
    entry = bins if isinstance(bins, str) else next(iter(bins.values()))
    return NODE_MODULES / package / entry


@pytest.fixture(scope="session")
def node_tools() -> NodeTools:
    """Node 22 and the npm packages, installed (idempotently) by install.sh."""
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed: Node 22, the Inspector and the reference servers come from npm")
    proc = subprocess.run(["bash", str(HERE / "install.sh")], capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, f"install.sh failed:\n{proc.stdout}\n{proc.stderr}"
    tools = NodeTools(
        node=NODE_MODULES / ".bin" / "node",
        inspector=_package_bin("@modelcontextprotocol/inspector"),
        everything=_package_bin("@modelcontextprotocol/server-everything"),
        filesystem=_package_bin("@modelcontextprotocol/server-filesystem"),
        memory=_package_bin("@modelcontextprotocol/server-memory"),
    )
    for path in (tools.node, tools.inspector, tools.everything, tools.filesystem, tools.memory):
        assert path.exists(), path
    return tools


def _node_env(home: Path) -> dict[str, str]:
    """The machine's environment with a throwaway HOME (the Inspector keeps state under ~)."""
    return {**os.environ, "HOME": str(home), "NO_COLOR": "1"}


def run_inspector(tools: NodeTools, home: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tools.node), str(tools.inspector), "--cli", url, "--transport", "http", *args],
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT,
        env=_node_env(home),
        check=False,
    )


def inspector_json(tools: NodeTools, home: Path, url: str, era: str, *args: str) -> dict[str, Any]:
    proc = run_inspector(tools, home, url, "--protocol-era", era, "--format", "json", *args)
    assert proc.returncode == 0, f"inspector {args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    result: dict[str, Any] = json.loads(proc.stdout)["result"]
    return result


@dataclass
class TsRun:
    returncode: int
    summary: dict[str, Any] | None
    stderr: str


def run_ts_client(tools: NodeTools, url: str, tool: str, arguments: dict[str, Any], *, task: bool = False) -> TsRun:
    args = [str(tools.node), str(TS_CLIENT), url, tool, json.dumps(arguments)] + (["--task"] if task else [])
    proc = subprocess.run(args, cwd=HERE, capture_output=True, text=True, timeout=NODE_TIMEOUT, check=False)
    summary = json.loads(proc.stdout) if proc.stdout.strip() else None
    return TsRun(proc.returncode, summary, proc.stderr)


# --------------------------------------------------------------------------- results


def _dump(result: types.CallToolResult) -> str:
    """The whole result as JSON text (wire names), for substring checks and failure messages."""
    return json.dumps(result.model_dump(mode="json", by_alias=True, exclude_none=True), ensure_ascii=False)


def _without_meta(result: types.CallToolResult) -> dict[str, Any]:
    """What the backend said: content, structuredContent, isError (vmcp adds its own `_meta`)."""
    dumped = result.model_dump(mode="json", by_alias=True, exclude_none=True)
    return {key: dumped.get(key) for key in ("content", "structuredContent", "isError")}


# =========================================================================== (a) other clients


@pytest.fixture(scope="module")
def clients_url(node_tools: NodeTools, module_procs: Any, fault_stdio_backend: Callable[..., Any]) -> str:
    """vmcp fronting mcp-server-time and the fault server over stdio (once as vmcp's 2026-07-28
    peer, once pinned to the 2025-11-25 handshake)."""
    config = {
        "temporal": TEMPORAL_UNUSED,
        "backends": [
            {"name": "time", "transport": "stdio", "command": "mcp-server-time", "args": ["--local-timezone", "UTC"]},
            fault_stdio_backend("fault"),
            fault_stdio_backend("fault_legacy", protocol="legacy"),
        ],
        "aggregation": {"conflict_resolution": "prefix"},
    }
    served = module_procs.vmcp(config, filename="vmcp-e2e-clients.yaml")
    eras = {b["name"]: b["protocol_version"] for b in served.status()["backends"]}
    assert eras == {"time": "2026-07-28", "fault": "2026-07-28", "fault_legacy": "2025-11-25"}, eras
    return str(served.url)


CLIENT_STACK_TOOLS = {"time_get_current_time", "time_convert_time", "fault_echo", "fault_add", "fault_legacy_echo"}


def test_inspector_cli_lists_tools(node_tools: NodeTools, clients_url: str, tmp_path: Path) -> None:
    """The Inspector's documented one-liner, output as a person reads it."""
    proc = run_inspector(node_tools, tmp_path, clients_url, "--method", "tools/list")
    assert proc.returncode == 0, proc.stderr
    for name in CLIENT_STACK_TOOLS:
        assert f'"{name}"' in proc.stdout, f"{name} missing from the Inspector's output:\n{proc.stdout[:2000]}"


@pytest.mark.parametrize("era", ["legacy", "modern"])
def test_inspector_cli_lists_tools_in_each_era(
    node_tools: NodeTools, clients_url: str, tmp_path: Path, era: str
) -> None:
    listed = inspector_json(node_tools, tmp_path, clients_url, era, "--method", "tools/list")
    names = [tool["name"] for tool in listed["tools"]]
    assert len(names) == len(set(names))
    assert set(names) >= CLIENT_STACK_TOOLS
    assert all(name.startswith(("time_", "fault_", "fault_legacy_")) for name in names), names
    convert = next(tool for tool in listed["tools"] if tool["name"] == "time_convert_time")
    assert set(convert["inputSchema"]["required"]) == {"source_timezone", "time", "target_timezone"}


@pytest.mark.parametrize("era", ["legacy", "modern"])
def test_inspector_cli_calls_tools(node_tools: NodeTools, clients_url: str, tmp_path: Path, era: str) -> None:
    converted = inspector_json(
        node_tools,
        tmp_path,
        clients_url,
        era,
        *("--method", "tools/call", "--tool-name", "time_convert_time"),
        *("--tool-arg", "source_timezone=UTC", "time=12:30", "target_timezone=Asia/Tokyo"),
    )
    assert converted["isError"] is False
    assert converted["structuredContent"]["source"]["timezone"] == "UTC"
    assert converted["structuredContent"]["target"]["datetime"].endswith("T21:30:00+09:00")
    assert converted["structuredContent"]["time_difference"] == "+9.0h"

    added = inspector_json(
        node_tools,
        tmp_path,
        clients_url,
        era,
        *("--method", "tools/call", "--tool-name", "fault_add", "--tool-arg", "a=2", "b=40"),
    )
    assert added["isError"] is False
    assert "42" in json.dumps(added["content"])

    echoed = inspector_json(
        node_tools,
        tmp_path,
        clients_url,
        era,
        *("--method", "tools/call", "--tool-name", "fault_legacy_echo", "--tool-arg", "text=through the inspector"),
    )
    assert echoed["isError"] is False
    assert echoed["content"][0]["text"] == "through the inspector"


def test_ts_sdk_client_lists_and_calls_tools(node_tools: NodeTools, clients_url: str) -> None:
    run = run_ts_client(node_tools, clients_url, "fault_echo", {"text": "héllo from TypeScript"})
    assert run.returncode == 0, run.stderr
    assert run.summary is not None
    assert run.summary["serverInfo"]["name"] == "vmcp"
    assert set(run.summary["tools"]) >= CLIENT_STACK_TOOLS
    result = run.summary["call"]["result"]
    assert result["isError"] is False
    assert result["content"] == [{"type": "text", "text": "héllo from TypeScript"}]
    assert result["structuredContent"] == {"text": "héllo from TypeScript"}

    run = run_ts_client(
        node_tools,
        clients_url,
        "time_convert_time",
        {"source_timezone": "UTC", "time": "08:15", "target_timezone": "America/New_York"},
    )
    assert run.returncode == 0, run.stderr
    assert run.summary is not None
    structured = run.summary["call"]["result"]["structuredContent"]
    assert structured["target"]["timezone"] == "America/New_York"
    assert structured["target"]["datetime"][11:16] in {"03:15", "04:15"}  # EST or EDT

    run = run_ts_client(node_tools, clients_url, "fault_legacy_add", {"a": 20, "b": 22})
    assert run.returncode == 0, run.stderr
    assert run.summary is not None
    assert "42" in json.dumps(run.summary["call"]["result"]["content"])


def test_ts_sdk_client_sees_a_failing_tool_as_data(node_tools: NodeTools, clients_url: str) -> None:
    run = run_ts_client(node_tools, clients_url, "fault_fail", {"message": "deliberate failure 17"})
    assert run.returncode == 2, f"expected an isError result (exit 2), got {run.returncode}: {run.stderr}"
    assert run.summary is not None
    result = run.summary["call"]["result"]
    assert result["isError"] is True
    assert "deliberate failure 17" in json.dumps(result["content"])


@pytest.mark.anyio
async def test_stdio_handshake_backend_elicitation_reaches_the_calling_client(clients_url: str) -> None:
    """A 2025-11-25 backend over stdio asks the user mid-call; the 2025-11-25 client calling it
    must be asked (as it is when the same backend is reached over streamable HTTP)."""
    asked: list[str] = []

    async def answer(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"answer": "blue"})

    async with Client(clients_url, mode="legacy", elicitation_callback=answer) as client:
        with anyio.fail_after(CALL_TIMEOUT):
            result = await client.call_tool("fault_legacy_ask", {"question": "Favourite colour?"})
    assert not result.is_error, _dump(result)
    assert asked == ["Favourite colour?"]
    assert result.structured_content == {"action": "accept", "answer": "blue"}


@pytest.mark.anyio
@pytest.mark.parametrize("backend", ["fault", "fault_legacy"])
async def test_stdio_backend_logs_reach_the_calling_client(clients_url: str, backend: str) -> None:
    """Log messages a stdio backend sends during a call reach the client that made the call."""
    logs: list[Any] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params.data)

    async with Client(clients_url, mode="legacy", logging_callback=on_log) as client:
        await client.set_logging_level("info")
        with anyio.fail_after(CALL_TIMEOUT):
            result = await client.call_tool(f"{backend}_chatty", {"lines": 3})
    assert not result.is_error, _dump(result)
    assert logs == ["line 1 of 3", "line 2 of 3", "line 3 of 3"]


# =========================================================================== (b) six published servers


@dataclass
class SixStack:
    url: str
    root: Path  # the directory server-filesystem may touch
    repo: Path  # mcp-server-git's repository
    initial_sha: str
    memory_file: Path
    page_url: str
    page_marker: str
    direct: dict[str, StdioServerParameters] = field(default_factory=dict)


def _make_repo(repo: Path) -> str:
    repo.mkdir()
    env = {**os.environ, **GIT_IDENTITY, "HOME": str(repo)}
    (repo / "README.md").write_text("hello from the e2e repository\n")
    for args in (["init", "-q", "-b", "main"], ["add", "README.md"], ["commit", "-q", "-m", "Initial commit"]):
        subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, env=env, check=True, capture_output=True, text=True
    ).stdout.strip()


def _six_backends(
    tools: NodeTools, root: Path, repo: Path, memory_file: Path
) -> dict[str, tuple[str, list[str], dict[str, str]]]:
    """backend name -> (command, args, extra env): what vmcp runs, and what the direct checks run."""
    return {
        "time": ("mcp-server-time", ["--local-timezone", "UTC"], {}),
        "fetch": ("mcp-server-fetch", ["--allow-private-ips"], {}),
        "git": ("mcp-server-git", ["--repository", str(repo)], dict(GIT_IDENTITY)),
        # the node binary by absolute path runs the entry script: no PATH lookup of `node` (which
        # would find the machine's own, older Node) is involved
        "everything": (str(tools.node), [str(tools.everything), "stdio"], {"GZIP_ALLOWED_DOMAINS": "127.0.0.1"}),
        "filesystem": (str(tools.node), [str(tools.filesystem), str(root)], {}),
        "memory": (str(tools.node), [str(tools.memory)], {"MEMORY_FILE_PATH": str(memory_file)}),
    }


@pytest.fixture(scope="module")
def six(node_tools: NodeTools, module_procs: Any, tmp_path_factory: pytest.TempPathFactory, web_page: Any) -> SixStack:
    base = tmp_path_factory.mktemp("six")
    root = base / "files"
    (root / "sub").mkdir(parents=True)
    (root / "hello.txt").write_text("hello from the filesystem backend\nsecond line\n")
    (root / "sub" / "nested.txt").write_text("a nested file\n")
    (root / "pixel.png").write_bytes(PIXEL_PNG)
    repo = base / "repo"
    initial_sha = _make_repo(repo)
    memory_file = base / "memory" / "graph.jsonl"
    memory_file.parent.mkdir()

    backends = _six_backends(node_tools, root, repo, memory_file)
    config = {
        "temporal": TEMPORAL_UNUSED,
        "backends": [
            {"name": name, "transport": "stdio", "command": command, "args": args, "env": env}
            for name, (command, args, env) in backends.items()
        ],
        "aggregation": {"conflict_resolution": "prefix", "prefix_format": "{backend}_"},
    }
    served = module_procs.vmcp(config, filename="vmcp-e2e-six.yaml")
    states = {b["name"]: b["state"] for b in served.status()["backends"]}
    assert states == dict.fromkeys(SIX, "ready"), states

    direct = {
        # the published Python servers are installed next to this interpreter
        name: StdioServerParameters(
            command=command if "/" in command else str(BIN / command), args=args, env=env or None
        )
        for name, (command, args, env) in backends.items()
    }
    return SixStack(served.url, root, repo, initial_sha, memory_file, web_page.url, web_page.marker, direct)


# ---------------------------------------------------------------- client-side answers


@dataclass
class Answers:
    """The client's side of sampling, elicitation and roots; records what it was asked."""

    asked: list[str] = field(default_factory=list)

    async def sampling(self, context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        self.asked.append("sampling/createMessage")
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text="sampled answer from the e2e client"),
            model="e2e-model",
            stop_reason="endTurn",
        )

    async def elicitation(self, context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        if isinstance(params, types.ElicitRequestURLParams):
            self.asked.append("elicitation/create (url)")
            return types.ElicitResult(action="accept")
        self.asked.append("elicitation/create (form)")
        return types.ElicitResult(action="accept", content={"name": "Ada Lovelace", "check": True})

    async def roots(self, context: Any) -> types.ListRootsResult:
        self.asked.append("roots/list")
        root = types.Root.model_validate({"uri": "file:///e2e/workspace", "name": "e2e-workspace-root"})
        return types.ListRootsResult(roots=[root])

    def client(self, target: Any, mode: str = "auto") -> Client:
        return Client(
            target,
            mode=mode,
            sampling_callback=self.sampling,
            elicitation_callback=self.elicitation,
            list_roots_callback=self.roots,
        )


# ---------------------------------------------------------------- the per-tool table


@dataclass
class Call:
    backend: str
    tool: str
    arguments: dict[str, Any]
    expect: tuple[str, ...] = ()  # substrings of the result's JSON
    before: Callable[[], None] | None = None  # a local change the call then observes
    progress: list[float] | None = None  # progress values the caller must see


# everything's tools that ask the calling client for something (exercised with Answers, below)
CLIENT_ASKING: dict[str, tuple[dict[str, Any], str]] = {
    "trigger-sampling-request": ({"prompt": "Say hello", "maxTokens": 20}, "sampled answer from the e2e client"),
    "trigger-elicitation-request": ({}, "Ada Lovelace"),
    "trigger-url-elicitation": (
        {"url": "http://127.0.0.1:9/consent", "message": "Open the consent page"},
        "User completed the URL elicitation flow",
    ),
    "get-roots-list": ({}, "e2e-workspace-root"),
}
# everything's tool with execution.taskSupport "required" (2025-11-25 tasks, which vmcp awaits for
# its caller: exercised on its own, below)
TASK_REQUIRED = {"simulate-research-query"}


def _plan(stack: SixStack, tag: str) -> list[Call]:
    """Valid arguments for every tool of the six backends, in an order where each call makes
    sense (files exist before they are edited, entities before their relations). Names carry
    `tag` so that runs in each client mode do not collide."""
    root, repo = stack.root, str(stack.repo)
    written, made = root / f"written-{tag}.txt", root / f"made-{tag}"
    notes = stack.repo / f"notes-{tag}.txt"
    ada, babbage = f"Ada-{tag}", f"Babbage-{tag}"
    relation = {"from": ada, "to": babbage, "relationType": "worked_with"}

    def write_notes() -> None:
        notes.write_text("notes\n")

    def append_to_notes() -> None:
        with notes.open("a") as out:
            out.write("a second line\n")

    return [
        Call("time", "get_current_time", {"timezone": "UTC"}, ('"timezone": "UTC"',)),
        Call(
            "time",
            "convert_time",
            {"source_timezone": "UTC", "time": "12:30", "target_timezone": "Asia/Tokyo"},
            ("21:30:00+09:00",),
        ),
        Call("fetch", "fetch", {"url": stack.page_url}, (stack.page_marker, "second item")),
        # git: status, stage, commit, change, diff, reset, log, branch, show
        Call("git", "git_status", {"repo_path": repo}, (notes.name,), before=write_notes),
        Call("git", "git_add", {"repo_path": repo, "files": [notes.name]}, ("staged",)),
        Call("git", "git_diff_staged", {"repo_path": repo}, (f"+++ b/{notes.name}", "+notes")),
        Call("git", "git_commit", {"repo_path": repo, "message": f"Add notes ({tag})"}, ("committed",)),
        Call("git", "git_diff_unstaged", {"repo_path": repo}, ("+a second line",), before=append_to_notes),
        Call("git", "git_diff", {"repo_path": repo, "target": stack.initial_sha}, (notes.name,)),
        Call("git", "git_add", {"repo_path": repo, "files": [notes.name]}, ("staged",)),
        Call("git", "git_reset", {"repo_path": repo}, ("reset",)),
        Call("git", "git_log", {"repo_path": repo, "max_count": 5}, (f"Add notes ({tag})", "Initial commit")),
        Call("git", "git_create_branch", {"repo_path": repo, "branch_name": f"e2e-{tag}"}, (f"e2e-{tag}",)),
        Call("git", "git_checkout", {"repo_path": repo, "branch_name": f"e2e-{tag}"}, (f"e2e-{tag}",)),
        Call("git", "git_branch", {"repo_path": repo, "branch_type": "local"}, (f"* e2e-{tag}", "main")),
        Call("git", "git_show", {"repo_path": repo, "revision": "HEAD"}, (f"Add notes ({tag})",)),
        Call("git", "git_checkout", {"repo_path": repo, "branch_name": "main"}, ("main",)),
        # everything
        Call("everything", "echo", {"message": f"hello {tag}"}, (f"Echo: hello {tag}",)),
        Call(
            "everything",
            "get-annotated-message",
            {"messageType": "success", "includeImage": True},
            ("Operation completed successfully", '"type": "image"'),
        ),
        Call("everything", "get-env", {}, ("GZIP_ALLOWED_DOMAINS", "127.0.0.1")),  # config env reached the child
        Call("everything", "get-resource-links", {"count": 2}, ('"type": "resource_link"', "demo://resource/")),
        Call(
            "everything",
            "get-resource-reference",
            {"resourceType": "Text", "resourceId": 1},
            ("demo://resource/dynamic/text/1",),
        ),
        Call("everything", "get-structured-content", {"location": "Chicago"}, ('"structuredContent"', "temperature")),
        Call("everything", "get-sum", {"a": 2, "b": 40}, ("The sum of 2 and 40 is 42.",)),
        Call("everything", "get-tiny-image", {}, ('"mimeType": "image/png"',)),
        Call(
            "everything",
            "gzip-file-as-resource",
            {"name": f"page-{tag}.html.gz", "data": stack.page_url},  # the page served here, not the internet
            (f"page-{tag}.html.gz",),
        ),
        Call("everything", "toggle-simulated-logging", {}, ("Started simulated",)),
        Call("everything", "toggle-simulated-logging", {}, ("Stopped simulated",)),
        Call("everything", "toggle-subscriber-updates", {}, ("Started simulated resource updated",)),
        Call("everything", "toggle-subscriber-updates", {}, ("Stopped simulated resource updates",)),
        Call(
            "everything",
            "trigger-long-running-operation",
            {"duration": 1, "steps": 2},
            ("Long running operation completed",),
            progress=[1, 2],
        ),
        # filesystem: read, write, edit, make, move, list, search, inspect (all inside `root`)
        Call("filesystem", "list_allowed_directories", {}, (str(root),)),
        Call("filesystem", "read_text_file", {"path": str(root / "hello.txt"), "head": 1}, ("from the filesystem",)),
        Call("filesystem", "read_file", {"path": str(root / "hello.txt"), "tail": 2}, ("second line",)),
        Call("filesystem", "read_media_file", {"path": str(root / "pixel.png")}, ('"mimeType": "image/png"',)),
        Call(
            "filesystem",
            "read_multiple_files",
            {"paths": [str(root / "hello.txt"), str(root / "sub" / "nested.txt")]},
            ("second line", "a nested file"),
        ),
        Call("filesystem", "write_file", {"path": str(written), "content": "written through vmcp\n"}, ("wrote",)),
        Call(
            "filesystem",
            "edit_file",
            {"path": str(written), "edits": [{"oldText": "written", "newText": "edited"}]},
            ("+edited through vmcp",),
        ),
        Call("filesystem", "create_directory", {"path": str(made)}, ("created",)),
        Call("filesystem", "move_file", {"source": str(written), "destination": str(made / "moved.txt")}, ("moved",)),
        Call("filesystem", "list_directory", {"path": str(made)}, ("[FILE] moved.txt",)),
        Call("filesystem", "list_directory_with_sizes", {"path": str(root)}, ("hello.txt", f"[DIR] {made.name}")),
        Call("filesystem", "directory_tree", {"path": str(root)}, ("nested.txt", "moved.txt")),
        Call("filesystem", "search_files", {"path": str(root), "pattern": "**/moved.txt"}, ("moved.txt",)),
        Call("filesystem", "get_file_info", {"path": str(root / "hello.txt")}, ("size",)),
        # memory: build a small graph, query it, take part of it down again
        Call(
            "memory",
            "create_entities",
            {
                "entities": [
                    {"name": ada, "entityType": "person", "observations": ["wrote the first program"]},
                    {"name": babbage, "entityType": "person", "observations": ["designed the engine"]},
                ]
            },
            (ada, babbage),
        ),
        Call("memory", "create_relations", {"relations": [relation]}, ("worked_with",)),
        Call("memory", "add_observations", {"observations": [{"entityName": ada, "contents": ["mathematician"]}]}),
        Call("memory", "read_graph", {}, (ada, "worked_with", "mathematician")),
        Call("memory", "search_nodes", {"query": "mathematician"}, (ada,)),
        Call("memory", "open_nodes", {"names": [ada]}, ("wrote the first program",)),
        Call("memory", "delete_observations", {"deletions": [{"entityName": ada, "observations": ["mathematician"]}]}),
        Call("memory", "delete_relations", {"relations": [relation]}),
        Call("memory", "delete_entities", {"entityNames": [babbage]}),
        Call("memory", "open_nodes", {"names": [ada, babbage]}, (ada,)),
    ]


# ---------------------------------------------------------------- tests


async def _direct_listings(direct: dict[str, StdioServerParameters]) -> dict[str, list[types.Tool]]:
    """Each backend's own tools/list, asked by a client with the same capabilities vmcp has
    (server-everything registers some tools only for clients that can sample, elicit, list roots)."""
    listings: dict[str, list[types.Tool]] = {}

    async def one(name: str, target: StdioServerParameters) -> None:
        with anyio.fail_after(60):
            async with Answers().client(target) as client:
                listings[name] = (await client.list_tools()).tools

    async with anyio.create_task_group() as group:
        for name, target in direct.items():
            group.start_soon(one, name, target)
    return listings


@pytest.fixture(scope="module")
def direct_tools(six: SixStack) -> dict[str, list[types.Tool]]:
    return anyio.run(_direct_listings, six.direct)


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_six_backends_tools_listed_under_their_prefix(
    six: SixStack, direct_tools: dict[str, list[types.Tool]], mode: str
) -> None:
    async with Client(six.url, mode=mode) as client:
        listed = (await client.list_tools()).tools
    advertised = {tool.name: tool for tool in listed}
    assert len(advertised) == len(listed), "a tool name is advertised twice"

    expected = {f"{backend}_{tool.name}": tool for backend, tools in direct_tools.items() for tool in tools}
    assert sorted(advertised) == sorted(expected)
    # a tool the backend runs only as a (2025-11-25) task is a plain tool through vmcp, which
    # awaits the task for its caller
    for tool in TASK_REQUIRED:
        assert expected[f"everything_{tool}"].execution.task_support == "required"  # type: ignore[union-attr]
        assert advertised[f"everything_{tool}"].execution is None
    for backend in SIX:
        assert any(name.startswith(f"{backend}_") for name in advertised), f"no tools from {backend}"
    for name, original in expected.items():
        assert advertised[name].description == original.description, name
        assert advertised[name].input_schema == original.input_schema, name


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_every_tool_of_six_backends_is_callable(six: SixStack, mode: str) -> None:
    plan = _plan(six, mode)
    everything_special = {f"everything_{tool}" for tool in (*CLIENT_ASKING, *TASK_REQUIRED)}
    async with Client(six.url, mode=mode) as client:
        advertised = {tool.name for tool in (await client.list_tools()).tools}
        planned = {f"{call.backend}_{call.tool}" for call in plan}
        unplanned = sorted(advertised - planned - everything_special)
        assert not unplanned, f"advertised tools without a call in the table: {unplanned}"
        stale = sorted((planned | everything_special) - advertised)
        assert not stale, f"the table calls tools that are not advertised: {stale}"

        for call in plan:
            name = f"{call.backend}_{call.tool}"
            if call.before is not None:
                call.before()
            seen: list[float] = []

            async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                seen.append(progress)  # noqa: B023 - awaited before the next iteration

            with anyio.fail_after(CALL_TIMEOUT):
                result = await client.call_tool(name, call.arguments, progress_callback=on_progress)
            dumped = _dump(result)
            assert not result.is_error, f"{name}({call.arguments}) failed through vmcp: {dumped[:2000]}"
            for fragment in call.expect:
                assert fragment in dumped, f"{name}({call.arguments}): {fragment!r} not in {dumped[:2000]}"
            if call.progress is not None:
                assert seen == call.progress, f"{name}: progress {seen}"

    # the side effects really happened, in the tmp directories the backends were given
    assert (six.root / f"made-{mode}" / "moved.txt").read_text() == "edited through vmcp\n"
    assert not (six.root / f"written-{mode}.txt").exists()
    graph = six.memory_file.read_text()
    assert f"Ada-{mode}" in graph and f"Babbage-{mode}" not in graph
    log = (await anyio.run_process(["git", "log", "--format=%s", "main"], cwd=six.repo)).stdout.decode()
    assert f"Add notes ({mode})" in log.splitlines()
    branches = (await anyio.run_process(["git", "branch", "--format=%(refname:short)"], cwd=six.repo)).stdout
    assert f"e2e-{mode}" in branches.decode().split()


# results that do not depend on state or time: through vmcp, exactly what the backend says directly
def _comparable_calls(stack: SixStack) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        ("time", "convert_time", {"source_timezone": "UTC", "time": "09:45", "target_timezone": "Europe/Paris"}),
        ("fetch", "fetch", {"url": stack.page_url}),
        ("git", "git_show", {"repo_path": str(stack.repo), "revision": stack.initial_sha}),
        ("everything", "get-structured-content", {"location": "New York"}),
        ("everything", "get-sum", {"a": 1.5, "b": 2.25}),
        ("everything", "get-tiny-image", {}),
        ("filesystem", "read_text_file", {"path": str(stack.root / "hello.txt")}),
        ("filesystem", "list_allowed_directories", {}),
        ("memory", "search_nodes", {"query": "nobody-by-this-name"}),
    ]


@pytest.mark.anyio
async def test_results_match_calling_the_backends_directly(six: SixStack) -> None:
    calls = _comparable_calls(six)
    direct: dict[int, dict[str, Any]] = {}

    async def one(backend: str) -> None:
        with anyio.fail_after(60):
            async with Client(six.direct[backend]) as client:
                for index, (owner, tool, arguments) in enumerate(calls):
                    if owner == backend:
                        direct[index] = _without_meta(await client.call_tool(tool, arguments))

    async with anyio.create_task_group() as group:
        for backend in {owner for owner, _, _ in calls}:
            group.start_soon(one, backend)

    for mode in MODES:
        async with Client(six.url, mode=mode) as client:
            for index, (backend, tool, arguments) in enumerate(calls):
                with anyio.fail_after(CALL_TIMEOUT):
                    relayed = _without_meta(await client.call_tool(f"{backend}_{tool}", arguments))
                assert relayed == direct[index], f"{backend}_{tool} ({mode}) differs from the direct answer"
                assert relayed["isError"] is False, relayed


@pytest.mark.anyio
@pytest.mark.parametrize("tool", sorted(CLIENT_ASKING))
async def test_everything_tools_that_ask_the_client(six: SixStack, tool: str) -> None:
    """server-everything's sampling, elicitation (form and URL) and roots tools: the calling
    client answers. server-everything speaks only 2025-11-25, which asks mid-call, so the client
    uses a 2025-11-25 session (vmcp explains the refusal to a 2026-07-28 one). Directly, the same
    client gets the answers it gave; through vmcp it must too."""
    arguments, expected = CLIENT_ASKING[tool]

    asked_directly = Answers()
    async with asked_directly.client(six.direct["everything"], mode="legacy") as client:
        with anyio.fail_after(CALL_TIMEOUT):
            direct = await client.call_tool(tool, arguments)
    assert not direct.is_error and expected in _dump(direct), f"directly: {_dump(direct)[:2000]}"

    asked_through_vmcp = Answers()
    async with asked_through_vmcp.client(six.url, mode="legacy") as client:
        with anyio.fail_after(CALL_TIMEOUT):
            relayed = await client.call_tool(f"everything_{tool}", arguments)
    dumped = _dump(relayed)
    assert not relayed.is_error, f"through vmcp: {dumped[:2000]}"
    assert expected in dumped, f"through vmcp: {dumped[:2000]}"
    assert asked_through_vmcp.asked == asked_directly.asked


def test_a_task_only_tool_is_a_plain_call_for_a_typescript_client(node_tools: NodeTools, six: SixStack) -> None:
    """`simulate-research-query` declares execution.taskSupport "required": directly, only a
    task-augmented call of the 2025-11-25 kind runs it (`params.task`, then `tasks/result`). Through
    vmcp it is a plain tool: vmcp awaits the backend's task within the call
    (`vmcp.backends.awaited_tasks`), and the TypeScript SDK's ordinary `callTool` gets the report."""
    run = run_ts_client(node_tools, six.url, "everything_simulate-research-query", {"topic": "cats"})
    assert run.returncode == 0 and run.summary is not None, run.stderr[-2000:]
    assert "everything_simulate-research-query" in run.summary["tools"]
    result = json.dumps(run.summary["call"]["result"])
    assert "Research Report: cats" in result and "Stage 4: Generating report" in result, result[:2000]
    assert "related-task" not in result  # the backend's task id stays between vmcp and the backend


@pytest.mark.anyio
async def test_a_task_only_tool_asks_its_question_and_reports_its_stages_to_the_caller(six: SixStack) -> None:
    """The backend's task asks for a clarification through `tasks/result` (an ambiguous topic)
    and moves through stages: a 2025-11-25 caller is asked the question mid-call, without the
    backend's task id, and sees each stage as a progress message; its answer shapes the report."""
    asked: list[types.ElicitRequestParams] = []

    async def clarify(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(params)
        return types.ElicitResult(action="accept", content={"interpretation": "snake"})

    stages: list[str] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        stages.append(message or "")

    arguments = {"topic": "python", "ambiguous": True}
    async with Client(six.url, mode="legacy", elicitation_callback=clarify) as client:
        with anyio.fail_after(CALL_TIMEOUT):
            result = await client.call_tool(
                "everything_simulate-research-query", arguments, progress_callback=on_progress
            )
    dumped = _dump(result)
    assert not result.is_error and "Research Report: python (snake)" in dumped, dumped[:2000]
    assert len(asked) == 1 and "python" in asked[0].message
    assert not (asked[0].meta or {}), asked[0].meta  # no related-task: the caller knows no such task
    assert stages[0] == "Gathering sources..." and "Generating report..." in stages, stages
    assert any("Continuing with interpretation" in stage for stage in stages), stages

    # a 2026-07-28 caller (no mid-call questions in its era) gets the report too
    async with Client(six.url, mode="2026-07-28") as client:
        with anyio.fail_after(CALL_TIMEOUT):
            modern = await client.call_tool("everything_simulate-research-query", {"topic": "otters"})
    assert not modern.is_error and "Research Report: otters" in _dump(modern), _dump(modern)[:2000]
