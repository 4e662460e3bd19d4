"""Tool customization (`vmcp.shaping`), argument policies and authorization (`vmcp.policy`), and their
config checks."""

from __future__ import annotations

from typing import Any

import mcp_types as types
import pytest

from vmcp.catalog.shaping import ShapeRefusal, shape_tool
from vmcp.config.auth import AuthorizationConfig
from vmcp.config.loading import ConfigError, parse_config
from vmcp.config.overrides import ParameterPolicy, ToolOverride
from vmcp.pipeline.police import Refusal, police
from vmcp.pipeline.route import Target
from vmcp.security.arguments import violation
from vmcp.security.authorization import Authorizer

SEARCH = types.Tool(
    name="search",
    description="Search issues",
    input_schema={
        "type": "object",
        "properties": {
            "query": {"type": "string", "description": "what to look for"},
            "repo": {"type": "string"},
            "limit": {"type": "integer", "default": 30},
            "state": {"type": "string"},
            "org": {"type": "string"},
        },
        "required": ["query", "repo", "org"],
    },
)
WHERE = "aggregation.backends.gh.overrides.search"


def shaped(**override: Any) -> tuple[types.Tool, Any, list[str]]:
    return shape_tool(SEARCH, ToolOverride.model_validate(override), WHERE)


def test_no_reshaping_keeps_the_tool_as_it_is() -> None:
    tool, shape, problems = shape_tool(SEARCH, ToolOverride(name="find"), WHERE)
    assert tool is SEARCH and shape is None and problems == []


def test_the_schema_shows_renames_descriptions_defaults_and_hides_fixed_and_unexposed() -> None:
    tool, shape, problems = shaped(
        parameters={
            "query": {"name": "q", "description": "words"},
            "repo": {"default": "vmcp"},
            "org": {"fixed": "{{ caller.org }}"},
        },
        expose=["query", "repo", "limit"],
    )
    assert problems == []
    schema = tool.input_schema
    assert schema["properties"] == {
        "q": {"type": "string", "description": "words"},
        "repo": {"type": "string", "default": "vmcp"},
        "limit": {"type": "integer", "default": 30},
    }
    assert schema["required"] == ["q"]  # repo has a default now; org is fixed
    sent = shape.backend_arguments({"q": "bug"}, {"org": "acme"})
    assert sent == {"query": "bug", "repo": "vmcp", "org": "acme"}
    assert shape.backend_arguments({"q": "x", "repo": "other"}, {"org": "acme"})["repo"] == "other"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"q": "x", "org": "evil"}, "`org` is set by the operator"),
        ({"q": "x", "state": "open"}, "`state` is set by the operator"),  # not exposed
        ({"query": "x"}, "advertised as `q`"),
    ],
)
def test_a_caller_cannot_reach_around_the_shape(arguments: dict[str, Any], message: str) -> None:
    _, shape, _ = shaped(
        parameters={"query": {"name": "q"}, "org": {"fixed": "acme"}, "repo": {"default": "r"}},
        expose=["query", "repo"],
    )
    with pytest.raises(ShapeRefusal, match=message):
        shape.backend_arguments(arguments, {})


def test_a_required_parameter_hidden_with_nothing_to_send_keeps_the_tool_unadvertised() -> None:
    _, _, problems = shaped(expose=["query"], parameters={"org": {"fixed": "acme"}})
    assert problems == [f"{WHERE}.expose: required parameter 'repo' is hidden with no value to send"]


def test_unknown_parameters_and_name_clashes_are_problems() -> None:
    _, _, problems = shaped(parameters={"nope": {"default": 1}, "repo": {"name": "query"}}, policy={"gone": {}})
    assert f"{WHERE}.parameters.nope: 'search' has no parameter 'nope'" in problems[0]
    assert any(p.startswith(f"{WHERE}.policy.gone") for p in problems)
    assert any("'query' is already a parameter name" in p for p in problems)


def test_policies_are_checked_on_what_the_backend_would_receive() -> None:
    _, shape, _ = shaped(
        parameters={"query": {"name": "q"}, "limit": {"default": 500}},
        policy={"limit": {"maximum": 100}, "query": {"max_length": 5}},
    )
    assert shape is not None
    target = Target("tool", "search", "gh", "search", shape, shape.policies)
    with pytest.raises(Refusal, match=r"argument `limit` refused by policy \(maximum\)") as refused:
        police(target, shape.backend_arguments({"q": "ok", "repo": "r", "org": "o"}, {}))  # the default breaks it
    assert refused.value.rule == "maximum" and refused.value.decision == "policy"
    with pytest.raises(Refusal, match=r"argument `q` refused by policy \(max_length\)"):
        police(target, shape.backend_arguments({"q": "too long", "repo": "r", "org": "o", "limit": 1}, {}))


@pytest.mark.parametrize(
    ("policy", "value", "rule"),
    [
        ({"pattern": "[a-z]+"}, "abc1", "pattern"),
        ({"pattern": "[a-z]+"}, 7, "pattern"),
        ({"enum": ["open", "closed"]}, "all", "enum"),
        ({"minimum": 1}, 0, "minimum"),
        ({"maximum": 10}, 10.5, "maximum"),
        ({"minimum": 1}, True, "range"),
        ({"max_length": 2}, ["a", "b", "c"], "max_length"),
        ({"url": {"hosts": ["*.example.test"]}}, "https://example.test.evil.com/", "url"),
    ],
)
def test_each_rule_refuses_and_names_itself(policy: dict[str, Any], value: Any, rule: str) -> None:
    broken = violation({"p": ParameterPolicy.model_validate(policy)}, {"p": value})
    assert broken is not None and broken[0] == rule
    assert violation({"p": ParameterPolicy.model_validate(policy)}, {}) is None  # absent: not checked


@pytest.mark.parametrize(
    ("override", "path", "message"),
    [
        ({"parameters": {"x": {"fixed": 1, "default": 2}}}, ".parameters.x", "either `fixed`"),
        ({"parameters": {"x": {"fixed": "{{ caller.", "name": "y"}}}, ".parameters.x", "takes no `name`"),
        ({"parameters": {"x": {"fixed": "{{ caller. }}"}}}, ".parameters.x", "does not parse"),
        ({"policy": {"x": {"pattern": "("}}}, ".policy.x", "not a regular expression"),
        ({"policy": {"x": {"minimum": 5, "maximum": 1}}}, ".policy.x", "above maximum"),
        ({"policy": {"x": {"url": {"hosts": ["ex*ample.test"]}}}}, ".policy.x", "ex*ample.test"),
        ({"policy": {"x": {"max_length": -1}}}, ".policy.x.max_length", "greater than or equal"),
        ({"parameters": {"x": {"fixed": 1}}, "expose": ["x"]}, "", "expose lists fixed parameters"),
    ],
)
def test_bad_overrides_are_config_errors_naming_the_key(override: dict[str, Any], path: str, message: str) -> None:
    data = {
        "backends": [{"name": "gh", "transport": "stdio", "command": "gh"}],
        "aggregation": {"backends": {"gh": {"overrides": {"search": override}}}},
    }
    with pytest.raises(ConfigError) as error:
        parse_config(data)
    found = [issue for issue in error.value.issues if issue.path.startswith(WHERE + path)]
    assert found, error.value.issues
    assert message in str(error.value), str(error.value)


# --------------------------------------------------------------------------- authorization


def authorizer(**config: Any) -> Authorizer:
    return Authorizer(AuthorizationConfig.model_validate(config))


def test_without_authorization_everybody_may_call_everything() -> None:
    assert Authorizer(None).allows({"subject": "anonymous"}, "tool", "anything") and not Authorizer(None).active


@pytest.mark.parametrize(
    ("when", "caller", "allowed"),
    [
        ({"subjects": ["alice"]}, {"subject": "alice"}, True),
        ({"subjects": ["alice"]}, {"subject": "bob"}, False),
        ({"clients": ["ci-bot"]}, {"client": "ci-bot"}, True),
        ({"groups": ["ops", "sre"]}, {"groups": ["sre"]}, True),
        ({"groups": ["ops"]}, {"groups": []}, False),
        ({"scopes": ["a", "b"]}, {"scopes": ["a"]}, False),  # all of them
        ({"scopes": ["a", "b"]}, {"scopes": ["b", "a", "c"]}, True),
        ({"claims": {"dept": "eng"}}, {"claims": {"dept": "eng"}}, True),
        ({"claims": {"dept": ["eng", "ops"]}}, {"claims": {"dept": "sales"}}, False),
        ({"subjects": ["alice"], "groups": ["ops"]}, {"subject": "alice", "groups": []}, False),  # every condition
    ],
)
def test_a_rule_applies_when_every_condition_holds(when: dict[str, Any], caller: dict[str, Any], allowed: bool) -> None:
    rules = authorizer(default="deny", rules=[{"tools": ["t"], "when": when}])
    assert rules.allows(caller, "tool", "t") is allowed


def test_the_first_matching_rule_decides_and_tools_match_by_any_name() -> None:
    rules = authorizer(
        default="allow",
        rules=[{"tools": ["gh.delete_*"], "effect": "deny"}, {"tools": ["gh_*"], "effect": "allow"}],
    )
    assert not rules.allows({}, "tool", "gh_delete_repo", "gh.delete_repo")  # denied by its backend name
    assert rules.allows({}, "tool", "gh_list", "gh.list")
    assert not authorizer(rules=[]).allows({}, "tool", "x")  # default: deny
