"""Tests for buddy.engine.waves._optimizer: optimal schedules by min-cost flow."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from buddy.engine.waves._agents import load_balanced
from buddy.engine.waves._optimizer import (
    OBJECTIVES,
    SCALE,
    as_strategy,
    optimize,
    pair_scores,
)
from buddy.engine.waves._records import AgentState, AgentStatus, PredictedTask
from buddy.rules.base.errors import InputError
from buddy.rules.tables._optimizer import OptimizerTable

TABLE = OptimizerTable(OptimizerTable.default().weights, max_load_factor=1.0)  # even loads


def task(task_id, p, *, priority=0, confidence=None):
    return PredictedTask(task_id, "form_fill", p, priority=priority, confidence=confidence)


def value_of(tasks, agents, objective, ids, table=TABLE, speeds=None):
    """The objective's summed score of an assignment (agent ids per task), from pair_scores."""
    live = [a for a in agents if a.available]
    index = {a.agent_id: i for i, a in enumerate(live)}
    return math.fsum(pair_scores(t, live, objective, table=table, speeds=speeds)[index[a]]
                     for t, a in zip(tasks, ids, strict=True))


class TestByHand:
    # a: success 0.9, b: 0.5; mean 0.7. p(t, a) = min(1, 9/7 p), p(t, b) = 5/7 p.
    agents = [AgentState("a", prior=0.9), AgentState("b", prior=0.5)]
    tasks = [task("hard", 0.5), task("easy", 0.9)]

    def test_success_capacity_one_each(self):
        # easy->a, hard->b: 1.0 + 5/14 = 1.357143; the swap: 9/14 + 9/14 = 1.285714
        s = optimize(self.tasks, self.agents, "maximize_success", table=TABLE)
        assert dict(s.assignments) == {"hard": "b", "easy": "a"}
        assert s.objective_value == pytest.approx(1.0 + 5 / 14)
        assert s.expected_success == pytest.approx((1.0 + 5 / 14) / 2)
        assert s.capacity == 1

    def test_success_with_slack_puts_both_on_the_better_agent(self):
        table = OptimizerTable(TABLE.weights, max_load_factor=2.0)
        s = optimize(self.tasks, self.agents, "maximize_success", table=table)
        assert dict(s.assignments) == {"hard": "a", "easy": "a"}
        assert s.objective_value == pytest.approx(1.0 + 9 / 14)
        assert s.order == {"a": ("easy", "hard")}  # expected success, highest first

    def test_throughput_prefers_the_fast_agent(self):
        table = OptimizerTable(TABLE.weights, max_load_factor=2.0)
        agents = [AgentState("slow", completed_tasks=1, total_latency_s=4.0),
                  AgentState("fast", completed_tasks=1, total_latency_s=2.0)]
        s = optimize(self.tasks, agents, "maximize_throughput", table=table)
        assert dict(s.assignments) == {"hard": "fast", "easy": "fast"}
        assert (s.objective_value, s.expected_makespan_s, s.expected_throughput) == (2.0, 4.0, 0.5)
        # speed 4 makes "slow" take 1 s, now the fastest
        s = optimize(self.tasks, agents, "maximize_throughput", table=table,
                     speeds={"slow": 4.0})
        assert dict(s.assignments) == {"hard": "slow", "easy": "slow"}

    def test_confidence_weights_each_task(self):
        # confident: 0.6 sure; unsure: 0.9 predicted but 0.1 sure.
        # confident->a: 0.6*9/7*1.0 + 0.9*5/7*0.1 = 0.835714
        # unsure->a:    0.6*5/7*1.0 + 1.0*0.1     = 0.528571
        tasks = [task("unsure", 0.9, confidence=0.1), task("confident", 0.6, confidence=1.0)]
        s = optimize(tasks, self.agents, "maximize_confidence", table=TABLE)
        assert dict(s.assignments) == {"unsure": "b", "confident": "a"}
        assert s.objective_value == pytest.approx(0.6 * 9 / 7 + 0.9 * 5 / 7 * 0.1)

    def test_balanced_is_the_weighted_sum(self):
        # weights 0.5 / 0.25 / 0.25; both agents 1 s, so throughput 1 each; confidence
        # (none given) = the predicted rate. easy->a, hard->b:
        #   0.5 * (1 + 5/14) + 0.25 * 2 + 0.25 * (0.9 * 1 + 0.5 * 5/14) = 1.448214
        # the swap: 0.5 * 18/14 + 0.25 * 2 + 0.25 * (0.5 + 0.9) * 9/14    = 1.367857
        s = optimize(self.tasks, self.agents, "balanced", table=TABLE)
        assert dict(s.assignments) == {"hard": "b", "easy": "a"}
        expected = 0.5 * (1 + 5 / 14) + 0.25 * 2 + 0.25 * (0.9 + 0.5 * 5 / 14)
        assert s.objective_value == pytest.approx(expected)

    def test_order_is_priority_then_expected_success(self):
        table = OptimizerTable(TABLE.weights, max_load_factor=3.0)
        tasks = [task("t0", 0.5), task("t1", 0.9), task("t2", 0.3, priority=2)]
        s = optimize(tasks, [AgentState("a")], "maximize_success", table=table)
        assert s.order == {"a": ("t2", "t1", "t0")}

    def test_no_task(self):
        s = optimize([], self.agents, "balanced", table=TABLE)
        assert (dict(s.assignments), s.objective_value, s.expected_throughput) == ({}, 0.0, 0.0)


class TestErrors:
    def test_unknown_objective(self):
        with pytest.raises(InputError, match="unknown objective 'fastest' "):
            optimize([task("t", 0.5)], [AgentState("a")], "fastest", table=TABLE)
        with pytest.raises(InputError, match="unknown objective"):
            as_strategy("fastest", TABLE)

    def test_duplicate_task_ids(self):
        with pytest.raises(InputError, match="task ids must be unique in a wave: t$"):
            optimize([task("t", 0.5), task("t", 0.6)], [AgentState("a")], "balanced",
                     table=TABLE)

    def test_no_available_agent(self):
        with pytest.raises(InputError, match="no agent available for 1 tasks"):
            optimize([task("t", 0.5)], [AgentState("a", status=AgentStatus.OFFLINE)],
                     "balanced", table=TABLE)

    @pytest.mark.parametrize("speed", [0.0, -1.0, math.nan, math.inf, True, "2"])
    def test_bad_speed(self, speed):
        with pytest.raises(InputError, match=r"speeds\['a'\] must be a finite number > 0"):
            optimize([task("t", 0.5)], [AgentState("a")], "maximize_throughput",
                     table=TABLE, speeds={"a": speed})


# -- properties ----------------------------------------------------------------------------

rates = st.floats(0.0, 1.0, allow_nan=False)


@st.composite
def waves(draw, max_tasks=6, max_agents=3):
    n_agents = draw(st.integers(1, max_agents))
    agents = []
    for i in range(n_agents):
        done = draw(st.integers(0, 5))
        completed = draw(st.integers(0, done))
        agents.append(AgentState(
            f"a{i}", status=draw(st.sampled_from([AgentStatus.IDLE, AgentStatus.BUSY,
                                                  AgentStatus.OFFLINE])),
            current_load=draw(st.integers(0, 2)), completed_tasks=completed,
            failed_tasks=done - completed, total_latency_s=draw(st.floats(0.0, 10.0)) if done
            else 0.0, prior=draw(rates)))
    if all(not a.available for a in agents):
        agents[0].status = AgentStatus.IDLE
    tasks = [task(f"t{k}", draw(rates), priority=draw(st.integers(0, 2)),
                  confidence=draw(st.none() | rates))
             for k in range(draw(st.integers(0, max_tasks)))]
    weights = draw(st.sampled_from([(0.5, 0.25, 0.25), (1.0, 0.0, 0.0), (0.2, 0.3, 0.5)]))
    table = OptimizerTable(dict(zip(("success", "throughput", "confidence"), weights,
                                    strict=True)),
                           max_load_factor=draw(st.sampled_from([1.0, 1.5, 2.0])))
    speeds = draw(st.none() | st.dictionaries(st.sampled_from([a.agent_id for a in agents]),
                                              st.floats(0.25, 4.0)))
    return tasks, agents, table, speeds


@given(waves(), st.sampled_from(OBJECTIVES))
def test_flow_equals_brute_force(wave, objective):
    tasks, agents, table, speeds = wave
    s = optimize(tasks, agents, objective, table=table, speeds=speeds)
    live = [a for a in agents if a.available]
    cap = s.capacity
    best = -1.0
    for ids in itertools.product([a.agent_id for a in live], repeat=len(tasks)):
        if all(a.current_load + ids.count(a.agent_id) <= cap or ids.count(a.agent_id) == 0
               for a in live):
            best = max(best, value_of(tasks, agents, objective, ids, table, speeds))
    if tasks:
        assert s.objective_value == pytest.approx(best, abs=len(tasks) / SCALE)
        assert value_of(tasks, agents, objective, s.agent_ids(), table, speeds) == \
            pytest.approx(s.objective_value)


@given(waves(max_tasks=12, max_agents=4), st.sampled_from(OBJECTIVES))
def test_never_worse_than_load_balanced(wave, objective):
    tasks, agents, table, speeds = wave
    live = [a for a in agents if a.available]
    s = optimize(tasks, agents, objective, table=table, speeds=speeds)
    baseline = load_balanced(tasks, live)
    assert s.objective_value >= value_of(tasks, agents, objective, baseline, table, speeds) \
        - len(tasks) / SCALE


@given(waves(max_tasks=12, max_agents=4), st.sampled_from(OBJECTIVES))
def test_capacity_availability_and_order(wave, objective):
    tasks, agents, table, speeds = wave
    s = optimize(tasks, agents, objective, table=table, speeds=speeds)
    live = {a.agent_id: a for a in agents if a.available}
    assert list(s.assignments) == [t.task_id for t in tasks]
    assert set(s.assignments.values()) <= set(live)  # OFFLINE agents get nothing
    for agent_id, ids in s.order.items():
        assert live[agent_id].current_load + len(ids) <= max(s.capacity,
                                                             live[agent_id].current_load)
        assert sorted(ids) == sorted(t for t, a in s.assignments.items() if a == agent_id)
        keys = [(-next(t.priority for t in tasks if t.task_id == i), -s.task_success[i])
                for i in ids]
        assert keys == sorted(keys)
    # deterministic: the same inputs, the same schedule
    assert optimize(tasks, agents, objective, table=table, speeds=speeds) == s


def test_ties_go_in_order():
    agents = [AgentState("a"), AgentState("b"), AgentState("c")]
    tasks = [task(f"t{k}", 0.8) for k in range(6)]
    s = optimize(tasks, agents, "maximize_success", table=TABLE)
    assert sorted(s.order.items()) == [("a", ("t0", "t1")), ("b", ("t2", "t3")),
                                       ("c", ("t4", "t5"))]


def test_as_strategy_returns_one_agent_per_task():
    fn = as_strategy("maximize_success", TABLE)
    agents = [AgentState("a", prior=0.5), AgentState("b", prior=0.9, current_load=1)]
    tasks = [task("t0", 0.9), task("t1", 0.5), task("t2", 0.7)]
    # capacity ceil((3 + 1) / 2) = 2: b takes one more, the task gaining most on it
    # (ratios a 5/7, b 9/7): t0 1 - 9/14 = 0.357 (clamped), t1 0.286, t2 0.9 - 0.5 = 0.4
    assert fn(tasks, agents) == ["a", "a", "b"]


def test_large_wave_runs():
    agents = [AgentState(f"a{i}", prior=0.5 + i / 20) for i in range(8)]
    tasks = [task(f"t{k}", (k % 10) / 10) for k in range(400)]
    s = optimize(tasks, agents, "balanced", table=TABLE)
    assert len(s.assignments) == 400 and s.capacity == 50
    assert all(len(ids) == 50 for ids in s.order.values())
