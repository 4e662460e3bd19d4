"""A read-only OCI distribution API over an OCI image layout directory.

The offline demo and the tests need a registry that holds known images and needs no network: this
serves `oci-layout` + `index.json` + `blobs/<alg>/<hex>` as `/v2/` (manifests, blobs, tags, catalog),
over real HTTP (`python -m servers.oci_registry.local_registry --layout DIR --port P`) or in-process
through `httpx.ASGITransport` (`asgi_transport(DIR)`), so a dev stack needs no port at all.

Tags come from the `org.opencontainers.image.ref.name` annotations of `index.json`. A full reference
(`docker.io/library/alpine:latest`, `library/alpine:latest`, `alpine:latest`) gives a repository and a
tag; the registry part is dropped, because the layout is served as whichever registry the client
routes to it. A bare tag (`latest`, as `skopeo copy … oci:DIR:latest` writes) belongs to every
repository name. `library/x` and `x` name the same repository, as they do on Docker Hub.

Blobs are served as stored: nothing here re-hashes them, so a corrupted layout shows what a client
does with a registry that serves the wrong bytes. With `token_auth`, every `/v2/` request needs a
Bearer token from `/token` (anonymous, or Basic-authenticated when `credentials` are set), which is
the challenge flow of Docker Hub and GHCR in miniature.
"""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from .auth import basic_authorization
from .media import INDEX_TYPES, REF_NAME_ANNOTATION, detect_media_type
from .refs import InvalidReference, is_repository_path, parse_reference, validate_digest

logger = logging.getLogger(__name__)
ANY_REPOSITORY = "*"
SERVICE = "vmcp-local-registry"
_MAX_GRAPH_DEPTH = 8


class LayoutError(Exception):
    """A directory that is not a readable OCI image layout."""


@dataclass
class Layout:
    """An OCI image layout, read once: tags per repository and the media type of every manifest."""

    root: Path
    tags: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # repository → tag → descriptor
    media_types: dict[str, str] = field(default_factory=dict)  # digest → media type

    @classmethod
    def load(cls, root: Path | str) -> Layout:
        layout = cls(Path(root))
        index_file = layout.root / "index.json"
        if not (layout.root / "oci-layout").is_file() or not index_file.is_file():
            raise LayoutError(f"{layout.root} is not an OCI image layout (needs oci-layout and index.json)")
        try:
            index = json.loads(index_file.read_bytes())
        except ValueError as exc:
            raise LayoutError(f"{index_file} is not JSON: {exc}") from None
        for descriptor in _descriptors(index):
            layout._record(descriptor, depth=0)
            name = (descriptor.get("annotations") or {}).get(REF_NAME_ANNOTATION)
            if isinstance(name, str) and name:
                layout._tag(name, descriptor)
        return layout

    def _tag(self, name: str, descriptor: dict[str, Any]) -> None:
        if "/" not in name and ":" not in name and "@" not in name:
            repository, tag = ANY_REPOSITORY, name
        else:
            try:
                ref = parse_reference(name, default_tag=None)
            except InvalidReference as exc:
                logger.warning("ignoring ref name %r in %s: %s", name, self.root, exc)
                return
            if not ref.tag:
                return
            repository, tag = ref.repository, ref.tag
        self.tags.setdefault(repository, {})[tag] = descriptor

    def _record(self, descriptor: dict[str, Any], depth: int) -> None:
        """Remember the media type of `descriptor`'s target and, for an index, of everything it lists."""
        digest, media_type = descriptor.get("digest"), descriptor.get("mediaType")
        if not isinstance(digest, str) or digest in self.media_types or depth > _MAX_GRAPH_DEPTH:
            return
        if isinstance(media_type, str):
            self.media_types[digest] = media_type
        if media_type in INDEX_TYPES and (path := self.blob_path(digest)) is not None:
            try:
                child = json.loads(path.read_bytes())
            except ValueError:
                return
            for entry in _descriptors(child):
                self._record(entry, depth + 1)

    def repository(self, name: str) -> str | None:
        """The key under which `name` is held (`x` and `library/x` are one repository), else None."""
        if ANY_REPOSITORY in self.tags:
            return name
        for candidate in (name, name.removeprefix("library/"), f"library/{name}"):
            if candidate in self.tags:
                return candidate
        return None

    def tags_of(self, repository: str) -> dict[str, dict[str, Any]]:
        return {**self.tags.get(ANY_REPOSITORY, {}), **self.tags.get(repository, {})}

    def blob_path(self, digest: str) -> Path | None:
        try:
            algorithm, _, hex_part = validate_digest(digest).partition(":")
        except InvalidReference:
            return None
        path = self.root / "blobs" / algorithm / hex_part
        return path if path.is_file() else None

    def manifest_media_type(self, digest: str, content: bytes) -> str:
        known = self.media_types.get(digest)
        if known:
            return known
        try:
            document = json.loads(content)
        except ValueError:
            return "application/octet-stream"
        return detect_media_type(document) if isinstance(document, dict) else "application/octet-stream"


def _descriptors(document: Any) -> Iterator[dict[str, Any]]:
    manifests = document.get("manifests") if isinstance(document, dict) else None
    yield from (d for d in manifests or [] if isinstance(d, dict))


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"errors": [{"code": code, "message": message}]}, status_code=status, headers=headers)


@dataclass
class _TokenGate:
    """Bearer tokens for `/v2/`, handed out by `/token` per repository scope."""

    credentials: tuple[str, str] | None = None
    tokens: dict[str, set[str]] = field(default_factory=dict)  # token → repositories it may pull

    def challenge(self, request: Request, scope: str | None) -> JSONResponse:
        realm = str(request.base_url).rstrip("/") + "/token"
        value = f'Bearer realm="{realm}",service="{SERVICE}"' + (f',scope="{scope}"' if scope else "")
        return _error(401, "UNAUTHORIZED", "authentication required", {"WWW-Authenticate": value})

    def allows(self, request: Request, repository: str | None) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        granted = self.tokens.get(token) if scheme.lower() == "bearer" else None
        return granted is not None and (repository is None or repository in granted)

    async def issue(self, request: Request) -> Response:
        offered = request.headers.get("authorization", "").encode()
        if self.credentials is not None and not secrets.compare_digest(
            offered, basic_authorization(*self.credentials).encode()
        ):
            return _error(401, "UNAUTHORIZED", "bad credentials", {"WWW-Authenticate": f'Basic realm="{SERVICE}"'})
        repositories = set()
        for scope in request.query_params.getlist("scope"):
            for part in scope.split():
                kind, _, rest = part.partition(":")
                name, _, actions = rest.rpartition(":")
                if kind == "repository" and "pull" in actions.split(","):
                    repositories.add(name)
        token = secrets.token_urlsafe(24)
        self.tokens[token] = repositories
        return JSONResponse({"token": token, "access_token": token, "expires_in": 300})


Handler = Callable[[Request], Awaitable[Response]]


def create_app(
    layout_dir: Path | str,
    *,
    token_auth: bool = False,
    credentials: tuple[str, str] | None = None,
    page_size: int | None = None,
) -> Starlette:
    """The registry app for `layout_dir`; `page_size` caps tag-list pages (to exercise `Link` paging)."""
    layout = Layout.load(layout_dir)
    gate = _TokenGate(credentials) if token_auth else None

    def guarded(handler: Handler, *, scoped: bool = True) -> Handler:
        async def endpoint(request: Request) -> Response:
            name = request.path_params.get("name")
            if isinstance(name, str) and not is_repository_path(name):
                return _error(400, "NAME_INVALID", f"invalid repository name {name!r}")
            if gate is not None and not gate.allows(request, name if scoped else None):
                return gate.challenge(request, f"repository:{name}:pull" if scoped and name else None)
            if isinstance(name, str) and layout.repository(name) is None:
                return _error(404, "NAME_UNKNOWN", f"repository {name} is not in this registry")
            return await handler(request)

        return endpoint

    async def version_check(request: Request) -> Response:
        return JSONResponse({}, headers={"Docker-Distribution-API-Version": "registry/2.0"})

    async def catalog(request: Request) -> Response:
        return JSONResponse({"repositories": sorted(r for r in layout.tags if r != ANY_REPOSITORY)})

    async def manifest(request: Request) -> Response:
        name, reference = request.path_params["name"], request.path_params["reference"]
        repository = layout.repository(name) or name
        if ":" in reference:
            digest = reference
            try:
                validate_digest(digest)
            except InvalidReference as exc:
                return _error(400, "DIGEST_INVALID", str(exc))
        else:
            descriptor = layout.tags_of(repository).get(reference)
            if descriptor is None:
                return _error(404, "MANIFEST_UNKNOWN", f"manifest unknown: {name}:{reference}")
            digest = str(descriptor.get("digest", ""))
        path = layout.blob_path(digest)
        if path is None:
            return _error(404, "MANIFEST_UNKNOWN", f"manifest unknown: {name}@{digest}")
        content = path.read_bytes()
        media_type = layout.manifest_media_type(digest, content)
        accept = request.headers.get("accept", "")
        if accept and not any(t in accept for t in (media_type, "*/*", "application/*")):
            return _error(
                404, "MANIFEST_UNKNOWN", f"{name}:{reference} is {media_type}, which the client did not accept"
            )
        headers = {"Docker-Content-Digest": digest, "Content-Length": str(len(content))}
        body = b"" if request.method == "HEAD" else content
        return Response(body, media_type=media_type, headers=headers)

    async def blob(request: Request) -> Response:
        name, digest = request.path_params["name"], request.path_params["digest"]
        try:
            validate_digest(digest)
        except InvalidReference as exc:
            return _error(400, "DIGEST_INVALID", str(exc))
        path = layout.blob_path(digest)
        if path is None:
            return _error(404, "BLOB_UNKNOWN", f"blob unknown: {name}@{digest}")
        return FileResponse(path, media_type="application/octet-stream", headers={"Docker-Content-Digest": digest})

    async def tags_list(request: Request) -> Response:
        name = request.path_params["name"]
        tags = sorted(layout.tags_of(layout.repository(name) or name))
        last = request.query_params.get("last")
        if last:
            tags = [t for t in tags if t > last]
        limits = [n for n in (page_size, _int(request.query_params.get("n"))) if n]
        limit = min(limits) if limits else None
        headers = {}
        if limit is not None and len(tags) > limit:
            tags = tags[:limit]
            headers["Link"] = f'</v2/{name}/tags/list?n={limit}&last={quote(tags[-1])}>; rel="next"'
        return JSONResponse({"name": name, "tags": tags}, headers=headers)

    get_head = ["GET", "HEAD"]
    routes = [
        Route("/v2/", guarded(version_check, scoped=False), methods=get_head),
        Route("/v2/_catalog", guarded(catalog, scoped=False), methods=get_head),
        Route("/v2/{name:path}/manifests/{reference}", guarded(manifest), methods=get_head),
        Route("/v2/{name:path}/blobs/{digest}", guarded(blob), methods=get_head),
        Route("/v2/{name:path}/tags/list", guarded(tags_list), methods=get_head),
    ]
    if gate is not None:
        routes.append(Route("/token", gate.issue, methods=["GET"]))
    return Starlette(routes=routes)


def _int(text: str | None) -> int | None:
    try:
        return max(1, int(text)) if text else None
    except ValueError:
        return None


def asgi_transport(layout_dir: Path | str, **options: Any) -> httpx.ASGITransport:
    """An httpx transport that reaches the registry for `layout_dir` in-process (no socket)."""
    return httpx.ASGITransport(app=create_app(layout_dir, **options))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m servers.oci_registry.local_registry",
        description="Serve an OCI image layout directory as a read-only OCI distribution API (registry).",
    )
    parser.add_argument("--layout", required=True, type=Path, help="OCI image layout directory")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--token-auth", action="store_true", help="require Bearer tokens from /token")
    parser.add_argument("--user", metavar="USER:PASSWORD", help="with --token-auth: /token wants Basic credentials")
    parser.add_argument("--page-size", type=int, help="tags per tags/list page (answers page with Link headers)")
    args = parser.parse_args(argv)
    credentials = None
    if args.user:
        user, colon, password = args.user.partition(":")
        if not colon:
            parser.error("--user takes USER:PASSWORD")
        credentials = (user, password)
    try:
        app = create_app(args.layout, token_auth=args.token_auth, credentials=credentials, page_size=args.page_size)
    except LayoutError as exc:
        sys.exit(f"error: {exc}")

    import uvicorn

    print(
        f"serving {args.layout} as an OCI registry on http://{args.host}:{args.port}/v2/", file=sys.stderr, flush=True
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
