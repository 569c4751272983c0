"""The decision core: decide, approve, run, roll back, audit and replay one call at a time.

It imports the machines, the rule tables and the base layer, never the
orchestration or the app above it.
"""

from buddy.engine.core._approvals import Approval, ApprovalRequest, Grant, Verdict
from buddy.engine.core._audit import AuditLog
from buddy.engine.core._chain import load_key
from buddy.engine.core._controller import (
    AsyncHandlerError,
    AsyncSession,
    ExecutionResult,
    Handlers,
    PendingCall,
    Session,
)
from buddy.engine.core._decision import Decision
from buddy.engine.core._engine import Engine
from buddy.engine.core._events import AuditEvent
from buddy.engine.core._explain import ConditionCheck, Explanation
from buddy.engine.core._guard import CallRefused, ToolFailed
from buddy.engine.core._replay import Change, Divergence, ReplayReport, replay
from buddy.engine.core._tickets import Ticket, TicketError, TicketPending

__all__ = [
    "Approval",
    "ApprovalRequest",
    "AsyncHandlerError",
    "AsyncSession",
    "AuditEvent",
    "AuditLog",
    "CallRefused",
    "Change",
    "ConditionCheck",
    "Decision",
    "Divergence",
    "Engine",
    "ExecutionResult",
    "Explanation",
    "Grant",
    "Handlers",
    "PendingCall",
    "ReplayReport",
    "Session",
    "Ticket",
    "TicketError",
    "TicketPending",
    "ToolFailed",
    "Verdict",
    "load_key",
    "replay",
]
