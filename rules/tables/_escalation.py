"""The escalation table: which mode a tool call may reach, by the tool's risk.

``rules/escalation.toml`` holds one row per (risk, mode): DRY_RUN or LIVE is
granted to calls of tools of that risk when the row's ``when`` holds on the
call's ``confidence``. The table compiles once into one :class:`RiskPolicy`
per risk, which the escalation machine's guards read.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import attrs

from buddy.rules.base._convert import Problem
from buddy.rules.base._values import ExecutionMode, RiskLevel
from buddy.rules.tables._checks import invalid, row_id
from buddy.rules.tables._conditions import When, check_when, compile_when
from buddy.rules.tables._loader import NoKeys, ShippedTable, TableSpec, load

__all__ = ["METRICS", "EscalationRow", "EscalationTable", "EscalationThen", "RiskPolicy"]

#: Metrics an escalation row may test, and the types of their values.
METRICS: Mapping[str, type] = {"confidence": float}
_GETTERS: Mapping[str, Callable[[Any], Any]] = {"confidence": operator.attrgetter("confidence")}
_MODES = (ExecutionMode.DRY_RUN, ExecutionMode.LIVE)


def _not_mock(instance: Any, attribute: attrs.Attribute[Any], value: ExecutionMode) -> None:
    if value is ExecutionMode.MOCK:
        raise invalid(attribute.name, "MOCK is the floor and needs no row (use DRY_RUN or LIVE)")


@attrs.frozen
class EscalationThen:
    """What a row grants: ``mode`` (DRY_RUN or LIVE), perhaps only with an approval."""

    mode: ExecutionMode = attrs.field(validator=_not_mock)
    requires_approval: bool = False


@attrs.frozen
class EscalationRow:
    """Grant ``then.mode`` to calls of ``risk`` tools when ``when`` holds.

    ``when`` has no default: a forgotten one must not grant the mode unconditionally.
    """

    id: str = attrs.field(validator=row_id)
    risk: RiskLevel
    when: When
    then: EscalationThen
    description: str = ""

    @property
    def mode(self) -> ExecutionMode:
        return self.then.mode

    @property
    def requires_approval(self) -> bool:
        return self.then.requires_approval

    def describe(self) -> str:
        gate = " and approval" if self.requires_approval else ""
        return f"{self.mode.value} needs {self.when}{gate}"


@attrs.frozen
class RiskPolicy:
    """The compiled rows of one risk level; guards read these, never the file."""

    risk: RiskLevel
    dry_run_row: EscalationRow
    live_row: EscalationRow
    dry_run: Callable[[Any], bool] = attrs.field(eq=False, repr=False)
    live: Callable[[Any], bool] = attrs.field(eq=False, repr=False)


def _compile(row: EscalationRow) -> tuple[EscalationRow | None, list[Problem]]:
    # A row grants a mode: one that holds always (`when = {}`, or `any = []`, which
    # imposes nothing) would grant it at any confidence, so it must test something.
    when, problems = check_when(row.when, METRICS, at=("when",), nonempty=True)
    return (attrs.evolve(row, when=when) if when is not None else None), problems


def _check(file: NoKeys, rows: Sequence[EscalationRow]) -> Iterable[Problem]:
    """One row per (risk, mode), no more, no less."""
    first: dict[tuple[RiskLevel, ExecutionMode], str] = {}
    for i, row in enumerate(rows):
        key = (row.risk, row.mode)
        if key in first:
            yield Problem(("row", i), f"a second row for risk {row.risk.value} mode "
                          f"{row.mode.value} (first: {first[key]})")
        first.setdefault(key, row.id)
    for risk in RiskLevel:
        for mode in _MODES:
            if (risk, mode) not in first:
                yield Problem((), f"no row for risk {risk.value} mode {mode.value}")


SPEC: TableSpec[NoKeys, EscalationRow, EscalationRow] = TableSpec(
    "escalation", EscalationRow, compile=_compile, check=_check)


@attrs.frozen
class EscalationTable(ShippedTable):
    """Rows keyed by (risk, mode), compiled once into one :class:`RiskPolicy` per risk.

    >>> table = EscalationTable.default()
    >>> table.policies[RiskLevel.HIGH].live_row.describe()
    'LIVE needs confidence >= 0.85 and approval'
    """

    FILE: ClassVar[str] = "escalation.toml"

    rows: tuple[EscalationRow, ...]
    source: str = "<memory>"
    digest: str = ""
    policies: Mapping[RiskLevel, RiskPolicy] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        by_key = {(r.risk, r.mode): r for r in self.rows}
        policies = {}
        for risk in RiskLevel:
            dry, live = by_key[(risk, ExecutionMode.DRY_RUN)], by_key[(risk, ExecutionMode.LIVE)]
            policies[risk] = RiskPolicy(risk, dry, live, compile_when(dry.when, _GETTERS),
                                        compile_when(live.when, _GETTERS))
        object.__setattr__(self, "policies", policies)

    @classmethod
    def from_toml(cls, path: Path | str | None = None, *, text: str | None = None,
                  source: str | None = None) -> EscalationTable:
        """Load and validate; every problem is reported at once, naming file, line and field.

        Raises :class:`~buddy.rules.base.errors.RuleTableError`.

        >>> EscalationTable.from_toml(text='[[row]]\\nid = "x"\\nrisk = "LOW"\\n'
        ...     'when = { all = [ { metric = "confidence", op = "=>", value = 0.5 } ] }\\n'
        ...     'then = { mode = "DRY_RUN" }\\n')
        Traceback (most recent call last):
        ...
        buddy.rules.base.errors.RuleTableError: <text>:4: row[x].when.all[0].op: must be one of ...
        """
        loaded = load(SPEC, path, text=text, source=source)
        return cls(loaded.rows, source=loaded.source, digest=loaded.digest)
