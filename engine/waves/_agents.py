"""The agent manager (Phase 21): who runs which task of a wave, and what each agent has done.

:class:`AgentManager` keeps one :class:`~buddy.engine.waves._records.AgentState`
per agent and turns a wave's :class:`~buddy.engine.waves._records.PredictedTask`
values into a :class:`~buddy.engine.waves._records.CoordinationPlan`. Tasks a
schedule pinned to an available agent stay there; the rest are placed by an
*assignment strategy*, a plain function looked up by name once, when the
manager is built:

    ``strategy(tasks, agents) -> [agent_id, ...]``

``tasks`` are the tasks to place, in the order given; ``agents`` are copies of
the AVAILABLE agents' states in the manager's agent order, each with
``current_load`` = the tasks already put on it in this wave (pinned ones) and
``success_rate`` from earlier waves (its prior before any task ended). It
returns one agent id per task. The manager checks the answer (its length, and
that every id is an available agent) and never places a task it did not check.

The four built-ins are registered under the :class:`AssignmentStrategy` values;
:func:`register_strategy` adds others. :data:`STRATEGIES` is the one table of
this module that outlives a call: the registry itself. Nothing here draws a
random number, reads a clock other than the manager's, or does I/O.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import attrs

from buddy.engine.waves._records import (
    AgentState,
    AgentStatus,
    AssignmentStrategy,
    CoordinationPlan,
    ExecutionTask,
    PredictedTask,
    TaskAssignment,
    TaskStatus,
    load_balance,
)
from buddy.rules.base._masking import shown
from buddy.rules.base.errors import InputError

__all__ = [
    "STRATEGIES",
    "AgentManager",
    "StrategyFn",
    "confidence_based",
    "get_strategy",
    "load_balanced",
    "priority_based",
    "register_strategy",
    "round_robin",
]

#: An assignment strategy: the tasks to place and the available agents in, one
#: agent id per task out.
StrategyFn = Callable[[Sequence[PredictedTask], Sequence[AgentState]], list[str]]


# -- the built-in strategies --------------------------------------------------------

def round_robin(tasks: Sequence[PredictedTask], agents: Sequence[AgentState]) -> list[str]:
    """ROUND_ROBIN: task ``i`` goes to ``agents[i % len(agents)]``.

    The cycle starts at the first agent on every call and ignores the loads
    already on the agents (pinned tasks) and their success rates. O(tasks).

    Examples
    --------
    >>> agents = [AgentState("a"), AgentState("b"), AgentState("c")]
    >>> tasks = [PredictedTask(f"t{i}", "form_fill", 0.9) for i in range(4)]
    >>> round_robin(tasks, agents)
    ['a', 'b', 'c', 'a']
    """
    ids = [a.agent_id for a in agents]
    n = len(ids)
    return [ids[i % n] for i in range(len(tasks))]


def load_balanced(tasks: Sequence[PredictedTask], agents: Sequence[AgentState]) -> list[str]:
    """LOAD_BALANCED: each task, in order, to the agent with the fewest tasks so far.

    "Fewest" counts the agent's ``current_load`` (tasks already on it) plus the
    tasks this call has put on it; ties go to the earlier agent. A heap of
    ``(load, agent index)`` makes each task O(log agents). From equal loads the
    loads end at most 1 apart.

    Examples
    --------
    >>> agents = [AgentState("a", current_load=2), AgentState("b"), AgentState("c")]
    >>> tasks = [PredictedTask(f"t{i}", "form_fill", 0.9) for i in range(5)]
    >>> load_balanced(tasks, agents)
    ['b', 'c', 'b', 'c', 'a']
    """
    heap = [(a.current_load, i) for i, a in enumerate(agents)]
    heapq.heapify(heap)
    ids = [a.agent_id for a in agents]
    out = []
    for _ in range(len(tasks)):
        load, i = heap[0]
        out.append(ids[i])
        heapq.heapreplace(heap, (load + 1, i))
    return out


def _even_totals(loads: Sequence[int], m: int, rank: Sequence[int]) -> list[int]:
    """The loads after ``m`` more tasks are spread as evenly as the current ones allow.

    Water-filling: every agent below a level ``L`` is raised to it, ``L`` as high
    as ``m`` covers; the few tasks left over go one each to agents at ``L``, in
    ``rank`` order (most reliable first). Agents already above ``L`` get none.
    O(agents x log tasks).

    >>> _even_totals([0, 0, 0, 0], 10, [3, 2, 1, 0])
    [2, 2, 3, 3]
    >>> _even_totals([5, 0, 1], 4, [0, 1, 2])
    [5, 3, 2]
    """
    lo, hi = min(loads), min(loads) + m  # raising the least-loaded agent alone costs m
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if sum(mid - x for x in loads if x < mid) <= m:
            lo = mid
        else:
            hi = mid - 1
    totals = [max(lo, x) for x in loads]
    left = m - sum(totals) + sum(loads)
    for i in rank:
        if not left:
            break
        if loads[i] <= lo:
            totals[i] += 1
            left -= 1
    return totals


def _by_reliability(agents: Sequence[AgentState]) -> list[int]:
    """Agent indices, highest success rate first, agent order among equals."""
    return sorted(range(len(agents)), key=lambda i: -agents[i].success_rate)


def priority_based(tasks: Sequence[PredictedTask], agents: Sequence[AgentState]) -> list[str]:
    """PRIORITY_BASED: the most important tasks to the most reliable agents, loads kept even.

    1. Each agent's quota: the total it may reach, the loads after all tasks
       spread as evenly as the current loads allow (all equal, or ``q`` and
       ``q + 1`` with the ``+ 1`` going to the agents of highest success rate;
       an agent already above the level gets nothing more).
    2. Tasks are taken by ``priority`` (highest first), then
       ``predicted_success_rate`` (highest first), then their order given.
    3. Each goes to the agent of highest ``success_rate`` still under its quota;
       among equal rates the one with the lower load, then the earlier agent.

    So the top agent fills with the most important tasks first, then the next;
    agents of equal record share them in turn. A heap of ``(-success_rate,
    load, agent index)`` makes each task O(log agents), after the
    O(tasks x log tasks) sort of the tasks.

    Examples
    --------
    >>> agents = [AgentState("a", prior=0.5), AgentState("b", prior=0.9)]
    >>> tasks = [PredictedTask("low", "form_fill", 0.9, priority=0),
    ...          PredictedTask("high", "form_fill", 0.6, priority=5),
    ...          PredictedTask("mid", "form_fill", 0.8, priority=1)]
    >>> priority_based(tasks, agents)
    ['a', 'b', 'b']
    """
    m = len(tasks)
    out = [""] * m
    if not m:
        return out
    loads = [a.current_load for a in agents]
    quota = _even_totals(loads, m, _by_reliability(agents))
    heap = [(-a.success_rate, loads[i], i) for i, a in enumerate(agents) if loads[i] < quota[i]]
    heapq.heapify(heap)
    ids = [a.agent_id for a in agents]
    order = sorted(range(m), key=lambda k: (-tasks[k].priority, -tasks[k].predicted_success_rate))
    for k in order:
        rate, load, i = heap[0]
        out[k] = ids[i]
        if load + 1 < quota[i]:
            heapq.heapreplace(heap, (rate, load + 1, i))
        else:
            heapq.heappop(heap)
    return out


def confidence_based(tasks: Sequence[PredictedTask], agents: Sequence[AgentState]) -> list[str]:
    """CONFIDENCE_BASED: task confidence matched to agent success rate, rank to rank.

    Tasks sorted by ``predicted_success_rate`` (highest first, order given among
    equals) are cut into contiguous blocks, one per agent, and the blocks go to
    the agents sorted by ``success_rate`` (highest first, agent order among
    equals): the most confident tasks to the most successful agents, the hardest
    to the least proven. Block sizes are the agents' quotas, as in
    :func:`priority_based`: loads end as even as the current ones allow.

    Why: the engine decides every call with its task's confidence, so the most
    confident tasks are those that may run LIVE, and they go to the agents with
    the best record; the hardest tasks are the likeliest to be held in MOCK or
    DRY_RUN, so an agent with a poor or short record works where a failure costs
    least while it earns a record. It also keeps each agent's outcomes
    comparable with the predictions it was given, for the feedback loop.
    O(tasks x log tasks) for the sort, then O(tasks).

    Examples
    --------
    >>> agents = [AgentState("new", prior=0.5), AgentState("pro", prior=0.95)]
    >>> tasks = [PredictedTask(f"t{i}", "form_fill", p) for i, p in enumerate([.3, .9, .8, .4])]
    >>> confidence_based(tasks, agents)
    ['new', 'pro', 'pro', 'new']
    """
    m = len(tasks)
    out = [""] * m
    if not m:
        return out
    loads = [a.current_load for a in agents]
    rank = _by_reliability(agents)
    quota = _even_totals(loads, m, rank)
    order = sorted(range(m), key=lambda k: -tasks[k].predicted_success_rate)
    pos = 0
    for i in rank:
        agent_id = agents[i].agent_id
        for k in order[pos:pos + max(0, quota[i] - loads[i])]:
            out[k] = agent_id
        pos += max(0, quota[i] - loads[i])
    return out


# -- the registry ---------------------------------------------------------------------

#: Every assignment strategy by name: the four built-ins under the
#: :class:`AssignmentStrategy` values, and those :func:`register_strategy` added.
STRATEGIES: dict[str, StrategyFn] = {
    AssignmentStrategy.ROUND_ROBIN.value: round_robin,
    AssignmentStrategy.LOAD_BALANCED.value: load_balanced,
    AssignmentStrategy.PRIORITY_BASED.value: priority_based,
    AssignmentStrategy.CONFIDENCE_BASED.value: confidence_based,
}


def register_strategy(name: str, fn: StrategyFn, *, replace: bool = False) -> None:
    """Register an assignment strategy under ``name`` (see the module docstring).

    Parameters
    ----------
    name:
        A non-empty string, the name managers are built with.
    fn:
        ``fn(tasks, agents) -> [agent_id, ...]``, one id per task.
    replace:
        Replace a strategy already registered under ``name`` (a built-in too).

    Raises
    ------
    InputError
        ``name`` is not a non-empty string, ``fn`` is not callable, or ``name`` is
        taken and ``replace`` is false.

    Examples
    --------
    >>> register_strategy("LOAD_BALANCED", round_robin)
    Traceback (most recent call last):
    ...
    buddy.rules.base.errors.InputError: assignment strategy 'LOAD_BALANCED' is already \
registered (pass replace=True to replace it)
    """
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"a strategy name must be a non-empty string (got {shown(name)})")
    if not callable(fn):
        raise InputError(f"strategy {name!r} must be callable (got {shown(fn)})")
    if name in STRATEGIES and not replace:
        raise InputError(f"assignment strategy {name!r} is already registered "
                         f"(pass replace=True to replace it)")
    STRATEGIES[name] = fn


def get_strategy(name: str | AssignmentStrategy) -> StrategyFn:
    """The strategy registered under ``name`` (a string or an :class:`AssignmentStrategy`).

    Raises
    ------
    InputError
        No strategy has that name; the message lists the known ones, sorted.

    Examples
    --------
    >>> get_strategy(AssignmentStrategy.ROUND_ROBIN) is get_strategy("ROUND_ROBIN")
    True
    >>> get_strategy("FASTEST")
    Traceback (most recent call last):
    ...
    buddy.rules.base.errors.InputError: unknown assignment strategy 'FASTEST' (known: \
CONFIDENCE_BASED, LOAD_BALANCED, PRIORITY_BASED, ROUND_ROBIN)
    """
    key = name.value if isinstance(name, AssignmentStrategy) else name
    fn = STRATEGIES.get(key) if isinstance(key, str) else None
    if fn is None:
        raise InputError(f"unknown assignment strategy {shown(name)} "
                         f"(known: {', '.join(sorted(STRATEGIES))})")
    return fn


# -- the manager ----------------------------------------------------------------------

def _rate(value: Any, what: str) -> float:
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not 0.0 <= value <= 1.0):
        raise InputError(f"{what} must be a number in [0, 1] (got {shown(value)})")
    return float(value)


class AgentManager:
    """The agents of a run: their states, each wave's assignment, their record.

    Parameters
    ----------
    agent_ids:
        The agents, in the order strategies see them; non-empty, unique strings.
    strategy:
        The name of a registered strategy (or an :class:`AssignmentStrategy`),
        looked up once, here; or a strategy function itself (named by its
        ``__name__``), such as an :class:`~buddy.engine.waves.AdaptiveScheduler`.
    clock:
        Seconds (the run's clock, virtual or real), read for ``assigned_at``.
    priors:
        An agent's success rate before any of its tasks has ended (1.0 for an
        agent not named); each in [0, 1].

    Attributes
    ----------
    agents:
        ``agent_id -> AgentState``, in the order given (the manager's own states).
    strategy_name:
        The strategy's registered name.

    Raises
    ------
    InputError
        No agents, an id that is empty, not a string or repeated, an unknown
        strategy, a prior out of range or for an unknown agent.

    Examples
    --------
    >>> manager = AgentManager(["a", "b"], "ROUND_ROBIN", clock=lambda: 5.0)
    >>> tasks = [PredictedTask(f"t{i}", "form_fill", 0.9) for i in range(3)]
    >>> plan = manager.assign_tasks_to_agents(tasks, wave=1)
    >>> [(a.task_id, a.agent_id) for a in plan.assignments], plan.load_balance_score
    ([('t0', 'a'), ('t1', 'b'), ('t2', 'a')], 0.5)
    >>> manager.mark_offline("b")
    >>> manager.backup_for("b"), manager.availability()
    ('a', 0.5)
    """

    def __init__(self, agent_ids: Sequence[str],
                 strategy: str | AssignmentStrategy | StrategyFn =
                 AssignmentStrategy.LOAD_BALANCED.value,
                 *, clock: Callable[[], float],
                 priors: Mapping[str, float] | None = None) -> None:
        if isinstance(agent_ids, str) or not isinstance(agent_ids, Sequence):
            raise InputError(f"agent_ids must be a sequence of strings (got {shown(agent_ids)})")
        if not agent_ids:
            raise InputError("an agent manager needs at least one agent")
        self.agents: dict[str, AgentState] = {}
        for agent_id in agent_ids:
            if not isinstance(agent_id, str) or not agent_id:
                raise InputError(f"an agent id must be a non-empty string (got {shown(agent_id)})")
            if agent_id in self.agents:
                raise InputError(f"agent id {agent_id!r} is given twice")
            self.agents[agent_id] = AgentState(agent_id)
        for agent_id, prior in (priors or {}).items():
            if agent_id not in self.agents:
                raise InputError(f"a prior is given for unknown agent {shown(agent_id)}")
            self.agents[agent_id].prior = _rate(prior, f"the prior of agent {agent_id!r}")
        if not callable(clock):
            raise InputError(f"clock must be callable (got {shown(clock)})")
        if callable(strategy) and not isinstance(strategy, str | AssignmentStrategy):
            self._strategy: StrategyFn = strategy  # e.g. an AdaptiveScheduler
            self.strategy_name: str = str(getattr(strategy, "__name__", "custom"))
        else:
            self._strategy = get_strategy(strategy)
            self.strategy_name = (strategy.value if isinstance(strategy, AssignmentStrategy)
                                  else strategy)
        self._clock = clock
        self._order = {agent_id: i for i, agent_id in enumerate(self.agents)}

    # -- helpers -------------------------------------------------------------------------
    def _now(self) -> float:
        now = self._clock()
        if isinstance(now, bool) or not isinstance(now, int | float) or not math.isfinite(now):
            raise InputError(f"the clock must return a finite number of seconds "
                             f"(got {shown(now)})")
        return float(now)

    def _agent(self, agent_id: str) -> AgentState:
        state = self.agents.get(agent_id) if isinstance(agent_id, str) else None
        if state is None:
            raise InputError(f"unknown agent {shown(agent_id)}")
        return state

    # -- assignment ----------------------------------------------------------------------
    def assign_tasks_to_agents(self, tasks: Sequence[PredictedTask], wave: int, *,
                               exclude: Collection[str] = ()) -> CoordinationPlan:
        """Plan one wave: put every task on an available agent.

        Every agent's ``current_load`` restarts at 0. A task whose ``agent_id``
        names a known, available agent stays there (counted in its load first);
        every other task (none pinned, or pinned to an OFFLINE or unknown agent)
        is placed by the strategy over the available agents. Each agent's
        ``current_load`` becomes its tasks in this plan, and its
        ``assigned_tasks`` grows by as many. Statuses do not change
        (:meth:`begin_wave` does that).

        Parameters
        ----------
        tasks:
            The wave's tasks; task ids unique.
        wave:
            The wave number (a whole number >= 1), copied into every assignment.
        exclude:
            Agents the strategy places no task on this wave (a task pinned to one
            stays pinned: the safety gates decide whether it runs there).

        Returns
        -------
        CoordinationPlan
            The assignments in the order of ``tasks``, each stamped with one
            clock reading; ``num_agents`` the available agents;
            ``load_balance_score`` = min load / max load over the available
            agents, those given no task included.

        Raises
        ------
        InputError
            No agent is available, ``wave`` is not a whole number >= 1, two tasks
            share an id, or the strategy answered with the wrong number of ids
            or an id that is not an available agent. No agent's state changes
            then.

        Examples
        --------
        >>> manager = AgentManager(["a", "b", "c"], clock=lambda: 0.0)
        >>> tasks = [PredictedTask("t0", "form_fill", 0.9, agent_id="c"),
        ...          PredictedTask("t1", "form_fill", 0.9),
        ...          PredictedTask("t2", "form_fill", 0.9)]
        >>> plan = manager.assign_tasks_to_agents(tasks, wave=1)
        >>> [a.agent_id for a in plan.assignments], plan.load_balance_score
        (['c', 'a', 'b'], 1.0)
        """
        if isinstance(wave, bool) or not isinstance(wave, int) or wave < 1:
            raise InputError(f"wave must be a whole number >= 1 (got {shown(wave)})")
        if len({t.task_id for t in tasks}) != len(tasks):
            counts = Counter(t.task_id for t in tasks)
            twice = sorted(task_id for task_id, n in counts.items() if n > 1)
            raise InputError(f"task ids must be unique in a wave: {', '.join(twice[:5])}")
        available = [s for s in self.agents.values() if s.available]
        if not available:
            raise InputError(f"no agent available for wave {wave}")
        placed = [""] * len(tasks)  # every slot is filled below, or we raise
        load = {s.agent_id: 0 for s in available}
        free: list[int] = []
        for k, task in enumerate(tasks):
            pin = task.agent_id
            if pin is not None and pin in load:
                placed[k] = pin
                load[pin] += 1
            else:
                free.append(k)
        if free:
            free_tasks = [tasks[k] for k in free]
            views = [attrs.evolve(s, current_load=load[s.agent_id]) for s in available
                     if s.agent_id not in exclude] or \
                [attrs.evolve(s, current_load=load[s.agent_id]) for s in available]
            open_to = {v.agent_id for v in views}
            chosen = self._strategy(free_tasks, views)
            if not isinstance(chosen, list | tuple) or len(chosen) != len(free):
                if isinstance(chosen, list | tuple):
                    got = f"{len(chosen)} agent ids"
                else:
                    got = shown(chosen)
                raise InputError(f"strategy {self.strategy_name!r} returned {got} "
                                 f"for {len(free)} tasks (one agent id per task expected)")
            for k, agent_id in zip(free, chosen, strict=True):
                if not isinstance(agent_id, str) or agent_id not in open_to:
                    raise InputError(f"strategy {self.strategy_name!r} put task "
                                     f"{tasks[k].task_id!r} on {shown(agent_id)}, which is "
                                     f"not an available agent")
                placed[k] = agent_id
            for agent_id in chosen:
                load[agent_id] += 1
        now = self._now()
        name = self.strategy_name
        assignments = tuple(
            TaskAssignment(t.task_id, agent_id, t.predicted_success_rate, now, wave, name,
                           t.priority)
            for t, agent_id in zip(tasks, placed, strict=True))
        for state in self.agents.values():
            state.current_load = 0
        for agent_id, n in load.items():
            state = self.agents[agent_id]
            state.current_load = n
            state.assigned_tasks += n
        return CoordinationPlan(wave=wave, num_agents=len(available), num_tasks=len(tasks),
                                strategy=name, assignments=assignments,
                                load_balance_score=load_balance(load))

    def generate_coordination_plan(self, tasks: Sequence[PredictedTask], wave: int,
                                   ) -> CoordinationPlan:
        """The Phase 21 name of :meth:`assign_tasks_to_agents` (the same plan)."""
        return self.assign_tasks_to_agents(tasks, wave)

    # -- status --------------------------------------------------------------------------
    def begin_wave(self) -> None:
        """Every available agent becomes BUSY (OFFLINE ones stay OFFLINE)."""
        for state in self.agents.values():
            if state.available:
                state.status = AgentStatus.BUSY

    def end_wave(self) -> None:
        """Every BUSY agent becomes IDLE (OFFLINE ones stay OFFLINE)."""
        for state in self.agents.values():
            if state.status is AgentStatus.BUSY:
                state.status = AgentStatus.IDLE

    def mark_offline(self, agent_id: str) -> None:
        """Take ``agent_id`` out: it gets no task until its status is set back.

        Raises :class:`~buddy.rules.base.errors.InputError` for an unknown agent.
        """
        self._agent(agent_id).status = AgentStatus.OFFLINE

    def update_agent_state(self, agent_id: str, status: AgentStatus | None = None,
                           ) -> AgentState:
        """Set ``agent_id``'s status (when given) and return its state (the manager's own).

        ``update_agent_state(a, AgentStatus.IDLE)`` brings an OFFLINE agent back.
        Raises :class:`~buddy.rules.base.errors.InputError` for an unknown agent or
        a status that is not an :class:`AgentStatus`.
        """
        state = self._agent(agent_id)
        if status is not None:
            if not isinstance(status, AgentStatus):
                raise InputError(f"status must be an AgentStatus (got {shown(status)})")
            state.status = status
        return state

    # -- results -------------------------------------------------------------------------
    def record_result(self, task: ExecutionTask) -> None:
        """Count a finished task on the agent that ran its last attempt (``task.agent_id``).

        COMPLETED adds to ``completed_tasks``, FAILED to ``failed_tasks``; its
        latency adds to ``total_latency_s``. The agent's ``success_rate`` is then
        completed / finished (its prior only until a first task ends).

        Raises :class:`~buddy.rules.base.errors.InputError` for an unknown agent,
        a status other than COMPLETED or FAILED, or a latency that is negative or
        not finite (nothing is counted then).
        """
        state = self._agent(task.agent_id)
        latency = task.latency
        if not math.isfinite(latency) or latency < 0:
            raise InputError(f"task {task.task_id!r} has a latency of {shown(latency)} s "
                             f"(end_time before start_time, or not finite)")
        if task.status is TaskStatus.COMPLETED:
            state.completed_tasks += 1
        elif task.status is TaskStatus.FAILED:
            state.failed_tasks += 1
        else:
            raise InputError(f"task {task.task_id!r} has not finished "
                             f"(status {shown(task.status)}, COMPLETED or FAILED expected)")
        state.total_latency_s += latency

    # -- failover ------------------------------------------------------------------------
    def backup_for(self, agent_id: str, exclude: Collection[str] = ()) -> str | None:
        """The agent to take ``agent_id``'s tasks: available, not ``agent_id``, not excluded.

        The one with the lowest ``current_load``; among equals the higher
        ``success_rate``, then the earlier agent. None when there is none.
        Raises :class:`~buddy.rules.base.errors.InputError` for an unknown agent,
        or ``exclude`` given as one string.
        """
        self._agent(agent_id)
        if isinstance(exclude, str):
            raise InputError(f"exclude must be a collection of agent ids, not the string "
                             f"{exclude!r}")
        excluded = set(exclude)
        best: tuple[int, float, int] | None = None
        found = None
        for i, state in enumerate(self.agents.values()):
            if not state.available or state.agent_id == agent_id or state.agent_id in excluded:
                continue
            key = (state.current_load, -state.success_rate, i)
            if best is None or key < best:
                best, found = key, state.agent_id
        return found

    def reassign(self, assignment: TaskAssignment, to: str) -> TaskAssignment:
        """Move an assignment of the current plan to agent ``to``.

        Returns the assignment with ``agent_id=to``, ``reassigned_from`` = the
        agent it leaves and ``assigned_at`` a fresh clock reading. One unit of
        ``current_load`` and of ``assigned_tasks`` moves from that agent to
        ``to`` (so each agent's ``assigned_tasks`` counts the tasks it holds).

        Raises
        ------
        InputError
            ``to`` is unknown, not available or the agent the task is on;
            the agent it is on is unknown or holds no task in this plan.
        """
        old = self._agent(assignment.agent_id)
        new = self._agent(to)
        if new is old:
            raise InputError(f"task {assignment.task_id!r} is already on agent {to!r}")
        if not new.available:
            raise InputError(f"cannot reassign task {assignment.task_id!r} to agent {to!r}: "
                             f"it is OFFLINE")
        if old.current_load < 1:
            raise InputError(f"agent {old.agent_id!r} holds no task in the current plan "
                             f"(task {assignment.task_id!r} is of an earlier one)")
        moved = attrs.evolve(assignment, agent_id=to, reassigned_from=old.agent_id,
                             assigned_at=self._now())
        old.current_load -= 1
        old.assigned_tasks -= 1
        new.current_load += 1
        new.assigned_tasks += 1
        return moved

    # -- reports -------------------------------------------------------------------------
    def get_agent_availability(self) -> dict[str, bool]:
        """``agent_id -> available`` (not OFFLINE), in agent order."""
        return {agent_id: s.available for agent_id, s in self.agents.items()}

    def evaluate_agent_performance(self) -> dict[str, dict[str, Any]]:
        """``agent_id -> AgentState.to_json()`` (status, loads, counts, success rate,
        mean latency), in agent order."""
        return {agent_id: s.to_json() for agent_id, s in self.agents.items()}

    def availability(self) -> float:
        """Available agents / all agents (the Phase 21 availability metric)."""
        return sum(s.available for s in self.agents.values()) / len(self.agents)
