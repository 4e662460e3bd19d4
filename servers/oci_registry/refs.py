"""Image references, repository names, digests and platforms, parsed and normalised as Docker does.

`alpine` means `docker.io/library/alpine:latest` to every container tool, so it must mean the same
here: the default registry is Docker Hub, a one-component Docker Hub name lives under `library/`, and
a missing tag is `latest`. The first path component names a registry only when it looks like a host
(it has a `.` or a `:`, or is `localhost`), the rule of distribution/reference, so `myorg/app` stays on
Docker Hub while `ghcr.io/myorg/app` does not. One deliberate difference: distribution/reference also
takes an uppercase first component for a host (`MyOrg/app`); here that is reported as a repository
name that must be lowercase, which is what the user almost always got wrong.

Pure: no I/O, so the server, the client and the local registry share one grammar.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace

DEFAULT_REGISTRY = "docker.io"
DEFAULT_TAG = "latest"
# Names Docker Hub is also known by; all of them normalise to DEFAULT_REGISTRY.
_DOCKER_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io"}
_MAX_NAME_LENGTH = 255

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_RE = re.compile(rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?")
_PATH_COMPONENT_RE = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG_RE = re.compile(r"[\w][\w.-]{0,127}")
# Digest algorithms this package can verify, with the length of their hex encoding.
DIGEST_ALGORITHMS = {"sha256": 64, "sha512": 128}
_DIGEST_RE = re.compile(r"(?P<algorithm>[a-z0-9]+(?:[.+_-][a-z0-9]+)*):(?P<hex>[a-zA-Z0-9=_-]+)")


class InvalidReference(ValueError):
    """A reference, repository name, digest or platform that cannot be used; the message says why."""


# --------------------------------------------------------------------------- digests


def validate_digest(text: str) -> str:
    """`text` if it is a digest this package can verify (`sha256:<64 hex>` or `sha512:<128 hex>`)."""
    match = _DIGEST_RE.fullmatch(text)
    if match is None:
        raise InvalidReference(f"invalid digest {text!r}: expected 'sha256:' followed by 64 hex digits")
    algorithm, hex_part = match["algorithm"], match["hex"]
    if algorithm not in DIGEST_ALGORITHMS:
        known = ", ".join(DIGEST_ALGORITHMS)
        raise InvalidReference(f"unsupported digest algorithm {algorithm!r} in {text!r} (supported: {known})")
    length = DIGEST_ALGORITHMS[algorithm]
    if len(hex_part) != length or not re.fullmatch(r"[0-9a-f]+", hex_part):
        raise InvalidReference(f"invalid digest {text!r}: {algorithm} needs {length} lowercase hex digits")
    return text


def compute_digest(data: bytes, algorithm: str = "sha256") -> str:
    """The content digest of `data` (`algorithm:hex`), as registries and image layouts name content."""
    if algorithm not in DIGEST_ALGORITHMS:
        raise InvalidReference(f"unsupported digest algorithm {algorithm!r}")
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def digest_matches(data: bytes, digest: str) -> bool:
    """Whether `data` hashes to `digest` (with the digest's own algorithm)."""
    algorithm = validate_digest(digest).partition(":")[0]
    return compute_digest(data, algorithm) == digest


# --------------------------------------------------------------------------- names


def normalize_registry(text: str) -> str:
    """A registry host (with optional port) in canonical form: lowercase, Docker Hub as `docker.io`."""
    if "://" in text:
        raise InvalidReference(f"invalid registry {text!r}: give a host such as 'ghcr.io', not a URL")
    if not _DOMAIN_RE.fullmatch(text):
        raise InvalidReference(f"invalid registry host {text!r}")
    host = text.lower()
    return DEFAULT_REGISTRY if host in _DOCKER_HUB_ALIASES else host


@dataclass(frozen=True)
class Repository:
    """A repository in a registry: `docker.io` + `library/alpine`."""

    registry: str
    path: str

    def __str__(self) -> str:
        return f"{self.registry}/{self.path}"


@dataclass(frozen=True)
class ImageRef:
    """A normalised image reference. `digest`, when present, is what gets fetched; `tag` is kept for display."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """`registry/repository`, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def reference(self) -> str:
        """What goes after `/manifests/` in the distribution API: the digest if pinned, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    @property
    def repo(self) -> Repository:
        return Repository(self.registry, self.repository)

    def with_digest(self, digest: str) -> ImageRef:
        return replace(self, digest=validate_digest(digest))

    def __str__(self) -> str:
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def is_repository_path(text: str) -> bool:
    """Whether `text` is a valid repository path (`library/alpine`), with no registry defaults applied."""
    return len(text) <= _MAX_NAME_LENGTH and all(_PATH_COMPONENT_RE.fullmatch(part) for part in text.split("/"))


def _split_name(text: str, original: str) -> Repository:
    """`[registry/]path` → Repository, applying Docker Hub's defaults and the path grammar."""
    first, slash, rest = text.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        registry, path = normalize_registry(first), rest
    else:
        registry, path = DEFAULT_REGISTRY, text
    if not path:
        raise InvalidReference(f"invalid reference {original!r}: no repository name after the registry")
    if registry == DEFAULT_REGISTRY and "/" not in path:
        path = f"library/{path}"
    for component in path.split("/"):
        if not component:
            raise InvalidReference(f"invalid reference {original!r}: empty path component in {path!r}")
        if component != component.lower() and _PATH_COMPONENT_RE.fullmatch(component.lower()):
            raise InvalidReference(f"invalid reference {original!r}: repository name must be lowercase ({path!r})")
        if not _PATH_COMPONENT_RE.fullmatch(component):
            raise InvalidReference(
                f"invalid reference {original!r}: bad repository path component {component!r} "
                "(lowercase letters and digits, separated by '.', '_', '__' or '-')"
            )
    if len(registry) + 1 + len(path) > _MAX_NAME_LENGTH:
        raise InvalidReference(f"invalid reference {original!r}: name longer than {_MAX_NAME_LENGTH} characters")
    return Repository(registry, path)


def _check_text(text: str, what: str) -> str:
    stripped = text.strip()
    if not stripped:
        raise InvalidReference(f"empty {what}")
    if "://" in stripped:
        scheme = stripped.split("://", 1)[0]
        raise InvalidReference(
            f"invalid {what} {text!r}: drop the {scheme}:// prefix (e.g. 'docker.io/library/alpine:latest')"
        )
    if any(ch.isspace() for ch in stripped):
        raise InvalidReference(f"invalid {what} {text!r}: contains whitespace")
    return stripped


def parse_reference(text: str, *, default_tag: str | None = DEFAULT_TAG) -> ImageRef:
    """Parse `[registry[:port]/]path[:tag][@digest]`; a reference with neither tag nor digest gets `default_tag`."""
    stripped = _check_text(text, "image reference")
    name_part, at, digest = stripped.partition("@")
    if at:
        if not digest:
            raise InvalidReference(f"invalid reference {text!r}: nothing after '@'")
        validate_digest(digest)
    tag: str | None = None
    colon, slash = name_part.rfind(":"), name_part.rfind("/")
    if colon > slash:
        name_part, tag = name_part[:colon], name_part[colon + 1 :]
        if not _TAG_RE.fullmatch(tag):
            raise InvalidReference(
                f"invalid reference {text!r}: bad tag {tag!r} (up to 128 letters, digits, '_', '.', '-'; "
                "not starting with '.' or '-')"
            )
    if not name_part:
        raise InvalidReference(f"invalid reference {text!r}: no repository name")
    repo = _split_name(name_part, text)
    if tag is None and not at:
        tag = default_tag or None
    return ImageRef(repo.registry, repo.path, tag, digest or None)


def parse_repository(text: str) -> Repository:
    """Parse `[registry[:port]/]path` (no tag, no digest), with the same defaults as image references."""
    stripped = _check_text(text, "repository")
    if "@" in stripped or stripped.rfind(":") > stripped.rfind("/"):
        raise InvalidReference(
            f"invalid repository {text!r}: give a repository such as 'docker.io/library/alpine', "
            "without ':tag' or '@digest'"
        )
    return _split_name(stripped, text)


# --------------------------------------------------------------------------- platforms


@dataclass(frozen=True)
class Platform:
    """`os/architecture[/variant]`, as in an image index's `platform` objects."""

    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text

    def matches(self, offered: Platform) -> bool:
        """Whether an index entry for `offered` serves a request for this platform.

        A request without a variant takes any variant; `arm64` entries without a variant are `v8`.
        """
        if (self.os, self.architecture) != (offered.os, offered.architecture):
            return False
        if self.variant is None:
            return True
        offered_variant = offered.variant or ("v8" if offered.architecture == "arm64" else None)
        return self.variant == offered_variant


_PLATFORM_PART_RE = re.compile(r"[a-z0-9._-]+")
_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64"}


def parse_platform(text: str) -> Platform:
    """Parse `os/arch[/variant]` (`linux/amd64`, `linux/arm64/v8`); `x86_64` and `aarch64` are accepted."""
    parts = text.strip().lower().split("/")
    if not 2 <= len(parts) <= 3 or not all(_PLATFORM_PART_RE.fullmatch(part) for part in parts):
        raise InvalidReference(f"invalid platform {text!r}: expected 'os/architecture[/variant]', e.g. 'linux/amd64'")
    os_name, arch = parts[0], _ARCH_ALIASES.get(parts[1], parts[1])
    return Platform(os_name, arch, parts[2] if len(parts) == 3 else None)
