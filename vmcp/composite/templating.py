"""Composite-tool templates: Jinja2 in a sandbox, with native types.

Pure and deterministic (no clock, no I/O), so the workflow interpreter renders with it during
replay and the config loader uses the same parser to find which steps and parameters a template
names. A string that is exactly one `{{ expression }}` keeps the expression's native type (a list
stays a list, a number a number); anything else renders to a string.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import ChainableUndefined, StrictUndefined, Template, TemplateError, UndefinedError, nodes
from jinja2.environment import TemplateExpression
from jinja2.sandbox import ImmutableSandboxedEnvironment

_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>.*?)\}\}\s*$", re.DOTALL)


# Arguments fail loudly on a missing name (a step must not call a tool with a silent blank);
# `when` conditions treat a missing attribute as false-y, so a condition can probe optional output.
class _Environment(ImmutableSandboxedEnvironment):
    """`a.b` on a mapping reads the key `b` first: `params.items` is the parameter `items`,
    not the dict's `items` method (Jinja's default looks up attributes first)."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, Mapping):
            try:
                return obj[attribute]
            except (KeyError, TypeError):
                pass
        return super().getattr(obj, attribute)


_STRICT = _Environment(undefined=StrictUndefined, autoescape=False)
_LENIENT = _Environment(undefined=ChainableUndefined, autoescape=False)
for _env in (_STRICT, _LENIENT):
    _env.policies["json.dumps_kwargs"] = {"sort_keys": True, "ensure_ascii": False}


# Compiled once per text and process: compiling is most of a render's cost (about 200 µs of
# 210 for `"{{ params.a }}-x"`), and a composite's templates are the same in every run and step.
# Compiling is pure, so a cached template renders as a fresh one would, in replay too.
_COMPILED = 2048


@functools.lru_cache(maxsize=_COMPILED)
def _strict_template(text: str) -> Template:
    return _STRICT.from_string(text)


@functools.lru_cache(maxsize=_COMPILED)
def _strict_expression(expression: str) -> TemplateExpression:
    return _STRICT.compile_expression(expression, undefined_to_none=False)


@functools.lru_cache(maxsize=_COMPILED)
def _lenient_expression(expression: str) -> TemplateExpression:
    return _LENIENT.compile_expression(expression, undefined_to_none=True)


class TemplateFailure(Exception):
    """A template that does not parse, or fails to render (missing name, bad filter, …)."""


def is_template(value: str) -> bool:
    return "{{" in value or "{%" in value


def render(value: Any, context: Mapping[str, Any]) -> Any:
    """Render every string inside `value` (dicts and lists recursively)."""
    if isinstance(value, str):
        return _render_string(value, context)
    if isinstance(value, Mapping):
        return {key: render(item, context) for key, item in value.items()}
    if isinstance(value, list):
        return [render(item, context) for item in value]
    return value


def _render_string(text: str, context: Mapping[str, Any]) -> Any:
    if not is_template(text):
        return text
    single = _SINGLE_EXPRESSION.match(text)
    try:
        if single is not None and "{{" not in single.group("expr") and "{%" not in text:
            result = _strict_expression(single.group("expr"))(**context)
            if isinstance(result, StrictUndefined):
                str(result)  # raises the UndefinedError that names what is missing
            return _plain(result)
        return _strict_template(text).render(**context)
    except TemplateError as exc:
        raise TemplateFailure(f"{text!r}: {exc}") from None
    except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
        raise TemplateFailure(f"{text!r}: {type(exc).__name__}: {exc}") from None


def evaluate(expression: str, context: Mapping[str, Any]) -> bool:
    """A `when` condition: a Jinja expression without braces; a missing attribute counts as false."""
    try:
        result = _lenient_expression(expression)(**context)
    except UndefinedError:
        return False  # a comparison or filter on a missing value: the condition does not hold
    except TemplateError as exc:
        raise TemplateFailure(f"when {expression!r}: {exc}") from None
    except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
        raise TemplateFailure(f"when {expression!r}: {type(exc).__name__}: {exc}") from None
    return bool(result) and not isinstance(result, ChainableUndefined)


def _plain(value: Any) -> Any:
    """Jinja can hand back its own lazy types (e.g. generators from `map`): make them data."""
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if hasattr(value, "__iter__"):
        return [_plain(item) for item in value]
    return value


# --------------------------------------------------------------------------- static analysis


@dataclass(frozen=True)
class Reference:
    """A `root.name` a template reads: `steps.info`, `params.image`, `run.id`."""

    root: str
    name: str | None


def references(value: Any) -> set[Reference]:
    """Every `root.name` that templates inside `value` read (for load-time checks)."""
    found: set[Reference] = set()
    for text in _strings(value):
        if is_template(text):
            found |= _references_in(_parse_template(text))
    return found


def expression_references(expression: str) -> set[Reference]:
    try:
        parsed = _STRICT.parse(f"{{{{ {expression} }}}}")
    except TemplateError as exc:
        raise TemplateFailure(f"{expression!r}: {exc}") from None
    return _references_in(parsed)


def check_syntax(value: Any) -> None:
    for text in _strings(value):
        if is_template(text):
            _parse_template(text)


def _parse_template(text: str) -> nodes.Template:
    try:
        return _STRICT.parse(text)
    except TemplateError as exc:
        raise TemplateFailure(f"{text!r}: {exc}") from None


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _references_in(tree: nodes.Node) -> set[Reference]:
    found: set[Reference] = set()
    # names the template binds itself ({% for x in … %}, {% set x = … %}, macro arguments)
    local = {node.name for node in tree.find_all(nodes.Name) if node.ctx in ("store", "param")}
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Name)):
        if isinstance(node, nodes.Getattr) and isinstance(node.node, nodes.Name):
            found.add(Reference(node.node.name, node.attr))
        elif (
            isinstance(node, nodes.Getitem)
            and isinstance(node.node, nodes.Name)
            and isinstance(node.arg, nodes.Const)
            and isinstance(node.arg.value, str)
        ):
            found.add(Reference(node.node.name, node.arg.value))
        elif isinstance(node, nodes.Name) and node.ctx == "load":
            found.add(Reference(node.name, None))
    return {ref for ref in found if ref.root not in local}
