"""Tests for buddy.engine.waves._opt_feedback: outcomes, feedback events, learning signals,
the learned weights and strategy effectiveness."""

from __future__ import annotations

import math

import pytest

from buddy.engine.waves import (
    OptimizationFeedbackLoop,
    OptimizationMonitor,
    evaluate_strategy_effectiveness,
    heuristic_errors,
)
from buddy.rules.base.errors import InputError
from buddy.rules.tables import (
    HealthTable,
    HeuristicsTable,
    OptimizationHealthTable,
    OptimizationMetricsTable,
    OptimizationSignalTable,
    OptimizerTable,
    SchedulingAnomalyTable,
)
from tests.engine.waves.test_opt_monitor import AGENTS, comparison


def loop() -> OptimizationFeedbackLoop:
    return OptimizationFeedbackLoop(OptimizationSignalTable.default(), HeuristicsTable.default(),
                                    clock=lambda: 1770292800.0)


def monitor() -> OptimizationMonitor:
    return OptimizationMonitor(OptimizationMetricsTable.default(),
                               SchedulingAnomalyTable.default(),
                               OptimizationHealthTable.default(), HealthTable.default(),
                               clock=lambda: 1770292800.0)


class TestErrors:
    def test_worked(self):
        c = comparison(planned_success_rate=0.9, actual_success_rate=0.8,
                       planned_throughput=4.0, actual_throughput=5.0,
                       planned_confidence_delta=0.05, actual_confidence_delta=-0.15)
        assert heuristic_errors(c) == {"success": 0.1, "throughput": 0.25, "confidence": 0.2}

    def test_clamped_and_no_plan(self):
        c = comparison(planned_throughput=0.0, planned_confidence_delta=2.0,
                       actual_confidence_delta=-2.0)
        assert heuristic_errors(c) == {"success": 0.0, "throughput": 1.0, "confidence": 1.0}


class TestWeights:
    def test_worked_example(self):
        fb = loop()
        c = comparison(planned_success_rate=0.9, actual_success_rate=0.8,
                       planned_throughput=10.0, actual_throughput=8.0)
        out = fb.update_heuristic_weights(c)
        # errors 0.1, 0.2, 0: 0.5 e^-0.05, 0.25 e^-0.1, 0.25 over their sum 0.951824
        assert {k: round(v, 6) for k, v in out.weights.items()} == {
            "success": 0.499688, "throughput": 0.237659, "confidence": 0.262654}
        assert out.updated_at == "2026-02-05T12:00:00Z"
        assert fb.weights == out.weights
        assert len(fb.weight_history) == 2

    def test_no_change_when_every_error_is_zero(self):
        fb = loop()
        for wave in (1, 2, 3):
            fb.update_heuristic_weights(comparison(wave))
        assert fb.weights == pytest.approx({"success": 0.5, "throughput": 0.25,
                                            "confidence": 0.25}, abs=1e-15)

    def test_one_update_per_wave(self):
        fb = loop()
        fb.update_heuristic_weights(comparison(1))
        with pytest.raises(InputError, match="^wave 1: heuristic weights already updated$"):
            fb.update_heuristic_weights(comparison(1))

    def test_optimizer_uses_learned_weights(self):
        fb = loop()
        fb.update_heuristic_weights(comparison(1, actual_throughput=5.0))
        table = fb.optimizer_table(OptimizerTable.default())
        assert dict(table.weights) == fb.weights
        assert table.weights["throughput"] < 0.25
        assert math.isclose(math.fsum(table.weights.values()), 1.0, abs_tol=1e-9)


class TestSignals:
    def signals(self, fb, c, anomalies=()):
        return [(s.signal_id, s.type, s.target, s.confidence)
                for s in fb.generate_learning_signals(c, anomalies)]

    def test_strategy_validation_against_the_first_wave(self):
        fb = loop()
        assert self.signals(fb, comparison(1, actual_success_rate=0.9)) == [
            ("P19_LS_001", "strategy_validation", "coordination", 1.0)]
        # below the first wave's success: not validated (and off the plan by exactly 0.05)
        assert self.signals(fb, comparison(2, actual_success_rate=0.85,
                                           accuracy_score=0.95)) == []
        assert self.signals(fb, comparison(3, actual_success_rate=0.9)) == [
            ("P19_LS_002", "strategy_validation", "coordination", 1.0)]

    def test_heuristic_update_needs_a_move_of_one_point(self):
        fb = loop()
        fb.update_heuristic_weights(comparison(1, actual_throughput=5.0))
        found = fb.generate_learning_signals(comparison(1, actual_throughput=5.0))
        assert [s.type for s in found] == ["strategy_validation", "heuristic_update"]
        assert found[1].target == "heuristics"
        assert found[1].description.startswith(
            "Increase weight for success, decrease for throughput (now success 0.")
        fb.update_heuristic_weights(comparison(2))
        assert [s.type for s in fb.generate_learning_signals(comparison(2))] == [
            "strategy_validation"]

    def test_adjustment_recalibration_reallocation(self):
        fb = loop()
        m = monitor()
        c = comparison(1, actual_success_rate=0.7, accuracy_score=0.8, schedule_adherence=0.85,
                       agents=AGENTS)
        anomalies = m.detect_anomalies(c)
        found = fb.generate_learning_signals(c, anomalies)
        assert [(s.type, s.target, s.confidence) for s in found] == [
            ("schedule_adjustment", "coordination", 0.8),
            ("prediction_recalibration", "prediction", 0.8),
            ("agent_reallocation", "coordination", 0.8)]
        assert found[2].description == "1 agent(s) underperformed in wave 1: agent_1"
        assert found[1].recommendation == "Recalibrate the success predictions by 0.200"
        assert found[0].to_json()["signal_id"] == "P19_LS_001"


class TestFeedbackEvents:
    def test_one_of_each_type(self):
        fb = loop()
        c = comparison(accuracy_score=0.87, actual_throughput=9.64, schedule_adherence=0.79,
                       actual_success_rate=0.95)
        events = fb.generate_feedback_events(c, monitor().calculate_metrics(c))
        assert [(e.feedback_id, e.feedback_type, e.confidence) for e in events] == [
            ("FB_001", "strategy_validation", 0.87), ("FB_002", "schedule_accuracy", 0.87),
            ("FB_003", "throughput", 0.87), ("FB_004", "adherence", 0.87)]
        assert events[0].description == "balanced strategy fell short of its targets in wave 1"
        assert events[0].supporting_evidence == (
            "schedule_accuracy 0.870 warning (target 0.9, min 0.85)",
            "success_rate 0.950 normal (target 0.9, min 0.8)")
        assert events[2].recommendation == "Keep the planned durations"
        assert events[3].recommendation == ("Re-plan start times from the agents' observed "
                                            "durations")
        assert events[3].supporting_evidence == (
            "schedule_adherence 0.790 critical (target 0.9, min 0.8)",)

    def test_missing_metric(self):
        with pytest.raises(InputError, match=r"^feedback strategy_validation: no metric "
                                             r"'schedule_accuracy' \(given: none\)$"):
            loop().generate_feedback_events(comparison(), [])


class TestOutcomeAndEffectiveness:
    def test_outcome(self):
        fb = loop()
        fb.evaluate_schedule_outcome(comparison(1, actual_success_rate=0.8))
        out = fb.evaluate_schedule_outcome(comparison(2, actual_success_rate=0.9))
        assert out["success_vs_first"] == 0.1
        assert out["errors"] == {"success": 0.0, "throughput": 0.0, "confidence": 0.0}
        assert out["throughput_efficiency"] == 1.0

    def test_effectiveness(self):
        cs = [comparison(1, strategy="maximize_success", accuracy_score=0.9,
                         actual_success_rate=0.8, planned_objective=0.8),
              comparison(2, strategy="balanced", accuracy_score=0.8, actual_success_rate=0.7,
                         planned_objective=0.6),
              comparison(3, strategy="maximize_success", accuracy_score=1.0,
                         actual_success_rate=0.9, planned_objective=0.78)]
        assert evaluate_strategy_effectiveness(cs) == {
            "maximize_success": {"waves": [1, 3], "mean_accuracy": 0.95,
                                 "mean_actual_success": 0.85, "trend": 0.1,
                                 "objective_improved": False},
            "balanced": {"waves": [2], "mean_accuracy": 0.8, "mean_actual_success": 0.7,
                         "trend": 0.0, "objective_improved": False}}
        fb = loop()
        for c in cs:
            fb.evaluate_schedule_outcome(c)
        assert fb.evaluate_strategy_effectiveness() == evaluate_strategy_effectiveness(cs)
