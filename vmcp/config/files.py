"""The files and programs a configuration names, checked before anything starts.

Model validation cannot know whether `/run/secrets/jira` exists; an operator should not learn it
from a traceback when the first call fails. `vmcp validate` runs these checks, and `vmcp serve`,
`vmcp dev` and the worker refuse to start on exactly what they report, each named by its key path.
Reading the file system only (no network): paths resolve against the config file's directory.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from vmcp.config.loading import ConfigError, load_config
from vmcp.config.models import VmcpConfig
from vmcp.config.types import ConfigIssue


def load_runnable(path: str | Path) -> VmcpConfig:
    """`load_config`, and every file and program it names checked: what `vmcp validate` judges, and
    what `vmcp serve`, `vmcp dev` and the worker start on. ConfigError names each problem."""
    config = load_config(path)
    issues = file_issues(config)
    if issues:
        raise ConfigError(issues, str(path))
    return config


def resolve_command(command: str) -> str:
    """A bare command is looked up next to this interpreter first (the venv that installed the
    published servers), then on PATH, so `command: mcp-server-time` works without activating it."""
    if "/" in command:
        return command
    beside = Path(sys.executable).parent / command
    if beside.exists():
        return str(beside)
    return shutil.which(command) or command


def file_issues(config: VmcpConfig) -> list[ConfigIssue]:
    """Every named file, directory or program that is missing or unreadable."""
    issues: list[ConfigIssue] = []

    def readable(key: str, value: str | None) -> None:
        if value is None or value.startswith("${"):
            return
        path = config.resolve_path(value)
        if not path.is_file():
            issues.append(ConfigIssue(key, f"no such file: {path}"))
        elif not os.access(path, os.R_OK):
            issues.append(ConfigIssue(key, f"cannot read {path}"))

    dev = config.temporal.dev_server
    if dev.demo_site is not None and not config.resolve_path(dev.demo_site).is_dir():
        issues.append(
            ConfigIssue("temporal.dev_server.demo_site", f"no such directory: {config.resolve_path(dev.demo_site)}")
        )
    tls = config.temporal.tls
    if tls is not None:
        for name in ("server_ca_file", "client_cert_file", "client_key_file"):
            readable(f"temporal.tls.{name}", getattr(tls, name))
    readable("auth.introspection_client_secret_file", config.auth.introspection_client_secret_file)
    for index, backend in enumerate(config.backends):
        where = f"backends[{index}]"
        if backend.auth is not None:
            readable(f"{where}.auth.token_file", backend.auth.token_file)
            readable(f"{where}.auth.client_secret_file", backend.auth.client_secret_file)
        if backend.transport == "stdio" and backend.command:
            if backend.cwd is not None and not config.resolve_path(backend.cwd).is_dir():
                issues.append(ConfigIssue(f"{where}.cwd", f"no such directory: {config.resolve_path(backend.cwd)}"))
            found = resolve_command(backend.command)
            if "/" in backend.command:
                base = config.resolve_path(backend.cwd) if backend.cwd else config.base_dir
                found = str(base / backend.command) if not Path(backend.command).is_absolute() else backend.command
            if not (Path(found).is_file() and os.access(found, os.X_OK)):
                issues.append(ConfigIssue(f"{where}.command", f"no such program: {backend.command!r}"))
    return issues
