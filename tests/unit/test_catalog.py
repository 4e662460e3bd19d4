"""The catalogue: every conflict strategy, filters, overrides and routing, on plain data."""

from __future__ import annotations

import mcp_types as types
import pytest

from vmcp.catalog.aggregate import BackendListing, Catalog, CatalogError, build_catalog, template_pattern
from vmcp.config.models import AggregationConfig


def tool(name: str, description: str = "", **annotations: object) -> types.Tool:
    return types.Tool(
        name=name,
        description=description or f"{name} tool",
        input_schema={"type": "object", "properties": {}},
        annotations=types.ToolAnnotations.model_validate(annotations) if annotations else None,
    )


def listing(backend: str, *names: str, prompts: tuple[str, ...] = ()) -> BackendListing:
    return BackendListing(
        backend,
        tools=tuple(tool(n) for n in names),
        prompts=tuple(types.Prompt(name=p, description=p) for p in prompts),
    )


def catalog(settings: dict[str, object], *listings: BackendListing, reserved: tuple[str, ...] = ()) -> Catalog:
    config = AggregationConfig.model_validate(settings)
    return build_catalog(config, [item.backend for item in listings], listings, reserved)


def names(cat: Catalog) -> list[str]:
    return [t.name for t in cat.tools]


# ------------------------------------------------------------------ prefix


def test_prefix_renames_every_tool_and_prompt_and_routes_back() -> None:
    cat = catalog({}, listing("time", "now", prompts=("greet",)), listing("git", "status", "now"))
    assert names(cat) == ["time_now", "git_status", "git_now"]
    assert cat.tool_routes["git_now"].backend == "git"
    assert cat.tool_routes["git_now"].original == "now"
    assert [p.name for p in cat.prompts] == ["time_greet"]
    assert cat.prompt_routes["time_greet"].original == "greet"


def test_prefix_names_do_not_change_when_a_backend_is_added() -> None:
    before = catalog({}, listing("a", "x", "y"))
    after = catalog({}, listing("a", "x", "y"), listing("b", "x"))
    assert set(names(before)) <= set(names(after))
    assert {n: before.tool_routes[n] for n in names(before)} == {n: after.tool_routes[n] for n in names(before)}


def test_custom_prefix_format() -> None:
    cat = catalog({"prefix_format": "{backend}."}, listing("docs", "search"))
    assert names(cat) == ["docs.search"]


def test_prefix_collision_from_the_format_itself_is_an_error() -> None:
    with pytest.raises(CatalogError) as exc:
        catalog({}, listing("a_b", "c"), listing("a", "b_c"))
    assert "'a_b_c'" in str(exc.value)


# ------------------------------------------------------------------ priority


def test_priority_keeps_names_and_first_listed_wins() -> None:
    cat = catalog(
        {"conflict_resolution": "priority", "priority": ["docs", "time"]},
        listing("time", "search", "now"),
        listing("docs", "search"),
    )
    assert cat.tool_routes["search"].backend == "docs"
    assert cat.tool_routes["now"].backend == "time"
    # the loser stays reachable under its prefixed name
    assert cat.tool_routes["time_search"].backend == "time"


def test_priority_clash_among_unlisted_backends_falls_back_to_prefix() -> None:
    cat = catalog(
        {"conflict_resolution": "priority", "priority": ["docs"]},
        listing("a", "run"),
        listing("b", "run"),
        listing("docs", "other"),
    )
    assert "run" not in cat.tool_routes
    assert cat.tool_routes["a_run"].backend == "a"
    assert cat.tool_routes["b_run"].backend == "b"
    assert cat.tool_routes["other"].backend == "docs"


# ------------------------------------------------------------------ manual


def test_manual_refuses_unresolved_clash_and_names_the_override_key() -> None:
    with pytest.raises(CatalogError) as exc:
        catalog({"conflict_resolution": "manual"}, listing("a", "run"), listing("b", "run"))
    message = str(exc.value)
    assert "a.run" in message and "b.run" in message
    assert "aggregation.backends.b.overrides.run.name" in message


def test_manual_clash_resolved_by_override() -> None:
    cat = catalog(
        {"conflict_resolution": "manual", "backends": {"b": {"overrides": {"run": {"name": "run_b"}}}}},
        listing("a", "run"),
        listing("b", "run"),
    )
    assert cat.tool_routes["run"].backend == "a"
    assert cat.tool_routes["run_b"] == cat.tool_routes["run_b"].__class__("b", "run")


# ------------------------------------------------------------------ filters and overrides


def test_include_and_exclude_globs_hide_but_keep_tools_for_composites() -> None:
    cat = catalog(
        {"backends": {"time": {"include": ["get_*"], "exclude": ["get_secret"]}}},
        listing("time", "get_current_time", "get_secret", "convert_time"),
    )
    assert names(cat) == ["time_get_current_time"]
    assert ("time", "convert_time") in cat.all_tools
    assert ("time", "get_secret") in cat.all_tools


def test_override_name_is_used_exactly_without_prefix_and_description_annotations_merge() -> None:
    listing_with_annotations = BackendListing(
        "time", tools=(tool("get_current_time", read_only_hint=True, open_world_hint=False),)
    )
    cat = catalog(
        {
            "backends": {
                "time": {
                    "overrides": {
                        "get_current_time": {
                            "name": "now",
                            "description": "Current time in a zone",
                            "annotations": {"title": "Now", "openWorldHint": True},
                        }
                    }
                }
            }
        },
        listing_with_annotations,
    )
    advertised = cat.tool("now")
    assert advertised is not None
    assert advertised.description == "Current time in a zone"
    assert advertised.annotations is not None
    assert advertised.annotations.title == "Now"
    assert advertised.annotations.read_only_hint is True
    assert advertised.annotations.open_world_hint is True
    assert cat.tool_routes["now"].original == "get_current_time"


def test_override_of_missing_tool_is_a_warning_not_an_error() -> None:
    cat = catalog({"backends": {"time": {"overrides": {"ghost": {"name": "boo"}}}}}, listing("time", "now"))
    assert any("ghost" in w for w in cat.warnings)
    assert names(cat) == ["time_now"]


def test_reserved_and_composite_names_cannot_be_taken() -> None:
    with pytest.raises(CatalogError) as exc:
        catalog({"conflict_resolution": "priority"}, listing("a", "deploy"), reserved=("deploy",))
    assert "composite or built-in" in str(exc.value)
    with pytest.raises(CatalogError):
        catalog({"conflict_resolution": "priority"}, listing("a", "vmcp_run_status"))


def test_order_is_deterministic_for_the_same_inputs() -> None:
    inputs = [listing("b", "z", "a"), listing("a", "m")]
    first = build_catalog(AggregationConfig(), ["b", "a"], inputs)
    second = build_catalog(AggregationConfig(), ["b", "a"], list(reversed(inputs)))
    assert names(first) == names(second) == ["b_z", "b_a", "a_m"]


# ------------------------------------------------------------------ resources


def test_resources_route_by_uri_and_template() -> None:
    a = BackendListing(
        "a",
        resources=(types.Resource(uri="file:///x", name="x"),),
        resource_templates=(types.ResourceTemplate(uri_template="a://item/{id}", name="item"),),
    )
    b = BackendListing("b", resources=(types.Resource(uri="file:///x", name="x-too"),))
    cat = catalog({"priority": ["b"]}, a, b)
    assert cat.resource_backend("file:///x") == "b"  # priority decides a duplicate URI
    assert cat.resource_backend("a://item/42") == "a"
    assert cat.resource_backend("a://item/42/extra") is None
    assert cat.template_backend("a://item/{id}") == "a"
    assert [r.uri for r in cat.resources] == ["file:///x"]
    assert any("file:///x" in w for w in cat.warnings)


@pytest.mark.parametrize(
    ("template", "uri", "matches"),
    [
        ("test://template/{id}/data", "test://template/7/data", True),
        ("test://template/{id}/data", "test://template/7/other", False),
        ("file:///{+path}", "file:///a/b/c.txt", True),
        ("search://q{?term,limit}", "search://q?term=x&limit=2", True),
    ],
)
def test_template_pattern(template: str, uri: str, matches: bool) -> None:
    assert bool(template_pattern(template).fullmatch(uri)) is matches


def test_tools_that_require_tasks_are_advertised_only_where_vmcp_relays_their_tasks() -> None:
    needs_tasks = types.Tool(
        name="research",
        description="long",
        input_schema={"type": "object"},
        execution=types.ToolExecution(task_support="required"),
    )
    optional = types.Tool(
        name="quick",
        description="q",
        input_schema={"type": "object"},
        execution=types.ToolExecution(task_support="optional"),
    )
    cat = catalog({}, BackendListing("everything", tools=(needs_tasks, optional)))
    assert names(cat) == ["everything_quick"]
    assert any("research" in w and "task" in w for w in cat.warnings)
    assert ("everything", "research") in cat.all_tools
    # a backend serving the 2026-07-28 tasks extension: vmcp relays its tasks, so the tool is callable
    relayed = catalog({}, BackendListing("everything", tools=(needs_tasks, optional), tasks=True))
    assert sorted(names(relayed)) == ["everything_quick", "everything_research"]
    assert not relayed.warnings
