"""The edges of the request pipeline's pure parts: numbers that are not numbers, enums that
compare by type, headers a client may never pass on, rules that name prompts and resources, and
prompt and resource settings that reach the catalogue."""

from __future__ import annotations

import math
from typing import Any

import mcp_types as types
import pytest

from vmcp.catalog.aggregate import BackendListing, build_catalog
from vmcp.config.auth import AuthorizationConfig
from vmcp.config.loading import ConfigError, parse_config
from vmcp.config.models import UNPASSABLE_HEADERS, AggregationConfig
from vmcp.config.overrides import ParameterPolicy
from vmcp.pipeline import route
from vmcp.pipeline.envelope import forward_meta
from vmcp.pipeline.police import Refusal, police, police_uri
from vmcp.security.arguments import violation
from vmcp.security.authorization import Authorizer


def refused(policy: dict[str, Any], value: Any) -> str | None:
    broken = violation({"x": ParameterPolicy.model_validate(policy)}, {"x": value})
    return broken[0] if broken is not None else None


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, True, False, "5", None, [5]])
def test_a_range_refuses_what_is_not_a_finite_number(value: Any) -> None:
    assert refused({"minimum": 0, "maximum": 10}, value) == "range"
    assert refused({"maximum": 10}, value) == "range"  # one bound alone: NaN and -inf would slip past it


@pytest.mark.parametrize("value", [0, 5, 10, 2.5])
def test_a_range_accepts_numbers_inside_it(value: Any) -> None:
    assert refused({"minimum": 0, "maximum": 10}, value) is None


@pytest.mark.parametrize(
    ("allowed", "value", "ok"),
    [
        ([1, 2], 1, True),
        ([1, 2], True, False),  # True == 1 in Python, not in JSON
        ([0], False, False),
        ([1], 1.0, False),
        (["1"], 1, False),
        ([{"a": 1}], {"a": True}, False),
        ([{"a": 1}], {"a": 1}, True),
        ([[1, "x"]], [1, "x"], True),
        ([[1, "x"]], [True, "x"], False),
        ([None], None, True),
    ],
)
def test_enum_compares_type_exact(allowed: list[Any], value: Any, ok: bool) -> None:
    assert (refused({"enum": allowed}, value) is None) is ok


def _backend(**extra: Any) -> dict[str, Any]:
    return {"backends": [{"name": "b", "transport": "streamable-http", "url": "http://127.0.0.1:1/mcp", **extra}]}


@pytest.mark.parametrize("header", [*sorted(UNPASSABLE_HEADERS), "Authorization", "Transfer-Encoding", "HOST"])
def test_pass_headers_refuse_hop_by_hop_framing_and_credential_headers(header: str) -> None:
    with pytest.raises(ConfigError, match=r"backends\[0\]: .*cannot be passed on"):
        parse_config(_backend(pass_headers=["X-Request-Id", header]))


def test_pass_headers_take_ordinary_headers() -> None:
    config = parse_config(_backend(pass_headers=["X-Request-Id", "traceparent"]))
    assert config.backends[0].pass_headers == ["X-Request-Id", "traceparent"]


@pytest.mark.parametrize(
    "headers", [{"X-Team": "a\r\nX-Injected: 1"}, {"X-Team": "a\nb"}, {"X Team": "a"}, {"X-Team:": "a"}]
)
def test_configured_headers_with_line_breaks_or_bad_names_are_refused(headers: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=r"backends\[0\]: headers"):
        parse_config(_backend(headers=headers))


def test_passed_header_values_with_line_breaks_are_dropped() -> None:
    from vmcp.backends.credentials import passed_headers

    incoming = {"x-request-id": "ok", "x-other": "a\r\nInjected: 1", "x-zero": "a\0b"}
    assert passed_headers(["X-Request-Id", "X-Other", "X-Zero"], incoming) == {"x-request-id": "ok"}


def test_a_callers_vmcp_meta_keys_never_reach_a_backend() -> None:
    sent = {"io.vmcp/idempotency-key": "vmcp-x-1/step", "io.vmcp/run_id": "r", "progressToken": 3, "custom": 1}
    assert forward_meta(sent) == {"custom": 1}


def test_a_rule_names_tools_prompts_or_resources_and_at_least_one() -> None:
    with pytest.raises(ValueError, match="names `tools`, `prompts` or `resources`"):
        AuthorizationConfig.model_validate({"rules": [{"effect": "allow"}]})
    rules = Authorizer(
        AuthorizationConfig.model_validate(
            {
                "default": "deny",
                "rules": [
                    {"prompts": ["docs_*"]},
                    {"resources": ["file:///public/*"]},
                    {"tools": ["docs_*"], "effect": "deny"},
                ],
            }
        )
    )
    assert rules.allows({}, "prompt", "docs_greet") and not rules.allows({}, "tool", "docs_greet")
    assert not rules.allows({}, "resource", "docs_greet")  # a prompt rule says nothing of resources
    assert rules.allows({}, "resource", "file:///public/a.txt")
    assert not rules.allows({}, "resource", "file:///private/a.txt")


def _listing() -> BackendListing:
    greet = types.Prompt(name="greet", arguments=[types.PromptArgument(name="who")])
    secret = types.Prompt(name="secret_prompt")
    return BackendListing(
        "b",
        prompts=[greet, secret],
        resources=[
            types.Resource(uri="doc://public/a", name="a"),
            types.Resource(uri="doc://private/b", name="b"),
        ],
        resource_templates=[types.ResourceTemplate(uri_template="doc://items/{id}", name="items")],
    )


def test_prompt_and_resource_settings_reach_the_catalogue_and_the_route() -> None:
    aggregation = AggregationConfig.model_validate(
        {
            "backends": {
                "b": {
                    "prompts": {
                        "exclude": ["secret_*"],
                        "overrides": {
                            "greet": {"name": "hello", "description": "Say hello", "policy": {"who": {"max_length": 5}}}
                        },
                    },
                    "resources": {
                        "exclude": ["doc://private/*"],
                        "policy": {"pattern": r"doc://(public/\w+|items/\d+)"},
                    },
                }
            }
        }
    )
    catalog = build_catalog(aggregation, ["b"], [_listing()])
    assert [(p.name, p.description) for p in catalog.prompts] == [("hello", "Say hello")]
    assert [str(r.uri) for r in catalog.resources] == ["doc://public/a"]
    hello = route.prompt(catalog, "hello")
    assert hello is not None and hello.rule_names == ("hello", "b.greet")
    police(hello, {"who": "ada"})
    with pytest.raises(Refusal, match=r"argument `who` refused by policy \(max_length\)"):
        police(hello, {"who": "somebody long"})
    item = route.resource(catalog, "doc://items/42")
    assert item is not None and item.rule_names == ("doc://items/42", "doc://items/{id}")
    police_uri(item)
    hostile = route.resource(catalog, "doc://items/..%2Fsecret")
    assert hostile is not None
    with pytest.raises(Refusal, match=r"argument `uri` refused by policy \(pattern\)"):
        police_uri(hostile)
    assert route.resource(catalog, "doc://private/b") is None  # excluded: unknown, not merely hidden


def test_a_prompt_policy_naming_a_missing_argument_keeps_the_prompt_unadvertised() -> None:
    aggregation = AggregationConfig.model_validate(
        {"backends": {"b": {"prompts": {"overrides": {"greet": {"policy": {"whom": {"max_length": 5}}}}}}}}
    )
    catalog = build_catalog(aggregation, ["b"], [_listing()])
    assert "b_greet" not in catalog.prompt_routes
    assert any("has no argument 'whom'" in warning for warning in catalog.warnings)


def test_metrics_labels_of_unknown_names_are_one_label() -> None:
    catalog = build_catalog(AggregationConfig(), ["b"], [_listing()])
    assert route.tool(catalog, "made-up") is None  # the pipeline counts it as route.UNKNOWN
    read = route.resource(catalog, "doc://items/123456")
    assert read is not None and read.label == "doc://items/{id}"  # a template, never the caller's URI


def _exchanging(**auth: Any) -> dict[str, Any]:
    exchange = {"type": "token_exchange", "token_url": "http://127.0.0.1:1/token", "client_id": "vmcp"}
    return {
        "backends": [
            {
                "name": "ex",
                "transport": "streamable-http",
                "url": "http://127.0.0.1:1/mcp",
                "auth": {**exchange, "client_secret": "${SECRET}", **auth},
            }
        ],
        "composite_tools": [{"name": "via_ex", "steps": [{"id": "who", "tool": "ex.whoami", "arguments": {}}]}],
    }


def test_a_composite_step_on_a_token_exchange_backend_needs_the_operators_consent() -> None:
    """A step has no caller token, so it would call as vmcp's service identity: refused at load
    unless the backend says `composite_steps: service`."""
    with pytest.raises(ConfigError, match=r"composite_tools\[0\]\.steps\[0\]\.tool: backend 'ex' exchanges"):
        parse_config(_exchanging())
    assert parse_config(_exchanging(composite_steps="service")).backends[0].auth is not None
