"""Hypothesis strategies shared by buddy's tests, and reference functions.

The reference functions here are written from the Phase 24 specification, not
from buddy's code: ``THRESHOLDS`` is typed in by hand, so a change to
``buddy/rules/escalation.toml`` or to a guard shows up as a failing test.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from hypothesis import strategies as st

from buddy.machines.escalation import EscalationInputs
from buddy.rules import EscalationTable
from buddy.rules.base._values import ExecutionMode, RiskLevel

__all__ = [
    "EDGE_CONFIDENCES",
    "THRESHOLDS",
    "Call",
    "approvals",
    "calls",
    "confidences",
    "escalation_inputs",
    "reference_mode",
    "requires_live_approval",
    "risk_levels",
]


class Threshold(NamedTuple):
    dry_run: float
    live: float
    live_requires_approval: bool


#: The specification's table, by hand: DRY_RUN from, LIVE from, LIVE needs approval.
THRESHOLDS: dict[RiskLevel, Threshold] = {
    RiskLevel.LOW: Threshold(0.50, 0.70, False),
    RiskLevel.MEDIUM: Threshold(0.65, 0.80, False),
    RiskLevel.HIGH: Threshold(0.80, 0.85, True),
}

_POINTS = sorted({0.0, 1.0, *(x for t in THRESHOLDS.values() for x in (t.dry_run, t.live))})

#: Every threshold, the floats just either side of it, and the ends of [0, 1].
EDGE_CONFIDENCES: tuple[float, ...] = tuple(sorted({
    y for x in _POINTS
    for y in (math.nextafter(x, 0.0), x, math.nextafter(x, 1.0))
}))

_POLICIES = EscalationTable.default().policies


def requires_live_approval(risk: RiskLevel, contract_requires_approval: bool) -> bool:
    """Whether LIVE waits for an approval: the contract's or the table row's say."""
    return contract_requires_approval or THRESHOLDS[risk].live_requires_approval


def reference_mode(risk: RiskLevel, confidence: float, approval: bool | None, locked: bool,
                   requires_approval: bool) -> ExecutionMode:
    """The mode one call may run in, straight from the specification.

    Locked: MOCK. Below the DRY_RUN threshold: MOCK. Below the LIVE threshold:
    DRY_RUN. At or above it: LIVE, unless an approval is needed; then LIVE if
    approved, DRY_RUN while waiting, MOCK (locked) if denied.
    """
    if locked:
        return ExecutionMode.MOCK
    row = THRESHOLDS[risk]
    if confidence < row.dry_run:
        return ExecutionMode.MOCK
    if confidence < row.live:
        return ExecutionMode.DRY_RUN
    if not requires_live_approval(risk, requires_approval) or approval is True:
        return ExecutionMode.LIVE
    if approval is False:
        return ExecutionMode.MOCK
    return ExecutionMode.DRY_RUN


class Call(NamedTuple):
    """One call's escalation inputs as a readable value (hypothesis prints it)."""

    risk: RiskLevel
    confidence: float
    approval: bool | None = None
    locked: bool = False
    requires_approval: bool = False

    def inputs(self) -> EscalationInputs:
        return EscalationInputs(_POLICIES[self.risk], self.confidence, self.approval,
                                self.locked, self.requires_approval)

    def mode(self) -> ExecutionMode:
        return reference_mode(*self)


def risk_levels() -> st.SearchStrategy[RiskLevel]:
    return st.sampled_from(RiskLevel)


def confidences() -> st.SearchStrategy[float]:
    """Confidences in [0, 1], often exactly on a threshold or one float away."""
    return st.one_of(st.sampled_from(EDGE_CONFIDENCES),
                     st.floats(min_value=0.0, max_value=1.0, allow_nan=False))


def approvals() -> st.SearchStrategy[bool | None]:
    return st.sampled_from([None, True, False])


def calls(risk: st.SearchStrategy[RiskLevel] | None = None,
          locked: st.SearchStrategy[bool] | None = None) -> st.SearchStrategy[Call]:
    """Random :class:`Call` values; any risk may have a contract requiring approval."""
    return st.builds(
        Call,
        risk=risk if risk is not None else risk_levels(),
        confidence=confidences(),
        approval=approvals(),
        locked=locked if locked is not None else st.booleans(),
        requires_approval=st.booleans(),
    )


def escalation_inputs(**kwargs: st.SearchStrategy) -> st.SearchStrategy[EscalationInputs]:
    """:class:`EscalationInputs` built from :func:`calls`."""
    return calls(**kwargs).map(Call.inputs)
