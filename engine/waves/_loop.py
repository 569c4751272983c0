"""The wave loop (Phase 21's harness without its files): assign, execute, feed back, monitor.

For each wave, in order (waves are barriers: a wave starts when the one before
has ended, on the run's clock):

1. the manager assigns the wave's tasks to the available agents with its
   strategy, using what the earlier waves taught it (success rates, agents
   OFFLINE);
2. the executor runs every task through its gates, the task machine and the
   engine, agents in parallel behind its backend;
3. the feedback loop compares outcomes with predictions and routes the
   table's learning signals to their targets;
4. the monitor computes the wave's metrics, health and anomalies.

A HIGH anomaly against an agent stands for the next wave: the constraint gate
reads it (``blocking_anomalies``), so a task pinned to that agent by a schedule
is refused there, named and counted, rather than run on an agent just found
failing.

Files are the application's business (``buddy run waves`` writes the output
tree); :meth:`WaveLoop.run_wave` returns everything a wave produced.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Mapping, Sequence

import attrs
import orjson

from buddy.engine.core._audit import AuditLog
from buddy.engine.core._engine import Engine
from buddy.engine.waves._agents import AgentManager
from buddy.engine.waves._executor import (
    Backend,
    ExecutorConfig,
    VirtualClock,
    WaveExecutor,
    WaveRun,
)
from buddy.engine.waves._feedback import WaveFeedback
from buddy.engine.waves._monitor import WaveMetrics, WaveMonitor
from buddy.engine.waves._opt_records import ScheduleComparison, ScheduledTask
from buddy.engine.waves._optimizer import OBJECTIVES
from buddy.engine.waves._records import (
    AgentMetric,
    CoordinationPlan,
    LearningSignal,
    PredictedTask,
    SystemHealth,
    TaskAssignment,
)
from buddy.engine.waves._scheduler import AdaptiveScheduler, ScheduledWave
from buddy.rules.base.errors import InputError
from buddy.rules.tables._monitoring import HealthTable
from buddy.rules.tables._optimizer import OptimizerTable
from buddy.rules.tables._waves import (
    GateTable,
    RetryTable,
    WaveAnomalyTable,
    WaveHealthTable,
    WaveSignalTable,
)

__all__ = ["WaveLoop", "WaveOutcome", "record_plan"]


@attrs.frozen
class WaveOutcome:
    """Everything one wave produced."""

    plan: CoordinationPlan
    run: WaveRun
    metrics: WaveMetrics
    agent_metrics: Mapping[str, Sequence[AgentMetric]]
    health: SystemHealth
    signals: tuple[LearningSignal, ...]
    available_at_start: tuple[str, ...]
    #: the scheduler's plan, when an :class:`AdaptiveScheduler` planned the wave
    scheduled: ScheduledWave | None = None
    #: each scheduled task with what became of it (actual times, status), in run order
    scheduled_tasks: tuple[ScheduledTask, ...] = ()
    #: the plan against what happened (None without a scheduler)
    comparison: ScheduleComparison | None = None


class WaveLoop:
    """Runs waves of tasks through manager, executor, feedback and monitor."""

    def __init__(self, manager: AgentManager, executor: WaveExecutor, feedback: WaveFeedback,
                 monitor: WaveMonitor, *, clock: VirtualClock | Callable[[], float],
                 start: float, scheduler: AdaptiveScheduler | None = None) -> None:
        if scheduler is not None and manager._strategy is not scheduler:
            raise InputError("the manager must be built with the scheduler as its strategy "
                             "(AgentManager(agents, scheduler, ...))")
        self.manager = manager
        self.scheduler = scheduler
        executor.record_schedule = True  # plans are audit events: reassignments are too
        if scheduler is not None:
            scheduler.max_retries = executor.max_retries
        self.executor = executor
        self.feedback = feedback
        self.monitor = monitor
        self.clock = clock
        self.now = start
        #: task id -> (its tool, the mode its last attempt ran in) when it COMPLETED,
        #: None when it FAILED (the dependency gate reads it)
        self.finished: dict[str, tuple[str, str | None] | None] = {}
        self._blocking: dict[str, int] = {}

    @classmethod
    def build(cls, engine: Engine, agents: Sequence[str], *,
              strategy: str = "LOAD_BALANCED", config: ExecutorConfig | None = None,
              clock: Callable[[], float] = time.time, backend: Backend | None = None,
              sleep: Callable[[float], None] = time.sleep) -> WaveLoop:
        """A loop over ``engine`` with the shipped tables: the embedding case.

        ``agents`` in order; a real ``clock`` (the engine's should be the same) with
        a :class:`ThreadBackend` of ``config.max_parallel`` threads unless told
        otherwise (a :class:`VirtualClock` gets the deterministic virtual-time
        backend); backoff delays are slept with ``sleep``. ``strategy``: a registered
        strategy's name, or one of :data:`~buddy.engine.waves.OBJECTIVES`, when an
        :class:`~buddy.engine.waves.AdaptiveScheduler` plans each wave with the
        optimizer (its shipped table).
        """
        scheduler = None
        if strategy in OBJECTIVES:  # the optimizer plans each wave
            scheduler = AdaptiveScheduler(strategy, OptimizerTable.default(),
                                          max_parallel=(config or ExecutorConfig()).max_parallel)
        manager = AgentManager(agents, scheduler or strategy, clock=clock)
        executor = WaveExecutor(engine, manager, GateTable.default(), RetryTable.default(),
                                config or ExecutorConfig(), clock=clock, backend=backend,
                                sleep=sleep)
        feedback = WaveFeedback(WaveSignalTable.default(), clock=clock)
        monitor = WaveMonitor(WaveAnomalyTable.default(), WaveHealthTable.default(),
                              HealthTable.default(), clock=clock)
        return cls(manager, executor, feedback, monitor, clock=clock, start=clock(),
                   scheduler=scheduler)

    def run_wave(self, wave: int, tasks: Sequence[PredictedTask]) -> WaveOutcome:
        """Run one wave's tasks; the next wave starts where this one ended."""
        if isinstance(self.clock, VirtualClock):
            self.clock.set(self.now)
        manager = self.manager
        available = tuple(a for a, s in manager.agents.items() if s.available)
        # an agent a HIGH anomaly stands against sits this wave out (a task pinned to it
        # meets the constraint gate), unless that would leave no agent at all
        benched = [a for a in self._blocking if a in available]
        if len(benched) == len(available):
            benched = []
        scheduled = None
        if available and self.scheduler is not None:
            scheduled = self.scheduler.plan_wave(manager, tasks, wave, exclude=benched)
            plan = scheduled.plan
        elif available:
            plan = manager.assign_tasks_to_agents(tasks, wave, exclude=benched)
        else:  # every agent OFFLINE: each task meets the resource gate, named and counted
            plan = _stranded(manager, tasks, wave)
        record_plan(self.executor.audit, plan, scheduled, tasks)
        run = self.executor.execute_wave(plan, {t.task_id: t for t in tasks}, self.finished,
                                         start=self.now, blocking=self._blocking)
        for r in run.results:
            self.finished[r.task_id] = (r.tool, r.mode) if r.success else None
        end = run.end
        if isinstance(self.clock, VirtualClock):
            self.clock.set(end)
        metrics = self.monitor.calculate_metrics(run, manager, available)
        health = self.monitor.generate_system_health(metrics, end)
        signals = tuple(self.feedback.generate_feedback_signals(run, metrics))
        self.feedback.route(signals)
        self._blocking = {}
        for anomaly in health.anomalies:
            if anomaly.severity == "HIGH" and anomaly.agent_id is not None:
                self._blocking[anomaly.agent_id] = self._blocking.get(anomaly.agent_id, 0) + 1
        self.now = end
        done: list[ScheduledTask] = []
        comparison = None
        if scheduled is not None and self.scheduler is not None:
            self.scheduler.learn(run)
            done, comparison = self.scheduler.observe(
                scheduled, run, tasks, available_at_start=len(available),
                available_at_end=sum(manager.agents[a].available for a in available))
        return WaveOutcome(plan, run, metrics, self.monitor.agent_metrics(metrics, end), health,
                           signals, available, scheduled, tuple(done), comparison)

    def run(self, waves: Mapping[int, Sequence[PredictedTask]],
            on_wave: Callable[[WaveOutcome], None] | None = None) -> list[WaveOutcome]:
        """Every wave in order; ``on_wave`` gets each outcome as it ends (and the
        outcomes are returned only when it is None, so a long run keeps none)."""
        kept: list[WaveOutcome] = []
        for wave in sorted(waves):
            outcome = self.run_wave(wave, waves[wave])
            if on_wave is not None:
                on_wave(outcome)
            else:
                kept.append(outcome)
        return kept


def _stranded(manager: AgentManager, tasks: Sequence[PredictedTask],
              wave: int) -> CoordinationPlan:
    """A wave's plan when no agent is available: each task on its pinned agent, else
    round robin over all of them; the resource gate refuses every one."""
    agents = list(manager.agents)
    now = manager._now()
    return CoordinationPlan(wave, 0, len(tasks), manager.strategy_name, tuple(
        TaskAssignment(t.task_id, t.agent_id if t.agent_id in manager.agents
                       else agents[i % len(agents)], t.predicted_success_rate, now, wave,
                       manager.strategy_name, t.priority)
        for i, t in enumerate(tasks)), 0.0)


def record_plan(audit: AuditLog, plan: CoordinationPlan, scheduled: ScheduledWave | None,
                tasks: Sequence[PredictedTask]) -> None:
    """Append the wave's plan to the audit trail, before any of its tasks runs.

    One ``schedule``/``plan`` event per agent with tasks (subject ``wave-<n>``):
    its task ids in queue order, the mean success the plan expects of them, and,
    when the optimizer planned, its objective, objective value, capacity and a
    digest of its inputs. A task the scheduler moved for load is listed under the
    agent the optimizer chose, and a ``reassign`` event (reason ``load``) follows.
    Replay holds every move of a listed task to its agent.
    """
    by_id = {t.task_id: t for t in tasks}
    expected = dict(scheduled.schedule.task_success) if scheduled is not None and \
        scheduled.schedule is not None else {}
    queues: dict[str, list[str]] = {}
    for a in plan.assignments:
        queues.setdefault(a.reassigned_from or a.agent_id, []).append(a.task_id)
    schedule = scheduled.schedule if scheduled is not None else None
    inputs = None
    if scheduled is not None:
        inputs = hashlib.blake2b(orjson.dumps(
            [[a.task_id, a.agent_id] for a in plan.assignments]
            + [[k, v] for k, v in sorted(scheduled.durations.items())]), digest_size=16
        ).hexdigest()
    subject = f"wave-{plan.wave}"
    for agent, ids in queues.items():
        p = [expected.get(k, by_id[k].predicted_success_rate) for k in ids]
        audit.append("schedule", "scheduler", subject, "plan", None, None, {
            "wave": plan.wave, "strategy": plan.strategy, "agent": agent, "tasks": ids,
            "expected_success": round(math.fsum(p) / len(p), 6),
            "objective": schedule.objective if schedule is not None else None,
            "objective_value": round(schedule.objective_value, 6)
            if schedule is not None else None,
            "capacity": schedule.capacity if schedule is not None else None,
            "inputs": inputs})
    for task_id, src, dst in (scheduled.moves if scheduled is not None else ()):
        audit.append("schedule", "scheduler", subject, "reassign", None, None, {
            "wave": plan.wave, "task": task_id, "from": src, "to": dst, "reason": "load"})
