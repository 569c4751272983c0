"""Quiet by default: buddy's machines log nothing through ``transitions`` when a host app
turns logging on at INFO; the host's own ``transitions`` machines still log."""

from __future__ import annotations

import enum
import logging
import threading

import pytest
from transitions import Machine, MachineError

from buddy.engine import Engine
from buddy.machines import EscalationInputs, MachineSpec, Transition, build, escalation, task
from tests.helpers import ManualClock


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def transitions(self) -> list[str]:
        return [f"{r.name}: {r.getMessage()}" for r in self.records
                if r.name.startswith("transitions")]


@pytest.fixture
def logged():
    """What ``logging.basicConfig(level=logging.INFO)`` turns on: a handler on the root
    logger at INFO (this one keeps the records)."""
    root, handler = logging.getLogger(), Captured()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


class Model:
    pass


def hosts_machine() -> Model:
    """A host app's own machine, built with ``transitions`` directly."""
    model = Model()
    Machine(model, states=["idle", "busy"], transitions=[["start", "idle", "busy"]],
            initial="idle")
    return model


def inputs(**kwargs) -> EscalationInputs:
    return EscalationInputs(policy=None, confidence=0.5, **kwargs)  # type: ignore[arg-type]


class TestQuiet:
    @pytest.mark.parametrize("locked", [True, False])
    def test_buddys_machines_fire_without_a_line(self, logged, locked):
        model = Model()
        build(escalation.SPEC, locked=locked).add_model(model)
        assert model.lock(inputs=inputs(locked=True)) is True  # MOCK -> LOCKED
        assert model.all_actions_succeeded(inputs=inputs()) is True
        assert model.state == "COMPLETED"
        assert logged.transitions() == []

    def test_the_task_machine_too(self, logged):
        model = Model()
        build(task.SPEC).add_model(model)
        assert model.trigger("cancel", inputs=None) is True
        assert model.state == "FAILED"
        assert logged.transitions() == []

    def test_the_hosts_own_machine_still_logs(self, logged):
        hosts_machine().start()
        assert logged.transitions() == [
            "transitions.core: Finished processing state idle exit callbacks.",
            "transitions.core: Finished processing state busy enter callbacks."]

    def test_the_host_logs_after_buddy_stepped_and_after_a_trigger_raised(self, logged):
        model = Model()
        build(escalation.SPEC).add_model(model)
        with pytest.raises(MachineError):
            model.rollback_complete(inputs=inputs())  # no row from MOCK
        host = hosts_machine()
        host.start()
        assert len(logged.transitions()) == 2

    def test_another_thread_stepping_buddy_does_not_quiet_the_host(self, logged):
        inside, go_on = threading.Event(), threading.Event()

        def waits(inputs) -> bool:
            inside.set()
            return go_on.wait(10)

        class Two(enum.Enum):
            A = "A"
            B = "B"

        spec = MachineSpec(name="two", states=Two, initial=Two.A, finals={Two.B},
                           transitions=[Transition("go", Two.A, Two.B, conditions=["waits"])],
                           guards={"waits": waits})
        model = Model()
        build(spec).add_model(model)
        worker = threading.Thread(target=lambda: model.go(inputs=None))
        worker.start()
        assert inside.wait(10)
        hosts_machine().start()  # while the worker is inside buddy's trigger
        go_on.set()
        worker.join(10)
        assert model.state == "B"
        assert len(logged.transitions()) == 2

    def test_an_engine_run_logs_nothing_through_transitions(self, logged):
        engine = Engine.default(clock=ManualClock())
        engine.register_handler("form_fill", live=lambda args: {"ok": True})
        assert engine.execute("a", "form_fill", {"x": 1}, confidence=0.95).ok
        assert logged.transitions() == []
