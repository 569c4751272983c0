"""Replay: reproduce states and decisions, time travel, what-if, divergences."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import attrs
import pytest

from buddy.engine import Approval, AuditLog, Engine, ExecutionMode
from buddy.engine.core import _chain
from buddy.engine.core._replay import replay
from buddy.rules import EscalationTable
from buddy.rules.base.errors import AuditChainBroken, AuditFormatError
from tests.helpers import ManualClock, edit, rechain

RULES = Path(__file__).resolve().parents[3] / "rules" / "escalation.toml"

D, L = ExecutionMode.DRY_RUN, ExecutionMode.LIVE


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
        assert summary == [("text_extract", 0.65, D, L, "loosening"),
                           ("form_fill", 0.85, L, D, "tightening")]
        assert report.changes[0].seq > report.changes[1].seq
        assert table.digest != engine.table.digest

    def test_tightening(self):
        engine = scenario()
        when = 'when = { all = [ { metric = "confidence", op = "ge", value = %s } ] }'
        table = table_with('id = "medium.live"\nrisk = "MEDIUM"\n' + when % "0.80",
                           'id = "medium.live"\nrisk = "MEDIUM"\n' + when % "0.95")
        changes = replay(engine.audit, table=table).changes
        assert [(c.seq > 0, c.before, c.after, c.direction, c.rule_after) for c in changes] == \
            [(True, L, D, "tightening", "medium.live")] * 3

    @pytest.mark.parametrize("kind", ["decision", "transition"])
    def test_a_what_if_still_holds_the_shipped_tables_decisions_to_it(self, kind):
        """A decision (or move) recorded as made with the shipped table, forged and
        re-chained, diverges in a what-if too: replay holds the shipped table, so a
        policy check with another table cannot pass a log plain replay refuses."""
        lines = scenario().audit.lines()
        if kind == "decision":
            index = next(i for i, line in enumerate(lines) if '"kind":"decision"' in line
                         and '"confidence":0.85' in line and '"state":"LIVE"' in line)
            forged = edit(lines, index, confidence=0.5)  # recorded LIVE all the same
        else:
            index = next(i for i, line in enumerate(lines) if '"kind":"transition"' in line
                         and '"event":"request_live"' in line)
            forged = edit(lines, index, confidence=0.1)  # the move's guard would not pass
        forged = rechain(forged)
        when = 'when = { all = [ { metric = "confidence", op = "ge", value = %s } ] }'
        table = table_with('id = "medium.live"\nrisk = "MEDIUM"\n' + when % "0.80",
                           'id = "medium.live"\nrisk = "MEDIUM"\n' + when % "0.95")
        plain, what_if = replay(forged), replay(forged, table=table)
        assert plain.divergence is not None and plain.divergence.seq == index + 1
        assert what_if.divergence == plain.divergence and what_if.what_if

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


def rechain_raw(bodies: list[str]) -> list[str]:
    """Chain event bodies as written (duplicate keys and all): each body lacks prev and hash."""
    out, prev = [], "0" * 64
    for body in bodies:
        text = f'{body[:-1]},"prev":"{prev}"}}'
        prev = hashlib.sha256(text.encode()).hexdigest()
        out.append(f'{text[:-1]},"hash":"{prev}"}}')
    return out


def bodies(lines: list[str]) -> list[str]:
    return [line[: line.rindex(',"prev":"')] + "}" for line in lines]


def at(lines: list[str], kind: str, **where: object) -> int:
    """The index of the first line of ``kind`` whose fields include ``where``."""
    return next(i for i, line in enumerate(lines) if json.loads(line)["kind"] == kind
                and all(json.loads(line).get(k) == v for k, v in where.items()))


def forged(lines: list[str], index: int, change) -> list[str]:
    event = json.loads(lines[index])
    change(event)
    out = list(lines)
    out[index] = json.dumps(event, separators=(",", ":"))
    return rechain(out)


def refusal(lines: list[str]) -> str:
    with pytest.raises(AuditFormatError) as err:
        replay(lines)
    return str(err.value)


class TestMalformedEvents:
    """Issue 7, defect 13: a well-chained log whose fields have the wrong types is refused
    in one line naming file:line, seq and field; replay never crashes on it."""

    @pytest.fixture
    def lines(self) -> list[str]:
        return scenario().audit.lines()

    @pytest.mark.parametrize(("kind", "change", "message"), [
        ("decision", lambda e: e.update(data="LIVE"), "'data': must be a table (got 'LIVE')"),
        ("decision", lambda e: e.update(data=True), "'data': must be a table (got True)"),
        ("decision", lambda e: e["data"].update(approved_by={"by": "me"}),
         "'data.approved_by': must be a string (got {'by': 'me'})"),
        ("decision", lambda e: e["data"].update(mode="FAST"),
         "'data.mode': must be one of MOCK, DRY_RUN, LIVE (got 'FAST')"),
        ("decision", lambda e: e["data"].update(locked="no"),
         "'data.locked': must be true or false (got 'no')"),
        ("decision", lambda e: e["data"].pop("rule"), "'data.rule': is required"),
        ("decision", lambda e: e["data"].update(colour="red"), "'data.colour': unknown key"),
        ("decision", lambda e: e.update(ts="1000.0"), "'ts': must be a number (got '1000.0')"),
        ("decision", lambda e: e.update(subject=None), "'subject': must be a string (got None)"),
        ("grant", lambda e: e["data"].update(expires_at=None, calls=None),
         "'data.expires_at': expires_at and calls cannot both be null"),
        ("grant", lambda e: e["data"].update(calls=1.5),
         "'data.calls': must be a whole number (got 1.5)"),
        ("grant", lambda e: e["data"].update(calls=0),
         "'data.calls': must be a whole number >= 1 or null (got 0)"),
        ("grant", lambda e: e["data"].update(expires_at=1.0),
         "'data.expires_at': must be later than granted_at 1000.0 (got 1.0)"),
        ("transition", lambda e: e.update(src=5), "'src': must be a string (got 5)"),
        ("transition", lambda e: e["data"].update(confidence="high"),
         "'data.confidence': must be a number (got 'high')"),
        ("transition", lambda e: e["data"].update(risk="EXTREME"),
         "'data.risk': must be one of LOW, MEDIUM, HIGH (got 'EXTREME')"),
        ("execution", lambda e: e.update(data=[1]), "'data': must be a table (got [1])"),
        ("lock", lambda e: e.update(dst=["LOCKED"]), "'dst': must be a string (got ['LOCKED'])"),
    ])
    def test_refused_in_one_line(self, lines, kind, change, message):
        index = at(lines, kind)
        assert refusal(forged(lines, index, change)) == \
            f"<lines>:{index + 1}: not a valid audit event: {message} (seq {index + 1})"

    def test_a_seq_of_the_wrong_type_behind_the_chained_one(self, lines):
        # The chain reads the seq at the start of a line; JSON keeps a later duplicate.
        raw = bodies(lines)
        raw[3] = raw[3].replace('"ts":', '"seq":"4","ts":', 1)
        assert refusal(rechain_raw(raw)) == \
            "<lines>:4: not a valid audit event: 'seq': must be a whole number (got '4') (seq 4)"
        raw[3] = bodies(lines)[3].replace('"ts":', '"seq":99,"ts":', 1)
        assert refusal(rechain_raw(raw)) == \
            "<lines>:4: not a valid audit event: 'seq': must be 4, its place in the chain " \
            "(got 99) (seq 4)"

    def test_not_json_and_not_an_object(self, lines):
        raw = bodies(lines)
        raw[2] = raw[2].replace('"kind":', '"kind":oops,"x":', 1)
        assert refusal(rechain_raw(raw)).startswith(
            "<lines>:3: not a valid audit event: unexpected character")

    def test_a_file_names_its_line(self, tmp_path, lines):
        path = tmp_path / "audit.jsonl"
        index = at(lines, "decision")
        path.write_text("\n".join(forged(lines, index, lambda e: e.update(data="x"))) + "\n",
                        encoding="utf-8")
        with pytest.raises(AuditFormatError) as err:
            replay(path, check_anchor=False)
        assert str(err.value) == f"{path}:{index + 1}: not a valid audit event: 'data': must " \
            f"be a table (got 'x') (seq {index + 1})"

    def test_a_grant_id_given_twice_diverges(self, lines):
        index = at(lines, "grant")
        out = list(lines)
        out.insert(index + 1, lines[index])
        d = replay(rechain([json.dumps({**json.loads(line), "seq": n}, separators=(",", ":"))
                            for n, line in enumerate(out, 1)])).divergence
        assert (d.seq, d.subject, d.field, d.got) == \
            (index + 2, json.loads(lines[index])["subject"], "grant", "already granted")

    def test_a_huge_confidence_diverges(self, lines):
        # JSON holds any integer; re-decided, a confidence of 10**400 is refused.
        index = at(lines, "decision")
        d = replay(forged(lines, index, lambda e: e["data"].update(confidence=10 ** 400))
                   ).divergence
        assert (d.seq, d.field, d.got) == (index + 1, "mode", "REFUSED")

    def test_events_after_until_are_not_read(self, lines):
        index = at(lines, "lock")
        bad = forged(lines, index, lambda e: e.update(data="x"))
        assert replay(bad, until=index).replayed == index
        with pytest.raises(AuditFormatError):
            replay(bad, until=index + 1)


class TestMissingAnchor:
    """Issue 7, section 2: a file log is verified against its anchor, or explicitly not."""

    def test_replay_refuses_a_log_without_its_anchor(self, tmp_path):
        path = tmp_path / "audit.jsonl"
        with AuditLog.open(path, clock=ManualClock()) as audit:
            scenario(audit=audit)
        anchor = path.with_name("audit.jsonl.anchor")
        anchor.unlink()
        with pytest.raises(AuditChainBroken, match="no anchor audit.jsonl.anchor beside the log"):
            replay(path)
        assert replay(path, check_anchor=False).ok

    def test_an_open_file_log_is_checked_against_its_anchor(self, tmp_path):
        path = tmp_path / "audit.jsonl"
        audit = AuditLog.open(path, clock=ManualClock())
        scenario(audit=audit)
        assert replay(audit).ok
        path.with_name("audit.jsonl.anchor").unlink()
        with pytest.raises(AuditChainBroken, match="no anchor"):
            replay(audit)
        assert replay(audit, check_anchor=False).ok
        audit.close()


class TestStreaming:
    """Issue 8: replay reads a file log in chunks, keeping what replay needs, not the log."""

    @pytest.fixture
    def path(self, tmp_path, monkeypatch) -> Path:
        monkeypatch.setattr(_chain, "CHUNK_BYTES", 300)  # a few events a chunk
        path = tmp_path / "audit.jsonl"
        with AuditLog.open(path, clock=ManualClock()) as audit:
            scenario(audit=audit)
        return path

    def test_a_file_in_chunks_replays_as_its_lines(self, path):
        lines = path.read_text(encoding="utf-8").split("\n")[:-1]
        streamed, whole = replay(path), replay(lines)
        assert streamed.ok and attrs.evolve(streamed, source="<lines>") == whole
        assert replay(path, until=9).states == replay(lines, until=9).states

    def test_a_chain_break_is_reported_before_an_earlier_event_that_does_not_fit(self, path):
        lines = path.read_text(encoding="utf-8").split("\n")[:-1]
        lines = forged(lines, 2, lambda e: e["data"].update(mode="FAST"))
        lines[20] = lines[20].replace('"ts":', '"ts":1', 1)  # edited, not re-chained
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        with pytest.raises(AuditChainBroken, match=r"audit\.jsonl:21: chain broken at seq 21"):
            replay(path, check_anchor=False)
        path.write_text("\n".join(lines[:20]) + "\n", encoding="utf-8")  # the break cut off
        with pytest.raises(AuditFormatError, match=r"audit\.jsonl:3: .*'data\.mode'"):
            replay(path, check_anchor=False)

    def test_an_event_that_does_not_fit_past_until_is_not_read(self, path):
        lines = path.read_text(encoding="utf-8").split("\n")[:-1]
        last = max(i for i, line in enumerate(lines) if json.loads(line)["kind"] == "decision")
        lines = forged(lines, last, lambda e: e["data"].update(mode="FAST"))
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        assert replay(path, until=last, check_anchor=False).replayed == last
        with pytest.raises(AuditFormatError, match=rf"audit\.jsonl:{last + 1}: "):
            replay(path, until=last + 1, check_anchor=False)


class TestReevaluateMemo:
    def test_an_approval_of_1_is_not_taken_for_true(self):
        from buddy.engine.core._decision import Policy
        from buddy.rules.tables._catalogue import ToolContractRegistry
        policy = Policy(ToolContractRegistry([]), EscalationTable.default())
        approved = policy.reevaluate("HIGH", True, 0.99, True, False)
        assert approved[1] == "LIVE"
        assert policy.reevaluate("HIGH", True, 0.99, 1, False)[1] == "DRY_RUN"
        assert policy.reevaluate("HIGH", True, 0.99, True, False) is approved


class TestARunHoldsItsDecisionsInputs:
    """A run records its call's inputs as its decision did: one forged (a confidence, a
    digest, a risk) and re-chained diverges at the run, naming the field."""

    @pytest.mark.parametrize(("field", "value"), [
        ("confidence", 0.0), ("confidence", 0.91), ("rules", "0" * 16), ("risk", "LOW"),
        ("requires_approval", True)])
    def test_a_forged_run_diverges(self, field, value):
        lines = scenario().audit.lines()
        index = next(i for i, line in enumerate(lines) if '"kind":"execution"' in line
                     and '"tool":"form_fill"' in line)
        forged = rechain(edit(lines, index, **{field: value}))
        report = replay(forged)
        assert report.divergence is not None
        assert (report.divergence.seq, report.divergence.field) == (index + 1, field)

    def test_a_run_as_written_replays(self):
        assert replay(scenario().audit).ok


class TestAMoveHoldsItsDecisionsInputs:
    """A move of a context's escalation machine, before or after its run, records the
    call's inputs as its decision did: one forged and re-chained diverges at the move."""

    @pytest.mark.parametrize("event", ["request_live", "all_actions_succeeded"])
    @pytest.mark.parametrize(("field", "value"), [
        ("agent", "z"), ("tool", "database_write"), ("confidence", 0.99),
        ("rules", "0" * 16), ("risk", "HIGH"), ("requires_approval", True)])
    def test_a_forged_move_diverges(self, event, field, value):
        lines = scenario().audit.lines()
        index = next(i for i, line in enumerate(lines) if '"kind":"transition"' in line
                     and f'"event":"{event}"' in line and '"tool":"form_fill"' in line)
        report = replay(rechain(edit(lines, index, **{field: value})))
        assert report.divergence is not None
        assert report.divergence.seq == index + 1, report.divergence
        assert report.divergence.field in (field, "dst", "rules"), report.divergence
