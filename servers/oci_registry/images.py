"""The tools' typed results, and how manifests and configs become them.

These models are the tools' `outputSchema`: a composite step reads `steps.info.output.os` or
`steps.manifest.output.layers | length` from them, so their field names are an interface. Raw JSON
(the whole manifest, the whole config) is included as well, for whatever a field does not cover.
Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from .client import ResolvedImage
from .refs import Platform, Repository


class Descriptor(BaseModel):
    """A content descriptor: what a manifest says about a blob it references."""

    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = Field(default_factory=dict)


class ImageInfo(BaseModel):
    """An image at a glance: what the reference names, the chosen platform's manifest and config summary."""

    reference: str = Field(description="The normalised reference, e.g. docker.io/library/alpine:latest")
    registry: str
    repository: str
    tag: str | None
    digest: str = Field(description="Digest of what the reference names: the index of a multi-platform image")
    media_type: str = Field(description="Media type of what the reference names (an index or a manifest)")
    multi_platform: bool
    platforms: list[str] = Field(description="Platforms the image offers (os/architecture[/variant])")
    platform: str = Field(description="The platform described by the fields below")
    manifest_digest: str
    manifest_media_type: str
    created: str | None
    os: str
    architecture: str
    variant: str | None
    layer_count: int
    total_size: int = Field(description="Sum of the (compressed) layer sizes in bytes")
    labels: dict[str, str]


class ImageManifest(BaseModel):
    """The image manifest for one platform, with its config and layer descriptors."""

    reference: str
    digest: str = Field(description="Digest of this image manifest")
    media_type: str
    index_digest: str | None = Field(description="Digest of the index it was chosen from, if any")
    platform: str | None
    schema_version: int | None
    config: Descriptor
    layers: list[Descriptor]
    layer_count: int
    total_size: int
    annotations: dict[str, str]
    manifest: dict[str, Any] = Field(description="The manifest JSON exactly as served")


class HistoryEntry(BaseModel):
    created: str | None = None
    created_by: str | None = None
    comment: str | None = None
    empty_layer: bool = False


class ImageConfig(BaseModel):
    """The image configuration for one platform: how a container of it starts, and how it was built."""

    reference: str
    manifest_digest: str
    config_digest: str
    media_type: str
    os: str
    architecture: str
    variant: str | None
    created: str | None
    author: str | None
    env: list[str]
    entrypoint: list[str] | None
    cmd: list[str] | None
    working_dir: str | None
    user: str | None
    exposed_ports: list[str]
    volumes: list[str]
    labels: dict[str, str]
    diff_ids: list[str]
    history: list[HistoryEntry]
    config: dict[str, Any] = Field(description="The config JSON exactly as served")


class TagList(BaseModel):
    repository: str
    tags: list[str]
    count: int


# --------------------------------------------------------------------------- conversions


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _strings(value: Any) -> list[str] | None:
    return [str(v) for v in value] if isinstance(value, list) else None


def _str_map(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in _dict(value).items()}


def _descriptor(value: Any) -> Descriptor:
    raw = _dict(value)
    size = raw.get("size")
    return Descriptor(
        media_type=_str(raw.get("mediaType")) or "",
        digest=_str(raw.get("digest")) or "",
        size=size if isinstance(size, int) else 0,
        annotations=_str_map(raw.get("annotations")),
    )


def _layers(image: ResolvedImage) -> list[Descriptor]:
    layers = image.manifest.data.get("layers")
    return [_descriptor(layer) for layer in layers] if isinstance(layers, list) else []


def config_platform(config: dict[str, Any]) -> Platform:
    return Platform(
        _str(config.get("os")) or "unknown", _str(config.get("architecture")) or "unknown", _str(config.get("variant"))
    )


def image_info(image: ResolvedImage, config: dict[str, Any]) -> ImageInfo:
    layers = _layers(image)
    own = config_platform(config)
    platforms = [str(p) for p in image.platforms] if image.top.is_index else [str(own)]
    return ImageInfo(
        reference=str(image.ref),
        registry=image.ref.registry,
        repository=image.ref.repository,
        tag=image.ref.tag,
        digest=image.top.digest,
        media_type=image.top.media_type,
        multi_platform=image.top.is_index,
        platforms=platforms,
        platform=str(image.platform or own),
        manifest_digest=image.manifest.digest,
        manifest_media_type=image.manifest.media_type,
        created=_str(config.get("created")),
        os=own.os,
        architecture=own.architecture,
        variant=own.variant,
        layer_count=len(layers),
        total_size=sum(layer.size for layer in layers),
        labels=_str_map(_dict(config.get("config")).get("Labels")),
    )


def image_manifest(image: ResolvedImage) -> ImageManifest:
    data = image.manifest.data
    layers = _layers(image)
    schema_version = data.get("schemaVersion")
    return ImageManifest(
        reference=str(image.ref),
        digest=image.manifest.digest,
        media_type=image.manifest.media_type,
        index_digest=image.top.digest if image.top.is_index else None,
        platform=str(image.platform) if image.platform else None,
        schema_version=schema_version if isinstance(schema_version, int) else None,
        config=_descriptor(data.get("config")),
        layers=layers,
        layer_count=len(layers),
        total_size=sum(layer.size for layer in layers),
        annotations=_str_map(data.get("annotations")),
        manifest=data,
    )


def image_config(image: ResolvedImage, config_digest: str, config: dict[str, Any]) -> ImageConfig:
    runtime = _dict(config.get("config"))
    own = config_platform(config)
    history = [
        HistoryEntry(
            created=_str(entry.get("created")),
            created_by=_str(entry.get("created_by")),
            comment=_str(entry.get("comment")),
            empty_layer=entry.get("empty_layer") is True,
        )
        for entry in config.get("history") or []
        if isinstance(entry, dict)
    ]
    return ImageConfig(
        reference=str(image.ref),
        manifest_digest=image.manifest.digest,
        config_digest=config_digest,
        media_type=_str(_dict(image.manifest.data.get("config")).get("mediaType")) or "",
        os=own.os,
        architecture=own.architecture,
        variant=own.variant,
        created=_str(config.get("created")),
        author=_str(config.get("author")),
        env=_strings(runtime.get("Env")) or [],
        entrypoint=_strings(runtime.get("Entrypoint")),
        cmd=_strings(runtime.get("Cmd")),
        working_dir=_str(runtime.get("WorkingDir")) or None,
        user=_str(runtime.get("User")) or None,
        exposed_ports=sorted(_dict(runtime.get("ExposedPorts"))),
        volumes=sorted(_dict(runtime.get("Volumes"))),
        labels=_str_map(runtime.get("Labels")),
        diff_ids=_strings(_dict(config.get("rootfs")).get("diff_ids")) or [],
        history=history,
        config=config,
    )


def tag_list(repository: Repository, tags: list[str]) -> TagList:
    return TagList(repository=str(repository), tags=tags, count=len(tags))
