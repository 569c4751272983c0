"""The monitor: metrics over execution outcomes, a health score, its tier and anomalies.

The monitor reads nothing but :class:`~buddy.engine._plans.ExecutionOutcome`
values (:meth:`Monitor.record`). A call *executed* when its handler ran
(``outcome.mode`` is not None); a call aborted by conflict resolution is
recorded but never executed. Over the calls of one scope (every call, or one
tool's), the 8 metrics of Phase 24 are:

=======================  =========================================================
``tool_success_rate``    % of executions that succeeded (``ok``); 100 with none
``execution_latency_ms`` mean ``duration_ms`` of executions; 0 with none
``rollback_frequency``   % of executions that were rolled back; 0 with none
``conflict_rate``        % of calls that took part in at least one conflict
                         (``outcome.conflicts`` non-empty, executed or not); 0 with
                         none. Derived from the outcomes: the resolver marks each
                         call it found in a conflict, so no separate count is kept.
``live_execution_ratio`` % of executions that ran in LIVE mode; 0 with none
``confidence_drift``     0-1: | mean predicted confidence - fraction that
                         succeeded |, over executions; 0 with none. It is the
                         calibration gap of the whole run; opposite gaps in
                         different confidence ranges cancel here, so the feedback
                         loop also compares them per confidence bucket.
``approval_rate``        % of calls that needed an approval (``outcome.approval``
                         not None) whose approval was granted (denied and pending
                         count against it); 100 when none was needed
``system_health_score``  0-100, the weighted score of ``rules/health.toml``
=======================  =========================================================

With no evidence the metrics read as "nothing wrong" (health 100), and every
anomaly row carries a ``min_executions`` guard. :meth:`Monitor.metrics` and
:meth:`Monitor.tool_metrics` also give ``executions`` and ``calls``, the counts
anomaly rows can test.

The health score and its tiers come from :class:`HealthTable`, the anomalies
from :class:`AnomalyTable`; both load from rule tables in the shared format and
a user's copy replaces the default (``from_dir``/``from_toml``).
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

import attrs

from buddy.engine._plans import ExecutionOutcome
from buddy.rules._rowtable import (
    Field,
    RuleTable,
    Schema,
    Scope,
    TableFile,
    Template,
    compile_template,
)
from buddy.rules._table import Condition, Problems, When

__all__ = [
    "METRICS",
    "Anomaly",
    "AnomalyRule",
    "AnomalyTable",
    "HealthStatus",
    "HealthTable",
    "MetricSnapshot",
    "Monitor",
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


def iso(ts: float) -> str:
    """An epoch reading as ISO 8601 UTC to the second, e.g. ``2024-01-15T14:30:25Z``.

    >>> iso(0.0)
    '1970-01-01T00:00:00Z'
    """
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
                "value": _round(self.metric, self.value), "threshold": self.threshold,
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


# -- the monitor -------------------------------------------------------------------

#: Confidences and durations are summed as integers (nano-units, nanoseconds), so a
#: sum, and every metric, is the same whatever order the outcomes came in.
UNIT = 1_000_000_000
NS_PER_MS = 1_000_000


class Tally:
    """Running counts over outcomes; every metric is computed from these."""

    __slots__ = ("calls", "runs", "ok", "duration_ms", "rolled_back", "conflicted", "live",
                 "confidence", "asked", "granted")

    def __init__(self) -> None:
        self.calls = self.runs = self.ok = self.rolled_back = 0
        self.conflicted = self.live = self.asked = self.granted = 0
        self.duration_ms = self.confidence = 0  # in ns and nano-units

    def add(self, outcome: ExecutionOutcome) -> None:
        self.calls += 1
        if outcome.conflicts:
            self.conflicted += 1
        if outcome.approval is not None:
            self.asked += 1
            self.granted += outcome.approval == "granted"
        if outcome.mode is None:
            return
        self.runs += 1
        self.ok += bool(outcome.ok)
        self.duration_ms += round(outcome.duration_ms * NS_PER_MS)
        self.rolled_back += bool(outcome.rolled_back)
        self.live += outcome.mode == "LIVE"
        self.confidence += round(outcome.confidence * UNIT)

    def metrics(self, health: HealthTable) -> dict[str, Any]:
        runs, calls = self.runs, self.calls
        out: dict[str, Any] = {
            "tool_success_rate": 100.0 * self.ok / runs if runs else 100.0,
            "execution_latency_ms": self.duration_ms / (runs * NS_PER_MS) if runs else 0.0,
            "rollback_frequency": 100.0 * self.rolled_back / runs if runs else 0.0,
            "conflict_rate": 100.0 * self.conflicted / calls if calls else 0.0,
            "live_execution_ratio": 100.0 * self.live / runs if runs else 0.0,
            "confidence_drift": abs(self.confidence - self.ok * UNIT) / (runs * UNIT)
            if runs else 0.0,
            "approval_rate": 100.0 * self.granted / self.asked if self.asked else 100.0,
        }
        out["system_health_score"] = health.score(out)
        out["executions"] = runs
        out["calls"] = calls
        return out


def _round(metric: str, value: Any) -> Any:
    if isinstance(value, float):
        return round(value, _DIGITS.get(metric, 2))
    return value


@attrs.frozen
class MetricSnapshot:
    """The metrics at one clock reading: system-wide and per tool."""

    ts: float
    metrics: Mapping[str, Any]
    tools: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)

    @property
    def timestamp(self) -> str:
        return iso(self.ts)


class Monitor:
    """Metrics, health and anomalies over recorded outcomes.

    Parameters
    ----------
    anomalies, health:
        The rule tables; the shipped ones by default.
    clock:
        Epoch seconds, read for snapshots and report timestamps.

    Examples
    --------
    >>> from buddy.engine._plans import ExecutionOutcome
    >>> monitor = Monitor(clock=lambda: 0.0)
    >>> monitor.record(ExecutionOutcome("c1", "p1", "a1", "form_fill", "LOW", 0.9,
    ...                                 "MOCK", "MOCK", ok=True, duration_ms=40.0))
    >>> monitor.metrics()["tool_success_rate"], monitor.health_status().value
    (100.0, 'EXCELLENT')
    >>> monitor.system_health()["timestamp"]
    '1970-01-01T00:00:00Z'
    """

    def __init__(self, anomalies: AnomalyTable | None = None, health: HealthTable | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.anomaly_table = anomalies if anomalies is not None else AnomalyTable.default()
        self.health_table = health if health is not None else HealthTable.default()
        self.clock = clock
        self._all = Tally()
        self._tools: dict[str, Tally] = {}
        self._history: list[MetricSnapshot] = []

    # -- recording -------------------------------------------------------------
    def record(self, outcome: ExecutionOutcome) -> None:
        """Count one outcome, system-wide and for its tool."""
        self._all.add(outcome)
        tally = self._tools.get(outcome.tool)
        if tally is None:
            tally = self._tools[outcome.tool] = Tally()
        tally.add(outcome)

    def snapshot(self) -> MetricSnapshot:
        """Append the current metrics, stamped with the clock, to :attr:`metric_history`."""
        snap = MetricSnapshot(self.clock(), self.metrics(), self.tool_metrics())
        self._history.append(snap)
        return snap

    # -- metrics -------------------------------------------------------------------
    def metrics(self) -> dict[str, Any]:
        """The 8 metrics over every call, plus ``executions`` and ``calls``."""
        return self._all.metrics(self.health_table)

    def tool_metrics(self) -> dict[str, dict[str, Any]]:
        """The same metrics per tool, tools sorted by name."""
        return {tool: self._tools[tool].metrics(self.health_table)
                for tool in sorted(self._tools)}

    def calculate_health_score(self) -> float:
        """The health score (0-100) of every call so far."""
        return self.health_table.score(self.metrics())

    def categorize(self, score: float) -> HealthStatus:
        """The tier of ``score``."""
        return self.health_table.tier(score)

    def health_status(self) -> HealthStatus:
        """The tier of the current health score."""
        return self.categorize(self.calculate_health_score())

    def detect_anomalies(self) -> list[Anomaly]:
        """Every anomaly of the current metrics, in table order (tools by name within a row)."""
        system = self.metrics()
        tools = self.tool_metrics()
        found = []
        for rule in self.anomaly_table.rules:
            if rule.scope == "system":
                anomaly = rule.check(system)
                if anomaly is not None:
                    found.append(anomaly)
                continue
            for tool, metrics in tools.items():
                anomaly = rule.check(metrics, tool)
                if anomaly is not None:
                    found.append(anomaly)
        return found

    # -- history and reports ---------------------------------------------------
    @property
    def metric_history(self) -> tuple[MetricSnapshot, ...]:
        """Every snapshot taken, oldest first."""
        return tuple(self._history)

    def history(self, metric: str, tool: str | None = None) -> list[tuple[str, Any]]:
        """``(timestamp, value)`` of one metric (system-wide, or of ``tool``) per snapshot."""
        if metric not in ANOMALY_METRICS:
            raise KeyError(metric)
        if tool is None:
            return [(s.timestamp, s.metrics[metric]) for s in self._history]
        return [(s.timestamp, s.tools[tool][metric]) for s in self._history if tool in s.tools]

    def metrics_summary(self) -> dict[str, Any]:
        """Current metrics (rounded), health, anomaly count and types, and counts."""
        metrics = self.metrics()
        score = metrics["system_health_score"]
        anomalies = self.detect_anomalies()
        return {
            "current_metrics": {m: _round(m, metrics[m]) for m in METRICS},
            "health_score": _round("system_health_score", score),
            "health_status": self.categorize(score).value,
            "anomaly_count": len(anomalies),
            "anomaly_types": sorted({a.type for a in anomalies}),
            "executions": metrics["executions"],
            "calls": metrics["calls"],
            "tools": len(self._tools),
            "snapshots": len(self._history),
            "timestamp": iso(self.clock()),
        }

    def system_health(self) -> dict[str, Any]:
        """The Phase 24 ``system_health.json`` document."""
        metrics = self.metrics()
        score = metrics["system_health_score"]
        return {
            "health_assessment": self.categorize(score).value,
            "health_score": _round("system_health_score", score),
            "anomalies": [a.to_dict() for a in self.detect_anomalies()],
            "metrics": {m: _round(m, metrics[m]) for m in METRICS},
            "timestamp": iso(self.clock()),
        }
