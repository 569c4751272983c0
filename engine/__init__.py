"""buddy's engine: contracts, decisions, execution, audit and replay.

Embed it with :class:`Engine`::

    from buddy.engine import Engine
    engine = Engine.default()
    decision = engine.decide("agent-1", "form_fill", confidence=0.85)
"""

from buddy.engine._approvals import Approval, ApprovalRequest, Grant, Verdict
from buddy.engine._audit import AuditEvent, AuditLog, Masker, load_key
from buddy.engine._contracts import ToolContract, ToolContractRegistry, ValidationResult
from buddy.engine._controller import ExecutionResult, PendingCall, Session
from buddy.engine._decision import Decision
from buddy.engine._engine import Engine
from buddy.engine._modes import ExecutionMode, RiskLevel
from buddy.engine.errors import BuddyError

__all__ = [
    "Approval",
    "ApprovalRequest",
    "AuditEvent",
    "AuditLog",
    "BuddyError",
    "Decision",
    "Engine",
    "ExecutionMode",
    "ExecutionResult",
    "Grant",
    "Masker",
    "PendingCall",
    "RiskLevel",
    "Session",
    "ToolContract",
    "ToolContractRegistry",
    "ValidationResult",
    "Verdict",
    "load_key",
]
