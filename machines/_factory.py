"""Build state machines from their declarations.

A machine is declared as data: an ``Enum`` of states, a tuple of
:class:`Transition` rows and a registry of named guards. :func:`check` validates
the declaration as a graph when it is made; :func:`build` turns it into a
``transitions`` machine; :func:`compile_table` turns the same rows into a plain
dict for hot paths that cannot afford a ``transitions`` trigger per call. Both
read one declaration, so they cannot drift apart (the tests prove they agree).
"""

from __future__ import annotations

import contextvars
import enum
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
import networkx as nx
from transitions import Machine
from transitions.core import Event
from transitions.extensions import LockedMachine
from transitions.extensions.locking import LockedEvent

from buddy.rules.base.errors import DefinitionError

__all__ = [
    "CompiledTable",
    "MachineSpec",
    "Transition",
    "build",
    "check",
    "compile_table",
    "fire",
    "spec_graph",
    "walk",
]

Guard = Callable[[Any], bool]


def _states(value: Any) -> tuple[enum.Enum, ...]:
    return tuple(value) if isinstance(value, list | tuple | frozenset | set) else (value,)


def _names(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _finals(value: Iterable[enum.Enum]) -> frozenset[enum.Enum]:
    return frozenset(value)


def _rows(value: Iterable[Transition]) -> tuple[Transition, ...]:
    return tuple(value)


@attrs.frozen
class Transition:
    """One row: ``trigger`` moves ``source`` to ``dest`` when every guard in
    ``conditions`` holds and none in ``unless`` does."""

    trigger: str
    source: tuple[enum.Enum, ...] = attrs.field(converter=_states)
    dest: enum.Enum
    conditions: tuple[str, ...] = attrs.field(default=(), converter=_names)
    unless: tuple[str, ...] = attrs.field(default=(), converter=_names)


@attrs.frozen
class MachineSpec:
    """A declared machine. Checked as a graph on creation (see :func:`check`)."""

    name: str
    states: type[enum.Enum]
    initial: enum.Enum
    finals: frozenset[enum.Enum] = attrs.field(converter=_finals)
    transitions: tuple[Transition, ...] = attrs.field(converter=_rows)
    guards: Mapping[str, Guard] = attrs.field(eq=False, repr=False)
    description: str = ""
    extra_check: Callable[[MachineSpec], list[str]] | None = attrs.field(
        default=None, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        check(self)

    def triggers(self) -> list[str]:
        seen: dict[str, None] = {}
        for t in self.transitions:
            seen.setdefault(t.trigger, None)
        return list(seen)


def check(spec: MachineSpec) -> None:
    """Raise :class:`DefinitionError` naming every problem of a declaration.

    One initial state; every guard name known; every state reachable from the
    initial one; no traps (every state can reach a final one); finals have no
    exits; plus the machine's own ``extra_check``.
    """
    problems: list[str] = []
    states = set(spec.states)
    if spec.initial not in states:
        problems.append(f"initial state {spec.initial!r} is not one of the states")
    for t in spec.transitions:
        for s in (*t.source, t.dest):
            if s not in states:
                problems.append(f"{t.trigger}: state {s!r} is not one of the states")
        for g in (*t.conditions, *t.unless):
            if g not in spec.guards:
                problems.append(f"{t.trigger}: unknown guard {g!r}")
    if problems:
        raise DefinitionError(f"machine {spec.name}: " + "; ".join(problems))
    graph = spec_graph(spec)
    reachable = nx.descendants(graph, spec.initial) | {spec.initial}
    for s in spec.states:
        if s not in reachable:
            problems.append(f"state {s.name} is unreachable from {spec.initial.name}")
        if s in spec.finals and graph.out_degree(s):
            problems.append(f"final state {s.name} has exits")
        if s not in spec.finals and not (nx.descendants(graph, s) & spec.finals):
            problems.append(f"state {s.name} is a trap: no final state is reachable from it")
    if spec.extra_check is not None:
        problems.extend(spec.extra_check(spec))
    if problems:
        raise DefinitionError(f"machine {spec.name}: " + "; ".join(problems))


def spec_graph(spec: MachineSpec) -> nx.MultiDiGraph:
    """The declaration as a graph: states as nodes, one edge per (row, source).

    Edge data: ``trigger``, ``conditions``, ``unless``.
    """
    graph: nx.MultiDiGraph[enum.Enum] = nx.MultiDiGraph(
        name=spec.name, initial=spec.initial, finals=spec.finals)
    graph.add_nodes_from(spec.states)
    for t in spec.transitions:
        for s in t.source:
            graph.add_edge(s, t.dest, trigger=t.trigger, conditions=t.conditions, unless=t.unless)
    return graph


# -- the transitions machine --------------------------------------------------

# Whether this thread (or task) is stepping one of buddy's machines right now.
_STEPPING: contextvars.ContextVar[bool] = contextvars.ContextVar("buddy_stepping", default=False)


class _Quiet(logging.Filter):
    """Drops the records ``transitions`` makes while buddy steps one of its own
    machines (a line per trigger and state at INFO), and no other: a host app's own
    ``transitions`` machines log as they always did."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _STEPPING.get()


_QUIET = _Quiet()
# A logger's filters see the records made on it (not those of its children): the
# loggers of the modules buddy's machines run in.
logging.getLogger("transitions.core").addFilter(_QUIET)
logging.getLogger("transitions.extensions.locking").addFilter(_QUIET)


class _Quietly:
    """An event whose trigger marks the thread as stepping a buddy machine."""

    def trigger(self, model: Any, *args: Any, **kwargs: Any) -> bool:
        token = _STEPPING.set(True)
        try:
            done: bool = super().trigger(model, *args, **kwargs)  # type: ignore[misc]
            return done
        finally:
            _STEPPING.reset(token)


class _QuietEvent(_Quietly, Event):
    pass


class _QuietLockedEvent(_Quietly, LockedEvent):
    pass


class _QuietMachine(Machine):
    """A ``Machine`` whose triggers ``transitions`` does not log."""

    event_cls = _QuietEvent


class _QuietLockedMachine(LockedMachine):
    """A ``LockedMachine`` whose triggers ``transitions`` does not log."""

    event_cls = _QuietLockedEvent


def build(spec: MachineSpec, *, locked: bool = True) -> Machine:
    """A ``transitions`` machine of ``spec`` with no models yet.

    Built with ``auto_transitions=False`` (no ``to_LIVE()`` back door),
    ``ignore_invalid_triggers=False`` and ``send_event=True``; a trigger passes
    its guard inputs as ``inputs=...``. Add models with ``machine.add_model``.

    Quiet: ``transitions`` logs nothing while one of its triggers runs (it would
    log a line per trigger and state at INFO once a host app turns logging on);
    the host's own ``transitions`` machines log as before.
    """
    def wrap(guard: Guard) -> Callable[[Any], bool]:
        return lambda event: guard(event.kwargs["inputs"])

    wrapped = {name: wrap(fn) for name, fn in spec.guards.items()}
    rows = []
    for t in spec.transitions:
        rows.append({
            "trigger": t.trigger,
            "source": [s.name for s in t.source],
            "dest": t.dest.name,
            "conditions": [wrapped[g] for g in t.conditions],
            "unless": [wrapped[g] for g in t.unless],
        })
    cls = _QuietLockedMachine if locked else _QuietMachine
    return cls(
        model=None,
        states=[s.name for s in spec.states],
        initial=spec.initial.name,
        transitions=rows,
        auto_transitions=False,
        ignore_invalid_triggers=False,
        send_event=True,
        name=spec.name,
    )


# -- the compiled table, for hot paths ---------------------------------------

Option = tuple[str, tuple[Guard, ...], tuple[Guard, ...], Transition]
CompiledTable = dict[str, dict[str, tuple[Option, ...]]]


def compile_table(spec: MachineSpec) -> CompiledTable:
    """``{state name: {trigger: ((dest name, guards, unless_guards, row), ...)}}``.

    Keyed by state *names*: an ``Enum`` member hashes in Python code, a str in C.
    Rows keep declaration order (the first whose guards pass wins, as in
    ``transitions``).
    """
    table: dict[str, dict[str, list[Option]]] = {s.name: {} for s in spec.states}
    for t in spec.transitions:
        conds = tuple(spec.guards[g] for g in t.conditions)
        unless = tuple(spec.guards[g] for g in t.unless)
        for s in t.source:
            table[s.name].setdefault(t.trigger, []).append((t.dest.name, conds, unless, t))
    return {s: {k: tuple(v) for k, v in d.items()} for s, d in table.items()}


def fire(table: CompiledTable, state: str, trigger: str, inputs: Any) -> Option | None:
    """The row ``trigger`` takes from ``state`` given ``inputs``, or None.

    The first row (in declaration order) whose ``conditions`` all hold and none
    of whose ``unless`` guards does. Loops, not ``all``/``any`` over generators:
    the controller fires a few triggers per call.
    """
    options = table[state].get(trigger)
    if options is None:
        return None
    for option in options:
        for guard in option[1]:
            if not guard(inputs):
                break
        else:
            for guard in option[2]:
                if guard(inputs):
                    break
            else:
                return option
    return None


def walk(table: CompiledTable, state: str, triggers: Iterable[str], inputs: Any,
         trace: list[Transition] | None = None) -> str:
    """Try each trigger in turn from ``state``; return the name of the state reached.

    A trigger with no row from the current state, or whose guards fail, leaves
    the state unchanged. Fired rows are appended to ``trace`` when given.
    Same semantics as :func:`fire`, inlined: this is the hot path of ``decide``.
    """
    moves = table[state]
    for trigger in triggers:
        options = moves.get(trigger)
        if options is None:
            continue
        for dest, conds, unless, row in options:
            for guard in conds:
                if not guard(inputs):
                    break
            else:
                for guard in unless:
                    if guard(inputs):
                        break
                else:
                    state = dest
                    moves = table[state]
                    if trace is not None:
                        trace.append(row)
                    break
    return state
