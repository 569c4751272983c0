"""The engine: decisions, execution, approvals, grants, the lock, rollback, threads."""

from __future__ import annotations

import math
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from buddy.engine import (
    Approval,
    AuditLog,
    Engine,
    ExecutionMode,
    RiskLevel,
)
from buddy.engine.core._chain import verify_lines
from buddy.engine.core._replay import replay
from buddy.machines import ExecutionState
from buddy.rules.base.errors import InputError, UnknownToolError
from tests.helpers import ManualClock, unthrottled

M, D, L = ExecutionMode.MOCK, ExecutionMode.DRY_RUN, ExecutionMode.LIVE
S = ExecutionState
TOOL = {RiskLevel.LOW: "text_extract", RiskLevel.MEDIUM: "form_fill",
        RiskLevel.HIGH: "msgraph_send_email"}
THRESHOLDS = {RiskLevel.LOW: (0.50, 0.70), RiskLevel.MEDIUM: (0.65, 0.80),
              RiskLevel.HIGH: (0.80, 0.85)}


def reference(risk: RiskLevel, confidence: float, approval: bool | None, locked: bool
              ) -> tuple[ExecutionMode, bool]:
    """The escalation table of the spec, written independently of the engine."""
    if locked:
        return M, True
    dry, live = THRESHOLDS[risk]
    if confidence >= live and risk is RiskLevel.HIGH:
        if approval is True:
            return L, True
        if approval is False:
            return M, False
        return D, True
    if confidence >= live:
        return L, True
    if confidence >= dry:
        return D, True
    return M, True


@pytest.fixture
def clock():
    return ManualClock()


@pytest.fixture
def engine(clock):
    return Engine.default(clock=clock)


def kinds(engine):
    return [r["kind"] for r in engine.audit.records()]


class TestExecutionController:
    def test_execution_context_creation(self, engine):
        pending = engine.prepare("a", "form_fill", {"x": 1}, confidence=0.7)
        assert pending.context == "ctx-2"  # ctx-<seq of its first event>; seq 1 is the header
        assert pending.decision.state is S.DRY_RUN
        assert pending.run().state is S.COMPLETED

    def test_execution_controller_initialization(self, engine):
        assert engine.locked is False
        assert engine.grants() == []
        assert [r["kind"] for r in engine.audit.records()] == ["open"]
        assert len(engine.registry) == 18

    def test_execution_mode_evaluation_low_risk(self, engine):
        assert [engine.decide("a", "text_extract", c).mode for c in (0.49, 0.5, 0.69, 0.7)] \
            == [M, D, D, L]

    def test_execution_mode_evaluation_high_risk(self, engine):
        d = engine.decide("a", "msgraph_send_email", 0.99)
        assert (d.mode, d.allowed, d.state, d.rule) == (D, True, S.AWAITING_APPROVAL, "high.live")
        assert engine.decide("a", "msgraph_send_email", 0.99, approval=True).mode is L
        denied = engine.decide("a", "msgraph_send_email", 0.99, approval=False)
        assert (denied.mode, denied.allowed, denied.state, denied.rule) == \
            (M, False, S.LOCKED, "approval.denied")
        # approval does not lower the bar: 0.84 < 0.85 stays DRY_RUN even when approved
        assert engine.decide("a", "msgraph_send_email", 0.84, approval=True).mode is D

    @pytest.mark.parametrize("risk", list(RiskLevel))
    def test_confidence_threshold_enforcement(self, engine, risk):
        dry, live = THRESHOLDS[risk]
        below = math.nextafter(dry, 0)
        assert engine.decide("a", TOOL[risk], below).mode is M
        assert engine.decide("a", TOOL[risk], dry).mode is D
        assert engine.decide("a", TOOL[risk], math.nextafter(live, 0), approval=True).mode is D
        assert engine.decide("a", TOOL[risk], live, approval=True).mode is L

    def test_system_lock_enforcement(self, engine):
        engine.lock("incident")
        d = engine.decide("a", "text_extract", 1.0, approval=True)
        assert (d.mode, d.allowed, d.rule, d.state) == (M, True, "system.lock", S.LOCKED)
        engine.register_handler("text_extract", live=lambda a: "live", dry_run=lambda a: "dry")
        r = engine.execute("a", "text_extract", confidence=1.0)
        assert r.mode is M and r.result["simulated"] is True

    def test_system_unlock(self, engine):
        engine.lock()
        engine.unlock("resolved")
        assert engine.decide("a", "text_extract", 0.9).mode is L
        assert kinds(engine)[1:3] == ["lock", "unlock"]

    def test_rollback_stack_tracking(self, engine):
        engine.register_handler("form_fill", live=lambda a: a["n"], undo=lambda a, r: None)
        engine.register_handler("text_extract", live=lambda a: "t")  # no undo: not stacked
        session = engine.session("a")
        session.execute("form_fill", {"n": 1}, confidence=0.9)
        session.execute("text_extract", {}, confidence=0.9)
        session.execute("form_fill", {"n": 2}, confidence=0.7)  # DRY_RUN: nothing to undo
        session.execute("form_fill", {"n": 3}, confidence=0.9)
        assert session.rollback_stack == ["form_fill", "form_fill"]

    def test_rollback_execution(self, engine):
        undone = []
        engine.register_handler("form_fill", live=lambda a: a["n"],
                                undo=lambda a, r: undone.append(r))
        engine.register_handler("button_click", live=lambda a: 1 / 0)
        with engine.session("a") as s:
            results = [s.execute("form_fill", {"n": n}, confidence=0.9) for n in (1, 2, 3)]
            failed = s.execute("button_click", {}, confidence=0.9)
        assert undone == [3, 2, 1]
        assert failed.state is S.ABORTED and failed.ok is False
        assert failed.error == "ZeroDivisionError: division by zero"
        assert failed.rolled_back == tuple(r.context for r in reversed(results))
        rollbacks = [r for r in engine.audit.records() if r["kind"] == "rollback"]
        assert [r["subject"] for r in rollbacks] == ["ctx-12", "ctx-7", "ctx-2"]
        moves = [(r["event"], r["dst"]) for r in engine.audit.records()
                 if r["kind"] == "transition" and r["subject"] == failed.context]
        assert moves[-2:] == [("error", "ROLLBACK"), ("rollback_complete", "ABORTED")]

    def test_rollback_continues_past_a_failing_undo(self, engine):
        undone = []

        def undo(args, result):
            if result == 2:
                raise RuntimeError("cannot undo 2")
            undone.append(result)

        engine.register_handler("form_fill", live=lambda a: a["n"], undo=undo)
        engine.register_handler("button_click", live=lambda a: 1 / 0)
        s = engine.session("a")
        for n in (1, 2, 3):
            s.execute("form_fill", {"n": n}, confidence=0.9)
        s.execute("button_click", {}, confidence=0.9)
        assert undone == [3, 1]
        oks = [r["data"]["ok"] for r in engine.audit.records() if r["kind"] == "rollback"]
        assert oks == [True, False, True]

    def test_error_outside_live_aborts_without_rollback(self, engine):
        engine.register_handler("form_fill", live=lambda a: "ok", undo=lambda a, r: None,
                                dry_run=lambda a: 1 / 0)
        s = engine.session("a")
        s.execute("form_fill", {}, confidence=0.9)
        r = s.execute("form_fill", {}, confidence=0.7)
        assert (r.mode, r.state, r.rolled_back) == (D, S.ABORTED, ())
        assert s.rollback_stack == ["form_fill"]

    def test_state_transition_audit_trail(self, engine, clock):
        engine.register_handler("form_fill", live=lambda a: "ok")
        clock.advance(5)
        r = engine.execute("a", "form_fill", {}, confidence=0.9)
        moves = [(e["event"], e["src"], e["dst"], e["ts"]) for e in engine.audit.records()
                 if e["subject"] == r.context and e["kind"] == "transition"]
        assert moves == [("approve_escalation", "MOCK", "DRY_RUN", 1005.0),
                         ("request_live", "DRY_RUN", "LIVE", 1005.0),
                         ("all_actions_succeeded", "LIVE", "COMPLETED", 1005.0)]


class TestFailClosed:
    def test_unknown_tool(self, engine):
        d = engine.decide("a", "rm_rf", 0.99, approval=True)
        assert (d.mode, d.allowed, d.rule) == (M, False, "tool.unknown")
        assert "rm_rf" in d.reason

    @pytest.mark.parametrize("confidence", [math.nan, -0.01, 1.01, math.inf, "0.9", None, True])
    def test_bad_confidence(self, engine, confidence):
        d = engine.decide("a", "text_extract", confidence)
        assert (d.mode, d.allowed, d.rule) == (M, False, "input.confidence")

    def test_error_inside_evaluation(self, engine, monkeypatch):
        import buddy.engine.core._decision as decision

        def boom(*args, **kwargs):
            raise RuntimeError("guard exploded")

        monkeypatch.setattr(decision, "walk", boom)
        d = engine.decide("a", "text_extract", 0.99)
        assert (d.mode, d.allowed, d.rule) == (M, False, "engine.error")
        assert "guard exploded" in d.reason

    def test_failing_approver_denies(self, clock):
        def approver(request):
            raise ConnectionError("approval service down")

        engine = Engine.default(clock=clock, approver=approver)
        d = engine.decide("a", "msgraph_send_email", 0.9)
        assert (d.mode, d.allowed) == (M, False)

    def test_refusals_are_recorded(self, engine):
        engine.decide("a", "nope", 0.5)
        last = list(engine.audit.records())[-1]
        assert last["data"]["rule"] == "tool.unknown" and last["data"]["allowed"] is False

    def test_execute_refused_runs_nothing(self, engine):
        ran = []
        engine.register_handler("text_extract", mock=ran.append)
        r = engine.execute("a", "text_extract", {}, confidence=math.nan)
        assert (r.ok, r.mode, ran) == (False, None, [])
        r = engine.execute("a", "nope", {}, confidence=0.9)
        assert (r.ok, r.mode, r.decision.rule) == (False, None, "tool.unknown")

    def test_permissions_when_agents_are_declared(self, clock):
        engine = Engine.default(clock=clock, agents={"mailer": {"mail.send", "mail.read"},
                                                     "reader": {"vision.read"}})
        assert engine.decide("mailer", "msgraph_send_email", 0.9, approval=True).mode is L
        d = engine.decide("reader", "msgraph_send_email", 0.9, approval=True)
        assert (d.mode, d.allowed, d.rule) == (M, False, "permission.missing")
        assert "mail.read, mail.send" in d.reason
        assert engine.decide("ghost", "vision_inspect", 0.9).rule == "agent.unknown"


class TestLiveGates:
    def test_high_risk_never_live_without_an_approval_event(self, clock):
        engine = Engine.default(clock=clock)
        engine.register_handler("msgraph_send_email", live=lambda a: "sent")
        r = engine.execute("a", "msgraph_send_email", {}, confidence=1.0)
        assert r.mode is D or r.mode is M
        assert r.mode is not L
        events = list(engine.audit.records())
        assert not any(e["kind"] == "transition" and e["dst"] == "LIVE" for e in events)

    def test_live_entered_only_through_confirm_approval(self, clock):
        engine = Engine.default(clock=clock, approver=lambda req: True)
        engine.register_handler("msgraph_send_email", live=lambda a: "sent")
        r = engine.execute("a", "msgraph_send_email", {}, confidence=0.9)
        assert r.mode is L
        into_live = [e for e in engine.audit.records()
                     if e["kind"] == "transition" and e["dst"] == "LIVE"]
        assert [(e["event"], e["data"]["approval"]) for e in into_live] == \
            [("confirm_approval", True)]

    def test_tool_without_live_handler_never_runs_live(self, engine):
        ran = []
        engine.register_handler("text_extract", dry_run=lambda a: ran.append("dry"))
        r = engine.execute("a", "text_extract", {}, confidence=1.0)
        assert (r.decision.mode, r.mode, ran) == (L, D, ["dry"])
        downgrades = [e for e in engine.audit.records() if e["event"] == "downgrade"]
        assert downgrades[0]["data"]["why"] == "no live handler registered"

    def test_tool_without_any_handler_runs_the_labelled_simulator(self, engine):
        r = engine.execute("a", "text_extract", {"doc": 1}, confidence=1.0)
        assert r.mode is M
        assert r.result == {"simulated": True, "tool": "text_extract", "mode": "MOCK",
                            "args": {"doc": 1}}

    def test_lock_stops_a_call_decided_before_it(self, engine):
        ran = []
        engine.register_handler("form_fill", live=lambda a: ran.append("LIVE"),
                                mock=lambda a: ran.append("MOCK"))
        pending = engine.prepare("a", "form_fill", {}, confidence=0.95)
        assert pending.decision.mode is L
        engine.lock("kill switch")
        result = pending.run()
        assert ran == ["MOCK"]
        assert (result.mode, result.state) == (M, S.COMPLETED)
        lock_moves = [e for e in engine.audit.records()
                      if e["subject"] == pending.context and e["event"] == "lock"]
        assert lock_moves[0]["data"]["why"] == "system locked before the LIVE run"
        assert replay(engine.audit).ok

    def test_lock_taken_while_approval_is_pending(self, clock):
        holder = {}

        def approver(request):
            holder["engine"].lock("during approval")
            return True

        engine = Engine.default(clock=clock, approver=approver)
        holder["engine"] = engine
        engine.register_handler("msgraph_send_email", live=lambda a: "sent")
        r = engine.execute("a", "msgraph_send_email", {}, confidence=0.9)
        assert r.mode is M and r.decision.rule == "system.lock"
        assert replay(engine.audit).ok

    def test_pending_call_runs_once(self, engine):
        calls = []
        engine.register_handler("form_fill", live=lambda a: calls.append(1) or len(calls))
        pending = engine.prepare("a", "form_fill", {}, confidence=0.9)
        assert pending.run() is pending.run()
        assert calls == [1]

    def test_cancel(self, engine):
        pending = engine.prepare("a", "form_fill", {}, confidence=0.9)
        result = pending.cancel("changed my mind")
        assert (result.state, result.ok, result.error) == (S.ABORTED, False, "changed my mind")
        assert pending.run() is result


class TestApprovals:
    def test_approval_with_edited_arguments_runs_the_edited_ones(self, clock):
        engine = Engine.default(clock=clock, approver=lambda req: Approval.edit(
            {"to": "team@example.com", "body": req.args["body"]}, "send to the team instead"))
        sent = []
        engine.register_handler("msgraph_send_email", live=lambda a: sent.append(a) or "sent")
        r = engine.execute("a", "msgraph_send_email", {"to": "ceo@example.com", "body": "hi"},
                           confidence=0.9)
        assert sent == [{"to": "team@example.com", "body": "hi"}]
        assert r.args == {"to": "team@example.com", "body": "hi"}
        edit = next(e for e in engine.audit.records() if e["kind"] == "approval")
        assert edit["data"]["original"] == {"to": "ceo@example.com", "body": "hi"}
        assert edit["data"]["edited"] == {"to": "team@example.com", "body": "hi"}
        assert edit["data"]["reason"] == "send to the team instead"

    def test_denial_halts_and_locks_the_context(self, clock):
        engine = Engine.default(clock=clock, approver=lambda req: Approval.deny("no"))
        ran = []
        engine.register_handler("msgraph_send_email", live=ran.append, mock=ran.append)
        r = engine.execute("a", "msgraph_send_email", {}, confidence=0.9)
        assert (r.ok, r.mode, ran) == (False, None, [])
        moves = [(e["event"], e["dst"]) for e in engine.audit.records()
                 if e["kind"] == "transition"]
        assert moves[-2:] == [("approval_denied", "LOCKED"), ("abort", "ABORTED")]
        assert engine.locked is False  # only the context, not the system

    def test_approver_sees_the_request(self, clock):
        seen = []
        engine = Engine.default(clock=clock, approver=lambda req: seen.append(req) or True)
        engine.execute("bot", "file_operation", {"path": "/tmp/x"}, confidence=0.95)
        (req,) = seen
        assert (req.agent, req.tool, req.risk, req.confidence, dict(req.args)) == \
            ("bot", "file_operation", RiskLevel.HIGH, 0.95, {"path": "/tmp/x"})

    def test_approver_not_asked_below_the_live_threshold(self, clock):
        seen = []
        engine = Engine.default(clock=clock, approver=lambda req: seen.append(req) or True)
        assert engine.decide("a", "msgraph_send_email", 0.84).mode is D
        assert seen == []

    def test_bad_approver_answer_fails_closed(self, clock):
        engine = Engine.default(clock=clock, approver=lambda req: "yes")
        d = engine.decide("a", "msgraph_send_email", 0.9)
        assert d.allowed is False


class TestGrants:
    def test_grant_expires_on_the_injected_clock(self, engine, clock):
        grant = engine.grant("a", "msgraph_send_email", seconds=60, reason="campaign")
        assert engine.decide("a", "msgraph_send_email", 0.9).mode is L
        clock.advance(59.9)
        assert engine.decide("a", "msgraph_send_email", 0.9).mode is L
        clock.advance(0.1)
        assert engine.decide("a", "msgraph_send_email", 0.9).mode is D
        assert engine.grants() == []
        decisions = [e["data"]["approved_by"] for e in engine.audit.records()
                     if e["kind"] == "decision"]
        assert decisions == [f"grant:{grant.id}", f"grant:{grant.id}", None]
        assert replay(engine.audit).ok

    def test_grant_for_a_number_of_calls(self, engine):
        engine.grant("a", "database_write", calls=2)
        modes = [engine.decide("a", "database_write", 0.9).mode for _ in range(3)]
        assert modes == [L, L, D]

    def test_grant_is_scoped_to_agent_and_tool(self, engine):
        engine.grant("a", "database_write", calls=5)
        assert engine.decide("b", "database_write", 0.9).mode is D
        assert engine.decide("a", "file_operation", 0.9).mode is D

    def test_grant_does_not_lower_thresholds(self, engine):
        engine.grant("a", "database_write", calls=5)
        assert engine.decide("a", "database_write", 0.84).mode is D
        assert engine.grants()[0].calls == 5

    def test_revoke(self, engine):
        grant = engine.grant("a", "database_write", seconds=3600)
        engine.revoke(grant.id, "done")
        assert engine.decide("a", "database_write", 0.9).mode is D
        assert [k for k in kinds(engine) if k in ("grant", "revoke")] == ["grant", "revoke"]
        with pytest.raises(InputError, match="no active grant"):
            engine.revoke(grant.id)

    def test_grant_used_by_execute(self, engine):
        engine.register_handler("database_write", live=lambda a: "written")
        engine.grant("a", "database_write", calls=1)
        assert engine.execute("a", "database_write", {}, confidence=0.9).mode is L
        assert engine.execute("a", "database_write", {}, confidence=0.9).mode is not L
        assert replay(engine.audit).ok

    def test_grant_needs_a_bound_and_a_known_tool(self, engine):
        with pytest.raises(InputError, match="needs a period"):
            engine.grant("a", "database_write")
        with pytest.raises(UnknownToolError):
            engine.grant("a", "nope", calls=1)


class TestMasking:
    def test_secrets_never_reach_the_log(self, engine):
        engine.register_handler("form_fill", live=lambda a: {"session_id": "s-9", "ok": True})
        engine.execute("a", "form_fill", {"user": "bob", "password": "hunter2",
                                          "headers": {"Authorization": "Bearer abc"},
                                          "api_key": "sk-123"}, confidence=0.9)
        text = "\n".join(engine.audit.lines())
        for secret in ("hunter2", "Bearer abc", "sk-123", "s-9"):
            assert secret not in text
        run = next(e for e in engine.audit.records() if e["kind"] == "execution")
        assert run["data"]["args"] == {"user": "bob", "password": "***",
                                       "headers": {"Authorization": "***"}, "api_key": "***"}

    def test_masked_keys_are_configurable(self, clock):
        from buddy.engine import Masker

        audit = AuditLog.memory(clock=clock, masker=Masker(extra_keys=["ssn"]))
        engine = Engine.default(clock=clock, audit=audit)
        engine.execute("a", "form_fill", {"ssn": "123-45", "name": "x"}, confidence=0.9)
        assert "123-45" not in "\n".join(audit.lines())


class TestConcurrency:
    def test_eight_threads_leave_a_whole_valid_chain(self, tmp_path, clock):
        path = tmp_path / "audit.jsonl"
        audit = AuditLog.open(path, clock=clock, sync="batch", sync_every=64)
        engine = unthrottled(clock=clock, audit=audit)
        per_thread, barrier = 500, threading.Barrier(8)

        def work(i):
            barrier.wait()
            for n in range(per_thread):
                engine.decide(f"agent-{i}", ("form_fill", "text_extract")[n % 2], (n % 100) / 100)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        audit.close()
        lines = path.read_text().splitlines()
        assert len(lines) == 1 + 8 * per_thread
        report = verify_lines(lines)
        assert report.last_seq == 1 + 8 * per_thread
        rep = replay(path)
        assert rep.ok and rep.decisions == 8 * per_thread

    def test_eight_threads_executing_reuse_contexts_safely(self, clock):
        engine = unthrottled(clock=clock)
        engine.register_handler("form_fill", live=lambda a: a["n"])
        results, barrier = [], threading.Barrier(8)

        def work(i):
            barrier.wait()
            for n in range(100):
                results.append(engine.execute(f"agent-{i}", "form_fill", {"n": n},
                                              confidence=0.9))

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len({r.context for r in results}) == 800
        assert all(r.state is S.COMPLETED and r.mode is L for r in results)
        report = replay(engine.audit)
        assert report.ok and len(report.states) == 800
        assert set(report.states.values()) == {("escalation", "COMPLETED")}

    def test_threads_racing_a_lock_never_record_live_after_it(self, clock):
        engine = unthrottled(clock=clock)
        stop = threading.Event()

        def work():
            while not stop.is_set():
                engine.decide("a", "text_extract", 0.99)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        engine.lock("race")
        for _ in range(200):
            engine.decide("main", "text_extract", 0.99)
        stop.set()
        for t in threads:
            t.join()
        seen_lock = False
        for e in engine.audit.records():
            seen_lock = seen_lock or e["kind"] == "lock"
            if seen_lock and e["kind"] == "decision":
                assert e["data"]["mode"] == "MOCK"
        assert replay(engine.audit).ok


@given(calls=st.lists(st.tuples(st.sampled_from(list(RiskLevel)),
                                st.sampled_from([0.0, 0.5, 0.65, 0.7, 0.8, 0.85, 1.0, 0.123]),
                                st.sampled_from([True, False, None]), st.booleans()),
                      min_size=1, max_size=60))
def test_remembered_walks_match_the_reference(calls):
    """One engine, repeated inputs: decisions looked up from the walk memo stay right."""
    engine = Engine.default(clock=lambda: 0.0)
    for risk, confidence, approval, locked in calls:
        if locked != engine.locked:
            engine.lock() if locked else engine.unlock()
        d = engine.decide("a", TOOL[risk], confidence, approval=approval)
        assert (d.mode, d.allowed) == reference(risk, confidence, approval, locked)


def test_walk_memo_is_bounded(monkeypatch):
    import buddy.engine.core._decision as decision

    monkeypatch.setattr(decision, "WALK_MEMO_SIZE", 10)
    engine = Engine.default(clock=lambda: 0.0)
    for i in range(25):
        assert engine.decide("a", "form_fill", i / 100).mode is M
    assert 0 < len(engine.policy.walked) <= 10


@given(risk=st.sampled_from(list(RiskLevel)),
       confidence=st.one_of(st.sampled_from([0.0, 0.5, 0.65, 0.7, 0.8, 0.85, 1.0]),
                            st.floats(0, 1)),
       approval=st.sampled_from([True, False, None]),
       locked=st.booleans())
def test_decide_matches_the_reference_table(risk, confidence, approval, locked):
    engine = Engine.default(clock=lambda: 0.0)
    if locked:
        engine.lock()
    d = engine.decide("a", TOOL[risk], confidence, approval=approval)
    assert (d.mode, d.allowed) == reference(risk, confidence, approval, locked)
    if d.mode is L:
        assert not locked
        assert risk is not RiskLevel.HIGH or approval is True


class TestHostileHandlers:
    def test_an_interrupt_in_live_is_recorded_and_rolled_back_then_raised(self, engine):
        undone = []
        engine.register_handler("form_fill", live=lambda a: "filled",
                                undo=lambda a, r: undone.append(r))

        def interrupted(args):
            raise KeyboardInterrupt("operator pressed ^C")

        engine.register_handler("button_click", live=interrupted)
        with engine.session("a") as s:
            s.execute("form_fill", {}, confidence=0.9)
            with pytest.raises(KeyboardInterrupt):
                s.execute("button_click", {}, confidence=0.9)
        assert undone == ["filled"]
        run = [e for e in engine.audit.records() if e["kind"] == "execution"][-1]
        assert (run["data"]["ok"], run["data"]["error"]) == (
            False, "KeyboardInterrupt: operator pressed ^C")
        assert replay(engine.audit).ok

    def test_an_exception_that_cannot_be_printed_is_recorded(self, engine):
        class Unprintable(Exception):
            def __str__(self):
                raise RuntimeError("no")

        def fails(args):
            raise Unprintable

        engine.register_handler("form_fill", live=fails)
        result = engine.execute("a", "form_fill", {}, confidence=0.9)
        assert (result.ok, result.error) == (False, "Unprintable: <unprintable>")
        assert replay(engine.audit).ok


class TestSessions:
    def test_an_ended_session_takes_no_more_calls(self, engine):
        with engine.session("a") as s:
            s.execute("form_fill", {}, confidence=0.9)
        with pytest.raises(InputError, match=r"^the session of 'a' has ended"):
            s.execute("form_fill", {}, confidence=0.9)

    def test_rolled_back_lists_only_what_was_undone(self, engine):
        engine.register_handler("form_fill", live=lambda a: a["n"],
                                undo=lambda a, r: 1 / 0 if r == 2 else None)
        engine.register_handler("button_click", live=lambda a: 1 / 0)
        with engine.session("a") as s:
            done = [s.execute("form_fill", {"n": n}, confidence=0.9) for n in (1, 2)]
            failed = s.execute("button_click", {}, confidence=0.9)
        assert failed.rolled_back == (done[0].context,)
        oks = [e["data"]["ok"] for e in engine.audit.records() if e["kind"] == "rollback"]
        assert oks == [False, True]
