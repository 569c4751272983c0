"""Replay: verify an audit log, rebuild every machine, re-decide every decision.

:func:`replay` answers "what happened, and why?":

- it verifies the hash chain (and the head anchor, and the HMAC with a key);
- it holds every event it replays to the declared records of the audit format
  (:func:`~buddy.engine.core._audit.check_event`), so a malformed event, even
  one in a well-chained log, is refused in one line, never a traceback;
- it rebuilds each subject's machine from its transitions, checking that every
  recorded move is one the declared machine makes from that state with the
  recorded inputs;
- it re-evaluates every recorded decision from its recorded inputs and reports
  the first divergence;
- with ``until`` it stops at a sequence number and returns every subject's
  state there (time travel);
- with a different escalation table it lists the decisions that would change
  (what-if), loosenings first.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from buddy.engine.core._approvals import Grant, GrantBook
from buddy.engine.core._audit import AuditLog
from buddy.engine.core._chain import (
    Anchor,
    Chain,
    missing_anchor,
    read_anchor,
    scan_log,
    verify_chain,
)
from buddy.engine.core._decision import REFUSAL_RULES, Policy
from buddy.engine.core._events import decode_event
from buddy.machines import MACHINES, EscalationInputs, TaskInputs
from buddy.machines._factory import CompiledTable, compile_table, fire
from buddy.rules.base._values import ExecutionMode, RiskLevel
from buddy.rules.base.errors import AuditChainBroken
from buddy.rules.tables._catalogue import ToolContractRegistry
from buddy.rules.tables._escalation import EscalationTable

__all__ = ["Change", "Divergence", "ReplayReport", "replay"]



@attrs.frozen
class Divergence:
    """The first event replay does not reproduce."""

    seq: int
    subject: str
    field: str
    expected: Any
    got: Any

    def __str__(self) -> str:
        return (f"seq {self.seq} ({self.subject}): {self.field} recorded {self.expected!r}, "
                f"replay gives {self.got!r}")


@attrs.frozen
class Change:
    """A recorded decision another escalation table would decide differently."""

    seq: int
    agent: str
    tool: str
    risk: str
    confidence: float
    before: ExecutionMode | None    # the recorded mode; None: refused
    after: ExecutionMode | None     # the mode the other table gives; None: refused
    rule_before: str
    rule_after: str

    @property
    def direction(self) -> str:
        """``loosening`` when the other table lets the call run higher, else ``tightening``."""
        return "loosening" if _rank(self.after) > _rank(self.before) else "tightening"


def _rank(mode: ExecutionMode | None) -> int:
    return -1 if mode is None else mode.rank


def _mode(recorded: str) -> ExecutionMode | None:
    """A mode as a record names it (``REFUSED``: None), typed."""
    return None if recorded == "REFUSED" else ExecutionMode(recorded)


@attrs.frozen
class ReplayReport:
    """What replay found. ``ok`` is True when the log reproduces exactly."""

    source: str
    events: int                     # events verified on the chain
    replayed: int                   # events replayed (up to ``until``)
    last_seq: int
    chain: str
    decisions: int
    torn_tail: str | None
    divergence: Divergence | None
    states: Mapping[str, tuple[str, str]]   # subject -> (machine, state)
    locked: bool
    grants: tuple[str, ...]                 # grants usable at the end of the replay
    until: int | None
    rules_recorded: tuple[str, ...]         # digests of the tables the log was decided with
    rules_replayed: str                     # digest of the table replay used
    changes: tuple[Change, ...]             # what-if: decisions that change, loosenings first

    @property
    def ok(self) -> bool:
        return self.divergence is None

    @property
    def what_if(self) -> bool:
        """True when the log was decided with a table other than the one replayed."""
        return any(d != self.rules_replayed for d in self.rules_recorded)


def _escalation_inputs(data: Any, table: EscalationTable) -> EscalationInputs:
    return EscalationInputs(table.policies[RiskLevel(data.risk)], data.confidence,
                            data.approval, data.locked, data.requires_approval)


def _task_inputs(data: Any, table: EscalationTable) -> TaskInputs:
    return TaskInputs(data.attempts, data.max_retries, data.gate_allows)


#: How each machine's guard inputs are rebuilt from a transition's data (a record of
#: :data:`~buddy.engine.core._audit.STEP_RECORDS`, decoded).
INPUTS: dict[str, Callable[[Any, EscalationTable], Any]] = {
    "escalation": _escalation_inputs,
    "task": _task_inputs,
}


class _Replayer:
    """Replays events that :func:`decode_event` read: every field has its declared type."""

    def __init__(self, table: EscalationTable, source: str) -> None:
        self.table = table
        self.policy = Policy(ToolContractRegistry([]), table)
        self.source = source
        self.tables: dict[str, CompiledTable] = {n: compile_table(s) for n, s in MACHINES.items()}
        self.states: dict[str, tuple[str, str]] = {}
        self.locked = False
        self.grants = GrantBook()
        self.decisions = 0
        self.digests: dict[str, None] = {}
        self.changes: list[Change] = []
        self.divergence: Divergence | None = None
        self.last_ts = 0.0

    def diverge(self, seq: int, subject: str, field: str, expected: Any, got: Any) -> None:
        if self.divergence is None:
            self.divergence = Divergence(seq, subject, field, expected, got)

    def event(self, e: Any, data: Any) -> None:
        """Replay one event: ``e`` its envelope, ``data`` its kind's data record (or None)."""
        kind, seq, subject = e.kind, e.seq, e.subject
        self.last_ts = e.ts
        if kind == "decision":
            self.decision(seq, subject, data)
        elif kind == "transition":
            self.transition(seq, e, data)
        elif kind == "lock":
            self.locked = True
        elif kind == "unlock":
            self.locked = False
        elif kind == "grant":
            if self.grants.get(subject) is not None:
                self.diverge(seq, subject, "grant", "a new grant id", "already granted")
            else:
                self.grants.add(Grant(subject, data.agent, data.tool, data.granted_at,
                                      data.expires_at, data.calls, data.reason))
        elif kind == "revoke":
            if self.grants.get(subject) is None:
                self.diverge(seq, subject, "revoke", "an active grant", "no such grant")
            else:
                self.grants.revoke(subject)

    def transition(self, seq: int, e: Any, data: Any) -> None:
        machine, subject, trigger, dst = e.machine, e.subject, e.event, e.dst
        table = self.tables.get(machine)
        if table is None:
            self.diverge(seq, subject, "machine", machine, "no such declared machine")
            return
        spec = MACHINES[machine]
        current = self.states.get(subject, (machine, spec.initial.name))[1]
        if e.src != current:
            self.diverge(seq, subject, "src", e.src, current)
            return
        options = table.get(current, {}).get(trigger)
        if not options or dst not in {o[0] for o in options}:
            self.diverge(seq, subject, "dst", dst, f"no {trigger} from {current} "
                         f"to {dst} in machine {machine}")
            return
        if not self.what_if_of(data.rules):
            got = fire(table, current, trigger, INPUTS[machine](data, self.table))
            if got is None or got[0] != dst:
                self.diverge(seq, subject, "dst", dst, None if got is None else got[0])
        self.states[subject] = (machine, dst)

    def what_if_of(self, digest: str | None) -> bool:
        return digest is not None and digest != self.table.digest

    def decision(self, seq: int, subject: str, data: Any) -> None:
        self.decisions += 1
        digest = data.rules
        self.digests.setdefault(digest, None)
        mode, allowed = data.mode, data.allowed
        recorded_mode = mode if allowed else "REFUSED"
        if data.rule in REFUSAL_RULES:
            if allowed or mode != "MOCK":
                self.diverge(seq, subject, "allowed", allowed, False)
            return
        locked = data.locked
        if self.locked and not locked:
            self.diverge(seq, subject, "locked", locked, True)
        via = data.approved_by
        if via is not None and via.startswith("grant:"):
            gid = via[len("grant:"):]
            at = data.approved_at
            why = self.grants.check(gid, self.last_ts if at is None else at)
            if why is not None:
                self.diverge(seq, subject, "approved_by", via, f"grant {gid} unusable: {why}")
            else:
                self.grants.use(gid)
        try:
            got, got_mode, state = self.policy.reevaluate(
                data.risk, bool(data.requires_approval), data.confidence, data.approval, locked)
        except (KeyError, ValueError, TypeError, ArithmeticError) as exc:
            self.diverge(seq, subject, "inputs", "a decidable record", f"{exc!r}")
            return
        if not got.allowed:
            got_mode = "REFUSED"
        if self.what_if_of(digest):
            if got_mode != recorded_mode:
                self.changes.append(Change(seq, data.agent, data.tool, data.risk,
                                           data.confidence, _mode(recorded_mode),
                                           _mode(got_mode), data.rule, got.rule))
            return
        if got_mode != recorded_mode:
            self.diverge(seq, subject, "mode", recorded_mode, got_mode)
        elif got.rule != data.rule:
            self.diverge(seq, subject, "rule", data.rule, got.rule)
        elif state != data.state:
            self.diverge(seq, subject, "state", data.state, state)


def replay(log: str | os.PathLike[str] | AuditLog | list[str] | list[bytes], *,
           key: bytes | None = None,
           until: int | None = None, table: EscalationTable | None = None,
           check_anchor: bool = True) -> ReplayReport:
    """Verify and replay an audit log.

    Parameters
    ----------
    log:
        A log file path, an :class:`AuditLog`, or its lines.
    key:
        The HMAC key the log was chained with, if any.
    until:
        Stop after this sequence number (time travel).
    table:
        The escalation table to re-decide with (default: buddy's shipped one).
        Decisions made with another table are compared as a what-if.
    check_anchor:
        Verify a file log against its head anchor (the default; a missing
        anchor is then an error). False verifies the chain alone, which cannot
        tell a log cut short at its end.

    Raises
    ------
    AuditChainBroken
        When the chain, the HMAC or the anchor does not verify, or the anchor
        is missing.
    AuditFormatError
        When a line is not a valid event (naming file:line, seq and field).

    Examples
    --------
    >>> from buddy.engine import Engine
    >>> engine = Engine.default(clock=lambda: 0.0)
    >>> _ = engine.decide("a", "form_fill", 0.9)
    >>> replay(engine.audit).ok
    True
    """
    torn = None
    anchor: Anchor | None = None
    path = log.path if isinstance(log, AuditLog) else \
        None if isinstance(log, list) else Path(log)
    if path is not None and check_anchor:
        # Read before the lines: a writer appends its line before it moves the anchor.
        anchor = read_anchor(path)
    if isinstance(log, AuditLog):
        lines, source = log.raw_lines(), str(log.path or "<memory>")
    elif isinstance(log, list):
        lines = [line.encode("utf-8") if isinstance(line, str) else line for line in log]
        source = "<lines>"
    else:
        assert path is not None
        scan = scan_log(path)
        lines, torn, source = scan.raw, scan.torn, str(path)
    if path is not None and check_anchor and anchor is None:
        raise AuditChainBroken(str(path), None, missing_anchor(
            path, "replay with check_anchor=False (buddy replay --no-anchor) to verify the "
            "chain without it"))
    chain = verify_chain(lines, Chain(key), source, anchor=anchor)
    table = table or EscalationTable.default()
    r = _Replayer(table, source)
    replayed = 0
    step = r.event
    for n, line in enumerate(lines, 1):
        if until is not None and n > until:  # the chain holds seq n on line n
            break
        step(*decode_event(line, source, n))
        replayed += 1
    return ReplayReport(
        source=source, events=chain.count, replayed=replayed,
        last_seq=min(chain.last_seq, until) if until is not None else chain.last_seq,
        chain=chain.chain, decisions=r.decisions, torn_tail=torn, divergence=r.divergence,
        states=dict(r.states), locked=r.locked,
        grants=tuple(g.id for g in r.grants.active(r.last_ts)), until=until,
        rules_recorded=tuple(r.digests), rules_replayed=table.digest,
        changes=tuple(sorted(r.changes, key=lambda c: (c.direction != "loosening", c.seq))),
    )
