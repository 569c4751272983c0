"""Calls that outlive the process that made them: approval tickets and idempotency keys.

A call that waits for a person can wait as a :class:`Ticket` instead of asking
the approver callback: ``engine.prepare(..., wait=True)`` walks the call up to
``AWAITING_APPROVAL``, records a ``ticket`` ``open`` event, and returns. Anyone
holding the ticket's id, in this process or another writing the same log, then
answers it (``engine.approve`` / ``engine.deny``: ``ticket`` events naming who
answered, and the edited arguments' digest), and ``engine.resume`` runs the call
once: the ``resume`` event is the one claim to run it, written holding the log,
so two resumers never both run it; its outcome is the ``done`` event, which a
repeat returns without running anything.

An idempotency key (``execute(..., idempotency_key=...)``) is claimed by an
``idempotency`` ``claim`` event before its call is decided; a later call with the
key, here or in a process that opened the log later, records a ``duplicate`` and
returns the first call's result (from memory, or the ``done`` event's record of
it) -- never running the tool again. A key whose call has not finished (running,
or its process died) answers that, and runs nothing.

The log is the source of truth: :class:`CallBook` is what its ``ticket`` and
``idempotency`` events say, kept by each writer from its own events and those it
reads from others (:meth:`buddy.engine.core._audit.AuditLog.hold`), and by replay,
which holds the events to the same rules. Arguments must outlive the process too,
unmasked (they run): :class:`ArgStore` keeps them beside a file log (``<log>.tickets/``,
one file per ticket, written atomically, readable by its owner only), and the
ticket's events hold their digest, which a resume checks.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import orjson

from buddy.engine.core._approvals import Approval, Verdict
from buddy.engine.core._decision import Decision
from buddy.engine.core._events import (
    CallDoneData,
    KeyClaimData,
    KeyReleaseData,
    TicketAnswerData,
    TicketOpenData,
    TicketResumeData,
    text_problem,
)
from buddy.machines.escalation import EscalationInputs, ExecutionState
from buddy.rules.base._canonical import args_digest
from buddy.rules.base._files import NotReadable, read_regular, write_atomic
from buddy.rules.base._masking import described, mask_text, shown
from buddy.rules.base._values import ExecutionMode, RiskLevel
from buddy.rules.base.errors import InputError

if TYPE_CHECKING:
    from buddy.engine.core._controller import Controller, ExecutionResult, PendingCall

__all__ = ["ArgStore", "CallBook", "Calls", "Ticket", "TicketError", "TicketPending"]

S = ExecutionState
#: The largest kept arguments file a resume reads (a larger one is not run).
MAX_ARGS_BYTES = 64 * 1024 * 1024
#: The ticket statuses :meth:`Calls.tickets` filters by.
STATUSES = ("pending", "approved", "denied", "expired", "resumed")
#: Results of keyed calls and tickets held in memory (newest); older ones are rebuilt
#: from their ``done`` events.
RESULTS_MEMO = 4_096
_WAITING = S.AWAITING_APPROVAL.name


class TicketError(InputError):
    """A ticket that cannot be answered or resumed as asked (unknown, answered, expired)."""


class TicketPending(TicketError):
    """The ticket's call waits for a person: approve or deny it first."""


@attrs.frozen
class Ticket:
    """A call waiting for a person, as its events say; JSON-safe (:meth:`to_dict`).

    ``status``: ``pending`` (no answer yet), ``approved``, ``denied``, ``expired``
    (unanswered, or unrun, at ``expires_at`` on the engine's clock) or ``resumed``
    (taken to run or close; ``answer`` says which answer it had).
    """

    id: str
    context: str
    agent: str
    tool: str
    args_digest: str
    confidence: float
    risk: str
    mode: str                       # the mode it would run in without an answer
    rule: str
    created_at: float
    expires_at: float | None
    status: str
    key: str | None = None
    answer: str | None = None       # "approve" / "deny"
    by: str | None = None
    answer_reason: str = ""
    edited: bool = False
    #: the arguments asked for, secrets masked (what a person approving should see)
    args: Any = None

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Ticket:
        """A ticket from :meth:`to_dict`'s dict (its status as it was then: ask the
        engine, ``engine.ticket(id)``, for what it is now). Every field is checked:
        :class:`TicketError` names the first that is wrong."""
        if not isinstance(data, Mapping):
            raise TicketError(f"a ticket must be a mapping (got {shown(data)})")
        names = {f.name for f in attrs.fields(cls)}
        unknown = sorted(str(k) for k in data if k not in names)
        if unknown:
            raise TicketError(f"a ticket has no field {', '.join(unknown)}")
        try:
            ticket = cls(**data)
        except TypeError as exc:
            raise TicketError(f"not a ticket: {exc}") from None
        problem = _ticket_problem(ticket)
        if problem is not None:
            raise TicketError(f"not a ticket: {problem}")
        return ticket


_TEXT_FIELDS = ("id", "context", "agent", "tool", "args_digest", "risk", "mode", "rule",
                "status")


def _ticket_problem(t: Ticket) -> str | None:
    """The first field of ``t`` that no ticket of buddy's could hold, or None."""
    for name in _TEXT_FIELDS:
        if type(getattr(t, name)) is not str:
            return f"{name} must be a string (got {shown(getattr(t, name))})"
    if not t.id.startswith("ticket-") or not t.id[7:].isdigit():
        return f"id must be ticket-<seq> (got {shown(t.id)})"
    if not t.context.startswith("ctx-") or not t.context[4:].isdigit():
        return f"context must be ctx-<seq> (got {shown(t.context)})"
    if t.status not in STATUSES:
        return f"status must be one of {', '.join(STATUSES)} (got {shown(t.status)})"
    if t.mode not in {m.value for m in ExecutionMode}:
        return f"mode must be an execution mode (got {shown(t.mode)})"
    if t.risk not in {r.value for r in RiskLevel}:
        return f"risk must be a risk level (got {shown(t.risk)})"
    for name in ("confidence", "created_at", "expires_at"):
        value = getattr(t, name)
        if value is None and name == "expires_at":
            continue
        if type(value) not in (int, float) or value - value != 0:
            return f"{name} must be a finite number (got {shown(value)})"
    if not 0.0 <= t.confidence <= 1.0:
        return f"confidence must be in [0, 1] (got {shown(t.confidence)})"
    if t.answer not in (None, "approve", "deny"):
        return f"answer must be approve, deny or None (got {shown(t.answer)})"
    for name in ("key", "by"):
        if getattr(t, name) is not None and type(getattr(t, name)) is not str:
            return f"{name} must be a string or None (got {shown(getattr(t, name))})"
    if type(t.answer_reason) is not str or type(t.edited) is not bool:
        return "answer_reason must be a string and edited a bool"
    return None


@attrs.define
class _KeyState:
    agent: Any
    tool: Any
    args_digest: str
    ticket: str | None = None
    done: CallDoneData | None = None
    #: the digest of the arguments unmasked, for a claim this process made (never
    #: recorded): repeats here are told apart by a masked field too
    raw: str | None = None


@attrs.define
class _TicketState:
    opened: TicketOpenData
    created_at: float
    status: str = "pending"
    answer: TicketAnswerData | None = None
    verdict: str | None = None
    answered_at: float | None = None
    done: CallDoneData | None = None
    used: bool = False              # replay: a decision used its answer

    def ticket(self, ticket_id: str, now: float | None = None) -> Ticket:
        """The ticket as its events say, and, at ``now``, ``expired`` once its time is up
        while it is pending or approved but not resumed (before any ``expire`` event)."""
        o, a = self.opened, self.answer
        status = self.status
        if now is not None and status in ("pending", "approved") and \
                o.expires_at is not None and now >= o.expires_at:
            status = "expired"
        return Ticket(ticket_id, o.context, o.agent, o.tool, o.args_digest, o.confidence,
                      o.risk.value, o.mode.value, o.rule, self.created_at, o.expires_at,
                      status, o.key, self.verdict, None if a is None else a.by,
                      "" if a is None else a.reason, False if a is None else a.edited,
                      o.args)


class CallBook:
    """What a log's ``ticket`` and ``idempotency`` events say: each key's first call and
    its outcome, each ticket's state. Not thread-safe: callers hold the log's lock."""

    def __init__(self) -> None:
        self.keys: dict[str, _KeyState] = {}
        self.tickets: dict[str, _TicketState] = {}

    def note(self, ts: float, kind: str, event: str, subject: str, data: Any) -> str | None:
        """Take one event in; what is wrong with it (it breaks the rules above), or None."""
        if kind == "idempotency":
            return self._key(event, subject, data)
        return self._ticket(ts, event, subject, data)

    def _key(self, event: str, key: str, data: Any) -> str | None:
        state = self.keys.get(key)
        if event == "claim":
            if state is not None:
                return f"key {shown(key)} is claimed already: its call would run twice"
            self.keys[key] = _KeyState(data.agent, data.tool, data.args_digest)
            return None
        if state is None:
            return f"no claim of key {shown(key)} before its {event}"
        if event == "done":
            if state.done is not None:
                return f"key {shown(key)} is done already"
            state.done = data
        elif event == "release":
            if state.done is not None or state.ticket is not None:
                return f"key {shown(key)} ran (or waits on a ticket): it cannot be released"
            del self.keys[key]
        return None

    def _ticket(self, ts: float, event: str, ticket_id: str, data: Any) -> str | None:
        state = self.tickets.get(ticket_id)
        if event == "open":
            if state is not None:
                return f"ticket {ticket_id} is open already"
            if data.key is not None:
                key = self.keys.get(data.key)
                if key is None or key.ticket is not None:
                    return f"ticket {ticket_id}: key {shown(data.key)} is not claimed by it"
                key.ticket = ticket_id
            self.tickets[ticket_id] = _TicketState(data, ts)
            return None
        if state is None:
            return f"no ticket {ticket_id} open before its {event}"
        expires = state.opened.expires_at
        if event in ("approve", "deny"):
            if state.status != "pending":
                return f"ticket {ticket_id} is {state.status}, not pending: no answer now"
            if expires is not None and ts >= expires:
                return f"ticket {ticket_id} expired at {expires!r}, before its answer"
            state.status = "approved" if event == "approve" else "denied"
            state.verdict, state.answer, state.answered_at = event, data, ts
        elif event == "resume":
            if state.status not in ("approved", "denied"):
                return f"ticket {ticket_id} is {state.status}: it cannot be resumed"
            if data.context != state.opened.context:
                return f"ticket {ticket_id} resumes {data.context}, not its call " \
                       f"{state.opened.context}"
            state.status = "resumed"
        elif event == "expire":
            if state.status not in ("pending", "approved"):
                return f"ticket {ticket_id} is {state.status}: it cannot expire"
            if expires is None or ts < expires:
                return f"ticket {ticket_id} expires at {expires!r}, not yet"
            state.status = "expired"
        elif event == "done":
            if state.status not in ("resumed", "expired") or state.done is not None:
                return f"ticket {ticket_id} is {state.status}: no outcome now"
            state.done = data
        return None


class ArgStore:
    """A ticket's arguments, unmasked (they run), in memory or as files beside a log."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory
        self._held: dict[tuple[str, str], dict[str, Any]] = {}

    def put(self, ticket_id: str, which: str, args: dict[str, Any]) -> None:
        """Keep ``args`` (``which``: ``asked`` or ``approved``); a file store writes them
        atomically and refuses arguments JSON does not hold exactly."""
        if self.directory is None:
            self._held[(ticket_id, which)] = args
            return
        problem = _json_problem(args)
        if problem is not None:
            raise TicketError(f"a ticket's arguments must be JSON that comes back exactly "
                              f"(they are kept beside the log until the call runs): "
                              f"{problem}")
        body = orjson.dumps(args)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(self.directory / f"{ticket_id}.{which}.json", body, private=True)

    def drop(self, ticket_id: str) -> None:
        """Forget a ticket's arguments once its call is done (they held secrets)."""
        for which in ("asked", "approved"):
            self._held.pop((ticket_id, which), None)
            if self.directory is not None:
                with contextlib.suppress(OSError):
                    (self.directory / f"{ticket_id}.{which}.json").unlink()

    def get(self, ticket_id: str, which: str) -> dict[str, Any] | None:
        if self.directory is None:
            return self._held.get((ticket_id, which))
        try:
            loaded = orjson.loads(read_regular(self.directory / f"{ticket_id}.{which}.json",
                                               MAX_ARGS_BYTES))
        except (OSError, NotReadable, orjson.JSONDecodeError):
            return None  # missing, no regular file, too large, not JSON: not run
        return loaded if type(loaded) is dict else None


_INT64 = 2 ** 63


def _json_problem(value: Any) -> str | None:
    """What keeps ``value`` from coming back exactly from JSON, or None: only dicts with
    string keys, lists, text (no lone surrogate), bools, None, integers of 64 bits and
    finite floats do (a tuple comes back a list, NaN as null, a date as text)."""
    stack: list[tuple[str, Any]] = [("args", value)]
    seen = 0
    while stack:
        where, v = stack.pop()
        seen += 1
        if seen > 1_000_000:
            return "too many values"
        t = type(v)
        if t is dict:
            for k, item in v.items():
                if type(k) is not str:
                    return f"{where}: key {shown(k)} is not a string"
                stack.append((f"{where}.{k}", item))
        elif t is list:
            stack.extend((f"{where}[{i}]", item) for i, item in enumerate(v))
        elif t is str:
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return f"{where}: text holding a lone surrogate"
        elif t is float:
            if v - v != 0.0:
                return f"{where}: {v!r} is not a finite number"
        elif t is int:
            if not -_INT64 <= v < 2 * _INT64:
                return f"{where}: an integer beyond 64 bits"
        elif v is not None and t is not bool:
            return f"{where}: a {t.__name__} is no JSON value"
    try:
        size = len(orjson.dumps(value))
    except (TypeError, orjson.JSONEncodeError):  # nested deeper than JSON encoders go
        return "nested too deep"
    if size > MAX_ARGS_BYTES:
        return f"larger than {MAX_ARGS_BYTES} bytes"
    return None


def text_problem_of(value: object) -> str | None:
    """Why ``value`` cannot be a name a ticket records (who answered), or None."""
    if type(value) is not str or not value:
        return f"must be printable text (got {shown(value)})"
    problem = text_problem(value)
    if problem is None:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            problem = "must be printable text: it holds a lone surrogate"
    return None if problem is None else f"{problem} (got {shown(value)})"


def key_problem(key: object) -> str | None:
    """Why ``key`` cannot be an idempotency key (printable text of 1 to 256
    characters), or None."""
    if type(key) is not str or not key:
        return f"must be a non-empty string (got {shown(key)})"
    return text_problem_of(key)


class Calls:
    """The engine's tickets and idempotency keys (see the module docstring)."""

    def __init__(self, controller: Controller, store: ArgStore) -> None:
        self.controller = controller
        self.gate = controller.gate
        self.store = store
        self.book: CallBook = controller.gate.audit.book
        self._results: OrderedDict[str, ExecutionResult] = OrderedDict()

    # -- writing, with the book ----------------------------------------------
    def _write(self, kind: str, event: str, subject: str, data: Any) -> int:
        """Append one event holding the log (the caller holds :meth:`Gate._turn`), and
        take it into the book."""
        audit = self.gate.audit
        payload = attrs.asdict(data, recurse=False)  # enums as their values (orjson)
        machine = "escalation" if kind == "idempotency" else "approval"
        now = self.gate.now()
        seq = audit.append_locked(kind, machine, subject, event, None, None, payload, now)
        problem = self.book.note(now, kind, event, subject, data)
        assert problem is None, problem  # checked before writing
        return seq

    def _remember(self, handle: str, result: ExecutionResult) -> None:
        results = self._results
        results[handle] = result
        if len(results) > RESULTS_MEMO:
            results.popitem(last=False)

    # -- idempotency ---------------------------------------------------------
    def claim(self, key: str, agent: Any, tool: Any,
              args: Mapping[str, Any] | None) -> ExecutionResult | PendingCall | None:
        """Claim ``key`` for a call (None: it is this call's), or the answer of a repeat:
        the first call's result, its ticket's pending call, or a result saying it has not
        finished. A repeat is recorded (``duplicate``) and runs nothing."""
        problem = key_problem(key)
        if problem is not None:
            raise InputError(f"idempotency_key {problem}")
        given = dict(args) if isinstance(args, Mapping) else args
        digest, raw = self.gate.audit.args_digest(given), args_digest(given)
        with self.gate._turn():
            state = self.book.keys.get(key)
            if state is None:
                self._write("idempotency", "claim", key, KeyClaimData(
                    _plain(agent), _plain(tool), digest))
                self.book.keys[key].raw = raw
                return None
            of = state.done.context if state.done is not None else None
            same = (state.args_digest == digest if state.raw is None else state.raw == raw) \
                and state.agent == agent and state.tool == tool
            self._write("idempotency", "duplicate", key, KeyClaimData(
                _plain(agent), _plain(tool), digest, of, same))
        if not same:
            return self._not_run(agent, tool, args, of, f"idempotency key {shown(key)} was "
                                 f"used by another call ({shown(state.tool)} of "
                                 f"{shown(state.agent)}, other arguments): not run")
        if state.done is not None:
            return self._results.get(f"key:{key}") or self._rebuilt(state.done, agent, tool)
        if state.ticket is not None:
            return self._ticket_call(state.ticket)
        return self._not_run(agent, tool, args, None, f"a call with idempotency key "
                             f"{shown(key)} has not finished (running, or its process "
                             "stopped): it is never run twice")

    def release(self, key: str, why: str) -> None:
        """Give ``key`` back: its call stopped before anything ran (an approver raised a
        framework's pause signal), so a later call with the key may run it."""
        with self.gate._turn():
            state = self.book.keys.get(key)
            if state is None or state.done is not None or state.ticket is not None:
                return
            self._write("idempotency", "release", key, KeyReleaseData(mask_text(why)))

    def finish_interrupted(self, key: str, exc: BaseException) -> None:
        """Close ``key`` on the result recorded for a call an interrupt or a cancellation
        stopped mid-run (a repeat returns it, and runs nothing); give it back when the
        call stopped before its handler started (nothing ran); else (it started, and its
        record was cut short) keep it unfinished: it is never run twice."""
        from buddy.engine.core._controller import interrupted, ran
        result = interrupted(exc)
        if result is not None:
            self.finish(key, result)
        elif not ran(exc):  # stopped before its handler started: nothing ran, the key is free
            self.release(key, f"stopped before it ran: {type(exc).__name__}")

    def finish(self, key: str, result: ExecutionResult) -> None:
        """Record the outcome of the call that claimed ``key``."""
        with self.gate._turn():
            state = self.book.keys.get(key)
            if state is None or state.done is not None or state.ticket is not None:
                return
            self._write("idempotency", "done", key, self._done_data(result))
        self._remember(f"key:{key}", result)

    # -- tickets -------------------------------------------------------------
    def open(self, ctx: Any, agent: str, tool: str, args: dict[str, Any],
             entry: Any, inputs: EscalationInputs, decision: Decision,
             expires_in: float | None, key: str | None, source: str | None = None) -> Ticket:
        """Record a call waiting in ``AWAITING_APPROVAL`` as a ticket (its arguments kept)."""
        gate = self.gate
        audit = gate.audit
        with gate._turn():
            now = gate.now()
            expires_at = None
            if expires_in is not None:
                expires_at = now + float(expires_in)
            ticket_id = f"ticket-{audit.last_seq + 1}"  # the log is held: its seq is next
            self.store.put(ticket_id, "asked", args)
            data = TicketOpenData(
                ctx.id, agent, tool, RiskLevel(entry.risk), entry.requires_approval,
                inputs.confidence, self.controller._rules, audit.args_digest(args),
                decision.mode, decision.rule, audit.masker.mask(args), expires_at, key, source)
            self._write("ticket", "open", ticket_id, data)
            return self.book.tickets[ticket_id].ticket(ticket_id, now)

    def ticket(self, ticket_id: str) -> Ticket:
        gate = self.gate
        with gate._turn():
            return self._state(ticket_id).ticket(ticket_id, gate.now())

    def tickets(self, status: str | None = "pending") -> list[Ticket]:
        if status == "all":
            status = None
        if status is not None and status not in STATUSES:
            raise TicketError(f"status must be one of {', '.join(STATUSES)}, all or None "
                              f"(got {shown(status)})")
        gate = self.gate
        with gate._turn():
            now = gate.now()
            every = (s.ticket(t, now) for t, s in self.book.tickets.items())
            return [t for t in every if status is None or t.status == status]

    def _state(self, ticket_id: object) -> _TicketState:
        state = self.book.tickets.get(ticket_id) if type(ticket_id) is str else None
        if state is None:
            raise TicketError(f"no ticket {shown(ticket_id)} in this log")
        return state

    def answer(self, ticket_id: str, verdict: Verdict, by: object, reason: object,
               args: Mapping[str, Any] | None) -> Ticket:
        """Approve (with edited ``args``) or deny a pending ticket; recorded."""
        problem = text_problem_of(by)
        if problem is not None:
            raise TicketError(f"who answers a ticket (by) {problem}")
        assert isinstance(by, str)
        if type(reason) is not str:
            raise TicketError(f"a ticket's answer reason must be a string (got {shown(reason)})")
        if args is not None:
            Approval.edit(args)  # the edit's checks: a mapping with string keys
            args = dict(args)
        gate = self.gate
        with gate._turn():
            state = self._state(ticket_id)
            if state.status != "pending":
                raise TicketError(f"ticket {ticket_id} is {state.status}: only a pending "
                                  "ticket takes an answer")
            expires = state.opened.expires_at
            if expires is not None and gate.now() >= expires:
                raise TicketError(f"ticket {ticket_id} expired at {expires!r}")
            if verdict is Verdict.APPROVE:
                asked = self.store.get(ticket_id, "asked")
                if args is not None:
                    self.store.put(ticket_id, "approved", args)
                runs = args if args is not None else asked
                data = TicketAnswerData(
                    by, mask_text(reason), gate.audit.args_digest(runs) if runs is not None
                    else state.opened.args_digest, args is not None,
                    None if args is None else gate.audit.masker.mask(args))
                self._write("ticket", "approve", ticket_id, data)
            else:
                self._write("ticket", "deny", ticket_id, TicketAnswerData(by, mask_text(reason)))
                self.store.drop(ticket_id)  # it never runs: its arguments are not kept
            return state.ticket(ticket_id, gate.now())

    def _take(self, ticket_id: str) -> tuple[_TicketState, ExecutionResult | None]:
        """Claim a ticket's call to be run or closed (``resume`` or ``expire``), or the
        answer of one already taken."""
        gate = self.gate
        with gate._turn():
            state = self._state(ticket_id)
            opened = state.opened
            if state.done is not None:
                return state, self._results.get(f"ticket:{ticket_id}") or \
                    self._rebuilt(state.done, opened.agent, opened.tool)
            if state.status in ("resumed", "expired"):
                return state, self._not_run(
                    opened.agent, opened.tool, None, opened.context,
                    f"ticket {ticket_id} was taken to run by another caller and has not "
                    "finished (running, or its process stopped): it is never run twice")
            expires = opened.expires_at
            late = expires is not None and gate.now() >= expires
            if state.status == "pending" and not late:
                raise TicketPending(f"ticket {ticket_id} waits for a person: approve or "
                                    "deny it first")
            if late:
                self._write("ticket", "expire", ticket_id, TicketResumeData(
                    opened.context, f"expired at {expires!r}"))
            else:
                self._write("ticket", "resume", ticket_id, TicketResumeData(opened.context))
            return state, None

    def resume(self, ticket_id: str) -> ExecutionResult:
        state, answered = self._take(ticket_id)
        if answered is not None:
            return answered
        run = self._prepared(ticket_id, state)
        if isinstance(run, tuple):
            session, ctx, agent, tool, call_args, decision, inputs, common, via = run
            try:
                result = self.controller._execute(session, ctx, agent, tool, call_args,
                                                  decision, inputs, common, None, "", via)
            except BaseException as exc:  # stopped mid-run: closed on what was recorded
                self._close_interrupted(ticket_id, state, exc)
                raise
        else:
            result = run
        return self._close(ticket_id, state, result)

    async def aresume(self, ticket_id: str) -> ExecutionResult:
        state, answered = self._take(ticket_id)
        if answered is not None:
            return answered
        run = self._prepared(ticket_id, state)
        if isinstance(run, tuple):
            session, ctx, agent, tool, call_args, decision, inputs, common, via = run
            try:
                result = await self.controller._aexecute(session, ctx, agent, tool, call_args,
                                                         decision, inputs, common, None, "",
                                                         via)
            except BaseException as exc:
                self._close_interrupted(ticket_id, state, exc)
                raise
        else:
            result = run
        return self._close(ticket_id, state, result)

    def _close_interrupted(self, ticket_id: str, state: _TicketState,
                           exc: BaseException) -> None:
        from buddy.engine.core._controller import interrupted
        result = interrupted(exc)
        if result is not None:
            self._close(ticket_id, state, result)

    def _prepared(self, ticket_id: str, state: _TicketState) -> Any:
        """A taken ticket's call decided with its answer: what ``_execute`` takes, or the
        result of a call closed without running (denied, expired, changed)."""
        from buddy.engine.core._controller import ExecutionResult, Session, _Common, _Context

        controller, gate = self.controller, self.gate
        opened = state.opened
        ctx = _Context()
        ctx.id, ctx.json, ctx.state = opened.context, orjson.dumps(opened.context), _WAITING
        common = _Common({"agent": opened.agent, "tool": opened.tool,
                          "risk": opened.risk.value,
                          "requires_approval": opened.requires_approval,
                          "confidence": opened.confidence, "rules": opened.rules})
        entry = gate.policy.tools.get(opened.tool)
        policy = entry.policy if entry is not None else \
            gate.policy.table.policies.get(opened.risk)
        inputs = EscalationInputs(policy, opened.confidence, None, False,  # type: ignore[arg-type]
                                  opened.requires_approval)
        why = None
        if state.status == "expired":
            why = f"ticket {ticket_id} expired at {opened.expires_at!r} before it ran"
        elif entry is None or entry.risk != opened.risk.value or \
                entry.requires_approval != opened.requires_approval or \
                controller._rules != opened.rules:
            why = f"the tool's contract or the escalation table changed since ticket " \
                  f"{ticket_id} was made: prepare the call again"
        args = self.store.get(ticket_id, "asked")  # a denied ticket's are gone
        edited = None
        if why is None and state.verdict == "approve":
            answer = state.answer
            assert answer is not None
            edited = self.store.get(ticket_id, "approved") if answer.edited else None
            runs = edited if answer.edited else args
            if runs is None or gate.audit.args_digest(runs) != answer.args_digest:
                why = f"the arguments kept for ticket {ticket_id} are missing or are not " \
                      "the ones approved: not run"
        if why is not None:
            controller._fire(ctx, ("abort",), inputs, common, why=why)
            refusal = Decision.refuse("ticket.closed", why)
            return ExecutionResult(opened.context, opened.agent, opened.tool, refusal, None,
                                   ExecutionState[ctx.state], False, error=why, args=args)
        assert entry is not None
        answer = state.answer
        assert answer is not None
        approval = Approval(Verdict.APPROVE if state.verdict == "approve" else Verdict.DENY,
                            edited if state.verdict == "approve" and answer.edited else None,
                            answer.reason)
        via = f"ticket:{ticket_id}"
        source = None if opened.confidence_from is None else opened.confidence_from.value
        decided = controller._conclude(ctx, opened.agent, opened.tool, dict(args or {}), entry,
                                       inputs, common, source, approval, via, None)
        ctx_, agent, tool, call_args, decision, inputs_, common_, via_, done = decided
        if done is not None:
            return done
        return (Session(controller, agent), ctx_, agent, tool, call_args, decision, inputs_,
                common_, via_)

    def _close(self, ticket_id: str, state: _TicketState,
               result: ExecutionResult) -> ExecutionResult:
        with self.gate._turn():
            if state.done is None:
                self._write("ticket", "done", ticket_id, self._done_data(result, ticket_id))
                key = state.opened.key
                if key is not None:
                    self._remember(f"key:{key}", result)
        self.store.drop(ticket_id)
        self._remember(f"ticket:{ticket_id}", result)
        return result

    def _ticket_call(self, ticket_id: str) -> PendingCall:
        """The pending call of a ticket (a repeat of its keyed call finds it)."""
        from buddy.engine.core._controller import PendingCall
        state = self.book.tickets[ticket_id]
        return PendingCall.of_ticket(self, state.ticket(ticket_id, self.gate.now()))

    # -- results -------------------------------------------------------------
    def _done_data(self, result: ExecutionResult, ticket: str | None = None) -> CallDoneData:
        d = result.decision
        masker = self.gate.audit.masker
        try:
            shown_result = orjson.loads(orjson.dumps(masker.mask(result.result),
                                                     default=_repr))
        except (TypeError, ValueError, orjson.JSONEncodeError, RecursionError):
            shown_result = {"$unencodable": type(result.result).__name__}
        return CallDoneData(result.context, d.allowed, d.mode, d.state, d.rule,
                            mask_text(d.reason), result.state, result.ok, result.mode,
                            shown_result, None if result.error is None else
                            mask_text(result.error),
                            masker.mask(result.args) if result.args is not None else None,
                            ticket)

    def _rebuilt(self, done: CallDoneData, agent: Any, tool: Any) -> ExecutionResult:
        """The result of a call that ran before (in another process): as recorded, its
        arguments and result with secrets masked."""
        from buddy.engine.core._controller import ExecutionResult
        decision = Decision(done.decided, done.allowed, done.rule, done.reason,
                            done.decision_state)
        return ExecutionResult(done.context, _plain(agent), _plain(tool), decision, done.mode,
                               done.state, done.ok, result=done.result, error=done.error,
                               args=done.args)

    def _not_run(self, agent: Any, tool: Any, args: Mapping[str, Any] | None,
                 context: str | None, why: str) -> ExecutionResult:
        from buddy.engine.core._controller import ExecutionResult
        refusal = Decision.refuse("idempotency.duplicate", why)
        return ExecutionResult(context or "", _plain(agent), _plain(tool), refusal, None,
                               S.MOCK, False, error=why,
                               args=dict(args) if isinstance(args, Mapping) else None)


def _plain(value: Any) -> Any:
    """An agent or tool as a record may hold it: itself when it is a string, else shown."""
    return value if type(value) is str else shown(value)


def _repr(value: Any) -> str:
    try:
        return described(value)
    except Exception:
        return type(value).__name__
