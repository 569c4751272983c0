"""The escalation controller: MOCK -> DRY_RUN -> (AWAITING_APPROVAL) -> LIVE.

Declared as data; :mod:`buddy.machines._factory` builds it. Thresholds are not
here: each guard reads the compiled row of the escalation rule table
(``buddy/rules/escalation.toml``) for the tool's risk, carried in the
:class:`EscalationInputs` of the call.

The Phase 24 source routes ``all_actions_succeeded`` to ABORTED; that is plainly
a slip, so here it goes to COMPLETED. ``approval_denied`` locks the context (the
source: "system halts on denial"); a system lock sends every context to LOCKED,
where only MOCK runs.
"""

from __future__ import annotations

from buddy.machines._factory import MachineSpec, Transition
from buddy.rules.base._values import ExecutionMode, KeyEnum
from buddy.rules.tables._escalation import RiskPolicy

__all__ = [
    "DECIDE_PATH",
    "SPEC",
    "STATE_MODE",
    "EscalationInputs",
    "ExecutionState",
]


class ExecutionState(KeyEnum):
    MOCK = "MOCK"
    DRY_RUN = "DRY_RUN"
    AWAITING_APPROVAL = "AWAITING_APPROVAL"
    LIVE = "LIVE"
    COMPLETED = "COMPLETED"
    ROLLBACK = "ROLLBACK"
    ABORTED = "ABORTED"
    LOCKED = "LOCKED"


class EscalationInputs:
    """What the guards of one call read. Built once per call; slotted for speed."""

    __slots__ = ("policy", "confidence", "approval", "locked", "contract_requires_approval")

    def __init__(self, policy: RiskPolicy, confidence: float, approval: bool | None = None,
                 locked: bool = False, contract_requires_approval: bool = False) -> None:
        self.policy = policy
        self.confidence = confidence
        self.approval = approval
        self.locked = locked
        self.contract_requires_approval = contract_requires_approval


def _dry_run_threshold_met(i: EscalationInputs) -> bool:
    return i.policy.dry_run(i)


def _live_threshold_met(i: EscalationInputs) -> bool:
    return i.policy.live(i)


def _approval_required(i: EscalationInputs) -> bool:
    return i.contract_requires_approval or i.policy.live_row.requires_approval


def _approved(i: EscalationInputs) -> bool:
    return i.approval is True


def _denied(i: EscalationInputs) -> bool:
    return i.approval is False


def _system_locked(i: EscalationInputs) -> bool:
    return i.locked


def _system_unlocked(i: EscalationInputs) -> bool:
    return not i.locked


GUARDS = {
    "dry_run_threshold_met": _dry_run_threshold_met,
    "live_threshold_met": _live_threshold_met,
    "approval_required": _approval_required,
    "approved": _approved,
    "denied": _denied,
    "system_locked": _system_locked,
    "system_unlocked": _system_unlocked,
}

S = ExecutionState
_ACTIVE = (S.MOCK, S.DRY_RUN, S.AWAITING_APPROVAL, S.LIVE)

TRANSITIONS = (
    Transition("lock", _ACTIVE, S.LOCKED, conditions=["system_locked"]),
    Transition("approve_escalation", S.MOCK, S.DRY_RUN, conditions=["dry_run_threshold_met"],
               unless=["system_locked"]),
    Transition("request_live", S.DRY_RUN, S.LIVE, conditions=["live_threshold_met"],
               unless=["approval_required", "system_locked"]),
    Transition("request_live", S.DRY_RUN, S.AWAITING_APPROVAL,
               conditions=["live_threshold_met", "approval_required"], unless=["system_locked"]),
    Transition("confirm_approval", S.AWAITING_APPROVAL, S.LIVE,
               conditions=["live_threshold_met", "approved"], unless=["system_locked"]),
    Transition("approval_denied", S.AWAITING_APPROVAL, S.LOCKED, conditions=["denied"]),
    Transition("all_actions_succeeded", (*_ACTIVE, S.LOCKED), S.COMPLETED),
    Transition("error", S.LIVE, S.ROLLBACK),
    Transition("rollback_complete", S.ROLLBACK, S.ABORTED),
    Transition("downgrade", S.LIVE, S.DRY_RUN),
    Transition("downgrade", S.AWAITING_APPROVAL, S.DRY_RUN),
    Transition("downgrade", S.DRY_RUN, S.MOCK),
    Transition("abort", (*_ACTIVE, S.LOCKED), S.ABORTED),
    Transition("unlock", S.LOCKED, S.MOCK, conditions=["system_unlocked"], unless=["denied"]),
)

#: The triggers a decision tries, in order, from MOCK. A trigger with no row
#: from the current state, or whose guards fail, leaves the state as it is.
DECIDE_PATH = ("lock", "approve_escalation", "request_live", "confirm_approval",
               "approval_denied")

#: The mode a call runs in, by the state its decision ends in.
STATE_MODE = {
    S.MOCK: ExecutionMode.MOCK,
    S.DRY_RUN: ExecutionMode.DRY_RUN,
    S.AWAITING_APPROVAL: ExecutionMode.DRY_RUN,
    S.LIVE: ExecutionMode.LIVE,
    S.LOCKED: ExecutionMode.MOCK,
}

#: Guards one of which must sit on every edge into LIVE, besides the threshold.
APPROVAL_GATES = ("approved",)


def _check_live_gates(spec: MachineSpec) -> list[str]:
    """Every edge into LIVE needs the LIVE threshold and an approval gate (an
    ``approved`` condition, or ``unless approval_required``), and is closed
    while the system is locked (``unless system_locked``)."""
    problems = []
    for t in spec.transitions:
        if t.dest is not S.LIVE:
            continue
        gated = any(g in t.conditions for g in APPROVAL_GATES) or "approval_required" in t.unless
        if "live_threshold_met" not in t.conditions or not gated:
            problems.append(f"edge {t.trigger} -> LIVE lacks its gate (live_threshold_met and "
                            "approved / unless approval_required)")
        if "system_locked" not in t.unless:
            problems.append(f"edge {t.trigger} -> LIVE is open while the system is locked "
                            "(needs unless system_locked)")
    return problems


SPEC = MachineSpec(
    name="escalation",
    states=ExecutionState,
    initial=S.MOCK,
    finals={S.COMPLETED, S.ABORTED},
    transitions=TRANSITIONS,
    guards=GUARDS,
    description="MOCK -> DRY_RUN -> LIVE escalation of one tool call, with approval and rollback",
    extra_check=_check_live_gates,
)
