"""The object an application embeds: :class:`Engine`."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from buddy.engine.core._approvals import ApprovalCallback, Grant, Verdict
from buddy.engine.core._audit import AuditLog
from buddy.engine.core._controller import (
    AsyncSession,
    Controller,
    ExecutionResult,
    Handlers,
    PendingCall,
    Session,
)
from buddy.engine.core._decision import Decision, Policy
from buddy.engine.core._explain import Explanation, explain
from buddy.engine.core._gate import ConfidenceProvider, Gate
from buddy.engine.core._guard import F, guard
from buddy.engine.core._tickets import ArgStore, Calls, Ticket
from buddy.rules.base._masking import described, shown
from buddy.rules.base._values import ExecutionMode, valid_confidence
from buddy.rules.base.errors import InputError
from buddy.rules.tables._catalogue import ToolContractRegistry
from buddy.rules.tables._escalation import EscalationTable

__all__ = ["Engine"]

#: How long a ticket waits for a person by default: a day on the engine's clock.
DAY = 86_400.0

class Engine:
    """A policy engine for AI agents' tool calls.

    Parameters
    ----------
    registry, table:
        The tool catalogue and the escalation table.
    audit:
        Where events go; defaults to an in-memory log on ``clock``.
    clock:
        Seconds since the epoch; injected so tests and replays control time.
    approver:
        Called with an :class:`ApprovalRequest` when a call waits for approval;
        answers :class:`Approval` (or a bool).
    agents:
        Optional map of agent name to the permissions it holds. When given,
        unknown agents and calls lacking a tool's permissions are refused.
    default_confidence:
        The confidence of a call that gives none: a number in [0, 1], or a map of
        tool name to one, ``"*"`` for every other tool. Recorded as
        ``confidence_from: "tool_default"`` or ``"default"``.
    confidence_provider:
        ``provider(agent, tool, args) -> confidence`` for a call that gives none,
        asked before the defaults (None: no opinion). One that raises refuses the
        call. Recorded as ``confidence_from: "provider"``.

    Examples
    --------
    >>> engine = Engine.default(clock=lambda: 0.0)
    >>> engine.decide("agent-1", "form_fill", 0.85).mode
    <ExecutionMode.LIVE: 'LIVE'>
    >>> engine.decide("agent-1", "msgraph_send_email", 0.9).mode   # no approval yet
    <ExecutionMode.DRY_RUN: 'DRY_RUN'>
    >>> engine.lock(); engine.decide("agent-1", "form_fill", 0.99).mode
    <ExecutionMode.MOCK: 'MOCK'>
    """

    def __init__(self, registry: ToolContractRegistry, table: EscalationTable, *,
                 audit: AuditLog | None = None, clock: Callable[[], float] = time.time,
                 approver: ApprovalCallback | None = None,
                 agents: Mapping[str, Iterable[str]] | None = None,
                 default_confidence: float | Mapping[str, float] | None = None,
                 confidence_provider: ConfidenceProvider | None = None) -> None:
        self.registry = registry
        self.policy = Policy(registry, table)
        self.clock = clock
        self.audit = audit if audit is not None else AuditLog.memory(clock=clock)
        self._gate = Gate(self.policy, self.audit, clock, approver=approver, agents=agents)
        self.default_confidence = default_confidence
        self.confidence_provider = confidence_provider
        self._controller = Controller(self._gate)
        path = self.audit.path
        self._calls = Calls(self._controller, ArgStore(
            None if path is None else path.with_name(path.name + ".tickets")))
        # The documented method below, without its frame: decide is the hot path.
        self.decide = self._gate.decide  # type: ignore[method-assign]

    # -- construction --------------------------------------------------------
    @classmethod
    def default(cls, **kwargs: Any) -> Engine:
        """The standard catalogue and escalation table shipped with buddy."""
        return cls(ToolContractRegistry.default(), EscalationTable.default(), **kwargs)

    @classmethod
    def from_files(cls, catalogue: str | Path | None = None, rules: str | Path | None = None,
                   *, extend: bool = False, **kwargs: Any) -> Engine:
        """Load a catalogue TOML and/or a rules directory (``escalation.toml``);
        what is not given falls back to the shipped defaults. With ``extend=True``
        the catalogue adds its tools to the shipped ones (a name already shipped is
        refused, never overridden: :meth:`ToolContractRegistry.extended`)."""
        if catalogue and extend:
            registry = ToolContractRegistry.default().extended(catalogue)
        else:
            registry = ToolContractRegistry.from_toml(catalogue) if catalogue else \
                ToolContractRegistry.default()
        table = EscalationTable.from_dir(rules) if rules else EscalationTable.default()
        return cls(registry, table, **kwargs)

    @property
    def table(self) -> EscalationTable:
        return self.policy.table

    @property
    def approver(self) -> ApprovalCallback | None:
        """Called with an :class:`ApprovalRequest` when a call waits for approval."""
        return self._gate.approver

    @approver.setter
    def approver(self, approver: ApprovalCallback | None) -> None:
        self._gate.approver = approver

    @property
    def default_confidence(self) -> float | Mapping[str, float] | None:
        """The confidence of a call that gives none (see the class docstring)."""
        gate = self._gate
        if gate.tool_confidence:
            out: dict[str, float] = dict(gate.tool_confidence)
            if gate.default_confidence is not None:
                out["*"] = gate.default_confidence
            return out
        return gate.default_confidence

    @default_confidence.setter
    def default_confidence(self, value: float | Mapping[str, float] | None) -> None:
        gate = self._gate
        if value is None:
            gate.default_confidence, gate.tool_confidence = None, {}
            return
        given = dict(value) if isinstance(value, Mapping) else {"*": value}
        tools: dict[str, float] = {}
        for tool, confidence in given.items():
            if not valid_confidence(confidence):
                raise InputError(f"default_confidence[{shown(tool)}] must be a number in "
                                 f"[0, 1] (got {shown(confidence)})")
            if tool != "*":
                self.registry.get(tool)  # UnknownToolError, naming it
            tools[tool] = float(confidence)
        gate.default_confidence = tools.pop("*", None)
        gate.tool_confidence = tools

    @property
    def confidence_provider(self) -> ConfidenceProvider | None:
        """``provider(agent, tool, args) -> confidence`` for calls that give none."""
        return self._gate.confidence_provider

    @confidence_provider.setter
    def confidence_provider(self, provider: ConfidenceProvider | None) -> None:
        if provider is not None and not callable(provider):
            raise InputError(f"confidence_provider must be callable or None "
                             f"(got {shown(provider)})")
        self._gate.confidence_provider = provider

    @property
    def pass_through(self) -> tuple[type[BaseException], ...]:
        """Exception types an approver may raise that are not an answer: a framework's
        pause signal (LangGraph's ``GraphInterrupt``, say). They pass through
        ``decide``/``execute`` untouched and nothing is recorded for the call; any
        other exception from the approver is a denial. Empty by default."""
        return self._gate.pass_through

    @pass_through.setter
    def pass_through(self, types: Iterable[type[BaseException]]) -> None:
        held = tuple(types)
        for t in held:
            if not (isinstance(t, type) and issubclass(t, BaseException)):
                raise InputError(f"pass_through must hold exception types (got {shown(t)})")
        self._gate.pass_through = held

    @property
    def agents(self) -> Mapping[str, frozenset[str]] | None:
        """The declared agents and the permissions each holds (None: not enforced)."""
        return self._gate.agents

    # -- deciding ------------------------------------------------------------
    def decide(self, agent: str, tool: str, confidence: float | None = None, *,
               approval: bool | None = None) -> Decision:
        """Decide the mode of one call and record it; never raises for bad input.

        ``approval`` is a one-shot answer for this call (True, False or None;
        anything else is refused); when it is None and the call waits for
        approval, a scoped grant is used if one is live, else the approver
        callback is asked (outside the engine's lock). A tool's rate limit
        refuses DRY_RUN and LIVE calls over it. Bad inputs (an agent that is
        not a non-empty string, unknown tools, confidences outside [0, 1] or
        NaN) and any failure inside evaluation fail closed (MOCK, not allowed).
        ``confidence=None`` takes the engine's provider or defaults.
        """
        return self._gate.decide(agent, tool, confidence, approval=approval)

    async def adecide(self, agent: str, tool: str, confidence: float | None = None, *,
                      approval: bool | None = None) -> Decision:
        """:meth:`decide` for async callers: an async approver is awaited."""
        return await self._gate.adecide(agent, tool, confidence, approval=approval)

    # -- running -------------------------------------------------------------
    def register_handler(self, tool: str, *, mock: Callable[..., Any] | None = None,
                         dry_run: Callable[..., Any] | None = None,
                         live: Callable[..., Any] | None = None,
                         undo: Callable[..., Any] | None = None) -> None:
        """Give ``tool`` its callables. A tool without ``live`` never runs LIVE."""
        self.registry.get(tool)  # unknown tools are an error here
        self._controller.register(tool, Handlers(mock, dry_run, live, undo))

    def handlers(self, tool: str) -> Handlers:
        """The callables registered for ``tool`` (all None when it has none)."""
        self.registry.get(tool)  # unknown tools are an error here
        return self._controller.handlers.get(tool, Handlers())

    def session(self, agent: str) -> Session:
        """Calls that roll back together (see :class:`Session`)."""
        return Session(self._controller, agent)

    def asession(self, agent: str) -> AsyncSession:
        """Calls that roll back together, for async callers (see :class:`AsyncSession`)."""
        return AsyncSession(self._controller, agent)

    def execute(self, agent: str, tool: str, args: Mapping[str, Any] | None = None, *,
                confidence: float | None = None, approval: bool | None = None,
                max_mode: ExecutionMode | None = None, cap_reason: str = "",
                idempotency_key: str | None = None) -> ExecutionResult:
        """Decide and run one call in a session of its own (``max_mode``: see
        :meth:`Session.prepare`).

        ``idempotency_key``: a call with a key used before (in this process, or any
        that wrote this log) runs nothing and returns the first call's result (as the
        log recorded it, secrets masked, when it ran in another process); the repeat
        is an audit event. A key whose call has not finished, or that another call
        used with other arguments, answers so (``ok`` False) and runs nothing.
        """
        controller = self._controller
        if idempotency_key is None:
            return controller.execute(Session(controller, agent), tool, args, confidence,
                                      approval, max_mode, cap_reason)
        calls = self._calls
        claimed = calls.claim(idempotency_key, agent, tool, args)
        if claimed is not None:
            return claimed if isinstance(claimed, ExecutionResult) else \
                self._still_waiting(claimed) or claimed.run()
        try:
            result = controller.execute(Session(controller, agent), tool, args, confidence,
                                        approval, max_mode, cap_reason)
        except BaseException as exc:  # paused (the key is free) or stopped mid-run (closed)
            calls.finish_interrupted(idempotency_key, exc)
            raise
        calls.finish(idempotency_key, result)
        return result

    async def aexecute(self, agent: str, tool: str, args: Mapping[str, Any] | None = None,
                       *, confidence: float | None = None, approval: bool | None = None,
                       max_mode: ExecutionMode | None = None, cap_reason: str = "",
                       idempotency_key: str | None = None) -> ExecutionResult:
        """:meth:`execute` for async callers: async approvers, handlers and undos are
        awaited, sync ones called inline; one audit chain with the sync callers."""
        controller = self._controller
        if idempotency_key is None:
            return await controller.aexecute(AsyncSession(controller, agent), tool, args,
                                             confidence, approval, max_mode, cap_reason)
        calls = self._calls
        claimed = calls.claim(idempotency_key, agent, tool, args)
        if claimed is not None:
            if isinstance(claimed, ExecutionResult):
                return claimed
            return self._still_waiting(claimed) or await claimed.arun()
        try:
            result = await controller.aexecute(AsyncSession(controller, agent), tool, args,
                                               confidence, approval, max_mode, cap_reason)
        except BaseException as exc:
            calls.finish_interrupted(idempotency_key, exc)
            raise
        calls.finish(idempotency_key, result)
        return result

    def _still_waiting(self, pending: PendingCall) -> ExecutionResult | None:
        """The answer to a keyed call whose ticket still waits for a person (it runs
        nothing), or None."""
        if pending.ticket is not None and pending.waiting:
            return self._calls._not_run(pending.agent, pending.tool, pending.args,
                                        pending.context, "waits for a person on ticket "
                                        f"{pending.ticket.id}")
        return None

    def prepare(self, agent: str, tool: str, args: Mapping[str, Any] | None = None, *,
                confidence: float | None = None, approval: bool | None = None,
                max_mode: ExecutionMode | None = None, cap_reason: str = "",
                wait: bool = False, expires_in: float | None = DAY,
                idempotency_key: str | None = None) -> PendingCall:
        """Decide one call now and run it later (``.run()``), in a session of its own.

        ``wait=True``: a call that waits for a person waits as a :class:`Ticket`
        (``pending.ticket``, ``pending.waiting``) instead of asking the approver;
        answer it with :meth:`approve` / :meth:`deny` from anywhere, then
        ``pending.run()`` or :meth:`resume`. It expires ``expires_in`` seconds on
        the engine's clock after it was made (None: never). With
        ``idempotency_key``, preparing the same key again returns the same call
        (its ticket, or its result), deciding nothing anew.
        """
        self._check_waiting(wait, expires_in)
        return self._keyed_prepare(agent, tool, args, idempotency_key, lambda: (
            self._controller.prepare_waiting(
                Session(self._controller, agent), tool, args, confidence, approval, max_mode,
                cap_reason, agent, self._calls, None if expires_in is None else
                float(expires_in), idempotency_key) if wait else
            self.session(agent).prepare(tool, args, confidence=confidence, approval=approval,
                                        max_mode=max_mode, cap_reason=cap_reason)))

    async def aprepare(self, agent: str, tool: str, args: Mapping[str, Any] | None = None,
                       *, confidence: float | None = None, approval: bool | None = None,
                       max_mode: ExecutionMode | None = None, cap_reason: str = "",
                       wait: bool = False, expires_in: float | None = DAY,
                       idempotency_key: str | None = None) -> PendingCall:
        """:meth:`prepare` for async callers: an async approver is awaited (run the call
        with ``await pending.arun()``)."""
        if wait:  # no approver is asked: nothing to await
            return self.prepare(agent, tool, args, confidence=confidence, approval=approval,
                                max_mode=max_mode, cap_reason=cap_reason, wait=True,
                                expires_in=expires_in, idempotency_key=idempotency_key)
        self._check_waiting(wait, expires_in)
        calls, key = self._calls, idempotency_key
        if key is not None:
            claimed = self._claimed(agent, tool, args, key)
            if claimed is not None:
                return claimed
        try:
            pending = await self.asession(agent).prepare(
                tool, args, confidence=confidence, approval=approval, max_mode=max_mode,
                cap_reason=cap_reason)
        except BaseException as exc:  # prepare runs nothing: the key is free again
            if key is not None:
                calls.release(key, f"stopped before it ran: {described(exc)}")
            raise
        return self._finishing(pending, key)

    def _check_waiting(self, wait: object, expires_in: object) -> None:
        if wait is not True and wait is not False:
            raise InputError(f"wait must be True or False (got {shown(wait)})")
        if expires_in is not None and (isinstance(expires_in, bool) or not isinstance(
                expires_in, int | float) or not 0 < expires_in < math.inf):
            raise InputError(f"expires_in must be a finite number of seconds > 0, or None "
                             f"(got {shown(expires_in)})")

    def _claimed(self, agent: str, tool: str, args: Mapping[str, Any] | None,
                 key: str) -> PendingCall | None:
        """The pending call a repeat of ``key`` answers with, or None: the key is claimed
        for this call."""
        claimed = self._calls.claim(key, agent, tool, args)
        if isinstance(claimed, ExecutionResult):
            controller = self._controller
            return PendingCall(controller, Session(controller, agent), None, claimed.tool,
                               dict(claimed.args or {}), claimed.decision,
                               agent=claimed.agent, done=claimed)
        return claimed

    def _keyed_prepare(self, agent: str, tool: str, args: Mapping[str, Any] | None,
                       key: str | None, prepare: Callable[[], PendingCall]) -> PendingCall:
        if key is not None:
            claimed = self._claimed(agent, tool, args, key)
            if claimed is not None:
                return claimed
        try:
            pending = prepare()
        except BaseException as exc:  # prepare runs nothing: the key is free again
            if key is not None:
                self._calls.release(key, f"stopped before it ran: {described(exc)}")
            raise
        return self._finishing(pending, key)

    def _finishing(self, pending: PendingCall, key: str | None) -> PendingCall:
        """``pending``, its outcome recorded for ``key`` once it has one."""
        calls = self._calls
        if key is not None and pending.ticket is None:
            if pending._done is not None:
                calls.finish(key, pending._done)
            else:
                pending._on_done = lambda result: calls.finish(key, result)
        return pending

    # -- tickets -------------------------------------------------------------
    def ticket(self, ticket_id: str) -> Ticket:
        """The ticket as the log says it is now (:class:`TicketError` when there is none)."""
        return self._calls.ticket(ticket_id)

    def tickets(self, status: str | None = "pending") -> list[Ticket]:
        """The log's tickets of ``status`` (None: all), oldest first."""
        return self._calls.tickets(status)

    def approve(self, ticket_id: str, *, by: str, args: Mapping[str, Any] | None = None,
                reason: str = "") -> Ticket:
        """Approve a pending ticket, as ``by``; with ``args``, those run instead (the log
        keeps both). From any process writing this log. :class:`TicketError` when the
        ticket is unknown, answered or expired."""
        return self._calls.answer(ticket_id, Verdict.APPROVE, by, reason, args)

    def deny(self, ticket_id: str, reason: str = "", *, by: str = "someone") -> Ticket:
        """Deny a pending ticket (its call then closes without running)."""
        return self._calls.answer(ticket_id, Verdict.DENY, by, reason, None)

    def resume(self, ticket_id: str) -> ExecutionResult:
        """Run an approved ticket's call (its edited arguments, if any), or close a
        denied or expired one without running it -- once: a ticket resumed before
        returns that result (as the log recorded it, when another process ran it).
        :class:`TicketPending` while it waits for an answer."""
        return self._calls.resume(ticket_id)

    async def aresume(self, ticket_id: str) -> ExecutionResult:
        """:meth:`resume`, awaiting an async handler."""
        return await self._calls.aresume(ticket_id)

    # -- the system lock -----------------------------------------------------
    @property
    def locked(self) -> bool:
        return self._gate.locked

    def lock(self, reason: str = "") -> None:
        """Force MOCK-only everywhere, including calls already decided but not yet run."""
        self._gate.set_lock(True, reason)

    def unlock(self, reason: str = "") -> None:
        self._gate.set_lock(False, reason)

    # -- scoped grants -------------------------------------------------------
    def grant(self, agent: str, tool: str, *, seconds: float | None = None,
              calls: int | None = None, reason: str = "") -> Grant:
        """Approve ``tool`` for ``agent`` for ``seconds`` on the engine's clock
        and/or ``calls`` calls. Recorded in the audit trail; its id is
        ``grant-<seq>``, the sequence number of its event, so ids never repeat
        in a log, whichever process wrote them.

        Raises :class:`InputError` for ``seconds`` that is not a finite number
        > 0 or ``calls`` that is not a whole number >= 1, and
        :class:`UnknownToolError` for a tool not in the catalogue.
        """
        return self._gate.grant(agent, tool, seconds, calls, reason)

    def revoke(self, grant: str | Grant, reason: str = "") -> None:
        """End a grant (by its id, or the :class:`Grant` itself); recorded in the audit trail.

        A call it approved that has not started its LIVE run yet is downgraded
        to DRY_RUN when it runs. Raises :class:`InputError` when no such grant
        is active.
        """
        self._gate.revoke(grant, reason)

    def grants(self) -> list[Grant]:
        """Grants that can still approve a call now."""
        gate = self._gate
        with gate.lock:
            return gate.grants.active(self.clock())

    # -- guarding a callable -------------------------------------------------
    def guard(self, tool: str, *, agent: str, confidence: float | None = None,
              mock: Callable[..., Any] | None = None,
              dry_run: Callable[..., Any] | None = None,
              undo: Callable[..., Any] | None = None,
              approval: bool | None = None) -> Callable[[F], F]:
        """A decorator: calls of the function (sync or ``async def``, or a method) go
        through this engine as ``tool`` for ``agent``.

        The guarded function keeps its signature, type hints, name and docstring
        (``functools.wraps``), so frameworks that build a tool's schema from them
        see the same parameters. A call binds its arguments (defaults applied; a
        method's ``self`` left out) into one dict, which the engine decides, records
        and runs: :meth:`execute`, or ``await aexecute`` for an ``async def``, with
        ``confidence`` and ``approval``. The function is called again from that dict
        (an approver's edited arguments, when it edited them), positional-only,
        ``*args`` and ``**kwargs`` as they were given. By the mode the engine allows:

        - LIVE runs the function;
        - DRY_RUN runs ``dry_run`` (called as the function is); without one the
          engine downgrades the call to MOCK, and records why;
        - MOCK runs ``mock`` (called as the function is); without one it returns the
          empty value of the function's return annotation, never a dict in place of
          a list: ``list`` -> ``[]``, ``dict`` -> ``{}``, ``str`` -> ``""``,
          ``int`` -> ``0``, ``float`` -> ``0.0``, ``bool`` -> ``False``, ``tuple`` ->
          ``()``, ``set`` -> ``set()``, ``Optional[X]`` -> ``None``, ``None`` or no
          annotation -> ``None``; a dataclass, a pydantic model, a ``TypedDict`` or any
          other class -> ``None`` (give ``mock=`` to return one). The full table:
          :func:`buddy.engine.core._guard.empty_value`.

        ``undo`` is the tool's undo handler, called as ``undo([self,] result, *args,
        **kwargs)`` when a session rolls a LIVE run back (a guarded call is a session
        of its own). The guard registers the tool's handlers on this engine; the
        engine running the tool by name (``engine.execute(agent, tool, args)``) runs
        the function too, unless it is a method (it needs its object). Substitutes
        of a sync function must be sync; an async function's may be either.

        Returns what the function (or its substitute) returned. Raises
        :class:`CallRefused` (a ``PermissionError``; ``.result`` holds the
        :class:`ExecutionResult`) when the call is not allowed -- refused, denied,
        rate limited -- and the function did not run; an exception the function
        or a substitute raised is raised again as itself (the engine has recorded
        it). A call whose arguments do not fit the signature raises ``TypeError``
        before the engine sees it.

        Raises at decoration: :class:`UnknownToolError` for a tool not in the
        catalogue; :class:`InputError` for an agent that is not a non-empty string,
        a confidence outside [0, 1], an approval not True/False/None, a substitute
        that is not callable (or async for a sync function), a generator function,
        and a tool that already has handlers on this engine (one guarded function
        per tool and engine; defining the same function again replaces it).

        Examples
        --------
        >>> engine = Engine.default(clock=lambda: 0.0)
        >>> @engine.guard("memory_search", agent="agent-1", confidence=0.9)
        ... def search(query: str, limit: int = 3) -> list[str]:
        ...     return [query] * limit
        >>> search("buddy", limit=2)
        ['buddy', 'buddy']
        >>> engine.lock(); search("buddy")          # MOCK: the empty value of list[str]
        []
        """
        return guard(self, tool, agent=agent, confidence=confidence, mock=mock,
                     dry_run=dry_run, undo=undo, approval=approval)

    # -- asking without recording --------------------------------------------
    def check(self, agent: str, tool: str, confidence: float | None = None, *,
              approval: bool | None = None, args: Mapping[str, Any] | None = None,
              ) -> Explanation:
        """What :meth:`decide` would say for this call now, and why; records nothing.

        The same refusals, machine walk, system lock, grants and rate limits as
        :meth:`decide`, read and never changed: no audit event, no grant call used
        up, no rate-limit token taken, no approver asked. When the call would wait
        for the approver, the decision is the one that holds until it answers
        (DRY_RUN) and ``if_approved`` the one an approval now would give. Never
        raises for bad input: a refusal is explained (unknown tool: ``allowed``
        False, rule ``tool.unknown``). ``args`` is read only to resolve a missing
        confidence. :meth:`explain` is the same method.

        Examples
        --------
        >>> engine = Engine.default(clock=lambda: 0.0)
        >>> why = engine.check("agent-1", "msgraph_send_email", 0.9)
        >>> why.mode, why.rule, why.contract_field, why.approval
        (<ExecutionMode.DRY_RUN: 'DRY_RUN'>, 'high.live', 'requires_approval', 'waiting')
        >>> print(why)
        msgraph_send_email for agent-1 at confidence 0.9: DRY_RUN (allowed, state AWAITING_APPROVAL)
          rule: high.live (when confidence >= 0.85)
          reason: HIGH risk: confidence >= 0.85 met but LIVE needs approval and none ...
          contract: risk HIGH, irreversible, requires approval
          permissions: mail.read, mail.send
          forced: requires_approval -> LIVE needs an approval
          conditions:
            high.dry_run (DRY_RUN): confidence >= 0.8 -- actual 0.9: held
            high.live (LIVE): confidence >= 0.85 -- actual 0.9: held
          approval: no approval, grant or approver: the call waits (DRY_RUN)
          if approved now: LIVE (high.live)
          lock: unlocked
          rate limit: 30 calls/min, 30 tokens left
        >>> engine.check("agent-1", "no_such_tool", 0.9).rule
        'tool.unknown'
        >>> engine.audit.last_seq   # the log's header (its "open" event) alone: nothing recorded
        1
        """
        return explain(self._gate, agent, tool, confidence, approval, args)

    explain = check
