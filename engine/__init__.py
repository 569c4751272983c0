"""buddy's engine: contracts, decisions, execution, audit and replay.

Embed it with :class:`Engine`::

    from buddy.engine import Engine
    engine = Engine.default()
    decision = engine.decide("agent-1", "form_fill", confidence=0.85)

Names are imported on first use, so ``buddy.machines`` and ``buddy.rules`` can
import the leaf modules they need (``buddy.engine._modes``,
``buddy.engine.errors``) without loading the whole engine first.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from buddy.engine._approvals import Approval, ApprovalRequest, Grant, Verdict
    from buddy.engine._audit import AuditEvent, AuditLog, Masker, load_key
    from buddy.engine._contracts import ToolContract, ToolContractRegistry, ValidationResult
    from buddy.engine._controller import ExecutionResult, PendingCall, Session
    from buddy.engine._decision import Decision
    from buddy.engine._engine import Engine
    from buddy.engine._feedback import FeedbackLoop, LearningSignal, SignalTable, SignalType
    from buddy.engine._modes import ExecutionMode, RiskLevel
    from buddy.engine._monitor import Anomaly, AnomalyTable, HealthStatus, HealthTable, Monitor
    from buddy.engine._replay import Change, Divergence, ReplayReport, replay
    from buddy.engine.errors import BuddyError

_WHERE = {
    "Approval": "_approvals", "ApprovalRequest": "_approvals", "Grant": "_approvals",
    "Verdict": "_approvals",
    "AuditEvent": "_audit", "AuditLog": "_audit", "Masker": "_audit", "load_key": "_audit",
    "ToolContract": "_contracts", "ToolContractRegistry": "_contracts",
    "ValidationResult": "_contracts",
    "ExecutionResult": "_controller", "PendingCall": "_controller", "Session": "_controller",
    "Decision": "_decision",
    "Engine": "_engine",
    "ExecutionMode": "_modes", "RiskLevel": "_modes",
    "Monitor": "_monitor", "HealthStatus": "_monitor", "HealthTable": "_monitor",
    "AnomalyTable": "_monitor", "Anomaly": "_monitor",
    "FeedbackLoop": "_feedback", "SignalTable": "_feedback", "SignalType": "_feedback",
    "LearningSignal": "_feedback",
    "Change": "_replay", "Divergence": "_replay", "ReplayReport": "_replay", "replay": "_replay",
    "BuddyError": "errors",
}

__all__ = [
    "Anomaly",
    "AnomalyTable",
    "Approval",
    "ApprovalRequest",
    "AuditEvent",
    "AuditLog",
    "BuddyError",
    "Change",
    "Decision",
    "Divergence",
    "Engine",
    "ExecutionMode",
    "ExecutionResult",
    "FeedbackLoop",
    "Grant",
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
    "ToolContract",
    "ToolContractRegistry",
    "ValidationResult",
    "Verdict",
    "load_key",
    "replay",
]
assert sorted(__all__) == sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'buddy.engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"buddy.engine.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
