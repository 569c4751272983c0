"""The conflict table: how each conflict between planned calls is resolved.

``rules/conflicts.toml`` holds rows tried in order; the first whose ``when``
matches the conflict's type and its tool's risk and reversibility gives the
strategy (DELAY, REASSIGN, DOWNGRADE or ABORT) and its parameters. The
vocabulary (:class:`ConflictType`, :class:`ResolutionStrategy`) lives here with
the table; detection and resolution are in :mod:`buddy.engine.orchestration`.
"""

from __future__ import annotations

import enum
import operator
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import attrs

from buddy.rules.base._values import ExecutionMode, RiskLevel
from buddy.rules.base.errors import RuleTableError
from buddy.rules.tables._table import Op, Problems, ShippedTable, When, compile_when, read_rows

__all__ = [
    "ConflictRow",
    "ConflictTable",
    "ConflictType",
    "ResolutionStrategy",
]

class ConflictType(enum.Enum):
    """What two (or one) planned calls get wrong."""

    RESOURCE = "RESOURCE"
    ORDERING = "ORDERING"
    RATE_LIMIT = "RATE_LIMIT"
    DUPLICATE_ACTION = "DUPLICATE_ACTION"
    PERMISSION = "PERMISSION"
    TIMEOUT = "TIMEOUT"


class ResolutionStrategy(enum.Enum):
    """What happens to the call a conflict changes."""

    DELAY = "DELAY"
    REASSIGN = "REASSIGN"
    DOWNGRADE = "DOWNGRADE"
    ABORT = "ABORT"


T = ConflictType
R = ResolutionStrategy



# -- the table ----------------------------------------------------------------

#: Metrics a conflict row may test, and the TOML types of their values.
METRICS: Mapping[str, type | tuple[type, ...]] = {"type": str, "risk": str, "reversible": bool}
_CATEGORIES: Mapping[str, type[enum.Enum]] = {"type": ConflictType, "risk": RiskLevel}
# A row is matched against (type, risk, reversible) of the conflict and its tool.
_GETTERS: Mapping[str, Callable[[Any], Any]] = {
    "type": operator.itemgetter(0), "risk": operator.itemgetter(1),
    "reversible": operator.itemgetter(2)}
#: Every (risk, reversible) a contract can have: an irreversible tool is never LOW.
_TOOL_KINDS = tuple((risk, rev) for risk in RiskLevel for rev in (True, False)
                    if rev or risk is not RiskLevel.LOW)
_FALLBACKS = (R.ABORT, R.DOWNGRADE)
_THEN_KEYS: Mapping[ResolutionStrategy, tuple[str, ...]] = {
    R.DELAY: ("strategy", "delay_s", "max_delay_s", "fallback", "max_mode"),
    R.REASSIGN: ("strategy", "fallback", "max_mode"),
    R.DOWNGRADE: ("strategy", "max_mode"),
    R.ABORT: ("strategy",),
}
_ALL_THEN_KEYS = {k for keys in _THEN_KEYS.values() for k in keys}


@attrs.frozen
class ConflictRow:
    """Resolve the conflicts ``when`` matches with ``strategy``.

    ``delay_s`` / ``max_delay_s``: DELAY waits ``delay_s`` per slot moved, at
    most ``max_delay_s``. ``fallback``: what DELAY or REASSIGN does when it
    cannot (ABORT or DOWNGRADE). ``max_mode``: the cap of DOWNGRADE (also as a
    fallback).
    """

    id: str
    when: When
    strategy: ResolutionStrategy
    delay_s: float | None = None
    max_delay_s: float | None = None
    fallback: ResolutionStrategy | None = None
    max_mode: ExecutionMode | None = None
    description: str = ""

    def describe(self) -> str:
        """One line: ``RESOURCE -> DELAY 5.0 s per slot, at most 15.0 s (else ABORT)``."""
        what = {R.DELAY: f"DELAY {self.delay_s} s per slot, at most {self.max_delay_s} s",
                R.REASSIGN: "REASSIGN to a least-loaded agent holding the permissions",
                R.DOWNGRADE: f"DOWNGRADE to at most {getattr(self.max_mode, 'value', '?')}",
                R.ABORT: "ABORT"}[self.strategy]
        if self.fallback is not None:
            cap = f" {self.max_mode.value}" if self.fallback is R.DOWNGRADE and self.max_mode \
                else ""
            what += f" (else {self.fallback.value}{cap})"
        return f"{self.when} -> {what}"


def _uncovered(rows: Sequence[ConflictRow]) -> dict[ConflictType, tuple[RiskLevel, bool]]:
    """Per conflict type, the first (risk, reversible) no row matches."""
    predicates = [compile_when(row.when, _GETTERS) for row in rows]
    missing: dict[ConflictType, tuple[RiskLevel, bool]] = {}
    for ctype in ConflictType:
        for risk, rev in _TOOL_KINDS:
            if not any(p((ctype.value, risk.value, rev)) for p in predicates):
                missing.setdefault(ctype, (risk, rev))
    return missing


@attrs.frozen
class ConflictTable(ShippedTable):
    """Rows tried in order, the first matching one wins; compiled once into a
    lookup by (conflict type, risk, reversible), the whole finite domain.

    >>> table = ConflictTable.default()
    >>> table.row_for(ConflictType.TIMEOUT, RiskLevel.HIGH, False).describe()
    'type == TIMEOUT -> DOWNGRADE to at most DRY_RUN'
    >>> ConflictTable.from_toml(text='[[row]]\\nid = "x"\\nwhen = {}\\n'
    ...                         'then = { strategy = "WAIT" }\\n', source="c.toml")
    Traceback (most recent call last):
    ...
    buddy.rules.base.errors.RuleTableError: c.toml:1: row[x].then.strategy: must be one of ...
    """

    FILE: ClassVar[str] = "conflicts.toml"

    rows: tuple[ConflictRow, ...]
    source: str = "<memory>"
    digest: str = ""
    _choice: Mapping[tuple[ConflictType, RiskLevel, bool], ConflictRow] = attrs.field(
        init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        missing = _uncovered(self.rows)
        if missing:
            raise RuleTableError([f"{self.source}: row: {_uncovered_message(t, *k)}"
                                  for t, k in missing.items()])
        predicates = [(compile_when(row.when, _GETTERS), row) for row in self.rows]
        choice = {}
        for ctype in ConflictType:
            for risk, rev in _TOOL_KINDS:
                facts = (ctype.value, risk.value, rev)
                choice[(ctype, risk, rev)] = next(row for p, row in predicates if p(facts))
        object.__setattr__(self, "_choice", choice)

    def row_for(self, ctype: ConflictType, risk: RiskLevel, reversible: bool) -> ConflictRow:
        """The first row matching a conflict of ``ctype`` on a tool of that kind."""
        return self._choice[(ctype, risk, reversible)]

    # -- loading -------------------------------------------------------------
    @classmethod
    def from_toml(cls, path: Path | str | None = None, *, text: str | None = None,
                  source: str | None = None) -> ConflictTable:
        """Load and validate; every problem is reported at once, as
        ``file:line: row[id].field: message``.

        Raises :class:`~buddy.rules.base.errors.RuleTableError`.
        """
        read, problems, complete, digest = read_rows(path, text, source, "conflicts",
                                                     _read_row)
        rows = [row for row, _ in read]
        if complete:
            for ctype, kind in _uncovered(rows).items():
                problems.add("row", _uncovered_message(ctype, *kind))
        problems.raise_if_any()
        return cls(tuple(rows), source=problems.source, digest=digest)


def _uncovered_message(ctype: ConflictType, risk: RiskLevel, reversible: bool) -> str:
    return (f"no row matches conflict type {ctype.value} (e.g. risk {risk.value}, reversible "
            f"{str(reversible).lower()}): add a row for it, or a last row with when = {{}}")


def _read_row(problems: Problems, raw: Mapping[str, Any], row_id: str, where: str,
              line: int | None) -> ConflictRow | None:
    before = len(problems.items)
    problems.unknown_keys(raw, ("id", "description", "when", "then"), where, line)
    description = problems.field(raw, "description", str, where, line, default="")
    if "when" not in raw:  # `when = {}` matches everything; a forgotten one must not
        problems.add(f"{where}.when", "is required (when = {} matches every conflict)", line)
    raw_when = raw.get("when", {})
    checked = len(problems.items)
    when = problems.when(raw_when, METRICS, f"{where}.when", line)
    if when is not None and len(problems.items) == checked:
        for group in ("all", "any"):
            for i, cond in enumerate(getattr(when, group)):
                at = f"{where}.when.{group}[{i}]"
                if cond.op not in (Op.EQ, Op.NE):
                    problems.add(f"{at}.op", f"must be eq or ne for metric {cond.metric} "
                                 f"(got {cond.op.value!r})", line)
                kind = _CATEGORIES.get(cond.metric)
                if kind is not None and cond.value not in {m.value for m in kind}:
                    allowed = ", ".join(m.value for m in kind)
                    problems.add(f"{at}.value", f"must be one of {allowed} for metric "
                                 f"{cond.metric} (got {cond.value!r})", line)
    then = problems.field(raw, "then", dict, where, line)
    fields: dict[str, Any] = {}
    if then is not None:
        at = f"{where}.then"
        strategy = problems.enum(then, "strategy", ResolutionStrategy, at, line)
        for key in sorted(set(then) - _ALL_THEN_KEYS):
            problems.add(f"{at}.{key}", "unknown key", line)
        if strategy is not None:
            fields = _read_then(problems, then, strategy, at, line)
    if len(problems.items) > before or when is None:
        return None
    return ConflictRow(row_id, when, description=description, **fields)


def _read_then(problems: Problems, then: Mapping[str, Any], strategy: ResolutionStrategy,
               at: str, line: int | None) -> dict[str, Any]:
    allowed = _THEN_KEYS[strategy]
    for key in sorted(set(then) & _ALL_THEN_KEYS - set(allowed)):
        problems.add(f"{at}.{key}", f"is not used by strategy {strategy.value} "
                     f"(it takes: {', '.join(allowed[1:]) or 'nothing more'})", line)
    fields: dict[str, Any] = {"strategy": strategy}
    if strategy is R.DELAY:
        delay = problems.field(then, "delay_s", float, at, line)
        cap = problems.field(then, "max_delay_s", float, at, line)
        if delay is not None and not delay > 0:
            problems.add(f"{at}.delay_s", f"must be > 0 (got {delay!r})", line)
        elif delay is not None and cap is not None and cap < delay:
            problems.add(f"{at}.max_delay_s", f"must be >= delay_s {delay} (got {cap!r})", line)
        fields.update(delay_s=delay, max_delay_s=cap)
    if strategy in (R.DELAY, R.REASSIGN):
        fallback = R.ABORT
        if "fallback" in then:
            fallback = problems.enum(then, "fallback", ResolutionStrategy, at, line)
            if fallback is not None and fallback not in _FALLBACKS:
                problems.add(f"{at}.fallback", f"must be ABORT or DOWNGRADE "
                             f"(got {fallback.value!r})", line)
        fields["fallback"] = fallback
    needs_mode = strategy is R.DOWNGRADE or fields.get("fallback") is R.DOWNGRADE
    if needs_mode:
        mode = problems.enum(then, "max_mode", ExecutionMode, at, line)
        if mode is ExecutionMode.LIVE:
            problems.add(f"{at}.max_mode", "must be MOCK or DRY_RUN (LIVE caps nothing)", line)
        fields["max_mode"] = mode
    elif "max_mode" in then and strategy is not R.ABORT:
        problems.add(f"{at}.max_mode", "is only used with DOWNGRADE (as strategy or fallback)",
                     line)
    return fields
