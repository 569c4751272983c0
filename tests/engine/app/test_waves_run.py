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
        assert code == 2 and "--strategy" in err and "must be one of " in err
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


class TestReview:
    """What a hostile review of the first version found, held."""

    def test_an_option_of_run_before_waves_is_refused(self, capsys):
        code, out, err = cli(capsys, "run", "--dry-run-only", "waves", "--out", "o")
        assert code == 2 and not Path("o").exists()
        assert err.startswith("UsageError: --dry-run-only is an option of `buddy run` (plans)")

    def test_a_users_wave_directory_is_never_removed(self, capsys):
        Path("o/wave_7").mkdir(parents=True)
        Path("o/wave_7/notes.txt").write_text("thesis")
        assert cli(capsys, "run", "waves", "--out", "o", "--start", START)[0] == 0
        assert Path("o/wave_7/notes.txt").read_text() == "thesis"
        Path("o/wave_2").rename("o/mine")  # a wave_N buddy did not write: refused
        Path("o/wave_2").mkdir()
        code, _, err = cli(capsys, "run", "waves", "--out", "o", "--start", START)
        assert code == 1 and err.startswith("FileExistsError: o/wave_2: exists and is not a "
                                            "directory buddy run waves wrote")

    def test_a_file_where_a_wave_goes_is_refused_before_anything(self, capsys):
        Path("o").mkdir()
        Path("o/wave_1").write_text("x")
        code, _, err = cli(capsys, "run", "waves", "--out", "o")
        assert code == 1 and "o/wave_1: exists and is not a directory" in err
        assert not Path("o", AUDIT_FILE).exists()

    def test_an_interrupted_run_is_closed_on_the_next(self, capsys):
        from buddy.engine.core._audit import AuditLog

        Path("o").mkdir()
        log = AuditLog.open(Path("o", AUDIT_FILE), clock=lambda: float(START))
        log.append("transition", "task", lambda seq: f"task-{seq}", "start", "PENDING",
                   "IN_PROGRESS", {"attempts": 0, "max_retries": 3, "gate_allows": True,
                                   "task": "w1-t00001", "agent": "agent_0"})
        log.close()
        assert cli(capsys, "run", "waves", "--out", "o", "--start", START)[0] == 0
        summary = json.loads(Path("o", SUMMARY_FILE).read_bytes())
        assert summary["recovered_tasks"] == 1
        report = replay(Path("o", AUDIT_FILE))
        assert report.ok and report.states["task-2"] == ("task", "FAILED")

    def test_a_locked_trail_runs_mock_only_and_says_so(self, capsys):
        from buddy.engine.core._audit import AuditLog

        Path("o").mkdir()
        log = AuditLog.open(Path("o", AUDIT_FILE), clock=lambda: float(START))
        log.set_locked(True, "incident")
        log.close()
        code, out, _ = cli(capsys, "run", "waves", "--out", "o", "--start", START)
        assert code == 0 and "LOCKED" in out
        summary = json.loads(Path("o", SUMMARY_FILE).read_bytes())
        assert summary["tasks_by_mode"]["LIVE"] == 0 == summary["tasks_by_mode"]["DRY_RUN"]
        assert "LOCKED" in Path("o", REPORT_FILE).read_text()

    def test_secrets_are_not_copied_out(self):
        Path("t.jsonl").write_text(json.dumps({
            "task_id": "t", "tool": "math_compute", "predicted_success_rate": 0.9,
            "args": {"password": "hunter2", "x": 1}}) + "\n")
        run_waves(WaveRunConfig(output_dir=Path("o"), tasks=Path("t.jsonl"), start=START))
        assert "hunter2" not in Path("o/predicted_tasks.jsonl").read_text()
        assert "hunter2" not in Path("o", AUDIT_FILE).read_text()

    def test_files_follow_the_umask(self):
        import os
        import stat

        old = os.umask(0o022)
        try:
            run_waves(WaveRunConfig(output_dir=Path("o"), start=START, tasks_per_wave=4))
        finally:
            os.umask(old)
        for name in (SUMMARY_FILE, REPORT_FILE, "predicted_tasks.jsonl"):
            assert stat.S_IMODE(Path("o", name).stat().st_mode) == 0o644, name

    def test_cli_details(self, capsys):
        code, _, err = cli(capsys, "run", "waves", "--timeout", "nan", "--out", "o")
        assert code == 2 and "must be a number of seconds in (0, 86400]" in err
        code, out, err = cli(capsys, "run", "waves", "--strategy", "round_robin", "--out", "o",
                             "--waves", "1", "--tasks-per-wave", "3")
        assert code == 0, err
        assert "in 1 wave over 4 agents" in out
        with pytest.raises(InputError, match="at most 10,000,000"):
            WaveRunConfig(waves=10_000, tasks_per_wave=10_000_000)

    def test_keyed_trail_prints_how_to_replay(self, capsys, monkeypatch):
        monkeypatch.setenv("WAVE_KEY", "k" * 32)
        code, out, _ = cli(capsys, "run", "waves", "--out", "o", "--key-env", "WAVE_KEY",
                           "--tasks-per-wave", "3")
        assert code == 0 and "--key-env WAVE_KEY" in out


class TestSecondReview:
    def tasks_file(self, rows):
        Path("t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return Path("t.jsonl")

    def test_a_pin_to_an_agent_the_agents_file_lacks_is_refused(self, capsys):
        Path("agents.json").write_text(json.dumps({"a1": ["crm.write"]}))
        path = self.tasks_file([
            {"task_id": "x", "tool": "math_compute", "predicted_success_rate": 0.9,
             "agent_id": "ghost"},
            {"task_id": "y", "tool": "math_compute", "predicted_success_rate": 0.9}])
        code, _, err = cli(capsys, "run", "waves", "--tasks", path, "--agents-file",
                           "agents.json", "--out", "o", "--start", START)
        assert code == 1
        assert "SkippedLine: t.jsonl: task 'x': agent_id 'ghost' is not an agent of " \
               "agents.json" in err
        summary = json.loads(Path("o", SUMMARY_FILE).read_bytes())
        assert summary["total_tasks"] == 1 and summary["agents"] == ["a1"]

    def test_an_irreversible_call_cut_short_by_a_crash_counts_as_done(self):
        # a trail cut between a LIVE decision and its run (kill -9 in the handler): the
        # next run into the directory must not do the action again
        Path("agents.json").write_text(json.dumps({"a1": ["crm.write"]}))
        row = {"task_id": "bob", "tool": "ghl_update_contact", "predicted_success_rate": 0.9,
               "args": {"name": "Bob"}}
        path = self.tasks_file([row])
        run_waves(WaveRunConfig(output_dir=Path("o"), tasks=path, start=START,
                                agents_file=Path("agents.json")))
        lines = Path("o", AUDIT_FILE).read_bytes().splitlines(keepends=True)
        cut = next(i for i, line in enumerate(lines) if b'"kind":"execution"' in line)
        Path("o", AUDIT_FILE).write_bytes(b"".join(lines[:cut]))
        from buddy.engine.core._chain import anchor_path

        anchor_path(Path("o", AUDIT_FILE)).unlink()
        from buddy.engine.core._audit import AuditLog

        AuditLog.open(Path("o", AUDIT_FILE), clock=lambda: float(START),
                      allow_missing_anchor=True).close()
        again = run_waves(WaveRunConfig(output_dir=Path("o"), tasks=path, start=START,
                                        agents_file=Path("agents.json")))
        assert again.recovered == 1 and again.tasks_by_mode["LIVE"] == 0
        [task] = lines_of_executed(Path("o"))
        assert task["gate"] == "constraint_enforcement"
        assert replay(Path("o", AUDIT_FILE)).ok

    def test_another_process_can_lock_the_system_mid_run(self, monkeypatch):
        from buddy.engine.core._audit import AuditLog
        from buddy.engine.waves import _simulator

        calls = []
        real = _simulator.WaveSimulator.outcome

        def outcome(self, attempt):  # at the 5th attempt, an operator locks the system
            calls.append(attempt.task)
            if len(calls) == 5:
                other = AuditLog.open(Path("o", AUDIT_FILE), clock=lambda: float(START))
                other.set_locked(True, "operator: stop")
                other.close()
            return real(self, attempt)

        monkeypatch.setattr(_simulator.WaveSimulator, "outcome", outcome)
        summary = run_waves(WaveRunConfig(output_dir=Path("o"), start=START))
        assert summary.lock_note and "LOCKED at the end" in summary.lock_note
        executed = lines_of_executed(Path("o"))
        assert {t["mode"] for t in executed[10:]} <= {"MOCK", None}
        assert replay(Path("o", AUDIT_FILE)).ok

    def test_every_agent_offline_still_finishes_the_run(self):
        summary = run_waves(WaveRunConfig(output_dir=Path("o"), start=START, timeout_s=0.01))
        assert summary.tasks == 60 and summary.completed == 0
        assert Path("o", SUMMARY_FILE).is_file()
        assert replay(Path("o", AUDIT_FILE)).ok

    def test_hostile_rule_and_key_files_are_refused(self, capsys):
        import os

        os.mkfifo("fifo")
        for argv in (("--catalogue", "/dev/zero"), ("--catalogue", "fifo"),
                     ("--key-file", "fifo"), ("--key-file", "/dev/zero")):
            code, _, err = cli(capsys, "run", "waves", "--out", "o", *argv)
            assert code == 1 and "not a regular file" in err, argv


def lines_of_executed(out: Path) -> list[dict]:
    return sorted((t for p in sorted(out.glob("wave_*/*/executed_tasks.jsonl"))
                   for t in lines(p)), key=lambda t: (t["wave"], t["start_time"], t["task_id"]))
