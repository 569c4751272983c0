"""Forged but well-chained logs (issue 7, defect 13): replay reports or refuses, never crashes.

Without a key anyone can rewrite a log and re-chain it. Whatever JSON such a log
holds in whatever field, :func:`replay` returns a report or raises
:class:`AuditFormatError` / :class:`AuditChainBroken`: nothing else. And a
forgery of a kind no buddy writes (a run in another mode than its context's
state, an undecided or twice-run context, a grant used outside its scope, a
decision of odd inputs, an unknown kind, a missing or second header, another
table's digest) is refused at the forged line.
"""

from __future__ import annotations

import functools
import json

from hypothesis import event, given
from hypothesis import strategies as st

from buddy.engine.core._chain import FIELDS, FORMAT
from buddy.engine.core._decision import REFUSAL_RULES
from buddy.engine.core._events import KINDS, check_event
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
    engine.execute("a", "msgraph_send_email", {}, confidence=0.9)   # LIVE by the grant
    engine.execute("b", "form_fill", {}, confidence=0.3)            # MOCK
    engine.execute("b", "text_extract", {}, confidence=0.6)         # DRY_RUN, downgraded: MOCK
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


# -- forgeries no buddy writes --------------------------------------------------------

MODES = ["MOCK", "DRY_RUN", "LIVE"]
STATES = ["MOCK", "DRY_RUN", "AWAITING_APPROVAL", "LIVE", "COMPLETED", "ROLLBACK", "ABORTED",
          "LOCKED"]
#: Agents and tools only a refusal records.
ODD = st.sampled_from(["", None, 0, 5, 0.5, True, [], ["a"], {}, {"agent": "a"}])


def dumps(event: dict) -> str:
    return json.dumps(event, separators=(",", ":"))


def renumbered(lines: list[str]) -> list[str]:
    return rechain([dumps({**json.loads(line), "seq": n}) for n, line in enumerate(lines, 1)])


def where(events: list[dict], kind: str, test=lambda e: True) -> list[int]:
    return [i for i, e in enumerate(events) if e["kind"] == kind and test(e)]


@st.composite
def unwritten_logs(draw: st.DrawFn) -> tuple[list[str], int]:
    """A log re-chained after one forgery no buddy writes, and the seq of the forged line."""
    events = [json.loads(line) for line in base_lines()]
    ids = sorted({e["subject"] for e in events} | {"ctx-999"})
    forgery = draw(st.sampled_from(["run mode", "run subject", "run twice", "grant scope",
                                    "odd inputs", "kind", "no header", "second header",
                                    "header", "digest"]))
    event(forgery)
    if forgery == "run mode":  # a run in a mode (or from a state) its context is not in
        i = draw(st.sampled_from(where(events, "execution")))
        e = events[i]
        e["data"]["mode"] = draw(st.sampled_from([m for m in MODES if m != e["data"]["mode"]]))
        if draw(st.booleans()):
            e["src"] = draw(st.sampled_from(STATES))
    elif forgery == "run subject":  # a run of a context not decided, or not now
        i = draw(st.sampled_from(where(events, "execution")))
        events[i]["subject"] = draw(st.sampled_from([s for s in ids
                                                     if s != events[i]["subject"]]))
    elif forgery == "run twice":  # a run again, later
        run = draw(st.sampled_from(where(events, "execution")))
        i = draw(st.integers(run + 1, len(events)))
        events.insert(i, json.loads(base_lines()[run]))
    elif forgery == "grant scope":  # a grant approving another agent's or tool's call
        i = draw(st.sampled_from(where(events, "decision", lambda e: str(
            e["data"]["approved_by"]).startswith("grant:"))))
        field = draw(st.sampled_from(["agent", "tool"]))
        given = events[i]["data"][field]
        events[i]["data"][field] = draw((st.text(max_size=4) | telling()).filter(
            lambda v: v != given))
    elif forgery == "odd inputs":  # a decision of a rule, of inputs only refusals record
        i = draw(st.sampled_from(where(events, "decision",
                                       lambda e: e["data"]["rule"] not in REFUSAL_RULES)))
        field = draw(st.sampled_from(["agent", "tool"]))
        events[i]["data"][field] = draw(ODD if field == "agent" else ODD.filter(
            lambda v: not isinstance(v, str)))  # a refused tool is recorded as text
    elif forgery == "kind":  # an event of a kind no writer appends
        i = draw(st.integers(0, len(events) - 1))
        events[i]["kind"] = draw((st.text(max_size=10) | telling()).filter(
            lambda k: k not in KINDS))
    elif forgery == "no header":
        i = 0
        events.pop(0)
    elif forgery == "second header":
        i = draw(st.integers(1, len(events)))
        events.insert(i, json.loads(base_lines()[0]))
    elif forgery == "header":  # a header naming another format or chain
        i = 0
        field = draw(st.sampled_from(["format", "chain"]))
        given = {"format": FORMAT, "chain": "sha256"}[field]
        events[0]["data"][field] = draw((st.text(max_size=8) | telling()).filter(
            lambda v: v != given))
    else:  # a decision or a move under the digest of another table, perhaps loosened
        i = draw(st.sampled_from(where(events, "decision") + where(
            events, "transition", lambda e: e["machine"] == "escalation")))
        shipped = EscalationTable.default().digest
        events[i]["data"]["rules"] = draw(st.text("0123456789abcdef", min_size=16,
                                                  max_size=16).filter(lambda d: d != shipped))
        if events[i]["kind"] == "decision" and draw(st.booleans()):
            events[i]["data"].update(mode="LIVE", state="LIVE", allowed=True)
    return renumbered([dumps(e) for e in events]), i + 1


@given(unwritten_logs())
def test_replay_refuses_a_log_no_buddy_writes(forged):
    lines, seq = forged
    try:
        report = replay(lines)
    except AuditFormatError as exc:
        assert exc.where == f"<lines>:{seq}"
        return
    assert report.divergence is not None, f"seq {seq} forged, replay reports ok"
    assert report.divergence.seq == seq, report.divergence
