"""The one cattrs converter every record goes through, and its failures as plain lines.

Unstructuring: enums by value, frozensets as sorted lists, tuples as lists.
Structuring is strict, for data a user wrote (rule tables, plans, audit
events): no coercion (``"5"`` is not 5, ``1`` is not True, ``1.5`` is not a
whole number), no NaN or infinity, integers too large for a float refused
(whole numbers too: a 400-digit count is a typo, and would overflow the first
float it meets), sequences only from lists, records only from tables, extra
keys refused. A :data:`Scalar` is any TOML scalar (a rule condition's
threshold, typed later against its metric). With
``detailed_validation`` every problem of a value is collected, and
:func:`problems_of` flattens them into :class:`Problem` values, each a path
and one line of message (``when.all[0].op: must be one of ge, gt, ... (got '=>')``).
Loaders, the audit trail and replay share it.
"""

from __future__ import annotations

import enum
import math
import sys
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.errors import (
    AttributeValidationNote,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn

from buddy.rules.base._masking import shown

__all__ = [
    "Problem",
    "Scalar",
    "converter",
    "make_converter",
    "problems_of",
    "structure_checked",
    "structurer",
]

T = TypeVar("T")

#: Any TOML scalar: what a rule condition compares a metric with, before the
#: metric's own type is known.
Scalar = bool | int | float | str
#: The largest magnitude a float holds; whole numbers beyond it are refused.
_FLOAT_MAX = sys.float_info.max
#: The largest whole number a table may hold: a signed 64-bit integer, as JSON writers hold.
_INT_MAX = 2 ** 63 - 1


@attrs.frozen
class Problem:
    """One thing wrong with a structured value: where (a path of keys and indexes), and what."""

    path: tuple[str | int, ...]
    message: str

    @property
    def where(self) -> str:
        """The path as ``a.b[3].c`` (empty for the value itself)."""
        out = ""
        for part in self.path:
            out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
        return out

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.path else self.message


# -- strict scalars ------------------------------------------------------------------

def _str(value: Any, _: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"must be a string (got {shown(value)})")
    return value


def _bool(value: Any, _: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"must be true or false (got {shown(value)})")
    return value


def _int(value: Any, _: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"must be a whole number (got {shown(value)})")
    if not -_INT_MAX <= value <= _INT_MAX:  # what every JSON writer and reader holds
        raise ValueError(f"must be a whole number (got {shown(value)}, too large)")
    return value


def _float(value: Any, _: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"must be a number (got {shown(value)})")
    try:
        number = float(value)
    except OverflowError:
        raise ValueError(f"must be a finite number (got {shown(value)}, too large)") from None
    if not math.isfinite(number):
        raise ValueError(f"must be a finite number (got {shown(value)})")
    return number


def _scalar(value: Any, _: Any) -> Scalar:
    if not isinstance(value, bool | int | float | str):
        raise TypeError(f"must be a number, true, false or a string (got {shown(value)})")
    return value


def _enum(value: Any, cl: type[enum.Enum]) -> enum.Enum:
    try:
        return cl(value)
    except (ValueError, TypeError):
        allowed = ", ".join(str(m.value) for m in cl)
        raise ValueError(f"must be one of {allowed} (got {shown(value)})") from None


# -- strict containers ---------------------------------------------------------------

def _is_collection(cl: Any) -> bool:
    return typing.get_origin(cl) in (tuple, list, frozenset) or cl in (tuple, list, frozenset)


def _collection_hook(conv: cattrs.Converter) -> Callable[[Any], Any]:
    def factory(cl: Any) -> Callable[[Any, Any], Any]:
        origin = typing.get_origin(cl) or cl
        args = typing.get_args(cl)
        fixed = origin is tuple and bool(args) and args[-1] is not Ellipsis

        # each item's type and hook (one per index for a fixed tuple), resolved here, once
        items = [(t, None if t is Any else conv.get_structure_hook(t))
                 for t in (args if fixed else (args[0] if args else Any,))]

        def hook(value: Any, _: Any) -> Any:
            if not isinstance(value, list | tuple):
                raise TypeError(f"must be a list (got {shown(value)})")
            if fixed and len(value) != len(args):
                raise ValueError(f"must be a list of {len(args)} (got {shown(value)})")
            out, errors = [], []
            for i, v in enumerate(value):
                item, structure = items[i] if fixed else items[0]
                try:
                    out.append(v if structure is None else structure(v, item))
                except Exception as exc:
                    exc.add_note(IterableValidationNote(f"Structuring {cl} @ index {i}", i, item))
                    errors.append(exc)
            if errors:
                raise IterableValidationError(f"While structuring {cl!r}", errors, cl)
            return origin(out)

        return hook

    return factory


def _attrs_hook(conv: cattrs.Converter) -> Callable[[Any], Any]:
    def factory(cl: Any) -> Callable[[Any, Any], Any]:
        inner = make_dict_structure_fn(cl, conv)

        def hook(value: Any, _: Any) -> Any:
            if not isinstance(value, Mapping):
                raise TypeError(f"must be a table (got {shown(value)})")
            return inner(value, cl)

        return hook

    return factory


def make_converter() -> cattrs.Converter:
    """Build the converter, registering every hook in one place."""
    conv = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    conv.register_unstructure_hook(enum.Enum, lambda e: e.value)
    is_frozenset = lambda t: t is frozenset or typing.get_origin(t) is frozenset  # noqa: E731
    conv.register_unstructure_hook_func(is_frozenset, lambda s: sorted(s))
    conv.register_structure_hook(str, _str)
    conv.register_structure_hook(bool, _bool)
    conv.register_structure_hook(int, _int)
    conv.register_structure_hook(float, _float)
    conv.register_structure_hook_func(lambda t: t == Scalar, _scalar)
    conv.register_structure_hook_func(
        lambda t: isinstance(t, type) and issubclass(t, enum.Enum), _enum)
    conv.register_structure_hook_factory(_is_collection, _collection_hook(conv))
    conv.register_structure_hook_factory(attrs.has, _attrs_hook(conv))
    return conv


converter = make_converter()


# -- failures as problems -------------------------------------------------------------

def problems_of(exc: BaseException, path: tuple[str | int, ...] = ()) -> list[Problem]:
    """Every problem a structuring failure holds, each with its path.

    Nested ``ExceptionGroup`` values are walked; a missing key reads
    ``is required``, an extra one ``unknown key``; an exception carrying a
    ``field`` attribute (a validator's) adds that field to the path (a dotted
    path: ``"when.all.0.op"``, whose numbers are list indexes).
    """
    if isinstance(exc, ForbiddenExtraKeysError):
        return [Problem((*path, key), "unknown key") for key in sorted(exc.extra_fields)]
    if isinstance(exc, BaseExceptionGroup):
        found: list[Problem] = []
        for sub in exc.exceptions:
            at = path
            for note in getattr(sub, "__notes__", ()):
                if isinstance(note, AttributeValidationNote):
                    at = (*path, note.name)
                elif isinstance(note, IterableValidationNote):
                    at = (*path, note.index)
            if isinstance(sub, KeyError) and at != path and sub.args == (at[-1],):
                found.append(Problem(at, "is required"))
            else:
                found.extend(problems_of(sub, at))
        return found
    field = getattr(exc, "field", None)
    if isinstance(field, str) and field:
        path = (*path, *(int(p) if p.isdigit() else p for p in field.split(".")))
    message = str(getattr(exc, "message", None) or exc) or type(exc).__name__
    return [Problem(path, message)]


def structure_checked(data: Any, cl: type[T], conv: cattrs.Converter = converter,
                      ) -> tuple[T | None, list[Problem]]:
    """``(value, [])`` when ``data`` structures into ``cl``, else ``(None, every problem)``.

    >>> @attrs.frozen
    ... class Row:
    ...     id: str
    ...     limit: int = 1
    >>> structure_checked({"id": "a", "limit": 2}, Row)
    (Row(id='a', limit=2), [])
    >>> [str(p) for p in structure_checked({"limit": 2.5, "colour": "red"}, Row)[1]]
    ['id: is required', 'limit: must be a whole number (got 2.5)', 'colour: unknown key']
    """
    try:
        return conv.structure(data, cl), []
    except Exception as exc:  # every failure is reported as problems, never raised
        return None, problems_of(exc)


def structurer(cl: type[T], conv: cattrs.Converter = converter,
               ) -> Callable[[Any], tuple[T | None, list[Problem]]]:
    """:func:`structure_checked` for many values of ``cl``: its hook is looked up once, here.

    >>> @attrs.frozen
    ... class Row:
    ...     id: str
    >>> row = structurer(Row)
    >>> row({"id": "a"}), [str(p) for p in row({"id": 1})[1]]
    ((Row(id='a'), []), ['id: must be a string (got 1)'])
    """
    hook = conv.get_structure_hook(cl)

    def structure(data: Any) -> tuple[T | None, list[Problem]]:
        try:
            return hook(data, cl), []
        except Exception as exc:  # every failure is reported as problems, never raised
            return None, problems_of(exc)

    return structure
