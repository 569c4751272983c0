"""Replay: verify an audit log, rebuild every machine, re-decide every decision.

:func:`replay` answers "what happened, and why?":

- it verifies the hash chain (and the head anchor, and the HMAC with a key);
- it holds every event it replays to the declared records of the audit format
  (:func:`~buddy.engine.core._events.decode_event`), so a malformed event, even
  one in a well-chained log, is refused in one line, never a traceback;
- it rebuilds each subject's machine from its transitions, checking that every
  recorded move is one the declared machine makes from that state with the
  recorded inputs;
- it holds a task's moves to one another and to the calls they end: every move
  of a task records the task and the retry budget of its first move and the
  retries its earlier moves made, and a move that ends an attempt agrees with
  the run of the context it cites (:meth:`_Replayer.task_move`);
- it holds a wave's task moves to the scheduler's decisions (``schedule`` events):
  once a plan is replayed, a task move is of a task a plan of the schedule held
  lists, by the agent the plan, or a reassignment since, put it on; a task is
  planned once a wave, and reassigned only from the agent it is on
  (:meth:`_Replayer.schedule`);
- it re-evaluates every recorded decision from its recorded inputs and reports
  the first divergence;
- it refuses what no buddy writes, though the chain verifies: a log that does
  not start with its header (or a header that names another format or chain
  than the one that verified), a run whose mode is not that of its context's
  state or that no allowed decision of the context let run, a grant used by
  another agent or for another tool, a decision no rule made from inputs no
  rule takes, and, without a table given, a decision or move decided with
  another table than buddy's shipped one;
- with ``until`` it stops at a sequence number and returns every subject's
  state there (time travel);
- given an escalation table it re-decides the log with it and lists the
  decisions made with another table that would change (what-if), loosenings
  first.
"""

from __future__ import annotations

import contextlib
import os
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import attrs

from buddy.engine.core._approvals import Grant, GrantBook
from buddy.engine.core._audit import AuditLog
from buddy.engine.core._chain import (
    FORMAT,
    Anchor,
    Chain,
    ChainCheck,
    ChainReport,
    LogReader,
    drain,
    missing_anchor,
    read_anchor,
)
from buddy.engine.core._decision import REFUSAL_RULES, Policy
from buddy.engine.core._events import (
    DECISION,
    UNFIT,
    as_record,
    decode_batch,
    decode_verified,
    event_data,
)
from buddy.engine.core._tickets import CallBook
from buddy.engine.core._verifier import BackgroundVerify, background_pays
from buddy.machines import MACHINES, EscalationInputs, TaskInputs
from buddy.machines._factory import CompiledTable, compile_table, fire
from buddy.machines.escalation import SPEC as ESCALATION
from buddy.machines.escalation import STATE_MODE
from buddy.rules.base._values import ExecutionMode, RiskLevel
from buddy.rules.base.errors import AuditChainBroken, AuditError, AuditFormatError
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
    rules_given: bool = False               # replay was given the table (a what-if may be)
    plans: int = 0                          # scheduler plans replayed (schedule: plan)
    reassignments: int = 0                  # tasks the scheduler moved (schedule: reassign)

    @property
    def ok(self) -> bool:
        return self.divergence is None

    @property
    def what_if(self) -> bool:
        """True when replay was given a table and the log was decided with another.

        Without a table every decision must have been made with the shipped one:
        one made with another is a divergence (field ``rules``), not a what-if.
        """
        return self.rules_given and any(d != self.rules_replayed for d in self.rules_recorded)


_RISK = {risk.value: risk for risk in RiskLevel}  # RiskLevel(value), as a cheaper lookup


def _escalation_inputs(data: Any, table: EscalationTable) -> EscalationInputs:
    return EscalationInputs(table.policies[_RISK[data.risk]], data.confidence,
                            data.approval, data.locked, data.requires_approval)


def _task_inputs(data: Any, table: EscalationTable) -> TaskInputs:
    return TaskInputs(data.attempts, data.max_retries, data.gate_allows)


#: How each machine's guard inputs are rebuilt from a transition's data (a record of
#: :data:`~buddy.engine.core._audit.STEP_RECORDS`, decoded).
INPUTS: dict[str, Callable[[Any, EscalationTable], Any]] = {
    "escalation": _escalation_inputs,
    "task": _task_inputs,
}


#: A state's name -> the mode a call runs in there (None: no call runs there).
_STATE_MODE: dict[str, str | None] = {
    state.name: (STATE_MODE[state].value if state in STATE_MODE else None)
    for state in ESCALATION.states}
_RANK = {mode.value: mode.rank for mode in ExecutionMode}
_MACHINE, _START = ESCALATION.name, ESCALATION.initial.name
_FINALS = frozenset(state.name for state in ESCALATION.finals)
_INITIAL = (_MACHINE, _START)
_UNSEEN: Any = object()
#: A call's inputs its run and moves record as its decision did.
_CALL_INPUTS = ("agent", "tool", "risk", "requires_approval", "confidence", "rules")
_TASK = MACHINES["task"].name
_TASK_FINALS = frozenset(state.name for state in MACHINES["task"].finals)
#: How many contexts' outcomes (a run's ``ok``, or a refusal) replay keeps for the task
#: moves that cite them: at least the most recent this many, at most twice as many (see
#: :meth:`_Replayer.forget_oldest`). The wave executor writes a task's move right after its
#: call's events (with threads, after those of the other agents' calls meanwhile: one
#: per thread at most), far nearer than that.
OUTCOMES_KEPT = 4096


class _TwoOnALine(Exception):  # noqa: N818 - not an error: a batch to replay again
    """Unverified bytes held more values than lines (see :meth:`_Replayer.batch`)."""


class _Replayer:
    """Replays events that :func:`decode_event` read: every field has its declared type."""

    def __init__(self, table: EscalationTable, source: str, chain: str, *,
                 given: bool) -> None:
        self.table = table
        self.digest = table.digest
        self.given = given      # a table given: decisions of another digest are a what-if
        # Given another table than the shipped one, what was decided with the shipped one
        # is still held to it (a what-if must not pass a forged decision): its replayer.
        shipped = EscalationTable.default()
        self.home = _Replayer(shipped, source, chain, given=False) \
            if given and shipped.digest != table.digest else None
        self.chain = chain      # the chain that verified the log: its header must name it
        policy = Policy(ToolContractRegistry([]), table)
        self.reevaluate = policy.reevaluate
        self.cuts = {risk.value: cuts for risk in RiskLevel
                     if (cuts := policy.cuts(risk.value)) is not None}
        # What a re-decision gave, by (risk, requires_approval, approval, locked, region
        # of the confidence among its risk's cuts): equal there, as Policy.cuts says.
        self.known: dict[tuple[str, bool, bool | None, bool, int], tuple[str, str, str]] = {}
        self.source = source
        self.tables: dict[str, CompiledTable] = {n: compile_table(s) for n, s in MACHINES.items()}
        self.initial = {name: spec.initial.name for name, spec in MACHINES.items()}
        # The states a trigger may reach from a state, by (machine, state, trigger); and
        # what the escalation machine's rows gave (see fired).
        self.targets: dict[tuple[str, str, str], frozenset[str]] = {}
        self.fires: dict[tuple[Any, ...], str | None] = {}
        self.states: dict[str, tuple[str, str]] = {}
        # Contexts an allowed decision lets run once: subject -> (seq, mode, agent, tool).
        self.runnable: dict[str, tuple[Any, ...]] = {}
        # A context's call as its first event recorded it (its first move, or its decision
        # once it runs): its other moves, decision and run are held to it (as many as the
        # contexts that moved).
        self.calls: dict[str, tuple[Any, ...]] = {}
        # A task's (max_retries, task id, retries made) as its moves so far recorded them,
        # by subject, until it ends (COMPLETED or FAILED): as many as the tasks under way.
        self.tasks: dict[str, tuple[Any, Any, int]] = {}
        # What came of a context's call, until a task move cites it: ctx -> (ok, agent),
        # ok None when its decision refused it. Bounded (OUTCOMES_KEPT): a context named
        # by a seq up to ``forgot`` may have been dropped (see forget_oldest).
        self.outcomes: dict[str, tuple[bool | None, Any]] = {}
        self.forgot = 0
        # The schedule of the wave under way: task id -> the agent its plan, or a
        # reassignment since, put it on; the wave (0: no plan yet, no schedule held), the
        # agents it planned, and whether its tasks began to move. One schedule at a time:
        # a plan of another drops it. Held until then: a run killed mid-wave leaves its
        # tasks to the next run, which closes them (cancel moves) before it plans.
        self.scheduled: dict[str, str] = {}
        self.schedule_wave = 0
        self.schedule_agents: dict[str, int] = {}   # agent -> the seq of its plan
        self.schedule_ran = False
        self.plans = 0
        self.reassignments = 0
        self.locked = False
        self.grants = GrantBook()
        self.book = CallBook()  # tickets and idempotency keys, as the log says them
        #: the digest of the arguments a ticket's answer approved, by the call it runs
        self.approved_args: dict[str, str] = {}
        self.decisions = 0
        self.digests: dict[str, None] = {}    # the digests decisions recorded, in order
        self.replayed_digest_seen = False
        self.changes: list[Change] = []
        self.divergence: Divergence | None = None
        self.last_ts = 0.0

    def lines(self, lines: Sequence[bytes], seq: int) -> None:
        """Replay ``lines``, the lines ``seq + 1``... of the log (verified), as they come."""
        if lines:
            self.batch(b"\n".join(lines), len(lines), seq, lines)

    def batch(self, data: bytes | memoryview, count: int | None, seq: int,
              lines: Sequence[bytes] | None = None) -> int:
        """Replay the ``count`` lines of ``data`` (``\\n``-separated), the lines
        ``seq + 1``... of the log; ``lines``: the same, split, when the caller has them.
        How many lines it replayed.

        Decoded in one call; :meth:`fast` replays them from there, and the lines
        from the first it cannot take (an event that does not fit: its error names
        it) go line by line through :func:`decode_verified`.

        ``count`` None (lines not counted yet, bytes not verified yet: see
        :func:`_beside`): the values are replayed as lines, and the lines counted
        only when :meth:`fast` stops short. Lines the chain verifies each begin
        with their seq and end with their hash: no value runs from one into the
        next, so there are as many values as lines unless one holds two. That is
        :class:`_TwoOnALine` where it shows here, and else a count that the
        chain's own does not match: the caller replays again, line by line.
        """
        events = decode_batch(data, count)
        done = 0
        if seq == 0 and events:  # the header, checked as the first event
            header = events[0]
            checked = event_data(header) if header.seq == 1 else UNFIT
            if checked is UNFIT:
                events = []  # the line-by-line path says why
            else:
                self.first(header)
                self.event(header, checked)
                done = 1
        done += self.fast(events[done:] if done else events, seq + done)
        if events and done == len(events) and count is None:
            return done
        if lines is None:
            lines = bytes(data).split(b"\n")
        if count is None and events and len(events) != len(lines):
            raise _TwoOnALine(seq + done)
        if done < len(lines):
            self.slow(lines[done:], seq + done)
        return len(lines)

    def slow(self, lines: Sequence[bytes], seq: int) -> None:
        """Replay ``lines``, decoded and checked one by one (see :meth:`batch`)."""
        step = self.event
        for e, data in decode_verified(lines, self.source, seq):
            if e.seq == 1:
                self.first(e)
            step(e, data)

    def fast(self, events: list[Any], seq: int) -> int:
        """Replay decoded ``events``, the events ``seq + 1``...; how many it replayed.

        Stops at the first event out of sequence or whose data does not fit
        (:meth:`slow` takes it from there). Most events are decisions with the
        replayed table by a plain agent: those it checks here, inline, as
        :meth:`decision` does (a test holds the two to the same verdicts), their
        re-decision remembered by the confidence's region (:meth:`Policy.cuts`);
        every other event goes through :meth:`event`.
        """
        n, last, others = seq, None, 0  # others: events not counted as decisions here
        # Until a decision of the replayed table has recorded its digest, none is fast.
        digest = self.digest if self.replayed_digest_seen else None
        decision, refusal, locked_now = DECISION, REFUSAL_RULES, self.locked
        runnable, states, known, cuts_of = self.runnable, self.states, self.known, self.cuts
        calls, step = self.calls, self.event
        try:
            for e in events:
                if e.seq != n + 1:
                    break
                if type(e) is not decision:
                    data = event_data(e)
                    if data is UNFIT:
                        break
                    n += 1
                    kind = e.kind
                    if kind == "transition":  # the next most common: no dispatch
                        self.transition(n, e, data)
                    elif kind == "execution":
                        self.execution(n, e, data)
                    else:
                        step(e, data)
                        locked_now = self.locked
                    last, others = e, others + 1
                    continue
                d = e.data
                agent, tool, confidence, via = d.agent, d.tool, d.confidence, d.approved_by
                if d.rules != digest or d.rule in refusal or type(agent) is not str or \
                        not agent or type(tool) is not str or locked_now and not d.locked or \
                        via is not None and via != "caller" and via != "callback":  # a grant's,
                    # a ticket's: checked against their events
                    self.last_ts = e.ts
                    self.decision(n + 1, e.subject, d)  # counts it
                    n += 1
                    last, others = e, others + 1
                    digest = self.digest if self.replayed_digest_seen else None
                    continue
                n += 1
                last = e
                subject = e.subject
                allowed, mode, state, locked = d.allowed, d.mode, d.state, d.locked
                if "ctx-" <= subject < "ctx.":  # as decision() does
                    at = states.get(subject)
                    if at is not None and (call := calls.get(subject)) is not None and \
                            (agent, tool, d.risk, d.requires_approval, confidence,
                             d.rules) != call:
                        self.same_call(n, subject, d, call)
                    if allowed and (at == (_MACHINE, state) if at is not None else
                                    state == _START and subject == f"ctx-{n}"):
                        runnable[subject] = (n, mode, agent, tool, d.risk,
                                             d.requires_approval, confidence, d.rules)
                    elif not allowed:
                        self.refused(n, subject, agent)
                    elif runnable:
                        runnable.pop(subject, None)
                risk, needs, approval = d.risk, d.requires_approval is True, d.approval
                cuts = cuts_of.get(risk)
                if cuts is not None and type(confidence) is float and 0.0 <= confidence <= 1.0:
                    cut = bisect_left(cuts, confidence)
                    key = (risk, needs, approval, locked,
                           2 * cut + 1 if cut < len(cuts) and cuts[cut] == confidence else
                           2 * cut)
                    got = known.get(key)
                    if got is None:
                        got = known[key] = self.redecide(risk, needs, confidence, approval,
                                                         locked)
                else:
                    try:
                        got = self.redecide(risk, needs, confidence, approval, locked)
                    except (KeyError, ValueError, TypeError, ArithmeticError) as exc:
                        self.diverge(n, subject, "inputs", "a decidable record", f"{exc!r}")
                        continue
                if got != (mode if allowed else "REFUSED", d.rule, state):
                    self.differs(n, subject, d, got)
        finally:
            self.decisions += n - seq - others
            if last is not None:
                self.last_ts = last.ts
        return n - seq

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
        elif kind == "execution":
            self.execution(seq, e, data)
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
        elif kind == "open":
            self.header(seq, subject, data)
        elif kind == "schedule":
            self.schedule(seq, e, data)
        elif kind == "ticket" or kind == "idempotency":
            self.call_event(seq, e, data)

    def first(self, e: Any) -> None:
        """Check the first event of the log: its header."""
        if e.kind != "open":
            self.diverge(e.seq, e.subject, "kind", e.kind,
                         "open (a log starts with its header)")

    def header(self, seq: int, subject: str, data: Any) -> None:
        if seq != 1:
            self.diverge(seq, subject, "kind", "open", "a header only at seq 1")
        elif data.format != FORMAT:
            self.diverge(seq, subject, "format", data.format, FORMAT)
        elif data.chain != self.chain:
            self.diverge(seq, subject, "chain", data.chain,
                         f"{self.chain} (the chain that verified the log)")

    def what_if_of(self, seq: int, subject: str, digest: str | None) -> bool:
        """True when an event decided with the table of ``digest`` is a what-if: replay was
        given another table. Without one, the shipped table decided every event: another
        digest is a divergence, and the event is held to the shipped table."""
        if digest is None or digest == self.digest:
            return False
        if self.given:
            return True
        self.diverge(seq, subject, "rules", digest, f"{self.digest} of the shipped "
                     "table; replay with the table it was decided with (table=, "
                     "buddy replay --rules DIR)")
        return False

    def transition(self, seq: int, e: Any, data: Any) -> None:
        machine, subject, trigger, dst = e.machine, e.subject, e.event, e.dst
        table = self.tables.get(machine)
        if table is None:
            self.diverge(seq, subject, "machine", machine, "no such declared machine")
            return
        at = self.states.get(subject)
        current = self.initial[machine] if at is None else at[1]
        if e.src != current:
            self.diverge(seq, subject, "src", e.src, current)
            return
        targets = self.targets.get((machine, current, trigger))
        if targets is None:
            options = table.get(current, {}).get(trigger) or ()
            targets = self.targets[(machine, current, trigger)] = \
                frozenset(option[0] for option in options)
        if dst not in targets:
            self.diverge(seq, subject, "dst", dst, f"no {trigger} from {current} "
                         f"to {dst} in machine {machine}")
            return
        if machine == _MACHINE:  # a call's moves record its inputs as its first event did
            call = self.calls.get(subject)
            if call is None:
                decided = self.runnable.get(subject)
                if decided is None:  # its first event: it says what the call is
                    self.calls[subject] = (data.agent, data.tool, data.risk,
                                           data.requires_approval, data.confidence, data.rules)
                else:
                    call = self.calls[subject] = decided[2:]
            if call is not None and not self.same_call(seq, subject, data, call):
                return
        if machine != _MACHINE:  # its guards read no escalation table (a task's rules
            if machine == _TASK:  # name its gate table)
                self.task_move(seq, subject, trigger, dst, data)
            got = self.fire(machine, table, current, trigger, data)
            if got != dst:
                self.diverge(seq, subject, "dst", dst, got)
            self.states[subject] = (machine, dst)
            return
        rules = data.rules
        if rules == self.digest or not self.what_if_of(seq, subject, rules):
            got = self.fired(machine, table, current, trigger, data)
            if got != dst:
                self.diverge(seq, subject, "dst", dst, got)
        elif self.home is not None and rules == self.home.digest:  # a table we hold
            got = self.home.fired(machine, table, current, trigger, data)
            if got != dst:
                self.diverge(seq, subject, "dst", dst, got)
        self.states[subject] = (machine, dst)
        if dst in _FINALS:  # nothing moves or runs from there: its call is not needed
            self.calls.pop(subject, None)

    def fired(self, machine: str, table: CompiledTable, current: str, trigger: str,
              data: Any) -> str | None:
        """The state ``trigger`` takes the machine to from ``current`` with the guard inputs
        ``data`` records (None: no row fires). The escalation machine's guards read the
        confidence only through its risk's rows (:meth:`Policy.cuts`): its answers are
        remembered by the confidence's region."""
        if machine == _MACHINE:
            cuts, confidence = self.cuts.get(data.risk), data.confidence
            if cuts is not None and type(confidence) is float and 0.0 <= confidence <= 1.0:
                at = bisect_left(cuts, confidence)
                key = (current, trigger, data.risk, data.requires_approval, data.approval,
                       data.locked,
                       2 * at + 1 if at < len(cuts) and cuts[at] == confidence else 2 * at)
                got = self.fires.get(key, _UNSEEN)
                if got is _UNSEEN:
                    got = self.fires[key] = self.fire(machine, table, current, trigger, data)
                return got
        return self.fire(machine, table, current, trigger, data)

    def fire(self, machine: str, table: CompiledTable, current: str, trigger: str,
             data: Any) -> str | None:
        option = fire(table, current, trigger, INPUTS[machine](data, self.table))
        return None if option is None else option[0]

    def execution(self, seq: int, e: Any, data: Any) -> None:
        """A run: of a context an allowed decision let run, in the mode of its state."""
        subject, mode = e.subject, data.mode
        decided = self.runnable.pop(subject, None)
        if decided is None:
            self.diverge(seq, subject, "subject", subject, "no allowed decision of this "
                         "context left to run")
            return
        outcomes = self.outcomes  # kept for the task move that cites it, if any
        outcomes[subject] = (data.ok, data.agent)
        if len(outcomes) > 2 * OUTCOMES_KEPT:
            self.forget_oldest(seq)
        machine, state = self.states.get(subject, _INITIAL)
        if e.src != state or machine != _MACHINE:
            self.diverge(seq, subject, "src", e.src, state)
            return
        at, decided_mode = decided[:2]
        expected = _STATE_MODE.get(state)
        if mode != expected:
            self.diverge(seq, subject, "mode", mode, expected)
        elif _RANK[mode] > _RANK[decided_mode]:
            self.diverge(seq, subject, "mode", mode, f"at most {decided_mode}, as decided "
                         f"at seq {at}")
        elif self.same_call(seq, subject, data, decided[2:]):
            self.calls.setdefault(subject, decided[2:])  # the moves after it are held to it
        approved = self.approved_args.pop(subject, None) if self.approved_args else None
        if approved is not None and data.args_digest != approved:
            self.diverge(seq, subject, "args_digest", data.args_digest,
                         f"{approved}, the arguments its ticket's answer approved")

    def refused(self, seq: int, subject: str, agent: Any) -> None:
        """A context's decision refused its call: nothing of it runs (kept, as a run's
        ``ok`` is, for the task move that cites it)."""
        if self.runnable:
            self.runnable.pop(subject, None)
        outcomes = self.outcomes
        outcomes[subject] = (None, agent)
        if len(outcomes) > 2 * OUTCOMES_KEPT:
            self.forget_oldest(seq)

    def forget_oldest(self, seq: int) -> None:
        """Drop what came of the oldest contexts' calls, down to :data:`OUTCOMES_KEPT`
        (at ``seq``, past twice as many): a plain log, whose calls no task move cites,
        keeps no more. A context named by a seq up to ``seq`` may be among them."""
        outcomes = self.outcomes
        for old in list(islice(outcomes, len(outcomes) - OUTCOMES_KEPT)):
            del outcomes[old]
        self.forgot = seq

    def task_move(self, seq: int, subject: str, trigger: str, dst: str, data: Any) -> None:
        """A move of the task machine, held to the task's earlier moves, to its call and to
        the schedule held, if any: a plan of it lists the task, on the move's agent.

        Every move of a task records the ``task`` and the ``max_retries`` of its first
        move, and as ``attempts`` the retries made before it (its ``fail`` moves to
        RETRYING); a ``succeed`` or ``fail``, and a ``cancel`` that cites a context,
        agree with the call of that context (:meth:`ended`). A task that ends
        (COMPLETED or FAILED) is forgotten: no move leaves there.
        """
        if self.schedule_wave:  # a schedule is held: the move is of a task it lists
            agent = self.scheduled.get(data.task)
            if agent is None:
                wave = self.schedule_wave
                self.diverge(seq, subject, "task", data.task, f"task {data.task!r} moved in "
                             f"wave {wave}, which no plan of the wave lists")
            else:
                self.schedule_ran = True
                if data.agent != agent:
                    self.diverge(seq, subject, "agent", data.agent, f"{agent!r}, the agent "
                                 f"the schedule of wave {self.schedule_wave} puts task "
                                 f"{data.task!r} on")
        known = self.tasks.get(subject)
        if known is None:
            budget, task, retries = data.max_retries, data.task, 0
        else:
            budget, task, retries = known
            if data.max_retries != budget:
                self.diverge(seq, subject, "max_retries", data.max_retries, budget)
            elif data.task != task:
                self.diverge(seq, subject, "task", data.task, task)
        if data.attempts != retries:
            self.diverge(seq, subject, "attempts", data.attempts, retries)
        if trigger == "succeed" or trigger == "fail" or data.context is not None:
            self.ended(seq, subject, trigger, data)
        if dst in _TASK_FINALS:
            if known is not None:
                del self.tasks[subject]
        else:
            self.tasks[subject] = (budget, task, retries + 1 if dst == "RETRYING" and
                                   trigger == "fail" else retries)

    def schedule(self, seq: int, e: Any, data: Any) -> None:
        """A scheduler's decision: a ``plan`` (an agent's tasks in a wave) or a
        ``reassign`` (a task moved to another agent during the wave).

        The plans of a wave make one schedule, task id -> agent, that the wave's task
        moves are held to (:meth:`task_move`: a move of a task no plan of it lists is a
        divergence); a task two plans of it list is a divergence. A plan starts another
        schedule (the one held is dropped: waves are barriers, so replay keeps one wave's
        tasks) when its wave differs, when the held schedule's tasks began to move, or
        when its agent was planned in it already (a later run continuing the trail plans
        its waves anew). A reassign is of the wave held, of a task it plans, from the
        agent the task is on.
        """
        subject, wave = e.subject, data.wave
        if e.machine != "scheduler":
            self.diverge(seq, subject, "machine", e.machine, "scheduler")
            return
        if subject != f"wave-{wave}":
            self.diverge(seq, subject, "subject", subject, f"wave-{wave}, the wave of its data")
            return
        scheduled = self.scheduled
        if e.event == "reassign":
            self.reassignments += 1
            task, held = data.task, self.schedule_wave
            at = scheduled.get(task)
            if wave != held:
                self.diverge(seq, subject, "wave", wave, f"{held}, the wave planned last"
                             if held else "a planned wave (no plan came before)")
            elif at is None:
                self.diverge(seq, subject, "task", task, f"a task the schedule of wave "
                             f"{held} plans")
            elif data.from_ != at:
                self.diverge(seq, subject, "from", data.from_, f"{at!r}, the agent task "
                             f"{task!r} is on")
            else:
                scheduled[task] = data.to
                self.schedule_ran = True
            return
        self.plans += 1
        agent, agents = data.agent, self.schedule_agents
        if wave != self.schedule_wave or self.schedule_ran or agent in agents:
            scheduled.clear()
            agents.clear()
            self.schedule_wave, self.schedule_ran = wave, False
        agents[agent] = seq
        for task in data.tasks:
            other = scheduled.setdefault(task, agent)
            if other != agent:
                self.diverge(seq, subject, "tasks", task, f"a task no other plan of wave "
                             f"{wave} lists (the plan at seq {agents.get(other)} puts it on "
                             f"{other!r})")
                return

    def ended(self, seq: int, subject: str, trigger: str, data: Any) -> None:
        """A task move that ends an attempt: the context it cites is one whose call
        has not ended another move, of the move's agent, and its outcome allows the
        move. ``succeed``: a run that was ok. ``fail`` and ``cancel``: a run that was
        not ok (an irreversible one that timed out is cancelled, not retried), or a
        call refused, or decided and not run: a call that succeeded, even past the
        task's timeout, always ends its task COMPLETED. A context replay may
        have dropped (:meth:`forget_oldest`) is taken as it is recorded: unverifiable."""
        ctx = data.context
        if ctx is None or trigger not in ("succeed", "fail", "cancel"):
            self.diverge(seq, subject, "context", ctx, f"the context of the attempt a "
                         f"{trigger} ends" if ctx is None else f"none on a {trigger}")
            return
        outcome = self.outcomes.pop(ctx, None)
        if outcome is None:
            decided = self.runnable.get(ctx)
            if decided is not None:  # decided, allowed, not run
                outcome = (None, decided[2])
            elif not self.dropped(ctx):
                self.diverge(seq, subject, "context", ctx, "a context decided before, "
                             "whose call no other task move ended")
                return
            else:
                return
        ok, agent = outcome
        if agent != data.agent:
            self.diverge(seq, subject, "agent", data.agent, f"{agent!r}, the agent of "
                         f"the call of {ctx}")
        elif trigger == "succeed" and ok is not True:
            self.diverge(seq, subject, "event", trigger, f"fail or cancel: {ctx} "
                         f"{'did not run' if ok is None else 'ran and was not ok'}")
        elif trigger != "succeed" and ok is True:  # a call that succeeded never fails a task
            self.diverge(seq, subject, "event", trigger, f"succeed: {ctx} ran and was ok")

    def dropped(self, ctx: str) -> bool:
        """Whether replay may have dropped what came of context ``ctx``
        (:meth:`forget_oldest`)."""
        number = ctx[4:]  # ctx-<seq>; a number of 20 digits is past any seq replay saw
        return ctx.startswith("ctx-") and 0 < len(number) <= 19 and number.isascii() and \
            number.isdigit() and int(number) <= self.forgot

    def same_call(self, seq: int, subject: str, data: Any, call: tuple[Any, ...]) -> bool:
        """Whether an event of a context records the call's inputs (``call``: agent, tool,
        risk, requires_approval, confidence, rules) as its first event did; if not, the
        first that differs is the divergence."""
        if (data.agent, data.tool, data.risk, data.requires_approval, data.confidence,
                data.rules) == call:
            return True  # equal values, and a type apart only for a confidence (1 is 1.0)
        for field, decided_value in zip(_CALL_INPUTS, call, strict=True):
            value = getattr(data, field)
            if value != decided_value or (type(value) is not type(decided_value)
                                          and field != "confidence"):  # 1 is 1.0 here
                self.diverge(seq, subject, field, value, decided_value)
                return False
        return True

    def decision(self, seq: int, subject: str, data: Any) -> None:
        self.decisions += 1
        digest = data.rules
        if digest == self.digest:
            what_if = False
            if not self.replayed_digest_seen:
                self.replayed_digest_seen = True
                self.digests.setdefault(digest, None)
        else:
            self.digests.setdefault(digest, None)
            what_if = self.what_if_of(seq, subject, digest)
        mode, allowed = data.mode, data.allowed
        recorded_mode = mode if allowed else "REFUSED"
        runnable = self.runnable
        if data.rule in REFUSAL_RULES:
            if "ctx-" <= subject < "ctx.":
                self.refused(seq, subject, data.agent)
            elif runnable:
                runnable.pop(subject, None)
            if allowed or mode != "MOCK":
                self.diverge(seq, subject, "allowed", allowed, False)
            return
        agent, tool = data.agent, data.tool
        if type(agent) is not str or not agent or type(tool) is not str:
            self.odd_inputs(seq, subject, agent, tool)
        locked = data.locked
        if self.locked and not locked:
            self.diverge(seq, subject, "locked", locked, True)
        via = data.approved_by
        if via is not None and via.startswith("grant:"):
            self.granted(seq, subject, data, via)
        elif via is not None and via.startswith("ticket:"):
            self.ticketed(seq, subject, data, via)
        # A call's context (ctx-<seq>) runs once, at most in the mode decided, when its
        # decision ends where the context's moves left it; a context without moves is
        # named by the seq of its decision. An agent's decision (Engine.decide) runs nothing.
        if "ctx-" <= subject < "ctx.":  # subject.startswith("ctx-"), at a third of its cost
            at = self.states.get(subject)
            if at is not None and (call := self.calls.get(subject)) is not None:
                self.same_call(seq, subject, data, call)  # its moves came first
            if allowed and (at == (_MACHINE, data.state) if at is not None else
                            data.state == _START and subject == f"ctx-{seq}"):
                runnable[subject] = (seq, mode, agent, tool, data.risk,
                                     data.requires_approval, data.confidence, data.rules)
            elif not allowed:
                self.refused(seq, subject, agent)
            elif runnable:
                runnable.pop(subject, None)
        try:
            got = self.redecide(data.risk, data.requires_approval is True, data.confidence,
                                data.approval, locked)
        except (KeyError, ValueError, TypeError, ArithmeticError) as exc:
            self.diverge(seq, subject, "inputs", "a decidable record", f"{exc!r}")
            return
        if what_if:
            if got[0] != recorded_mode:
                self.changes.append(Change(seq, data.agent, data.tool, data.risk,
                                           data.confidence, _mode(recorded_mode),
                                           _mode(got[0]), data.rule, got[1]))
            home = self.home
            if home is not None and digest == home.digest:  # decided by a table we hold
                try:
                    got = home.redecide(data.risk, data.requires_approval is True,
                                        data.confidence, data.approval, locked)
                except (KeyError, ValueError, TypeError, ArithmeticError) as exc:
                    self.diverge(seq, subject, "inputs", "a decidable record", f"{exc!r}")
                    return
                if got != (recorded_mode, data.rule, data.state):
                    self.differs(seq, subject, data, got)
            return
        if got != (recorded_mode, data.rule, data.state):
            self.differs(seq, subject, data, got)

    def redecide(self, risk: str, requires_approval: bool, confidence: Any,
                 approval: bool | None, locked: bool) -> tuple[str, str, str]:
        """The recorded inputs decided again: the mode (``REFUSED`` when not allowed), the
        rule and the state. Raises what :meth:`Policy.reevaluate` raises for inputs no
        rule takes."""
        got, got_mode, state = self.reevaluate(risk, requires_approval, confidence,
                                               approval, locked)
        return (got_mode if got.allowed else "REFUSED"), got.rule, state

    def differs(self, seq: int, subject: str, data: Any, got: tuple[str, str, str]) -> None:
        """A decision replay decides otherwise: its first field that differs."""
        recorded_mode = data.mode if data.allowed else "REFUSED"
        if got[0] != recorded_mode:
            self.diverge(seq, subject, "mode", recorded_mode, got[0])
        elif got[1] != data.rule:
            self.diverge(seq, subject, "rule", data.rule, got[1])
        elif got[2] != data.state:
            self.diverge(seq, subject, "state", data.state, got[2])

    def odd_inputs(self, seq: int, subject: str, agent: Any, tool: Any) -> None:
        if type(agent) is not str or not agent:
            self.diverge(seq, subject, "agent", agent, "a non-empty string (only a refusal "
                         "records another agent)")
        else:
            self.diverge(seq, subject, "tool", tool, "a string (only a refusal records "
                         "another tool)")

    def call_event(self, seq: int, e: Any, data: Any) -> None:
        """A ticket's or an idempotency key's event: it follows the rules of
        :class:`CallBook` (a key claimed once, so its call runs once; a ticket answered
        while pending and before it expires, resumed once, by its own call), and a
        ticket opens on a call waiting for approval, as its moves left it."""
        kind, subject = e.kind, e.subject
        record = as_record(kind, e.event, data)
        if record is None:
            self.diverge(seq, subject, "data", f"a {kind} {e.event} record", "does not fit")
            return
        if kind == "ticket" and e.event == "open":
            at = self.states.get(record.context)
            if at != (_MACHINE, "AWAITING_APPROVAL"):
                self.diverge(seq, subject, "context", f"{record.context} awaiting approval",
                             "not awaiting approval" if at is None else at[1])
                return
            call = self.calls.get(record.context)
            if call is not None and (record.agent, record.tool) != call[:2]:
                self.diverge(seq, subject, "tool", f"{call[0]}/{call[1]}",
                             f"{record.agent}/{record.tool}")
                return
        if e.event == "done":  # the outcome a repeat returns is the one its run recorded
            ran = self.outcomes.get(record.context)
            if ran is not None and ran[0] is not None and ran[0] is not record.ok:
                self.diverge(seq, subject, "ok", record.ok, ran[0])
                return
        problem = self.book.note(e.ts, kind, e.event, subject, record)
        if problem is not None:
            self.diverge(seq, subject, kind, "a consistent " + kind, problem)

    def ticketed(self, seq: int, subject: str, data: Any, via: str) -> None:
        """A decision a ticket's answer made: the ticket of this call, taken to run
        (``resume``), answered as the decision says, and used by one decision."""
        tid = via[len("ticket:"):]
        state = self.book.tickets.get(tid)
        if state is None or state.status != "resumed" or state.opened.context != subject:
            self.diverge(seq, subject, "approved_by", via,
                         f"ticket {tid} is not this call's, resumed")
        elif state.used:
            self.diverge(seq, subject, "approved_by", via, f"ticket {tid} used already")
        elif data.approval is not (state.verdict == "approve"):
            self.diverge(seq, subject, "approval", data.approval, state.verdict == "approve")
        else:
            state.used = True
            answer = state.answer
            if answer is not None and answer.args_digest is not None:
                self.approved_args[subject] = answer.args_digest

    def granted(self, seq: int, subject: str, data: Any, via: str) -> None:
        """A decision approved by a grant: usable then, and scoped to its agent and tool."""
        gid = via[len("grant:"):]
        at = data.approved_at
        why = self.grants.check(gid, self.last_ts if at is None else at)
        grant = self.grants.get(gid)
        if why is None and grant is not None and (
                grant.agent != data.agent or grant.tool != data.tool):
            why = f"it is scoped to agent {grant.agent!r} and tool {grant.tool!r}"
        if why is not None:
            self.diverge(seq, subject, "approved_by", via, f"grant {gid} unusable: {why}")
        elif data.approval is not True:
            self.diverge(seq, subject, "approval", data.approval, True)
        else:
            self.grants.use(gid)


def replay(log: str | os.PathLike[str] | AuditLog | list[str] | list[bytes], *,
           key: bytes | None = None,
           until: int | None = None, table: EscalationTable | None = None,
           check_anchor: bool = True, parallel: bool | None = None) -> ReplayReport:
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
        The escalation table to re-decide with. Decisions made with another
        table are then compared as a what-if (listed in ``changes``). Without
        it, buddy's shipped table re-decides, and a decision made with another
        table is a divergence (field ``rules``): pass the table it was made with.
    check_anchor:
        Verify a file log against its head anchor (the default; a missing
        anchor is then an error). False verifies the chain alone, which cannot
        tell a log cut short at its end.
    parallel:
        Verify a file log's chain in a second process while this one replays
        it (:mod:`._verifier`: it is given the very bytes replayed). None (the
        default) does so for a log of 32 MiB or more on a machine of more than
        one CPU; False never; True for any file log. The report is the same.

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
    if parallel is not None and parallel is not True and parallel is not False:
        raise TypeError(f"parallel must be True, False or None (got {parallel!r})")
    anchor: Anchor | None = None
    path = log.path if isinstance(log, AuditLog) else \
        None if isinstance(log, list) else Path(log)
    if path is not None and check_anchor:
        # Read before the lines: a writer appends its line before it moves the anchor.
        anchor = read_anchor(path)
    reader = None
    batches: Iterator[list[bytes]]
    torn: str | None = None
    if isinstance(log, AuditLog) and log.path is None:
        lines = log.raw_lines()
        if lines and not lines[0].startswith(b'{"seq":1,'):
            raise AuditError(f"<memory>: the memory log keeps its newest {log.keep} events "
                             f"and dropped {log.dropped}: replay needs a log from its first "
                             "event (a file log, or AuditLog.memory(keep=None))")
        batches, source = iter([lines]), "<memory>"
    elif isinstance(log, list):
        batches = iter([[line.encode("utf-8") if isinstance(line, str) else line
                         for line in log]])
        source = "<lines>"
    else:
        assert path is not None
        reader, source = LogReader(path), str(path)
        batches = reader.batches()
    streamed = None
    if reader is not None and (anchor is not None or not check_anchor) and \
            background_pays(_size(reader.path), parallel=parallel):
        streamed = _beside(reader, source, key, anchor, table, until)
        if streamed is None:  # the second process gave no verdict: all of it here
            reader = LogReader(reader.path)
            batches = reader.batches()
    if streamed is not None:
        r, chain, torn = streamed
    else:
        with reader or contextlib.nullcontext():
            if path is not None and check_anchor and anchor is None:
                drain(batches)  # a line that is not UTF-8 is reported first
                raise AuditChainBroken(str(path), None, missing_anchor(
                    path, "replay with check_anchor=False (buddy replay --no-anchor) to "
                    "verify the chain without it"))
            r, chain = _run(batches, ChainCheck(Chain(key), source, anchor=anchor), table,
                            until)
        torn = None if reader is None else reader.torn
    given = table is not None
    table = r.table
    # The chain holds seq n on line n: lines 1..until were replayed, the first the header.
    replayed = chain.count if until is None else max(0, min(until, chain.count))
    return ReplayReport(
        source=source, events=chain.count, replayed=replayed,
        last_seq=min(chain.last_seq, until) if until is not None else chain.last_seq,
        chain=chain.chain, decisions=r.decisions,
        torn_tail=None if isinstance(log, AuditLog) else torn,
        divergence=r.divergence, states=dict(r.states), locked=r.locked,
        grants=tuple(g.id for g in r.grants.active(r.last_ts)), until=until,
        rules_recorded=tuple(r.digests), rules_replayed=table.digest,
        changes=tuple(sorted(r.changes, key=lambda c: (c.direction != "loosening", c.seq))),
        rules_given=given, plans=r.plans, reassignments=r.reassignments,
    )


def _run(batches: Iterator[list[bytes]], check: ChainCheck, table: EscalationTable | None,
         until: int | None) -> tuple[_Replayer, ChainReport]:
    """Verify and replay the log, batch by batch; what replay found, and the chain.

    A broken chain is reported before an event that does not fit, wherever each
    is: the first line that does not fit ends the replay, not the verification.
    """
    given = table is not None
    r = _Replayer(table or EscalationTable.default(), check.source, check.chain.name,
                  given=given)
    stop = None if until is None else max(0, until)
    refused: AuditFormatError | None = None
    for batch in batches:
        seq = check.seq
        try:
            check.feed(batch)
        except AuditChainBroken:
            drain(batches)  # a line further on that is not UTF-8 is reported first
            raise
        if refused is None and (stop is None or seq < stop):
            try:
                r.lines(batch if stop is None or seq + len(batch) <= stop else
                        batch[:stop - seq], seq)
            except AuditFormatError as exc:
                refused = exc
    chain = check.end()
    if refused is not None:
        raise refused
    return r, chain


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0  # the reader opened it: it is read here, and says what fails


def _beside(reader: LogReader, source: str, key: bytes | None, anchor: Anchor | None,
            table: EscalationTable | None, until: int | None,
            ) -> tuple[_Replayer, ChainReport, str | None] | None:
    """Replay what ``reader`` reads while a second process verifies the very same bytes
    (:class:`BackgroundVerify`, fed each chunk before it is decoded here): what replay
    found, the chain and the torn tail; None when that process gave no verdict (the
    caller then verifies and replays in this process).

    Until the verdict the bytes are unverified: what the replayer makes of them counts
    only once the chain holds. A broken chain is raised first, as in one process, and
    what the replayer raised (the first line that does not fit) after it.
    """
    r = _Replayer(table or EscalationTable.default(), source, Chain(key).name,
                  given=table is not None)
    stop = None if until is None else max(0, until)
    seq, tail = 0, b""
    failed: Exception | None = None
    with BackgroundVerify(source, key=key, anchor=anchor) as worker, reader:
        for chunk in reader.chunks():
            if not worker.feed(chunk):
                break  # gone: result() raises its error, or gives no verdict
            data = tail + chunk if tail else chunk
            end = data.rfind(b"\n") + 1
            if not end:  # a line longer than a chunk: read on
                tail = data
                continue
            whole = memoryview(data)[:end - 1]
            if failed is None and stop is None:
                try:
                    seq += r.batch(whole, None, seq)
                except _TwoOnALine:
                    return None  # replayed values that are no lines: replay here
                except Exception as exc:  # noqa: BLE001 - judged once the chain's verdict is in
                    failed, seq = exc, seq + bytes(whole).count(b"\n") + 1
            else:
                lines = bytes(whole).split(b"\n")
                if failed is None and stop is not None and seq < stop:
                    try:
                        r.lines(lines[:stop - seq], seq)
                    except Exception as exc:  # noqa: BLE001 - as above
                        failed = exc
                seq += len(lines)
            tail = data[end:]
        verdict = worker.result()
    if verdict is None or verdict[0].count != seq:
        return None  # no verdict, or one on other lines than these: verify here
    if failed is not None:
        raise failed
    return r, verdict[0], verdict[1]
