"""Tests for buddy.rules.tables._monitoring: the health and anomaly tables as files and in code.

How the monitor uses them is tested in tests/engine/orchestration/test_monitor.py.
"""

from __future__ import annotations

from importlib import resources

import pytest

from buddy.rules.base.errors import RuleTableError
from buddy.rules.tables._conditions import Condition, Op, When
from buddy.rules.tables._monitoring import (
    AnomalyTable,
    AnomalyThen,
    HealthStatus,
    HealthTable,
    Weights,
)

HEALTH = resources.files("buddy.rules").joinpath("health.toml").read_text("utf-8")
ANOMALIES = resources.files("buddy.rules").joinpath("anomalies.toml").read_text("utf-8")
WEIGHTS = ('table = "health"\n[weights]\nsuccess_rate = 0.3\nrollback = 0.15\nconflict = 0.15\n'
           'confidence_drift = 0.1\napproval_rate = 0.3\n')  # lines 2-7


def health_problems(text: str) -> list[str]:
    with pytest.raises(RuleTableError) as info:
        HealthTable.from_toml(text=text, source="h.toml")
    return info.value.problems


def anomaly_problems(text: str) -> list[str]:
    with pytest.raises(RuleTableError) as info:
        AnomalyTable.from_toml(text=text, source="a.toml")
    return info.value.problems


def edit(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


class TestWeights:
    def test_in_code(self):
        assert Weights(0.2, 0.2, 0.2, 0.2, 0.2).rollback == 0.2
        with pytest.raises(RuleTableError) as info:
            Weights(0.2, 0.2, 0.2, 0.2, 0.3)
        assert str(info.value) == "must sum to 1 (got 1.1)"
        with pytest.raises(RuleTableError) as info:
            Weights(0.2, 1.2, 0.2, 0.2, 0.2)
        assert str(info.value) == "rollback: must be in [0, 1] (got 1.2)"

    @pytest.mark.parametrize(("old", "new", "problem"), [
        ("rollback = 0.15", "rollback = 0.25", "h.toml:15: health.weights: must sum to 1 "
                                               "(got 1.1)"),
        ("rollback = 0.15", "rollback = 1.15",
         "h.toml:17: health.weights.rollback: must be in [0, 1] (got 1.15)"),
        ("rollback = 0.15", 'rollback = "high"',
         "h.toml:17: health.weights.rollback: must be a number (got 'high')"),
        ("rollback = 0.15\n", "", "h.toml:15: health.weights.rollback: is required"),
        ("rollback = 0.15", "rollback = 0.15\nlatency = 0.0",
         "h.toml:18: health.weights.latency: unknown key"),
        ("[weights]\nsuccess_rate = 0.30\nrollback = 0.15\nconflict = 0.15\n"
         "confidence_drift = 0.10\napproval_rate = 0.30\n", "weights = 0.5\n",
         "h.toml:15: health.weights: must be a table (got 0.5)"),
    ])
    def test_in_the_file(self, old, new, problem):
        assert health_problems(edit(HEALTH, old, new)) == [problem]


class TestHealthTiers:
    def test_no_tier_row(self):
        assert health_problems(WEIGHTS) == ["h.toml: health: needs at least one tier row"]

    def test_missing_when_hints_at_the_last_row(self):
        assert health_problems(WEIGHTS + '[[row]]\nid = "all"\nthen = { tier = "GOOD" }\n') == [
            "h.toml:8: row[all].when: is required (use `when = {}` for a row that always holds)"]

    @pytest.mark.parametrize(("old", "new", "problem"), [
        ('tier = "GOOD"', 'tier = "EXCELLENT"',
         "h.toml:35: row[good].then.tier: EXCELLENT is already the tier of row[excellent]"),
        ('id = "poor"\nwhen = {}',
         'id = "poor"\nwhen = { all = [ { metric = "health_score", op = "ge", value = 0.0 } ] }',
         "h.toml:44: row[poor].when: the last tier must always hold (`when = {}`) so that "
         "every score gets a tier"),
        ('when = { all = [ { metric = "health_score", op = "ge", value = 90.0 } ] }',
         "when = {}",
         "h.toml:29: row[excellent].when: always holds, so the rows after it are never reached "
         "(put it last)"),
        ('op = "ge", value = 90.0', 'op = "ge", value = "90"',
         "h.toml:29: row[excellent].when.all[0].value: must be a number (got '90')"),
    ])
    def test_problems(self, old, new, problem):
        assert health_problems(edit(HEALTH, old, new)) == [problem]

    def test_a_table_of_one_tier(self):
        table = HealthTable.from_toml(text=WEIGHTS + '[[row]]\nid = "all"\nwhen = {}\n'
                                      'then = { tier = "FAIR" }\n')
        assert (table.tier(0.0), table.tier(100.0)) == (HealthStatus.FAIR, HealthStatus.FAIR)
        assert table.tiers == ((HealthStatus.FAIR, When()),)
        assert table.weights == {"success_rate": 0.3, "rollback": 0.15, "conflict": 0.15,
                                 "confidence_drift": 0.1, "approval_rate": 0.3}

    def test_built_in_code(self):
        table = HealthTable(weights=HealthTable.default().weights, tiers=(
            (HealthStatus.GOOD, When(all=(Condition("health_score", Op.GE, 50.0),))),
            (HealthStatus.POOR, When())))
        assert (table.tier(50.0), table.tier(49.9)) == (HealthStatus.GOOD, HealthStatus.POOR)
        assert (table.source, table.digest) == ("<memory>", "")


class TestAnomalies:
    def test_then_in_code(self):
        assert AnomalyThen(3, "m").recommended_action == ""
        with pytest.raises(RuleTableError) as info:
            AnomalyThen(0, "m")
        assert str(info.value) == "severity: must be >= 1 (got 0)"

    @pytest.mark.parametrize(("old", "new", "problem"), [
        ("severity = 7", 'severity = "high"',
         "a.toml:30: row[unsafe_escalation].then.severity: must be a whole number (got 'high')"),
        ("severity = 7", "severity = 7.0",
         "a.toml:30: row[unsafe_escalation].then.severity: must be a whole number (got 7.0)"),
        ('value = 5 }', 'value = 4.5 }',
         "a.toml:50: row[high_conflict].when.all[1].value: must be a whole number (got 4.5)"),
        ('"tool_success_rate", op = "lt", value = 50.0',
         '"tool_success_rate", op = "lt", value = "50%"',
         "a.toml:36: row[repeated_failures].when.all[0].value: must be a number (got '50%')"),
        ('"{conflict_rate:.0f}% of calls', '"{tool}: {conflict_rate:.0f}% of calls',
         "a.toml:51: row[high_conflict].then.message: unknown field {tool} (allowed: "
         "approval_rate, calls, confidence_drift, conflict_rate, execution_latency_ms, "
         "executions, live_execution_ratio, rollback_frequency, system_health_score, "
         "tool_success_rate)"),
    ])
    def test_problems(self, old, new, problem):
        assert anomaly_problems(edit(ANOMALIES, old, new)) == [problem]

    def test_every_problem_of_a_rows_meaning_at_once(self):
        text = edit(ANOMALIES, '"confidence_drift", op = "gt", value = 0.4',
                    '"drift", op = "gt", value = 0.4')
        text = edit(text, "message = \"Confidence drift {confidence_drift:.2f}",
                    "message = \"Confidence drift {confidence_drift:.2d}")
        assert anomaly_problems(text) == [
            "a.toml:29: row[unsafe_escalation].when.all[0].metric: must be one of approval_rate, "
            "calls, confidence_drift, conflict_rate, execution_latency_ms, executions, "
            "live_execution_ratio, rollback_frequency, system_health_score, tool_success_rate "
            "(got 'drift')",
            "a.toml:30: row[unsafe_escalation].then.message: field {confidence_drift}: format "
            "spec '.2d' does not apply to a float"]

    def test_threshold_of_a_count_condition_is_a_float(self):
        text = edit(ANOMALIES, '{ metric = "conflict_rate", op = "gt", value = 50.0 }, '
                    '{ metric = "calls", op = "ge", value = 5 }',
                    '{ metric = "calls", op = "ge", value = 5 }')
        rule = AnomalyTable.from_toml(text=text).rules[3]
        assert rule.condition == Condition("calls", Op.GE, 5)
        anomaly = rule.check({"executions": 9, "calls": 9, "conflict_rate": 0.0})
        assert anomaly is not None
        assert (anomaly.metric, anomaly.value, anomaly.threshold) == ("calls", 9, 5.0)
        assert type(anomaly.threshold) is float

    def test_a_template_field_with_a_line_break_is_one_line(self):
        text = edit(ANOMALIES, 'message = "{rollback_frequency:.0f}% of runs were rolled back"',
                    'message = "{rollback\\nfrequency}"')
        assert anomaly_problems(text) == [
            "a.toml:44: row[high_rollback].then.message: field {'rollback\\nfrequency'} must be "
            "a plain name (no attribute or index access)"]
