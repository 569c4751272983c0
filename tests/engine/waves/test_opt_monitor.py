"""Tests for buddy.engine.waves._opt_monitor: metrics, anomalies at their thresholds, health,
convergence."""

from __future__ import annotations

import pytest

from buddy.engine.waves import OptimizationMonitor, agent_values, comparison_values
from buddy.engine.waves._opt_records import ScheduleComparison
from buddy.rules.tables import (
    HealthTable,
    OptimizationHealthTable,
    OptimizationMetricsTable,
    SchedulingAnomalyTable,
)


def comparison(wave: int = 1, **change) -> ScheduleComparison:
    """A wave where nothing is amiss, but for ``change``."""
    base = dict(wave=wave, planned_success_rate=0.9, actual_success_rate=0.9,
                planned_throughput=10.0, actual_throughput=10.0, planned_confidence_delta=0.0,
                actual_confidence_delta=0.0, accuracy_score=1.0, strategy="balanced",
                tasks=10, schedule_adherence=1.0, agent_utilization=0.9, availability=1.0,
                retry_rate=0.0, max_load_ratio=1.0, planned_objective=0.5)
    return ScheduleComparison(**{**base, **change})


def monitor() -> OptimizationMonitor:
    return OptimizationMonitor(OptimizationMetricsTable.default(),
                               SchedulingAnomalyTable.default(),
                               OptimizationHealthTable.default(), HealthTable.default(),
                               clock=lambda: 1770292800.0)


def types(c: ScheduleComparison) -> list[str]:
    return [a.anomaly_type for a in monitor().detect_anomalies(c)]


class TestValues:
    def test_throughput_efficiency(self):
        assert comparison_values(comparison(actual_throughput=12.0))["throughput_efficiency"] \
            == 1.0
        assert comparison_values(comparison(actual_throughput=9.0))["throughput_efficiency"] \
            == 0.9
        assert comparison_values(comparison(planned_throughput=0.0))["throughput_efficiency"] \
            == 0.0

    def test_rounded_so_thresholds_are_exact(self):
        assert comparison_values(comparison(planned_success_rate=0.9,
                                            actual_success_rate=0.8))["success_error"] == 0.1


class TestMetrics:
    def test_five_metrics(self):
        c = comparison(accuracy_score=0.87, actual_throughput=9.64, schedule_adherence=0.79,
                       agent_utilization=0.6, actual_success_rate=0.95)
        got = [(m.metric_name, m.value, m.unit, m.target_value, m.threshold_min,
                m.threshold_max, m.status, m.timestamp, m.wave)
               for m in monitor().calculate_metrics(c)]
        at = "2026-02-05T12:00:00Z"
        assert got == [
            ("schedule_accuracy", 0.87, "ratio", 0.90, 0.85, 1.0, "warning", at, 1),
            ("throughput_efficiency", 0.964, "ratio", 0.95, 0.90, 1.0, "normal", at, 1),
            ("schedule_adherence", 0.79, "ratio", 0.90, 0.80, 1.0, "critical", at, 1),
            ("agent_utilization", 0.6, "ratio", 0.80, 0.60, 1.0, "warning", at, 1),
            ("success_rate", 0.95, "ratio", 0.90, 0.80, 1.0, "normal", at, 1)]


AGENTS = {"agent_0": {"planned_tasks": 4, "actual_tasks": 4, "expected_success": 0.9,
                      "actual_success": 0.75},
          "agent_1": {"planned_tasks": 3, "actual_tasks": 3, "expected_success": 0.95,
                      "actual_success": 0.7},
          "agent_2": {"planned_tasks": 1, "actual_tasks": 0, "expected_success": 0.8,
                      "actual_success": None}}


class TestAnomalies:
    def test_none_when_all_is_well(self):
        assert types(comparison()) == []

    @pytest.mark.parametrize(("change", "expected"), [
        # |planned - actual| > 0.10, strict
        ({"actual_success_rate": 0.8}, []),
        ({"actual_success_rate": 0.799999}, ["prediction_error"]),
        # throughput_efficiency < 0.90, strict
        ({"actual_throughput": 9.0}, []),
        ({"actual_throughput": 8.99999}, ["throughput_degradation"]),
        # schedule_adherence < 0.80, strict
        ({"schedule_adherence": 0.80}, []),
        ({"schedule_adherence": 0.799999}, ["schedule_deviation"]),
        # max_load_ratio > 1.5, strict
        ({"max_load_ratio": 1.5}, []),
        ({"max_load_ratio": 1.500001}, ["agent_overload"]),
    ])
    def test_each_wave_anomaly_at_and_past_its_threshold(self, change, expected):
        assert types(comparison(**change)) == expected

    @pytest.mark.parametrize(("agent", "expected"), [
        ({"actual_tasks": 3, "expected_success": 0.9, "actual_success": 0.7}, []),
        ({"actual_tasks": 3, "expected_success": 0.9, "actual_success": 0.699999},
         ["agent_underperformance"]),
        ({"actual_tasks": 2, "expected_success": 0.9, "actual_success": 0.0}, []),
        ({"actual_tasks": 0, "expected_success": 0.9, "actual_success": None}, []),
    ])
    def test_underperformance_at_its_threshold_and_min_tasks(self, agent, expected):
        assert types(comparison(agents={"a": {"planned_tasks": 3, **agent}})) == expected

    def test_records_and_numbering(self):
        m = monitor()
        first = m.detect_anomalies(comparison(actual_success_rate=0.7, accuracy_score=0.8,
                                              agents=AGENTS))
        assert [(a.anomaly_id, a.anomaly_type, a.severity, a.affected_waves, a.affected_agents,
                 a.metric, a.value, a.threshold) for a in first] == [
            ("AN_001", "prediction_error", "medium", (1,), ("agent_0", "agent_1"),
             "success_error", 0.2, 0.1),
            ("AN_002", "agent_underperformance", "high", (1,), ("agent_1",),
             "success_shortfall", 0.25, 0.2)]
        assert first[0].description == ("Success rate prediction error: 20.0% in wave 1 "
                                         "(planned 90.0%, actual 70.0%)")
        assert first[0].recommendation == "Adjust prediction model"
        assert first[1].description == ("Agent agent_1 succeeded in 70.0% of 3 tasks in wave "
                                        "1, 25.0% below the 95.0% planned")
        assert first[0].timestamp == "2026-02-05T12:00:00Z"
        second = m.detect_anomalies(comparison(2, max_load_ratio=2.0))
        assert [(a.anomaly_id, a.anomaly_type, a.affected_waves) for a in second] == [
            ("AN_003", "agent_overload", (2,))]

    def test_agent_values_skip_agents_that_ran_nothing(self):
        assert list(agent_values(comparison(agents=AGENTS))) == ["agent_0", "agent_1"]


class TestHealth:
    def test_known_numbers(self):
        m = monitor()
        c = comparison(accuracy_score=0.9, schedule_adherence=0.85, actual_throughput=9.0,
                       actual_success_rate=0.8, availability=0.75, retry_rate=0.25)
        metrics = m.calculate_metrics(c)
        anomalies = m.detect_anomalies(c)
        health = m.generate_system_health(c, metrics, anomalies)
        # 0.30 * 90 + 0.25 * 85 + 0.25 * 90 + 0.20 * (100 * 0.8 * 0.75 * 0.75 = 45)
        assert dict(health.component_scores) == {
            "optimization_accuracy": 90.0, "schedule_adherence": 85.0,
            "throughput_efficiency": 90.0, "system_stability": 45.0}
        assert (health.overall_health_score, health.health_status) == (79.75, "GOOD")
        assert health.detected_anomalies == 0 and health.wave == 1
        assert health.optimization_metrics == tuple(metrics)
        assert health.to_json()["optimization_metrics"][0] == {
            "metric_name": "schedule_accuracy", "value": 0.9, "status": "normal"}

    @pytest.mark.parametrize(("accuracy", "status"), [(1.0, "EXCELLENT"), (0.5, "GOOD")])
    def test_tier_from_health_toml(self, accuracy, status):
        # 0.30 * 100 * accuracy + 25 + 25 + 20 * 0.9
        m = monitor()
        c = comparison(accuracy_score=accuracy)
        health = m.generate_system_health(c, [], [])
        assert health.health_status == status
        assert health.overall_health_score == pytest.approx(30 * accuracy + 68.0, abs=1e-9)


class TestConvergence:
    def test_trend(self):
        m = monitor()
        for wave, accuracy in ((1, 0.8), (2, 0.9), (3, 0.905)):
            m.generate_system_health(comparison(wave, accuracy_score=accuracy), [], [])
        report = m.monitor_optimization_convergence(
            [{"success": 0.5}, {"success": 0.52}, {"success": 0.525}])
        assert [w["accuracy_score"] for w in report["waves"]] == [0.8, 0.9, 0.905]
        assert report["accuracy_trend"] == 0.105
        assert report["mean_accuracy"] == 0.868333
        assert report["last_accuracy_change"] == 0.005
        assert report["last_weight_change"] == 0.005
        assert report["converged"] is True
        assert m.monitor_optimization_convergence(tolerance=0.001)["converged"] is False

    def test_empty(self):
        report = monitor().monitor_optimization_convergence()
        assert report == {"waves": [], "accuracy_trend": 0.0, "mean_accuracy": 0.0,
                          "last_accuracy_change": None, "last_weight_change": 0.0,
                          "converged": False}
