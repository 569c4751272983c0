"""Replay: verify an audit log, rebuild every machine, re-decide every decision.

:func:`replay` answers "what happened, and why?":

- it verifies the hash chain (and the head anchor, and the HMAC with a key);
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
import orjson

from buddy.engine.core._approvals import Grant, GrantBook
from buddy.engine.core._audit import AuditLog, read_anchor, scan_log, verify_lines
from buddy.engine.core._decision import REFUSAL_RULES, Policy
from buddy.machines import MACHINES, EscalationInputs, TaskInputs
from buddy.machines._factory import CompiledTable, compile_table, fire
from buddy.rules.base._values import ExecutionMode, RiskLevel
from buddy.rules.base.errors import AuditFormatError
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
    before: str          # recorded mode, or "REFUSED"
    after: str
    rule_before: str
    rule_after: str

    @property
    def direction(self) -> str:
        return "loosening" if _rank(self.after) > _rank(self.before) else "tightening"


def _rank(mode: str) -> int:
    return -1 if mode == "REFUSED" else ExecutionMode(mode).rank


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


def _escalation_inputs(data: Mapping[str, Any], table: EscalationTable) -> EscalationInputs:
    return EscalationInputs(table.policies[RiskLevel(data["risk"])], data["confidence"],
                            data.get("approval"), bool(data.get("locked")),
                            bool(data.get("requires_approval")))


def _task_inputs(data: Mapping[str, Any], table: EscalationTable) -> TaskInputs:
    return TaskInputs(data.get("attempts", 0), data.get("max_retries", 0),
                      data.get("gate_allows", True))


#: How each machine's guard inputs are rebuilt from a transition event's data.
INPUTS: dict[str, Callable[[Mapping[str, Any], EscalationTable], Any]] = {
    "escalation": _escalation_inputs,
    "task": _task_inputs,
}


class _Replayer:
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

    def event(self, n: int, e: dict[str, Any]) -> None:
        kind, seq, subject, data = e["kind"], e["seq"], e["subject"], e["data"]
        self.last_ts = e["ts"]
        if kind == "transition":
            self.transition(seq, e, data)
        elif kind == "decision":
            self.decision(seq, subject, data)
        elif kind == "lock":
            self.locked = True
        elif kind == "unlock":
            self.locked = False
        elif kind == "grant":
            self.grants.add(Grant(subject, data["agent"], data["tool"], data["granted_at"],
                                  data["expires_at"], data["calls"], data.get("reason", "")))
        elif kind == "revoke":
            if self.grants.get(subject) is None:
                self.diverge(seq, subject, "revoke", "an active grant", "no such grant")
            else:
                self.grants.revoke(subject)

    def transition(self, seq: int, e: dict[str, Any], data: dict[str, Any]) -> None:
        machine, subject, trigger = e["machine"], e["subject"], e["event"]
        table = self.tables.get(machine)
        if table is None:
            self.diverge(seq, subject, "machine", machine, "no such declared machine")
            return
        spec = MACHINES[machine]
        current = self.states.get(subject, (machine, spec.initial.name))[1]
        if e["src"] != current:
            self.diverge(seq, subject, "src", e["src"], current)
            return
        options = table.get(current, {}).get(trigger)
        if not options or e["dst"] not in {o[0] for o in options}:
            self.diverge(seq, subject, "dst", e["dst"], f"no {trigger} from {current} "
                         f"to {e['dst']} in machine {machine}")
            return
        if not self.what_if_of(data):
            try:
                inputs = INPUTS[machine](data, self.table)
            except (KeyError, ValueError, TypeError):
                inputs = None
            if inputs is not None:
                got = fire(table, current, trigger, inputs)
                if got is None or got[0] != e["dst"]:
                    self.diverge(seq, subject, "dst", e["dst"],
                                 None if got is None else got[0])
        self.states[subject] = (machine, e["dst"])

    def what_if_of(self, data: Mapping[str, Any]) -> bool:
        digest = data.get("rules")
        return digest is not None and digest != self.table.digest

    def decision(self, seq: int, subject: str, data: dict[str, Any]) -> None:
        self.decisions += 1
        digest = data.get("rules")
        if digest is not None:
            self.digests.setdefault(digest, None)
        recorded_mode = data["mode"] if data["allowed"] else "REFUSED"
        if data["rule"] in REFUSAL_RULES:
            if data["allowed"] or data["mode"] != "MOCK":
                self.diverge(seq, subject, "allowed", data["allowed"], False)
            return
        if self.locked and not data["locked"]:
            self.diverge(seq, subject, "locked", data["locked"], True)
        via = data.get("approved_by") or ""
        if via.startswith("grant:"):
            gid = via[len("grant:"):]
            at = data.get("approved_at", self.last_ts)
            why = self.grants.check(gid, at)
            if why is not None:
                self.diverge(seq, subject, "approved_by", via, f"grant {gid} unusable: {why}")
            else:
                self.grants.use(gid)
        try:
            got, mode, state = self.policy.reevaluate(
                data["risk"], bool(data["requires_approval"]), data["confidence"],
                data.get("approval"), bool(data["locked"]))
        except (KeyError, ValueError, TypeError) as exc:
            self.diverge(seq, subject, "inputs", "a decidable record", f"{exc!r}")
            return
        got_mode = mode if got.allowed else "REFUSED"
        if self.what_if_of(data):
            if got_mode != recorded_mode:
                self.changes.append(Change(seq, data["agent"], data["tool"], data["risk"],
                                           data["confidence"], recorded_mode, got_mode,
                                           data["rule"], got.rule))
            return
        if got_mode != recorded_mode:
            self.diverge(seq, subject, "mode", recorded_mode, got_mode)
        elif got.rule != data["rule"]:
            self.diverge(seq, subject, "rule", data["rule"], got.rule)
        elif state != data.get("state", state):
            self.diverge(seq, subject, "state", data["state"], state)


def replay(log: str | os.PathLike[str] | AuditLog | list[str], *, key: bytes | None = None,
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

    Raises
    ------
    AuditChainBroken
        When the chain, the HMAC or the anchor does not verify.
    AuditFormatError
        When a line is not a valid event.

    Examples
    --------
    >>> from buddy.engine import Engine
    >>> engine = Engine.default(clock=lambda: 0.0)
    >>> _ = engine.decide("a", "form_fill", 0.9)
    >>> replay(engine.audit).ok
    True
    """
    torn = None
    anchor = None
    if isinstance(log, AuditLog):
        lines, source = log.lines(), str(log.path or "<memory>")
    elif isinstance(log, list):
        lines, source = log, "<lines>"
    else:
        path = Path(log)
        scan = scan_log(path)
        lines, torn, source = scan.lines, scan.torn, str(path)
        anchor = read_anchor(path) if check_anchor else None
    chain = verify_lines(lines, key=key, source=source, anchor=anchor)
    table = table or EscalationTable.default()
    r = _Replayer(table, source)
    replayed = 0
    for n, line in enumerate(lines, 1):
        try:
            event = orjson.loads(line)
            seq = event["seq"]
            if until is not None and seq > until:
                break
            r.event(n, event)
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise AuditFormatError(f"{source}:{n}", f"not a valid audit event: {exc}") from None
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
