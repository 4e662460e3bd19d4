"""Loading the configuration file: YAML, model validation, cross-reference checks, key paths.

Pure (no I/O beyond reading the one file in `load_config`): workflows and the CLI's `validate`
run exactly this code, so an operator sees at `vmcp validate` time every error the server would
hit at start-up, each named by its key path and line.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from vmcp.config.composite_checks import check_composites
from vmcp.config.models import RESERVED_TOOL_PREFIX, VmcpConfig
from vmcp.config.types import ConfigIssue

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
    for name in config.limits.per_backend if config.limits is not None else ():
        if name not in seen:
            issues.append(ConfigIssue(f"limits.per_backend.{name}", _unknown_backend(name, known)))
    for index, name in enumerate(aggregation.priority):
        if name not in seen:
            issues.append(ConfigIssue(f"aggregation.priority[{index}]", _unknown_backend(name, known)))
        elif aggregation.priority.index(name) != index:
            issues.append(ConfigIssue(f"aggregation.priority[{index}]", f"{name!r} is listed twice"))
    for kind in ("overrides", "prompts.overrides"):  # tools and prompts: two namespaces, each unique
        claimed: dict[str, str] = {}
        for backend_name, settings in aggregation.backends.items():
            overrides = settings.overrides if kind == "overrides" else settings.prompts.overrides
            for original, override in overrides.items():
                path = f"aggregation.backends.{backend_name}.{kind}.{original}.name"
                if override.name is None:
                    continue
                if override.name.startswith(RESERVED_TOOL_PREFIX):
                    issues.append(ConfigIssue(path, f"names starting with {RESERVED_TOOL_PREFIX!r} are reserved"))
                if override.name in claimed:
                    issues.append(
                        ConfigIssue(path, f"{override.name!r} is already the override name of {claimed[override.name]}")
                    )
                claimed[override.name] = f"{backend_name}.{original}"
    issues += check_composites(config.composite_tools)
    issues += _steps_without_identity(config)
    return issues


def _steps_without_identity(config: VmcpConfig) -> list[ConfigIssue]:
    """Composite steps naming a `token_exchange` backend that refuses them: they would run as vmcp's
    service identity (advertised names are caught when the step runs, by the worker)."""
    refusing = {
        index: backend
        for index, backend in enumerate(config.backends)
        if backend.auth is not None
        and backend.auth.type == "token_exchange"
        and backend.auth.composite_steps != "service"
    }
    by_name = {backend.name: index for index, backend in refusing.items()}
    issues = []
    for index, tool in enumerate(config.composite_tools):
        for position, step in enumerate(tool.steps):
            call = getattr(step, "step", step)
            name = getattr(call, "tool", None)
            backend = name.partition(".")[0] if isinstance(name, str) and "." in name else None
            if backend in by_name:
                key = "step.tool" if call is not step else "tool"
                issues.append(
                    ConfigIssue(
                        f"composite_tools[{index}].steps[{position}].{key}",
                        f"backend {backend!r} exchanges each caller's token and a composite step has none: it "
                        f"would run as vmcp's service identity; allow that with backends[{by_name[backend]}]."
                        "auth.composite_steps: service",
                    )
                )
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
