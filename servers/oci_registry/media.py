"""Manifest media types (OCI and Docker v2) and how to tell which one a document is.

Registries answer a manifest request with whichever of these four they hold, so the client asks for
all of them and the local registry labels what it serves. Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_SCHEMA1_TYPES = frozenset(
    {
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    }
)

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
IMAGE_MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
MANIFEST_TYPES = INDEX_TYPES | IMAGE_MANIFEST_TYPES
# Indexes first: a registry that holds a multi-platform image should not down-convert it to one platform.
MANIFEST_ACCEPT = ", ".join([OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST])

REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"

# Content types that say nothing about which manifest a body is.
_GENERIC_CONTENT_TYPES = {"", "application/json", "text/plain", "application/octet-stream"}


def bare_content_type(header: str | None) -> str:
    """`application/x; charset=utf-8` → `application/x`."""
    return (header or "").split(";", 1)[0].strip().lower()


def detect_media_type(document: dict[str, Any], content_type: str | None = None) -> str:
    """The media type of a manifest document: its own `mediaType`, else the Content-Type, else its shape.

    OCI manifests may omit `mediaType`; then an index is recognised by `manifests`, an image manifest by
    `config`. The result may be a type outside MANIFEST_TYPES; callers decide whether they can use it.
    """
    declared = document.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    header = bare_content_type(content_type)
    if header not in _GENERIC_CONTENT_TYPES:
        return header
    if document.get("schemaVersion") == 1:
        return "application/vnd.docker.distribution.manifest.v1+json"
    if isinstance(document.get("manifests"), list):
        return OCI_INDEX
    if isinstance(document.get("config"), dict):
        return OCI_MANIFEST
    return header or "application/octet-stream"
