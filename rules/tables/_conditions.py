"""Conditions of rule rows: ``{metric, op, value}`` joined only by ``all`` / ``any``.

A row's ``when`` is a table, not an expression language::

    when = { all = [ { metric = "confidence", op = "ge", value = 0.70 } ] }

``op`` is a closed set mapped to :mod:`operator` functions; metrics are names
from a closed vocabulary each table declares (a metric name and the type of
its values). :func:`check_when` checks a row's conditions against that
vocabulary at load; :func:`compile_when` turns them, once, into plain
closures. Nothing from a file is ever evaluated as code.
"""

from __future__ import annotations

import enum
import operator
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs

from buddy.rules.base._convert import Problem, Scalar, converter, structure_checked
from buddy.rules.base._masking import shown

__all__ = ["Condition", "Op", "Path", "When", "check_when", "compile_when"]

T = TypeVar("T")
#: Where a problem is: keys and list indexes from the top of a file or a row.
Path = tuple[str | int, ...]


class Op(enum.Enum):
    """Comparison of a metric with a threshold."""

    GE = "ge"
    GT = "gt"
    LE = "le"
    LT = "lt"
    EQ = "eq"
    NE = "ne"

    @property
    def symbol(self) -> str:
        return _SYMBOLS[self]


_FUNCS: dict[Op, Callable[[Any, Any], bool]] = {
    Op.GE: operator.ge,
    Op.GT: operator.gt,
    Op.LE: operator.le,
    Op.LT: operator.lt,
    Op.EQ: operator.eq,
    Op.NE: operator.ne,
}
_SYMBOLS = {Op.GE: ">=", Op.GT: ">", Op.LE: "<=", Op.LT: "<", Op.EQ: "==", Op.NE: "!="}
#: Metric types whose values are ordered: the others take ``eq`` and ``ne`` only.
_NUMBERS = (int, float)


@attrs.frozen
class Condition:
    """``metric op value``, e.g. ``confidence ge 0.7``.

    ``value`` is any TOML scalar as read; :func:`check_when` types it as its metric.
    """

    metric: str
    op: Op
    value: Scalar

    def __str__(self) -> str:
        return f"{self.metric} {self.op.symbol} {self.value}"


@attrs.frozen
class When:
    """Conditions that must all hold, and of which at least one must hold.

    An empty ``any`` list imposes nothing; an empty ``when`` always holds.
    """

    all: tuple[Condition, ...] = ()
    any: tuple[Condition, ...] = ()

    def __str__(self) -> str:
        parts = [" and ".join(map(str, self.all))] if self.all else []
        if self.any:
            parts.append("(" + " or ".join(map(str, self.any)) + ")")
        return " and ".join(parts) or "always"

    @property
    def always(self) -> bool:
        """Whether there is no condition at all (``when = {}``)."""
        return not (self.all or self.any)

    def thresholds(self, metric: str) -> list[Condition]:
        """Every condition on ``metric``."""
        return [c for c in (*self.all, *self.any) if c.metric == metric]


def check_when(when: When, metrics: Mapping[str, type], *, at: Path = (),
               nonempty: bool = False) -> tuple[When | None, list[Problem]]:
    """``when`` with every threshold typed as its metric, or every problem found.

    Each condition must name a metric of ``metrics``, its value must be of that
    metric's type (an ``int`` becomes a float for a float metric; an enum
    metric takes one of the enum's values), and a metric that is not a number
    takes only ``eq`` and ``ne``.

    Parameters
    ----------
    when : When
        Conditions as read, their values any TOML scalar.
    metrics : mapping of str to type
        The vocabulary: each metric a row may test, and the type of its values.
    at : tuple, optional
        Where ``when`` is, prefixed to each problem's path (``("when",)``).
    nonempty : bool, optional
        Refuse a ``when`` without conditions.

    Returns
    -------
    tuple
        ``(typed when, [])``, or ``(None, every problem)``.

    Examples
    --------
    >>> metrics = {"rate": float, "mode": str}
    >>> check_when(When(all=(Condition("rate", Op.GT, 1),)), metrics)[0]
    When(all=(Condition(metric='rate', op=<Op.GT: 'gt'>, value=1.0),), any=())
    >>> for p in check_when(When(any=(Condition("rat", Op.GT, 1), Condition("mode", Op.LT, 2))),
    ...                     metrics, at=("when",))[1]:
    ...     print(p)
    when.any[0].metric: must be one of mode, rate (got 'rat')
    when.any[1].value: must be a string (got 2)
    when.any[1].op: mode is not a number: must be eq or ne (got 'lt')
    """
    problems: list[Problem] = []
    typed: dict[str, tuple[Condition, ...]] = {}
    for group in ("all", "any"):
        conditions = []
        for i, cond in enumerate(getattr(when, group)):
            where = (*at, group, i)
            kind = metrics.get(cond.metric)
            if kind is None:
                problems.append(Problem((*where, "metric"), f"must be one of "
                                        f"{', '.join(sorted(metrics))} (got {shown(cond.metric)})"))
                continue
            value, found = structure_checked(cond.value, kind)
            problems.extend(Problem((*where, "value", *p.path), p.message) for p in found)
            if kind not in _NUMBERS and cond.op not in (Op.EQ, Op.NE):
                problems.append(Problem((*where, "op"), f"{cond.metric} is not a number: must be "
                                        f"eq or ne (got {shown(cond.op.value)})"))
            if not found:
                conditions.append(Condition(cond.metric, cond.op, converter.unstructure(value)))
        typed[group] = tuple(conditions)
    if nonempty and when.always:
        problems.append(Problem(at, "must hold at least one condition"))
    if problems:
        return None, problems
    return When(all=typed["all"], any=typed["any"]), []


def compile_when(when: When, getters: Mapping[str, Callable[[T], Any]]) -> Callable[[T], bool]:
    """Compile ``when`` into one predicate over an input object.

    ``getters`` maps each metric name to a function reading it from the input;
    it is consulted here, once, never per call.

    >>> w = When(all=(Condition("confidence", Op.GE, 0.5),))
    >>> holds = compile_when(w, {"confidence": lambda x: x})
    >>> holds(0.5), holds(0.49)
    (True, False)
    """
    alls = tuple((getters[c.metric], _FUNCS[c.op], c.value) for c in when.all)
    anys = tuple((getters[c.metric], _FUNCS[c.op], c.value) for c in when.any)
    if len(when.all) == 1 and not anys:
        cond = when.all[0]
        return _SINGLE[cond.op](getters[cond.metric], cond.value)

    def holds(x: T) -> bool:
        for get, fn, value in alls:
            if not fn(get(x), value):
                return False
        if anys:
            return any(fn(get(x), value) for get, fn, value in anys)
        return True

    return holds


def _ge(get: Callable[[Any], Any], v: Any) -> Callable[[Any], bool]:
    return lambda x: get(x) >= v


def _gt(get: Callable[[Any], Any], v: Any) -> Callable[[Any], bool]:
    return lambda x: get(x) > v


def _le(get: Callable[[Any], Any], v: Any) -> Callable[[Any], bool]:
    return lambda x: get(x) <= v


def _lt(get: Callable[[Any], Any], v: Any) -> Callable[[Any], bool]:
    return lambda x: get(x) < v


def _eq(get: Callable[[Any], Any], v: Any) -> Callable[[Any], bool]:
    return lambda x: get(x) == v


def _ne(get: Callable[[Any], Any], v: Any) -> Callable[[Any], bool]:
    return lambda x: get(x) != v


# One condition compiles to one closure with the comparison inline (the hot case).
_SINGLE = {Op.GE: _ge, Op.GT: _gt, Op.LE: _le, Op.LT: _lt, Op.EQ: _eq, Op.NE: _ne}
