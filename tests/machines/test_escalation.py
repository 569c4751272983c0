"""Tests of buddy.machines.escalation: the declared MOCK -> DRY_RUN -> LIVE machine.

The expected behaviour comes from a small reference model written here
(``REFERENCE``) over the hand-typed thresholds of ``tests/strategies.py``;
neither reads the machine's guards or the shipped TOML table.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import attrs
import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from transitions import MachineError

from buddy.machines._factory import (
    MachineSpec,
    Transition,
    build,
    compile_table,
    fire,
    spec_graph,
    walk,
)
from buddy.machines.escalation import (
    DECIDE_PATH,
    GUARDS,
    SPEC,
    STATE_MODE,
    TRANSITIONS,
    ExecutionState,
    _check_live_gates,
)
from buddy.rules.base._values import ExecutionMode, RiskLevel
from buddy.rules.base.errors import DefinitionError
from tests.helpers import Probe
from tests.strategies import THRESHOLDS, Call, calls, reference_mode, requires_live_approval

S = ExecutionState
LOW, MEDIUM, HIGH = RiskLevel.LOW, RiskLevel.MEDIUM, RiskLevel.HIGH

MACHINE = build(SPEC)
TABLE = compile_table(SPEC)
STATES = [s.name for s in ExecutionState]
TRIGGERS = SPEC.triggers()
FINALS = {"COMPLETED", "ABORTED"}

# -- the reference model ------------------------------------------------------

Facts = dict[str, bool]


def facts(call: Call) -> Facts:
    """What the specification says about one call, from the hand-typed thresholds."""
    row = THRESHOLDS[call.risk]
    return {
        "dry_run": call.confidence >= row.dry_run,
        "live": call.confidence >= row.live,
        "needs_approval": requires_live_approval(call.risk, call.requires_approval),
        "approved": call.approval is True,
        "denied": call.approval is False,
        "locked": call.locked,
    }


def _always(f: Facts) -> bool:
    return True


ACTIVE = ("MOCK", "DRY_RUN", "AWAITING_APPROVAL", "LIVE")

#: (state, trigger) -> options tried in order: (holds, destination). No key: no such move.
REFERENCE: dict[tuple[str, str], tuple[tuple[Callable[[Facts], bool], str], ...]] = {
    **{(s, "lock"): ((lambda f: f["locked"], "LOCKED"),) for s in ACTIVE},
    # Escalating moves are closed while the system is locked, whatever the trigger order.
    ("MOCK", "approve_escalation"): ((lambda f: f["dry_run"] and not f["locked"], "DRY_RUN"),),
    ("DRY_RUN", "request_live"): (
        (lambda f: f["live"] and not f["needs_approval"] and not f["locked"], "LIVE"),
        (lambda f: f["live"] and f["needs_approval"] and not f["locked"], "AWAITING_APPROVAL"),
    ),
    ("AWAITING_APPROVAL", "confirm_approval"): (
        (lambda f: f["live"] and f["approved"] and not f["locked"], "LIVE"),),
    ("AWAITING_APPROVAL", "approval_denied"): ((lambda f: f["denied"], "LOCKED"),),
    # The Phase 24 source sends all_actions_succeeded to ABORTED, plainly a slip:
    # buddy (and this reference) sends it to COMPLETED.
    # LOCKED too: a call held in MOCK by the lock still finishes its (simulated) run.
    **{(s, "all_actions_succeeded"): ((_always, "COMPLETED"),) for s in (*ACTIVE, "LOCKED")},
    ("LIVE", "error"): ((_always, "ROLLBACK"),),
    ("ROLLBACK", "rollback_complete"): ((_always, "ABORTED"),),
    ("LIVE", "downgrade"): ((_always, "DRY_RUN"),),
    ("AWAITING_APPROVAL", "downgrade"): ((_always, "DRY_RUN"),),
    ("DRY_RUN", "downgrade"): ((_always, "MOCK"),),
    **{(s, "abort"): ((_always, "ABORTED"),) for s in (*ACTIVE, "LOCKED")},
    ("LOCKED", "unlock"): ((lambda f: not f["locked"] and not f["denied"], "MOCK"),),
}


def reference_next(state: str, trigger: str, call: Call) -> str:
    f = facts(call)
    for holds, dest in REFERENCE.get((state, trigger), ()):
        if holds(f):
            return dest
    return state


# -- driving the transitions machine --------------------------------------------

class Model:
    pass


PROBE = Probe(MACHINE)


def step(state: str, trigger: str, call: Call) -> tuple[str, bool]:
    """Fire ``trigger`` on a model in ``state``: (state reached, trigger exists there)."""
    return PROBE.step(state, trigger, call.inputs())


def run(state: str, triggers: list[tuple[str, Call]]) -> str:
    for trigger, call in triggers:
        state, _ = step(state, trigger, call)
    return state


_GRID_CONFIDENCES = sorted({0.0, 1.0, *(y for t in THRESHOLDS.values()
                                        for x in (t.dry_run, t.live)
                                        for y in (x, math.nextafter(x, 0.0)))})
GRID = [Call(*c) for c in itertools.product(RiskLevel, _GRID_CONFIDENCES, (None, True, False),
                                             (False, True), (False, True))]


# -- (a) each declared transition, and each refusal ------------------------------

class TestDeclaredTransitions:
    def test_reference_has_exactly_the_declared_moves(self):
        declared = {(s.name, t.trigger) for t in TRANSITIONS for s in t.source}
        assert declared == set(REFERENCE)
        assert set(TABLE) == set(STATES)

    @pytest.mark.parametrize("state", STATES)
    @pytest.mark.parametrize("trigger", TRIGGERS)
    def test_machine_matches_reference_on_the_threshold_grid(self, state, trigger):
        exists = (state, trigger) in REFERENCE
        for call in GRID:
            assert step(state, trigger, call) == (reference_next(state, trigger, call), exists), \
                call

    def test_every_row_fires_and_every_guarded_row_refuses(self):
        for row in TRANSITIONS:
            for source in row.source:
                reached = {step(source.name, row.trigger, call)[0] for call in GRID}
                assert row.dest.name in reached, (row, source)
                if row.conditions or row.unless:
                    assert source.name in reached, (row, source)
                else:
                    assert reached == {row.dest.name}, (row, source)

    def test_high_at_0_9_without_approval_waits(self):
        call = Call(HIGH, 0.9, None, False, True)
        assert step("MOCK", "approve_escalation", call) == ("DRY_RUN", True)
        assert step("DRY_RUN", "request_live", call) == ("AWAITING_APPROVAL", True)
        assert step("AWAITING_APPROVAL", "confirm_approval", call) == ("AWAITING_APPROVAL", True)
        assert step("AWAITING_APPROVAL", "approval_denied", call) == ("AWAITING_APPROVAL", True)
        assert step("AWAITING_APPROVAL", "confirm_approval",
                    call._replace(approval=True)) == ("LIVE", True)

    def test_high_row_needs_approval_even_if_the_contract_does_not(self):
        assert step("DRY_RUN", "request_live", Call(HIGH, 0.9)) == ("AWAITING_APPROVAL", True)

    def test_contract_approval_holds_back_a_low_tool(self):
        call = Call(LOW, 0.9, None, False, True)
        assert step("DRY_RUN", "request_live", call) == ("AWAITING_APPROVAL", True)
        assert step("DRY_RUN", "request_live", call._replace(requires_approval=False)) == \
            ("LIVE", True)

    @pytest.mark.parametrize("risk", RiskLevel)
    def test_live_threshold_is_inclusive(self, risk):
        live = THRESHOLDS[risk].live
        below = Call(risk, math.nextafter(live, 0.0), True)
        at = Call(risk, live, True)
        assert step("DRY_RUN", "request_live", below) == ("DRY_RUN", True)
        assert step("DRY_RUN", "request_live", at)[0] in {"LIVE", "AWAITING_APPROVAL"}
        assert step("AWAITING_APPROVAL", "confirm_approval", below) == \
            ("AWAITING_APPROVAL", True)
        assert step("AWAITING_APPROVAL", "confirm_approval", at) == ("LIVE", True)

    @pytest.mark.parametrize("risk", RiskLevel)
    def test_dry_run_threshold_is_inclusive(self, risk):
        dry = THRESHOLDS[risk].dry_run
        assert step("MOCK", "approve_escalation", Call(risk, dry)) == ("DRY_RUN", True)
        assert step("MOCK", "approve_escalation", Call(risk, math.nextafter(dry, 0.0))) == \
            ("MOCK", True)

    def test_approval_denied_locks(self):
        call = Call(HIGH, 0.9, False, False, True)
        assert step("AWAITING_APPROVAL", "approval_denied", call) == ("LOCKED", True)
        assert step("AWAITING_APPROVAL", "confirm_approval", call) == ("AWAITING_APPROVAL", True)

    @pytest.mark.parametrize("state", ACTIVE)
    def test_lock_from_every_active_state(self, state):
        assert step(state, "lock", Call(LOW, 1.0, True, locked=True)) == ("LOCKED", True)
        assert step(state, "lock", Call(LOW, 1.0, True, locked=False)) == (state, True)

    @pytest.mark.parametrize("trigger",
                             sorted(set(TRIGGERS) - {"unlock", "abort", "all_actions_succeeded"}))
    def test_locked_never_leaves_to_dry_run_or_live(self, trigger):
        for call in GRID:
            assert step("LOCKED", trigger, call) == ("LOCKED", False)

    @pytest.mark.parametrize(("trigger", "final"),
                             [("abort", "ABORTED"), ("all_actions_succeeded", "COMPLETED")])
    def test_locked_may_only_end(self, trigger, final):
        for call in GRID:
            assert step("LOCKED", trigger, call) == (final, True)

    def test_unlock_only_when_unlocked_and_not_denied(self):
        assert step("LOCKED", "unlock", Call(LOW, 1.0, None, locked=True)) == ("LOCKED", True)
        assert step("LOCKED", "unlock", Call(LOW, 1.0, False, locked=False)) == ("LOCKED", True)
        assert step("LOCKED", "unlock", Call(LOW, 1.0, None, locked=False)) == ("MOCK", True)
        assert step("LOCKED", "unlock", Call(LOW, 1.0, True, locked=False)) == ("MOCK", True)

    def test_error_in_live_rolls_back_then_aborts(self):
        call = Call(LOW, 0.9)
        assert run("LIVE", [("error", call)]) == "ROLLBACK"
        assert run("LIVE", [("error", call), ("rollback_complete", call)]) == "ABORTED"
        for state in set(STATES) - {"LIVE"}:
            assert step(state, "error", call) == (state, False)

    @pytest.mark.parametrize("state", (*ACTIVE, "LOCKED"))
    def test_all_actions_succeeded_completes(self, state):
        # The source says ABORTED; we chose COMPLETED (see the module docstring).
        assert step(state, "all_actions_succeeded", Call(LOW, 0.0)) == ("COMPLETED", True)

    def test_downgrades_go_one_step_down(self):
        call = Call(LOW, 0.0, locked=True)
        assert step("LIVE", "downgrade", call) == ("DRY_RUN", True)
        assert step("AWAITING_APPROVAL", "downgrade", call) == ("DRY_RUN", True)
        assert step("DRY_RUN", "downgrade", call) == ("MOCK", True)
        assert step("MOCK", "downgrade", call) == ("MOCK", False)

    @pytest.mark.parametrize("state", sorted(FINALS))
    @pytest.mark.parametrize("trigger", TRIGGERS)
    def test_finals_have_no_moves(self, state, trigger):
        assert step(state, trigger, Call(LOW, 1.0, True)) == (state, False)

    def test_no_back_doors_on_a_model(self):
        m = Model()
        MACHINE.add_model(m)
        try:
            assert m.state == "MOCK"
            for state in STATES:
                assert not hasattr(m, f"to_{state}")
        finally:
            MACHINE.remove_model(m)


# -- (b) the compiled table agrees with the transitions machine -----------------

@given(call=calls())
def test_table_agrees_with_machine_on_every_state_and_trigger(call):
    inputs = call.inputs()
    for state in STATES:
        for trigger in TRIGGERS:
            option = fire(TABLE, state, trigger, inputs)
            expected = state if option is None else option[0]
            assert step(state, trigger, call) == (expected, trigger in TABLE[state])


@given(call=calls())
def test_walk_agrees_with_machine_on_the_decide_path(call):
    assert walk(TABLE, "MOCK", DECIDE_PATH, call.inputs()) == \
        run("MOCK", [(t, call) for t in DECIDE_PATH])


# -- (c) random trigger sequences against the reference --------------------------

# Terminal triggers are rarer, so runs get somewhere before they end.
_WEIGHTED_TRIGGERS = [t for t in TRIGGERS for _ in range(
    1 if t in ("all_actions_succeeded", "abort", "rollback_complete") else 4)]


class EscalationAgainstReference(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.model = Model()
        MACHINE.add_model(self.model)
        self.ref = "MOCK"

    def teardown(self) -> None:
        MACHINE.remove_model(self.model)

    def _fire(self, trigger: str, call: Call) -> None:
        before = self.model.state
        assert before == self.ref
        try:
            getattr(self.model, trigger)(inputs=call.inputs())
        except MachineError:
            assert (before, trigger) not in REFERENCE
        after = self.model.state
        self.ref = reference_next(before, trigger, call)
        assert after == self.ref
        if after == "LIVE" and before != "LIVE":
            assert call.confidence >= THRESHOLDS[call.risk].live, (trigger, call)
            assert call.approval is True or \
                not requires_live_approval(call.risk, call.requires_approval), (trigger, call)
        if before == "LOCKED":
            # LOCKED ends (abort, a finished MOCK run) or unlocks; nothing else.
            assert after in {"LOCKED", "MOCK", "ABORTED", "COMPLETED"}
            if after == "MOCK":
                assert trigger == "unlock" and not call.locked, (trigger, call)
            if after == "ABORTED":
                assert trigger == "abort"
            if after == "COMPLETED":
                assert trigger == "all_actions_succeeded"
            if call.locked:
                assert after != "MOCK"

    @rule(trigger=st.sampled_from(_WEIGHTED_TRIGGERS), call=calls())
    def fire_any(self, trigger: str, call: Call) -> None:
        self._fire(trigger, call)

    @rule(trigger=st.sampled_from(_WEIGHTED_TRIGGERS), call=calls(locked=st.just(True)))
    def fire_while_locked(self, trigger: str, call: Call) -> None:
        self._fire(trigger, call)

    @precondition(lambda self: self.ref in FINALS)
    @rule()
    def next_call(self) -> None:
        MACHINE.remove_model(self.model)
        self.model = Model()
        MACHINE.add_model(self.model)
        self.ref = "MOCK"

    @invariant()
    def state_is_the_reference(self) -> None:
        assert self.model.state == self.ref


EscalationAgainstReference.TestCase.settings = settings(stateful_step_count=30)
TestEscalationAgainstReference = EscalationAgainstReference.TestCase


# -- (d) the LIVE gates are checked on the graph ---------------------------------

def rows_with(trigger: str, dest: S, **changes: tuple[str, ...]) -> tuple[Transition, ...]:
    """TRANSITIONS with the row ``trigger -> dest`` changed."""
    out = []
    for t in TRANSITIONS:
        if t.trigger == trigger and t.dest is dest:
            t = attrs.evolve(t, **changes)
        out.append(t)
    assert out != list(TRANSITIONS)
    return tuple(out)


def respec(rows: tuple[Transition, ...]) -> MachineSpec:
    return MachineSpec(name="escalation", states=ExecutionState, initial=S.MOCK,
                       finals={S.COMPLETED, S.ABORTED}, transitions=rows, guards=GUARDS,
                       description=SPEC.description, extra_check=_check_live_gates)


def gate_error(trigger: str) -> str:
    return (f"machine escalation: edge {trigger} -> LIVE lacks its gate (live_threshold_met "
            "and approved / unless approval_required)")


class TestLiveGates:
    def test_an_edge_into_live_open_while_locked(self):
        rows = rows_with("confirm_approval", S.LIVE, unless=())
        with pytest.raises(DefinitionError) as exc:
            respec(rows)
        assert str(exc.value) == ("machine escalation: edge confirm_approval -> LIVE is open "
                                  "while the system is locked (needs unless system_locked)")

    def test_the_shipped_rows_pass(self):
        assert respec(TRANSITIONS) == SPEC

    def test_confirm_approval_without_approved(self):
        rows = rows_with("confirm_approval", S.LIVE, conditions=("live_threshold_met",))
        with pytest.raises(DefinitionError) as exc:
            respec(rows)
        assert str(exc.value) == gate_error("confirm_approval")

    def test_confirm_approval_without_threshold(self):
        rows = rows_with("confirm_approval", S.LIVE, conditions=("approved",))
        with pytest.raises(DefinitionError) as exc:
            respec(rows)
        assert str(exc.value) == gate_error("confirm_approval")

    def test_request_live_without_unless_approval_required(self):
        rows = rows_with("request_live", S.LIVE, unless=("system_locked",))
        with pytest.raises(DefinitionError) as exc:
            respec(rows)
        assert str(exc.value) == gate_error("request_live")

    def test_a_new_ungated_edge_into_live(self):
        rows = (*TRANSITIONS, Transition("shortcut", S.MOCK, S.LIVE,
                                         conditions=["live_threshold_met"],
                                         unless=["system_locked"]))
        with pytest.raises(DefinitionError) as exc:
            respec(rows)
        assert str(exc.value) == gate_error("shortcut")

    def test_live_unreachable_from_mock_without_the_gated_edges(self):
        graph = spec_graph(SPEC)
        into_live = [(u, v, k, d) for u, v, k, d in graph.edges(keys=True, data=True)
                     if v is S.LIVE]
        assert {(u.name, d["trigger"]) for u, _, _, d in into_live} == {
            ("DRY_RUN", "request_live"), ("AWAITING_APPROVAL", "confirm_approval")}
        for _, _, _, d in into_live:
            assert "live_threshold_met" in d["conditions"]
            assert "approved" in d["conditions"] or "approval_required" in d["unless"]
        assert nx.has_path(graph, S.MOCK, S.LIVE)
        graph.remove_edges_from([(u, v, k) for u, v, k, _ in into_live])
        assert not nx.has_path(graph, S.MOCK, S.LIVE)

    def test_live_only_through_dry_run(self):
        graph = spec_graph(SPEC)
        graph.remove_node(S.DRY_RUN)
        assert not nx.has_path(graph, S.MOCK, S.LIVE)


# -- (e) the decision path -------------------------------------------------------

def decide(call: Call) -> ExecutionMode:
    return STATE_MODE[S[walk(TABLE, "MOCK", DECIDE_PATH, call.inputs())]]


@given(call=calls())
def test_decide_path_matches_reference_mode(call):
    assert decide(call) is reference_mode(*call)


M, D, L = ExecutionMode.MOCK, ExecutionMode.DRY_RUN, ExecutionMode.LIVE
_below = math.nextafter


@pytest.mark.parametrize(("call", "mode"), [
    (Call(LOW, 0.0), M),
    (Call(LOW, _below(0.5, 0.0)), M),
    (Call(LOW, 0.5), D),
    (Call(LOW, _below(0.7, 0.0)), D),
    (Call(LOW, 0.7), L),
    (Call(LOW, 0.7, False), L),  # no approval needed: a refusal changes nothing
    (Call(LOW, 0.7, None, False, True), D),
    (Call(LOW, 0.7, True, False, True), L),
    (Call(MEDIUM, _below(0.65, 0.0)), M),
    (Call(MEDIUM, 0.65), D),
    (Call(MEDIUM, _below(0.8, 0.0)), D),
    (Call(MEDIUM, 0.8), L),
    (Call(HIGH, _below(0.8, 0.0), True, False, True), M),
    (Call(HIGH, 0.8, True, False, True), D),
    (Call(HIGH, _below(0.85, 0.0), True, False, True), D),
    (Call(HIGH, 0.85, None, False, True), D),
    (Call(HIGH, 0.85, True, False, True), L),
    (Call(HIGH, 0.85, False, False, True), M),
    (Call(HIGH, 0.9, None, False, False), D),
    (Call(HIGH, 1.0, True, False, False), L),
    (Call(LOW, 1.0, True, True), M),
    (Call(HIGH, 1.0, True, True, True), M),
])
def test_decide_path_examples(call, mode):
    assert reference_mode(*call) is mode
    assert decide(call) is mode
