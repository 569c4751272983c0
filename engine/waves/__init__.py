"""The wave loop (Phase 21): many agents, tasks in waves, each task a tool call the engine decides.

Built on the decision core and the same engine as ``buddy run``'s tool
orchestration: every attempt of a task is decided, run and audited by
:class:`~buddy.engine.core.Engine`; the task lifecycle is the declared
``task`` machine; gates, retries, anomalies, health and signals are rule
tables. Nothing here chooses an execution mode.
"""

from buddy.engine.waves._records import (
    AgentMetric,
    AgentState,
    AgentStatus,
    AssignmentStrategy,
    CoordinationPlan,
    ExecutionMetrics,
    ExecutionOutcome,
    ExecutionTask,
    LearningSignal,
    PredictedTask,
    RetryStrategy,
    ScheduleEntry,
    SystemAnomaly,
    SystemHealth,
    TaskAssignment,
    TaskStatus,
    load_balance,
)

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
    "TaskStatus",
    "load_balance",
]
