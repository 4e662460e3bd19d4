"""Load-time checks of composite tools: everything checkable without the backends' listings.

Ids, the dependency graph (cycles, unknown steps), templates (syntax, unknown names, steps read
without depending on them), schemas (parameters, elicitation forms), webhooks and gate timeouts.
Every problem names the composite, the step and the key path, so `vmcp validate` points at exactly
what to fix. Pure, like the model it checks (`vmcp.composite`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from jsonschema import SchemaError
from jsonschema.validators import validator_for

from vmcp.composite.templating import Reference, TemplateFailure, check_syntax, expression_references, references
from vmcp.config.composite import (
    TEMPLATE_ROOTS,
    ApprovalStep,
    CompositeTool,
    ElicitationStep,
    ForEachStep,
    ToolStep,
    gate_timeout,
)
from vmcp.config.types import ConfigIssue

_ELICITATION_FIELD_TYPES = frozenset({"string", "number", "integer", "boolean"})


def check_composites(tools: Sequence[CompositeTool], reserved: Iterable[str] = ()) -> list[ConfigIssue]:
    """Everything checkable without the backends' listings: ids, graph, templates, schemas,
    tool references of the `backend.tool` form. (Advertised names are checked against the
    catalogue when it exists: `unresolved_tools`.)"""
    issues: list[ConfigIssue] = []
    seen: dict[str, int] = {}
    for index, tool in enumerate(tools):
        where = f"composite_tools[{index}]"
        if tool.name in seen:
            issues.append(ConfigIssue(f"{where}.name", f"duplicate composite tool name {tool.name!r}"))
        seen[tool.name] = index
        if tool.name in reserved or tool.name.startswith("vmcp_"):
            issues.append(ConfigIssue(f"{where}.name", f"the name {tool.name!r} is reserved"))
        issues += _check_one(tool, where)
    return issues


def _check_one(tool: CompositeTool, where: str) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    label = f"composite {tool.name!r}"
    try:
        validator_for(tool.parameters).check_schema(tool.parameters)
    except SchemaError as exc:
        issues.append(ConfigIssue(f"{where}.parameters", f"{label}: not a valid JSON Schema: {exc.message}"))
    else:
        if tool.parameters.get("type", "object") != "object":
            issues.append(
                ConfigIssue(
                    f"{where}.parameters.type",
                    f"{label}: parameters must be a JSON Schema of type object (it is the tool's MCP inputSchema)",
                )
            )
    properties = tool.parameters.get("properties")
    params = set(properties) if isinstance(properties, dict) else set()  # a broken schema is reported above
    open_params = tool.parameters.get("additionalProperties", True) is not False and not params

    ids: dict[str, int] = {}
    for position, step in enumerate(tool.steps):
        if step.id in ids:
            issues.append(ConfigIssue(f"{where}.steps[{position}].id", f"{label}: duplicate step id {step.id!r}"))
        ids[step.id] = position
    for position, step in enumerate(tool.steps):
        path = f"{where}.steps[{position}]"
        for k, dep in enumerate(step.depends_on):
            if dep not in ids:
                issues.append(
                    ConfigIssue(f"{path}.depends_on[{k}]", f"{label}, step {step.id!r}: unknown step {dep!r}")
                )
            elif dep == step.id:
                issues.append(ConfigIssue(f"{path}.depends_on[{k}]", f"{label}, step {step.id!r}: depends on itself"))
    cycle = find_cycle({s.id: [d for d in s.depends_on if d in ids] for s in tool.steps})
    if cycle:
        first = ids[cycle[0]]
        issues.append(
            ConfigIssue(f"{where}.steps[{first}].depends_on", f"{label}: dependency cycle {' -> '.join(cycle)}")
        )
        return issues  # ancestry below would not terminate meaningfully

    ancestors = _ancestors(tool)
    for position, step in enumerate(tool.steps):
        path = f"{where}.steps[{position}]"
        context = f"{label}, step {step.id!r}"
        for key, value, is_expression in _template_fields(step):
            try:
                refs = expression_references(value) if is_expression else references(value)
                if not is_expression:
                    check_syntax(value)
            except TemplateFailure as exc:
                issues.append(ConfigIssue(f"{path}.{key}", f"{context}: template does not parse: {exc}"))
                continue
            local = {step.item_var} if isinstance(step, ForEachStep) and key.startswith("step.") else set()
            issues += _check_refs(refs, f"{path}.{key}", context, ids, ancestors[step.id], params, open_params, local)
    for position, step in enumerate(tool.steps):
        if tool.timeout is not None and gate_timeout(step) >= tool.timeout:
            issues.append(
                ConfigIssue(
                    f"{where}.steps[{position}].timeout",
                    f"{label}, step {step.id!r}: the gate may wait {gate_timeout(step):g}s, longer than the whole "
                    f"run may take ({where}.timeout: {tool.timeout:g}s); its on_timeout would never decide",
                )
            )
        if isinstance(step, ElicitationStep):
            issues += _check_requested_schema(step, f"{where}.steps[{position}].requested_schema", label)
        elif isinstance(step, ApprovalStep) and not (step.webhook or "http://").startswith(("http://", "https://")):
            issues.append(
                ConfigIssue(
                    f"{where}.steps[{position}].webhook",
                    f"{label}, step {step.id!r}: webhook must be an http:// or https:// URL",
                )
            )
    if tool.output is not None:
        try:
            check_syntax(tool.output)
            refs = references(tool.output)
        except TemplateFailure as exc:
            issues.append(ConfigIssue(f"{where}.output", f"{label}: template does not parse: {exc}"))
        else:
            issues += _check_refs(refs, f"{where}.output", label, ids, set(ids), params, open_params, set())
    return issues


def _check_requested_schema(step: ElicitationStep, path: str, label: str) -> list[ConfigIssue]:
    """MCP elicitation asks for a flat object of primitive fields; clients render it as a form."""
    schema = step.requested_schema
    context = f"{label}, step {step.id!r}"
    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        return [ConfigIssue(path, f"{context}: not a valid JSON Schema: {exc.message}")]
    if schema.get("type") != "object":
        return [ConfigIssue(f"{path}.type", f"{context}: requested_schema must be of type object")]
    issues: list[ConfigIssue] = []
    for name, field_schema in (schema.get("properties") or {}).items():
        kind = field_schema.get("type") if isinstance(field_schema, Mapping) else None
        if kind not in _ELICITATION_FIELD_TYPES:
            issues.append(
                ConfigIssue(
                    f"{path}.properties.{name}",
                    f"{context}: field {name!r} must be of type string, number, integer or boolean "
                    "(MCP elicitation asks for flat forms)",
                )
            )
    return issues


def _template_fields(step: Any) -> Iterable[tuple[str, Any, bool]]:
    if step.when:
        yield "when", step.when, True
    if isinstance(step, ToolStep):
        yield "arguments", step.arguments, False
    elif isinstance(step, ForEachStep):
        yield "collection", step.collection.strip().removeprefix("{{").removesuffix("}}"), True
        yield "step.arguments", step.step.arguments, False
    elif isinstance(step, ApprovalStep | ElicitationStep):
        yield "message", step.message, False


def _check_refs(
    refs: set[Reference],
    path: str,
    context: str,
    ids: Mapping[str, int],
    allowed_steps: set[str],
    params: set[str],
    open_params: bool,
    local: set[str],
) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    unknown_roots: set[str] = set()
    for ref in sorted(refs, key=lambda r: (r.root, r.name or "")):
        if ref.root in local or ref.root in _JINJA_NAMES:
            continue
        if ref.root not in TEMPLATE_ROOTS:
            if ref.root in unknown_roots:
                continue  # `foo` and `foo.bar` are one mistake
            unknown_roots.add(ref.root)
            issues.append(ConfigIssue(path, f"{context}: unknown name {ref.root!r} (use params, steps, run, caller)"))
        elif ref.root == "steps" and ref.name is not None:
            if ref.name not in ids:
                issues.append(ConfigIssue(path, f"{context}: template names unknown step {ref.name!r}"))
            elif ref.name not in allowed_steps:
                issues.append(
                    ConfigIssue(
                        path,
                        f"{context}: template reads steps.{ref.name} but does not depend on it (add it to depends_on)",
                    )
                )
        elif ref.root == "params" and ref.name is not None and not open_params and ref.name not in params:
            issues.append(ConfigIssue(path, f"{context}: template names unknown parameter {ref.name!r}"))
    return issues


# names Jinja itself provides inside expressions (loop variables are reported as Name nodes too)
_JINJA_NAMES = frozenset({"loop", "range", "dict", "lipsum", "cycler", "joiner", "namespace", "true", "false", "none"})


def find_cycle(graph: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A dependency cycle as `a -> b -> a`, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if state.get(nxt) is None and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in graph:
        if state.get(node) is None and (found := visit(node)):
            return found
    return None


def _ancestors(tool: CompositeTool) -> dict[str, set[str]]:
    deps = {step.id: set(step.depends_on) for step in tool.steps}
    result: dict[str, set[str]] = {}

    def of(step_id: str) -> set[str]:
        if step_id not in result:
            result[step_id] = set()
            for dep in deps.get(step_id, ()):
                result[step_id] |= {dep, *of(dep)}
        return result[step_id]

    for step_id in deps:
        of(step_id)
    return result


# --------------------------------------------------------------------------- resolution
