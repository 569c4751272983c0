"""Field validators for rule rows: tiny callables whose error names the field, what
it expects and what it got (``severity: must be <= 10 (got 11)``).

Each is an attrs validator ``(instance, attribute, value)``. Its error is a
:class:`~buddy.rules.base.errors.RuleTableError` carrying ``field`` and
``message``, so the loader places it under the row and field it belongs to
(``anomalies.toml:30: row[high_rollback].then.severity: must be <= 10 (got 11)``)
and a row built in code fails with the same words. :func:`invalid` builds such
an error for checks across fields; :func:`raise_all` raises several at once.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any, TypeGuard

import attrs

from buddy.rules.base._masking import shown
from buddy.rules.base.errors import BuddyError, RuleTableError

__all__ = [
    "above",
    "at_least",
    "between",
    "fraction",
    "in_unit_interval",
    "invalid",
    "is_row_id",
    "one_of",
    "raise_all",
    "row_id",
]

Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]

_ROW_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:\-]{0,63}\Z")


def invalid(field: str | None, message: str, *, owner: str = "",
            kind: type[BuddyError] = RuleTableError) -> BuddyError:
    """An error of ``kind`` saying ``owner.field: message``, carrying ``field`` and ``message``.

    ``field`` is a dotted path inside the value (``"when.all.0.op"``), or None
    for the value as a whole; ``owner`` names the value in the text only.

    >>> error = invalid("cap", "must be in (0, 1] (got 1.5)", owner="confidence")
    >>> str(error), error.field, error.message
    ('confidence.cap: must be in (0, 1] (got 1.5)', 'cap', 'must be in (0, 1] (got 1.5)')
    """
    where = ".".join(part for part in (owner, field) if part)
    error = kind(f"{where}: {message}" if where else message)
    setattr(error, "field", field)  # noqa: B010 - not every kind declares these attributes
    setattr(error, "message", message)  # noqa: B010
    return error


def raise_all(errors: Sequence[Exception]) -> None:
    """Raise ``errors`` (none: return; one: itself; more: an ``ExceptionGroup`` of them all)."""
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ExceptionGroup(f"{len(errors)} problems", list(errors))


def is_row_id(value: object) -> TypeGuard[str]:
    """Whether ``value`` can be a row id: 1-64 letters, digits or ``_ . : -``.

    >>> is_row_id("low.dry_run"), is_row_id("a b"), is_row_id(3)
    (True, False, False)
    """
    return isinstance(value, str) and _ROW_ID.match(value) is not None


def row_id(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """A row's ``id``: see :func:`is_row_id`."""
    if not is_row_id(value):
        raise invalid(attribute.name, f"must be 1-64 letters, digits or _ . : - "
                      f"(got {shown(value)})")


def between(low: float, high: float) -> Validator:
    """A number in ``[low, high]``: ``must be >= 1 (got 0)``, ``must be <= 10 (got 11)``.

    >>> @attrs.frozen
    ... class Then:
    ...     severity: int = attrs.field(validator=between(1, 10))
    >>> Then(11)
    Traceback (most recent call last):
    ...
    buddy.rules.base.errors.RuleTableError: severity: must be <= 10 (got 11)
    """
    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value < low:
            raise invalid(attribute.name, f"must be >= {low:g} (got {shown(value)})")
        if value > high:
            raise invalid(attribute.name, f"must be <= {high:g} (got {shown(value)})")
    return check


def at_least(low: float) -> Validator:
    """A number ``>= low``: ``must be >= 0 (got -1)``."""
    return between(low, float("inf"))


def above(low: float) -> Validator:
    """A number ``> low`` (None passes: the field is optional): ``must be > 0 (got 0.0)``."""
    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None and not value > low:
            raise invalid(attribute.name, f"must be > {low:g} (got {shown(value)})")
    return check


def in_unit_interval(*, open_low: bool = False) -> Validator:
    """A number in ``[0, 1]`` (``(0, 1]`` with ``open_low``); None passes.

    >>> @attrs.frozen
    ... class Confidence:
    ...     cap: float = attrs.field(validator=in_unit_interval(open_low=True))
    >>> Confidence(0.0)
    Traceback (most recent call last):
    ...
    buddy.rules.base.errors.RuleTableError: cap: must be in (0, 1] (got 0.0)
    """
    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None:
            return
        if not (0.0 < value if open_low else 0.0 <= value) or not value <= 1.0:
            raise invalid(attribute.name, f"must be in {'(' if open_low else '['}0, 1] "
                          f"(got {shown(value)})")
    return check


def one_of(*choices: Any) -> Validator:
    """One of ``choices``: ``must be one of 16, 19 (got 17)``."""
    allowed = ", ".join(str(c) for c in choices)

    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value not in choices:
            raise invalid(attribute.name, f"must be one of {allowed} (got {shown(value)})")
    return check


def sums_to_one(record: Any, tolerance: float = 1e-9) -> None:
    """Raise (as :func:`invalid`) unless the fields of the attrs ``record`` (weights)
    sum to 1 within ``tolerance``."""
    total = math.fsum(attrs.astuple(record))
    if abs(total - 1.0) > tolerance:
        raise invalid(None, f"must sum to 1 (got {total!r})")


def fraction(value: float) -> float:
    """``value`` clamped to [0, 1]; NaN reads 0 (a share that cannot be read counts
    for nothing).

    >>> fraction(1.5), fraction(-0.1), fraction(float("nan")), fraction(0.25)
    (1.0, 0.0, 0.0, 0.25)
    """
    if not value >= 0.0:
        return 0.0
    return 1.0 if value > 1.0 else float(value)
