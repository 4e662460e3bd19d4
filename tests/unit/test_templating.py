"""Composite-tool templates: native types, strict names, lenient `when`, the sandbox, static references."""

from __future__ import annotations

from typing import Any

import pytest

from vmcp.composite.templating import (
    Reference,
    TemplateFailure,
    check_syntax,
    evaluate,
    expression_references,
    is_template,
    references,
    render,
)

CONTEXT: dict[str, Any] = {
    "params": {"image": "alpine", "n": 3, "ratio": 0.5, "flag": True, "tags": ["a", "b"], "items": [1, 2]},
    "steps": {
        "info": {
            "output": {"os": "linux", "layers": [{"size": 1}, {"size": 2}], "meta": {"k": "v"}},
            "text": "{}",
            "status": "completed",
            "error": None,
            "duration_ms": 12,
            "attempts": 1,
        },
        "skipped": {"output": {"fallback": True}, "text": "", "status": "skipped", "error": None, "attempts": 0},
    },
    "run": {"id": "vmcp-x-1", "tool": "x"},
    "caller": {"subject": "alice"},
}


# --------------------------------------------------------------------------- native types


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ params.n }}", 3),
        ("{{ params.ratio }}", 0.5),
        ("{{ params.flag }}", True),
        ("{{ params.tags }}", ["a", "b"]),
        ("{{ steps.info.output.meta }}", {"k": "v"}),
        ("{{ steps.info.output.layers | length }}", 2),
        ("{{ steps.info.output.layers | map(attribute='size') | list }}", [1, 2]),
        ("{{ steps.info.output.layers | map(attribute='size') }}", [1, 2]),  # a lazy generator becomes a list
        ("{{ steps.info.error }}", None),
        ("{{ none }}", None),
        ("{{ params.n * 2 + 1 }}", 7),
        ("{{ {'a': params.n, 'b': [params.flag]} }}", {"a": 3, "b": [True]}),
        ("  {{ params.tags }}\n", ["a", "b"]),  # surrounding whitespace does not make it text
        ("{{ run.id }}", "vmcp-x-1"),
        ("{{ caller.subject }}", "alice"),
    ],
)
def test_a_single_expression_keeps_its_native_type(template: str, expected: Any) -> None:
    rendered = render(template, CONTEXT)
    assert rendered == expected
    assert type(rendered) is type(expected)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("n={{ params.n }}", "n=3"),
        ("{{ params.n }}{{ params.n }}", "33"),
        ("{{ params.n }} and {{ params.flag }}", "3 and True"),
        ("{% if params.flag %}yes{% else %}no{% endif %}", "yes"),
        ("{% for t in params.tags %}{{ t }};{% endfor %}", "a;b;"),
        ("{{ params.image }}:latest", "alpine:latest"),
    ],
)
def test_mixed_text_renders_to_a_string(template: str, expected: str) -> None:
    assert render(template, CONTEXT) == expected


def test_render_walks_dicts_and_lists_and_leaves_other_values_alone() -> None:
    value = {"a": ["{{ params.n }}", 2, None, True], "b": {"c": "x{{ params.n }}", "d": "plain"}, "e": 1.5}
    assert render(value, CONTEXT) == {"a": [3, 2, None, True], "b": {"c": "x3", "d": "plain"}, "e": 1.5}


def test_text_without_template_markers_is_returned_as_is() -> None:
    assert not is_template("just {text}")
    assert render("just {text} with } braces", CONTEXT) == "just {text} with } braces"


def test_tojson_is_deterministic() -> None:
    assert render("{{ steps.info.output.meta | tojson }}", CONTEXT) == '{"k": "v"}'
    assert render("{{ {'b': 1, 'a': 2} | tojson }}", CONTEXT) == '{"a": 2, "b": 1}'


def test_a_parameter_named_like_a_dict_method_is_the_parameter() -> None:
    """`params.items` must read the parameter `items`, not the dict's `.items` method (Jinja's
    attribute-first lookup): a parameter named items, keys, values or get is ordinary."""
    assert render("{{ params.items }}", CONTEXT) == [1, 2]
    assert render("{{ params.items | length }}", CONTEXT) == 2
    assert render("{{ {'keys': 1}.keys }}", CONTEXT) == 1


# --------------------------------------------------------------------------- missing names and errors


@pytest.mark.parametrize(
    ("template", "named"),
    [
        ("{{ params.missing }}", "missing"),
        ("x {{ params.missing }} y", "missing"),
        ("{{ nope }}", "nope"),
        ("{{ nope.deeper }}", "nope"),
        ("{{ steps.ghost.output }}", "ghost"),
        ("{{ steps.info.output.absent }}", "absent"),
        ("{{ steps.info.output.absent.deeper }}", "absent"),
        ({"nested": ["{{ params.gone }}"]}, "gone"),
    ],
)
def test_a_missing_name_fails_naming_it(template: Any, named: str) -> None:
    with pytest.raises(TemplateFailure) as failure:
        render(template, CONTEXT)
    assert named in str(failure.value)


@pytest.mark.parametrize(
    ("template", "says"),
    [
        ("{{ params.n / 0 }}", "ZeroDivisionError"),
        ("{{ params.tags[5] }}", "no element 5"),
        ("{{ params.n | no_such_filter }}", "no_such_filter"),
        ("{{ params.n ", "end of template"),
    ],
)
def test_render_errors_are_template_failures(template: str, says: str) -> None:
    with pytest.raises(TemplateFailure) as failure:
        render(template, CONTEXT)
    assert says in str(failure.value)
    assert template.strip() in str(failure.value)  # the message quotes the template


def test_check_syntax_finds_a_broken_template_anywhere_in_a_value() -> None:
    check_syntax({"ok": ["{{ params.n }}", "plain"]})
    with pytest.raises(TemplateFailure):
        check_syntax({"ok": "{{ params.n }}", "bad": ["{% if %}"]})


# --------------------------------------------------------------------------- when


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("params.flag", True),
        ("not params.flag", False),
        ("steps.info.output.os == 'linux'", True),
        ("steps.info.status == 'completed' and params.n > 2", True),
        ("steps.skipped.status == 'skipped'", True),
        ("steps.info.output.layers | length > 1", True),
        ("params.tags", True),
        ("[]", False),
        ("0", False),
    ],
)
def test_when_evaluates_a_jinja_expression(expression: str, expected: bool) -> None:
    assert evaluate(expression, CONTEXT) is expected


@pytest.mark.parametrize(
    "expression",
    [
        "params.absent",
        "steps.info.output.absent",
        "steps.info.output.absent.deeper.still",
        "steps.ghost.output.os",
        "undefined_root",
        "steps.info.output.layers[9]",
    ],
)
def test_when_treats_a_missing_attribute_as_false(expression: str) -> None:
    assert evaluate(expression, CONTEXT) is False


@pytest.mark.parametrize(
    "expression",
    ["steps.info.output.size > 3", "params.absent >= 1", "steps.info.output.absent | length > 0"],
)
def test_when_a_comparison_on_a_missing_attribute_is_false(expression: str) -> None:
    """Probing optional output must not fail the step: `size > 3` with no `size` does not hold."""
    assert evaluate(expression, CONTEXT) is False


def test_when_with_a_real_error_still_fails() -> None:
    with pytest.raises(TemplateFailure, match="ZeroDivisionError"):
        evaluate("params.n / 0", CONTEXT)
    with pytest.raises(TemplateFailure):
        evaluate("params.n ==", CONTEXT)


# --------------------------------------------------------------------------- sandbox


@pytest.mark.parametrize(
    "template",
    [
        "{{ params.__class__ }}",
        "{{ params.image.__class__.__mro__ }}",
        "{{ params.tags.__class__.__base__.__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ lipsum.__globals__ }}",
        "{{ params.tags.append(9) }}",  # immutable sandbox: no mutation of step data
        "{{ params.update({'n': 0}) }}",
        "{{ range(10 ** 9) | list | length }}",
    ],
)
def test_the_sandbox_blocks_escapes_and_mutation(template: str) -> None:
    with pytest.raises(TemplateFailure):
        render(template, CONTEXT)
    assert CONTEXT["params"]["tags"] == ["a", "b"]
    assert CONTEXT["params"]["n"] == 3


@pytest.mark.parametrize("expression", ["params.__class__", "params.__class__.__mro__", "cycler.__init__.__globals__"])
def test_when_cannot_escape_the_sandbox_either(expression: str) -> None:
    try:
        result = evaluate(expression, CONTEXT)
    except TemplateFailure:
        return
    assert result is False  # blocked: an unsafe attribute reads as undefined


# --------------------------------------------------------------------------- static references


def test_references_find_steps_params_and_run_in_nested_values() -> None:
    found = references(
        {
            "a": "{{ steps.info.output.os }} {{ params.image }}",
            "b": ["{{ run.id }}", {"c": "{{ steps['skipped'].status }}"}],
            "d": "no template",
            "e": 5,
        }
    )
    named = {(r.root, r.name) for r in found if r.name is not None}
    assert named == {("steps", "info"), ("params", "image"), ("run", "id"), ("steps", "skipped")}
    assert Reference("caller", None) not in found


def test_references_in_filters_conditions_and_blocks() -> None:
    found = references(
        "{% if steps.a.status == 'ok' %}{{ steps.b.output | map(attribute=params.key) | list }}{% endif %}"
    )
    assert {("steps", "a"), ("steps", "b"), ("params", "key")} <= {(r.root, r.name) for r in found}


def test_expression_references_of_a_when_condition() -> None:
    found = expression_references("steps.info.output.os == 'linux' and params.strict")
    assert {(r.root, r.name) for r in found if r.name} == {("steps", "info"), ("params", "strict")}


def test_references_of_a_bare_root() -> None:
    assert Reference("params", None) in references("{{ params | tojson }}")


def test_references_raise_on_a_template_that_does_not_parse() -> None:
    with pytest.raises(TemplateFailure):
        references("{{ steps.a.output ")
    with pytest.raises(TemplateFailure):
        expression_references("steps.a ==")


def test_a_template_compiled_once_renders_each_context_afresh_and_fails_each_time() -> None:
    """Templates are compiled once per text (the compiled ones are cached): the same text renders
    every context it is given, and one that fails fails on every render, not only the first."""
    for text in ("{{ params.a }}", "a={{ params.a }}"):
        first, second = render(text, {"params": {"a": 1}}), render(text, {"params": {"a": 2}})
        assert (first, second) in ((1, 2), ("a=1", "a=2"))
    for _ in range(2):
        with pytest.raises(TemplateFailure, match="missing"):
            render("{{ params.missing }}", {"params": {}})
        with pytest.raises(TemplateFailure):
            render("{{ params.a ", {"params": {"a": 1}})
    assert evaluate("params.a > 1", {"params": {"a": 2}}) and not evaluate("params.a > 1", {"params": {"a": 1}})
