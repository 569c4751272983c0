"""Tests for the monitor: metrics, health score and tiers, anomalies, history."""

from __future__ import annotations

import math
from importlib import resources

import pytest
from hypothesis import given
from hypothesis import strategies as st

from buddy.engine.orchestration._monitor import Monitor, iso
from buddy.engine.orchestration._plans import ExecutionOutcome
from buddy.rules.base._values import ExecutionMode
from buddy.rules.base.errors import InputError, RuleTableError
from buddy.rules.tables._monitoring import METRICS, Anomaly, AnomalyTable, HealthStatus, HealthTable
from tests.helpers import ManualClock

M, D, L = ExecutionMode.MOCK, ExecutionMode.DRY_RUN, ExecutionMode.LIVE
EXCELLENT, GOOD, FAIR, POOR = (HealthStatus.EXCELLENT, HealthStatus.GOOD, HealthStatus.FAIR,
                               HealthStatus.POOR)
T0 = 1_705_329_025.0  # 2024-01-15T14:30:25Z
ANOMALIES_TEXT = resources.files("buddy.rules").joinpath("anomalies.toml").read_text()
HEALTH_TEXT = resources.files("buddy.rules").joinpath("health.toml").read_text()

_n = iter(range(1_000_000))


def outcome(tool: str = "form_fill", ok: bool = True, mode: ExecutionMode | None = M,
            confidence: float = 0.75, duration_ms: float = 100.0, **kw) -> ExecutionOutcome:
    n = next(_n)
    return ExecutionOutcome(f"c{n}", "p1", "agent-1", tool, "LOW", confidence, mode, mode,
                            ok=ok, duration_ms=duration_ms, **kw)


def monitor_of(outcomes, **kw) -> Monitor:
    monitor = Monitor(clock=kw.pop("clock", ManualClock(T0)), **kw)
    for o in outcomes:
        monitor.record(o)
    return monitor


def hand_computed() -> list[ExecutionOutcome]:
    """8 executions: 6 succeed, 2 rolled back, 2 in LIVE, 2 in a conflict, confidence 0.875
    each; 4 needed approval: 2 granted, 1 denied, 1 pending.

    success 75 %, rollback 25 %, conflict 25 %, live 25 %, drift |7 - 6| / 8 = 0.125,
    approval 50 %; health = 100 * (.3 * .75 + .15 * .75 + .15 * .75 + .1 * .875 + .3 * .5)
    = 100 * (.225 + .1125 + .1125 + .0875 + .15) = 68.75 -> FAIR.
    """
    c = 0.875
    return [
        outcome(ok=True, confidence=c, approval="granted"),
        outcome(ok=True, confidence=c, approval="granted", mode=L),
        outcome(ok=True, confidence=c, approval="denied"),
        outcome(ok=True, confidence=c, approval="pending"),
        outcome(ok=True, confidence=c, conflicts=("RESOURCE",), resolution="DELAY"),
        outcome(ok=True, confidence=c, conflicts=("RATE_LIMIT",), resolution="DELAY"),
        outcome(ok=False, confidence=c, rolled_back=True, mode=L, duration_ms=200.0),
        outcome(ok=False, confidence=c, rolled_back=True, duration_ms=0.0),
    ]


class TestMonitor:
    """The Phase 24 monitor tests."""

    def test_monitor_initialization(self):
        monitor = Monitor(clock=ManualClock(T0))
        assert monitor.metrics() == {
            "tool_success_rate": 100.0, "execution_latency_ms": 0.0, "rollback_frequency": 0.0,
            "conflict_rate": 0.0, "live_execution_ratio": 0.0, "confidence_drift": 0.0,
            "approval_rate": 100.0, "system_health_score": 100.0, "executions": 0, "calls": 0}
        assert monitor.tool_metrics() == {}
        assert monitor.detect_anomalies() == []
        assert monitor.metric_history == ()
        assert monitor.health_status() is EXCELLENT
        assert monitor.anomaly_table == AnomalyTable.default()
        assert monitor.health_table == HealthTable.default()

    def test_metric_tracking(self):
        monitor = monitor_of(hand_computed())
        assert monitor.metrics() == {
            "tool_success_rate": 75.0, "execution_latency_ms": 100.0,
            "rollback_frequency": 25.0, "conflict_rate": 25.0, "live_execution_ratio": 25.0,
            "confidence_drift": 0.125, "approval_rate": 50.0, "system_health_score": 68.75,
            "executions": 8, "calls": 8}

    def test_health_score_calculation(self):
        monitor = monitor_of(hand_computed())
        assert monitor.calculate_health_score() == 68.75
        assert monitor.health_status() is FAIR

    def test_health_status_categorization(self):
        monitor = Monitor()
        below = lambda x: math.nextafter(x, -math.inf)  # noqa: E731
        assert monitor.categorize(100.0) is EXCELLENT
        assert monitor.categorize(90.0) is EXCELLENT
        assert monitor.categorize(below(90.0)) is GOOD
        assert monitor.categorize(75.0) is GOOD
        assert monitor.categorize(below(75.0)) is FAIR
        assert monitor.categorize(60.0) is FAIR
        assert monitor.categorize(below(60.0)) is POOR
        assert monitor.categorize(0.0) is POOR

    def test_anomaly_detection(self):
        # flaky: 2 of 6 succeed (33 %) and 3 are rolled back; solid: 2 of 2 succeed.
        outcomes = [outcome("flaky", ok=i < 2, rolled_back=i >= 3, confidence=0.5)
                    for i in range(6)]
        outcomes += [outcome("solid", ok=True, confidence=0.5) for _ in range(2)]
        monitor = monitor_of(outcomes)
        # system: 4 of 8 succeed, 3 of 8 rolled back (37.5 %), drift |4 - 4| / 8 = 0.
        assert monitor.detect_anomalies() == [
            Anomaly("repeated_failures", 8, "tool", "flaky", "tool_success_rate",
                    100.0 * 2 / 6, 50.0, "flaky succeeded in 33% of 6 runs",
                    "Investigate flaky's failures and keep it in MOCK until fixed"),
            Anomaly("high_rollback", 6, "system", None, "rollback_frequency", 37.5, 30.0,
                    "38% of runs were rolled back",
                    "Reduce tool execution scope or add approval gates"),
        ]

    def test_confidence_drift_detection(self):
        # 5 runs at confidence 1.0: drift = (5 - successes) / 5.
        at_threshold = monitor_of([outcome("t", ok=i < 3, confidence=1.0) for i in range(5)])
        assert at_threshold.metrics()["confidence_drift"] == 0.4
        assert at_threshold.detect_anomalies() == []  # 0.4 is not > 0.4
        drifted = monitor_of([outcome("t", ok=i < 3, confidence=1.0) for i in range(4)]
                             + [outcome("u", ok=False, confidence=0.875) for _ in range(4)])
        # confidence 7.5 over 8 runs, 3 succeed: drift (7.5 - 3) / 8 = 0.5625
        unsafe = [a for a in drifted.detect_anomalies() if a.type == "unsafe_escalation"]
        assert len(unsafe) == 1
        assert unsafe[0].severity == 7
        assert unsafe[0].value == 0.5625
        assert unsafe[0].threshold == 0.4
        assert unsafe[0].message == ("Confidence drift 0.56: predicted confidence no longer "
                                     "matches outcomes")

    def test_metrics_summary(self):
        clock = ManualClock(T0)
        monitor = monitor_of(hand_computed(), clock=clock)
        monitor.snapshot()
        assert monitor.metrics_summary() == {
            "current_metrics": {
                "tool_success_rate": 75.0, "execution_latency_ms": 100.0,
                "rollback_frequency": 25.0, "conflict_rate": 25.0, "live_execution_ratio": 25.0,
                "confidence_drift": 0.125, "approval_rate": 50.0, "system_health_score": 68.75},
            "health_score": 68.75, "health_status": "FAIR", "anomaly_count": 0,
            "anomaly_types": [], "executions": 8, "calls": 8, "tools": 1, "snapshots": 1,
            "timestamp": "2024-01-15T14:30:25Z"}

    def test_metric_history_tracking(self):
        clock = ManualClock(T0)
        monitor = Monitor(clock=clock)
        for i in range(5):
            monitor.record(outcome("t", ok=i % 2 == 0))
            monitor.snapshot()
            clock.advance(60)
        assert len(monitor.metric_history) == 5
        assert monitor.history("tool_success_rate") == [
            ("2024-01-15T14:30:25Z", 100.0), ("2024-01-15T14:31:25Z", 50.0),
            ("2024-01-15T14:32:25Z", 100.0 * 2 / 3), ("2024-01-15T14:33:25Z", 50.0),
            ("2024-01-15T14:34:25Z", 60.0)]
        assert [s.ts for s in monitor.metric_history] == [T0 + 60 * i for i in range(5)]
        assert monitor.history("executions", tool="t") == [
            (iso(T0 + 60 * i), i + 1) for i in range(5)]
        assert monitor.history("executions", tool="other") == []
        with pytest.raises(KeyError):
            monitor.history("no_such_metric")

    def test_history_limit_keeps_the_latest_snapshots(self):
        clock = ManualClock(T0)
        monitor = Monitor(clock=clock, history_limit=2)
        for i in range(5):
            monitor.record(outcome("t", ok=i % 2 == 0))
            monitor.snapshot()
            clock.advance(60)
        assert [s.ts for s in monitor.metric_history] == [T0 + 180, T0 + 240]
        assert monitor.history("executions", tool="t") == [(iso(T0 + 180), 4),
                                                           (iso(T0 + 240), 5)]
        assert monitor.metrics_summary()["snapshots"] == 5  # taken, kept or not
        none = Monitor(clock=clock, history_limit=0)
        none.snapshot()
        assert (none.metric_history, none.metrics_summary()["snapshots"]) == ((), 1)

    @pytest.mark.parametrize("limit", [-1, 1.5, True, "3"])
    def test_history_limit_is_a_whole_number(self, limit):
        with pytest.raises(InputError, match=r"^history_limit must be a whole number >= 0 "
                                             r"or None \(got "):
            Monitor(history_limit=limit)

    def test_history_snapshots_are_frozen(self):
        monitor = Monitor(clock=ManualClock(T0))
        first = monitor.snapshot()
        monitor.record(outcome(ok=False))
        assert first.metrics["tool_success_rate"] == 100.0
        assert monitor.snapshot().metrics["tool_success_rate"] == 0.0


class TestMetrics:
    def test_aborted_calls_count_for_conflicts_only(self):
        monitor = monitor_of([
            outcome(ok=True),
            outcome(ok=False, mode=None, conflicts=("PERMISSION",), resolution="ABORT"),
            outcome(ok=False, mode=None, conflicts=("RESOURCE", "ORDERING"), resolution="ABORT"),
            outcome(ok=True, conflicts=("RESOURCE",), resolution="DELAY"),
        ])
        m = monitor.metrics()
        assert (m["executions"], m["calls"]) == (2, 4)
        assert m["tool_success_rate"] == 100.0
        assert m["conflict_rate"] == 75.0  # 3 of 4 calls, each counted once

    def test_approval_rate_counts_denied_and_pending_against(self):
        monitor = monitor_of([outcome(approval="granted"), outcome(approval="denied", ok=False,
                                                                   mode=None),
                              outcome(approval="pending", mode=None, ok=False), outcome()])
        assert monitor.metrics()["approval_rate"] == 100.0 / 3

    def test_latency_and_live_ratio(self):
        monitor = monitor_of([outcome(mode=L, duration_ms=30.0),
                              outcome(mode=D, duration_ms=60.0),
                              outcome(mode=M, duration_ms=90.0),
                              outcome(mode=L, duration_ms=20.0)])
        assert monitor.metrics()["execution_latency_ms"] == 50.0
        assert monitor.metrics()["live_execution_ratio"] == 50.0

    def test_drift_is_absolute(self):
        under = monitor_of([outcome(ok=True, confidence=0.25) for _ in range(4)])
        assert under.metrics()["confidence_drift"] == 0.75

    def test_per_tool(self):
        monitor = monitor_of([outcome("b", ok=False), outcome("a"), outcome("b")])
        tools = monitor.tool_metrics()
        assert list(tools) == ["a", "b"]
        assert tools["a"]["tool_success_rate"] == 100.0
        assert tools["b"]["tool_success_rate"] == 50.0
        assert tools["b"]["executions"] == 2

    def test_system_health_document(self):
        monitor = monitor_of(hand_computed(), clock=ManualClock(T0))
        assert monitor.system_health() == {
            "health_assessment": "FAIR",
            "health_score": 68.75,
            "anomalies": [],
            "metrics": {
                "tool_success_rate": 75.0, "execution_latency_ms": 100.0,
                "rollback_frequency": 25.0, "conflict_rate": 25.0, "live_execution_ratio": 25.0,
                "confidence_drift": 0.125, "approval_rate": 50.0, "system_health_score": 68.75},
            "timestamp": "2024-01-15T14:30:25Z"}
        assert list(monitor.system_health()["metrics"]) == list(METRICS)

    def test_system_health_rounds_and_lists_anomalies(self):
        monitor = monitor_of([outcome("t", ok=i == 0, confidence=0.9) for i in range(6)])
        doc = monitor.system_health()
        assert doc["metrics"]["tool_success_rate"] == 16.67
        assert doc["metrics"]["confidence_drift"] == 0.7333
        assert [a["type"] for a in doc["anomalies"]] == ["unsafe_escalation",
                                                        "repeated_failures"]
        assert doc["anomalies"][1] == {
            "type": "repeated_failures", "severity": 8, "scope": "tool", "tool": "t",
            "metric": "tool_success_rate", "value": 16.67, "threshold": 50.0,
            "message": "t succeeded in 17% of 6 runs",
            "recommended_action": "Investigate t's failures and keep it in MOCK until fixed"}

    @given(st.lists(st.tuples(st.sampled_from(["a", "b"]), st.booleans(),
                              st.sampled_from([M, D, L, None]),
                              st.floats(0.0, 1.0), st.booleans(),
                              st.sampled_from([None, "granted", "denied", "pending"]),
                              st.booleans()), max_size=30),
           st.randoms(use_true_random=False))
    def test_order_free_and_in_range(self, rows, rnd):
        outcomes = [outcome(tool, ok=ok, mode=mode, confidence=c, rolled_back=rb,
                            approval=ap, conflicts=("RESOURCE",) if cf else ())
                    for tool, ok, mode, c, rb, ap, cf in rows]
        shuffled = list(outcomes)
        rnd.shuffle(shuffled)
        a, b = monitor_of(outcomes), monitor_of(shuffled)
        assert a.metrics() == b.metrics()  # exactly: sums are integers
        assert a.tool_metrics() == b.tool_metrics()
        assert a.system_health() == b.system_health()
        m = a.metrics()
        for key in ("tool_success_rate", "rollback_frequency", "conflict_rate",
                    "live_execution_ratio", "approval_rate", "system_health_score"):
            assert 0.0 <= m[key] <= 100.0
        assert 0.0 <= m["confidence_drift"] <= 1.0


class TestHealthTable:
    @given(st.floats(0.0, 100.0), st.floats(0.0, 100.0))
    def test_tiers_are_monotone(self, x, y):
        table = HealthTable.default()
        order = list(HealthStatus)  # best first
        low, high = sorted((x, y))
        assert order.index(table.tier(low)) >= order.index(table.tier(high))

    def test_default(self):
        table = HealthTable.default()
        assert table.weights == {"success_rate": 0.30, "rollback": 0.15, "conflict": 0.15,
                                 "confidence_drift": 0.10, "approval_rate": 0.30}
        assert [s for s, _ in table.tiers] == [EXCELLENT, GOOD, FAIR, POOR]
        assert table.source == "buddy/rules/health.toml"

    def test_terms_clamped(self):
        assert HealthTable.terms({"tool_success_rate": 120.0, "rollback_frequency": -5.0,
                                  "conflict_rate": 50.0, "confidence_drift": 2.0,
                                  "approval_rate": 40.0}) == {
            "success_rate": 1.0, "rollback": 1.0, "conflict": 0.5, "confidence_drift": 0.0,
            "approval_rate": 0.4}

    def test_user_weights_and_tiers(self, tmp_path):
        text = (HEALTH_TEXT.replace("success_rate = 0.30", "success_rate = 0.50")
                .replace("approval_rate = 0.30", "approval_rate = 0.10")
                .replace("value = 75.0", "value = 70.0"))
        (tmp_path / "health.toml").write_text(text)
        assert HealthTable.from_dir(tmp_path) != HealthTable.default()
        monitor = monitor_of(hand_computed(), health=HealthTable.from_dir(tmp_path))
        # 100 * (.5 * .75 + .15 * .75 + .15 * .75 + .1 * .875 + .1 * .5) = 73.75
        assert monitor.calculate_health_score() == 73.75
        assert monitor.health_status() is GOOD  # GOOD from 70 in this table

    @pytest.mark.parametrize("old, new, message", [
        ("success_rate = 0.30", "success_rate = 0.25",
         "h.toml:15: health.weights: must sum to 1 (got 0.95)"),
        ("success_rate = 0.30\n", "",
         "h.toml:15: health.weights.success_rate: is required"),
        ("success_rate = 0.30", "success_rate = 0.30\nlatency = 0.0",
         "h.toml:17: health.weights.latency: unknown key"),
        ("rollback = 0.15", "rollback = 1.15",
         "h.toml:17: health.weights.rollback: must be in [0, 1] (got 1.15)"),
        ('rollback = 0.15', 'rollback = "high"',
         "h.toml:17: health.weights.rollback: must be a number (got 'high')"),
        ('tier = "GOOD"', 'tier = "OK"',
         "h.toml:35: row[good].then.tier: must be one of EXCELLENT, GOOD, FAIR, POOR "
         "(got 'OK')"),
        ('tier = "GOOD"', 'tier = "EXCELLENT"',
         "h.toml:35: row[good].then.tier: EXCELLENT is already the tier of row[excellent]"),
        ('id = "poor"\nwhen = {}',
         'id = "poor"\nwhen = { all = [ { metric = "health_score", op = "ge", value = 0.0 } ] }',
         "h.toml:44: row[poor].when: the last tier must always hold (`when = {}`) so that "
         "every score gets a tier"),
        ('metric = "health_score", op = "ge", value = 60.0',
         'metric = "success_rate", op = "ge", value = 60.0',
         "h.toml:39: row[fair].when.all[0].metric: must be one of health_score "
         "(got 'success_rate')"),
    ])
    def test_malformed(self, old, new, message):
        assert HEALTH_TEXT.count(old) == 1, old
        with pytest.raises(RuleTableError) as info:
            HealthTable.from_toml(text=HEALTH_TEXT.replace(old, new), source="h.toml")
        assert info.value.problems == [message]

    def test_missing_weights(self):
        text = HEALTH_TEXT.split("[weights]")[0] + "[[row]]" + HEALTH_TEXT.split("[[row]]", 1)[1]
        with pytest.raises(RuleTableError) as info:
            HealthTable.from_toml(text=text, source="h.toml")
        assert info.value.problems == ["h.toml: health.weights: is required"]

    def test_always_row_before_the_last(self):
        text = HEALTH_TEXT.replace(
            'when = { all = [ { metric = "health_score", op = "ge", value = 90.0 } ] }',
            "when = {}")
        with pytest.raises(RuleTableError) as info:
            HealthTable.from_toml(text=text, source="h.toml")
        assert info.value.problems == ["h.toml:29: row[excellent].when: always holds, so the "
                                       "rows after it are never reached (put it last)"]


class TestAnomalyTable:
    def test_default(self):
        table = AnomalyTable.default()
        assert [(r.id, r.scope, r.severity, r.condition.metric, r.condition.op.value,
                 r.condition.value, r.min_executions) for r in table.rules] == [
            ("unsafe_escalation", "system", 7, "confidence_drift", "gt", 0.4, 5),
            ("repeated_failures", "tool", 8, "tool_success_rate", "lt", 50.0, 5),
            ("high_rollback", "system", 6, "rollback_frequency", "gt", 30.0, 5),
            ("high_conflict", "system", 8, "conflict_rate", "gt", 50.0, 0),
        ]

    def test_one_failure_is_not_an_anomaly(self):
        monitor = monitor_of([outcome("t", ok=False, confidence=0.9, rolled_back=True)])
        assert monitor.metrics()["tool_success_rate"] == 0.0
        assert monitor.detect_anomalies() == []
        for _ in range(4):
            monitor.record(outcome("t", ok=False, confidence=0.9, rolled_back=True))
        assert [a.type for a in monitor.detect_anomalies()] == [
            "unsafe_escalation", "repeated_failures", "high_rollback"]

    def test_high_conflict_counts_calls(self):
        aborted = [outcome(ok=False, mode=None, conflicts=("RESOURCE",), resolution="ABORT")
                   for _ in range(4)]
        monitor = monitor_of(aborted)
        assert monitor.detect_anomalies() == []  # 4 calls: under the `calls >= 5` condition
        monitor.record(outcome())
        assert monitor.detect_anomalies() == [
            Anomaly("high_conflict", 8, "system", None, "conflict_rate", 80.0, 50.0,
                    "80% of calls were caught in a conflict",
                    "Review tool dependencies and agent assignments")]

    def test_user_table_overrides_the_default(self, tmp_path):
        outcomes = [outcome("crm", ok=i < 7) for i in range(10)]  # 70 % success
        assert monitor_of(outcomes).detect_anomalies() == []
        (tmp_path / "anomalies.toml").write_text(ANOMALIES_TEXT.replace(
            '"tool_success_rate", op = "lt", value = 50.0', '"tool_success_rate", op = "lt", '
            'value = 80.0'))
        monitor = monitor_of(outcomes, anomalies=AnomalyTable.from_dir(tmp_path))
        assert [(a.type, a.tool, a.value, a.threshold) for a in monitor.detect_anomalies()] == [
            ("repeated_failures", "crm", 70.0, 80.0)]
        assert monitor.anomaly_table.source == str(tmp_path / "anomalies.toml")
        assert monitor.anomaly_table.digest != AnomalyTable.default().digest

    def test_user_row_with_any(self):
        text = ('[[row]]\nid = "slow_or_live"\nscope = "tool"\nmin_executions = 1\n'
                'when = { any = [ { metric = "execution_latency_ms", op = "gt", value = 500.0 },'
                ' { metric = "live_execution_ratio", op = "ge", value = 50.0 } ] }\n'
                'then = { severity = 3, message = "{tool}: {execution_latency_ms:.0f} ms" }\n')
        monitor = monitor_of([outcome("a", duration_ms=900.0), outcome("b", mode=L)],
                             anomalies=AnomalyTable.from_toml(text=text))
        assert [(a.tool, a.message, a.recommended_action)
                for a in monitor.detect_anomalies()] == [("a", "a: 900 ms", ""),
                                                         ("b", "b: 100 ms", "")]

    @pytest.mark.parametrize("old, new, message", [
        ('scope = "system"\nmin_executions = 5\nwhen = { all = [ { metric = "confidence_drift"',
         'scope = "agent"\nmin_executions = 5\nwhen = { all = [ { metric = "confidence_drift"',
         "a.toml:27: row[unsafe_escalation].scope: must be one of system, tool (got 'agent')"),
        ("severity = 7", "severity = 11",
         "a.toml:30: row[unsafe_escalation].then.severity: must be <= 10 (got 11)"),
        ("severity = 7", 'severity = "high"',
         "a.toml:30: row[unsafe_escalation].then.severity: must be a whole number "
         "(got 'high')"),
        ('"confidence_drift", op = "gt", value = 0.4', '"confidence_drift", op = ">", value = 0.4',
         "a.toml:29: row[unsafe_escalation].when.all[0].op: must be one of ge, gt, le, lt, eq, "
         "ne (got '>')"),
        ('"confidence_drift", op = "gt", value = 0.4', '"drift", op = "gt", value = 0.4',
         "a.toml:29: row[unsafe_escalation].when.all[0].metric: must be one of approval_rate, "
         "calls, confidence_drift, conflict_rate, execution_latency_ms, executions, "
         "live_execution_ratio, rollback_frequency, system_health_score, tool_success_rate "
         "(got 'drift')"),
        ('"tool_success_rate", op = "lt", value = 50.0', '"tool_success_rate", op = "lt", '
         'value = "50%"',
         "a.toml:36: row[repeated_failures].when.all[0].value: must be a number (got '50%')"),
        ('id = "high_rollback"\nscope = "system"\nmin_executions = 5\n',
         'id = "high_rollback"\nscope = "system"\n',
         "a.toml:39: row[high_rollback].min_executions: is required"),
        ('id = "high_rollback"\nscope = "system"\nmin_executions = 5\n',
         'id = "high_rollback"\nscope = "system"\nmin_executions = -1\n',
         "a.toml:42: row[high_rollback].min_executions: must be >= 0 (got -1)"),
        ('id = "high_rollback"', 'id = "unsafe_escalation"',
         "a.toml:40: row[unsafe_escalation].id: duplicate id (first at line 25)"),
        ('message = "{rollback_frequency:.0f}% of runs were rolled back"',
         'message = "{rollback_frequency.__class__.__init__.__globals__}"',
         "a.toml:44: row[high_rollback].then.message: field "
         "{rollback_frequency.__class__.__init__.__globals__} must be a plain name "
         "(no attribute or index access)"),
        ('message = "{rollback_frequency:.0f}% of runs were rolled back"',
         'message = "{tool} rolled back"',  # {tool} exists in "tool" rows only
         "a.toml:44: row[high_rollback].then.message: unknown field {tool} (allowed: "
         "approval_rate, calls, confidence_drift, conflict_rate, execution_latency_ms, "
         "executions, live_execution_ratio, rollback_frequency, system_health_score, "
         "tool_success_rate)"),
        ('recommended_action = "Review tool dependencies and agent assignments"',
         'recommended_action = "{calls[0]}"',
         "a.toml:51: row[high_conflict].then.recommended_action: field {calls[0]} must be a "
         "plain name (no attribute or index access)"),
        ('when = { all = [ { metric = "rollback_frequency", op = "gt", value = 30.0 } ] }',
         "when = {}",
         "a.toml:43: row[high_rollback].when: must hold at least one condition"),
    ])
    def test_malformed(self, old, new, message):
        assert ANOMALIES_TEXT.count(old) == 1, old
        with pytest.raises(RuleTableError) as info:
            AnomalyTable.from_toml(text=ANOMALIES_TEXT.replace(old, new), source="a.toml")
        assert info.value.problems == [message]

    def test_wrong_file(self):
        with pytest.raises(RuleTableError) as info:
            AnomalyTable.from_toml(text=HEALTH_TEXT, source="health.toml")
        assert ("health.toml:12: anomalies.table: must be 'anomalies' (got 'health')"
                in info.value.problems)
