"""Tests of buddy.engine.waves._scheduler: plans, priorities, load, times, adherence."""

from __future__ import annotations

import math

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from buddy.engine.waves import (
    AdaptiveScheduler,
    AgentManager,
    AgentState,
    PredictedTask,
    ScheduledTask,
    TaskAssignment,
    schedule_adherence,
)
from buddy.engine.waves._executor import WaveRun
from buddy.engine.waves._records import ExecutionTask, TaskStatus
from buddy.rules.base.errors import InputError
from buddy.rules.tables import OptimizerTable

TABLE = OptimizerTable.default()


def _sched(objective="maximize_success", **kw):
    return AdaptiveScheduler(objective, kw.pop("table", TABLE), **kw)


def _task(i, p=0.9, priority=0, tool="math_compute"):
    return PredictedTask(f"t{i}", tool, p, priority=priority)


def _done(task_id, agent, start, end, ok=True, retries=0, mode="LIVE"):
    return ExecutionTask(task_id, agent, 1, "math_compute",
                         TaskStatus.COMPLETED if ok else TaskStatus.FAILED, start, end, retries,
                         ok, 0.9, mode=mode)


# -- adherence ---------------------------------------------------------------------------

def _st(task_id, end, actual_end, moved=False):
    return ScheduledTask(task_id, "a", 1, end - 1.0, end, 0, 0.9, actual_end_time=actual_end,
                         reassigned_from="b" if moved else None)


def test_adherence_is_one_on_time_and_falls_with_relative_lateness():
    assert schedule_adherence([]) == 1.0
    assert schedule_adherence([_st("a", 10.0, 10.0)]) == 1.0
    assert schedule_adherence([_st("a", 10.0, 12.0)]) == pytest.approx(0.8)
    assert schedule_adherence([_st("a", 10.0, 8.0)]) == pytest.approx(0.8)   # early counts too
    assert schedule_adherence([_st("a", 10.0, 25.0)]) == 0.0                # floored at 0
    # a task that ran on another agent than planned scores 0
    assert schedule_adherence([_st("a", 10.0, 10.0), _st("b", 10.0, 10.0, moved=True)]) == 0.5


@given(st.lists(st.tuples(st.floats(0.01, 1e6), st.floats(0, 1e6), st.booleans()),
                max_size=30))
def test_adherence_is_always_in_the_unit_interval(rows):
    tasks = [_st(f"t{i}", end, actual, moved) for i, (end, actual, moved) in enumerate(rows)]
    assert 0.0 <= schedule_adherence(tasks) <= 1.0


# -- construction ------------------------------------------------------------------------

@pytest.mark.parametrize(("kw", "message"), [
    ({"load_threshold": 0.5}, "load_threshold must be a number >= 1 (got 0.5)"),
    ({"load_threshold": math.nan}, "load_threshold must be a number >= 1"),
    ({"max_parallel": 0}, "max_parallel must be a whole number >= 1 (got 0)"),
    ({"max_retries": -1}, "max_retries must be a whole number >= 0 (got -1)"),
])
def test_bad_settings_are_refused(kw, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _sched(**kw)


def test_an_unknown_objective_is_refused():
    with pytest.raises(InputError, match="unknown objective 'fastest'"):
        _sched("fastest")


def test_a_manager_with_another_strategy_is_refused():
    manager = AgentManager(["a"], "ROUND_ROBIN", clock=lambda: 0.0)
    with pytest.raises(InputError, match="built with this scheduler as its strategy"):
        _sched().plan_wave(manager, [_task(0)], 1)


def test_the_manager_takes_the_scheduler_as_its_strategy_by_name():
    s = _sched("balanced")
    assert AgentManager(["a"], s, clock=lambda: 0.0).strategy_name == "balanced"


# -- estimates ---------------------------------------------------------------------------

def test_estimates_shrink_each_agent_toward_the_pooled_rate():
    s = _sched()
    agents = [AgentState("a"), AgentState("b"), AgentState("c")]
    assert s.estimates(agents) == {a.agent_id: (1.0, 1.0) for a in agents}  # nothing seen
    moved = attrs.evolve(_done("y3", "b", 0.0, 30.0), reassigned_from="c")
    results = (_done("x1", "a", 0.0, 1.0), _done("x2", "a", 1.0, 2.0),
               _done("y1", "b", 0.0, 4.0),
               _done("y2", "b", 4.0, 9.0, ok=False, mode=None),  # refused: never ran
               moved)                                             # began on another agent
    s.learn(WaveRun(1, results, (), {}, (), (), {}, 0, 0.0, 1.0,
                    attempts={"a": (10, 9, 5.0), "b": (10, 1, 20.0)}))
    est = s.estimates(agents)
    pooled = 10 / 20
    assert est["a"] == pytest.approx(((9 + 5 * pooled) / 15, 1.0))   # seconds per task
    assert est["b"] == pytest.approx(((1 + 5 * pooled) / 15, 4.0))
    assert est["c"] == pytest.approx((pooled, 6.0 / 3))  # unseen: the pooled figures


# -- a wave's plan -----------------------------------------------------------------------

def _manager(s, agents=("a", "b")):
    return AgentManager(list(agents), s, clock=lambda: 100.0)


def test_wave_one_spreads_evenly_over_agents_it_cannot_tell_apart():
    s = _sched(table=attrs.evolve(TABLE, max_load_factor=2.0))
    tasks = [_task(i, 0.6 + 0.03 * i) for i in range(9)]
    sw = s.plan_wave(_manager(s, "abc"), tasks, 1)
    loads = sorted(len(q) for q in sw.plan.by_agent().values())
    assert loads == [3, 3, 3]


def test_later_waves_put_more_tasks_on_the_agent_that_did_better():
    s = _sched(table=attrs.evolve(TABLE, max_load_factor=2.0))
    s.learn(WaveRun(1, (), (), {}, (), (), {}, 0, 0.0, 1.0,
                    attempts={"a": (40, 39, 40.0), "b": (40, 10, 40.0)}))
    sw = s.plan_wave(_manager(s), [_task(i, 0.8) for i in range(10)], 2)
    assert len(sw.plan.by_agent()["a"]) == 10  # capacity: ceil(10 / 2 * 2) = 10
    assert sw.expected_success > 0.8


def test_each_queue_runs_priority_first_then_expected_success():
    s = _sched()
    tasks = [_task(0, 0.7, 0), _task(1, 0.9, 0), _task(2, 0.6, 2), _task(3, 0.95, 1)]
    sw = s.plan_wave(_manager(s, "a"), tasks, 1)
    assert [a.task_id for a in sw.plan.assignments] == ["t2", "t3", "t1", "t0"]
    assert [sw.tasks[k].position for k in ("t2", "t3", "t1", "t0")] == [0, 1, 2, 3]


def test_times_follow_the_queues_and_the_parallel_slots():
    s = _sched(max_parallel=1)
    sw = s.plan_wave(_manager(s), [_task(i) for i in range(4)], 1)
    # 1 s per task before any is seen; one slot: b starts when a has finished
    by_agent = sw.plan.by_agent()
    first, second = list(by_agent)
    assert [(sw.tasks[a.task_id].scheduled_start_time, sw.tasks[a.task_id].scheduled_end_time)
            for a in by_agent[first]] == [(0.0, 1.0), (1.0, 2.0)]
    assert [sw.tasks[a.task_id].scheduled_start_time for a in by_agent[second]] == [2.0, 3.0]
    assert sw.makespan == 4.0
    two = _sched(max_parallel=2)
    assert two.plan_wave(_manager(two), [_task(i) for i in range(4)], 1).makespan == 2.0


def test_load_adjustment_moves_tasks_off_an_agent_past_the_threshold():
    s = _sched(load_threshold=1.2)
    q = {"a": [TaskAssignment(f"t{i}", "a", 0.9, 0.0, 1, "x") for i in range(6)],
         "b": [TaskAssignment("u0", "b", 0.9, 0.0, 1, "x")]}
    queues, moves = s.adjust_for_agent_load(q, {"a": 1.0, "b": 1.0, "c": 1.0})
    assert moves == [("t5", "a", "c"), ("t4", "a", "b"), ("t3", "a", "c")]
    assert {a: len(ts) for a, ts in queues.items()} == {"a": 3, "b": 2, "c": 2}
    # within the threshold (2 vs a mean of 1.5: 1.33 < 1.5), or a move that would not
    # end sooner: nothing moves
    s15 = _sched(load_threshold=1.5)
    assert s15.adjust_for_agent_load({"a": q["a"][:2], "b": q["b"]}, {"a": 1.0, "b": 1.0})[1] \
        == []
    slow = {"a": 1.0, "b": 10.0}
    assert s.adjust_for_agent_load({"a": q["a"][:3]}, slow)[1] == []
    never = _sched(load_threshold=math.inf)
    assert never.adjust_for_agent_load(q, {"a": 1.0, "b": 1.0, "c": 1.0})[1] == []


def test_a_load_move_is_a_reassignment_the_manager_counts():
    s = _sched(table=attrs.evolve(TABLE, max_load_factor=4.0), load_threshold=1.0)
    s.learn(WaveRun(1, (), (), {}, (), (), {}, 0, 0.0, 1.0,
                    attempts={"a": (50, 50, 50.0), "b": (50, 5, 50.0)}))
    manager = _manager(s)
    sw = s.plan_wave(manager, [_task(i) for i in range(4)], 2)
    assert sw.moves  # the optimizer put all four on a; load moved some to b
    moved = {t for t, _, _ in sw.moves}
    assert all(a.reassigned_from == "a" for a in sw.plan.assignments if a.task_id in moved)
    assert manager.agents["a"].current_load + manager.agents["b"].current_load == 4
    assert manager.agents["b"].current_load == len(moved)


# -- after the wave ----------------------------------------------------------------------

def test_observe_fills_actuals_and_compares_on_known_numbers():
    s = _sched(max_retries=1)
    tasks = [_task(0, 0.8), _task(1, 0.6)]
    sw = s.plan_wave(_manager(s, "a"), tasks, 1)  # one agent: t0 then t1, 1 s each
    assert [a.task_id for a in sw.plan.assignments] == ["t0", "t1"]
    run = WaveRun(1, (_done("t0", "a", 1000.0, 1001.0),
                      _done("t1", "a", 1001.0, 1004.0, ok=False, retries=1)),
                  (), {}, (), (), {}, 1, 1000.0, 1004.0)
    done, c = s.observe(sw, run, tasks, available_at_start=1, available_at_end=1)
    assert [(t.status, t.actual_start_time, t.actual_end_time, t.retries) for t in done] == \
        [("completed", 0.0, 1.0, 0), ("failed", 1.0, 4.0, 1)]
    p0, p1 = 0.8, 0.6  # one agent: its ratio to the mean is 1, so p(t, a) = the prediction
    assert c.planned_success_rate == pytest.approx(((1 - (1 - p0) ** 2) + (1 - (1 - p1) ** 2))
                                                   / 2)
    assert c.actual_success_rate == 0.5
    assert c.first_attempt_success_rate == 0.5 and c.objective_score == 0.5
    assert c.accuracy_score == pytest.approx(1 - abs(c.planned_success_rate - 0.5))
    # work done per second: expected completions over the 2 s planned; 1 completed in 4 s
    assert c.planned_throughput == pytest.approx(2 * c.planned_success_rate / 2.0)
    assert c.actual_throughput == 0.25
    assert c.planned_confidence_delta == 0.0
    assert c.actual_confidence_delta == pytest.approx(((1 - 0.8) + (0 - 0.6)) / 2)
    assert c.schedule_adherence == pytest.approx((1.0 + 0.0) / 2)  # t1: 4 vs 2 -> 0
    assert c.retry_rate == 0.5 and c.agent_utilization == 1.0 and c.availability == 1.0
    assert c.agents == {"a": {"planned_tasks": 2, "actual_tasks": 2, "expected_success": 0.7,
                              "actual_success": 0.5}}


def test_a_task_run_elsewhere_is_marked_reassigned_and_a_gate_refusal_cancelled():
    s = _sched()
    tasks = [_task(0), _task(1)]
    sw = s.plan_wave(_manager(s), tasks, 1)
    first = sw.plan.assignments[0]
    other = "b" if first.agent_id == "a" else "a"
    run = WaveRun(1, (_done(first.task_id, other, 0.0, 1.0),
                      _done(sw.plan.assignments[1].task_id, sw.plan.assignments[1].agent_id,
                            0.0, 0.0, ok=False, mode=None)),
                  (), {}, (), (), {}, 0, 0.0, 1.0)
    done, c = s.observe(sw, run, tasks, available_at_start=2, available_at_end=1)
    assert done[0].reassigned_from == first.agent_id and done[0].agent_id == other
    assert done[1].status == "cancelled"
    assert c.availability == 0.5


@pytest.mark.parametrize("objective", ["maximize_confidence", "maximize_throughput",
                                       "balanced"])
def test_each_objective_scores_the_wave_its_own_way(objective):
    s = _sched(objective)
    tasks = [PredictedTask("t0", "math_compute", 0.9, confidence=1.0),
             PredictedTask("t1", "math_compute", 0.9, confidence=0.5)]
    sw = s.plan_wave(_manager(s, "a"), tasks, 1)
    run = WaveRun(1, (_done("t0", "a", 0.0, 1.0), _done("t1", "a", 1.0, 4.0, ok=False)),
                  (), {}, (), (), {}, 0, 0.0, 4.0)
    _, c = s.observe(sw, run, tasks, available_at_start=1, available_at_end=1)
    confident = 1.0 / 1.5
    # one of two tasks completed in 4 s: 0.25 tasks/s done, against the planned 2 s for
    # both, each expected to complete with 0.9 (no retries): 0.9 tasks/s
    expected = {"maximize_confidence": confident, "maximize_throughput": 0.25,
                "balanced": 0.5 * 0.5 + 0.25 * confident + 0.25 * (0.25 / 0.9)}[objective]
    assert c.objective_score == pytest.approx(expected)


def test_load_shedding_never_moves_a_pinned_task_nor_onto_a_benched_agent():
    s = _sched(load_threshold=1.0, table=attrs.evolve(TABLE, max_load_factor=4.0))
    tasks = [attrs.evolve(_task(i), agent_id="a") for i in range(6)] + [_task(6), _task(7)]
    sw = s.plan_wave(_manager(s, "abc"), tasks, 1, exclude=["c"])
    assert all(a.agent_id == "a" for a in sw.plan.assignments if a.task_id in
               {f"t{i}" for i in range(6)})
    assert all(src != "a" or task in {"t6", "t7"} for task, src, _ in sw.moves)
    assert all(dst != "c" for _, _, dst in sw.moves)
    assert {a.agent_id for a in sw.plan.assignments} <= {"a", "b"}
