"""Tests for buddy.rules.tables._conflicts: the conflict table's rows, as written and in code.

How the resolver uses the table is tested in tests/engine/orchestration/test_conflicts.py.
"""

from __future__ import annotations

import pytest

from buddy.rules.base._values import ExecutionMode, RiskLevel
from buddy.rules.base.errors import RuleTableError
from buddy.rules.tables._conditions import Condition, Op, When
from buddy.rules.tables._conflicts import (
    ConflictRow,
    ConflictTable,
    ConflictThen,
    ConflictType,
    ResolutionStrategy,
)

R = ResolutionStrategy
MOCK, DRY_RUN, LIVE = ExecutionMode.MOCK, ExecutionMode.DRY_RUN, ExecutionMode.LIVE


def problems_of(text: str) -> list[str]:
    with pytest.raises(RuleTableError) as info:
        ConflictTable.from_toml(text=text, source="c.toml")
    return info.value.problems


def row_then(then: str) -> str:
    return f'[[row]]\nid = "x"\nwhen = {{}}\nthen = {{ {then} }}\n'


class TestThen:
    def test_fallback_defaults_to_abort_where_one_applies(self):
        assert ConflictThen(R.DELAY, delay_s=1.0, max_delay_s=2.0).fallback is R.ABORT
        assert ConflictThen(R.REASSIGN).fallback is R.ABORT
        assert ConflictThen(R.DOWNGRADE, max_mode=MOCK).fallback is None
        assert ConflictThen(R.ABORT).fallback is None

    @pytest.mark.parametrize(("kwargs", "message"), [
        ({"strategy": R.DELAY, "max_delay_s": 2.0}, "delay_s: is required"),
        ({"strategy": R.DELAY, "delay_s": -1.0, "max_delay_s": 2.0},
         "delay_s: must be > 0 (got -1.0)"),
        ({"strategy": R.DELAY, "delay_s": 3.0, "max_delay_s": 2.0},
         "max_delay_s: must be >= delay_s 3.0 (got 2.0)"),
        ({"strategy": R.REASSIGN, "fallback": R.REASSIGN},
         "fallback: must be ABORT or DOWNGRADE (got 'REASSIGN')"),
        ({"strategy": R.DOWNGRADE}, "max_mode: is required"),
        ({"strategy": R.DOWNGRADE, "max_mode": LIVE},
         "max_mode: must be MOCK or DRY_RUN (LIVE caps nothing)"),
        ({"strategy": R.REASSIGN, "max_mode": MOCK},
         "max_mode: is only used with DOWNGRADE (as strategy or fallback)"),
        ({"strategy": R.ABORT, "max_mode": MOCK},
         "max_mode: is not used by strategy ABORT (it takes: nothing more)"),
        ({"strategy": R.DOWNGRADE, "max_mode": MOCK, "delay_s": 1.0},
         "delay_s: is not used by strategy DOWNGRADE (it takes: max_mode)"),
    ])
    def test_built_in_code_with_one_problem(self, kwargs, message):
        with pytest.raises(RuleTableError) as info:
            ConflictThen(**kwargs)
        assert str(info.value) == message

    def test_built_in_code_with_several_problems(self):
        with pytest.raises(ExceptionGroup) as info:
            ConflictThen(R.DELAY, fallback=R.DELAY)
        assert [str(e) for e in info.value.exceptions] == [
            "delay_s: is required", "max_delay_s: is required",
            "fallback: must be ABORT or DOWNGRADE (got 'DELAY')"]

    def test_every_problem_of_a_then_at_once(self):
        assert problems_of(row_then('strategy = "ABORT", delay_s = 1.0, max_delay_s = 2.0, '
                                    'fallback = "ABORT", max_mode = "MOCK"')) == [
            f"c.toml:4: row[x].then.{key}: is not used by strategy ABORT (it takes: nothing more)"
            for key in ("delay_s", "fallback", "max_delay_s", "max_mode")]


class TestRow:
    def test_reads_as_its_then(self):
        row = ConflictRow("r", When(), ConflictThen(R.DELAY, delay_s=1.0, max_delay_s=3.0))
        assert (row.strategy, row.delay_s, row.max_delay_s, row.fallback, row.max_mode) == (
            R.DELAY, 1.0, 3.0, R.ABORT, None)
        assert row.describe() == "always -> DELAY 1.0 s per slot, at most 3.0 s (else ABORT)"

    def test_describe_a_downgrade_fallback(self):
        row = ConflictRow("r", When(all=(Condition("risk", Op.EQ, "HIGH"),)),
                          ConflictThen(R.REASSIGN, fallback=R.DOWNGRADE, max_mode=MOCK))
        assert row.describe() == ("risk == HIGH -> REASSIGN to a least-loaded agent holding the "
                                  "permissions (else DOWNGRADE MOCK)")

    def test_id_is_checked_in_code_too(self):
        with pytest.raises(RuleTableError) as info:
            ConflictRow("a b", When(), ConflictThen(R.ABORT))
        assert str(info.value) == "id: must be 1-64 letters, digits or _ . : - (got 'a b')"


class TestLoad:
    def test_conditions_take_the_enums_names(self):
        table = ConflictTable.from_toml(text=(
            '[[row]]\nid = "risky"\nwhen = { all = [ { metric = "risk", op = "eq", '
            'value = "HIGH" }, { metric = "reversible", op = "eq", value = false } ] }\n'
            'then = { strategy = "ABORT" }\n' + row_then('strategy = "DOWNGRADE", '
                                                         'max_mode = "DRY_RUN"')))
        assert table.row_for(ConflictType.RESOURCE, RiskLevel.HIGH, False).id == "risky"
        assert table.row_for(ConflictType.RESOURCE, RiskLevel.HIGH, True).id == "x"

    @pytest.mark.parametrize(("when", "problem"), [
        ('{ all = [ { metric = "risk", op = "eq", value = "HUGE" } ] }',
         "c.toml:3: row[x].when.all[0].value: must be one of LOW, MEDIUM, HIGH (got 'HUGE')"),
        ('{ all = [ { metric = "type", op = "eq", value = 3 } ] }',
         "c.toml:3: row[x].when.all[0].value: must be one of RESOURCE, ORDERING, RATE_LIMIT, "
         "DUPLICATE_ACTION, PERMISSION, TIMEOUT (got 3)"),
        ('{ all = [ { metric = "reversible", op = "eq", value = "no" } ] }',
         "c.toml:3: row[x].when.all[0].value: must be true or false (got 'no')"),
        ('{ all = [ { metric = "type", op = "lt", value = "TIMEOUT" } ] }',
         "c.toml:3: row[x].when.all[0].op: type is not a number: must be eq or ne (got 'lt')"),
    ])
    def test_condition_problems(self, when, problem):
        assert problems_of(row_then('strategy = "ABORT"').replace("when = {}", f"when = {when}")
                           ) == [problem]

    def test_missing_when_says_what_an_empty_one_does(self):
        assert problems_of('[[row]]\nid = "x"\nthen = { strategy = "ABORT" }\n') == [
            "c.toml:1: row[x].when: is required (when = {} matches every conflict)"]

    def test_uncovered_types_have_no_line(self):
        text = row_then('strategy = "ABORT"').replace(
            "when = {}", 'when = { all = [ { metric = "type", op = "ne", value = "TIMEOUT" } ] }')
        assert problems_of(text) == [
            "c.toml: conflicts: no row matches conflict type TIMEOUT (e.g. risk LOW, reversible "
            "true): add a row for it, or a last row with when = {}"]

    def test_direct_construction_checks_coverage_in_the_same_words(self):
        rows = ConflictTable.default().rows[:5]
        with pytest.raises(RuleTableError) as info:
            ConflictTable(rows)
        assert info.value.problems == [
            "<memory>: conflicts: no row matches conflict type TIMEOUT (e.g. risk LOW, "
            "reversible true): add a row for it, or a last row with when = {}"]
