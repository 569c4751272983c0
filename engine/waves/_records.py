"""The records of the wave loop (Phase 21): tasks, agents, assignments, results, signals.

Every value crossing a component boundary of the loop is one of these: the
manager turns :class:`PredictedTask` values into a :class:`CoordinationPlan`
of :class:`TaskAssignment` values; the executor runs each assignment through
the task lifecycle and the engine into an :class:`ExecutionTask` (and its
:class:`ExecutionMetrics`); the feedback loop compares them with the
predictions (:class:`ExecutionOutcome`) and emits :class:`LearningSignal`
values; the monitor reports :class:`AgentMetric`, :class:`SystemAnomaly` and
:class:`SystemHealth` per wave. Names and fields are those of the Phase 21
module inventory, plus what a user needs to follow a task (its tool, mode,
gate and the engine context of its last attempt).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

import attrs

from buddy.machines.task import TaskState
from buddy.rules.tables._waves import load_metrics

__all__ = [
    "AgentMetric",
    "AgentState",
    "AgentStatus",
    "AssignmentStrategy",
    "CoordinationPlan",
    "ExecutionMetrics",
    "ExecutionOutcome",
    "ExecutionTask",
    "LearningSignal",
    "PredictedTask",
    "RetryStrategy",
    "ScheduleEntry",
    "SystemAnomaly",
    "SystemHealth",
    "TaskAssignment",
    "TaskState",
    "TaskStatus",
    "load_balance",
]

#: The task lifecycle's states are the declared machine's (``machines/task.py``).
TaskStatus = TaskState


class AgentStatus(enum.Enum):
    """Where an agent is: free, working a wave, or out (a task of its timed out)."""

    IDLE = "IDLE"
    BUSY = "BUSY"
    OFFLINE = "OFFLINE"


class AssignmentStrategy(enum.Enum):
    """The four built-in assignment strategies (others are registered by name)."""

    ROUND_ROBIN = "ROUND_ROBIN"
    LOAD_BALANCED = "LOAD_BALANCED"
    PRIORITY_BASED = "PRIORITY_BASED"
    CONFIDENCE_BASED = "CONFIDENCE_BASED"


class RetryStrategy(enum.Enum):
    """How long a failed task waits before its next attempt (values: ``rules/waves.toml``)."""

    EXPONENTIAL_BACKOFF = "EXPONENTIAL_BACKOFF"
    LINEAR_BACKOFF = "LINEAR_BACKOFF"
    NO_RETRY = "NO_RETRY"


def _args(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return {} if value is None else value


def _ids(value: Any) -> tuple[str, ...]:
    return tuple(value)


@attrs.frozen
class PredictedTask:
    """One task of ``predicted_tasks.jsonl``: a tool call an agent is to make.

    ``predicted_success_rate`` is the upstream prediction (0-1); ``confidence``
    the confidence the engine decides the call with (default: the predicted
    rate). ``priority``: higher runs first. ``dependencies``: ids of tasks that
    must have COMPLETED before this one may start (the dependency gate).
    ``agent_id``: the agent ``predicted_schedule.jsonl`` put it on (None: the
    strategy chooses).
    """

    task_id: str
    tool: str
    predicted_success_rate: float
    wave: int = 1
    priority: int = 0
    args: Mapping[str, Any] = attrs.field(factory=dict, converter=_args)
    dependencies: tuple[str, ...] = attrs.field(default=(), converter=_ids)
    confidence: float | None = None
    agent_id: str | None = None

    @property
    def decision_confidence(self) -> float:
        """The confidence the engine decides this task's calls with."""
        return self.predicted_success_rate if self.confidence is None else self.confidence


@attrs.frozen
class ScheduleEntry:
    """One line of ``predicted_schedule.jsonl``: which agent runs a task (and in which wave)."""

    task_id: str
    agent_id: str
    wave: int | None = None


@attrs.define
class AgentState:
    """What the manager knows of one agent (mutable: the manager updates it as tasks end).

    ``current_load``: tasks assigned to it in the wave being planned or run.
    ``prior``: the success rate assumed until one of its tasks has ended.
    """

    agent_id: str
    status: AgentStatus = AgentStatus.IDLE
    current_load: int = 0
    assigned_tasks: int = 0
    completed_tasks: int = 0
    failed_tasks: int = 0
    total_latency_s: float = 0.0
    prior: float = 1.0

    @property
    def available(self) -> bool:
        return self.status is not AgentStatus.OFFLINE

    @property
    def finished_tasks(self) -> int:
        return self.completed_tasks + self.failed_tasks

    @property
    def success_rate(self) -> float:
        """completed / (completed + failed); ``prior`` before any task has ended."""
        done = self.finished_tasks
        return self.completed_tasks / done if done else self.prior

    @property
    def avg_latency(self) -> float:
        """Mean seconds per finished task (0 before any)."""
        done = self.finished_tasks
        return self.total_latency_s / done if done else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"agent_id": self.agent_id, "status": self.status.value,
                "available": self.available, "current_load": self.current_load,
                "assigned_tasks": self.assigned_tasks, "completed_tasks": self.completed_tasks,
                "failed_tasks": self.failed_tasks,
                "success_rate": round(self.success_rate, 4),
                "avg_latency": round(self.avg_latency, 4)}


@attrs.frozen
class TaskAssignment:
    """A task put on an agent (a line of ``agent_assignments.jsonl``).

    ``assigned_at``: the run's (virtual) clock. ``reassigned_from``: the agent
    it was taken from when that agent went OFFLINE (None: first assignment).
    """

    task_id: str
    agent_id: str
    predicted_success_rate: float
    assigned_at: float
    wave: int
    strategy: str
    priority: int = 0
    reassigned_from: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "agent_id": self.agent_id,
                "predicted_success_rate": self.predicted_success_rate,
                "assigned_at": self.assigned_at, "wave": self.wave,
                "strategy": self.strategy, "priority": self.priority,
                "reassigned_from": self.reassigned_from}


def load_balance(loads: Mapping[str, int]) -> float:
    """``min_load / max_load`` over the agents given (1.0 when none has a task), as the
    monitor reads it (:func:`~buddy.rules.tables._waves.load_metrics`).

    >>> load_balance({"a": 5, "b": 5}), load_balance({"a": 2, "b": 4}), load_balance({})
    (1.0, 0.5, 1.0)
    """
    return load_metrics(loads.values())["load_balance"]


@attrs.frozen
class CoordinationPlan:
    """One wave's assignment: who runs what, and how evenly (``min_load / max_load``
    over the agents available when it was made)."""

    wave: int
    num_agents: int
    num_tasks: int
    strategy: str
    assignments: tuple[TaskAssignment, ...]
    load_balance_score: float

    @property
    def waves(self) -> int:  # the Phase 21 field: a plan covers one wave
        return 1

    def by_agent(self) -> dict[str, list[TaskAssignment]]:
        """Each agent's assignments, in the plan's order (agents with none left out)."""
        out: dict[str, list[TaskAssignment]] = {}
        for a in self.assignments:
            out.setdefault(a.agent_id, []).append(a)
        return out

    def to_json(self) -> dict[str, Any]:
        return {"wave": self.wave, "num_agents": self.num_agents, "num_tasks": self.num_tasks,
                "waves": self.waves, "strategy": self.strategy,
                "load_balance_score": round(self.load_balance_score, 4)}


@attrs.frozen
class ExecutionTask:
    """What became of one task (a line of ``executed_tasks.jsonl``).

    ``status`` is COMPLETED or FAILED; ``retry_count`` the attempts after the
    first; ``gate`` the safety gate that refused it (None: none did);
    ``mode`` the mode its last attempt ran in (None: never ran);
    ``context`` the engine's execution context of its last attempt;
    ``agent_id`` the agent that ran its last attempt.
    """

    task_id: str
    agent_id: str
    wave: int
    tool: str
    status: TaskState
    start_time: float
    end_time: float
    retry_count: int
    success: bool
    predicted_success_rate: float
    error_msg: str | None = None
    gate: str | None = None
    mode: str | None = None
    decided: str | None = None
    context: str | None = None
    timed_out: bool = False
    reassigned_from: str | None = None

    @property
    def latency(self) -> float:
        return self.end_time - self.start_time

    def to_json(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "agent_id": self.agent_id, "wave": self.wave,
                "tool": self.tool, "status": self.status.value,
                "start_time": self.start_time, "end_time": self.end_time,
                "retry_count": self.retry_count, "success_indicator": self.success,
                "error_msg": self.error_msg, "gate": self.gate, "mode": self.mode,
                "decided": self.decided, "context": self.context,
                "timed_out": self.timed_out, "reassigned_from": self.reassigned_from}


@attrs.frozen
class ExecutionMetrics:
    """Per-task metrics (a line of ``agent_metrics.jsonl``, kind ``task``)."""

    task_id: str
    agent_id: str
    wave: int
    predicted_vs_actual_delta: float  # actual (1/0) - predicted
    confidence_adjustment: float      # what the agent's confidence should move by
    latency: float                    # seconds, virtual clock

    def to_json(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "agent_id": self.agent_id, "wave": self.wave,
                "predicted_vs_actual_delta": round(self.predicted_vs_actual_delta, 6),
                "confidence_adjustment": round(self.confidence_adjustment, 6),
                "latency": round(self.latency, 6)}


@attrs.frozen
class ExecutionOutcome:
    """A task's prediction against what happened (the feedback loop's input)."""

    task_id: str
    agent_id: str
    wave: int
    predicted_success: float
    actual_success: float              # 1.0 or 0.0
    error_margin: float                # |predicted - actual|


@attrs.frozen
class LearningSignal:
    """A learning signal for one upstream target.

    ``target``: the sink's name (``coordination``, ``heuristics``,
    ``prediction``); ``target_phase``: its Phase number (18, 16, 20).
    """

    signal_type: str
    target: str
    target_phase: int
    content: Mapping[str, Any]
    confidence: float
    generated_at: float
    wave: int
    rule: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"signal_type": self.signal_type, "target": self.target,
                "target_phase": self.target_phase, "wave": self.wave, "rule": self.rule,
                "confidence": self.confidence, "generated_at": self.generated_at,
                "content": dict(self.content)}


@attrs.frozen
class AgentMetric:
    """One metric of one agent in one wave (a line of ``agent_metrics.jsonl``, kind ``agent``)."""

    agent_id: str
    metric_name: str
    value: float
    timestamp: float
    wave: int

    def to_json(self) -> dict[str, Any]:
        return {"agent_id": self.agent_id, "metric_name": self.metric_name,
                "value": self.value, "timestamp": self.timestamp, "wave": self.wave}


@attrs.frozen
class SystemAnomaly:
    """An anomaly found in a wave: which row, how bad, where, the value that tripped it."""

    anomaly_type: str
    severity: str
    description: str
    recommendation: str
    detected_at: float
    wave: int
    metric: str
    value: float
    threshold: float
    agent_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"anomaly_type": self.anomaly_type, "severity": self.severity,
                "wave": self.wave, "agent_id": self.agent_id, "metric": self.metric,
                "value": self.value, "threshold": self.threshold,
                "description": self.description, "recommendation": self.recommendation,
                "detected_at": self.detected_at}


@attrs.frozen
class SystemHealth:
    """A wave's health: the score (0-100), its tier, the metrics and anomalies."""

    wave: int
    health_score: float
    health_status: str
    timestamp: float
    metrics: Mapping[str, float]
    anomalies: tuple[SystemAnomaly, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"wave": self.wave, "health_score": self.health_score,
                "health_status": self.health_status, "timestamp": self.timestamp,
                "metrics": dict(self.metrics),
                "anomalies": [a.to_json() for a in self.anomalies]}
