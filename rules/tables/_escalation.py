"""The escalation table: which mode a tool call may reach, by the tool's risk."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import attrs

from buddy.rules.base._values import ExecutionMode, RiskLevel
from buddy.rules.tables._table import (
    Problems,
    ShippedTable,
    When,
    compile_when,
    read_rows,
)

__all__ = ["EscalationRow", "EscalationTable", "RiskPolicy"]

#: Metrics an escalation row may test, and the TOML types of their values.
METRICS: Mapping[str, type | tuple[type, ...]] = {"confidence": float}
_GETTERS: Mapping[str, Callable[[Any], Any]] = {"confidence": operator.attrgetter("confidence")}


@attrs.frozen
class EscalationRow:
    """Grant ``mode`` to calls of ``risk`` tools when ``when`` holds."""

    id: str
    risk: RiskLevel
    mode: ExecutionMode
    when: When
    requires_approval: bool = False

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


@attrs.frozen
class EscalationTable(ShippedTable):
    """Rows keyed by (risk, mode), compiled once into one :class:`RiskPolicy` per risk."""

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

        >>> EscalationTable.from_toml(text='[[row]]\\nid = "x"\\nrisk = "LOW"\\n'
        ...     'when = { all = [ { metric = "confidence", op = "=>", value = 0.5 } ] }\\n'
        ...     'then = { mode = "DRY_RUN" }\\n')
        Traceback (most recent call last):
        ...
        buddy.rules.base.errors.RuleTableError: <text>:1: row[x].when.all[0].op: must be one of ...
        """
        read, problems, complete, digest = read_rows(path, text, source, "escalation",
                                                     _read_row)
        rows: list[EscalationRow] = []
        seen_keys: dict[tuple[RiskLevel, ExecutionMode], str] = {}
        for row, line in read:
            key = (row.risk, row.mode)
            if key in seen_keys:
                problems.add(f"row[{row.id}]", f"a second row for risk {row.risk.value} mode "
                             f"{row.mode.value} (first: {seen_keys[key]})", line)
            seen_keys.setdefault(key, row.id)
            rows.append(row)
        for risk in RiskLevel:
            for mode in (ExecutionMode.DRY_RUN, ExecutionMode.LIVE):
                if (risk, mode) not in seen_keys and complete:
                    problems.add("row", f"no row for risk {risk.value} mode {mode.value}")
        problems.raise_if_any()
        return cls(tuple(rows), source=problems.source, digest=digest)


def _read_row(problems: Problems, raw: Mapping[str, Any], row_id: str, where: str,
              line: int | None) -> EscalationRow | None:
    before = len(problems.items)
    problems.unknown_keys(raw, ("id", "risk", "when", "then", "description"), where, line)
    risk = problems.enum(raw, "risk", RiskLevel, where, line)
    if "when" not in raw:  # a forgotten `when` must not grant the mode unconditionally
        problems.add(f"{where}.when", "is required", line)
    when = problems.when(raw.get("when", {}), METRICS, f"{where}.when", line)
    then = problems.field(raw, "then", dict, where, line)
    mode, approval = None, False
    if then is not None:
        problems.unknown_keys(then, ("mode", "requires_approval"), f"{where}.then", line)
        mode = problems.enum(then, "mode", ExecutionMode, f"{where}.then", line)
        approval = problems.field(then, "requires_approval", bool, f"{where}.then", line,
                                  default=False)
        if mode is ExecutionMode.MOCK:
            problems.add(f"{where}.then.mode", "MOCK is the floor and needs no row "
                         "(use DRY_RUN or LIVE)", line)
    if len(problems.items) > before:
        return None
    return EscalationRow(row_id, risk, mode, when, bool(approval))
