"""The gate: exact inputs or a refusal, history-free decisions, grants, rate limits, ids."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from buddy.engine import (
    Approval,
    AuditLog,
    Engine,
    ExecutionMode,
    ToolContractRegistry,
    Verdict,
)
from buddy.engine.core._gate import TokenBucket
from buddy.engine.core._replay import replay
from buddy.machines import ExecutionState
from buddy.rules import EscalationTable
from buddy.rules.base.errors import InputError
from tests.helpers import ManualClock

M, D, L = ExecutionMode.MOCK, ExecutionMode.DRY_RUN, ExecutionMode.LIVE
S = ExecutionState
HIGH = "msgraph_send_email"  # HIGH risk: LIVE needs 0.85 and an approval
ODD_APPROVALS = [0, 1, 1.0, 0.0, "yes", "", [], {}, math.nan]
REGISTRY, TABLE = ToolContractRegistry.default(), EscalationTable.default()  # loaded once


def decide(engine, approval, tool=HIGH, confidence=0.9):
    d = engine.decide("a", tool, confidence, approval=approval)
    return d.mode, d.allowed, d.rule


class TestApprovalValues:
    """Defect 3: 0 and 1 were remembered as False and True, so decisions depended on history."""

    def test_zero_then_false_still_denies(self):
        engine = Engine.default(clock=ManualClock())
        assert decide(engine, 0) == (M, False, "input.approval")
        assert decide(engine, False) == (M, False, "approval.denied")

    def test_true_then_one_is_not_live(self):
        engine = Engine.default(clock=ManualClock())
        assert decide(engine, True) == (L, True, "high.live")
        assert decide(engine, 1) == (M, False, "input.approval")
        assert decide(Engine.default(clock=ManualClock()), 1) == (M, False, "input.approval")

    @pytest.mark.parametrize("approval", ODD_APPROVALS)
    def test_anything_but_true_false_none_is_refused(self, approval):
        engine = Engine.default(clock=ManualClock())
        d = engine.decide("a", "form_fill", 0.9, approval=approval)
        assert (d.mode, d.allowed, d.rule) == (M, False, "input.approval")
        assert d.reason.startswith("approval must be true, false or none (got ")
        last = list(engine.audit.records())[-1]["data"]
        assert (last["rule"], last["allowed"], last["mode"]) == ("input.approval", False, "MOCK")
        assert replay(engine.audit).ok

    def test_execute_refuses_an_odd_approval_and_runs_nothing(self):
        engine = Engine.default(clock=ManualClock())
        ran = []
        engine.register_handler("form_fill", live=ran.append, mock=ran.append)
        result = engine.execute("a", "form_fill", {}, confidence=0.9, approval=1)
        assert (result.ok, result.mode, result.decision.rule, ran) == (
            False, None, "input.approval", [])

    @given(st.lists(st.tuples(st.sampled_from([True, False, None, *ODD_APPROVALS[:5]]),
                              st.sampled_from([0.0, 0.5, 0.8, 0.85, 0.9, 1.0, 1, 0]),
                              st.sampled_from([HIGH, "form_fill", "text_extract"])),
                    max_size=30))
    def test_a_decision_never_depends_on_the_calls_before_it(self, calls):
        engine = Engine(REGISTRY, TABLE, clock=ManualClock())
        for approval, confidence, tool in calls:
            alone = decide(Engine(REGISTRY, TABLE, clock=ManualClock()), approval, tool,
                           confidence)
            assert decide(engine, approval, tool, confidence) == alone


class TestInputs:
    @pytest.mark.parametrize("agent", [None, 7, "", b"a", ["a"], {"a": 1}, ("a",)])
    def test_an_agent_that_is_not_a_string_is_refused(self, agent):
        engine = Engine.default(clock=ManualClock())
        d = engine.decide(agent, "form_fill", 0.9)
        assert (d.mode, d.allowed, d.rule) == (M, False, "input.agent")
        result = engine.execute(agent, "form_fill", {}, confidence=0.9)
        assert (result.ok, result.mode, result.decision.rule) == (False, None, "input.agent")
        assert replay(engine.audit).ok

    @pytest.mark.parametrize("tool", [None, 3, {"a": 1}, ["form_fill"], "FORM_FILL"])
    def test_a_tool_that_is_not_a_known_name_is_refused(self, tool):
        engine = Engine.default(clock=ManualClock(), agents={"a": {"ui.write"}})
        d = engine.decide("a", tool, 0.9)
        assert (d.mode, d.allowed, d.rule) == (M, False, "tool.unknown")
        assert replay(engine.audit).ok

    @pytest.mark.parametrize("args", [[1, 2], "x", 3, {1: "int key"}, {("t",): 1}])
    def test_args_that_are_not_a_mapping_with_string_keys_are_refused(self, args):
        engine = Engine.default(clock=ManualClock())
        ran = []
        engine.register_handler("form_fill", live=ran.append)
        result = engine.execute("a", "form_fill", args, confidence=0.9)
        assert (result.ok, result.mode, result.decision.rule, ran) == (
            False, None, "input.args", [])
        assert replay(engine.audit).ok


class TestHugeNumbers:
    @pytest.mark.parametrize("confidence", [10 ** 400, -(10 ** 400), 2 ** 64])
    def test_an_integer_too_large_for_a_float_is_a_refused_confidence(self, confidence):
        engine = Engine.default(clock=ManualClock())
        d = engine.decide("a", "form_fill", confidence)
        assert (d.mode, d.allowed, d.rule) == (M, False, "input.confidence")
        result = engine.execute("a", "form_fill", {}, confidence=confidence)
        assert (result.ok, result.decision.rule) == (False, "input.confidence")
        assert replay(engine.audit).ok


class TestGrants:
    """Defect 4: an endless grant and a fractional number of calls were accepted."""

    @pytest.mark.parametrize("seconds", [math.inf, -math.inf, math.nan, 0, -1, True, "60",
                                         pytest.param(10 ** 400, id="10**400")])
    def test_seconds_must_be_finite_and_positive(self, seconds):
        engine = Engine.default(clock=ManualClock())
        before = engine.audit.last_seq
        with pytest.raises(InputError, match=r"^grant: seconds must be a finite number > 0"):
            engine.grant("a", HIGH, seconds=seconds)
        assert engine.audit.last_seq == before and engine.grants() == []

    @pytest.mark.parametrize("calls", [1.5, 0, -2, True, "2", 2.0, 2 ** 53, 2 ** 64])
    def test_calls_must_be_a_whole_number(self, calls):
        engine = Engine.default(clock=ManualClock())
        with pytest.raises(InputError, match=r"^grant: calls must be a whole number from 1 to "):
            engine.grant("a", HIGH, calls=calls)
        assert engine.grants() == []

    def test_one_call_approves_one_live_call(self):
        engine = Engine.default(clock=ManualClock())
        engine.grant("a", HIGH, calls=1)
        assert decide(engine, None)[0] is L
        assert decide(engine, None)[0] is D

    def test_grant_ids_are_made_from_their_event(self):
        engine = Engine.default(clock=ManualClock())
        grant = engine.grant("a", HIGH, seconds=60)
        assert grant.id == f"grant-{engine.audit.last_seq}"


class TestIdsAcrossReopens:
    """Defects 5 and 6: a reopened log started its grant and context ids at 1 again."""

    def test_grants_of_two_writers_never_share_an_id(self, tmp_path):
        path, clock, ids = tmp_path / "audit.jsonl", ManualClock(), []
        for _ in range(2):
            with AuditLog.open(path, clock=clock) as audit:
                engine = Engine.default(clock=clock, audit=audit)
                ids.append(engine.grant("a", HIGH, calls=1).id)
                assert decide(engine, None)[0] is L
        assert ids[0] != ids[1]
        report = replay(path)
        assert report.ok and report.decisions == 2

    def test_contexts_of_two_writers_never_share_an_id(self, tmp_path):
        path, clock, contexts = tmp_path / "audit.jsonl", ManualClock(), []
        for _ in range(2):
            with AuditLog.open(path, clock=clock) as audit:
                engine = Engine.default(clock=clock, audit=audit)
                engine.register_handler("form_fill", live=lambda a: "done")
                contexts.append(engine.execute("a", "form_fill", {}, confidence=0.9).context)
        assert contexts[0] != contexts[1]
        report = replay(path)
        assert report.ok
        assert report.states == {c: ("escalation", "COMPLETED") for c in contexts}


class TestApproverAnswers:
    """Defect 14: an edit whose arguments are not a mapping made execute raise."""

    @pytest.mark.parametrize("args", [[1, 2], "rm -rf /", 3, {1: "x"}])
    def test_an_edit_that_is_not_a_mapping_is_a_denial(self, args):
        def approver(request):
            return Approval(Verdict.APPROVE, args)  # refused by Approval's validator

        engine = Engine.default(clock=ManualClock(), approver=approver)
        sent = []
        engine.register_handler(HIGH, live=sent.append, dry_run=sent.append)
        result = engine.execute("a", HIGH, {"to": "x@example.com"}, confidence=0.9)
        assert (result.ok, result.decision.rule, result.state, sent) == (
            False, "approval.denied", S.ABORTED, [])
        assert replay(engine.audit).ok

    def test_an_edit_forced_past_the_validator_is_a_denial(self):
        def approver(request):
            answer = Approval.edit({"to": "ok@example.com"})
            object.__setattr__(answer, "args", ["smuggled"])
            return answer

        engine = Engine.default(clock=ManualClock(), approver=approver)
        sent = []
        engine.register_handler(HIGH, live=sent.append)
        result = engine.execute("a", HIGH, {"to": "x@example.com"}, confidence=0.9)
        assert (result.ok, result.decision.rule, sent) == (False, "approval.denied", [])


class TestRateLimits:
    """``rate_limit_per_minute`` was in every contract and enforced nowhere."""

    def test_bucket_refills_on_the_clock(self):
        bucket = TokenBucket(60)  # one a second
        assert all(bucket.take(0.0) for _ in range(60))
        assert not bucket.take(0.0)
        assert not bucket.take(0.5)
        assert bucket.take(1.5) and not bucket.take(1.5)
        assert not bucket.take(1.0)  # a clock that went back refills nothing

    def test_live_and_dry_run_calls_over_the_limit_are_refused(self):
        clock = ManualClock()
        engine = Engine.default(clock=clock)  # msgraph_send_email: 30 per minute
        assert [decide(engine, True)[0] for _ in range(30)] == [L] * 30
        d = engine.decide("b", HIGH, 0.9, approval=True)
        assert (d.mode, d.allowed, d.rule) == (M, False, "rate.limit")
        assert d.reason == ("msgraph_send_email allows 30 calls per minute and none is left: "
                            "fail closed")
        assert decide(engine, None, confidence=0.8) == (M, False, "rate.limit")  # DRY_RUN too
        clock.advance(2.0)  # one token back
        assert decide(engine, True)[0] is L
        assert decide(engine, True)[2] == "rate.limit"
        assert replay(engine.audit).ok

    def test_mock_calls_take_no_token(self):
        engine = Engine.default(clock=ManualClock())
        for _ in range(100):
            assert decide(engine, None, confidence=0.1) == (M, True, "high.dry_run")
        assert decide(engine, True)[0] is L

    def test_execute_over_the_limit_runs_nothing(self):
        engine = Engine.default(clock=ManualClock())  # database_write: 30 per minute
        ran = []
        engine.register_handler("database_write", live=ran.append, dry_run=ran.append)
        results = [engine.execute("a", "database_write", {"n": n}, confidence=0.9,
                                  approval=True) for n in range(31)]
        assert [r.mode for r in results[:30]] == [L] * 30 and len(ran) == 30
        last = results[-1]
        assert (last.ok, last.mode, last.decision.rule, last.state) == (
            False, None, "rate.limit", S.ABORTED)
        assert replay(engine.audit).ok


class TestTheLogsLock:
    """A lock in a log holds for every engine writing to it, as replay reads it."""

    def test_two_engines_on_one_log_share_its_lock(self):
        clock = ManualClock()
        log = AuditLog.memory(clock=clock)
        first, second = (Engine.default(clock=clock, audit=log) for _ in range(2))
        first.lock("incident")
        assert second.locked is True
        assert decide(second, True, "form_fill") == (M, True, "system.lock")
        second.unlock("resolved")
        assert first.locked is False and decide(first, True, "form_fill")[0] is L
        assert replay(log).ok

    def test_a_lock_written_by_another_writer_of_the_file(self, tmp_path):
        path, clock = tmp_path / "audit.jsonl", ManualClock()
        with AuditLog.open(path, clock=clock) as one, AuditLog.open(path, clock=clock) as two:
            locker = Engine.default(clock=clock, audit=one)
            worker = Engine.default(clock=clock, audit=two)
            ran = []
            worker.register_handler("form_fill", live=ran.append)
            pending = worker.prepare("a", "form_fill", {}, confidence=0.9)
            assert pending.decision.mode is L
            locker.lock("incident")                       # another writer, after the decision
            result = pending.run()                        # the kill switch still holds
            assert (result.mode, ran) == (M, [])
            assert decide(worker, None, "form_fill") == (M, True, "system.lock")
        assert replay(path).ok

    def test_a_log_left_locked_opens_locked(self, tmp_path):
        path, clock = tmp_path / "audit.jsonl", ManualClock()
        with AuditLog.open(path, clock=clock) as log:
            Engine.default(clock=clock, audit=log).lock("incident, not over")
        with AuditLog.open(path, clock=clock) as log:
            engine = Engine.default(clock=clock, audit=log)
            assert engine.locked is True
            assert decide(engine, True, "form_fill") == (M, True, "system.lock")
        assert replay(path).ok


class TestGrantsAtRunTime:
    """A grant revoked or expired between a decision and its LIVE run no longer approves it."""

    @pytest.mark.parametrize("withdraw", ["revoke", "expire"])
    def test_the_live_run_is_downgraded(self, withdraw):
        clock = ManualClock()
        engine = Engine.default(clock=clock)
        written = []
        engine.register_handler("database_write", live=written.append,
                                dry_run=lambda a: "rehearsed")
        grant = engine.grant("a", "database_write", seconds=10)
        pending = engine.prepare("a", "database_write", {"row": 1}, confidence=0.9)
        assert pending.decision.mode is L
        if withdraw == "revoke":
            engine.revoke(grant.id)
        else:
            clock.advance(3600)
        result = pending.run()
        assert (result.mode, result.result, written) == (D, "rehearsed", [])
        why = [e["data"]["why"] for e in engine.audit.records() if e["event"] == "downgrade"]
        assert why == [f"grant {grant.id} was revoked before the LIVE run"
                       if withdraw == "revoke" else
                       f"grant {grant.id} expired at 1010.0 before the LIVE run"]
        assert replay(engine.audit).ok

    def test_a_grant_still_standing_runs_live(self):
        engine = Engine.default(clock=ManualClock())
        engine.register_handler("database_write", live=lambda a: "written")
        engine.grant("a", "database_write", calls=1)
        pending = engine.prepare("a", "database_write", {}, confidence=0.9)
        assert pending.run().mode is L  # its one call was used by this very decision


class TestHostileValues:
    def test_a_float_whose_comparisons_lie_is_read_as_the_number_it_holds(self):
        class Liar(float):
            def __ge__(self, other):
                return True

            __gt__ = __le__ = __lt__ = __ge__

        engine = Engine.default(clock=ManualClock())
        ran = []
        engine.register_handler("form_fill", live=ran.append, mock=lambda a: "mocked")
        result = engine.execute("a", "form_fill", {}, confidence=Liar(0.1))
        assert (result.mode, ran) == (M, [])
        assert decide(engine, None, "form_fill", Liar(0.1)) == (M, True, "medium.dry_run")
        recorded = [e["data"]["confidence"] for e in engine.audit.records()
                    if e["kind"] == "decision"]
        assert recorded == [0.1, 0.1] and all(type(c) is float for c in recorded)
        assert replay(engine.audit).ok

    def test_a_clock_that_is_no_number_is_refused_with_a_clear_error(self):
        reading: list[object] = [1000.0]
        engine = Engine.default(clock=lambda: reading[0])
        reading[0] = "now"
        with pytest.raises(InputError, match=r"^the engine's clock must return seconds as a "
                                             r"number \(got 'now'\)$"):
            engine.grant("a", HIGH, calls=1)

    @pytest.mark.parametrize("answer", [
        lambda: Approval.edit(None),
        lambda: Approval.deny(["not", "a", "reason"]),
        lambda: Approval.approve(reason=0),
    ])
    def test_odd_approvals_are_denials(self, answer):
        engine = Engine.default(clock=ManualClock(), approver=lambda request: answer())
        sent = []
        engine.register_handler(HIGH, live=sent.append)
        result = engine.execute("a", HIGH, {"to": "x@example.com"}, confidence=0.9)
        assert (result.ok, result.decision.rule, sent) == (False, "approval.denied", [])

    def test_a_mapping_that_cannot_be_walked_is_refused(self):
        class Broken(dict):
            def __iter__(self):
                raise RuntimeError("no")

        engine = Engine.default(clock=ManualClock())
        result = engine.execute("a", "form_fill", Broken(x=1), confidence=0.9)
        assert (result.ok, result.decision.rule) == (False, "input.args")

    def test_a_cap_that_is_no_mode_is_an_error(self):
        engine = Engine.default(clock=ManualClock())
        with pytest.raises(InputError, match=r"^max_mode must be an ExecutionMode or None "
                                             r"\(got 'MOCK'\)$"):
            engine.execute("a", "form_fill", {}, confidence=0.9, max_mode="MOCK")

    @pytest.mark.parametrize("grant_id", [[], None, 5, "grant-999"])
    def test_revoking_what_is_no_grant_is_an_error(self, grant_id):
        engine = Engine.default(clock=ManualClock())
        with pytest.raises(InputError, match=r"^no active grant "):
            engine.revoke(grant_id)


class TestWhatALogCanHold:
    """Whatever buddy writes, replay reads: names, reasons and bounds are refused or cleaned."""

    @pytest.mark.parametrize("agent", ["ctx-2", "ctx-17", "a\udcff", "\udcff"])
    def test_an_agent_that_is_no_name_is_refused(self, tmp_path, agent):
        path, clock = tmp_path / "audit.jsonl", ManualClock()
        with AuditLog.open(path, clock=clock) as log:
            engine = Engine.default(clock=clock, audit=log)
            pending = engine.prepare("a", "math_compute", {}, confidence=0.9)
            d = engine.decide(agent, "form_fill", 0.9)
            assert (d.mode, d.allowed, d.rule) == (M, False, "input.agent")
            assert engine.execute(agent, "form_fill", {}, confidence=0.9).decision.rule == \
                "input.agent"
            assert pending.run().ok
            with pytest.raises(InputError, match=r"^grant: agent must "):
                engine.grant(agent, HIGH, calls=1)
        assert replay(path).ok

    def test_names_that_only_look_alike_are_names(self):
        engine = Engine.default(clock=ManualClock())
        for agent in ("ctx-x", "ctx-", "é", "agent ctx-2"):
            assert engine.decide(agent, "form_fill", 0.9).mode is L

    def test_reasons_holding_a_lone_surrogate_are_recorded_escaped(self, tmp_path):
        path, clock = tmp_path / "audit.jsonl", ManualClock()
        with AuditLog.open(path, clock=clock) as log:
            engine = Engine.default(clock=clock, audit=log,
                                    approver=lambda request: Approval.deny("no \udcff"))
            engine.register_handler(HIGH, live=lambda args: "sent")
            assert engine.execute("a", HIGH, {}, confidence=0.9).decision.rule == \
                "approval.denied"
            grant = engine.grant("a", HIGH, calls=1, reason="ok \udcff")
            engine.revoke(grant, reason="bye \udcff")
            engine.lock("incident \udcff")
        assert replay(path).ok
        text = path.read_text("utf-8")
        assert "\\\\udcff" in text and "\udcff" not in text

    def test_a_period_too_short_to_move_the_clock_is_refused(self):
        engine = Engine.default(clock=ManualClock(1_700_000_000.0))
        with pytest.raises(InputError, match=r"^grant: seconds must move the clock: 1e-09 s "):
            engine.grant("a", HIGH, seconds=1e-9)

    def test_a_grant_is_revoked_by_itself_or_its_id(self):
        engine = Engine.default(clock=ManualClock())
        first, second = (engine.grant("a", HIGH, calls=1) for _ in range(2))
        engine.revoke(first)
        engine.revoke(second.id)
        assert engine.grants() == []

    def test_a_withdrawn_grant_on_a_tool_without_a_dry_run_handler_runs_the_mock(self):
        engine = Engine.default(clock=ManualClock())
        engine.register_handler("database_write", live=lambda args: "written")
        grant = engine.grant("a", "database_write", calls=1)
        pending = engine.prepare("a", "database_write", {}, confidence=0.9)
        engine.revoke(grant)
        result = pending.run()
        assert (result.ok, result.mode) == (True, M)
        assert result.result["simulated"] is True
        assert replay(engine.audit).ok
