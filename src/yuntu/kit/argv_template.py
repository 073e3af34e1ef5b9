"""Argument-vector templates: an operator's command line with placeholders, turned into the
argv of a process that runs without a shell.

The template is split with `shlex` first and each argument is filled in afterwards, so a value
is always exactly (part of) one argument: no shell ever runs, and a value with spaces, quotes,
`;`, `$(...)` or a newline stays inside the argument it was written in.

    tool --in {input} [--label {label}] --copies={count:03} 'literal {{braces}}'

Placeholders are `{name}` with a name among the allowed ones; a numeric placeholder may carry a
zero-padding width, `{count:03}` (one or two digits). `{{` and `}}` are literal braces; any
other lone brace is an error.

Safety rules, checked when the template is built (configuration errors surface at start-up) or
when it is filled (a value that breaks them is refused, never adjusted):
- The first argument, the program, is fixed text: no value chooses what runs.
- A value never creates or removes an argument: substitution happens inside one argument.
- A value never turns an argument into an option: an argument that does not start with `-` in
  the template may not start with `-` once filled in (a file named "-rf" or "--exec=..."). In an
  argument that already is an option (`--label={label}`), a leading dash in the value is harmless.
- A value holding NUL is refused (it cannot be passed to a process and would truncate it).
- An optional group in brackets, `[--label {label}]` (one or several arguments, the first
  starting with `[` and the last ending with `]`), is left out when one of its placeholders has
  no value (None or ""). Outside a group, a missing value is an error.

Errors are `ValueError`s whose message says what is wrong.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_FIELD = re.compile(r"\{\{|\}\}|\{([a-z_]+)(?::(0?[1-9][0-9]?))?\}|[{}]")


@dataclass(frozen=True, slots=True)
class _Group:
    arguments: tuple[str, ...]
    optional: bool


@dataclass(frozen=True, slots=True)
class ArgvTemplate:
    """One parsed template: `ArgvTemplate(template, names, numeric)`, where `names` are the
    allowed placeholders and `numeric` those among them that take a padding width. Checked on
    creation; `used` is the set of placeholders the template mentions."""

    template: str
    names: frozenset[str]
    numeric: frozenset[str] = frozenset()
    used: frozenset[str] = field(init=False, compare=False)
    _groups: tuple[_Group, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # A plain set from the caller would leave the frozen template mutable and unhashable.
        object.__setattr__(self, "names", frozenset(self.names))
        object.__setattr__(self, "numeric", frozenset(self.numeric) & self.names)
        try:
            arguments = shlex.split(self.template)
        except ValueError as exc:  # an unclosed quote
            raise ValueError(f"the command template cannot be split: {exc}") from exc
        if not arguments:
            raise ValueError("the command template is empty")
        groups: list[_Group] = []
        pending: list[str] | None = None
        used: set[str] = set()
        for argument in arguments:
            used.update(name for name, _ in self._fields(argument))
            if pending is None and argument.startswith("["):
                pending, argument = [], argument[1:]
            if pending is None:
                groups.append(_Group((argument,), optional=False))
                continue
            if argument.endswith("]"):
                pending.append(argument[:-1])
                groups.append(_Group(tuple(a for a in pending if a), optional=True))
                pending = None
            else:
                pending.append(argument)
        if pending is not None:
            raise ValueError("an optional group '[' in the command template is not closed")
        if groups[0].optional or "{" in groups[0].arguments[0]:
            raise ValueError("the command template must start with a fixed program name")
        object.__setattr__(self, "used", frozenset(used))
        object.__setattr__(self, "_groups", tuple(groups))

    def _fields(self, argument: str) -> list[tuple[str, str | None]]:
        """The (placeholder, width) pairs of one template argument; ValueError for bad braces."""
        found: list[tuple[str, str | None]] = []
        for match in _FIELD.finditer(argument):
            token = match.group(0)
            if token in ("{{", "}}"):
                continue
            name, width = match.group(1), match.group(2)
            if name is None:
                raise ValueError(f"unmatched brace in template argument {argument!r}")
            if name not in self.names:
                known = ", ".join(sorted(self.names))
                raise ValueError(f"unknown placeholder {{{name}}} (known: {known})")
            if width is not None and name not in self.numeric:
                raise ValueError(f"{{{name}}} is not a number and cannot be padded")
            found.append((name, width))
        return found

    def fill(self, values: Mapping[str, Any]) -> list[str]:
        """The argv for `values` (a name left out counts as no value)."""
        argv: list[str] = []
        for group in self._groups:
            filled = [_substitute(argument, values) for argument in group.arguments]
            if any(argument is None for argument in filled):
                if group.optional:
                    continue
                missing = [
                    name
                    for argument in group.arguments
                    for name, _ in self._fields(argument)
                    if values.get(name) in (None, "")
                ]
                raise ValueError(f"the command template needs {{{missing[0]}}}")
            argv.extend(argument for argument in filled if argument is not None)
        return argv


def _substitute(argument: str, values: Mapping[str, Any]) -> str | None:
    """`argument` with its placeholders filled in, or None when a value is missing."""
    missing = False

    def replace(match: re.Match[str]) -> str:
        nonlocal missing
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        value = values.get(match.group(1))
        if value is None or value == "":
            missing = True
            return ""
        width = match.group(2)
        return f"{value:0{int(width)}d}" if width else str(value)

    result = _FIELD.sub(replace, argument)
    if missing:
        return None
    if result.startswith("-") and not argument.startswith("-"):
        raise ValueError(f"a value would turn argument {argument!r} into an option")
    if "\x00" in result:
        raise ValueError("a value holds a NUL character")
    return result
