"""The wave executor: each task through its lifecycle, its gates and the engine.

Every task of a wave runs through the declared task machine
(:mod:`buddy.machines.task`), stepped through the table compiled from that
declaration (:func:`~buddy.machines._factory.fire`, as ``decide`` steps the
escalation machine), and every move is an audit event (machine ``task``, the
subject ``task-<seq>`` of its first event) that replay checks against the
machine's rows. Before every attempt, retries included, the safety gates
(``rules/gates.toml``) are evaluated: a refused gate fails the task with the
gate named. Each attempt is one tool call that the engine decides, runs and
audits (:meth:`~buddy.engine.core.Engine.execute`): nothing here chooses a mode.

A failed attempt moves to RETRYING while retries remain and waits the retry
strategy's delay (``rules/retry.toml``); a refusal by the policy fails the
task at once unless its rule is one worth a retry (a rate limit). An attempt
that runs past the task's timeout marks its agent OFFLINE; the task (retrying)
and the agent's tasks not yet started go to a backup agent chosen by the
manager, in a further round of the wave.

Time is injected. With a :class:`VirtualClock` (the simulator), latencies and
backoff delays move each agent's own virtual time and nothing waits; with a
real clock, delays are slept. Agents of a wave run behind a :class:`Backend`:
:class:`VirtualTimeBackend` steps them one attempt at a time in virtual-time
order (deterministic: the same seed gives the same audit trail), and
:class:`ThreadBackend` runs each agent in a thread of a pool of
``max_parallel`` (for real tools, whose calls wait on the world). A backend
only decides how the agents' steps interleave; a distributed one would run
the same :class:`Runner` steps elsewhere, without the manager or the monitor
knowing.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import attrs
import orjson

from buddy.engine.core._engine import Engine
from buddy.engine.orchestration._execution_ledger import ExecutionLedger
from buddy.engine.waves._agents import AgentManager
from buddy.engine.waves._records import (
    CoordinationPlan,
    ExecutionMetrics,
    ExecutionTask,
    PredictedTask,
    RetryStrategy,
    TaskAssignment,
)
from buddy.engine.waves._simulator import ATTEMPT, Attempt
from buddy.machines._factory import compile_table, fire
from buddy.machines.task import SPEC as TASK
from buddy.machines.task import TaskInputs, TaskState
from buddy.rules.base._values import ExecutionMode, valid_confidence
from buddy.rules.base.errors import InputError
from buddy.rules.tables._waves import GateTable, RetryTable

__all__ = ["Backend", "ExecutorConfig", "Runner", "ThreadBackend", "VirtualClock",
           "VirtualTimeBackend", "WaveExecutor", "WaveRun"]

_TABLE = compile_table(TASK)
_PENDING, _IN_PROGRESS, _RETRYING = "PENDING", "IN_PROGRESS", "RETRYING"
_COMPLETED, _FAILED = "COMPLETED", "FAILED"
_STATE = {s.name: s for s in TaskState}
_VALUE = {m: m.value for m in ExecutionMode}
_LIVE = ExecutionMode.LIVE


class VirtualClock:
    """The run's virtual clock: what ``now`` is for the agent whose step runs.

    Each thread reads its own time (set by the runner it runs), so agents in
    parallel threads keep their own timelines; the engine reads it as its clock.
    """

    def __init__(self, start: float) -> None:
        self.start = float(start)
        self._local = threading.local()

    def __call__(self) -> float:
        return getattr(self._local, "now", self.start)

    def set(self, now: float) -> None:
        self._local.now = now


@attrs.frozen
class ExecutorConfig:
    """How tasks are retried and timed out (defaults from ``rules/retry.toml``).

    ``max_retries`` None: the retry table's. ``learning_rate``: the share of a
    task's prediction error its ``confidence_adjustment`` proposes. ``max_agent_load``:
    the resource gate's cap on an agent's tasks in one wave. ``max_mode``: a cap
    on every call (DRY_RUN for a rehearsal run), applied by the engine.
    """

    retry_strategy: RetryStrategy = RetryStrategy.EXPONENTIAL_BACKOFF
    max_retries: int | None = None
    timeout_s: float | None = None
    max_parallel: int = 4
    learning_rate: float = 0.1
    max_agent_load: int = 1_000_000
    max_mode: ExecutionMode | None = None

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.retry_strategy, RetryStrategy):
            raise InputError(f"retry_strategy must be one of "
                             f"{', '.join(s.value for s in RetryStrategy)}")
        if self.max_retries is not None and (type(self.max_retries) is not int
                                             or not 0 <= self.max_retries <= 1000):
            raise InputError(f"max_retries must be a whole number in [0, 1000] "
                             f"(got {self.max_retries!r})")
        if self.timeout_s is not None and (isinstance(self.timeout_s, bool) or not isinstance(
                self.timeout_s, int | float) or not 0 < self.timeout_s <= 86_400):
            raise InputError(f"timeout_s must be a number of seconds in (0, 86400] "
                             f"(got {self.timeout_s!r})")
        if type(self.max_parallel) is not int or not 1 <= self.max_parallel <= 4096:
            raise InputError(f"max_parallel must be a whole number in [1, 4096] "
                             f"(got {self.max_parallel!r})")
        if not valid_confidence(self.learning_rate):
            raise InputError(f"learning_rate must be a number in [0, 1] "
                             f"(got {self.learning_rate!r})")


@attrs.define
class _Work:
    """One task on its way through the lifecycle (mutable; one per task)."""

    assignment: TaskAssignment
    task: PredictedTask
    state: str = _PENDING
    retries: int = 0          # retries made
    attempts: int = 0         # attempts started
    subject: str | None = None
    started: float | None = None
    error: str | None = None
    gate: str | None = None
    mode: str | None = None
    decided: str | None = None
    context: str | None = None
    timed_out: bool = False


@attrs.frozen
class WaveRun:
    """What one wave's execution came to.

    ``results``/``metrics`` in the plan's task order; ``transitions`` counts each
    (from state, trigger, to state) the tasks took; ``reassigned`` the
    assignments moved to a backup agent; ``offline`` the agents marked OFFLINE.
    """

    wave: int
    results: tuple[ExecutionTask, ...]
    metrics: tuple[ExecutionMetrics, ...]
    transitions: Mapping[tuple[str, str, str], int]
    reassigned: tuple[TaskAssignment, ...]
    offline: tuple[str, ...]
    gate_refusals: Mapping[str, int]
    retries: int
    start: float
    end: float
    #: agent id -> (attempts the policy let it run, of them succeeded in time, seconds
    #: they took)
    attempts: Mapping[str, tuple[int, int, float]] = attrs.field(factory=dict)


class Backend(Protocol):
    """Runs one round of a wave: every runner's steps, interleaved as it sees fit."""

    def run(self, runners: Sequence[Runner]) -> None: ...


class VirtualTimeBackend:
    """One thread; the agent whose next attempt starts earliest goes first (ties: agent
    order). At most ``max_parallel`` agents work at once: the next waiting agent
    starts when one finishes. Deterministic: the order depends on virtual time only."""

    def __init__(self, max_parallel: int = 4) -> None:
        self.max_parallel = max_parallel

    def run(self, runners: Sequence[Runner]) -> None:
        waiting = deque(runners)
        by_index = {r.index: r for r in runners}
        heap: list[tuple[float, int, Iterator[float]]] = []

        def start(runner: Runner, at: float) -> None:
            runner.t = max(runner.t, at)
            heapq.heappush(heap, (runner.t, runner.index, runner.steps()))

        while waiting and len(heap) < self.max_parallel:
            start(waiting.popleft(), 0.0)
        while heap:
            _, index, steps = heap[0]
            try:
                now = next(steps)
            except StopIteration:
                heapq.heappop(heap)
                if waiting:
                    start(waiting.popleft(), by_index[index].t)
                continue
            heapq.heapreplace(heap, (now, index, steps))


class ThreadBackend:
    """A pool of ``max_parallel`` threads, one agent's tasks per thread at a time."""

    def __init__(self, max_parallel: int = 4) -> None:
        self.max_parallel = max_parallel

    def run(self, runners: Sequence[Runner]) -> None:
        def drain(runner: Runner) -> None:
            for _ in runner.steps():
                pass

        with ThreadPoolExecutor(max_workers=self.max_parallel,
                                thread_name_prefix="buddy-wave") as pool:
            for future in [pool.submit(drain, r) for r in runners]:
                future.result()


class Runner:
    """One agent's tasks in one round of a wave, an attempt per step.

    :meth:`steps` yields the agent's (virtual) time after each attempt, when its
    next attempt may start; the backend decides when that is.
    """

    def __init__(self, executor: WaveExecutor, agent: str, queue: Sequence[_Work],
                 start: float, index: int) -> None:
        self.executor = executor
        self.agent = agent
        self.queue = deque(queue)
        self.t = start
        self.index = index
        #: work left when the agent went OFFLINE (to reassign)
        self.leftover: list[_Work] = []

    def steps(self) -> Iterator[float]:
        ex = self.executor
        while self.queue:
            work = self.queue[0]
            if ex.attempt(self, work):
                self.queue.popleft()
            if ex.offline_now(self.agent):  # its task timed out: hand on what is left
                self.leftover.extend(self.queue)
                self.queue.clear()
                return
            if self.queue:
                yield self.t


class WaveExecutor:
    """Runs waves of assigned tasks through gates, the task machine and the engine.

    ``clock``: a :class:`VirtualClock` (simulated time, no waiting) or a real
    clock (seconds since the epoch), in which case ``sleep`` waits the backoff.
    ``engine`` must read the same clock.
    """

    def __init__(self, engine: Engine, manager: AgentManager, gates: GateTable,
                 retry: RetryTable, config: ExecutorConfig = ExecutorConfig(), *,
                 clock: VirtualClock | Callable[[], float], backend: Backend | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 ledger: ExecutionLedger | None = None) -> None:
        self.engine = engine
        self.audit = engine.audit
        #: reassignments are audit events (set by the loop, which records each plan)
        self.record_schedule = False
        self.manager = manager
        self.gates = gates
        self.retry = retry
        self.config = config
        self.strategy = config.retry_strategy.value
        self.max_retries = retry.max_retries_for(self.strategy, config.max_retries)
        self.timeout_s = float(config.timeout_s if config.timeout_s is not None
                               else retry.timeout_s)
        self.retry_on = retry.retry_on_refusal
        self.clock = clock
        self.virtual = isinstance(clock, VirtualClock)
        self.sleep = sleep
        self.backend = backend if backend is not None else (
            VirtualTimeBackend(config.max_parallel) if self.virtual
            else ThreadBackend(config.max_parallel))
        self.lock = threading.Lock()
        #: the irreversible actions done LIVE (those the application loads, e.g. from an
        #: audit trail, and this run's): the constraint gate refuses a duplicate.
        self.ledger = ledger if ledger is not None else ExecutionLedger(
            keep_history=False, digest=engine.audit.args_digest)
        #: irreversible actions an agent is running now (a second one is a duplicate)
        self.in_flight: set[tuple[str, str]] = set()
        self._reset(0)

    def _reset(self, wave: int) -> None:
        self.wave = wave
        self.done: dict[str, ExecutionTask] = {}
        self.order: list[str] = []
        self.counts: Counter[tuple[str, str, str]] = Counter()
        self.refusals: Counter[str] = Counter()
        self.retries = 0
        self.offline: list[str] = []
        self.reassigned: list[TaskAssignment] = []
        self.tally: dict[str, tuple[int, int, float]] = {}

    # -- a wave ----------------------------------------------------------------
    def execute_wave(self, plan: CoordinationPlan, tasks: Mapping[str, PredictedTask],
                     finished: Mapping[str, tuple[str, str | None] | None], *, start: float,
                     blocking: Mapping[str, int] | None = None) -> WaveRun:
        """Run ``plan``'s tasks (``tasks`` by id) from ``start``; ``finished``: each
        earlier task's (tool, mode its last attempt ran in) when it COMPLETED, None when
        it FAILED (the dependency gate reads it, and caps a task whose tool depends on
        theirs at their mode); ``blocking``: HIGH anomalies standing against each agent (the
        constraint gate reads them)."""
        self._reset(plan.wave)
        self.finished = finished
        self.blocking = dict(blocking or {})
        self.manager.begin_wave()
        by_agent = plan.by_agent()
        works = {a.task_id: _Work(a, tasks[a.task_id]) for a in plan.assignments}
        self.order = [a.task_id for a in plan.assignments]
        ends: dict[str, float] = {}
        rounds = [(agent, [works[a.task_id] for a in mine], start)
                  for agent, mine in by_agent.items()]
        while rounds:
            runners = [Runner(self, agent, queue, at, i)
                       for i, (agent, queue, at) in enumerate(rounds)]
            self.backend.run(runners)
            rounds = []
            extra: dict[str, tuple[list[_Work], float]] = {}
            for r in runners:
                ends[r.agent] = max(ends.get(r.agent, start), r.t)
                if self.virtual:  # the manager stamps reassignments with the clock
                    self.clock.set(r.t)  # type: ignore[union-attr]
                for work in r.leftover:
                    backup = self.manager.backup_for(r.agent)
                    if backup is None:
                        self._cancel(work, r.t, "no agent available: every other agent "
                                     "is OFFLINE")
                        continue
                    moved = self.manager.reassign(work.assignment, backup)
                    if self.record_schedule:  # the plan is in the trail: so is this move
                        self.audit.append("schedule", "scheduler", f"wave-{plan.wave}",
                                          "reassign", None, None, {
                                              "wave": plan.wave, "task": moved.task_id,
                                              "from": r.agent, "to": backup,
                                              "reason": "offline"})
                    self.reassigned.append(moved)
                    work.assignment = moved
                    queue, at = extra.setdefault(backup, ([], ends.get(backup, start)))
                    queue.append(work)
                    extra[backup] = (queue, max(at, r.t))
            rounds = [(agent, queue, at) for agent, (queue, at) in extra.items()]
        self.manager.end_wave()
        results = tuple(self.done[t] for t in self.order)
        rate = self.config.learning_rate
        metrics = tuple(ExecutionMetrics(
            r.task_id, r.agent_id, r.wave, (1.0 if r.success else 0.0) - r.predicted_success_rate,
            ((1.0 if r.success else 0.0) - r.predicted_success_rate) * rate, r.latency)
            for r in results)
        return WaveRun(plan.wave, results, metrics, dict(self.counts), tuple(self.reassigned),
                       tuple(self.offline), dict(self.refusals), self.retries, start,
                       max(ends.values(), default=start), dict(self.tally))

    def offline_now(self, agent: str) -> bool:
        return not self.manager.agents[agent].available

    # -- an attempt ------------------------------------------------------------
    def attempt(self, runner: Runner, work: _Work) -> bool:
        """One attempt of ``work`` on ``runner``'s agent; True when the task is finished."""
        agent, task = runner.agent, work.task
        now = self._now(runner)
        if work.started is None:
            work.started = now
        trigger = "start" if work.state == _PENDING else "retry"
        contract = self.engine.registry.get(task.tool) if task.tool in self.engine.registry \
            else None
        irreversible = contract is not None and not contract.reversible
        action = (task.tool, self.ledger.digest(task.args)) if irreversible else None
        if action is None:
            metrics = self._gate_metrics(agent, work, None)
            refused = self.gates.check(metrics)
        else:  # checked and reserved at once: two agents never run one action together
            with self.lock:
                metrics = self._gate_metrics(agent, work, action)
                refused = self.gates.check(metrics)
                if refused is None:
                    self.in_flight.add(action)
        try:
            return self._attempt(runner, work, trigger, now, metrics, refused, contract,
                                 action)
        finally:
            if action is not None and refused is None:
                with self.lock:
                    self.in_flight.discard(action)

    def _attempt(self, runner: Runner, work: _Work, trigger: str, now: float,
                 metrics: dict[str, Any], refused: Any, contract: Any,
                 action: tuple[str, str] | None) -> bool:
        """:meth:`attempt` once the gates have answered."""
        agent, task = runner.agent, work.task
        irreversible = action is not None
        self._move(work, agent, trigger, self._inputs(work, refused is None), now,
                   gate=None if refused is None else refused.id,
                   action=action if refused is None else None)
        if refused is not None:
            with self.lock:
                self.refusals[refused.id] += 1
            self._finish(work, agent, now,
                         f"safety gate {refused.id}: {self.gates.refusal(refused, metrics)}",
                         gate=refused.id)
            return True
        work.attempts += 1
        attempt = Attempt(agent, task.task_id, work.attempts, task.predicted_success_rate,
                          self.timeout_s)
        token = ATTEMPT.set(attempt)
        began = time.perf_counter()
        cap, why = self._cap(task, contract)
        try:
            result = self.engine.execute(agent, task.tool, task.args,
                                         confidence=task.decision_confidence,
                                         max_mode=cap, cap_reason=why)
        finally:
            ATTEMPT.reset(token)
        latency = attempt.latency if self.virtual else time.perf_counter() - began
        late = result.timed_out or latency > self.timeout_s
        runner.t = now + latency
        if result.decision.allowed:  # what each agent's runs came to (the scheduler
            with self.lock:          # learns from them; a refusal is not the agent's doing)
                n, ok, secs = self.tally.get(agent, (0, 0, 0.0))
                self.tally[agent] = (n + 1, ok + (result.ok and not late), secs + latency)
        work.context = result.context
        work.mode = _VALUE[result.mode] if result.mode is not None else None
        work.decided = _VALUE[result.decision.mode]
        end = self._now(runner)
        if late:  # too slow: the agent is taken out, whatever came of the call
            self._offline(agent)
        if result.mode is _LIVE and irreversible:  # done, whatever came of it
            self._record_done(agent, task, result.context)
        if result.ok:  # done, even if late: a call that succeeded is never run again
            self._move(work, agent, "succeed", self._inputs(work), end, context=result.context)
            self._finish(work, agent, end, None if not late else
                         f"succeeded, past the {self.timeout_s:g} s timeout; {agent} marked "
                         "OFFLINE")
            return True
        decision = result.decision
        if not decision.allowed and decision.rule not in self.retry_on:
            work.error = f"refused by the policy ({decision.rule}): {decision.reason}"
        elif irreversible and result.mode is _LIVE:
            work.timed_out = late  # what it did is unknown: an irreversible action is not
            work.error = (f"{_late(latency, self.timeout_s, agent) + '; ' if late else ''}"
                          f"{task.tool} is irreversible and ran LIVE "
                          f"({result.error or 'no result'}): what it did is unknown, "
                          "not retried")
        else:
            work.error = None
        if work.error is not None:
            self._move(work, agent, "cancel", self._inputs(work), end, context=result.context)
            self._finish(work, agent, end, work.error)
            return True
        if late:
            work.timed_out = True
            work.error = _late(latency, self.timeout_s, agent)
        else:
            work.error = result.error or (f"refused by the policy ({decision.rule}): "
                                          f"{decision.reason}")
        self._move(work, agent, "fail", self._inputs(work), end, context=result.context)
        if work.state == _FAILED:
            self._finish(work, agent, end, work.error)
            return True
        work.retries += 1
        with self.lock:
            self.retries += 1
        delay = self.retry.delay(self.strategy, work.retries)
        if not decision.allowed:  # a rate limit: wait at least for its next token
            limit = self.engine.registry.get(task.tool).rate_limit_per_minute
            if limit:
                delay = max(delay, 60.0 / limit)
        if self.virtual:
            runner.t = end + delay
        else:
            self.sleep(delay)
            runner.t = self.clock()
        return False  # retrying (on a backup agent when this one timed out)

    def _offline(self, agent: str) -> None:
        with self.lock:
            if self.manager.agents[agent].available:
                self.manager.mark_offline(agent)
                self.offline.append(agent)

    def _record_done(self, agent: str, task: PredictedTask, context: str) -> None:
        """An irreversible action ran LIVE (whether it succeeded or not, it may have
        happened): the same action is a duplicate now."""
        with self.lock:
            self.ledger.done_actions.setdefault((task.tool, self.ledger.digest(task.args)),
                                                context)

    def _cap(self, task: PredictedTask, contract: Any) -> tuple[ExecutionMode | None, str]:
        """The mode cap of an attempt: the run's, and no higher than the lowest mode a
        task its tool depends on (by contract) COMPLETED in: a click after a form filled
        in MOCK is no LIVE click."""
        cap, why = self.config.max_mode, "the wave run's mode cap"
        if contract is None or not contract.dependencies:
            return cap, why
        finished = self.finished
        for dep in task.dependencies:
            done = finished.get(dep)
            if done is None or done[0] not in contract.dependencies or done[1] is None:
                continue
            mode = ExecutionMode(done[1])
            if cap is None or mode.rank < cap.rank:
                cap, why = mode, f"its dependency {dep} ({done[0]}) completed in {done[1]}"
        return cap, why

    def _inputs(self, work: _Work, gate_allows: bool = True) -> TaskInputs:
        """The task machine's guard inputs for ``work`` now: the retries it made, the
        budget, the gates' verdict (every move records them, whatever its guards read)."""
        return TaskInputs(work.retries, self.max_retries, gate_allows)

    def _now(self, runner: Runner) -> float:
        if self.virtual:
            self.clock.set(runner.t)  # type: ignore[union-attr]
            return runner.t
        runner.t = self.clock()
        return runner.t

    def _gate_metrics(self, agent: str, work: _Work,
                      action: tuple[str, str] | None) -> dict[str, Any]:
        task = work.task
        engine = self.engine
        registry = engine.registry
        known = task.tool in registry
        held = engine.agents
        permitted = known and (held is None or (
            agent in held and registry.get(task.tool).permissions <= held[agent]))
        finished = self.finished
        missing = sum(1 for d in task.dependencies if finished.get(d) is None)
        contract = registry.get(task.tool) if known else None
        needs = contract.dependencies if contract is not None else ()
        tools_met = not needs or set(needs) <= {
            done[0] for d in task.dependencies if (done := finished.get(d)) is not None}
        duplicate = action is not None and (action in self.ledger.done_actions
                                            or action in self.in_flight)
        state = self.manager.agents[agent]
        return {
            "task_valid": known and valid_confidence(task.predicted_success_rate)
            and isinstance(task.args, Mapping),
            "agent_permitted": permitted,
            "agent_available": state.available,
            "agent_load": state.current_load,
            "max_agent_load": self.config.max_agent_load,
            "dependencies_met": missing == 0,
            "tool_dependencies_met": tools_met,
            "duplicate_action": duplicate,
            "failed_dependencies": missing,
            "attempt": work.attempts + 1,
            "max_attempts": self.max_retries + 1,
            "predicted_success_rate": float(task.predicted_success_rate),
            "blocking_anomalies": self.blocking.get(agent, 0),
            "locked": engine.locked,
        }

    def _move(self, work: _Work, agent: str, trigger: str, inputs: TaskInputs, ts: float, *,
              gate: str | None = None, context: str | None = None,
              action: tuple[str, str] | None = None) -> None:
        """Fire ``trigger`` on the task's machine and record the move."""
        src = work.state
        option = fire(_TABLE, src, trigger, inputs)
        if option is None:  # every trigger fired here has a row from its state
            raise AssertionError(f"task machine: no {trigger} from {src}")
        dst = option[0]
        data: dict[str, Any] = {"attempts": inputs.attempts, "max_retries": inputs.max_retries,
                                "gate_allows": inputs.gate_allows, "rules": self.gates.digest,
                                "task": work.task.task_id, "agent": agent}
        if gate is not None:
            data["gate"] = gate
        if context is not None:
            data["context"] = context
        if action is not None:  # an irreversible action about to run: a run cut short by
            data["tool"], data["args_digest"] = action  # a crash counts as done
        audit = self.audit
        with audit.lock:  # the event's JSON made here, as the controller makes a call's
            subject = work.subject
            if subject is None and not audit.shared:  # no other writer: its seq is known
                subject = work.subject = f"task-{audit.last_seq + 1}"
            if subject is None:
                seq = audit.append_locked("transition", "task", _task_subject, trigger, src,
                                          dst, data, ts)
                work.subject = f"task-{seq}"
            else:
                audit.append_encoded_locked(_MOVE % (_DUMPS(subject), _DUMPS(trigger),
                                                     _DUMPS(src), _DUMPS(dst),
                                                     _DUMPS(data)), ts)
        work.state = dst
        with self.lock:
            self.counts[(src, trigger, dst)] += 1

    def _cancel(self, work: _Work, at: float, why: str) -> None:
        work.error = why
        self._move(work, work.assignment.agent_id, "cancel", self._inputs(work), at)
        self._finish(work, work.assignment.agent_id, at, why)

    def _finish(self, work: _Work, agent: str, end: float, error: str | None, *,
                gate: str | None = None) -> None:
        task, assignment = work.task, work.assignment
        result = ExecutionTask(
            task_id=task.task_id, agent_id=agent, wave=assignment.wave, tool=task.tool,
            status=_STATE[work.state], start_time=work.started if work.started is not None
            else end, end_time=end, retry_count=work.retries,
            success=work.state == _COMPLETED, predicted_success_rate=task.predicted_success_rate,
            error_msg=error, gate=gate, mode=work.mode, decided=work.decided,
            context=work.context, timed_out=work.timed_out,
            reassigned_from=assignment.reassigned_from)
        with self.lock:
            self.done[task.task_id] = result
            self.manager.record_result(result)


_DUMPS = orjson.dumps


def _late(latency: float, timeout: float, agent: str) -> str:
    took = f"after {latency:.3g} s" if latency < timeout else f"past the {timeout:g} s timeout"
    return f"timed out ({took}); {agent} marked OFFLINE"
#: A task move's JSON from ``"kind"`` to its data (what ``AuditLog.append`` writes).
_MOVE = b'"kind":"transition","machine":"task","subject":%b,"event":%b,"src":%b,"dst":%b,' \
    b'"data":%b'


def _task_subject(seq: int) -> str:
    return f"task-{seq}"
