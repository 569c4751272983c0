"""The monitor: metrics over execution outcomes, a health score, its tier and anomalies.

The monitor reads nothing but :class:`~buddy.engine.orchestration._plans.ExecutionOutcome`
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

import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import attrs

from buddy.engine.orchestration._plans import ExecutionOutcome
from buddy.rules.base._masking import shown
from buddy.rules.base._values import ExecutionMode
from buddy.rules.base.errors import InputError
from buddy.rules.tables._monitoring import (
    ANOMALY_METRICS,
    METRICS,
    Anomaly,
    AnomalyTable,
    HealthStatus,
    HealthTable,
    round_metric,
)

__all__ = ["MetricSnapshot", "Monitor", "Tally", "iso"]


def iso(ts: float) -> str:
    """An epoch reading as ISO 8601 UTC to the second, e.g. ``2024-01-15T14:30:25Z``;
    one beyond what a date holds (year 10000 on) as its seconds.

    >>> iso(0.0), iso(1e300)
    ('1970-01-01T00:00:00Z', '1e+300 s since the epoch')
    """
    try:
        return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, ValueError, OSError):  # a simulated clock far past year 9999
        return f"{ts:g} s since the epoch"


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
        self.live += outcome.mode is ExecutionMode.LIVE
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
    history_limit:
        Keep only the latest this many snapshots in :attr:`metric_history`
        (None: every one; a long run that reads none keeps memory flat with 0).

    Examples
    --------
    >>> from buddy.engine.orchestration._plans import ExecutionOutcome
    >>> mock = ExecutionMode.MOCK
    >>> monitor = Monitor(clock=lambda: 0.0)
    >>> monitor.record(ExecutionOutcome("c1", "p1", "a1", "form_fill", "LOW", 0.9,
    ...                                 mock, mock, ok=True, duration_ms=40.0))
    >>> monitor.metrics()["tool_success_rate"], monitor.health_status().value
    (100.0, 'EXCELLENT')
    >>> monitor.system_health()["timestamp"]
    '1970-01-01T00:00:00Z'
    """

    def __init__(self, anomalies: AnomalyTable | None = None, health: HealthTable | None = None,
                 clock: Callable[[], float] = time.time, history_limit: int | None = None,
                 ) -> None:
        if history_limit is not None and (isinstance(history_limit, bool) or
                                          not isinstance(history_limit, int) or
                                          history_limit < 0):
            raise InputError(f"history_limit must be a whole number >= 0 or None "
                             f"(got {shown(history_limit)})")
        self.anomaly_table = anomalies if anomalies is not None else AnomalyTable.default()
        self.health_table = health if health is not None else HealthTable.default()
        self.clock = clock
        self._all = Tally()
        self._tools: dict[str, Tally] = {}
        self._history: deque[MetricSnapshot] = deque(maxlen=history_limit)
        self._snapshots = 0  # taken, kept or not

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
        self._snapshots += 1
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
        """Every snapshot taken (the latest ``history_limit`` of them), oldest first."""
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
            "current_metrics": {m: round_metric(m, metrics[m]) for m in METRICS},
            "health_score": round_metric("system_health_score", score),
            "health_status": self.categorize(score).value,
            "anomaly_count": len(anomalies),
            "anomaly_types": sorted({a.type for a in anomalies}),
            "executions": metrics["executions"],
            "calls": metrics["calls"],
            "tools": len(self._tools),
            "snapshots": self._snapshots,
            "timestamp": iso(self.clock()),
        }

    def system_health(self) -> dict[str, Any]:
        """The Phase 24 ``system_health.json`` document."""
        metrics = self.metrics()
        score = metrics["system_health_score"]
        return {
            "health_assessment": self.categorize(score).value,
            "health_score": round_metric("system_health_score", score),
            "anomalies": [a.to_dict() for a in self.detect_anomalies()],
            "metrics": {m: round_metric(m, metrics[m]) for m in METRICS},
            "timestamp": iso(self.clock()),
        }
