"""The wave loop's default scenario: seeded agents and tasks."""

from __future__ import annotations

import pytest

from buddy.engine import ToolContractRegistry
from buddy.engine.waves._inputs import load_tasks, tasks_to_jsonl
from buddy.engine.waves._scenario import (
    SCENARIO_PERMISSIONS,
    SCENARIO_TOOLS,
    AgentProfile,
    agent_permissions,
    default_agents,
    default_tasks,
)
from buddy.rules.base._values import RiskLevel
from buddy.rules.base.errors import InputError

REG = ToolContractRegistry.default()


class TestScenarioTools:
    def test_low_or_medium_risk_no_approval_no_tool_before(self):
        for name in SCENARIO_TOOLS:
            contract = REG.get(name)
            assert contract.risk in (RiskLevel.LOW, RiskLevel.MEDIUM), name
            assert not contract.requires_approval, name
            assert contract.dependencies == (), name

    def test_the_permissions_are_those_the_tools_need(self):
        needed = frozenset().union(*(REG.get(t).permissions for t in SCENARIO_TOOLS))
        assert needed == SCENARIO_PERMISSIONS


class TestDefaultAgents:
    def test_the_sources_four_agents(self):
        assert [(a.agent_id, a.capability, a.speed, a.timeout_rate)
                for a in default_agents()] == [
            ("agent_0", 0.98, 0.8, 0.0), ("agent_1", 0.93, 1.0, 0.0),
            ("agent_2", 0.85, 1.2, 0.0), ("agent_3", 0.55, 1.5, 0.08)]
        assert default_agents(4, seed=5) == default_agents()
        assert all(a.permissions == SCENARIO_PERMISSIONS for a in default_agents())

    @pytest.mark.parametrize("n", [1, 2, 3, 5, 64])
    def test_other_sizes_spread_from_the_seed(self, n):
        agents = default_agents(n, seed=3)
        assert agents == default_agents(n, seed=3)
        assert [a.agent_id for a in agents] == [f"agent_{i}" for i in range(n)]
        assert all(0.5 <= a.capability <= 0.99 and a.speed > 0 for a in agents)
        assert all(a.timeout_rate == (0.08 if a.capability < 0.6 else 0.0) for a in agents)
        if n > 1:
            assert agents[0].capability > 0.9 > 0.6 > agents[-1].capability
            assert agents != default_agents(n, seed=4)

    @pytest.mark.parametrize("n", [0, -1, 2.0, True, "4"])
    def test_a_bad_size(self, n):
        with pytest.raises(InputError, match=r"^agents: must be a whole number >= 1"):
            default_agents(n)

    def test_permissions_map(self):
        agents = default_agents()
        assert agent_permissions(agents) == {f"agent_{i}": SCENARIO_PERMISSIONS
                                             for i in range(4)}

    @pytest.mark.parametrize("field, value, error", [
        ("capability", 1.5, "capability: must be a number in [0, 1] (got 1.5)"),
        ("capability", 1, "capability: must be a number in [0, 1] (got 1)"),
        ("speed", 0.0, "speed: must be a number > 0 (got 0.0)"),
        ("speed", float("inf"), "speed: must be a number > 0 (got inf)"),
        ("timeout_rate", -0.1, "timeout_rate: must be a number in [0, 1] (got -0.1)"),
    ])
    def test_profile_values_are_checked(self, field, value, error):
        fields = {"agent_id": "a", "capability": 0.9, "speed": 1.0, field: value}
        with pytest.raises(InputError) as raised:
            AgentProfile(**fields)
        assert str(raised.value) == error


class TestDefaultTasks:
    def test_the_sources_sizes(self):
        tasks = default_tasks()
        assert len(tasks) == 60
        assert [t.task_id for t in tasks[:2]] == ["w1-t00001", "w1-t00002"]
        assert [sum(t.wave == w for t in tasks) for w in (1, 2, 3)] == [20, 20, 20]

    def test_same_seed_same_tasks_other_seed_others(self):
        assert default_tasks(7) == default_tasks(7)
        assert default_tasks(7) != default_tasks(8)

    def test_sizes(self):
        tasks = default_tasks(1, waves=2, tasks_per_wave=7)
        assert [t.task_id for t in tasks] == [f"w{w}-t{i:05d}" for w in (1, 2)
                                              for i in range(1, 8)]
        assert [t.wave for t in tasks] == [1] * 7 + [2] * 7

    def test_values(self):
        tasks = default_tasks(3, waves=3, tasks_per_wave=300)
        assert {t.tool for t in tasks} == set(SCENARIO_TOOLS)
        assert all(0.6 <= t.predicted_success_rate <= 0.99 for t in tasks)
        assert {t.priority for t in tasks} == {0, 1, 2, 3}
        assert all(t.confidence is None and t.agent_id is None for t in tasks)
        assert all(set(t.args) == {"task", "target"} and t.args["task"] == t.task_id
                   for t in tasks)

    def test_dependencies_are_one_or_two_tasks_of_the_wave_before(self):
        tasks = default_tasks(3, waves=4, tasks_per_wave=500)
        wave_of = {t.task_id: t.wave for t in tasks}
        dependent = [t for t in tasks if t.dependencies]
        assert all(t.wave > 1 for t in dependent)
        assert all(len(t.dependencies) in (1, 2) for t in dependent)
        assert all(len(set(t.dependencies)) == len(t.dependencies) for t in dependent)
        assert all(wave_of[d] == t.wave - 1 for t in dependent for d in t.dependencies)
        assert 0.07 < len(dependent) / 1500 < 0.13  # about one in ten past wave 1
        assert {len(t.dependencies) for t in dependent} == {1, 2}

    def test_a_scenario_written_out_is_a_valid_input(self, tmp_path):
        tasks = default_tasks(9, waves=3, tasks_per_wave=50)
        path = tmp_path / "predicted_tasks.jsonl"
        path.write_bytes(tasks_to_jsonl(tasks))
        assert load_tasks(path, REG, strict=True).tasks == tuple(tasks)

    def test_100k_tasks(self):  # 64 agents x 5 waves x 20,000: bench/ times it, not here
        tasks = default_tasks(21, waves=5, tasks_per_wave=20_000)
        assert len(tasks) == len({t.task_id for t in tasks}) == 100_000
        assert tasks[-1].task_id == "w5-t20000"

    @pytest.mark.parametrize("sizes, error", [
        ({"waves": 0}, "waves: must be a whole number >= 1 (got 0)"),
        ({"tasks_per_wave": 0}, "tasks_per_wave: must be a whole number >= 1 (got 0)"),
        ({"waves": 1.5}, "waves: must be a whole number >= 1 (got 1.5)"),
        ({"tasks_per_wave": True}, "tasks_per_wave: must be a whole number >= 1 (got True)"),
    ])
    def test_bad_sizes(self, sizes, error):
        with pytest.raises(InputError) as raised:
            default_tasks(**sizes)
        assert str(raised.value) == error
