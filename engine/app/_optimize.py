"""``buddy optimize --from DIR``: the optimizer alone, planning tasks from an earlier run's history.

:func:`plan_from` reads the history in ``DIR`` (:func:`~buddy.engine.waves.load_coordination`:
Phase 18's four files or a ``buddy run waves`` tree), the tasks to plan
(``--tasks FILE``, else ``DIR/predicted_tasks.jsonl``; each task's tool must be
one of the catalogue's, ``--catalogue FILE`` or buddy's standard one, as in a
wave run), puts each wave's tasks on the history's agents
(:func:`~buddy.engine.waves.agent_states`) with
:func:`~buddy.engine.waves.optimize` for the objective chosen, and writes under
the output directory (default ``DIR/phase19_plan``)::

    wave_N/<agent>/scheduled_tasks.jsonl   the agent's tasks in plan order (ScheduledTask)
    optimization_summary.json              002's fields, written last

Nothing runs: every ``actual_*`` field is null and every status ``scheduled``.
A task's scheduled start and end are seconds since its wave began, each agent
running its tasks one after another in plan order, each taking the agent's
mean time per task (1 s for an agent with none). ``confidence`` is the plan's
p(t, a), the success it expects of the task on that agent.

The agents are planned with their history's success rate **exactly**: each is
``AgentState(agent_id, prior=rate)`` with no finished task, its seconds per
task passed as a speed (``optimize(..., speeds={agent: 1 s / seconds})``), as
the wave run's :class:`~buddy.engine.waves.AdaptiveScheduler` does; the
whole-task counts of :func:`~buddy.engine.waves.agent_states` would read 0.95
over 3 tasks as 1.0.

**Pinned tasks** (``agent_id`` set), as ``buddy run waves`` treats them: a task
pinned to an agent of the history stays on it and counts against its capacity
(the agent's ``current_load`` when the other tasks are optimized); its
``confidence`` is p(t, a) by the optimizer's success formula
(:func:`~buddy.engine.waves.pair_scores` for ``maximize_success``, whatever the
objective), and its objective score is added to the wave's ``objective_value``.
A task pinned to an agent the history does not name is a skipped line
(``--strict``: refused), never planned elsewhere.

The directory is held for the run (``.buddy-run.lock``, as ``buddy run``
holds its own); files are written whole (temp file, then rename); only the
``wave_N`` directories a plan wrote (marked with a ``.buddy-plan`` file) are
replaced, and a ``wave_N`` it needs that it did not write is refused before
anything is touched.
"""

from __future__ import annotations

import errno
import math
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import orjson

from buddy.engine.app._harness import _iso, _run_lock
from buddy.engine.app._outputs import json_doc
from buddy.engine.app._waves import WAVE_MARK, _agent_dirs
from buddy.engine.waves._inputs import by_wave, load_tasks
from buddy.engine.waves._opt_inputs import CoordinationHistory, agent_states, load_coordination
from buddy.engine.waves._opt_records import ScheduledTask
from buddy.engine.waves._optimizer import (
    DEFAULT_DURATION_S,
    MAX_DURATION_S,
    MIN_DURATION_S,
    OBJECTIVES,
    Schedule,
    SimulatedSchedule,
    generate_schedule_recommendations,
    optimize,
    pair_scores,
    simulate_schedule,
)
from buddy.engine.waves._records import AgentState, PredictedTask
from buddy.rules.base._files import write_atomic
from buddy.rules.base._masking import shown
from buddy.rules.base.errors import InputError, RuleTableError
from buddy.rules.tables._catalogue import ToolContractRegistry
from buddy.rules.tables._optimizer import OptimizerTable

__all__ = ["PLAN_DIR", "PLAN_MARK", "SUMMARY_FILE", "OptimizeConfig", "OptimizeSummary",
           "WavePlan", "plan_from"]

#: The output directory under ``--from`` when no ``--out`` is given.
PLAN_DIR = "phase19_plan"
SUMMARY_FILE = "optimization_summary.json"
SCHEDULE_FILE = "scheduled_tasks.jsonl"
TASKS_FILE = "predicted_tasks.jsonl"
RULES_FILE = "optimizer.toml"
#: The file a plan leaves in each ``wave_N`` directory it writes: only those it replaces.
PLAN_MARK = ".buddy-plan"


def _objective(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value not in OBJECTIVES:
        raise InputError(f"objective must be one of {', '.join(OBJECTIVES)} "
                         f"(got {shown(value)})")


def _seed(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if type(value) is not int or not -(2 ** 63) <= value <= 2 ** 63 - 1 - 100_000:
        raise InputError(f"seed must be a whole number in [-2**63, 2**63 - 100001] "
                         f"(got {shown(value)})")


def _runs(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if type(value) is not int or not 1 <= value <= 100_000:
        raise InputError(f"runs must be a whole number in [1, 100000] (got {shown(value)})")


@attrs.frozen
class OptimizeConfig:
    """Settings of ``buddy optimize``: the history directory, the tasks file (None:
    ``source/predicted_tasks.jsonl``), the objective, the output directory (None:
    ``source/phase19_plan``), a rules directory holding ``optimizer.toml`` (None: the
    shipped table), whether a bad input line refuses the run (``strict``), the
    seed and number of runs of each plan's SIMULATED check (``simulate_schedule``),
    and the tool catalogue a task's tool must be in (None: buddy's standard one)."""

    source: Path
    tasks: Path | None = None
    objective: str = attrs.field(default="maximize_success", validator=_objective)
    output_dir: Path | None = None
    rules_dir: Path | None = None
    strict: bool = False
    seed: int = attrs.field(default=19, validator=_seed)
    runs: int = attrs.field(default=100, validator=_runs)
    catalogue: Path | None = None

    @property
    def out(self) -> Path:
        return self.output_dir if self.output_dir is not None else self.source / PLAN_DIR


@attrs.frozen
class WavePlan:
    """One wave's plan: the optimizer's schedule and each task's place in it (by agent,
    in plan order)."""

    wave: int
    schedule: Schedule
    tasks: tuple[ScheduledTask, ...]
    simulated: SimulatedSchedule | None = None
    recommendations: tuple[str, ...] = ()

    def busy_s(self, agent: str) -> float:
        """The seconds ``agent`` is expected to work this wave."""
        return max((t.scheduled_end_time for t in self.tasks if t.agent_id == agent),
                   default=0.0)

    def to_json(self) -> dict[str, Any]:
        """The wave's entry of ``optimization_results`` (002's fields first)."""
        s = self.schedule
        return {"wave": self.wave, "strategy": s.objective,
                "expected_success_rate": round(s.expected_success, 6),
                "agent_assignments": {a: list(ts) for a, ts in s.order.items()},
                "expected_throughput": round(s.expected_throughput, 6),
                "objective_value": round(s.objective_value, 6),
                "expected_makespan_s": round(s.expected_makespan_s, 6),
                "tasks": len(s.assignments), "capacity": s.capacity,
                "simulated": self.simulated.to_json() if self.simulated is not None else None,
                "recommendations": list(self.recommendations)}


@attrs.frozen
class OptimizeSummary:
    """What ``buddy optimize`` prints at the end."""

    out_dir: Path
    source: str
    objective: str
    agents: tuple[str, ...]
    waves: tuple[WavePlan, ...]
    tasks: int
    expected_success_rate: float
    expected_throughput: float
    skipped: tuple[str, ...]
    summary_path: Path


def _duration(agent: AgentState) -> float:
    """The agent's expected seconds per task: its mean latency (1 s when it has none)."""
    latency = agent.avg_latency
    if not (math.isfinite(latency) and latency > 0):
        return DEFAULT_DURATION_S
    return min(MAX_DURATION_S, max(MIN_DURATION_S, latency))  # as the optimizer reads it


@attrs.frozen
class _Agents:
    """The agents as the plan sees them: exact success rates as priors (no finished
    task), each one's seconds per task, and the speeds that give the optimizer them."""

    views: tuple[AgentState, ...]
    seconds: dict[str, float]
    speeds: dict[str, float]

    @classmethod
    def of(cls, states: Sequence[AgentState]) -> _Agents:
        seconds = {a.agent_id: _duration(a) for a in states}
        return cls(tuple(AgentState(a.agent_id, prior=a.prior) for a in states), seconds,
                   {a: DEFAULT_DURATION_S / secs for a, secs in seconds.items()})

    def loaded(self, pinned: Sequence[PredictedTask]) -> list[AgentState]:
        """The views with the tasks pinned to each as its ``current_load``."""
        load: dict[str, int] = {}
        for t in pinned:
            assert t.agent_id is not None
            load[t.agent_id] = load.get(t.agent_id, 0) + 1
        return [attrs.evolve(a, current_load=load.get(a.agent_id, 0)) for a in self.views]


def _plan_wave(tasks: Sequence[PredictedTask], agents: _Agents, objective: str,
               table: OptimizerTable) -> Schedule:
    """The wave's schedule: the pinned tasks on their agents, the others optimized
    around them; order, success, makespan and throughput over all of them."""
    pinned = [t for t in tasks if t.agent_id is not None]
    free = [t for t in tasks if t.agent_id is None]
    views = agents.views
    planned = optimize(free, agents.loaded(pinned), objective, table=table,
                       speeds=agents.speeds)
    index = {a.agent_id: i for i, a in enumerate(views)}
    success = dict(planned.task_success)
    value = planned.objective_value
    for t in pinned:
        assert t.agent_id is not None
        i = index[t.agent_id]
        success[t.task_id] = pair_scores(t, views, "maximize_success", table=table,
                                         speeds=agents.speeds)[i]
        value += pair_scores(t, views, objective, table=table, speeds=agents.speeds)[i]
    assignments = {t.task_id: t.agent_id if t.agent_id is not None
                   else planned.assignments[t.task_id] for t in tasks}
    position = {t.task_id: k for k, t in enumerate(tasks)}
    priority = {t.task_id: t.priority for t in tasks}
    by_agent: dict[str, list[str]] = {}
    for tid, agent in assignments.items():
        by_agent.setdefault(agent, []).append(tid)
    order = {a.agent_id: tuple(sorted(by_agent[a.agent_id], key=lambda tid: (
        -priority[tid], -success[tid], position[tid]))) for a in views if a.agent_id in by_agent}
    n = len(tasks)
    makespan = 0.0
    for agent, ids in order.items():
        busy = 0.0
        for _ in ids:  # summed task by task, as the scheduled ends are
            busy += agents.seconds[agent]
        makespan = max(makespan, busy)
    return attrs.evolve(
        planned, assignments=assignments, order=order, objective_value=value,
        expected_success=math.fsum(success[t.task_id] for t in tasks) / n if n else 0.0,
        task_success={t.task_id: success[t.task_id] for t in tasks},
        expected_makespan_s=makespan,
        expected_throughput=n / makespan if makespan > 0 else 0.0,
        capacity=table.capacity(n, len(views)) if n else 0)


def _scheduled(wave: int, schedule: Schedule, tasks: Sequence[PredictedTask],
               durations: dict[str, float]) -> tuple[ScheduledTask, ...]:
    """Each task of the schedule with its expected start and end, by agent in plan order."""
    by_id = {t.task_id: t for t in tasks}
    out: list[ScheduledTask] = []
    for agent, ids in schedule.order.items():
        at = 0.0
        for position, tid in enumerate(ids):
            end = at + durations[agent]
            task = by_id[tid]
            out.append(ScheduledTask(tid, agent, wave, at, end, task.priority,
                                     schedule.task_success[tid], tool=task.tool,
                                     position=position))
            at = end
    return tuple(out)


def _table(rules_dir: Path | None) -> OptimizerTable:
    if rules_dir is None:
        return OptimizerTable.default()
    if not rules_dir.is_dir():
        raise RuleTableError(f"{rules_dir}: no such directory")
    path = rules_dir / RULES_FILE
    if not path.exists():
        raise RuleTableError(f"{rules_dir}: holds no {RULES_FILE} (the optimizer's table)")
    return OptimizerTable.from_toml(path)


def _check_out(out: Path, waves: Sequence[int]) -> None:
    """Refuse an output directory that is a file, or a ``wave_N`` (or the summary) there
    that a plan did not write."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "is not a directory, where buddy optimize "
                                 "writes its plan (use another --out)", str(out))
    for up in (out, *out.absolute().parents):  # a run's wave_N is replaced by its next run
        if (up / WAVE_MARK).is_file():
            raise FileExistsError(errno.EEXIST, "is inside a directory buddy run waves "
                                  "writes and replaces (use another --out)", str(out))
    for n in waves:
        wave = out / f"wave_{n}"
        if wave.is_symlink() or wave.exists() and not (wave.is_dir()
                                                       and (wave / PLAN_MARK).is_file()):
            raise FileExistsError(errno.EEXIST, "exists and is not a directory buddy "
                                  "optimize wrote (move it away, or use another --out)",
                                  str(wave))
    summary = out / SUMMARY_FILE
    if summary.is_symlink() or summary.exists() and not summary.is_file():
        raise OSError(errno.EINVAL, "is not a regular file, where buddy optimize writes "
                      "one (move it away, or use another --out)", str(summary))


def plan_from(config: OptimizeConfig, *, clock: Callable[[], float] = time.time,
              timer: Callable[[], float] = time.perf_counter) -> OptimizeSummary:
    """Plan the tasks of ``config`` on the agents of its history; write the plan.

    ``clock`` stamps the summary (epoch seconds); ``timer`` measures the planning
    (``execution_time_ms``).

    Raises
    ------
    InputError
        The history or the tasks cannot be used (with ``strict``: any bad line).
    RuleTableError
        The rules directory or its ``optimizer.toml``.
    OSError
        An output path that is not what a plan writes there (a file where the
        directory goes, a ``wave_N`` it did not write); a file that cannot be read.
    BlockingIOError
        Another run holds the output directory.
    """
    began = timer()
    table = _table(config.rules_dir)
    history = load_coordination(config.source, strict=config.strict)
    tasks_path = config.tasks if config.tasks is not None else config.source / TASKS_FILE
    if config.tasks is None and not tasks_path.exists():
        raise InputError(f"{config.source}: holds no {TASKS_FILE}: give the tasks to plan "
                         "with --tasks FILE")
    registry = ToolContractRegistry.from_toml(config.catalogue) if config.catalogue else \
        ToolContractRegistry.default()
    loaded = load_tasks(tasks_path, registry, strict=config.strict)
    states = agent_states(history)
    if not states:
        raise InputError(f"{config.source}: the history names no agent to plan for")
    agents = _Agents.of(states)
    known = set(agents.seconds)
    stray = [f"{tasks_path}: task {shown(t.task_id)}: agent_id {shown(t.agent_id)} is not an "
             "agent of the history" for t in loaded.tasks
             if t.agent_id is not None and t.agent_id not in known]
    if stray and config.strict:
        raise InputError(stray[0])
    tasks = [t for t in loaded.tasks if t.agent_id is None or t.agent_id in known]
    if not tasks:
        raise InputError(f"{tasks_path}: no task to plan (every task is pinned to an agent "
                         "the history does not name)")
    plans: list[WavePlan] = []
    for wave, group in by_wave(tasks).items():
        schedule = _plan_wave(group, agents, config.objective, table)
        plans.append(WavePlan(
            wave, schedule, _scheduled(wave, schedule, group, agents.seconds),
            simulate_schedule(schedule, group, seed=config.seed + wave, runs=config.runs),
            tuple(generate_schedule_recommendations(schedule, agents.views))))
    out = config.out
    _check_out(out, [p.wave for p in plans])
    out.mkdir(parents=True, exist_ok=True)
    with _run_lock(out):
        _check_out(out, [p.wave for p in plans])  # held now: again
        return _write(config, out, history, agents, plans, (*loaded.errors, *stray), table,
                      tasks_path, began, clock, timer)


def _write(config: OptimizeConfig, out: Path, history: CoordinationHistory,
           agents: _Agents, plans: Sequence[WavePlan], task_errors: tuple[str, ...],
           table: OptimizerTable, tasks_path: Path, began: float, clock: Callable[[], float],
           timer: Callable[[], float]) -> OptimizeSummary:
    for child in out.iterdir():  # only the wave directories a plan wrote (marked)
        if child.name.startswith("wave_") and child.is_dir() and not child.is_symlink() \
                and (child / PLAN_MARK).is_file():
            shutil.rmtree(child)
    dirs = _agent_dirs([a.agent_id for a in agents.views])
    for plan in plans:
        wave_dir = out / f"wave_{plan.wave}"
        wave_dir.mkdir()
        (wave_dir / PLAN_MARK).write_bytes(b"written by buddy optimize\n")
        for agent in plan.schedule.order:
            d = wave_dir / dirs[agent]
            d.mkdir()
            write_atomic(d / SCHEDULE_FILE, b"".join(
                orjson.dumps(t.to_json()) + b"\n" for t in plan.tasks if t.agent_id == agent),
                fsync=False)
    total = sum(len(p.tasks) for p in plans)
    makespan = math.fsum(p.schedule.expected_makespan_s for p in plans)
    success = math.fsum(t.confidence for p in plans for t in p.tasks) / total if total else 0.0
    throughput = total / makespan if makespan > 0 else 0.0
    skipped = (*history.errors, *task_errors)
    doc = {
        "phase": 19, "timestamp": _iso(clock()), "total_waves_optimized": len(plans),
        "total_agents": len(agents.views), "total_tasks": total,
        "optimization_strategy": config.objective,
        "overall_metrics": {"expected_success_rate": round(success, 6),
                            "actual_success_rate": None, "prediction_accuracy": None,
                            "expected_throughput": round(throughput, 6),
                            "actual_throughput": None, "schedule_adherence": None},
        "optimization_results": [p.to_json() for p in plans],
        "system_health_score": None,
        "execution_time_ms": round(1000 * (timer() - began), 3),
        # buddy's own: what was planned from what
        "simulated": False, "executed": False,
        "history": {"directory": str(config.source), "source": history.source,
                    "health_score": None if history.health is None
                    else history.health.overall_health_score},
        "tasks_file": str(tasks_path),
        "agents": {a.agent_id: {"prior": round(a.prior, 6),
                                "expected_task_s": round(agents.seconds[a.agent_id], 6),
                                "dir": dirs[a.agent_id]} for a in agents.views},
        "rules": {RULES_FILE: table.digest},
        "skipped_lines": list(skipped),
    }
    summary_path = write_atomic(out / SUMMARY_FILE, json_doc(doc))  # last: the plan is done
    return OptimizeSummary(out, history.source, config.objective,
                           tuple(a.agent_id for a in agents.views), tuple(plans), total, success,
                           throughput, skipped, summary_path)
