"""Image references, repositories, digests and platforms as the OCI registry server parses them.

The cases follow Docker's normalisation (distribution/reference): Docker Hub by default, `library/`
for one-component Hub names, `latest` when no tag or digest is given, a registry recognised by a
`.`, a `:` or `localhost` in the first component.
"""

from __future__ import annotations

import hashlib

import pytest

from servers.oci_registry.auth import parse_challenge
from servers.oci_registry.media import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, detect_media_type
from servers.oci_registry.refs import (
    ImageRef,
    InvalidReference,
    Platform,
    Repository,
    compute_digest,
    digest_matches,
    is_repository_path,
    normalize_registry,
    parse_platform,
    parse_reference,
    parse_repository,
    validate_digest,
)

SHA = "sha256:" + "0123456789abcdef" * 4
SHA512 = "sha512:" + "ab" * 64


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("alpine", "docker.io", "library/alpine", "latest", None),
        ("alpine:3.19", "docker.io", "library/alpine", "3.19", None),
        ("library/alpine", "docker.io", "library/alpine", "latest", None),
        ("docker.io/alpine", "docker.io", "library/alpine", "latest", None),
        ("docker.io/library/alpine:latest", "docker.io", "library/alpine", "latest", None),
        ("index.docker.io/library/alpine", "docker.io", "library/alpine", "latest", None),
        ("bitnami/redis:7.2", "docker.io", "bitnami/redis", "7.2", None),
        ("ghcr.io/owner/repo/sub:v1.0.0-rc_1", "ghcr.io", "owner/repo/sub", "v1.0.0-rc_1", None),
        ("GHCR.io/owner/app", "ghcr.io", "owner/app", "latest", None),
        ("localhost/app", "localhost", "app", "latest", None),
        ("localhost:5000/team/app:dev", "localhost:5000", "team/app", "dev", None),
        ("127.0.0.1:5000/app", "127.0.0.1:5000", "app", "latest", None),
        ("[::1]:5000/app:x", "[::1]:5000", "app", "x", None),
        ("registry.example.com:443/a.b/c__d/e-f", "registry.example.com:443", "a.b/c__d/e-f", "latest", None),
        (f"alpine@{SHA}", "docker.io", "library/alpine", None, SHA),
        (f"alpine:3.19@{SHA}", "docker.io", "library/alpine", "3.19", SHA),
        (f"quay.io/a/b@{SHA512}", "quay.io", "a/b", None, SHA512),
        ("  alpine:edge  ", "docker.io", "library/alpine", "edge", None),
    ],
)
def test_parse_reference_normalises(
    text: str, registry: str, repository: str, tag: str | None, digest: str | None
) -> None:
    ref = parse_reference(text)
    assert ref == ImageRef(registry, repository, tag, digest)
    assert parse_reference(str(ref)) == ref  # the canonical form parses to itself


def test_reference_properties() -> None:
    ref = parse_reference("alpine:3.19")
    assert str(ref) == "docker.io/library/alpine:3.19"
    assert ref.name == "docker.io/library/alpine"
    assert ref.reference == "3.19"
    assert ref.repo == Repository("docker.io", "library/alpine")
    pinned = ref.with_digest(SHA)
    assert pinned.reference == SHA  # a digest wins over the tag for fetching
    assert str(pinned) == f"docker.io/library/alpine:3.19@{SHA}"
    assert parse_reference("alpine", default_tag=None).tag is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty image reference"),
        ("   ", "empty image reference"),
        ("Alpine", "must be lowercase"),
        ("MyOrg/app", "must be lowercase"),
        ("docker.io/Library/alpine", "must be lowercase"),
        ("https://docker.io/library/alpine", "drop the https:// prefix"),
        ("alpine:", "bad tag ''"),
        ("alpine:-x", "bad tag '-x'"),
        ("alpine:" + "x" * 129, "bad tag"),
        ("alpine@", "nothing after '@'"),
        ("alpine@sha256:abc", "needs 64 lowercase hex digits"),
        ("alpine@sha256:" + "A" * 64, "needs 64 lowercase hex digits"),
        ("alpine@md5:" + "a" * 32, "unsupported digest algorithm 'md5'"),
        ("alpine@latest", "invalid digest"),
        ("ghcr.io/", "no repository name after the registry"),
        ("a//b", "empty path component"),
        ("ghcr.io/a/-b", "bad repository path component '-b'"),
        ("foo bar", "contains whitespace"),
        (":latest", "no repository name"),
        ("docker.io/" + "a" * 250 + "/b", "longer than 255"),
    ],
)
def test_parse_reference_errors_say_why(text: str, message: str) -> None:
    with pytest.raises(InvalidReference, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_reference(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("alpine", Repository("docker.io", "library/alpine")),
        ("docker.io/library/alpine", Repository("docker.io", "library/alpine")),
        ("ghcr.io/owner/app", Repository("ghcr.io", "owner/app")),
        ("localhost:5000/app", Repository("localhost:5000", "app")),
    ],
)
def test_parse_repository(text: str, expected: Repository) -> None:
    assert parse_repository(text) == expected
    assert str(expected) == f"{expected.registry}/{expected.path}"


@pytest.mark.parametrize("text", ["alpine:latest", f"alpine@{SHA}", "localhost:5000/app:v1"])
def test_parse_repository_refuses_tags_and_digests(text: str) -> None:
    with pytest.raises(InvalidReference, match="without ':tag' or '@digest'"):
        parse_repository(text)


def test_parse_repository_keeps_a_registry_port() -> None:
    assert parse_repository("localhost:5000/a/b").registry == "localhost:5000"


def test_normalize_registry() -> None:
    assert normalize_registry("Index.Docker.IO") == "docker.io"
    assert normalize_registry("registry-1.docker.io") == "docker.io"
    assert normalize_registry("GHCR.IO") == "ghcr.io"
    assert normalize_registry("localhost:5000") == "localhost:5000"
    with pytest.raises(InvalidReference, match="not a URL"):
        normalize_registry("http://127.0.0.1:5000")
    with pytest.raises(InvalidReference, match="invalid registry host"):
        normalize_registry("bad_host!")


def test_repository_paths() -> None:
    assert is_repository_path("library/alpine")
    assert is_repository_path("a.b/c__d/e--f")
    assert not is_repository_path("Library/alpine")
    assert not is_repository_path("a//b")
    assert not is_repository_path("../etc")


def test_digests() -> None:
    data = b"hello"
    digest = compute_digest(data)
    assert digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert digest_matches(data, digest)
    assert not digest_matches(b"hellO", digest)
    assert digest_matches(data, compute_digest(data, "sha512"))
    assert validate_digest(SHA) == SHA
    with pytest.raises(InvalidReference):
        digest_matches(data, "sha256:nothex")
    with pytest.raises(InvalidReference, match="unsupported"):
        compute_digest(data, "md5")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("linux/amd64", Platform("linux", "amd64")),
        ("linux/arm64/v8", Platform("linux", "arm64", "v8")),
        ("Linux/ARM/v7", Platform("linux", "arm", "v7")),
        ("linux/x86_64", Platform("linux", "amd64")),
        ("linux/aarch64", Platform("linux", "arm64")),
        ("windows/amd64", Platform("windows", "amd64")),
    ],
)
def test_parse_platform(text: str, expected: Platform) -> None:
    assert parse_platform(text) == expected


@pytest.mark.parametrize("text", ["linux", "linux/", "/amd64", "linux/arm/v7/x", "linux amd64", ""])
def test_parse_platform_errors(text: str) -> None:
    with pytest.raises(InvalidReference, match="os/architecture"):
        parse_platform(text)


def test_platform_matching() -> None:
    arm64 = Platform("linux", "arm64")
    arm64_v8 = Platform("linux", "arm64", "v8")
    assert arm64.matches(arm64_v8)  # no variant asked: any variant does
    assert arm64_v8.matches(arm64)  # arm64 without a variant is v8
    assert not Platform("linux", "arm64", "v9").matches(arm64)
    assert not Platform("linux", "arm", "v7").matches(Platform("linux", "arm", "v6"))
    assert not Platform("linux", "amd64").matches(arm64)
    assert str(arm64_v8) == "linux/arm64/v8"


def test_parse_challenge() -> None:
    scheme, params = parse_challenge(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/alpine:pull,push"'
    )
    assert scheme == "bearer"
    assert params == {
        "realm": "https://auth.docker.io/token",
        "service": "registry.docker.io",
        "scope": "repository:library/alpine:pull,push",
    }
    assert parse_challenge('Basic realm="Registry \\"x\\""') == ("basic", {"realm": 'Registry "x"'})


def test_detect_media_type() -> None:
    assert detect_media_type({"mediaType": DOCKER_MANIFEST}, "application/json") == DOCKER_MANIFEST
    assert detect_media_type({"schemaVersion": 2, "manifests": []}) == OCI_INDEX
    assert detect_media_type({"schemaVersion": 2, "config": {}}, "application/json") == OCI_MANIFEST
    assert detect_media_type({}, f"{OCI_MANIFEST}; charset=utf-8") == OCI_MANIFEST
