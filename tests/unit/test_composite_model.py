"""The composite step-graph model: load-time checks (what `vmcp validate` reports) and `resolve`.

Every message must name the composite, the step and the key path, so an operator can go
straight to the line to fix. Resolution runs on catalogues built from hand-made listings.
"""

from __future__ import annotations

from typing import Any

import mcp_types as types
import pytest
import yaml
from pydantic import ValidationError

from vmcp.catalog.aggregate import BackendListing, Catalog, CatalogError, build_catalog
from vmcp.catalog.steps import resolve, resolve_tool
from vmcp.config.composite import CompositeTool, ForEachStep, ToolStep
from vmcp.config.composite_checks import check_composites, find_cycle
from vmcp.config.loading import ConfigError, parse_config
from vmcp.config.models import AggregationConfig
from vmcp.config.types import ConfigIssue


def composite(steps: list[dict[str, Any]], **extra: Any) -> CompositeTool:
    return CompositeTool.model_validate({"name": "investigate", "steps": steps, **extra})


def step(step_id: str, *depends_on: str, **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "tool": "oci.get", "depends_on": list(depends_on), **extra}


def issues_of(*tools: CompositeTool, reserved: tuple[str, ...] = ()) -> list[ConfigIssue]:
    return check_composites(list(tools), reserved)


def only(issues: list[ConfigIssue]) -> ConfigIssue:
    assert len(issues) == 1, issues
    return issues[0]


# --------------------------------------------------------------------------- a valid graph


def test_a_valid_graph_has_no_issues() -> None:
    tool = composite(
        [
            step("info", arguments={"image": "{{ params.image }}"}),
            step("manifest", "info", arguments={"ref": "{{ steps.info.output.digest }}"}),
            step(
                "config",
                "info",
                when="steps.info.output.os == 'linux'",
                on_error="continue",
                retry={"max_attempts": 3, "initial_interval": "1s", "backoff": 2.0},
                timeout="30s",
                default_output={},
            ),
            # a transitive dependency may be read too (manifest -> info)
            step("report", "manifest", "config", arguments={"os": "{{ steps.info.output.os }}", "run": "{{ run.id }}"}),
        ],
        parameters={"type": "object", "properties": {"image": {"type": "string", "default": "alpine"}}},
        output={"image": "{{ params.image }}", "layers": "{{ steps.manifest.output.layers | length }}"},
    )
    assert issues_of(tool) == []
    assert tool.step("config").retry.max_attempts == 3
    assert tool.step("config").timeout == 30.0


def test_a_for_each_may_use_its_item_variable_only_inside_its_own_step() -> None:
    tool = composite(
        [
            step("list"),
            {
                "id": "each",
                "type": "for_each",
                "depends_on": ["list"],
                "collection": "steps.list.output.names",
                "item_var": "name",
                "max_parallel": 2,
                "step": {"tool": "oci.get", "arguments": {"name": "{{ name }}", "tag": "{{ params.tag }}"}},
            },
            step("after", "each", arguments={"name": "{{ name }}"}),
        ],
        parameters={"type": "object", "properties": {"tag": {"type": "string"}}},
    )
    issue = only(issues_of(tool))
    assert issue.path == "composite_tools[0].steps[2].arguments"
    assert "'name'" in issue.message and "'after'" in issue.message


# --------------------------------------------------------------------------- the graph


def test_a_cycle_is_reported_with_its_path() -> None:
    tool = composite([step("a", "c"), step("b", "a"), step("c", "b"), step("d")])
    issue = only(issues_of(tool))
    assert issue.path == "composite_tools[0].steps[0].depends_on"
    assert "composite 'investigate'" in issue.message
    assert "dependency cycle a -> c -> b -> a" in issue.message


def test_find_cycle() -> None:
    assert find_cycle({"a": ["b"], "b": ["c"], "c": []}) is None
    assert find_cycle({"a": ["b"], "b": ["a"]}) == ["a", "b", "a"]
    assert find_cycle({"x": [], "a": ["a"]}) == ["a", "a"]
    diamond = {"root": [], "l": ["root"], "r": ["root"], "join": ["l", "r"]}
    assert find_cycle(diamond) is None


def test_a_step_depending_on_itself() -> None:
    found = issues_of(composite([step("a", "a")]))
    assert any(
        i.path == "composite_tools[0].steps[0].depends_on[0]" and "step 'a'" in i.message and "itself" in i.message
        for i in found
    ), found


def test_an_unknown_dependency_names_composite_step_and_key() -> None:
    issue = only(issues_of(composite([step("a"), step("b", "a", "ghost")])))
    assert issue.path == "composite_tools[0].steps[1].depends_on[1]"
    assert issue.message == "composite 'investigate', step 'b': unknown step 'ghost'"


def test_duplicate_step_ids() -> None:
    issue = only(issues_of(composite([step("a"), step("b"), step("a")])))
    assert issue.path == "composite_tools[0].steps[2].id"
    assert "composite 'investigate'" in issue.message and "duplicate step id 'a'" in issue.message


def test_the_position_in_composite_tools_is_in_the_path() -> None:
    good = composite([step("a")])
    bad = CompositeTool.model_validate({"name": "second", "steps": [step("a", "nope")]})
    issue = only(issues_of(good, bad))
    assert issue.path.startswith("composite_tools[1].steps[0]")
    assert "composite 'second'" in issue.message


# --------------------------------------------------------------------------- templates


def test_a_template_naming_an_unknown_step() -> None:
    issue = only(issues_of(composite([step("a", arguments={"x": {"y": ["{{ steps.nope.output }}"]}})])))
    assert issue.path.startswith("composite_tools[0].steps[0].arguments")
    assert issue.message == "composite 'investigate', step 'a': template names unknown step 'nope'"


def test_a_template_reading_a_step_it_does_not_depend_on() -> None:
    issue = only(issues_of(composite([step("a"), step("b", arguments={"x": "{{ steps.a.output }}"})])))
    assert issue.path.startswith("composite_tools[0].steps[1].arguments")
    assert "step 'b'" in issue.message and "steps.a" in issue.message and "depends_on" in issue.message


def test_a_when_reading_a_step_it_does_not_depend_on() -> None:
    issue = only(issues_of(composite([step("a"), step("b", when="steps.a.status == 'completed'")])))
    assert issue.path == "composite_tools[0].steps[1].when"
    assert "step 'b'" in issue.message and "steps.a" in issue.message


def test_a_for_each_collection_reading_a_step_it_does_not_depend_on() -> None:
    tool = composite(
        [step("a"), {"id": "each", "type": "for_each", "collection": "{{ steps.a.output }}", "step": {"tool": "x.y"}}]
    )
    issue = only(issues_of(tool))
    assert issue.path == "composite_tools[0].steps[1].collection"


def test_a_template_naming_an_unknown_parameter() -> None:
    schema = {"type": "object", "properties": {"image": {"type": "string"}}}
    tool = composite([step("a", arguments={"x": "{{ params.imgae }}"}, when="params.image")], parameters=schema)
    issue = only(issues_of(tool))
    assert issue.path.startswith("composite_tools[0].steps[0].arguments")
    assert issue.message == "composite 'investigate', step 'a': template names unknown parameter 'imgae'"


def test_parameters_are_open_when_the_schema_declares_none() -> None:
    assert issues_of(composite([step("a", arguments={"x": "{{ params.anything }}"})])) == []


def test_an_unknown_template_root() -> None:
    issue = only(issues_of(composite([step("a", arguments={"x": "{{ secrets }}"})])))
    assert "unknown name 'secrets'" in issue.message
    assert "step 'a'" in issue.message


def test_a_template_that_does_not_parse() -> None:
    issue = only(issues_of(composite([step("a", arguments={"x": "{{ params.x "})])))
    assert issue.path.startswith("composite_tools[0].steps[0].arguments")
    assert "does not parse" in issue.message and "step 'a'" in issue.message


def test_a_when_that_does_not_parse() -> None:
    issue = only(issues_of(composite([step("a", when="params.x ==")])))
    assert issue.path == "composite_tools[0].steps[0].when"


def test_output_templates_are_checked() -> None:
    tool = composite([step("a")], output={"x": "{{ steps.a.output }}", "y": "{{ steps.b.output }}"})
    issue = only(issues_of(tool))
    assert issue.path.startswith("composite_tools[0].output")
    assert "composite 'investigate'" in issue.message and "unknown step 'b'" in issue.message


def test_approval_messages_are_checked() -> None:
    tool = composite([step("a"), {"id": "gate", "type": "approval", "message": "Ship {{ steps.zz.output }}?"}])
    issue = only(issues_of(tool))
    assert issue.path == "composite_tools[0].steps[1].message"


def test_jinja_local_variables_are_not_unknown_names() -> None:
    """`{% for %}` targets and `{% set %}` names are the template's own, not context roots."""
    tool = composite(
        [
            step(
                "a",
                arguments={
                    "joined": "{% for t in params.tags %}{{ t }},{% endfor %}",
                    "named": "{% set n = params.tags | length %}{{ n }}",
                },
            )
        ],
        parameters={"type": "object", "properties": {"tags": {"type": "array"}}},
    )
    assert issues_of(tool) == []


def test_one_mistake_is_reported_once() -> None:
    """`{{ foo.bar }}` is one unknown name, not two issues for `foo` and `foo.bar`."""
    only(issues_of(composite([step("a", arguments={"x": "{{ foo.bar }}"})])))


# --------------------------------------------------------------------------- names and schema


def test_an_invalid_parameters_schema() -> None:
    issue = only(issues_of(composite([step("a")], parameters={"type": "objekt"})))
    assert issue.path == "composite_tools[0].parameters"
    assert "composite 'investigate'" in issue.message and "not a valid JSON Schema" in issue.message


def test_parameters_must_describe_an_object() -> None:
    """The schema is advertised as the tool's MCP inputSchema, which must be `type: object`."""
    issue = only(issues_of(composite([step("a")], parameters={"type": "string"})))
    assert issue.path.startswith("composite_tools[0].parameters")


def test_reserved_and_duplicate_composite_names() -> None:
    first = composite([step("a")])
    builtin = CompositeTool.model_validate({"name": "vmcp_run_status", "steps": [step("a")]})
    prefixed = CompositeTool.model_validate({"name": "vmcp_mine", "steps": [step("a")]})
    taken = CompositeTool.model_validate({"name": "taken", "steps": [step("a")]})
    found = issues_of(first, builtin, prefixed, taken, first, reserved=("taken",))
    by_path = {issue.path: issue.message for issue in found}
    assert "'vmcp_run_status' is reserved" in by_path["composite_tools[1].name"]
    assert "'vmcp_mine' is reserved" in by_path["composite_tools[2].name"]
    assert "'taken' is reserved" in by_path["composite_tools[3].name"]
    assert "duplicate composite tool name 'investigate'" in by_path["composite_tools[4].name"]


def test_a_backend_tool_cannot_take_a_composite_name() -> None:
    config = AggregationConfig.model_validate({"conflict_resolution": "manual"})
    listing = BackendListing("oci", tools=(_tool("investigate"),))
    with pytest.raises(CatalogError, match="taken by a composite"):
        build_catalog(config, ["oci"], [listing], reserved={"investigate"})


@pytest.mark.parametrize(
    "bad",
    [
        {"name": "x", "steps": []},  # at least one step
        {"name": "x", "steps": [{"id": "my-step", "tool": "a.b"}]},  # ids are template names: no dashes
        {"name": "x", "steps": [{"id": "a", "tool": "a.b", "retry": {"max_attempts": 0}}]},
        {"name": "x", "steps": [{"id": "a", "tool": "a.b", "on_error": "ignore"}]},
        {"name": "x", "steps": [{"id": "a", "tool": "a.b", "surprise": 1}]},  # strict: unknown keys
        {
            "name": "x",
            "steps": [{"id": "a", "type": "for_each", "collection": "[1]", "step": {"tool": "a.b"}, "max_parallel": 0}],
        },
        {"name": "x", "steps": [{"id": "a", "type": "teleport"}]},
        {"name": "has space", "steps": [{"id": "a", "tool": "a.b"}]},
    ],
)
def test_the_model_is_strict(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        CompositeTool.model_validate(bad)


def test_durations_and_defaults() -> None:
    tool = CompositeTool.model_validate(
        {"name": "x", "timeout": "2m", "wait": "1s", "steps": [{"id": "a", "tool": "a.b", "timeout": "250ms"}]}
    )
    assert (tool.timeout, tool.wait) == (120.0, 1.0)
    only_step = tool.steps[0]
    assert isinstance(only_step, ToolStep)
    assert only_step.timeout == 0.25
    assert only_step.on_error == "fail" and only_step.retry.max_attempts == 1
    assert CompositeTool.model_validate({"name": "y", "steps": [{"id": "a", "tool": "a.b"}]}).wait == 60.0


# --------------------------------------------------------------------------- through the config loader


def _config(composites: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "backends": [{"name": "oci", "transport": "stdio", "command": "oci-mcp"}],
        "composite_tools": composites,
    }


def test_the_loader_runs_the_composite_checks_with_line_numbers() -> None:
    text = yaml.safe_dump(_config([{"name": "c", "steps": [step("a", "b"), step("b", "a")]}]), sort_keys=False)
    with pytest.raises(ConfigError) as failure:
        parse_config(yaml.safe_load(text), text=text)
    issue = only(failure.value.issues)
    assert issue.path == "composite_tools[0].steps[0].depends_on"
    assert "dependency cycle a -> b -> a" in issue.message
    assert issue.line is not None
    assert "depends_on" in text.splitlines()[issue.line - 1]


@pytest.mark.parametrize(
    ("bad_step", "path", "key"),
    [
        (
            {"id": "a", "tool": "oci.get", "retry": {"max_attempts": 0}},
            "composite_tools[0].steps[1].retry.max_attempts",
            "max_attempts",
        ),
        ({"id": "a", "tool": "oci.get", "tol": 1}, "composite_tools[0].steps[1].tol", "tol"),
        ({"id": "a-b", "tool": "oci.get"}, "composite_tools[0].steps[1].id", "id"),
        (
            {"id": "a", "type": "for_each", "collection": "[1]", "step": {"tool": "oci.get"}, "max_parallel": 0},
            "composite_tools[0].steps[1].max_parallel",
            "max_parallel",
        ),
    ],
)
def test_a_model_error_in_a_step_points_at_the_key(bad_step: dict[str, Any], path: str, key: str) -> None:
    """No step-type tag (`tool`, `for_each`) inside the path: `steps[1].tool.retry` reads as if the
    step's `tool:` key were wrong, and sends the line number to the wrong line."""
    data = _config([{"name": "c", "steps": [{"id": "first", "tool": "oci.get"}, bad_step]}])
    text = yaml.safe_dump(data, sort_keys=False)
    with pytest.raises(ConfigError) as failure:
        parse_config(data, text=text)
    issue = only(failure.value.issues)
    assert issue.path == path
    assert issue.line is not None and key in text.splitlines()[issue.line - 1]


# --------------------------------------------------------------------------- resolve


def _tool(name: str) -> types.Tool:
    return types.Tool(name=name, description=name, input_schema={"type": "object", "properties": {}})


def _catalog(settings: dict[str, Any], *listings: BackendListing) -> Catalog:
    config = AggregationConfig.model_validate(settings)
    return build_catalog(config, [listing.backend for listing in listings], listings)


OCI = BackendListing("oci", tools=(_tool("get_image_info"), _tool("get_manifest"), _tool("hidden")))
GIT = BackendListing("git", tools=(_tool("status"),))


def test_resolve_tool_by_backend_and_original_name() -> None:
    catalog = _catalog({}, OCI, GIT)
    assert resolve_tool("oci.get_image_info", catalog, {"oci", "git"}) == ("oci", "get_image_info")
    assert resolve_tool("git.status", catalog, {"oci", "git"}) == ("git", "status")


def test_resolve_tool_by_advertised_name() -> None:
    prefixed = _catalog({}, OCI, GIT)
    assert resolve_tool("oci_get_manifest", prefixed, {"oci", "git"}) == ("oci", "get_manifest")
    overridden = _catalog({"backends": {"oci": {"overrides": {"get_image_info": {"name": "image_info"}}}}}, OCI)
    assert resolve_tool("image_info", overridden, {"oci"}) == ("oci", "get_image_info")


def test_resolve_tool_reaches_a_tool_the_filters_do_not_advertise() -> None:
    catalog = _catalog({"backends": {"oci": {"exclude": ["hidden"]}}}, OCI)
    assert "oci_hidden" not in catalog.tool_routes
    assert resolve_tool("oci.hidden", catalog, {"oci"}) == ("oci", "hidden")


def test_resolve_tool_prefers_backend_dot_tool_over_an_advertised_name_spelled_the_same() -> None:
    catalog = _catalog(
        {"conflict_resolution": "manual", "backends": {"git": {"overrides": {"status": {"name": "oci.hidden"}}}}},
        OCI,
        GIT,
    )
    assert catalog.tool_routes["oci.hidden"].backend == "git"
    assert resolve_tool("oci.hidden", catalog, {"oci", "git"}) == ("oci", "hidden")


def test_resolve_tool_unknown() -> None:
    catalog = _catalog({}, OCI)
    assert resolve_tool("oci.nope", catalog, {"oci"}) is None  # the listed backend has no such tool
    assert resolve_tool("nobody.get", catalog, {"oci"}) is None
    assert resolve_tool("get_image_info", catalog, {"oci"}) is None  # original name without its backend
    # a configured backend that is down (no listing yet): accepted as written, the call will tell
    assert resolve_tool("down.anything", catalog, {"oci", "down"}) == ("down", "anything")


def test_resolve_fills_in_every_call_and_leaves_the_definition_alone() -> None:
    tool = composite(
        [
            {"id": "info", "tool": "oci.get_image_info"},
            {"id": "each", "type": "for_each", "collection": "[1, 2]", "step": {"tool": "oci_get_manifest"}},
            {"id": "gate", "type": "approval", "message": "ok?", "depends_on": ["info"]},
        ]
    )
    resolved, issues = resolve(tool, _catalog({}, OCI), ["oci"])
    assert issues == []
    info, each = resolved.steps[0], resolved.steps[1]
    assert isinstance(info, ToolStep) and (info.backend, info.original) == ("oci", "get_image_info")
    assert isinstance(each, ForEachStep) and (each.step.backend, each.step.original) == ("oci", "get_manifest")
    assert resolved.steps[2] == tool.steps[2]
    original_info = tool.steps[0]
    assert isinstance(original_info, ToolStep) and original_info.backend is None  # a copy was resolved
    # what a run carries in its input survives the JSON round trip
    again = CompositeTool.model_validate(resolved.model_dump(mode="json"))
    assert again == resolved


def test_resolve_reports_unknown_tools_with_their_key_paths() -> None:
    tool = composite(
        [
            {"id": "ok", "tool": "oci.get_image_info"},
            {"id": "typo", "tool": "oci.get_imge_info"},
            {"id": "each", "type": "for_each", "collection": "[1]", "step": {"tool": "nowhere"}},
        ]
    )
    _, issues = resolve(tool, _catalog({}, OCI), ["oci"], index=3)
    assert [issue.path for issue in issues] == [
        "composite_tools[3].steps[1].tool",
        "composite_tools[3].steps[2].step.tool",
    ]
    assert "composite 'investigate', step 'typo': unknown tool 'oci.get_imge_info'" in issues[0].message
    assert "step 'each'" in issues[1].message and "'nowhere'" in issues[1].message


def gate(step_id: str, *depends_on: str, **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "approval", "message": "ok?", "depends_on": list(depends_on), **extra}


def test_an_unset_run_timeout_makes_room_for_every_gate() -> None:
    """A gate may wait a day by default: the run's own deadline must not cut it short."""
    plain = composite([step("a")])
    assert plain.run_timeout == 3600.0
    gated = composite([step("a"), gate("g1", "a"), gate("g2", "g1", timeout="2h")])
    assert gated.run_timeout == 3600.0 + 86400.0 + 7200.0
    assert composite([gate("g", timeout="10m")], timeout="30m").run_timeout == 1800.0


def test_a_gate_that_outlasts_the_run_is_reported() -> None:
    issue = only(issues_of(composite([gate("g", timeout="24h")], timeout="1h")))
    assert issue.path == "composite_tools[0].steps[0].timeout"
    assert "longer than the whole run" in issue.message and "on_timeout would never decide" in issue.message


def test_an_elicitation_form_must_be_flat() -> None:
    nested = {"type": "object", "properties": {"who": {"type": "object"}}}
    issue = only(
        issues_of(composite([{"id": "ask", "type": "elicitation", "message": "?", "requested_schema": nested}]))
    )
    assert issue.path == "composite_tools[0].steps[0].requested_schema.properties.who"
    assert "string, number, integer or boolean" in issue.message


def test_a_webhook_must_be_an_http_url() -> None:
    issue = only(issues_of(composite([gate("g", webhook="ftp://example.test/hook")])))
    assert issue.path == "composite_tools[0].steps[0].webhook"
