"""The adaptive scheduler (Phase 19): each wave planned by the optimizer, run, and held to its plan.

For a wave, :class:`AdaptiveScheduler`

1. **assigns** the tasks with the optimizer (:func:`~buddy.engine.waves.optimize`),
   as the :class:`~buddy.engine.waves.AgentManager`'s strategy, so pins, benched
   agents and loads are handled as for any strategy, from what the earlier
   waves taught the manager (each agent's success rate and mean latency);
2. **prioritises** each agent's queue: ``priority`` highest first, then the
   success the plan expects of the task on that agent, highest first, then the
   tasks' order (:meth:`prioritize_tasks`);
3. **adjusts for load**: while an agent's expected busy time is over
   ``load_threshold`` x the mean busy time of the available agents, its last
   task (never one pinned to it by its ``agent_id``) moves to the agent (not
   one benched this wave) that would then finish earliest, if that shortens
   the wave (:meth:`adjust_for_agent_load`; each move is a reassignment the
   audit trail records, reason ``load``);
4. **times** the plan: each agent runs its queue one task after another, each
   taking the agent's expected duration (its mean latency so far, 1 s before
   it has one, divided by its speed); at most ``max_parallel`` agents work at
   once, the next starting when one finishes, as the executor's backends do.
   ``scheduled_start_time`` and ``scheduled_end_time`` are seconds since the
   wave began;

and, when the wave has run (the executor retries failures with the run's
retry strategy, and moves an OFFLINE agent's tasks to a backup),
:meth:`observe` fills each :class:`ScheduledTask`'s actual times and status
and compares the plan with what happened (:class:`ScheduleComparison`).

**Schedule adherence** (in [0, 1]) is the mean over the wave's tasks of::

    on_agent x max(0, 1 - |actual_end - scheduled_end| / scheduled_end)

``on_agent`` is 1 when the task's last attempt ran on the agent the plan put it
on, else 0; times are seconds since the wave began. A task that ends on
time scores 1; one that ends 10 % of its scheduled end late or early, 0.9.

**The objective as it turned out** (``objective_score``, per wave, the number
whose trend says whether planning improved): for ``maximize_success`` the
share of tasks that succeeded at their first attempt (retries hide what the
plan chose: a weak agent's task that succeeds on its third try still cost two
failures); for ``maximize_confidence`` the same, each task weighted by its
decision confidence; for ``maximize_throughput`` the tasks COMPLETED per
second of the wave (a failed task is no work done); for ``balanced`` the
table's weighted sum of the first two and of ``min(1, completed tasks per
second / planned throughput)``.

Nothing here reads a clock or draws a random number except through what it is
given; the same inputs give the same plan.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Collection, Mapping, Sequence

import attrs

from buddy.engine.waves._agents import AgentManager
from buddy.engine.waves._executor import WaveRun
from buddy.engine.waves._opt_records import ScheduleComparison, ScheduledTask
from buddy.engine.waves._optimizer import (
    DEFAULT_DURATION_S,
    MAX_DURATION_S,
    MIN_DURATION_S,
    Schedule,
    _check_objective,
    optimize,
)
from buddy.engine.waves._records import (
    AgentState,
    CoordinationPlan,
    PredictedTask,
    TaskAssignment,
    TaskStatus,
)
from buddy.rules.base._masking import shown
from buddy.rules.base.errors import InputError
from buddy.rules.tables._optimizer import OptimizerTable

__all__ = ["AdaptiveScheduler", "ScheduledWave", "schedule_adherence"]

#: How many attempts' worth the pooled rate counts for in an agent's estimate.
PRIOR_WEIGHT = 5.0
#: ``load_threshold``'s default: an agent expected to be busy 2x the mean sheds tasks.
LOAD_THRESHOLD = 2.0


@attrs.frozen
class ScheduledWave:
    """A wave's plan as the scheduler made it.

    ``plan``: the assignments the executor runs, each agent's in queue order.
    ``tasks``: task id -> its :class:`ScheduledTask`. ``schedule``: the
    optimizer's answer (None when every task was pinned). ``moves``: the load
    adjustments, (task id, from agent, to agent). ``durations``: agent id -> the
    expected seconds per task the times were computed with.
    """

    plan: CoordinationPlan
    tasks: Mapping[str, ScheduledTask]
    schedule: Schedule | None
    moves: tuple[tuple[str, str, str], ...]
    durations: Mapping[str, float]

    @property
    def expected_success(self) -> float:
        """The mean success the plan expects over its tasks (0.0 for none)."""
        n = len(self.tasks)
        return math.fsum(t.confidence for t in self.tasks.values()) / n if n else 0.0

    @property
    def makespan(self) -> float:
        """Seconds from the wave's start to the last scheduled end (0.0 for no task)."""
        return max((t.scheduled_end_time for t in self.tasks.values()), default=0.0)


def schedule_adherence(tasks: Sequence[ScheduledTask]) -> float:
    """The wave's schedule adherence (module docstring); 1.0 for no task.

    >>> on_time = ScheduledTask("a", "x", 1, 0.0, 10.0, 0, 0.9, actual_start_time=0.0,
    ...                         actual_end_time=10.0, status="completed")
    >>> late = attrs.evolve(on_time, task_id="b", actual_end_time=11.0)
    >>> moved = attrs.evolve(on_time, task_id="c", reassigned_from="x", agent_id="y")
    >>> schedule_adherence([on_time, late, moved])
    0.6333333333333333
    """
    if not tasks:
        return 1.0
    total = 0.0
    for t in tasks:
        if t.reassigned_from is not None or t.actual_end_time is None:
            continue
        end = t.scheduled_end_time
        if end > 0:
            total += max(0.0, 1.0 - abs(t.actual_end_time - end) / end)
        else:
            total += 1.0 if t.actual_end_time == end else 0.0
    return total / len(tasks)


def _spread(chosen: Sequence[str], agents: Sequence[AgentState],
            est: Mapping[str, tuple[float, float]]) -> list[str]:
    """``chosen`` with each group of agents of equal estimates given their tasks evenly:
    task by task in order, to the member with the lowest load (its ``current_load``
    plus what it got here), the earlier agent among equals. Scores are equal within
    a group, so the objective and every capacity hold."""
    groups: dict[tuple[float, float], list[str]] = {}
    for a in agents:
        groups.setdefault(est[a.agent_id], []).append(a.agent_id)
    group_of = {a: tuple(g) for g in groups.values() for a in g}
    load = {a.agent_id: max(0, a.current_load) for a in agents}
    rank = {a.agent_id: i for i, a in enumerate(agents)}
    out = []
    for agent in chosen:
        members = group_of[agent]
        pick = min(members, key=lambda m: (load[m], rank[m])) if len(members) > 1 else agent
        load[pick] += 1
        out.append(pick)
    return out


class AdaptiveScheduler:
    """Plans each wave with the optimizer and compares the plan with what happened.

    Parameters
    ----------
    objective:
        One of :data:`~buddy.engine.waves.OBJECTIVES`.
    table:
        The optimizer table (balanced weights, capacity); :meth:`set_table`
        swaps it between waves (the learned heuristic weights).
    speeds:
        Agent id -> speed factor (> 0), as :func:`optimize` reads it.
    load_threshold:
        An agent whose expected busy time is over this times the mean sheds
        tasks (a number >= 1; ``math.inf`` never).
    max_parallel:
        How many agents work at once (the executor backend's), for the times.
    max_retries:
        The retries a task gets (the executor's), for the success the plan
        expects: a task whose attempts each succeed with p succeeds with
        ``1 - (1 - p) ** (1 + max_retries)``. The loop sets it from its executor.

    Raises
    ------
    InputError
        An unknown objective, a load threshold below 1 or not a number, a
        ``max_parallel`` that is not a whole number >= 1.
    """

    def __init__(self, objective: str, table: OptimizerTable, *,
                 speeds: Mapping[str, float] | None = None,
                 load_threshold: float = LOAD_THRESHOLD, max_parallel: int = 4,
                 max_retries: int = 0) -> None:
        _check_objective(objective)
        if isinstance(load_threshold, bool) or not isinstance(load_threshold, int | float) \
                or math.isnan(load_threshold) or load_threshold < 1:
            raise InputError(f"load_threshold must be a number >= 1 (got {shown(load_threshold)})")
        if type(max_retries) is not int or max_retries < 0:
            raise InputError(f"max_retries must be a whole number >= 0 (got {shown(max_retries)})")
        if type(max_parallel) is not int or max_parallel < 1:
            raise InputError(f"max_parallel must be a whole number >= 1 "
                             f"(got {shown(max_parallel)})")
        self.objective = objective
        self.table = table
        self.speeds = dict(speeds or {})
        self.load_threshold = float(load_threshold)
        self.max_parallel = max_parallel
        self.max_retries = max_retries
        self._last: Schedule | None = None
        #: agent id -> (attempts, successes) over the waves seen
        self._seen: dict[str, tuple[int, int]] = {}
        #: agent id -> (tasks it ran whole, their seconds from start to end)
        self._timed: dict[str, tuple[int, float]] = {}
        self.__name__ = objective  # the strategy's name in plans and files

    def set_table(self, table: OptimizerTable) -> None:
        """Plan the next waves with ``table`` (e.g. the learned balanced weights)."""
        self.table = table

    # -- what the waves taught ---------------------------------------------------------
    def estimates(self, agents: Sequence[AgentState]) -> dict[str, tuple[float, float]]:
        """Agent id -> (success per attempt, seconds per task) the optimizer plans with.

        Success: ``(successes + PRIOR_WEIGHT * pooled) / (attempts + PRIOR_WEIGHT)``,
        a Beta-Bernoulli posterior mean shrunk toward the pooled rate of every
        agent's attempts (1.0 before any), so an agent seen twice is not taken
        for perfect or hopeless. Seconds: the mean time from a task's start to its
        end (its retries and their backoff included) over the tasks the agent ran
        from start to end, the pooled mean for an agent not seen yet (1 s before
        any task).
        """
        seen, timed = self._seen, self._timed
        attempts = sum(n for n, _ in seen.values())
        pooled = sum(ok for _, ok in seen.values()) / attempts if attempts else 1.0
        tasks = sum(n for n, _ in timed.values())
        pooled_s = sum(t for _, t in timed.values()) / tasks if tasks else DEFAULT_DURATION_S
        out = {}
        for a in agents:
            n, ok = seen.get(a.agent_id, (0, 0))
            k, secs = timed.get(a.agent_id, (0, 0.0))
            out[a.agent_id] = ((ok + PRIOR_WEIGHT * pooled) / (n + PRIOR_WEIGHT),
                               secs / k if k and secs > 0 else pooled_s)
        return out

    def learn(self, run: WaveRun) -> None:
        """Count a wave: each agent's attempts (``run.attempts``; a success when it
        succeeded within the timeout) and the time each task took from start to end,
        for the agent that ran it whole (a task moved from another agent, or refused
        by a gate before it ran, tells nothing of an agent's pace)."""
        for agent, (n, ok, _) in run.attempts.items():
            m, k = self._seen.get(agent, (0, 0))
            self._seen[agent] = (m + n, k + ok)
        for r in run.results:
            if r.reassigned_from is None and r.mode is not None:
                k, secs = self._timed.get(r.agent_id, (0, 0.0))
                self._timed[r.agent_id] = (k + 1, secs + max(0.0, r.end_time - r.start_time))

    # -- the manager's strategy --------------------------------------------------------
    def __call__(self, tasks: Sequence[PredictedTask], agents: Sequence[AgentState],
                 ) -> list[str]:
        """The assignment strategy the manager calls: the optimizer's agent per task,
        planned with :meth:`estimates`; among agents the optimizer cannot tell apart
        (the same estimates), their tasks are spread evenly (wave 1: all of them)."""
        est = self.estimates(agents)
        views = [AgentState(a.agent_id, a.status, a.current_load, prior=est[a.agent_id][0])
                 for a in agents]
        speeds = {a: self.speeds.get(a, 1.0) / max(secs, MIN_DURATION_S)
                  for a, (_, secs) in est.items()}
        schedule = optimize(tasks, views, self.objective, table=self.table, speeds=speeds)
        chosen = _spread(schedule.agent_ids(), agents, est)
        schedule = attrs.evolve(schedule, assignments=dict(
            zip((t.task_id for t in tasks), chosen, strict=True)))
        self._last = schedule
        return chosen

    # -- a wave ------------------------------------------------------------------------
    def plan_wave(self, manager: AgentManager, tasks: Sequence[PredictedTask], wave: int, *,
                  exclude: Sequence[str] = ()) -> ScheduledWave:
        """Assign, prioritise, adjust for load and time one wave (module docstring).

        ``manager`` must have been built with this scheduler as its strategy.
        Raises :class:`InputError` as :meth:`AgentManager.assign_tasks_to_agents`
        does, and when ``manager`` plans with another strategy.
        """
        if manager._strategy is not self:
            raise InputError("the manager must be built with this scheduler as its "
                             "strategy (AgentManager(agents, scheduler, ...))")
        self._last = None
        plan = manager.assign_tasks_to_agents(tasks, wave, exclude=exclude)
        schedule = self._last
        by_id = {t.task_id: t for t in tasks}
        success: dict[str, float] = dict(schedule.task_success) if schedule is not None else {}
        for t in tasks:  # a pinned task: the prediction, as the optimizer did not score it
            success.setdefault(t.task_id, t.predicted_success_rate)
        states = [manager.agents[a] for a in manager.agents if manager.agents[a].available]
        durations = {a: min(MAX_DURATION_S, max(MIN_DURATION_S, secs / self.speeds.get(a, 1.0)))
                     for a, (_, secs) in self.estimates(states).items()}
        queues = self.prioritize_tasks(plan, by_id, success)
        pinned = {t.task_id for t in tasks if t.agent_id is not None
                  and t.agent_id in durations}  # stays where it was pinned
        queues, moves = self.adjust_for_agent_load(queues, durations, fixed=pinned,
                                                   closed=exclude)
        assignments: list[TaskAssignment] = []
        for agent, queue in queues.items():
            for a in queue:
                if a.agent_id != agent:
                    a = manager.reassign(a, agent)
                assignments.append(a)
        ordered = attrs.evolve(plan, assignments=tuple(assignments))
        return ScheduledWave(ordered, self._times(ordered, by_id, success, durations),
                             schedule, tuple(moves), durations)

    @staticmethod
    def prioritize_tasks(plan: CoordinationPlan, tasks: Mapping[str, PredictedTask],
                         success: Mapping[str, float]) -> dict[str, list[TaskAssignment]]:
        """Each agent's queue: ``priority`` highest first, then expected success highest
        first, then plan order; agents in the order they first appear in ``plan``."""
        queues: dict[str, list[tuple[tuple[int, float, int], TaskAssignment]]] = {}
        for i, a in enumerate(plan.assignments):
            key = (-tasks[a.task_id].priority, -success[a.task_id], i)
            queues.setdefault(a.agent_id, []).append((key, a))
        return {agent: [a for _, a in sorted(q, key=lambda x: x[0])]
                for agent, q in queues.items()}

    def adjust_for_agent_load(self, queues: dict[str, list[TaskAssignment]],
                              durations: Mapping[str, float], *,
                              fixed: Collection[str] = (),
                              closed: Collection[str] = (),
                              ) -> tuple[dict[str, list[TaskAssignment]],
                                         list[tuple[str, str, str]]]:
        """Move tasks off agents past the load threshold (module docstring, step 3).

        Returns the new queues (an agent's moved-in tasks at its end) and the moves
        (task id, from, to), in the order made. An agent past the threshold gives
        its last task that is not ``fixed`` (a task pinned to it) to the available
        agent (one of ``durations``, not ``closed``: benched this wave) that would
        end earliest with it, only when that ends before the giver does now.

        >>> s = AdaptiveScheduler("maximize_success", OptimizerTable.default(),
        ...                       load_threshold=1.2)
        >>> q = {"a": [TaskAssignment(f"t{i}", "a", 0.9, 0.0, 1, "x") for i in range(4)]}
        >>> q, moves = s.adjust_for_agent_load(q, {"a": 1.0, "b": 1.0})
        >>> [(a, len(ts)) for a, ts in q.items()], moves
        ([('a', 2), ('b', 2)], [('t3', 'a', 'b'), ('t2', 'a', 'b')])
        >>> s.adjust_for_agent_load(q, {"a": 1.0, "b": 1.0}, fixed={"t0", "t1", "t2", "t3"})[1]
        []
        """
        queues = {a: list(q) for a, q in queues.items()}
        moves: list[tuple[str, str, str]] = []
        if not math.isfinite(self.load_threshold):
            return queues, moves
        fixed = set(fixed)
        open_to = [a for a in durations if a not in closed]
        rank = {a: i for i, a in enumerate(durations)}
        busy = {a: len(q) * durations.get(a, DEFAULT_DURATION_S) for a, q in queues.items()}
        everyone = {*durations, *busy}
        for _ in range(sum(len(q) for q in queues.values())):
            mean = math.fsum(busy.get(a, 0.0) for a in everyone) / len(everyone)
            givers = [a for a in busy if any(t.task_id not in fixed for t in queues.get(a, ()))]
            if not givers or not open_to:
                break
            giver = max(givers, key=lambda a: (busy[a], -rank.get(a, len(rank))))
            if busy[giver] <= self.load_threshold * mean:
                break
            taker = min(open_to, key=lambda a: (busy.get(a, 0.0) + durations[a], rank[a]))
            if taker == giver or busy.get(taker, 0.0) + durations[taker] >= busy[giver]:
                break
            queue = queues[giver]
            at = max(i for i, t in enumerate(queue) if t.task_id not in fixed)
            task = queue.pop(at)
            queues.setdefault(taker, []).append(task)
            busy[giver] -= durations.get(giver, DEFAULT_DURATION_S)
            busy[taker] = busy.get(taker, 0.0) + durations[taker]
            moves.append((task.task_id, giver, taker))
        return {a: q for a, q in queues.items() if q}, moves

    def _times(self, plan: CoordinationPlan, tasks: Mapping[str, PredictedTask],
               success: Mapping[str, float], durations: Mapping[str, float],
               ) -> dict[str, ScheduledTask]:
        """Scheduled start and end of every task: agents in plan order take one of
        ``max_parallel`` slots, each running its queue one task after another."""
        slots = [0.0] * min(self.max_parallel, max(1, len(plan.by_agent())))
        heapq.heapify(slots)
        out: dict[str, ScheduledTask] = {}
        for agent, queue in plan.by_agent().items():
            t = heapq.heappop(slots)
            step = durations.get(agent, DEFAULT_DURATION_S)
            for position, a in enumerate(queue):
                task = tasks[a.task_id]
                out[a.task_id] = ScheduledTask(
                    a.task_id, agent, plan.wave, t, t + step, task.priority,
                    success[a.task_id], task.tool, position,
                    reassigned_from=a.reassigned_from)
                t += step
            heapq.heappush(slots, t)
        return out

    # -- after the wave ----------------------------------------------------------------
    def observe(self, scheduled: ScheduledWave, run: WaveRun, tasks: Sequence[PredictedTask],
                *, available_at_start: int, available_at_end: int,
                ) -> tuple[list[ScheduledTask], ScheduleComparison]:
        """Each scheduled task with what became of it, and the wave's comparison.

        Actual times are seconds since ``run.start``: the start of the task's
        first attempt, the end of its last; ``status`` ``completed``,
        ``failed`` or ``cancelled`` (failed with no attempt run);
        ``reassigned_from`` the planned agent when its last attempt ran on
        another. See :class:`ScheduleComparison` for the comparison's fields.
        """
        by_id = {t.task_id: t for t in tasks}
        done = []
        for r in run.results:
            planned = scheduled.tasks[r.task_id]
            if r.success:
                status = "completed"
            elif r.status is TaskStatus.FAILED and r.mode is None:
                status = "cancelled"
            else:
                status = "failed"
            done.append(attrs.evolve(
                planned, agent_id=r.agent_id, actual_start_time=r.start_time - run.start,
                actual_end_time=r.end_time - run.start, status=status, retries=r.retry_count,
                reassigned_from=planned.agent_id if r.agent_id != planned.agent_id
                else planned.reassigned_from))
        return done, self.compare(scheduled, done, run, by_id,
                                  available_at_start=available_at_start,
                                  available_at_end=available_at_end)

    def compare(self, scheduled: ScheduledWave, done: Sequence[ScheduledTask], run: WaveRun,
                tasks: Mapping[str, PredictedTask], *, available_at_start: int,
                available_at_end: int) -> ScheduleComparison:
        """The wave's plan against what happened (see :class:`ScheduleComparison`)."""
        n = len(done)
        if not n:
            return ScheduleComparison(run.wave, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0,
                                      strategy=self.objective)
        tries = 1 + self.max_retries
        planned_sr = math.fsum(1.0 - (1.0 - scheduled.tasks[t.task_id].confidence) ** tries
                               for t in done) / n
        actual = {t.task_id: 1.0 if t.status == "completed" else 0.0 for t in done}
        actual_sr = math.fsum(actual.values()) / n
        first = {t.task_id: 1.0 if t.status == "completed" and t.retries == 0 else 0.0
                 for t in done}
        first_sr = math.fsum(first.values()) / n
        weight = {k: min(1.0, max(0.0, tasks[k].decision_confidence)) for k in first}
        total_weight = math.fsum(weight.values())
        confident = math.fsum(weight[k] * first[k] for k in first) / total_weight \
            if total_weight > 0 else 0.0
        predicted = {t.task_id: tasks[t.task_id].predicted_success_rate for t in done}
        makespan = scheduled.makespan
        duration = run.end - run.start
        busy: dict[str, float] = {}
        for r in run.results:
            busy[r.agent_id] = busy.get(r.agent_id, 0.0) + max(0.0, r.end_time - r.start_time)
        planned_counts: dict[str, int] = {}
        for t in scheduled.tasks.values():
            planned_counts[t.agent_id] = planned_counts.get(t.agent_id, 0) + 1
        actual_counts: dict[str, list[float]] = {}
        for t in done:
            actual_counts.setdefault(t.agent_id, []).append(actual[t.task_id])
        agents: dict[str, dict[str, float | int | None]] = {}
        for agent in dict.fromkeys([*planned_counts, *actual_counts]):
            mine = [t for t in scheduled.tasks.values() if t.agent_id == agent]
            ran = actual_counts.get(agent, [])
            agents[agent] = {
                "planned_tasks": len(mine), "actual_tasks": len(ran),
                "expected_success": round(math.fsum(t.confidence for t in mine) / len(mine), 6)
                if mine else None,
                "actual_success": round(math.fsum(ran) / len(ran), 6) if ran else None}
        mean_load = n / len(planned_counts)
        # throughput is work done: tasks expected to complete / completed, per second
        planned_tp = n * planned_sr / makespan if makespan > 0 else 0.0
        actual_tp = done_tp = n * actual_sr / duration if duration > 0 else 0.0
        if self.objective == "maximize_success":
            score = first_sr
        elif self.objective == "maximize_confidence":
            score = confident
        elif self.objective == "maximize_throughput":
            score = done_tp
        else:
            w = self.table.weights
            score = (w["success"] * first_sr + w["confidence"] * confident
                     + w["throughput"] * (min(1.0, done_tp / planned_tp) if planned_tp else 0.0))
        return ScheduleComparison(
            wave=run.wave, planned_success_rate=planned_sr, actual_success_rate=actual_sr,
            planned_throughput=planned_tp, actual_throughput=actual_tp,
            planned_confidence_delta=math.fsum(
                scheduled.tasks[k].confidence - predicted[k] for k in actual) / n,
            actual_confidence_delta=math.fsum(actual[k] - predicted[k] for k in actual) / n,
            accuracy_score=max(0.0, 1.0 - abs(planned_sr - actual_sr)),
            strategy=self.objective, tasks=n, schedule_adherence=schedule_adherence(done),
            agent_utilization=(math.fsum(min(1.0, b / duration) for b in busy.values())
                               / len(busy)) if duration > 0 and busy else 0.0,
            availability=available_at_end / available_at_start if available_at_start else 0.0,
            retry_rate=sum(t.retries for t in done) / n,
            max_load_ratio=max(planned_counts.values()) / mean_load,
            planned_objective=(scheduled.schedule.objective_value / len(scheduled.schedule
                                                                        .assignments))
            if scheduled.schedule is not None and scheduled.schedule.assignments else 0.0,
            agents=agents, first_attempt_success_rate=first_sr, objective_score=score)
