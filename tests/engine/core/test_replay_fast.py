"""Replay's fast path (issue 8): a batch decoded in one call, decisions and the escalation
machine's moves checked inline with their re-decisions remembered by the confidence's
region, gives exactly what the line-by-line path gives, for every log, forged or not.
"""

from __future__ import annotations

import itertools
import json
import random
import types

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from buddy.engine.core._replay import _Replayer
from buddy.rules import EscalationTable
from buddy.rules.base._values import RiskLevel
from buddy.rules.base.errors import AuditFormatError
from tests.engine.core.test_replay_forged import (
    TELLING,
    base_lines,
    dumps,
    forged_logs,
    renumbered,
    unwritten_logs,
)

#: Values a decision's or move's inputs and verdict may be forged to: the cuts of the
#: shipped table and next to them, the other risks, modes, states and rules.
NEAR = [0.0, -0.0, 1.0, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.6999999999999999,
        0.7000000000000001, 0.8499999999999999, 0.8500000000000001, 1.0000000000000002, 1,
        0, -1e-300, float("nan"), "0.9"]
VERDICTS = {
    "confidence": st.sampled_from(NEAR) | st.floats(0, 1),
    "risk": st.sampled_from(["LOW", "MEDIUM", "HIGH", "CRITICAL", None]),
    "requires_approval": st.sampled_from([True, False, None]),
    "approval": st.sampled_from([True, False, None]),
    "locked": st.booleans(),
    "mode": st.sampled_from(["MOCK", "DRY_RUN", "LIVE"]),
    "allowed": st.booleans(),
    "state": st.sampled_from(["MOCK", "DRY_RUN", "AWAITING_APPROVAL", "LIVE", "COMPLETED",
                              "ABORTED", "LOCKED"]),
    "rule": st.sampled_from(["low.live", "medium.dry_run", "medium.live", "high.dry_run",
                             "critical.mock", "system.lock", "approval.denied", "tool.unknown",
                             "rate.limit"]),
    "approved_by": st.sampled_from([None, "caller", "approver", "grant:grant-1", "grant:x"]),
    "rules": st.sampled_from([EscalationTable.default().digest, "0" * 16]),
}


@st.composite
def verdicts_forged(draw: st.DrawFn) -> list[str]:
    """The base log with decisions' and moves' inputs and verdicts changed (NaN too)."""
    events = [json.loads(line) for line in base_lines()]
    for _ in range(draw(st.integers(1, 6))):
        i = draw(st.integers(1, len(events) - 1))
        data = events[i].get("data")
        if isinstance(data, dict):
            field = draw(st.sampled_from(sorted(VERDICTS)))
            data[field] = draw(VERDICTS[field])
    return renumbered([json.dumps(e, separators=(",", ":")) for e in events])


def outcome(lines: list[str], fast: bool, table: EscalationTable | None = None) -> object:
    """All a replay of ``lines`` found, through the fast path or line by line."""
    r = _Replayer(table or EscalationTable.default(), "<lines>", "sha256",
                  given=table is not None)
    raw = [line.encode() for line in lines]
    try:
        for start in range(0, len(raw), 7):  # batches of 7: the fast path resumes mid-log
            batch = raw[start:start + 7]
            if fast:
                r.lines(batch, start)
            else:
                r.slow(batch, start)
    except AuditFormatError as exc:
        refused: str | None = str(exc)
    else:
        refused = None
    return (refused, r.divergence, r.decisions, r.states, r.runnable, r.locked,
            [g.id for g in r.grants.active(r.last_ts)], r.last_ts, list(r.digests), r.changes)


def same(lines: list[str]) -> None:
    assert outcome(lines, True) == outcome(lines, False)
    other = EscalationTable.default()  # given: another digest is a what-if, not a divergence
    assert outcome(lines, True, other) == outcome(lines, False, other)


def test_the_base_log_replays_alike_and_clean():
    lines = list(base_lines())
    same(lines)
    assert outcome(lines, True)[:2] == (None, None)


@settings(max_examples=300)
@given(verdicts_forged())
def test_forged_verdicts_and_inputs_replay_alike(lines):
    same(lines)


@given(forged_logs())
def test_forged_logs_replay_alike(lines):
    same(lines)


@given(unwritten_logs())
def test_logs_no_buddy_writes_replay_alike(forged):
    same(forged[0])


@pytest.mark.parametrize("seed", range(3))
def test_a_long_log_of_varied_decisions_replays_alike(seed):
    """Hundreds of decisions at confidences on and between every cut: each re-decision
    looked up by region agrees with the walk, so a recorded verdict changed is caught
    at the same seq."""
    from buddy.engine import Engine
    from tests.helpers import ManualClock
    rng = random.Random(seed)
    engine = Engine.default(clock=ManualClock(), approver=lambda r: rng.random() < 0.5)
    tools = ["form_fill", "text_extract", "database_write", "msgraph_send_email"]
    for i in range(300):
        confidence = rng.choice([*NEAR[:13], rng.random()])
        if i % 5 == 0:
            engine.execute(f"a{i % 3}", rng.choice(tools), {"i": i}, confidence=confidence)
        else:
            engine.decide(f"a{i % 3}", rng.choice(tools), confidence,
                          approval=rng.choice([None, True, False]))
    lines = engine.audit.lines()
    same(lines)
    assert outcome(lines, True)[1] is None
    decisions = [n for n, line in enumerate(lines) if '"kind":"decision"' in line]
    for n in rng.sample(decisions, 20):
        event = json.loads(lines[n])
        event["data"]["state"] = "LIVE" if event["data"]["state"] != "LIVE" else "MOCK"
        forged = [*lines[:n], dumps(event), *lines[n + 1:]]
        same(forged)
        assert outcome(forged, True)[1].seq == n + 1


def test_telling_values_are_in_reach():
    assert 0.85 in TELLING  # the forged-log strategies this file reuses reach the cuts


#: One replayer for every example: its memory of moves fills as they come, and each
#: answer it remembers must be the one the machine's rows give.
_R = _Replayer(EscalationTable.default(), "<lines>", "sha256", given=False)
_MACHINE = _R.tables["escalation"]


@settings(max_examples=300)
@given(st.sampled_from(sorted(_MACHINE)), st.data())
def test_a_remembered_move_is_the_move_the_rows_make(state, data):
    triggers = sorted(_MACHINE[state])
    if not triggers:
        return
    trigger = data.draw(st.sampled_from(triggers))
    risk = data.draw(st.sampled_from([r.value for r in RiskLevel]))
    confidences = data.draw(st.lists(st.sampled_from(NEAR[:13]) | st.floats(0, 1),
                                     min_size=1, max_size=4))
    for confidence, needs, approval, locked in itertools.product(
            confidences, (True, False), (True, False, None), (True, False)):
        step = types.SimpleNamespace(risk=risk, requires_approval=needs,
                                     confidence=confidence, approval=approval, locked=locked)
        assert _R.fired("escalation", _MACHINE, state, trigger, step) == \
            _R.fire("escalation", _MACHINE, state, trigger, step), step
