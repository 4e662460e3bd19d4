"""The OCI registry MCP server: image info, manifest, config and tags of images in any OCI registry.

Built on the SDK's high-level `MCPServer`: each tool is a typed function whose pydantic result becomes
`structuredContent` (with an `outputSchema`) and a JSON text block. Anything a registry can answer
with — not found, unauthorized, unreachable, a digest mismatch, no image for the platform, a bad
reference — is raised as `ToolError`, which the caller reads as an `isError` result naming what failed.

Where registries live is set on the command line: `--mirror docker.io=http://127.0.0.1:5000` sends a
registry's requests to another URL; `--local-layout docker.io=deploy/demo/oci` serves that registry
in-process from an OCI image layout, which is how the dev stack runs offline without a port.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Any

import httpx
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS, ToolAnnotations
from pydantic import Field

from .auth import CREDENTIAL_ENV, credentials_from_env
from .client import DEFAULT_TIMEOUT, RegistryClient, ResolvedImage
from .errors import RegistryError
from .images import ImageConfig, ImageInfo, ImageManifest, TagList, image_config, image_info, image_manifest, tag_list
from .local_registry import LayoutError, asgi_transport
from .refs import InvalidReference, normalize_registry, parse_platform, parse_reference, parse_repository

DEFAULT_PLATFORM = "linux/amd64"

try:
    SERVER_VERSION = version("vmcp")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without installing
    SERVER_VERSION = "0"

READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=True)

ImageRefArg = Annotated[
    str,
    Field(
        description="Image reference: [registry/]repository[:tag][@sha256:digest], e.g. "
        "'docker.io/library/alpine:latest' or 'alpine' (Docker Hub, tag 'latest' by default)"
    ),
]
PlatformArg = Annotated[
    str,
    Field(description="os/architecture[/variant] to pick from a multi-platform image, e.g. 'linux/arm64'"),
]


async def _resolve(registry: RegistryClient, image_ref: str, platform: str) -> ResolvedImage:
    return await registry.resolve(parse_reference(image_ref), parse_platform(platform))


def _reject_unknown_tools(server: MCPServer[Any]) -> None:
    """Answer a call to an unknown tool with JSON-RPC -32602, as both spec revisions require.

    `MCPServer` itself answers it with an `isError` result; the name is checked before it looks.
    """

    async def middleware(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method == "tools/call" and ctx.params is not None:
            name = ctx.params.get("name")
            if isinstance(name, str) and name not in {tool.name for tool in await server.list_tools()}:
                raise MCPError(code=INVALID_PARAMS, message=f"Unknown tool: {name}")
        return await call_next(ctx)

    server.middleware.append(middleware)


def create_server(registry: RegistryClient) -> MCPServer[Any]:
    """The MCP server over `registry`, which it closes when the server stops."""

    @asynccontextmanager
    async def lifespan(_: MCPServer[Any]) -> AsyncIterator[dict[str, Any]]:
        try:
            yield {}
        finally:
            await registry.aclose()

    server: MCPServer[Any] = MCPServer(
        "vmcp-oci-registry",
        version=SERVER_VERSION,
        instructions="Read-only access to OCI image registries (Docker Hub, GHCR, …): image info, "
        "manifests, configs and tags. Multi-platform images resolve to one platform (default linux/amd64).",
        lifespan=lifespan,
        subscriptions=False,
    )
    _reject_unknown_tools(server)

    @server.tool(
        description="Summary of an image: the digest the reference resolves to, the platforms it offers, and "
        "for the chosen platform its OS/architecture, creation time, layer count, total size and labels.",
        annotations=READ_ONLY,
    )
    async def get_image_info(image_ref: ImageRefArg, platform: PlatformArg = DEFAULT_PLATFORM) -> ImageInfo:
        try:
            image = await _resolve(registry, image_ref, platform)
            _digest, config = await registry.get_config(image)
        except (InvalidReference, RegistryError) as exc:
            raise ToolError(str(exc)) from None
        return image_info(image, config)

    @server.tool(
        description="The image manifest for one platform: config descriptor, layers with media types and sizes, "
        "annotations, and the manifest JSON as served.",
        annotations=READ_ONLY,
    )
    async def get_image_manifest(image_ref: ImageRefArg, platform: PlatformArg = DEFAULT_PLATFORM) -> ImageManifest:
        try:
            image = await _resolve(registry, image_ref, platform)
        except (InvalidReference, RegistryError) as exc:
            raise ToolError(str(exc)) from None
        return image_manifest(image)

    @server.tool(
        description="The image configuration for one platform: environment, entrypoint and command, working "
        "directory, user, exposed ports, labels, build history, and the config JSON as served.",
        annotations=READ_ONLY,
    )
    async def get_image_config(image_ref: ImageRefArg, platform: PlatformArg = DEFAULT_PLATFORM) -> ImageConfig:
        try:
            image = await _resolve(registry, image_ref, platform)
            digest, config = await registry.get_config(image)
        except (InvalidReference, RegistryError) as exc:
            raise ToolError(str(exc)) from None
        return image_config(image, digest, config)

    @server.tool(description="Every tag of a repository.", annotations=READ_ONLY)
    async def list_tags(
        repository: Annotated[
            str,
            Field(description="Repository without tag: [registry/]name, e.g. 'docker.io/library/alpine' or 'alpine'"),
        ],
    ) -> TagList:
        try:
            repo = parse_repository(repository)
            tags = await registry.list_tags(repo)
        except (InvalidReference, RegistryError) as exc:
            raise ToolError(str(exc)) from None
        return tag_list(repo, tags)

    return server


# --------------------------------------------------------------------------- command line


def _pairs(parser: argparse.ArgumentParser, option: str, values: Sequence[str]) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values:
        registry, eq, target = value.partition("=")
        if not eq or not registry or not target:
            parser.error(f"{option} takes REGISTRY=VALUE, got {value!r}")
        try:
            pairs[normalize_registry(registry)] = target
        except InvalidReference as exc:
            parser.error(f"{option} {value!r}: {exc}")
    return pairs


def build_registry_client(
    mirrors: dict[str, str], layouts: dict[str, str], *, timeout: float = DEFAULT_TIMEOUT
) -> RegistryClient:
    """A client with `layouts` served in-process; raises LayoutError for a directory that is no layout."""
    transports: dict[str, httpx.AsyncBaseTransport] = {
        registry: asgi_transport(Path(directory)) for registry, directory in layouts.items()
    }
    return RegistryClient(mirrors=mirrors, transports=transports, credentials=credentials_from_env(), timeout=timeout)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="vmcp-oci-registry",
        description="MCP server for OCI image registries (image info, manifests, configs, tags).",
        epilog=f"Basic credentials, when a registry asks for them: {', '.join(CREDENTIAL_ENV)} "
        "(user, password, and the registry they belong to; default docker.io).",
    )
    parser.add_argument("--transport", choices=["stdio", "streamable-http"], default="stdio")
    parser.add_argument("--host", default="127.0.0.1", help="streamable-http: address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="streamable-http: port to listen on")
    parser.add_argument(
        "--mirror", action="append", default=[], metavar="REGISTRY=URL", help="send REGISTRY's requests to URL"
    )
    parser.add_argument(
        "--local-layout",
        action="append",
        default=[],
        metavar="REGISTRY=DIR",
        help="serve REGISTRY in-process from the OCI image layout DIR (offline, no port)",
    )
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per registry request")
    args = parser.parse_args(argv)

    mirrors = _pairs(parser, "--mirror", args.mirror)
    layouts = _pairs(parser, "--local-layout", args.local_layout)
    for name, url in mirrors.items():
        if not url.startswith(("http://", "https://")):
            parser.error(f"--mirror {name}={url}: the mirror must be an http:// or https:// URL")
    if both := sorted(set(mirrors) & set(layouts)):
        parser.error(f"{', '.join(both)}: give either --mirror or --local-layout, not both")
    try:
        registry = build_registry_client(mirrors, layouts, timeout=args.timeout)
    except (LayoutError, InvalidReference) as exc:
        sys.exit(f"vmcp-oci-registry: {exc}")

    server = create_server(registry)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request is noise on stderr
    if args.transport == "stdio":
        server.run()
    else:
        server.run("streamable-http", host=args.host, port=args.port)


if __name__ == "__main__":
    main()
