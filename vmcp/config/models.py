"""The configuration's strict models: every key of the YAML file, with the checks one key allows.

Pure. Cross-reference checks and loading live in `vmcp.config.loading`, which `vmcp validate`
and start-up both run.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from vmcp.config.auth import AuthConfig, AuthorizationConfig, BackendAuth
from vmcp.config.composite import CompositeTool
from vmcp.config.overrides import PromptAggregation, ResourceAggregation, ToolOverride
from vmcp.config.types import Seconds

BACKEND_NAME = r"^[a-z0-9_-]+$"
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an RFC 9110 token
# Headers a client's request may never pass on to a backend: connection management and framing
# (a smuggled Content-Length or Transfer-Encoding), routing, the MCP session and protocol that vmcp
# negotiates itself, and credentials (each backend gets only vmcp's own, from `auth`).
UNPASSABLE_HEADERS = frozenset(
    {
        "authorization", "proxy-authorization", "cookie", "set-cookie", "host", "content-length",
        "transfer-encoding", "connection", "keep-alive", "te", "trailer", "upgrade", "proxy-connection",
        "expect", "content-type", "accept", "mcp-session-id", "mcp-protocol-version", "mcp-method",
        "mcp-name", "last-event-id", "x-api-key",
    }
)  # fmt: skip
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
    # A client has this long to send each request's head (request line and headers), on a new
    # connection and between requests on a kept-alive one; then 408 and the connection closed
    # (slowloris). A body that trickles is bounded by the request-size limit and the call's timeout.
    header_timeout: Seconds = Field(default=10.0, gt=0, le=300)
    # Connections and requests in progress at once; beyond it a new request is answered 503 at once.
    max_connections: int = Field(default=1000, ge=1)
    # How long start-up waits for every backend's first connection and listing (they run
    # concurrently); a backend still at it then is served when it is ready (list_changed).
    startup_wait: Seconds = Field(default=10.0, ge=0, le=600)


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


class EncryptionConfig(_Strict):
    """Run data encrypted before it reaches Temporal (`vmcp.runs.payload_codec`): the key ring is
    JSON in a file or in an environment variable, exactly one of them."""

    key_file: str | None = None  # relative to the config file; owner-readable only
    keys_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    compress: bool = True  # zlib before encryption, when it makes the payload smaller
    # Web UI origins allowed to call the codec endpoint (`/codec`) besides temporal.web_ui_url's
    # and, under `vmcp dev`, its own UI's
    ui_origins: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_source(self) -> EncryptionConfig:
        if (self.key_file is None) == (self.keys_env is None):
            raise ValueError("give exactly one of key_file and keys_env")
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
    encryption: EncryptionConfig | None = None  # unset: run data goes to Temporal in clear


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
    # tool calls in flight to this backend at once; beyond it calls wait, and beyond `max_waiting`
    # waiting ones they fail at once (a slow backend must not pile up every caller behind it)
    max_concurrency: int = Field(default=64, ge=1, le=10_000)
    max_waiting: int = Field(default=256, ge=0, le=100_000)
    # the largest answer taken from an HTTP backend, in bytes: a response body, or one event of a
    # stream (the lean path and the SDK's client alike); a larger one is refused unread
    max_response_size: int = Field(default=8 * 1024 * 1024, ge=1024)
    # How to negotiate with the backend: `auto` asks for the 2026-07-28 revision and falls back
    # to the initialize handshake; `legacy` always uses the handshake; a version pins it.
    protocol: Literal["auto", "legacy", "2026-07-28"] = "auto"
    auth: BackendAuth | None = None  # vmcp's own credential for this backend (HTTP transports)
    # client request headers passed on to this backend as they came (plain calls over the lean
    # path: a handshake session is shared by every caller), e.g. [X-Request-Id]
    pass_headers: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _headers_are_safe(self) -> BackendConfig:
        refused = sorted({name for name in self.pass_headers if name.lower() in UNPASSABLE_HEADERS})
        if refused:
            raise ValueError(
                f"pass_headers: {', '.join(refused)} cannot be passed on (hop-by-hop, framing, routing or "
                "credential headers are vmcp's own to set for each backend; use `auth` for credentials)"
            )
        for name, value in self.headers.items():
            if any(c in name + value for c in "\r\n\0") or not HEADER_NAME.fullmatch(name):
                raise ValueError(f"headers: {name!r} is not a valid header (no line breaks, a token name)")
        for name in self.pass_headers:
            if not HEADER_NAME.fullmatch(name):
                raise ValueError(f"pass_headers: {name!r} is not a header name")
        return self

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
    include: list[str] = Field(default_factory=list)  # globs over the backend's tool names
    exclude: list[str] = Field(default_factory=list)
    overrides: dict[str, ToolOverride] = Field(default_factory=dict)
    prompts: PromptAggregation = Field(default_factory=PromptAggregation)
    resources: ResourceAggregation = Field(default_factory=ResourceAggregation)


ConflictResolution = Literal["prefix", "priority", "manual"]


class SearchToolConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,128}$")
    description: str | None = None  # None: vmcp's own wording


class SearchConfig(_Strict):
    """Search mode for large catalogues: `find_tools` and `call_tool`, instead of the full tool
    list (`instead`) or beside it (`beside`)."""

    mode: Literal["instead", "beside"] = "instead"
    find_tools: SearchToolConfig = SearchToolConfig(name="find_tools")
    call_tool: SearchToolConfig = SearchToolConfig(name="call_tool")
    default_limit: int = Field(default=5, ge=1, le=100)
    max_limit: int = Field(default=25, ge=1, le=500)

    @model_validator(mode="after")
    def _distinct(self) -> SearchConfig:
        if self.find_tools.name == self.call_tool.name:
            raise ValueError("find_tools.name and call_tool.name must differ")
        if self.default_limit > self.max_limit:
            raise ValueError("default_limit may not exceed max_limit")
        return self


class AggregationConfig(_Strict):
    conflict_resolution: ConflictResolution = "prefix"
    prefix_format: str = "{backend}_"
    priority: list[str] = Field(default_factory=list)
    backends: dict[str, BackendAggregation] = Field(default_factory=dict)
    # items per page of tools/list, prompts/list, resources/list (cursor pagination, both eras)
    page_size: int = Field(default=1000, ge=1, le=100_000)
    search: SearchConfig | None = None  # unset: no search tools

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


_LIMIT_STORAGE = ("memory", "redis", "rediss", "valkey", "valkeys")


def _check_rate(rate: str) -> str:
    from limits import parse_many  # 60 ms to import: only for configurations that set limits

    try:
        parse_many(rate)
    except ValueError as exc:
        raise ValueError(f"{rate!r} is not a rate like '60/minute' or '10/second;500/hour' ({exc})") from None
    return rate


Rate = Annotated[str, AfterValidator(_check_rate)]


class LimitsConfig(_Strict):
    """Rate limits on tool calls (`limits:`). Each rate is `N/unit` (second, minute, hour, day),
    several joined by `;`. Tools are matched by globs over advertised names."""

    # where the counts live: memory (this process only) or a Redis/Valkey URL shared by every replica
    storage: str = "memory://"
    per_caller: Rate | None = None  # each caller: all its tool calls together
    per_caller_tool: dict[str, Rate] = Field(default_factory=dict)  # a tool, for each caller separately
    per_tool: dict[str, Rate] = Field(default_factory=dict)  # a tool, all callers together
    per_backend: dict[str, Rate] = Field(default_factory=dict)  # every call reaching it, composite steps too

    @field_validator("storage")
    @classmethod
    def _storage(cls, value: str) -> str:
        scheme = value.split("://", 1)[0] if "://" in value else ""
        if scheme not in _LIMIT_STORAGE:
            raise ValueError(f"must be memory:// or a redis://, rediss://, valkey:// or valkeys:// URL, not {value!r}")
        return value


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
    limits: LimitsConfig | None = None  # absent: no rate limits

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
