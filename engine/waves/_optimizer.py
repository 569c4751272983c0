"""The optimizer (Phase 19): a wave's tasks put on agents so an objective is as high as it can be.

:func:`optimize` scores every (task, agent) pair with a number in [0, 1] for
the objective chosen, then solves the assignment exactly as a min-cost flow on
a networkx graph::

    source --(cap n_k, cost 0)--> class k --(cap n_k, cost -score)--> agent a
           --(cap capacity(a), cost 0)--> sink

Tasks whose scores are equal on every agent (same ``predicted_success_rate``
and ``decision_confidence``) share one *class* node holding their count
``n_k``, so a wave of many alike tasks is a small graph; integral flows make
this the same optimum as one node per task. The costs are the scores times
:data:`SCALE`, rounded and negated (networkx's network simplex needs whole
numbers), so the schedule is optimal for the objective to within ``tasks /
SCALE``.

The scores, for task ``t`` on agent ``a`` (available agents only):

``maximize_success``
    ``p(t, a) = clamp(t.predicted_success_rate * a.success_rate / mean, 0, 1)``,
    ``mean`` the mean success rate of the available agents (every agent counts
    as average when it is 0): the task's predicted rate, scaled by how much
    better than average the agent has done. Rising in both rates.
``maximize_throughput``
    ``(1 / d(a)) / (1 / min d)``: the agent's rate of work against the fastest
    agent's; ``d(a) = a.avg_latency`` (1 s before its first finished task)
    divided by ``speeds[a]`` (default 1; 2 = twice as fast).
``maximize_confidence``
    ``p(t, a) * t.decision_confidence``: the likely successes weighted by how
    confident the engine is in each task, so the confident tasks go to the
    reliable agents first.
``balanced``
    The table's weighted sum of the three (``rules/optimizer.toml``).

Capacity: no agent ends the wave with more than ``table.capacity(n + L, m)``
tasks (``n`` tasks, ``m`` available agents, ``L`` their ``current_load``s
summed; the tasks already on an agent count against it). With
``max_load_factor >= 1`` this always fits every task, and LOAD_BALANCED's
assignment always fits it, so the optimum is never worse than LOAD_BALANCED on
the objective.

Nothing here draws a random number, reads a clock or does I/O; the same inputs
give the same schedule (ties between optimal schedules are settled by the
graph's insertion order: classes and agents in the order given).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import networkx as nx

from buddy.engine.waves._agents import StrategyFn
from buddy.engine.waves._records import AgentState, PredictedTask
from buddy.rules.base._masking import shown
from buddy.rules.base.errors import InputError
from buddy.rules.tables._optimizer import OptimizerTable

__all__ = ["OBJECTIVES", "SCALE", "Schedule", "as_strategy", "optimize", "pair_scores"]

#: The objectives, by the names of the Phase 19 strategies.
OBJECTIVES = ("maximize_success", "maximize_throughput", "maximize_confidence", "balanced")

#: Scores are multiplied by this and rounded to whole-number costs for the flow.
SCALE = 10**6

#: The duration of a task on an agent that has finished none yet (seconds).
DEFAULT_DURATION_S = 1.0


@attrs.frozen
class Schedule:
    """A wave's plan: who runs each task, in what order, and what to expect of it.

    ``assignments``: task id -> agent id, in the order the tasks were given.
    ``order``: agent id -> its task ids in the order to run them (``priority``
    highest first, then expected success highest first, then task order);
    agents with no task are left out. ``objective_value``: the sum over tasks
    of the objective's score (see the module docstring). ``expected_success``:
    the mean ``p(t, a)`` over the tasks (0.0 for no task); ``task_success``
    that ``p`` per task. ``expected_makespan_s``: the longest agent's summed
    durations (agents work in parallel, each one task at a time);
    ``expected_throughput``: tasks / makespan, per second (0.0 for no task).
    ``capacity``: the most tasks one agent may hold this wave.
    """

    objective: str
    assignments: Mapping[str, str]
    order: Mapping[str, tuple[str, ...]]
    objective_value: float
    expected_success: float
    task_success: Mapping[str, float]
    expected_makespan_s: float
    expected_throughput: float
    capacity: int

    def agent_ids(self) -> list[str]:
        """The agent of each task, in task order (what an assignment strategy returns)."""
        return list(self.assignments.values())

    def to_json(self) -> dict[str, Any]:
        return {"objective": self.objective, "assignments": dict(self.assignments),
                "order": {a: list(ts) for a, ts in self.order.items()},
                "objective_value": round(self.objective_value, 6),
                "expected_success": round(self.expected_success, 6),
                "expected_makespan_s": round(self.expected_makespan_s, 6),
                "expected_throughput": round(self.expected_throughput, 6),
                "capacity": self.capacity}


def _clamp(value: float) -> float:
    """``value`` clamped to [0, 1]; NaN reads 0."""
    if not value >= 0.0:
        return 0.0
    return 1.0 if value > 1.0 else float(value)


def _durations(agents: Sequence[AgentState], speeds: Mapping[str, float] | None,
               ) -> list[float]:
    speeds = speeds or {}
    out = []
    for a in agents:
        speed = speeds.get(a.agent_id, 1.0)
        if isinstance(speed, bool) or not isinstance(speed, int | float) \
                or not math.isfinite(speed) or speed <= 0:
            raise InputError(f"speeds[{a.agent_id!r}] must be a finite number > 0 "
                             f"(got {shown(speed)})")
        latency = a.avg_latency
        base = latency if math.isfinite(latency) and latency > 0 else DEFAULT_DURATION_S
        out.append(base / speed)
    return out


def _ratios(agents: Sequence[AgentState]) -> list[float]:
    """Each agent's success rate over the mean (all 1.0 when the mean is 0)."""
    rates = [_clamp(a.success_rate) for a in agents]
    mean = math.fsum(rates) / len(rates)
    return [r / mean for r in rates] if mean > 0 else [1.0] * len(rates)


def pair_scores(task: PredictedTask, agents: Sequence[AgentState], objective: str, *,
                table: OptimizerTable, speeds: Mapping[str, float] | None = None,
                ) -> list[float]:
    """The score of ``task`` on each of ``agents`` for ``objective`` (module docstring).

    >>> agents = [AgentState("a", prior=0.9), AgentState("b", prior=0.5)]
    >>> task = PredictedTask("t", "form_fill", 0.5)
    >>> [round(s, 6) for s in pair_scores(task, agents, "maximize_success",
    ...                                    table=OptimizerTable.default())]
    [0.642857, 0.357143]
    """
    _check_objective(objective)
    return _Scorer(agents, objective, table, speeds).row(task)


def _check_objective(objective: str) -> None:
    if objective not in OBJECTIVES:
        raise InputError(f"unknown objective {shown(objective)} "
                         f"(known: {', '.join(OBJECTIVES)})")


class _Scorer:
    """The per-agent factors of a wave, computed once; :meth:`row` scores one task."""

    def __init__(self, agents: Sequence[AgentState], objective: str, table: OptimizerTable,
                 speeds: Mapping[str, float] | None) -> None:
        self.objective = objective
        self.table = table
        self.ratios = _ratios(agents)
        self.durations = _durations(agents, speeds)
        fastest = min(self.durations)
        self.rates = [fastest / d for d in self.durations]

    def success(self, task: PredictedTask) -> list[float]:
        p = task.predicted_success_rate
        return [_clamp(p * r) for r in self.ratios]

    def row(self, task: PredictedTask) -> list[float]:
        objective = self.objective
        if objective == "maximize_throughput":
            return list(self.rates)
        success = self.success(task)
        if objective == "maximize_success":
            return success
        conf = _clamp(task.decision_confidence)
        confidence = [p * conf for p in success]
        if objective == "maximize_confidence":
            return confidence
        return [self.table.balanced(s, r, c)
                for s, r, c in zip(success, self.rates, confidence, strict=True)]


def optimize(tasks: Sequence[PredictedTask], agents: Sequence[AgentState], objective: str, *,
             table: OptimizerTable, speeds: Mapping[str, float] | None = None) -> Schedule:
    """Put every task on an available agent so the objective's summed score is highest.

    Parameters
    ----------
    tasks:
        The wave's tasks; ids unique. Their ``agent_id`` is ignored.
    agents:
        The agents; only the available ones (not OFFLINE) get tasks. Their
        ``current_load`` counts against their capacity.
    objective:
        One of :data:`OBJECTIVES`.
    table:
        The balanced weights and the capacity factor (``rules/optimizer.toml``).
    speeds:
        Agent id -> speed factor (> 0, default 1): a task takes the agent's mean
        latency divided by it.

    Returns
    -------
    Schedule
        Optimal for the objective among the assignments within capacity.

    Raises
    ------
    InputError
        An unknown objective, two tasks sharing an id, no available agent (when
        there are tasks), or a speed that is not a finite number > 0.

    Examples
    --------
    >>> agents = [AgentState("a", prior=0.9), AgentState("b", prior=0.5)]
    >>> tasks = [PredictedTask("hard", "form_fill", 0.5), PredictedTask("easy", "form_fill", 0.9)]
    >>> s = optimize(tasks, agents, "maximize_success", table=OptimizerTable.default())
    >>> dict(s.assignments), round(s.objective_value, 6)
    ({'hard': 'a', 'easy': 'a'}, 1.642857)
    >>> optimize(tasks, agents, "fastest", table=OptimizerTable.default())
    Traceback (most recent call last):
    ...
    buddy.rules.base.errors.InputError: unknown objective 'fastest' (known: maximize_success, \
maximize_throughput, maximize_confidence, balanced)
    """
    _check_objective(objective)
    ids = [t.task_id for t in tasks]
    if len(set(ids)) != len(ids):
        twice = sorted(k for k, n in Counter(ids).items() if n > 1)
        raise InputError(f"task ids must be unique in a wave: {', '.join(twice[:5])}")
    live = [a for a in agents if a.available]
    n = len(tasks)
    if not n:
        return Schedule(objective, {}, {}, 0.0, 0.0, {}, 0.0, 0.0, 0)
    if not live:
        raise InputError(f"no agent available for {n} tasks")
    scorer = _Scorer(live, objective, table, speeds)
    m = len(live)
    held = [max(0, a.current_load) for a in live]
    cap = table.capacity(n + sum(held), m)
    room = [max(0, cap - h) for h in held]

    # classes of tasks scored alike on every agent, in order of first appearance
    classes: dict[tuple[float, float], list[int]] = {}
    for k, t in enumerate(tasks):
        key = (t.predicted_success_rate, _clamp(t.decision_confidence))
        classes.setdefault(key, []).append(k)
    rows = [scorer.row(tasks[members[0]]) for members in classes.values()]

    graph: nx.DiGraph[Any] = nx.DiGraph()
    graph.add_node("source", demand=-n)
    graph.add_node("sink", demand=n)
    for i, r in enumerate(room):
        if r:
            graph.add_edge(("a", i), "sink", capacity=r, weight=0)
    for c, members in enumerate(classes.values()):
        size = len(members)
        graph.add_edge("source", ("c", c), capacity=size, weight=0)
        row = rows[c]
        for i, r in enumerate(room):
            if r:
                graph.add_edge(("c", c), ("a", i), capacity=min(size, r),
                               weight=-round(row[i] * SCALE))
    try:
        flow = nx.min_cost_flow(graph)
    except nx.NetworkXUnfeasible as exc:  # cannot happen with max_load_factor >= 1
        raise InputError(f"{n} tasks do not fit {m} agents at {cap} tasks each") from exc

    chosen = [0] * n
    row_of: list[list[float]] = [[]] * n
    for c, members in enumerate(classes.values()):
        for k in members:
            row_of[k] = rows[c]
        out = flow[("c", c)]
        pos = 0
        for i in range(m):
            for k in members[pos:pos + out.get(("a", i), 0)]:
                chosen[k] = i
            pos += out.get(("a", i), 0)
    return _schedule(tasks, live, chosen, row_of, scorer, cap)


def _schedule(tasks: Sequence[PredictedTask], live: Sequence[AgentState], chosen: list[int],
              row_of: Sequence[Sequence[float]], scorer: _Scorer, cap: int) -> Schedule:
    n = len(tasks)
    value = math.fsum(row[i] for row, i in zip(row_of, chosen, strict=True))
    p: list[float] = []
    busy = [0.0] * len(live)
    for t, i in zip(tasks, chosen, strict=True):
        p.append(_clamp(t.predicted_success_rate * scorer.ratios[i]))
        busy[i] += scorer.durations[i]
    per_agent: dict[int, list[int]] = {}
    for k, i in enumerate(chosen):
        per_agent.setdefault(i, []).append(k)
    order = {live[i].agent_id: tuple(
        tasks[k].task_id for k in sorted(ks, key=lambda k: (-tasks[k].priority, -p[k])))
        for i, ks in sorted(per_agent.items())}
    makespan = max(busy)
    return Schedule(
        objective=scorer.objective,
        assignments={t.task_id: live[i].agent_id for t, i in zip(tasks, chosen, strict=True)},
        order=order, objective_value=value, expected_success=math.fsum(p) / n,
        task_success={t.task_id: q for t, q in zip(tasks, p, strict=True)},
        expected_makespan_s=makespan, expected_throughput=n / makespan, capacity=cap)


def as_strategy(objective: str, table: OptimizerTable, *,
                speeds: Mapping[str, float] | None = None) -> StrategyFn:
    """An assignment strategy (``fn(tasks, agents) -> [agent_id, ...]``) that optimizes
    ``objective``, for :func:`~buddy.engine.waves.register_strategy`.

    Raises :class:`~buddy.rules.base.errors.InputError` for an unknown objective, here.

    >>> fn = as_strategy("maximize_success", OptimizerTable.default())
    >>> fn([PredictedTask("t0", "form_fill", 0.9), PredictedTask("t1", "form_fill", 0.5)],
    ...    [AgentState("a", prior=0.5), AgentState("b", prior=0.9)])
    ['b', 'b']
    """
    _check_objective(objective)

    def strategy(tasks: Sequence[PredictedTask], agents: Sequence[AgentState]) -> list[str]:
        return optimize(tasks, agents, objective, table=table, speeds=speeds).agent_ids()

    strategy.__name__ = f"optimize_{objective}"
    return strategy
