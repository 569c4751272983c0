"""Tests of buddy.machines._factory: checking, building and compiling declarations."""

from __future__ import annotations

import enum
import itertools
import subprocess
import sys

import attrs
import pytest
from transitions import MachineError
from transitions.extensions import LockedMachine

from buddy.machines import MACHINES
from buddy.machines._factory import (
    MachineSpec,
    Transition,
    build,
    compile_table,
    fire,
    spec_graph,
    walk,
)
from buddy.rules.base.errors import BuddyError, DefinitionError


class Toy(enum.Enum):
    A = "A"
    B = "B"
    C = "C"


class Other(enum.Enum):
    X = "X"


class Flags:
    def __init__(self, flag: bool = False, other: bool = False) -> None:
        self.flag = flag
        self.other = other


GUARDS = {
    "yes": lambda i: True,
    "no": lambda i: False,
    "flag": lambda i: i.flag,
    "other": lambda i: i.other,
}

#: A -> B -> C, C final; a valid toy the failing ones are variations of.
OK_ROWS = (
    Transition("go", Toy.A, Toy.B),
    Transition("finish", Toy.B, Toy.C),
)


def spec(rows=OK_ROWS, *, initial=Toy.A, finals=frozenset({Toy.C}), states=Toy,
         extra_check=None) -> MachineSpec:
    return MachineSpec(name="toy", states=states, initial=initial, finals=finals,
                       transitions=rows, guards=GUARDS, extra_check=extra_check)


class Model:
    pass


def model_of(machine, initial: str | None = None) -> Model:
    m = Model()
    machine.add_model(m, initial=initial)
    return m


class TestTransition:
    def test_single_source_becomes_a_tuple(self):
        t = Transition("go", Toy.A, Toy.B, conditions=["yes"])
        assert t.source == (Toy.A,)
        assert t.conditions == ("yes",)
        assert t.unless == ()

    def test_many_sources_keep_their_order(self):
        assert Transition("go", [Toy.B, Toy.A], Toy.C).source == (Toy.B, Toy.A)


class TestCheck:
    def test_valid_spec_is_accepted(self):
        s = spec()
        assert s.triggers() == ["go", "finish"]

    def test_unknown_guard(self):
        rows = (Transition("go", Toy.A, Toy.B, conditions=["nope"]), OK_ROWS[1])
        with pytest.raises(DefinitionError) as exc:
            spec(rows)
        assert str(exc.value) == "machine toy: go: unknown guard 'nope'"

    def test_unknown_unless_guard(self):
        rows = (Transition("go", Toy.A, Toy.B, unless=["nope"]), OK_ROWS[1])
        with pytest.raises(DefinitionError, match=r"^machine toy: go: unknown guard 'nope'$"):
            spec(rows)

    def test_state_not_in_the_enum(self):
        rows = (*OK_ROWS, Transition("jump", Toy.A, Other.X))
        with pytest.raises(DefinitionError) as exc:
            spec(rows)
        assert str(exc.value) == "machine toy: jump: state <Other.X: 'X'> is not one of the states"

    def test_bad_initial(self):
        with pytest.raises(DefinitionError) as exc:
            spec(initial=Other.X)
        assert str(exc.value) == ("machine toy: initial state <Other.X: 'X'> "
                                  "is not one of the states")

    def test_unreachable_state(self):
        rows = (Transition("finish", Toy.A, Toy.C),)  # B: never entered, and a trap
        with pytest.raises(DefinitionError) as exc:
            spec(rows)
        assert str(exc.value) == ("machine toy: state B is unreachable from A; "
                                  "state B is a trap: no final state is reachable from it")

    def test_unreachable_final_state(self):
        rows = (Transition("finish", Toy.A, Toy.C),)
        with pytest.raises(DefinitionError) as exc:
            spec(rows, finals={Toy.B, Toy.C})
        assert str(exc.value) == "machine toy: state B is unreachable from A"

    def test_trap(self):
        rows = (Transition("go", Toy.A, Toy.B), Transition("finish", Toy.A, Toy.C))
        with pytest.raises(DefinitionError) as exc:
            spec(rows)
        assert str(exc.value) == ("machine toy: state B is a trap: "
                                  "no final state is reachable from it")

    def test_cycle_without_exit_is_a_trap(self):
        rows = (Transition("go", Toy.A, Toy.B), Transition("back", Toy.B, Toy.A),
                Transition("finish", Toy.A, Toy.C))
        spec(rows)  # a cycle with an exit is fine
        with pytest.raises(DefinitionError, match="state A is a trap.*state B is a trap"):
            spec(rows[:2], finals={Toy.C})

    def test_final_with_exits(self):
        rows = (*OK_ROWS, Transition("again", Toy.C, Toy.A))
        with pytest.raises(DefinitionError) as exc:
            spec(rows)
        assert str(exc.value) == "machine toy: final state C has exits"

    def test_final_with_a_self_loop_has_exits(self):
        rows = (*OK_ROWS, Transition("stay", Toy.C, Toy.C))
        with pytest.raises(DefinitionError, match=r"^machine toy: final state C has exits$"):
            spec(rows)

    def test_extra_check_problems_are_reported(self):
        with pytest.raises(DefinitionError) as exc:
            spec(extra_check=lambda s: [f"{s.name} is not allowed", "twice"])
        assert str(exc.value) == "machine toy: toy is not allowed; twice"

    def test_extra_check_returning_nothing_accepts(self):
        assert spec(extra_check=lambda s: []).name == "toy"

    def test_every_problem_at_once(self):
        rows = (Transition("go", Toy.A, Toy.B, conditions=["nope", "flag"], unless=["nah"]),
                Transition("finish", Toy.B, Other.X))
        with pytest.raises(DefinitionError) as exc:
            spec(rows)
        assert str(exc.value) == ("machine toy: go: unknown guard 'nope'; "
                                  "go: unknown guard 'nah'; "
                                  "finish: state <Other.X: 'X'> is not one of the states")

    def test_definition_error_is_a_value_error_and_a_buddy_error(self):
        with pytest.raises(ValueError):
            spec(initial=Other.X)
        assert issubclass(DefinitionError, BuddyError)


class TestSpecGraph:
    def test_one_edge_per_row_and_source(self):
        rows = (Transition("go", Toy.A, Toy.B, conditions=["flag"], unless=["other"]),
                Transition("finish", [Toy.A, Toy.B], Toy.C))
        g = spec_graph(spec(rows))
        assert set(g.nodes) == set(Toy)
        edges = sorted((u.name, v.name, d["trigger"], d["conditions"], d["unless"])
                       for u, v, d in g.edges(data=True))
        assert edges == [("A", "B", "go", ("flag",), ("other",)),
                         ("A", "C", "finish", (), ()),
                         ("B", "C", "finish", (), ())]
        assert g.graph["initial"] is Toy.A
        assert g.graph["finals"] == frozenset({Toy.C})


class TestBuild:
    def test_no_to_state_back_doors(self):
        machine = build(spec())
        m = model_of(machine)
        for state in Toy:
            assert not hasattr(m, f"to_{state.name}")
        assert m.state == "A"
        assert hasattr(m, "go") and hasattr(m, "finish")

    def test_locked_by_default(self):
        assert isinstance(build(spec()), LockedMachine)
        assert not isinstance(build(spec(), locked=False), LockedMachine)

    def test_invalid_trigger_raises(self):
        m = model_of(build(spec()))
        with pytest.raises(MachineError, match="Can't trigger event finish from state A"):
            m.finish(inputs=Flags())
        assert m.state == "A"

    def test_guards_read_the_inputs_keyword(self):
        rows = (Transition("go", Toy.A, Toy.B, conditions=["flag"]), OK_ROWS[1])
        m = model_of(build(spec(rows)))
        assert m.go(inputs=Flags(flag=False)) is False
        assert m.state == "A"
        assert m.go(inputs=Flags(flag=True)) is True
        assert m.state == "B"

    def test_unless_refuses(self):
        rows = (Transition("go", Toy.A, Toy.B, unless=["flag"]), OK_ROWS[1])
        m = model_of(build(spec(rows)))
        assert m.go(inputs=Flags(flag=True)) is False
        assert m.state == "A"

    def test_model_can_start_anywhere(self):
        m = model_of(build(spec()), initial="B")
        m.finish(inputs=Flags())
        assert m.state == "C"


class TestCompileTable:
    def test_shape_and_order(self):
        rows = (Transition("go", Toy.A, Toy.B, conditions=["flag"]),
                Transition("go", Toy.A, Toy.C, unless=["other"]),
                Transition("finish", [Toy.A, Toy.B], Toy.C))
        s = spec(rows)
        table = compile_table(s)
        assert set(table) == {"A", "B", "C"}
        assert table["C"] == {}
        assert list(table["A"]) == ["go", "finish"]
        assert [(d, len(c), len(u), r) for d, c, u, r in table["A"]["go"]] == [
            ("B", 1, 0, rows[0]), ("C", 0, 1, rows[1])]
        assert table["A"]["go"][0][1] == (GUARDS["flag"],)
        assert table["B"]["finish"] == (("C", (), (), rows[2]),)


class TestFireAndWalk:
    ROWS = (
        Transition("go", Toy.A, Toy.B, conditions=["flag"]),
        Transition("go", Toy.A, Toy.C, conditions=["yes"], unless=["other"]),
        Transition("go", Toy.A, Toy.B),
        Transition("finish", [Toy.A, Toy.B], Toy.C, conditions=["yes"]),
        Transition("back", Toy.B, Toy.A),
    )

    @pytest.fixture
    def table(self):
        return compile_table(spec(self.ROWS))

    def test_first_passing_row_wins(self, table):
        assert fire(table, "A", "go", Flags(flag=True))[3] is self.ROWS[0]
        assert walk(table, "A", ["go"], Flags(flag=True)) == "B"
        # the second row passes too, but the first wins
        assert fire(table, "A", "go", Flags(flag=True, other=False))[0] == "B"

    def test_later_row_when_earlier_fail(self, table):
        assert fire(table, "A", "go", Flags())[3] is self.ROWS[1]
        assert walk(table, "A", ["go"], Flags()) == "C"

    def test_unless_skips_a_row(self, table):
        assert fire(table, "A", "go", Flags(other=True))[3] is self.ROWS[2]
        assert walk(table, "A", ["go"], Flags(other=True)) == "B"

    def test_no_row_leaves_the_state(self, table):
        assert fire(table, "C", "go", Flags()) is None
        assert fire(table, "B", "go", Flags()) is None
        assert walk(table, "B", ["go"], Flags()) == "B"

    def test_failing_guards_leave_the_state(self):
        table = compile_table(spec((Transition("go", Toy.A, Toy.B, conditions=["no"]),
                                    Transition("finish", Toy.A, Toy.C),
                                    Transition("next", Toy.B, Toy.C))))
        trace: list[Transition] = []
        assert fire(table, "A", "go", Flags()) is None
        assert walk(table, "A", ["go"], Flags(), trace) == "A"
        assert trace == []

    def test_walk_chains_triggers_and_traces(self, table):
        trace: list[Transition] = []
        state = walk(table, "A", ["finish", "go", "back", "go", "back", "nope", "finish"],
                     Flags(flag=True), trace)
        # finish from A fires at once and C has no rows: the rest are skipped
        assert state == "C"
        assert trace == [self.ROWS[3]]

        trace = []
        assert walk(table, "A", ["go", "back", "go", "finish"], Flags(flag=True), trace) == "C"
        assert trace == [self.ROWS[0], self.ROWS[4], self.ROWS[0], self.ROWS[3]]

    def test_walk_without_trace(self, table):
        assert walk(table, "A", [], Flags()) == "A"
        assert walk(table, "A", ("go", "back"), Flags(flag=True)) == "A"

    def test_walk_agrees_with_fire_step_by_step(self, table):
        for flags in (Flags(), Flags(flag=True), Flags(other=True), Flags(True, True)):
            for state in ("A", "B", "C"):
                for trigger in ("go", "finish", "back", "unknown"):
                    if trigger not in table[state]:
                        expected = state
                    else:
                        option = fire(table, state, trigger, flags)
                        expected = state if option is None else option[0]
                    assert walk(table, state, [trigger], flags) == expected


def _stubbed(spec: MachineSpec) -> MachineSpec:
    """``spec`` with each guard replaced by one that reads its outcome from the inputs,
    a ``{guard name: bool}`` dict: every combination of outcomes can be driven."""
    def stub(name: str):
        return lambda outcomes: outcomes[name]

    stubbed = attrs.evolve(spec, guards={name: stub(name) for name in spec.guards})
    assert stubbed.transitions == spec.transitions  # the same rows, only the guards differ
    return stubbed


def _transitions_move(model, state: str, trigger: str, outcomes: dict[str, bool]) -> str | None:
    """The state a ``transitions`` model in ``state`` reaches on ``trigger``, or None when
    the trigger has no row from ``state`` or its guards refuse (no transition)."""
    model.state = state
    try:
        moved = model.trigger(trigger, inputs=outcomes)
    except MachineError:  # no such trigger from this state (ignore_invalid_triggers=False)
        assert model.state == state
        return None
    if not moved:
        assert model.state == state
        return None
    return model.state


class TestCompiledTableAgreesWithTransitions:
    """The compiled table (the hot paths: decide, execute, replay) and the ``transitions``
    machine built from the same declaration move alike on every state, trigger and
    combination of guard outcomes, for every shipped machine."""

    @pytest.mark.parametrize("name", sorted(MACHINES))
    def test_every_state_trigger_and_guard_outcome(self, name):
        spec = _stubbed(MACHINES[name])
        guards = sorted(spec.guards)
        table = compile_table(spec)
        model = model_of(build(spec))
        compared = moved = 0
        for state in spec.states:
            for trigger in spec.triggers():
                for values in itertools.product((False, True), repeat=len(guards)):
                    outcomes = dict(zip(guards, values, strict=True))
                    option = fire(table, state.name, trigger, outcomes)
                    expected = _transitions_move(model, state.name, trigger, outcomes)
                    got = None if option is None else option[0]
                    assert got == expected, (state.name, trigger, outcomes)
                    compared += 1
                    moved += got is not None
        assert compared == len(spec.states) * len(spec.triggers()) * 2 ** len(guards)
        assert moved  # the stubs do open rows: the comparison is not all "no transition"

    @pytest.mark.parametrize("name", sorted(MACHINES))
    def test_every_row_is_taken_by_some_outcome(self, name):
        spec = _stubbed(MACHINES[name])
        guards = sorted(spec.guards)
        table = compile_table(spec)
        taken = set()
        for state in spec.states:
            for trigger in spec.triggers():
                for values in itertools.product((False, True), repeat=len(guards)):
                    option = fire(table, state.name, trigger, dict(zip(guards, values,
                                                                       strict=True)))
                    if option is not None:
                        taken.add((option[3], state))
        declared = {(row, source) for row in spec.transitions for source in row.source}
        assert taken == declared

    def test_a_table_that_drifts_is_caught(self):
        spec = _stubbed(MACHINES["escalation"])
        table = compile_table(spec)
        dest, conds, unless, row = table["DRY_RUN"]["request_live"][0]
        table["DRY_RUN"]["request_live"] = ((dest, conds, (), row),
                                            *table["DRY_RUN"]["request_live"][1:])
        model = model_of(build(spec))
        outcomes = dict.fromkeys(spec.guards, True)
        option = fire(table, "DRY_RUN", "request_live", outcomes)
        assert option is not None and option[0] == "LIVE"  # the dropped unless opened LIVE
        assert _transitions_move(model, "DRY_RUN", "request_live", outcomes) is None


class TestImports:
    """Each package imports on its own, first thing in a fresh interpreter."""

    @pytest.mark.parametrize("module", ["buddy.machines", "buddy.machines._factory",
                                        "buddy.machines.task", "buddy.rules", "buddy.engine"])
    def test_imports_first(self, module):
        done = subprocess.run([sys.executable, "-c", f"import {module}"],
                              capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr.strip().splitlines()[-1]
