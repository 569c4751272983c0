"""ToolContractRegistry.tighten: a registered contract replaced only by a more cautious one,
and every engine on the catalogue deciding by it at once."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from buddy.engine import Engine, replay
from buddy.rules.base._values import RiskLevel
from buddy.rules.base.errors import ContractError, DependencyCycleError, UnknownToolError
from buddy.rules.tables import ToolContract, ToolContractRegistry
from buddy.rules.tables._escalation import EscalationTable

RANK = {RiskLevel.LOW: 0, RiskLevel.MEDIUM: 1, RiskLevel.HIGH: 2}
MODE = {"MOCK": 0, "DRY_RUN": 1, "LIVE": 2}


def _engine() -> tuple[Engine, ToolContractRegistry]:
    registry = ToolContractRegistry.default()
    return Engine(registry, EscalationTable.default(), clock=lambda: 0.0), registry


def test_a_tighter_contract_is_decided_at_once():
    engine, registry = _engine()
    assert engine.decide("a", "form_fill", 0.9).mode.value == "LIVE"  # remembered walk
    old = registry.get("form_fill")
    tighter = attrs.evolve(old, risk=RiskLevel.HIGH, reversible=False, requires_approval=True,
                           rate_limit_per_minute=2)
    assert registry.tighten(tighter) is old
    assert registry.get("form_fill") is tighter
    decision = engine.decide("a", "form_fill", 0.9)
    assert decision.mode.value == "DRY_RUN" and decision.state.value == "AWAITING_APPROVAL"
    assert engine.decide("a", "form_fill", 0.9, approval=True).mode.value == "LIVE"
    assert engine.decide("a", "form_fill", 0.9, approval=True).rule == "rate.limit"  # 2/min
    assert replay(engine.audit).ok


@pytest.mark.parametrize(("change", "says"), [
    ({"risk": RiskLevel.LOW}, "risk LOW is lower than MEDIUM"),
    ({"permissions": frozenset()}, "permissions ui.write dropped"),
    ({"rate_limit_per_minute": None}, "rate limit None is looser"),
    ({"rate_limit_per_minute": 10_000}, "rate limit 10000 is looser"),
    ({"max_concurrency": 1_000}, "max_concurrency 1000 is above"),
])
def test_a_looser_contract_is_refused_and_nothing_changes(change, says):
    engine, registry = _engine()
    old = registry.get("form_fill")
    with pytest.raises(ContractError, match=says):
        registry.tighten(attrs.evolve(old, **change))
    assert registry.get("form_fill") is old
    assert engine.decide("a", "form_fill", 0.9).mode.value == "LIVE"


def test_irreversible_and_approval_cannot_be_undone():
    _, registry = _engine()
    email = registry.get("msgraph_send_email")
    with pytest.raises(ContractError, match="reversible, where it was irreversible"):
        registry.tighten(attrs.evolve(email, reversible=True))
    button = registry.get("button_click")
    with pytest.raises(ContractError, match="no approval required"):
        registry.tighten(attrs.evolve(button, requires_approval=True))  # allowed: tighter
        registry.tighten(attrs.evolve(button, requires_approval=False))


def test_unknown_tools_and_cycles_are_refused():
    _, registry = _engine()
    with pytest.raises(UnknownToolError):
        registry.tighten(ToolContract(name="nope", risk=RiskLevel.HIGH, reversible=False,
                                      requires_approval=True))
    user = registry.get("msgraph_get_user")  # msgraph_send_email depends on it
    with pytest.raises(DependencyCycleError):
        registry.tighten(attrs.evolve(user, dependencies=("msgraph_send_email",)))
    assert registry.get("msgraph_get_user") is user


contracts = st.builds(
    lambda risk, reversible, approval, rate, conc: ToolContract(
        name="t", risk=risk, reversible=reversible or risk is RiskLevel.LOW,
        requires_approval=approval or risk is RiskLevel.HIGH, rate_limit_per_minute=rate,
        max_concurrency=conc),
    st.sampled_from(list(RiskLevel)), st.booleans(), st.booleans(),
    st.none() | st.integers(1, 5), st.integers(1, 4))


@settings(max_examples=150, deadline=None)
@given(contracts, contracts, st.floats(0.0, 1.0), st.sampled_from([None, True, False]))
def test_tighten_never_loosens_a_decision(old, new, confidence, approval):
    registry = ToolContractRegistry([old])
    engine = Engine(registry, EscalationTable.default(), clock=lambda: 0.0)
    before = engine.decide("a", "t", confidence, approval=approval)
    try:
        registry.tighten(new)
    except ContractError:
        assert registry.get("t") is old
        return
    after = engine.decide("a", "t", confidence, approval=approval)
    assert MODE[after.mode.value] <= MODE[before.mode.value] or not before.allowed
    assert RANK[new.risk] >= RANK[old.risk]
