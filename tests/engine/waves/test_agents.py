"""Tests for the agent manager: the four strategies by hand, the registry, failover, records."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from buddy.engine.waves._agents import (
    STRATEGIES,
    AgentManager,
    confidence_based,
    get_strategy,
    load_balanced,
    priority_based,
    register_strategy,
    round_robin,
)
from buddy.engine.waves._records import (
    AgentState,
    AgentStatus,
    AssignmentStrategy,
    ExecutionTask,
    PredictedTask,
    TaskStatus,
    load_balance,
)
from buddy.rules.base.errors import InputError
from tests.helpers import ManualClock

RR, LB, PB, CB = (s.value for s in AssignmentStrategy)
BUILT_INS = (RR, LB, PB, CB)


def task(task_id: str, p: float = 0.8, priority: int = 0, agent: str | None = None,
         ) -> PredictedTask:
    return PredictedTask(task_id, "form_fill", p, priority=priority, agent_id=agent)


def tasks_of(n: int) -> list[PredictedTask]:
    return [task(f"t{i}") for i in range(n)]


def placed(plan) -> list[tuple[str, str]]:
    return [(a.task_id, a.agent_id) for a in plan.assignments]


def loads(manager: AgentManager) -> dict[str, int]:
    return {a: s.current_load for a, s in manager.agents.items()}


def result(task_id: str, agent: str, ok: bool, start: float = 0.0, end: float = 1.0,
           ) -> ExecutionTask:
    return ExecutionTask(task_id, agent, 1, "form_fill",
                         TaskStatus.COMPLETED if ok else TaskStatus.FAILED,
                         start, end, 0, ok, 0.8)


@pytest.fixture
def registry():
    """Leave the process-wide registry as it was found."""
    saved = dict(STRATEGIES)
    yield STRATEGIES
    STRATEGIES.clear()
    STRATEGIES.update(saved)


# -- the built-ins, by hand --------------------------------------------------------------

class TestRoundRobin:
    def test_ten_tasks_over_four_agents(self):
        manager = AgentManager(["a", "b", "c", "d"], RR, clock=ManualClock(7.0))
        plan = manager.assign_tasks_to_agents(tasks_of(10), wave=2)
        assert [agent for _, agent in placed(plan)] == list("abcdabcdab")
        assert loads(manager) == {"a": 3, "b": 3, "c": 2, "d": 2}
        assert plan.load_balance_score == pytest.approx(2 / 3)
        assert plan.to_json() == {"wave": 2, "num_agents": 4, "num_tasks": 10, "waves": 1,
                                  "strategy": "ROUND_ROBIN", "load_balance_score": 0.6667}
        first = plan.assignments[0]
        assert (first.assigned_at, first.wave, first.strategy, first.reassigned_from) == \
            (7.0, 2, "ROUND_ROBIN", None)

    def test_restarts_at_the_first_agent_every_call_and_ignores_loads(self):
        agents = [AgentState("a", current_load=5), AgentState("b")]
        assert round_robin(tasks_of(3), agents) == ["a", "b", "a"]
        assert round_robin(tasks_of(1), agents) == ["a"]


class TestLoadBalanced:
    def test_fills_around_pinned_loads(self):
        # pinned: a 2, c 1 -> heap (0,b) (0,d) (1,c) (2,a)
        tasks = [task("f0"), task("p0", agent="a"), task("f1"), task("p1", agent="a"),
                 task("f2"), task("p2", agent="c"), task("f3"), task("f4"), task("f5")]
        manager = AgentManager(["a", "b", "c", "d"], LB, clock=ManualClock())
        plan = manager.assign_tasks_to_agents(tasks, wave=1)
        assert placed(plan) == [("f0", "b"), ("p0", "a"), ("f1", "d"), ("p1", "a"),
                                ("f2", "b"), ("p2", "c"), ("f3", "c"), ("f4", "d"),
                                ("f5", "a")]
        assert loads(manager) == {"a": 3, "b": 2, "c": 2, "d": 2}
        assert plan.load_balance_score == pytest.approx(2 / 3)

    def test_is_the_default_and_ties_go_to_the_earlier_agent(self):
        manager = AgentManager(["x", "y", "z"], clock=ManualClock())
        assert manager.strategy_name == "LOAD_BALANCED"
        plan = manager.assign_tasks_to_agents(tasks_of(4), wave=1)
        assert [agent for _, agent in placed(plan)] == ["x", "y", "z", "x"]
        assert plan.load_balance_score == 0.5

    @given(st.integers(1, 10), st.integers(0, 80))
    def test_from_zero_loads_max_minus_min_is_at_most_one(self, n, m):
        agents = [AgentState(f"a{i}") for i in range(n)]
        counts = [0] * n
        for agent in load_balanced(tasks_of(m), agents):
            counts[int(agent[1:])] += 1
        assert max(counts) - min(counts) <= 1
        assert sum(counts) == m


class TestPriorityBased:
    def test_most_important_tasks_to_the_most_reliable_agents(self):
        # quotas: 7 tasks over 3 -> 2 each, the extra one to x (0.9): x 3, z 2, y 2.
        # order: t1 (3, .9), t3 (3, .6), t4 (2, .7), t6 (1, .8), t0 (1, .5), t2 (0, .9), t5
        # -> x: t1 t3 t4; z (0.7): t6 t0; y (0.5): t2 t5
        manager = AgentManager(["x", "y", "z"], PB, clock=ManualClock(),
                               priors={"x": 0.9, "y": 0.5, "z": 0.7})
        tasks = [task("t0", .5, 1), task("t1", .9, 3), task("t2", .9, 0), task("t3", .6, 3),
                 task("t4", .7, 2), task("t5", .4, 0), task("t6", .8, 1)]
        plan = manager.assign_tasks_to_agents(tasks, wave=1)
        assert placed(plan) == [("t0", "z"), ("t1", "x"), ("t2", "y"), ("t3", "x"),
                                ("t4", "x"), ("t5", "y"), ("t6", "z")]
        assert [a.priority for a in plan.assignments] == [1, 3, 0, 3, 2, 0, 1]
        assert loads(manager) == {"x": 3, "y": 2, "z": 2}
        assert plan.load_balance_score == pytest.approx(2 / 3)

    def test_agents_of_equal_record_take_turns(self):
        agents = [AgentState("a"), AgentState("b"), AgentState("c", prior=0.2)]
        tasks = [task("lo", priority=0), task("hi", priority=9), task("mid", priority=5),
                 task("x", priority=1)]
        # quotas a 2, b 1, c 1 (extra to a: equal rate, earlier); order hi mid x lo:
        # hi -> a (load 0), mid -> b (load 0 < a's 1), x -> a, lo -> c
        assert priority_based(tasks, agents) == ["c", "a", "b", "a"]

    def test_an_agent_full_of_pinned_tasks_gets_none(self):
        agents = [AgentState("best", prior=0.99, current_load=3), AgentState("ok", prior=0.6),
                  AgentState("new", prior=0.5)]
        # 3 new tasks; best already holds 3: raising ok and new to 1 costs 2, to 2 costs 4 > 3,
        # so both reach 1 and the one left goes to the most reliable at that level: ok 2, new 1
        assert priority_based([task("a", priority=2), task("b", priority=1), task("c")],
                              agents) == ["ok", "ok", "new"]


class TestConfidenceBased:
    def test_rank_to_rank(self):
        # agents by record: q .95, s .8, p .6, r .3; quotas q 3, s 2, p 2, r 2
        # tasks by confidence: t4 t1 t8 | t3 t6 | t0 t5 | t7 t2
        manager = AgentManager(["p", "q", "r", "s"], CB, clock=ManualClock(),
                               priors={"p": 0.6, "q": 0.95, "r": 0.3, "s": 0.8})
        rates = [.5, .9, .1, .7, .95, .3, .6, .2, .8]
        plan = manager.assign_tasks_to_agents(
            [task(f"t{i}", p) for i, p in enumerate(rates)], wave=1)
        assert [agent for _, agent in placed(plan)] == \
            ["p", "q", "r", "s", "q", "p", "s", "r", "q"]
        assert loads(manager) == {"p": 2, "q": 3, "r": 2, "s": 2}
        assert plan.load_balance_score == pytest.approx(2 / 3)

    def test_a_full_top_agent_passes_the_best_tasks_down(self):
        manager = AgentManager(["p", "q", "r", "s"], CB, clock=ManualClock(),
                               priors={"p": 0.6, "q": 0.95, "r": 0.3, "s": 0.8})
        tasks = [task("pin1", .1, agent="q"), task("pin2", .1, agent="q")] + \
            [task(f"t{i}", p) for i, p in enumerate([.2, .9, .4, .8, .6, .3])]
        plan = manager.assign_tasks_to_agents(tasks, wave=1)
        # 8 over 4 -> 2 each; q holds 2 already: s t1 t3, p t4 t2, r t5 t0
        assert [agent for _, agent in placed(plan)] == \
            ["q", "q", "r", "s", "p", "s", "p", "r"]
        assert plan.load_balance_score == 1.0

    def test_equal_confidences_keep_their_order(self):
        agents = [AgentState("a"), AgentState("b")]
        assert confidence_based(tasks_of(4), agents) == ["a", "a", "b", "b"]


# -- properties of every strategy --------------------------------------------------------

AGENT_IDS = [f"a{i}" for i in range(6)]


@st.composite
def waves(draw):
    """A manager's agents (some OFFLINE, one at least available, priors) and a wave."""
    n = draw(st.integers(1, len(AGENT_IDS)))
    ids = AGENT_IDS[:n]
    up = draw(st.lists(st.booleans(), min_size=n, max_size=n).filter(any))
    priors = {a: draw(st.sampled_from([0.0, 0.3, 0.5, 0.7, 1.0])) for a in ids}
    pins = st.none() | st.sampled_from(ids + ["ghost"])
    rows = draw(st.lists(st.tuples(st.floats(0, 1), st.integers(-2, 2), pins), max_size=40))
    tasks = [PredictedTask(f"t{k}", "form_fill", p, priority=pr, agent_id=pin)
             for k, (p, pr, pin) in enumerate(rows)]
    return ids, up, priors, tasks


def manager_for(ids, up, priors, strategy) -> AgentManager:
    manager = AgentManager(ids, strategy, clock=ManualClock(), priors=priors)
    for agent, ok in zip(ids, up, strict=True):
        if not ok:
            manager.mark_offline(agent)
    return manager


@pytest.mark.parametrize("strategy", BUILT_INS)
@given(wave=waves())
def test_every_task_is_placed_once_on_an_available_agent(strategy, wave):
    ids, up, priors, tasks = wave
    manager = manager_for(ids, up, priors, strategy)
    plan = manager.assign_tasks_to_agents(tasks, wave=1)
    available = {a for a, ok in zip(ids, up, strict=True) if ok}
    assert [a.task_id for a in plan.assignments] == [t.task_id for t in tasks]
    assert all(a.agent_id in available for a in plan.assignments)
    for t, a in zip(tasks, plan.assignments, strict=True):
        if t.agent_id in available:
            assert a.agent_id == t.agent_id  # a pin to an available agent holds
    counts = {a: 0 for a in available}
    for a in plan.assignments:
        counts[a.agent_id] += 1
    assert {a: s.current_load for a, s in manager.agents.items() if a in available} == counts
    assert all(s.current_load == 0 for a, s in manager.agents.items() if a not in available)
    assert plan.num_agents == len(available)
    assert plan.load_balance_score == load_balance(counts)
    # deterministic: the same input, the same plan
    again = manager_for(ids, up, priors, strategy).assign_tasks_to_agents(tasks, wave=1)
    assert again == plan


@pytest.mark.parametrize("strategy", [LB, PB, CB])
@given(wave=waves())
def test_the_balancing_strategies_reach_the_lowest_possible_max_load(strategy, wave):
    ids, up, priors, tasks = wave
    manager = manager_for(ids, up, priors, strategy)
    manager.assign_tasks_to_agents(tasks, wave=1)
    available = [a for a, ok in zip(ids, up, strict=True) if ok]
    pinned = [sum(t.agent_id == a for t in tasks) for a in available]
    best = max(max(pinned), math.ceil(len(tasks) / len(available)))
    assert max(manager.agents[a].current_load for a in available) == best
    if not any(pinned):
        spread = [manager.agents[a].current_load for a in available]
        assert max(spread) - min(spread) <= 1


@pytest.mark.parametrize(("strategy", "key"), [
    (PB, lambda t: (-t.priority, -t.predicted_success_rate)),
    (CB, lambda t: -t.predicted_success_rate),
])
@given(wave=waves())
def test_earlier_tasks_never_land_on_a_less_reliable_agent(strategy, key, wave):
    ids, up, priors, tasks = wave
    manager = manager_for(ids, up, priors, strategy)
    plan = manager.assign_tasks_to_agents(tasks, wave=1)
    available = {a for a, ok in zip(ids, up, strict=True) if ok}
    free = [(key(t), manager.agents[a.agent_id].success_rate)
            for t, a in zip(tasks, plan.assignments, strict=True) if t.agent_id not in available]
    for k1, rate1 in free:
        for k2, rate2 in free:
            if k1 < k2:
                assert rate1 >= rate2


@pytest.mark.parametrize("strategy", BUILT_INS)
def test_64_agents_and_20000_tasks(strategy):
    ids = [f"agent-{i:02}" for i in range(64)]
    priors = {a: (i % 10) / 10 for i, a in enumerate(ids)}
    tasks = [PredictedTask(f"t{k}", "form_fill", (k * 7919 % 1000) / 1000, priority=k % 5)
             for k in range(20_000)]
    manager = AgentManager(ids, strategy, clock=ManualClock(), priors=priors)
    plan = manager.assign_tasks_to_agents(tasks, wave=1)
    assert plan.num_tasks == len(plan.assignments) == 20_000
    spread = [s.current_load for s in manager.agents.values()]
    assert (min(spread), max(spread)) == (312, 313)  # 20000 = 64 * 312 + 32


# -- the registry --------------------------------------------------------------------------

class TestRegistry:
    def test_built_ins_are_registered_under_the_enum_values(self):
        assert {s.value for s in AssignmentStrategy} <= set(STRATEGIES)
        assert get_strategy(AssignmentStrategy.PRIORITY_BASED) is priority_based
        assert get_strategy("CONFIDENCE_BASED") is confidence_based

    def test_unknown_names_list_the_known_ones_sorted(self, registry):
        register_strategy("A_FIRST", round_robin)
        with pytest.raises(InputError, match=r"^unknown assignment strategy 'nope' \(known: "
                           r"A_FIRST, CONFIDENCE_BASED, LOAD_BALANCED, PRIORITY_BASED, "
                           r"ROUND_ROBIN\)$"):
            get_strategy("nope")
        with pytest.raises(InputError, match="unknown assignment strategy 3"):
            get_strategy(3)
        with pytest.raises(InputError, match="unknown assignment strategy 'nope'"):
            AgentManager(["a"], "nope", clock=ManualClock())

    def test_a_custom_strategy_runs_through_the_manager(self, registry):
        def last_agent(tasks, agents):
            return [agents[-1].agent_id] * len(tasks)

        register_strategy("LAST_AGENT", last_agent)
        manager = AgentManager(["a", "b", "c"], "LAST_AGENT", clock=ManualClock())
        manager.mark_offline("c")
        plan = manager.assign_tasks_to_agents([task("p", agent="a"), task("x"), task("y")], 4)
        assert placed(plan) == [("p", "a"), ("x", "b"), ("y", "b")]
        assert {a.strategy for a in plan.assignments} == {"LAST_AGENT"}
        assert plan.strategy == "LAST_AGENT"
        assert plan.load_balance_score == 0.5

    def test_a_strategy_sees_copies_with_pinned_loads_and_success_rates(self, registry):
        seen = []

        def spy(tasks, agents):
            seen.append([(a.agent_id, a.current_load, a.success_rate) for a in agents])
            agents[0].current_load = 99  # a copy: the manager's state does not change
            return [agents[0].agent_id] * len(tasks)

        register_strategy("SPY", spy)
        manager = AgentManager(["a", "b", "c"], "SPY", clock=ManualClock(),
                               priors={"c": 0.4})
        manager.mark_offline("a")
        manager.assign_tasks_to_agents([task("x"), task("p", agent="c"), task("q", agent="a")],
                                       wave=1)
        assert seen == [[("b", 0, 1.0), ("c", 1, 0.4)]]
        assert loads(manager) == {"a": 0, "b": 2, "c": 1}

    def test_registering_refuses_bad_input(self, registry):
        with pytest.raises(InputError, match=r"^assignment strategy 'ROUND_ROBIN' is already "
                           r"registered \(pass replace=True to replace it\)$"):
            register_strategy("ROUND_ROBIN", load_balanced)
        with pytest.raises(InputError, match="a strategy name must be a non-empty string"):
            register_strategy("", round_robin)
        with pytest.raises(InputError, match="a strategy name must be a non-empty string"):
            register_strategy(" ", round_robin)
        with pytest.raises(InputError, match="a strategy name must be a non-empty string"):
            register_strategy(AssignmentStrategy.ROUND_ROBIN, round_robin)
        with pytest.raises(InputError, match="strategy 'X' must be callable"):
            register_strategy("X", "round_robin")
        assert STRATEGIES["ROUND_ROBIN"] is round_robin
        register_strategy("ROUND_ROBIN", load_balanced, replace=True)
        assert get_strategy("ROUND_ROBIN") is load_balanced

    @pytest.mark.parametrize(("answer", "message"), [
        (["a"], r"^strategy 'BAD' returned 1 agent ids for 2 tasks \(one agent id per task "
                r"expected\)$"),
        (["a", "a", "a"], "returned 3 agent ids for 2 tasks"),
        (iter(["a", "a"]), r"^strategy 'BAD' returned <list_iterator object at .*> for 2 "),
        (["a", "ghost"], r"^strategy 'BAD' put task 'y' on 'ghost', which is not an "
                         r"available agent$"),
        (["down", "a"], "put task 'x' on 'down', which is not an available agent"),
        (["a", 0], "put task 'y' on 0, which is not"),
    ])
    def test_a_bad_answer_is_refused_and_nothing_changes(self, registry, answer, message):
        register_strategy("BAD", lambda tasks, agents: answer)
        manager = AgentManager(["a", "b", "down"], "BAD", clock=ManualClock())
        manager.agents["b"].current_load = 4  # from an earlier plan
        manager.mark_offline("down")
        with pytest.raises(InputError, match=message):
            manager.assign_tasks_to_agents([task("x"), task("y")], wave=1)
        assert loads(manager) == {"a": 0, "b": 4, "down": 0}
        assert all(s.assigned_tasks == 0 for s in manager.agents.values())

    def test_the_strategy_is_looked_up_once_when_the_manager_is_built(self, registry):
        manager = AgentManager(["a", "b"], RR, clock=ManualClock())
        register_strategy(RR, lambda tasks, agents: ["b"] * len(tasks), replace=True)
        plan = manager.assign_tasks_to_agents(tasks_of(2), wave=1)
        assert [agent for _, agent in placed(plan)] == ["a", "b"]


# -- the manager -------------------------------------------------------------------------

class TestConstruction:
    def test_agents_in_order_with_priors(self):
        manager = AgentManager(["b", "a"], AssignmentStrategy.ROUND_ROBIN, clock=ManualClock(),
                               priors={"a": 0.25})
        assert list(manager.agents) == ["b", "a"]
        assert manager.strategy_name == "ROUND_ROBIN"
        assert manager.agents["a"].success_rate == 0.25
        assert manager.agents["b"].success_rate == 1.0
        assert manager.agents["a"].status is AgentStatus.IDLE

    @pytest.mark.parametrize(("ids", "priors", "message"), [
        ([], None, r"^an agent manager needs at least one agent$"),
        ("abc", None, r"^agent_ids must be a sequence of strings \(got 'abc'\)$"),
        (["a", "b", "a"], None, r"^agent id 'a' is given twice$"),
        (["a", ""], None, r"^an agent id must be a non-empty string \(got ''\)$"),
        (["a", 1], None, r"^an agent id must be a non-empty string \(got 1\)$"),
        (["a"], {"b": 0.5}, r"^a prior is given for unknown agent 'b'$"),
        (["a"], {"a": 1.5}, r"^the prior of agent 'a' must be a number in \[0, 1\] "
                            r"\(got 1.5\)$"),
        (["a"], {"a": math.nan}, "must be a number in"),
        (["a"], {"a": True}, "must be a number in"),
    ])
    def test_refuses(self, ids, priors, message):
        with pytest.raises(InputError, match=message):
            AgentManager(ids, clock=ManualClock(), priors=priors)

    def test_refuses_a_clock_that_is_not_callable(self):
        with pytest.raises(InputError, match="clock must be callable"):
            AgentManager(["a"], clock=1.0)


class TestAssign:
    def test_pins_to_offline_or_unknown_agents_are_placed_by_the_strategy(self):
        manager = AgentManager(["a", "b", "c"], RR, clock=ManualClock())
        manager.mark_offline("b")
        tasks = [task("t0", agent="b"), task("t1", agent="c"), task("t2", agent="zed"),
                 task("t3")]
        plan = manager.assign_tasks_to_agents(tasks, wave=1)
        # t1 stays on c; t0, t2, t3 round robin over (a, c)
        assert placed(plan) == [("t0", "a"), ("t1", "c"), ("t2", "c"), ("t3", "a")]
        assert plan.num_agents == 2
        assert loads(manager) == {"a": 2, "b": 0, "c": 2}

    def test_offline_agents_count_neither_in_the_plan_nor_the_score(self):
        manager = AgentManager(["a", "b", "c", "d"], LB, clock=ManualClock())
        manager.mark_offline("c")
        plan = manager.assign_tasks_to_agents(tasks_of(6), wave=1)
        assert (plan.num_agents, plan.load_balance_score) == (3, 1.0)
        assert "c" not in plan.by_agent()

    def test_idle_available_agents_count_in_the_score(self):
        manager = AgentManager(["a", "b", "c"], LB, clock=ManualClock())
        plan = manager.assign_tasks_to_agents(tasks_of(2), wave=1)
        assert plan.load_balance_score == 0.0  # c has none: min 0 / max 1

    def test_loads_restart_every_plan_and_assigned_tasks_add_up(self):
        manager = AgentManager(["a", "b"], RR, clock=ManualClock())
        manager.assign_tasks_to_agents(tasks_of(3), wave=1)
        plan = manager.generate_coordination_plan(tasks_of(1), wave=2)
        assert placed(plan) == [("t0", "a")]
        assert loads(manager) == {"a": 1, "b": 0}
        assert [s.assigned_tasks for s in manager.agents.values()] == [3, 1]
        manager.assign_tasks_to_agents(tasks_of(2), wave=3)
        manager.mark_offline("b")  # out with a load of 1: the next plan gives it none
        manager.assign_tasks_to_agents(tasks_of(2), wave=4)
        assert loads(manager) == {"a": 2, "b": 0}

    def test_an_empty_wave(self):
        manager = AgentManager(["a", "b"], clock=ManualClock())
        plan = manager.assign_tasks_to_agents([], wave=1)
        assert (plan.assignments, plan.num_tasks, plan.load_balance_score) == ((), 0, 1.0)

    def test_the_assignment_copies_the_task(self):
        clock = ManualClock(42.5)
        manager = AgentManager(["a"], PB, clock=clock)
        plan = manager.assign_tasks_to_agents([task("t", 0.65, priority=3)], wave=5)
        assert plan.assignments[0].to_json() == {
            "task_id": "t", "agent_id": "a", "predicted_success_rate": 0.65,
            "assigned_at": 42.5, "wave": 5, "strategy": "PRIORITY_BASED", "priority": 3,
            "reassigned_from": None}

    def test_no_agent_available(self):
        manager = AgentManager(["a", "b"], clock=ManualClock())
        manager.mark_offline("a")
        manager.update_agent_state("b", AgentStatus.OFFLINE)
        with pytest.raises(InputError, match=r"^no agent available for wave 3$"):
            manager.assign_tasks_to_agents(tasks_of(2), wave=3)

    @pytest.mark.parametrize(("tasks", "wave", "message"), [
        (tasks_of(1), 0, r"^wave must be a whole number >= 1 \(got 0\)$"),
        (tasks_of(1), True, r"^wave must be a whole number >= 1 \(got True\)$"),
        ([task("x"), task("y"), task("x"), task("y")], 1,
         r"^task ids must be unique in a wave: x, y$"),
    ])
    def test_refuses(self, tasks, wave, message):
        manager = AgentManager(["a"], clock=ManualClock())
        with pytest.raises(InputError, match=message):
            manager.assign_tasks_to_agents(tasks, wave)

    def test_a_clock_that_is_not_a_finite_number_is_refused(self):
        manager = AgentManager(["a"], clock=lambda: math.inf)
        with pytest.raises(InputError, match=r"^the clock must return a finite number of "
                           r"seconds \(got inf\)$"):
            manager.assign_tasks_to_agents(tasks_of(1), wave=1)
        assert manager.agents["a"].assigned_tasks == 0


class TestStatus:
    def test_waves_move_available_agents_only(self):
        manager = AgentManager(["a", "b", "c"], clock=ManualClock())
        manager.mark_offline("b")
        manager.begin_wave()
        assert [s.status for s in manager.agents.values()] == \
            [AgentStatus.BUSY, AgentStatus.OFFLINE, AgentStatus.BUSY]
        manager.end_wave()
        assert [s.status for s in manager.agents.values()] == \
            [AgentStatus.IDLE, AgentStatus.OFFLINE, AgentStatus.IDLE]

    def test_update_agent_state(self):
        manager = AgentManager(["a", "b"], clock=ManualClock())
        manager.mark_offline("a")
        assert manager.get_agent_availability() == {"a": False, "b": True}
        assert manager.availability() == 0.5
        state = manager.update_agent_state("a", AgentStatus.IDLE)
        assert state is manager.agents["a"] and state.available
        assert manager.update_agent_state("b") is manager.agents["b"]
        assert manager.availability() == 1.0
        with pytest.raises(InputError, match=r"^unknown agent 'zed'$"):
            manager.update_agent_state("zed")
        with pytest.raises(InputError, match=r"^status must be an AgentStatus \(got 'IDLE'\)$"):
            manager.update_agent_state("a", "IDLE")
        with pytest.raises(InputError, match=r"^unknown agent 'zed'$"):
            manager.mark_offline("zed")


class TestResults:
    def test_record_result_counts_and_the_prior_gives_way(self):
        manager = AgentManager(["a", "b"], clock=ManualClock(), priors={"a": 0.3})
        assert manager.agents["a"].success_rate == 0.3
        manager.record_result(result("t1", "a", ok=True, start=10.0, end=12.0))
        assert manager.agents["a"].success_rate == 1.0
        manager.record_result(result("t2", "a", ok=False, start=12.0, end=16.0))
        manager.record_result(result("t3", "a", ok=True, start=16.0, end=16.0))
        a = manager.agents["a"]
        assert (a.completed_tasks, a.failed_tasks, a.total_latency_s) == (2, 1, 6.0)
        assert a.success_rate == pytest.approx(2 / 3)
        assert a.avg_latency == 2.0
        report = manager.evaluate_agent_performance()
        assert list(report) == ["a", "b"]
        assert report["a"] == {"agent_id": "a", "status": "IDLE", "available": True,
                               "current_load": 0, "assigned_tasks": 0, "completed_tasks": 2,
                               "failed_tasks": 1, "success_rate": 0.6667, "avg_latency": 2.0}
        assert report["b"]["success_rate"] == 1.0

    def test_record_result_refuses(self):
        manager = AgentManager(["a"], clock=ManualClock())
        with pytest.raises(InputError, match=r"^unknown agent 'b'$"):
            manager.record_result(result("t", "b", ok=True))
        with pytest.raises(InputError, match=r"^task 't' has a latency of -1.0 s"):
            manager.record_result(result("t", "a", ok=True, start=2.0, end=1.0))
        running = ExecutionTask("t", "a", 1, "form_fill", TaskStatus.RETRYING, 0.0, 1.0, 1,
                                False, 0.8)
        with pytest.raises(InputError, match=r"^task 't' has not finished \(status "
                           r"<TaskState.RETRYING: 'RETRYING'>, COMPLETED or FAILED expected\)$"):
            manager.record_result(running)
        assert manager.agents["a"].finished_tasks == 0
        assert manager.agents["a"].total_latency_s == 0.0


class TestFailover:
    @pytest.fixture
    def manager(self):
        manager = AgentManager(["a", "b", "c", "d", "e"], clock=ManualClock(),
                               priors={"b": 0.5, "d": 0.8, "e": 0.5})
        for agent, n in zip("abcde", [2, 1, 1, 1, 1], strict=True):
            manager.agents[agent].current_load = n
        manager.mark_offline("c")
        return manager

    def test_backup_for_order(self, manager):
        assert manager.backup_for("a") == "d"              # load 1 ties: d has the best rate
        assert manager.backup_for("a", exclude={"d"}) == "b"  # b, e tie: the earlier agent
        assert manager.backup_for("d") == "b"
        assert manager.backup_for("a", exclude=["b", "d", "e"]) is None  # c is OFFLINE
        manager.agents["d"].current_load = 3
        assert manager.backup_for("a") == "b"              # lowest load first
        assert manager.backup_for("e", exclude=("b",)) == "a"

    def test_backup_for_refuses(self, manager):
        with pytest.raises(InputError, match=r"^unknown agent 'zed'$"):
            manager.backup_for("zed")
        with pytest.raises(InputError, match="exclude must be a collection of agent ids"):
            manager.backup_for("a", exclude="bd")

    def test_only_agent_has_no_backup(self):
        assert AgentManager(["solo"], clock=ManualClock()).backup_for("solo") is None

    def test_reassign_moves_the_load(self):
        clock = ManualClock(10.0)
        manager = AgentManager(["a", "b", "c"], RR, clock=clock)
        plan = manager.assign_tasks_to_agents(tasks_of(4), wave=2)
        manager.mark_offline("a")
        clock.advance(5.0)
        moved = manager.reassign(plan.assignments[0], manager.backup_for("a"))
        assert moved.to_json() == {
            "task_id": "t0", "agent_id": "b", "predicted_success_rate": 0.8,
            "assigned_at": 15.0, "wave": 2, "strategy": "ROUND_ROBIN", "priority": 0,
            "reassigned_from": "a"}
        assert loads(manager) == {"a": 1, "b": 2, "c": 1}
        assert [s.assigned_tasks for s in manager.agents.values()] == [1, 2, 1]
        again = manager.reassign(plan.assignments[3], "c")
        assert (again.agent_id, again.reassigned_from) == ("c", "a")
        assert loads(manager) == {"a": 0, "b": 2, "c": 2}

    def test_reassign_refuses(self):
        manager = AgentManager(["a", "b", "c"], RR, clock=ManualClock())
        plan = manager.assign_tasks_to_agents(tasks_of(2), wave=1)
        first = plan.assignments[0]
        manager.mark_offline("c")
        with pytest.raises(InputError, match=r"^task 't0' is already on agent 'a'$"):
            manager.reassign(first, "a")
        with pytest.raises(InputError, match=r"^cannot reassign task 't0' to agent 'c': "
                           r"it is OFFLINE$"):
            manager.reassign(first, "c")
        with pytest.raises(InputError, match=r"^unknown agent 'zed'$"):
            manager.reassign(first, "zed")
        manager.assign_tasks_to_agents([task("n")], wave=2)  # a new plan: b holds nothing
        with pytest.raises(InputError, match=r"^agent 'b' holds no task in the current plan"):
            manager.reassign(plan.assignments[1], "a")
        assert loads(manager) == {"a": 1, "b": 0, "c": 0}
