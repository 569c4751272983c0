"""Asking without recording: what a decision would be now, and why.

:func:`explain` answers what :meth:`Gate.decide <buddy.engine.core._gate.Gate.decide>`
would say for a call, through the same refusal, the same compiled machine walk
and the same system lock, and writes nothing: no audit event, no grant call used
up, no rate-limit token taken, no approver asked. Grants and token buckets are
read, never changed; the only memories it fills are the policy's walk memos,
which are pure functions of their keys (a walk remembered ends where a new one
would).

The answer is an :class:`Explanation`: the :class:`Decision`, the row or built-in
rule that made it, the contract fields that mattered, each condition of the
DRY_RUN and LIVE rows of the tool's risk with its actual value, the approval
situation, the system lock and the rate limit's tokens left.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from buddy.engine.core._controller import _bad_args
from buddy.engine.core._decision import (
    RULE_ERROR,
    RULE_PERMISSION,
    RULE_RATE_LIMIT,
    Decision,
    Outcome,
    _refusal,
)
from buddy.engine.core._gate import Gate, TokenBucket
from buddy.machines.escalation import EscalationInputs, ExecutionState
from buddy.rules.base._masking import described, shown
from buddy.rules.base._values import ExecutionMode, RiskLevel, plain_confidence, valid_confidence
from buddy.rules.tables._catalogue import ToolContract
from buddy.rules.tables._conditions import _FUNCS, Op
from buddy.rules.tables._escalation import _GETTERS, EscalationRow, RiskPolicy

__all__ = [
    "APPROVAL_SITUATIONS",
    "CONTRACT_EFFECTS",
    "ConditionCheck",
    "Explanation",
    "explain",
]

S = ExecutionState
_USES_THE_TOOL = (ExecutionMode.DRY_RUN, ExecutionMode.LIVE)

#: What :attr:`Explanation.contract_field` forced, by field.
CONTRACT_EFFECTS: Mapping[str, str] = {
    "permissions": "the agent lacks a permission the tool needs: refused",
    "rate_limit_per_minute": "no call left this minute: refused",
    "requires_approval": "LIVE needs an approval",
}

#: What :attr:`Explanation.approval` says, and its text.
APPROVAL_SITUATIONS: Mapping[str, str] = {
    "not needed": "not needed: the call does not wait for approval",
    "given": "given by the caller",
    "denied": "denied by the caller: the call is halted",
    "grant": "a live grant would approve it",
    "approver": "the approver would be asked; until it answers, the call waits (DRY_RUN)",
    "waiting": "no approval, grant or approver: the call waits (DRY_RUN)",
}


@attrs.frozen
class ConditionCheck:
    """One condition of an escalation row, tested on the call's actual value."""

    row: str                 # the row's id, e.g. "high.live"
    mode: ExecutionMode      # what the row grants: DRY_RUN or LIVE
    group: str               # "all" (each must hold) or "any" (one must hold)
    metric: str              # e.g. "confidence"
    op: Op
    threshold: Any
    actual: Any
    held: bool

    def __str__(self) -> str:
        return (f"{self.row} ({self.mode.value}): {self.metric} {self.op.symbol} "
                f"{self.threshold} -- actual {self.actual}: "
                f"{'held' if self.held else 'did not hold'}")


@attrs.frozen
class Explanation:
    """What a decision would be now, and why; nothing was recorded to find out.

    ``decision`` is what :meth:`Engine.decide <buddy.engine.Engine.decide>` would
    return (and record) for the same inputs; when it would ask the approver
    (``approval == "approver"``) it is the decision that holds until the approver
    answers. When the call waits for an answer (``"approver"`` or ``"waiting"``),
    ``if_approved`` is the decision an approval now would give (else None).

    Fields: the inputs as decided on (``agent``, ``tool``, ``confidence`` once
    resolved, ``given_approval``); the tool's ``contract`` and the ``policy`` of
    its risk (the DRY_RUN and LIVE rows; both None for an unknown tool);
    ``approval``, one of :data:`APPROVAL_SITUATIONS`, and ``grant``, the id of
    the grant that would approve; ``locked``, the system lock read; and
    ``tokens_left``, what the tool's rate limit holds now (None: no limit; a
    DRY_RUN or LIVE call takes one). The rest is derived from them:
    :attr:`when`, :attr:`conditions`, :attr:`contract_field`, and the
    contract's :attr:`risk`, :attr:`reversible`, :attr:`requires_approval`,
    :attr:`permissions` and :attr:`rate_limit_per_minute`.
    """

    decision: Decision
    agent: Any
    tool: Any
    confidence: Any
    given_approval: Any
    contract: ToolContract | None
    policy: RiskPolicy | None = attrs.field(repr=False)
    approval: str
    grant: str | None
    if_approved: Decision | None
    locked: bool | None
    tokens_left: float | None
    #: where a confidence the call did not give came from (``provider``,
    #: ``tool_default``, ``default``; None: the caller gave it)
    confidence_from: str | None = None

    # -- the decision --------------------------------------------------------
    @property
    def mode(self) -> ExecutionMode:
        return self.decision.mode

    @property
    def allowed(self) -> bool:
        return self.decision.allowed

    @property
    def rule(self) -> str:
        """The id of the escalation row, or the built-in rule, that decided."""
        return self.decision.rule

    @property
    def reason(self) -> str:
        return self.decision.reason

    @property
    def state(self) -> ExecutionState:
        return self.decision.state

    @property
    def when(self) -> str | None:
        """The ``when`` text of the escalation row that decided; None when a built-in
        rule did (``system.lock``, ``tool.unknown``, ``rate.limit``, ...)."""
        p = self.policy
        if p is not None:
            for row in (p.dry_run_row, p.live_row):
                if self.decision.rule == row.id:
                    return str(row.when)
        return None

    @property
    def conditions(self) -> tuple[ConditionCheck, ...]:
        """Each condition of the DRY_RUN and LIVE rows of the tool's risk, with the
        call's actual value and whether it held (none for an unknown tool or a
        confidence that is no number in [0, 1])."""
        p, contract = self.policy, self.contract
        if p is None or contract is None or not valid_confidence(self.confidence):
            return ()
        inputs = EscalationInputs(p, self.confidence, self.given_approval, bool(self.locked),
                                  contract.requires_approval)
        return (*_checks(p.dry_run_row, inputs), *_checks(p.live_row, inputs))

    # -- the contract --------------------------------------------------------
    @property
    def risk(self) -> RiskLevel | None:
        return None if self.contract is None else self.contract.risk

    @property
    def reversible(self) -> bool | None:
        return None if self.contract is None else self.contract.reversible

    @property
    def requires_approval(self) -> bool | None:
        return None if self.contract is None else self.contract.requires_approval

    @property
    def permissions(self) -> frozenset[str] | None:
        return None if self.contract is None else self.contract.permissions

    @property
    def rate_limit_per_minute(self) -> int | None:
        return None if self.contract is None else self.contract.rate_limit_per_minute

    @property
    def contract_field(self) -> str | None:
        """The contract field that forced the outcome (see :data:`CONTRACT_EFFECTS`):
        ``permissions`` (a permission the agent lacks refused it),
        ``rate_limit_per_minute`` (no call left), ``requires_approval`` (LIVE
        needs an approval, and the call reached that question); else None."""
        if self.contract is None:
            return None
        rule = self.decision.rule
        if rule == RULE_PERMISSION:
            return "permissions"
        if rule == RULE_RATE_LIMIT:
            return "rate_limit_per_minute"
        if self.contract.requires_approval and self.approval != "not needed":
            return "requires_approval"
        return None

    @property
    def contract_effect(self) -> str:
        """What :attr:`contract_field` forced ("" when none did)."""
        field = self.contract_field
        return "" if field is None else CONTRACT_EFFECTS[field]

    def __str__(self) -> str:
        d = self.decision
        source = "" if self.confidence_from is None else f" (from {self.confidence_from})"
        lines = [f"{_text(self.tool)} for {_text(self.agent)} at confidence "
                 f"{shown(self.confidence)}{source}: {d.mode.value} "
                 f"({'allowed' if d.allowed else 'refused'}, state {d.state.value})"]
        when = self.when
        lines.append(f"  rule: {d.rule}" + (" (built-in)" if when is None else
                                            f" (when {when})"))
        lines.append(f"  reason: {d.reason}")
        c = self.contract
        if c is not None:
            lines.append(f"  contract: risk {c.risk.value}, "
                         f"{'reversible' if c.reversible else 'irreversible'}, "
                         f"{'requires approval' if c.requires_approval else 'no approval'}")
            lines.append(f"  permissions: {', '.join(sorted(c.permissions)) or 'none'}")
        field = self.contract_field
        if field is not None:
            lines.append(f"  forced: {field} -> {CONTRACT_EFFECTS[field]}")
        conditions = self.conditions
        if conditions:
            lines.append("  conditions:")
            lines.extend(f"    {x}" for x in conditions)
        approval = APPROVAL_SITUATIONS.get(self.approval, self.approval)
        if self.grant is not None:
            approval += f" ({self.grant})"
        lines.append(f"  approval: {approval}")
        if self.if_approved is not None:
            lines.append(f"  if approved now: {self.if_approved.mode.value} "
                         f"({self.if_approved.rule})")
        if self.locked is not None:
            lines.append(f"  lock: {'locked: MOCK only' if self.locked else 'unlocked'}")
        if c is not None:
            limit = c.rate_limit_per_minute
            lines.append("  rate limit: none" if limit is None else
                         f"  rate limit: {limit} calls/min, " +
                         ("tokens unknown (the clock failed)" if self.tokens_left is None
                          else f"{self.tokens_left:g} tokens left"))
        return "\n".join(lines)


def _text(value: Any) -> str:
    return value if type(value) is str and value.isprintable() else shown(value)


def explain(gate: Gate, agent: Any, tool: Any, confidence: Any, approval: Any,
            args: Any = None) -> Explanation:
    """What ``gate.decide(agent, tool, confidence, approval=approval)`` would return
    now, and why, recording nothing (see the module docstring). Never raises: a
    failure inside is explained as a refusal (``engine.error``), as decide's
    evaluation fails closed.

    ``args`` is read only to resolve a missing confidence, through the gate's
    ``resolve_confidence(agent, tool, args, confidence)`` when it has one.
    """
    try:
        return _explain(gate, agent, tool, confidence, approval, args)
    except Exception as exc:  # fail closed, never LIVE by accident
        decision = _refusal(RULE_ERROR, f"check failed: {described(exc)}: fail closed")[0]
        return Explanation(decision, agent, tool, confidence, approval, None, None,
                           "not needed", None, None, None, None)


def _explain(gate: Gate, agent: Any, tool: Any, confidence: Any, approval: Any,
             args: Any) -> Explanation:
    """:meth:`Gate.decide`, step by step, with every write left out."""
    source = resolved = None
    if confidence is None:  # the engine's provider or defaults, as decide asks them
        confidence, source, resolved = gate.resolve(
            agent, tool, args if isinstance(args, Mapping) else None)
    elif type(confidence) is not float:
        confidence = plain_confidence(confidence)
    policy = gate.policy
    grant: list[str] = []

    def peek(agent: str, contract: ToolContract, confidence: float,
             ) -> tuple[bool | None, str | None, float | None]:
        """``Gate._grant``, the grant looked at and not used."""
        now = gate.now()
        for g in gate.grants.active(now):  # in the order GrantBook.consume tries them
            if g.agent == agent and g.tool == contract.name:
                grant.append(g.id)
                return True, f"grant:{g.id}", now
        return None, None, None

    if_approved = None
    with gate.lock:  # a view of the lock, grants and buckets no decision is halfway through
        locked = gate.locked_now()
        refused = resolved  # as decide: why no confidence first, then declared agents
        if refused is None and gate.agents is not None:
            refused = gate.refusal(agent, tool, confidence, approval)
        if refused is None and args is not None:  # as execute refuses them
            bad_args = _bad_args(args)
            if bad_args is not None and policy.refusal(agent, tool, confidence,
                                                       approval) is None:
                refused = bad_args
        if refused is not None:
            outcome, waits = refused, False
        else:  # the policy refuses bad inputs itself, as in decide
            outcome, approved, _, _, _ = policy.evaluate(tool, confidence, approval, locked,
                                                         agent, peek)
            if approval is None and approved is None:
                waits = outcome[0].state is S.AWAITING_APPROVAL
                if waits:  # decide asks the approver (if any) here
                    approve = policy.evaluate(tool, confidence, True, locked, agent)[0]
                    if_approved = _throttled(gate, tool, approve)[0][0]
            elif approval is True or approval is False or approved is not None:
                # whether the call reached the approval question: the walk unanswered
                waits = policy.evaluate(tool, confidence, None, locked, agent)[0][0].state \
                    is S.AWAITING_APPROVAL
            else:  # an approval that is none of True, False, None: refused
                waits = False
        outcome, tokens = _throttled(gate, tool, outcome)
    if not waits:
        situation = "not needed"
    elif approval is not None:
        situation = "given" if approval is True else "denied"
    elif grant:
        situation = "grant"
    else:
        situation = "approver" if gate.approver is not None else "waiting"
    entry = policy.tools.get(tool) if type(tool) is str else None
    return Explanation(outcome[0], agent, tool, confidence, approval,
                       None if entry is None else entry.contract,
                       None if entry is None else entry.policy,
                       situation, grant[0] if grant else None, if_approved, locked, tokens,
                       source)


def _throttled(gate: Gate, tool: Any, outcome: Outcome) -> tuple[Outcome, float | None]:
    """``Gate.throttle``, the token counted and not taken: the outcome, and the tokens
    the tool's bucket holds now (None: no limit, or no known tool)."""
    bucket = gate.buckets.get(tool) if type(tool) is str else None
    if bucket is None:
        return outcome, None
    decision = outcome[0]
    if not decision.allowed or decision.mode not in _USES_THE_TOOL:
        try:  # decide reads no clock here: a clock that fails only leaves the count out
            return outcome, _tokens(bucket, gate.now())
        except Exception:
            return outcome, None
    tokens = _tokens(bucket, gate.now())
    if tokens >= 1.0:
        return outcome, tokens
    return _refusal(RULE_RATE_LIMIT, f"{tool} allows {bucket.capacity:g} calls per minute "
                    "and none is left: fail closed"), tokens


def _tokens(bucket: TokenBucket, now: float) -> float:
    """What :meth:`TokenBucket.take` finds at ``now``: its arithmetic, nothing taken."""
    tokens = bucket.tokens
    if bucket.at is not None and now > bucket.at:
        tokens = min(bucket.capacity, tokens + (now - bucket.at) * bucket.rate)
    return tokens


def _checks(row: EscalationRow, inputs: EscalationInputs) -> list[ConditionCheck]:
    """Each condition of ``row`` with its actual value, and whether it held."""
    out = []
    for group, conditions in (("all", row.when.all), ("any", row.when.any)):
        for c in conditions:
            actual = _GETTERS[c.metric](inputs)
            out.append(ConditionCheck(row.id, row.mode, group, c.metric, c.op, c.value, actual,
                                      bool(_FUNCS[c.op](actual, c.value))))
    return out
