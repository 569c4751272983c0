"""Tests of buddy.machines.task: the task lifecycle with bounded retries and a safety gate."""

from __future__ import annotations

from typing import NamedTuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from buddy.machines._factory import build, compile_table, fire, walk
from buddy.machines.task import SPEC, TRANSITIONS, TaskInputs, TaskState
from tests.helpers import Probe

MACHINE = build(SPEC)
TABLE = compile_table(SPEC)
STATES = [s.name for s in TaskState]
TRIGGERS = ["start", "succeed", "fail", "retry", "cancel"]
FINALS = {"COMPLETED", "FAILED"}
OPEN = ("PENDING", "IN_PROGRESS", "RETRYING")


class TaskCall(NamedTuple):
    attempts: int = 0
    max_retries: int = 0
    gate_allows: bool = True

    def inputs(self) -> TaskInputs:
        return TaskInputs(self.attempts, self.max_retries, self.gate_allows)


def task_calls() -> st.SearchStrategy[TaskCall]:
    return st.builds(TaskCall, st.integers(0, 4), st.integers(0, 4), st.booleans())


def reference_next(state: str, trigger: str, c: TaskCall) -> str:
    """The lifecycle as the module docstring states it."""
    if state == "PENDING" and trigger == "start":
        return "IN_PROGRESS" if c.gate_allows else "FAILED"
    if state == "IN_PROGRESS" and trigger == "succeed":
        return "COMPLETED"
    if state == "IN_PROGRESS" and trigger == "fail":
        return "RETRYING" if c.attempts < c.max_retries else "FAILED"
    if state == "RETRYING" and trigger == "retry":
        return "IN_PROGRESS" if c.gate_allows else "FAILED"
    if state in OPEN and trigger == "cancel":
        return "FAILED"
    return state


def has_move(state: str, trigger: str) -> bool:
    return (state, trigger) in {("PENDING", "start"), ("IN_PROGRESS", "succeed"),
                                ("IN_PROGRESS", "fail"), ("RETRYING", "retry"),
                                *((s, "cancel") for s in OPEN)}


class Model:
    pass


PROBE = Probe(MACHINE)


def step(state: str, trigger: str, call: TaskCall) -> tuple[str, bool]:
    """Fire ``trigger`` on a model in ``state``: (state reached, trigger exists there)."""
    return PROBE.step(state, trigger, call.inputs())


class TestDeclaration:
    def test_states_triggers_finals(self):
        assert SPEC.initial is TaskState.PENDING
        assert SPEC.finals == {TaskState.COMPLETED, TaskState.FAILED}
        assert SPEC.triggers() == TRIGGERS

    def test_declared_moves(self):
        declared = {(s.name, t.trigger) for t in TRANSITIONS for s in t.source}
        assert declared == {(s, t) for s in STATES for t in TRIGGERS if has_move(s, t)}

    def test_no_back_doors_on_a_model(self):
        m = Model()
        MACHINE.add_model(m)
        try:
            assert m.state == "PENDING"
            for state in STATES:
                assert not hasattr(m, f"to_{state}")
        finally:
            MACHINE.remove_model(m)


class TestTransitions:
    def test_start_with_gate_allowing(self):
        assert step("PENDING", "start", TaskCall(gate_allows=True)) == ("IN_PROGRESS", True)

    def test_start_with_gate_refusing_fails(self):
        assert step("PENDING", "start", TaskCall(gate_allows=False)) == ("FAILED", True)

    def test_succeed_completes(self):
        assert step("IN_PROGRESS", "succeed", TaskCall()) == ("COMPLETED", True)

    def test_fail_with_retries_remaining_then_retry(self):
        call = TaskCall(attempts=0, max_retries=2)
        assert step("IN_PROGRESS", "fail", call) == ("RETRYING", True)
        assert step("RETRYING", "retry", call) == ("IN_PROGRESS", True)
        assert step("IN_PROGRESS", "fail", call._replace(attempts=1)) == ("RETRYING", True)

    @pytest.mark.parametrize(("attempts", "max_retries"), [(0, 0), (2, 2), (3, 2)])
    def test_fail_when_exhausted_fails(self, attempts, max_retries):
        call = TaskCall(attempts=attempts, max_retries=max_retries)
        assert step("IN_PROGRESS", "fail", call) == ("FAILED", True)

    def test_retry_with_gate_refusing_fails(self):
        assert step("RETRYING", "retry", TaskCall(gate_allows=False)) == ("FAILED", True)

    @pytest.mark.parametrize("state", OPEN)
    @pytest.mark.parametrize("gate", [True, False])
    def test_cancel_from_each_open_state(self, state, gate):
        assert step(state, "cancel", TaskCall(gate_allows=gate)) == ("FAILED", True)

    @pytest.mark.parametrize("state", sorted(FINALS))
    @pytest.mark.parametrize("trigger", TRIGGERS)
    def test_finals_have_no_moves(self, state, trigger):
        assert step(state, trigger, TaskCall(0, 5, True)) == (state, False)

    @pytest.mark.parametrize(("state", "trigger"), [
        ("PENDING", "succeed"), ("PENDING", "fail"), ("PENDING", "retry"),
        ("IN_PROGRESS", "start"), ("IN_PROGRESS", "retry"),
        ("RETRYING", "start"), ("RETRYING", "succeed"), ("RETRYING", "fail"),
    ])
    def test_triggers_without_a_row_raise(self, state, trigger):
        assert step(state, trigger, TaskCall()) == (state, False)


@given(call=task_calls())
def test_table_agrees_with_machine_on_every_state_and_trigger(call):
    inputs = call.inputs()
    for state in STATES:
        for trigger in TRIGGERS:
            option = fire(TABLE, state, trigger, inputs)
            expected = state if option is None else option[0]
            assert expected == reference_next(state, trigger, call)
            assert step(state, trigger, call) == (expected, has_move(state, trigger))


@given(moves=st.lists(st.tuples(st.sampled_from(TRIGGERS), task_calls()), max_size=30))
def test_random_sequences_follow_the_reference_and_finals_hold(moves):
    state = ref = compiled = "PENDING"
    ended_in = None
    for trigger, call in moves:
        state, _ = step(state, trigger, call)
        ref = reference_next(ref, trigger, call)
        compiled = walk(TABLE, compiled, [trigger], call.inputs())
        assert state == ref == compiled
        if ended_in is not None:
            assert state == ended_in
        elif state in FINALS:
            ended_in = state


@given(max_retries=st.integers(0, 5),
       moves=st.lists(st.tuples(st.sampled_from(["fail", "retry", "succeed"]), st.booleans()),
                      max_size=40))
def test_retries_are_bounded(max_retries, moves):
    """Counting attempts as a runner would, a task retries at most ``max_retries`` times."""
    state, _ = step("PENDING", "start", TaskCall(0, max_retries, True))
    attempts = retries = 0
    for trigger, gate in moves:
        if state in FINALS:
            break
        before = state
        state, _ = step(state, trigger, TaskCall(attempts, max_retries, gate))
        if before == "IN_PROGRESS" and trigger == "fail":
            attempts += 1
        if state == "RETRYING" and before != "RETRYING":
            retries += 1
    assert retries <= max_retries
