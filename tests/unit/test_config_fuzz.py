"""Configurations mutated at random are either valid or refused with a ConfigError that names key
paths — never another exception (which `vmcp validate` would show as a traceback). Hypothesis
mutates a valid configuration: keys dropped, values replaced by any JSON, unknown keys added."""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmcp.config.files import file_issues
from vmcp.config.loading import ConfigError, parse_config

ROOT = Path(__file__).resolve().parents[2]
VALID: dict[str, Any] = yaml.safe_load((ROOT / "temporal-dev.yaml").read_text())
VALID["backends"].append(
    {
        "name": "extra",
        "transport": "streamable-http",
        "url": "http://127.0.0.1:1/mcp",
        "auth": {"type": "bearer", "token_file": "token"},
        "pass_headers": ["X-Request-Id"],
    }
)
VALID["authorization"] = {"default": "deny", "rules": [{"tools": ["*"], "prompts": ["*"], "when": {"groups": ["a"]}}]}

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20))
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


PATHS = _paths(VALID)


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    config = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        path = draw(st.sampled_from(PATHS))
        parent: Any = config
        try:
            for part in path[:-1]:
                parent = parent[part]
            action = draw(st.sampled_from(["replace", "drop", "add"]))
            if action == "replace":
                parent[path[-1]] = draw(json_values)
            elif action == "drop" and isinstance(parent, dict):
                parent.pop(path[-1], None)
            elif isinstance(parent, dict):
                parent[draw(st.text(max_size=10))] = draw(json_values)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or replaced the way there
    return config


@settings(max_examples=400, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=mutated())
def test_a_mutated_config_is_valid_or_refused_with_key_paths(config: dict[str, Any]) -> None:
    try:
        loaded = parse_config(config, base_dir=ROOT)
    except ConfigError as exc:
        assert exc.issues and all(isinstance(issue.message, str) and issue.message for issue in exc.issues)
        return
    for issue in file_issues(loaded):  # the files it names: judged without an exception either
        assert issue.path and issue.message


def test_the_mutation_base_is_valid() -> None:
    assert parse_config(VALID, base_dir=ROOT).backends[-1].name == "extra"
    assert sys.executable  # the interpreter the stdio backends name exists
