"""The one rule-table format: TOML rows of conditions joined by ``all`` / ``any``.

A row's ``when`` is a table, not an expression language::

    when = { all = [ { metric = "confidence", op = "ge", value = 0.70 } ] }

``op`` is a closed set mapped to :mod:`operator` functions; metrics are names
from a closed set the table's reader declares. Nothing from the file is ever
evaluated as code. Conditions compile once, at load, into plain closures.
"""

from __future__ import annotations

import enum
import hashlib
import math
import operator
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

import attrs

from buddy.rules.base.errors import RuleTableError

__all__ = [
    "Condition",
    "ShippedTable",
    "Op",
    "Problems",
    "When",
    "compile_when",
    "read_toml",
    "read_rows",
    "row_line",
]

T = TypeVar("T")
ST = TypeVar("ST", bound="ShippedTable")


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


@attrs.frozen
class Condition:
    """``metric op value``, e.g. ``confidence ge 0.7``."""

    metric: str
    op: Op
    value: float | bool | str

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

    def thresholds(self, metric: str) -> list[Condition]:
        """Every condition on ``metric``."""
        return [c for c in (*self.all, *self.any) if c.metric == metric]


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


class Problems:
    """Collects every problem of one file, then raises them all at once."""

    def __init__(self, source: str, text: str = "") -> None:
        self.source = source
        self.text = text
        self.items: list[str] = []

    def add(self, where: str, message: str, line: int | None = None) -> None:
        at = f":{line}" if line else ""
        self.items.append(f"{self.source}{at}: {where}: {message}")

    def raise_if_any(self) -> None:
        if self.items:
            raise RuleTableError(self.items)

    # -- typed field readers -------------------------------------------------
    def field(
        self, data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str,
        line: int | None, default: Any = attrs.NOTHING,
    ) -> Any:
        if key not in data:
            if default is attrs.NOTHING:
                self.add(f"{where}.{key}", "is required", line)
            return None if default is attrs.NOTHING else default
        value = data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = " or ".join(k.__name__ for k in kinds)
            self.add(f"{where}.{key}", f"must be {names} (got {value!r})", line)
            return None
        if isinstance(value, float) and not math.isfinite(value):
            self.add(f"{where}.{key}", f"must be a finite number (got {value!r})", line)
            return None
        return value

    def enum(
        self, data: Mapping[str, Any], key: str, kind: type[enum.Enum], where: str,
        line: int | None,
    ) -> Any:
        raw = self.field(data, key, str, where, line)
        if raw is None:
            return None
        try:
            return kind(raw)
        except ValueError:
            allowed = ", ".join(m.value for m in kind)
            self.add(f"{where}.{key}", f"must be one of {allowed} (got {raw!r})", line)
            return None

    def unknown_keys(
        self, data: Mapping[str, Any], allowed: Iterable[str], where: str, line: int | None,
    ) -> None:
        extra = sorted(set(data) - set(allowed))
        for key in extra:
            self.add(f"{where}.{key}", "unknown key", line)

    def when(
        self, data: Any, metrics: Mapping[str, type | tuple[type, ...]], where: str,
        line: int | None,
    ) -> When | None:
        """Read a ``when`` table: ``{all = [...], any = [...]}``."""
        if not isinstance(data, Mapping):
            self.add(where, f"must be a table with 'all' and/or 'any' (got {data!r})", line)
            return None
        self.unknown_keys(data, ("all", "any"), where, line)
        groups: dict[str, tuple[Condition, ...]] = {}
        for group in ("all", "any"):
            items = data.get(group, [])
            if not isinstance(items, list):
                self.add(f"{where}.{group}", f"must be a list of conditions (got {items!r})", line)
                continue
            conds = []
            for i, item in enumerate(items):
                cond = self.condition(item, metrics, f"{where}.{group}[{i}]", line)
                if cond is not None:
                    conds.append(cond)
            groups[group] = tuple(conds)
        return When(all=groups.get("all", ()), any=groups.get("any", ()))

    def condition(
        self, data: Any, metrics: Mapping[str, type | tuple[type, ...]], where: str,
        line: int | None,
    ) -> Condition | None:
        if not isinstance(data, Mapping):
            self.add(where, f"must be {{metric, op, value}} (got {data!r})", line)
            return None
        self.unknown_keys(data, ("metric", "op", "value"), where, line)
        metric = self.field(data, "metric", str, where, line)
        op = self.enum(data, "op", Op, where, line)
        if metric is None or op is None:
            return None
        if metric not in metrics:
            self.add(f"{where}.metric", f"must be one of {', '.join(sorted(metrics))} "
                     f"(got {metric!r})", line)
            return None
        value = self.field(data, "value", metrics[metric], where, line)
        if value is None:
            return None
        return Condition(metric, op, value)


class ShippedTable:
    """``default()`` and ``from_dir()`` for a table class kept in one file of
    ``buddy/rules/``; the subclass sets ``FILE`` and defines ``from_toml``."""

    __slots__ = ()
    FILE: ClassVar[str]

    @classmethod
    def default(cls: type[ST]) -> ST:
        """The table shipped with buddy (``buddy/rules/<FILE>``)."""
        ref = resources.files("buddy.rules").joinpath(cls.FILE)
        return cls.from_toml(text=ref.read_text(encoding="utf-8"),  # type: ignore[attr-defined]
                             source=f"buddy/rules/{cls.FILE}")

    @classmethod
    def from_dir(cls: type[ST], directory: Path | str) -> ST:
        """Load ``FILE`` from a rules directory (a user's copy overriding the default)."""
        return cls.from_toml(Path(directory) / cls.FILE)  # type: ignore[attr-defined]


def read_toml(path: Path | str | None, text: str | None = None,
              source: str | None = None) -> tuple[dict[str, Any], str, str]:
    """Read a TOML file (or ``text``) into ``(data, text, digest)``.

    Raises :class:`RuleTableError` naming the file and line on a syntax error
    or a missing file.
    """
    source = source or (str(path) if path is not None else "<text>")
    if text is None:
        try:
            text = Path(path).read_text(encoding="utf-8")  # type: ignore[arg-type]
        except FileNotFoundError:
            raise RuleTableError(f"{source}: no such file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise RuleTableError(f"{source}: cannot read: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        found = re.search(r"\(at line (\d+), column (\d+)\)", msg)
        if found:
            msg = msg[: found.start()].strip()
            raise RuleTableError(f"{source}:{found.group(1)}: invalid TOML: {msg}") from None
        raise RuleTableError(f"{source}: invalid TOML: {msg}") from None
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    return data, text, digest


class _HasId(Protocol):
    id: str


R = TypeVar("R", bound=_HasId)


def read_rows(path: Path | str | None, text: str | None, source: str | None, table: str,
              read_row: Callable[[Problems, Mapping[str, Any], str, str, int | None], R | None],
              ) -> tuple[list[tuple[R, int | None]], Problems, bool, str]:
    """The common part of loading a ``[[row]]`` table: read the file, check the
    top-level keys, read each row's ``id`` and the rest with
    ``read_row(problems, raw, row_id, where, line)``, and flag duplicate ids.

    Returns ``(rows with their line, problems, complete, digest)``; ``complete``
    is False when some row could not be read (so checks over the whole table,
    like coverage, would only add noise). The caller adds its own checks and
    calls ``problems.raise_if_any()``.
    """
    data, text, digest = read_toml(path, text, source)
    problems = Problems(source or (str(path) if path is not None else "<text>"), text)
    problems.unknown_keys(data, ("table", "version", "row"), table, None)
    raw_rows = data.get("row", [])
    complete = True
    if not isinstance(raw_rows, list):
        problems.add("row", "must be an array of [[row]] tables")
        raw_rows, complete = [], False
    rows: list[tuple[R, int | None]] = []
    seen: dict[str, int | None] = {}
    for i, raw in enumerate(raw_rows):
        line = row_line(text, "row", i)
        row = None
        if not isinstance(raw, Mapping):
            problems.add(f"row[{i}]", "must be a table", line)
        else:
            before = len(problems.items)
            row_id = problems.field(raw, "id", str, f"row[{i}]", line)
            row = read_row(problems, raw, row_id or "", f"row[{row_id}]" if row_id else
                           f"row[{i}]", line)
            if len(problems.items) > before:
                row = None
        if row is None:
            complete = False
            continue
        if row.id in seen:
            problems.add(f"row[{row.id}].id", f"duplicate id (first at line {seen[row.id]})",
                         line)
        seen.setdefault(row.id, line)
        rows.append((row, line))
    return rows, problems, complete, digest


def row_line(text: str, header: str, index: int) -> int | None:
    """Line number (1-based) of the ``index``-th ``[[header]]`` in ``text``."""
    pattern = re.compile(r"^[ \t]*\[\[\s*" + re.escape(header) + r"\s*\]\]", re.MULTILINE)
    for i, found in enumerate(pattern.finditer(text)):
        if i == index:
            return text.count("\n", 0, found.start()) + 1
    return None
