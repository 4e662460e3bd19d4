"""What every command shares: the configuration file it reads, and text clipped to a column."""

from __future__ import annotations

import os
import sys

from vmcp.config.files import load_runnable
from vmcp.config.loading import ConfigError, load_config
from vmcp.config.models import VmcpConfig

DEFAULT_CONFIG = "temporal-dev.yaml"


def _config_path(value: str | None) -> str:
    return value or os.environ.get("VMCP_CONFIG") or DEFAULT_CONFIG


def config_or_none(path: str | None, *, runnable: bool = False) -> VmcpConfig | None:
    """The configuration (`--config`, else $VMCP_CONFIG, else ./temporal-dev.yaml), or None after
    printing what is wrong with it; `runnable`: also every file and program it names (to start on)."""
    try:
        return (load_runnable if runnable else load_config)(_config_path(path))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
