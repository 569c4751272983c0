"""Tests for buddy.rules.tables._signals: the signal table's rows, confidence rules and buckets.

How the feedback loop uses the table is tested in tests/engine/orchestration/test_feedback.py.
"""

from __future__ import annotations

from importlib import resources

import pytest

from buddy.rules.base.errors import RuleTableError
from buddy.rules.tables._signals import (
    DEFAULT_BUCKETS,
    SCOPES,
    ConfidenceRule,
    SignalFile,
    SignalTable,
)

SIGNALS = resources.files("buddy.rules").joinpath("signals.toml").read_text("utf-8")


def problems_of(text: str) -> list[str]:
    with pytest.raises(RuleTableError) as info:
        SignalTable.from_toml(text=text, source="s.toml")
    return info.value.problems


def row(scope: str, when: str, confidence: str, insight: str = "x") -> str:
    return (f'[[row]]\nid = "r"\nsignal = "TOOL_RELIABILITY"\nscope = "{scope}"\n'
            f"when = {{ all = [ {when} ] }}\n"
            f'then = {{ target_phase = 16, insight = "{insight}", recommended_action = "y", '
            f"confidence = {confidence} }}\n")


class TestConfidenceRule:
    @pytest.mark.parametrize(("rule", "metrics", "confidence"), [
        (ConfidenceRule("fixed", value=0.8), {}, 0.8),
        (ConfidenceRule("metric", metric="r"), {"r": 1.7}, 1.0),
        (ConfidenceRule("sample", metric="n", saturate_at=8.0, cap=0.5), {"n": 2}, 0.25),
        (ConfidenceRule("sample", metric="n", saturate_at=8.0, cap=0.2), {"n": 2}, 0.2),
    ])
    def test_compute(self, rule, metrics, confidence):
        assert rule.compute(metrics) == confidence

    @pytest.mark.parametrize(("kwargs", "message"), [
        ({"method": "guess"}, "method: must be one of fixed, metric, sample (got 'guess')"),
        ({"method": "fixed"}, "value: is required"),
        ({"method": "metric"}, "metric: is required"),
        ({"method": "sample", "metric": "n"}, "saturate_at: is required"),
        ({"method": "metric", "metric": "n", "value": 0.5},
         "value: unknown key for method 'metric'"),
        ({"method": "fixed", "value": 1.5}, "value: must be in [0, 1] (got 1.5)"),
        ({"method": "sample", "saturate_at": 0.0}, "saturate_at: must be > 0 (got 0.0)"),
        ({"method": "fixed", "value": 0.5, "cap": 0.0}, "cap: must be in (0, 1] (got 0.0)"),
    ])
    def test_built_in_code(self, kwargs, message):
        with pytest.raises(RuleTableError) as info:
            ConfidenceRule(**kwargs)
        assert str(info.value) == message

    def test_every_key_problem_at_once(self):
        assert problems_of(row("tool", '{ metric = "executions", op = "ge", value = 1 }',
                               '{ method = "fixed", metric = "x", saturate_at = 2.0 }')) == [
            "s.toml:6: row[r].then.confidence.metric: unknown key for method 'fixed'",
            "s.toml:6: row[r].then.confidence.saturate_at: unknown key for method 'fixed'",
            "s.toml:6: row[r].then.confidence.value: is required"]

    @pytest.mark.parametrize(("scope", "metric"), [
        ("tool", "executions"), ("mode", "executions"), ("confidence_bucket", "executions"),
        ("conflict_type", "occurrences")])
    def test_sample_counts_the_scopes_executions_or_occurrences(self, scope, metric):
        table = SignalTable.from_toml(text=row(
            scope, f'{{ metric = "{metric}", op = "ge", value = 1 }}',
            '{ method = "sample", saturate_at = 4 }'))
        assert table.rules[0].confidence == ConfidenceRule("sample", metric=metric,
                                                           saturate_at=4.0)

    def test_metric_of_the_rows_scope(self):
        assert problems_of(row("conflict_type", '{ metric = "occurrences", op = "ge", '
                               'value = 1 }', '{ method = "metric", metric = "success_rate" }')
                           ) == [
            "s.toml:6: row[r].then.confidence.metric: must be a numeric metric of the row's "
            "scope: calls, occurrences, resolved, share, tools (got 'success_rate')"]


class TestRows:
    def test_conditions_and_templates_of_the_rows_scope(self):
        assert problems_of(row("conflict_type", '{ metric = "executions", op = "ge", '
                               'value = 1 }', '{ method = "fixed", value = 0.5 }',
                               insight="{tool_name}")) == [
            "s.toml:5: row[r].when.all[0].metric: must be one of calls, occurrences, resolved, "
            "share, tools (got 'executions')",
            "s.toml:6: row[r].then.insight: unknown field {tool_name} (allowed: calls, "
            "conflict_type, occurrences, resolved, share, tool_list, tools, top_resolution)"]

    def test_a_row_needs_a_condition(self):
        text = row("tool", "", '{ method = "fixed", value = 0.5 }')
        assert problems_of(text) == ["s.toml:5: row[r].when: must hold at least one condition"]

    def test_scopes(self):
        assert list(SCOPES) == ["tool", "mode", "conflict_type", "confidence_bucket"]
        assert SCOPES["mode"].metrics["best_mode"] is str


class TestBuckets:
    def test_default(self):
        assert SignalFile().confidence_buckets == DEFAULT_BUCKETS
        assert SignalTable.from_toml(text="").buckets == DEFAULT_BUCKETS

    @pytest.mark.parametrize(("edges", "problem"), [
        ("[]", "s.toml:1: signals.confidence_buckets: must hold 2 to 21 edges (got 0)"),
        ("[0.0, 0.5, 0.5, 1.0]",
         "s.toml:1: signals.confidence_buckets[2]: must be above the edge before it "
         "(0.5 <= 0.5)"),
        ("[0, 1.5]", "s.toml:1: signals.confidence_buckets: must run from 0.0 to 1.0 "
                     "(got 0 to 1.5)"),
        ("0.5", "s.toml:1: signals.confidence_buckets: must be a list (got 0.5)"),
        ("[0.0, true, 1.0]",
         "s.toml:1: signals.confidence_buckets[1]: must be a number (got True)"),
    ])
    def test_problems(self, edges, problem):
        assert problems_of(f"confidence_buckets = {edges}\n") == [problem]

    def test_labels(self):
        table = SignalTable.from_toml(text="confidence_buckets = [0, 0.25, 1]\n")
        assert table.buckets == (0.0, 0.25, 1.0)
        assert table.bucket_labels() == ("0-0.25", "0.25-1")

    def test_shipped(self):
        assert SignalTable.from_toml(text=SIGNALS).buckets == DEFAULT_BUCKETS
