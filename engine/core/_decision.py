"""Decisions: the escalation machine's verdict on one tool call.

:class:`Policy` compiles the catalogue, the escalation table and the escalation
machine's declaration once; :meth:`Policy.evaluate` walks the compiled machine
table (the same rows the ``transitions`` machine is built from) with the call's
inputs. Every outcome's :class:`Decision` is made at load, so a decision
allocates nothing but its inputs.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from typing import Any

import attrs
import orjson

from buddy.machines import escalation
from buddy.machines._factory import compile_table, walk
from buddy.machines.escalation import (
    DECIDE_PATH,
    EscalationInputs,
    ExecutionState,
)
from buddy.rules.base._masking import described, shown
from buddy.rules.base._values import ExecutionMode, RiskLevel, valid_confidence
from buddy.rules.tables._catalogue import ToolContract, ToolContractRegistry
from buddy.rules.tables._escalation import EscalationTable, RiskPolicy

__all__ = ["REFUSAL_RULES", "Decision", "Policy"]

S = ExecutionState
APPROVAL_PATH = ("confirm_approval", "approval_denied")

# Rule ids of decisions no table row makes.
RULE_LOCK = "system.lock"
RULE_DENIED = "approval.denied"
RULE_UNKNOWN_TOOL = "tool.unknown"
RULE_BAD_CONFIDENCE = "input.confidence"
RULE_BAD_APPROVAL = "input.approval"
RULE_BAD_AGENT = "input.agent"
RULE_BAD_ARGS = "input.args"
RULE_RATE_LIMIT = "rate.limit"
RULE_PERMISSION = "permission.missing"
RULE_UNKNOWN_AGENT = "agent.unknown"
RULE_ERROR = "engine.error"
#: Refusals no table row makes: replay checks that each refused (MOCK, not
#: allowed) and does not re-decide it. They only ever tighten.
REFUSAL_RULES = frozenset({
    RULE_UNKNOWN_TOOL, RULE_BAD_CONFIDENCE, RULE_BAD_APPROVAL, RULE_BAD_AGENT, RULE_BAD_ARGS,
    RULE_UNKNOWN_AGENT, RULE_PERMISSION, RULE_RATE_LIMIT, RULE_ERROR})


@attrs.frozen
class Decision:
    """The mode a call may run in, whether it may run at all, and why.

    ``rule`` is the id of the row (or built-in rule) that decided; ``state`` is
    where the escalation machine ended.
    """

    mode: ExecutionMode
    allowed: bool
    rule: str
    reason: str
    state: ExecutionState

    @classmethod
    def refuse(cls, rule: str, reason: str) -> Decision:
        """Fail closed: MOCK, not allowed."""
        return cls(ExecutionMode.MOCK, False, rule, reason, S.MOCK)


Outcome = tuple[Decision, str, str]  # the decision, its mode's and state's values


def _outcomes(p: RiskPolicy, needs_approval: bool) -> dict[tuple[str, bool], Outcome]:
    """Every decision a call of risk ``p.risk`` can end in, keyed by (state name, locked)."""
    risk, dry, live = p.risk.value, p.dry_run_row, p.live_row
    approved = " and approval was given" if needs_approval or live.requires_approval else ""
    out = {
        S.MOCK: Decision(ExecutionMode.MOCK, True, dry.id,
                         f"{risk} risk: DRY_RUN needs {dry.when}; not met, so MOCK only", S.MOCK),
        S.DRY_RUN: Decision(ExecutionMode.DRY_RUN, True, live.id,
                            f"{risk} risk: {dry.when} allows DRY_RUN; LIVE needs {live.when}",
                            S.DRY_RUN),
        S.AWAITING_APPROVAL: Decision(
            ExecutionMode.DRY_RUN, True, live.id,
            f"{risk} risk: {live.when} met but LIVE needs approval and none was given; DRY_RUN",
            S.AWAITING_APPROVAL),
        S.LIVE: Decision(ExecutionMode.LIVE, True, live.id,
                         f"{risk} risk: {live.when}{approved}, so LIVE", S.LIVE),
    }
    table = {(state, locked): d for state, d in out.items() for locked in (False, True)}
    table[(S.LOCKED, True)] = Decision(ExecutionMode.MOCK, True, RULE_LOCK,
                                       "system locked: MOCK only until unlocked", S.LOCKED)
    table[(S.LOCKED, False)] = Decision(ExecutionMode.MOCK, False, RULE_DENIED,
                                        f"{risk} risk: approval denied; the call is halted",
                                        S.LOCKED)
    return {(state.name, locked): (d, d.mode.value, d.state.value)
            for (state, locked), d in table.items()}


class _Tool:
    """One tool's contract and its compiled policy, ready for the hot path."""

    __slots__ = ("contract", "policy", "risk", "requires_approval", "outcomes")

    def __init__(self, contract: ToolContract, policy: RiskPolicy,
                 outcomes: dict[tuple[str, bool], Outcome]) -> None:
        self.contract = contract
        self.policy = policy
        self.risk = contract.risk.value
        self.requires_approval = contract.requires_approval
        self.outcomes = outcomes


#: Entries of the walk memo before it starts over (bounded memory).
WALK_MEMO_SIZE = 65_536

#: ``resolver(agent, contract, confidence) -> (approval, approved_by, approved_at)``: a
#: standing approval (a grant) for a call that waits for one, and when it was checked.
Resolver = Callable[[str, ToolContract, float], "tuple[bool | None, str | None, float | None]"]
#: A decision event as far as its outcome and inputs fix it: the JSON from ``,"event"``
#: to ``data``'s ``"agent":`` key, and from the agent's value to ``data``'s end.
Encoded = tuple[bytes, bytes]
#: What :meth:`Policy.evaluate` returns: the outcome, the approval it used, who gave it
#: (``caller``, ``grant:<id>``, ...), the clock reading a grant was checked at, and the
#: decision event encoded (:data:`Encoded`) when no grant or refusal made it.
Evaluation = tuple[Outcome, "bool | None", "str | None", "float | None", "Encoded | None"]


class Policy:
    """The compiled decision function of one catalogue and one escalation table."""

    def __init__(self, registry: ToolContractRegistry, table: EscalationTable) -> None:
        self.registry = registry
        self.table = table
        self.machine = compile_table(escalation.SPEC)
        self.outcomes: dict[tuple[RiskLevel, bool], dict[tuple[str, bool], Outcome]] = {
            (risk, needs): _outcomes(p, needs)
            for risk, p in table.policies.items() for needs in (False, True)}
        self._by_risk = {(risk.value, needs): (table.policies[risk], out)
                         for (risk, needs), out in self.outcomes.items()}
        #: The outcome of the walk from MOCK, by (tool, confidence, approval, locked), and
        #: its decision event encoded (:data:`Encoded`; None for a zero confidence). Only
        #: valid inputs get here. Agents repeat confidences (0.85, 0.9, ...), so most
        #: walks are looked up.
        self.walked: dict[tuple[str, float, bool | None, bool],
                          tuple[Outcome, Encoded | None]] = {}
        # Where the decide path's walk from MOCK ends, by (risk, requires_approval, region
        # of confidence, approval, locked). A guard reads the confidence only through a
        # row's conditions, each a comparison with a threshold: between two thresholds,
        # and at each, every comparison has one answer, so the walk has one end. The
        # first walk in a region is remembered for the region (few: memory stays small).
        self._cuts: dict[RiskLevel, list[float] | None] = {
            risk: _cuts(p) for risk, p in table.policies.items()}
        self._regions: dict[tuple[RiskLevel, bool, int, bool | None, bool], str] = {}
        self.tools: dict[str, _Tool] = {c.name: self._compiled(c) for c in registry}

    def _compiled(self, c: ToolContract) -> _Tool:
        return _Tool(c, self.table.policies[c.risk],
                     self.outcomes[(c.risk, c.requires_approval)])

    def add_tool(self, contract: ToolContract) -> None:
        """Compile a contract registered (or tightened) after this policy was built (its
        engine's gate calls it, its rate limit set first; one dict store: a decision in
        another thread sees the tool whole, or not yet). A tightened tool's remembered
        walks are forgotten."""
        replaced = contract.name in self.tools
        self.tools[contract.name] = self._compiled(contract)
        if replaced:
            self.walked.clear()

    def evaluate(self, tool: str, confidence: float, approval: bool | None = None,
                 locked: bool = False, agent: str = "", resolver: Resolver | None = None,
                 ) -> Evaluation:
        """Decide one call; returns an :data:`Evaluation`.

        ``resolver(agent, contract, confidence)`` is asked for an approval when
        the call waits for one and ``approval`` is None. Fails closed on an
        agent that is not a non-empty string, an unknown tool, a confidence
        outside [0, 1], an approval other than True, False or None, and any
        error inside.
        """
        entry = self.tools.get(tool) if type(tool) is str else None
        if entry is None or type(agent) is not str or not agent or not agent.isascii() or \
                "ctx-" <= agent < "ctx." or not (  # agent.startswith("ctx-"), cheaper
                    type(confidence) is float and 0.0 <= confidence <= 1.0
                    or valid_confidence(confidence)) or (
                approval is not None and approval is not True and approval is not False):
            refused = self.refusal(agent, tool, confidence, approval)  # the full checks, named
            if refused is not None:
                return refused, None, None, None, None
            assert entry is not None
        via = None if approval is None else "caller"
        at = None
        try:
            key = (tool, confidence, approval, locked)
            walked = self.walked.get(key)
            if walked is None:  # the walk is a pure function of the key: remember its end
                state = self._walk(entry.policy, entry.requires_approval, confidence, approval,
                                   locked)
                if len(self.walked) >= WALK_MEMO_SIZE:
                    self.walked.clear()
                outcome = entry.outcomes[(state, locked)]
                # 0.0 and -0.0 are one key but two JSON numbers: a zero is encoded per call
                walked = self.walked[key] = (outcome, None if confidence == 0.0 else
                                              self.encode(entry.contract.name, confidence,
                                                          approval, via, locked, outcome))
            outcome, encoded = walked
            if outcome[2] == "AWAITING_APPROVAL" and approval is None and resolver is not None:
                approval, via, at = resolver(agent, entry.contract, confidence)
                if approval is not None:
                    state = walk(self.machine, "AWAITING_APPROVAL", APPROVAL_PATH,
                                 EscalationInputs(entry.policy, confidence, approval, locked,
                                                  entry.requires_approval))
                    outcome, encoded = entry.outcomes[(state, locked)], None
            return outcome, approval, via, at, encoded
        except Exception as exc:  # fail closed, never LIVE by accident
            return _refusal(RULE_ERROR, f"evaluation failed: {described(exc)}: "
                            "fail closed"), approval, via, at, None

    def remembered(self, tool: str, confidence: float, approval: bool | None, locked: bool,
                   agent: str) -> tuple[Outcome, Encoded | None] | None:
        """What :attr:`walked` holds for a call, walked (and remembered) first when it
        holds nothing yet; None for a call whose inputs are refused. The caller has
        checked the types (equal inputs of other types would find the entry)."""
        key = (tool, confidence, approval, locked)
        walked = self.walked.get(key)
        if walked is None:
            self.evaluate(tool, confidence, approval, locked, agent)
            walked = self.walked.get(key)
        return walked

    def encode(self, tool: str, confidence: float, approval: bool | None,
               approved_by: str | None, locked: bool, outcome: Outcome) -> Encoded:
        """The decision event of an allowed or denied call, encoded but for its agent:
        the bytes :meth:`record`'s dict gives through the audit log's JSON encoder,
        split where the agent goes (a test holds the two to be the same)."""
        data = self.record("", tool, confidence, approval, approved_by, locked, outcome)
        del data["agent"]
        return (b',"event":"decide","src":"MOCK","dst":%b,"data":{"agent":'
                % orjson.dumps(outcome[2]), b"," + orjson.dumps(data)[1:])

    def refusal(self, agent: object, tool: object, confidence: object,
                approval: object) -> Outcome | None:
        """The refusal of a call whose inputs no rule can decide, or None when they can be.

        Only exact values pass: an agent that is a name (:func:`agent_problem`),
        a tool of the catalogue, a confidence in [0, 1] (no bool, no NaN), an
        approval that is ``True``, ``False`` or ``None`` (``1`` is not ``True``
        here: the decision must not depend on how a caller spelled it).
        """
        problem = agent_problem(agent)
        if problem is not None:
            return _refusal(RULE_BAD_AGENT, f"agent {problem} (got {shown(agent)}): fail closed")
        if type(tool) is not str or tool not in self.tools:
            return _refusal(RULE_UNKNOWN_TOOL, f"unknown tool {shown(tool)}: fail closed")
        if not valid_confidence(confidence):
            return _refusal(RULE_BAD_CONFIDENCE, f"confidence must be a number in [0, 1] "
                            f"(got {shown(confidence)}): fail closed")
        if approval is not None and approval is not True and approval is not False:
            return _refusal(RULE_BAD_APPROVAL, f"approval must be true, false or none "
                            f"(got {shown(approval)}): fail closed")
        return None

    def reevaluate(self, risk: str, requires_approval: bool, confidence: float,
                   approval: bool | None, locked: bool) -> Outcome:
        """Decide again from recorded inputs alone (replay and what-if need no catalogue).

        ``risk`` is the recorded value (``"LOW"``, ...); an unknown one raises KeyError.
        Outcomes are remembered by their inputs, as :meth:`evaluate` remembers walks.
        """
        if not (type(confidence) is float and 0.0 <= confidence <= 1.0) and \
                not valid_confidence(confidence):
            return _refusal(RULE_BAD_CONFIDENCE, "confidence out of range")
        policy, outcomes = self._by_risk[(risk, requires_approval)]
        if approval is None or approval is True or approval is False:  # 1 is not True here
            return outcomes[(self._walk(policy, requires_approval, confidence, approval,
                                        locked), locked)]
        inputs = EscalationInputs(policy, confidence, approval, locked, requires_approval)
        return outcomes[(walk(self.machine, "MOCK", DECIDE_PATH, inputs), locked)]

    def cuts(self, risk: str) -> list[float] | None:
        """The thresholds the rows of a recorded risk (``"LOW"``, ...) compare the
        confidence with, sorted; None when a row reads anything else, or for no risk.

        Between two cuts, and at each, :meth:`reevaluate` decides alike for equal
        other inputs (see ``_regions``): replay remembers its answers by region.
        """
        entry = self._by_risk.get((risk, False))
        return None if entry is None else self._cuts[entry[0].risk]

    def _walk(self, policy: RiskPolicy, requires_approval: bool, confidence: float,
              approval: bool | None, locked: bool) -> str:
        """Where the decide path's walk from MOCK ends for a valid call (an approval
        exactly True, False or None), remembered by the confidence's region."""
        cuts = self._cuts[policy.risk]
        if cuts is None:
            return walk(self.machine, "MOCK", DECIDE_PATH, EscalationInputs(
                policy, confidence, approval, locked, requires_approval))
        at = bisect_left(cuts, confidence)
        region = 2 * at + 1 if at < len(cuts) and cuts[at] == confidence else 2 * at
        key = (policy.risk, requires_approval, region, approval, locked)
        state = self._regions.get(key)
        if state is None:
            state = self._regions[key] = walk(self.machine, "MOCK", DECIDE_PATH,
                                              EscalationInputs(policy, confidence, approval,
                                                               locked, requires_approval))
        return state

    def record(self, agent: object, tool: object, confidence: object, approval: object,
               approved_by: str | None, locked: bool, outcome: Outcome,
               approved_at: float | None = None) -> dict[str, Any]:
        """The audit ``data`` of one decision: every input it used, and its verdict.

        ``approved_at`` is the clock reading at which a grant was checked.
        Inputs that were refused for their type are recorded as :func:`shown`
        text, so every record is JSON and says what was given.
        """
        decision, mode, state = outcome
        refused = not decision.allowed and decision.rule in REFUSAL_RULES
        if refused:  # a refusal's inputs may be anything: record them as given
            agent, tool, confidence, approval = _as_given(agent, tool, confidence, approval)
        entry = self.tools.get(tool) if type(tool) is str else None
        data = {
            "agent": agent,
            "tool": tool,
            "risk": entry.risk if entry else None,
            "requires_approval": entry.requires_approval if entry else None,
            "confidence": confidence,
            "approval": approval,
            "approved_by": approved_by,
            "locked": locked,
            "mode": mode,
            "allowed": decision.allowed,
            "state": state,
            "rule": decision.rule,
            "rules": self.table.digest,
        }
        if approved_at is not None:
            data["approved_at"] = approved_at
        if refused:
            data["reason"] = decision.reason
        return data


def _cuts(policy: RiskPolicy) -> list[float] | None:
    """The thresholds a risk's rows compare the confidence with, sorted; None when a
    condition reads anything else (then every walk is made)."""
    conditions = [c for row in (policy.dry_run_row, policy.live_row)
                  for c in (*row.when.all, *row.when.any)]
    if any(c.metric != "confidence" or type(c.value) is not float for c in conditions):
        return None
    return sorted({float(c.value) for c in conditions})  # floats, checked above


def agent_problem(agent: object) -> str | None:
    """Why ``agent`` cannot name a caller, or None.

    A name is a non-empty string of text (a lone surrogate cannot be written
    to the log) that is not one of the engine's own ids: ``ctx-<n>`` names an
    execution context in the log, and an agent so named would pass for one.

    >>> agent_problem("agent-1"), agent_problem("ctx-7")
    (None, 'must not be an engine id, ctx-<n>')
    >>> agent_problem("a\\udc80")
    'must be text (it holds a lone surrogate)'
    """
    if type(agent) is not str or not agent:
        return "must be a non-empty string"
    if not agent.isascii():
        try:
            agent.encode("utf-8")
        except UnicodeEncodeError:
            return "must be text (it holds a lone surrogate)"
    if agent.startswith("ctx-") and agent[4:].isdigit():
        return "must not be an engine id, ctx-<n>"
    return None


def _as_given(agent: object, tool: object, confidence: object,
              approval: object) -> tuple[str, str, object, object]:
    """A refused call's inputs as its record holds them: valid ones as they are, the
    rest as :func:`shown` text (a record is always JSON), an approval that is not
    True, False or None as None; the record's ``reason`` names what was given."""
    name = agent if type(agent) is str and agent_problem(agent) is None else shown(agent)
    return (name, tool if type(tool) is str and tool.isprintable() else shown(tool),
            confidence if valid_confidence(confidence) else shown(confidence),
            approval if approval is None or type(approval) is bool else None)  # see reason


def _refusal(rule: str, reason: str) -> Outcome:
    d = Decision.refuse(rule, reason)
    return d, d.mode.value, d.state.value
