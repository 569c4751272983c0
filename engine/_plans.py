"""Execution plans: what agents intend to call, and what happened when they did.

A :class:`ToolExecutionPlan` is one agent team's intent (the Phase 24
``ToolExecutionPlan``): calls assigned to agents, an execution order and a
confidence per call. The orchestrator flattens plans into :class:`PlannedCall`
values, the unit the conflict resolver, the controller, the monitor and the
feedback loop all speak; each run of one becomes an :class:`ExecutionOutcome`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

__all__ = ["ExecutionOutcome", "PlannedCall", "ToolExecutionPlan"]


@attrs.frozen
class PlannedCall:
    """One intended tool call.

    ``slot`` is the call's step in its plan's execution order: calls of any
    plans in the same slot run at the same time, so that is where RESOURCE and
    RATE_LIMIT conflicts live. ``resource`` names an exclusive resource the call
    holds while it runs (e.g. ``"crm:contact:42"``); None holds nothing.
    ``estimated_s`` is the planner's duration estimate, checked against the
    tool's timeout. ``approval`` is a one-shot approval answer, if the plan
    carries one.
    """

    id: str
    plan_id: str
    agent: str
    tool: str
    confidence: float
    slot: int = 0
    args: Mapping[str, Any] = attrs.field(factory=dict, eq=False)
    resource: str | None = None
    estimated_s: float | None = None
    approval: bool | None = None


@attrs.frozen
class ToolExecutionPlan:
    """A plan: which agent calls which tool, in which order, how confident.

    ``execution_order`` lists call ids; ``calls`` holds them. ``upstream_plan_id``
    and ``validation_id`` are the Phase 21 plan and Phase 22 validation it came
    from, kept for correlation.
    """

    plan_id: str
    calls: tuple[PlannedCall, ...]
    execution_order: tuple[str, ...]
    upstream_plan_id: str | None = None
    validation_id: str | None = None

    @property
    def agent_assignments(self) -> dict[str, str]:
        """call id -> agent."""
        return {c.id: c.agent for c in self.calls}

    @property
    def confidence_scores(self) -> dict[str, float]:
        """call id -> confidence."""
        return {c.id: c.confidence for c in self.calls}


@attrs.frozen
class ExecutionOutcome:
    """What one planned call came to; the monitor and the feedback loop read these.

    ``decided`` is the mode the policy decided (None when the call never reached
    a decision, e.g. aborted by conflict resolution); ``mode`` the mode its
    handler ran in (None when nothing ran). ``approval`` is ``"granted"``,
    ``"denied"``, ``"pending"`` (waited, none given) or None (not needed).
    ``conflicts`` lists the conflict types the call was part of; ``resolution``
    the strategy applied to it, if any.
    """

    call_id: str
    plan_id: str
    agent: str
    tool: str
    risk: str
    confidence: float
    decided: str | None
    mode: str | None
    ok: bool
    duration_ms: float = 0.0
    error: str | None = None
    rolled_back: bool = False
    approval: str | None = None
    conflicts: tuple[str, ...] = ()
    resolution: str | None = None
    ts: float = 0.0
