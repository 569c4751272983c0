"""Tests for the feedback loop: outcomes in, learning signals for phases 16/19 out."""

from __future__ import annotations

from importlib import resources

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from buddy.engine.orchestration._conflict_records import Conflict, Resolution
from buddy.engine.orchestration._feedback import FeedbackLoop, LearningSignal
from buddy.engine.orchestration._plans import ExecutionOutcome
from buddy.rules.base._values import ExecutionMode
from buddy.rules.base.errors import RuleTableError
from buddy.rules.tables._conflicts import ConflictType, ResolutionStrategy
from buddy.rules.tables._signals import DEFAULT_BUCKETS, ConfidenceRule, SignalTable, SignalType

M, D, L = ExecutionMode.MOCK, ExecutionMode.DRY_RUN, ExecutionMode.LIVE
T, R = ConflictType, ResolutionStrategy
SIGNALS_TEXT = resources.files("buddy.rules").joinpath("signals.toml").read_text()
EXPORT_KEYS = ["signal_type", "tool_name", "insight", "recommended_action", "confidence",
               "target_phase", "scope", "scope_key", "rule", "evidence"]

_n = iter(range(1_000_000))


def outcome(tool: str = "vision_inspect", ok: bool = True, mode: ExecutionMode | None = M,
            confidence: float = 0.95, duration_ms: float = 100.0, **kw) -> ExecutionOutcome:
    n = next(_n)
    return ExecutionOutcome(f"c{n}", "p1", "agent-1", tool, "LOW", confidence, mode, mode,
                            ok=ok, duration_ms=duration_ms, **kw)


def conflict(n: int | str, ctype: ConflictType, tool: str, *calls: str) -> Conflict:
    return Conflict(f"conflict-{n}", ctype, calls or (f"call-{n}",), tool, None, "detail")


def resolution(of: Conflict, strategy: ResolutionStrategy) -> Resolution:
    return Resolution(of.id, of.call, of.type, strategy, "rule", "reason")


def loop_of(outcomes, signals: SignalTable | None = None, *, conflicts=(),
            resolutions=()) -> FeedbackLoop:
    loop = FeedbackLoop(signals)
    for o in outcomes:
        loop.record(o)
    loop.record_conflicts(conflicts, resolutions)
    return loop


def table_with(old: str, new: str) -> str:
    assert SIGNALS_TEXT.count(old) == 1, old
    return SIGNALS_TEXT.replace(old, new)


class TestFeedbackLoop:
    """The Phase 24 feedback-loop tests."""

    def test_feedback_loop_initialization(self):
        loop = FeedbackLoop()
        assert loop.tool_metrics() == {}
        assert loop.calibration() == []
        assert loop.analyze() == []
        assert loop.export_signals() == []
        assert loop.signal_table == SignalTable.default()

    def test_outcome_recording(self):
        loop = loop_of([outcome(duration_ms=500.0),
                        outcome(ok=False, mode=D, duration_ms=100.0),
                        outcome(mode=L, duration_ms=300.0),
                        outcome(ok=False, mode=None, conflicts=("PERMISSION",),
                                resolution="ABORT")])
        assert loop.scope_items("conflict_type") == []  # conflicts are recorded on their own
        assert loop.tool_metrics() == {"vision_inspect": {
            "total_executions": 3, "successful": 2, "failed": 1, "success_rate": 2 / 3,
            "avg_execution_time": 300.0,
            "by_mode": {
                "MOCK": {"count": 1, "success_count": 1, "success_rate": 1.0,
                         "avg_execution_time": 500.0},
                "DRY_RUN": {"count": 1, "success_count": 0, "success_rate": 0.0,
                            "avg_execution_time": 100.0},
                "LIVE": {"count": 1, "success_count": 1, "success_rate": 1.0,
                         "avg_execution_time": 300.0}}}}

    def test_tool_reliability_analysis(self):
        loop = loop_of([outcome() for _ in range(19)] + [outcome(ok=False)])
        assert loop.analyze_tool_reliability() == [LearningSignal(
            SignalType.TOOL_RELIABILITY, "vision_inspect",
            "Tool achieved 95% success rate over 20 executions",
            "Consider escalating vision_inspect to LIVE execution mode", 0.95, 16, "tool",
            "vision_inspect", "tool_reliability.high")]
        assert loop.signals_for_phase(19) == []
        assert [s["rule"] for s in loop.signals_for_phase(16)] == ["tool_reliability.high"]

    @pytest.mark.parametrize("runs, successes, rule, confidence", [
        (10, 10, "tool_reliability.high", 1.0),
        (9, 9, None, None),              # under 10 executions: no verdict
        (10, 9, None, None),             # 90 % is not > 90 %
        (10, 7, None, None),             # 70 % is not < 70 %
        (10, 6, "tool_reliability.low", 0.4),
        (12, 3, "tool_reliability.low", 0.75),
    ])
    def test_reliability_boundaries(self, runs, successes, rule, confidence):
        loop = loop_of([outcome("t", ok=i < successes) for i in range(runs)])
        found = [(s.rule, s.confidence) for s in loop.analyze_tool_reliability()]
        assert found == ([] if rule is None else [(rule, confidence)])

    def test_low_reliability_text(self):
        loop = loop_of([outcome("crm", ok=i < 6) for i in range(10)])
        (signal,) = loop.analyze_tool_reliability()
        assert signal.insight == "Tool has low reliability: 60% success rate over 10 executions"
        assert signal.recommended_action == ("Investigate crm's failures and keep it in "
                                             "DRY_RUN")
        assert signal.target_phase == 16

    def test_execution_mode_analysis(self):
        outcomes = ([outcome("button_click", mode=M, duration_ms=10.0) for _ in range(5)]
                    + [outcome("button_click", mode=L, ok=i < 3, duration_ms=50.0)
                       for i in range(5)])
        loop = loop_of(outcomes)
        (signal,) = loop.analyze_execution_modes()  # LIVE is only 50 ms: no latency signal
        assert signal.to_dict() == {
            "signal_type": "EXECUTION_MODE_ANALYSIS", "tool_name": "button_click",
            "insight": "button_click performs best in MOCK (100% over 5 executions), worst in "
                       "LIVE (60% over 5)",
            "recommended_action": "Prefer MOCK for button_click; review its LIVE runs before "
                                  "escalating again",
            "confidence": 1.0, "target_phase": 19, "scope": "mode",
            "scope_key": "button_click", "rule": "execution_mode.best",
            "evidence": {"executions": 10, "modes_seen": 2, "best_mode": "MOCK",
                         "best_rate": 1.0, "best_executions": 5, "worst_mode": "LIVE",
                         "worst_rate": 0.6, "worst_executions": 5, "rate_gap": 0.4,
                         "fastest_mode": "MOCK", "fastest_ms": 10.0, "slowest_mode": "LIVE",
                         "slowest_ms": 50.0, "latency_ratio": 5.0}}
        assert loop.signals_for_phase(19) == [signal.to_dict()]

    def test_mode_latency(self):
        outcomes = ([outcome("crm", mode=D, duration_ms=40.0) for _ in range(3)]
                    + [outcome("crm", mode=L, duration_ms=400.0) for _ in range(3)])
        (signal,) = loop_of(outcomes).analyze_execution_modes()
        assert (signal.signal_type, signal.rule, signal.confidence) == (
            SignalType.TOOL_PERFORMANCE, "tool_performance.mode_latency", 0.3)
        assert signal.insight == "crm runs 10.0x slower in LIVE (400 ms) than in DRY_RUN (40 ms)"

    def test_equal_modes_give_no_mode_signal(self):
        outcomes = [outcome("t", mode=m) for m in (M, D) for _ in range(5)]
        assert loop_of(outcomes).analyze_execution_modes() == []

    def test_slow_tool(self):
        (signal,) = loop_of([outcome("export", duration_ms=2500.0, confidence=0.6)
                             for _ in range(5)]).analyze(SignalType.TOOL_PERFORMANCE)
        assert (signal.rule, signal.insight, signal.confidence) == (
            "tool_performance.slow", "export averages 2500 ms over 5 executions", 0.25)

    def test_conflict_pattern_detection(self):
        outcomes = [outcome("ghl_create_contact"), outcome("mployer_add_contact"),
                    outcome("ghl_create_contact"),
                    outcome("ghl_create_contact", mode=None, ok=False), outcome("button_click")]
        found = [conflict(1, T.RESOURCE, "ghl_create_contact"),
                 conflict(2, T.RESOURCE, "mployer_add_contact"),
                 conflict(3, T.RESOURCE, "ghl_create_contact"),
                 conflict(4, T.ORDERING, "ghl_create_contact"),
                 conflict(5, T.RESOURCE, "ghl_create_contact"),
                 conflict(6, T.ORDERING, "ghl_create_contact")]
        loop = loop_of(outcomes, conflicts=found, resolutions=[
            resolution(found[0], R.DELAY), resolution(found[1], R.DELAY),
            resolution(found[2], R.DELAY), resolution(found[4], R.ABORT)])
        assert loop.detect_conflict_patterns() == [LearningSignal(
            SignalType.CONFLICT_PATTERN, "*",
            "Recurring conflict pattern: RESOURCE (4 occurrences; tools: ghl_create_contact, "
            "mployer_add_contact)",
            "Review tool dependencies and agent allocation for RESOURCE conflicts (mostly "
            "resolved by DELAY)", 0.4, 19, "conflict_type", "RESOURCE",
            "conflict_pattern.recurring")]
        assert loop.detect_conflict_patterns()[0].evidence == {
            "occurrences": 4, "calls": 5, "share": 0.8, "resolved": 4, "tools": 2}

    def test_conflict_pattern_threshold(self):
        calls = [outcome() for _ in range(3)]
        two = [conflict(n, T.TIMEOUT, "vision_inspect") for n in (1, 2)]
        assert loop_of(calls, conflicts=two).detect_conflict_patterns() == []
        three = [*two, conflict(3, T.TIMEOUT, "vision_inspect")]
        (signal,) = loop_of(calls, conflicts=three).detect_conflict_patterns()
        assert signal.insight == ("Recurring conflict pattern: TIMEOUT (3 occurrences; tools: "
                                  "vision_inspect)")
        assert signal.recommended_action.endswith("(mostly resolved by none)")

    def test_a_conflict_counts_once_however_many_calls_and_records(self):
        pair = conflict(1, T.RATE_LIMIT, "form_fill", "a", "b")
        loop = loop_of([outcome(), outcome()], conflicts=[pair, pair])
        loop.record_conflicts([pair], [resolution(pair, R.DELAY), resolution(pair, R.DELAY)])
        loop.record_conflicts([], [resolution(conflict(9, T.RATE_LIMIT, "x"), R.ABORT),
                                   resolution(conflict(8, T.TIMEOUT, "x"), R.ABORT)])
        [(order, key, tool, metrics, names)] = loop.scope_items("conflict_type")
        assert (order, key, tool) == ("RATE_LIMIT", "RATE_LIMIT", "*")
        assert metrics == {"occurrences": 1, "calls": 2, "share": 0.5, "resolved": 1,
                           "tools": 1}
        assert (names["top_resolution"], names["tool_list"]) == ("DELAY", "form_fill")

    def test_top_resolution_ties_go_by_name(self):
        found = [conflict(n, T.RESOURCE, "t") for n in range(4)]
        loop = loop_of([outcome()], conflicts=found, resolutions=[
            resolution(found[0], R.DELAY), resolution(found[1], R.ABORT),
            resolution(found[2], R.DELAY), resolution(found[3], R.ABORT)])
        [(*_, metrics, names)] = loop.scope_items("conflict_type")
        assert (metrics["resolved"], names["top_resolution"]) == (4, "ABORT")

    @given(st.lists(st.tuples(st.integers(0, 9), st.integers(0, 2)), max_size=40))
    def test_occurrences_are_the_distinct_conflicts_of_each_type(self, drawn):
        # A conflict id keeps its type; given any number of times, it counts once.
        found = [conflict(n, list(ConflictType)[n % 6], f"tool-{k}") for n, k in drawn]
        loop = loop_of([outcome()], conflicts=found)
        counted = {key: metrics["occurrences"]
                   for _, key, _, metrics, _ in loop.scope_items("conflict_type")}
        expected: dict[str, set[str]] = {}
        for c in found:
            expected.setdefault(c.type.value, set()).add(c.id)
        assert counted == {t: len(ids) for t, ids in expected.items()}

    def test_confidence_calibration_analysis(self):
        # The source's pattern, five times over: success when confidence > 0.5.
        loop = loop_of([outcome("t", confidence=c, ok=c > 0.5)
                        for c in (0.25, 0.5, 0.75, 0.875) for _ in range(5)])
        assert loop.calibration() == [
            {"bucket": "0-0.5", "low": 0.0, "high": 0.5, "executions": 5, "predicted": 0.25,
             "actual": 0.0, "gap": 0.25},
            {"bucket": "0.5-0.7", "low": 0.5, "high": 0.7, "executions": 5, "predicted": 0.5,
             "actual": 0.0, "gap": 0.5},
            {"bucket": "0.7-0.85", "low": 0.7, "high": 0.85, "executions": 5,
             "predicted": 0.75, "actual": 1.0, "gap": -0.25},
            {"bucket": "0.85-1", "low": 0.85, "high": 1.0, "executions": 5,
             "predicted": 0.875, "actual": 1.0, "gap": -0.125},
        ]
        assert [(s.rule, s.scope_key, s.insight) for s in
                loop.analyze_confidence_calibration()] == [
            ("approval_mismatch.overconfident", "0-0.5",
             "Calls with confidence 0-0.5 succeeded 0% of the time against 25% predicted "
             "(5 executions)"),
            ("approval_mismatch.overconfident", "0.5-0.7",
             "Calls with confidence 0.5-0.7 succeeded 0% of the time against 50% predicted "
             "(5 executions)"),
            ("approval_mismatch.underconfident", "0.7-0.85",
             "Calls with confidence 0.7-0.85 succeeded 100% of the time against 75% predicted "
             "(5 executions)"),
        ]
        assert {s.confidence for s in loop.analyze_confidence_calibration()} == {0.8}

    def test_bucket_edges(self):
        loop = FeedbackLoop()
        assert [loop.bucket_of(c) for c in (0.0, 0.49, 0.5, 0.7, 0.8499, 0.85, 1.0)] == \
            [0, 0, 1, 2, 2, 3, 3]

    def test_signal_export(self):
        outcomes = ([outcome("a") for _ in range(10)]
                    + [outcome("b", ok=False, confidence=0.9) for _ in range(10)]
                    + [outcome("c", conflicts=("RATE_LIMIT",), resolution="DELAY",
                               confidence=0.6) for _ in range(3)])
        found = [conflict(n, T.RATE_LIMIT, "c") for n in range(3)]
        resolved = [resolution(c, R.DELAY) for c in found]
        exported = loop_of(outcomes, conflicts=found, resolutions=resolved).export_signals()
        assert [(s["signal_type"], s["scope_key"], s["rule"]) for s in exported] == [
            ("APPROVAL_MISMATCH", "0.85-1", "approval_mismatch.overconfident"),
            ("CONFLICT_PATTERN", "RATE_LIMIT", "conflict_pattern.recurring"),
            ("TOOL_RELIABILITY", "a", "tool_reliability.high"),
            ("TOOL_RELIABILITY", "b", "tool_reliability.low"),
        ]
        for signal in exported:
            assert list(signal) == EXPORT_KEYS
            assert 0.0 <= signal["confidence"] <= 1.0
            assert signal["target_phase"] in (16, 19)
        # One JSONL line each, identical on a second export.
        lines = [orjson.dumps(s) for s in exported]
        assert [orjson.loads(line) for line in lines] == exported
        assert loop_of(outcomes, conflicts=found, resolutions=resolved).export_signals() == \
            exported

    @given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.booleans(),
                              st.sampled_from([M, D, L, None]),
                              st.sampled_from([0.1, 0.55, 0.75, 0.9, 1.0]),
                              st.sampled_from([(), (T.RESOURCE,), (T.ORDERING, T.TIMEOUT)]),
                              st.sampled_from([5.0, 150.0, 2500.0])), max_size=60),
           st.randoms(use_true_random=False))
    def test_export_does_not_depend_on_order(self, rows, rnd):
        outcomes = [outcome(tool, ok=ok, mode=mode, confidence=c, duration_ms=ms)
                    for tool, ok, mode, c, _, ms in rows]
        found = [conflict(f"{i}.{j}", ctype, row[0])
                 for i, row in enumerate(rows) for j, ctype in enumerate(row[4])]
        resolved = [resolution(c, R.DELAY if c.type is T.RESOURCE else R.ABORT)
                    for c in found[::2]]
        a = loop_of(outcomes, conflicts=found, resolutions=resolved)
        for items in (outcomes, found, resolved):
            rnd.shuffle(items)
        b = loop_of(outcomes, conflicts=found, resolutions=resolved)
        assert a.export_signals() == b.export_signals()
        keys = [(s["signal_type"], s["scope"]) for s in a.export_signals()]
        assert keys == sorted(keys)


class TestScopeItems:
    def test_mode_ties_go_to_the_safer_mode_for_best(self):
        loop = loop_of([outcome("t", mode=L, duration_ms=20.0),
                        outcome("t", mode=M, duration_ms=20.0),
                        outcome("t", mode=D, ok=False, duration_ms=0.5)])
        ((order, key, tool, metrics, names),) = loop.scope_items("mode")
        assert (order, key, tool) == ("t", "t", "t")
        assert metrics == {
            "executions": 3, "modes_seen": 3, "best_mode": "MOCK", "best_rate": 1.0,
            "best_executions": 1, "worst_mode": "DRY_RUN", "worst_rate": 0.0,
            "worst_executions": 1, "rate_gap": 1.0, "fastest_mode": "DRY_RUN",
            "fastest_ms": 0.5, "slowest_mode": "MOCK", "slowest_ms": 20.0,
            "latency_ratio": 20.0}  # fastest counted as 1 ms
        assert names["other_modes"] == "DRY_RUN, LIVE"

    def test_mode_ties_go_to_the_riskier_mode_for_worst(self):
        loop = loop_of([outcome("t", mode=m, ok=False) for m in (L, M)])
        metrics = loop.scope_items("mode")[0][3]
        assert (metrics["best_mode"], metrics["worst_mode"]) == ("MOCK", "LIVE")

    def test_tool_items(self):
        loop = loop_of([outcome("t", ok=i < 3, confidence=0.5, duration_ms=10.0 * i)
                        for i in range(4)])
        assert loop.scope_items("tool") == [("t", "t", "t", {
            "executions": 4, "successful": 3, "failed": 1, "success_rate": 0.75,
            "failure_rate": 0.25, "avg_execution_time": 15.0, "mean_confidence": 0.5,
            "calibration_gap": -0.25}, {
            "executions": 4, "successful": 3, "failed": 1, "success_rate": 0.75,
            "failure_rate": 0.25, "avg_execution_time": 15.0, "mean_confidence": 0.5,
            "calibration_gap": -0.25, "tool_name": "t"})]

    def test_unexecuted_calls_are_not_tool_items(self):
        loop = loop_of([outcome("t", mode=None, ok=False, conflicts=("PERMISSION",))],
                       conflicts=[conflict(1, T.PERMISSION, "t")])
        assert loop.scope_items("tool") == []
        assert loop.scope_items("confidence_bucket") == []
        assert [item[1] for item in loop.scope_items("conflict_type")] == ["PERMISSION"]


class TestConfidenceRule:
    @pytest.mark.parametrize("rule, metrics, value", [
        (ConfidenceRule("fixed", value=0.8), {}, 0.8),
        (ConfidenceRule("metric", metric="r"), {"r": 0.925}, 0.925),
        (ConfidenceRule("metric", metric="r"), {"r": -0.2}, 0.0),
        (ConfidenceRule("metric", metric="r", cap=0.9), {"r": 0.95}, 0.9),
        (ConfidenceRule("sample", metric="n", saturate_at=20), {"n": 5}, 0.25),
        (ConfidenceRule("sample", metric="n", saturate_at=20), {"n": 50}, 1.0),
        (ConfidenceRule("sample", metric="n", saturate_at=3), {"n": 1}, 0.3333),
    ])
    def test_compute(self, rule, metrics, value):
        assert rule.compute(metrics) == value


class TestSignalTable:
    def test_default(self):
        table = SignalTable.default()
        assert table.buckets == DEFAULT_BUCKETS == (0.0, 0.5, 0.7, 0.85, 1.0)
        assert table.bucket_labels() == ("0-0.5", "0.5-0.7", "0.7-0.85", "0.85-1")
        assert [(r.id, r.signal.value, r.scope, r.target_phase) for r in table.rules] == [
            ("tool_reliability.high", "TOOL_RELIABILITY", "tool", 16),
            ("tool_reliability.low", "TOOL_RELIABILITY", "tool", 16),
            ("tool_performance.slow", "TOOL_PERFORMANCE", "tool", 19),
            ("tool_performance.mode_latency", "TOOL_PERFORMANCE", "mode", 19),
            ("execution_mode.best", "EXECUTION_MODE_ANALYSIS", "mode", 19),
            ("conflict_pattern.recurring", "CONFLICT_PATTERN", "conflict_type", 19),
            ("approval_mismatch.overconfident", "APPROVAL_MISMATCH", "confidence_bucket", 16),
            ("approval_mismatch.underconfident", "APPROVAL_MISMATCH", "confidence_bucket", 16),
        ]
        assert [r.confidence for r in table.rules[:3]] == [
            ConfidenceRule("metric", metric="success_rate"),
            ConfidenceRule("metric", metric="failure_rate"),
            ConfidenceRule("sample", metric="executions", saturate_at=20.0)]
        assert table.rules[5].confidence == ConfidenceRule("sample", metric="occurrences",
                                                           saturate_at=10.0)
        assert table.source == "buddy/rules/signals.toml"

    def test_user_table_changes_what_is_emitted(self, tmp_path):
        outcomes = [outcome("a", ok=i < 19) for i in range(20)]  # 95 %
        assert [s.rule for s in loop_of(outcomes).analyze()] == ["tool_reliability.high"]
        (tmp_path / "signals.toml").write_text(table_with(
            '"success_rate", op = "gt", value = 0.90 }', '"success_rate", op = "gt", '
            'value = 0.97 }'))
        stricter = SignalTable.from_dir(tmp_path)
        assert loop_of(outcomes, stricter).analyze() == []
        assert stricter.digest != SignalTable.default().digest

    def test_user_table_new_row_and_buckets(self):
        text = ('confidence_buckets = [0.0, 0.9, 1.0]\n'
                '[[row]]\nid = "live_heavy"\nsignal = "EXECUTION_MODE_ANALYSIS"\n'
                'scope = "mode"\n'
                'when = { all = [ { metric = "best_mode", op = "eq", value = "LIVE" } ] }\n'
                'then = { target_phase = 19, insight = "{tool_name}: {other_modes} lag", '
                'recommended_action = "keep {best_mode}", '
                'confidence = { method = "fixed", value = 0.5, cap = 0.4 } }\n')
        table = SignalTable.from_toml(text=text)
        loop = loop_of([outcome("x", mode=L), outcome("x", mode=M, ok=False),
                        outcome("x", mode=D, ok=False)], table)
        assert [(s.insight, s.recommended_action, s.confidence) for s in loop.analyze()] == [
            ("x: MOCK, DRY_RUN lag", "keep LIVE", 0.4)]
        assert [b["bucket"] for b in loop.calibration()] == ["0.9-1"]

    @pytest.mark.parametrize("old, new, message", [
        ('confidence = { method = "metric", metric = "success_rate" }',
         'confidence = { method = "guess" }',
         "s.toml:39: row[tool_reliability.high].then.confidence.method: must be one of fixed, "
         "metric, sample (got 'guess')"),
        ('confidence = { method = "metric", metric = "success_rate" }',
         'confidence = { method = "metric", metric = "occurrences" }',
         "s.toml:39: row[tool_reliability.high].then.confidence.metric: must be a numeric "
         "metric of the row's scope: avg_execution_time, calibration_gap, executions, failed, "
         "failure_rate, mean_confidence, success_rate, successful (got 'occurrences')"),
        ('confidence = { method = "metric", metric = "success_rate" }',
         'confidence = { method = "metric" }',
         "s.toml:39: row[tool_reliability.high].then.confidence.metric: is required"),
        ('confidence = { method = "metric", metric = "success_rate" }',
         'confidence = { method = "sample", metric = "success_rate", saturate_at = 5 }',
         "s.toml:39: row[tool_reliability.high].then.confidence.metric: must be a count "
         "metric of the row's scope: executions, failed, successful (got 'success_rate')"),
        ('confidence = { method = "metric", metric = "success_rate" }',
         'confidence = { method = "sample", saturate_at = 0 }',
         "s.toml:39: row[tool_reliability.high].then.confidence.saturate_at: must be > 0 "
         "(got 0.0)"),
        ('confidence = { method = "metric", metric = "success_rate" }',
         'confidence = { method = "metric", metric = "success_rate", cap = 1.5 }',
         "s.toml:39: row[tool_reliability.high].then.confidence.cap: must be in (0, 1] "
         "(got 1.5)"),
        ('confidence = { method = "metric", metric = "success_rate" }',
         'confidence = { method = "metric", metric = "success_rate", value = 1.0 }',
         "s.toml:39: row[tool_reliability.high].then.confidence.value: unknown key for "
         "method 'metric'"),
        ('confidence = { method = "fixed", value = 0.8 } }\n\n[[row]]',
         'confidence = { method = "fixed", value = 8 } }\n\n[[row]]',
         "s.toml:89: row[approval_mismatch.overconfident].then.confidence.value: must be in "
         "[0, 1] (got 8.0)"),
        ('confidence = { method = "metric", metric = "success_rate" }',
         'confidence = "high"',
         "s.toml:39: row[tool_reliability.high].then.confidence: must be a table "
         "(got 'high')"),
        ("then = { target_phase = 16, insight = \"Tool achieved",
         "then = { target_phase = 17, insight = \"Tool achieved",
         "s.toml:39: row[tool_reliability.high].then.target_phase: must be one of 16, 19 "
         "(got 17)"),
        ('signal = "CONFLICT_PATTERN"', 'signal = "CONFLICT_STORM"',
         "s.toml:77: row[conflict_pattern.recurring].signal: must be one of TOOL_RELIABILITY, "
         "TOOL_PERFORMANCE, EXECUTION_MODE_ANALYSIS, CONFLICT_PATTERN, APPROVAL_MISMATCH "
         "(got 'CONFLICT_STORM')"),
        ('scope = "conflict_type"', 'scope = "agent"',
         "s.toml:78: row[conflict_pattern.recurring].scope: must be one of tool, mode, "
         "conflict_type, confidence_bucket (got 'agent')"),
        ('insight = "Tool achieved {success_rate:.0%}', 'insight = "Tool achieved '
         '{success_rate.__class__.__base__.__subclasses__}',
         "s.toml:39: row[tool_reliability.high].then.insight: field "
         "{success_rate.__class__.__base__.__subclasses__} must be a plain name "
         "(no attribute or index access)"),
        ('recommended_action = "Consider escalating {tool_name} to LIVE execution mode"',
         'recommended_action = "Escalate {conflict_type}"',
         "s.toml:39: row[tool_reliability.high].then.recommended_action: unknown field "
         "{conflict_type} (allowed: avg_execution_time, calibration_gap, executions, failed, "
         "failure_rate, mean_confidence, success_rate, successful, tool_name)"),
        ('recommended_action = "Consider escalating {tool_name} to LIVE execution mode"',
         'recommended_action = "{tool_name:.2f}"',
         "s.toml:39: row[tool_reliability.high].then.recommended_action: field {tool_name}: "
         "format spec '.2f' does not apply to a str"),
        ('{ metric = "modes_seen", op = "ge", value = 2 }, { metric = "best_rate"',
         '{ metric = "best_mode", op = "gt", value = "LIVE" }, { metric = "best_rate"',
         "s.toml:70: row[execution_mode.best].when.all[0].op: best_mode is not a number: "
         "must be eq or ne (got 'gt')"),
        ("confidence_buckets = [0.0, 0.5, 0.7, 0.85, 1.0]",
         "confidence_buckets = [0.0, 0.7, 0.5, 1.0]",
         "s.toml:30: signals.confidence_buckets[2]: must be above the edge before it "
         "(0.5 <= 0.7)"),
        ("confidence_buckets = [0.0, 0.5, 0.7, 0.85, 1.0]",
         "confidence_buckets = [0.1, 1.0]",
         "s.toml:30: signals.confidence_buckets: must run from 0.0 to 1.0 (got 0.1 to 1)"),
        ("confidence_buckets = [0.0, 0.5, 0.7, 0.85, 1.0]",
         "confidence_buckets = [0.0, \"half\", 1.0]",
         "s.toml:30: signals.confidence_buckets[1]: must be a number (got 'half')"),
        ("confidence_buckets = [0.0, 0.5, 0.7, 0.85, 1.0]",
         "confidence_buckets = [1.0]",
         "s.toml:30: signals.confidence_buckets: must hold 2 to 21 edges (got 1)"),
    ])
    def test_malformed(self, old, new, message):
        with pytest.raises(RuleTableError) as info:
            SignalTable.from_toml(text=table_with(old, new), source="s.toml")
        assert info.value.problems == [message]

    def test_several_problems_reported_together(self):
        text = table_with('signal = "CONFLICT_PATTERN"', 'signal = "X"').replace(
            "target_phase = 16", "target_phase = 1")
        with pytest.raises(RuleTableError) as info:
            SignalTable.from_toml(text=text, source="s.toml")
        assert len(info.value.problems) == 5  # four rows target phase 1, one bad signal
        assert str(info.value).endswith("(and 4 more problem(s))")
