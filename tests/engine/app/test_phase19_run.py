"""`buddy run waves --strategy <objective>`: the optimizer plans each wave; Phase 19's files."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from buddy.engine import replay
from buddy.engine.app._cli import cli
from buddy.engine.app._waves import WaveRunConfig, run_waves
from buddy.engine.core._audit import AuditLog

START = 1_700_000_000.0
FILES = ("optimization_summary.json", "learning_signals.jsonl", "schedule_comparisons.jsonl",
         "optimization_feedback.jsonl", "heuristic_weights.json", "optimization_metrics.jsonl",
         "scheduling_anomalies.jsonl", "system_health.json")


def _run(out: Path, **kw):
    kw.setdefault("strategy", "maximize_success")
    kw.setdefault("waves", 4)
    kw.setdefault("tasks_per_wave", 100)
    return run_waves(WaveRunConfig(output_dir=out, start=START, **kw))


def _lines(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


@pytest.fixture(scope="module")
def success_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("p19") / "run"
    return out, _run(out)


def test_later_waves_beat_the_first_on_the_objective_and_the_trail_replays(success_run):
    out, summary = success_run
    p19 = out / "phase19"
    doc = json.loads((p19 / "optimization_summary.json").read_text())
    trend = doc["objective_trend"]
    assert trend["measure"] == "share of tasks that succeeded at their first attempt"
    comparisons = _lines(p19 / "schedule_comparisons.jsonl")
    scores = [c["objective_score"] for c in comparisons]
    assert trend["first_wave"] == scores[0] and trend["last_wave"] == scores[-1]
    # the first wave knows nothing of the agents (spread evenly); the later ones do
    assert min(scores[1:]) > scores[0] and trend["change"] >= 0.04
    assert summary.phase19["objective"] == "maximize_success"
    assert summary.phase19["last_wave"] > summary.phase19["first_wave"]
    report = replay(AuditLog.open(out / "audit.jsonl", clock=lambda: START))
    assert report.ok, report
    plans = [r for r in AuditLog.read_records(out / "audit.jsonl")
             if r["kind"] == "schedule" and r["event"] == "plan"]
    assert {r["data"]["wave"] for r in plans} == {1, 2, 3, 4}
    assert sum(len(r["data"]["tasks"]) for r in plans) == 400
    assert all(r["data"]["objective"] == "maximize_success" for r in plans)


def test_every_file_of_002_is_written_with_its_fields(success_run):
    out, _ = success_run
    p19 = out / "phase19"
    for name in FILES:
        assert (p19 / name).is_file(), name
    doc = json.loads((p19 / "optimization_summary.json").read_text())
    assert {"phase", "timestamp", "total_waves_optimized", "total_agents", "total_tasks",
            "optimization_strategy", "overall_metrics", "optimization_results",
            "system_health_score", "execution_time_ms"} <= set(doc)
    assert doc["phase"] == 19 and doc["total_waves_optimized"] == 4 and doc["total_tasks"] == 400
    assert {"expected_success_rate", "actual_success_rate", "prediction_accuracy",
            "expected_throughput", "actual_throughput", "schedule_adherence"} <= \
        set(doc["overall_metrics"])
    first = doc["optimization_results"][0]
    assert {"wave", "strategy", "expected_success_rate", "agent_assignments"} <= set(first)
    assert sum(len(v) for v in first["agent_assignments"].values()) == 100
    c = _lines(p19 / "schedule_comparisons.jsonl")[0]
    assert {"wave", "planned_success_rate", "actual_success_rate", "planned_throughput",
            "actual_throughput", "planned_confidence_delta", "actual_confidence_delta",
            "accuracy_score"} <= set(c)
    metrics = _lines(p19 / "optimization_metrics.jsonl")
    assert len(metrics) == 4 * 5
    assert {m["metric_name"] for m in metrics} >= {"schedule_accuracy", "throughput_efficiency"}
    assert {"metric_name", "value", "unit", "target_value", "threshold_min", "threshold_max",
            "status", "timestamp"} <= set(metrics[0])
    for s in _lines(p19 / "learning_signals.jsonl"):
        assert {"signal_id", "type", "confidence", "description", "recommendation"} <= set(s)
    for e in _lines(p19 / "optimization_feedback.jsonl"):
        assert {"feedback_id", "feedback_type", "confidence", "description",
                "recommendation", "supporting_evidence", "timestamp"} <= set(e)
    for a in _lines(p19 / "scheduling_anomalies.jsonl"):
        assert {"anomaly_id", "anomaly_type", "severity", "description", "affected_waves",
                "affected_agents", "recommendation", "timestamp"} <= set(a)
    weights = json.loads((p19 / "heuristic_weights.json").read_text())
    assert set(weights) == {"success", "throughput", "confidence", "updated_at"}
    assert sum(v for k, v in weights.items() if k != "updated_at") == pytest.approx(1.0)
    health = json.loads((p19 / "system_health.json").read_text())
    assert set(health["component_scores"]) == {"optimization_accuracy", "schedule_adherence",
                                               "throughput_efficiency", "system_stability"}
    assert 0 <= health["overall_health_score"] <= 100 and len(health["waves"]) == 4
    report = (p19 / "PHASE_19_ADAPTIVE_SCHEDULING.md").read_text()
    assert "| wave | tasks | objective |" in report and "SIMULATED" in report
    assert (p19 / "phase19_trend.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_each_wave_schedules_every_task_once_per_agent_file(success_run):
    out, _ = success_run
    for wave in range(1, 5):
        seen = []
        for f in sorted((out / "phase19" / f"wave_{wave}").glob("*/scheduled_tasks.jsonl")):
            rows = _lines(f)
            seen += [r["task_id"] for r in rows]
            for r in rows:
                assert r["wave"] == wave
                assert r["scheduled_end_time"] > r["scheduled_start_time"] >= 0
                assert r["status"] in ("completed", "failed", "cancelled")
                assert r["actual_end_time"] >= r["actual_start_time"] >= 0
        assert len(seen) == len(set(seen)) == 100


def test_the_same_seed_gives_the_same_files(tmp_path, success_run):
    out, _ = success_run
    again = tmp_path / "again"
    _run(again)
    for path in sorted((out / "phase19").rglob("*")):
        if path.is_dir() or path.suffix == ".png":
            continue
        twin = again / "phase19" / path.relative_to(out / "phase19")
        a, b = path.read_bytes(), twin.read_bytes()
        if path.name == "optimization_summary.json":  # wall-clock time aside
            da, db = json.loads(a), json.loads(b)
            da.pop("execution_time_ms"), db.pop("execution_time_ms")
            assert da == db
        else:
            assert a == b, path


def test_balanced_learns_its_weights_and_plans_with_them(tmp_path):
    out = tmp_path / "b"
    _run(out, strategy="balanced", waves=3, tasks_per_wave=40)
    doc = json.loads((out / "phase19" / "optimization_summary.json").read_text())
    history = [r["heuristic_weights"] for r in doc["optimization_results"]]
    assert history[0] != {"success": 0.5, "throughput": 0.25, "confidence": 0.25}
    assert all(0.05 <= w <= 0.9 for h in history for w in h.values())
    assert replay(AuditLog.open(out / "audit.jsonl", clock=lambda: START)).ok


def test_a_plain_strategy_writes_no_phase19_and_removes_the_earlier_one(tmp_path):
    out = tmp_path / "o"
    _run(out, waves=1, tasks_per_wave=8)
    assert (out / "phase19" / "optimization_summary.json").is_file()
    summary = _run(out, strategy="LOAD_BALANCED", waves=1, tasks_per_wave=8)
    assert not (out / "phase19").exists() and summary.phase19 is None


def test_a_phase19_directory_buddy_did_not_write_is_refused_untouched(tmp_path):
    out = tmp_path / "o"
    (out / "phase19").mkdir(parents=True)
    (out / "phase19" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="phase19"):
        _run(out, waves=1, tasks_per_wave=4)
    assert (out / "phase19" / "notes.txt").read_text() == "mine"
    assert not (out / "audit.jsonl").exists()


def test_the_cli_takes_an_objective_and_prints_its_trend(tmp_path):
    result = CliRunner().invoke(cli, ["run", "waves", "--strategy", "MAXIMIZE_SUCCESS",
                                      "--out", str(tmp_path / "c"), "--start", str(START),
                                      "--tasks-per-wave", "12"])
    assert result.exit_code == 0, result.output
    assert "maximize_success" in result.output and "in wave 1" in result.output
    assert "PHASE_19_ADAPTIVE_SCHEDULING.md" in result.output.replace("\n", "").replace(" ", "")
    bad = CliRunner().invoke(cli, ["run", "waves", "--strategy", "fastest",
                                   "--out", str(tmp_path / "d")])
    assert bad.exit_code == 2 and "maximize_success" in bad.output
    assert "Traceback" not in bad.output
    low = CliRunner().invoke(cli, ["run", "waves", "--strategy", "balanced",
                                   "--load-threshold", "0.5", "--out", str(tmp_path / "e")])
    assert low.exit_code == 2 and "--load-threshold" in low.output
    nan = CliRunner().invoke(cli, ["run", "waves", "--strategy", "balanced",
                                   "--load-threshold", "nan", "--out", str(tmp_path / "f")])
    assert nan.exit_code == 2 and "must be a number in [1, 1e+06] (got 'nan')" in nan.output


def test_a_rerun_keeps_a_users_files_in_phase19(tmp_path):
    out = tmp_path / "o"
    _run(out, waves=1, tasks_per_wave=6)
    (out / "phase19" / "notes.txt").write_text("mine")
    (out / "phase19" / "wave_9").mkdir()
    (out / "phase19" / "wave_9" / "mine").write_text("x")
    _run(out, waves=2, tasks_per_wave=6)
    assert (out / "phase19" / "notes.txt").read_text() == "mine"
    assert (out / "phase19" / "wave_9" / "mine").read_text() == "x"
    assert (out / "phase19" / "wave_2").is_dir()
    _run(out, strategy="LOAD_BALANCED", waves=1, tasks_per_wave=6)  # buddy's files go
    assert sorted(p.name for p in (out / "phase19").iterdir()) == \
        [".buddy-wave", "notes.txt", "wave_9"]  # still buddy's directory, with yours in it
    _run(out, waves=1, tasks_per_wave=6)  # so an objective may write there again
    assert (out / "phase19" / "notes.txt").read_text() == "mine"
    assert (out / "phase19" / "optimization_summary.json").is_file()


def test_learning_starts_from_the_weights_the_first_wave_was_planned_with(tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    shipped = (Path(__file__).resolve().parents[3] / "rules" / "optimizer.toml").read_text()
    (rules / "optimizer.toml").write_text(shipped.replace("success = 0.50", "success = 0.20")
                                          .replace("throughput = 0.25", "throughput = 0.40")
                                          .replace("confidence = 0.25", "confidence = 0.40"))
    mine, shipped_run = tmp_path / "mine", tmp_path / "shipped"
    _run(mine, strategy="balanced", waves=2, tasks_per_wave=12, rules_dir=rules)
    _run(shipped_run, strategy="balanced", waves=2, tasks_per_wave=12)

    def learned(out):
        doc = json.loads((out / "phase19" / "optimization_summary.json").read_text())
        return doc["optimization_results"][0]["heuristic_weights"]

    a, b = learned(mine), learned(shipped_run)
    assert a != b and a["success"] < b["success"]  # from 0.20, not 0.50


def test_waves_no_agent_was_left_to_plan_are_reported_not_dropped(tmp_path):
    out = tmp_path / "off"
    _run(out, strategy="balanced", waves=3, tasks_per_wave=10, timeout_s=0.01)
    doc = json.loads((out / "phase19" / "optimization_summary.json").read_text())
    assert doc["total_waves_optimized"] == 1  # every agent timed out in wave 1
    assert [u["wave"] for u in doc["waves_not_planned"]] == [2, 3]
    assert all(u["tasks"] == 10 and u["completed"] == 0 for u in doc["waves_not_planned"])
    report = (out / "phase19" / "PHASE_19_ADAPTIVE_SCHEDULING.md").read_text()
    assert "| 3 | 10 | not planned: every agent was OFFLINE" in report
    assert replay(AuditLog.open(out / "audit.jsonl", clock=lambda: START)).ok
