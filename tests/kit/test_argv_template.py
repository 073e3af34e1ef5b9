"""Argument-vector templates: the generic safety rules (per-argument substitution, optional
groups, padding, escapes, no value turning into an option or a program, NUL refused)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from yuntu.kit.argv_template import ArgvTemplate

NAMES = frozenset({"src", "label", "count"})
T = ArgvTemplate("tool --in {src} [--label {label}] -n {count:03} 'x {{y}}'", NAMES, {"count"})


def test_fill_and_used() -> None:
    assert T.used == {"src", "label", "count"}
    assert T.fill({"src": "/a b; rm -rf ~", "label": "$(id)", "count": 7}) == [
        "tool", "--in", "/a b; rm -rf ~", "--label", "$(id)", "-n", "007", "x {y}",
    ]  # fmt: skip


def test_optional_group_needs_every_value() -> None:
    assert T.fill({"src": "a", "count": 1}) == ["tool", "--in", "a", "-n", "001", "x {y}"]
    assert "--label" not in T.fill({"src": "a", "label": "", "count": 1})
    with pytest.raises(ValueError, match=r"needs \{src\}"):
        T.fill({"count": 1})


def test_values_cannot_become_options_or_hold_nul() -> None:
    with pytest.raises(ValueError, match="into an option"):
        T.fill({"src": "--exec=sh", "count": 1})
    # inside an option argument a leading dash is only text
    assert ArgvTemplate("t --name={src}", NAMES).fill({"src": "-x"}) == ["t", "--name=-x"]
    with pytest.raises(ValueError, match="NUL"):
        T.fill({"src": "a\x00b", "count": 1})


@given(st.text(min_size=1, max_size=40))
def test_a_value_is_always_exactly_one_argument(value: str) -> None:
    template = ArgvTemplate("t [--label {label}] {src}", NAMES)
    try:
        argv = template.fill({"src": value, "label": value})
    except ValueError:
        assert value.startswith("-") or "\x00" in value
        return
    assert argv == ["t", "--label", value, value]


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("t 'unclosed {src}", "cannot be split"),
        ("t {nope}", "unknown placeholder"),
        ("t {src", "unmatched brace"),
        ("t src}", "unmatched brace"),
        ("t {src:04}", "cannot be padded"),
        ("t {count:000}", "unmatched brace"),
        ("t [--label {label}", "not closed"),
        ("{src} x", "fixed program name"),
        ("/bin/{src}", "fixed program name"),
        ("[t] {src}", "fixed program name"),
    ],
)
def test_bad_templates_are_refused(template: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ArgvTemplate(template, NAMES, {"count"})


def test_templates_are_immutable_values() -> None:
    again = ArgvTemplate(T.template, set(NAMES), ["count"])
    assert again == T and hash(again) == hash(T)
    with pytest.raises(AttributeError):
        T.template = "other"  # type: ignore[misc]
