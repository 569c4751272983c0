"""The optimizer (Phase 19): a wave's tasks put on agents so an objective is as high as it can be.

:func:`optimize` scores every (task, agent) pair with a number in [0, 1] for
the objective chosen, then solves the capacitated assignment exactly: the
schedule maximises the summed score among those within capacity. Scores are
multiplied by :data:`SCALE` and rounded to whole-number costs, so it is
optimal for the objective to within ``tasks / SCALE``, and the solvers work on
integers only (exact, no float drift).

First the problem shrinks: tasks whose scores are equal on every agent (what
the objective reads of them: nothing for throughput, the predicted rate for
success, it and the confidence otherwise; then equal whole-number costs) share
one *class* holding their count; agents whose costs are equal for every class
(wave 1: every agent has the same prior and no latency) share one node holding
their rooms summed, and split its tasks as evenly as their loads allow. Then,
with ``K`` classes and ``G`` agent nodes:

- ``K * G <= FLOW_EDGES`` (small waves): networkx's ``min_cost_flow`` (network
  simplex) on the class graph, the solver of record::

      source --(cap n_k, cost 0)--> class k --(cap n_k, cost c(k, g))--> agent g
             --(cap room(g), cost 0)--> sink

- larger: successive shortest paths on the compact *agent exchange graph*
  (:func:`_paths`): classes inserted one at a time, each by Dijkstra with
  potentials over the ``G + 1`` nodes (the agents and a slack node for spare
  room), an edge ``a -> b`` costing the cheapest move of a task from ``a`` to
  ``b``, stopping at the slack node. ``O(K * P * G)`` for ``P`` nodes settled
  per insertion (at most ``G``), plus ``O(G)`` per task moved; memory ``O((K +
  G) * G)``. Measured (``bench/optimize.py``, a loaded 2-core machine): 64 agents x 2,000
  all-distinct tasks in 0.25-1.2 s (balanced the slowest), growing a little faster
  than linearly in the tasks (x6.2 time for x8 tasks);
  4 agents x 20 tasks a few ms (networkx). Both give the same optimum
  (tests compare them on random waves).

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

Nothing here reads a clock or does I/O, and the optimizer draws no random
number; the same inputs give the same schedule (ties between optimal
schedules are settled by the order of classes and agents given).
:func:`simulate_schedule` draws from its own ``random.Random(seed)``.

Beside it, 002's optimizer helpers: :func:`simulate_schedule` (a seeded
Monte-Carlo of a schedule), :func:`update_confidence_estimates` (Beta-Bernoulli
posterior means of the agents' success rates) and
:func:`generate_schedule_recommendations` (advice in sentences).
"""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from itertools import compress, repeat
from operator import add, lt, sub
from typing import Any

import attrs
import networkx as nx

from buddy.engine.waves._agents import StrategyFn
from buddy.engine.waves._records import AgentState, AgentStatus, PredictedTask
from buddy.rules.base._masking import shown
from buddy.rules.base.errors import InputError
from buddy.rules.tables._optimizer import OptimizerTable

__all__ = ["FAR_BELOW", "FLOW_EDGES", "LOW_SUCCESS", "OBJECTIVES", "SCALE", "UNLIKELY", "Schedule",
           "SimulatedSchedule", "as_strategy", "generate_schedule_recommendations", "optimize",
           "pair_scores", "simulate_schedule", "update_confidence_estimates"]

#: The objectives, by the names of the Phase 19 strategies.
OBJECTIVES = ("maximize_success", "maximize_throughput", "maximize_confidence", "balanced")

#: Scores are multiplied by this and rounded to whole-number costs for the flow.
SCALE = 10**6

#: Waves whose class graph has at most this many class-agent edges are solved by
#: networkx's min_cost_flow; larger ones by successive shortest paths on the agents.
FLOW_EDGES = 128

#: Longer than any path: the cost of a move no task can make (a whole number, so
#: the shortest paths stay exact).
_NEVER = 1 << 62

#: The shortest and longest a task's expected duration may be (seconds): a latency and
#: speed whose quotient is outside are read at the bound (no zero or infinite duration).
MIN_DURATION_S, MAX_DURATION_S = 1e-9, 1e9
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
        out.append(min(MAX_DURATION_S, max(MIN_DURATION_S, base / speed)))
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
        w = table.weights
        self._weighted_rates = [w["throughput"] * r for r in self.rates]

    def success(self, task: PredictedTask) -> list[float]:
        p = _clamp(task.predicted_success_rate)
        return [x if x < 1.0 else 1.0 for x in map(p.__mul__, self.ratios)]  # p, r >= 0

    def row(self, task: PredictedTask) -> list[float]:
        objective = self.objective
        if objective == "maximize_throughput":
            return list(self.rates)
        success = self.success(task)
        if objective == "maximize_success":
            return success
        conf = _clamp(task.decision_confidence)
        if objective == "maximize_confidence":
            return [x * conf for x in success]
        # the table's w.s * s + w.t * r + w.c * s * conf, as s * (w.s + w.c * conf) + w.t * r
        w = self.table.weights
        k = w["success"] + w["confidence"] * conf
        return [x * k + tr for x, tr in zip(success, self._weighted_rates, strict=True)]


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

    # tasks scored alike on every agent, in order of first appearance: what the
    # scores read of a task depends on the objective
    by_key: dict[tuple[float, ...], list[int]] = {}
    for k, t in enumerate(tasks):
        by_key.setdefault(_class_key(t, objective), []).append(k)
    usable = [i for i in range(m) if room[i]]
    row_of: list[list[float]] = [[]] * n
    classes: dict[tuple[int, ...], list[int]] = {}
    for members in by_key.values():
        row = scorer.row(tasks[members[0]])
        for k in members:
            row_of[k] = row
        costs = tuple(-round(row[i] * SCALE) for i in usable)
        classes.setdefault(costs, []).extend(members)
    # agents scored alike on every class share one node holding their rooms summed
    groups: dict[tuple[int, ...], list[int]] = {}
    for j, i in enumerate(usable):
        groups.setdefault(tuple(c[j] for c in classes), []).append(i)
    firsts = [usable.index(g[0]) for g in groups.values()]
    cost = [[c[j] for j in firsts] for c in classes]
    size = [len(members) for members in classes.values()]
    group_room = [sum(room[i] for i in g) for g in groups.values()]
    solve = _flow if len(cost) * len(group_room) <= FLOW_EDGES else _paths
    counts = solve(cost, size, group_room)

    # each class's tasks go to its groups in consecutive blocks (task order, group
    # order); a group's tasks to its agents evenly, in blocks too
    given: list[list[int]] = [[] for _ in groups]
    for members, taken in zip(classes.values(), counts, strict=True):
        pos = 0
        for g, count in taken.items():
            given[g].extend(members[pos:pos + count])
            pos += count
    chosen = [0] * n
    for agents_g, ks in zip(groups.values(), given, strict=True):
        ks.sort()
        pos = 0
        for i, take in zip(agents_g, _even(agents_g, held, room, len(ks)), strict=True):
            for k in ks[pos:pos + take]:
                chosen[k] = i
            pos += take
    return _schedule(tasks, live, chosen, row_of, scorer, cap)


def _class_key(task: PredictedTask, objective: str) -> tuple[float, ...]:
    """What ``objective``'s scores read of ``task``: tasks with equal keys score alike."""
    if objective == "maximize_throughput":
        return ()
    if objective == "maximize_success":
        return (task.predicted_success_rate,)
    return (task.predicted_success_rate, _clamp(task.decision_confidence))


def _even(members: Sequence[int], held: Sequence[int], room: Sequence[int],
          total: int) -> list[int]:
    """How many of ``total`` tasks each of ``members`` (agents scored alike) takes: one at
    a time to the member holding fewest (then the first), within each member's room."""
    take = [0] * len(members)
    queue = [(held[i], j) for j, i in enumerate(members)]
    heapq.heapify(queue)
    for _ in range(total):
        load, j = heapq.heappop(queue)
        take[j] += 1
        if take[j] < room[members[j]]:
            heapq.heappush(queue, (load + 1, j))
    return take


def _flow(cost: Sequence[Sequence[int]], size: Sequence[int], room: Sequence[int],
          ) -> list[dict[int, int]]:
    """The min-cost assignment by networkx's network simplex on the class graph.

    ``cost[c][g]``: the whole-number cost of one task of class ``c`` on agent
    ``g``; ``size[c]``: the class's tasks; ``room[g]``: the tasks agent ``g`` may
    still take (``sum(room) >= sum(size)``). Returns, per class, agent -> tasks.
    """
    n = sum(size)
    graph: nx.DiGraph[Any] = nx.DiGraph()
    graph.add_node("source", demand=-n)
    graph.add_node("sink", demand=n)
    for g, r in enumerate(room):
        graph.add_edge(("a", g), "sink", capacity=r, weight=0)
    for c, s in enumerate(size):
        graph.add_edge("source", ("c", c), capacity=s, weight=0)
        for g, r in enumerate(room):
            graph.add_edge(("c", c), ("a", g), capacity=min(s, r), weight=cost[c][g])
    try:
        flow = nx.min_cost_flow(graph)
    except nx.NetworkXUnfeasible as exc:  # cannot happen: sum(room) >= n
        raise InputError(f"{n} tasks do not fit agents with room for {sum(room)}") from exc
    return [{g: f for (_, g), f in sorted(flow[("c", c)].items()) if f}
            for c in range(len(size))]


def _paths(cost: Sequence[Sequence[int]], size: Sequence[int], room: Sequence[int],
           ) -> list[dict[int, int]]:
    """The min-cost assignment by successive shortest paths on the agent exchange graph.

    Same arguments and result as :func:`_flow`. The classes are inserted one
    at a time (the highest summed score first). Inserting class ``k`` is a
    shortest path from it to the slack node ``T``: ``k -> a0`` costs
    ``cost[k][a0]``; ``a -> b`` moves one task of some class ``j`` held by
    ``a`` over to ``b`` and costs ``min_j cost[j][b] - cost[j][a]`` (kept per
    agent as a row ``W[a]``); ``a -> T`` is free while ``a`` has room. With
    agent potentials ``pi`` (the duals: every placed task sits on an agent
    minimising ``cost[j][b] - pi[b]``) all reduced costs are >= 0, so Dijkstra
    over the ``m + 1`` nodes finds the path, stopping once ``T`` is reached; it
    is augmented by its bottleneck (tasks left in the class, tasks of the
    moved classes, room at its end) and ``pi`` updated by the distances. Each
    step keeps the placed tasks a min-cost assignment (no negative cycle among
    the agents), so the last one is optimal: the same cost as :func:`_flow`.
    Integers throughout: exact.
    """
    m = len(room)
    pi = [0] * (m + 1)  # the agents' potentials, then T's
    load = [0] * m
    on: list[dict[int, int]] = [{} for _ in range(m)]  # agent -> class -> tasks
    rows: list[dict[int, list[int]]] = [{} for _ in range(m)]  # a -> j -> cost[j][.] - cost[j][a]
    exchange = [[_NEVER] * m for _ in range(m)]  # W: a -> b -> cheapest move
    agents = range(m)

    def arrive(j: int, b: int, count: int) -> None:
        if j in on[b]:
            on[b][j] += count
            return
        on[b][j] = count
        base = cost[j][b]
        row = [c - base for c in cost[j]]
        rows[b][j] = row
        exchange[b] = list(map(min, exchange[b], row))

    def leave(j: int, a: int, count: int) -> None:
        if on[a][j] > count:
            on[a][j] -= count
            return
        del on[a][j]
        rows[a].pop(j)
        rest = list(rows[a].values())
        if not rest:
            exchange[a] = [_NEVER] * m
            return
        exchange[a] = list(map(min, *rest)) if len(rest) > 1 else list(rest[0])

    for k in sorted(range(len(size)), key=lambda k: (sum(cost[k]), k)):
        left = size[k]
        while left:
            dist = [c - p for c, p in zip(cost[k], pi, strict=False)]
            dist.append(_NEVER)
            pred = [-1] * (m + 1)
            queue = [(d, a) for a, d in enumerate(dist[:m])]
            heapq.heapify(queue)
            pi_t = pi[m]
            while True:  # T is always reached: some agent has room
                d, a = heapq.heappop(queue)
                if a < 0:  # T (queued as -1, so it wins ties)
                    break
                if d > dist[a]:
                    continue
                here = pi[a] + d
                if load[a] < room[a] and here - pi_t < dist[m]:
                    dist[m] = here - pi_t
                    pred[m] = a
                    heapq.heappush(queue, (dist[m], -1))
                cand = list(map(add, repeat(here), map(sub, exchange[a], pi)))
                for b in compress(agents, map(lt, cand, dist)):
                    dist[b] = nd = cand[b]
                    pred[b] = a
                    heapq.heappush(queue, (nd, b))
            end = pred[m]
            count = min(left, room[end] - load[end])
            path = []
            b = end
            while pred[b] >= 0:
                a = pred[b]
                w = exchange[a][b]
                j = next(j for j, row in rows[a].items() if row[b] == w)
                path.append((a, j, b))
                count = min(count, on[a][j])
                b = a
            for a, j, c in path:
                leave(j, a, count)
                arrive(j, c, count)
            arrive(k, b, count)
            load[end] += count
            left -= count
            reach = dist[m]
            pi = [p + min(d, reach) for p, d in zip(pi, dist, strict=True)]
    out: list[dict[int, int]] = [{} for _ in size]
    for a in agents:
        for j, c in on[a].items():
            out[j][a] = c
    return [dict(sorted(o.items())) for o in out]


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


# -- the schedule's simulation, the agents' estimates, recommendations ----------------------

@attrs.frozen
class SimulatedSchedule:
    """What a seeded Monte-Carlo of a :class:`Schedule` gave, beside what it expected.

    ``expected_success_rate``: the schedule's mean ``p(t, a)``;
    ``simulated_success_rate``: the share of tasks that succeeded, averaged over
    the runs (``success_rates``: each run's). Throughput is successful tasks
    per second of the schedule's makespan (each agent's tasks take its
    expected duration, so the makespan is the expected one):
    ``expected_throughput = expected_success_rate * tasks / makespan_s``,
    ``simulated_throughput`` the same with the simulated rate (0.0 for no task).
    """

    objective: str
    seed: int
    runs: int
    tasks: int
    makespan_s: float
    expected_success_rate: float
    simulated_success_rate: float
    success_rates: tuple[float, ...]
    expected_throughput: float
    simulated_throughput: float

    def to_json(self) -> dict[str, Any]:
        return {"objective": self.objective, "seed": self.seed, "runs": self.runs,
                "tasks": self.tasks, "makespan_s": round(self.makespan_s, 6),
                "expected_success_rate": round(self.expected_success_rate, 6),
                "simulated_success_rate": round(self.simulated_success_rate, 6),
                "success_rates": [round(r, 6) for r in self.success_rates],
                "expected_throughput": round(self.expected_throughput, 6),
                "simulated_throughput": round(self.simulated_throughput, 6)}


def _whole(name: str, value: object, least: int) -> int:
    if type(value) is not int or value < least:
        raise InputError(f"{name} must be a whole number >= {least} (got {shown(value)})")
    return value


def simulate_schedule(schedule: Schedule, tasks: Sequence[PredictedTask], *, seed: int,
                      runs: int = 1) -> SimulatedSchedule:
    """Run ``schedule`` ``runs`` times on a seeded coin per task: how often does it succeed?

    Each run draws, task by task in the order of ``tasks``, one number from
    ``random.Random(seed)`` (one generator for all runs): the task succeeds
    when it is below the task's expected success ``schedule.task_success``.
    The same seed gives the same result.

    Parameters
    ----------
    schedule:
        What :func:`optimize` returned.
    tasks:
        The tasks it scheduled (each once; the order the coins are drawn in).
    seed:
        The generator's seed (a whole number).
    runs:
        How many times to run the wave (>= 1).

    Returns
    -------
    SimulatedSchedule

    Raises
    ------
    InputError
        A task the schedule lacks, a task the list lacks, or a bad seed or runs.

    Examples
    --------
    >>> agents = [AgentState("a", prior=0.9), AgentState("b", prior=0.5)]
    >>> tasks = [PredictedTask("hard", "form_fill", 0.5), PredictedTask("easy", "form_fill", 0.9)]
    >>> s = optimize(tasks, agents, "maximize_success", table=OptimizerTable.default())
    >>> sim = simulate_schedule(s, tasks, seed=7, runs=1000)
    >>> round(sim.expected_success_rate, 4), round(sim.simulated_success_rate, 4)
    (0.8214, 0.8295)
    >>> sim == simulate_schedule(s, tasks, seed=7, runs=1000)
    True
    """
    _whole("seed", seed, -(2**63))
    _whole("runs", runs, 1)
    p = schedule.task_success
    ids = [t.task_id for t in tasks]
    missing = [i for i in ids if i not in p]
    if missing:
        raise InputError(f"task {missing[0]!r} is not in the schedule")
    if len(set(ids)) != len(ids) or len(ids) != len(p):
        lacking = sorted(set(p) - set(ids))
        raise InputError("tasks must list each scheduled task once"
                         + (f": {lacking[0]!r} is missing" if lacking else ""))
    rng = random.Random(seed)
    draw = rng.random
    chances = [p[i] for i in ids]
    n = len(ids)
    rates = tuple(sum(draw() < q for q in chances) / n if n else 0.0 for _ in range(runs))
    simulated = math.fsum(rates) / runs
    makespan = schedule.expected_makespan_s
    per_s = n / makespan if makespan > 0 else 0.0
    return SimulatedSchedule(
        objective=schedule.objective, seed=seed, runs=runs, tasks=n, makespan_s=makespan,
        expected_success_rate=schedule.expected_success, simulated_success_rate=simulated,
        success_rates=rates, expected_throughput=schedule.expected_success * per_s,
        simulated_throughput=simulated * per_s)


def update_confidence_estimates(estimates: Mapping[str, float],
                                outcomes: Iterable[tuple[str, bool]], *,
                                prior_weight: float) -> dict[str, float]:
    """Each agent's success estimate after the outcomes seen: a Beta-Bernoulli posterior mean.

    The estimate before is the prior, worth ``prior_weight`` observations: an
    agent with ``s`` successes in ``n`` outcomes gets
    ``(s + prior_weight * prior) / (n + prior_weight)`` (a Beta prior with
    ``prior_weight * prior`` successes and ``prior_weight * (1 - prior)``
    failures). It stays in [0, 1]; an agent without outcomes keeps its
    estimate. A new mapping is returned; ``estimates`` is not changed.

    Parameters
    ----------
    estimates:
        Agent id -> success estimate in [0, 1].
    outcomes:
        ``(agent_id, succeeded)`` pairs, each agent one of ``estimates``.
    prior_weight:
        How many observations the estimate before is worth (a finite number > 0).

    Returns
    -------
    dict[str, float]
        Agent id -> the updated estimate, in the order of ``estimates``.

    Raises
    ------
    InputError
        An estimate outside [0, 1], an agent without an estimate, an outcome
        that is not a bool, or a prior weight that is not a finite number > 0.

    Examples
    --------
    >>> update_confidence_estimates({"a": 0.9, "b": 0.5},
    ...                             [("a", False), ("a", True), ("b", True)], prior_weight=2)
    {'a': 0.7, 'b': 0.666667}
    """
    if isinstance(prior_weight, bool) or not isinstance(prior_weight, int | float) \
            or not math.isfinite(prior_weight) or prior_weight <= 0:
        raise InputError(f"prior_weight must be a finite number > 0 (got {shown(prior_weight)})")
    for agent_id, value in estimates.items():
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not 0.0 <= value <= 1.0:
            raise InputError(f"estimates[{agent_id!r}] must be a number in [0, 1] "
                             f"(got {shown(value)})")
    seen = dict.fromkeys(estimates, 0)
    won = dict.fromkeys(estimates, 0)
    for agent_id, succeeded in outcomes:
        if agent_id not in seen:
            raise InputError(f"outcome for agent {shown(agent_id)}, which has no estimate")
        if type(succeeded) is not bool:
            raise InputError(f"outcome for agent {agent_id!r} must be true or false "
                             f"(got {shown(succeeded)})")
        seen[agent_id] += 1
        won[agent_id] += succeeded
    return {a: round(_clamp((won[a] + prior_weight * prior) / (seen[a] + prior_weight)), 6)
            for a, prior in estimates.items()}


#: Recommendations: expected success below this is flagged.
LOW_SUCCESS = 0.8
#: Recommendations: an agent whose success rate is this far below the mean is flagged.
FAR_BELOW = 0.15
#: Recommendations: a task expected to succeed less often than this is flagged.
UNLIKELY = 0.5


def _named(ids: Sequence[str], most: int = 5) -> str:
    shown_ids = ", ".join(ids[:most])
    return shown_ids + (f" and {len(ids) - most} more" if len(ids) > most else "")


def generate_schedule_recommendations(schedule: Schedule, agents: Sequence[AgentState],
                                      ) -> list[str]:
    """Plain-language advice on a schedule, one sentence each, in a fixed order.

    In turn, each when it applies: agents OFFLINE; available agents left
    without a task; agents at capacity that succeed more often than the mean
    (more room would let them take more); expected success below
    :data:`LOW_SUCCESS`; agents whose success rate is :data:`FAR_BELOW` or more
    under the mean of the available agents; tasks expected to succeed less
    often than :data:`UNLIKELY`. Agents are named in the order given, tasks in
    the schedule's order (five at most, then a count). The same inputs give
    the same list.

    Raises
    ------
    InputError
        The schedule names an agent ``agents`` lacks.

    Examples
    --------
    >>> agents = [AgentState("a", prior=0.9), AgentState("b", prior=0.5), AgentState("c",
    ...           status=AgentStatus.OFFLINE)]
    >>> tasks = [PredictedTask("hard", "form_fill", 0.5), PredictedTask("easy", "form_fill", 0.9)]
    >>> s = optimize(tasks, agents, "maximize_success", table=OptimizerTable.default())
    >>> for line in generate_schedule_recommendations(s, agents):
    ...     print(line)
    1 agent is OFFLINE and got no task: c.
    1 available agent got no task this wave: b; a lower max_load_factor in \
rules/optimizer.toml spreads the work.
    Agent a is at capacity (2 tasks) and succeeds more often than the mean (90.0% against \
70.0%): a higher max_load_factor in rules/optimizer.toml would let it take more.
    Agent b succeeds 50.0% of the time against a mean of 70.0%: check it, or give it fewer tasks.
    """
    known = {a.agent_id for a in agents}
    strangers = sorted(set(schedule.assignments.values()) - known)
    if strangers:
        raise InputError(f"the schedule puts tasks on agent {strangers[0]!r}, "
                         f"which the agents lack")
    out: list[str] = []
    offline = [a.agent_id for a in agents if a.status is AgentStatus.OFFLINE]
    if offline:
        out.append(f"{_count(len(offline), 'agent')} "
                   f"{'is' if len(offline) == 1 else 'are'} OFFLINE and got no task: "
                   f"{_named(offline)}.")
    live = [a for a in agents if a.available]
    idle = [a.agent_id for a in live if a.agent_id not in schedule.order]
    if idle and schedule.assignments:
        out.append(f"{_count(len(idle), 'available agent')} got no task this wave: "
                   f"{_named(idle)}; a lower max_load_factor in rules/optimizer.toml "
                   f"spreads the work.")
    mean = math.fsum(_clamp(a.success_rate) for a in live) / len(live) if live else 0.0
    for a in live:
        held = a.current_load + len(schedule.order.get(a.agent_id, ()))
        rate = _clamp(a.success_rate)
        if schedule.capacity and held >= schedule.capacity and rate > mean:
            out.append(f"Agent {a.agent_id} is at capacity ({_count(held, 'task')}) and "
                       f"succeeds more often than the mean ({rate:.1%} against {mean:.1%}): "
                       f"a higher max_load_factor in rules/optimizer.toml would let it "
                       f"take more.")
    if schedule.assignments and schedule.expected_success < LOW_SUCCESS:
        out.append(f"Expected success is {schedule.expected_success:.1%}, below "
                   f"{LOW_SUCCESS:.1%}: give the weakest tasks to the strongest agents, "
                   f"or review them before running.")
    for a in live:
        rate = _clamp(a.success_rate)
        if rate <= mean - FAR_BELOW:
            out.append(f"Agent {a.agent_id} succeeds {rate:.1%} of the time against a mean "
                       f"of {mean:.1%}: check it, or give it fewer tasks.")
    unlikely = [t for t, q in schedule.task_success.items() if q < UNLIKELY]
    if unlikely:
        out.append(f"{_count(len(unlikely), 'task')} {'is' if len(unlikely) == 1 else 'are'} "
                   f"expected to succeed less than {UNLIKELY:.1%} of the time: "
                   f"{_named(unlikely)}.")
    return out


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
