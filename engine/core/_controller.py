"""Running tool calls: the escalation machine drives each call's context.

Each call gets an execution context: its place in the declared escalation
machine. The controller fires the decision triggers on it through the table
compiled from the declaration (:func:`buddy.machines.compile_table`, stepped by
:func:`buddy.machines.fire`: the rows ``decide``, replay and the ``transitions``
machine of :func:`buddy.machines.build` are made from, with no ``transitions``
dispatch per call), asks for approval where the machine waits for one, runs the
handler of the mode the machine reached, and on an error in LIVE rolls back the
session's reversible actions in reverse order. Every transition, decision,
approval, run and undo is an audit event.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

import attrs
import orjson

from buddy.engine.core._approvals import Approval
from buddy.engine.core._decision import (
    APPROVAL_PATH,
    RULE_BAD_ARGS,
    WALK_MEMO_SIZE,
    Decision,
    Outcome,
    _refusal,
    _Tool,
)
from buddy.engine.core._tickets import TicketError
from buddy.machines._factory import CompiledTable, fire
from buddy.machines.escalation import (
    DECIDE_PATH,
    SPEC,
    STATE_MODE,
    EscalationInputs,
    ExecutionState,
)
from buddy.rules.base._masking import described, mask_text, masked_repr, shown
from buddy.rules.base._values import ExecutionMode, plain_confidence
from buddy.rules.base.errors import BuddyError, InputError

if TYPE_CHECKING:
    from buddy.engine.core._audit import AuditLog
    from buddy.engine.core._gate import Gate
    from buddy.engine.core._tickets import Calls, Ticket

__all__ = ["AsyncHandlerError", "AsyncSession", "ExecutionResult", "Handlers", "PendingCall",
           "Session"]

S = ExecutionState
_STATES = {s.name: s for s in ExecutionState}
_AWAITING = S.AWAITING_APPROVAL.name
# Enum members and their values, looked up once: on the hot path a member read off
# its class, or its ``.value``, costs as much as a dict lookup ten times over.
_MOCK, _DRY_RUN, _LIVE = ExecutionMode.MOCK, ExecutionMode.DRY_RUN, ExecutionMode.LIVE
_VALUE = {m: m.value for m in ExecutionMode}
_DUMPS, _NON_STR_KEYS = orjson.dumps, orjson.OPT_NON_STR_KEYS
#: The JSON of the events the controller encodes itself (see :class:`_Common`), up to
#: the subject's.
_TRANSITION = b'"kind":"transition","machine":"escalation","subject":'
_EXECUTION = b'"kind":"execution","machine":"escalation","subject":'
#: An execution event's JSON from ``"event"`` to ``data``'s, by the state it ran in.
_RUN_FROM = {s.name: b',"event":"run","src":%b,"dst":null,"data":' % _DUMPS(s.name)
             for s in ExecutionState}
#: The end of a transition's ``data``: its ``approval`` and ``locked``, by their values.
_STATE_JSON = {(approval, locked): b',"approval":%b,"locked":%b' % (
    _DUMPS(approval), _DUMPS(locked)) for approval in (None, True, False)
    for locked in (False, True)}
Handler = Callable[[dict[str, Any]], Any]
Undo = Callable[[dict[str, Any], Any], Any]


@attrs.frozen
class Handlers:
    """The callables of one tool, by mode. ``undo(args, result)`` reverses a LIVE run."""

    mock: Handler | None = None
    dry_run: Handler | None = None
    live: Handler | None = None
    undo: Undo | None = None


def simulated_mock(tool: str) -> Handler:
    """The default MOCK handler: runs nothing and says so."""
    def mock(args: dict[str, Any]) -> dict[str, Any]:
        return {"simulated": True, "tool": tool, "mode": "MOCK", "args": args}
    return mock


_NO_HANDLERS = Handlers()
#: Moves of a context through the machine: ``(trigger, src, dst)`` state names.
Moves = tuple[tuple[str, str, str], ...]
#: A call decided (:meth:`Controller._decide`): its context, agent, tool, arguments,
#: decision, machine inputs, common event data, approver, and its result when it ran
#: no handler (refused, or denied); a refused call has no context, inputs or data.
_Decided = tuple["_Context | None", str, str, dict[str, Any], "Decision",
                 "EscalationInputs | None", "_Common | None", "str | None",
                 "ExecutionResult | None"]
#: A call opened (:meth:`Controller._begin`): its context, agent, tool, arguments, tool
#: entry, machine inputs, common event data, the source of a confidence it did not give,
#: and whether it waits for an approval.
_Begun = tuple["_Context", str, str, dict[str, Any], _Tool, EscalationInputs, "_Common",
               "str | None", bool]


#: Result types that are never awaitable (exact types: a subclass may define __await__);
#: the check that a handler did not just make a coroutine skips them (it is a hot path).
_PLAIN = frozenset({dict, list, tuple, str, bytes, int, float, bool, type(None)})


def _started(exc: BaseException) -> None:
    """Mark ``exc`` as raised once the call's handler had started (see :func:`ran`)."""
    with contextlib.suppress(AttributeError, TypeError):
        exc.__buddy_ran__ = True  # type: ignore[attr-defined]


def ran(exc: BaseException) -> bool:
    """Whether the call ``exc`` stopped had started its handler (it may have acted)."""
    return getattr(exc, "__buddy_ran__", False) is True


def interrupted(exc: BaseException) -> ExecutionResult | None:
    """The result recorded for a call an interrupt or a cancellation stopped mid-run
    (None: it stopped elsewhere, before its run was recorded)."""
    result = getattr(exc, "__buddy_result__", None)
    return result if isinstance(result, ExecutionResult) else None


class AsyncHandlerError(BuddyError, TypeError):
    """An ``async def`` handler was given to a synchronous call: it did not run."""


def _made_not_run(tool: str, mode: ExecutionMode, result: Any, *, awaited: bool) -> None:
    """Refuse a handler's result that is work made and not done: an awaitable (in a
    synchronous call, or left by an async handler that forgot to await it), a generator
    or an async generator (their bodies run only when iterated). It is closed first, so
    it never runs later, nor is warned about. :class:`AsyncHandlerError`."""
    if inspect.isawaitable(result):
        what = "an awaitable (a forgotten await?)" if awaited else "an awaitable"
        why = "" if awaited else " (a synchronous execute cannot await it)"
    elif inspect.isasyncgen(result) or inspect.isgenerator(result):
        what, why = "a generator", " (its body runs only when iterated)"
    else:
        return
    close = getattr(result, "close", None)
    if inspect.isasyncgen(result):
        close = None  # aclose() is itself a coroutine; never started, it holds nothing
    if close is not None:
        with contextlib.suppress(Exception):
            close()
    raise AsyncHandlerError(f"the {mode.value} handler of {tool!r} returned {what}: it did "
                            f"not run{why}")


def _sync_only(tool: str, mode: ExecutionMode, handler: Handler | None) -> Handler | None:
    """``handler``, or, when it is a coroutine function, a stand-in that refuses to run
    it in a synchronous call (calling it would make a coroutine and run nothing)."""
    call = type(handler).__call__ if handler is not None and not inspect.isroutine(handler) \
        else None  # an object whose __call__ is async
    if handler is None or not (inspect.iscoroutinefunction(handler)
                               or inspect.isasyncgenfunction(handler)
                               or call is not None and inspect.iscoroutinefunction(call)):
        return handler

    def refuse(args: dict[str, Any]) -> Any:
        raise AsyncHandlerError(f"the {mode.value} handler of {tool!r} is async: it did not "
                                "run (a synchronous execute cannot await it)")
    return refuse


def _by_mode(tool: str, handlers: Handlers) -> dict[ExecutionMode, Handler | None]:
    """The callable that runs ``tool`` in each mode (None: no such handler); an async one
    refuses to run (:class:`AsyncHandlerError`)."""
    return {_MOCK: _sync_only(tool, _MOCK, handlers.mock) or simulated_mock(tool),
            _DRY_RUN: _sync_only(tool, _DRY_RUN, handlers.dry_run),
            _LIVE: _sync_only(tool, _LIVE, handlers.live)}


@attrs.frozen(slots=False)  # one per call: a frozen dict class builds in half the time
class ExecutionResult:
    """What happened to one call."""

    context: str
    agent: str
    tool: str
    decision: Decision
    mode: ExecutionMode | None     # the mode the handler ran in; None when nothing ran
    state: ExecutionState          # the context's final state
    ok: bool
    result: Any = None
    error: str | None = None
    args: Mapping[str, Any] | None = None
    rolled_back: tuple[str, ...] = ()  # contexts of the session undone (undo succeeded)
    timed_out: bool = False        # the handler raised a TimeoutError
    #: the exception the handler raised (None: it returned, or nothing ran), so a wrapper
    #: can raise the tool's own error
    exception: BaseException | None = attrs.field(default=None, eq=False, repr=False)


_INITIAL = SPEC.initial.name


class _Context:
    """One call's place in the escalation machine: the name of its state.

    Its id is ``ctx-<seq>``, the sequence number of its first audit event, so
    ids never repeat in a log whichever process writes it; it is None until
    that event is written (:meth:`subject`).
    """

    __slots__ = ("id", "json", "state")

    def __init__(self) -> None:
        self.id: str | None = None
        self.json: bytes | None = None  # the id's JSON, once it has one
        self.state = _INITIAL

    def subject(self, held: AuditLog | None = None) -> str | Callable[[int], str]:
        """The audit subject of this context's next event.

        ``held``: the log, when the caller holds its lock. A memory log has no
        other writer, so the id of a context's first event is known before it is
        written (the log numbers it ``last_seq + 1``), and the log need not call
        back for it; a file log names it at the write.
        """
        if self.id is not None:
            return self.id
        if held is None or held.shared:
            return self._name
        return self._name(held.last_seq + 1)

    def _name(self, seq: int) -> str:
        self.id = f"ctx-{seq}"
        self.json = b'"ctx-%d"' % seq
        return self.id


@attrs.define
class _Done:
    context: str
    tool: str
    undo: Undo
    args: dict[str, Any]
    result: Any


class _Common:
    """The ``data`` every event of one call starts with (agent, tool, risk, ...), and
    its JSON without the closing brace, encoded once per call.

    With it the controller encodes its transition and execution events itself
    (:meth:`AuditLog.append_encoded_locked`), the bytes :meth:`AuditLog.append`
    writes for the dict (a test holds the two to be the same); an event whose
    subject the log names at the write (a shared file log's first one) takes
    the dict.
    """

    __slots__ = ("_data", "json", "_digest")

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data
        self.json = _DUMPS(data)[:-1]
        self._digest: str | None = None

    @property
    def data(self) -> dict[str, Any]:
        """The dict (a new one, once the digest is added: only the dict path reads it)."""
        if self._digest is None:
            return self._data
        return {**self._data, "args_digest": self._digest}

    def digested(self, digest: str) -> _Common:
        """This, with the ``args_digest`` of the call's arguments (hex digits) added."""
        common = _Common.__new__(_Common)
        common._data, common._digest = self._data, digest
        common.json = b'%b,"args_digest":"%b"' % (self.json, digest.encode())
        return common


def _move_json(table: CompiledTable) -> dict[tuple[str, str, str], bytes]:
    """The JSON of each move the table can make, from ``"event"`` to ``data``'s key."""
    return {(trigger, src, option[0]): b',"event":%b,"src":%b,"dst":%b,"data":' % (
        _DUMPS(trigger), _DUMPS(src), _DUMPS(option[0]))
        for src, triggers in table.items() for trigger, options in triggers.items()
        for option in options}


def _id(ctx: _Context) -> str:
    """The id of a context that has written its first event (every decided one has)."""
    assert ctx.id is not None
    return ctx.id


def _name(value: object) -> str:
    """A refused call's agent or tool as a result may carry it: itself, or shown."""
    return value if type(value) is str else shown(value)


def _bad_args(args: object) -> Outcome | None:
    """The refusal of arguments that are not a mapping with string keys, or None."""
    if type(args) is dict:  # the common case, without the ABC check
        for key in args:
            if type(key) is not str:
                break
        else:
            return None
    try:
        if args is None or isinstance(args, Mapping) and all(type(k) is str for k in args):
            return None
    except Exception:  # a mapping that cannot even be walked
        pass
    return _refusal(RULE_BAD_ARGS, f"args must be a mapping with string keys "
                    f"(got {shown(args)}): fail closed")


class Controller:
    """Executes calls through one :class:`~buddy.engine.core._gate.Gate`; shared by sessions."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        # The escalation machine compiled from its declaration, as decide walks it.
        self.table = gate.policy.machine
        self._move_json = _move_json(self.table)
        self._rules = gate.policy.table.digest  # the digest of the table every event used
        self.handlers: dict[str, Handlers] = {}
        # Each tool's handlers and its callable by the mode the machine reached, read
        # together (a tool without handlers gets the simulated MOCK one at its first call).
        self._runs: dict[str, tuple[Handlers, dict[ExecutionMode, Handler | None]]] = {}
        # The moves of the decide path from MOCK, by (tool, confidence, approval,
        # locked): the walk is a pure function of them (as Policy remembers its end).
        self._walked: dict[tuple[Any, float, bool | None, bool], Moves] = {}

    def register(self, tool: str, handlers: Handlers) -> None:
        self.handlers[tool] = handlers
        self._runs[tool] = (handlers, _by_mode(tool, handlers))

    # -- one call ------------------------------------------------------------
    def prepare(self, session: Session, tool: str, args: Mapping[str, Any] | None,
                confidence: float | None, approval: bool | None,
                max_mode: ExecutionMode | None = None, cap_reason: str = "",
                agent: str | None = None) -> PendingCall:
        """Decide one call on a fresh context; the handler runs at :meth:`PendingCall.run`."""
        agent = session.agent if agent is None else agent
        return self._pending(session, self._decide(tool, args, confidence, approval, max_mode,
                                                   agent), max_mode, cap_reason)

    async def aprepare(self, session: Session, tool: str, args: Mapping[str, Any] | None,
                       confidence: float | None, approval: bool | None,
                       max_mode: ExecutionMode | None = None, cap_reason: str = "",
                       agent: str | None = None) -> PendingCall:
        """:meth:`prepare`, awaiting an async approver."""
        agent = session.agent if agent is None else agent
        return self._pending(session, await self._adecide(tool, args, confidence, approval,
                                                          max_mode, agent),
                             max_mode, cap_reason)

    def prepare_waiting(self, session: Session, tool: str, args: Mapping[str, Any] | None,
                        confidence: float | None, approval: bool | None,
                        max_mode: ExecutionMode | None, cap_reason: str, agent: str,
                        calls: Calls, expires_in: float | None,
                        key: str | None) -> PendingCall:
        """:meth:`prepare`, but a call that waits for a person waits as a ticket (no
        approver is asked; a live grant still approves it at once)."""
        begun = self._begin(tool, args, confidence, approval, max_mode, agent)
        if begun[0] is None:
            return self._pending(session, begun, max_mode, cap_reason)
        ctx, agent, tool, call_args, entry, inputs, common, source, asks = cast(_Begun, begun)
        answer = approved_at = None
        via = None if approval is None else "caller"
        if asks:
            answer, via, approved_at = self.gate.granted(agent, entry.contract,
                                                         inputs.confidence)
            if via is None:
                decision = entry.outcomes[(_AWAITING, False)][0]
                ticket = calls.open(ctx, agent, tool, call_args, entry, inputs, decision,
                                    expires_in, key, source)
                return PendingCall.of_ticket(calls, ticket)
        return self._pending(session, self._conclude(
            ctx, agent, tool, call_args, entry, inputs, common, source, answer, via,
            approved_at), max_mode, cap_reason)

    def _pending(self, session: Session, decided: _Decided, max_mode: ExecutionMode | None,
                 cap_reason: str) -> PendingCall:
        ctx, agent, tool, call_args, decision, inputs, common, via, done = decided
        if done is not None:
            return PendingCall(self, session, None, tool, call_args, decision, agent=agent,
                               done=done)
        return PendingCall(self, session, ctx, tool, call_args, decision, inputs, common,
                           max_mode=max_mode, cap_reason=cap_reason, agent=agent,
                           approved_by=via)

    def execute(self, session: Session, tool: str, args: Mapping[str, Any] | None,
                confidence: float | None, approval: bool | None,
                max_mode: ExecutionMode | None = None, cap_reason: str = "",
                agent: str | None = None) -> ExecutionResult:
        """Decide one call on a fresh context and run it (:meth:`prepare`, then
        :meth:`PendingCall.run`, without the pending call in between)."""
        agent = session.agent if agent is None else agent
        ctx, agent, tool, call_args, decision, inputs, common, via, done = self._decide(
            tool, args, confidence, approval, max_mode, agent)
        if done is not None:
            return done
        assert ctx is not None and inputs is not None and common is not None
        return self._execute(session, ctx, agent, tool, call_args, decision, inputs, common,
                             max_mode, cap_reason, via)

    async def aexecute(self, session: Session, tool: str, args: Mapping[str, Any] | None,
                       confidence: float | None, approval: bool | None,
                       max_mode: ExecutionMode | None = None, cap_reason: str = "",
                       agent: str | None = None) -> ExecutionResult:
        """:meth:`execute`, awaiting async approvers, handlers and undos."""
        agent = session.agent if agent is None else agent
        ctx, agent, tool, call_args, decision, inputs, common, via, done = \
            await self._adecide(tool, args, confidence, approval, max_mode, agent)
        if done is not None:
            return done
        assert ctx is not None and inputs is not None and common is not None
        return await self._aexecute(session, ctx, agent, tool, call_args, decision, inputs,
                                    common, max_mode, cap_reason, via)

    def _decide(self, tool: str, args: Mapping[str, Any] | None, confidence: float | None,
                approval: bool | None, max_mode: ExecutionMode | None, agent: str,
                ) -> _Decided:
        """Decide one call on a fresh context: a :data:`_Decided`, ``done`` the result of a
        call refused, or denied (its context aborted), else None."""
        begun = self._begin(tool, args, confidence, approval, max_mode, agent)
        if begun[0] is None:
            return begun
        ctx, agent, tool, call_args, entry, inputs, common, source, asks = cast(_Begun, begun)
        answer = approved_at = None
        via = None if approval is None else "caller"
        if asks:
            answer, via, approved_at = self.gate.approve(agent, entry.contract,
                                                         inputs.confidence, call_args)
        return self._conclude(ctx, agent, tool, call_args, entry, inputs, common, source,
                              answer, via, approved_at)

    async def _adecide(self, tool: str, args: Mapping[str, Any] | None,
                       confidence: float | None, approval: bool | None,
                       max_mode: ExecutionMode | None, agent: str) -> _Decided:
        """:meth:`_decide`, awaiting an async approver."""
        begun = self._begin(tool, args, confidence, approval, max_mode, agent)
        if begun[0] is None:
            return begun
        ctx, agent, tool, call_args, entry, inputs, common, source, asks = cast(_Begun, begun)
        answer = approved_at = None
        via = None if approval is None else "caller"
        if asks:
            answer, via, approved_at = await self.gate.aapprove(agent, entry.contract,
                                                                inputs.confidence, call_args)
        return self._conclude(ctx, agent, tool, call_args, entry, inputs, common, source,
                              answer, via, approved_at)

    def _begin(self, tool: str, args: Mapping[str, Any] | None, confidence: float | None,
               approval: bool | None, max_mode: ExecutionMode | None, agent: str,
               ) -> _Begun | _Decided:
        """Open one call: refused (a :data:`_Decided` whose context is None), or its
        context walked up to where it waits for approval or is decided
        (:data:`_Begun`; ``asks``: whether it waits for an approval)."""
        gate = self.gate
        if max_mode is not None and not isinstance(max_mode, ExecutionMode):
            raise InputError(f"max_mode must be an ExecutionMode or None (got {shown(max_mode)})")
        source = resolved = None
        if type(confidence) is not float:
            if confidence is None:  # the engine's defaults or provider say
                confidence, source, resolved = gate.resolve(
                    agent, tool, args if isinstance(args, Mapping) else None)
            else:
                confidence = plain_confidence(confidence)
        bad_args = _bad_args(args)
        # The refusal checks, in full (and naming the problem) only for inputs that may
        # fail them: an agent that is no plain ASCII name, an unknown tool, a confidence
        # out of range, an approval not one of True, False, None; or declared agents.
        tools = gate.policy.tools
        if gate.agents is None and type(agent) is str and agent and agent.isascii() and \
                not "ctx-" <= agent < "ctx." and type(tool) is str and tool in tools and \
                type(confidence) is float and 0.0 <= confidence <= 1.0 and \
                (approval is None or approval is True or approval is False):
            refused = bad_args
        else:
            refused = gate.refusal(agent, tool, confidence, approval) or bad_args
            if resolved is not None and refused is not None and \
                    refused[0].rule == resolved[0].rule:  # why no confidence, said
                refused = resolved
        if refused is not None:
            call_args = dict(args) if bad_args is None and args is not None else {}
            with gate.lock:
                seq = gate.record(lambda seq: f"ctx-{seq}", agent, tool, confidence, approval,
                                  None, gate.locked, refused, source=source)
            ident, agent, tool = f"ctx-{seq}", _name(agent), _name(tool)
            return None, agent, tool, call_args, refused[0], None, None, None, ExecutionResult(
                ident, agent, tool, refused[0], None, S.MOCK, False, error=refused[0].reason,
                args=call_args)
        assert type(confidence) is float
        call_args = dict(args or {})
        entry = tools[tool]
        ctx = _Context()
        inputs = EscalationInputs(entry.policy, confidence, approval, gate.audit.locked,
                                  entry.requires_approval)
        common = _Common({"agent": agent, "tool": tool, "risk": entry.risk,
                          "requires_approval": entry.requires_approval,
                          "confidence": confidence, "rules": self._rules})
        key = (entry, confidence, approval, inputs.locked)
        moves = self._walked.get(key)
        if moves is None:
            moves = self._moves(_INITIAL, DECIDE_PATH, inputs)
            if len(self._walked) >= WALK_MEMO_SIZE:
                self._walked.clear()
            self._walked[key] = moves
        self._record(ctx, moves, inputs, common)
        # Nobody is asked to approve a LIVE run that a cap rules out anyway.
        asks = ctx.state == _AWAITING and approval is None and (max_mode is None or
                                                                 max_mode is _LIVE)
        return ctx, agent, tool, call_args, entry, inputs, common, source, asks

    def _conclude(self, ctx: _Context, agent: str, tool: str, call_args: dict[str, Any],
                  entry: _Tool, inputs: EscalationInputs, common: _Common,
                  source: str | None, answer: Approval | None, via: str | None,
                  approved_at: float | None) -> _Decided:
        """Decide a call :meth:`_begin` opened, with the approver's (or a grant's) answer
        when it waited for one; record the decision; abort the context of a call that
        may not run."""
        gate = self.gate
        if answer is not None:
            inputs.approval = answer.approved
            if answer.args is not None:
                masker = gate.audit.masker
                gate.audit.append("approval", "escalation", ctx.subject(), "edit_args",
                                  None, None, {"agent": agent, "tool": tool,
                                               "original": masker.mask(call_args),
                                               "edited": masker.mask(dict(answer.args)),
                                               "reason": mask_text(answer.reason)})
                call_args = dict(answer.args)
            self._fire(ctx, APPROVAL_PATH, inputs, common,
                       why=mask_text(answer.reason) or None)
        with gate.lock:
            audit = gate.audit
            shared = audit.shared
            if shared:  # the log's lock as it is now, and no one appends in between
                audit.hold()
            try:
                if audit.locked and not inputs.locked:  # locked while this call decided
                    inputs.locked = True
                    self._fire(ctx, ("lock",), inputs, common, why="system locked meanwhile")
                outcome = entry.outcomes[(ctx.state, inputs.locked)]
                if gate.buckets:
                    outcome = gate.throttle(tool, outcome)
                gate.record(ctx.subject(audit), agent, tool, inputs.confidence,
                            inputs.approval, via, inputs.locked, outcome, approved_at,
                            source=source)
            finally:
                if shared:
                    audit.release()
        decision = outcome[0]
        done = None
        if not decision.allowed:  # a denial says the approver's reason too
            said = mask_text(answer.reason) if answer is not None and not answer.approved \
                and answer.reason else ""
            done = self._cancel(ctx, agent, tool, call_args, decision, inputs, common,
                                f"{decision.reason} ({said})" if said else "")
        return ctx, agent, tool, call_args, decision, inputs, common, via, done

    def _cancel(self, ctx: _Context, agent: str, tool: str, args: dict[str, Any],
                decision: Decision, inputs: EscalationInputs, common: _Common,
                reason: str = "") -> ExecutionResult:
        """Abort a decided call without running it."""
        self._fire(ctx, ("abort",), inputs, common, why=reason or decision.reason)
        return ExecutionResult(_id(ctx), agent, tool, decision, None, _STATES[ctx.state], False,
                               error=reason or decision.reason, args=args)

    def _execute(self, session: Session, ctx: _Context, agent: str, tool: str,
                 args: dict[str, Any],
                 decision: Decision, inputs: EscalationInputs, common: _Common,
                 max_mode: ExecutionMode | None = None, cap_reason: str = "",
                 approved_by: str | None = None) -> ExecutionResult:
        mode, handlers, common, by_mode, masked = self._start(
            ctx, tool, decision, inputs, common, max_mode, cap_reason, approved_by, args)
        try:
            result = by_mode[mode](args)  # type: ignore[misc]
            if type(result) not in _PLAIN:
                _made_not_run(tool, mode, result, awaited=False)
        except BaseException as exc:  # recorded and rolled back; an interrupt then goes on up
            _started(exc)
            error = self._run_failed(ctx, inputs, common, mode, masked, exc)
            undone = session._rollback(_id(ctx)) if mode is _LIVE else ()
            return self._failed(ctx, agent, tool, args, decision, inputs, common, mode, exc,
                                error, undone)
        try:
            return self._succeeded(session, ctx, agent, tool, args, decision, inputs, common,
                                   mode, handlers, result, masked)
        except BaseException as exc:  # the tool ran: whatever stops the record says so
            _started(exc)
            raise

    async def _aexecute(self, session: Session, ctx: _Context, agent: str, tool: str,
                        args: dict[str, Any], decision: Decision, inputs: EscalationInputs,
                        common: _Common, max_mode: ExecutionMode | None = None,
                        cap_reason: str = "", approved_by: str | None = None,
                        ) -> ExecutionResult:
        """:meth:`_execute`, awaiting an async handler (a sync one is called inline)."""
        mode, handlers, common, _, masked = self._start(
            ctx, tool, decision, inputs, common, max_mode, cap_reason, approved_by, args)
        handler = handlers.live if mode is _LIVE else handlers.dry_run if mode is _DRY_RUN \
            else handlers.mock or simulated_mock(tool)
        try:
            result = handler(args)  # type: ignore[misc]
            if type(result) not in _PLAIN:
                if inspect.isawaitable(result):
                    result = await result
                    if type(result) not in _PLAIN:  # an awaitable returned by the awaitable
                        _made_not_run(tool, mode, result, awaited=True)
                else:
                    _made_not_run(tool, mode, result, awaited=True)
        except BaseException as exc:  # a cancellation too: recorded, rolled back, raised on
            _started(exc)
            error = self._run_failed(ctx, inputs, common, mode, masked, exc)
            undone = await session._arollback(_id(ctx)) if mode is _LIVE else ()
            return self._failed(ctx, agent, tool, args, decision, inputs, common, mode, exc,
                                error, undone)
        try:
            return self._succeeded(session, ctx, agent, tool, args, decision, inputs, common,
                                   mode, handlers, result, masked)
        except BaseException as exc:  # the tool ran: whatever stops the record says so
            _started(exc)
            raise

    def _start(self, ctx: _Context, tool: str, decision: Decision, inputs: EscalationInputs,
               common: _Common, max_mode: ExecutionMode | None, cap_reason: str,
               approved_by: str | None, args: dict[str, Any],
               ) -> tuple[ExecutionMode, Handlers, _Common, dict[ExecutionMode, Handler | None],
                          Any]:
        """The mode a decided call runs in now (caps, withdrawn grants, missing handlers
        and a system lock taken since lower it, each move recorded), its handlers, its
        event data with the arguments' digest (:meth:`AuditLog.args_digest`), and the
        arguments masked as the log records them."""
        gate = self.gate
        run = self._runs.get(tool)
        if run is None:
            run = self._runs.setdefault(tool, (_NO_HANDLERS, _by_mode(tool, _NO_HANDLERS)))
        handlers, by_mode = run
        mode = decision.mode
        if max_mode is not None and mode.rank > max_mode.rank:
            mode = self._downgrade(ctx, inputs, common, max_mode, cap_reason or
                                   f"capped at {max_mode.value}")
        if mode is _LIVE and approved_by is not None and \
                approved_by.startswith("grant:"):
            # A grant revoked (or expired) since the decision no longer approves the run.
            gid = approved_by[len("grant:"):]
            withdrawn = gate.grant_withdrawn(gid)
            if withdrawn is not None:
                mode = self._downgrade(ctx, inputs, common, _DRY_RUN,
                                       f"grant {gid} {withdrawn} before the LIVE run")
        if mode is _LIVE and handlers.live is None:
            mode = self._downgrade(ctx, inputs, common, _DRY_RUN,
                                   "no live handler registered")
        if mode is _DRY_RUN and handlers.dry_run is None:
            mode = self._downgrade(ctx, inputs, common, _MOCK,
                                   "no dry-run handler registered")
        if mode is _LIVE and gate.locked_now():
            # The kill switch: a lock after the decision, by any writer of the log, still
            # stops the LIVE run.
            inputs.locked = True
            self._fire(ctx, ("lock",), inputs, common, why="system locked before the LIVE run")
            mode = _MOCK
        audit = gate.audit
        masked = audit.masker.mask(args)
        return mode, handlers, common.digested(audit.args_digest(args, masked)), by_mode, masked

    def _run_failed(self, ctx: _Context, inputs: EscalationInputs, common: _Common,
                    mode: ExecutionMode, masked: Any, exc: BaseException) -> str:
        """Record a run that raised (``masked``: its arguments as the log records them),
        and the machine's move for it; its error in one line."""
        error = described(exc)
        audit = self.gate.audit
        audit.append("execution", "escalation", ctx.subject(), "run", ctx.state, None, {
            **common.data, "mode": _VALUE[mode], "ok": False, "error": error, "args": masked})
        if mode is _LIVE:
            self._fire(ctx, ("error",), inputs, common, why=error)
        else:
            self._fire(ctx, ("abort",), inputs, common, why=error)
        return error

    def _failed(self, ctx: _Context, agent: str, tool: str, args: dict[str, Any],
                decision: Decision, inputs: EscalationInputs, common: _Common,
                mode: ExecutionMode, exc: BaseException, error: str,
                undone: tuple[str, ...]) -> ExecutionResult:
        """The result of a run that raised, its session rolled back; an exception that is
        no error (an interrupt, a cancellation) is raised on."""
        if mode is _LIVE:
            self._fire(ctx, ("rollback_complete",), inputs, common)
        result = ExecutionResult(_id(ctx), agent, tool, decision, mode, _STATES[ctx.state],
                                 False, error=error, args=args, rolled_back=undone,
                                 timed_out=isinstance(exc, TimeoutError), exception=exc)
        if not isinstance(exc, Exception):
            # An interrupt or a cancellation goes on up, carrying the result recorded for
            # the call (a ticket or an idempotency key closes on it: see interrupted()).
            with contextlib.suppress(AttributeError, TypeError):
                exc.__buddy_result__ = result  # type: ignore[attr-defined]
            raise exc
        return result

    def _succeeded(self, session: Session, ctx: _Context, agent: str, tool: str,
                   args: dict[str, Any], decision: Decision, inputs: EscalationInputs,
                   common: _Common, mode: ExecutionMode, handlers: Handlers,
                   result: Any, masked: Any) -> ExecutionResult:
        """Record a run that returned, keep its undo, and close its context."""
        gate = self.gate
        masker = gate.audit.masker
        tail = {"mode": _VALUE[mode], "ok": True, "result": masker.mask(result),
                "args": masked}
        audit = gate.audit
        try:  # wrapped in a list: the values as deep as in the event's data
            encoded = _DUMPS([tail], default=masked_repr, option=_NON_STR_KEYS)[2:-2]
        except Exception:  # a value JSON cannot hold: the dict records it as such
            encoded = None
        with gate.lock:
            if encoded is not None and ctx.json is not None:
                audit.append_encoded_locked(b"".join((
                    _EXECUTION, ctx.json, _RUN_FROM[ctx.state], common.json, b",", encoded,
                    b"}")))
            else:
                audit.append_locked("execution", "escalation", ctx.subject(), "run", ctx.state,
                                    None, {**common.data, **tail})
        if mode is _LIVE and handlers.undo is not None and \
                gate.policy.tools[tool].contract.reversible:
            session._stack.append(_Done(_id(ctx), tool, handlers.undo, args, result))
        self._fire(ctx, ("all_actions_succeeded",), inputs, common)
        return ExecutionResult(_id(ctx), agent, tool, decision, mode, _STATES[ctx.state],
                               True, result=result, args=args)

    # -- machine plumbing ----------------------------------------------------
    def _downgrade(self, ctx: _Context, inputs: EscalationInputs, common: _Common,
                   cap: ExecutionMode, why: str) -> ExecutionMode:
        """Fire ``downgrade`` until the context's mode is at most ``cap``."""
        for _ in range(len(STATE_MODE)):
            if STATE_MODE[_STATES[ctx.state]].rank <= cap.rank:
                break
            self._fire(ctx, ("downgrade",), inputs, common, why=why)
        return STATE_MODE[_STATES[ctx.state]]

    def _fire(self, ctx: _Context, triggers: tuple[str, ...], inputs: EscalationInputs,
              common: _Common, why: str | None = None) -> None:
        """Fire each trigger in turn on the compiled machine; record each move.

        A trigger with no row from the current state, or whose guards fail,
        leaves the state as it is and records nothing (:func:`fire`).
        """
        table = self.table
        for trigger in triggers:
            option = fire(table, ctx.state, trigger, inputs)
            if option is not None:
                self._record(ctx, ((trigger, ctx.state, option[0]),), inputs, common, why)

    def _moves(self, state: str, triggers: tuple[str, ...], inputs: EscalationInputs) -> Moves:
        """The moves ``(trigger, src, dst)`` the triggers make in turn from ``state``
        (as :meth:`_fire` makes them), none made on a context."""
        table, moves = self.table, []
        for trigger in triggers:
            option = fire(table, state, trigger, inputs)
            if option is not None:
                moves.append((trigger, state, option[0]))
                state = option[0]
        return tuple(moves)

    def _record(self, ctx: _Context, moves: Moves, inputs: EscalationInputs,
                common: _Common, why: str | None = None) -> None:
        """Make ``moves`` on the context, each a transition event, recorded together."""
        if not moves:
            return
        audit = self.gate.audit
        try:
            tail = b',"why":%b}' % _DUMPS(why) if why else b"}"
        except orjson.JSONEncodeError:  # a lone surrogate: escaped, as every text buddy cuts
            why = mask_text(str(why))
            tail = b',"why":%b}' % _DUMPS(why)
        with audit.lock:
            for move in moves:
                trigger, src, dst = move
                ctx.state = dst
                named = ctx.json
                if named is None:  # its first event: named now, or by the log at the write
                    ctx.subject(audit)
                    named = ctx.json
                if tail is not None and named is not None:
                    audit.append_encoded_locked(b"".join((
                        _TRANSITION, named, self._move_json[move], common.json,
                        _STATE_JSON[(inputs.approval, inputs.locked)], tail)))
                    continue
                subject = ctx.subject(audit)
                data = {**common.data, "approval": inputs.approval, "locked": inputs.locked}
                if why:
                    data["why"] = why
                audit.append_locked("transition", "escalation", subject, trigger, src, dst,
                                    data)


class PendingCall:
    """A decided call whose handler has not run yet.

    :meth:`run` runs it once; :meth:`cancel` aborts it. A system lock taken
    between the decision and :meth:`run` still stops a LIVE run: the lock is
    checked again at the moment the LIVE handler would start.
    """

    __slots__ = ("_controller", "agent", "_max_mode", "_cap_reason", "_approved_by", "_session",
                 "_ctx", "context", "tool", "args", "decision", "_inputs", "_common", "_done",
                 "ticket", "_calls", "_on_done")

    def __init__(self, controller: Controller, session: Session, ctx: _Context | None,
                 tool: str, args: dict[str, Any], decision: Decision,
                 inputs: EscalationInputs | None = None, common: _Common | None = None,
                 done: ExecutionResult | None = None, max_mode: ExecutionMode | None = None,
                 cap_reason: str = "", agent: str | None = None,
                 approved_by: str | None = None) -> None:
        self._controller = controller
        self.agent = agent or session.agent
        self._max_mode = max_mode
        self._cap_reason = cap_reason
        self._approved_by = approved_by
        self._session = session
        self._ctx = ctx  # taken by the one run or cancel
        self.context = _id(ctx) if ctx is not None else done.context  # type: ignore[union-attr]
        self.tool = tool
        self.args = args
        self.decision = decision
        self._inputs = inputs
        self._common = common
        self._done = done
        #: the ticket the call waits on for a person (None: it does not wait)
        self.ticket: Ticket | None = None
        self._calls: Calls | None = None
        #: told the result once the call has run or been cancelled (an idempotency key)
        self._on_done: Callable[[ExecutionResult], None] | None = None

    @classmethod
    def of_ticket(cls, calls: Calls, ticket: Ticket) -> PendingCall:
        """The pending call of a ticket: :meth:`run` resumes it (once the ticket has an
        answer), whichever process made it."""
        pending = cls.__new__(cls)
        pending._controller, pending._session = calls.controller, None  # type: ignore[assignment]
        pending.agent, pending.tool, pending.context = ticket.agent, ticket.tool, ticket.context
        pending._max_mode, pending._cap_reason, pending._approved_by = None, "", None
        pending._ctx = pending._inputs = pending._common = pending._done = None
        pending.args = calls.store.get(ticket.id, "asked") or {}
        pending.decision = Decision(ExecutionMode(ticket.mode), True, ticket.rule,
                                    f"waits for a person: ticket {ticket.id}",
                                    ExecutionState.AWAITING_APPROVAL)
        pending.ticket, pending._calls, pending._on_done = ticket, calls, None
        return pending

    @property
    def waiting(self) -> bool:
        """Whether the call waits for a person now (its ticket has no answer yet)."""
        calls, ticket = self._calls, self.ticket
        if calls is None or ticket is None or self._done is not None:
            return False
        return calls.ticket(ticket.id).status == "pending"

    def _stopped(self, exc: BaseException) -> None:
        """An interrupt or a cancellation stopped the run: its recorded result is the
        call's (a repeat returns it, and runs nothing)."""
        result = interrupted(exc)
        if result is not None:
            self._finished(result)

    def _finished(self, result: ExecutionResult) -> ExecutionResult:
        self._done = result
        if self._on_done is not None:
            self._on_done(result)
        return result

    def _take(self) -> _Context:
        ctx, self._ctx = self._ctx, None
        if ctx is None:
            raise InputError(f"call {self.context} was interrupted and cannot run again")
        return ctx

    def run(self) -> ExecutionResult:
        """Run the handler of the decided mode (once); later calls return the same result.

        A call waiting on a ticket runs once the ticket has an answer (see
        :meth:`buddy.engine.Engine.resume`); before, :class:`TicketPending` is raised.
        """
        if self._done is None:
            if self._calls is not None and self.ticket is not None:
                return self._finished(self._calls.resume(self.ticket.id))
            assert self._inputs is not None and self._common is not None
            try:
                return self._finished(self._controller._execute(
                    self._session, self._take(), self.agent, self.tool, self.args,
                    self.decision, self._inputs, self._common, self._max_mode,
                    self._cap_reason, self._approved_by))
            except BaseException as exc:
                self._stopped(exc)
                raise
        return self._done

    async def arun(self) -> ExecutionResult:
        """:meth:`run`, awaiting an async handler."""
        if self._done is None:
            if self._calls is not None and self.ticket is not None:
                return self._finished(await self._calls.aresume(self.ticket.id))
            assert self._inputs is not None and self._common is not None
            try:
                return self._finished(await self._controller._aexecute(
                    self._session, self._take(), self.agent, self.tool, self.args,
                    self.decision, self._inputs, self._common, self._max_mode,
                    self._cap_reason, self._approved_by))
            except BaseException as exc:
                self._stopped(exc)
                raise
        return self._done

    def cancel(self, reason: str = "") -> ExecutionResult:
        """Abort the call without running it (a ticket's call: deny the ticket instead)."""
        if self._done is None:
            if self._calls is not None and self.ticket is not None:
                raise TicketError(f"call {self.context} waits on ticket {self.ticket.id}: "
                                  "deny the ticket to close it")
            assert self._inputs is not None and self._common is not None
            return self._finished(self._controller._cancel(
                self._take(), self.agent, self.tool, self.args, self.decision, self._inputs,
                self._common, reason or "cancelled before it ran"))
        return self._done


class Session:
    """Calls of one agent that roll back together: on an error in LIVE, every
    earlier reversible LIVE action of the session is undone, newest first.

    Use as a context manager or call :meth:`execute` directly; once its
    ``with`` block has ended, it takes no more calls.
    """

    def __init__(self, controller: Controller, agent: str) -> None:
        self._controller = controller
        self.agent = agent
        self._stack: list[_Done] = []
        self._closed = False

    def execute(self, tool: str, args: Mapping[str, Any] | None = None, *,
                confidence: float | None = None, approval: bool | None = None,
                max_mode: ExecutionMode | None = None, cap_reason: str = "",
                agent: str | None = None) -> ExecutionResult:
        """Decide and run one call (see :meth:`buddy.engine.Engine.execute`)."""
        if self._closed:
            raise InputError(f"the session of {self.agent!r} has ended: its calls could no "
                             "longer roll back together; start a new one")
        return self._controller.execute(self, tool, args, confidence, approval, max_mode,
                                        cap_reason, agent)

    def prepare(self, tool: str, args: Mapping[str, Any] | None = None, *,
                confidence: float | None = None, approval: bool | None = None,
                max_mode: ExecutionMode | None = None, cap_reason: str = "",
                agent: str | None = None) -> PendingCall:
        """Decide one call now; run it later with :meth:`PendingCall.run`.

        ``max_mode`` caps the mode it runs in (e.g. DRY_RUN for a dry-run-only
        run, or a conflict resolved by DOWNGRADE): the decided mode is lowered by
        the machine's ``downgrade`` trigger, recorded with ``cap_reason``. ``agent``
        makes the call for another agent than the session's (a plan whose steps
        several agents share rolls back as one).
        """
        if self._closed:
            raise InputError(f"the session of {self.agent!r} has ended: its calls could no "
                             "longer roll back together; start a new one")
        return self._controller.prepare(self, tool, args, confidence, approval, max_mode,
                                        cap_reason, agent)

    def _check_open(self) -> None:
        if self._closed:
            raise InputError(f"the session of {self.agent!r} has ended: its calls could no "
                             "longer roll back together; start a new one")

    @property
    def rollback_stack(self) -> list[str]:
        """Tools whose LIVE actions would be undone, oldest first."""
        return [d.tool for d in self._stack]

    def _rollback(self, failed: str) -> tuple[str, ...]:
        undone: list[str] = []
        while self._stack:
            done = self._stack.pop()
            try:
                out = done.undo(done.args, done.result)
                if type(out) not in _PLAIN and inspect.isawaitable(out):
                    close = getattr(out, "close", None)
                    if close is not None:
                        close()
                    raise AsyncHandlerError(f"the undo of {done.tool!r} is async: it did not "
                                            "run (a synchronous execute cannot await it)")
            except BaseException as exc:  # recorded; the action stands, so it is not undone
                self._undo_failed(done, failed, exc)
                continue
            self._undone(done, failed, out, undone)
        return tuple(undone)

    def _undone(self, done: _Done, failed: str, out: Any, undone: list[str]) -> None:
        """Record an undo that returned ``out``."""
        audit = self._controller.gate.audit
        audit.append("rollback", "escalation", done.context, "undo", None, None, {
            "tool": done.tool, "ok": True, "result": audit.masker.mask(out),
            "because_of": failed})
        undone.append(done.context)

    def _undo_failed(self, done: _Done, failed: str, exc: BaseException) -> None:
        """Record an undo that raised; an interrupt or a cancellation also leaves the rest
        of the stack not undone (recorded), and goes on up."""
        self._controller.gate.audit.append(
            "rollback", "escalation", done.context, "undo", None, None,
            {"tool": done.tool, "ok": False, "error": described(exc), "because_of": failed})
        if not isinstance(exc, Exception):
            self._not_undone(failed, exc)
            raise exc

    def _not_undone(self, failed: str, exc: BaseException) -> None:
        """Record each action left on the stack as not undone: an interrupt or a
        cancellation stopped the rollback."""
        audit = self._controller.gate.audit
        while self._stack:
            done = self._stack.pop()
            audit.append("rollback", "escalation", done.context, "undo", None, None, {
                "tool": done.tool, "ok": False, "because_of": failed,
                "error": f"not undone: the rollback was stopped ({type(exc).__name__})"})

    async def _arollback(self, failed: str) -> tuple[str, ...]:
        """:meth:`_rollback`, awaiting async undos."""
        undone: list[str] = []
        while self._stack:
            done = self._stack.pop()
            try:
                out = done.undo(done.args, done.result)
                if type(out) not in _PLAIN and inspect.isawaitable(out):
                    out = await out
            except BaseException as exc:  # a cancellation too: recorded, then raised on
                self._undo_failed(done, failed, exc)
                continue
            self._undone(done, failed, out, undone)
        return tuple(undone)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.clear()
        self._closed = True




class AsyncSession(Session):
    """A :class:`Session` for async callers: ``async with engine.asession(agent) as s:
    await s.execute(...)``. Async approvers, handlers and undos are awaited; sync ones
    are called inline. Its calls share the engine's one audit chain with sync callers."""

    async def execute(self, tool: str, args: Mapping[str, Any] | None = None, *,  # type: ignore[override]
                      confidence: float | None = None, approval: bool | None = None,
                      max_mode: ExecutionMode | None = None, cap_reason: str = "",
                      agent: str | None = None) -> ExecutionResult:
        """Decide and run one call (see :meth:`buddy.engine.Engine.aexecute`)."""
        self._check_open()
        return await self._controller.aexecute(self, tool, args, confidence, approval,
                                               max_mode, cap_reason, agent)

    async def prepare(self, tool: str, args: Mapping[str, Any] | None = None, *,  # type: ignore[override]
                      confidence: float | None = None, approval: bool | None = None,
                      max_mode: ExecutionMode | None = None, cap_reason: str = "",
                      agent: str | None = None) -> PendingCall:
        """Decide one call now (awaiting an async approver); run it with
        :meth:`PendingCall.arun`."""
        self._check_open()
        return await self._controller.aprepare(self, tool, args, confidence, approval,
                                               max_mode, cap_reason, agent)

    async def __aenter__(self) -> AsyncSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.__exit__(*exc)
