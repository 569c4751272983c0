"""The records of adaptive scheduling (Phase 19), with the names and fields of ``002``.

Each record's :meth:`to_json` is one line (or document) of the output file
named in its docstring, with 002's fields first, in 002's order; buddy's own
additions follow them. Times are the run's (virtual) clock in epoch seconds,
except ``ScheduledTask``'s start and end, which are seconds since the wave
began (002: ``scheduled_start_time: 0.0``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

__all__ = [
    "FeedbackEvent",
    "HeuristicWeights",
    "OptimizationHealth",
    "OptimizationMetric",
    "OptimizationSignal",
    "ScheduleComparison",
    "ScheduledTask",
    "SchedulingAnomaly",
]


def _r(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(value, digits)


@attrs.frozen
class ScheduledTask:
    """One task of a wave's schedule (a line of ``wave_N/<agent>/scheduled_tasks.jsonl``).

    ``scheduled_*``: when the plan expects it to start and end, seconds since the
    wave began (each agent runs its tasks one after another, in plan order, each
    taking the agent's expected duration). ``actual_*``: when it did (None until
    it ran; the start of its first attempt, the end of its last). ``priority``:
    the task's (higher runs first). ``status``: ``scheduled``, then
    ``completed``, ``failed`` or ``cancelled``. ``confidence``: the success the
    plan expects of the task on this agent, p(t, a). ``position``: its place in
    the agent's queue (0 first). ``reassigned_from``: the agent the plan put it
    on, when the scheduler moved it (an agent over its load threshold, or
    OFFLINE).
    """

    task_id: str
    agent_id: str
    wave: int
    scheduled_start_time: float
    scheduled_end_time: float
    priority: int
    confidence: float
    tool: str = ""
    position: int = 0
    actual_start_time: float | None = None
    actual_end_time: float | None = None
    status: str = "scheduled"
    reassigned_from: str | None = None
    retries: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "agent_id": self.agent_id, "wave": self.wave,
                "scheduled_start_time": _r(self.scheduled_start_time),
                "scheduled_end_time": _r(self.scheduled_end_time),
                "actual_start_time": _r(self.actual_start_time),
                "actual_end_time": _r(self.actual_end_time),
                "priority": self.priority, "status": self.status,
                "confidence": _r(self.confidence), "tool": self.tool,
                "position": self.position, "reassigned_from": self.reassigned_from,
                "retries": self.retries}


@attrs.frozen
class ScheduleComparison:
    """A wave's plan against what happened (a line of ``schedule_comparisons.jsonl``).

    Filled by the scheduler when the wave has ended; every other Phase 19 part
    (metrics, anomalies, health, feedback, the weight update) reads it.

    002's fields: ``planned_success_rate`` (the schedule's mean expected success,
    mean p(t, a)), ``actual_success_rate`` (tasks COMPLETED / tasks),
    ``planned_throughput`` / ``actual_throughput`` (work done per second: the
    tasks the plan expects to complete over its makespan / the tasks COMPLETED
    over the wave's actual duration; a failed task is no work done),
    ``planned_confidence_delta`` (mean over tasks of p(t, a) - the task's
    ``predicted_success_rate``: how far the plan expects to move success from
    the upstream prediction), ``actual_confidence_delta`` (mean over tasks of
    actual (1/0) - ``predicted_success_rate``), ``accuracy_score``
    (``1 - |planned_success_rate - actual_success_rate|``).

    buddy's: ``strategy`` (the objective), ``tasks``, ``schedule_adherence``
    (the scheduler's formula, in [0, 1]), ``agent_utilization`` (mean over the
    agents that had tasks of busy time / the wave's duration), ``availability``
    (agents available at the wave's end / at its start), ``retry_rate``
    (retries / tasks), ``max_load_ratio`` (the busiest agent's task count / the
    mean count over agents with tasks), ``planned_objective`` (the schedule's
    mean score per task for its objective) and per agent (``agents``: agent id ->
    ``{"planned_tasks", "actual_tasks", "expected_success", "actual_success"}``,
    ``expected_success`` the mean p(t, a) of its planned tasks, ``actual_success``
    completed / tasks it ran last, None when it ran none);
    ``first_attempt_success_rate`` (tasks that succeeded at their first attempt /
    tasks) and ``objective_score``: the strategy's objective as it turned out,
    the number whose trend across waves says whether planning improved (the
    scheduler's docstring defines it for each objective).
    """

    wave: int
    planned_success_rate: float
    actual_success_rate: float
    planned_throughput: float
    actual_throughput: float
    planned_confidence_delta: float
    actual_confidence_delta: float
    accuracy_score: float
    strategy: str = ""
    tasks: int = 0
    schedule_adherence: float = 1.0
    agent_utilization: float = 0.0
    availability: float = 1.0
    retry_rate: float = 0.0
    max_load_ratio: float = 1.0
    planned_objective: float = 0.0
    agents: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    first_attempt_success_rate: float = 0.0
    objective_score: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"wave": self.wave,
                "planned_success_rate": _r(self.planned_success_rate),
                "actual_success_rate": _r(self.actual_success_rate),
                "planned_throughput": _r(self.planned_throughput),
                "actual_throughput": _r(self.actual_throughput),
                "planned_confidence_delta": _r(self.planned_confidence_delta),
                "actual_confidence_delta": _r(self.actual_confidence_delta),
                "accuracy_score": _r(self.accuracy_score),
                "strategy": self.strategy, "tasks": self.tasks,
                "schedule_adherence": _r(self.schedule_adherence),
                "agent_utilization": _r(self.agent_utilization),
                "availability": _r(self.availability), "retry_rate": _r(self.retry_rate),
                "max_load_ratio": _r(self.max_load_ratio),
                "planned_objective": _r(self.planned_objective),
                "first_attempt_success_rate": _r(self.first_attempt_success_rate),
                "objective_score": _r(self.objective_score),
                "agents": {a: dict(v) for a, v in self.agents.items()}}


@attrs.frozen
class OptimizationMetric:
    """One metric of one wave against its target (a line of ``optimization_metrics.jsonl``).

    ``status``: ``normal`` (at or past the target), ``warning`` (between min and
    target), ``critical`` (outside [min, max]) -- the metrics table's rule.
    """

    metric_name: str
    value: float
    unit: str
    target_value: float
    threshold_min: float
    threshold_max: float
    status: str
    timestamp: str
    wave: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"metric_name": self.metric_name, "value": _r(self.value), "unit": self.unit,
                "target_value": self.target_value, "threshold_min": self.threshold_min,
                "threshold_max": self.threshold_max, "status": self.status,
                "timestamp": self.timestamp, "wave": self.wave}


@attrs.frozen
class SchedulingAnomaly:
    """An anomaly of a wave (a line of ``scheduling_anomalies.jsonl``): 002's fields, then
    the metric, its value and the threshold it crossed."""

    anomaly_id: str
    anomaly_type: str
    severity: str
    description: str
    affected_waves: tuple[int, ...]
    affected_agents: tuple[str, ...]
    recommendation: str
    timestamp: str
    metric: str = ""
    value: float = 0.0
    threshold: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"anomaly_id": self.anomaly_id, "anomaly_type": self.anomaly_type,
                "severity": self.severity, "description": self.description,
                "affected_waves": list(self.affected_waves),
                "affected_agents": list(self.affected_agents),
                "recommendation": self.recommendation, "timestamp": self.timestamp,
                "metric": self.metric, "value": _r(self.value), "threshold": self.threshold}


@attrs.frozen
class FeedbackEvent:
    """A feedback event (a line of ``optimization_feedback.jsonl``)."""

    feedback_id: str
    feedback_type: str
    confidence: float
    description: str
    recommendation: str
    supporting_evidence: tuple[str, ...]
    timestamp: str
    wave: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"feedback_id": self.feedback_id, "feedback_type": self.feedback_type,
                "confidence": _r(self.confidence, 4), "description": self.description,
                "recommendation": self.recommendation,
                "supporting_evidence": list(self.supporting_evidence),
                "timestamp": self.timestamp, "wave": self.wave}


@attrs.frozen
class OptimizationSignal:
    """A Phase 19 learning signal (a line of ``learning_signals.jsonl``): ``type`` one of
    the signal table's rows (``strategy_validation``, ``heuristic_update``, ...);
    ``target`` the phase it is for (``heuristics`` 16, ``coordination`` 18,
    ``prediction`` 20)."""

    signal_id: str
    type: str
    confidence: float
    description: str
    recommendation: str
    wave: int = 0
    target: str = ""
    timestamp: str = ""
    rule: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"signal_id": self.signal_id, "type": self.type,
                "confidence": _r(self.confidence, 4), "description": self.description,
                "recommendation": self.recommendation, "wave": self.wave,
                "target": self.target, "timestamp": self.timestamp, "rule": self.rule}


@attrs.frozen
class HeuristicWeights:
    """The learned heuristic weights (``heuristic_weights.json``): name -> weight, and
    when they were last updated (ISO 8601)."""

    weights: Mapping[str, float]
    updated_at: str

    def to_json(self) -> dict[str, Any]:
        return {**{k: round(v, 6) for k, v in self.weights.items()},
                "updated_at": self.updated_at}


@attrs.frozen
class OptimizationHealth:
    """A wave's health (``system_health.json``): the score 0-100 from four component
    scores, its tier, the metrics and the anomalies found."""

    overall_health_score: float
    health_status: str
    component_scores: Mapping[str, float]
    optimization_metrics: tuple[OptimizationMetric, ...]
    detected_anomalies: int
    timestamp: str
    wave: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"overall_health_score": self.overall_health_score,
                "health_status": self.health_status,
                "component_scores": dict(self.component_scores),
                "optimization_metrics": [
                    {"metric_name": m.metric_name, "value": _r(m.value), "status": m.status}
                    for m in self.optimization_metrics],
                "detected_anomalies": self.detected_anomalies, "timestamp": self.timestamp,
                "wave": self.wave}
