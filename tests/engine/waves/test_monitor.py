"""Tests of buddy.engine.waves._monitor and ._feedback: metrics, health, anomalies, signals."""

from __future__ import annotations

import pytest

from buddy.engine.waves._agents import AgentManager
from buddy.engine.waves._executor import WaveRun
from buddy.engine.waves._feedback import WaveFeedback, identify_patterns
from buddy.engine.waves._monitor import WaveMonitor, wave_metrics
from buddy.engine.waves._records import ExecutionTask, TaskStatus
from buddy.rules.base.errors import InputError
from buddy.rules.tables import HealthTable
from buddy.rules.tables._waves import WaveAnomalyTable, WaveHealthTable, WaveSignalTable


def result(i, agent, ok, predicted=0.8, *, wave=1, retries=0, timed_out=False, gate=None,
           latency=1.0):
    return ExecutionTask(f"t{i}", agent, wave, "math_compute",
                         TaskStatus.COMPLETED if ok else TaskStatus.FAILED, 0.0, latency,
                         retries, ok, predicted, timed_out=timed_out, gate=gate)


def wave_run(results, wave=1, offline=(), refusals=None, retries=0):
    return WaveRun(wave, tuple(results), (), {}, (), tuple(offline), refusals or {}, retries,
                   0.0, 10.0)


def outcomes(spec, wave=1, predicted=0.8):
    """``spec``: per agent, a list of booleans (success) of its tasks."""
    i = 0
    out = []
    for agent, oks in spec.items():
        for ok in oks:
            out.append(result(i, agent, ok, predicted, wave=wave))
            i += 1
    return out


def monitor():
    return WaveMonitor(WaveAnomalyTable.default(), WaveHealthTable.default(),
                       HealthTable.default(), clock=lambda: 0.0)


def health(spec, *, agents=None, available_end=None, mon=None, wave=1, predicted=0.8):
    agents = agents or list(spec)
    run = wave_run(outcomes(spec, wave, predicted), wave)
    metrics = wave_metrics(run, agents, agents,
                           len(agents) if available_end is None else available_end)
    mon = mon or monitor()
    return mon.generate_system_health(metrics, 0.0), mon


class TestMetrics:
    def test_known_numbers(self):
        # 2 agents: a 4 of 4, b 2 of 4; predicted 0.8 everywhere
        run = wave_run(outcomes({"a": [True] * 4, "b": [True, True, False, False]}))
        m = wave_metrics(run, ["a", "b", "c"], ["a", "b", "c"], 2)
        s = m.system
        assert s["success_rate"] == 0.75
        assert s["availability"] == pytest.approx(2 / 3)
        assert s["prediction_error"] == pytest.approx(0.05)
        assert s["accuracy"] == pytest.approx(0.95)
        assert s["load_balance"] == 0.0  # c ran nothing
        assert s["load_imbalance_ratio"] == 4.0 and s["load_spread"] == 1.0
        assert m.agents["b"]["success_rate"] == 0.5
        assert m.agents["b"]["prediction_error"] == pytest.approx(0.3)

    def test_health_formula_on_known_numbers(self):
        # success 0.75, availability 1, accuracy 0.95, load balance 1 (4 and 4)
        h, _ = health({"a": [True] * 4, "b": [True, True, False, False]})
        assert h.health_score == pytest.approx(100 * (0.4 * 0.75 + 0.2 + 0.2 * 0.95 + 0.2))
        assert h.health_status == "GOOD"  # 89: tiers from health.toml (GOOD from 75)

    def test_tiers_shared_with_the_tool_monitor(self):
        assert monitor().tiers.tier(75.0).value == "GOOD"
        assert monitor().tiers.tier(74.99).value == "FAIR"


def types(h):
    return sorted((a.anomaly_type, a.agent_id) for a in h.anomalies)


class TestAnomalies:
    def test_agent_failure_at_its_threshold(self):
        # b: 2 of 4 = 0.50 is not below 0.50; 1 of 4 is
        h, _ = health({"a": [True] * 4, "b": [True, True, False, False]})
        assert ("agent_failure", "b") not in types(h)
        h, _ = health({"a": [True] * 4, "b": [True, False, False, False]})
        a = next(x for x in h.anomalies if x.anomaly_type == "agent_failure")
        assert (a.agent_id, a.severity, a.value, a.threshold) == ("b", "HIGH", 0.25, 0.5)

    def test_load_imbalance_and_coordination_issue(self):
        # loads 3 and 2: ratio 1.5 (not above), spread 1/3 (not above 0.40)
        h, _ = health({"a": [True] * 3, "b": [True] * 2})
        assert not {"load_imbalance", "coordination_issue"} & {t for t, _ in types(h)}
        # loads 5 and 3: ratio 1.67 > 1.5, spread 0.4 (not above)
        h, _ = health({"a": [True] * 5, "b": [True] * 3})
        assert {t for t, _ in types(h)} >= {"load_imbalance"}
        assert "coordination_issue" not in {t for t, _ in types(h)}
        # loads 5 and 2: spread 0.6 > 0.40
        h, _ = health({"a": [True] * 5, "b": [True] * 2})
        got = {a.anomaly_type: a for a in h.anomalies}
        assert got["coordination_issue"].severity == "MEDIUM"
        assert got["load_imbalance"].severity == "LOW"

    def test_prediction_drift(self):
        # predicted 0.8; success 0.5 -> error 0.30 > 0.25; success 0.6 -> 0.20
        h, _ = health({"a": [True, False] * 5}, predicted=0.8)
        assert "prediction_drift" in {t for t, _ in types(h)}
        h, _ = health({"a": [True] * 3 + [False] * 2}, predicted=0.8)
        assert "prediction_drift" not in {t for t, _ in types(h)}

    def test_drop_between_waves(self):
        mon = monitor()
        health({"a": [True] * 10}, mon=mon)                      # 1.0
        h, _ = health({"a": [True] * 9 + [False]}, mon=mon, wave=2)  # 0.9: drop 0.10
        assert "performance_drop" not in {t for t, _ in types(h)}
        h, _ = health({"a": [True] * 7 + [False] * 3}, mon=mon, wave=3)  # 0.7: drop 0.2
        drop = next(a for a in h.anomalies if a.anomaly_type == "performance_drop")
        assert drop.value == pytest.approx(0.2)

    def test_trajectory(self):
        mon = monitor()
        health({"a": [True] * 4}, mon=mon)
        health({"a": [True, False] * 2}, mon=mon, wave=2)
        t = mon.track_confidence_trajectory()
        assert [(w["wave"], w["success_rate"], w["gap"]) for w in t] == [
            (1, 1.0, -0.2), (2, 0.5, 0.3)]


class TestFeedback:
    def setup_method(self):
        self.feedback = WaveFeedback(WaveSignalTable.default(), clock=lambda: 5.0)
        run = wave_run(outcomes({"a": [True] * 4, "b": [True, False, False, False]}),
                       offline=["b"], refusals={"dependency_validation": 2})
        self.run = run
        self.metrics = wave_metrics(run, ["a", "b"], ["a", "b"], 1)

    def test_signals_to_each_target_and_callback(self):
        got: dict[str, list] = {"coordination": [], "heuristics": [], "prediction": []}
        for target, sink in got.items():
            self.feedback.subscribe(target, sink.append)
        signals = self.feedback.generate_feedback_signals(self.run, self.metrics)
        sent = self.feedback.route(signals)
        assert sent == {t: len(v) for t, v in got.items()}
        assert {s.signal_type for s in got["coordination"]} == {"agent_performance",
                                                               "multi_agent_coordination"}
        assert {s.signal_type for s in got["prediction"]} == {"prediction_validation"}
        assert {s.signal_type for s in got["heuristics"]} == {"heuristic_feedback"}
        assert {s.target_phase for s in got["coordination"]} == {18}
        # confidence 1 - |delta|: b predicted 0.8, succeeded 0.25
        b = next(s for s in got["prediction"] if s.content["agent_id"] == "b")
        assert b.confidence == pytest.approx(1 - 0.55)
        gates = [s for s in got["coordination"] if s.rule == "multi_agent_coordination.gates"]
        assert len(gates) == 1 and "refused 2" in gates[0].content["insight"]

    def test_unknown_target(self):
        with pytest.raises(InputError, match="no signal target 'phase99'"):
            self.feedback.subscribe("phase99", print)

    def test_patterns(self):
        assert identify_patterns(self.run, self.metrics) == [
            "b timed out and went OFFLINE",
            "a succeeded 100%, above the 80% predicted",
            "b succeeded 25%, below the 80% predicted",
            "math_compute failed 3 of 8 tasks",
            "safety gate dependency_validation refused 2 tasks",
        ]

    def test_outcomes(self):
        out = self.feedback.evaluate_agent_outcomes(self.run.results[:1])
        assert (out[0].actual_success, out[0].error_margin) == (1.0, pytest.approx(0.2))


def test_manager_reads_results():
    m = AgentManager(["a"], clock=lambda: 0.0)
    m.record_result(result(0, "a", True))
    m.record_result(result(1, "a", False))
    assert m.agents["a"].success_rate == 0.5


def test_a_gate_refusal_raises_an_anomaly():
    def found(refusals):
        run = wave_run(outcomes({"a": [True] * 4}), refusals=refusals)
        metrics = wave_metrics(run, ["a"], ["a"], 1)
        return [a.anomaly_type for a in monitor().generate_system_health(metrics, 0.0).anomalies]

    assert "safety_gate_refusal" not in found({})
    assert "safety_gate_refusal" in found({"dependency_validation": 1})
