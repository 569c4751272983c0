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
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import attrs

from buddy.rules.tables._rowtable import (
    Field,
    RuleTable,
    Schema,
    Scope,
    TableFile,
    Template,
    compile_template,
)
from buddy.rules.tables._table import Condition, Problems, When

__all__ = [
    "ANOMALY_METRICS",
    "METRICS",
    "WEIGHTS",
    "Anomaly",
    "AnomalyRule",
    "AnomalyTable",
    "HealthStatus",
    "HealthTable",
    "round_metric",
]

#: The 8 metrics of Phase 24, in the order of ``system_health.json``.
METRICS = ("tool_success_rate", "execution_latency_ms", "rollback_frequency", "conflict_rate",
           "live_execution_ratio", "confidence_drift", "approval_rate", "system_health_score")
#: Decimal places each metric is reported with (computations use full precision).
_DIGITS = {"confidence_drift": 4}
#: The health terms, each in [0, 1], in the order they are summed.
WEIGHTS = ("success_rate", "rollback", "conflict", "confidence_drift", "approval_rate")
_WEIGHT_SUM_TOLERANCE = 1e-9


class HealthStatus(enum.Enum):
    """Health tiers, best first."""

    EXCELLENT = "EXCELLENT"
    GOOD = "GOOD"
    FAIR = "FAIR"
    POOR = "POOR"


# -- health table ------------------------------------------------------------------

def _read_weights(problems: Problems, value: Any, where: str, line: int | None,
                  metrics: Mapping[str, Any]) -> dict[str, float] | None:
    before = len(problems.items)
    for key in sorted(set(value) - set(WEIGHTS)):
        problems.add(f"{where}.{key}", f"unknown key (terms: {', '.join(WEIGHTS)})", line)
    weights: dict[str, float] = {}
    for key in WEIGHTS:
        weight = problems.field(value, key, float, where, line)
        if weight is not None and not 0.0 <= weight <= 1.0:
            problems.add(f"{where}.{key}", f"must be in [0, 1] (got {weight!r})", line)
        elif weight is not None:
            weights[key] = weight
    if len(problems.items) > before:
        return None
    total = math.fsum(weights.values())
    if abs(total - 1.0) > _WEIGHT_SUM_TOLERANCE:
        problems.add(where, f"must sum to 1 (got {total:.6g})", line)
        return None
    return weights


def _check_tiers(problems: Problems, table: RuleTable, lines: Mapping[str, int | None]) -> None:
    if not table.rows:
        problems.add("health.row", "needs at least one tier row", lines.get("row"))
        return
    seen: dict[str, str] = {}
    for i, row in enumerate(table.rows):
        always = not (row.when.all or row.when.any)
        if always and i < len(table.rows) - 1:
            problems.add(f"row[{row.id}].when", "always holds, so the rows after it are "
                         "never reached (put it last)", row.line)
        tier = row.then["tier"]
        if tier in seen:
            problems.add(f"row[{row.id}].then.tier", f"{tier} is already the tier of "
                         f"row[{seen[tier]}]", row.line)
        seen.setdefault(tier, row.id)
    last = table.rows[-1]
    if last.when.all or last.when.any:
        problems.add(f"row[{last.id}].when", "the last tier must always hold (`when = {}`) "
                     "so that every score gets a tier", last.line)


@attrs.frozen
class HealthTable(TableFile):
    """Health weights and tiers (``rules/health.toml``), compiled at load.

    >>> table = HealthTable.default()
    >>> table.weights["success_rate"], table.tier(75.0), table.tier(74.99)
    (0.3, <HealthStatus.GOOD: 'GOOD'>, <HealthStatus.FAIR: 'FAIR'>)
    """

    FILE: ClassVar[str] = "health.toml"
    SCHEMA: ClassVar[Schema] = Schema(
        table="health",
        metrics={"health_score": float},
        then={"tier": Field(str, choices=tuple(s.value for s in HealthStatus))},
        top={"weights": Field(dict, reader=_read_weights)},
        check=_check_tiers,
    )

    weights: Mapping[str, float]
    tiers: tuple[tuple[HealthStatus, When], ...]
    table: RuleTable = attrs.field(eq=False, repr=False)
    _holds: tuple[tuple[HealthStatus, Callable[[Mapping[str, Any]], bool]], ...] = attrs.field(
        eq=False, repr=False)

    @classmethod
    def from_table(cls, table: RuleTable) -> HealthTable:
        holds = tuple((HealthStatus(row.then["tier"]), h) for row, h in table.compiled)
        tiers = tuple((HealthStatus(row.then["tier"]), row.when) for row in table.rows)
        return cls(weights=dict(table.top["weights"]), tiers=tiers, table=table, holds=holds)

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
                       metrics[cond.metric], cond.value, self.message.render(values),
                       self.recommended_action.render(values))


@attrs.frozen
class AnomalyTable(TableFile):
    """The anomaly rows (``rules/anomalies.toml``), compiled at load.

    >>> [(r.id, r.scope, r.severity) for r in AnomalyTable.default().rules][:2]
    [('unsafe_escalation', 'system', 7), ('repeated_failures', 'tool', 8)]
    """

    FILE: ClassVar[str] = "anomalies.toml"
    SCHEMA: ClassVar[Schema] = Schema(
        table="anomalies",
        metrics=ANOMALY_METRICS,
        then={"severity": Field(int, minimum=1, maximum=10),
              "message": Field(str, template=True),
              "recommended_action": Field(str, required=False,
                                          default=compile_template("", {}), template=True)},
        extras={"scope": Field(str, choices=("system", "tool")),
                "min_executions": Field(int, minimum=0)},
        scope="scope",
        scopes={"system": Scope(), "tool": Scope(names={"tool": str})},
        nonempty_when=True,
    )

    rules: tuple[AnomalyRule, ...]
    table: RuleTable = attrs.field(eq=False, repr=False)

    @classmethod
    def from_table(cls, table: RuleTable) -> AnomalyTable:
        rules = tuple(
            AnomalyRule(row.id, row.extras["scope"], row.extras["min_executions"],
                        row.then["severity"], row.then["message"],
                        row.then["recommended_action"], row.when, holds)
            for row, holds in table.compiled)
        return cls(rules=rules, table=table)


def round_metric(metric: str, value: Any) -> Any:
    """``value`` rounded as reports show it (computations keep full precision)."""
    if isinstance(value, float):
        return round(value, _DIGITS.get(metric, 2))
    return value
