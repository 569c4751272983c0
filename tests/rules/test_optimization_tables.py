"""Tests for buddy.rules.tables._optimization: the Phase 19 tables (metrics, anomalies,
health, signals, heuristics) as files and in code, and OptimizerTable.with_weights."""

from __future__ import annotations

import math
from importlib import resources

import pytest
from hypothesis import given
from hypothesis import strategies as st

from buddy.rules.base.errors import InputError, RuleTableError
from buddy.rules.tables import (
    HeuristicsTable,
    OptimizationHealthTable,
    OptimizationMetricsTable,
    OptimizationSignalTable,
    OptimizerTable,
    SchedulingAnomalyTable,
    hedge_update,
)
from buddy.rules.tables._optimization import OPTIMIZATION_METRICS, MetricRule

TABLES = [OptimizationMetricsTable, SchedulingAnomalyTable, OptimizationHealthTable,
          OptimizationSignalTable, HeuristicsTable]


def shipped(name: str) -> str:
    return resources.files("buddy.rules").joinpath(name).read_text("utf-8")


def problems(table: type, text: str) -> list[str]:
    with pytest.raises(RuleTableError) as info:
        table.from_toml(text=text, source="x.toml")
    return info.value.problems


def edit(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


@pytest.mark.parametrize("table", TABLES)
def test_shipped_tables_load(table):
    loaded = table.default()
    assert loaded.source == f"buddy/rules/{table.FILE}"
    assert len(loaded.digest) == 16
    assert table.from_toml(text=shipped(table.FILE)) == table.from_toml(text=shipped(table.FILE))


# -- metrics -------------------------------------------------------------------------------

class TestMetrics:
    table = OptimizationMetricsTable.default()

    def test_the_five_metrics_and_their_numbers(self):
        got = [(m.name, m.source, m.unit, m.target_value, m.threshold_min, m.threshold_max)
               for m in self.table.metrics]
        assert got == [
            ("schedule_accuracy", "accuracy_score", "ratio", 0.90, 0.85, 1.0),
            ("throughput_efficiency", "throughput_efficiency", "ratio", 0.95, 0.90, 1.0),
            ("schedule_adherence", "schedule_adherence", "ratio", 0.90, 0.80, 1.0),
            ("agent_utilization", "agent_utilization", "ratio", 0.80, 0.60, 1.0),
            ("success_rate", "actual_success_rate", "ratio", 0.90, 0.80, 1.0)]

    @pytest.mark.parametrize("name", OPTIMIZATION_METRICS)
    def test_status_at_every_boundary(self, name):
        rule = next(m for m in self.table.metrics if m.name == name)
        low, target, high = rule.threshold_min, rule.target_value, rule.threshold_max
        assert rule.status(target) == "normal"
        assert rule.status(high) == "normal"
        assert rule.status(math.nextafter(target, 0.0)) == "warning"
        assert rule.status(low) == "warning"
        assert rule.status(math.nextafter(low, 0.0)) == "critical"
        assert rule.status(math.nextafter(high, 2.0)) == "critical"
        assert rule.status(math.nan) == "critical"

    def test_evaluate_missing_value(self):
        with pytest.raises(InputError, match="metric values: missing 'accuracy_score'"):
            self.table.evaluate({})

    @pytest.mark.parametrize(("old", "new", "message"), [
        ("threshold_min = 0.85", "threshold_min = 0.95",
         "x.toml:30: row[schedule_accuracy].threshold_min: must be <= target_value (0.9) "
         "(got 0.95)"),
        ("threshold_max = 1.0\n\n[[row]]\nid = \"throughput_efficiency\"",
         "threshold_max = 0.8\n\n[[row]]\nid = \"throughput_efficiency\"",
         "x.toml:31: row[schedule_accuracy].threshold_max: must be >= target_value (0.9) "
         "(got 0.8)"),
        ('unit = "ratio"\ntarget_value = 0.90\nthreshold_min = 0.85',
         'unit = ""\ntarget_value = 0.90\nthreshold_min = 0.85',
         'x.toml:28: row[schedule_accuracy].unit: must not be empty (e.g. "ratio")'),
        ("target_value = 0.95", "target_value = nan",
         "x.toml:37: row[throughput_efficiency].target_value: must be a finite number (got nan)"),
        ('id = "agent_utilization"', 'id = "utilization"',
         "x.toml: optimization_metrics: needs a row for each of the metrics schedule_accuracy, "
         "throughput_efficiency, schedule_adherence, agent_utilization, success_rate: missing "
         "agent_utilization"),
    ])
    def test_malformed(self, old, new, message):
        assert problems(OptimizationMetricsTable,
                        edit(shipped("optimization_metrics.toml"), old, new)) == [message]

    def test_unknown_source(self):
        found = problems(OptimizationMetricsTable, edit(
            shipped("optimization_metrics.toml"), 'source = "accuracy_score"',
            'source = "accuracy"'))
        assert len(found) == 1
        assert found[0].startswith("x.toml:27: row[schedule_accuracy].source: must be one of "
                                   "accuracy_score, ")
        assert found[0].endswith("(got 'accuracy')")

    def test_status_doc(self):
        rule = MetricRule("m", "accuracy_score", "ratio", 0.5, 0.5, 0.5)
        assert [rule.status(v) for v in (0.5, 0.49, 0.51)] == ["normal", "critical", "critical"]


# -- anomalies -----------------------------------------------------------------------------

class TestAnomalyTable:
    table = SchedulingAnomalyTable.default()

    def test_rows(self):
        got = [(r.id, r.scope, r.min_tasks, r.severity, str(r.when)) for r in self.table.rules]
        assert got == [
            ("prediction_error", "wave", 1, "medium", "success_error > 0.1"),
            ("throughput_degradation", "wave", 1, "medium", "throughput_efficiency < 0.9"),
            ("schedule_deviation", "wave", 1, "medium", "schedule_adherence < 0.8"),
            ("agent_overload", "wave", 1, "low", "max_load_ratio > 1.5"),
            ("agent_underperformance", "agent", 3, "high", "success_shortfall > 0.2")]
        assert str(self.table.rules[0].affected) == "success_error > 0.1"

    @pytest.mark.parametrize(("old", "new", "message"), [
        ('severity = "low"', 'severity = "LOW"',
         "x.toml:58: row[agent_overload].then.severity: must be one of high, medium, low "
         "(got 'LOW')"),
        ("{agent_id} succeeded", "{agent} succeeded",
         "x.toml:67: row[agent_underperformance].then.description: unknown field {agent} "
         "(allowed: actual_success, agent_id, expected_success, planned_tasks, success_error, "
         "success_shortfall, tasks, wave)"),
        ('affected_agents = { metric = "success_error"', 'affected_agents = { metric = "nope"',
         "x.toml:34: row[prediction_error].then.affected_agents.metric: must be one of "
         "actual_success, expected_success, planned_tasks, success_error, success_shortfall, "
         "tasks (got 'nope')"),
        ('recommendation = "Move', 'affected_agents = { metric = "tasks", op = "ge", '
         'value = 1 }, recommendation = "Move',
         "x.toml:67: row[agent_underperformance].then.affected_agents: only a wave row takes "
         "it (an agent row names its own agent)"),
        ("min_tasks = 3", "min_tasks = -1",
         "x.toml:65: row[agent_underperformance].min_tasks: must be >= 0 (got -1)"),
    ])
    def test_malformed(self, old, new, message):
        assert problems(SchedulingAnomalyTable,
                        edit(shipped("scheduling_anomalies.toml"), old, new)) == [message]


# -- health --------------------------------------------------------------------------------

class TestHealth:
    table = OptimizationHealthTable.default()

    def test_weights(self):
        assert dict(self.table.weights) == {"optimization_accuracy": 0.30,
                                            "schedule_adherence": 0.25,
                                            "throughput_efficiency": 0.25,
                                            "system_stability": 0.20}

    def test_known_numbers(self):
        # stability = 100 * 0.8 * 0.75 * (1 - 0.25) = 45; score = 27 + 21.25 + 22.5 + 9
        parts = self.table.components({
            "accuracy_score": 0.9, "schedule_adherence": 0.85, "throughput_efficiency": 0.9,
            "actual_success_rate": 0.8, "availability": 0.75, "retry_rate": 0.25})
        assert parts == {"optimization_accuracy": 90.0, "schedule_adherence": 85.0,
                         "throughput_efficiency": 90.0, "system_stability": 45.0}
        assert self.table.score(parts) == 79.75

    def test_clamps_and_nan(self):
        parts = self.table.components({
            "accuracy_score": math.nan, "schedule_adherence": 1.5, "throughput_efficiency": -1,
            "actual_success_rate": 1.0, "availability": 1.0, "retry_rate": 3.0})
        assert parts == {"optimization_accuracy": 0.0, "schedule_adherence": 100.0,
                         "throughput_efficiency": 0.0, "system_stability": 0.0}

    def test_weights_must_sum_to_one(self):
        assert problems(OptimizationHealthTable, edit(
            shipped("optimization_health.toml"), "system_stability = 0.20",
            "system_stability = 0.30")) == [
            "x.toml:17: optimization_health.weights: must sum to 1 (got 1.1)"]

    def test_no_rows(self):
        text = shipped("optimization_health.toml") + '\n[[row]]\nid = "x"\n'
        assert problems(OptimizationHealthTable, text) == [
            "x.toml:23: row[x]: optimization_health.toml takes no rows: the tiers are "
            "health.toml's, shared with the other monitors"]


# -- signals -------------------------------------------------------------------------------

def signal_values(**change):
    values = {"tasks": 10, "accuracy_score": 1.0, "planned_success_rate": 0.9,
              "actual_success_rate": 0.9, "success_error": 0.0, "planned_throughput": 1.0,
              "actual_throughput": 1.0, "throughput_efficiency": 1.0,
              "planned_confidence_delta": 0.0, "actual_confidence_delta": 0.0,
              "confidence_error": 0.0, "schedule_adherence": 1.0, "agent_utilization": 1.0,
              "availability": 1.0, "retry_rate": 0.0, "max_load_ratio": 1.0,
              "planned_objective": 0.5, "success_vs_first": 0.0, "max_weight_change": 0.0,
              "underperforming_agents": 0, "anomalies": 0}
    return {**values, **change}


NAMES = {"wave": 2, "strategy": "balanced", "rising_heuristic": "success",
         "falling_heuristic": "throughput", "weight_list": "success 0.600",
         "agent_list": "agent_3"}


class TestSignals:
    table = OptimizationSignalTable.default()

    def fired(self, **change):
        return [s.signal_type for s in self.table.evaluate(signal_values(**change), NAMES)]

    def test_targets_and_phases(self):
        assert dict(self.table.targets) == {"coordination": 18, "heuristics": 16,
                                            "prediction": 20}
        found = self.table.evaluate(signal_values(), NAMES)
        assert [(s.signal_type, s.target, s.target_phase, s.confidence) for s in found] == [
            ("strategy_validation", "coordination", 18, 1.0)]
        assert found[0].description == ("balanced strategy effective in wave 2: accuracy "
                                        "100.0%, success 90.0%")

    @pytest.mark.parametrize(("change", "fires"), [
        ({"accuracy_score": 0.90}, True), ({"accuracy_score": 0.899999999}, False),
        ({"success_vs_first": 0.0}, True), ({"success_vs_first": -0.000000001}, False)])
    def test_strategy_validation(self, change, fires):
        assert ("strategy_validation" in self.fired(**change)) is fires

    @pytest.mark.parametrize(("change", "signal", "fires"), [
        ({"max_weight_change": 0.01}, "heuristic_update", True),
        ({"max_weight_change": 0.009999999}, "heuristic_update", False),
        ({"schedule_adherence": 0.899999999}, "schedule_adjustment", True),
        ({"schedule_adherence": 0.90}, "schedule_adjustment", False),
        ({"success_error": 0.050000001}, "prediction_recalibration", True),
        ({"success_error": 0.05}, "prediction_recalibration", False),
        ({"underperforming_agents": 1}, "agent_reallocation", True),
        ({"underperforming_agents": 0}, "agent_reallocation", False)])
    def test_each_signal_at_its_threshold(self, change, signal, fires):
        assert (signal in self.fired(**change)) is fires

    def test_confidence_is_accuracy_by_default(self):
        found = self.table.evaluate(signal_values(accuracy_score=0.93, success_error=0.07),
                                    NAMES)
        assert {s.signal_type: s.confidence for s in found} == {
            "strategy_validation": 0.93, "prediction_recalibration": 0.93}

    def test_feedback(self):
        assert list(self.table.feedback) == ["strategy_validation", "schedule_accuracy",
                                             "throughput", "adherence"]
        rule = self.table.feedback["throughput"]
        assert rule.metrics == ("throughput_efficiency",)
        assert rule.texts["critical"][1].render({}) == ("Re-plan with the agents' observed "
                                                        "durations")

    @pytest.mark.parametrize(("old", "new", "message"), [
        ('then = { target = "heuristics"', 'then = { target = "prediction"',
         "x.toml:47: row[heuristic_update].then.target: heuristic_update goes to 'heuristics' "
         "(got 'prediction')"),
        ('metrics = ["throughput_efficiency"]', 'metrics = ["throughput"]',
         "x.toml:87: optimization_signals.feedback.throughput.metrics[0]: must be one of "
         "schedule_accuracy, throughput_efficiency, schedule_adherence, agent_utilization, "
         "success_rate (got 'throughput')"),
        ("[feedback.adherence]", "[feedback.adherence_x]",
         "x.toml:74: optimization_signals.feedback: needs an entry for each feedback type "
         "strategy_validation, schedule_accuracy, throughput, adherence: missing adherence"),
        ('signal = "agent_reallocation"', 'signal = "reallocation"',
         "x.toml:64: row[agent_reallocation].signal: must be one of strategy_validation, "
         "heuristic_update, schedule_adjustment, prediction_recalibration, agent_reallocation "
         "(got 'reallocation')"),
    ])
    def test_malformed(self, old, new, message):
        assert problems(OptimizationSignalTable,
                        edit(shipped("optimization_signals.toml"), old, new)) == [message]

    def test_malformed_feedback_template(self):
        found = problems(OptimizationSignalTable, edit(
            shipped("optimization_signals.toml"),
            'warning = { description = "Schedule adherence {schedule_adherence:.1%}',
            'warning = { description = "Schedule adherence {adherence:.1%}'))
        assert len(found) == 1
        assert found[0].startswith("x.toml:95: optimization_signals.feedback.adherence.warning"
                                   ".description: unknown field {adherence} (allowed: ")


# -- heuristics ----------------------------------------------------------------------------

class TestHeuristics:
    table = HeuristicsTable.default()

    def test_shipped(self):
        assert dict(self.table.weights) == dict(OptimizerTable.default().weights)
        assert (self.table.learning_rate, self.table.min_weight, self.table.max_weight) == (
            0.5, 0.05, 0.90)

    def test_worked_example(self):
        # success 0.5 * e^-0.05, throughput 0.25 * e^-0.1, confidence 0.25: sum 0.951824
        new = self.table.update(self.table.weights,
                                {"success": 0.1, "throughput": 0.2, "confidence": 0.0})
        raw = [0.5 * math.exp(-0.05), 0.25 * math.exp(-0.1), 0.25]
        expected = [r / math.fsum(raw) for r in raw]
        assert list(new) == ["success", "throughput", "confidence"]
        assert list(new.values()) == pytest.approx(expected, abs=1e-12)
        assert [round(v, 6) for v in new.values()] == [0.499688, 0.237659, 0.262654]

    def test_bounds_bind(self):
        # throughput would fall to 0.25 e^-5 / (...) = 0.0027 < 0.05: held at 0.05, the other
        # two share 0.95 in proportion 0.5 : 0.25
        new = self.table.update(self.table.weights, {"throughput": 1.0})
        assert self.table.learning_rate == 0.5
        new = hedge_update(self.table.weights, {"throughput": 1.0}, learning_rate=5.0,
                           min_weight=0.05, max_weight=0.9)
        assert new["throughput"] == 0.05
        assert new["success"] == pytest.approx(0.95 * 2 / 3, abs=1e-12)
        assert new["confidence"] == pytest.approx(0.95 / 3, abs=1e-12)

    def test_no_change_when_no_error(self):
        new = self.table.update(self.table.weights, {"success": 0.0, "throughput": 0.0,
                                                     "confidence": 0.0})
        assert new == pytest.approx(dict(self.table.weights), abs=1e-15)

    @given(st.lists(st.tuples(*[st.one_of(st.floats(0.0, 1.0), st.just(math.nan))] * 3),
                    max_size=40),
           st.floats(0.01, 100.0))
    def test_bounds_hold_under_any_errors(self, waves, eta):
        weights = dict(self.table.weights)
        for s, t, c in waves:
            weights = hedge_update(weights, {"success": s, "throughput": t, "confidence": c},
                                   learning_rate=eta, min_weight=0.05, max_weight=0.90)
            assert all(0.05 <= w <= 0.90 for w in weights.values())
            assert abs(math.fsum(weights.values()) - 1.0) <= 1e-9

    @pytest.mark.parametrize(("old", "new", "message"), [
        ("min_weight = 0.05", "min_weight = 0.40",
         "x.toml:32: heuristics.learning.min_weight: must be <= 1/3 so that 3 weights can sum "
         "to 1 (got 0.4)"),
        ("max_weight = 0.90", "max_weight = 0.30",
         "x.toml:33: heuristics.learning.max_weight: must be >= 1/3 so that 3 weights can sum "
         "to 1 (got 0.3)"),
        ("learning_rate = 0.5", "learning_rate = 0",
         "x.toml:31: heuristics.learning.learning_rate: must be > 0 (got 0.0)"),
        ("confidence = 0.25", "confidence = 0.35",
         "x.toml:25: heuristics.weights: must sum to 1 (got 1.1)"),
    ])
    def test_malformed(self, old, new, message):
        assert problems(HeuristicsTable, edit(shipped("heuristics.toml"), old, new)) == [message]

    def test_start_outside_bounds(self):
        text = edit(shipped("heuristics.toml"), "success = 0.50\nthroughput = 0.25",
                    "success = 0.73\nthroughput = 0.02")
        assert problems(HeuristicsTable, text) == [
            "x.toml:27: heuristics.weights.throughput: must be within [min_weight, "
            "max_weight] = [0.05, 0.9] (got 0.02)"]


class TestOptimizerWithWeights:
    def test_learned_weights(self):
        base = OptimizerTable.default()
        table = base.with_weights({"success": 0.6, "throughput": 0.15, "confidence": 0.25})
        assert dict(table.weights) == {"success": 0.6, "throughput": 0.15, "confidence": 0.25}
        assert table.max_load_factor == base.max_load_factor
        assert table.source == "buddy/rules/optimizer.toml+learned"
        assert table.digest != base.digest and len(table.digest) == 16
        assert table.balanced(1.0, 0.0, 0.0) == 0.6

    def test_refused(self):
        with pytest.raises(InputError, match=r"^weights: must sum to 1 \(got 1.1\)$"):
            OptimizerTable.default().with_weights(
                {"success": 0.6, "throughput": 0.25, "confidence": 0.25})
