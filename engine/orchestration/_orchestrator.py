"""The orchestration cycle (Phase 24's ToolOrchestrator).

One cycle takes a batch of plans that run at the same time and goes through
the seven steps of the source:

1. validate every call against the tool contracts;
2. register the calls with the conflict resolver;
3. detect conflicts (on the conflict graph);
4. resolve them with the strategies of the conflict table;
5. execute, slot by slot, through the engine (one session per plan, so a LIVE
   failure rolls back that plan's reversible work);
6. aggregate an :class:`OrchestrationResult` per plan;
7. emit every outcome to the monitor and the feedback loop, and the cycle's
   conflicts and resolutions to the feedback loop.

Modes are never chosen here: the engine's escalation machine decides each call,
and caps (dry-run-only, a DOWNGRADE resolution, the LIVE budget) go through its
``downgrade`` trigger.

A cycle is linear in its calls and conflicts: the conflicts are indexed by call
once per cycle, so aggregating a plan reads only its own. What a cycle did
besides its results is :attr:`ToolOrchestrator.last_cycle`; a long run that
streams it elsewhere keeps no outcome (``keep_outcomes=False``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs

from buddy.engine.core._controller import Session
from buddy.engine.core._engine import Engine
from buddy.engine.orchestration._conflict_records import (
    Conflict,
    ConflictReport,
    Resolution,
    ResolutionReport,
)
from buddy.engine.orchestration._conflicts import ConflictResolver
from buddy.engine.orchestration._feedback import FeedbackLoop
from buddy.engine.orchestration._monitor import Monitor
from buddy.engine.orchestration._plans import ExecutionOutcome, PlannedCall, ToolExecutionPlan
from buddy.machines import ExecutionState as EscalationState
from buddy.rules.base._values import ExecutionMode

__all__ = ["CycleRecord", "OrchestrationLimits", "OrchestrationResult", "ToolOrchestrator"]


@attrs.frozen
class OrchestrationLimits:
    """Caps a run puts on top of the policy; each can only lower a mode.

    ``dry_run_only`` caps every call at DRY_RUN; ``max_live_escalations`` caps
    calls at DRY_RUN once that many ran LIVE; ``confidence_threshold_for_live``
    caps calls below it at DRY_RUN (None: the escalation table alone decides).
    """

    dry_run_only: bool = False
    max_live_escalations: int | None = None
    confidence_threshold_for_live: float | None = None


@attrs.frozen
class OrchestrationResult:
    """What one plan came to (the Phase 24 shape, plus the per-call detail)."""

    plan_id: str
    successful_executions: int
    failed_executions: int
    tool_results: tuple[dict[str, Any], ...]
    conflicts_detected: int
    conflicts_resolved: int
    rollbacks_executed: int

    @property
    def ok(self) -> bool:
        return self.failed_executions == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "successful_executions": self.successful_executions,
            "failed_executions": self.failed_executions,
            "tool_results": list(self.tool_results),
            "conflicts_detected": self.conflicts_detected,
            "conflicts_resolved": self.conflicts_resolved,
            "rollbacks_executed": self.rollbacks_executed,
        }


@attrs.frozen
class CycleRecord:
    """What one cycle did besides its results.

    ``outcomes``: one per call of its valid plans that ran or was stopped, in the
    order they went to the monitor; ``conflicts``: those detected before the run,
    then those seen at run time (TIMEOUT), in id order; ``resolutions``: one per
    conflict detected before the run.
    """

    outcomes: tuple[ExecutionOutcome, ...] = ()
    conflicts: tuple[Conflict, ...] = ()
    resolutions: tuple[Resolution, ...] = ()


class ToolOrchestrator:
    """Runs cycles of plans through the engine.

    ``keep_outcomes``: keep every outcome in :attr:`outcomes` (False for a long
    run that streams :attr:`last_cycle` elsewhere: memory stays flat).
    """

    def __init__(self, engine: Engine, resolver: ConflictResolver, *,
                 monitor: Monitor | None = None, feedback: FeedbackLoop | None = None,
                 limits: OrchestrationLimits = OrchestrationLimits(),
                 clock: Callable[[], float] | None = None, keep_outcomes: bool = True,
                 ) -> None:
        self.engine = engine
        self.resolver = resolver
        self.monitor = monitor
        self.feedback = feedback
        self.limits = limits
        self.clock = clock or engine.clock
        self.live_runs = 0
        self.keep_outcomes = keep_outcomes
        #: every outcome, in order (only with ``keep_outcomes``).
        self.outcomes: list[ExecutionOutcome] = []
        #: what the last cycle did (empty before the first).
        self.last_cycle = CycleRecord()

    def run_cycle(self, plans: Sequence[ToolExecutionPlan]) -> list[OrchestrationResult]:
        """One orchestration cycle over plans that run at the same time."""
        registry = self.engine.registry
        # 1. validate against the contracts
        valid: list[ToolExecutionPlan] = []
        results: dict[str, OrchestrationResult] = {}
        for plan in plans:
            unknown = [c.tool for c in plan.calls if c.tool not in registry]
            if unknown:
                results[plan.plan_id] = _rejected(plan, f"unknown tool(s): {', '.join(unknown)}")
            else:
                valid.append(plan)
        calls = [c for plan in valid for c in plan.calls]
        # 2-4. register, detect and resolve conflicts
        report = self.resolver.detect(calls)
        resolved = self.resolver.resolve(report, calls)
        found = list(report.conflicts)  # and those seen at run time
        involved: dict[str, list[str]] = {}
        for conflict in report.conflicts:
            for call_id in conflict.calls:
                involved.setdefault(call_id, []).append(conflict.type.value)
        applied = {r.call: r for r in resolved.resolutions}
        # 5. execute slot by slot; one session per plan
        sessions = {plan.plan_id: self.engine.session(plan.calls[0].agent) for plan in valid}
        position: dict[str, int] = {}  # plan id -> the place of its first plan in the cycle
        for i, plan in enumerate(valid):
            position.setdefault(plan.plan_id, i)
        outcomes: dict[str, ExecutionOutcome] = {}
        failed_tools: dict[str, set[str]] = {plan.plan_id: set() for plan in valid}
        for call in calls:
            if call.id in resolved.aborted:  # never runs: what depends on it must not either
                failed_tools[call.plan_id].add(call.tool)
        by_context: dict[str, str] = {}  # execution context -> call id
        for call in sorted(resolved.calls, key=lambda c: (c.slot, position.get(c.plan_id, -1))):
            outcome, context, undone = self._run(
                call, sessions[call.plan_id], resolved, tuple(involved.get(call.id, ())),
                applied.get(call.id), failed_tools[call.plan_id], found)
            outcomes[call.id] = outcome
            if context is not None:
                by_context[context] = call.id
            for ctx in undone:  # a LIVE failure undid these earlier calls of the plan
                undone_id = by_context[ctx]
                outcomes[undone_id] = attrs.evolve(outcomes[undone_id], rolled_back=True)
            if not outcome.ok:
                failed_tools[call.plan_id].add(call.tool)
        if resolved.aborted:
            by_id: dict[str, PlannedCall] = {}
            for c in calls:
                by_id.setdefault(c.id, c)
            for call_id in sorted(resolved.aborted):
                call = by_id[call_id]
                res = applied.get(call_id)
                outcomes[call_id] = self._outcome(
                    call, None, None, False,
                    error=f"aborted: {res.reason.removeprefix('aborted: ') if res else 'conflict'}",
                    conflicts=tuple(involved.get(call_id, ())),
                    resolution=res.strategy.value if res else "ABORT")
        # 6. aggregate, 7. emit
        aggregate = _Aggregate(report, resolved)
        for plan in valid:
            results[plan.plan_id] = self._aggregate(plan, outcomes, aggregate)
        emitted = tuple(outcomes[c.id] for c in calls if c.id in outcomes)
        if self.keep_outcomes:
            self.outcomes.extend(emitted)
        for outcome in emitted:
            if self.monitor is not None:
                self.monitor.record(outcome)
            if self.feedback is not None:
                self.feedback.record(outcome)
        if self.feedback is not None:  # this cycle's conflicts: detected and seen at run time
            self.feedback.record_conflicts(found, resolved.resolutions)
        if self.monitor is not None:
            self.monitor.snapshot()
        self.last_cycle = CycleRecord(emitted, tuple(found), resolved.resolutions)
        return [results[plan.plan_id] for plan in plans]

    # -- one call ------------------------------------------------------------
    def _cap(self, call: PlannedCall, resolution: Any) -> tuple[ExecutionMode | None, str]:
        caps: list[tuple[ExecutionMode, str]] = []
        if resolution is not None and getattr(resolution, "max_mode", None) is not None:
            caps.append((resolution.max_mode, f"conflict resolution: {resolution.reason}"))
        if self.limits.dry_run_only:
            caps.append((ExecutionMode.DRY_RUN, "dry-run-only run"))
        budget = self.limits.max_live_escalations
        if budget is not None and self.live_runs >= budget:
            caps.append((ExecutionMode.DRY_RUN, f"max_live_escalations ({budget}) reached"))
        floor = self.limits.confidence_threshold_for_live
        if floor is not None and call.confidence < floor:
            caps.append((ExecutionMode.DRY_RUN,
                         f"confidence {call.confidence} below the run's LIVE floor {floor}"))
        if not caps:
            return None, ""
        mode, why = min(caps, key=lambda c: c[0].rank)
        return mode, why

    def _run(self, call: PlannedCall, session: Session, resolved: Any,
             conflicts: tuple[str, ...], resolution: Any, failed: set[str],
             found: list[Conflict]) -> tuple[ExecutionOutcome, str | None, tuple[str, ...]]:
        """Run one call: its outcome, its execution context, the contexts it undid
        (a TIMEOUT seen at run time is added to ``found``)."""
        contract = self.engine.registry.get(call.tool)
        blocked = [d for d in contract.dependencies if d in failed]
        strategy = resolution.strategy.value if resolution is not None else None
        if blocked:
            return self._outcome(call, None, None, False, conflicts=conflicts,
                                 resolution=strategy,
                                 error=f"not run: dependency {', '.join(blocked)} failed"), \
                None, ()
        max_mode, why = self._cap(call, resolution)
        start = self.clock()
        result = session.execute(call.tool, call.args, confidence=call.confidence,
                                 approval=call.approval, max_mode=max_mode, cap_reason=why,
                                 agent=call.agent)  # a REASSIGN may have changed the agent
        if result.mode is not None:
            self.resolver.record_execution(call, ok=result.ok, mode=result.mode,
                                           ident=result.context)
        if result.timed_out:
            found.extend(self.resolver.record_timeout(call).conflicts)
            conflicts = (*conflicts, "TIMEOUT")
        if result.mode is ExecutionMode.LIVE:
            self.live_runs += 1
        # A call capped below LIVE was never put to an approver: no approval to speak of.
        capped = max_mode is not None and max_mode is not ExecutionMode.LIVE
        approval = None if capped else _approval_of(self.engine, result)
        outcome = self._outcome(
            call, result.decision.mode if result.decision.allowed else None, result.mode,
            result.ok,
            duration_ms=(self.clock() - start) * 1000, error=result.error, approval=approval,
            conflicts=conflicts, resolution=strategy)
        return outcome, result.context, result.rolled_back

    def _outcome(self, call: PlannedCall, decided: ExecutionMode | None,
                 mode: ExecutionMode | None, ok: bool, *,
                 duration_ms: float = 0.0, error: str | None = None, rolled_back: bool = False,
                 approval: str | None = None, conflicts: tuple[str, ...] = (),
                 resolution: str | None = None) -> ExecutionOutcome:
        contract = self.engine.registry.get(call.tool)
        return ExecutionOutcome(
            call_id=call.id, plan_id=call.plan_id, agent=call.agent, tool=call.tool,
            risk=contract.risk.value, confidence=call.confidence, decided=decided, mode=mode,
            ok=ok, duration_ms=round(duration_ms, 3), error=error, rolled_back=rolled_back,
            approval=approval, conflicts=conflicts, resolution=resolution, ts=self.clock())

    def _aggregate(self, plan: ToolExecutionPlan, outcomes: dict[str, ExecutionOutcome],
                   aggregate: _Aggregate) -> OrchestrationResult:
        mine = [outcomes[c.id] for c in plan.calls if c.id in outcomes]
        detected = aggregate.conflicts_of(plan)
        tool_results = tuple({
            "call_id": o.call_id, "agent": o.agent, "tool": o.tool, "risk": o.risk,
            "confidence": o.confidence, "decided_mode": _name(o.decided), "mode": _name(o.mode),
            "ok": o.ok, "error": o.error, "approval": o.approval, "rolled_back": o.rolled_back,
            "conflicts": list(o.conflicts), "resolution": o.resolution,
            "duration_ms": o.duration_ms} for o in mine)
        return OrchestrationResult(
            plan_id=plan.plan_id,
            successful_executions=sum(o.ok for o in mine),
            failed_executions=sum(not o.ok for o in mine),
            tool_results=tool_results,
            conflicts_detected=len(detected),
            conflicts_resolved=sum(c.id in aggregate.resolved for c in detected),
            rollbacks_executed=sum(o.rolled_back for o in mine))


class _Aggregate:
    """One cycle's conflicts indexed by the calls they name, and the ids of those
    resolved: built once per cycle, read per plan."""

    def __init__(self, report: ConflictReport, resolved: ResolutionReport) -> None:
        self._conflicts = report.conflicts
        self._by_call: dict[str, list[int]] = {}
        for i, conflict in enumerate(report.conflicts):
            for call_id in conflict.calls:
                self._by_call.setdefault(call_id, []).append(i)
        self.resolved = {r.conflict for r in resolved.resolutions}

    def conflicts_of(self, plan: ToolExecutionPlan) -> list[Conflict]:
        """The conflicts naming a call of ``plan``, each once, in report order."""
        found = {i for c in plan.calls for i in self._by_call.get(c.id, ())}
        return [self._conflicts[i] for i in sorted(found)]


def _name(mode: ExecutionMode | None) -> str | None:
    """A mode as the JSON outputs write it."""
    return mode.value if mode is not None else None


def _rejected(plan: ToolExecutionPlan, why: str) -> OrchestrationResult:
    return OrchestrationResult(plan.plan_id, 0, len(plan.calls), tuple(
        {"call_id": c.id, "agent": c.agent, "tool": c.tool, "ok": False, "error": why}
        for c in plan.calls), 0, 0, 0)


def _approval_of(engine: Engine, result: Any) -> str | None:
    """granted / denied / pending / None, from where the call's machine went."""
    if result.decision.rule == "approval.denied":
        return "denied"
    if result.decision.state is EscalationState.AWAITING_APPROVAL:
        return "pending"
    contract = engine.registry.get(result.tool)
    if result.decision.mode is ExecutionMode.LIVE and contract.requires_approval:
        return "granted"
    return None
