"""The configuration file: strict models, YAML loading and cross-reference checks.

Pure (no I/O beyond reading the one file in `load_config`): workflows and the CLI's
`validate` run exactly this code, so an operator sees at `vmcp validate` time every error
the server would hit at start-up, each named by its key path and line.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vmcp.auth_config import AuthConfig, AuthorizationConfig, BackendAuth
from vmcp.composite import CompositeTool
from vmcp.composite_checks import check_composites
from vmcp.config_types import ConfigIssue, Seconds
from vmcp.tool_overrides import ToolOverride

BACKEND_NAME = r"^[a-z0-9_-]+$"
RESERVED_TOOL_PREFIX = "vmcp_"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    path: str = Field(default="/mcp", pattern=r"^/")
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Extra Host header values accepted (DNS-rebinding protection); loopback is always allowed.",
    )
    allowed_origins: list[str] = Field(default_factory=list, description="Extra Origin values accepted.")
    # Several façade replicas behind a load balancer: no handshake-era sessions are kept, so any
    # replica can serve any request (what that costs handshake-era clients: README, "Scaling out").
    stateless: bool = False
    # The key that seals the requestState of composite runs asking a 2026-07-28 client a question
    # (made on first use; replicas must share it, or set VMCP_REQUEST_STATE_KEY instead).
    request_state_key_file: str = ".vmcp/request-state.key"


class DevServerConfig(_Strict):
    db_file: str = ".vmcp/temporal.db"
    ui_port: int = Field(default=8233, ge=0, le=65535)
    dynamic_config: dict[str, Any] = Field(default_factory=dict)
    # A directory `vmcp dev` serves at /demo/ beside the MCP endpoint: local data (documentation
    # pages) that the demo composite tools fetch, so they run offline.
    demo_site: str | None = None


class TemporalTls(_Strict):
    """mTLS to a self-hosted cluster (files mounted from a Secret); all optional: `tls: {}` is TLS
    with the system's CAs (Temporal Cloud with an API key)."""

    server_ca_file: str | None = None
    client_cert_file: str | None = None
    client_key_file: str | None = None
    server_name: str | None = None  # when the certificate's name is not the address's host

    @model_validator(mode="after")
    def _pair(self) -> TemporalTls:
        if (self.client_cert_file is None) != (self.client_key_file is None):
            raise ValueError("client_cert_file and client_key_file go together")
        return self


class TemporalConfig(_Strict):
    address: str = "localhost:7233"
    namespace: str = "default"
    task_queue: str = "vmcp"
    tls: TemporalTls | None = None  # unset: plain gRPC (a dev server, a cluster inside the mesh)
    api_key: str | None = None  # Temporal Cloud: "${TEMPORAL_API_KEY}", read at connection time
    # The Temporal Web UI's address, for the run links in approver notifications (`vmcp dev`
    # fills in its own dev server's).
    web_ui_url: str | None = Field(default=None, pattern=r"^https?://")
    dev_server: DevServerConfig = Field(default_factory=DevServerConfig)


Transport = Literal["stdio", "streamable-http", "sse"]


class BackendConfig(_Strict):
    name: str = Field(pattern=BACKEND_NAME)
    transport: Transport
    command: str | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: Seconds = 30.0
    connect_timeout: Seconds = 20.0
    health_interval: Seconds = 10.0  # ping period; a backend that stops answering is reconnected (0: off)
    # How to negotiate with the backend: `auto` asks for the 2026-07-28 revision and falls back
    # to the initialize handshake; `legacy` always uses the handshake; a version pins it.
    protocol: Literal["auto", "legacy", "2026-07-28"] = "auto"
    auth: BackendAuth | None = None  # vmcp's own credential for this backend (HTTP transports)
    # client request headers passed on to this backend as they came (plain calls over the lean
    # path: a handshake session is shared by every caller), e.g. [X-Request-Id]
    pass_headers: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _transport_fields(self) -> BackendConfig:
        if self.transport == "stdio":
            if not self.command:
                raise ValueError("a stdio backend needs `command`")
            if self.url is not None:
                raise ValueError("`url` is for streamable-http and sse backends, not stdio")
            if self.auth is not None or self.pass_headers:
                raise ValueError(
                    "`auth` and `pass_headers` are for HTTP backends (give a stdio server its secrets in `env`)"
                )
        else:
            if not self.url:
                raise ValueError(f"a {self.transport} backend needs `url`")
            if not re.match(r"^https?://", self.url):
                raise ValueError(f"`url` must start with http:// or https://, got {self.url!r}")
            if self.command is not None or self.args or self.env or self.cwd is not None:
                raise ValueError("`command`, `args`, `env` and `cwd` are for stdio backends only")
        if self.timeout <= 0 or self.connect_timeout <= 0:
            raise ValueError("timeouts must be positive")
        return self


class BackendAggregation(_Strict):
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    overrides: dict[str, ToolOverride] = Field(default_factory=dict)


ConflictResolution = Literal["prefix", "priority", "manual"]


class AggregationConfig(_Strict):
    conflict_resolution: ConflictResolution = "prefix"
    prefix_format: str = "{backend}_"
    priority: list[str] = Field(default_factory=list)
    backends: dict[str, BackendAggregation] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _prefix_format(self) -> AggregationConfig:
        try:
            rendered = self.prefix_format.format(backend="x")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"prefix_format may only use the field {{backend}}: {exc}") from None
        if "{backend}" not in self.prefix_format or rendered == self.prefix_format:
            raise ValueError("prefix_format must contain {backend}")
        return self

    def for_backend(self, name: str) -> BackendAggregation:
        return self.backends.get(name) or BackendAggregation()


class AuditConfig(_Strict):
    # JSON lines, one per tool call and per composite step (`-`: standard error; unset: none).
    # Relative to the config file; façade and workers may share one file (appends are whole lines).
    file: str | None = None


class TelemetryConfig(_Strict):
    # OTLP/HTTP collector for traces (e.g. http://otel-collector:4318); unset, the standard
    # OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT variables decide, and without them tracing is off
    otlp_endpoint: str | None = Field(default=None, pattern=r"^https?://")
    service_name: str = "vmcp"


class VmcpConfig(_Strict):
    server: ServerConfig = Field(default_factory=ServerConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    authorization: AuthorizationConfig | None = None  # absent: every caller may call every tool
    audit: AuditConfig = Field(default_factory=AuditConfig)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    temporal: TemporalConfig = Field(default_factory=TemporalConfig)
    backends: list[BackendConfig] = Field(default_factory=list)
    aggregation: AggregationConfig = Field(default_factory=AggregationConfig)
    composite_tools: list[CompositeTool] = Field(default_factory=list)

    # Where the file lives: relative paths (db_file, stdio cwd) resolve against it.
    base_dir: Path = Field(default_factory=Path.cwd, exclude=True)

    def backend(self, name: str) -> BackendConfig:
        for backend in self.backends:
            if backend.name == name:
                return backend
        raise KeyError(name)

    def resolve_path(self, path: str) -> Path:
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else self.base_dir / candidate


# --------------------------------------------------------------------------- errors


class ConfigError(Exception):
    """Every problem found in one configuration, each with its key path."""

    def __init__(self, issues: Sequence[ConfigIssue], source: str = "") -> None:
        self.issues = list(issues)
        self.source = source
        head = f"invalid configuration{f' in {source}' if source else ''}"
        super().__init__(head + ":\n" + "\n".join(f"  {issue}" for issue in self.issues))


def format_path(loc: Sequence[str | int]) -> str:
    """`("backends", 1, "transport")` -> `backends[1].transport`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


_STEP_TAGS = frozenset({"tool", "for_each", "approval", "elicitation"})


def _issues_from_validation(exc: ValidationError, data: Any) -> list[ConfigIssue]:
    issues = []
    for err in exc.errors():
        # pydantic appends the validator's position for model-level checks; drop internal markers
        loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        # a step's type tag (`tool`, `for_each`, …) is pydantic's union branch, not a key
        loc = [
            p
            for i, p in enumerate(loc)
            if not (i >= 2 and loc[i - 2] == "steps" and isinstance(loc[i - 1], int) and p in _STEP_TAGS)
        ]
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key" + _suggestion(loc, data)
        elif err["type"] == "literal_error":
            message = f"{message} (got {err['input']!r})"
        issues.append(ConfigIssue(format_path(loc), message))
    return issues


def _suggestion(loc: Sequence[str | int], data: Any) -> str:
    """Name the closest known key for a misspelt one: `tiemout` -> `timeout`."""
    if not loc or not isinstance(loc[-1], str):
        return ""
    model: type[BaseModel] | None = VmcpConfig
    keyed = False  # the previous field was a mapping: this part is one of its keys (a backend name)
    for part in loc[:-1]:
        if model is None:
            return ""
        if isinstance(part, int) or keyed:
            keyed = False
            continue
        field = model.model_fields.get(part)
        if field is None:
            return ""
        keyed = getattr(field.annotation, "__origin__", None) is dict
        model = _model_of(field.annotation)
    if model is None:
        return ""
    close = difflib.get_close_matches(loc[-1], [k for k in model.model_fields if k != "base_dir"], n=1)
    return f"; did you mean `{close[0]}`?" if close else ""


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


# --------------------------------------------------------------------------- cross references


def check_references(config: VmcpConfig) -> list[ConfigIssue]:
    """Checks that span several keys: names that must exist, be unique, or not collide."""
    issues: list[ConfigIssue] = []
    seen: dict[str, int] = {}
    for index, backend in enumerate(config.backends):
        if backend.name in seen:
            issues.append(
                ConfigIssue(
                    f"backends[{index}].name",
                    f"duplicate backend name {backend.name!r} (also backends[{seen[backend.name]}])",
                )
            )
        else:
            seen[backend.name] = index
    known = sorted(seen)
    aggregation = config.aggregation
    for name in aggregation.backends:
        if name not in seen:
            issues.append(ConfigIssue(f"aggregation.backends.{name}", _unknown_backend(name, known)))
    for index, name in enumerate(aggregation.priority):
        if name not in seen:
            issues.append(ConfigIssue(f"aggregation.priority[{index}]", _unknown_backend(name, known)))
        elif aggregation.priority.index(name) != index:
            issues.append(ConfigIssue(f"aggregation.priority[{index}]", f"{name!r} is listed twice"))
    claimed: dict[str, str] = {}
    for backend_name, settings in aggregation.backends.items():
        for tool, override in settings.overrides.items():
            path = f"aggregation.backends.{backend_name}.overrides.{tool}.name"
            if override.name is None:
                continue
            if override.name.startswith(RESERVED_TOOL_PREFIX):
                issues.append(ConfigIssue(path, f"names starting with {RESERVED_TOOL_PREFIX!r} are reserved"))
            if override.name in claimed:
                issues.append(
                    ConfigIssue(path, f"{override.name!r} is already the override name of {claimed[override.name]}")
                )
            claimed[override.name] = f"{backend_name}.{tool}"
    issues += check_composites(config.composite_tools)
    return issues


def _unknown_backend(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known backends: {', '.join(known) or 'none'}"
    return f"unknown backend {name!r}{hint}"


# --------------------------------------------------------------------------- loading


def parse_config(data: Any, *, base_dir: Path | None = None, source: str = "", text: str | None = None) -> VmcpConfig:
    """Validate already-parsed YAML data; raise ConfigError naming every bad key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([ConfigIssue("", "the configuration must be a mapping of keys")], source)
    try:
        config = VmcpConfig.model_validate({**data, "base_dir": base_dir or Path.cwd()})
    except ValidationError as exc:
        raise ConfigError(_with_lines(_issues_from_validation(exc, data), text), source) from None
    issues = check_references(config)
    if issues:
        raise ConfigError(_with_lines(issues, text), source)
    return config


def load_config(path: str | Path) -> VmcpConfig:
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigIssue("", f"cannot read the file: {exc.strerror or exc}")], str(file)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError([ConfigIssue("", f"not valid YAML: {exc}", line)], str(file)) from None
    return parse_config(data, base_dir=file.resolve().parent, source=str(file), text=text)


def _with_lines(issues: list[ConfigIssue], text: str | None) -> list[ConfigIssue]:
    """Attach the YAML line of each key path, so an editor can jump straight to it."""
    if not text:
        return issues
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return issues
    return [ConfigIssue(i.path, i.message, _line_of(root, i.path)) for i in issues]


_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _line_of(node: yaml.Node | None, path: str) -> int | None:
    line = None
    for key, index in _PATH_PART.findall(path):
        if node is None:
            break
        if index and isinstance(node, yaml.SequenceNode):
            position = int(index)
            node = node.value[position] if position < len(node.value) else None
        elif key and isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if getattr(k, "value", None) == key), None)
            if match is None:
                break
            line = match[0].start_mark.line + 1
            node = match[1]
            continue
        else:
            break
        if node is not None:
            line = node.start_mark.line + 1
    return line
