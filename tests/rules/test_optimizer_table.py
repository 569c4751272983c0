"""Tests for buddy.rules.tables._optimizer: rules/optimizer.toml as a file and in code."""

from __future__ import annotations

from importlib import resources

import pytest

from buddy.rules.base.errors import RuleTableError
from buddy.rules.tables._optimizer import OptimizerTable

SHIPPED = resources.files("buddy.rules").joinpath("optimizer.toml").read_text("utf-8")


def problems(text: str) -> list[str]:
    with pytest.raises(RuleTableError) as info:
        OptimizerTable.from_toml(text=text, source="x.toml")
    return info.value.problems


def edit(old: str, new: str) -> str:
    assert SHIPPED.count(old) == 1, old
    return SHIPPED.replace(old, new)


def test_shipped_table_loads():
    table = OptimizerTable.default()
    assert dict(table.weights) == {"success": 0.5, "throughput": 0.25, "confidence": 0.25}
    assert table.max_load_factor == 1.5
    assert table.source == "buddy/rules/optimizer.toml"
    assert len(table.digest) == 16


@pytest.mark.parametrize(("tasks", "agents", "factor", "cap"), [
    (10, 4, 1.0, 3), (8, 4, 1.0, 2), (0, 4, 1.0, 0), (1, 4, 1.0, 1), (10, 4, 2.0, 5),
    (3, 3, 1.1, 2), (10, 0, 1.0, 0), (7, 7, 1.0, 1),
])
def test_capacity(tasks, agents, factor, cap):
    table = OptimizerTable({"success": 1.0, "throughput": 0.0, "confidence": 0.0},
                           max_load_factor=factor)
    assert table.capacity(tasks, agents) == cap


def test_balanced_is_the_weighted_sum():
    assert OptimizerTable.default().balanced(0.8, 0.4, 0.2) == pytest.approx(0.55)


@pytest.mark.parametrize(("old", "new", "problem"), [
    ("confidence = 0.25", "confidence = 0.35",
     "x.toml:27: optimizer.weights: must sum to 1 (got 1.1)"),
    ("throughput = 0.25", "throughput = 1.25",
     "x.toml:29: optimizer.weights.throughput: must be in [0, 1] (got 1.25)"),
    ("success = 0.50\n", "success = 0.50\nspeed = 0.0\n",
     "x.toml:29: optimizer.weights.speed: unknown key"),
    ("max_load_factor = 1.5", "max_load_factor = 1.5\nslack = 2",
     "x.toml:34: optimizer.capacity.slack: unknown key"),
    ("max_load_factor = 1.5", "max_load_factor = 0.5",
     "x.toml:33: optimizer.capacity.max_load_factor: must be >= 1 (got 0.5)"),
    ("max_load_factor = 1.5", "max_load_factor = inf",
     "x.toml:33: optimizer.capacity.max_load_factor: must be a finite number (got inf)"),
    ("max_load_factor = 1.5", 'max_load_factor = 1.5\n[[row]]\nid = "x"',
     "x.toml:34: row[x]: optimizer.toml takes no rows: only [weights] and [capacity]"),
    ('table = "optimizer"', 'table = "wave_health"',
     "x.toml:24: optimizer.table: must be 'optimizer' (got 'wave_health')"),
])
def test_malformed_gives_one_problem_naming_file_and_line(old, new, problem):
    assert problems(edit(old, new)) == [problem]
