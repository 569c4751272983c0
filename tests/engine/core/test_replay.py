"""Replay: reproduce states and decisions, time travel, what-if, divergences."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from buddy.engine import Approval, AuditLog, Engine
from buddy.engine.core._replay import replay
from buddy.rules import EscalationTable
from buddy.rules.base.errors import AuditChainBroken, AuditFormatError
from tests.helpers import ManualClock, edit, rechain

RULES = Path(__file__).resolve().parents[3] / "rules" / "escalation.toml"


def scenario(clock: ManualClock | None = None, audit: AuditLog | None = None) -> Engine:
    clock = clock or ManualClock()
    engine = Engine.default(clock=clock, audit=audit,
                            approver=lambda req: Approval.deny("no") if req.tool == "file_operation"
                            else Approval.approve())
    engine.register_handler("form_fill", live=lambda a: "filled", undo=lambda a, r: "cleared")
    engine.register_handler("button_click", live=lambda a: 1 / 0)
    engine.register_handler("msgraph_send_email", live=lambda a: "sent")
    engine.decide("a", "form_fill", 0.6)                            # MOCK
    engine.decide("a", "form_fill", 0.7)                            # DRY_RUN
    engine.decide("a", "form_fill", 0.85)                           # LIVE
    with engine.session("a") as s:
        s.execute("form_fill", {"f": 1}, confidence=0.9)            # ctx-5 COMPLETED
        s.execute("button_click", {}, confidence=0.9)               # ctx-10 ABORTED, rollback
    engine.execute("b", "msgraph_send_email", {}, confidence=0.9)   # ctx-17 approved, COMPLETED
    engine.execute("b", "file_operation", {}, confidence=0.9)       # ctx-23 denied, ABORTED
    grant = engine.grant("c", "database_write", seconds=30)
    engine.decide("c", "database_write", 0.9)                       # LIVE by grant
    clock.advance(31)
    engine.decide("c", "database_write", 0.9)                       # expired: DRY_RUN
    engine.revoke(grant.id)
    engine.lock("incident")
    engine.decide("a", "text_extract", 0.99)                        # MOCK (locked)
    return engine


class TestReplay:
    def test_replay_reproduces_every_decision_and_state(self):
        engine = scenario()
        report = replay(engine.audit)
        assert report.ok and not report.what_if
        assert report.decisions == 10
        assert report.states == {"ctx-5": ("escalation", "COMPLETED"),
                                 "ctx-10": ("escalation", "ABORTED"),
                                 "ctx-17": ("escalation", "COMPLETED"),
                                 "ctx-23": ("escalation", "ABORTED")}
        assert report.locked is True
        assert report.events == report.replayed == engine.audit.last_seq

    def test_replay_of_a_file(self, tmp_path):
        path = tmp_path / "audit.jsonl"
        with AuditLog.open(path, clock=ManualClock()) as audit:
            scenario(audit=audit)
        report = replay(path)
        assert report.ok and report.source == str(path) and report.torn_tail is None

    def test_keyed_file(self, tmp_path):
        path = tmp_path / "audit.jsonl"
        with AuditLog.open(path, clock=ManualClock(), key=b"k") as audit:
            scenario(audit=audit)
        assert replay(path, key=b"k").chain == "hmac-sha256"
        with pytest.raises(AuditChainBroken):
            replay(path)


class TestTimeTravel:
    def test_states_at_each_point(self):
        engine = scenario()
        records = list(engine.audit.records())
        first_run = next(r["seq"] for r in records if r["event"] == "request_live")
        report = replay(engine.audit, until=first_run)
        assert report.states == {"ctx-5": ("escalation", "LIVE")}
        assert report.last_seq == first_run and report.replayed == first_run
        grant_seq = next(r["seq"] for r in records if r["kind"] == "grant")
        assert replay(engine.audit, until=grant_seq).grants == (f"grant-{grant_seq}",)
        lock_seq = next(r["seq"] for r in records if r["kind"] == "lock")
        assert replay(engine.audit, until=lock_seq - 1).locked is False
        assert replay(engine.audit, until=lock_seq).locked is True

    def test_until_zero_is_the_beginning(self):
        report = replay(scenario().audit, until=0)
        assert (report.states, report.decisions, report.replayed) == ({}, 0, 0)


def table_with(old: str, new: str) -> EscalationTable:
    text = RULES.read_text()
    assert old in text
    return EscalationTable.from_toml(text=text.replace(old, new), source="what-if.toml")


class TestWhatIf:
    def test_loosening_listed_first(self):
        engine = scenario()
        engine.unlock()
        engine.decide("a", "text_extract", 0.65)                    # LOW: DRY_RUN, decided last
        medium_live = 'op = "ge", value = 0.80 } ] }\nthen = { mode = "LIVE" }'
        low_live = 'op = "ge", value = 0.70 } ] }\nthen = { mode = "LIVE" }'
        text = RULES.read_text()
        assert medium_live in text and low_live in text
        text = text.replace(low_live, low_live.replace("0.70", "0.60"))
        text = text.replace(medium_live, medium_live.replace("0.80", "0.86"))
        table = EscalationTable.from_toml(text=text, source="w.toml")
        report = replay(engine.audit, table=table)
        assert report.what_if and report.ok
        summary = [(c.tool, c.confidence, c.before, c.after, c.direction) for c in report.changes]
        assert summary == [("text_extract", 0.65, "DRY_RUN", "LIVE", "loosening"),
                           ("form_fill", 0.85, "LIVE", "DRY_RUN", "tightening")]
        assert report.changes[0].seq > report.changes[1].seq
        assert table.digest != engine.table.digest

    def test_tightening(self):
        engine = scenario()
        when = 'when = { all = [ { metric = "confidence", op = "ge", value = %s } ] }'
        table = table_with('id = "medium.live"\nrisk = "MEDIUM"\n' + when % "0.80",
                           'id = "medium.live"\nrisk = "MEDIUM"\n' + when % "0.95")
        changes = replay(engine.audit, table=table).changes
        assert [(c.seq > 0, c.before, c.after, c.direction, c.rule_after) for c in changes] == \
            [(True, "LIVE", "DRY_RUN", "tightening", "medium.live")] * 3

    def test_same_table_changes_nothing(self):
        assert replay(scenario().audit, table=EscalationTable.default()).changes == ()


class TestDivergence:
    def test_a_forged_decision_diverges(self):
        lines = scenario().audit.lines()
        index = next(i for i, line in enumerate(lines)
                     if '"confidence":0.7,' in line and '"kind":"decision"' in line)
        forged = rechain(edit(lines, index, mode="LIVE", state="LIVE"))
        report = replay(forged)
        assert not report.ok
        d = report.divergence
        assert (d.seq, d.field, d.expected, d.got) == (index + 1, "mode", "LIVE", "DRY_RUN")
        assert str(d) == f"seq {index + 1} (a): mode recorded 'LIVE', replay gives 'DRY_RUN'"

    def test_a_decision_ignoring_the_lock_diverges(self):
        lines = scenario().audit.lines()
        index = len(lines) - 1
        forged = rechain(edit(lines, index, locked=False, mode="LIVE", state="LIVE",
                              rule="low.live"))
        d = replay(forged).divergence
        assert (d.seq, d.field, d.expected, d.got) == (index + 1, "locked", False, True)

    def test_a_decision_on_an_expired_grant_diverges(self):
        lines = scenario().audit.lines()
        index = max(i for i, line in enumerate(lines)
                    if '"tool":"database_write"' in line and '"kind":"decision"' in line)
        grant = next(json.loads(line)["subject"] for line in lines if '"kind":"grant"' in line)
        forged = rechain(edit(lines, index, approval=True, approved_by=f"grant:{grant}",
                              approved_at=1031.0, mode="LIVE", state="LIVE"))
        d = replay(forged).divergence
        assert d.field == "approved_by" and "expired" in d.got

    def test_a_transition_the_machine_cannot_make_diverges(self):
        lines = scenario().audit.lines()
        index = next(i for i, line in enumerate(lines) if '"event":"approve_escalation"' in line)
        import json

        event = json.loads(lines[index])
        event["dst"] = "LIVE"
        lines[index] = json.dumps(event)
        d = replay(rechain(lines)).divergence
        assert (d.field, d.expected) == ("dst", "LIVE")

    def test_a_malformed_event(self):
        lines = scenario().audit.lines()
        import json

        event = json.loads(lines[2])
        del event["kind"]
        lines[2] = json.dumps(event)
        with pytest.raises(AuditFormatError, match="<lines>:3: not a valid audit event"):
            replay(rechain(lines))
