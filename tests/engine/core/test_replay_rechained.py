"""Re-chained logs no buddy could have written: replay refuses each, naming seq and field.

Without a key anyone with write access can edit a log and re-chain it, and the
chain then verifies (``rechain``). Replay cannot tell who wrote a line, but it
can tell a line no buddy writes: a run in a mode its context's state does not
have, a grant used outside its scope, a decision no rule made, a kind of event
no writer appends, a log without its header, a decision made with another
table than the one replay holds it to.
"""

from __future__ import annotations

import json

import pytest

from buddy.engine import Approval, AuditLog, Engine, ExecutionMode
from buddy.engine.app._harness import RunConfig, run
from buddy.engine.app._waves import WaveRunConfig, run_waves
from buddy.engine.core._events import KINDS
from buddy.engine.core._replay import replay
from buddy.rules import EscalationTable, ToolContractRegistry
from buddy.rules.base.errors import AuditChainBroken, AuditFormatError
from tests.engine.core.test_replay import at, scenario, table_with
from tests.helpers import ManualClock, edit, rechain

SHIPPED = EscalationTable.default().digest
FORGED_DIGEST = "0123456789abcdef"


def runs() -> list[str]:
    """A MOCK run (ctx-2: decision, run, done) and a LIVE run (ctx-5: moves, decision, run)."""
    engine = Engine.default(clock=ManualClock())
    engine.register_handler("form_fill", live=lambda args: "filled")
    engine.execute("a", "form_fill", {"f": 1}, confidence=0.3)
    engine.execute("a", "form_fill", {"f": 2}, confidence=0.9)
    return engine.audit.lines()


def envelope(lines: list[str], index: int, **fields: object) -> list[str]:
    """Change fields of one line's envelope (no re-chaining)."""
    out = list(lines)
    out[index] = json.dumps({**json.loads(lines[index]), **fields}, separators=(",", ":"))
    return out


def renumbered(lines: list[str]) -> list[str]:
    """Lines inserted or dropped, their seqs made consecutive again and re-chained."""
    return rechain([json.dumps({**json.loads(line), "seq": n}, separators=(",", ":"))
                    for n, line in enumerate(lines, 1)])


def divergence(lines: list[str], **kwargs: object) -> tuple[object, ...]:
    d = replay(lines, **kwargs).divergence
    assert d is not None
    return d.seq, d.subject, d.field, d.expected, d.got


class TestRuns:
    """An execution runs a decided context once, in the mode of the state it is in."""

    def test_the_log_as_written_replays(self):
        report = replay(runs())
        assert report.ok
        assert report.states == {"ctx-2": ("escalation", "COMPLETED"),
                                 "ctx-5": ("escalation", "COMPLETED")}

    def test_live_right_after_a_decision_that_ended_in_mock(self):
        lines = runs()
        assert json.loads(lines[2])["data"]["mode"] == "MOCK"
        assert divergence(rechain(edit(lines, 2, mode="LIVE"))) == \
            (3, "ctx-2", "mode", "LIVE", "MOCK")

    def test_live_from_a_state_the_context_is_not_in(self):
        forged = rechain(envelope(edit(runs(), 2, mode="LIVE"), 2, src="LIVE"))
        assert divergence(forged) == (3, "ctx-2", "src", "LIVE", "MOCK")

    def test_a_mode_below_the_state_s(self):
        assert divergence(rechain(edit(runs(), 7, mode="DRY_RUN"))) == \
            (8, "ctx-5", "mode", "DRY_RUN", "LIVE")

    def test_a_context_never_decided(self):
        lines = runs()
        forged = rechain(envelope(lines, 7, subject="ctx-999"))
        assert divergence(forged) == (8, "ctx-999", "subject", "ctx-999",
                                      "no allowed decision of this context left to run")

    def test_a_context_whose_moves_went_on_after_its_mock_decision(self):
        # ctx-2 decided MOCK at seq 2; forged moves take it to LIVE, then it "runs" LIVE.
        lines = runs()
        moves = [json.dumps({**json.loads(lines[i]), "subject": "ctx-2"},
                            separators=(",", ":")) for i in (4, 5)]
        run = json.loads(lines[2])
        run["src"], run["data"]["mode"] = "LIVE", "LIVE"
        forged = renumbered([*lines[:2], *moves, json.dumps(run), *lines[3:]])
        # The moves were another call's (confidence 0.9, not ctx-2's 0.3): the first is
        # refused where it stands, before the run that goes higher than decided.
        assert divergence(forged) == (3, "ctx-2", "confidence", 0.9, 0.3)
        # Made ctx-2's own (0.3), a move from MOCK to DRY_RUN is one its rows never make.
        own = [json.dumps({**json.loads(m), "data": {**json.loads(m)["data"],
                                                     "confidence": 0.3}},
                          separators=(",", ":")) for m in moves]
        forged = renumbered([*lines[:2], *own, json.dumps(run), *lines[3:]])
        assert divergence(forged)[:3] == (3, "ctx-2", "dst")

    def test_a_second_run_of_one_decision(self):
        lines = runs()
        forged = renumbered([*lines[:8], lines[7], *lines[8:]])
        assert divergence(forged) == (9, "ctx-5", "subject", "ctx-5",
                                      "no allowed decision of this context left to run")

    def test_a_run_after_a_refused_decision(self):
        # A decision refused (a spent rate limit) at the state its moves reached lets nothing run.
        lines = runs()
        forged = rechain(edit(lines, 6, allowed=False, mode="MOCK", rule="rate.limit",
                              reason="form_fill allows 0 calls per minute"))
        assert divergence(forged) == (8, "ctx-5", "subject", "ctx-5",
                                      "no allowed decision of this context left to run")

    def test_a_run_of_another_tool_than_decided(self):
        assert divergence(rechain(edit(runs(), 7, tool="database_write"))) == \
            (8, "ctx-5", "tool", "database_write", "form_fill")

    def test_a_run_by_another_agent_than_decided(self):
        assert divergence(rechain(edit(runs(), 7, agent="mallory"))) == \
            (8, "ctx-5", "agent", "mallory", "a")

    def test_an_agent_s_decision_lets_no_context_run(self):
        # Engine.decide records by agent and moves no machine: "a" decided LIVE at seq 4.
        lines = scenario().audit.lines()
        run = json.loads(lines[7])
        run["subject"] = "a"
        forged = renumbered([*lines[:4], json.dumps(run), *lines[4:]])
        assert divergence(forged) == (5, "a", "subject", "a",
                                      "no allowed decision of this context left to run")

    def test_a_malformed_run_is_refused_in_one_line(self):
        lines = runs()
        with pytest.raises(AuditFormatError) as err:
            replay(rechain(edit(lines, 7, mode="FAST")))
        assert str(err.value) == "<lines>:8: not a valid audit event: 'data.mode': must be " \
            "one of MOCK, DRY_RUN, LIVE (got 'FAST') (seq 8)"


class TestGrantScope:
    """A grant approves calls of its agent and its tool only."""

    @pytest.fixture
    def lines(self) -> list[str]:
        return scenario().audit.lines()

    def test_a_grant_used_by_another_agent(self, lines):
        index = at(lines, "decision", subject="c")
        assert json.loads(lines[index])["data"]["approved_by"] == "grant:grant-28"
        forged = rechain(envelope(edit(lines, index, agent="mallory"), index, subject="mallory"))
        assert divergence(forged) == (
            index + 1, "mallory", "approved_by", "grant:grant-28",
            "grant grant-28 unusable: it is scoped to agent 'c' and tool 'database_write'")

    def test_a_grant_used_for_another_tool(self, lines):
        index = at(lines, "decision", subject="c")
        forged = rechain(edit(lines, index, tool="msgraph_send_email"))
        assert divergence(forged) == (
            index + 1, "c", "approved_by", "grant:grant-28",
            "grant grant-28 unusable: it is scoped to agent 'c' and tool 'database_write'")

    def test_a_grant_that_did_not_approve(self, lines):
        index = at(lines, "decision", subject="c")
        forged = rechain(edit(lines, index, approval=None, mode="DRY_RUN",
                              state="AWAITING_APPROVAL"))
        assert divergence(forged) == (index + 1, "c", "approval", None, True)


class TestDecisionInputs:
    """A decision a rule made has an agent that is a non-empty string and a string tool;
    only a refusal records other inputs (as short text, with its reason)."""

    @pytest.mark.parametrize(("field", "value", "got"), [
        ("agent", "", "a non-empty string (only a refusal records another agent)"),
        ("agent", 5, "a non-empty string (only a refusal records another agent)"),
        ("agent", None, "a non-empty string (only a refusal records another agent)"),
        ("agent", ["a"], "a non-empty string (only a refusal records another agent)"),
        ("tool", 7, "a string (only a refusal records another tool)"),
        ("tool", None, "a string (only a refusal records another tool)"),
        ("tool", {"name": "form_fill"}, "a string (only a refusal records another tool)"),
    ])
    def test_odd_inputs_in_a_decision_no_refusal(self, field, value, got):
        lines = scenario().audit.lines()
        assert divergence(rechain(edit(lines, 3, **{field: value}))) == \
            (4, "a", field, value, got)

    def test_a_refusal_records_them_as_given(self):
        engine = Engine.default(clock=ManualClock())
        engine.decide("", "form_fill", 0.9)
        engine.decide("a", 7, 0.9)  # type: ignore[arg-type]
        assert [json.loads(line)["data"]["rule"] for line in engine.audit.lines()[1:]] == \
            ["input.agent", "tool.unknown"]
        assert replay(engine.audit).ok


class TestKinds:
    """The kinds of events are a closed set: another kind could hide a decision."""

    @pytest.mark.parametrize("kind", ["note", "decisions", "Decision", ""])
    def test_an_unknown_kind_is_refused(self, kind):
        lines = scenario().audit.lines()
        forged = rechain(envelope(lines, 3, kind=kind))
        with pytest.raises(AuditFormatError) as err:
            replay(forged)
        assert str(err.value) == (
            "<lines>:4: not a valid audit event: 'kind': must be one of open, decision, "
            "transition, approval, execution, rollback, grant, revoke, lock, unlock, recover, "
            f"conflict, resolution, schedule, ticket, idempotency (got {kind!r}) (seq 4)")

    def test_every_kind_the_writers_append_replays(self, tmp_path):
        engine = scenario()  # the engine's kinds, but an approver's edit and an unlock
        engine.unlock()
        engine.approver = lambda request: Approval.edit({"to": "me"})
        engine.execute("b", "msgraph_send_email", {"to": "all"}, confidence=0.9)
        waiting = engine.prepare("b", "msgraph_send_email", {"to": "x"}, confidence=0.9,
                                 wait=True, idempotency_key="k-1")  # ticket, idempotency
        engine.approve(waiting.ticket.id, by="ops")
        waiting.run()
        run(RunConfig(output_dir=tmp_path, seed=7, start=0.0))  # conflicts, resolutions
        path = tmp_path / "audit.jsonl"
        path.with_name("audit.jsonl.anchor").unlink()
        AuditLog.open(path, clock=ManualClock(), allow_missing_anchor=True).close()  # recover
        assert replay(engine.audit).ok and replay(path).ok
        waves = tmp_path / "waves"
        run_waves(WaveRunConfig(output_dir=waves, start=0.0, tasks_per_wave=4))  # schedule
        assert replay(waves / "audit.jsonl").ok
        written = [r["kind"] for r in engine.audit.records()] + \
            [r["kind"] for r in AuditLog.read_records(path)] + \
            [r["kind"] for r in AuditLog.read_records(waves / "audit.jsonl")]
        assert KINDS == ("open", "decision", "transition", "approval", "execution", "rollback",
                         "grant", "revoke", "lock", "unlock", "recover", "conflict",
                         "resolution", "schedule", "ticket", "idempotency")
        assert set(written) == set(KINDS)


class TestHeader:
    """A log starts with its header, once, naming the format and chain that verify it."""

    @pytest.fixture
    def lines(self) -> list[str]:
        return runs()

    def test_a_log_without_its_header(self, lines):
        assert divergence(renumbered(lines[1:])) == \
            (1, "ctx-2", "kind", "decision", "open (a log starts with its header)")

    def test_a_second_header(self, lines):
        assert divergence(renumbered([*lines, lines[0]])) == \
            (len(lines) + 1, "log", "kind", "open", "a header only at seq 1")

    def test_a_header_of_another_chain(self, lines):
        assert divergence(rechain(edit(lines, 0, chain="md5"))) == \
            (1, "log", "chain", "md5", "sha256 (the chain that verified the log)")

    def test_a_header_of_another_format(self, lines):
        assert divergence(rechain(edit(lines, 0, format="buddy-audit/0"))) == \
            (1, "log", "format", "buddy-audit/0", "buddy-audit/1")

    def test_a_keyed_log_whose_header_says_plain(self, lines):
        # Re-chained with the key (only its holder can), the header still says sha256.
        keyed = rechain(lines, key=b"k")
        assert divergence(keyed, key=b"k") == \
            (1, "log", "chain", "sha256", "hmac-sha256 (the chain that verified the log)")

    def test_an_empty_log_has_nothing_to_replay(self):
        report = replay([])
        assert report.ok and report.events == 0


class TestRulesDigest:
    """Without a table given, every decision and move was decided with the shipped table."""

    @pytest.fixture
    def lines(self) -> list[str]:
        return scenario().audit.lines()

    def loosened(self, lines: list[str]) -> tuple[int, list[str]]:
        """The DRY_RUN decision of confidence 0.7 made LIVE, under a digest of no table."""
        index = at(lines, "decision", seq=3)
        return index, rechain(edit(lines, index, mode="LIVE", state="LIVE",
                                   rules=FORGED_DIGEST))

    def test_a_decision_under_another_digest_diverges(self, lines):
        index, forged = self.loosened(lines)
        report = replay(forged)
        assert not report.ok and not report.what_if and report.changes == ()
        assert (report.divergence.seq, report.divergence.field, report.divergence.expected) == \
            (index + 1, "rules", FORGED_DIGEST)
        assert str(report.divergence) == (
            f"seq {index + 1} (a): rules recorded '{FORGED_DIGEST}', replay gives "
            f"'{SHIPPED} of the shipped table; replay with the table it was decided with "
            "(table=, buddy replay --rules DIR)'")

    def test_with_a_table_given_it_is_a_what_if(self, lines):
        index, forged = self.loosened(lines)
        report = replay(forged, table=EscalationTable.default())
        assert report.ok and report.what_if
        assert [(c.seq, c.before, c.after, c.direction) for c in report.changes] == \
            [(index + 1, ExecutionMode.LIVE, ExecutionMode.DRY_RUN, "tightening")]

    def test_a_move_under_another_digest_diverges(self, lines):
        # A move whose guards fail (confidence 0.1) passed unchecked under another digest.
        index = at(lines, "transition", event="approve_escalation")
        forged = rechain(edit(lines, index, confidence=0.1, rules=FORGED_DIGEST))
        assert divergence(forged)[:4] == (index + 1, "ctx-5", "rules", FORGED_DIGEST)
        assert divergence(rechain(edit(lines, index, confidence=0.1))) == \
            (index + 1, "ctx-5", "dst", "DRY_RUN", None)

    def test_a_log_decided_with_its_own_table(self, tmp_path):
        table = table_with('value = 0.80 } ] }\nthen = { mode = "LIVE" }',
                           'value = 0.75 } ] }\nthen = { mode = "LIVE" }')
        engine = Engine(ToolContractRegistry.default(), table, clock=ManualClock())
        engine.decide("a", "form_fill", 0.78)
        report = replay(engine.audit)
        assert (report.divergence.seq, report.divergence.field, report.divergence.expected) == \
            (2, "rules", table.digest)
        assert not report.what_if
        report = replay(engine.audit, table=table)
        assert report.ok and not report.what_if and report.rules_given

    def test_the_shipped_table_given_is_plain_replay(self, lines):
        report = replay(lines, table=EscalationTable.default())
        assert report.ok and not report.what_if and report.changes == ()


class TestWhatReplayCannotCheck:
    """The limits the README states: they hold, so the README stays true."""

    def test_a_live_decision_beyond_the_rate_limit_replays(self):
        engine = Engine.default(clock=ManualClock())  # msgraph_send_email: 30 per minute
        for _ in range(31):
            engine.decide("b", "msgraph_send_email", 0.9, approval=True)
        lines = engine.audit.lines()
        assert json.loads(lines[-1])["data"]["rule"] == "rate.limit"
        refused = json.loads(lines[30])["data"]
        forged = rechain([*lines[:-1], json.dumps(
            {**json.loads(lines[-1]), "data": refused}, separators=(",", ":"))])
        report = replay(forged)
        assert report.ok and report.decisions == 31

    def test_a_keyed_log_re_chained_plain_replays_clean_only_without_its_key(self, tmp_path):
        path = tmp_path / "audit.jsonl"
        with AuditLog.open(path, clock=ManualClock(), key=b"k") as audit:
            Engine.default(clock=ManualClock(), audit=audit).decide("a", "form_fill", 0.7)
        lines = path.read_text().splitlines()
        forged = rechain(edit(edit(lines, 0, chain="sha256"), 1, mode="LIVE", state="LIVE",
                              confidence=0.9))
        assert replay(forged).ok
        with pytest.raises(AuditChainBroken) as err:
            replay(forged, key=b"k")
        assert str(err.value) == "<lines>:1: chain broken at seq 1: hash mismatch: a key " \
            "was given but the header says sha256: the log was never keyed, or was " \
            "re-chained without the key"


def test_a_run_higher_than_its_decision_diverges():
    """The cap on a run's mode, held directly: a context decided MOCK whose state says LIVE
    (moves that went on after its decision) runs LIVE: refused, naming the decision."""
    from buddy.engine.core._events import decode_event
    from buddy.engine.core._replay import _Replayer
    lines = runs()
    run = json.loads(lines[2])
    run["src"], run["data"]["mode"] = "LIVE", "LIVE"
    e, data = decode_event(json.dumps(run, separators=(",", ":")).encode(), "<lines>", 3)
    r = _Replayer(EscalationTable.default(), "<lines>", "sha256", given=False)
    call = (data.agent, data.tool, data.risk, data.requires_approval, data.confidence,
            data.rules)
    r.runnable["ctx-2"] = (2, "MOCK", *call)
    r.states["ctx-2"] = ("escalation", "LIVE")
    r.execution(3, e, data)
    d = r.divergence
    assert (d.seq, d.field, d.expected, d.got) == (3, "mode", "LIVE",
                                                   "at most MOCK, as decided at seq 2")
