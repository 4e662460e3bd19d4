"""What every command shares: the configuration file it reads, and text clipped to a column."""

from __future__ import annotations

import os
import sys

from vmcp.config.loading import ConfigError, load_config
from vmcp.config.models import VmcpConfig

DEFAULT_CONFIG = "temporal-dev.yaml"


def _config_path(value: str | None) -> str:
    return value or os.environ.get("VMCP_CONFIG") or DEFAULT_CONFIG


def _load(path: str) -> VmcpConfig:
    return load_config(path)


def config_or_none(path: str | None) -> VmcpConfig | None:
    """The configuration (`--config`, else $VMCP_CONFIG, else ./temporal-dev.yaml), or None after
    printing what is wrong with it."""
    try:
        return _load(_config_path(path))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
