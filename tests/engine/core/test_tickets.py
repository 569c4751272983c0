"""Approvals as tickets and idempotency keys: calls that outlive their process, run once."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
from pathlib import Path

import pytest

from buddy.engine import (
    AuditLog,
    Engine,
    Ticket,
    TicketError,
    TicketPending,
    replay,
)
from buddy.rules.base._values import ExecutionMode
from buddy.rules.base.errors import InputError
from tests.helpers import ManualClock, rechain

T0 = 1_700_000_000.0
EMAIL = "msgraph_send_email"
MAIL = {"to": "x@example.com", "body": "hi", "password": "hunter2-secret"}


class Sent:
    """A live email handler that counts its runs (in this process)."""

    def __init__(self) -> None:
        self.runs: list[dict] = []

    def __call__(self, args):
        self.runs.append(dict(args))
        return {"sent_to": args["to"]}


def _engine(clock=None, audit=None, **kwargs) -> tuple[Engine, Sent]:
    clock = clock or (lambda: T0)
    engine = Engine.default(clock=clock, audit=audit, **kwargs)
    sent = Sent()
    engine.register_handler(EMAIL, live=sent)
    return engine, sent


def _file_engine(path: Path, clock=None) -> tuple[Engine, Sent]:
    clock = clock or (lambda: T0)
    return _engine(clock, AuditLog.open(path, clock=clock))


class TestTickets:
    def test_a_call_that_waits_for_a_person_waits_as_a_ticket(self):
        engine, sent = _engine()
        asked = []
        engine.approver = lambda request: asked.append(request) or True
        pending = engine.prepare("a", EMAIL, MAIL, confidence=0.9, wait=True)
        assert pending.waiting and sent.runs == [] and asked == []  # nobody was asked
        ticket = pending.ticket
        assert ticket.status == "pending" and ticket.tool == EMAIL and ticket.agent == "a"
        assert ticket.context == pending.context and ticket.id.startswith("ticket-")
        assert ticket.mode == "DRY_RUN" and ticket.rule == "high.live"
        assert ticket.expires_at == T0 + 86_400
        with pytest.raises(TicketPending):
            pending.run()
        assert engine.tickets() == [ticket]
        assert Ticket.from_dict(json.loads(json.dumps(ticket.to_dict()))) == ticket
        assert replay(engine.audit).ok  # a call still waiting replays

    def test_approved_with_edited_arguments_runs_once_with_them(self):
        engine, sent = _engine()
        pending = engine.prepare("a", EMAIL, MAIL, confidence=0.9, wait=True)
        answered = engine.approve(pending.ticket.id, by="alice", reason="looks fine",
                                  args={**MAIL, "to": "bob@example.com"})
        assert answered.status == "approved" and answered.by == "alice" and answered.edited
        assert not pending.waiting
        result = pending.run()
        assert result.ok and result.mode is ExecutionMode.LIVE
        assert sent.runs == [{**MAIL, "to": "bob@example.com"}]
        assert pending.run() is result and engine.resume(pending.ticket.id) is result
        assert len(sent.runs) == 1
        decision = [r for r in engine.audit.records() if r["kind"] == "decision"][-1]
        assert decision["data"]["approved_by"] == f"ticket:{pending.ticket.id}"
        assert decision["data"]["approval"] is True
        edit_event = [r for r in engine.audit.records() if r["event"] == "edit_args"][0]
        assert edit_event["data"]["edited"]["to"] == "bob@example.com"
        assert "hunter2" not in "\n".join(engine.audit.lines())  # masked in the trail
        assert engine.ticket(pending.ticket.id).status == "resumed"
        assert replay(engine.audit).ok

    def test_where_its_confidence_came_from_is_kept_to_the_decision(self):
        engine, sent = _engine(default_confidence=0.9)
        pending = engine.prepare("a", EMAIL, MAIL, wait=True)
        engine.approve(pending.ticket.id, by="alice")
        assert pending.run().ok and len(sent.runs) == 1
        decision = [r for r in engine.audit.records() if r["kind"] == "decision"][-1]
        assert decision["data"]["confidence_from"] == "default"
        assert replay(engine.audit).ok

    def test_denied_closes_without_running(self):
        engine, sent = _engine()
        pending = engine.prepare("a", EMAIL, MAIL, confidence=0.9, wait=True)
        engine.deny(pending.ticket.id, "not to that list", by="bob")
        result = pending.run()
        assert not result.ok and result.mode is None and sent.runs == []
        assert result.decision.rule == "approval.denied"
        assert replay(engine.audit).ok

    def test_an_unanswered_ticket_expires_and_never_runs(self):
        clock = ManualClock(T0)
        engine, sent = _engine(clock)
        pending = engine.prepare("a", EMAIL, MAIL, confidence=0.9, wait=True, expires_in=60)
        clock.advance(60)
        with pytest.raises(TicketError, match="expired"):
            engine.approve(pending.ticket.id, by="alice")
        result = pending.run()
        assert not result.ok and "expired" in result.error and sent.runs == []
        assert engine.ticket(pending.ticket.id).status == "expired"
        assert replay(engine.audit).ok

    def test_a_ticket_says_expired_once_its_time_is_up(self):
        clock = ManualClock(T0)
        engine, _ = _engine(clock)
        pending = engine.prepare("a", EMAIL, MAIL, confidence=0.9, wait=True, expires_in=60)
        clock.advance(60)
        assert engine.ticket(pending.ticket.id).status == "expired"
        assert not pending.waiting and engine.tickets() == []
        assert [t.id for t in engine.tickets("expired")] == [pending.ticket.id]

    def test_an_approval_not_resumed_before_the_expiry_does_not_run(self):
        clock = ManualClock(T0)
        engine, sent = _engine(clock)
        pending = engine.prepare("a", EMAIL, MAIL, confidence=0.9, wait=True, expires_in=60)
        engine.approve(pending.ticket.id, by="alice")
        clock.advance(61)
        assert not pending.run().ok and sent.runs == []
        assert replay(engine.audit).ok

    def test_a_grant_still_approves_at_once_without_a_ticket(self):
        engine, sent = _engine()
        engine.grant("a", EMAIL, calls=1)
        pending = engine.prepare("a", EMAIL, MAIL, confidence=0.9, wait=True)
        assert pending.ticket is None and not pending.waiting
        assert pending.run().mode is ExecutionMode.LIVE and len(sent.runs) == 1

    def test_calls_that_do_not_wait_get_no_ticket(self):
        engine, sent = _engine()
        low = engine.prepare("a", EMAIL, MAIL, confidence=0.5, wait=True)  # MOCK only
        refused = engine.prepare("a", "nope", {}, confidence=0.9, wait=True)
        assert low.ticket is None and refused.ticket is None
        assert not refused.run().ok and engine.tickets(None) == []

    def test_a_lock_taken_while_it_waits_stops_the_live_run(self):
        engine, sent = _engine()
        pending = engine.prepare("a", EMAIL, MAIL, confidence=0.9, wait=True)
        engine.approve(pending.ticket.id, by="alice")
        engine.lock("incident")
        result = pending.run()
        assert result.mode is not ExecutionMode.LIVE and sent.runs == []
        assert replay(engine.audit).ok

    @pytest.mark.parametrize(("call", "error"), [
        (lambda e, t: e.approve("ticket-999", by="x"), "no ticket 'ticket-999'"),
        (lambda e, t: e.approve(t, by=""), "must be printable text"),
        (lambda e, t: e.approve(t, by="a\u2028b"), "must be printable text"),
        (lambda e, t: e.approve(t, by=5), "must be printable text"),
        (lambda e, t: e.approve(t, by="x", args=["not", "a", "map"]), "mapping"),
        (lambda e, t: e.approve(t, by="x", reason=3), "reason must be a string"),
        (lambda e, t: e.resume(["ticket-1"]), "no ticket"),
        (lambda e, t: e.ticket(None), "no ticket"),
    ])
    def test_bad_answers_are_one_clear_error_and_write_nothing(self, call, error):
        engine, _ = _engine()
        ticket = engine.prepare("a", EMAIL, MAIL, confidence=0.9, wait=True).ticket
        before = engine.audit.last_seq
        with pytest.raises(InputError, match=error):
            call(engine, ticket.id)
        assert engine.audit.last_seq == before

    def test_a_ticket_answers_once(self):
        engine, _ = _engine()
        ticket = engine.prepare("a", EMAIL, MAIL, confidence=0.9, wait=True).ticket
        engine.deny(ticket.id, "no")
        with pytest.raises(TicketError, match="denied"):
            engine.approve(ticket.id, by="mallory")

    @pytest.mark.parametrize("expires_in", [0, -1, float("inf"), float("nan"), True, "60"])
    def test_bad_expiries_are_refused(self, expires_in):
        engine, _ = _engine()
        with pytest.raises(InputError, match="expires_in"):
            engine.prepare("a", EMAIL, MAIL, confidence=0.9, wait=True, expires_in=expires_in)

    def test_async_resume_awaits_an_async_handler(self):
        engine = Engine.default(clock=lambda: T0)
        sent = []

        async def send(args):
            await asyncio.sleep(0)
            sent.append(args)
            return "sent"

        engine.register_handler(EMAIL, live=send)
        pending = engine.prepare("a", EMAIL, MAIL, confidence=0.9, wait=True)
        engine.approve(pending.ticket.id, by="alice")
        result = asyncio.run(pending.arun())
        assert result.ok and sent == [MAIL]
        assert asyncio.run(engine.aresume(pending.ticket.id)) is result


class TestAcrossProcesses:
    def test_a_ticket_survives_a_restart_and_runs_once(self, tmp_path):
        path = tmp_path / "audit.jsonl"
        engine, _ = _file_engine(path)
        ticket = engine.prepare("a", EMAIL, MAIL, confidence=0.9, wait=True).ticket
        engine.audit.close()
        other, _ = _file_engine(path)   # another process, say an HTTP handler
        assert [t.id for t in other.tickets()] == [ticket.id]
        other.approve(ticket.id, by="alice", args={**MAIL, "to": "bob@example.com"})
        other.audit.close()
        restarted, sent = _file_engine(path)
        result = restarted.resume(ticket.id)
        assert result.ok and sent.runs == [{**MAIL, "to": "bob@example.com"}]
        restarted.audit.close()
        again, sent_again = _file_engine(path)
        repeat = again.resume(ticket.id)  # from the trail: nothing runs
        assert repeat.ok and repeat.result == {"sent_to": "bob@example.com"}
        assert sent_again.runs == []
        again.audit.close()
        assert replay(path).ok
        assert not list((tmp_path / "audit.jsonl.tickets").glob("*.json"))  # secrets gone

    def test_the_kept_arguments_are_the_owners_alone(self, tmp_path):
        engine, _ = _file_engine(tmp_path / "audit.jsonl")
        ticket = engine.prepare("a", EMAIL, MAIL, confidence=0.9, wait=True).ticket
        kept = tmp_path / "audit.jsonl.tickets" / f"{ticket.id}.asked.json"
        assert json.loads(kept.read_text()) == MAIL
        assert kept.stat().st_mode & 0o077 == 0
        assert (tmp_path / "audit.jsonl.tickets").stat().st_mode & 0o077 == 0

    def test_tampered_arguments_do_not_run(self, tmp_path):
        path = tmp_path / "audit.jsonl"
        engine, sent = _file_engine(path)
        ticket = engine.prepare("a", EMAIL, MAIL, confidence=0.9, wait=True).ticket
        engine.approve(ticket.id, by="alice")
        kept = tmp_path / "audit.jsonl.tickets" / f"{ticket.id}.asked.json"
        kept.write_text(json.dumps({**MAIL, "to": "attacker@example.com"}))
        result = engine.resume(ticket.id)
        assert not result.ok and "not the ones approved" in result.error and sent.runs == []

    def test_arguments_json_cannot_hold_are_refused_for_a_file_log(self, tmp_path):
        engine, _ = _file_engine(tmp_path / "audit.jsonl")
        with pytest.raises(TicketError, match="must be JSON"):
            engine.prepare("a", EMAIL, {"to": object()}, confidence=0.9, wait=True)
        with pytest.raises(TicketError, match="must be JSON"):
            engine.prepare("a", EMAIL, {"n": 2 ** 70}, confidence=0.9, wait=True)

    def test_two_processes_resuming_one_ticket_run_it_once(self, tmp_path):
        path = tmp_path / "audit.jsonl"
        engine, _ = _file_engine(path)
        ticket = engine.prepare("a", EMAIL, MAIL, confidence=0.9, wait=True).ticket
        engine.approve(ticket.id, by="alice")
        engine.audit.close()
        marks = tmp_path / "runs"
        marks.mkdir()
        ctx = multiprocessing.get_context("fork")
        procs = [ctx.Process(target=_resume_in_a_process, args=(str(path), ticket.id,
                                                               str(marks), n))
                 for n in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
        assert len(list(marks.iterdir())) == 1   # one process ran it
        assert replay(path).ok


def _resume_in_a_process(path: str, ticket_id: str, marks: str, n: int) -> None:
    clock = lambda: T0  # noqa: E731
    engine = Engine.default(clock=clock, audit=AuditLog.open(path, clock=clock))
    engine.register_handler(EMAIL, live=lambda args: Path(marks, str(n)).write_text("ran"))
    engine.resume(ticket_id)
    engine.audit.close()
    os._exit(0)


class TestIdempotency:
    def test_a_repeat_returns_the_first_result_and_runs_nothing(self):
        engine, sent = _engine()
        first = engine.execute("a", EMAIL, MAIL, confidence=0.9, approval=True,
                               idempotency_key="call-1")
        again = engine.execute("a", EMAIL, MAIL, confidence=0.9, approval=True,
                               idempotency_key="call-1")
        assert first.ok and again is first and len(sent.runs) == 1
        events = [r["event"] for r in engine.audit.records() if r["kind"] == "idempotency"]
        assert events == ["claim", "done", "duplicate"]
        assert replay(engine.audit).ok

    def test_after_a_restart_from_the_trail(self, tmp_path):
        path = tmp_path / "audit.jsonl"
        engine, _ = _file_engine(path)
        engine.execute("a", EMAIL, MAIL, confidence=0.9, approval=True, idempotency_key="k")
        engine.audit.close()
        restarted, sent = _file_engine(path)
        again = restarted.execute("a", EMAIL, MAIL, confidence=0.9, approval=True,
                                  idempotency_key="k")
        assert again.ok and again.result == {"sent_to": MAIL["to"]} and sent.runs == []
        assert again.args["password"] != MAIL["password"]  # as the trail holds it: masked
        restarted.audit.close()
        assert replay(path).ok

    def test_the_key_with_other_arguments_runs_nothing(self):
        engine, sent = _engine()
        engine.execute("a", EMAIL, MAIL, confidence=0.9, approval=True, idempotency_key="k")
        other = engine.execute("a", EMAIL, {**MAIL, "to": "y"}, confidence=0.9,
                               approval=True, idempotency_key="k")
        assert not other.ok and "other arguments" in other.error and len(sent.runs) == 1

    def test_a_key_whose_run_was_interrupted_returns_that_and_runs_nothing(self):
        engine, sent = _engine()

        def interrupted(args):
            raise KeyboardInterrupt

        engine.register_handler(EMAIL, live=interrupted)
        with pytest.raises(KeyboardInterrupt):
            engine.execute("a", EMAIL, MAIL, confidence=0.9, approval=True,
                           idempotency_key="k")
        engine.register_handler(EMAIL, live=sent)
        again = engine.execute("a", EMAIL, MAIL, confidence=0.9, approval=True,
                               idempotency_key="k")  # the interrupted run, as recorded
        assert not again.ok and again.error == "KeyboardInterrupt" and sent.runs == []
        assert replay(engine.audit).ok

    def test_a_key_claimed_by_a_process_that_died_runs_nothing(self, tmp_path):
        path = tmp_path / "audit.jsonl"
        engine, _ = _file_engine(path)
        engine._calls.claim("k", "a", EMAIL, MAIL)  # claimed; the process dies before running
        engine.audit.close()
        restarted, sent = _file_engine(path)
        again = restarted.execute("a", EMAIL, MAIL, confidence=0.9, approval=True,
                                  idempotency_key="k")
        assert not again.ok and "never run twice" in again.error and sent.runs == []

    def test_a_pause_signal_from_the_approver_gives_the_key_back(self):
        class Pause(Exception):
            pass

        answers = iter([Pause("ask a person"), True])

        def approver(request):
            answer = next(answers)
            if isinstance(answer, Exception):
                raise answer
            return answer

        engine, sent = _engine(approver=approver)
        engine.pass_through = (Pause,)
        with pytest.raises(Pause):
            engine.execute("a", EMAIL, MAIL, confidence=0.9, idempotency_key="k")
        ran = engine.execute("a", EMAIL, MAIL, confidence=0.9, idempotency_key="k")  # re-run
        assert ran.ok and len(sent.runs) == 1
        assert engine.execute("a", EMAIL, MAIL, confidence=0.9, idempotency_key="k") is ran
        events = [r["event"] for r in engine.audit.records() if r["kind"] == "idempotency"]
        assert events == ["claim", "release", "claim", "done", "duplicate"]
        assert replay(engine.audit).ok

    def test_async_prepare_takes_keys_and_tickets(self):
        engine, sent = _engine()

        async def scenario():
            waiting = await engine.aprepare("a", EMAIL, MAIL, confidence=0.9, wait=True,
                                            idempotency_key="k")
            again = await engine.aprepare("a", EMAIL, MAIL, confidence=0.9, wait=True,
                                          idempotency_key="k")
            engine.approve(waiting.ticket.id, by="ops")
            return waiting, again, await again.arun()

        waiting, again, result = asyncio.run(scenario())
        assert waiting.ticket == again.ticket and result.ok and len(sent.runs) == 1

    def test_a_keyed_ticket_is_found_again(self):
        engine, sent = _engine()
        first = engine.prepare("a", EMAIL, MAIL, confidence=0.9, wait=True,
                               idempotency_key="tool-call-7")
        again = engine.prepare("a", EMAIL, MAIL, confidence=0.9, wait=True,
                               idempotency_key="tool-call-7")
        assert again.ticket == first.ticket and again.waiting
        waiting = engine.execute("a", EMAIL, MAIL, confidence=0.9, idempotency_key="tool-call-7")
        assert not waiting.ok and "waits for a person" in waiting.error
        engine.approve(first.ticket.id, by="alice")
        ran = engine.execute("a", EMAIL, MAIL, confidence=0.9, idempotency_key="tool-call-7")
        assert ran.ok and len(sent.runs) == 1
        assert engine.prepare("a", EMAIL, MAIL, confidence=0.9, wait=True,
                              idempotency_key="tool-call-7").run() is ran
        assert len(sent.runs) == 1 and replay(engine.audit).ok

    def test_a_keyed_prepare_records_its_outcome_when_run(self):
        engine, sent = _engine()
        pending = engine.prepare("a", EMAIL, MAIL, confidence=0.9, approval=True,
                                 idempotency_key="k")
        result = pending.run()
        assert engine.execute("a", EMAIL, MAIL, confidence=0.9, approval=True,
                              idempotency_key="k") is result
        assert len(sent.runs) == 1

    @pytest.mark.parametrize("key", ["", "a\nb", "a\u2028b", "x" * 257, 5, b"k", "\udc80"])
    def test_bad_keys_are_refused(self, key):
        engine, sent = _engine()
        with pytest.raises(InputError, match="idempotency_key"):
            engine.execute("a", EMAIL, MAIL, confidence=0.9, idempotency_key=key)
        assert sent.runs == []

    def test_async_callers_share_keys(self):
        engine, sent = _engine()

        async def scenario():
            first = await engine.aexecute("a", EMAIL, MAIL, confidence=0.9, approval=True,
                                          idempotency_key="k")
            again = await engine.aexecute("a", EMAIL, MAIL, confidence=0.9, approval=True,
                                          idempotency_key="k")
            return first, again

        first, again = asyncio.run(scenario())
        assert again is first and len(sent.runs) == 1


class TestReplayHoldsThem:
    def _trail(self):
        engine, _ = _engine()
        engine.execute("a", EMAIL, MAIL, confidence=0.9, approval=True, idempotency_key="k")
        pending = engine.prepare("a", EMAIL, MAIL, confidence=0.9, wait=True)
        engine.approve(pending.ticket.id, by="alice")
        pending.run()
        return engine.audit.lines()

    def _index(self, lines, kind, event):
        return next(i for i, line in enumerate(lines)
                    if f'"kind":"{kind}"' in line and f'"event":"{event}"' in line)

    def test_the_trail_replays(self):
        assert replay(self._trail()).ok

    def test_a_second_claim_of_a_key_diverges(self):
        lines = self._trail()
        at = self._index(lines, "idempotency", "claim")
        forged = rechain(lines[:at + 1] + [lines[at]] + lines[at + 1:])
        forged = [json.dumps({**json.loads(line), "seq": n}) for n, line in
                  enumerate(forged, 1)]
        report = replay(rechain(forged))
        assert not report.ok and "claimed already" in str(report.divergence)

    def test_an_answer_from_nobody_or_a_ticket_never_opened_diverges(self):
        lines = self._trail()
        at = self._index(lines, "ticket", "approve")
        event = json.loads(lines[at])
        event["subject"] = "ticket-1"   # no ticket was opened at seq 1
        lines[at] = json.dumps(event)
        report = replay(rechain(lines))
        assert not report.ok and "no ticket ticket-1 open" in str(report.divergence)

    def test_a_decision_citing_a_ticket_not_resumed_diverges(self):
        lines = self._trail()
        at = self._index(lines, "ticket", "resume")
        event = json.loads(lines[at])
        event["kind"], event["event"] = "recover", "note"
        lines[at] = json.dumps(event)
        report = replay(rechain(lines))
        assert not report.ok and "approved_by" in str(report.divergence)


class TestReviewFindings:
    """Found by an adversarial review; each failed before its fix."""

    def test_a_name_holding_a_lone_surrogate_is_refused_and_nothing_written(self, tmp_path):
        engine, sent = _file_engine(tmp_path / "audit.jsonl")
        ticket = engine.prepare("a", EMAIL, MAIL, confidence=0.9, wait=True).ticket
        before = engine.audit.last_seq
        with pytest.raises(TicketError, match="lone surrogate"):
            engine.approve(ticket.id, by="alice\udc80")
        assert engine.audit.last_seq == before and engine.ticket(ticket.id).status == "pending"

    def test_the_log_holds_no_digest_a_masked_secret_could_be_guessed_from(self):
        engine, _ = _engine()
        engine.execute("a", EMAIL, {"to": "x", "password": "1234"}, confidence=0.9,
                       approval=True)
        engine.execute("a", EMAIL, {"to": "x", "password": "9876"}, confidence=0.9,
                       approval=True)
        digests = {r["data"]["args_digest"] for r in engine.audit.records()
                   if r["kind"] == "execution"}
        assert len(digests) == 1  # of the masked arguments: the PIN changes nothing

    def test_a_keyed_log_digests_with_its_key(self, tmp_path):
        clock = lambda: T0  # noqa: E731
        engine = Engine.default(clock=clock, audit=AuditLog.open(
            tmp_path / "a.jsonl", clock=clock, key=b"k" * 32))
        engine.execute("a", "memory_search", {"password": "1"}, confidence=0.99)
        engine.execute("a", "memory_search", {"password": "2"}, confidence=0.99)
        digests = {r["data"]["args_digest"] for r in engine.audit.records()
                   if r["kind"] == "execution"}
        assert len(digests) == 2  # the key ties them to the arguments, and hides them

    @pytest.mark.parametrize("value", [float("nan"), float("inf"), (1, 2), {1, 2}, 2 ** 64,
                                       "a\udc80"])
    def test_arguments_that_would_not_come_back_exactly_are_refused(self, tmp_path, value):
        engine, _ = _file_engine(tmp_path / "audit.jsonl")
        with pytest.raises(TicketError, match="comes back exactly"):
            engine.prepare("a", EMAIL, {"to": value}, confidence=0.9, wait=True)

    def test_a_cancelled_resume_closes_its_ticket(self):
        engine = Engine.default(clock=lambda: T0)
        started = asyncio.Event()

        async def slow(args):
            started.set()
            await asyncio.sleep(60)

        engine.register_handler(EMAIL, live=slow)
        pending = engine.prepare("a", EMAIL, MAIL, confidence=0.9, wait=True)
        engine.approve(pending.ticket.id, by="ops")

        async def scenario():
            task = asyncio.create_task(engine.aresume(pending.ticket.id))
            await started.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return await engine.aresume(pending.ticket.id)

        again = asyncio.run(scenario())
        assert not again.ok and again.error == "CancelledError"
        events = [r["event"] for r in engine.audit.records() if r["kind"] == "ticket"]
        assert events[-1] == "done" and replay(engine.audit).ok

    def test_an_approver_changing_the_request_in_place_changes_nothing(self):
        def approver(request):
            request.args["to"] = "attacker@example.com"
            return True

        engine, sent = _engine(approver=approver)
        engine.execute("a", EMAIL, {"to": "boss@example.com"}, confidence=0.9)
        assert sent.runs == [{"to": "boss@example.com"}]

    def test_a_denial_says_the_approvers_reason(self):
        engine, _ = _engine(approver=lambda request: __import__(
            "buddy.engine", fromlist=["Approval"]).Approval.deny("not to the board"))
        result = engine.execute("a", EMAIL, MAIL, confidence=0.9)
        assert result.error.endswith("(not to the board)")

    def test_tickets_by_status_and_junk_statuses(self):
        engine, _ = _engine()
        ticket = engine.prepare("a", EMAIL, MAIL, confidence=0.9, wait=True).ticket
        assert engine.tickets("all") == engine.tickets(None) == [ticket]
        assert ticket.args == {**MAIL, "password": ticket.args["password"]}
        assert ticket.args["password"] != MAIL["password"]  # masked
        with pytest.raises(TicketError, match="status must be one of"):
            engine.tickets("pendng")

    @pytest.mark.parametrize(("change", "says"), [
        ({"status": "bogus"}, "status"), ({"mode": "ULTRA"}, "mode"),
        ({"confidence": float("nan")}, "confidence"), ({"confidence": 7}, "confidence"),
        ({"expires_at": "soon"}, "expires_at"), ({"id": None}, "id"),
        ({"args_digest": None}, "args_digest"), ({"id": "ticket-x"}, "ticket-<seq>"),
    ])
    def test_a_ticket_from_a_dict_is_checked_field_by_field(self, change, says):
        engine, _ = _engine()
        good = engine.prepare("a", EMAIL, MAIL, confidence=0.9, wait=True).ticket.to_dict()
        assert Ticket.from_dict(good).id == good["id"]
        with pytest.raises(TicketError, match=says):
            Ticket.from_dict({**good, **change})

    def test_replay_holds_a_tickets_run_to_the_approved_arguments(self):
        engine, _ = _engine()
        pending = engine.prepare("a", EMAIL, MAIL, confidence=0.9, wait=True)
        engine.approve(pending.ticket.id, by="alice")
        pending.run()
        lines = engine.audit.lines()
        at = next(i for i, line in enumerate(lines) if '"event":"approve"' in line)
        event = json.loads(lines[at])
        event["data"]["args_digest"] = "0" * 32
        lines[at] = json.dumps(event)
        report = replay(rechain(lines))
        assert not report.ok and report.divergence.field == "args_digest"

    def test_a_fifo_in_place_of_kept_arguments_is_not_waited_on(self, tmp_path):
        engine, sent = _file_engine(tmp_path / "audit.jsonl")
        ticket = engine.prepare("a", EMAIL, MAIL, confidence=0.9, wait=True).ticket
        engine.approve(ticket.id, by="alice")
        kept = tmp_path / "audit.jsonl.tickets" / f"{ticket.id}.asked.json"
        kept.unlink()
        os.mkfifo(kept)
        result = engine.resume(ticket.id)
        assert not result.ok and "missing" in result.error and sent.runs == []


class TestReviewRoundTwo:
    def test_a_cancellation_while_the_approver_waits_gives_the_key_back(self):
        gate = asyncio.Event()

        async def approver(request):
            await gate.wait()
            return True

        engine, sent = _engine(approver=approver)

        async def scenario():
            task = asyncio.create_task(engine.aexecute("a", EMAIL, MAIL, confidence=0.9,
                                                       idempotency_key="k"))
            await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            gate.set()
            return await engine.aexecute("a", EMAIL, MAIL, confidence=0.9,
                                         idempotency_key="k")

        again = asyncio.run(scenario())
        assert again.ok and len(sent.runs) == 1  # nothing had run: the key was free
        assert replay(engine.audit).ok

    def test_a_keyed_prepare_refused_for_its_arguments_gives_the_key_back(self, tmp_path):
        engine, sent = _file_engine(tmp_path / "audit.jsonl")
        with pytest.raises(TicketError):
            engine.prepare("a", EMAIL, {"to": float("nan")}, confidence=0.9, wait=True,
                           idempotency_key="k")
        retry = engine.prepare("a", EMAIL, MAIL, confidence=0.9, wait=True,
                               idempotency_key="k")
        assert retry.waiting
        with pytest.raises(TicketError, match="nested too deep"):
            deep: dict = {}
            node = deep
            for _ in range(300):
                node["x"] = {}
                node = node["x"]
            engine.prepare("a", EMAIL, deep, confidence=0.9, wait=True, idempotency_key="k2")

    def test_in_this_process_a_key_tells_masked_fields_apart(self):
        engine, sent = _engine()
        engine.execute("a", EMAIL, {"to": "x", "password": "1"}, confidence=0.9,
                       approval=True, idempotency_key="k")
        other = engine.execute("a", EMAIL, {"to": "x", "password": "2"}, confidence=0.9,
                               approval=True, idempotency_key="k")
        assert not other.ok and "other arguments" in other.error and len(sent.runs) == 1

    def test_a_reason_holding_a_lone_surrogate_still_replays(self):
        engine, _ = _engine()
        engine.execute("a", "memory_search", {}, confidence=0.99,
                       max_mode=ExecutionMode.DRY_RUN, cap_reason="x\udc80")
        assert replay(engine.audit).ok

    def test_the_provider_cannot_change_the_call(self):
        def provider(agent, tool, args):
            args["to"] = "attacker@example.com"
            return 0.9

        engine, sent = _engine(confidence_provider=provider)
        engine.execute("a", EMAIL, {"to": "boss@example.com"}, approval=True)
        assert sent.runs == [{"to": "boss@example.com"}]
