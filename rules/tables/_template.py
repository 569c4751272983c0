"""Message templates of rule rows (``"{tool} succeeded {tool_success_rate:.0f}% of runs"``).

A template is compiled once, at load, into literal and field parts; its fields
must be plain names of the row's scope (no attribute or index access, no
positional or nested fields) with a format spec that fits the name's type and
bounded widths. Rendering formats each value with the builtin :func:`format`:
``str.format`` never runs on the text again, so a value that looks like a
template stays text.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from typing import Any

import attrs

from buddy.rules.base._convert import Problem
from buddy.rules.base._masking import shown
from buddy.rules.tables._conditions import Path

__all__ = ["Kinds", "Template", "check_template", "compile_template", "template_errors"]

#: The type (or types) a template name's values have.
Kinds = type | tuple[type, ...]

# A standard format spec without nested fields; width and precision are bounded below.
_SPEC = re.compile(r"(?:.?[<>=^])?[+\- ]?z?#?0?(?P<width>\d*)[_,]?(?:\.(?P<precision>\d+))?"
                   r"[bcdeEfFgGnosxX%]?\Z", re.DOTALL)
_MAX_WIDTH = 99
_MAX_SHOWN = 60
_SAMPLES: Mapping[type, Any] = {float: 0.5, int: 1, str: "x", bool: True}


@attrs.frozen
class Template:
    """A ``str.format`` text compiled at load into literal and field parts.

    ``parts`` holds ``(literal, name, spec, conversion)``; ``name`` is None
    after the last field. :meth:`render` formats each value with the builtin
    :func:`format`: ``str.format`` never runs on the text again.

    >>> t = compile_template("{tool} at {rate:.0%}", {"tool": str, "rate": float})
    >>> t.render({"tool": "form_fill", "rate": 0.925})
    'form_fill at 92%'
    """

    text: str
    parts: tuple[tuple[str, str | None, str, str | None], ...] = attrs.field(repr=False)

    @property
    def names(self) -> tuple[str, ...]:
        """The field names, in order of appearance."""
        return tuple(name for _, name, _, _ in self.parts if name is not None)

    def render(self, values: Mapping[str, Any]) -> str:
        out = []
        for literal, name, spec, conversion in self.parts:
            out.append(literal)
            if name is not None:
                value = values[name]
                if conversion == "r":
                    value = repr(value)
                elif conversion == "s":
                    value = str(value)
                out.append(format(value, spec))
        return "".join(out)


def compile_template(text: str, names: Mapping[str, Kinds]) -> Template:
    """Compile ``text``, whose fields must be plain names among ``names``.

    Raises ``ValueError`` listing every problem, one per line.

    >>> compile_template("{x.__class__}", {"x": float})
    Traceback (most recent call last):
    ...
    ValueError: field {x.__class__} must be a plain name (no attribute or index access)
    >>> compile_template("{y}", {"x": float})
    Traceback (most recent call last):
    ...
    ValueError: unknown field {y} (allowed: x)
    """
    errors = template_errors(text, names)
    if errors:
        raise ValueError("\n".join(errors))
    parts = tuple((literal, name, spec or "", conversion)
                  for literal, name, spec, conversion in string.Formatter().parse(text))
    return Template(text, parts)


def check_template(text: str, names: Mapping[str, Kinds], *, at: Path = (),
                   ) -> tuple[Template | None, list[Problem]]:
    """``(template, [])``, or ``(None, a problem per error)`` placed at ``at``.

    >>> check_template("{rate:.0%}", {"rate": float})[0].render({"rate": 0.5})
    '50%'
    >>> for problem in check_template("{rate:d} {x}", {"rate": float}, at=("message",))[1]:
    ...     print(problem)
    message: field {rate}: format spec 'd' does not apply to a float
    message: unknown field {x} (allowed: rate)
    """
    errors = template_errors(text, names)
    if errors:
        return None, [Problem(at, error) for error in errors]
    return compile_template(text, names), []


def template_errors(text: str, names: Mapping[str, Kinds]) -> list[str]:
    """Every reason ``text`` is not a safe template over ``names`` (none: it is)."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        return [f"is not a valid template: {exc}"]
    errors = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        field = _braced(name)
        if name == "" or name.isdigit():
            errors.append(f"positional field {field} not allowed: name a field "
                          f"(allowed: {', '.join(sorted(names))})")
            continue
        if not name.isidentifier():
            errors.append(f"field {field} must be a plain name (no attribute or index access)")
            continue
        if name not in names:
            errors.append(f"unknown field {field} (allowed: {', '.join(sorted(names))})")
            continue
        if conversion not in (None, "r", "s"):
            shown_conversion = conversion if conversion.isprintable() else shown(conversion)
            errors.append(f"field {field}: conversion !{shown_conversion} not allowed "
                          "(use !r or !s)")
            continue
        spec = spec or ""
        if "{" in spec or "}" in spec:
            errors.append(f"field {field}: nested fields in a format spec are not allowed")
            continue
        found = _SPEC.match(spec)
        if found is None:
            errors.append(f"field {field}: invalid format spec {shown(spec)}")
            continue
        for part in ("width", "precision"):
            if found.group(part) and int(found.group(part)) > _MAX_WIDTH:
                errors.append(f"field {field}: {part} above {_MAX_WIDTH} in {shown(spec)}")
                break
        else:
            kind = names[name]
            kinds = (str,) if conversion else kind if isinstance(kind, tuple) else (kind,)
            for one in kinds:
                try:
                    format(_SAMPLES.get(one, ""), spec)
                except (ValueError, TypeError):
                    errors.append(f"field {field}: format spec {shown(spec)} does not apply "
                                  f"to a {one.__name__}")
                    break
    return errors


def _braced(name: str) -> str:
    """``{name}`` as a message shows it: as written when short and printable, else cut."""
    if len(name) <= _MAX_SHOWN and name.isprintable():
        return f"{{{name}}}"
    return "{" + shown(name) + "}"
