"""Forged but well-chained logs (issue 7, defect 13): replay reports or refuses, never crashes.

Without a key anyone can rewrite a log and re-chain it. Whatever JSON such a log
holds in whatever field, :func:`replay` returns a report or raises
:class:`AuditFormatError` / :class:`AuditChainBroken`: nothing else.
"""

from __future__ import annotations

import functools
import json

from hypothesis import given
from hypothesis import strategies as st

from buddy.engine.core._chain import FIELDS
from buddy.engine.core._events import check_event
from buddy.engine.core._replay import ReplayReport, replay
from buddy.rules import EscalationTable
from buddy.rules.base.errors import AuditChainBroken, AuditFormatError
from tests.engine.core.test_replay import scenario
from tests.helpers import rechain

#: Values that take a forged event past the first checks, deeper into replay.
TELLING = ["LIVE", "MOCK", "DRY_RUN", "AWAITING_APPROVAL", "COMPLETED", "LOCKED", "LOW",
           "MEDIUM", "HIGH", "decision", "transition", "grant", "revoke", "lock", "unlock",
           "execution", "escalation", "task", "approval", "grant:grant-1", "grant:nope",
           "grant-1", "ctx-1", "ctx-2", "decide", "request_live", "approve_escalation",
           "confirm_approval", "start", "fail", "medium.live", "unknown_tool",
           EscalationTable.default().digest, "0" * 16, 10 ** 400, 2 ** 63, 2 ** 64, -1, 0, 1,
           0.5, 0.85, 1e308, -1e308, True, False, None, {}, []]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=6) | st.deferred(lambda: telling())
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda kids: st.lists(kids, max_size=3)
    | st.dictionaries(st.text(max_size=4) | st.sampled_from(["agent", "tool", "calls"]), kids,
                      max_size=3),
    max_leaves=6)

DATA_KEYS = ["agent", "tool", "risk", "requires_approval", "confidence", "approval",
             "approved_by", "approved_at", "locked", "mode", "allowed", "state", "rule",
             "rules", "granted_at", "expires_at", "calls", "reason", "attempts", "max_retries",
             "gate_allows", "why", "args_digest", "format", "chain", "colour"]


@functools.cache
def base_lines() -> tuple[str, ...]:
    engine = scenario()
    engine.unlock()
    engine.grant("a", "msgraph_send_email", calls=2)
    engine.execute("a", "msgraph_send_email", {}, confidence=0.9)
    return tuple(engine.audit.lines())


def telling() -> st.SearchStrategy[object]:
    """TELLING, and the ids of the base log (grants and contexts are named by their seq)."""
    ids = sorted({json.loads(line)["subject"] for line in base_lines()})
    return st.sampled_from([*TELLING, *ids, *(f"grant:{i}" for i in ids)])


@st.composite
def forged_logs(draw: st.DrawFn) -> list[str]:
    lines = list(base_lines())
    for _ in range(draw(st.integers(1, 4))):
        index = draw(st.integers(0, len(lines) - 1))
        event = json.loads(lines[index])
        where = draw(st.sampled_from(["envelope", "data", "data", "data", "drop", "whole"]))
        if where == "envelope":
            event[draw(st.sampled_from(FIELDS[1:-2]))] = draw(json_values)
        elif where == "data" and isinstance(event.get("data"), dict):
            event["data"][draw(st.sampled_from(DATA_KEYS) | st.text(max_size=3))] = \
                draw(json_values)
        elif where == "drop" and isinstance(event.get("data"), dict) and event["data"]:
            event["data"].pop(draw(st.sampled_from(sorted(event["data"]))))
        elif where == "whole":
            event["data"] = draw(json_values)
        lines[index] = json.dumps(event, separators=(",", ":"))
    return rechain(lines)


@given(forged_logs(), st.none() | st.integers(0, 60))
def test_replay_of_a_forged_log_reports_or_refuses(lines, until):
    try:
        report = replay(lines, until=until)
    except AuditChainBroken as exc:
        assert "\n" not in str(exc)
        return
    except AuditFormatError as exc:
        assert "\n" not in str(exc)
        refused = exc.where
    else:
        assert isinstance(report, ReplayReport)
        str(report.divergence)  # what the CLI prints of a report must not fail either
        assert all(c.direction in ("loosening", "tightening") for c in report.changes)
        refused = None
    # Replay reads with the wire decoder compiled from the declared records; check_event
    # asks the converter. They refuse the same first event.
    first = None
    for n, line in enumerate(lines[:until], 1):
        try:
            check_event(json.loads(line), f"<lines>:{n}", n)
        except AuditFormatError as exc:
            first = exc.where
            break
    assert refused == first
