"""buddy's engine: contracts, decisions, execution, audit and replay.

Embed it with :class:`Engine`::

    from buddy.engine import Engine
    engine = Engine.default()
    decision = engine.decide("agent-1", "form_fill", confidence=0.85)

The names below are the embedding API, gathered from the layers beneath:
:mod:`buddy.engine.core` (deciding, running, auditing, replaying),
:mod:`buddy.engine.orchestration` (the monitor and the feedback loop) and
:mod:`buddy.rules` (contracts and tables). Code inside buddy imports those
layers directly, never this package.
"""

from buddy.engine.core import (
    Approval,
    ApprovalRequest,
    AsyncHandlerError,
    AsyncSession,
    AuditEvent,
    AuditLog,
    CallRefused,
    Change,
    ConditionCheck,
    Decision,
    Divergence,
    Engine,
    ExecutionResult,
    Explanation,
    Grant,
    Handlers,
    PendingCall,
    ReplayReport,
    Session,
    Ticket,
    TicketError,
    TicketPending,
    ToolFailed,
    Verdict,
    load_key,
    replay,
)
from buddy.engine.orchestration import FeedbackLoop, LearningSignal, Monitor
from buddy.rules import (
    Anomaly,
    AnomalyTable,
    HealthStatus,
    HealthTable,
    SignalTable,
    SignalType,
    ToolContract,
    ToolContractRegistry,
    ValidationResult,
)
from buddy.rules.base import ExecutionMode, Masker, RiskLevel
from buddy.rules.base.errors import BuddyError

__all__ = [
    "Anomaly",
    "AnomalyTable",
    "Approval",
    "ApprovalRequest",
    "AsyncHandlerError",
    "AsyncSession",
    "AuditEvent",
    "AuditLog",
    "BuddyError",
    "CallRefused",
    "Change",
    "ConditionCheck",
    "Decision",
    "Divergence",
    "Engine",
    "ExecutionMode",
    "ExecutionResult",
    "Explanation",
    "FeedbackLoop",
    "Grant",
    "Handlers",
    "HealthStatus",
    "HealthTable",
    "LearningSignal",
    "Masker",
    "Monitor",
    "PendingCall",
    "ReplayReport",
    "RiskLevel",
    "Session",
    "SignalTable",
    "SignalType",
    "Ticket",
    "TicketError",
    "TicketPending",
    "ToolContract",
    "ToolContractRegistry",
    "ToolFailed",
    "ValidationResult",
    "Verdict",
    "load_key",
    "replay",
]
