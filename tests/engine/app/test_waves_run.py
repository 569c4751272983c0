"""Tests of buddy.engine.app._waves and ``buddy run waves``: the wave loop end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from buddy.engine import replay
from buddy.engine.app._cli import main
from buddy.engine.app._waves import (
    AGENT_FILES,
    AUDIT_FILE,
    HEALTH_FILE,
    OUTPUT_FILES,
    REPORT_FILE,
    SUMMARY_FILE,
    WaveRunConfig,
    run_waves,
)
from buddy.rules.base.errors import InputError

START = 1_700_000_000


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ".buddy-run.lock"}


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


@pytest.fixture(scope="module")
def default_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("waves") / "out"
    run_waves(WaveRunConfig(output_dir=out, start=START))
    return out


class TestDefaultRun:
    @pytest.fixture
    def out(self, default_out):
        return default_out

    def test_the_tree(self, out):
        for name in OUTPUT_FILES:
            assert (out / name).is_file(), name
        for wave in (1, 2, 3):
            for agent in ("agent_0", "agent_1", "agent_2", "agent_3"):
                for name in AGENT_FILES:
                    assert (out / f"wave_{wave}" / agent / name).is_file()
        summary = json.loads((out / SUMMARY_FILE).read_bytes())
        assert summary["total_tasks"] == 60 and summary["waves"] == 3
        assert summary["completed_tasks"] + summary["failed_tasks"] == 60
        executed = [t for w in (1, 2, 3) for a in range(4)
                    for t in lines(out / f"wave_{w}" / f"agent_{a}" / "executed_tasks.jsonl")]
        assert sorted(t["task_id"] for t in executed) == sorted(
            t["task_id"] for t in lines(out / "predicted_tasks.jsonl"))
        assert {t["status"] for t in executed} <= {"COMPLETED", "FAILED"}

    def test_report(self, out):
        report = (out / REPORT_FILE).read_text("utf-8")
        assert "SIMULATED" in report and "```mermaid" in report
        assert "PENDING --> IN_PROGRESS: start [gate_allows] (" in report
        assert "![health and success per wave](phase21_health.png)" in report
        assert (out / "phase21_health.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    def test_health_and_signals(self, out):
        health = json.loads((out / HEALTH_FILE).read_bytes())
        assert [w["wave"] for w in health["waves"]] == [1, 2, 3]
        assert len(health["confidence_trajectory"]) == 3
        for target, name in (("coordination", "coordination_feedback.jsonl"),
                             ("heuristics", "heuristic_feedback.jsonl"),
                             ("prediction", "prediction_feedback.jsonl")):
            got = lines(out / name)
            assert got and {s["target"] for s in got} == {target}
        every = lines(out / "phase21_learning_signals.jsonl")
        assert len(every) == sum(len(lines(out / n)) for n in (
            "coordination_feedback.jsonl", "heuristic_feedback.jsonl",
            "prediction_feedback.jsonl"))

    def test_audit_replays_every_decision(self, out):
        report = replay(out / AUDIT_FILE)
        assert report.ok
        records = [json.loads(line) for line in (out / AUDIT_FILE).read_bytes().splitlines()]
        assert report.decisions == sum(r["kind"] == "decision" for r in records) > 60
        tasks = {s: st for s, (m, st) in report.states.items() if m == "task"}
        assert len(tasks) == 60 and set(tasks.values()) <= {"COMPLETED", "FAILED"}

    def test_a_forged_task_move_diverges(self, out, tmp_path):
        # a task's FAILED rewritten as COMPLETED, chain re-signed: replay must catch it
        from buddy.engine.core._audit import AuditLog

        records = [json.loads(line) for line in (out / AUDIT_FILE).read_bytes().splitlines()]
        forged = AuditLog.memory(clock=lambda: 0.0)
        changed = False
        for r in records[1:]:
            if not changed and r["machine"] == "task" and r["dst"] == "RETRYING":
                r["dst"], changed = "COMPLETED", True
            forged.append(r["kind"], r["machine"], r["subject"], r["event"], r["src"],
                          r["dst"], r["data"], ts=r["ts"])
        assert changed
        assert not replay(forged).ok

    def test_same_seed_same_bytes(self, out, tmp_path):
        again = tmp_path / "again"
        run_waves(WaveRunConfig(output_dir=again, start=START))
        assert files(again) == files(out)

    def test_another_seed_differs(self, out, tmp_path):
        other = tmp_path / "other"
        run_waves(WaveRunConfig(output_dir=other, start=START, seed=22))
        assert files(other)["predicted_tasks.jsonl"] != files(out)["predicted_tasks.jsonl"]

    def test_outputs_are_valid_inputs(self, out, tmp_path):
        again = tmp_path / "from-outputs"
        run_waves(WaveRunConfig(output_dir=again, start=START, strict=True,
                                tasks=out / "predicted_tasks.jsonl",
                                schedule=out / "wave_1" / "agent_0" / "agent_assignments.jsonl"))
        pinned = {a["task_id"] for a in lines(out / "wave_1/agent_0/agent_assignments.jsonl")
                  if a["reassigned_from"] is None}
        firsts = [a for a in lines(again / "wave_1/agent_0/agent_assignments.jsonl")]
        assert pinned <= {a["task_id"] for a in firsts}


class TestInputs:
    def write(self, name, rows):
        Path(name).write_text("".join(r if isinstance(r, str) else json.dumps(r) + "\n"
                                      for r in rows), "utf-8")
        return name

    def tasks(self):
        return [{"task_id": f"t{i}", "tool": "math_compute", "predicted_success_rate": 0.9,
                 "wave": 1 + i % 2} for i in range(6)]

    def test_a_bad_line_is_skipped_counted_and_named(self, capsys):
        path = self.write("tasks.jsonl", [*self.tasks()[:3],
                                          '{"task_id": "x", "tool": "math_compute", '
                                          '"predicted_success_rate": "high"}\n',
                                          *self.tasks()[3:]])
        code, out, err = cli(capsys, "run", "waves", "--tasks", path, "--out", "o",
                             "--start", START)
        assert code == 1
        assert [line for line in err.splitlines() if not line.startswith("wave ")] == [
            "SkippedLine: tasks.jsonl:4: predicted_success_rate: must be a number in [0, 1] "
            "(got 'high')"]
        summary = json.loads(Path("o", SUMMARY_FILE).read_bytes())
        assert summary["total_tasks"] == 6 and len(summary["skipped_lines"]) == 1

    def test_strict_refuses_before_writing(self, capsys):
        path = self.write("tasks.jsonl", [*self.tasks(), "[1, 2]\n"])
        code, out, err = cli(capsys, "run", "waves", "--tasks", path, "--out", "o",
                             "--strict")
        assert code == 1 and out == ""
        assert err == "InputError: tasks.jsonl:7: must be an object (got a list)\n"
        assert not Path("o").exists()

    def test_unknown_strategy(self, capsys):
        code, _, err = cli(capsys, "run", "waves", "--strategy", "FASTEST", "--out", "o")
        assert code == 1 and err.startswith("InputError: strategy must be one of ")
        assert "Traceback" not in err

    def test_bad_settings(self):
        with pytest.raises(InputError, match="schedule needs its tasks"):
            WaveRunConfig(schedule=Path("s.jsonl"))
        with pytest.raises(InputError, match="agents must be a whole number"):
            WaveRunConfig(agents=0)
        with pytest.raises(InputError, match="backend must be one of"):
            WaveRunConfig(backend="dask")


def test_cli_prints_tasks_per_second(capsys):
    code, out, err = cli(capsys, "run", "waves", "--out", "o", "--start", START, "--agents",
                         "3", "--waves", "2", "--tasks-per-wave", "9", "--strategy",
                         "PRIORITY_BASED", "--retry", "linear_backoff", "--backend", "threads")
    assert code == 0, err
    assert "tasks/s" in out and "18 (" in out
    assert [line.split(":")[0] for line in err.splitlines()] == ["wave 1/2 done", "wave 2/2 done"]
    assert replay(Path("o", AUDIT_FILE)).ok


def test_a_run_continues_the_trail_and_replays(capsys):
    for _ in range(2):
        assert cli(capsys, "run", "waves", "--out", "o", "--start", START, "--tasks-per-wave",
                   "5")[0] == 0
    summary = json.loads(Path("o", SUMMARY_FILE).read_bytes())
    assert summary["audit_seq"][0] > 1
    assert replay(Path("o", AUDIT_FILE)).ok
