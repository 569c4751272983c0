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
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import attrs

from buddy.rules.base._convert import Problem
from buddy.rules.base._masking import shown
from buddy.rules.base._values import ExecutionMode, RiskLevel
from buddy.rules.base.errors import BuddyError, RuleTableError
from buddy.rules.tables._checks import invalid, raise_all, row_id
from buddy.rules.tables._conditions import When, check_when, compile_when
from buddy.rules.tables._loader import NoKeys, ShippedTable, TableSpec, load

__all__ = [
    "METRICS",
    "ConflictRow",
    "ConflictTable",
    "ConflictThen",
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

#: Metrics a conflict row may test, and the types of their values (the two
#: enums take their values' names, ``"RESOURCE"``, ``"HIGH"``).
METRICS: Mapping[str, type] = {"type": ConflictType, "risk": RiskLevel, "reversible": bool}
# A row is matched against (type, risk, reversible) of the conflict and its tool.
_GETTERS: Mapping[str, Callable[[Any], Any]] = {
    "type": operator.itemgetter(0), "risk": operator.itemgetter(1),
    "reversible": operator.itemgetter(2)}
#: Every (risk, reversible) a contract can have: an irreversible tool is never LOW.
_TOOL_KINDS = tuple((risk, rev) for risk in RiskLevel for rev in (True, False)
                    if rev or risk is not RiskLevel.LOW)
_FALLBACKS = (R.ABORT, R.DOWNGRADE)
#: The keys of ``then`` each strategy takes besides ``strategy``.
_THEN_KEYS: Mapping[ResolutionStrategy, tuple[str, ...]] = {
    R.DELAY: ("delay_s", "max_delay_s", "fallback", "max_mode"),
    R.REASSIGN: ("fallback", "max_mode"),
    R.DOWNGRADE: ("max_mode",),
    R.ABORT: (),
}


def _default_fallback(then: ConflictThen) -> ResolutionStrategy | None:
    return R.ABORT if then.strategy in (R.DELAY, R.REASSIGN) else None


@attrs.frozen
class ConflictThen:
    """A strategy and its parameters.

    ``delay_s`` / ``max_delay_s``: DELAY waits ``delay_s`` per slot moved, at
    most ``max_delay_s``. ``fallback``: what DELAY or REASSIGN does when it
    cannot (ABORT, the default, or DOWNGRADE). ``max_mode``: the cap of
    DOWNGRADE (also as a fallback). A key the strategy does not use is refused.

    >>> ConflictThen(R.ABORT, delay_s=1.0)
    Traceback (most recent call last):
    ...
    buddy.rules.base.errors.RuleTableError: delay_s: is not used by strategy ABORT (it takes: ...)
    """

    strategy: ResolutionStrategy
    delay_s: float | None = None
    max_delay_s: float | None = None
    fallback: ResolutionStrategy | None = attrs.field(
        default=attrs.Factory(_default_fallback, takes_self=True))
    max_mode: ExecutionMode | None = None

    def __attrs_post_init__(self) -> None:
        raise_all(list(self._errors()))

    def _errors(self) -> Iterable[BuddyError]:
        strategy, allowed = self.strategy, _THEN_KEYS[self.strategy]
        unused = [k for k in ("delay_s", "fallback", "max_delay_s", "max_mode")
                  if getattr(self, k) is not None and k not in allowed]
        for key in unused:
            yield invalid(key, f"is not used by strategy {strategy.value} "
                          f"(it takes: {', '.join(allowed) or 'nothing more'})")
        if strategy is R.DELAY:
            delay, cap = self.delay_s, self.max_delay_s
            for key, value in (("delay_s", delay), ("max_delay_s", cap)):
                if value is None:
                    yield invalid(key, "is required")
            if delay is not None and not delay > 0:
                yield invalid("delay_s", f"must be > 0 (got {shown(delay)})")
            elif delay is not None and cap is not None and cap < delay:
                yield invalid("max_delay_s",
                              f"must be >= delay_s {delay} (got {shown(cap)})")
        if strategy in (R.DELAY, R.REASSIGN) and self.fallback not in _FALLBACKS:
            got = shown(getattr(self.fallback, "value", self.fallback))
            yield invalid("fallback", f"must be ABORT or DOWNGRADE (got {got})")
        if strategy is R.DOWNGRADE or self.fallback is R.DOWNGRADE:
            if self.max_mode is None:
                yield invalid("max_mode", "is required")
            elif self.max_mode is ExecutionMode.LIVE:
                yield invalid("max_mode",
                              "must be MOCK or DRY_RUN (LIVE caps nothing)")
        elif self.max_mode is not None and "max_mode" not in unused:
            yield invalid("max_mode",
                          "is only used with DOWNGRADE (as strategy or fallback)")


@attrs.frozen
class ConflictRow:
    """Resolve the conflicts ``when`` matches as ``then`` says."""

    id: str = attrs.field(validator=row_id)
    when: When
    then: ConflictThen
    description: str = ""

    @property
    def strategy(self) -> ResolutionStrategy:
        return self.then.strategy

    @property
    def delay_s(self) -> float | None:
        return self.then.delay_s

    @property
    def max_delay_s(self) -> float | None:
        return self.then.max_delay_s

    @property
    def fallback(self) -> ResolutionStrategy | None:
        return self.then.fallback

    @property
    def max_mode(self) -> ExecutionMode | None:
        return self.then.max_mode

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


def _uncovered_message(ctype: ConflictType, risk: RiskLevel, reversible: bool) -> str:
    return (f"no row matches conflict type {ctype.value} (e.g. risk {risk.value}, reversible "
            f"{str(reversible).lower()}): add a row for it, or a last row with when = {{}}")


def _compile(row: ConflictRow) -> tuple[ConflictRow | None, list[Problem]]:
    when, problems = check_when(row.when, METRICS, at=("when",))
    return (attrs.evolve(row, when=when) if when is not None else None), problems


def _check(file: NoKeys, rows: Sequence[ConflictRow]) -> Iterable[Problem]:
    """Every conflict type is matched by some row, for every kind of tool."""
    for ctype, kind in _uncovered(rows).items():
        yield Problem((), _uncovered_message(ctype, *kind))


SPEC: TableSpec[NoKeys, ConflictRow, ConflictRow] = TableSpec(
    "conflicts", ConflictRow, compile=_compile, check=_check,
    required={"when": "is required (when = {} matches every conflict)"})


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
    buddy.rules.base.errors.RuleTableError: c.toml:4: row[x].then.strategy: must be one of ...
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
            raise RuleTableError([f"{self.source}: {SPEC.name}: {_uncovered_message(t, *k)}"
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

    @classmethod
    def from_toml(cls, path: Path | str | None = None, *, text: str | None = None,
                  source: str | None = None) -> ConflictTable:
        """Load and validate; every problem is reported at once, as
        ``file:line: row[id].field: message``.

        Raises :class:`~buddy.rules.base.errors.RuleTableError`.
        """
        loaded = load(SPEC, path, text=text, source=source)
        return cls(loaded.rows, source=loaded.source, digest=loaded.digest)
