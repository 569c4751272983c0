"""buddy inside LangGraph: a tool node whose every call goes through the engine.

Needs the ``langgraph`` extra (``pip install 'buddy[langgraph]'``)::

    from buddy.engine.adapters.langgraph import guarded_tool_node
    tools = guarded_tool_node([memory_search, msgraph_send_email], engine, agent="agent-1")
    builder.add_node("tools", tools)              # in place of ToolNode([...])

Each tool call the model makes is decided by buddy before anything runs:

- allowed LIVE: the tool runs, through LangGraph's own execution (injected state,
  runtime and argument validation as in a plain ``ToolNode``);
- DRY_RUN or MOCK: the tool does not run; a message says the call was simulated
  and by which rule (a ``dry_run``/``mock`` substitute runs if one was given);
- refused (an unknown tool, a denial, a lock, a rate limit...): the tool does not
  run; an error message carries buddy's reason and rule;
- waiting for a person: the call is a buddy ticket and the graph pauses with
  ``interrupt({"buddy_ticket": ...})``. Resume it with
  ``Command(resume={"approve": True, "by": "alice"})`` (optionally ``"args"``: the
  edited arguments, ``"reason"``) or ``{"approve": False, "reason": "..."}``, or
  answer the ticket elsewhere (``engine.approve(ticket_id, by=...)`` from another
  process or an HTTP handler) and resume with ``Command(resume={})``. An answer
  that is not one of these (or one the engine refuses, such as a ``by`` that is not
  printable text) is a denial naming the problem (fail closed).

When other calls of the model's message have tickets too, an answer must name its
ticket (``"ticket": "ticket-7"``); one naming none (well formed or not) is not
applied, and the graph asks again (the question says so, and ``"waiting"`` lists the
tickets waiting): LangGraph hands resume values to a node's ``interrupt()`` calls by
order, hands them again each time it re-runs the node, and a node runs its calls in
parallel, so an unnamed answer could reach another call's ticket.

Every call carries an idempotency key (a digest of the thread id and the tool call's
id): LangGraph re-runs a whole node after a resume, and the calls of that node that
already ran return their first result instead of running again; a ticket is found
again, not asked twice. Arguments holding a key the tool does not take (a person's
edit adding ``bcc``, say) are refused and nothing runs: the tool would never see it,
and the audit would record it as run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any

from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool, Tool
from langchain_core.tools import tool as as_tool
from langgraph.errors import GraphBubbleUp
from langgraph.prebuilt import ToolNode
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.types import Command, interrupt

from buddy.engine.core import Engine, ExecutionResult
from buddy.rules.base import ExecutionMode
from buddy.rules.base._masking import described, shown
from buddy.rules.base.errors import BuddyError, InputError

__all__ = ["ToolFailed", "ToolGuard", "guarded_tool_node"]

Execute = Callable[[ToolCallRequest], ToolMessage | Command]
AsyncExecute = Callable[[ToolCallRequest], Awaitable[ToolMessage | Command]]

_ANSWER_KEYS = frozenset({"ticket", "approve", "by", "args", "reason"})


class ToolFailed(Exception):
    """A tool's run that LangGraph turned into an error message (bad arguments, an
    error ``handle_tool_errors`` caught): buddy records the run as failed, and the
    model gets LangGraph's message (:attr:`message`)."""

    def __init__(self, message: ToolMessage) -> None:
        super().__init__(_text(message.content))
        self.message = message


class _Call:
    """The tool call being guarded, as the LIVE handler needs it: LangGraph's request
    and execute callable (sync or async), and the message the tool's run produced."""

    __slots__ = ("name", "request", "execute", "aexecute", "output")

    def __init__(self, name: str, request: ToolCallRequest, execute: Execute | None,
                 aexecute: AsyncExecute | None) -> None:
        self.name = name
        self.request = request
        self.execute = execute
        self.aexecute = aexecute
        self.output: ToolMessage | Command | None = None


class _Untaken(InputError):
    """Arguments holding keys the tool does not take: refused, nothing runs."""

    def __init__(self, tool: str, stray: list[str], taken: frozenset[str]) -> None:
        super().__init__(
            f"buddy refused {tool!r}: its arguments hold {', '.join(map(repr, stray))}, "
            f"which it does not take (it takes: {', '.join(sorted(taken)) or 'nothing'}); "
            "it was not run")


_CURRENT: ContextVar[_Call | None] = ContextVar("buddy_langgraph_call", default=None)


def _text(content: Any) -> str:
    return content if isinstance(content, str) else json.dumps(content, default=str)


def _content(output: ToolMessage | Command) -> Any:
    """What the audit records of a tool's run: its message's content."""
    return output.content if isinstance(output, ToolMessage) else repr(output)


def _ran(call: _Call, output: ToolMessage | Command) -> Any:
    call.output = output
    if isinstance(output, ToolMessage) and output.status == "error":
        raise ToolFailed(output)
    return _content(output)


def _live_handler(tool: BaseTool) -> Callable[[dict[str, Any]], Any]:
    """The LIVE handler buddy runs for ``tool``: LangGraph's own execution of the call
    being guarded (with the arguments buddy runs it with: a person may have edited
    them), or, outside a graph (``engine.resume`` called by the host), the tool itself.

    Arguments holding a key the tool does not take are refused, and nothing runs (the
    run is recorded failed): the tool's schema would drop the key silently, and the
    audit would record a run with arguments the tool never saw."""
    name = tool.name
    taken = _taken(tool)

    def live(args: dict[str, Any]) -> Any:
        if taken is not None and not taken.issuperset(args):
            raise _Untaken(name, sorted(set(args) - taken), taken)
        call = _CURRENT.get()
        if call is None or call.name != name:
            return tool.invoke(args)
        request = call.request.override(tool_call={**call.request.tool_call, "args": args})
        if call.aexecute is not None:
            return _alive(call, call.aexecute, request)
        assert call.execute is not None
        return _ran(call, call.execute(request))

    return live


async def _alive(call: _Call, aexecute: AsyncExecute, request: ToolCallRequest) -> Any:
    return _ran(call, await aexecute(request))


def _taken(tool: BaseTool) -> frozenset[str] | None:
    """The argument names ``tool`` takes from a tool call (its call schema's fields, by
    name or alias; arguments LangGraph injects are not among them), or None when every
    key reaches it (a JSON-schema ``args_schema``, a model allowing extra fields, a
    single-input ``Tool``)."""
    if isinstance(tool, Tool):
        return None
    schema, full = tool.tool_call_schema, tool.get_input_schema()
    if not isinstance(schema, type) or _extra_allowed(full) or _extra_allowed(schema):
        return None
    fields, full_fields = _fields(schema), _fields(full)
    keys = set(fields)
    for field in fields:
        alias = getattr(full_fields.get(field), "alias", None)
        if type(alias) is str:
            keys.add(alias)
    return frozenset(keys)


def _fields(model: Any) -> dict[str, Any]:
    """A pydantic model's fields (v2, or v1 as LangChain still takes)."""
    fields = getattr(model, "model_fields", None)
    if fields is None:
        fields = getattr(model, "__fields__", None)
    return dict(fields) if isinstance(fields, Mapping) else {}


def _extra_allowed(model: Any) -> bool:
    config = getattr(model, "model_config", None)
    if isinstance(config, Mapping):
        return bool(config.get("extra") == "allow")
    return bool(getattr(getattr(model, "__config__", None), "extra", None) == "allow")


class ToolGuard:
    """LangGraph's ``wrap_tool_call``/``awrap_tool_call`` pair that puts every tool call
    through ``engine`` (what :func:`guarded_tool_node` builds its node with).

    Registers a LIVE handler for each of ``tools`` with the engine (each tool must be
    in the engine's catalogue); ``mock``, ``dry_run`` and ``undo`` map tool names to
    substitutes (see ``Engine.register_handler``). Adds LangGraph's pause signal
    (``GraphBubbleUp``, which ``interrupt()`` raises) to ``engine.pass_through``, so
    an engine approver that calls ``interrupt()`` pauses the graph, not denies the call.

    ``approvals="interrupt"`` (the default) turns a call that waits for a person into
    a ticket and an ``interrupt()``; ``approvals="approver"`` leaves the answer to the
    engine's approver callback (and its grants), as ``engine.execute`` does.

    A tool that calls ``interrupt()`` itself is not supported under the guard: the
    engine records its pause as a failed LIVE run, and the key keeps that result.
    """

    def __init__(self, engine: Engine, *, agent: str,
                 tools: Sequence[BaseTool | Callable[..., Any]] = (),
                 confidence: float | None = None, approvals: str = "interrupt",
                 expires_in: float | None = 86400.0,
                 mock: Mapping[str, Callable[..., Any]] | None = None,
                 dry_run: Mapping[str, Callable[..., Any]] | None = None,
                 undo: Mapping[str, Callable[..., Any]] | None = None) -> None:
        if not isinstance(engine, Engine):
            raise InputError(f"engine must be a buddy Engine (got {shown(engine)})")
        if type(agent) is not str or not agent:
            raise InputError(f"agent must be a non-empty string (got {shown(agent)})")
        if confidence is not None and (isinstance(confidence, bool) or
                                       not isinstance(confidence, int | float) or
                                       not 0.0 <= confidence <= 1.0):
            raise InputError(f"confidence must be a number in [0, 1] or None "
                             f"(got {shown(confidence)})")
        if expires_in is not None and (isinstance(expires_in, bool) or
                                       not isinstance(expires_in, int | float) or
                                       not 0 < expires_in < math.inf):
            raise InputError(f"expires_in must be a finite number of seconds > 0, or None "
                             f"(got {shown(expires_in)})")
        if approvals not in ("interrupt", "approver"):
            raise InputError(f"approvals must be 'interrupt' or 'approver' "
                             f"(got {shown(approvals)})")
        self.engine = engine
        self.agent = agent
        self.confidence = None if confidence is None else float(confidence)
        self.approvals = approvals
        self.expires_in = expires_in
        subs = {"mock": mock or {}, "dry_run": dry_run or {}, "undo": undo or {}}
        self.tools: list[BaseTool] = [t if isinstance(t, BaseTool) else as_tool(t)
                                      for t in tools]
        tools_ = self.tools
        names = {t.name for t in tools_}
        for kind, given in subs.items():
            stray = sorted(set(given) - names)
            if stray:
                raise InputError(f"{kind} names tools that are not guarded here: "
                                 f"{', '.join(map(repr, stray))}")
        unknown = [t.name for t in tools_ if t.name not in engine.registry]
        if unknown:
            raise InputError(
                f"tools not in buddy's catalogue: {', '.join(map(repr, unknown))} (register a "
                "ToolContract for each with engine.registry.register first)")
        for t in tools_:
            engine.register_handler(t.name, live=_live_handler(t), mock=subs["mock"].get(t.name),
                                    dry_run=subs["dry_run"].get(t.name),
                                    undo=subs["undo"].get(t.name))
        if not any(issubclass(GraphBubbleUp, held) for held in engine.pass_through):
            engine.pass_through = (*engine.pass_through, GraphBubbleUp)

    # -- the wrappers LangGraph calls -----------------------------------------
    def wrap_tool_call(self, request: ToolCallRequest, execute: Execute) -> ToolMessage | Command:
        """Guard one tool call (``ToolNode(..., wrap_tool_call=guard.wrap_tool_call)``)."""
        call = _Call(request.tool_call["name"], request, execute, None)
        token = _CURRENT.set(call)
        try:
            refused = self._malformed(request)
            if refused is not None:
                return refused
            result, ticket = self._run(request)
        finally:
            _CURRENT.reset(token)
        return self._message(request, result, call, ticket)

    async def awrap_tool_call(self, request: ToolCallRequest,
                              execute: AsyncExecute) -> ToolMessage | Command:
        """:meth:`wrap_tool_call` for a graph run with ``ainvoke``/``astream``."""
        call = _Call(request.tool_call["name"], request, None, execute)
        token = _CURRENT.set(call)
        try:
            refused = self._malformed(request)
            if refused is not None:
                return refused
            result, ticket = await self._arun(request)
        finally:
            _CURRENT.reset(token)
        return self._message(request, result, call, ticket)

    # -- one call ---------------------------------------------------------------
    def _malformed(self, request: ToolCallRequest) -> ToolMessage | None:
        call = request.tool_call
        if not call.get("id"):
            # Without an id a re-run after a resume could not be told from a new call.
            return _error(request, f"buddy refused {call.get('name')!r}: the tool call has "
                                   "no id, so it could not be run at most once")
        return None

    def _key(self, request: ToolCallRequest) -> str:
        """The call's idempotency key: a digest of its thread id and its tool call id
        (see :func:`_call_key`)."""
        return _call_key(_thread(request), request.tool_call["id"])

    def _run(self, request: ToolCallRequest) -> tuple[ExecutionResult, str | None]:
        """The call's result, and the id of its ticket when it waited for a person."""
        call, engine = request.tool_call, self.engine
        if self.approvals == "approver":  # a pause by the approver gives the key back
            return engine.execute(self.agent, call["name"], call["args"],
                                  confidence=self.confidence,
                                  idempotency_key=self._key(request)), None
        pending = engine.prepare(self.agent, call["name"], call["args"],
                                 confidence=self.confidence, wait=True,
                                 expires_in=self.expires_in, idempotency_key=self._key(request))
        if pending.ticket is None:
            return pending.run(), None
        ticket = self._settle(engine.ticket(pending.ticket.id), request)
        return engine.resume(ticket.id), ticket.id

    async def _arun(self, request: ToolCallRequest) -> tuple[ExecutionResult, str | None]:
        call, engine = request.tool_call, self.engine
        if self.approvals == "approver":
            return await engine.aexecute(self.agent, call["name"], call["args"],
                                         confidence=self.confidence,
                                         idempotency_key=self._key(request)), None
        pending = engine.prepare(self.agent, call["name"], call["args"],
                                 confidence=self.confidence, wait=True,
                                 expires_in=self.expires_in, idempotency_key=self._key(request))
        if pending.ticket is None:
            return await pending.arun(), None
        ticket = self._settle(engine.ticket(pending.ticket.id), request)
        return await engine.aresume(ticket.id), ticket.id

    # -- approvals through interrupt() -----------------------------------------
    def _settle(self, ticket: Any, request: ToolCallRequest) -> Any:
        """Pause the graph until ``ticket`` is answered (approved, denied, expired or
        already resumed); the ticket then. Each pass asks ``interrupt()``: on the graph's
        first run it pauses; when LangGraph re-runs the node after a resume it returns
        the answer, which is applied.

        LangGraph hands resume values to the ``interrupt()`` calls of one node by their
        order (and again, in order, each time it re-runs the node), and a node runs its
        tool calls in parallel: an answer naming no ticket is applied only while this
        call's ticket is the one ticket of the node's calls (see :meth:`_answer`); else
        it must name its ticket (``{"ticket": "ticket-7", ...}``), and the question says
        so. An answer naming a ticket is applied to that ticket, whichever call got it.
        """
        while self._open(ticket):
            others = self._sibling_tickets(request, ticket.id)
            answer = interrupt(_question(ticket, request.tool_call, others))
            ticket = self._answer(ticket.id, answer, request)
        return ticket

    def _open(self, ticket: Any) -> bool:
        """Whether ``ticket`` still takes an answer: pending (the engine says
        ``expired`` once its time is up)."""
        return bool(ticket.status == "pending")

    def _sibling_tickets(self, request: ToolCallRequest, own: str) -> list[Any] | None:
        """The tickets (any status) of the other tool calls of the model's message that
        made this call, found by their keys; None when that message cannot be found."""
        call_id = request.tool_call["id"]
        calls = None if call_id is None else _sibling_calls(request.state, call_id)
        if calls is None:
            return None
        thread = _thread(request)
        keys = {_call_key(thread, c["id"]) for c in calls
                if c.get("id") and c["id"] != call_id}
        if not keys:
            return []
        return [t for t in self.engine.tickets(None) if t.key in keys and t.id != own]

    def _answer(self, own: str, answer: Any, request: ToolCallRequest) -> Any:
        """Apply a resume value; this call's ticket as it is then.

        No answer (None, ``{}``) applies nothing (the ticket may have been answered
        elsewhere). An answer naming a ticket of this node's calls (``"ticket"``; in this
        thread, never another's) is applied to it. One naming
        none is applied to this call's ticket when no other call of the node has a
        ticket, and else not at all (the graph asks again): LangGraph may hand it to any
        of the node's waiting calls, and hands it again on each re-run of the node. An
        answer that is not well formed denies the ticket it is for, naming the problem
        (fail closed), as does one the engine refuses (a ``by`` that is not printable
        text...).
        """
        engine = self.engine
        if answer is None or answer == {}:
            return engine.ticket(own)
        target = answer.get("ticket") if isinstance(answer, Mapping) else None
        if target is None:
            if self._sibling_tickets(request, own) != []:
                return engine.ticket(own)
            target = own
        elif target != own and target not in {
                t.id for t in self._sibling_tickets(request, own) or ()}:
            # Not a ticket of this node's calls (another thread's, say): not applied here.
            return engine.ticket(own)
        problem = _bad_answer(answer)
        try:
            if self._open(engine.ticket(target)):
                if problem is not None:
                    engine.deny(target, f"resume value {problem}", by="buddy")
                elif answer["approve"] is True:
                    engine.approve(target, by=answer["by"], args=answer.get("args"),
                                   reason=answer.get("reason", ""))
                else:
                    engine.deny(target, answer.get("reason", "denied on resume"),
                                by=answer.get("by") or "someone")
        except BuddyError as exc:
            # Answered meanwhile (another process), or expired: it takes no answer. Still
            # open means the answer itself was refused: deny the call (fail closed).
            with contextlib.suppress(BuddyError):  # answered or expired since: asked again
                if self._open(engine.ticket(target)):
                    engine.deny(target, f"resume value refused: {described(exc)}", by="buddy")
        return engine.ticket(own)

    # -- what the model sees ------------------------------------------------------
    def _message(self, request: ToolCallRequest, result: ExecutionResult, call: _Call,
                 ticket_id: str | None) -> ToolMessage | Command:
        name = request.tool_call["name"]
        decision = result.decision
        if result.ok and result.mode is ExecutionMode.LIVE:
            if call.output is not None:
                return call.output
            # The first run's result (a duplicate of a call that already ran).
            return ToolMessage(content=_text(result.result), name=name,
                               tool_call_id=request.tool_call["id"])
        if result.ok:
            return ToolMessage(
                content=f"buddy: {name!r} was not run; {result.mode.value if result.mode else ''}"
                        f" simulated it ({decision.reason}; rule {decision.rule}). "
                        f"Simulated result: {_text(result.result)}",
                name=name, tool_call_id=request.tool_call["id"],
                artifact=_artifact(result))
        exc = result.exception
        if isinstance(exc, ToolFailed):
            return exc.message
        if isinstance(exc, _Untaken):
            return _error(request, str(exc), result)
        if exc is not None and result.mode is ExecutionMode.LIVE:
            raise exc  # the tool's own error, handled as LangGraph handles it
        why = result.error or decision.reason
        ticket = self.engine.ticket(ticket_id) if ticket_id is not None else None
        if ticket is not None and ticket.answer == "deny" and ticket.answer_reason not in why:
            why = f"{why} (denied by {ticket.by}: {ticket.answer_reason or 'no reason given'})"
        if not decision.allowed:
            return _error(request, f"buddy refused {name!r}: {why} (rule {decision.rule})",
                          result)
        return _error(request, f"buddy: {name!r} did not run: {why}", result)


def _artifact(result: ExecutionResult) -> dict[str, Any]:
    d = result.decision
    return {"buddy": {"context": result.context,
                      "mode": result.mode.value if result.mode else None,
                      "rule": d.rule, "reason": d.reason, "ok": result.ok}}


def _error(request: ToolCallRequest, text: str,
           result: ExecutionResult | None = None) -> ToolMessage:
    return ToolMessage(content=text, name=request.tool_call.get("name"),
                       tool_call_id=request.tool_call.get("id") or "", status="error",
                       artifact=_artifact(result) if result is not None else None)


def _thread(request: ToolCallRequest) -> str | None:
    """The graph run's thread id, as text (LangGraph's checkpointers read it so)."""
    config = getattr(request.runtime, "config", None) or {}
    thread = (config.get("configurable") or {}).get("thread_id")
    return None if thread is None else str(thread)


def _call_key(thread: str | None, call_id: Any) -> str:
    """The idempotency key of tool call ``call_id`` in ``thread``: ``langgraph:`` and a
    digest (SHA-256, 40 hex digits) of the thread id and the call id.

    Call ids repeat across threads, and either id may hold any text (``:``, newlines, a
    thousand characters): the digest keeps distinct pairs apart, always makes a valid
    key, and is the same for the same pair in every process.

    >>> _call_key("t1", "c1") == _call_key("t1", "c1") != _call_key("t1:c", "1")
    True
    >>> len(_call_key("x" * 1000 + "\\n", "c1"))
    50
    """
    pair = json.dumps([thread, str(call_id)], ensure_ascii=True)
    return "langgraph:" + hashlib.sha256(pair.encode("ascii")).hexdigest()[:40]


def _sibling_calls(state: Any, call_id: str) -> list[dict[str, Any]] | None:
    """The tool calls of the model's message that made ``call_id`` (None: not found)."""
    messages = state.get("messages") if isinstance(state, Mapping) else \
        getattr(state, "messages", state)
    if not isinstance(messages, list):
        return None
    for message in reversed(messages):
        calls = getattr(message, "tool_calls", None)
        if calls and any(c.get("id") == call_id for c in calls):
            return list(calls)
    return None


def _question(ticket: Any, call: Mapping[str, Any], others: list[Any] | None) -> dict[str, Any]:
    """What ``interrupt()`` shows while ``ticket`` waits: the ticket, the tool call, the
    tickets of the node's calls that wait (``"waiting"``, this one first), and how to
    answer: naming the ticket when other calls of the node have tickets (``others``) or
    may have (None: they could not be read)."""
    waiting = [ticket.id, *(t.id for t in others or () if t.status == "pending")]
    head = f"buddy: {call['name']!r} waits for a person (rule {ticket.rule}). "
    if others == []:
        how = ("Resume with {'approve': True, 'by': <who>} (optionally 'args': edited "
               "arguments) or {'approve': False, 'reason': <why>}.")
    else:
        if others is None:
            why = "The other calls of this node could not be read"
        elif len(waiting) > 1:
            why = f"{len(waiting)} calls of this node wait ({', '.join(waiting)})"
        else:
            why = f"Other calls of this node have tickets ({', '.join(t.id for t in others)})"
        named = f"{{'ticket': {ticket.id!r}, "
        how = (f"{why}: an answer must name its ticket. Resume with {named}'approve': True, "
               f"'by': <who>}} (optionally 'args': edited arguments) or {named}'approve': "
               "False, 'reason': <why>}; an answer naming no ticket is not applied (asked "
               "again).")
    return {"buddy_ticket": ticket.to_dict(),
            "tool_call": {"name": call["name"], "args": call["args"], "id": call["id"]},
            "waiting": waiting,
            "question": head + how}


def _bad_answer(answer: Any) -> str | None:
    """What is wrong with a resume value (one line), or None."""
    if not isinstance(answer, Mapping):
        return (f"must be a mapping like {{'approve': True, 'by': 'alice'}} "
                f"(got {shown(answer)})")
    extra = sorted(map(str, set(answer) - _ANSWER_KEYS))
    if extra:
        return (f"has unknown keys {', '.join(map(repr, extra))} "
                "(allowed: ticket, approve, by, args, reason)")
    approve = answer.get("approve")
    if approve is not True and approve is not False:
        return f"'approve' must be True or False (got {shown(approve)})"
    by = answer.get("by", "")
    if approve and (type(by) is not str or not by.strip()):
        return f"'by' must name who approved (got {shown(by)})"
    if type(by) is not str:
        return f"'by' must be a string (got {shown(by)})"
    reason = answer.get("reason", "")
    if type(reason) is not str:
        return f"'reason' must be a string (got {shown(reason)})"
    args = answer.get("args")
    if args is not None and (not approve or not isinstance(args, Mapping) or
                             not all(type(k) is str for k in args)):
        return (f"'args' must be a mapping with string keys, given with an approval "
                f"(got {shown(args)})")
    return None


def guarded_tool_node(tools: Sequence[BaseTool | Callable[..., Any]], engine: Engine, *,
                      agent: str, confidence: float | None = None,
                      approvals: str = "interrupt", expires_in: float | None = 86400.0,
                      mock: Mapping[str, Callable[..., Any]] | None = None,
                      dry_run: Mapping[str, Callable[..., Any]] | None = None,
                      undo: Mapping[str, Callable[..., Any]] | None = None,
                      **node_options: Any) -> ToolNode:
    """A LangGraph ``ToolNode`` for ``tools`` whose every call goes through ``engine``.

    Parameters
    ----------
    tools:
        As for ``ToolNode``; each must be in the engine's catalogue (by its name).
    engine:
        The buddy engine that decides, runs and records each call.
    agent:
        The agent name the calls are decided for.
    confidence:
        The confidence of every call; None: the engine's ``default_confidence`` or
        ``confidence_provider`` (a call with neither is refused).
    approvals:
        ``"interrupt"``: a call that waits for a person becomes a ticket and pauses the
        graph (``interrupt()``); ``"approver"``: the engine's approver callback answers.
    expires_in:
        Seconds a ticket waits before it expires, on the engine's clock (None: never).
    mock, dry_run, undo:
        Substitutes by tool name (see ``Engine.register_handler``).
    node_options:
        Passed on to ``ToolNode`` (``name``, ``handle_tool_errors``, ``messages_key``...).

    Returns
    -------
    ToolNode
        Use it where the unguarded ``ToolNode`` would go; the graph needs a
        checkpointer for approvals to pause and resume.

    Raises
    ------
    InputError
        A bad argument (named), or a tool not in the catalogue.

    Examples
    --------
    >>> from langchain_core.tools import tool
    >>> @tool
    ... def memory_search(query: str) -> str:
    ...     "Search the agent's notes."
    ...     return f"3 notes about {query}"
    >>> engine = Engine.default(clock=lambda: 0.0, default_confidence=0.9)
    >>> type(guarded_tool_node([memory_search], engine, agent="agent-1")).__name__
    'ToolNode'
    >>> guarded_tool_node([memory_search], engine, agent="")
    Traceback (most recent call last):
    ...
    buddy.rules.base.errors.InputError: agent must be a non-empty string (got '')
    """
    for taken in ("wrap_tool_call", "awrap_tool_call"):
        if taken in node_options:
            raise InputError(f"{taken} is buddy's own here; compose your wrapper around "
                             "ToolGuard instead")
    guard = ToolGuard(engine, agent=agent, tools=tools, confidence=confidence,
                      approvals=approvals, expires_in=expires_in, mock=mock,
                      dry_run=dry_run, undo=undo)
    return ToolNode(guard.tools, wrap_tool_call=guard.wrap_tool_call,
                    awrap_tool_call=guard.awrap_tool_call, **node_options)
