"""The object an application embeds: :class:`Engine`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from buddy.engine.core._approvals import ApprovalCallback, Grant
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
from buddy.engine.core._gate import ConfidenceProvider, Gate
from buddy.rules.base._masking import shown
from buddy.rules.base._values import ExecutionMode, valid_confidence
from buddy.rules.base.errors import InputError
from buddy.rules.tables._catalogue import ToolContractRegistry
from buddy.rules.tables._escalation import EscalationTable

__all__ = ["Engine"]

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
        # The documented method below, without its frame: decide is the hot path.
        self.decide = self._gate.decide  # type: ignore[method-assign]

    # -- construction --------------------------------------------------------
    @classmethod
    def default(cls, **kwargs: Any) -> Engine:
        """The standard catalogue and escalation table shipped with buddy."""
        return cls(ToolContractRegistry.default(), EscalationTable.default(), **kwargs)

    @classmethod
    def from_files(cls, catalogue: str | Path | None = None, rules: str | Path | None = None,
                   **kwargs: Any) -> Engine:
        """Load a catalogue TOML and/or a rules directory (``escalation.toml``);
        what is not given falls back to the shipped defaults."""
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

    def session(self, agent: str) -> Session:
        """Calls that roll back together (see :class:`Session`)."""
        return Session(self._controller, agent)

    def asession(self, agent: str) -> AsyncSession:
        """Calls that roll back together, for async callers (see :class:`AsyncSession`)."""
        return AsyncSession(self._controller, agent)

    def execute(self, agent: str, tool: str, args: Mapping[str, Any] | None = None, *,
                confidence: float | None = None, approval: bool | None = None,
                max_mode: ExecutionMode | None = None, cap_reason: str = "",
                ) -> ExecutionResult:
        """Decide and run one call in a session of its own (``max_mode``: see
        :meth:`Session.prepare`)."""
        controller = self._controller
        return controller.execute(Session(controller, agent), tool, args, confidence, approval,
                                  max_mode, cap_reason)

    async def aexecute(self, agent: str, tool: str, args: Mapping[str, Any] | None = None,
                       *, confidence: float | None = None, approval: bool | None = None,
                       max_mode: ExecutionMode | None = None, cap_reason: str = "",
                       ) -> ExecutionResult:
        """:meth:`execute` for async callers: async approvers, handlers and undos are
        awaited, sync ones called inline; one audit chain with the sync callers."""
        controller = self._controller
        return await controller.aexecute(AsyncSession(controller, agent), tool, args,
                                         confidence, approval, max_mode, cap_reason)

    def prepare(self, agent: str, tool: str, args: Mapping[str, Any] | None = None, *,
                confidence: float | None = None, approval: bool | None = None,
                max_mode: ExecutionMode | None = None, cap_reason: str = "") -> PendingCall:
        """Decide one call now and run it later (``.run()``), in a session of its own."""
        return self.session(agent).prepare(tool, args, confidence=confidence, approval=approval,
                                           max_mode=max_mode, cap_reason=cap_reason)

    async def aprepare(self, agent: str, tool: str, args: Mapping[str, Any] | None = None,
                       *, confidence: float | None = None, approval: bool | None = None,
                       max_mode: ExecutionMode | None = None,
                       cap_reason: str = "") -> PendingCall:
        """:meth:`prepare` for async callers (run it with ``await pending.arun()``)."""
        return await self.asession(agent).prepare(tool, args, confidence=confidence,
                                                  approval=approval, max_mode=max_mode,
                                                  cap_reason=cap_reason)

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
