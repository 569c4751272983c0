"""The object an application embeds: :class:`Engine`."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from buddy.engine.core._approvals import (
    Approval,
    ApprovalCallback,
    ApprovalRequest,
    Grant,
    GrantBook,
    as_approval,
)
from buddy.engine.core._audit import AuditLog
from buddy.engine.core._controller import (
    Controller,
    ExecutionResult,
    Handlers,
    PendingCall,
    Session,
)
from buddy.engine.core._decision import (
    RULE_PERMISSION,
    RULE_UNKNOWN_AGENT,
    Decision,
    Outcome,
    Policy,
    _refusal,
)
from buddy.machines.escalation import ExecutionState
from buddy.rules.base._values import ExecutionMode
from buddy.rules.tables._catalogue import ToolContract, ToolContractRegistry
from buddy.rules.tables._escalation import EscalationTable

__all__ = ["Engine"]

S = ExecutionState


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
                 agents: Mapping[str, Iterable[str]] | None = None) -> None:
        self.registry = registry
        self.policy = Policy(registry, table)
        self.clock = clock
        self.audit = audit if audit is not None else AuditLog.memory(clock=clock)
        self.approver = approver
        self.agents = None if agents is None else {a: frozenset(p) for a, p in agents.items()}
        self._lock = self.audit.lock  # one lock orders decisions, locks, grants and events
        self._locked = False
        self._grants = GrantBook()
        self._grant_ids = itertools.count(1)
        self._granted_at = 0.0
        self._controller = Controller(self)

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

    # -- deciding ------------------------------------------------------------
    def decide(self, agent: str, tool: str, confidence: float, *,
               approval: bool | None = None) -> Decision:
        """Decide the mode of one call and record it; never raises for bad input.

        ``approval`` is a one-shot answer for this call; when it is None and the
        call waits for approval, a scoped grant is used if one is live, else the
        approver callback is asked (outside the engine's lock). Unknown tools,
        bad confidences and any failure inside evaluation fail closed (MOCK,
        not allowed).
        """
        refused = self._precheck(agent, tool) if self.agents is not None else None
        with self._lock:
            locked = self._locked
            if refused is not None:
                self._record_decision(agent, agent, tool, confidence, approval, None, locked,
                                      refused)
                return refused[0]
            outcome, approved, via = self.policy.evaluate(
                tool, confidence, approval, locked, agent, self._grant_resolver)
            if approved is not None or self.approver is None or \
                    outcome[0].state is not S.AWAITING_APPROVAL:
                self._record_decision(agent, agent, tool, confidence, approved, via, locked,
                                      outcome)
                return outcome[0]
        answer = self._ask(agent, self.registry.get(tool), confidence, None)
        with self._lock:
            locked = self._locked
            outcome, approved, _ = self.policy.evaluate(
                tool, confidence, None if answer is None else answer.approved, locked, agent)
            self._record_decision(agent, agent, tool, confidence, approved,
                                  None if answer is None else "callback", locked, outcome)
            return outcome[0]

    def _precheck(self, agent: str, tool: str) -> Outcome | None:
        """Refusals made before the machine runs, when agents are declared: they only tighten."""
        if self.agents is None:
            return None
        held = self.agents.get(agent)
        if held is None:
            return _refusal(RULE_UNKNOWN_AGENT, f"unknown agent {agent!r}: fail closed")
        entry = self.policy.tools.get(tool)
        if entry is not None:
            missing = entry.contract.permissions - held
            if missing:
                return _refusal(RULE_PERMISSION, f"agent {agent!r} lacks permission(s) "
                                f"{', '.join(sorted(missing))} for {tool}")
        return None

    def _record_decision(self, subject: str, agent: str, tool: str, confidence: float,
                         approval: bool | None, via: str | None, locked: bool,
                         outcome: Outcome, approved_at: float | None = None) -> int:
        """Append one decision event; the caller holds the engine's lock."""
        if approved_at is None and via is not None and via.startswith("grant:"):
            approved_at = self._granted_at
        data = self.policy.record(agent, tool, confidence, approval, via, locked, outcome,
                                  approved_at)
        return self.audit.append_locked("decision", "escalation", subject, "decide", "MOCK",
                                        outcome[2], data)

    def _grant_resolver(self, agent: str, contract: ToolContract,
                        confidence: float) -> tuple[bool | None, str | None]:
        now = self.clock()
        grant = self._grants.consume(agent, contract.name, now)
        if grant is None:
            return None, None
        self._granted_at = now  # read by _record_decision, under the same lock
        return True, f"grant:{grant.id}"

    def _ask(self, agent: str, contract: ToolContract, confidence: float,
             args: Mapping[str, Any] | None) -> Approval | None:
        if self.approver is None:
            return None
        request = ApprovalRequest(agent, contract.name, contract.risk, confidence, args,
                                  f"{contract.risk.value} risk tool {contract.name} waits for "
                                  "approval to run LIVE")
        try:
            return as_approval(self.approver(request))
        except Exception as exc:  # an approver that fails has not approved
            return Approval.deny(f"approver failed: {type(exc).__name__}: {exc}")

    def _approve(self, agent: str, contract: ToolContract, confidence: float,
                 args: Mapping[str, Any]) -> tuple[Approval | None, str | None, float | None]:
        """For the controller: a live grant, else the callback.

        Returns ``(answer, approved_by, approved_at)``; ``approved_at`` is the
        clock reading at which a grant was checked.
        """
        with self._lock:
            _, via = self._grant_resolver(agent, contract, confidence)
            at = self._granted_at
        if via is not None:
            return Approval.approve(via), via, at
        answer = self._ask(agent, contract, confidence, args)
        return answer, None if answer is None else "callback", None

    # -- running -------------------------------------------------------------
    def register_handler(self, tool: str, *, mock: Callable[..., Any] | None = None,
                         dry_run: Callable[..., Any] | None = None,
                         live: Callable[..., Any] | None = None,
                         undo: Callable[..., Any] | None = None) -> None:
        """Give ``tool`` its callables. A tool without ``live`` never runs LIVE."""
        self._controller.register(tool, Handlers(mock, dry_run, live, undo))

    def session(self, agent: str) -> Session:
        """Calls that roll back together (see :class:`Session`)."""
        return Session(self._controller, agent)

    def execute(self, agent: str, tool: str, args: Mapping[str, Any] | None = None, *,
                confidence: float, approval: bool | None = None,
                max_mode: ExecutionMode | None = None, cap_reason: str = "",
                ) -> ExecutionResult:
        """Decide and run one call in a session of its own (``max_mode``: see
        :meth:`Session.prepare`)."""
        return self.session(agent).execute(tool, args, confidence=confidence, approval=approval,
                                           max_mode=max_mode, cap_reason=cap_reason)

    def prepare(self, agent: str, tool: str, args: Mapping[str, Any] | None = None, *,
                confidence: float, approval: bool | None = None,
                max_mode: ExecutionMode | None = None, cap_reason: str = "") -> PendingCall:
        """Decide one call now and run it later (``.run()``), in a session of its own."""
        return self.session(agent).prepare(tool, args, confidence=confidence, approval=approval,
                                           max_mode=max_mode, cap_reason=cap_reason)

    # -- the system lock -----------------------------------------------------
    @property
    def locked(self) -> bool:
        return self._locked

    def lock(self, reason: str = "") -> None:
        """Force MOCK-only everywhere, including calls already decided but not yet run."""
        with self._lock:
            if not self._locked:
                self._locked = True
                self.audit.append("lock", "system", "system", "lock", "UNLOCKED", "LOCKED",
                                  {"reason": reason})

    def unlock(self, reason: str = "") -> None:
        with self._lock:
            if self._locked:
                self._locked = False
                self.audit.append("unlock", "system", "system", "unlock", "LOCKED",
                                  "UNLOCKED", {"reason": reason})

    # -- scoped grants -------------------------------------------------------
    def grant(self, agent: str, tool: str, *, seconds: float | None = None,
              calls: int | None = None, reason: str = "") -> Grant:
        """Approve ``tool`` for ``agent`` for ``seconds`` on the engine's clock
        and/or ``calls`` calls. Recorded in the audit trail."""
        self.registry.get(tool)
        with self._lock:
            now = self.clock()
            grant = Grant(f"grant-{next(self._grant_ids)}", agent, tool, now,
                          None if seconds is None else now + seconds, calls, reason)
            self._grants.add(grant)
            self.audit.append("grant", "approval", grant.id, "grant", None, "ACTIVE", {
                "agent": agent, "tool": tool, "granted_at": now,
                "expires_at": grant.expires_at, "calls": calls, "reason": reason}, ts=now)
            return grant

    def revoke(self, grant_id: str, reason: str = "") -> None:
        with self._lock:
            self._grants.revoke(grant_id)
            self.audit.append("revoke", "approval", grant_id, "revoke", "ACTIVE", "REVOKED",
                              {"reason": reason})

    def grants(self) -> list[Grant]:
        """Grants that can still approve a call now."""
        with self._lock:
            return self._grants.active(self.clock())
