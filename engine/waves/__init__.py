"""The wave loop (Phase 21): many agents, tasks in waves, each task a tool call the engine decides.

Built on the decision core and the same engine as ``buddy run``'s tool
orchestration: every attempt of a task is decided, run and audited by
:class:`~buddy.engine.core.Engine`; the task lifecycle is the declared
``task`` machine; gates, retries, anomalies, health and signals are rule
tables. Nothing here chooses an execution mode.
"""

from buddy.engine.waves._agents import (
    STRATEGIES,
    AgentManager,
    StrategyFn,
    get_strategy,
    register_strategy,
)
from buddy.engine.waves._executor import (
    Backend,
    ExecutorConfig,
    Runner,
    ThreadBackend,
    VirtualClock,
    VirtualTimeBackend,
    WaveExecutor,
    WaveRun,
)
from buddy.engine.waves._feedback import WaveFeedback, identify_patterns
from buddy.engine.waves._inputs import (
    ScheduleLoad,
    TaskLoad,
    apply_schedule,
    by_wave,
    load_schedule,
    load_tasks,
    tasks_to_jsonl,
)
from buddy.engine.waves._loop import WaveLoop, WaveOutcome
from buddy.engine.waves._monitor import WaveMetrics, WaveMonitor
from buddy.engine.waves._optimizer import (
    OBJECTIVES,
    Schedule,
    SimulatedSchedule,
    as_strategy,
    generate_schedule_recommendations,
    optimize,
    pair_scores,
    simulate_schedule,
    update_confidence_estimates,
)
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
from buddy.engine.waves._scenario import (
    AgentProfile,
    agent_permissions,
    default_agents,
    default_tasks,
)
from buddy.engine.waves._simulator import SimulatedFailure, SimulatedTimeout, WaveSimulator

__all__ = [
    "OBJECTIVES",
    "STRATEGIES",
    "agent_permissions",
    "AgentManager",
    "AgentMetric",
    "AgentProfile",
    "AgentState",
    "as_strategy",
    "AgentStatus",
    "apply_schedule",
    "AssignmentStrategy",
    "Backend",
    "by_wave",
    "CoordinationPlan",
    "default_agents",
    "default_tasks",
    "ExecutionMetrics",
    "ExecutionOutcome",
    "ExecutionTask",
    "ExecutorConfig",
    "generate_schedule_recommendations",
    "get_strategy",
    "identify_patterns",
    "LearningSignal",
    "optimize",
    "pair_scores",
    "load_balance",
    "load_schedule",
    "load_tasks",
    "PredictedTask",
    "register_strategy",
    "RetryStrategy",
    "Runner",
    "Schedule",
    "ScheduleEntry",
    "ScheduleLoad",
    "SimulatedFailure",
    "SimulatedSchedule",
    "simulate_schedule",
    "SimulatedTimeout",
    "StrategyFn",
    "SystemAnomaly",
    "SystemHealth",
    "TaskAssignment",
    "TaskLoad",
    "tasks_to_jsonl",
    "TaskStatus",
    "ThreadBackend",
    "update_confidence_estimates",
    "VirtualClock",
    "VirtualTimeBackend",
    "WaveExecutor",
    "WaveFeedback",
    "WaveLoop",
    "WaveMetrics",
    "WaveMonitor",
    "WaveOutcome",
    "WaveRun",
    "WaveSimulator",
]
