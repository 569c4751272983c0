"""Tests of buddy.engine.app._optimize and ``buddy optimize``, end to end with click's CliRunner."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import buddy.rules
from buddy.engine.app._cli import main
from buddy.engine.app._optimize import OptimizeConfig, plan_from
from buddy.engine.app._waves import WaveRunConfig, run_waves
from buddy.rules.base.errors import InputError

START = 1_700_000_000.0
SUMMARY_002 = {
    "total_agents": 2, "total_tasks": 6, "total_waves": 3, "success_rate": 0.9,
    "avg_execution_time_ms": 500.0, "avg_confidence_delta": 0.048, "retry_rate": 0.083,
    "agent_performance": {"agent_0": {"success_rate": 0.95, "tasks": 20},
                          "agent_1": {"success_rate": 0.5, "tasks": 20}},
    "timestamp": "2026-02-05T12:00:00Z"}

SHIPPED_OPTIMIZER = Path(buddy.rules.__file__).parent / "optimizer.toml"


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def tree_master(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("buddy") / "run"
    run_waves(WaveRunConfig(output_dir=out, seed=7, start=START))
    return out


@pytest.fixture
def tree(tree_master: Path) -> Path:
    return Path(shutil.copytree(tree_master, "run"))


@click.command(context_settings={"ignore_unknown_options": True,
                                 "help_option_names": []})
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
def _buddy(argv: tuple[str, ...]) -> None:
    """The ``buddy`` entry point (``main``: one line per error), for CliRunner."""
    sys.exit(main(list(argv)))


def invoke(*argv: object):
    return CliRunner().invoke(_buddy, [str(a) for a in argv])


def lines(path: Path) -> list[dict]:
    # JSON Lines split on "\n" only: a raw U+2028 in a string is text, not a line break
    return [json.loads(line) for line in path.read_text("utf-8").split("\n") if line]


def one_line_failure(result, message: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.stderr == message + "\n"
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


class TestOnABuddyTree:
    def test_plans_every_task_once(self, tree: Path) -> None:
        result = invoke("optimize", "--from", tree)
        assert (result.exit_code, result.stderr) == (0, ""), result.output
        for wave in (1, 2, 3):
            assert f"wave {wave}: 20 tasks, expected success" in result.stdout
        assert "60 tasks in 3 waves over 4 agents (nothing ran)" in result.stdout
        plan = tree / "phase19_plan"
        doc = json.loads((plan / "optimization_summary.json").read_text())
        assert (doc["phase"], doc["total_waves_optimized"], doc["total_agents"],
                doc["total_tasks"], doc["optimization_strategy"]) == \
            (19, 3, 4, 60, "maximize_success")
        m = doc["overall_metrics"]
        assert (m["actual_success_rate"], m["prediction_accuracy"], m["actual_throughput"],
                m["schedule_adherence"]) == (None, None, None, None)
        tasks = [t["task_id"] for t in lines(tree / "predicted_tasks.jsonl")]
        scheduled = [row for f in sorted(plan.glob("wave_*/*/scheduled_tasks.jsonl"))
                     for row in lines(f)]
        assert sorted(r["task_id"] for r in scheduled) == sorted(tasks)  # each exactly once
        assert {(r["status"], r["actual_start_time"], r["actual_end_time"])
                for r in scheduled} == {("scheduled", None, None)}
        assert m["expected_success_rate"] == pytest.approx(
            sum(r["confidence"] for r in scheduled) / 60, abs=1e-5)
        for result_ in doc["optimization_results"]:
            wave = result_["wave"]
            assert result_["strategy"] == "maximize_success"
            for agent, ids in result_["agent_assignments"].items():
                rows = lines(plan / f"wave_{wave}" / agent / "scheduled_tasks.jsonl")
                assert [r["task_id"] for r in rows] == ids  # in plan order
                assert [r["position"] for r in rows] == list(range(len(ids)))
                assert rows[0]["scheduled_start_time"] == 0.0
                for before, after in zip(rows, rows[1:], strict=False):
                    assert after["scheduled_start_time"] == before["scheduled_end_time"]
            makespan = max(r["scheduled_end_time"] for r in scheduled if r["wave"] == wave)
            assert makespan == pytest.approx(result_["expected_makespan_s"], abs=1e-5)

    def test_each_plan_is_checked_by_a_seeded_simulation_with_recommendations(
            self, tree: Path) -> None:
        result = invoke("optimize", "--from", tree, "--runs", "50", "--seed", "3")
        assert result.exit_code == 0, result.output
        assert "SIMULATED check (50 runs, seed 4)" in result.stdout  # wave 1: seed + 1
        doc = json.loads((tree / "phase19_plan" / "optimization_summary.json").read_text())
        first = doc["optimization_results"][0]
        sim = first["simulated"]
        assert (sim["runs"], sim["seed"], len(sim["success_rates"])) == (50, 4, 50)
        assert sim["expected_success_rate"] == first["expected_success_rate"]
        assert 0.0 <= sim["simulated_success_rate"] <= 1.0
        assert all(isinstance(line, str) and line.endswith(".")
                   for r in doc["optimization_results"] for line in r["recommendations"])
        assert invoke("optimize", "--from", tree, "--runs", "50", "--seed", "3").exit_code == 0
        again = json.loads((tree / "phase19_plan" / "optimization_summary.json").read_text())
        assert again["optimization_results"][0]["simulated"] == sim  # same seed, same draws
        bad = invoke("optimize", "--from", tree, "--runs", "0")
        assert bad.exit_code == 2 and "--runs" in bad.output

    def test_agent_durations_come_from_the_history(self, tree: Path) -> None:
        assert invoke("optimize", "--from", tree).exit_code == 0
        perf = json.loads((tree / "phase21_execution_summary.json").read_text())[
            "agent_performance"]
        for f in (tree / "phase19_plan").glob("wave_1/*/scheduled_tasks.jsonl"):
            first = lines(f)[0]
            assert first["scheduled_end_time"] == perf[first["agent_id"]]["avg_latency"]

    @pytest.mark.parametrize("objective", ["maximize_throughput", "maximize_confidence",
                                           "balanced"])
    def test_each_objective(self, tree: Path, objective: str) -> None:
        result = invoke("optimize", "--from", tree, "--objective", objective, "--out", "plan")
        assert result.exit_code == 0, result.output
        doc = json.loads(Path("plan/optimization_summary.json").read_text())
        assert doc["optimization_strategy"] == objective
        assert {r["strategy"] for r in doc["optimization_results"]} == {objective}

    def test_a_rerun_replaces_its_own_waves_only(self, tree: Path) -> None:
        assert invoke("optimize", "--from", tree, "--out", "plan").exit_code == 0
        stale = Path("plan/wave_1/ghost")
        stale.mkdir()
        assert invoke("optimize", "--from", tree, "--out", "plan").exit_code == 0
        assert not stale.exists()
        shutil.rmtree("plan/wave_2")
        Path("plan/wave_2").mkdir()  # not written by a plan: refused
        one_line_failure(invoke("optimize", "--from", tree, "--out", "plan"),
                         "FileExistsError: plan/wave_2: exists and is not a directory buddy "
                         "optimize wrote (move it away, or use another --out)")

    def test_out_is_a_file(self, tree: Path) -> None:
        Path("plan").write_text("x")
        result = invoke("optimize", "--from", tree, "--out", "plan")  # click's usage error
        assert result.exit_code == 2
        assert "Invalid value for '--out': Directory 'plan' is a file." in result.stderr
        with pytest.raises(NotADirectoryError, match="is not a directory, where buddy "
                           "optimize writes its plan"):
            plan_from(OptimizeConfig(tree, output_dir=Path("plan")))
        assert Path("plan").read_text() == "x"

    def test_out_inside_a_directory_a_run_replaces_is_refused(self, tree: Path) -> None:
        for inside in (tree / "wave_1", tree / "wave_1" / "plan"):
            one_line_failure(invoke("optimize", "--from", tree, "--out", inside),
                             f"FileExistsError: {inside}: is inside a directory buddy run "
                             "waves writes and replaces (use another --out)")
        assert not (tree / "wave_1" / "plan").exists()

    def test_a_skipped_line_is_reported_and_exits_1(self, tree: Path) -> None:
        with (tree / "phase21_learning_signals.jsonl").open("a") as f:
            f.write('{"signal_type": "x", "confidence": 2}\n')
        n = len((tree / "phase21_learning_signals.jsonl").read_text().splitlines())
        result = invoke("optimize", "--from", tree, "--out", "plan")
        assert result.exit_code == 1
        assert result.stderr == (f"SkippedLine: run/phase21_learning_signals.jsonl:{n}: "
                                 "confidence: must be a number in [0, 1] (got 2)\n")
        assert "skipped lines" in result.stdout
        doc = json.loads(Path("plan/optimization_summary.json").read_text())
        assert len(doc["skipped_lines"]) == 1 and doc["total_tasks"] == 60
        one_line_failure(invoke("optimize", "--from", tree, "--out", "plan2", "--strict"),
                         f"InputError: run/phase21_learning_signals.jsonl:{n}: confidence: "
                         "must be a number in [0, 1] (got 2)")
        assert not Path("plan2").exists()

    def test_a_bad_summary_refuses_before_anything_is_written(self, tree: Path) -> None:
        f = tree / "phase21_execution_summary.json"
        f.write_text(f.read_text().replace('"completed_tasks": 60', '"completed_tasks": -1'))
        line = next(n for n, t in enumerate(f.read_text().splitlines(), 1)
                    if '"completed_tasks"' in t)
        one_line_failure(invoke("optimize", "--from", tree),
                         f"InputError: run/phase21_execution_summary.json:{line}: "
                         "completed_tasks: must be a whole number in [0, 2**53 - 1] (got -1)")
        assert not (tree / "phase19_plan").exists()

    def test_rules_dir(self, tree: Path) -> None:
        Path("rules").mkdir()
        one_line_failure(invoke("optimize", "--from", tree, "--rules", "rules"),
                         "RuleTableError: rules: holds no optimizer.toml (the optimizer's "
                         "table)")
        Path("rules/optimizer.toml").write_text(
            "[weights]\nsuccess = 0.2\nthroughput = 0.6\nconfidence = 0.2\n"
            "[capacity]\nmax_load_factor = 2.0\n")
        result = invoke("optimize", "--from", tree, "--rules", "rules", "--objective",
                        "maximize_throughput", "--out", "plan")
        assert result.exit_code == 0, result.output
        doc = json.loads(Path("plan/optimization_summary.json").read_text())
        assert {r["capacity"] for r in doc["optimization_results"]} == {10}
        # the slowest agent (agent_0, 1.66 s a task) gets fewest when throughput counts
        counts = {a: len(ids) for a, ids in doc["optimization_results"][0]
                  ["agent_assignments"].items()}
        assert counts.get("agent_0", 0) == min(counts.get(a, 0) for a in
                                               ("agent_0", "agent_1", "agent_2", "agent_3"))


class TestOnPhase18Files:
    def make(self) -> Path:
        d = Path("p18")
        d.mkdir()
        (d / "multi_agent_summary.json").write_text(json.dumps(SUMMARY_002, indent=2))
        return d

    def test_needs_tasks(self) -> None:
        self.make()
        one_line_failure(invoke("optimize", "--from", "p18"),
                         "InputError: p18: holds no predicted_tasks.jsonl: give the tasks to "
                         "plan with --tasks FILE")

    def test_plans_tasks_given(self) -> None:
        self.make()
        Path("t.jsonl").write_text(
            '{"task_id": "a", "tool": "form_fill", "predicted_success_rate": 0.9}\n'
            '{"task_id": "b", "tool": "form_fill", "predicted_success_rate": 0.5}\n')
        # one task per agent at most (the shipped 1.5 would let agent_0 take both)
        Path("r").mkdir()
        Path("r/optimizer.toml").write_text(SHIPPED_OPTIMIZER.read_text()
                                            .replace("max_load_factor = 1.5",
                                                     "max_load_factor = 1.0"))
        result = invoke("optimize", "--from", "p18", "--tasks", "t.jsonl", "--rules", "r")
        assert result.exit_code == 0, result.output
        doc = json.loads(Path("p18/phase19_plan/optimization_summary.json").read_text())
        # p(t, a) = rate x agent rate / mean agent rate (0.725): the better task goes to
        # the better agent: 0.9 x 0.95 / 0.725 > 1 -> 1.0, 0.5 x 0.5 / 0.725 = 0.344828
        [wave] = doc["optimization_results"]
        assert wave["agent_assignments"] == {"agent_0": ["a"], "agent_1": ["b"]}
        assert wave["expected_success_rate"] == pytest.approx((1.0 + 0.344828) / 2, abs=1e-6)
        rows = lines(Path("p18/phase19_plan/wave_1/agent_1/scheduled_tasks.jsonl"))
        assert [(r["task_id"], r["scheduled_start_time"], r["scheduled_end_time"],
                 r["confidence"]) for r in rows] == [("b", 0.0, 0.5, 0.344828)]

    def test_no_history(self) -> None:
        Path("empty").mkdir()
        one_line_failure(invoke("optimize", "--from", "empty"),
                         "InputError: empty: holds none of the inputs: multi_agent_summary.json "
                         "(Phase 18) or phase21_execution_summary.json (buddy run waves)")


class TestApi:
    def test_an_unknown_objective(self) -> None:
        with pytest.raises(InputError, match="^objective must be one of maximize_success, "):
            OptimizeConfig(Path("x"), objective="fastest")

    def test_injected_clock_and_timer(self, tree: Path) -> None:
        ticks = iter([10.0, 10.25])
        s = plan_from(OptimizeConfig(tree, output_dir=Path("plan")), clock=lambda: 0.0,
                      timer=lambda: next(ticks))
        doc = json.loads(s.summary_path.read_text())
        assert (doc["timestamp"], doc["execution_time_ms"]) == ("1970-01-01T00:00:00Z", 250.0)
        assert s.tasks == 60 and len(s.waves) == 3 and s.skipped == ()

    def test_help(self) -> None:
        result = invoke("optimize", "--help")
        assert result.exit_code == 0
        for word in ("--from", "--tasks", "--objective", "--out", "--rules", "--strict",
                     "--catalogue",
                     "maximize_success|maximize_throughput|maximize_confidence|balanced"):
            assert word in result.output


def task(tid: str, rate: float, agent: str | None = None, tool: str = "form_fill") -> str:
    return json.dumps({"task_id": tid, "tool": tool, "predicted_success_rate": rate,
                       "agent_id": agent}) + "\n"


def rules(factor: str) -> Path:
    Path("r").mkdir(exist_ok=True)
    Path("r/optimizer.toml").write_text(SHIPPED_OPTIMIZER.read_text().replace(
        "max_load_factor = 1.5", f"max_load_factor = {factor}"))
    return Path("r")


def phase18(summary: dict | None = None, name: str = "p18") -> Path:
    d = Path(name)
    d.mkdir()
    (d / "multi_agent_summary.json").write_text(json.dumps(summary or SUMMARY_002, indent=2))
    return d


class TestPinnedTasks:
    """A task pinned to an agent stays there and counts against its capacity, as in a
    wave run; one pinned to an agent the history does not name is skipped."""

    def test_pinned_tasks_stay_and_count_against_capacity(self) -> None:
        phase18()
        Path("t.jsonl").write_text(task("a", 0.9, "agent_0") + task("b", 0.5, "agent_0")
                                   + task("c", 0.9) + task("d", 0.9, "ghost"))
        # capacity ceil(3 tasks / 2 agents x 1.0) = 2: agent_0 (0.95, the better) holds
        # its two pinned tasks, so c goes to agent_1 though agent_0 would suit it better
        result = invoke("optimize", "--from", "p18", "--tasks", "t.jsonl", "--rules",
                        rules("1.0"))
        assert result.exit_code == 1, result.output
        assert result.stderr == ("SkippedLine: t.jsonl: task 'd': agent_id 'ghost' is not an "
                                 "agent of the history\n")
        doc = json.loads(Path("p18/phase19_plan/optimization_summary.json").read_text())
        assert doc["skipped_lines"] == ["t.jsonl: task 'd': agent_id 'ghost' is not an agent "
                                        "of the history"]
        [wave] = doc["optimization_results"]
        assert wave["agent_assignments"] == {"agent_0": ["a", "b"], "agent_1": ["c"]}
        assert (wave["tasks"], wave["capacity"]) == (3, 2)
        # p(t, a) = rate x agent rate / 0.725: a 0.9 x 0.95 / 0.725 > 1 -> 1.0,
        # b 0.5 x 0.95 / 0.725 = 0.655172, c 0.9 x 0.5 / 0.725 = 0.620690
        assert wave["expected_success_rate"] == pytest.approx(
            (1.0 + 0.655172 + 0.620690) / 3, abs=1e-6)
        assert wave["objective_value"] == pytest.approx(1.0 + 0.655172 + 0.620690, abs=1e-6)
        # 0.5 s a task: agent_0 busy 1.0 s, agent_1 0.5 s
        assert (wave["expected_makespan_s"], wave["expected_throughput"]) == (1.0, 3.0)
        rows = lines(Path("p18/phase19_plan/wave_1/agent_0/scheduled_tasks.jsonl"))
        assert [(r["task_id"], r["scheduled_start_time"], r["scheduled_end_time"],
                 r["confidence"]) for r in rows] == [("a", 0.0, 0.5, 1.0),
                                                      ("b", 0.5, 1.0, 0.655172)]
        assert doc["total_tasks"] == 3
        one_line_failure(invoke("optimize", "--from", "p18", "--tasks", "t.jsonl", "--out",
                                "plan2", "--strict"),
                         "InputError: t.jsonl: task 'd': agent_id 'ghost' is not an agent of "
                         "the history")
        assert not Path("plan2").exists()

    def test_without_the_pin_the_better_agent_takes_what_it_can(self) -> None:
        phase18()
        Path("t.jsonl").write_text(task("a", 0.9) + task("b", 0.5) + task("c", 0.9))
        assert invoke("optimize", "--from", "p18", "--tasks", "t.jsonl", "--rules",
                      rules("1.0")).exit_code == 0
        doc = json.loads(Path("p18/phase19_plan/optimization_summary.json").read_text())
        # the two 0.9 tasks on agent_0 (each 1.0 there), b on agent_1
        assert doc["optimization_results"][0]["agent_assignments"] == \
            {"agent_0": ["a", "c"], "agent_1": ["b"]}

    def test_a_pinned_task_over_capacity_still_stays(self) -> None:
        phase18()
        Path("t.jsonl").write_text(task("a", 0.9, "agent_1") + task("b", 0.9, "agent_1")
                                   + task("c", 0.9, "agent_1") + task("d", 0.9))
        assert invoke("optimize", "--from", "p18", "--tasks", "t.jsonl", "--rules",
                      rules("1.0")).exit_code == 0
        doc = json.loads(Path("p18/phase19_plan/optimization_summary.json").read_text())
        [wave] = doc["optimization_results"]
        assert wave["agent_assignments"] == {"agent_0": ["d"], "agent_1": ["a", "b", "c"]}
        assert wave["capacity"] == 2

    def test_every_task_pinned_to_a_stranger(self) -> None:
        phase18()
        Path("t.jsonl").write_text(task("a", 0.9, "ghost"))
        one_line_failure(invoke("optimize", "--from", "p18", "--tasks", "t.jsonl"),
                         "InputError: t.jsonl: no task to plan (every task is pinned to an "
                         "agent the history does not name)")


class TestCatalogue:
    def test_an_unknown_tool_is_a_skipped_line(self) -> None:
        phase18()
        Path("t.jsonl").write_text(task("a", 0.9) + task("b", 0.9, tool="teleport"))
        result = invoke("optimize", "--from", "p18", "--tasks", "t.jsonl")
        assert result.exit_code == 1
        assert result.stderr == "SkippedLine: t.jsonl:2: tool: unknown tool 'teleport'\n"
        doc = json.loads(Path("p18/phase19_plan/optimization_summary.json").read_text())
        assert doc["total_tasks"] == 1
        one_line_failure(invoke("optimize", "--from", "p18", "--tasks", "t.jsonl", "--out",
                                "plan2", "--strict"),
                         "InputError: t.jsonl:2: tool: unknown tool 'teleport'")

    def test_catalogue_file(self) -> None:
        phase18()
        Path("t.jsonl").write_text(task("a", 0.9) + task("b", 0.9, tool="teleport"))
        shipped = (Path(buddy.rules.__file__).parent / "tools.toml").read_text()
        Path("tools.toml").write_text(shipped + '''
[[tool]]
name = "teleport"
description = "Move an agent."
risk = "LOW"
reversible = true
permissions = ["forms.write"]
dependencies = []
max_concurrency = 1
rate_limit_per_minute = 60
timeout_s = 1.0
requires_approval = false
tags = []
''')
        result = invoke("optimize", "--from", "p18", "--tasks", "t.jsonl", "--catalogue",
                        "tools.toml")
        assert (result.exit_code, result.stderr) == (0, ""), result.output
        doc = json.loads(Path("p18/phase19_plan/optimization_summary.json").read_text())
        assert doc["total_tasks"] == 2
        # a catalogue without form_fill: the other task is refused
        Path("one.toml").write_text(shipped[shipped.index("[[tool]]"):].split(
            "\n\n[[tool]]")[0] + "\n")
        one_line_failure(invoke("optimize", "--from", "p18", "--tasks", "t.jsonl",
                                "--catalogue", "one.toml", "--out", "plan2"),
                         "InputError: no tasks in t.jsonl: 2 line(s) refused, the first: "
                         "t.jsonl:1: tool: unknown tool 'form_fill'")


class TestExactRates:
    """The plan reads each agent's success rate exactly, not in whole tasks."""

    SUMMARY = {**SUMMARY_002, "agent_performance": {
        "agent_0": {"success_rate": 0.95, "tasks": 3},
        "agent_1": {"success_rate": 0.90, "tasks": 3}}}

    def plan(self, summary: dict, name: str) -> dict:
        phase18(summary, name)
        result = invoke("optimize", "--from", name, "--tasks", "t.jsonl")
        assert (result.exit_code, result.stderr) == (0, ""), result.output
        return json.loads(Path(name, "phase19_plan", "optimization_summary.json").read_text())

    def test_0_95_and_0_90_over_3_tasks_are_not_both_1(self) -> None:
        Path("t.jsonl").write_text("".join(task(f"t{i}", 0.5) for i in range(4)))
        rated = self.plan(self.SUMMARY, "rated")
        # in whole tasks both read 3 of 3 = 1.0: no different from agents with no record
        unrated = self.plan({**SUMMARY_002, "agent_performance": {}}, "unrated")
        assert {a: v["prior"] for a, v in rated["agents"].items()} == \
            {"agent_0": 0.95, "agent_1": 0.9}
        assert {a: v["prior"] for a, v in unrated["agents"].items()} == \
            {"agent_0": 0.9, "agent_1": 0.9}
        # capacity ceil(4 / 2 x 1.5) = 3: the better agent takes 3
        assert rated["optimization_results"][0]["agent_assignments"] == \
            {"agent_0": ["t0", "t1", "t2"], "agent_1": ["t3"]}
        assert unrated["optimization_results"][0]["agent_assignments"] == \
            {"agent_0": ["t0", "t1"], "agent_1": ["t2", "t3"]}
        # p = 0.5 x 0.95 / 0.925 = 0.513514 on agent_0, 0.5 x 0.9 / 0.925 = 0.486486
        confidences = {r["task_id"]: r["confidence"] for f in
                       Path("rated/phase19_plan/wave_1").glob("*/scheduled_tasks.jsonl")
                       for r in lines(f)}
        assert confidences == {"t0": 0.513514, "t1": 0.513514, "t2": 0.513514,
                               "t3": 0.486486}
        assert rated["optimization_results"][0]["expected_success_rate"] == pytest.approx(
            (3 * 0.5 * 0.95 + 0.5 * 0.9) / 0.925 / 4, abs=1e-6)


class TestOddAgentIds:
    def test_a_wave_runs_own_tree_plans_as_it_is(self) -> None:
        odd = "a b/é"  # not a plain name (a wave run refuses U+2028: its trail holds ids)
        Path("agents.json").write_text(json.dumps({odd: ["forms.write"],
                                                   "[red]x": ["forms.write"]}))
        Path("t.jsonl").write_text(task("t0", 0.9, odd) + task("t1", 0.9) + task("t2", 0.9))
        run_waves(WaveRunConfig(output_dir=Path("run"), tasks=Path("t.jsonl"), start=START,
                                agents_file=Path("agents.json")))
        result = invoke("optimize", "--from", "run")
        assert result.exit_code == 0, result.output
        assert odd in result.stdout
        assert "[red]x" in result.stdout  # text, not markup
        doc = json.loads(Path("run/phase19_plan/optimization_summary.json").read_text())
        assert {a: v["dir"] for a, v in doc["agents"].items()} == \
            {odd: "agent_0", "[red]x": "agent_1"}
        [wave] = doc["optimization_results"]
        assert "t0" in wave["agent_assignments"][odd]  # pinned, it stayed
        rows = lines(Path("run/phase19_plan/wave_1/agent_0/scheduled_tasks.jsonl"))
        assert {r["agent_id"] for r in rows} == {odd}
