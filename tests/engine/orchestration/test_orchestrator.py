"""Tests for buddy.engine.orchestration._orchestrator: the seven-step orchestration cycle.

Every test builds its plans by hand and runs them through an engine whose
handlers only record what ran (``Rig.runs``: call id and mode, in order) and
what was undone (``Rig.undone``). A handler fails when its arguments say so
(``{"fail": "LIVE"}``), so failures are chosen, never drawn.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from buddy.engine import Engine, FeedbackLoop, Monitor
from buddy.engine.orchestration._conflicts import ConflictResolver
from buddy.engine.orchestration._orchestrator import (
    CycleRecord,
    OrchestrationLimits,
    OrchestrationResult,
    ToolOrchestrator,
)
from buddy.engine.orchestration._plans import PlannedCall, ToolExecutionPlan
from buddy.rules.base._values import ExecutionMode
from buddy.rules.tables._catalogue import ToolContractRegistry
from buddy.rules.tables._conflicts import ConflictTable
from buddy.rules.tables._escalation import EscalationTable
from tests.helpers import ManualClock

REGISTRY = ToolContractRegistry.default()
ESCALATION = EscalationTable.default()
CONFLICTS = ConflictTable.default()
NO_LIMITS = OrchestrationLimits()
T0 = 1_705_329_025.0  # 2024-01-15T14:30:25Z

#: The six keys of the source's OrchestrationResult.
RESULT_KEYS = {"successful_executions", "failed_executions", "tool_results",
               "conflicts_detected", "conflicts_resolved", "rollbacks_executed"}


class Rig:
    """An orchestrator over recording handlers for every catalogue tool."""

    def __init__(self, *, limits: OrchestrationLimits = NO_LIMITS,
                 agents: dict[str, set[str]] | None = None, table: ConflictTable = CONFLICTS,
                 approver: Any = None, handled: tuple[str, ...] | None = None,
                 observed: bool = True, keep: bool = True) -> None:
        self.clock = ManualClock(T0)
        self.engine = Engine(REGISTRY, ESCALATION, clock=self.clock, approver=approver,
                             agents=agents)
        self.runs: list[tuple[str, str]] = []
        self.undone: list[str] = []
        for contract in REGISTRY:
            if handled is not None and contract.name not in handled:
                continue
            self.engine.register_handler(
                contract.name, mock=self._handler("MOCK"), dry_run=self._handler("DRY_RUN"),
                live=self._handler("LIVE"), undo=self._undo if contract.reversible else None)
        self.resolver = ConflictResolver(REGISTRY, table, agents=agents,
                                         audit=self.engine.audit, keep_records=keep)
        self.monitor = Monitor(clock=self.clock) if observed else None
        self.feedback = FeedbackLoop() if observed else None
        self.orchestrator = ToolOrchestrator(self.engine, self.resolver, monitor=self.monitor,
                                             feedback=self.feedback, limits=limits,
                                             keep_outcomes=keep)

    def _handler(self, mode: str):
        def run(args: dict[str, Any]) -> dict[str, Any]:
            self.clock.advance(0.25)
            self.runs.append((args["call"], mode))
            if args.get("fail") == mode:
                raise RuntimeError(f"{args['call']} failed in {mode}")
            return {"call": args["call"], "mode": mode}
        return run

    def _undo(self, args: dict[str, Any], result: Any) -> None:
        self.undone.append(args["call"])

    def cycle(self, *plans: ToolExecutionPlan) -> list[OrchestrationResult]:
        return self.orchestrator.run_cycle(list(plans))

    def records(self, kind: str | None = None, event: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self.engine.audit.records()
                if (kind is None or r["kind"] == kind) and (event is None or r["event"] == event)]

    def context_of(self, call_id: str) -> str:
        """The audit subject (context) the call ran under."""
        [ctx] = [r["subject"] for r in self.records("execution")
                 if r["data"]["args"]["call"] == call_id]
        return ctx


def plan(plan_id: str, *steps: tuple[Any, ...]) -> ToolExecutionPlan:
    """A plan whose step i (``(agent, tool, confidence[, fields])``) is in slot i.

    Every call's arguments name it (``{"call": id}``), plus the step's own ``args``.
    """
    calls = []
    for slot, (agent, tool, confidence, *rest) in enumerate(steps):
        fields = dict(rest[0]) if rest else {}
        ident = f"{plan_id}/s{slot + 1}"
        args = {"call": ident, **fields.pop("args", {})}
        calls.append(PlannedCall(ident, plan_id, agent, tool, confidence, slot=slot, args=args,
                                 **fields))
    return ToolExecutionPlan(plan_id, tuple(calls), tuple(c.id for c in calls))


def by_call(*results: OrchestrationResult) -> dict[str, dict[str, Any]]:
    return {t["call_id"]: t for r in results for t in r.tool_results}


def row(t: dict[str, Any]) -> tuple[Any, ...]:
    return (t["call_id"], t["agent"], t["tool"], t["decided_mode"], t["mode"], t["ok"])


# -- the source's tests (Phase 24, module 4) -------------------------------------------

class TestPhase24:
    def test_orchestrator_initialization(self):
        engine = Engine(REGISTRY, ESCALATION, clock=ManualClock(T0))
        resolver = ConflictResolver(REGISTRY)
        orchestrator = ToolOrchestrator(engine, resolver)
        assert orchestrator.engine is engine and orchestrator.resolver is resolver
        assert orchestrator.limits == OrchestrationLimits()
        assert (orchestrator.limits.dry_run_only, orchestrator.limits.max_live_escalations,
                orchestrator.limits.confidence_threshold_for_live) == (False, None, None)
        assert (orchestrator.monitor, orchestrator.feedback) == (None, None)
        assert orchestrator.clock is engine.clock
        assert (orchestrator.live_runs, orchestrator.outcomes) == (0, [])
        assert orchestrator.run_cycle([]) == []

    def test_orchestrator_tool_registration(self):
        # Only vision_inspect has handlers; math_compute is in the catalogue without
        # any (it runs the default MOCK stand-in); "teleport" is not in the catalogue.
        rig = Rig(handled=("vision_inspect",))
        ok, bare, unknown = rig.cycle(
            plan("p1", ("a", "vision_inspect", 0.9)),
            plan("p2", ("a", "math_compute", 0.9)),
            plan("p3", ("a", "vision_inspect", 0.9), ("a", "teleport", 0.9)))
        assert rig.runs == [("p1/s1", "LIVE")]
        assert row(ok.tool_results[0]) == ("p1/s1", "a", "vision_inspect", "LIVE", "LIVE", True)
        assert row(bare.tool_results[0]) == ("p2/s1", "a", "math_compute", "LIVE", "MOCK", True)
        assert [(r["src"], r["dst"], r["data"]["why"]) for r in rig.records(event="downgrade")] \
            == [("LIVE", "DRY_RUN", "no live handler registered"),
                ("DRY_RUN", "MOCK", "no dry-run handler registered")]
        assert unknown == OrchestrationResult("p3", 0, 2, (
            {"call_id": "p3/s1", "agent": "a", "tool": "vision_inspect", "ok": False,
             "error": "unknown tool(s): teleport"},
            {"call_id": "p3/s2", "agent": "a", "tool": "teleport", "ok": False,
             "error": "unknown tool(s): teleport"}), 0, 0, 0)

    def test_tool_allocation(self):
        agents = {"intern": {"crm.read"}, "crm": {"crm.read", "crm.write"},
                  "ui": {"vision.read", "ui.write"}}
        rig = Rig(agents=agents)
        crm_plan = plan("p1", ("intern", "mployer_search", 0.9),
                        ("intern", "mployer_add_contact", 0.9))
        ui_plan = plan("p2", ("ui", "vision_inspect", 0.9), ("ui", "form_fill", 0.9))
        assert crm_plan.agent_assignments == {"p1/s1": "intern", "p1/s2": "intern"}
        assert crm_plan.confidence_scores == {"p1/s1": 0.9, "p1/s2": 0.9}
        first, second = rig.cycle(crm_plan, ui_plan)
        # Each call runs as its assigned agent, except the one REASSIGN gave away.
        assert [(t["call_id"], t["agent"], t["resolution"]) for t in first.tool_results] == [
            ("p1/s1", "intern", None), ("p1/s2", "crm", "REASSIGN")]
        assert [t["agent"] for t in second.tool_results] == ["ui", "ui"]
        [resolution] = rig.records("resolution")
        assert (resolution["data"]["call"], resolution["data"]["strategy"],
                resolution["data"]["new_agent"]) == ("p1/s2", "REASSIGN", "crm")
        ctx = rig.context_of("p1/s2")
        [decision] = [r for r in rig.records("decision") if r["subject"] == ctx]
        [execution] = [r for r in rig.records("execution") if r["subject"] == ctx]
        assert (decision["data"]["agent"], decision["data"]["allowed"]) == ("crm", True)
        assert (execution["data"]["agent"], execution["data"]["mode"]) == ("crm", "LIVE")
        assert rig.records("execution")[0]["data"]["agent"] == "intern"

    def test_orchestration_cycle_execution(self):
        rig = Rig()
        p1 = plan("p1", ("a", "vision_inspect", 0.9), ("a", "form_fill", 0.7))
        p2 = plan("p2", ("b", "memory_search", 0.9), ("b", "goal_query", 0.6),
                  ("b", "text_extract", 0.9, {"args": {"fail": "LIVE"}}))
        r1, r2 = rig.cycle(p1, p2)
        # Slot by slot, plans in the order given.
        assert rig.runs == [("p1/s1", "LIVE"), ("p2/s1", "LIVE"), ("p1/s2", "DRY_RUN"),
                            ("p2/s2", "DRY_RUN"), ("p2/s3", "LIVE")]
        assert (r1.plan_id, r1.successful_executions, r1.failed_executions,
                r1.conflicts_detected, r1.conflicts_resolved, r1.rollbacks_executed, r1.ok) \
            == ("p1", 2, 0, 0, 0, 0, True)
        assert (r2.plan_id, r2.successful_executions, r2.failed_executions,
                r2.conflicts_detected, r2.conflicts_resolved, r2.rollbacks_executed, r2.ok) \
            == ("p2", 2, 1, 0, 0, 1, False)  # one undo: p2/s1
        assert [row(t) for t in r1.tool_results + r2.tool_results] == [
            ("p1/s1", "a", "vision_inspect", "LIVE", "LIVE", True),
            ("p1/s2", "a", "form_fill", "DRY_RUN", "DRY_RUN", True),
            ("p2/s1", "b", "memory_search", "LIVE", "LIVE", True),
            ("p2/s2", "b", "goal_query", "DRY_RUN", "DRY_RUN", True),
            ("p2/s3", "b", "text_extract", "LIVE", "LIVE", False)]
        failed = r2.tool_results[2]
        assert (failed["error"], failed["rolled_back"], failed["risk"], failed["confidence"]) \
            == ("RuntimeError: p2/s3 failed in LIVE", False, "LOW", 0.9)
        # rolled_back marks the calls the failure undid, not the failing call
        assert [t["rolled_back"] for t in r2.tool_results] == [True, False, False]
        assert [t["duration_ms"] for t in r1.tool_results] == [250.0, 250.0]
        assert rig.undone == ["p2/s1"]

    def test_orchestration_dry_run_safety(self):
        rig = Rig(limits=OrchestrationLimits(dry_run_only=True), approver=lambda request: True)
        results = rig.cycle(
            plan("p1", ("a", "vision_inspect", 0.95), ("a", "form_fill", 0.9),
                 ("a", "button_click", 0.9, {"args": {"fail": "LIVE"}})),
            plan("p2", ("b", "msgraph_get_user", 0.9), ("b", "msgraph_create_draft", 0.9),
                 ("b", "msgraph_send_email", 0.95)),
            plan("p3", ("c", "goal_query", 0.6), ("c", "memory_search", 0.2)))
        assert sorted({mode for _, mode in rig.runs}) == ["DRY_RUN", "MOCK"]
        assert rig.orchestrator.live_runs == 0 and rig.undone == []
        assert [t["mode"] for t in by_call(*results).values()] == [
            "DRY_RUN", "DRY_RUN", "DRY_RUN", "DRY_RUN", "DRY_RUN", "DRY_RUN", "DRY_RUN", "MOCK"]
        # Every call the policy put in LIVE went down by a recorded `downgrade`, with why.
        # The HIGH risk send waits for approval, and nobody is asked to approve a LIVE
        # run the cap rules out: it stays in AWAITING_APPROVAL, which runs as DRY_RUN.
        states = [(r["subject"], r["data"]["state"]) for r in rig.records("decision")]
        assert [s for _, s in states].count("LIVE") == 5
        assert [s for _, s in states].count("AWAITING_APPROVAL") == 1  # runs as DRY_RUN
        downgrades = rig.records("transition", "downgrade")
        assert [(r["subject"], r["src"], r["dst"], r["data"]["why"]) for r in downgrades] == [
            (ctx, "LIVE", "DRY_RUN", "dry-run-only run") for ctx, s in states if s == "LIVE"]
        assert not [r for r in rig.records("execution") if r["data"]["mode"] == "LIVE"]

    def test_orchestration_summary_generation(self):
        rig = Rig()
        [result] = rig.cycle(plan("p1", ("a", "vision_inspect", 0.9), ("a", "goal_query", 0.6)))
        doc = result.to_json()
        assert set(doc) == RESULT_KEYS
        assert {k: v for k, v in doc.items() if k != "tool_results"} == {
            "successful_executions": 2, "failed_executions": 0, "conflicts_detected": 0,
            "conflicts_resolved": 0, "rollbacks_executed": 0}
        assert doc["tool_results"] == [
            {"call_id": "p1/s1", "agent": "a", "tool": "vision_inspect", "risk": "LOW",
             "confidence": 0.9, "decided_mode": "LIVE", "mode": "LIVE", "ok": True,
             "error": None, "approval": None, "rolled_back": False, "conflicts": [],
             "resolution": None, "duration_ms": 250.0},
            {"call_id": "p1/s2", "agent": "a", "tool": "goal_query", "risk": "LOW",
             "confidence": 0.6, "decided_mode": "DRY_RUN", "mode": "DRY_RUN", "ok": True,
             "error": None, "approval": None, "rolled_back": False, "conflicts": [],
             "resolution": None, "duration_ms": 250.0}]
        # Step 7: the summary reached the monitor (one snapshot per cycle).
        summary = rig.monitor.metrics_summary()
        assert (summary["executions"], summary["calls"], summary["tools"],
                summary["snapshots"]) == (2, 2, 2, 1)
        assert summary["current_metrics"]["live_execution_ratio"] == 50.0
        assert [o.call_id for o in rig.orchestrator.outcomes] == ["p1/s1", "p1/s2"]


# -- conflicts in a batch: each type changes what runs, as its strategy says ----------

class TestConflicts:
    def test_resource_is_delayed_behind_the_holder(self):
        rig = Rig()
        r1, r2 = rig.cycle(
            plan("p1", ("a", "form_fill", 0.9, {"resource": "form:7"}),
                 ("a", "memory_search", 0.9)),
            plan("p2", ("b", "form_fill", 0.9, {"resource": "form:7"})))
        # Without the delay p2/s1 would run in slot 0, before p1/s2.
        assert rig.runs == [("p1/s1", "LIVE"), ("p1/s2", "LIVE"), ("p2/s1", "LIVE")]
        moved = r2.tool_results[0]
        assert (moved["conflicts"], moved["resolution"], moved["mode"], moved["ok"]) == (
            ["RESOURCE"], "DELAY", "LIVE", True)
        assert (r1.conflicts_detected, r2.conflicts_detected, r2.conflicts_resolved) == (1, 1, 1)
        assert rig.resolver.resolutions[0].reason.startswith("delayed from slot 0 to 1 (5 s): ")

    def test_ordering_is_delayed_after_the_dependencies(self):
        rig = Rig()
        [result] = rig.cycle(plan("p1", ("a", "button_click", 0.9), ("a", "vision_inspect", 0.9),
                                  ("a", "form_fill", 0.9)))
        assert rig.runs == [("p1/s2", "LIVE"), ("p1/s3", "LIVE"), ("p1/s1", "LIVE")]
        assert [(t["call_id"], t["conflicts"], t["resolution"]) for t in result.tool_results] \
            == [("p1/s1", ["ORDERING"], "DELAY"), ("p1/s2", [], None), ("p1/s3", [], None)]

    def test_rate_limit_is_delayed_to_a_free_slot(self):
        rig = Rig()  # msgraph_create_draft allows 2 calls at once
        results = rig.cycle(
            plan("p1", ("a", "msgraph_create_draft", 0.9), ("a", "memory_search", 0.9)),
            plan("p2", ("b", "msgraph_create_draft", 0.9)),
            plan("p3", ("c", "msgraph_create_draft", 0.9)))
        assert rig.runs == [("p1/s1", "LIVE"), ("p2/s1", "LIVE"), ("p1/s2", "LIVE"),
                            ("p3/s1", "LIVE")]
        assert by_call(*results)["p3/s1"]["resolution"] == "DELAY"
        assert [c.type.value for c in rig.resolver.conflicts] == ["RATE_LIMIT"]

    def test_duplicate_action_is_aborted_and_never_runs(self):
        rig = Rig()
        r1, r2 = rig.cycle(
            plan("p1", ("a", "ghl_update_contact", 0.9, {"args": {"call": "same", "id": 1}})),
            plan("p2", ("b", "ghl_update_contact", 0.9, {"args": {"call": "same", "id": 1}})))
        assert rig.runs == [("same", "LIVE")]
        kept, dropped = r1.tool_results[0], r2.tool_results[0]
        assert (kept["mode"], kept["conflicts"], kept["resolution"]) == (
            "LIVE", ["DUPLICATE_ACTION"], None)
        assert (dropped["decided_mode"], dropped["mode"], dropped["ok"], dropped["resolution"]) \
            == (None, None, False, "ABORT")
        assert (r2.successful_executions, r2.failed_executions) == (0, 1)
        # The aborted call never reached a decision.
        assert len(rig.records("decision")) == 1

    def test_aborted_call_error_names_the_conflict_once(self):
        rig = Rig()
        _, r2 = rig.cycle(
            plan("p1", ("a", "ghl_update_contact", 0.9, {"args": {"call": "same"}})),
            plan("p2", ("b", "ghl_update_contact", 0.9, {"args": {"call": "same"}})))
        assert r2.tool_results[0]["error"] == (
            "aborted: p2/s1 repeats irreversible ghl_update_contact with the same arguments: "
            "the same as call p1/s1")

    def test_a_repeat_in_a_later_cycle_is_a_duplicate(self):
        # The resolver's execution history must learn what ran LIVE, or an irreversible
        # action repeated one cycle later runs twice.
        rig = Rig()
        rig.cycle(plan("p1", ("a", "ghl_update_contact", 0.9, {"args": {"call": "same"}})))
        [again] = rig.cycle(plan("p2", ("a", "ghl_update_contact", 0.9,
                                        {"args": {"call": "same"}})))
        assert rig.runs == [("same", "LIVE")]
        assert (again.tool_results[0]["conflicts"], again.tool_results[0]["resolution"]) == (
            ["DUPLICATE_ACTION"], "ABORT")

    def test_permission_without_a_capable_agent_is_aborted(self):
        rig = Rig(agents={"intern": {"crm.read"}, "ui": {"vision.read"}})
        [result] = rig.cycle(plan("p1", ("intern", "mployer_search", 0.9),
                                  ("intern", "mployer_add_contact", 0.9)))
        assert rig.runs == [("p1/s1", "LIVE")]
        dropped = result.tool_results[1]
        assert (dropped["mode"], dropped["conflicts"], dropped["resolution"]) == (
            None, ["PERMISSION"], "ABORT")
        assert dropped["error"].startswith(
            "aborted: no other agent holds every permission of mployer_add_contact; fallback")

    def test_timeout_is_downgraded_to_dry_run(self):
        rig = Rig()
        [result] = rig.cycle(plan("p1", ("a", "form_fill", 0.95, {"estimated_s": 120.0}),
                                  ("a", "memory_search", 0.9, {"estimated_s": 1.0})))
        assert rig.runs == [("p1/s1", "DRY_RUN"), ("p1/s2", "LIVE")]
        capped = result.tool_results[0]
        assert (capped["decided_mode"], capped["mode"], capped["conflicts"],
                capped["resolution"]) == ("LIVE", "DRY_RUN", ["TIMEOUT"], "DOWNGRADE")
        [downgrade] = rig.records("transition", "downgrade")
        assert (downgrade["src"], downgrade["dst"]) == ("LIVE", "DRY_RUN")
        assert downgrade["data"]["why"] == (
            "conflict resolution: capped at DRY_RUN: p1/s1 is estimated at 120.0 s, past "
            "form_fill's timeout of 30.0 s")

    def test_a_capped_high_risk_call_is_not_put_to_the_approver(self):
        asked = []
        rig = Rig(approver=lambda request: asked.append(request.tool) or True)
        [result] = rig.cycle(plan("p1", ("a", "file_operation", 0.95, {"estimated_s": 120.0})))
        assert asked == [] and rig.runs == [("p1/s1", "DRY_RUN")]
        capped = result.tool_results[0]
        # LIVE is ruled out by the cap, so the decision waits (as DRY_RUN), unasked.
        assert (capped["decided_mode"], capped["mode"], capped["approval"]) == (
            "DRY_RUN", "DRY_RUN", None)
        assert rig.records("transition", "downgrade") == []

    def test_downgrade_to_mock_by_a_user_table(self):
        table = ConflictTable.from_toml(text="""
[[row]]
id = "all.mock"
when = {}
then = { strategy = "DOWNGRADE", max_mode = "MOCK" }
""", source="conflicts.toml")
        rig = Rig(table=table)
        results = rig.cycle(
            plan("p1", ("a", "form_fill", 0.9, {"resource": "form:7"})),
            plan("p2", ("b", "form_fill", 0.9, {"resource": "form:7"})))
        assert rig.runs == [("p1/s1", "LIVE"), ("p2/s1", "MOCK")]
        assert by_call(*results)["p2/s1"]["resolution"] == "DOWNGRADE"

    def test_a_runtime_timeout_is_recorded_as_a_conflict(self):
        rig = Rig()

        def slow(args: dict[str, Any]) -> None:
            raise TimeoutError("took too long")

        rig.engine.register_handler("memory_search", mock=slow, dry_run=slow, live=slow)
        [result] = rig.cycle(plan("p1", ("a", "memory_search", 0.9)))
        assert (result.tool_results[0]["conflicts"], result.tool_results[0]["ok"]) == (
            ["TIMEOUT"], False)
        assert [(c.type.value, c.calls) for c in rig.resolver.conflicts] == [
            ("TIMEOUT", ("p1/s1",))]


# -- rollback ----------------------------------------------------------------------------

class TestRollback:
    def test_live_failure_rolls_back_its_own_plan_only(self):
        rig = Rig()
        r1, r2 = rig.cycle(
            plan("p1", ("a", "vision_inspect", 0.9), ("a", "form_fill", 0.9),
                 ("a", "button_click", 0.9, {"args": {"fail": "LIVE"}})),
            plan("p2", ("b", "vision_inspect", 0.9), ("b", "text_extract", 0.9),
                 ("b", "memory_search", 0.9)))
        # p2's reversible LIVE actions ran in between; only p1's are undone, newest first.
        assert rig.runs == [("p1/s1", "LIVE"), ("p2/s1", "LIVE"), ("p1/s2", "LIVE"),
                            ("p2/s2", "LIVE"), ("p1/s3", "LIVE"), ("p2/s3", "LIVE")]
        assert rig.undone == ["p1/s2", "p1/s1"]
        assert (r1.rollbacks_executed, r2.rollbacks_executed) == (2, 0)
        assert (r1.successful_executions, r1.failed_executions) == (2, 1)
        assert r2.ok and not any(t["rolled_back"] for t in r2.tool_results)
        rollbacks = rig.records("rollback")
        assert [(r["subject"], r["data"]["tool"], r["data"]["because_of"]) for r in rollbacks] \
            == [(rig.context_of("p1/s2"), "form_fill", rig.context_of("p1/s3")),
                (rig.context_of("p1/s1"), "vision_inspect", rig.context_of("p1/s3"))]
        assert [(r["src"], r["dst"]) for r in rig.records("transition", "rollback_complete")] \
            == [("ROLLBACK", "ABORTED")]

    def test_failure_below_live_rolls_nothing_back(self):
        rig = Rig()
        [result] = rig.cycle(plan("p1", ("a", "vision_inspect", 0.9),
                                  ("a", "form_fill", 0.7, {"args": {"fail": "DRY_RUN"}})))
        assert rig.runs == [("p1/s1", "LIVE"), ("p1/s2", "DRY_RUN")]
        assert rig.undone == [] and result.rollbacks_executed == 0
        assert [(r["src"], r["dst"]) for r in rig.records("transition", "abort")] == [
            ("DRY_RUN", "ABORTED")]


# -- dependencies ------------------------------------------------------------------------

class TestDependencies:
    def test_a_call_whose_dependency_failed_is_not_run(self):
        rig = Rig()
        [result] = rig.cycle(plan("p1", ("a", "ghl_search", 0.9, {"args": {"fail": "LIVE"}}),
                                  ("a", "ghl_create_contact", 0.9)))
        assert rig.runs == [("p1/s1", "LIVE")]
        blocked = result.tool_results[1]
        assert (blocked["decided_mode"], blocked["mode"], blocked["ok"], blocked["error"]) == (
            None, None, False, "not run: dependency ghl_search failed")
        assert len(rig.records("decision")) == 1

    def test_a_failure_in_another_plan_blocks_nothing(self):
        rig = Rig()
        r1, r2 = rig.cycle(
            plan("p1", ("a", "ghl_search", 0.9, {"args": {"fail": "LIVE"}}),
                 ("a", "ghl_create_contact", 0.9, {"args": {"email": "x@example.com"}})),
            plan("p2", ("b", "ghl_search", 0.9),
                 ("b", "ghl_create_contact", 0.9, {"args": {"email": "y@example.com"}})))
        assert rig.runs == [("p1/s1", "LIVE"), ("p2/s1", "LIVE"), ("p2/s2", "LIVE")]
        assert (r1.failed_executions, r2.ok) == (2, True)

    def test_a_call_whose_dependency_was_aborted_is_not_run(self):
        # ghl_search is aborted by conflict resolution (TIMEOUT -> ABORT here): it never
        # ran, so ghl_create_contact, which depends on it, must not run either.
        table = ConflictTable.from_toml(text="""
[[row]]
id = "timeout.abort"
when = { all = [ { metric = "type", op = "eq", value = "TIMEOUT" } ] }
then = { strategy = "ABORT" }

[[row]]
id = "rest.delay"
when = {}
then = { strategy = "DELAY", delay_s = 5.0, max_delay_s = 15.0 }
""", source="conflicts.toml")
        rig = Rig(table=table)
        [result] = rig.cycle(plan("p1", ("a", "ghl_search", 0.9, {"estimated_s": 100.0}),
                                  ("a", "ghl_create_contact", 0.9)))
        assert rig.runs == []
        assert [(t["mode"], t["ok"]) for t in result.tool_results] == [(None, False),
                                                                       (None, False)]
        assert result.tool_results[1]["error"].startswith("not run: dependency ghl_search")


# -- the run's caps --------------------------------------------------------------------

class TestLimits:
    def test_max_live_escalations_caps_live_runs_across_cycles(self):
        rig = Rig(limits=OrchestrationLimits(max_live_escalations=2))
        rig.cycle(plan("p1", *[("a", "memory_search", 0.9)] * 3))
        rig.cycle(plan("p2", ("a", "memory_search", 0.9)))
        assert rig.runs == [("p1/s1", "LIVE"), ("p1/s2", "LIVE"), ("p1/s3", "DRY_RUN"),
                            ("p2/s1", "DRY_RUN")]
        assert rig.orchestrator.live_runs == 2
        assert [r["data"]["why"] for r in rig.records("transition", "downgrade")] == [
            "max_live_escalations (2) reached"] * 2

    def test_a_failed_live_run_counts_against_the_budget(self):
        rig = Rig(limits=OrchestrationLimits(max_live_escalations=1))
        rig.cycle(plan("p1", ("a", "memory_search", 0.9, {"args": {"fail": "LIVE"}})),
                  plan("p2", ("b", "memory_search", 0.9)))
        assert rig.runs == [("p1/s1", "LIVE"), ("p2/s1", "DRY_RUN")]

    def test_zero_budget_means_no_live(self):
        rig = Rig(limits=OrchestrationLimits(max_live_escalations=0))
        rig.cycle(plan("p1", ("a", "vision_inspect", 0.99), ("a", "form_fill", 0.99)))
        assert rig.runs == [("p1/s1", "DRY_RUN"), ("p1/s2", "DRY_RUN")]

    def test_confidence_threshold_for_live(self):
        rig = Rig(limits=OrchestrationLimits(confidence_threshold_for_live=0.85))
        [result] = rig.cycle(plan("p1", ("a", "memory_search", 0.84), ("a", "memory_search", 0.85),
                                  ("a", "memory_search", 0.6), ("a", "memory_search", 0.3)))
        assert rig.runs == [("p1/s1", "DRY_RUN"), ("p1/s2", "LIVE"), ("p1/s3", "DRY_RUN"),
                            ("p1/s4", "MOCK")]
        assert [t["decided_mode"] for t in result.tool_results] == [
            "LIVE", "LIVE", "DRY_RUN", "MOCK"]
        # Only the call the floor lowered has a downgrade; caps never raise a mode.
        assert [(r["subject"], r["data"]["why"])
                for r in rig.records("transition", "downgrade")] == [
            (rig.context_of("p1/s1"), "confidence 0.84 below the run's LIVE floor 0.85")]

    def test_the_lowest_cap_wins(self):
        table = ConflictTable.from_toml(text="""
[[row]]
id = "all.mock"
when = {}
then = { strategy = "DOWNGRADE", max_mode = "MOCK" }
""", source="conflicts.toml")
        rig = Rig(table=table, limits=OrchestrationLimits(dry_run_only=True))
        rig.cycle(plan("p1", ("a", "memory_search", 0.9, {"estimated_s": 60.0})))
        assert rig.runs == [("p1/s1", "MOCK")]


@given(steps=st.lists(st.tuples(
    st.sampled_from(["vision_inspect", "form_fill", "memory_search", "msgraph_create_draft",
                     "database_write", "ghl_update_contact"]),
    st.floats(0.0, 1.0), st.sampled_from([None, False])), min_size=1, max_size=6),
    budget=st.none() | st.integers(0, 3), dry_run_only=st.booleans())
def test_caps_are_never_exceeded(steps, budget, dry_run_only):
    """No LIVE run in a dry-run-only run; never more LIVE runs than the budget.

    (The approver approves everything; a plan may only pre-deny, never approve.)
    """
    rig = Rig(limits=OrchestrationLimits(dry_run_only=dry_run_only,
                                         max_live_escalations=budget),
              approver=lambda request: True, observed=False)
    rig.cycle(plan("p1", *[("a", tool, c, {"approval": approval})
                           for tool, c, approval in steps]))
    live = [call for call, mode in rig.runs if mode == "LIVE"]
    if dry_run_only:
        assert live == []
    if budget is not None:
        assert len(live) <= budget
    assert rig.orchestrator.live_runs == len(live)


# -- step 1: validation ------------------------------------------------------------------

class TestValidation:
    def test_unknown_tool_rejects_its_plan_only(self):
        rig = Rig()
        bad, good = rig.cycle(
            plan("bad", ("a", "form_fill", 0.9, {"resource": "form:1"}), ("a", "nope", 0.9)),
            plan("good", ("b", "form_fill", 0.9, {"resource": "form:1"})))
        assert (bad.successful_executions, bad.failed_executions, bad.ok) == (0, 2, False)
        assert {t["error"] for t in bad.tool_results} == {"unknown tool(s): nope"}
        # The rejected plan never reached the resolver: no RESOURCE conflict with it.
        assert rig.runs == [("good/s1", "LIVE")]
        assert (good.ok, good.conflicts_detected, rig.resolver.conflicts) == (True, 0, [])
        assert [o.call_id for o in rig.orchestrator.outcomes] == ["good/s1"]

    def test_results_come_back_in_the_order_given(self):
        rig = Rig()
        results = rig.cycle(plan("z", ("a", "memory_search", 0.9)),
                            plan("y", ("a", "teleport", 0.9)),
                            plan("x", ("a", "memory_search", 0.9)))
        assert [r.plan_id for r in results] == ["z", "y", "x"]


# -- step 7: emit ------------------------------------------------------------------------

class TestEmit:
    def test_outcomes_reach_the_monitor_and_the_feedback_loop(self):
        rig = Rig()
        rig.cycle(
            plan("p1", ("a", "ghl_update_contact", 0.9, {"args": {"call": "same"}}),
                 ("a", "memory_search", 0.9, {"args": {"fail": "LIVE"}})),
            plan("p2", ("b", "ghl_update_contact", 0.9, {"args": {"call": "same"}}),
                 ("b", "goal_query", 0.6)))
        rig.cycle(plan("p3", ("c", "memory_search", 0.9)))
        metrics = rig.monitor.metrics()
        # 5 calls: 4 ran (one failed), 1 aborted as a duplicate; 2 calls in a conflict.
        assert (metrics["calls"], metrics["executions"]) == (5, 4)
        assert (metrics["tool_success_rate"], metrics["conflict_rate"]) == (75.0, 40.0)
        assert len(rig.monitor.metric_history) == 2
        tools = rig.feedback.tool_metrics()
        assert {t: (m["total_executions"], m["successful"]) for t, m in tools.items()} == {
            "ghl_update_contact": (1, 1), "goal_query": (1, 1), "memory_search": (2, 1)}
        assert tools["memory_search"]["by_mode"]["LIVE"]["count"] == 2
        assert [o.call_id for o in rig.orchestrator.outcomes] == [
            "p1/s1", "p1/s2", "p2/s1", "p2/s2", "p3/s1"]

    def test_without_monitor_or_feedback_outcomes_are_kept(self):
        rig = Rig(observed=False)
        rig.cycle(plan("p1", ("a", "memory_search", 0.9)))
        assert [(o.call_id, o.decided, o.mode, o.ok) for o in rig.orchestrator.outcomes] == [
            ("p1/s1", ExecutionMode.LIVE, ExecutionMode.LIVE, True)]

    def test_the_feedback_loop_counts_each_conflict_once(self):
        # Each pairwise conflict involves two calls; the loop counted both (2 per conflict).
        rig = Rig()

        def slow(args: dict[str, Any]) -> None:
            raise TimeoutError("took too long")

        rig.engine.register_handler("memory_search", mock=slow, dry_run=slow, live=slow)
        rig.cycle(*[plan(f"d{i}", ("a", "msgraph_create_draft", 0.9)) for i in range(3)],
                  plan("u1", ("a", "ghl_update_contact", 0.9, {"args": {"call": "same"}})),
                  plan("u2", ("b", "ghl_update_contact", 0.9, {"args": {"call": "same"}})),
                  plan("m1", ("a", "memory_search", 0.9)))
        rig.cycle(*[plan(f"e{i}", ("a", "msgraph_create_draft", 0.9),
                         ("a", "msgraph_create_draft", 0.9)) for i in range(3)])
        by_type = {t: n for t, n in rig.resolver.summary()["by_type"].items() if n}
        assert by_type == {"RATE_LIMIT": 3, "DUPLICATE_ACTION": 1, "TIMEOUT": 1}
        items = {key: (metrics, names["top_resolution"])
                 for _, key, _, metrics, names in rig.feedback.scope_items("conflict_type")}
        assert items == {
            "DUPLICATE_ACTION": ({"occurrences": 1, "calls": 12, "share": 1 / 12,
                                  "resolved": 1, "tools": 1}, "ABORT"),
            "RATE_LIMIT": ({"occurrences": 3, "calls": 12, "share": 0.25, "resolved": 3,
                            "tools": 1}, "DELAY"),
            "TIMEOUT": ({"occurrences": 1, "calls": 12, "share": 1 / 12, "resolved": 0,
                         "tools": 1}, "none")}

    def test_last_cycle_streams_what_a_kept_run_keeps(self):
        # keep=False keeps no outcome, conflict or resolution; last_cycle gives each
        # cycle's, which add up to what a keeping run holds, and every count is the same.
        def slow(args: dict[str, Any]) -> None:
            raise TimeoutError("took too long")

        cycles = [
            [*[plan(f"d{i}", ("a", "msgraph_create_draft", 0.9)) for i in range(3)],
             plan("u1", ("a", "ghl_update_contact", 0.9, {"args": {"call": "same"}})),
             plan("u2", ("b", "ghl_update_contact", 0.9, {"args": {"call": "same"}})),
             plan("m1", ("a", "memory_search", 0.9))],
            [plan(f"e{i}", ("a", "msgraph_create_draft", 0.9),
                  ("a", "msgraph_create_draft", 0.9)) for i in range(3)]]
        kept, streamed = Rig(), Rig(keep=False)
        for rig in (kept, streamed):
            rig.engine.register_handler("memory_search", mock=slow, dry_run=slow, live=slow)
        assert streamed.orchestrator.last_cycle == CycleRecord((), (), ())
        seen: list[CycleRecord] = []
        for batch in cycles:
            assert kept.cycle(*batch) == streamed.cycle(*batch)
            assert kept.orchestrator.last_cycle == streamed.orchestrator.last_cycle
            seen.append(streamed.orchestrator.last_cycle)
        assert (streamed.orchestrator.outcomes, streamed.resolver.conflicts,
                streamed.resolver.resolutions, streamed.resolver.execution_history) == (
            [], [], [], [])
        assert len(kept.resolver.execution_history) == 11  # 12 calls, a duplicate aborted
        assert [o for c in seen for o in c.outcomes] == kept.orchestrator.outcomes
        assert [x for c in seen for x in c.conflicts] == kept.resolver.conflicts
        assert [r for c in seen for r in c.resolutions] == kept.resolver.resolutions
        assert [c.type.value for c in seen[0].conflicts] == [
            "DUPLICATE_ACTION", "RATE_LIMIT", "TIMEOUT"]  # the run-time TIMEOUT last
        assert streamed.resolver.summary() == kept.resolver.summary()
        assert streamed.resolver.summary()["total_conflicts"] == 5
        assert streamed.feedback is not None and kept.feedback is not None
        assert streamed.feedback.export_signals() == kept.feedback.export_signals()

    def test_outcome_carries_the_approval(self):
        answers = {"team@example.com": True, "ceo@partner.org": False}
        rig = Rig(approver=lambda request: answers[request.args["to"]])
        results = rig.cycle(*[
            plan(f"p{i}", ("m", "msgraph_get_user", 0.9), ("m", "msgraph_create_draft", 0.9),
                 ("m", "msgraph_send_email", 0.9, {"args": {"to": to}}))
            for i, to in enumerate(answers)])
        sends = [r.tool_results[2] for r in results]
        assert [(t["approval"], t["mode"], t["ok"]) for t in sends] == [
            ("granted", "LIVE", True), ("denied", None, False)]
        assert rig.monitor.metrics()["approval_rate"] == 50.0


def test_limits_are_frozen_values():
    limits = OrchestrationLimits(True, 1, 0.5)
    assert limits == OrchestrationLimits(dry_run_only=True, max_live_escalations=1,
                                         confidence_threshold_for_live=0.5)
    with pytest.raises(AttributeError):
        limits.dry_run_only = False  # type: ignore[misc]
