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
from buddy.engine.waves._loop import WaveLoop, WaveOutcome, record_plan
from buddy.engine.waves._monitor import WaveMetrics, WaveMonitor
from buddy.engine.waves._opt_feedback import (
    OptimizationFeedbackLoop,
    evaluate_strategy_effectiveness,
    heuristic_errors,
)
from buddy.engine.waves._opt_inputs import (
    AgentPerformance,
    CoordinationHealth,
    CoordinationHistory,
    CoordinationPattern,
    CoordinationSignal,
    CoordinationSummary,
    agent_states,
    load_coordination,
)
from buddy.engine.waves._opt_monitor import OptimizationMonitor, agent_values, comparison_values
from buddy.engine.waves._opt_records import (
    FeedbackEvent,
    HeuristicWeights,
    OptimizationHealth,
    OptimizationMetric,
    OptimizationSignal,
    ScheduleComparison,
    ScheduledTask,
    SchedulingAnomaly,
)
from buddy.engine.waves._optimizer import OBJECTIVES, Schedule, as_strategy, optimize, pair_scores
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
from buddy.engine.waves._scheduler import AdaptiveScheduler, ScheduledWave, schedule_adherence
from buddy.engine.waves._simulator import SimulatedFailure, SimulatedTimeout, WaveSimulator

__all__ = [
    "OBJECTIVES",
    "STRATEGIES",
    "AdaptiveScheduler",
    "agent_permissions",
    "agent_states",
    "agent_values",
    "AgentManager",
    "AgentMetric",
    "AgentPerformance",
    "AgentProfile",
    "AgentState",
    "AgentStatus",
    "apply_schedule",
    "as_strategy",
    "AssignmentStrategy",
    "Backend",
    "by_wave",
    "comparison_values",
    "CoordinationHealth",
    "CoordinationHistory",
    "CoordinationPattern",
    "CoordinationPlan",
    "CoordinationSignal",
    "CoordinationSummary",
    "default_agents",
    "default_tasks",
    "evaluate_strategy_effectiveness",
    "ExecutionMetrics",
    "ExecutionOutcome",
    "ExecutionTask",
    "ExecutorConfig",
    "FeedbackEvent",
    "get_strategy",
    "heuristic_errors",
    "HeuristicWeights",
    "identify_patterns",
    "LearningSignal",
    "load_balance",
    "load_coordination",
    "load_schedule",
    "load_tasks",
    "OptimizationFeedbackLoop",
    "OptimizationHealth",
    "OptimizationMetric",
    "OptimizationMonitor",
    "OptimizationSignal",
    "optimize",
    "pair_scores",
    "PredictedTask",
    "record_plan",
    "register_strategy",
    "RetryStrategy",
    "Runner",
    "Schedule",
    "schedule_adherence",
    "ScheduleComparison",
    "ScheduledTask",
    "ScheduledWave",
    "ScheduleEntry",
    "ScheduleLoad",
    "SchedulingAnomaly",
    "SimulatedFailure",
    "SimulatedTimeout",
    "StrategyFn",
    "SystemAnomaly",
    "SystemHealth",
    "TaskAssignment",
    "TaskLoad",
    "tasks_to_jsonl",
    "TaskStatus",
    "ThreadBackend",
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
