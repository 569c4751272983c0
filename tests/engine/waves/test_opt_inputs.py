"""Tests of buddy.engine.waves._opt_inputs: Phase 18's files and buddy's own tree as history.

Every test runs in its own temporary directory and names files relatively, so
messages are pinned exactly.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from buddy.engine.app._waves import WaveRunConfig, run_waves
from buddy.engine.waves import (
    AgentPerformance,
    CoordinationHistory,
    CoordinationSummary,
    agent_states,
    load_coordination,
)
from buddy.engine.waves._opt_inputs import _line_of
from buddy.rules.base.errors import InputError

START = 1_700_000_000.0

# 002's examples, verbatim.
SUMMARY = """{
  "total_agents": 4,
  "total_tasks": 12,
  "total_waves": 3,
  "success_rate": 0.917,
  "avg_execution_time_ms": 28.5,
  "avg_confidence_delta": 0.048,
  "retry_rate": 0.083,
  "agent_performance": {
    "agent_0": {"success_rate": 0.95, "tasks": 3},
    "agent_1": {"success_rate": 0.90, "tasks": 3}
  },
  "timestamp": "2026-02-05T12:00:00Z"
}
"""
PATTERNS = """[
  {
    "pattern_type": "load_balanced",
    "agent_assignments": {
      "agent_0": ["task_0", "task_4"],
      "agent_1": ["task_1", "task_5"]
    },
    "success_rate": 0.95,
    "confidence": 0.88
  }
]
"""
HEALTH = """{
  "overall_health_score": 88.3,
  "health_status": "EXCELLENT",
  "component_scores": {
    "coordination": 90.0,
    "execution": 88.0
  }
}
"""
SIGNALS = """\
{"signal_id": "LS_001", "type": "coordination_improvement", "confidence": 0.92, "description": "Load balancing effective"}
{"signal_id": "LS_002", "type": "agent_specialization", "confidence": 0.85, "description": "Agent 0 excels at LOW risk tasks"}
"""  # noqa: E501
S = "d/multi_agent_summary.json"


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def phase18(summary: str | bytes = SUMMARY, patterns: str | None = PATTERNS,
            health: str | None = HEALTH, signals: str | bytes | None = SIGNALS) -> Path:
    d = Path("d")
    d.mkdir(exist_ok=True)
    for name, text in (("multi_agent_summary.json", summary),
                       ("coordination_patterns.json", patterns),
                       ("system_health.json", health), ("learning_signals.jsonl", signals)):
        if text is not None:
            (d / name).write_bytes(text.encode() if isinstance(text, str) else text)
    return d


def refused(summary: str | bytes) -> str:
    with pytest.raises(InputError) as info:
        load_coordination(phase18(summary))
    return str(info.value)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("buddy") / "run"
    run_waves(WaveRunConfig(output_dir=out, seed=7, start=START))
    return out


class TestPhase18Examples:
    def test_every_file_of_002_loads(self) -> None:
        h = load_coordination(phase18())
        assert h.source == "phase18 files" and h.errors == () and h.skipped == 0
        s = h.summary
        assert (s.total_agents, s.total_tasks, s.total_waves) == (4, 12, 3)
        assert (s.success_rate, s.avg_execution_time_ms, s.avg_confidence_delta,
                s.retry_rate) == (0.917, 28.5, 0.048, 0.083)
        assert s.agent_performance == {"agent_0": AgentPerformance(0.95, 3),
                                       "agent_1": AgentPerformance(0.9, 3)}
        assert s.timestamp == "2026-02-05T12:00:00Z"
        [p] = h.patterns
        assert (p.pattern_type, p.success_rate, p.confidence, p.wave) == \
            ("load_balanced", 0.95, 0.88, None)
        assert p.agent_assignments == {"agent_0": ("task_0", "task_4"),
                                       "agent_1": ("task_1", "task_5")}
        assert h.health is not None
        assert (h.health.overall_health_score, h.health.health_status) == (88.3, "EXCELLENT")
        assert h.health.component_scores == {"coordination": 90.0, "execution": 88.0}
        assert [(g.signal_id, g.type, g.confidence) for g in h.signals] == [
            ("LS_001", "coordination_improvement", 0.92),
            ("LS_002", "agent_specialization", 0.85)]
        assert h.signals[1].description == "Agent 0 excels at LOW risk tasks"

    def test_the_optional_files_may_be_missing(self) -> None:
        h = load_coordination(phase18(patterns=None, health=None, signals=None))
        assert (h.patterns, h.health, h.signals, h.errors) == ((), None, (), ())

    def test_a_byte_order_mark_is_ignored(self) -> None:
        h = load_coordination(phase18("\ufeff" + SUMMARY, signals="\ufeff" + SIGNALS))
        assert h.summary.total_tasks == 12 and len(h.signals) == 2

    def test_u2028_in_a_json_string_is_text_not_a_line_break(self) -> None:
        line = ('{"signal_id": "LS_9", "type": "t", "confidence": 0.5, '
                '"description": "a\u2028b\u2029c\u0085d"}\n')
        h = load_coordination(phase18(signals=line))
        assert [g.description for g in h.signals] == ["a\u2028b\u2029c\u0085d"]

    def test_jsonl_splits_on_newline_only(self) -> None:
        # two objects joined by a raw U+2028 are one line, and not JSON
        line = SIGNALS.splitlines()[0] + "\u2028" + SIGNALS.splitlines()[1] + "\n"
        h = load_coordination(phase18(signals=line))
        assert h.signals == ()
        assert h.errors == ("d/learning_signals.jsonl:1: invalid JSON: unexpected content "
                            "after document at column 123",)


class TestAgentIds:
    """An agent id is any non-empty string, as a wave run takes one: its own output loads."""

    @pytest.mark.parametrize("agent", ["a b\u2028c", "x\x00y", "z" * 300, "[red]"])
    def test_phase18_takes_any_non_empty_id(self, agent: str) -> None:
        summary = SUMMARY.replace('"agent_0": {', f"{json.dumps(agent)}: {{", 1)
        h = load_coordination(phase18(summary, patterns=PATTERNS.replace(
            '"agent_0":', f"{json.dumps(agent)}:")))
        assert h.errors == ()
        assert list(h.summary.agent_performance) == [agent, "agent_1"]
        assert h.patterns[0].agent_assignments[agent] == ("task_0", "task_4")
        assert [a.agent_id for a in agent_states(h)] == [agent, "agent_1"]

    def test_a_wave_runs_odd_agent_ids_load_as_they_are(self, tmp_path: Path) -> None:
        # ids that are not plain names (a space, a slash, markup, 256 characters): the run
        # names their directories agent_<index>; a run refuses an id its trail could not
        # hold (a control character, U+2028: buddy run waves' inputs)
        odd = ["a b/é", "[red]x", "z" * 256]
        Path("agents.json").write_text(json.dumps({odd[0]: ["forms.write"],
                                                   "ok": ["forms.write"]}))
        Path("t.jsonl").write_text("".join(json.dumps(
            {"task_id": f"t{i}", "tool": "form_fill", "predicted_success_rate": 0.9,
             "agent_id": a}) + "\n" for i, a in enumerate([odd[0], "ok", None])))
        run_waves(WaveRunConfig(output_dir=Path("a"), tasks=Path("t.jsonl"), start=START,
                                agents_file=Path("agents.json")))
        Path("t2.jsonl").write_text("".join(json.dumps(
            {"task_id": f"t{i}", "tool": "form_fill", "predicted_success_rate": 0.9,
             "agent_id": a}) + "\n" for i, a in enumerate(odd[1:])))
        run_waves(WaveRunConfig(output_dir=Path("b"), tasks=Path("t2.jsonl"), start=START))
        for run, agents in (("a", [odd[0], "ok"]),
                            ("b", ["agent_0", "agent_1", "agent_2", "agent_3", *odd[1:]])):
            doc = json.loads(Path(run, "phase21_execution_summary.json").read_text())
            assert doc["agents"] == agents
            h = load_coordination(run)
            assert h.errors == ()
            assert list(h.summary.agent_performance) == agents
            pinned = {a: i for i, a in enumerate(agents) if a in odd}
            for agent, i in pinned.items():
                assert doc["agent_dirs"][agent] == f"agent_{i}"
                assert Path(run, "wave_1", f"agent_{i}", "executed_tasks.jsonl").is_file()
            # its first assignments were read from agent_<index>
            assert h.patterns[0].agent_assignments.keys() >= pinned.keys()


class TestRefusedSummary:
    """A bad summary refuses the load: one line, file:line: field: message."""

    @pytest.mark.parametrize(("old", "new", "message"), [
        ('"total_tasks": 12', '"total_tasks": "12"',
         "3: total_tasks: must be a whole number in [0, 2**53 - 1] (got '12')"),
        ('"total_tasks": 12', '"total_tasks": 12.0',
         "3: total_tasks: must be a whole number in [0, 2**53 - 1] (got 12.0)"),
        ('"total_waves": 3', '"total_waves": true',
         "4: total_waves: must be a whole number in [0, 2**53 - 1] (got True)"),
        ('"total_tasks": 12', '"total_tasks": 123456789012345678901234567890',
         "3: total_tasks: must be a whole number in [0, 2**53 - 1] "
         "(got 123456789012345678901234567890)"),
        ('"total_agents": 4', '"total_agents": -4',
         "2: total_agents: must be a whole number in [0, 2**53 - 1] (got -4)"),
        ('"tasks": 3}\n  }', '"tasks": -3}\n  }',
         "11: agent_performance.agent_1.tasks: must be a whole number in [0, 2**53 - 1] "
         "(got -3)"),
        ('{"success_rate": 0.95', '{"success_rate": 1.5',
         "10: agent_performance.agent_0.success_rate: must be a number in [0, 1] (got 1.5)"),
        ('"retry_rate": 0.083', '"retry_rate": -0.1',
         "8: retry_rate: must be a number in [0, 1] (got -0.1)"),
        ('"success_rate": 0.917', '"success_rate": null',
         "5: success_rate: must be a number in [0, 1] (got None)"),
        ('"avg_execution_time_ms": 28.5', '"avg_execution_time_ms": -1',
         "6: avg_execution_time_ms: must be a finite number >= 0 (got -1)"),
        ('"avg_execution_time_ms": 28.5', '"avg_execution_time_ms": 1' + "0" * 30,
         "6: avg_execution_time_ms: must be a finite number >= 0 (got 1" + "0" * 30 + ")"),
        ('"avg_execution_time_ms": 28.5', '"avg_execution_time_ms": 1' + "0" * 400,
         "6: invalid JSON: number is infinity when parsed as double at column 28"),
        ('"avg_confidence_delta": 0.048', '"avg_confidence_delta": 2',
         "7: avg_confidence_delta: must be a finite number in [-1, 1] (got 2)"),
        ('"agent_0": {', '"": {',
         "10: agent_performance['']: an agent id must be a non-empty string (got '')"),
        ('"agent_0": {"success_rate": 0.95, "tasks": 3}', '"agent_0": [0.95, 3]',
         "10: agent_performance.agent_0: must be an object (got a list)"),
        ('"agent_0": {"success_rate": 0.95, "tasks": 3}',
         '"agent_0": {"success_rate": 0.95, "tasks": 3, "rank": 1}',
         "10: agent_performance.agent_0.rank: unknown key"),
        ('  "retry_rate": 0.083,\n', '',
         "1: retry_rate: missing"),
        ('"agent_1": {"success_rate": 0.90, "tasks": 3}', '"agent_1": {"success_rate": 0.90}',
         "11: agent_performance.agent_1.tasks: missing"),
        ('"success_rate": 0.917', '"sucess_rate": 0.917',
         "5: sucess_rate: unknown key"),
        ('"timestamp": "2026-02-05T12:00:00Z"', '"timestamp": "yesterday"',
         "13: timestamp: must be an ISO 8601 date and time or null (got 'yesterday')"),
        ('"success_rate": 0.917', '"success_rate": NaN',
         "5: invalid JSON: unexpected character, expected a JSON value at column 19"),
        ('"success_rate": 0.917', '"success_rate": 1e999',
         "5: invalid JSON: number is infinity when parsed as double at column 19"),
    ])
    def test_message(self, old: str, new: str, message: str) -> None:
        assert old in SUMMARY
        assert refused(SUMMARY.replace(old, new, 1)) == f"{S}:{message}"

    def test_not_an_object(self) -> None:
        assert refused("[1, 2]\n") == f"{S}:1: must be an object (got a list)"

    def test_empty(self) -> None:
        assert refused("\ufeff \n") == f"{S}:1: empty (a JSON document is needed)"

    def test_not_utf8(self) -> None:
        data = SUMMARY.replace('"agent_1"', '"agent_\xff"').encode("latin-1")
        assert refused(data) == f"{S}:11: not UTF-8: byte 0xff at column 12"

    def test_a_fifo_is_refused_unopened(self) -> None:
        d = phase18()
        os.unlink(d / "multi_agent_summary.json")
        os.mkfifo(d / "multi_agent_summary.json")
        with pytest.raises(InputError, match=f"^{S}: not a regular file$"):
            load_coordination(d)

    def test_dev_zero_is_refused_unread(self) -> None:
        d = phase18()
        os.unlink(d / "multi_agent_summary.json")
        os.symlink("/dev/zero", d / "multi_agent_summary.json")
        with pytest.raises(InputError, match=f"^{S}: not a regular file$"):
            load_coordination(d)


class TestDirectory:
    def test_none_of_the_files(self) -> None:
        Path("d").mkdir()
        with pytest.raises(InputError) as info:
            load_coordination("d")
        assert str(info.value) == ("d: holds none of the inputs: multi_agent_summary.json "
                                   "(Phase 18) or phase21_execution_summary.json "
                                   "(buddy run waves)")

    def test_not_a_directory(self) -> None:
        Path("f").write_text("{}")
        with pytest.raises(InputError, match="^f: not a directory$"):
            load_coordination("f")

    def test_both_summaries(self) -> None:
        d = phase18()
        (d / "phase21_execution_summary.json").write_text("{}")
        with pytest.raises(InputError, match="^d: holds both multi_agent_summary.json "):
            load_coordination(d)


class TestSkippedAndStrict:
    BAD = (SIGNALS + '{"signal_id": "LS_003", "type": "x", "confidence": 1.5, '
           '"description": ""}\n[]\n{"signal_id": "LS_004", "type": "x", "confidence": 0.5, '
           '"description": "", "extra": 1}\n')

    def test_a_bad_line_is_skipped_and_counted(self) -> None:
        h = load_coordination(phase18(signals=self.BAD))
        assert [g.signal_id for g in h.signals] == ["LS_001", "LS_002"]
        assert h.skipped == 3
        assert h.errors == (
            "d/learning_signals.jsonl:3: confidence: must be a number in [0, 1] (got 1.5)",
            "d/learning_signals.jsonl:4: must be an object (got a list)",
            "d/learning_signals.jsonl:5: extra: unknown key")

    def test_strict_raises_the_first(self) -> None:
        with pytest.raises(InputError) as info:
            load_coordination(phase18(signals=self.BAD), strict=True)
        assert str(info.value) == ("d/learning_signals.jsonl:3: confidence: must be a number "
                                   "in [0, 1] (got 1.5)")

    def test_a_line_too_long(self) -> None:
        long = '{"signal_id": "x", "type": "t", "confidence": 0.5, "description": "' + \
            "a" * (1 << 20) + '"}\n'
        h = load_coordination(phase18(signals=SIGNALS + long))
        assert len(h.signals) == 2
        assert h.errors == ("d/learning_signals.jsonl:3: line longer than 1 MiB (1048645 "
                            "bytes)",)

    def test_a_bad_optional_document_is_left_out(self) -> None:
        patterns = PATTERNS.replace('"confidence": 0.88', '"confidence": "high"')
        health = HEALTH.replace("90.0", "190.0")
        h = load_coordination(phase18(patterns=patterns, health=health))
        assert (h.patterns, h.health) == ((), None)
        assert h.errors == (
            "d/coordination_patterns.json:9: [0].confidence: must be a number in [0, 1] "
            "(got 'high')",
            "d/system_health.json:5: component_scores.coordination: must be a finite number "
            "in [0, 100] (got 190.0)")
        with pytest.raises(InputError, match=r"^d/coordination_patterns.json:9: "):
            load_coordination("d", strict=True)

    def test_a_fifo_in_place_of_an_optional_file_is_reported(self) -> None:
        d = phase18(signals=None)
        os.mkfifo(d / "learning_signals.jsonl")
        h = load_coordination(d)
        assert h.errors == ("d/learning_signals.jsonl: not a regular file",)

    def test_a_pattern_task_list_of_the_wrong_type(self) -> None:
        patterns = PATTERNS.replace('["task_1", "task_5"]', '["task_1", 5]')
        h = load_coordination(phase18(patterns=patterns))
        assert h.errors == ("d/coordination_patterns.json:6: [0].agent_assignments.agent_1[1]: "
                            "must be a non-empty string (got 5)",)


class TestBuddyTree:
    def test_loads_with_no_hand_editing(self, tree: Path) -> None:
        h = load_coordination(tree)
        doc = json.loads((tree / "phase21_execution_summary.json").read_text())
        assert (h.source, h.errors) == ("buddy run waves output", ())
        s = h.summary
        assert (s.total_agents, s.total_tasks, s.total_waves) == (4, 60, 3)
        assert s.success_rate == doc["completed_tasks"] / doc["total_tasks"]
        assert s.timestamp == doc["end_time"]
        executed = [json.loads(line) for p in sorted(tree.glob("wave_*/*/executed_tasks.jsonl"))
                    for line in p.read_text().splitlines()]
        assert len(executed) == 60
        assert s.avg_execution_time_ms == pytest.approx(
            1000 * sum(e["end_time"] - e["start_time"] for e in executed) / 60)
        assert s.retry_rate == sum(e["retry_count"] > 0 for e in executed) / 60
        rows = doc["per_wave"]
        assert s.avg_confidence_delta == pytest.approx(
            sum(r["tasks"] * (r["success_rate"] - r["confidence"]) for r in rows) / 60)
        # the success of one attempt, each counted on the agent that ran it (the trail:
        # a move into IN_PROGRESS is an attempt, a succeed move a success)
        moves = [json.loads(line) for line in (tree / "audit.jsonl").read_text().splitlines()]
        moves = [m for m in moves if m["kind"] == "transition" and m["machine"] == "task"]
        dirs = doc["agent_dirs"]
        for agent, perf in doc["agent_performance"].items():
            attempts = sum(m["dst"] == "IN_PROGRESS" and m["data"]["agent"] == agent
                           for m in moves)
            ok = sum(m["event"] == "succeed" and m["data"]["agent"] == agent for m in moves)
            ran = [json.loads(line) for p in tree.glob(f"wave_*/{dirs[agent]}/executed_tasks.jsonl")
                   for line in p.read_text().splitlines()]
            ran = [e for e in ran if e["mode"] is not None]
            assert s.agent_performance[agent] == AgentPerformance(
                ok / attempts, len(ran), 1000 * perf["avg_latency"])
        # retries hide a weak agent; one attempt's success does not
        assert s.agent_performance["agent_3"].success_rate < \
            s.agent_performance["agent_0"].success_rate

    def test_patterns_are_the_waves_first_assignments(self, tree: Path) -> None:
        h = load_coordination(tree)
        assert [(p.wave, p.pattern_type) for p in h.patterns] == \
            [(1, "load_balanced"), (2, "load_balanced"), (3, "load_balanced")]
        for p in h.patterns:
            first = {}
            for f in sorted(tree.glob(f"wave_{p.wave}/*/agent_assignments.jsonl")):
                for line in f.read_text().splitlines():
                    a = json.loads(line)
                    if a["reassigned_from"] is None:
                        first.setdefault(a["agent_id"], []).append(a["task_id"])
            assert {a: list(ts) for a, ts in p.agent_assignments.items()} == first
            assert sum(map(len, p.agent_assignments.values())) == 20

    def test_health_and_signals(self, tree: Path) -> None:
        h = load_coordination(tree)
        doc = json.loads((tree / "phase21_system_health.json").read_text())
        assert h.health is not None
        assert h.health.overall_health_score == doc["health_score"]
        assert h.health.component_scores == {
            k: round(100 * doc["metrics"][k], 4)
            for k in ("success_rate", "availability", "accuracy", "load_balance", "confidence")}
        lines = (tree / "phase21_learning_signals.jsonl").read_text().splitlines()
        assert [g.signal_id for g in h.signals] == [f"P21_LS_{n:03d}"
                                                   for n in range(1, len(lines) + 1)]
        assert h.signals[0].type == json.loads(lines[0])["signal_type"]
        assert h.signals[0].description == json.loads(lines[0])["content"]["insight"]

    def test_agent_states_read_the_record_back(self, tree: Path) -> None:
        h = load_coordination(tree)
        for a in agent_states(h):
            perf = h.summary.agent_performance[a.agent_id]
            assert a.prior == perf.success_rate  # and, in whole tasks, to within half a one
            assert abs(a.success_rate - perf.success_rate) <= 0.5 / perf.tasks
            assert a.finished_tasks == perf.tasks
            assert a.avg_latency == pytest.approx(perf.avg_execution_time_ms / 1000)

    def test_without_its_trail_attempts_come_from_the_executed_tasks(self, tree: Path) -> None:
        copy = self._copy(tree)
        lines = (copy / "audit.jsonl").read_bytes().splitlines(keepends=True)
        at = next(i for i, line in enumerate(lines) if b'"machine":"task"' in line)
        lines[at] = b'{"machine":"task", "broken\n'
        (copy / "audit.jsonl").write_bytes(b"".join(lines))
        h = load_coordination(copy)
        assert h.errors == (f"{copy / 'audit.jsonl'}:{at + 1}: not a task move (left out of "
                            "the agents' attempts)",)
        (copy / "audit.jsonl").unlink()
        h = load_coordination(copy)
        assert h.errors == ()
        dirs = json.loads((copy / "phase21_execution_summary.json").read_text())["agent_dirs"]
        for agent, perf in h.summary.agent_performance.items():
            ran = [json.loads(line) for p in copy.glob(f"wave_*/{dirs[agent]}/executed_tasks.jsonl")
                   for line in p.read_text().splitlines()]
            ran = [e for e in ran if e["mode"] is not None]
            assert perf.success_rate == sum(e["success_indicator"] for e in ran) / sum(
                e["retry_count"] + 1 for e in ran)

    def test_a_trail_that_is_no_regular_file_is_said_and_not_read(self, tree: Path) -> None:
        import os

        copy = self._copy(tree)
        (copy / "audit.jsonl").unlink()
        os.mkfifo(copy / "audit.jsonl")  # read, it would hang
        h = load_coordination(copy)
        assert h.errors == (f"{copy / 'audit.jsonl'}: not a regular file of at most "
                            "8,589,934,592 bytes: each agent's attempts are read from "
                            "executed_tasks.jsonl instead",)

    def _copy(self, tree: Path) -> Path:
        import shutil
        return Path(shutil.copytree(tree, "copy"))

    def test_a_bad_executed_line_is_skipped(self, tree: Path) -> None:
        d = self._copy(tree)
        f = d / "wave_2" / "agent_1" / "executed_tasks.jsonl"
        lines = f.read_text().splitlines()
        row = json.loads(lines[1])
        row["end_time"] = row["start_time"] - 1
        lines[1] = json.dumps(row)
        f.write_text("\n".join(lines) + "\n")
        h = load_coordination(d)
        assert h.errors == (f"copy/wave_2/agent_1/executed_tasks.jsonl:2: end_time: must be a "
                            f"finite number >= {row['start_time']:g} (got {row['end_time']})",)

    def test_an_agent_dir_leaving_the_tree_is_refused(self, tree: Path) -> None:
        d = self._copy(tree)
        f = d / "phase21_execution_summary.json"
        f.write_text(f.read_text().replace('"agent_1": "agent_1"', '"agent_1": "../../etc"'))
        with pytest.raises(InputError) as info:
            load_coordination(d)
        line = next(n for n, t in enumerate(f.read_text().splitlines(), 1) if "../../etc" in t)
        assert str(info.value) == (f"copy/phase21_execution_summary.json:{line}: "
                                   "agent_dirs.agent_1: must be a plain directory name "
                                   "(got '../../etc')")


class TestAgentStates:
    def history(self, perf, rate=0.6, agents=2) -> CoordinationHistory:
        return CoordinationHistory(CoordinationSummary(agents, 10, 1, rate, 250.0, 0.0, 0.0, perf),
                                   (), None, (), (), "phase18 files")

    def test_counts_from_tasks_times_rate(self) -> None:
        [a] = agent_states(self.history({"x": AgentPerformance(0.95, 3)}))
        # 3 x 0.95 = 2.85 -> 3 completed, 0 failed: the rate reads back within a task
        assert (a.completed_tasks, a.failed_tasks, a.prior, a.total_latency_s) == \
            (3, 0, 0.95, 0.75)

    def test_no_record_no_agents_listed(self) -> None:
        out = agent_states(self.history({}, rate=0.6, agents=3))
        assert [(a.agent_id, a.prior, a.finished_tasks) for a in out] == \
            [("agent_0", 0.6, 0), ("agent_1", 0.6, 0), ("agent_2", 0.6, 0)]

    @given(st.dictionaries(st.from_regex(r"[a-z]{1,4}", fullmatch=True),
                           st.tuples(st.floats(0, 1), st.integers(0, 10**6)), min_size=1))
    def test_rate_reads_back_within_one_task(self, rows) -> None:
        perf = {k: AgentPerformance(r, n) for k, (r, n) in rows.items()}
        for a in agent_states(self.history(perf), [*perf, "newcomer"]):
            if a.agent_id == "newcomer":
                assert a.prior == pytest.approx(sum(r for r, _ in rows.values()) / len(rows))
                continue
            r, n = rows[a.agent_id]
            assert a.finished_tasks == n and a.prior == r
            assert abs(a.completed_tasks - n * r) <= 0.5


_KEYS = st.from_regex(r"[a-z_]{1,6}", fullmatch=True)
_TREES = st.recursive(st.just(None), lambda inner: st.dictionaries(_KEYS, inner, max_size=4),
                      max_leaves=20)


class TestLineOf:
    @given(_TREES, st.integers(0, 4))
    def test_every_leaf_is_found_on_its_line(self, tree, indent) -> None:
        leaves: list[tuple[tuple[str, ...], int]] = []

        def number(node, path):
            if not isinstance(node, dict):
                leaves.append((path, 10_000 + len(leaves)))
                return leaves[-1][1]
            return {k: number(v, (*path, k)) for k, v in node.items()}

        doc = number(tree, ())
        text = json.dumps(doc, indent=indent or None).encode()
        lines = text.split(b"\n")
        for path, value in leaves:
            want = next(n for n, line in enumerate(lines, 1)
                        if re.search(rb"(?<![0-9])%d(?![0-9])" % value, line))
            assert _line_of(text, path) == want

    def test_a_missing_path_falls_back_to_its_deepest_parent(self) -> None:
        text = b'{\n "a": {\n  "b": 1\n },\n "c": [\n  {"d": 2},\n  {"e": 3}\n ]\n}'
        assert _line_of(text, ("a", "zz")) == 2
        assert _line_of(text, ("c", 1, "e")) == 7
        assert _line_of(text, ("nope",)) == 1
        assert math.isfinite(_line_of(text, ("c", 5)))
