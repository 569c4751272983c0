"""The optimization monitor (Phase 19): each wave's plan against its outcome, as metrics,
anomalies and a health score.

It reads one :class:`ScheduleComparison` per wave, in order, and derives the
values every Phase 19 table tests (:data:`~buddy.rules.tables._optimization.COMPARISON_VALUES`,
each rounded to 9 decimals, so that ``0.9 - 0.7`` reads ``0.2`` and a value
exactly at a threshold is at it):

- ``success_error`` = |planned_success_rate - actual_success_rate|;
- ``throughput_efficiency`` = min(1, actual_throughput / planned_throughput),
  0 when planned is 0;
- ``confidence_error`` = |planned_confidence_delta - actual_confidence_delta|;
- and the comparison's own fields (accuracy_score, schedule_adherence, ...).

Per agent (those that ran a task: ``actual_success`` is not None):
``success_shortfall`` = expected_success - actual_success, ``success_error`` its
absolute value, ``tasks`` the tasks it ran. The tables say what the values mean:
``rules/optimization_metrics.toml`` (five metrics, each normal / warning /
critical), ``rules/scheduling_anomalies.toml`` (anomalies ``AN_001``, ``AN_002``,
... numbered over the run), ``rules/optimization_health.toml`` (four component
scores and their weights; the tier is ``rules/health.toml``'s, the one tier
table every monitor shares). Times are the injected clock's, as ISO 8601.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from buddy.engine.orchestration._monitor import iso
from buddy.engine.waves._opt_records import (
    OptimizationHealth,
    OptimizationMetric,
    ScheduleComparison,
    SchedulingAnomaly,
)
from buddy.rules.tables._monitoring import HealthTable
from buddy.rules.tables._optimization import (
    OptimizationHealthTable,
    OptimizationMetricsTable,
    SchedulingAnomalyTable,
)

__all__ = ["OptimizationMonitor", "agent_values", "comparison_values"]

#: Derived values are rounded to this many decimals before any table reads them.
DIGITS = 9


def _exact(value: float) -> float:
    return round(float(value), DIGITS)


def comparison_values(c: ScheduleComparison) -> dict[str, Any]:
    """The values the Phase 19 tables test, derived from one wave's comparison.

    >>> c = ScheduleComparison(1, 0.9, 0.8, 4.0, 3.0, 0.05, 0.02, 0.9, tasks=10)
    >>> v = comparison_values(c)
    >>> v["success_error"], v["throughput_efficiency"], v["confidence_error"], v["tasks"]
    (0.1, 0.75, 0.03, 10)
    """
    planned = c.planned_throughput
    efficiency = min(1.0, c.actual_throughput / planned) if planned > 0 else 0.0
    values: dict[str, Any] = {
        "accuracy_score": c.accuracy_score,
        "planned_success_rate": c.planned_success_rate,
        "actual_success_rate": c.actual_success_rate,
        "success_error": abs(c.planned_success_rate - c.actual_success_rate),
        "planned_throughput": c.planned_throughput, "actual_throughput": c.actual_throughput,
        "throughput_efficiency": efficiency,
        "planned_confidence_delta": c.planned_confidence_delta,
        "actual_confidence_delta": c.actual_confidence_delta,
        "confidence_error": abs(c.planned_confidence_delta - c.actual_confidence_delta),
        "schedule_adherence": c.schedule_adherence, "agent_utilization": c.agent_utilization,
        "availability": c.availability, "retry_rate": c.retry_rate,
        "max_load_ratio": c.max_load_ratio, "planned_objective": c.planned_objective}
    return {"tasks": int(c.tasks), **{k: _exact(v) for k, v in values.items()}}


def agent_values(c: ScheduleComparison) -> dict[str, dict[str, Any]]:
    """Each agent's values (agent order), for the agents that ran a task.

    >>> c = ScheduleComparison(1, 0.9, 0.8, 4.0, 3.0, 0.0, 0.0, 0.9, agents={
    ...     "a0": {"planned_tasks": 4, "actual_tasks": 4, "expected_success": 0.9,
    ...            "actual_success": 0.7},
    ...     "a1": {"planned_tasks": 1, "actual_tasks": 0, "expected_success": 0.8,
    ...            "actual_success": None}})
    >>> agent_values(c)  # doctest: +NORMALIZE_WHITESPACE
    {'a0': {'tasks': 4, 'planned_tasks': 4, 'expected_success': 0.9, 'actual_success': 0.7,
            'success_shortfall': 0.2, 'success_error': 0.2}}
    """
    out: dict[str, dict[str, Any]] = {}
    for agent, a in c.agents.items():
        actual = a.get("actual_success")
        if actual is None:
            continue
        expected = float(a.get("expected_success", 0.0))
        shortfall = expected - float(actual)
        out[agent] = {"tasks": int(a.get("actual_tasks", 0)),
                      "planned_tasks": int(a.get("planned_tasks", 0)),
                      "expected_success": _exact(expected), "actual_success": _exact(actual),
                      "success_shortfall": _exact(shortfall),
                      "success_error": _exact(abs(shortfall))}
    return out


class OptimizationMonitor:
    """Metrics, anomalies and health per wave, and the accuracy trend across waves.

    Examples
    --------
    >>> monitor = OptimizationMonitor(
    ...     OptimizationMetricsTable.default(), SchedulingAnomalyTable.default(),
    ...     OptimizationHealthTable.default(), HealthTable.default(), clock=lambda: 0.0)
    >>> c = ScheduleComparison(1, 0.92, 0.917, 42.0, 40.5, 0.05, 0.048, 0.997, tasks=12,
    ...                        schedule_adherence=0.94, agent_utilization=0.85)
    >>> metrics = monitor.calculate_metrics(c)
    >>> [(m.metric_name, m.status) for m in metrics][:2]
    [('schedule_accuracy', 'normal'), ('throughput_efficiency', 'normal')]
    >>> health = monitor.generate_system_health(c, metrics, monitor.detect_anomalies(c))
    >>> health.overall_health_score, health.health_status
    (95.857143, 'EXCELLENT')
    """

    def __init__(self, metrics: OptimizationMetricsTable, anomalies: SchedulingAnomalyTable,
                 health: OptimizationHealthTable, tiers: HealthTable, *,
                 clock: Callable[[], float]) -> None:
        self.metrics = metrics
        self.anomalies = anomalies
        self.health = health
        self.tiers = tiers
        self.clock = clock
        #: each wave's health, in order
        self.history: list[OptimizationHealth] = []
        #: each wave's comparison, in the order their health was generated
        self.comparisons: list[ScheduleComparison] = []
        self._anomaly_count = 0

    def calculate_metrics(self, comparison: ScheduleComparison) -> list[OptimizationMetric]:
        """Each metric of the metrics table (file order) on the wave, with its status."""
        at = iso(self.clock())
        values = comparison_values(comparison)
        out = []
        for rule, (name, value, status) in zip(self.metrics.metrics,
                                               self.metrics.evaluate(values), strict=True):
            out.append(OptimizationMetric(name, value, rule.unit, rule.target_value,
                                          rule.threshold_min, rule.threshold_max, status, at,
                                          comparison.wave))
        return out

    def detect_anomalies(self, comparison: ScheduleComparison) -> list[SchedulingAnomaly]:
        """Every anomaly row that holds on the wave (file order; an agent row per agent),
        numbered ``AN_001``, ``AN_002``, ... over the run."""
        at = iso(self.clock())
        found = self.anomalies.evaluate(comparison_values(comparison), agent_values(comparison),
                                        wave=comparison.wave)
        out = []
        for f in found:
            self._anomaly_count += 1
            out.append(SchedulingAnomaly(
                f"AN_{self._anomaly_count:03d}", f.type, f.severity, f.description,
                (comparison.wave,), f.affected_agents, f.recommendation, at, f.metric,
                f.value, f.threshold))
        return out

    def generate_system_health(self, comparison: ScheduleComparison,
                               metrics: Sequence[OptimizationMetric],
                               anomalies: Sequence[SchedulingAnomaly]) -> OptimizationHealth:
        """The wave's component scores, overall score (weighted sum, 0-100) and tier;
        remembered for :meth:`monitor_optimization_convergence`."""
        components = self.health.components(comparison_values(comparison))
        score = self.health.score(components)
        health = OptimizationHealth(score, self.tiers.tier(score).value, components,
                                    tuple(metrics), len(anomalies), iso(self.clock()),
                                    comparison.wave)
        self.history.append(health)
        self.comparisons.append(comparison)
        return health

    def monitor_optimization_convergence(
            self, weights: Sequence[Mapping[str, float]] = (), *,
            tolerance: float = 0.01) -> dict[str, Any]:
        """The accuracy and health trend across the waves seen, and the learned weights'.

        Parameters
        ----------
        weights : sequence of mappings, optional
            The learned heuristic weights after each wave (the feedback loop's
            ``weight_history``), for their last change.
        tolerance : float, optional
            Converged: at least two waves, the last accuracy change and the last
            weight change each at most this.

        Returns
        -------
        dict
            ``waves`` (per wave: accuracy_score, success_error, health score and
            status), ``accuracy_trend`` (last - first accuracy), ``mean_accuracy``,
            ``last_accuracy_change``, ``last_weight_change`` and ``converged``.
        """
        per = [{"wave": c.wave, "accuracy_score": round(c.accuracy_score, 6),
                "success_error": round(abs(c.planned_success_rate - c.actual_success_rate), 6),
                "health_score": h.overall_health_score, "health_status": h.health_status}
               for c, h in zip(self.comparisons, self.history, strict=True)]
        accuracy = [c.accuracy_score for c in self.comparisons]
        change = abs(accuracy[-1] - accuracy[-2]) if len(accuracy) >= 2 else None
        moved = (max(abs(weights[-1][k] - weights[-2].get(k, 0.0)) for k in weights[-1])
                 if len(weights) >= 2 else 0.0)
        return {"waves": per,
                "accuracy_trend": round(accuracy[-1] - accuracy[0], 6) if accuracy else 0.0,
                "mean_accuracy": round(sum(accuracy) / len(accuracy), 6) if accuracy else 0.0,
                "last_accuracy_change": None if change is None else round(change, 6),
                "last_weight_change": round(moved, 6),
                "converged": change is not None and change <= tolerance and moved <= tolerance}
