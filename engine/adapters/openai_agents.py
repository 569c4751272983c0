"""buddy inside the OpenAI Agents SDK: guarded function tools, a ``needs_approval``
that asks buddy, and the SDK's approvals recorded on buddy's tickets.

Needs the ``openai-agents`` extra (``pip install 'buddy[openai-agents]'``).

- :func:`guard_function_tool` (or the decorator :func:`buddy_function_tool`) returns
  a copy of a ``FunctionTool`` whose every call goes through
  ``engine.aexecute(agent, tool, args, idempotency_key=<a digest of agent, tool
  and the SDK's call id>)`` with the tool's own ``on_invoke_tool`` as its LIVE
  handler. A call buddy refuses, denies or does not know never runs: the model is
  told so in one line. A call decided MOCK or DRY_RUN is not run for real either,
  and the model is told it was simulated. A second invocation of one call id (a
  run resumed twice from one saved state) returns the first result and runs
  nothing. Arguments the tool does not take (keys outside a schema that forbids
  other properties, as a strict tool's does: the SDK would drop them, and the tool
  run without what buddy records) are refused by the LIVE handler: a failed run,
  nothing ran, and the model is told.
- A tool made by ``@function_tool`` runs LIVE without the SDK's failure handling
  around it, so an exception of the tool, or arguments its parameters refuse (a
  wrong type, a missing one: the tool's body never runs), is a failed run in
  buddy's audit; the model is then told what the tool's failure policy says (its
  ``failure_error_function``, the SDK's default message by default; None: the
  exception is raised, failing the SDK run), as the SDK would. Another
  ``FunctionTool`` (its own ``on_invoke_tool``) runs as it is: a failure it turns
  into text is recorded as its result.
- Its ``needs_approval`` answers True exactly when buddy's decision for the call
  waits for a person (``engine.check``, which records nothing; the tool's own
  setting is or-ed in, buddy asked either way), and then opens buddy's ticket for
  it (``engine.prepare(..., wait=True, idempotency_key=<the call's key>)``): the
  run stops with ``result.interruptions`` and the ticket is in ``engine.tickets()``.
  :func:`buddy_needs_approval` is the question alone, for an unguarded tool.
- The guard registers the tool's LIVE handler on the engine (``register_handler``
  replaces the tool's handlers there); an unknown tool gets none and is refused.
- Answer with :func:`approve` / :func:`reject` (they record the answer, who gave
  it and any edited arguments on buddy's ticket, then call ``state.approve`` /
  ``state.reject``). The SDK cannot edit a call's arguments; ``approve(...,
  args=...)`` (or ``engine.approve(ticket_id, args=...)`` out of band) can, and
  the tool then runs the edited arguments. A plain ``state.approve(item)`` is
  recorded too, when the resumed run invokes the tool (``by="openai-agents"``).
  ``state.approve(item, always_approve=True)`` approves the tool's later calls
  too, and the SDK then runs them without asking needs_approval: buddy still
  decides each, and one that waits for a person gets its ticket, approved as
  :data:`SDK_ALWAYS_APPROVER` (``by="openai-agents (always)"``). A plain
  ``state.reject(item)`` is not seen by buddy (the SDK never calls the tool
  again), so its ticket stays pending until it expires: use :func:`reject`.
- Tickets answered elsewhere (``engine.approve`` / ``engine.deny`` in another
  process, ``buddy tickets``): :func:`apply_answers` carries their answers onto
  the saved run (``RunState.from_json``) before it resumes.

Example (a scripted model stands in for a real one)::

    tools = [guard_function_tool(send_email, engine, agent="mailer")]
    agent = Agent(name="mailer", model=model, tools=tools)
    result = await Runner.run(agent, "write to Ann")
    state = result.to_state()
    for item in result.interruptions:
        approve(state, item, by="alice", args={"to": "ann@example.com", "body": "Hi"})
    result = await Runner.run(agent, state)
"""

from __future__ import annotations

import contextvars
import copy
import hashlib
import inspect
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from agents import FunctionTool, RunContextWrapper, RunState, ToolApprovalItem, function_tool
from agents.tool import (
    ToolErrorFunction,
    _FailureHandlingFunctionToolInvoker,
    default_tool_error_function,
    maybe_invoke_function_tool_failure_error_function,
)
from agents.tool_context import ToolContext

from buddy.engine.core import Engine, ExecutionResult, PendingCall, Ticket, TicketError
from buddy.machines.escalation import ExecutionState
from buddy.rules.base._values import ExecutionMode
from buddy.rules.base.errors import InputError

__all__ = [
    "SDK_ALWAYS_APPROVER",
    "SDK_APPROVER",
    "UnknownArgumentsError",
    "apply_answers",
    "approve",
    "buddy_function_tool",
    "buddy_needs_approval",
    "guard_function_tool",
    "reject",
]

#: Who a plain ``state.approve(item)`` is recorded as, on buddy's ticket.
SDK_APPROVER = "openai-agents"
#: Who a call is recorded as approved by when the SDK approved every call of its tool
#: (``state.approve(item, always_approve=True)``) and no one was asked about this one.
SDK_ALWAYS_APPROVER = "openai-agents (always)"
#: A call id no SDK call has: the SDK approves it only when it approves every call.
_ANY_CALL = "buddy:any-call"

NeedsApproval = Callable[[RunContextWrapper[Any], dict[str, Any], str], Awaitable[bool]]
_Invoke = Callable[[ToolContext[Any], str], Awaitable[Any]]

#: The SDK call being run: its context and the guard of the tool. The LIVE handler
#: buddy runs reads it, so one handler serves every guarded copy of a tool.
_CURRENT: contextvars.ContextVar[tuple[ToolContext[Any], _Guard] | None] = \
    contextvars.ContextVar("buddy_openai_agents_call", default=None)


class UnknownArgumentsError(InputError):
    """Arguments a function tool does not take: its schema forbids other properties, and
    the SDK would drop them silently, so the tool would run without what buddy records."""


async def _live(args: Mapping[str, Any]) -> Any:
    """The LIVE handler of every guarded tool: the SDK's own invocation, with the
    arguments buddy runs (edited ones after an approval that edits). Arguments the
    tool does not take are refused here (a failed run: nothing ran)."""
    current = _CURRENT.get()
    if current is None:
        raise RuntimeError("a guarded OpenAI Agents SDK tool runs LIVE only inside its "
                           "SDK run (the guard's on_invoke_tool)")
    ctx, guard = current
    guard.check_arguments(args)
    return await guard.invoke(ctx, json.dumps(dict(args)))


def _idempotency_key(agent: str, tool: str, call_id: str) -> str:
    """The engine's key of one SDK call: a digest, so no agent, tool or call id (with a
    ``/``, a newline, or 300 characters long) makes two calls share a key or makes an
    invalid one; the same in every process.

    >>> _idempotency_key("a/t/x", "t", "y") != _idempotency_key("a", "t", "x/t/y")
    True
    >>> _idempotency_key("mailer", "send_email", "call-1")
    'openai-agents:c594b7dca7825507df6038ed9d70d25105d94f97'
    """
    named = json.dumps([agent, tool, call_id]).encode("utf-8")
    return "openai-agents:" + hashlib.sha256(named).hexdigest()[:40]


def _extra_keys(schema: Mapping[str, Any], strict: bool, args: Mapping[str, Any]) -> list[str]:
    """The keys of ``args`` a tool of this JSON schema does not take: none unless the schema
    forbids other properties (``additionalProperties: false``, or a strict tool)."""
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        return []
    if not (strict or schema.get("additionalProperties") is False):
        return []
    return sorted(str(key) for key in args if key not in properties)


def _check_text(fn: str, name: str, value: object) -> None:
    """``value`` is text buddy can record (no lone surrogate), or :class:`InputError`."""
    if not isinstance(value, str):
        raise InputError(f"{fn}: {name} must be a string (got {type(value).__name__})")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(f"{fn}: {name} must be valid Unicode text: it holds a lone "
                         f"surrogate U+{ord(value[exc.start]):04X} at character {exc.start}"
                         ) from None


def _parse_args(raw: str) -> dict[str, Any] | None:
    """The call's arguments as a JSON object, or None when they are not one."""
    try:
        parsed = json.loads(raw) if raw.strip() else {}
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _unhandled(invoke: _Invoke) -> _Invoke | None:
    """The SDK's invocation of a ``@function_tool`` without its failure handling (it parses
    and validates the arguments, then calls the function: either raises), or None when
    ``invoke`` is not the SDK's (a ``FunctionTool`` built by hand)."""
    if not isinstance(invoke, _FailureHandlingFunctionToolInvoker):
        return None
    inner = getattr(invoke, "_invoke_tool_impl", None)
    return inner if callable(inner) else None


class _Guard:
    """A guarded tool's ``on_invoke_tool`` (and, through :meth:`needs_approval`, its
    approval policy): every call goes through the engine."""

    def __init__(self, engine: Engine, agent: str, tool: str, invoke: _Invoke, *,
                 confidence: float | None, on_error: ToolErrorFunction | None,
                 schema: Mapping[str, Any], strict: bool, approvals: bool,
                 sdk_tool: FunctionTool | None = None) -> None:
        self.engine = engine
        self.agent = agent
        self.tool = tool  # the name buddy's catalogue knows it by
        #: what LIVE runs: the SDK's invocation without its failure handling when the tool
        #: is a ``@function_tool`` (so a failure reaches buddy), else its own
        self.invoke = _unhandled(invoke) or invoke
        #: the SDK's failure handling, applied after buddy recorded a failure (None: the
        #: tool's own on_invoke_tool handles its failures itself)
        self.sdk_invoker = invoke if self.invoke is not invoke else None
        self.sdk_tool = sdk_tool  # the guarded copy, whose failure policy the SDK reads
        self.confidence = confidence
        self.on_error = on_error
        self.schema = schema  # the SDK tool's params_json_schema
        self.strict = strict
        self.approvals = approvals  # buddy's needs_approval is the tool's (or-ed in)
        self._registered = False
        #: calls decided by needs_approval that need no person, run when the SDK calls
        self._decided: dict[str, PendingCall] = {}
        self._tickets: dict[str, str] = {}  # key -> id of the tickets opened here

    def key(self, call_id: str) -> str:
        return _idempotency_key(self.agent, self.tool, call_id)

    def check_arguments(self, args: Mapping[str, Any]) -> None:
        """:class:`UnknownArgumentsError` naming the keys of ``args`` the tool does not take
        (when its schema forbids other properties): the SDK would drop them, and the
        tool run without what was approved and recorded."""
        extra = _extra_keys(self.schema, self.strict, args)
        if extra:
            takes = ", ".join(self.schema["properties"]) or "no arguments"
            raise UnknownArgumentsError(
                f"{self.tool} does not take {', '.join(extra)} (it takes: {takes})")

    def register(self) -> None:
        """Give the engine the tool's LIVE handler, once the tool is in its catalogue
        (until then the engine refuses the tool, and it never runs)."""
        engine = self.engine
        if not self._registered and self.tool in engine.registry:
            kept = engine.handlers(self.tool)  # a mock, dry-run or undo given stays
            engine.register_handler(self.tool, mock=kept.mock, dry_run=kept.dry_run,
                                    live=_live, undo=kept.undo)
            self._registered = True

    # -- asking ---------------------------------------------------------------
    def ticket(self, call_id: str) -> Ticket | None:
        """buddy's ticket for this call, if one was opened; records nothing. Found by
        its key in the log when this guard did not open it (after a restart on a
        file audit log, say)."""
        key = self.key(call_id)
        known = self._tickets.get(key)
        if known is not None:
            return self.engine.ticket(known)
        found = next((t for t in self.engine.tickets(status=None) if t.key == key), None)
        if found is not None:
            self._tickets[key] = found.id
        return found

    async def needs_approval(self, ctx: RunContextWrapper[Any], params: dict[str, Any],
                             call_id: str) -> bool:
        """True exactly when buddy's decision for this call waits for a person; its
        ticket is then opened (once per call id)."""
        if not _waits_for_person(self.engine, self.agent, self.tool, self.confidence, params):
            return False
        if self.ticket(call_id) is not None:
            return True
        pending = self.engine.prepare(self.agent, self.tool, params,
                                      confidence=self.confidence, wait=True,
                                      idempotency_key=self.key(call_id))
        if pending.ticket is not None:
            self._tickets[self.key(call_id)] = pending.ticket.id
        if pending.waiting:
            return True
        # Decided in between (a grant, say): no person is needed, and the SDK now calls
        # the tool; the call decided here is the one that runs.
        self._decided[self.key(call_id)] = pending
        return False

    # -- running ----------------------------------------------------------------
    async def __call__(self, ctx: ToolContext[Any], raw_args: str) -> Any:
        args = _parse_args(raw_args)
        if args is None:
            return (f"buddy refused {self.tool}: its arguments are not a JSON object; "
                    "the tool did not run")
        self.register()
        call_id = ctx.tool_call_id
        key = self.key(call_id)
        token = _CURRENT.set((ctx, self))
        try:
            decided = self._decided.pop(key, None)
            # The SDK calls a tool that asked for approval only once it is approved; only
            # such a call can have a ticket (any other keyed call is told by the engine).
            approved = decided is None and ctx.is_tool_approved(ctx.tool_name, call_id) is True
            ticket = self.ticket(call_id) if approved else None
            always = approved and ctx.is_tool_approved(ctx.tool_name, _ANY_CALL) is True
            if decided is not None:
                result = await decided.arun()
            elif ticket is not None:
                answer = await self._resume(ticket, always=always)
                if isinstance(answer, str):
                    return answer
                result = answer
            elif always and self.approvals:
                # approved with every call of the tool: needs_approval was not asked, so
                # no ticket was opened; one is, and the SDK's standing approval recorded
                answer = await self._approved_always(args, key)
                if isinstance(answer, str):
                    return answer
                result = answer
            else:
                result = await self.engine.aexecute(self.agent, self.tool, args,
                                                    confidence=self.confidence,
                                                    idempotency_key=key)
        finally:
            _CURRENT.reset(token)
        return await self._answer(ctx, result)

    async def _resume(self, ticket: Ticket, *, always: bool = False) -> ExecutionResult | str:
        """Run (or close) the call of a ticket the SDK approved: an approval no one
        gave through buddy is recorded here as :data:`SDK_APPROVER`'s (or
        :data:`SDK_ALWAYS_APPROVER`'s, when the SDK approves every call of the tool)."""
        engine = self.engine
        if ticket.status == "pending":
            by, how = (SDK_ALWAYS_APPROVER, "state.approve, always_approve=True") if always \
                else (SDK_APPROVER, "state.approve")
            try:
                engine.approve(ticket.id, by=by,
                               reason=f"approved in the OpenAI Agents SDK ({how})")
            except TicketError:
                pass  # expired, or answered meanwhile: resuming closes or runs it as it is
        try:
            return await engine.aresume(ticket.id)
        except TicketError as exc:
            return f"buddy did not run {self.tool}: {exc}"

    async def _approved_always(self, args: Mapping[str, Any], key: str,
                               ) -> ExecutionResult | str:
        """A call the SDK ran without asking, its tool approved for every call: buddy
        decides it as any other; when that waits for a person, its ticket is opened and
        approved as :data:`SDK_ALWAYS_APPROVER`'s (a person chose to approve them all)."""
        pending = self.engine.prepare(self.agent, self.tool, args, confidence=self.confidence,
                                      wait=True, idempotency_key=key)
        if pending.ticket is None or not pending.waiting:
            return await pending.arun()
        self._tickets[key] = pending.ticket.id
        return await self._resume(pending.ticket, always=True)

    async def _answer(self, ctx: ToolContext[Any], result: ExecutionResult) -> Any:
        """What the model gets back."""
        decision = result.decision
        if result.mode is ExecutionMode.LIVE:
            if result.ok:
                return result.result
            if isinstance(result.exception, UnknownArgumentsError):
                return f"buddy refused {self.tool}: {result.exception}; the tool did not run"
            if result.exception is not None and self.on_error is not None:
                message = self.on_error(ctx, result.exception)  # type: ignore[arg-type]
                return await message if inspect.isawaitable(message) else message
            if result.exception is not None:
                return await self._failed(ctx, result.exception, result.args)
            return f"buddy ran {self.tool} and it failed: {result.error}"
        if not decision.allowed or result.mode is None:
            why = result.error or decision.reason
            return f"buddy refused {self.tool}: {why} (rule {decision.rule}); the tool did not run"
        mode = result.mode.value
        return (f"buddy ran {self.tool} in {mode} only (simulated, nothing was done): "
                f"{decision.reason}")

    async def _failed(self, ctx: ToolContext[Any], error: BaseException,
                      args: Mapping[str, Any] | None) -> Any:
        """What the model gets for a LIVE run that raised (buddy recorded it failed): what
        the SDK's failure handling would give it, or the error raised on when the tool's
        policy is to raise (or the tool handles its failures itself)."""
        invoker, tool = self.sdk_invoker, self.sdk_tool
        if invoker is None or tool is None:
            raise error
        message = await maybe_invoke_function_tool_failure_error_function(
            function_tool=tool, context=ctx, error=error)
        if message is None:
            raise error
        handled = getattr(invoker, "_on_handled_error", None)  # the SDK's trace and log
        if callable(handled) and isinstance(error, Exception):
            handled(tool, error, json.dumps(dict(args or {})), ctx)
        return message


def _guard_of(tool: FunctionTool) -> _Guard | None:
    invoke = tool.on_invoke_tool
    return invoke if isinstance(invoke, _Guard) else None


def guard_function_tool(tool: FunctionTool, engine: Engine, *, agent: str,
                        confidence: float | None = None, name: str | None = None,
                        approvals: bool = True) -> FunctionTool:
    """A copy of ``tool`` whose calls go through ``engine``.

    Parameters
    ----------
    tool:
        A ``FunctionTool`` (from ``@function_tool``); it is not changed.
    engine:
        The buddy engine that decides, runs and records each call.
    agent:
        The agent name buddy decides for.
    confidence:
        The confidence of every call; None: the engine's provider or defaults.
    name:
        The tool's name in buddy's catalogue (default: the SDK tool's name).
    approvals:
        True (default): the copy's ``needs_approval`` asks buddy too
        (:func:`buddy_needs_approval`), or-ed with the tool's own setting, so
        a call buddy wants a person for stops the run. False: the tool's own
        setting is kept, and a call buddy wants a person for is asked of the
        engine's approver (none: it runs DRY_RUN at most).

    Returns
    -------
    FunctionTool
        The guarded copy: same name, description and schema.

    Raises
    ------
    InputError
        ``tool`` is not a ``FunctionTool``, or ``agent`` is not a non-empty string.
    """
    if not isinstance(tool, FunctionTool):
        raise InputError(f"guard_function_tool: tool must be an Agents SDK FunctionTool "
                         f"(got {type(tool).__name__})")
    if _guard_of(tool) is not None:
        raise InputError(f"guard_function_tool: {tool.name} is already guarded by buddy")
    if not isinstance(agent, str) or not agent:
        raise InputError(f"guard_function_tool: agent must be a non-empty string (got {agent!r})")
    guarded = copy.copy(tool)
    # A @function_tool's failures reach buddy (a failed LIVE run); the model is then told
    # what the tool's failure policy says, as the SDK would.
    guard = _Guard(engine, agent, name or tool.name, guarded.on_invoke_tool,
                   confidence=confidence, on_error=None, schema=tool.params_json_schema,
                   strict=tool.strict_json_schema, approvals=approvals, sdk_tool=guarded)
    guarded.on_invoke_tool = guard
    guard.register()
    if approvals:
        guarded.needs_approval = _either(tool.needs_approval, guard.needs_approval)
    return guarded


def _either(own: bool | NeedsApproval, buddys: NeedsApproval) -> NeedsApproval:
    """The tool's own approval setting or-ed with buddy's: never fewer approvals. buddy's
    is asked even when the tool's says yes, so a call buddy wants a person for has its
    ticket, and the person's answer in the SDK is recorded on it."""
    if own is False:
        return buddys

    async def needs_approval(ctx: RunContextWrapper[Any], params: dict[str, Any],
                             call_id: str) -> bool:
        if own is True:
            mine = True
        else:
            said = own(ctx, params, call_id)
            mine = bool(await said if inspect.isawaitable(said) else said)
        return await buddys(ctx, params, call_id) or mine

    return needs_approval


def buddy_function_tool(engine: Engine, *, agent: str, confidence: float | None = None,
                        name: str | None = None,
                        failure_error_function: ToolErrorFunction | None =
                        default_tool_error_function,
                        **function_tool_kwargs: Any) -> Callable[[Callable[..., Any]],
                                                                 FunctionTool]:
    """``@function_tool`` and :func:`guard_function_tool` in one decorator.

    The tool's exceptions reach buddy (recorded as a failed LIVE run), then the
    model gets ``failure_error_function(ctx, error)`` (the SDK's default message;
    None: the exception is raised, failing the run). Other keywords go to
    ``function_tool`` (``needs_approval`` among them, or-ed with buddy's).
    """
    def decorate(func: Callable[..., Any]) -> FunctionTool:
        tool = function_tool(func, failure_error_function=None, **function_tool_kwargs)
        guarded = guard_function_tool(tool, engine, agent=agent, confidence=confidence,
                                      name=name)
        guard = _guard_of(guarded)
        assert guard is not None
        guard.on_error = failure_error_function
        return guarded

    return decorate


def _waits_for_person(engine: Engine, agent: str, tool: str, confidence: float | None,
                      args: Mapping[str, Any]) -> bool:
    """Whether buddy's decision for this call now waits for a person (records nothing)."""
    explanation = engine.check(agent, tool, confidence, args=args)
    return explanation.decision.state is ExecutionState.AWAITING_APPROVAL


def buddy_needs_approval(engine: Engine, *, agent: str, tool: str,
                         confidence: float | None = None) -> NeedsApproval:
    """A ``needs_approval`` for ``function_tool(needs_approval=...)``: True exactly when
    buddy's decision for the call waits for a person (``engine.check``: it records
    nothing). ``tool`` is the tool's name in buddy's catalogue (the SDK does not
    say which tool it asks about).

    This only asks. A tool guarded with :func:`guard_function_tool` has it already,
    and more: the call's ticket is opened, the answer recorded on it, and the call
    run through buddy.

    >>> from buddy.engine import Engine
    >>> engine = Engine.default(clock=lambda: 0.0)
    >>> ask = buddy_needs_approval(engine, agent="a1", tool="msgraph_send_email",
    ...                            confidence=0.9)
    >>> import asyncio; asyncio.run(ask(None, {"to": "ann@example.com"}, "call-1"))
    True
    >>> engine.tickets(status=None)
    []
    """
    for name, value in (("agent", agent), ("tool", tool)):
        if not isinstance(value, str) or not value:
            raise InputError(f"buddy_needs_approval: {name} must be a non-empty string "
                             f"(got {value!r})")

    async def needs_approval(ctx: RunContextWrapper[Any], params: dict[str, Any],
                             call_id: str) -> bool:
        return _waits_for_person(engine, agent, tool, confidence, params)

    return needs_approval


# -- answering an interruption ---------------------------------------------------------
def _item_guard(item: ToolApprovalItem) -> tuple[_Guard, str]:
    """The guard of the tool an approval item asks about, and the call's id."""
    if not isinstance(item, ToolApprovalItem):
        raise InputError(f"item must be a ToolApprovalItem from result.interruptions "
                         f"(got {type(item).__name__})")
    tools = getattr(item.agent, "tools", None) or []
    guard = next((g for t in tools if isinstance(t, FunctionTool) and t.name == item.tool_name
                  and (g := _guard_of(t)) is not None), None)
    if guard is None:
        raise InputError(f"{item.tool_name} is not a tool guarded by buddy: answer it with "
                         "state.approve / state.reject")
    call_id = item.call_id
    if not call_id:
        raise InputError(f"the approval item of {item.tool_name} has no call id")
    return guard, call_id


def _check_answer(fn: str, by: object, reason: object) -> None:
    """Who answers and why: text buddy can record, or :class:`InputError` naming it."""
    if not isinstance(by, str) or not by:
        raise InputError(f"{fn}: by must be a non-empty string (got {by!r})")
    _check_text(fn, "by", by)
    _check_text(fn, "reason", reason)


def approve(state: RunState[Any, Any], item: ToolApprovalItem, *, by: str,
            args: Mapping[str, Any] | None = None, reason: str = "") -> Ticket | None:
    """Approve one interruption on buddy's ticket (who, why, edited ``args``), then
    in the SDK (``state.approve(item)``). Resume with ``Runner.run(agent, state)``:
    the tool runs once, with ``args`` if given.

    Returns the ticket. Raises :class:`InputError` when the item's tool is not
    guarded by buddy, ``by`` is not a non-empty string, ``by`` or ``reason`` is not
    valid Unicode text (a lone surrogate, from a JSON body), or ``args`` has keys the
    tool does not take (its schema forbids other properties); and the engine's error
    when the ticket cannot be approved (denied or expired). Raised, nothing is
    recorded and the SDK's state is left as it was.
    """
    guard, call_id = _item_guard(item)
    _check_answer("approve", by, reason)
    if args is not None:
        if not isinstance(args, Mapping):
            raise InputError(f"approve: args must be a mapping (got {type(args).__name__})")
        try:
            guard.check_arguments(args)
        except UnknownArgumentsError as exc:
            raise UnknownArgumentsError(f"approve: {exc}") from None
    ticket = guard.ticket(call_id)
    answered = None
    if ticket is not None:
        answered = guard.engine.approve(ticket.id, by=by, args=args, reason=reason)
    elif args is not None:
        raise InputError(f"approve: buddy holds no ticket for {guard.tool} (call {call_id}), "
                         "so its arguments cannot be edited")
    state.approve(item)
    return answered


def reject(state: RunState[Any, Any], item: ToolApprovalItem, *, by: str,
           reason: str = "") -> Ticket | None:
    """Deny one interruption on buddy's ticket (who, why), then in the SDK
    (``state.reject(item)``, the model told who rejected it and why). The tool never
    runs. Returns the ticket (None when buddy held none for the call). Raises as
    :func:`approve` does, leaving the SDK's state as it was."""
    guard, call_id = _item_guard(item)
    _check_answer("reject", by, reason)
    ticket = guard.ticket(call_id)
    answered = None
    if ticket is not None:
        answered = guard.engine.deny(ticket.id, reason, by=by)
    why = f": {reason}" if reason else ""
    state.reject(item, rejection_message=f"{by} rejected {guard.tool}{why}; it did not run")
    return answered


def apply_answers(state: RunState[Any, Any]) -> list[Ticket]:
    """Carry the answers given to buddy's tickets elsewhere (``engine.approve`` /
    ``engine.deny`` from another process, an HTTP handler, ``buddy tickets``) onto
    the SDK's stopped run: each interruption whose ticket is approved is approved in
    ``state``, one denied or expired is rejected (the model told why). Interruptions
    still waiting, or of tools not guarded by buddy, are left as they are. Returns
    the tickets applied; resume with ``Runner.run(agent, state)``.
    """
    applied = []
    for item in state.get_interruptions():
        try:
            guard, call_id = _item_guard(item)
        except InputError:
            continue
        ticket = guard.ticket(call_id)
        if ticket is None or ticket.status == "pending":
            continue
        if ticket.status == "expired":
            why = "its ticket expired before it ran"
        elif ticket.answer == "approve":
            state.approve(item)
            applied.append(ticket)
            continue
        else:
            reason = f": {ticket.answer_reason}" if ticket.answer_reason else ""
            why = f"{ticket.by} denied it{reason}"
        state.reject(item, rejection_message=f"buddy did not run {guard.tool}: {why}")
        applied.append(ticket)
    return applied
