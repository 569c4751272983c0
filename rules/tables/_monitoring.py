"""The monitor's rule tables: health weights and tiers, and anomaly rows.

``rules/health.toml`` gives the weights of the health score's five terms and
its tiers; ``rules/anomalies.toml`` the anomaly rows (system or per tool),
each a condition on the Phase 24 metrics with a severity and message
templates. The monitor (:mod:`buddy.engine.orchestration`) computes the
metrics; these tables say what they mean.
"""

from __future__ import annotations

import enum
import math
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import attrs

from buddy.rules.base._convert import Problem
from buddy.rules.tables._checks import (
    at_least,
    between,
    in_unit_interval,
    one_of,
    row_id,
    sums_to_one,
)
from buddy.rules.tables._conditions import Condition, When, check_when, compile_when
from buddy.rules.tables._loader import NoKeys, ShippedTable, TableSpec, load
from buddy.rules.tables._template import Template, check_template

__all__ = [
    "ANOMALY_METRICS",
    "ANOMALY_SCOPES",
    "HEALTH_METRICS",
    "METRICS",
    "WEIGHTS",
    "Anomaly",
    "AnomalyRow",
    "AnomalyRule",
    "AnomalyTable",
    "AnomalyThen",
    "HealthFile",
    "HealthRow",
    "HealthStatus",
    "HealthTable",
    "HealthThen",
    "Weights",
    "round_metric",
]

#: The 8 metrics of Phase 24, in the order of ``system_health.json``.
METRICS = ("tool_success_rate", "execution_latency_ms", "rollback_frequency", "conflict_rate",
           "live_execution_ratio", "confidence_drift", "approval_rate", "system_health_score")
#: Decimal places each metric is reported with (computations use full precision).
_DIGITS = {"confidence_drift": 4}
#: The health terms, each in [0, 1], in the order they are summed.
WEIGHTS = ("success_rate", "rollback", "conflict", "confidence_drift", "approval_rate")
#: What a health tier row may test.
HEALTH_METRICS: Mapping[str, type] = {"health_score": float}


class HealthStatus(enum.Enum):
    """Health tiers, best first."""

    EXCELLENT = "EXCELLENT"
    GOOD = "GOOD"
    FAIR = "FAIR"
    POOR = "POOR"


# -- health table ------------------------------------------------------------------

@attrs.frozen
class Weights:
    """The weight of each health term, each in [0, 1], together summing to 1."""

    success_rate: float = attrs.field(validator=in_unit_interval())
    rollback: float = attrs.field(validator=in_unit_interval())
    conflict: float = attrs.field(validator=in_unit_interval())
    confidence_drift: float = attrs.field(validator=in_unit_interval())
    approval_rate: float = attrs.field(validator=in_unit_interval())

    def __attrs_post_init__(self) -> None:
        sums_to_one(self)


@attrs.frozen
class HealthFile:
    """The top level of ``health.toml`` besides its tier rows."""

    weights: Weights


@attrs.frozen
class HealthThen:
    tier: HealthStatus


@attrs.frozen
class HealthRow:
    """A tier: ``then.tier`` for the scores ``when`` holds on, unless an earlier row's holds."""

    id: str = attrs.field(validator=row_id)
    when: When
    then: HealthThen
    description: str = ""


def _compile_tier(row: HealthRow) -> tuple[HealthRow | None, list[Problem]]:
    when, problems = check_when(row.when, HEALTH_METRICS, at=("when",))
    return (attrs.evolve(row, when=when) if when is not None else None), problems


def _check_tiers(file: HealthFile, rows: Sequence[HealthRow]) -> Iterable[Problem]:
    """Rows exist, each tier once, the row that always holds last and only last."""
    if not rows:
        yield Problem((), "needs at least one tier row")
        return
    seen: dict[HealthStatus, str] = {}
    for i, row in enumerate(rows):
        if row.when.always and i < len(rows) - 1:
            yield Problem(("row", i, "when"), "always holds, so the rows after it are never "
                          "reached (put it last)")
        tier = row.then.tier
        if tier in seen:
            yield Problem(("row", i, "then", "tier"), f"{tier.value} is already the tier of "
                          f"row[{seen[tier]}]")
        seen.setdefault(tier, row.id)
    if not rows[-1].when.always:
        yield Problem(("row", len(rows) - 1, "when"), "the last tier must always hold "
                      "(`when = {}`) so that every score gets a tier")


HEALTH: TableSpec[HealthFile, HealthRow, HealthRow] = TableSpec(
    "health", HealthRow, compile=_compile_tier, file=HealthFile, check=_check_tiers,
    required={"when": "is required (use `when = {}` for a row that always holds)"})


@attrs.frozen
class HealthTable(ShippedTable):
    """Health weights and tiers (``rules/health.toml``), compiled at load.

    >>> table = HealthTable.default()
    >>> table.weights["success_rate"], table.tier(75.0), table.tier(74.99)
    (0.3, <HealthStatus.GOOD: 'GOOD'>, <HealthStatus.FAIR: 'FAIR'>)
    """

    FILE: ClassVar[str] = "health.toml"

    weights: Mapping[str, float]
    tiers: tuple[tuple[HealthStatus, When], ...]
    source: str = "<memory>"
    digest: str = ""
    _holds: tuple[tuple[HealthStatus, Callable[[Mapping[str, Any]], bool]], ...] = attrs.field(
        init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        getters = {m: operator.itemgetter(m) for m in HEALTH_METRICS}
        object.__setattr__(self, "_holds", tuple((status, compile_when(when, getters))
                                                 for status, when in self.tiers))

    @classmethod
    def from_toml(cls, path: Path | str | None = None, *, text: str | None = None,
                  source: str | None = None) -> HealthTable:
        """Load and validate; every problem is reported at once, naming file, line and field.

        Raises :class:`~buddy.rules.base.errors.RuleTableError`.
        """
        loaded = load(HEALTH, path, text=text, source=source)
        return cls(weights=attrs.asdict(loaded.file.weights),
                   tiers=tuple((row.then.tier, row.when) for row in loaded.rows),
                   source=loaded.source, digest=loaded.digest)

    @staticmethod
    def terms(metrics: Mapping[str, float]) -> dict[str, float]:
        """The health terms of ``metrics``, each clamped to [0, 1]."""
        raw = {
            "success_rate": metrics["tool_success_rate"] / 100.0,
            "rollback": 1.0 - metrics["rollback_frequency"] / 100.0,
            "conflict": 1.0 - metrics["conflict_rate"] / 100.0,
            "confidence_drift": 1.0 - metrics["confidence_drift"],
            "approval_rate": metrics["approval_rate"] / 100.0,
        }
        return {k: min(1.0, max(0.0, v)) for k, v in raw.items()}

    def score(self, metrics: Mapping[str, float]) -> float:
        """``100 * sum(weight * term)``, rounded to 6 decimals so that a score
        of exactly 75 is not read as 74.99999999999999."""
        terms = self.terms(metrics)
        return round(100.0 * math.fsum(self.weights[k] * terms[k] for k in WEIGHTS), 6)

    def tier(self, score: float) -> HealthStatus:
        """The tier of the first row whose ``when`` holds on ``health_score``."""
        metrics = {"health_score": float(score)}
        for status, holds in self._holds:
            if holds(metrics):
                return status
        raise AssertionError("the last tier always holds")  # checked at load


# -- anomaly table -----------------------------------------------------------------

#: What an anomaly row may test, in either scope.
ANOMALY_METRICS: Mapping[str, type] = {**{m: float for m in METRICS},
                                       "executions": int, "calls": int}
#: Where an anomaly row is evaluated: once on every call, or once per tool.
ANOMALY_SCOPES = ("system", "tool")
_ANOMALY_GETTERS = {m: operator.itemgetter(m) for m in ANOMALY_METRICS}


@attrs.frozen
class Anomaly:
    """One anomaly found: which rule, how bad, where, and the value that tripped it."""

    type: str
    severity: int
    scope: str
    tool: str | None
    metric: str
    value: float
    threshold: float
    message: str
    recommended_action: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "severity": self.severity, "scope": self.scope,
                "tool": self.tool, "metric": self.metric,
                "value": round_metric(self.metric, self.value), "threshold": self.threshold,
                "message": self.message, "recommended_action": self.recommended_action}


@attrs.frozen
class AnomalyThen:
    """What an anomaly row reports: a severity (1-10) and message templates."""

    severity: int = attrs.field(validator=between(1, 10))
    message: str
    recommended_action: str = ""


@attrs.frozen
class AnomalyRow:
    """An anomaly row as written: evaluated per ``scope`` once ``min_executions`` are in."""

    id: str = attrs.field(validator=row_id)
    scope: str = attrs.field(validator=one_of(*ANOMALY_SCOPES))
    min_executions: int = attrs.field(validator=at_least(0))
    when: When
    then: AnomalyThen
    description: str = ""


@attrs.frozen
class AnomalyRule:
    """A compiled anomaly row. ``metric``/``threshold`` are its first condition's."""

    id: str
    scope: str
    min_executions: int
    severity: int
    message: Template
    recommended_action: Template
    when: When
    holds: Callable[[Mapping[str, Any]], bool] = attrs.field(eq=False, repr=False)

    @property
    def condition(self) -> Condition:
        return (*self.when.all, *self.when.any)[0]

    def check(self, metrics: Mapping[str, Any], tool: str | None = None) -> Anomaly | None:
        """The anomaly this rule finds on ``metrics``, or None."""
        if metrics["executions"] < self.min_executions or not self.holds(metrics):
            return None
        values = {**metrics, "tool": tool} if tool is not None else metrics
        cond = self.condition
        return Anomaly(self.id, self.severity, self.scope, tool, cond.metric,
                       metrics[cond.metric], float(cond.value), self.message.render(values),
                       self.recommended_action.render(values))


def _compile_anomaly(row: AnomalyRow) -> tuple[AnomalyRule | None, list[Problem]]:
    names = {**ANOMALY_METRICS, "tool": str} if row.scope == "tool" else ANOMALY_METRICS
    when, problems = check_when(row.when, ANOMALY_METRICS, at=("when",), nonempty=True)
    message, found = check_template(row.then.message, names, at=("then", "message"))
    problems += found
    action, found = check_template(row.then.recommended_action, names,
                                   at=("then", "recommended_action"))
    problems += found
    if when is None or message is None or action is None:
        return None, problems
    return AnomalyRule(row.id, row.scope, row.min_executions, row.then.severity, message,
                       action, when, compile_when(when, _ANOMALY_GETTERS)), []


ANOMALIES: TableSpec[NoKeys, AnomalyRow, AnomalyRule] = TableSpec(
    "anomalies", AnomalyRow, compile=_compile_anomaly)


@attrs.frozen
class AnomalyTable(ShippedTable):
    """The anomaly rows (``rules/anomalies.toml``), compiled at load.

    >>> [(r.id, r.scope, r.severity) for r in AnomalyTable.default().rules][:2]
    [('unsafe_escalation', 'system', 7), ('repeated_failures', 'tool', 8)]
    """

    FILE: ClassVar[str] = "anomalies.toml"

    rules: tuple[AnomalyRule, ...]
    source: str = "<memory>"
    digest: str = ""

    @classmethod
    def from_toml(cls, path: Path | str | None = None, *, text: str | None = None,
                  source: str | None = None) -> AnomalyTable:
        """Load and validate; every problem is reported at once, naming file, line and field.

        Raises :class:`~buddy.rules.base.errors.RuleTableError`.
        """
        loaded = load(ANOMALIES, path, text=text, source=source)
        return cls(loaded.rows, source=loaded.source, digest=loaded.digest)


def round_metric(metric: str, value: Any) -> Any:
    """``value`` rounded as reports show it (computations keep full precision)."""
    if isinstance(value, float):
        return round(value, _DIGITS.get(metric, 2))
    return value
