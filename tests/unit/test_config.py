"""Config errors name the key path (and line) of what is wrong."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from vmcp.config.durations import parse_duration
from vmcp.config.loading import ConfigError, load_config, parse_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "vmcp.yaml"
    path.write_text(text)
    return path


def error_of(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, text))
    return exc.value


def test_minimal_and_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "backends: []\n"))
    assert config.server.port == 8080
    assert config.temporal.task_queue == "vmcp"
    assert config.aggregation.conflict_resolution == "prefix"
    assert config.base_dir == tmp_path.resolve()
    assert config.resolve_path(".vmcp/t.db") == tmp_path.resolve() / ".vmcp/t.db"


def test_unknown_key_is_named_with_path_line_and_suggestion(tmp_path: Path) -> None:
    error = error_of(
        tmp_path,
        "backends:\n  - name: time\n    transport: stdio\n    command: mcp-server-time\n    tiemout: 3s\n",
    )
    (issue,) = error.issues
    assert issue.path == "backends[0].tiemout"
    assert issue.line == 5
    assert "unknown key" in issue.message and "timeout" in issue.message


def test_bad_transport(tmp_path: Path) -> None:
    error = error_of(tmp_path, "backends:\n  - {name: a, transport: websocket, url: 'http://x'}\n")
    assert error.issues[0].path == "backends[0].transport"
    assert "websocket" in error.issues[0].message


def test_transport_specific_fields(tmp_path: Path) -> None:
    error = error_of(tmp_path, "backends:\n  - {name: a, transport: stdio}\n  - {name: b, transport: sse}\n")
    assert [i.path for i in error.issues] == ["backends[0]", "backends[1]"]
    assert "command" in error.issues[0].message
    assert "url" in error.issues[1].message


def test_duplicate_backend_names(tmp_path: Path) -> None:
    error = error_of(
        tmp_path,
        "backends:\n  - {name: a, transport: stdio, command: x}\n  - {name: a, transport: stdio, command: y}\n",
    )
    assert error.issues[0].path == "backends[1].name"
    assert "duplicate" in error.issues[0].message
    assert error.issues[0].line == 3


def test_invalid_backend_name(tmp_path: Path) -> None:
    error = error_of(tmp_path, "backends:\n  - {name: My Server, transport: stdio, command: x}\n")
    assert error.issues[0].path == "backends[0].name"


def test_unknown_backend_references(tmp_path: Path) -> None:
    error = error_of(
        tmp_path,
        "backends:\n  - {name: time, transport: stdio, command: x}\n"
        "aggregation:\n  priority: [tme]\n  backends:\n    docs: {}\n",
    )
    paths = {i.path: i.message for i in error.issues}
    assert "did you mean 'time'" in paths["aggregation.priority[0]"]
    assert "unknown backend 'docs'" in paths["aggregation.backends.docs"]


def test_duplicate_override_names(tmp_path: Path) -> None:
    error = error_of(
        tmp_path,
        "backends:\n  - {name: a, transport: stdio, command: x}\n  - {name: b, transport: stdio, command: y}\n"
        "aggregation:\n  backends:\n"
        "    a: {overrides: {run: {name: go}}}\n"
        "    b: {overrides: {run: {name: go}}}\n",
    )
    assert error.issues[0].path == "aggregation.backends.b.overrides.run.name"


def test_prefix_format_needs_backend_field() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config({"aggregation": {"prefix_format": "{server}_"}})
    assert exc.value.issues[0].path == "aggregation"
    with pytest.raises(ConfigError):
        parse_config({"aggregation": {"prefix_format": "x_"}})


def test_bad_duration_and_yaml(tmp_path: Path) -> None:
    error = error_of(tmp_path, "backends:\n  - {name: a, transport: sse, url: 'http://x', timeout: soon}\n")
    assert error.issues[0].path == "backends[0].timeout"
    error = error_of(tmp_path, "backends: [\n")
    assert "not valid YAML" in error.issues[0].message and error.issues[0].line


def test_missing_file_and_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("2m", 120), ("1h30m", 5400), ("250ms", 0.25), ("24h", 86400), (5, 5), ("1.5", 1.5)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "3x", "m", "1h 2", True, None])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_shipped_dev_config_is_valid() -> None:
    config = load_config(Path(__file__).resolve().parents[2] / "temporal-dev.yaml")
    assert {"time", "fetch", "git", "oci"} <= {b.name for b in config.backends}
    assert {"aggregate_docs", "analyze_repository", "investigate_image"} <= {t.name for t in config.composite_tools}
    # `now` says "(default UTC)": the backend requires a timezone, so the default must be vmcp's
    now = config.aggregation.backends["time"].overrides["get_current_time"]
    assert now.name == "now" and "default UTC" in (now.description or "")
    assert now.parameters["timezone"].default == "UTC"


def test_github_example_config_is_valid_offline() -> None:
    config = load_config(Path(__file__).resolve().parents[2] / "deploy" / "github.example.yaml")
    (github,) = config.backends
    assert github.auth is not None and github.auth.type == "bearer"
    assert github.auth.token == "${GITHUB_TOKEN}"  # a reference, resolved when each request is made
    assert [t.name for t in config.composite_tools] == ["analyze_repository"]


def test_suggestion_inside_a_section_keyed_by_backend_name(tmp_path: Path) -> None:
    error = error_of(
        tmp_path,
        "backends:\n  - {name: time, transport: stdio, command: x}\n"
        "aggregation:\n  backends:\n    time: {overides: {}}\n",
    )
    assert error.issues[0].path == "aggregation.backends.time.overides"
    assert "did you mean `overrides`" in error.issues[0].message


def test_every_file_and_program_a_config_names_is_checked(tmp_path: Path) -> None:
    """`vmcp validate` (and every command that starts something) names each missing file,
    directory or program by its key path, instead of failing later with a traceback."""
    from vmcp.config.files import file_issues, load_runnable

    (tmp_path / "token").write_text("t")
    (tmp_path / "site").mkdir()
    good = write(
        tmp_path,
        "temporal: {dev_server: {demo_site: site}}\n"
        "backends:\n"
        f"  - {{name: a, transport: stdio, command: {sys.executable}}}\n"
        "  - {name: b, transport: streamable-http, url: 'http://127.0.0.1:1/mcp', "
        "auth: {type: bearer, token_file: token}}\n",
    )
    assert file_issues(load_runnable(good)) == []
    bad = write(
        tmp_path,
        "temporal: {dev_server: {demo_site: nowhere}, tls: {server_ca_file: ca.pem}}\n"
        "backends:\n"
        "  - {name: a, transport: stdio, command: no-such-program-4d2, cwd: gone}\n"
        "  - {name: b, transport: streamable-http, url: 'http://127.0.0.1:1/mcp', "
        "auth: {type: bearer, token_file: missing}}\n",
    )
    with pytest.raises(ConfigError) as refused:
        load_runnable(bad)
    assert [issue.path for issue in refused.value.issues] == [
        "temporal.dev_server.demo_site",
        "temporal.tls.server_ca_file",
        "backends[0].cwd",
        "backends[0].command",
        "backends[1].auth.token_file",
    ]
    load_config(bad)  # the models alone accept it: the files are another check
