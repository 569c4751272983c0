"""Orchestration: many agents' plans through conflicts, the engine, a monitor and feedback.

Built on the decision core: every call is decided and run by
:class:`~buddy.engine.core.Engine`; nothing here chooses a mode. SIMULATED
tools (:class:`SimulatedTools`) and the default scenario live here too.
"""

from buddy.engine.orchestration._conflict_records import (
    Conflict,
    ConflictReport,
    ExecutedCall,
    Holder,
    Resolution,
    ResolutionReport,
)
from buddy.engine.orchestration._conflicts import ConflictResolver
from buddy.engine.orchestration._feedback import FeedbackLoop, LearningSignal
from buddy.engine.orchestration._monitor import MetricSnapshot, Monitor
from buddy.engine.orchestration._orchestrator import (
    OrchestrationLimits,
    OrchestrationResult,
    ToolOrchestrator,
)
from buddy.engine.orchestration._plans import (
    MAX_ARGS_DEPTH,
    ExecutionOutcome,
    PlanLoad,
    PlannedCall,
    ToolExecutionPlan,
    load_plans,
    plan_to_json,
)
from buddy.engine.orchestration._simulator import SimulatedClock, SimulatedTools

__all__ = [
    "MAX_ARGS_DEPTH",
    "Conflict",
    "ConflictReport",
    "ConflictResolver",
    "ExecutedCall",
    "ExecutionOutcome",
    "FeedbackLoop",
    "Holder",
    "LearningSignal",
    "MetricSnapshot",
    "Monitor",
    "OrchestrationLimits",
    "OrchestrationResult",
    "PlanLoad",
    "PlannedCall",
    "Resolution",
    "ResolutionReport",
    "SimulatedClock",
    "SimulatedTools",
    "ToolExecutionPlan",
    "ToolOrchestrator",
    "load_plans",
    "plan_to_json",
]
