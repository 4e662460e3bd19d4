"""The OCI registry MCP server against the local registry, seen by the SDK's real client.

The local registry serves the committed demo layout (deploy/demo/oci) — or a copy of it with a
tampered blob — over real loopback HTTP in its own process, plain or behind a Bearer-token challenge.
`vmcp-oci-registry` runs as a stdio child and reaches it as a mirror of docker.io, or serves the
layout in-process with `--local-layout` (the dev stack's offline mode). A few client-level checks run
the registry in-process through httpx's ASGI transport (Docker v2 media types, tag paging, a tampered
index). Nothing reaches the internet.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import shutil
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import mcp_types as types
import pytest
from mcp import Client, MCPError, StdioServerParameters

from servers.oci_registry.client import RegistryClient
from servers.oci_registry.errors import DigestMismatch, NotFound, Unauthorized
from servers.oci_registry.local_registry import asgi_transport
from servers.oci_registry.media import DOCKER_CONFIG, DOCKER_LAYER_GZIP, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST
from servers.oci_registry.refs import Platform, compute_digest, parse_reference, parse_repository

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "deploy" / "demo" / "oci"
OCI_SERVER = str(Path(sys.executable).parent / "vmcp-oci-registry")
IMAGE = "docker.io/library/alpine:latest"
CALL_TIMEOUT = 30.0


# --------------------------------------------------------------------------- the demo layout


@dataclass(frozen=True)
class Demo:
    """Digests of the committed demo image, read from the layout itself."""

    index: str
    manifests: dict[str, str]  # architecture → manifest digest
    configs: dict[str, str]  # architecture → config digest
    layers: dict[str, dict[str, Any]]  # architecture → layer descriptor


def _blob(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.removeprefix("sha256:")


def _read_demo(layout: Path = DEMO) -> Demo:
    top = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
    index = json.loads(_blob(layout, top).read_bytes())
    manifests, configs, layers = {}, {}, {}
    for entry in index["manifests"]:
        arch = entry["platform"]["architecture"]
        manifests[arch] = entry["digest"]
        manifest = json.loads(_blob(layout, entry["digest"]).read_bytes())
        configs[arch] = manifest["config"]["digest"]
        layers[arch] = manifest["layers"][0]
    return Demo(top, manifests, configs, layers)


DEMO_DIGESTS = _read_demo()


# --------------------------------------------------------------------------- processes


@dataclass
class LocalRegistry:
    url: str
    proc: subprocess.Popen[bytes]


@contextlib.contextmanager
def _serve(
    layout: Path, log_dir: Path, free_port: Callable[[], int], wait_until: Callable[..., Any], *extra: str
) -> Iterator[LocalRegistry]:
    """`python -m servers.oci_registry.local_registry` on a free port, answering on entry, stopped on exit."""
    registry: LocalRegistry | None = None
    log = log_dir / "registry.log"
    for _attempt in range(3):  # another test run may take the port between the probe and the bind
        port = free_port()
        log = log_dir / f"registry-{port}.log"
        with log.open("wb") as out:
            args = [sys.executable, "-m", "servers.oci_registry.local_registry", "--layout", str(layout)]
            proc = subprocess.Popen(
                [*args, "--port", str(port), *extra],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        url = f"http://127.0.0.1:{port}"

        def up(proc: subprocess.Popen[bytes] = proc, url: str = url) -> bool | str:
            if proc.poll() is not None:
                return "exited"
            try:
                httpx.get(f"{url}/v2/", timeout=2.0)
            except httpx.TransportError:
                return False
            return True

        if wait_until(up, 60.0, f"local registry on port {port}") is True:
            registry = LocalRegistry(url, proc)
            break
    if registry is None:
        raise RuntimeError(f"local registry did not start:\n{log.read_text(errors='replace')}")
    try:
        yield registry
    finally:
        registry.proc.terminate()
        try:
            registry.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            registry.proc.kill()
            registry.proc.wait(timeout=5)


@pytest.fixture(scope="module")
def plain_registry(
    tmp_path_factory: pytest.TempPathFactory, free_port: Callable[[], int], wait_until: Callable[..., Any]
) -> Iterator[LocalRegistry]:
    with _serve(DEMO, tmp_path_factory.mktemp("plain"), free_port, wait_until) as registry:
        yield registry


@pytest.fixture(scope="module")
def token_registry(
    tmp_path_factory: pytest.TempPathFactory, free_port: Callable[[], int], wait_until: Callable[..., Any]
) -> Iterator[LocalRegistry]:
    with _serve(DEMO, tmp_path_factory.mktemp("token"), free_port, wait_until, "--token-auth") as registry:
        yield registry


@pytest.fixture(scope="module")
def login_registry(
    tmp_path_factory: pytest.TempPathFactory, free_port: Callable[[], int], wait_until: Callable[..., Any]
) -> Iterator[LocalRegistry]:
    extra = ("--token-auth", "--user", "demo:s3cret")
    with _serve(DEMO, tmp_path_factory.mktemp("login"), free_port, wait_until, *extra) as registry:
        yield registry


def _tampered_layout(root: Path) -> Path:
    """A copy of the demo layout whose amd64 config blob and arm64 manifest no longer match their digests."""
    layout = root / "oci"
    shutil.copytree(DEMO, layout)
    config = _blob(layout, DEMO_DIGESTS.configs["amd64"])
    config.write_bytes(config.read_bytes().replace(b'"/bin/sh"', b'"/bin/ZZ"'))
    manifest = _blob(layout, DEMO_DIGESTS.manifests["arm64"])
    manifest.write_bytes(manifest.read_bytes() + b" ")
    return layout


@pytest.fixture(scope="module")
def tampered_registry(
    tmp_path_factory: pytest.TempPathFactory, free_port: Callable[[], int], wait_until: Callable[..., Any]
) -> Iterator[LocalRegistry]:
    root = tmp_path_factory.mktemp("tampered")
    with _serve(_tampered_layout(root), root, free_port, wait_until) as registry:
        yield registry


def _server(*args: str, env: dict[str, str] | None = None) -> StdioServerParameters:
    return StdioServerParameters(command=OCI_SERVER, args=list(args), env=env, cwd=ROOT)


def _mirror(registry: LocalRegistry) -> StdioServerParameters:
    return _server("--mirror", f"docker.io={registry.url}")


async def _call(client: Client, tool: str, **arguments: Any) -> types.CallToolResult:
    return await client.call_tool(tool, arguments, read_timeout_seconds=CALL_TIMEOUT)


def _ok(result: types.CallToolResult) -> dict[str, Any]:
    """The structured result of a successful call, checked against its JSON text rendering."""
    assert not result.is_error, result.content
    assert result.structured_content is not None
    text = result.content[0]
    assert isinstance(text, types.TextContent)
    assert json.loads(text.text) == result.structured_content
    return dict(result.structured_content)


def _error(result: types.CallToolResult) -> str:
    assert result.is_error, result.structured_content
    text = result.content[0]
    assert isinstance(text, types.TextContent)
    return text.text


# --------------------------------------------------------------------------- the demo image over HTTP


async def _check_demo_image(client: Client) -> None:
    """info, manifest, config and tags of the demo image, for both platforms: the same through any route."""
    d = DEMO_DIGESTS
    info = _ok(await _call(client, "get_image_info", image_ref=IMAGE))
    assert info["reference"] == IMAGE
    assert (info["registry"], info["repository"], info["tag"]) == ("docker.io", "library/alpine", "latest")
    assert info["digest"] == d.index
    assert info["multi_platform"] is True
    assert info["media_type"] == "application/vnd.oci.image.index.v1+json"
    assert info["platforms"] == ["linux/amd64", "linux/arm64/v8"]
    assert (info["platform"], info["os"], info["architecture"]) == ("linux/amd64", "linux", "amd64")
    assert info["manifest_digest"] == d.manifests["amd64"]
    assert info["created"] == "2024-01-01T00:00:00Z"
    assert info["layer_count"] == 1
    assert info["total_size"] == d.layers["amd64"]["size"]
    assert info["labels"]["org.opencontainers.image.title"] == "alpine (vmcp demo)"
    assert "not Alpine Linux's real image" in info["labels"]["org.opencontainers.image.description"]

    manifest = _ok(await _call(client, "get_image_manifest", image_ref=IMAGE))
    assert manifest["digest"] == d.manifests["amd64"]
    assert manifest["index_digest"] == d.index
    assert manifest["platform"] == "linux/amd64"
    assert manifest["config"]["digest"] == d.configs["amd64"]
    assert manifest["layers"] == [
        {
            "media_type": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": d.layers["amd64"]["digest"],
            "size": d.layers["amd64"]["size"],
            "annotations": {},
        }
    ]
    assert manifest["manifest"]["schemaVersion"] == 2

    config = _ok(await _call(client, "get_image_config", image_ref=IMAGE))
    assert config["config_digest"] == d.configs["amd64"]
    assert config["manifest_digest"] == d.manifests["amd64"]
    assert config["cmd"] == ["/bin/sh"]
    assert config["entrypoint"] is None
    assert config["env"] == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    assert config["working_dir"] == "/"
    assert [h["empty_layer"] for h in config["history"]] == [False, True]
    assert len(config["diff_ids"]) == 1
    assert config["config"]["architecture"] == "amd64"

    # another platform of the same index, asked three ways
    for platform in ("linux/arm64", "linux/arm64/v8", "linux/aarch64"):
        arm = _ok(await _call(client, "get_image_info", image_ref="alpine", platform=platform))
        assert (arm["platform"], arm["architecture"], arm["variant"]) == ("linux/arm64/v8", "arm64", "v8")
        assert arm["manifest_digest"] == d.manifests["arm64"]
        assert arm["digest"] == d.index
    arm_config = _ok(await _call(client, "get_image_config", image_ref=IMAGE, platform="linux/arm64"))
    assert arm_config["config_digest"] == d.configs["arm64"]

    # pinned by digest: the index, and one platform's manifest directly
    pinned = _ok(await _call(client, "get_image_manifest", image_ref=f"alpine@{d.index}", platform="linux/arm64"))
    assert pinned["digest"] == d.manifests["arm64"]
    direct = _ok(await _call(client, "get_image_info", image_ref=f"docker.io/library/alpine@{d.manifests['arm64']}"))
    assert direct["multi_platform"] is False
    assert direct["digest"] == direct["manifest_digest"] == d.manifests["arm64"]
    assert direct["platforms"] == ["linux/arm64/v8"]
    assert direct["tag"] is None

    tags = _ok(await _call(client, "list_tags", repository="alpine"))
    assert tags == {"repository": "docker.io/library/alpine", "tags": ["latest", "vmcp-demo"], "count": 2}


async def test_demo_image_through_a_mirror(plain_registry: LocalRegistry) -> None:
    async with Client(_mirror(plain_registry)) as client:
        listed = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert set(listed) == {"get_image_info", "get_image_manifest", "get_image_config", "list_tags"}
        for name in ("get_image_info", "get_image_manifest", "get_image_config"):
            schema = listed[name].input_schema
            assert schema["required"] == ["image_ref"]
            assert schema["properties"]["platform"]["default"] == "linux/amd64"
            assert listed[name].output_schema is not None
        assert listed["list_tags"].input_schema["required"] == ["repository"]
        await _check_demo_image(client)


async def test_bearer_token_challenge(token_registry: LocalRegistry) -> None:
    async with httpx.AsyncClient(timeout=10.0) as http:
        bare = await http.get(f"{token_registry.url}/v2/library/alpine/manifests/latest")
    assert bare.status_code == 401
    challenge = bare.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="') and 'scope="repository:library/alpine:pull"' in challenge

    async with Client(_mirror(token_registry)) as client:
        await _check_demo_image(client)


async def test_token_service_wants_credentials(login_registry: LocalRegistry) -> None:
    async with Client(_mirror(login_registry)) as client:
        message = _error(await _call(client, "get_image_info", image_ref=IMAGE))
        assert "unauthorized" in message and "token service refused" in message

    wrong = {"VMCP_OCI_USERNAME": "demo", "VMCP_OCI_PASSWORD": "wrong", "VMCP_OCI_REGISTRY": "docker.io"}
    async with Client(_server("--mirror", f"docker.io={login_registry.url}", env=wrong)) as client:
        assert "unauthorized" in _error(await _call(client, "get_image_info", image_ref=IMAGE))

    right = {**wrong, "VMCP_OCI_PASSWORD": "s3cret"}
    async with Client(_server("--mirror", f"docker.io={login_registry.url}", env=right)) as client:
        info = _ok(await _call(client, "get_image_info", image_ref=IMAGE))
        assert info["digest"] == DEMO_DIGESTS.index


async def test_tampered_content_is_a_digest_mismatch(tampered_registry: LocalRegistry) -> None:
    d = DEMO_DIGESTS
    async with Client(_mirror(tampered_registry)) as client:
        message = _error(await _call(client, "get_image_config", image_ref=IMAGE))
        assert "digest mismatch" in message and f"blob {d.configs['amd64']}" in message
        message = _error(await _call(client, "get_image_info", image_ref=IMAGE))
        assert "digest mismatch" in message and d.configs["amd64"] in message

        message = _error(await _call(client, "get_image_manifest", image_ref=IMAGE, platform="linux/arm64"))
        assert "digest mismatch" in message and d.manifests["arm64"] in message

        # what is intact still reads fine from the same registry
        manifest = _ok(await _call(client, "get_image_manifest", image_ref=IMAGE))
        assert manifest["config"]["digest"] == d.configs["amd64"]


async def test_errors_are_tool_results(plain_registry: LocalRegistry, free_port: Callable[[], int]) -> None:
    async with Client(_mirror(plain_registry)) as client:
        message = _error(await _call(client, "get_image_info", image_ref="docker.io/library/nosuchimage:1"))
        assert "not found" in message and "docker.io/library/nosuchimage:1" in message
        message = _error(await _call(client, "get_image_manifest", image_ref="alpine:nosuchtag"))
        assert "not found" in message and "MANIFEST_UNKNOWN" in message
        message = _error(await _call(client, "get_image_config", image_ref=f"alpine@sha256:{'0' * 64}"))
        assert "not found" in message
        message = _error(await _call(client, "list_tags", repository="nosuchimage"))
        assert "not found" in message and "NAME_UNKNOWN" in message
        message = _error(await _call(client, "get_image_info", image_ref=IMAGE, platform="linux/s390x"))
        assert "no image for platform linux/s390x" in message and "linux/amd64, linux/arm64/v8" in message
        assert "must be lowercase" in _error(await _call(client, "get_image_info", image_ref="Alpine"))
        assert "os/architecture" in _error(await _call(client, "get_image_info", image_ref=IMAGE, platform="amd64"))
        assert "without ':tag'" in _error(await _call(client, "list_tags", repository="alpine:latest"))
        with pytest.raises(MCPError) as unknown:
            await _call(client, "no_such_tool")
        assert unknown.value.error.code == types.INVALID_PARAMS
        # the server is still there after all that
        _ok(await _call(client, "list_tags", repository="alpine"))

    nobody = f"http://127.0.0.1:{free_port()}"
    async with Client(_server("--mirror", f"docker.io={nobody}", "--timeout", "10")) as client:
        message = _error(await _call(client, "get_image_info", image_ref=IMAGE))
        assert "unreachable" in message and nobody in message
        assert "unreachable" in _error(await _call(client, "list_tags", repository="alpine"))


# --------------------------------------------------------------------------- in-process layouts


async def test_local_layout_in_process() -> None:
    """The dev stack's offline mode: the layout served in-process, given relative to the working directory."""
    async with Client(_server("--local-layout", "docker.io=deploy/demo/oci")) as client:
        await _check_demo_image(client)
        # a registry without a layout or mirror is not silently served from it
        message = _error(await _call(client, "get_image_info", image_ref="127.0.0.1:9/library/alpine"))
        assert "unreachable" in message


@pytest.fixture
def http_server(free_port: Callable[[], int], wait_until: Callable[..., Any]) -> Iterator[str]:
    """`vmcp-oci-registry --transport streamable-http` with the demo layout in-process; yields its MCP URL."""
    port = free_port()
    args = ["--transport", "streamable-http", "--port", str(port), "--local-layout", f"docker.io={DEMO}"]
    proc = subprocess.Popen([OCI_SERVER, *args], cwd=ROOT, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}/mcp"

    def up() -> bool | str:
        if proc.poll() is not None:
            return "exited"
        try:
            httpx.get(url, timeout=2.0)
        except httpx.TransportError:
            return False
        return True

    try:
        assert wait_until(up, 60.0, f"vmcp-oci-registry on port {port}") is True
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


async def test_streamable_http_transport(http_server: str) -> None:
    async with Client(http_server) as client:
        info = _ok(await _call(client, "get_image_info", image_ref="alpine"))
        assert info["digest"] == DEMO_DIGESTS.index


def test_bad_command_lines_fail_fast(tmp_path: Path) -> None:
    for args, message in [
        (["--local-layout", f"docker.io={tmp_path}"], "not an OCI image layout"),
        (["--mirror", "docker.io"], "REGISTRY=VALUE"),
        (["--mirror", "docker.io=127.0.0.1:5000"], "http:// or https://"),
        (["--mirror", "docker.io=http://x", "--local-layout", f"docker.io={DEMO}"], "not both"),
    ]:
        done = subprocess.run([OCI_SERVER, *args], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert done.returncode != 0
        assert message in done.stderr


# --------------------------------------------------------------------------- the client, in-process


def _docker_layout(root: Path, tags: list[str]) -> Path:
    """A layout holding one Docker v2 manifest list (one linux/amd64 image) under `tags`."""
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def add(data: bytes, media_type: str, **extra: Any) -> dict[str, Any]:
        digest = compute_digest(data)
        (blobs / digest.removeprefix("sha256:")).write_bytes(data)
        return {"mediaType": media_type, "digest": digest, "size": len(data), **extra}

    config = add(
        json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["app"]}}).encode(), DOCKER_CONFIG
    )
    layer = add(b"not really a gzip layer", DOCKER_LAYER_GZIP)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST, "config": config, "layers": [layer]})
    entry = add(manifest.encode(), DOCKER_MANIFEST, platform={"architecture": "amd64", "os": "linux"})
    attestation = {**entry, "platform": {"architecture": "unknown", "os": "unknown"}}
    listed = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST_LIST, "manifests": [attestation, entry]})
    top = add(listed.encode(), DOCKER_MANIFEST_LIST)
    refs = [{**top, "annotations": {"org.opencontainers.image.ref.name": f"team/app:{tag}"}} for tag in tags]
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": refs}))
    return root


async def test_client_docker_media_types_and_tag_pages(tmp_path: Path) -> None:
    tags = ["v1", "v2", "v3", "v4", "v5"]
    layout = _docker_layout(tmp_path / "docker", tags)
    transports: dict[str, httpx.AsyncBaseTransport] = {"localhost:5000": asgi_transport(layout, page_size=2)}
    async with RegistryClient(transports=transports) as registry:
        image = await registry.resolve(parse_reference("localhost:5000/team/app:v3"), Platform("linux", "amd64"))
        assert image.top.media_type == DOCKER_MANIFEST_LIST
        assert image.manifest.media_type == DOCKER_MANIFEST
        assert image.platforms == (Platform("linux", "amd64"),)  # the unknown/unknown entry is not a platform
        digest, config = await registry.get_config(image)
        assert config["config"]["Cmd"] == ["app"]
        assert digest == image.manifest.data["config"]["digest"]
        assert await registry.list_tags(parse_repository("localhost:5000/team/app")) == tags
        with pytest.raises(NotFound):
            await registry.list_tags(parse_repository("localhost:5000/team/other"))


async def test_client_token_flow_in_process_and_tampered_index(tmp_path: Path) -> None:
    ref = parse_reference(IMAGE)
    transports: dict[str, httpx.AsyncBaseTransport] = {"docker.io": asgi_transport(DEMO, token_auth=True)}
    async with RegistryClient(transports=transports) as registry:
        image = await registry.resolve(ref, Platform("linux", "amd64"))
        assert image.top.digest == DEMO_DIGESTS.index

    locked = {"docker.io": asgi_transport(DEMO, token_auth=True, credentials=("u", "p"))}
    async with RegistryClient(transports=locked) as registry:
        with pytest.raises(Unauthorized):
            await registry.get_manifest(ref)
    async with RegistryClient(transports=locked, credentials={"docker.io": ("u", "p")}) as registry:
        assert (await registry.get_manifest(ref)).digest == DEMO_DIGESTS.index

    layout = tmp_path / "oci"
    shutil.copytree(DEMO, layout)
    index = _blob(layout, DEMO_DIGESTS.index)
    index.write_bytes(index.read_bytes().replace(b"arm64", b"arm65"))
    async with RegistryClient(transports={"docker.io": asgi_transport(layout)}) as registry:
        with pytest.raises(DigestMismatch, match=f"expected {DEMO_DIGESTS.index}"):
            await registry.get_manifest(ref)


# --------------------------------------------------------------------------- the demo data itself


def test_demo_layout_is_what_the_generator_writes(tmp_path: Path) -> None:
    """deploy/demo/oci is exactly what deploy/demo/make_oci_layout.py writes (so it is reproducible)."""
    layer = _blob(DEMO, DEMO_DIGESTS.layers["amd64"]["digest"]).read_bytes()
    if gzip.compress(gzip.decompress(layer), compresslevel=9, mtime=0) != layer:
        pytest.skip(f"zlib {zlib.ZLIB_RUNTIME_VERSION} compresses differently from the one that wrote the layout")
    out = tmp_path / "oci"
    subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "demo" / "make_oci_layout.py"), "--output", str(out)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    written = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    committed = {p.relative_to(DEMO): p.read_bytes() for p in DEMO.rglob("*") if p.is_file()}
    assert written == committed
    total = sum(len(b) for b in committed.values())
    assert total < 16 * 1024, f"demo layout grew to {total} bytes"
    for path, content in committed.items():
        if path.parts[0] == "blobs":
            assert compute_digest(content) == f"sha256:{path.name}"
