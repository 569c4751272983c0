"""Tests for buddy.engine.waves._optimizer: optimal schedules (networkx min-cost flow for
small waves, shortest paths on the agents for large ones) and the optimizer's helpers."""

from __future__ import annotations

import contextlib
import itertools
import math
import random

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from buddy.engine.waves import _optimizer
from buddy.engine.waves._agents import load_balanced
from buddy.engine.waves._optimizer import (
    OBJECTIVES,
    SCALE,
    SimulatedSchedule,
    as_strategy,
    generate_schedule_recommendations,
    optimize,
    pair_scores,
    simulate_schedule,
    update_confidence_estimates,
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


@contextlib.contextmanager
def solver(name):
    """Force ``optimize`` onto one solver: "flow" (networkx) or "paths"."""
    old = _optimizer.FLOW_EDGES
    _optimizer.FLOW_EDGES = 10**9 if name == "flow" else -1
    try:
        yield
    finally:
        _optimizer.FLOW_EDGES = old


SOLVERS = st.sampled_from(["flow", "paths"])


@given(waves(), st.sampled_from(OBJECTIVES), SOLVERS)
def test_optimum_equals_brute_force(wave, objective, name):
    tasks, agents, table, speeds = wave
    with solver(name):
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


@given(waves(max_tasks=12, max_agents=4), st.sampled_from(OBJECTIVES), SOLVERS)
def test_never_worse_than_load_balanced(wave, objective, name):
    tasks, agents, table, speeds = wave
    live = [a for a in agents if a.available]
    with solver(name):
        s = optimize(tasks, agents, objective, table=table, speeds=speeds)
    baseline = load_balanced(tasks, live)
    assert s.objective_value >= value_of(tasks, agents, objective, baseline, table, speeds) \
        - len(tasks) / SCALE


@given(waves(max_tasks=12, max_agents=4), st.sampled_from(OBJECTIVES), SOLVERS)
def test_capacity_availability_and_order(wave, objective, name):
    tasks, agents, table, speeds = wave
    with solver(name):
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
    # deterministic: the same inputs, the same schedule (each solver settles ties its way)
    with solver(name):
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


# -- the large-wave solver against networkx on the full graph ------------------------------

def full_graph_optimum(tasks, agents, objective, table, speeds):
    """The least whole-number cost by networkx on one node per task (no classes, no merging)."""
    live = [a for a in agents if a.available]
    held = [max(0, a.current_load) for a in live]
    cap = table.capacity(len(tasks) + sum(held), len(live))
    graph = nx.DiGraph()
    graph.add_node("s", demand=-len(tasks))
    graph.add_node("t", demand=len(tasks))
    for i, h in enumerate(held):
        graph.add_edge(("a", i), "t", capacity=max(0, cap - h), weight=0)
    for k, t in enumerate(tasks):
        graph.add_edge("s", ("t", k), capacity=1, weight=0)
        for i, score in enumerate(pair_scores(t, live, objective, table=table, speeds=speeds)):
            graph.add_edge(("t", k), ("a", i), capacity=1, weight=-round(score * SCALE))
    return nx.cost_of_flow(graph, nx.min_cost_flow(graph))


def cost_of(schedule, tasks, agents, objective, table, speeds):
    live = [a for a in agents if a.available]
    index = {a.agent_id: i for i, a in enumerate(live)}
    return sum(-round(pair_scores(t, live, objective, table=table, speeds=speeds)
                      [index[schedule.assignments[t.task_id]]] * SCALE) for t in tasks)


@st.composite
def big_waves(draw):
    """Up to 60 tasks x 7 agents; rates from a short list, so many ties."""
    tasks, agents, table, speeds = draw(waves(max_tasks=0, max_agents=7))
    levels = st.sampled_from([0.0, 0.3, 0.5, 0.7, 0.77, 0.9, 1.0]) | rates
    tasks = [task(f"t{k}", draw(levels), confidence=draw(st.none() | levels))
             for k in range(draw(st.integers(1, 60)))]
    return tasks, agents, table, speeds


@settings(max_examples=60, deadline=None)
@given(big_waves(), st.sampled_from(OBJECTIVES), SOLVERS)
def test_optimum_equals_networkx_on_the_full_graph(wave, objective, name):
    tasks, agents, table, speeds = wave
    with solver(name):
        s = optimize(tasks, agents, objective, table=table, speeds=speeds)
    assert cost_of(s, tasks, agents, objective, table, speeds) == \
        full_graph_optimum(tasks, agents, objective, table, speeds)
    live = {a.agent_id: a for a in agents if a.available}
    assert all(live[a].current_load + len(ids) <= max(s.capacity, live[a].current_load)
               for a, ids in s.order.items())


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_paths_equals_flow_on_raw_costs(data):
    # whole-number costs from a short range: ties everywhere, long exchange chains
    n_classes = data.draw(st.integers(1, 15))
    m = data.draw(st.integers(1, 7))
    cost = [[data.draw(st.integers(-6, 0)) for _ in range(m)] for _ in range(n_classes)]
    size = [data.draw(st.integers(1, 5)) for _ in range(n_classes)]
    room = [data.draw(st.integers(1, sum(size))) for _ in range(m)]
    room[-1] += max(0, sum(size) - sum(room))
    got = _optimizer._paths(cost, size, room)
    want = _optimizer._flow(cost, size, room)
    total = [sum(cost[c][g] * f for c, out in enumerate(flows) for g, f in out.items())
             for flows in (got, want)]
    assert total[0] == total[1]
    assert [sum(out.values()) for out in got] == size
    assert all(sum(out.get(g, 0) for out in got) <= room[g] for g in range(m))


def test_paths_by_hand():
    # two agents with room 1 each; class 0 gains 5 on agent 0, class 1 gains 1:
    # inserting class 0 first puts it on 0; class 1 then goes straight to 1.
    # Inserted in the other order (class 1 has the higher summed score), class 1
    # takes agent 0 first and class 0's path moves it over to agent 1.
    assert _optimizer._paths([[-5, 0], [-1, 0]], [1, 1], [1, 1]) == [{0: 1}, {1: 1}]
    assert _optimizer._paths([[-5, -5], [-3, -1]], [1, 1], [1, 1]) == [{1: 1}, {0: 1}]
    # one class of 3 tasks over rooms 2 and 2: the cheaper agent fills first
    assert _optimizer._paths([[-2, -1]], [3], [2, 2]) == [{0: 2, 1: 1}]


def test_large_wave_with_distinct_rates_matches_networkx():
    rng = random.Random(5)
    agents = [AgentState(f"a{i}", completed_tasks=rng.randint(5, 20),
                         failed_tasks=rng.randint(0, 5),
                         total_latency_s=rng.uniform(5, 40), current_load=rng.randint(0, 2))
              for i in range(12)]
    tasks = [task(f"t{k}", rng.random(), confidence=rng.random()) for k in range(150)]
    for objective in OBJECTIVES:
        with solver("paths"):
            fast = optimize(tasks, agents, objective, table=TABLE)
        with solver("flow"):
            slow = optimize(tasks, agents, objective, table=TABLE)
        assert cost_of(fast, tasks, agents, objective, TABLE, None) == \
            cost_of(slow, tasks, agents, objective, TABLE, None)
        assert fast.objective_value == pytest.approx(slow.objective_value, abs=150 / SCALE)


def test_alike_agents_share_evenly_with_their_loads():
    # one agent node (rooms 1 + 3 + 3): a holds 2 already, capacity ceil((6 + 2) / 3) = 3.
    # One task at a time to the least loaded: b, c, b, c, then a (2 = b's 2, a first),
    # then b: a 1, b 3, c 2 tasks, in blocks in task order
    agents = [AgentState("a", current_load=2), AgentState("b"), AgentState("c")]
    s = optimize([task(f"t{k}", 0.8) for k in range(6)], agents, "balanced", table=TABLE)
    assert s.capacity == 3
    assert dict(s.order) == {"a": ("t0",), "b": ("t1", "t2", "t3"), "c": ("t4", "t5")}


# -- the helpers -----------------------------------------------------------------------------

class TestSimulateSchedule:
    agents = [AgentState("a", prior=0.9), AgentState("b", prior=0.5)]
    tasks = [task("hard", 0.5), task("easy", 0.9)]

    def schedule(self):
        # easy -> a (p 1.0), hard -> b (p 5/14); both 1 s, so the makespan is 1 s
        return optimize(self.tasks, self.agents, "maximize_success", table=TABLE)

    def test_counts_the_coins_of_the_seed(self):
        s = self.schedule()
        sim = simulate_schedule(s, self.tasks, seed=3, runs=4)
        rng = random.Random(3)
        want = tuple((sum(rng.random() < q for q in (5 / 14, 1.0))) / 2 for _ in range(4))
        assert sim.success_rates == want
        assert sim.simulated_success_rate == pytest.approx(sum(want) / 4)
        assert sim.expected_success_rate == pytest.approx((1 + 5 / 14) / 2)
        assert (sim.tasks, sim.runs, sim.makespan_s) == (2, 4, 1.0)
        # successful tasks per second: rate x 2 tasks / 1 s
        assert sim.expected_throughput == pytest.approx(1 + 5 / 14)
        assert sim.simulated_throughput == pytest.approx(2 * sim.simulated_success_rate)
        assert isinstance(sim, SimulatedSchedule)

    def test_same_seed_same_result_and_no_global_random(self):
        s = self.schedule()
        random.seed(1)
        first = simulate_schedule(s, self.tasks, seed=11, runs=50)
        state = random.getstate()
        assert simulate_schedule(s, self.tasks, seed=11, runs=50) == first
        assert random.getstate() == state
        assert simulate_schedule(s, self.tasks, seed=12, runs=50) != first

    def test_converges_to_the_expectation(self):
        sim = simulate_schedule(self.schedule(), self.tasks, seed=1, runs=4000)
        assert sim.simulated_success_rate == pytest.approx(sim.expected_success_rate, abs=0.02)

    def test_no_task(self):
        s = optimize([], self.agents, "balanced", table=TABLE)
        sim = simulate_schedule(s, [], seed=1)
        assert (sim.simulated_success_rate, sim.simulated_throughput) == (0.0, 0.0)

    def test_errors(self):
        s = self.schedule()
        with pytest.raises(InputError, match="task 'other' is not in the schedule"):
            simulate_schedule(s, [task("other", 0.5)], seed=1)
        with pytest.raises(InputError, match="'hard' is missing"):
            simulate_schedule(s, [self.tasks[1]], seed=1)
        with pytest.raises(InputError, match=r"runs must be a whole number >= 1 \(got 0\)"):
            simulate_schedule(s, self.tasks, seed=1, runs=0)
        with pytest.raises(InputError, match="seed must be a whole number"):
            simulate_schedule(s, self.tasks, seed=1.5)


class TestUpdateConfidenceEstimates:
    def test_posterior_mean_by_hand(self):
        # a: prior 0.8 worth 4: (1 + 3.2) / (3 + 4) = 0.6; b: (2 + 2) / (2 + 4) = 0.666667;
        # c: no outcome, unchanged
        before = {"a": 0.8, "b": 0.5, "c": 0.3}
        after = update_confidence_estimates(
            before, [("a", True), ("a", False), ("b", True), ("a", False), ("b", True)],
            prior_weight=4)
        assert after == {"a": 0.6, "b": 0.666667, "c": 0.3}
        assert before == {"a": 0.8, "b": 0.5, "c": 0.3}  # not mutated

    @given(st.dictionaries(st.sampled_from("abc"), rates, min_size=1),
           st.lists(st.tuples(st.sampled_from("abc"), st.booleans())),
           st.floats(0.01, 100))
    def test_bounded_and_moves_toward_the_outcomes(self, estimates, outcomes, weight):
        outcomes = [(a, ok) for a, ok in outcomes if a in estimates]
        after = update_confidence_estimates(estimates, outcomes, prior_weight=weight)
        assert list(after) == list(estimates)
        for agent, value in after.items():
            assert 0.0 <= value <= 1.0
            mine = [ok for a, ok in outcomes if a == agent]
            if mine and all(mine):
                assert value >= estimates[agent] - 1e-6
            if mine and not any(mine):
                assert value <= estimates[agent] + 1e-6

    def test_errors(self):
        with pytest.raises(InputError, match=r"prior_weight must be a finite number > 0"):
            update_confidence_estimates({"a": 0.5}, [], prior_weight=0)
        with pytest.raises(InputError, match=r"estimates\['a'\] must be a number in \[0, 1\]"):
            update_confidence_estimates({"a": 1.5}, [], prior_weight=1)
        with pytest.raises(InputError, match="outcome for agent 'z', which has no estimate"):
            update_confidence_estimates({"a": 0.5}, [("z", True)], prior_weight=1)
        with pytest.raises(InputError, match="must be true or false"):
            update_confidence_estimates({"a": 0.5}, [("a", 1)], prior_weight=1)


class TestRecommendations:
    def test_each_rule_by_hand(self):
        # success rates: a 0.9, b 0.9, c 0.5, d 0.6 (mean 0.725); e OFFLINE.
        # capacity ceil(4 / 4) = 1 with factor 1.0
        agents = [AgentState("a", prior=0.9), AgentState("b", prior=0.9),
                  AgentState("c", prior=0.5), AgentState("d", prior=0.6),
                  AgentState("e", status=AgentStatus.OFFLINE)]
        tasks = [task("t0", 0.9), task("t1", 0.4), task("t2", 0.6), task("t3", 0.3)]
        s = optimize(tasks, agents, "maximize_success", table=TABLE)
        assert generate_schedule_recommendations(s, agents) == [
            "1 agent is OFFLINE and got no task: e.",
            "Agent a is at capacity (1 task) and succeeds more often than the mean (90.0% "
            "against 72.5%): a higher max_load_factor in rules/optimizer.toml would let it "
            "take more.",
            "Agent b is at capacity (1 task) and succeeds more often than the mean (90.0% "
            "against 72.5%): a higher max_load_factor in rules/optimizer.toml would let it "
            "take more.",
            f"Expected success is {s.expected_success:.1%}, below 80.0%: give the weakest "
            "tasks to the strongest agents, or review them before running.",
            "Agent c succeeds 50.0% of the time against a mean of 72.5%: check it, or give "
            "it fewer tasks.",
            f"{sum(q < 0.5 for q in s.task_success.values())} tasks are expected to succeed "
            "less than 50.0% of the time: "
            + ", ".join(t for t, q in s.task_success.items() if q < 0.5) + ".",
        ]

    def test_idle_agents_and_a_quiet_schedule(self):
        table = OptimizerTable(TABLE.weights, max_load_factor=2.0)
        agents = [AgentState("a", prior=0.95), AgentState("b", prior=0.95),
                  AgentState("c", prior=0.95), AgentState("d", prior=0.95)]
        s = optimize([task("t0", 0.95), task("t1", 0.95)], agents, "maximize_success",
                     table=table)
        # alike agents share evenly: a and b take one each, c and d are idle; nothing else
        assert generate_schedule_recommendations(s, agents) == [
            "2 available agents got no task this wave: c, d; a lower max_load_factor in "
            "rules/optimizer.toml spreads the work."]

    def test_unknown_agent(self):
        s = optimize([task("t0", 0.9)], [AgentState("a")], "balanced", table=TABLE)
        with pytest.raises(InputError, match="puts tasks on agent 'a', which the agents lack"):
            generate_schedule_recommendations(s, [AgentState("b")])


def test_a_duration_that_would_underflow_or_overflow_is_read_at_its_bound():
    # hypothesis found it: a latency of 5e-324 s at speed 2 was a 0 s duration, and the
    # throughput score divided by it
    agents = [AgentState("a0", failed_tasks=1, total_latency_s=5e-324), AgentState("a1")]
    s = optimize([PredictedTask("t0", "form_fill", 0.0)], agents, "balanced", table=TABLE,
                 speeds={"a0": 2.0, "a1": 1e-300})
    assert s.assignments == {"t0": "a0"}  # the fastest, at 1 ns
    assert math.isfinite(s.expected_makespan_s) and s.expected_makespan_s == 1e-9
