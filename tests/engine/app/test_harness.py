"""Tests for buddy.engine.app._harness and ``buddy run``: the whole pipeline and its outputs.

The default scenario is seeded and its clock simulated, so with ``start=`` fixed
its outputs are exact; most tests read one run of it (``default_run``, made
once per module). Comparisons "except timestamps" mask, by regex (``MASKS``):
ISO-8601 timestamps, the ``ts`` of audit events, the ``hash``/``prev`` chain
digests (of the log and its anchor), the ``pipeline_id`` (made of the start
time), and the ``granted_at``/``expires_at``/``approved_at`` clock readings.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shlex
import subprocess
import sys
import time
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
import pytest

import buddy.engine.app._harness as harness
from buddy.engine.app._cli import main
from buddy.engine.app._harness import OUTPUT_FILES, RUN_LOCK, RunConfig, RunSummary, run
from buddy.engine.core._audit import AuditLog
from buddy.engine.core._engine import Engine
from buddy.engine.orchestration._orchestrator import ToolOrchestrator
from buddy.engine.orchestration._plans import plan_to_json
from buddy.engine.orchestration._scenario import repeated_plans
from buddy.rules.base.errors import AuditFormatError, InputError
from buddy.rules.tables._catalogue import ToolContractRegistry

T0 = 1_705_329_025.0  # 2024-01-15T14:30:25Z
ALL_FILES = sorted([*OUTPUT_FILES, "report.md", "audit.jsonl", "audit.jsonl.anchor", RUN_LOCK])
CONFLICT_TYPES = ["RESOURCE", "ORDERING", "RATE_LIMIT", "DUPLICATE_ACTION", "PERMISSION",
                  "TIMEOUT"]
STRATEGIES = ["DELAY", "REASSIGN", "DOWNGRADE", "ABORT"]
METRICS = ["tool_success_rate", "execution_latency_ms", "rollback_frequency", "conflict_rate",
           "live_execution_ratio", "confidence_drift", "approval_rate", "system_health_score"]
#: The phase each signal type feeds (Phase 24: 16 = reward modelling, 19 = meta-learning).
SIGNAL_PHASES = {"TOOL_RELIABILITY": 16, "APPROVAL_MISMATCH": 16, "TOOL_PERFORMANCE": 19,
                 "EXECUTION_MODE_ANALYSIS": 19, "CONFLICT_PATTERN": 19}
SHIPPED = resources.files("buddy.rules")

MASKS = [
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z"), "<iso>"),
    (re.compile(r"phase24_\d{8}_\d{6}"), "phase24_<start>"),
    (re.compile(r'"(ts|granted_at|expires_at|approved_at)": ?(?:-?[\d.]+(?:[eE][+-]?\d+)?|null)'),
     r'"\1":<time>'),
    (re.compile(r'"(hash|prev)": ?"[0-9a-f]{64}"'), r'"\1":<digest>'),
]


def masked(text: str) -> str:
    for pattern, replacement in MASKS:
        text = pattern.sub(replacement, text)
    return text


class Run:
    """One finished run: its summary and its output directory."""

    def __init__(self, summary: RunSummary, out: Path) -> None:
        self.summary = summary
        self.out = out

    def json(self, name: str) -> Any:
        return json.loads((self.out / name).read_text())

    def lines(self, name: str) -> list[dict[str, Any]]:
        return [json.loads(line) for line in (self.out / name).read_text().splitlines()]

    def text(self, name: str) -> str:
        return (self.out / name).read_text()

    def tool_results(self) -> dict[str, dict[str, Any]]:
        return {t["call_id"]: t for line in self.lines("tool_execution_log.jsonl")
                for t in line["result"]["tool_results"]}


def do_run(out: Path, **settings: Any) -> Run:
    settings.setdefault("start", T0)
    return Run(run(RunConfig(output_dir=out, **settings)), out)


@pytest.fixture(scope="module")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return do_run(tmp_path_factory.mktemp("default") / "out")


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return do_run(tmp_path_factory.mktemp("dry") / "out", dry_run_only=True)


def rules_dir(tmp_path: Path, name: str, old: str, new: str) -> Path:
    """A rules directory holding the shipped ``name`` with ``old`` replaced by ``new``."""
    text = SHIPPED.joinpath(name).read_text("utf-8")
    assert text.count(old) == 1, old
    directory = tmp_path / "rules"
    directory.mkdir()
    (directory / name).write_text(text.replace(old, new))
    return directory


# -- the source's tests (Phase 24, integration) -----------------------------------------

class TestPhase24:
    def test_full_pipeline_dry_run(self, dry_run):
        summary = dry_run.json("orchestration_summary.json")
        # the external email, denied in a normal run, is never put to the approver here
        # (no LIVE to approve), so it runs in DRY_RUN; only the duplicate never runs
        assert summary["executions_by_mode"] == {"MOCK": 0, "DRY_RUN": 66, "LIVE": 0,
                                                 "NOT_RUN": 1}
        assert (summary["plans_processed"], summary["total_rollbacks"]) == (24, 0)
        assert dry_run.summary.executions_by_mode["LIVE"] == 0
        records = dry_run.lines("audit.jsonl")
        runs = Counter(r["data"]["mode"] for r in records if r["kind"] == "execution")
        assert runs == {"DRY_RUN": 66}
        assert not [r for r in records if r["kind"] == "rollback"]
        # Each context the policy took to LIVE was downgraded before anything ran.
        reached_live = {r["subject"] for r in records
                        if r["kind"] == "transition" and r["dst"] == "LIVE"}
        downgraded = {r["subject"] for r in records
                      if r["kind"] == "transition" and r["event"] == "downgrade"
                      and r["src"] == "LIVE"}
        # (the four HIGH risk calls wait for an approval nobody is asked for, and the
        # scoped grant is not spent on a call that cannot run LIVE)
        assert len(reached_live) == 55 and reached_live == downgraded
        assert {t["mode"] for t in dry_run.tool_results().values()} == {"DRY_RUN", None}

    def test_approval_gate_callback_integration(self, default_run):
        records = default_run.lines("audit.jsonl")
        sends = {r["subject"] for r in records if r["kind"] == "decision"
                 and r["data"]["tool"] == "msgraph_send_email"}
        story = {ctx: [(r["kind"], r["event"]) for r in records if r["subject"] == ctx]
                 for ctx in sorted(sends, key=lambda c: int(c.split("-")[1]))}
        granted = [("transition", "approve_escalation"), ("transition", "request_live"),
                   ("transition", "confirm_approval"), ("decision", "decide"),
                   ("execution", "run"), ("transition", "all_actions_succeeded")]
        denied = [("transition", "approve_escalation"), ("transition", "request_live"),
                  ("transition", "approval_denied"), ("decision", "decide"),
                  ("transition", "abort")]
        assert list(story.values()) == [granted, denied, granted]
        # Internal recipients were approved and sent LIVE; the external one was not sent.
        sent = [(r["data"]["args"]["to"], r["data"]["mode"]) for r in records
                if r["kind"] == "execution" and r["data"]["tool"] == "msgraph_send_email"]
        assert sent == [("team@example.com", "LIVE"), ("ops@example.com", "LIVE")]
        [refusal] = [r for r in records if r["event"] == "approval_denied"]
        assert (refusal["src"], refusal["dst"], refusal["data"]["why"]) == (
            "AWAITING_APPROVAL", "LOCKED", "external recipient ceo@partner.org")
        results = default_run.tool_results()
        assert [(results[c]["approval"], results[c]["mode"]) for c in (
            "mail-team/s3", "mail-partner/s3", "mail-ops/s3")] == [
            ("granted", "LIVE"), ("denied", None), ("granted", "LIVE")]

    def test_phase_integration_points(self, default_run):
        # The Phase 21 plan and Phase 22 validation each plan came from travel with it.
        lines = default_run.lines("tool_execution_log.jsonl")
        assert [(line["plan_id"], line.get("upstream_plan_id"), line.get("validation_id"))
                for line in lines[:5]] == [
            ("ui-signup", "phase21-batch-1", "phase22-ui-signup"),
            ("ui-rollback", "phase21-batch-1", "phase22-ui-rollback"),
            ("crm-sync-a", "phase21-batch-1", "phase22-crm-sync-a"),
            ("crm-sync-b", "phase21-batch-1", "phase22-crm-sync-b"),
            ("mail-team", "phase21-batch-2", "phase22-mail-team")]
        signals = default_run.lines("learning_signals.jsonl")
        assert {s["target_phase"] for s in signals} == {16, 19}
        assert all(s["target_phase"] == SIGNAL_PHASES[s["signal_type"]] for s in signals)
        assert list(default_run.json("system_health.json")["metrics"]) == METRICS


# -- the files written --------------------------------------------------------------------

class TestOutputs:
    def test_exactly_the_expected_files(self, default_run):
        assert sorted(p.name for p in default_run.out.iterdir()) == ALL_FILES
        assert default_run.summary.report == default_run.out / "report.md"
        assert default_run.summary.audit_log == default_run.out / "audit.jsonl"

    def test_orchestration_summary(self, default_run):
        summary = default_run.json("orchestration_summary.json")
        # 15.9 s of simulated latency (the last microsecond digits are float rounding).
        assert summary["end_time"].startswith("2024-01-15T14:30:40.9131")
        assert summary == {
            "pipeline_id": "phase24_20240115_143025",
            "start_time": "2024-01-15T14:30:25Z",
            "end_time": summary["end_time"],
            "plans_processed": 24, "plans_successful": 19, "plans_failed": 5,
            "plans_rejected": 0, "total_tools_executed": 65, "total_conflicts": 9,
            "total_rollbacks": 4,
            "executions_by_mode": {"MOCK": 0, "DRY_RUN": 7, "LIVE": 58, "NOT_RUN": 2},
            "seed": 24, "simulated": True, "scenario": "default (simulated)",
            "rules": summary["rules"], "audit_log": "audit.jsonl",
            "replay": "buddy replay audit.jsonl", "audit_seq": [1, 354],
            "earlier_executions": 0, "system_lock": {"at_start": None, "at_end": None}}
        assert set(summary["rules"]) == {"escalation", "catalogue"}
        assert (default_run.summary.audit_seq, default_run.summary.earlier_executions) == (
            (1, 354), 0)
        assert len(default_run.lines("audit.jsonl")) == 354

    def test_tool_conflicts(self, default_run):
        doc = default_run.json("tool_conflicts.json")
        assert set(doc) == {"total_conflicts", "by_type", "by_resolution_strategy", "resolved",
                            "conflicts", "resolutions"}
        assert list(doc["by_type"]) == CONFLICT_TYPES
        assert list(doc["by_resolution_strategy"]) == STRATEGIES
        assert (doc["total_conflicts"], doc["resolved"]) == (9, 9)
        assert len(doc["conflicts"]) == len(doc["resolutions"]) == 9
        assert set(doc["conflicts"][0]) == {"id", "type", "calls", "tool", "resource", "detail"}
        assert set(doc["resolutions"][0]) == {"conflict", "call", "type", "strategy", "rule",
                                              "reason", "delay_s", "slot", "new_agent",
                                              "max_mode"}

    def test_system_health(self, default_run):
        doc = default_run.json("system_health.json")
        assert set(doc) == {"health_assessment", "health_score", "anomalies", "metrics",
                            "timestamp"}
        assert (doc["health_assessment"], doc["health_score"], doc["anomalies"]) == (
            "GOOD", 85.99, [])
        assert doc["metrics"]["system_health_score"] == doc["health_score"]
        assert doc["timestamp"] == "2024-01-15T14:30:40Z"

    def test_learning_signal_line(self, default_run):
        signals = default_run.lines("learning_signals.jsonl")
        assert len(signals) == default_run.summary.signals == 3
        assert set(signals[0]) == {"signal_type", "tool_name", "insight", "recommended_action",
                                   "confidence", "target_phase", "scope", "scope_key", "rule",
                                   "evidence"}
        assert [(s["signal_type"], s["tool_name"]) for s in signals] == [
            ("APPROVAL_MISMATCH", "*"), ("CONFLICT_PATTERN", "*"),
            ("TOOL_RELIABILITY", "ghl_search")]
        assert all(0.0 <= s["confidence"] <= 1.0 for s in signals)

    def test_tool_execution_log_line(self, default_run):
        lines = default_run.lines("tool_execution_log.jsonl")
        assert [line["plan_index"] for line in lines] == list(range(24))
        assert {"plan_index", "plan_id", "result"} <= set(lines[0])
        assert set(lines[0]["result"]) == {"successful_executions", "failed_executions",
                                           "tool_results", "conflicts_detected",
                                           "conflicts_resolved", "rollbacks_executed"}
        assert lines[0]["result"]["tool_results"][0] == {
            "call_id": "ui-signup/s1", "agent": "agent-ui", "tool": "vision_inspect",
            "risk": "LOW", "confidence": 0.938, "decided_mode": "LIVE", "mode": "LIVE",
            "ok": True, "error": None, "approval": None, "rolled_back": False, "conflicts": [],
            "resolution": None, "duration_ms": 558.95}

    def test_rollback_events(self, default_run):
        lines = default_run.lines("rollback_events.jsonl")
        *undos, total = lines
        assert set(undos[0]) == {"event", "context", "tool", "ok", "because_of", "timestamp"}
        assert [(u["event"], u["tool"], u["ok"]) for u in undos] == [
            ("undo", "form_fill", True), ("undo", "vision_inspect", True),
            ("undo", "ghl_search", True), ("undo", "ghl_search", True)]
        assert set(total) == {"event", "total_rollbacks", "timestamp"}
        assert (total["event"], total["total_rollbacks"]) == ("summary", 4)

    def test_state_transition_line(self, default_run):
        lines = default_run.lines("execution_state_transitions.jsonl")
        assert set(lines[0]) == {"seq", "machine", "context", "agent", "tool", "trigger",
                                 "from_state", "to_state", "timestamp", "reason"}
        assert (lines[0]["from_state"], lines[0]["to_state"], lines[0]["timestamp"],
                lines[0]["reason"]) == ("MOCK", "DRY_RUN", "2024-01-15T14:30:25Z",
                                        "confidence met the DRY_RUN threshold")
        assert len(lines) == 199
        assert [line["seq"] for line in lines] == sorted(line["seq"] for line in lines)

    def test_no_temporary_files_left(self, default_run):
        assert not [p for p in default_run.out.iterdir() if p.name.endswith(".tmp")]


# -- what the default scenario exercises ------------------------------------------------

class TestDefaultScenario:
    def test_every_conflict_type_and_strategy(self, default_run):
        doc = default_run.json("tool_conflicts.json")
        assert doc["by_type"] == {"RESOURCE": 1, "ORDERING": 1, "RATE_LIMIT": 4,
                                  "DUPLICATE_ACTION": 1, "PERMISSION": 1, "TIMEOUT": 1}
        assert doc["by_resolution_strategy"] == {"DELAY": 6, "REASSIGN": 1, "DOWNGRADE": 1,
                                                 "ABORT": 1}

    def test_each_strategy_changed_what_ran(self, default_run):
        results = default_run.tool_results()
        assert [(c, results[c]["resolution"], results[c]["agent"], results[c]["mode"])
                for c in ("crm-sync-b/s2", "intern-add/s2", "ops-export/s2",
                          "crm-create-2/s2")] == [
            ("crm-sync-b/s2", "DELAY", "agent-crm-2", "LIVE"),
            ("intern-add/s2", "REASSIGN", "agent-crm-2", "LIVE"),
            ("ops-export/s2", "DOWNGRADE", "agent-ops", "DRY_RUN"),
            ("crm-create-2/s2", "ABORT", "agent-crm-2", None)]

    def test_rollback_and_approvals(self, default_run):
        results = default_run.tool_results()
        failed = results["ui-rollback/s3"]
        assert (failed["mode"], failed["ok"], failed["rolled_back"]) == ("LIVE", False, False)
        # the failure undid the plan's earlier reversible LIVE calls, newest first
        assert (results["ui-rollback/s1"]["rolled_back"],
                results["ui-rollback/s2"]["rolled_back"]) == (True, True)
        assert default_run.summary.rollbacks == 4
        assert sum(t["rolled_back"] for t in results.values()) == 4
        # granted: two internal emails and the scoped grant; denied: the external email.
        # The file export capped at DRY_RUN (TIMEOUT) is never put to the approver.
        approvals = Counter(t["approval"] for t in results.values() if t["approval"])
        assert approvals == {"granted": 3, "denied": 1}
        transitions = Counter(line["trigger"] for line in
                              default_run.lines("execution_state_transitions.jsonl"))
        assert (transitions["confirm_approval"], transitions["approval_denied"]) == (3, 1)

    def test_run_summary(self, default_run):
        s = default_run.summary
        assert (s.plans, s.rejected, s.not_run, s.conflicts, s.resolved, s.rollbacks) == (
            24, (), 2, 9, 9, 4)
        assert (s.health_score, s.health, s.anomalies, s.signals, s.simulated) == (
            85.99, "GOOD", 0, 3, True)


# -- determinism ----------------------------------------------------------------------

class TestDeterminism:
    def test_fixed_start_is_byte_identical(self, default_run, tmp_path):
        again = do_run(tmp_path / "again")
        for name in ALL_FILES:
            assert again.text(name) == default_run.text(name), name

    def test_same_seed_identical_except_timestamps(self, default_run, tmp_path):
        # Another start stands for running it again later; a start far from T0 moves
        # where float rounding falls, as two real runs may.
        later = do_run(tmp_path / "later", start=1_000_000_000.3)
        assert later.text("orchestration_summary.json") != \
            default_run.text("orchestration_summary.json")
        for name in ALL_FILES:
            assert masked(later.text(name)) == masked(default_run.text(name)), name

    def test_masks_hide_only_timestamps(self, default_run):
        text = masked(default_run.text("audit.jsonl"))
        assert '"ts":<time>' in text and '"hash":<digest>' in text
        assert '"granted_at":<time>' in text and '"approved_at":<time>' in text
        assert "2024-" not in masked(default_run.text("report.md"))
        assert '"plans_processed": 24' in masked(default_run.text("orchestration_summary.json"))

    def test_another_seed_changes_the_run(self, default_run, tmp_path):
        other = do_run(tmp_path / "other", seed=25)
        assert masked(other.text("tool_execution_log.jsonl")) != \
            masked(default_run.text("tool_execution_log.jsonl"))
        assert other.json("orchestration_summary.json")["seed"] == 25


# -- the audit trail and the report -------------------------------------------------------


# Digests (sha256, first 16 hex digits) of every output of three seeded runs, recorded
# from the harness as it was before it streamed its outputs (it loaded the whole audit
# trail back, kept every outcome and conflict, built report.md in memory): streaming
# changes no byte. A change that means to change an output updates these.
GOLDEN = {
    "default": {
        "audit.jsonl": "581608e23baa6686",
        "audit.jsonl.anchor": "151f92075c2aafbf",
        "execution_state_transitions.jsonl": "38188f7c79843c26",
        "learning_signals.jsonl": "7cae75c50744a9e0",
        "orchestration_summary.json": "b28ba7a15f573cc2",
        "report.md": "ff44b668a7946871",
        "rollback_events.jsonl": "75d7f25bc6095579",
        "system_health.json": "77c877742bdb682e",
        "tool_conflicts.json": "a3cc77798b22078e",
        "tool_execution_log.jsonl": "1902efed61e2fde2",
    },
    "file": {
        "audit.jsonl": "fb8040601123d0da",
        "audit.jsonl.anchor": "0d17cd60ec86154c",
        "execution_state_transitions.jsonl": "45d0635bffd97879",
        "learning_signals.jsonl": "455b3c05b0bd74b9",
        "orchestration_summary.json": "d722f3c2fc29abfb",
        "report.md": "6fe33fbffd9190da",
        "rollback_events.jsonl": "f5410819422ab4c7",
        "system_health.json": "2e6bb4e7722d7574",
        "tool_conflicts.json": "2ddef2c2de23ca44",
        "tool_execution_log.jsonl": "6e7cc5c552c640a2",
    },
    "file-continued": {
        "audit.jsonl": "5b771176adf579d3",
        "audit.jsonl.anchor": "46ca07dc022e4dec",
        "execution_state_transitions.jsonl": "fbead0c1947e85bb",
        "learning_signals.jsonl": "14144bdc9f6d3946",
        "orchestration_summary.json": "c202e060021d2252",
        "report.md": "c45925517bd66541",
        "rollback_events.jsonl": "c15e4270cfa11b79",
        "system_health.json": "583c0a1001e1bc58",
        "tool_conflicts.json": "a427c6fad88e586c",
        "tool_execution_log.jsonl": "d331379e4cfdbc3f",
    },
}


def digests(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()[:16]
            for p in sorted(out.iterdir()) if p.name != RUN_LOCK}


class TestGoldenOutputs:
    """Seeded runs give the very bytes recorded in :data:`GOLDEN`."""

    def test_default_scenario(self, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        run(RunConfig(output_dir=Path("out"), start=T0))
        assert digests(Path("out")) == GOLDEN["default"]

    def test_a_plans_file_in_uneven_cycles_then_continued(self, tmp_path, monkeypatch):
        # 150 plans (every conflict type but PERMISSION, duplicates across repetitions) in
        # cycles of 9; then the same plans again into the same directory: a continued trail
        monkeypatch.chdir(tmp_path)  # the summary and report name the plans file as given
        plans = Path("plans.jsonl")
        plans.write_bytes(b"".join(orjson.dumps(plan_to_json(p)) + b"\n"
                                   for p in repeated_plans(150, 5)))
        config = RunConfig(output_dir=Path("out"), plans=plans, seed=5, start=T0,
                           plans_per_cycle=9)
        run(config)
        assert digests(Path("out")) == GOLDEN["file"]
        run(config)
        assert digests(Path("out")) == GOLDEN["file-continued"]

    def test_tool_conflicts_json_is_the_indented_document(self, default_run, tmp_path):
        # streamed in pieces, it is byte for byte what dumping the whole document gives,
        # with conflicts and without
        quiet = tmp_path / "quiet.jsonl"
        quiet.write_text(json.dumps({"plan_id": "p", "steps": [
            {"id": "s", "agent": "a", "tool": "vision_inspect", "confidence": 0.9}]}) + "\n")
        calm = do_run(tmp_path / "out", plans=quiet)
        assert calm.json("tool_conflicts.json")["conflicts"] == []
        for done in (default_run, calm):
            data = (done.out / "tool_conflicts.json").read_bytes()
            assert data == harness._dumps(json.loads(data)).encode()


class TestTrailReading:
    """The trail is read back a line at a time (:func:`harness._records`)."""

    def test_every_event_as_the_audit_log_reads_it(self, default_run):
        trail = default_run.out / "audit.jsonl"
        assert list(harness._records(trail)) == list(AuditLog.read_records(trail))

    def test_a_torn_last_line_is_skipped(self, tmp_path):
        trail = tmp_path / "audit.jsonl"
        trail.write_bytes(b'{"seq":1}\n{"seq":2,"text":"a\xe2\x80\xa8b"}\n{"seq":3,"ki')
        assert list(harness._records(trail)) == [{"seq": 1}, {"seq": 2, "text": "a\u2028b"}]
        assert [r["seq"] for r in harness._trail_events(trail, 2, 2)] == [2]

    def test_a_line_that_is_no_json_is_named(self, tmp_path):
        trail = tmp_path / "audit.jsonl"
        trail.write_bytes(b'{"seq":1}\n{"seq":2,\n')
        with pytest.raises(AuditFormatError, match=r"audit.jsonl:2: not a JSON audit event$"):
            list(harness._records(trail))


class TestAuditAndReport:
    def test_replay_verifies(self, default_run, capsys):
        assert main(["replay", str(default_run.out / "audit.jsonl")]) == 0
        out, err = capsys.readouterr()
        assert err == ""
        assert "chain verified" in out and "every transition reproduced" in out

    def test_report_has_two_mermaid_diagrams(self, default_run):
        report = default_run.text("report.md")
        blocks = re.findall(r"```mermaid\n(.*?)```", report, re.S)
        assert len(blocks) == 2
        graph, machine = blocks
        assert graph.startswith("flowchart") and "button_click" in graph and "-->" in graph
        assert machine.startswith("stateDiagram-v2") and "AWAITING_APPROVAL" in machine
        assert "SIMULATED" in report

    def test_report_has_a_decision_row_per_outcome(self, default_run):
        report = default_run.text("report.md")
        section = report.split("## Decisions\n", 1)[1].split("\n## ", 1)[0]
        rows = [line for line in section.splitlines() if line.startswith("| ")][1:]
        assert [r.split(" | ")[0][2:] for r in rows] == list(default_run.tool_results())
        assert "| crm-create-2/s2 | agent-crm-2 | ghl_create_contact |" in report


# -- user rule tables ---------------------------------------------------------------------

class TestUserRules:
    def test_conflicts_table_turns_resource_into_abort(self, default_run, tmp_path):
        rules = rules_dir(tmp_path, "conflicts.toml",
                          'then = { strategy = "DELAY", delay_s = 5.0, max_delay_s = 15.0 }\n\n'
                          '[[row]]\nid = "ordering.delay"',
                          'then = { strategy = "ABORT" }\n\n[[row]]\nid = "ordering.delay"')
        changed = do_run(tmp_path / "out", rules_dir=rules)
        assert changed.json("tool_conflicts.json")["by_resolution_strategy"] == {
            "DELAY": 5, "REASSIGN": 1, "DOWNGRADE": 1, "ABORT": 2}
        dropped = changed.tool_results()["crm-sync-b/s2"]
        assert (dropped["resolution"], dropped["mode"]) == ("ABORT", None)
        assert default_run.tool_results()["crm-sync-b/s2"]["mode"] == "LIVE"

    def test_stricter_anomaly_threshold(self, tmp_path):
        rules = rules_dir(tmp_path, "anomalies.toml",
                          '{ metric = "conflict_rate", op = "gt", value = 50.0 }',
                          '{ metric = "conflict_rate", op = "gt", value = 10.0 }')
        changed = do_run(tmp_path / "out", rules_dir=rules)
        [anomaly] = changed.json("system_health.json")["anomalies"]
        assert (anomaly["type"], anomaly["severity"], anomaly["value"], anomaly["threshold"]) \
            == ("high_conflict", 8, 20.9, 10.0)
        assert changed.summary.anomalies == 1
        assert "| high_conflict | 8 |" in changed.text("report.md")

    def test_malformed_table_is_one_error_line(self, tmp_path, capsys):
        rules = rules_dir(tmp_path, "conflicts.toml", 'strategy = "ABORT"', 'strategy = "WAIT"')
        code = main(["run", "--rules", str(rules), "--out", str(tmp_path / "out")])
        out, err = capsys.readouterr()
        assert code == 1
        [line] = [line for line in err.splitlines() if line.strip()]  # no progress bar debris
        assert line == (f"RuleTableError: {rules / 'conflicts.toml'}:53: "
                        "row[duplicate.abort].then.strategy: must be one of DELAY, REASSIGN, "
                        "DOWNGRADE, ABORT (got 'WAIT')")
        assert not (tmp_path / "out").exists()


# -- settings -----------------------------------------------------------------------------

class TestRunConfig:
    def test_defaults(self):
        config = RunConfig()
        assert (config.output_dir, config.plans, config.seed, config.dry_run_only,
                config.max_live_escalations, config.approval_required_for_high_risk,
                config.confidence_threshold_for_live, config.enable_rollback_on_failure,
                config.plans_per_cycle) == (Path("buddy-out"), None, 24, False, None, True,
                                            None, True, 4)

    def test_approval_for_high_risk_cannot_be_turned_off(self):
        with pytest.raises(InputError, match="^approval_required_for_high_risk cannot be "
                           "turned off: HIGH risk tools require approval by contract$"):
            RunConfig(approval_required_for_high_risk=False)

    def test_plans_per_cycle_must_be_positive(self):
        with pytest.raises(InputError, match=r"^plans_per_cycle must be >= 1 \(got 0\)$"):
            RunConfig(plans_per_cycle=0)

    def test_rollback_on_failure_off_is_honoured_or_refused(self, tmp_path):
        # A setting the run silently ignores is worse than either answer.
        try:
            off = do_run(tmp_path / "out", enable_rollback_on_failure=False)
        except InputError:
            return
        assert off.summary.rollbacks == 0

    def test_live_caps(self, tmp_path):
        capped = do_run(tmp_path / "out", max_live_escalations=10,
                        confidence_threshold_for_live=0.9)
        modes = capped.json("orchestration_summary.json")["executions_by_mode"]
        assert modes["LIVE"] == 10
        assert all(t["confidence"] >= 0.9 for t in capped.tool_results().values()
                   if t["mode"] == "LIVE")


# -- the command line ---------------------------------------------------------------------

BAD_PLANS = "\n".join(json.dumps(p) for p in [
    {"plan_id": "good-1", "phase21_plan_id": "p21-7", "phase22_validation_id": "v22-7",
     "steps": [{"id": "look", "agent": "a", "tool": "vision_inspect", "confidence": 0.9}]},
    {"plan_id": "bad", "steps": [{"id": "x", "agent": "a", "tool": "memory_search",
                                  "confidence": 1.5}]},
    {"plan_id": "good-2", "steps": [{"id": "q", "agent": "b", "tool": "memory_search",
                                     "confidence": 0.8, "args": {"q": "x"}}]}]) + "\n"


class TestCli:
    def test_a_bad_plan_is_rejected_and_the_others_run(self, tmp_path, capsys):
        plans = tmp_path / "plans.jsonl"
        plans.write_text(BAD_PLANS)
        out_dir = tmp_path / "out"
        code = main(["run", "--plans", str(plans), "--out", str(out_dir), "--start", str(T0)])
        out, err = capsys.readouterr()
        assert code == 1
        assert [line for line in err.splitlines() if line.strip()] == [
            f"PlanRejected: {plans}:2: plan[bad].steps[0].confidence: must be a number in "
            "[0, 1] (got 1.5)"]
        assert sorted(p.name for p in out_dir.iterdir()) == ALL_FILES
        done = Run(None, out_dir)  # type: ignore[arg-type]
        assert [line["plan_id"] for line in done.lines("tool_execution_log.jsonl")] == [
            "good-1", "good-2"]
        summary = done.json("orchestration_summary.json")
        assert (summary["plans_processed"], summary["plans_rejected"]) == (2, 1)
        assert "## Rejected plans" in done.text("report.md")
        assert "1 rejected" in out

    def test_run_help(self, capsys):
        assert main(["run", "--help"]) == 0
        out = capsys.readouterr().out
        for option in ("--plans", "--out", "--seed", "--dry-run-only", "--max-live",
                       "--live-floor", "--plans-per-cycle", "--start", "--rules",
                       "--catalogue", "SIMULATED"):
            assert option in out, option

    def test_summary_table(self, tmp_path, capsys):
        out_dir = tmp_path / "o"
        assert main(["run", "--out", str(out_dir), "--start", str(T0)]) == 0
        out, err = capsys.readouterr()
        assert "PlanRejected" not in err and "Traceback" not in err
        assert "default scenario, SIMULATED tools, seed 24" in out
        assert str(out_dir / "report.md") in out
        assert "24 run, 0 rejected" in out and "MOCK 0, DRY_RUN 7, LIVE 58, NOT_RUN 2" in out
        assert (out_dir / "report.md").exists()


# -- plans files that once crashed the run, leaked secrets or split lines -----------------

SECRET = "hunter2-sk-live-0123"


def plan_line(plan_id: str, args: str = "{}", **step: Any) -> str:
    """One plan of one step as a JSON line; ``args`` is JSON text (kept as written)."""
    fields = {"id": "s", "agent": "agent-a", "tool": "memory_search", "confidence": 0.9,
              **step, "args": None}
    return json.dumps({"plan_id": plan_id, "steps": [fields]},
                      ensure_ascii=False).replace("null}]}", f"{args}}}]}}")


def nested(depth: int) -> str:
    """JSON text of arguments ``depth`` levels deep (objects and lists alternating)."""
    opening = "".join('{"x": ' if level % 2 == 0 else "[" for level in range(depth))
    closing = "".join("}" if level % 2 == 0 else "]" for level in reversed(range(depth)))
    return opening + '"leaf"' + closing


def run_plans(tmp_path: Path, lines: list[str], capsys: pytest.CaptureFixture[str],
              ) -> tuple[int, list[str], Path, Path]:
    """``buddy run --plans`` on ``lines``: exit code, stderr lines, plans file, output dir."""
    plans = tmp_path / "plans.jsonl"
    plans.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out_dir = tmp_path / "out"
    code = main(["run", "--plans", str(plans), "--out", str(out_dir), "--start", str(T0)])
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.strip()], plans, out_dir


def json_lines(path: Path) -> list[Any]:
    """A JSON Lines output, split on \\n only (its strings may hold U+2028 raw)."""
    return [json.loads(line) for line in path.read_bytes().decode().split("\n") if line]


class TestPlansFile:
    def test_bad_execution_order_ids_are_rejected_not_a_traceback(self, tmp_path, capsys):
        # Defect 8: a KeyError traceback.
        bad = json.loads(plan_line("bad", id="1"))
        code, err, plans, out_dir = run_plans(
            tmp_path, [plan_line("good"), json.dumps({**bad, "execution_order": [1]})], capsys)
        assert code == 1
        assert err == [f"PlanRejected: {plans}:2: plan[bad].execution_order: must list every "
                       "step id once (steps: 1; got [1])"]
        assert sorted(p.name for p in out_dir.iterdir()) == ALL_FILES

    def test_secrets_in_rejected_plans_are_never_echoed(self, tmp_path, capsys):
        # Defect 9: the values were printed raw on stderr and in report.md.
        code, err, plans, out_dir = run_plans(tmp_path, [
            plan_line("good"),
            plan_line("args", f'[{{"password": "{SECRET}"}}]'),
            plan_line("conf", confidence={"token": SECRET}),
            plan_line("res", resource={"api_key": SECRET}),
            plan_line("appr", approval={"password": SECRET}),
            json.dumps({**json.loads(plan_line("order")), "execution_order": [
                {"secret": SECRET}]})], capsys)
        assert code == 1
        at = f"PlanRejected: {plans}"
        assert err == [
            f"{at}:2: plan[args].steps[0].args: must be an object (got a list)",
            f"{at}:3: plan[conf].steps[0].confidence: must be a number in [0, 1] "
            "(got {'token': '***'})",
            f"{at}:4: plan[res].steps[0].resource: must be a string "
            "(got {'api_key': '***'})",
            f"{at}:5: plan[appr].steps[0].approval: must be false or null "
            "(got {'password': '***'})",
            f"{at}:6: plan[order].execution_order: must list every step id once (steps: s; "
            "got [{'secret': '***'}])"]
        report = (out_dir / "report.md").read_text()
        assert f"- `{plans}:2: plan[args].steps[0].args: must be an object (got a list)`" \
            in report
        for name in ALL_FILES:
            assert SECRET not in (out_dir / name).read_text(), name

    def test_args_too_deep_are_rejected_and_the_run_finishes(self, tmp_path, capsys):
        # Defect 10: a RecursionError traceback (the args digest, then the audit writer).
        code, err, plans, out_dir = run_plans(tmp_path, [
            plan_line("limit", nested(100)), plan_line("deep", nested(300)),
            plan_line("deeper", nested(1_000))], capsys)
        assert code == 1
        assert err == [
            f"PlanRejected: {plans}:2: plan[deep].steps[0].args: must nest at most 100 levels "
            "(got 300)",
            f"PlanRejected: {plans}:3: plan[deeper].steps[0].args: must nest at most 100 "
            "levels (got 1000)"]
        assert sorted(p.name for p in out_dir.iterdir()) == ALL_FILES
        [line] = json_lines(out_dir / "tool_execution_log.jsonl")
        assert (line["plan_id"], line["result"]["successful_executions"]) == ("limit", 1)
        [run_event] = [r for r in json_lines(out_dir / "audit.jsonl")
                       if r["kind"] == "execution"]
        assert run_event["data"]["args"] == json.loads(nested(100))
        assert main(["replay", str(out_dir / "audit.jsonl")]) == 0

    def test_a_document_too_deep_for_the_parser_is_one_error_line(self, tmp_path, capsys):
        plans = tmp_path / "plans.json"
        plans.write_text("[\n" + plan_line("p", nested(1_100)) + "\n]\n")
        out_dir = tmp_path / "out"
        assert main(["run", "--plans", str(plans), "--out", str(out_dir)]) == 1
        [line] = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert re.fullmatch(rf"PlanError: {re.escape(str(plans))}: invalid JSON: depth limit "
                            r"exceeded: line 2 column \d+ \(char \d+\)", line)
        assert not out_dir.exists()

    @pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\u0085"])
    def test_line_separators_in_ids_and_args_run_through(self, tmp_path, capsys, separator):
        # Defect 2: str.splitlines() split the plans (and the audit trail) inside a string.
        # (The audit trail's reader is fixed in engine/core/_audit.py.)
        agent = f"agent{separator}a"
        code, err, _, out_dir = run_plans(tmp_path, [
            plan_line(f"p{separator}1", json.dumps({"note": f"x{separator}y"}), agent=agent),
            plan_line("p2", json.dumps({"q": separator}), agent=agent,
                      tool="form_fill", resource=f"ui{separator}form")], capsys)
        assert (code, err) == (0, [])
        assert sorted(p.name for p in out_dir.iterdir()) == ALL_FILES
        lines = json_lines(out_dir / "tool_execution_log.jsonl")
        assert [line["plan_id"] for line in lines] == [f"p{separator}1", "p2"]
        assert {t["agent"] for line in lines for t in line["result"]["tool_results"]} == {agent}
        runs = [r["data"] for r in json_lines(out_dir / "audit.jsonl")
                if r["kind"] == "execution"]
        assert [d["args"] for d in runs] == [{"note": f"x{separator}y"}, {"q": separator}]
        assert len(json_lines(out_dir / "execution_state_transitions.jsonl")) == 6
        # report.md shows them escaped: raw, they break a line where a reader does not expect
        escaped = f"\\\\u{ord(separator):04x}" if separator > "\xff" else \
            f"\\\\x{ord(separator):02x}"
        assert f"| p{escaped}1/s | agent{escaped}a |" in (out_dir / "report.md").read_text()
        assert main(["replay", str(out_dir / "audit.jsonl")]) == 0


class TestConflictPatternSignal:
    def test_occurrences_are_the_conflicts_of_tool_conflicts_json(self, default_run):
        # It counted calls: "RATE_LIMIT (8 occurrences)" where tool_conflicts.json had 4.
        by_type = default_run.json("tool_conflicts.json")["by_type"]
        [signal] = [s for s in default_run.lines("learning_signals.jsonl")
                    if s["signal_type"] == "CONFLICT_PATTERN"]
        assert (signal["scope_key"], by_type["RATE_LIMIT"]) == ("RATE_LIMIT", 4)
        assert signal["insight"] == ("Recurring conflict pattern: RATE_LIMIT (4 occurrences; "
                                     "tools: button_click, msgraph_create_draft, "
                                     "msgraph_send_email)")
        assert signal["evidence"] == {"occurrences": 4, "calls": 67, "share": 0.0597,
                                      "resolved": 4, "tools": 3}
        assert signal["confidence"] == 0.4


class TestDeepCatalogue:
    def test_a_dependency_chain_1500_deep_runs(self, tmp_path, capsys):
        # Defect 11: conflict detection computed tool depths by recursion.
        n = 1_500
        catalogue = tmp_path / "tools.toml"
        catalogue.write_text("\n".join(
            f'[[tool]]\nname = "t{i}"\nrisk = "LOW"\nreversible = true\n'
            + (f'dependencies = ["t{i - 1}"]\n' if i else "") for i in range(n)))
        plans = tmp_path / "plans.jsonl"
        plans.write_text(plan_line("p1", tool=f"t{n - 1}") + "\n")
        out_dir = tmp_path / "out"
        assert main(["run", "--catalogue", str(catalogue), "--plans", str(plans), "--out",
                     str(out_dir), "--start", str(T0)]) == 0
        assert "Traceback" not in capsys.readouterr().err
        [conflict] = json.loads((out_dir / "tool_conflicts.json").read_text())["conflicts"]
        assert (conflict["type"], conflict["detail"]) == (
            "ORDERING", f"p1/s (t{n - 1}, slot 0 of plan p1) runs before its dependencies: "
            f"t{n - 2} (not planned)")
        assert sorted(p.name for p in out_dir.iterdir()) == ALL_FILES


class TestFarFutureClock:
    def test_a_timeout_beyond_30_days_is_refused_before_anything_runs(self, tmp_path,
                                                                     capsys):
        # The simulated clock advances by a tool's timeout when it overruns it: 1e300 s
        # would carry it past what a date holds.
        catalogue = tmp_path / "tools.toml"
        catalogue.write_text('[[tool]]\nname = "slow"\nrisk = "LOW"\nreversible = true\n'
                             'timeout_s = 1e300\n')
        plans = tmp_path / "plans.jsonl"
        plans.write_text(json.dumps({"plan_id": "p1", "steps": [
            {"id": "s", "agent": "a", "tool": "slow", "confidence": 0.9,
             "args": {"simulate": "timeout"}}]}) + "\n")
        out_dir = tmp_path / "out"
        assert main(["run", "--catalogue", str(catalogue), "--plans", str(plans), "--out",
                     str(out_dir), "--start", str(T0)]) == 1
        assert capsys.readouterr().err == (
            f"RuleTableError: {catalogue}:5: tool[slow].timeout_s: must be at most 2.592e+06 "
            "s, 30 days (got 1e+300)\n")
        assert not out_dir.exists()


# -- a run into a directory that holds an earlier run ------------------------------------

def snapshot(out: Path) -> dict[str, bytes]:
    """Every file of ``out`` (hidden ones too), by name, with its bytes."""
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, Run]:
    """The default run twice into one directory: the first trail's bytes, and the second run."""
    out = tmp_path_factory.mktemp("twice") / "out"
    do_run(out)
    first = (out / "audit.jsonl").read_bytes()
    return first, do_run(out)


class TestContinuedTrail:
    # A run unlinked the trail already in --out (a keyed one too), even when it then failed.
    def test_the_trail_is_continued_not_replaced(self, default_run, two_runs):
        first, again = two_runs
        trail = again.text("audit.jsonl").encode()
        assert first == default_run.text("audit.jsonl").encode()
        assert trail.startswith(first) and len(trail) > len(first)
        assert again.json("orchestration_summary.json")["audit_seq"] == [355, 665]
        assert (again.summary.audit_seq, again.summary.earlier_executions) == ((355, 665), 65)
        assert main(["replay", str(again.out / "audit.jsonl")]) == 0

    def test_earlier_irreversible_actions_are_duplicates(self, default_run, two_runs):
        _, again = two_runs
        summary = again.json("orchestration_summary.json")
        assert summary["executions_by_mode"] == {"MOCK": 0, "DRY_RUN": 7, "LIVE": 45,
                                                 "NOT_RUN": 15}
        assert summary["earlier_executions"] == 65
        conflicts = again.json("tool_conflicts.json")
        assert conflicts["by_type"]["DUPLICATE_ACTION"] == 14
        # The contact created LIVE by the first run is not created again, by either plan.
        first_run = {r["subject"] for r in default_run.lines("audit.jsonl")
                     if r["kind"] == "execution" and r["data"]["tool"] == "ghl_create_contact"
                     and r["data"]["mode"] == "LIVE"}
        assert first_run == {"ctx-156"}
        details = [c["detail"] for c in conflicts["conflicts"]
                   if c["tool"] == "ghl_create_contact"]
        assert details == [
            f"crm-create-{n}/s2 repeats irreversible ghl_create_contact with the same "
            "arguments: already ran successfully as ctx-156" for n in (1, 2)]
        results = again.tool_results()
        assert [(results[f"crm-create-{n}/s2"]["mode"], results[f"crm-create-{n}/s2"]["error"])
                for n in (1, 2)] == [(None, f"aborted: {detail}") for detail in details]

    def test_outputs_derived_from_the_trail_cover_this_run_only(self, two_runs):
        _, again = two_runs
        seqs = [line["seq"] for line in again.lines("execution_state_transitions.jsonl")]
        assert min(seqs) > 354 and max(seqs) <= 665
        trail = again.lines("audit.jsonl")
        assert len(seqs) == sum(r["kind"] == "transition" and r["seq"] > 354 for r in trail)
        rollbacks = sum(r["kind"] == "rollback" and r["seq"] > 354 for r in trail)
        assert again.lines("rollback_events.jsonl")[-1]["total_rollbacks"] == rollbacks == \
            again.summary.rollbacks == 4
        assert "this run's events: seq 355 to 665; it continues an earlier trail (65 " \
            "executions read)" in again.text("report.md")

    def test_the_cli_says_the_trail_was_continued(self, tmp_path, capsys, monkeypatch):
        monkeypatch.chdir(tmp_path)
        assert main(["run", "--out", "o", "--start", str(T0)]) == 0
        first = capsys.readouterr().out
        assert re.search(r"│ audit trail\s+│ o/audit.jsonl \(buddy replay o/audit.jsonl\), seq 1 "
                         r"to 354\s+│", first)
        assert "earlier runs" not in first
        assert main(["run", "--out", "o", "--start", str(T0)]) == 0
        again = capsys.readouterr().out
        assert re.search(r"│ audit trail\s+│ o/audit.jsonl \(buddy replay o/audit.jsonl\), seq 355 "
                         r"to 665\s+│", again)
        assert re.search(r"│ earlier runs\s+│ 65 executions read from the trail \(irreversible "
                         r"ones count as done\)\s+│", again)

    def test_a_fresh_directory_gives_the_first_run_again(self, default_run, two_runs,
                                                         tmp_path):
        fresh = do_run(tmp_path / "fresh")
        for name in ALL_FILES:
            assert fresh.text(name) == default_run.text(name), name

    @pytest.mark.parametrize("argv, line", [
        (["--start", "nan"], "BadParameter: Invalid value for '--start': must be epoch seconds "
                             "in [0, 253370764800] (got 'nan')"),
        (["--plans", "missing.json"], "PlanError: missing.json: no such file"),
        (["--catalogue", "missing.toml"], "RuleTableError: missing.toml: no such file"),
    ])
    def test_a_run_that_fails_touches_nothing(self, tmp_path, capsys, monkeypatch, argv, line):
        monkeypatch.chdir(tmp_path)
        assert main(["run", "--out", "out", "--start", str(T0)]) == 0
        before = snapshot(tmp_path / "out")
        capsys.readouterr()
        code = main(["run", "--out", "out", *argv])
        assert (code, capsys.readouterr().err) == (2 if "nan" in argv else 1, line + "\n")
        assert snapshot(tmp_path / "out") == before
        assert main(["replay", "out/audit.jsonl"]) == 0

    def test_a_keyed_trail_needs_its_key(self, tmp_path, capsys, monkeypatch):
        monkeypatch.chdir(tmp_path)
        Path("key").write_text("k" * 32)
        Path("other").write_text("o" * 32)
        assert main(["run", "--out", "out", "--start", str(T0), "--key-file", "key"]) == 0
        before = snapshot(tmp_path / "out")
        capsys.readouterr()
        for key in ([], ["--key-file", "other"]):
            assert main(["run", "--out", "out", "--start", str(T0), *key]) == 1
            reason = "the log is chained with HMAC: give its key (--key-file or --key-env) to " \
                "verify it" if not key else "hash mismatch (line edited, or chained without " \
                "the key)"
            assert capsys.readouterr().err == (
                f"AuditChainBroken: out/audit.jsonl:1: chain broken at seq 1: {reason}\n")
            assert snapshot(tmp_path / "out") == before
        assert main(["run", "--out", "out", "--start", str(T0), "--key-file", "key"]) == 0
        capsys.readouterr()
        assert main(["replay", "out/audit.jsonl", "--key-file", "key", "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert (report["chain"], report["last_seq"], report["ok"]) == ("hmac-sha256", 665, True)

    def test_a_broken_trail_is_refused_and_kept(self, tmp_path, capsys, monkeypatch):
        monkeypatch.chdir(tmp_path)
        assert main(["run", "--out", "out", "--start", str(T0)]) == 0
        trail = Path("out/audit.jsonl")
        lines = trail.read_text().split("\n")
        lines[4] = re.sub(r'"ts":[0-9.]+', '"ts":1.5', lines[4])
        trail.write_text("\n".join(lines))
        before = snapshot(tmp_path / "out")
        capsys.readouterr()
        assert main(["run", "--out", "out", "--start", str(T0)]) == 1
        assert capsys.readouterr().err == ("AuditChainBroken: out/audit.jsonl:5: chain broken "
                                           "at seq 5: hash mismatch (line edited)\n")
        assert snapshot(tmp_path / "out") == before


def tree(out: Path) -> dict[str, bytes | None]:
    """:func:`snapshot`, directories (None) and special files included."""
    return {p.name: p.read_bytes() if p.is_file() else None for p in sorted(out.iterdir())}


class TestOutputPaths:
    # A directory at report.md: the run did all its LIVE work, then failed with
    # IsADirectoryError (the trail already continued).
    NAMES = [*OUTPUT_FILES, "report.md", "audit.jsonl", "audit.jsonl.anchor", RUN_LOCK]

    @pytest.mark.parametrize("name", NAMES)
    @pytest.mark.parametrize("earlier", [True, False])
    def test_a_directory_is_refused_before_anything_runs(self, tmp_path, capsys, monkeypatch,
                                                          name, earlier):
        monkeypatch.chdir(tmp_path)
        out = Path("o")
        if earlier:
            assert main(["run", "--out", "o", "--start", str(T0)]) == 0
            (out / name).unlink()
        (out / name).mkdir(parents=True)
        (out / name / "kept").write_text("mine")
        before = tree(out)
        capsys.readouterr()
        assert main(["run", "--out", "o", "--start", str(T0)]) == 1
        assert capsys.readouterr() == ("", f"IsADirectoryError: o/{name}: is a directory, "
                                       "where buddy run writes a file (move it away, or use "
                                       "another --out)\n")
        assert tree(out) == before
        assert (out / name / "kept").read_text() == "mine"

    def test_a_fifo_is_refused_too(self, tmp_path, capsys, monkeypatch):
        monkeypatch.chdir(tmp_path)
        Path("o").mkdir()
        os.mkfifo("o/audit.jsonl")  # opened as the trail, it would block the run
        assert main(["run", "--out", "o", "--start", str(T0)]) == 1
        assert capsys.readouterr().err == ("OSError: o/audit.jsonl: is not a regular file, "
                                           "where buddy run writes one (move it away, or use "
                                           "another --out)\n")
        assert sorted(p.name for p in Path("o").iterdir()) == ["audit.jsonl"]


BUDDY = Path(sys.executable).with_name("buddy")
#: ``buddy run`` (argv) in a process that pauses in its first orchestration cycle: it
#: touches ``started``, then waits for ``go``.
PAUSED_RUN = """
import sys, time
from pathlib import Path
from buddy.engine.app._cli import main
from buddy.engine.orchestration._orchestrator import ToolOrchestrator
from buddy.engine.orchestration._plans import plan_to_json
from buddy.engine.orchestration._scenario import repeated_plans
real = ToolOrchestrator.run_cycle
def paused(self, plans):
    Path("started").touch()
    deadline = time.monotonic() + 60
    while not Path("go").exists():
        if time.monotonic() > deadline:
            sys.exit("never released")
        time.sleep(0.01)
    return real(self, plans)
ToolOrchestrator.run_cycle = paused
sys.exit(main(sys.argv[1:]))
"""
BUSY = ("BlockingIOError: o/.buddy-run.lock: another buddy run is writing to o (wait for it "
        "to finish, or use another --out)\n")


def irreversible_live_runs(trail: Path) -> Counter[tuple[str, str]]:
    """Successful LIVE runs of irreversible tools in ``trail``, by tool and arguments."""
    registry = ToolContractRegistry.default()
    return Counter((d["tool"], d["args_digest"]) for r in json_lines(trail)
                   if r["kind"] == "execution" and (d := r["data"])["mode"] == "LIVE"
                   and d["ok"] and not registry.get(d["tool"]).reversible)


class TestConcurrentRuns:
    # Two runs into one --out each read the trail before the other wrote: irreversible
    # actions done twice, JSON Lines interleaved, a summary spanning both runs.
    def test_a_second_run_refuses_at_once_and_touches_nothing(self, tmp_path):
        (tmp_path / "paused.py").write_text(PAUSED_RUN)
        first = subprocess.Popen([sys.executable, "paused.py", "run", "--out", "o", "--start",
                                  str(T0)], cwd=tmp_path, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            while not (tmp_path / "started").exists():
                assert first.poll() is None and time.monotonic() < deadline, \
                    first.communicate()
                time.sleep(0.01)
            before = tree(tmp_path / "o")
            second = subprocess.run([BUDDY, "run", "--out", "o", "--start", str(T0)],
                                    cwd=tmp_path, capture_output=True, text=True, timeout=60,
                                    check=False)
            assert (second.returncode, second.stdout, second.stderr) == (1, "", BUSY)
            assert tree(tmp_path / "o") == before
        finally:
            (tmp_path / "go").touch()
            out, err = first.communicate(timeout=60)
        assert (first.returncode, err) == (0, ""), out
        assert "seq 1 to 354" in out
        assert json.loads((tmp_path / "o" / "orchestration_summary.json").read_text())[
            "audit_seq"] == [1, 354]
        assert main(["replay", str(tmp_path / "o" / "audit.jsonl")]) == 0

    def test_racing_runs_leave_one_story(self, tmp_path):
        runs = [subprocess.Popen([BUDDY, "run", "--out", "o"], cwd=tmp_path,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(4)]
        done = [(p.returncode, err) for p in runs for _, err in [p.communicate(timeout=120)]]
        assert (0, "") in done
        assert all(d in ((0, ""), (1, BUSY)) for d in done), done
        out = tmp_path / "o"
        assert main(["replay", str(out / "audit.jsonl")]) == 0
        assert set(irreversible_live_runs(out / "audit.jsonl").values()) == {1}
        last_seq = json_lines(out / "audit.jsonl")[-1]["seq"]
        first, last = json.loads((out / "orchestration_summary.json").read_text())["audit_seq"]
        assert last == last_seq
        assert [line["plan_index"] for line in json_lines(out / "tool_execution_log.jsonl")] \
            == list(range(24))
        seqs = [line["seq"] for line in json_lines(out / "execution_state_transitions.jsonl")]
        assert seqs == sorted(seqs) and first <= seqs[0] and seqs[-1] <= last


class TestStaleOutputs:
    # kill -9 during a run over an earlier one left the old summary and report beside the
    # new, partial execution log: an unfinished run that looked finished.
    def test_a_run_that_dies_leaves_no_earlier_summary(self, tmp_path, monkeypatch):
        out = tmp_path / "out"
        do_run(out)
        first = (out / "audit.jsonl").read_bytes()
        (out / ".report.md.x1y2.tmp").write_text("left by a crash")
        calls = 0
        real = ToolOrchestrator.run_cycle

        def dies_in_cycle_2(self, plans):
            nonlocal calls
            calls += 1
            if calls == 2:
                raise KeyboardInterrupt  # the nearest thing to kill -9 in-process
            return real(self, plans)

        monkeypatch.setattr(ToolOrchestrator, "run_cycle", dies_in_cycle_2)
        with pytest.raises(KeyboardInterrupt):
            do_run(out)
        assert sorted(p.name for p in out.iterdir()) == [
            RUN_LOCK, "audit.jsonl", "audit.jsonl.anchor", "tool_execution_log.jsonl"]
        assert [line["plan_index"] for line in Run(None, out).lines(  # type: ignore[arg-type]
            "tool_execution_log.jsonl")] == [0, 1, 2, 3]
        assert (out / "audit.jsonl").read_bytes().startswith(first)
        monkeypatch.undo()
        again = do_run(out)
        assert sorted(p.name for p in out.iterdir()) == ALL_FILES
        assert main(["replay", str(again.out / "audit.jsonl")]) == 0

    def test_the_summary_is_written_last(self, tmp_path, monkeypatch):
        written: list[str] = []
        real = harness.write_atomic

        def recording(path, data):
            written.append(Path(path).name)
            return real(path, data)

        monkeypatch.setattr(harness, "write_atomic", recording)
        do_run(tmp_path / "out")
        assert written[-2:] == ["report.md", "orchestration_summary.json"]


# -- settings checked before anything is touched --------------------------------------------

class TestOptions:
    # --seed 2**70 crashed after the run (partial outputs); --start 1e300 / nan / inf too.
    @pytest.mark.parametrize("argv, line", [
        *[(["--seed", value], "BadParameter: Invalid value for '--seed': must be a whole "
           f"number in [-2**63, 2**63 - 1] (got {value!r})")
          for value in (str(2 ** 63), str(-(2 ** 63) - 1), "99999999999999999999999", "1.5",
                        "0x10", "", "nan")],
        (["--seed", "9" * 5000], "BadParameter: Invalid value for '--seed': must be a whole "
         f"number in [-2**63, 2**63 - 1] (got '{'9' * 27}...{'9' * 28}')"),
        *[(["--start", value], "BadParameter: Invalid value for '--start': must be epoch "
           f"seconds in [0, 253370764800] (got {value!r})")
          for value in ("nan", "inf", "-inf", "1e300", "-1", "253370764800.5", "x", "")],
    ])
    def test_bad_values_are_one_line_and_touch_nothing(self, tmp_path, capsys, argv, line):
        out = tmp_path / "out"
        code = main(["run", "--out", str(out), *argv])
        captured = capsys.readouterr()
        assert (code, captured.out, captured.err) == (2, "", line + "\n")
        assert not out.exists()

    @pytest.mark.parametrize("seed", [2 ** 63 - 1, -(2 ** 63)])
    def test_the_extreme_seeds_run(self, tmp_path, seed):
        done = do_run(tmp_path / "out", seed=seed)
        assert done.json("orchestration_summary.json")["seed"] == seed

    @pytest.mark.parametrize("start, iso", [(0, "1970-01-01T00:00:00Z"),
                                            (253_370_764_800, "9999-01-01T00:00:00Z")])
    def test_the_extreme_starts_run(self, tmp_path, start, iso):
        done = do_run(tmp_path / "out", start=start)
        assert done.json("orchestration_summary.json")["start_time"] == iso

    @pytest.mark.parametrize("setting, value, message", [
        ("seed", 2 ** 63, f"seed must be a whole number in [-2**63, 2**63 - 1] (got {2 ** 63})"),
        ("seed", True, "seed must be a whole number in [-2**63, 2**63 - 1] (got True)"),
        ("seed", 1.5, "seed must be a whole number in [-2**63, 2**63 - 1] (got 1.5)"),
        ("start", math.nan, "start must be epoch seconds in [0, 253370764800] (got nan)"),
        ("start", math.inf, "start must be epoch seconds in [0, 253370764800] (got inf)"),
        ("start", -1, "start must be epoch seconds in [0, 253370764800] (got -1)"),
        ("start", 1e300, "start must be epoch seconds in [0, 253370764800] (got 1e+300)"),
        ("start", "0", "start must be epoch seconds in [0, 253370764800] (got '0')"),
        ("start", 2 ** 400, "start must be epoch seconds in [0, 253370764800] "
         "(got <int of 401 bits>)"),
        ("start", 10 ** 400, "start must be epoch seconds in [0, 253370764800] "
         "(got <int of 1329 bits>)"),
        ("max_live_escalations", -1, "max_live_escalations must be a whole number >= 0 or "
         "None (got -1)"),
        ("max_live_escalations", True, "max_live_escalations must be a whole number >= 0 or "
         "None (got True)"),
        ("confidence_threshold_for_live", math.nan, "confidence_threshold_for_live must be a "
         "number in [0, 1] or None (got nan)"),
        ("plans_per_cycle", 1.5, "plans_per_cycle must be >= 1 (got 1.5)"),
    ])
    def test_run_config_refuses_them_too(self, tmp_path, setting, value, message):
        with pytest.raises(InputError, match=f"^{re.escape(message)}$"):
            RunConfig(output_dir=tmp_path / "out", **{setting: value})
        assert not (tmp_path / "out").exists()


class TestRulesDirectory:
    # An empty or misnamed rules directory silently ran the shipped tables.
    KNOWN = "anomalies.toml, conflicts.toml, escalation.toml, health.toml, signals.toml"

    @pytest.mark.parametrize("files, lines", [
        ((), ["RuleTableError: rules: holds none of the rule tables (known: {known})"]),
        (("escalations.toml",), ["RuleTableError: rules/escalations.toml: not a rule table "
                                 "(known: {known})"]),
        (("conflicts.toml", "Health.toml", "tools.toml"), [
            "RuleTableError: rules/Health.toml: not a rule table (known: {known})",
            "RuleTableError: rules/tools.toml: not a rule table (known: {known}); the tool "
            "catalogue is given with --catalogue"]),
    ])
    def test_refused_naming_every_file(self, tmp_path, capsys, monkeypatch, files, lines):
        monkeypatch.chdir(tmp_path)
        Path("rules").mkdir()
        for name in files:
            Path("rules", name).write_text(SHIPPED.joinpath(
                "conflicts.toml" if name != "tools.toml" else name).read_text("utf-8"))
        assert main(["run", "--rules", "rules", "--out", "out"]) == 1
        assert capsys.readouterr().err.splitlines() == [
            line.format(known=self.KNOWN) for line in lines]
        assert not Path("out").exists()

    def test_not_a_directory(self, tmp_path, capsys, monkeypatch):
        monkeypatch.chdir(tmp_path)
        assert main(["run", "--rules", "nodir", "--out", "out"]) == 1
        assert capsys.readouterr().err == "RuleTableError: nodir: no such directory\n"

    def test_other_files_are_no_concern(self, default_run, tmp_path):
        rules = tmp_path / "rules"
        rules.mkdir()
        (rules / "README.md").write_text("my tables")
        (rules / "escalation.toml").write_text(SHIPPED.joinpath("escalation.toml").read_text())
        assert do_run(tmp_path / "out", rules_dir=rules).text("tool_execution_log.jsonl") == \
            default_run.text("tool_execution_log.jsonl")


class TestPlansFileRefusals:
    @pytest.mark.parametrize("text, line", [
        ("", "PlanError: no plans in plans.json"),
        ("[]", "PlanError: no plans in plans.json"),
        ('{"plans": []}', "PlanError: no plans in plans.json"),
        ('{"plans": [], "other": 1}', "PlanError: plans.json: unknown top-level key 'other' "
         "(a plans document holds only \"plans\")"),
        ('{"plans": {"plan_id": "p"}}', "PlanError: plans.json: plans must be a list (got an "
         "object)"),
    ])
    def test_one_line_and_nothing_touched(self, tmp_path, capsys, monkeypatch, text, line):
        monkeypatch.chdir(tmp_path)
        Path("plans.json").write_text(text)
        assert main(["run", "--plans", "plans.json", "--out", "out"]) == 1
        assert capsys.readouterr().err == line + "\n"
        assert not Path("out").exists()

    def test_a_plan_cannot_approve_its_own_high_risk_step(self, tmp_path, capsys):
        # It ran LIVE, "approved_by": "caller".
        code, err, plans, out_dir = run_plans(tmp_path, [
            plan_line("self", tool="database_write", approval=True),
            plan_line("denied", tool="database_write", approval=False)], capsys)
        assert code == 1
        assert err == [f"PlanRejected: {plans}:1: plan[self].steps[0].approval: a plan cannot "
                       "approve its own call (approvals come from the approver or a scoped "
                       "grant); give false (a pre-denial) or null"]
        decisions = [r["data"] for r in json_lines(out_dir / "audit.jsonl")
                     if r["kind"] == "decision"]
        assert [(d["agent"], d["tool"], d["approval"], d["mode"], d["allowed"])
                for d in decisions] == [("agent-a", "database_write", False, "MOCK", False)]

    def test_a_json_document_names_the_line_of_a_rejected_plan(self, tmp_path, capsys,
                                                                monkeypatch):
        monkeypatch.chdir(tmp_path)
        Path("plans.json").write_text("[\n" + plan_line("good") + ",\n"
                                      + plan_line("bad", confidence=2) + "\n]\n")
        assert main(["run", "--plans", "plans.json", "--out", "out", "--start", str(T0)]) == 1
        assert capsys.readouterr().err == ("PlanRejected: plans.json:3: plan[bad].steps[0]."
                                           "confidence: must be a number in [0, 1] (got 2)\n")


# -- user values on the terminal and in report.md ------------------------------------------

HOSTILE = "agent\x1b[2J\x07[red]x[/]\u2028\x9b|<b>`"
SHOWN_HOSTILE = "agent\\x1b[2J\\x07[red]x[/]\\u2028\\x9b|<b>`"  # as error lines show it


class TestHostileValues:
    # Agent and plan ids went raw to the terminal (ANSI escapes) and into report.md; rich
    # read "[red]" in them as markup.
    def test_never_raw_on_the_terminal_nor_in_the_report(self, tmp_path, capsys):
        plans = tmp_path / "plans.jsonl"
        plans.write_text("\n".join([
            plan_line(f"p{HOSTILE}", agent=HOSTILE),
            plan_line(f"q{HOSTILE}", confidence=7)]) + "\n", encoding="utf-8")
        out_dir = tmp_path / "out[bold]\x1b"
        code = main(["run", "--plans", str(plans), "--out", str(out_dir), "--start", str(T0)])
        out, err = capsys.readouterr()
        assert code == 1
        for text in (out, err, (out_dir / "report.md").read_text()):
            assert not [ch for ch in text if not ch.isprintable() and ch not in " \n"], text
        assert err == (f"PlanRejected: {plans}:2: plan['q{SHOWN_HOSTILE}'].steps[0].confidence:"
                       " must be a number in [0, 1] (got 7)\n")
        assert "out[bold]\\x1b/report.md" in out  # the markup shown, not applied
        report = (out_dir / "report.md").read_text()
        cell = ("agent\\\\x1b\\[2J\\\\x07\\[red\\]x\\[/\\]\\\\u2028\\\\x9b\\|\\<b>\\`")
        assert f"| p{cell}/s | {cell} | memory_search |" in report

    def test_run_log_keeps_the_values_as_given(self, tmp_path, capsys):
        code, _, _, out_dir = run_plans(tmp_path, [plan_line("p", agent=HOSTILE)], capsys)
        assert code == 0
        [line] = json_lines(out_dir / "tool_execution_log.jsonl")
        assert line["result"]["tool_results"][0]["agent"] == HOSTILE


class TestReplayHint:
    def test_a_run_on_a_table_of_its_own_says_to_replay_with_it(self, tmp_path, capsys):
        rules = tmp_path / "rules"
        rules.mkdir()
        shipped = resources.files("buddy.rules").joinpath("escalation.toml").read_text("utf-8")
        (rules / "escalation.toml").write_text(shipped.replace("value = 0.70", "value = 0.75"))
        out = tmp_path / "out"
        summary = run(RunConfig(output_dir=out, rules_dir=rules, start=T0))
        assert summary.replay == f"buddy replay {out / 'audit.jsonl'} --rules {rules}"
        doc = json.loads((out / "orchestration_summary.json").read_text())
        assert doc["replay"] == f"buddy replay audit.jsonl --rules {rules}"
        assert main(["replay", str(out / "audit.jsonl"), "--rules", str(rules)]) == 0
        assert main(["replay", str(out / "audit.jsonl")]) == 1  # decided with another table


class TestOneTablePerTrail:
    # `run --rules R` then a plain run into one --out: the summary's replay command failed
    # (ReplayDivergence ... rules recorded ...), and `replay --rules R` listed the other
    # table's decisions as what-if changes. Replay verifies a trail against one table.
    SHIPPED, OWN = "6a0010f83ddad4ec", "49ab0734405bb290"

    @pytest.fixture
    def here(self, tmp_path, monkeypatch, capsys):
        monkeypatch.chdir(tmp_path)
        Path("R").mkdir()
        Path("R/escalation.toml").write_text(SHIPPED.joinpath("escalation.toml").read_text(
            "utf-8").replace("value = 0.70", "value = 0.75"))
        return tmp_path

    @pytest.mark.parametrize("first, then, earlier, now", [
        (["--rules", "R"], [], f"{OWN}", f"{SHIPPED} (the shipped one)"),
        ([], ["--rules", "R"], f"{SHIPPED} (the shipped one)", f"{OWN}"),
    ])
    def test_another_table_is_refused_touching_nothing(self, here, capsys, first, then,
                                                        earlier, now):
        assert main(["run", "--out", "o", "--start", str(T0), *first]) == 0
        before = snapshot(Path("o"))
        capsys.readouterr()
        assert main(["run", "--out", "o", "--start", str(T0), *then]) == 1
        assert capsys.readouterr() == ("", (
            f"InputError: o/audit.jsonl: its earlier runs decided with escalation table "
            f"{earlier}, this run would decide with {now}; a trail replays against one "
            "table: use a fresh --out, or the rules its runs used\n"))
        assert snapshot(Path("o")) == before

    def test_the_same_table_continues_and_replays(self, here, capsys):
        for _ in range(2):
            assert main(["run", "--out", "o", "--start", str(T0), "--rules", "R"]) == 0
        capsys.readouterr()
        assert main(["replay", "o/audit.jsonl", "--rules", "R", "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert (report["ok"], report["rules_recorded"], report["changes"]) == (True, [self.OWN],
                                                                              [])

    def test_a_directory_holding_the_shipped_table_is_the_same_table(self, here, capsys):
        Path("C").mkdir()
        Path("C/escalation.toml").write_text(SHIPPED.joinpath("escalation.toml").read_text(
            "utf-8"))
        assert main(["run", "--out", "o", "--start", str(T0)]) == 0
        assert main(["run", "--out", "o", "--start", str(T0), "--rules", "C"]) == 0
        assert main(["replay", "o/audit.jsonl"]) == 0


class TestReplayCommand:
    # The summary's and the report's command named the log relative to --out but
    # --rules relative to where buddy run was invoked: from neither did it run.
    @pytest.fixture
    def rules(self, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        return rules_dir(tmp_path, "escalation.toml", "value = 0.70", "value = 0.75")

    @staticmethod
    def runs(command: str, where: Path, monkeypatch: pytest.MonkeyPatch) -> int:
        argv = shlex.split(command)
        assert argv[:2] == ["buddy", "replay"], command
        monkeypatch.chdir(where)
        return main(argv[1:])

    @pytest.mark.parametrize("out, given", [("o", "rules"), ("out dir", "my rules")])
    def test_each_command_runs_from_where_it_says(self, rules, tmp_path, capsys, monkeypatch,
                                                  out, given):
        rules.rename(given)
        assert main(["run", "--out", out, "--rules", given, "--start", str(T0)]) == 0
        table = capsys.readouterr().out
        from_here = f"buddy replay {shlex.quote(out + '/audit.jsonl')} --rules " \
            f"{shlex.quote(given)}"
        assert f"audit trail      │ {out}/audit.jsonl ({from_here}), seq 1 to " in table
        in_out = f"buddy replay audit.jsonl --rules {shlex.quote(str(tmp_path / given))}"
        assert json.loads(Path(out, "orchestration_summary.json").read_text())["replay"] == \
            in_out
        assert f"| audit trail | `audit.jsonl` (`{in_out}`, in this directory)" in \
            Path(out, "report.md").read_text()
        assert self.runs(from_here, tmp_path, monkeypatch) == 0
        assert self.runs(in_out, tmp_path / out, monkeypatch) == 0
        assert capsys.readouterr().err == ""

    def test_fresh_directories_are_still_byte_identical(self, rules, tmp_path):
        one, two = do_run(tmp_path / "one", rules_dir=Path("rules")), \
            do_run(tmp_path / "two", rules_dir=rules)
        for name in ALL_FILES:
            assert one.text(name) == two.text(name), name


def set_lock(trail: Path, locked: bool) -> None:
    """Lock (or unlock) the system of ``trail`` as another writer of it, an embedding
    engine, does."""
    with AuditLog.open(trail, clock=time.time) as audit:
        engine = Engine.default(audit=audit)
        if locked:
            engine.lock("incident 42")
        else:
            engine.unlock("incident over")


class TestLockedTrail:
    # A run on a locked trail did all-MOCK work and reported health EXCELLENT without a
    # word about the lock.
    def test_locked_for_the_whole_run(self, tmp_path, capsys, monkeypatch):
        monkeypatch.chdir(tmp_path)
        assert main(["run", "--out", "o", "--start", str(T0)]) == 0
        assert "system lock" not in capsys.readouterr().out
        assert "system lock" not in Path("o/report.md").read_text()
        set_lock(Path("o/audit.jsonl"), True)  # seq 355
        assert main(["run", "--out", "o", "--start", str(T0)]) == 0
        note = "LOCKED for the whole run, by the trail's lock event at seq 355: calls ran MOCK " \
            "only"
        table = capsys.readouterr().out
        assert re.search(rf"│ system lock\s+│ {note}\s+│", table), table
        summary = json.loads(Path("o/orchestration_summary.json").read_text())
        assert summary["system_lock"] == {"at_start": 355, "at_end": 355}
        assert summary["executions_by_mode"] == {"MOCK": 53, "DRY_RUN": 0, "LIVE": 0,
                                                 "NOT_RUN": 14}
        assert f"| system lock | {note} |" in Path("o/report.md").read_text()
        assert main(["replay", "o/audit.jsonl"]) == 0

    @pytest.mark.parametrize("locked_first", [True, False])
    def test_locked_or_unlocked_during_the_run(self, tmp_path, capsys, monkeypatch,
                                               locked_first):
        out = tmp_path / "o"
        do_run(out)
        if locked_first:
            set_lock(out / "audit.jsonl", True)
        cycles = 0
        real = ToolOrchestrator.run_cycle

        def turns_the_lock_in_cycle_3(self, plans):
            nonlocal cycles
            cycles += 1
            if cycles == 3:
                set_lock(out / "audit.jsonl", not locked_first)
            return real(self, plans)

        monkeypatch.setattr(ToolOrchestrator, "run_cycle", turns_the_lock_in_cycle_3)
        done = do_run(out)
        turned = [r["seq"] for r in done.lines("audit.jsonl")
                  if r["kind"] == ("unlock" if locked_first else "lock")]
        assert len(turned) == 1
        if locked_first:
            assert done.summary.system_lock == (355, None)
            assert done.summary.lock_note == "LOCKED at the start (the trail's lock event at " \
                "seq 355), unlocked at the end: calls decided while locked ran MOCK only"
        else:
            assert done.summary.system_lock == (None, turned[0])
            assert done.summary.lock_note == "unlocked at the start, LOCKED at the end (lock " \
                f"event at seq {turned[0]}): calls decided while locked ran MOCK only"
        assert done.json("orchestration_summary.json")["system_lock"] == dict(
            zip(["at_start", "at_end"], done.summary.system_lock, strict=True))
        assert f"| system lock | {done.summary.lock_note} |" in done.text("report.md")
        assert main(["replay", str(out / "audit.jsonl")]) == 0
