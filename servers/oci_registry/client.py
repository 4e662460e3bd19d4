"""An async client for the OCI distribution API: manifests, platform resolution, config blobs, tags.

Every byte that names itself by digest is checked against that digest before anything reads it: a
manifest fetched by digest, a tag whose registry sent `Docker-Content-Digest`, an index entry, a
config blob. A registry (or a mirror, or a proxy on the way) that serves other bytes than the ones it
names is reported as `DigestMismatch`, never trusted.

Where a registry lives is decided per registry name: an in-process ASGI transport (the local
registry serving a layout, no port needed), else a mirror URL, else the registry itself over HTTPS
(plain HTTP for loopback hosts). Authentication follows the registry's challenge: a Bearer challenge
gets an anonymous token from its realm (or one for the configured user), a Basic challenge gets the
configured user. Credentials are never sent unasked, and only to the registry they are configured for.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import httpx

from .auth import answer_challenge
from .errors import BadResponse, DigestMismatch, NotFound, PlatformNotFound, Unauthorized, Unreachable
from .media import (
    DOCKER_SCHEMA1_TYPES,
    IMAGE_MANIFEST_TYPES,
    INDEX_TYPES,
    MANIFEST_ACCEPT,
    MANIFEST_TYPES,
    detect_media_type,
)
from .refs import (
    ImageRef,
    InvalidReference,
    Platform,
    Repository,
    compute_digest,
    digest_matches,
    normalize_registry,
)

MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # the limit the distribution spec lets registries enforce
MAX_CONFIG_BYTES = 8 * 1024 * 1024
_MAX_ERROR_BODY = 64 * 1024
_MAX_TAG_PAGES = 100
_MAX_CACHED_ITEMS = 256
_MAX_CACHED_BYTES = 1024 * 1024
DEFAULT_TIMEOUT = 30.0
DOCKER_HUB_API = "https://registry-1.docker.io"

try:
    _USER_AGENT = f"vmcp-oci-registry/{version('vmcp')}"
except PackageNotFoundError:  # pragma: no cover - running from a source tree without installing
    _USER_AGENT = "vmcp-oci-registry"


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Manifest:
    """A manifest or index as served, with its verified digest and parsed JSON."""

    ref: ImageRef
    digest: str
    media_type: str
    content: bytes
    data: dict[str, Any]

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES


@dataclass(frozen=True)
class ResolvedImage:
    """What a reference names (`top`: an index or a manifest) and the image manifest chosen for a platform."""

    ref: ImageRef
    top: Manifest
    manifest: Manifest
    platform: Platform | None = None  # the index entry's platform; None when `top` is the manifest itself
    platforms: tuple[Platform, ...] = ()  # every platform the index offers


def descriptor_platform(descriptor: Mapping[str, Any]) -> Platform | None:
    """The `platform` of an index entry, or None when it has none (or names no real platform)."""
    raw = descriptor.get("platform")
    if not isinstance(raw, dict):
        return None
    os_name, arch, variant = raw.get("os"), raw.get("architecture"), raw.get("variant")
    if not isinstance(os_name, str) or not isinstance(arch, str) or "unknown" in (os_name, arch):
        return None  # attestation manifests are listed as unknown/unknown
    return Platform(os_name, arch, variant if isinstance(variant, str) and variant else None)


# --------------------------------------------------------------------------- the client


_LINK_NEXT_RE = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')
_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "[::1]"}


def _registry_error_text(body: bytes) -> str:
    """The `errors[].code: message` list of a distribution API error body, or a short excerpt of it."""
    try:
        errors = json.loads(body).get("errors")
        parts = [f"{e.get('code', '?')}: {e.get('message', '')}".rstrip(": ") for e in errors]
        return "; ".join(parts)
    except (ValueError, AttributeError, TypeError):
        return body[:200].decode("utf-8", "replace").strip()


@dataclass
class _Answer:
    status: int
    headers: httpx.Headers
    body: bytes
    url: httpx.URL


@dataclass
class RegistryClient:
    """Talks to many registries; reuse one instance (it keeps connections and tokens), close it with `aclose`."""

    mirrors: Mapping[str, str] = field(default_factory=dict)
    transports: Mapping[str, httpx.AsyncBaseTransport] = field(default_factory=dict)
    credentials: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    timeout: float = DEFAULT_TIMEOUT
    _clients: dict[str, httpx.AsyncClient] = field(default_factory=dict, init=False, repr=False)
    _auth: dict[tuple[str, str], str] = field(default_factory=dict, init=False, repr=False)
    # Verified content by (registry, repository, digest): immutable, so never stale. It spares registries
    # that count manifest GETs against a rate limit (Docker Hub) the repeats of one composite run.
    _content: OrderedDict[tuple[str, str, str], tuple[str, bytes]] = field(
        default_factory=OrderedDict, init=False, repr=False
    )

    def __post_init__(self) -> None:
        self.mirrors = {normalize_registry(k): v.rstrip("/") for k, v in self.mirrors.items()}
        self.transports = {normalize_registry(k): v for k, v in self.transports.items()}
        self.credentials = {normalize_registry(k): v for k, v in self.credentials.items()}

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every connection; the client opens new ones if used again."""
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.aclose()

    def base_url(self, registry: str) -> str:
        """Where requests for `registry` go (without the `/v2/` part)."""
        if registry in self.transports:
            return f"http://{registry}"
        if registry in self.mirrors:
            return self.mirrors[registry]
        if registry == "docker.io":
            return DOCKER_HUB_API
        host = registry.rsplit(":", 1)[0] if not registry.endswith("]") else registry
        scheme = "http" if host in _LOOPBACK_HOSTS or host.startswith("127.") else "https"
        return f"{scheme}://{registry}"

    def origin(self, registry: str) -> str:
        """`registry` as messages name it: with the mirror or in-process layout that serves it."""
        if registry in self.transports:
            return f"{registry} (served in-process)"
        if registry in self.mirrors:
            return f"{registry} (mirror {self.mirrors[registry]})"
        return registry

    def _client(self, registry: str) -> httpx.AsyncClient:
        client = self._clients.get(registry)
        if client is None:
            client = httpx.AsyncClient(
                transport=self.transports.get(registry),
                timeout=self.timeout,
                follow_redirects=True,  # blob downloads redirect to storage; httpx drops auth across origins
                headers={"User-Agent": _USER_AGENT},
            )
            self._clients[registry] = client
        return client

    # ----------------------------------------------------------------------- public API

    async def get_manifest(self, ref: ImageRef) -> Manifest:
        """The manifest or index `ref` names, verified against `ref.digest` or the registry's digest header."""
        what, origin = f"manifest {ref}", self.origin(ref.registry)
        cached = self._cached(ref.repo, ref.digest)
        if ref.digest is not None and cached is not None:
            digest, (content_type, body) = ref.digest, cached
        else:
            path = f"/v2/{ref.repository}/manifests/{ref.reference}"
            answer = await self._get(ref.repo, path, what, MAX_MANIFEST_BYTES)
            content_type, body = answer.headers.get("content-type", ""), answer.body
            digest = self._verify(body, ref.digest or answer.headers.get("docker-content-digest"), what, origin)
            self._remember(ref.repo, digest, content_type, body)
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise BadResponse(f"{what} from {origin} is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise BadResponse(f"{what} from {origin} is not a JSON object")
        media_type = detect_media_type(data, content_type)
        if media_type in DOCKER_SCHEMA1_TYPES:
            raise BadResponse(f"{what} is a Docker schema 1 manifest, which is not supported")
        if media_type not in MANIFEST_TYPES:
            raise BadResponse(f"{what} has unsupported media type {media_type!r}")
        return Manifest(ref, digest, media_type, body, data)

    async def resolve(self, ref: ImageRef, platform: Platform) -> ResolvedImage:
        """The image manifest for `platform`: `ref`'s manifest itself, or its index's entry for `platform`."""
        top = await self.get_manifest(ref)
        if not top.is_index:
            return ResolvedImage(ref, top, top)
        entries = [d for d in top.data.get("manifests") or [] if isinstance(d, dict)]
        offered = [(d, p) for d in entries if (p := descriptor_platform(d)) is not None]
        platforms = tuple(p for _, p in offered)
        chosen = next(((d, p) for d, p in offered if platform.matches(p)), None)
        if chosen is None:
            listed = ", ".join(str(p) for p in platforms) or "none"
            raise PlatformNotFound(f"{ref} has no image for platform {platform} (it offers: {listed})")
        descriptor, entry_platform = chosen
        child_ref = self._descriptor_ref(ref, descriptor, "index entry")
        manifest = await self.get_manifest(child_ref)
        self._check_size(manifest.content, descriptor, f"manifest {child_ref}", self.origin(ref.registry))
        if manifest.media_type not in IMAGE_MANIFEST_TYPES:
            raise BadResponse(f"index entry {child_ref} for {entry_platform} is {manifest.media_type}, not an image")
        return ResolvedImage(ref, top, manifest, entry_platform, platforms)

    async def get_config(self, image: ResolvedImage) -> tuple[str, dict[str, Any]]:
        """The image's config blob (its digest and parsed JSON), verified against the manifest's descriptor."""
        descriptor = image.manifest.data.get("config")
        if not isinstance(descriptor, dict):
            raise BadResponse(f"manifest {image.manifest.ref} has no config descriptor")
        config_ref = self._descriptor_ref(image.manifest.ref, descriptor, "config descriptor")
        digest = config_ref.digest or ""
        body = await self.get_blob(image.ref.repo, digest, MAX_CONFIG_BYTES)
        self._check_size(body, descriptor, f"config blob {digest}", self.origin(image.ref.registry))
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise BadResponse(f"config blob {digest} of {image.ref.name} is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise BadResponse(f"config blob {digest} of {image.ref.name} is not a JSON object")
        return digest, data

    async def get_blob(self, repo: Repository, digest: str, limit: int = MAX_CONFIG_BYTES) -> bytes:
        """A blob's bytes (at most `limit`), verified against `digest`."""
        cached = self._cached(repo, digest)
        if cached is not None:
            return cached[1]
        what = f"blob {digest} of {repo}"
        answer = await self._get(repo, f"/v2/{repo.path}/blobs/{digest}", what, limit)
        self._verify(answer.body, digest, what, self.origin(repo.registry))
        self._remember(repo, digest, "", answer.body)
        return answer.body

    async def list_tags(self, repo: Repository) -> list[str]:
        """Every tag of `repo`, following the registry's `Link: <…>; rel="next"` pages."""
        url: str = f"{self.base_url(repo.registry)}/v2/{repo.path}/tags/list"
        tags: list[str] = []
        seen: set[str] = set()
        for _page in range(_MAX_TAG_PAGES):
            seen.add(url)
            answer = await self._get(repo, url, f"tags of {repo}", MAX_MANIFEST_BYTES)
            try:
                page = json.loads(answer.body).get("tags") or []
            except (ValueError, AttributeError):
                raise BadResponse(
                    f"tag list of {repo} from {self.origin(repo.registry)} is not a JSON object"
                ) from None
            tags.extend(t for t in page if isinstance(t, str))
            match = _LINK_NEXT_RE.search(answer.headers.get("link", ""))
            if match is None:
                return tags
            url = str(answer.url.join(match.group(1)))
            if url in seen:
                break
        return tags

    # ----------------------------------------------------------------------- helpers

    def _cached(self, repo: Repository, digest: str | None) -> tuple[str, bytes] | None:
        if digest is None:
            return None
        key = (repo.registry, repo.path, digest)
        found = self._content.get(key)
        if found is not None:
            self._content.move_to_end(key)
        return found

    def _remember(self, repo: Repository, digest: str, content_type: str, body: bytes) -> None:
        if len(body) <= _MAX_CACHED_BYTES:
            self._content[(repo.registry, repo.path, digest)] = (content_type, body)
            while len(self._content) > _MAX_CACHED_ITEMS:
                self._content.popitem(last=False)

    @staticmethod
    def _descriptor_ref(ref: ImageRef, descriptor: Mapping[str, Any], what: str) -> ImageRef:
        digest = descriptor.get("digest")
        try:
            return ref.with_digest(digest if isinstance(digest, str) else "")
        except InvalidReference as exc:
            raise BadResponse(f"{what} in {ref} has a bad digest: {exc}") from None

    @staticmethod
    def _verify(body: bytes, expected: str | None, what: str, registry: str) -> str:
        """The digest of `body`, after checking it against `expected` when there is one."""
        if not expected:
            return compute_digest(body)
        try:
            matches = digest_matches(body, expected)
        except InvalidReference as exc:
            raise BadResponse(f"{what}: registry {registry} sent an unusable digest: {exc}") from None
        if not matches:
            actual = compute_digest(body, expected.partition(":")[0])
            raise DigestMismatch(
                f"digest mismatch for {what} from {registry}: expected {expected}, content hashes to {actual}"
            )
        return expected

    @staticmethod
    def _check_size(body: bytes, descriptor: Mapping[str, Any], what: str, registry: str) -> None:
        size = descriptor.get("size")
        if isinstance(size, int) and size != len(body):
            raise DigestMismatch(f"size mismatch for {what} from {registry}: expected {size} bytes, got {len(body)}")

    async def _get(self, repo: Repository, path_or_url: str, what: str, limit: int) -> _Answer:
        """GET with the registry's auth dance; a non-2xx answer becomes the matching RegistryError."""
        base = self.base_url(repo.registry)
        url = path_or_url if "://" in path_or_url else f"{base}{path_or_url}"
        key = (repo.registry, repo.path)
        answer = await self._send(repo.registry, url, self._auth.get(key), what, limit)
        if answer.status == 401:
            self._auth[key] = await self._authenticate(repo, answer, what)
            answer = await self._send(repo.registry, url, self._auth[key], what, limit)
        if 200 <= answer.status < 300:
            return answer
        detail, origin = _registry_error_text(answer.body), self.origin(repo.registry)
        suffix = f": {detail}" if detail else ""
        if answer.status == 401:
            raise Unauthorized(f"unauthorized: {origin} refused access to {what}{suffix}")
        if answer.status == 403:
            raise Unauthorized(f"denied: {origin} forbids access to {what}{suffix}")
        if answer.status == 404:
            raise NotFound(f"not found: {what} does not exist on {origin}{suffix}")
        if answer.status == 429:
            raise BadResponse(f"rate limited: {origin} answered 429 for {what}{suffix}")
        raise BadResponse(f"{origin} answered HTTP {answer.status} for {what}{suffix}")

    async def _send(self, registry: str, url: str, authorization: str | None, what: str, limit: int) -> _Answer:
        headers = {"Accept": MANIFEST_ACCEPT} if "/manifests/" in url else {}
        if authorization:
            headers["Authorization"] = authorization
        try:
            async with self._client(registry).stream("GET", url, headers=headers) as response:
                cap = limit if response.is_success else _MAX_ERROR_BODY
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > cap:
                        if not response.is_success:
                            break
                        raise BadResponse(f"{what} from {self.origin(registry)} is larger than {limit} bytes")
                    chunks.append(chunk)
                return _Answer(response.status_code, response.headers, b"".join(chunks), response.url)
        except httpx.TransportError as exc:
            raise Unreachable(
                f"registry {registry} is unreachable at {self.base_url(registry)} "
                f"({type(exc).__name__}: {exc or 'no detail'}) while fetching {what}"
            ) from None
        except httpx.HTTPError as exc:
            raise BadResponse(f"{registry}: {type(exc).__name__}: {exc} while fetching {what}") from None

    async def _authenticate(self, repo: Repository, answer: _Answer, what: str) -> str:
        return await answer_challenge(
            self._client(repo.registry),
            registry=repo.registry,
            registry_base_url=self.base_url(repo.registry),
            repository=repo.path,
            challenge=answer.headers.get("www-authenticate", ""),
            credentials=self.credentials.get(repo.registry),
            what=what,
        )
