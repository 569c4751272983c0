"""buddy in the Model Context Protocol: a guarded client session, and elicitation as an approver.

Client side, :class:`GuardedSession` wraps an MCP ``ClientSession`` (or an
``mcp.Client``): its :meth:`~GuardedSession.list_tools` gives each server tool
buddy does not know a contract from the tool's annotations
(:meth:`ToolContract.from_mcp <buddy.rules.ToolContract.from_mcp>`), and its
:meth:`~GuardedSession.call_tool` goes through the engine, so a call runs on
the server only when buddy decides LIVE::

    async with Client(server) as client:
        tools = GuardedSession(client, engine, agent="mail-agent", confidence=0.9)
        await tools.list_tools()
        result = await tools.call_tool("read_inbox", {"folder": "inbox"})

A contract is the engine's, by tool name, and two servers may give one name to
different tools. So a session calls a tool only when its own server listed it
through this session's :meth:`~GuardedSession.list_tools` (its hints applied:
registered, or a catalogue entry tightened) or the tool is one of the catalogue's
own entries (put there by you, not by a listing). A tool buddy knows only from
another server's listing is refused, unrun (``rule`` ``mcp.not_listed``): call
``list_tools()`` first. The contract a call is decided by is then never less
cautious than the catalogue's entry, nor than the hints of the server it runs on
once that session has listed them.

What a call returns, always an MCP ``CallToolResult``:

- LIVE: the server's own result. A result with ``isError`` true is a failed run
  in buddy's audit trail (``ok: false``), and is returned as the server gave it.
- MOCK or DRY_RUN: nothing ran on the server. ``isError`` is false (the call
  was not wrong, it was simulated), the text says ``buddy simulated <tool>
  (MOCK): nothing was run; <why>``, and ``_meta["buddy"]["ran"]`` is false, so
  neither a model nor a program mistakes it for the tool's answer.
- Refused (an unknown tool, one another server listed, a denied approval, bad
  input such as an idempotency key the engine does not take, a rate limit):
  ``isError`` true, ``buddy refused: <reason>``; the server is never called.
- Waiting for a person: ``isError`` true, ``buddy is waiting for a person to
  approve <tool>: ticket <id>``. Once someone answers (``engine.approve(id,
  by=..., args=...)`` or ``engine.deny(id, ...)``, from anywhere), the same
  ``call_tool`` with the same ``idempotency_key`` runs it (LIVE, with the
  edited arguments) or says it was denied; so does :meth:`~GuardedSession.resume`.
  A call with a key that already ran returns its first result and runs nothing.

``_meta["buddy"]`` of every result says what buddy did: ``mode`` (the mode
that ran, or null), ``ran``, ``rule``, ``reason`` and ``context``; a call with a
ticket adds ``ticket`` (and, while it waits, ``expires_at``).

The session gives each server tool it calls its LIVE handler on the engine (the
server, through the session of the call in progress: several sessions can share
one engine); MOCK and DRY_RUN run buddy's labelled simulator. Handlers registered
for that tool before are replaced.

Server side, :func:`elicitation_approver` is an approver that asks the person
at the other end of an MCP request through elicitation (``ctx.elicit``): a
server whose tools are guarded by buddy can wait for an answer mid-call. That
needs a connection that carries a server's requests mid-call: with the ``mcp``
SDK 2.x, a client connected with the initialize handshake,
``Client(server, mode="legacy", elicitation_callback=...)``; the default
``mode="auto"`` speaks the 2026-07-28 protocol, which has no such channel. A
client that cannot answer (no elicitation support, or no such channel) is a
denial: it fails closed, and the trail says why.

Needs the ``mcp`` extra: ``pip install 'buddy[mcp]'``.
"""

from __future__ import annotations

import contextvars
import json
import weakref
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

try:
    from mcp import types
    from pydantic import BaseModel, Field, ValidationError
except ImportError as exc:  # pragma: no cover - the extra is installed wherever tests run
    raise ImportError("buddy.engine.adapters.mcp needs the MCP SDK: "
                      "pip install 'buddy[mcp]'") from exc

from buddy.engine.core import (
    Approval,
    ApprovalRequest,
    Engine,
    ExecutionResult,
    Ticket,
)
from buddy.rules.base import ExecutionMode, Masker, described, shown
from buddy.rules.base.errors import ContractError, InputError
from buddy.rules.tables import ToolContract, ToolContractRegistry

__all__ = [
    "GuardedSession",
    "McpToolError",
    "eliciting",
    "elicitation_approver",
    "guard_session",
]


class McpToolError(RuntimeError):
    """The server answered a LIVE call with ``isError`` true: a failed run in buddy's
    audit trail. ``result`` is the server's ``CallToolResult``."""

    def __init__(self, tool: str, result: Any) -> None:
        self.tool = tool
        self.result = result
        super().__init__(f"MCP tool {tool} returned an error: {_text(result) or '(no text)'}")


# -- the client side: a guarded session -------------------------------------------

#: The session and extra call_tool arguments of the guarded call in progress: the LIVE
#: handler (one per engine and tool, whichever session registered it) calls through it.
_CALL: contextvars.ContextVar[tuple[Any, dict[str, Any]] | None] = contextvars.ContextVar(
    "buddy_mcp_call", default=None)
#: The tools of each engine whose handlers this module registered.
_HANDLED: weakref.WeakKeyDictionary[Engine, set[str]] = weakref.WeakKeyDictionary()
#: The tools of each catalogue that a session's listing put there (a server's hints, not
#: the catalogue's own entries): only a session whose server listed them calls them.
_FROM_HINTS: weakref.WeakKeyDictionary[ToolContractRegistry, set[str]] = \
    weakref.WeakKeyDictionary()


class GuardedSession:
    """An MCP client session whose tool calls buddy decides, runs and audits.

    Parameters
    ----------
    session:
        An MCP ``ClientSession`` or ``mcp.Client`` (anything with ``list_tools()``
        and ``call_tool(name, arguments)``). Methods other than those two pass through.
    engine:
        The engine that decides. A tool it does not know is refused unless
        :meth:`list_tools` registered it; one another session's listing registered
        is refused until this session's server lists it too.
    agent:
        Who calls, as buddy's audit trail names it.
    confidence:
        The agent's confidence for every call (None: the engine's
        ``confidence_provider`` or ``default_confidence``; with neither the call
        is refused). ``call_tool(..., confidence=...)`` overrides it per call.
    tickets:
        True (the default): a call that needs a person becomes a ticket (see the
        module docstring) and the engine's approver is not asked. False: the
        engine's approver is asked inline, as ``engine.aexecute`` does.
    expires_in:
        Seconds on the engine's clock a ticket waits for an answer (a day by
        default; None: it never expires). Expired, its call is refused, unrun.

    Examples
    --------
    >>> engine = Engine.default(clock=lambda: 0.0)
    >>> guarded = GuardedSession(object(), engine, agent="agent-1")
    >>> guarded.agent, guarded.refused, guarded.listed
    ('agent-1', {}, set())
    """

    def __init__(self, session: Any, engine: Engine, *, agent: str,
                 confidence: float | None = None, tickets: bool = True,
                 expires_in: float | None = 86_400.0) -> None:
        self._session = session
        self.engine = engine
        self.agent = agent
        self.confidence = confidence
        self.tickets = tickets
        self.expires_in = expires_in
        #: server tools that buddy could not register, with why (calls to them are refused)
        self.refused: dict[str, str] = {}
        #: the tools this session's server listed, their hints applied to buddy's contracts
        self.listed: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        if name == "_session":  # not set yet (a copy being built): no recursion
            raise AttributeError(name)
        return getattr(self._session, name)

    @property
    def session(self) -> Any:
        """The wrapped MCP session."""
        return self._session

    async def list_tools(self, *args: Any, **kwargs: Any) -> Any:
        """The server's listing, unchanged; each tool buddy does not know yet is
        registered with the contract its annotations give. A tool buddy knows keeps
        its contract, tightened where the hints are more cautious (they never lower
        it: :meth:`ToolContractRegistry.tighten`); one whose name or hints buddy cannot
        read is left unregistered, so a call to it is refused, and :attr:`refused`
        says why. The tools listed join :attr:`listed` (pages add up)."""
        listing = await self._session.list_tools(*args, **kwargs)
        registry = self.engine.registry
        from_hints = _FROM_HINTS.setdefault(registry, set())
        for tool in getattr(listing, "tools", None) or ():
            try:
                contract = ToolContract.from_mcp(tool, catalogue=registry)
            except ContractError as exc:
                name = tool.get("name") if isinstance(tool, Mapping) else \
                    getattr(tool, "name", None)
                self._refuse(str(name if name is not None else tool), str(exc))
                continue
            try:
                if contract.name not in registry:
                    registry.register(contract)
                    from_hints.add(contract.name)
                elif contract != registry.get(contract.name):  # hints more cautious
                    registry.tighten(contract)
            except ContractError as exc:  # e.g. an engine that refuses it
                self._refuse(contract.name, str(exc))
                continue
            self.refused.pop(contract.name, None)
            self.listed.add(contract.name)
        return listing

    def _refuse(self, tool: str, why: str) -> None:
        """A listed tool whose hints buddy could not apply: calls to it are refused."""
        self.refused[tool] = why
        self.listed.discard(tool)

    def _not_callable(self, tool: str) -> Any:
        """The refusal of a call this session may not make (None: it may). A contract a
        server's hints gave serves only the sessions whose server listed the tool:
        another server's tool of the same name may be anything. The catalogue's own
        entries (not put there by a listing) serve every session, unless this
        session's server listed hints buddy could not apply to them."""
        registry = self.engine.registry
        if tool in self.refused and tool in registry:
            return _refusal(f"{tool}: its server's hints cannot be applied "
                            f"({self.refused[tool]})", "mcp.hints")
        if tool in _FROM_HINTS.get(registry, ()) and tool not in self.listed:
            return _refusal(f"{tool} is known to buddy from another MCP server's listing, "
                            "not this session's: call list_tools() on this session first",
                            "mcp.not_listed")
        return None

    async def call_tool(self, name: str, arguments: Mapping[str, Any] | None = None,
                        *args: Any, idempotency_key: str | None = None,
                        confidence: float | None = None, **kwargs: Any) -> Any:
        """Call ``name`` through the engine; returns a ``CallToolResult`` (see the module
        docstring for what each outcome looks like). Extra arguments go to the
        session's ``call_tool`` when the call runs LIVE.

        ``idempotency_key``: a second call with the same key returns the first
        call's result and runs nothing again; a call that became a ticket runs,
        once approved, when it is made again with its key. A key the engine does not
        take (empty, over 256 characters, a control character) is a refusal.

        A tool buddy knows only from another session's listing is refused until this
        session's :meth:`list_tools` lists it (see the module docstring).
        """
        engine = self.engine
        conf = self.confidence if confidence is None else confidence
        refused = self._not_callable(name)
        if refused is not None:
            return refused
        self._handle(name)
        token = _CALL.set((self._session, _call_kwargs(args, kwargs)))
        try:
            try:
                if not self.tickets:
                    done = await engine.aexecute(self.agent, name, arguments, confidence=conf,
                                                 idempotency_key=idempotency_key)
                    return self._answer(name, done)
                pending = await engine.aprepare(self.agent, name, arguments, confidence=conf,
                                                wait=True, expires_in=self.expires_in,
                                                idempotency_key=idempotency_key)
            except InputError as exc:  # a key the engine does not take: nothing decided
                return _refusal(str(exc), "input.idempotency_key" if str(exc).startswith(
                    "idempotency_key") else "input")
            if pending.waiting:
                return self._waiting(pending.tool, pending.ticket, pending.decision.reason)
            done = await pending.arun()
            ticket = pending.ticket
            return self._answer(name, done, None if ticket is None else
                                engine.ticket(ticket.id))
        finally:
            _CALL.reset(token)

    async def resume(self, ticket_id: str, *args: Any, **kwargs: Any) -> Any:
        """The call a ticket holds, once a person answered it: run LIVE (approved) or
        closed (denied, expired); resumed twice, the first result. Extra arguments go to
        the session's ``call_tool``. A tool buddy knows only from another session's
        listing is refused, as :meth:`call_tool` refuses it: list this session's tools
        first."""
        ticket = self.engine.ticket(ticket_id)
        if ticket.status == "pending":
            return self._waiting(ticket.tool, ticket, f"waits for a person: ticket {ticket.id}")
        refused = self._not_callable(ticket.tool)
        if refused is not None:
            return refused
        self._handle(ticket.tool)
        token = _CALL.set((self._session, _call_kwargs(args, kwargs)))
        try:
            done = await self.engine.aresume(ticket_id)
            return self._answer(ticket.tool, done, self.engine.ticket(ticket_id))
        finally:
            _CALL.reset(token)

    # -- inside ------------------------------------------------------------------
    def _handle(self, tool: str) -> None:
        """Give a known tool its LIVE handler, the server, once per engine."""
        engine = self.engine
        done = _HANDLED.setdefault(engine, set())
        if tool in done or tool not in engine.registry:
            return
        kept = engine.handlers(tool)  # a mock, dry-run or undo given stays
        engine.register_handler(tool, mock=kept.mock, dry_run=kept.dry_run, live=_live(tool),
                                undo=kept.undo)
        done.add(tool)

    def _answer(self, tool: str, done: ExecutionResult, ticket: Ticket | None = None) -> Any:
        """The ``CallToolResult`` of a call buddy decided (and ran, or not)."""
        decision = done.decision
        buddy: dict[str, Any] = {
            "mode": done.mode.value if done.mode is not None else None,
            "ran": done.mode is ExecutionMode.LIVE, "rule": decision.rule,
            "reason": decision.reason, "context": done.context}
        if ticket is not None:
            buddy["ticket"] = ticket.id
        if not decision.allowed or done.mode is None:
            why = decision.reason if not decision.allowed else done.error or decision.reason
            if tool in self.refused and decision.rule == "tool.unknown":
                why = f"{why} ({self.refused[tool]})"
            if ticket is not None and ticket.answer == "deny":
                said = f": {ticket.answer_reason}" if ticket.answer_reason else ""
                why = f"{why} (denied by {ticket.by}{said})"
            return _result(f"buddy refused: {why}", True, buddy)
        if done.mode is not ExecutionMode.LIVE:
            if not done.ok:
                return _result(f"buddy simulated {tool} ({done.mode.value}) and the "
                               f"simulation failed: {done.error}", True, buddy)
            return _result(f"buddy simulated {tool} ({done.mode.value}): nothing was run; "
                           f"{decision.reason}", False, buddy)
        if done.ok:
            return _with_meta(_as_result(done.result), buddy)
        error = done.exception
        if isinstance(error, McpToolError):
            return _with_meta(types.CallToolResult.model_validate(_wire(error.result)), buddy)
        if error is not None:
            raise error  # the session's own error (a protocol error, a timeout): as unguarded
        return _result(f"buddy: {tool} failed: {done.error}", True, buddy)

    @staticmethod
    def _waiting(tool: str, ticket: Any, reason: str) -> Any:
        return _result(f"buddy is waiting for a person to approve {tool}: ticket {ticket.id}",
                       True, {"mode": None, "ran": False, "rule": ticket.rule, "reason": reason,
                              "context": ticket.context, "ticket": ticket.id,
                              "expires_at": ticket.expires_at})


def guard_session(session: Any, engine: Engine, *, agent: str,
                  confidence: float | None = None, tickets: bool = True,
                  expires_in: float | None = 86_400.0) -> GuardedSession:
    """``GuardedSession(session, engine, agent=..., ...)``: the same arguments."""
    return GuardedSession(session, engine, agent=agent, confidence=confidence,
                          tickets=tickets, expires_in=expires_in)


def _call_kwargs(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """call_tool's extra arguments by name (read_timeout_seconds, progress_callback)."""
    named = dict(zip(("read_timeout_seconds", "progress_callback"), args, strict=False))
    if len(args) > 2:
        raise TypeError(f"call_tool takes at most 4 positional arguments ({len(args) + 2} given)")
    return {**named, **kwargs}


def _live(tool: str) -> Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]:
    """The LIVE handler of ``tool``: the server, through the session of the guarded call
    in progress; its result as JSON (what the audit trail records and replays)."""
    async def live(args: dict[str, Any]) -> dict[str, Any]:
        call = _CALL.get()
        if call is None:
            raise RuntimeError(f"MCP tool {tool} runs only through a GuardedSession's "
                               "call_tool or resume")
        session, kwargs = call
        result = await session.call_tool(tool, dict(args), **kwargs)
        if _is_error(result):
            raise McpToolError(tool, result)
        return _wire(result)
    return live


def _wire(result: Any) -> dict[str, Any]:
    """A ``CallToolResult`` as its JSON form (camelCase, as on the wire)."""
    dumped: dict[str, Any] = result.model_dump(mode="json", by_alias=True, exclude_none=True)
    return dumped


def _is_error(result: Any) -> bool:
    flag = getattr(result, "is_error", None)
    if flag is None:
        flag = getattr(result, "isError", False)
    return flag is True


def _text(result: Any) -> str:
    """The text blocks of a result, joined."""
    parts = [getattr(block, "text", None) for block in getattr(result, "content", None) or ()]
    return " ".join(p for p in parts if isinstance(p, str))


def _as_result(value: Any) -> Any:
    """A LIVE handler's result as a ``CallToolResult``: the server's, from its JSON form;
    anything else (a handler registered in place of the session's) as its text."""
    try:
        return types.CallToolResult.model_validate(value)
    except ValidationError:
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        return types.CallToolResult.model_validate({"content": [{"type": "text",
                                                                 "text": text}]})


def _refusal(why: str, rule: str) -> Any:
    """A call refused before the engine decided it (nothing recorded, nothing run)."""
    return _result(f"buddy refused: {why}", True, {"mode": None, "ran": False, "rule": rule,
                                                   "reason": why, "context": None})


def _result(text: str, is_error: bool, buddy: dict[str, Any]) -> Any:
    return types.CallToolResult.model_validate({
        "content": [{"type": "text", "text": text}], "isError": is_error,
        "_meta": {"buddy": buddy}})


def _with_meta(result: Any, buddy: dict[str, Any]) -> Any:
    meta = dict(getattr(result, "meta", None) or {})
    meta["buddy"] = buddy
    return result.model_copy(update={"meta": meta})


# -- the server side: elicitation as an approver ---------------------------------

#: The MCP request context (``ctx``) calls in this task ask through: see :func:`eliciting`.
_ASKING: contextvars.ContextVar[Any] = contextvars.ContextVar("buddy_mcp_asking", default=None)
_MASKER = Masker()
_REFUSALS = {"decline": "the person declined", "cancel": "the person cancelled"}
#: Added to the denial when the connection has no channel for the server's requests.
_NO_CHANNEL_HINT = (" (this connection cannot carry a server's request mid-call: the client "
                    "must connect with the initialize handshake, Client(server, mode=\"legacy\"))")


class ApprovalForm(BaseModel):
    """What the person is asked: approve or not, why, and (optionally) other arguments."""

    approve: bool = Field(strict=True, description="Run the call?")
    reason: str = Field(default="", strict=True,
                        description="Why (recorded in the audit trail)")
    arguments: str = Field(default="", strict=True,
                           description="Run with these arguments instead: a JSON object "
                                       "(leave empty to keep them)")


@contextmanager
def eliciting(ctx: Any) -> Iterator[None]:
    """Within the block, :func:`elicitation_approver` without a ``ctx`` asks through
    ``ctx`` (the MCP request of the tool being run)."""
    token = _ASKING.set(ctx)
    try:
        yield
    finally:
        _ASKING.reset(token)


def elicitation_approver(ctx: Any = None, *, allow_edits: bool = True,
                         ) -> Callable[[ApprovalRequest], Awaitable[Approval]]:
    """An async approver that asks the person behind an MCP request, by elicitation.

    ``ctx`` is the request context of an MCP server tool (``MCPServer``'s
    ``Context``, or anything with ``async elicit(message, schema)``). Without one,
    the approver asks through the context of the enclosing :func:`eliciting`
    block, so one engine (``Engine.default(approver=elicitation_approver())``)
    serves every request of a server::

        @server.tool()
        async def send_email(to: str, body: str, ctx: Context) -> str:
            with eliciting(ctx):
                done = await engine.aexecute("mail-agent", "send_email", {"to": to, ...})

    The person sees the agent, the tool, its risk, the arguments (secrets masked)
    and buddy's reason, and answers :class:`ApprovalForm`: ``approve``, a ``reason``
    and, when ``allow_edits``, ``arguments`` to run instead (a JSON object).
    Accepted with ``approve`` the JSON boolean true: :meth:`Approval.approve` (or
    :meth:`Approval.edit` with the new arguments). Anything else is a denial, with
    why: ``approve`` false, an answer that does not fit the form (``approve``
    given as the string ``"true"``, say: the form is strict), declined,
    cancelled, arguments that are not a JSON object, no request to ask through,
    and a client that cannot answer (no elicitation support, or a connection with
    no channel for server requests).

    The client must connect so the server can send it a request mid-call: with
    the ``mcp`` SDK 2.x, ``Client(server, mode="legacy",
    elicitation_callback=...)`` (the initialize handshake). The default
    ``mode="auto"`` speaks MCP 2026-07-28, whose sessions carry elicitation in a
    tool call's result, not mid-call: every ask is then denied
    (``NoBackChannelError``).
    """
    async def approve(request: ApprovalRequest) -> Approval:
        target = ctx if ctx is not None else _ASKING.get()
        if target is None:
            return Approval.deny("no MCP request to ask a person through")
        try:
            answer = await target.elicit(_message(request, allow_edits), ApprovalForm)
        except Exception as exc:  # the client cannot ask, or answered outside the form
            invalid = exc if isinstance(exc, ValidationError) else exc.__cause__
            if isinstance(invalid, ValidationError):
                return Approval.deny(f"the answer does not fit the approval form: "
                                     f"{_problems(invalid)}")
            hint = _NO_CHANNEL_HINT if type(exc).__name__ == "NoBackChannelError" else ""
            return Approval.deny(f"the MCP client could not ask a person: {described(exc)}"
                                 f"{hint}")
        action = getattr(answer, "action", None)
        if action != "accept":
            return Approval.deny(_REFUSALS.get(str(action)) or
                                 f"unknown elicitation answer {shown(action)}")
        try:
            yes, reason, arguments = _read_form(getattr(answer, "data", None))
        except ValueError as exc:
            return Approval.deny(f"the answer does not fit the approval form: {exc}")
        if not yes:
            return Approval.deny(reason or "the person did not approve")
        if allow_edits and arguments.strip():
            try:
                edited = json.loads(arguments)
            except ValueError:
                edited = None
            if not isinstance(edited, dict):
                return Approval.deny(f"edited arguments are not a JSON object "
                                     f"(got {shown(arguments)})")
            return Approval.edit(edited, reason)
        return Approval.approve(reason)
    return approve


def _problems(error: ValidationError) -> str:
    """A pydantic error of the approval form as one line: each field, what is wrong,
    and what was given."""
    parts = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem.get("loc", ())) or "the answer"
        got = "" if problem.get("type") == "missing" else f" (got {shown(problem.get('input'))})"
        parts.append(f"{where}: {problem.get('msg', 'invalid')}{got}")
    return "; ".join(parts)


def _read_form(form: Any) -> tuple[bool, str, str]:
    """``approve``, ``reason`` and ``arguments`` of an accepted answer; ValueError saying
    why it is not a well-formed :class:`ApprovalForm`: ``approve`` exactly true or
    false, ``reason`` and ``arguments`` text buddy can record. (A ``ctx`` of one's own
    may answer anything.)"""
    approve = getattr(form, "approve", None)
    if approve is not True and approve is not False:
        raise ValueError(f"approve must be true or false (got {shown(approve)})")
    texts = []
    for name in ("reason", "arguments"):
        value = getattr(form, name, None)
        if not isinstance(value, str):
            raise ValueError(f"{name} must be text (got {shown(value)})")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"{name} holds a lone surrogate at character {exc.start}") from None
        texts.append(value)
    return approve, texts[0], texts[1]


def _message(request: ApprovalRequest, allow_edits: bool) -> str:
    args = json.dumps(_MASKER.mask(dict(request.args or {})), default=str, sort_keys=True)
    edits = " You may give other arguments to run instead." if allow_edits else ""
    return (f"{request.agent} wants to run {request.tool} ({request.risk.value} risk) with "
            f"{args}. buddy says: {request.reason}. Approve?{edits}")
