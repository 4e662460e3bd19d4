"""How callers authenticate to vmcp (`auth:`), as configuration.

Pure models. `anonymous` is for development: every caller is `anonymous`, and vmcp refuses to serve
that way on an address other than loopback unless `force_anonymous` says the operator means it.
`oauth` makes vmcp an OAuth 2.1 resource server (the MCP authorization spec): bearer JWTs checked
against the issuer's JWKS, its `iss`, the `aud` naming this vmcp (`audience`, its resource
identifier), `exp`/`nbf`, and the scopes every call needs.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from vmcp.config.types import Seconds

_URL = r"^https?://"


class AuthConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["anonymous", "oauth"] = "anonymous"
    force_anonymous: bool = False  # serve anonymous callers on a non-loopback address anyway
    issuer: str | None = Field(default=None, pattern=_URL)
    # This vmcp's resource identifier: the `aud` tokens must carry, and the `resource` of its
    # RFC 9728 metadata (served at /.well-known/oauth-protected-resource<path of this URL>).
    audience: str | None = Field(default=None, pattern=_URL)
    jwks_url: str | None = Field(default=None, pattern=_URL)
    # RFC 7662 token introspection instead of local JWT checks (opaque tokens): vmcp asks the
    # issuer about each token (answers cached for `introspection_cache`), as client
    # `introspection_client_id` with `introspection_client_secret` ("${ENV}") or its file.
    introspection_url: str | None = Field(default=None, pattern=_URL)
    introspection_client_id: str | None = None
    introspection_client_secret: str | None = None
    introspection_client_secret_file: str | None = None
    introspection_cache: Seconds = 30.0
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "PS256", "ES256", "EdDSA"], min_length=1)
    required_scopes: list[str] = Field(default_factory=list)
    leeway: Seconds = 30.0  # clock skew tolerated on exp / nbf / iat
    jwks_cache: Seconds = 300.0  # how long a fetched key set is used before it is fetched again
    # A token naming a key id not in the set refetches it, at most once per this many seconds (a
    # flood of made-up key ids must not become a flood of requests to the issuer).
    jwks_cooldown: Seconds = 30.0

    @model_validator(mode="after")
    def _complete(self) -> AuthConfig:
        if self.mode == "oauth":
            keys = ("issuer", "audience", "jwks_url" if self.introspection_url is None else "introspection_client_id")
            missing = [key for key in keys if getattr(self, key) is None]
            if self.introspection_url and not (
                self.introspection_client_secret or self.introspection_client_secret_file
            ):
                missing.append("introspection_client_secret or introspection_client_secret_file")
            if missing:
                raise ValueError(f"mode oauth needs {', '.join(missing)}")
            if any(alg.upper().startswith("HS") or alg == "none" for alg in self.algorithms):
                raise ValueError("algorithms: only asymmetric algorithms are accepted (a JWKS holds public keys)")
        return self

    @property
    def anonymous(self) -> bool:
        return self.mode == "anonymous"


class CallerCondition(BaseModel):
    """Who a rule is about; every condition given must hold (an empty one matches everybody)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subjects: list[str] = Field(default_factory=list)  # any of (`anonymous` without auth)
    clients: list[str] = Field(default_factory=list)  # any of
    groups: list[str] = Field(default_factory=list)  # any of the caller's `groups` claim
    scopes: list[str] = Field(default_factory=list)  # all of
    claims: dict[str, str | list[str]] = Field(default_factory=dict)  # each claim equal to (one of) the value(s)


class AuthorizationRule(BaseModel):
    """What a rule is about: tools, prompts, resources (any of them; at least one)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # globs over advertised names (composite tools included) and `backend.original_tool`
    tools: list[str] = Field(default_factory=list)
    # globs over advertised prompt names and `backend.original_prompt`
    prompts: list[str] = Field(default_factory=list)
    # globs over resource URIs and resource templates (a URI read through a template matches either)
    resources: list[str] = Field(default_factory=list)
    effect: Literal["allow", "deny"] = "allow"
    when: CallerCondition = Field(default_factory=CallerCondition)
    # for the run tools (`vmcp_run_*`): `any` lets the rule reach runs other callers started
    # (operators); a caller always reaches its own
    runs: Literal["own", "any"] = "own"

    @model_validator(mode="after")
    def _names_something(self) -> AuthorizationRule:
        if not (self.tools or self.prompts or self.resources):
            raise ValueError("a rule names `tools`, `prompts` or `resources` (globs)")
        return self

    def globs(self, kind: str) -> list[str]:
        """The globs of this rule for `tool`, `prompt` or `resource` requests."""
        return self.tools if kind == "tool" else self.prompts if kind == "prompt" else self.resources


class AuthorizationConfig(BaseModel):
    """Which caller may use which tool, prompt or resource: the first rule that names it and whose
    `when` matches decides; none matching, `default` does. A composite call also needs every tool
    its steps call."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default: Literal["allow", "deny"] = "deny"
    rules: list[AuthorizationRule] = Field(default_factory=list)


class BackendAuth(BaseModel):
    """How vmcp authenticates to one HTTP backend (`backends[].auth`): its own credential, never
    the caller's. Secret values come from `${ENV}` references or files, read when used, so they
    stay out of the config file, workflow input, history and logs.

    - `bearer`: `Authorization: Bearer <token>`; `header`: `<header>: <token>`.
    - `client_credentials`: an OAuth 2.0 token for vmcp itself from `token_url`, cached and renewed
      before it expires.
    - `token_exchange`: RFC 8693: a plain call presents the caller's own token, exchanged at
      `token_url` for one meant for this backend (`audience`), cached per caller token. vmcp's own
      traffic (listing, health checks) and composite steps, which have no caller token (a run must
      not keep one), would use a client-credentials token for vmcp, the service identity: refused
      unless `composite_steps: service` says so. A per-caller credential needs a per-request
      header, so such a backend must speak 2026-07-28 over streamable HTTP (a handshake session is
      shared by every caller).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["bearer", "header", "client_credentials", "token_exchange"]
    token: str | None = None  # bearer / header: the value, usually "${ENV_NAME}"
    token_file: str | None = None  # bearer / header: a file holding it (re-read when it changes)
    header: str = "Authorization"  # header: the header's name
    token_url: str | None = Field(default=None, pattern=_URL)
    client_id: str | None = None
    client_secret: str | None = None  # "${ENV_NAME}"
    client_secret_file: str | None = None
    scope: str | None = None
    audience: str | None = None
    resource: str | None = None
    # token_exchange: a composite step has no caller token (a run must not keep one), so it could
    # only call this backend as vmcp's service identity — which may reach what the caller's own
    # token cannot. Refused unless the operator says `service` (and restricts, with authorization
    # rules, who may run composites that call it).
    composite_steps: Literal["refuse", "service"] = "refuse"

    @model_validator(mode="after")
    def _complete(self) -> BackendAuth:
        if self.type in ("bearer", "header"):
            if (self.token is None) == (self.token_file is None):
                raise ValueError(f"type {self.type} needs exactly one of token, token_file")
        else:
            missing = [key for key in ("token_url", "client_id") if getattr(self, key) is None]
            if self.client_secret is None and self.client_secret_file is None:
                missing.append("client_secret or client_secret_file")
            if missing:
                raise ValueError(f"type {self.type} needs {', '.join(missing)}")
        return self
