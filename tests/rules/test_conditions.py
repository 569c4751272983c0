"""Tests for buddy.rules.tables._conditions: conditions, their vocabulary check and compilation."""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Mapping
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from buddy.rules.base._values import RiskLevel
from buddy.rules.tables._conditions import Condition, Op, When, check_when, compile_when

GETTERS = {
    "a": lambda x: x.a,
    "b": lambda x: x.b,
    "c": lambda x: x.c,
}
THRESHOLD = 0.7
BELOW = math.nextafter(THRESHOLD, -math.inf)
ABOVE = math.nextafter(THRESHOLD, math.inf)

# (below, at, above) the threshold, for every op.
TRUTH = {
    Op.GE: (False, True, True),
    Op.GT: (False, False, True),
    Op.LE: (True, True, False),
    Op.LT: (True, False, False),
    Op.EQ: (False, True, False),
    Op.NE: (True, False, True),
}


def ns(a=0.0, b=0.0, c=0.0) -> SimpleNamespace:
    return SimpleNamespace(a=a, b=b, c=c)


def cond(metric: str, op: Op, value) -> Condition:
    return Condition(metric, op, value)


class TestOp:
    def test_closed_set(self):
        assert [op.value for op in Op] == ["ge", "gt", "le", "lt", "eq", "ne"]
        assert [op.symbol for op in Op] == [">=", ">", "<=", "<", "==", "!="]

    def test_unknown_op(self):
        with pytest.raises(ValueError):
            Op("=>")


class TestCompileWhen:
    def test_truth_table_is_complete(self):
        assert set(TRUTH) == set(Op)

    @pytest.mark.parametrize("op", list(Op))
    def test_single_condition(self, op):
        # One `all` condition takes the inlined fast path.
        holds = compile_when(When(all=(cond("a", op, THRESHOLD),)), GETTERS)
        assert (holds(ns(a=BELOW)), holds(ns(a=THRESHOLD)), holds(ns(a=ABOVE))) == TRUTH[op]

    @pytest.mark.parametrize("op", list(Op))
    def test_condition_among_all(self, op):
        # Two `all` conditions take the general path; the second always holds.
        when = When(all=(cond("a", op, THRESHOLD), cond("b", Op.GE, 0.0)))
        holds = compile_when(when, GETTERS)
        assert (holds(ns(a=BELOW)), holds(ns(a=THRESHOLD)), holds(ns(a=ABOVE))) == TRUTH[op]

    @pytest.mark.parametrize("op", list(Op))
    def test_single_any_condition(self, op):
        holds = compile_when(When(any=(cond("a", op, THRESHOLD),)), GETTERS)
        assert (holds(ns(a=BELOW)), holds(ns(a=THRESHOLD)), holds(ns(a=ABOVE))) == TRUTH[op]

    @pytest.mark.parametrize("op", list(Op))
    def test_ints_and_strings(self, op):
        holds = compile_when(When(all=(cond("a", op, 5),)), GETTERS)
        assert (holds(ns(a=4)), holds(ns(a=5)), holds(ns(a=6))) == TRUTH[op]
        holds = compile_when(When(all=(cond("a", op, "m"),)), GETTERS)
        assert (holds(ns(a="l")), holds(ns(a="m")), holds(ns(a="n"))) == TRUTH[op]

    def test_empty_when_always_holds(self):
        holds = compile_when(When(), GETTERS)
        assert holds(ns()) is True
        assert holds(None) is True

    def test_all_needs_every_condition(self):
        holds = compile_when(When(all=(cond("a", Op.GE, 1), cond("b", Op.LT, 2))), GETTERS)
        assert holds(ns(a=1, b=1)) is True
        assert holds(ns(a=0, b=1)) is False
        assert holds(ns(a=1, b=2)) is False
        assert holds(ns(a=0, b=2)) is False

    def test_any_needs_one_condition(self):
        holds = compile_when(When(any=(cond("a", Op.GE, 1), cond("b", Op.LT, 2))), GETTERS)
        assert holds(ns(a=1, b=5)) is True
        assert holds(ns(a=0, b=1)) is True
        assert holds(ns(a=1, b=1)) is True
        assert holds(ns(a=0, b=2)) is False

    def test_empty_any_imposes_nothing(self):
        holds = compile_when(When(all=(cond("a", Op.GE, 1), cond("b", Op.GE, 1)), any=()),
                             GETTERS)
        assert holds(ns(a=1, b=1)) is True
        assert holds(ns(a=0, b=1)) is False

    def test_all_and_any(self):
        when = When(all=(cond("a", Op.GE, 1),), any=(cond("b", Op.EQ, 1), cond("c", Op.EQ, 1)))
        holds = compile_when(when, GETTERS)
        assert holds(ns(a=1, b=1, c=0)) is True
        assert holds(ns(a=1, b=0, c=1)) is True
        assert holds(ns(a=1, b=0, c=0)) is False  # all holds, no any
        assert holds(ns(a=0, b=1, c=1)) is False  # any holds, all does not

    def test_returns_bools(self):
        holds = compile_when(When(all=(cond("a", Op.GE, 1), cond("b", Op.GE, 1))), GETTERS)
        assert holds(ns(a=1, b=1)) is True

    def test_unknown_metric_fails_at_compile(self):
        with pytest.raises(KeyError):
            compile_when(When(any=(cond("nope", Op.GE, 1),)), GETTERS)
        with pytest.raises(KeyError):
            compile_when(When(all=(cond("nope", Op.GE, 1),)), GETTERS)

    @pytest.mark.parametrize("when", [
        When(all=(cond("a", Op.GE, 1),)),
        When(all=(cond("a", Op.GE, 1), cond("b", Op.GE, 1)), any=(cond("c", Op.NE, 9),)),
    ])
    def test_getters_are_read_once_at_compile(self, when):
        class Counting(Mapping):
            lookups = 0

            def __getitem__(self, key):
                Counting.lookups += 1
                return GETTERS[key]

            def __iter__(self):
                return iter(GETTERS)

            def __len__(self):
                return len(GETTERS)

        holds = compile_when(when, Counting())
        after_compile = Counting.lookups
        for _ in range(3):
            assert holds(ns(a=1, b=1, c=1)) is True
        assert Counting.lookups == after_compile


class TestConditionAndWhenText:
    def test_condition(self):
        assert str(cond("confidence", Op.GE, 0.7)) == "confidence >= 0.7"
        assert str(cond("x", Op.NE, "y")) == "x != y"

    def test_when(self):
        assert str(When()) == "always"
        assert str(When(all=(cond("a", Op.GE, 1), cond("b", Op.LT, 2)))) == "a >= 1 and b < 2"
        assert str(When(any=(cond("a", Op.EQ, 1), cond("b", Op.GT, 2)))) == "(a == 1 or b > 2)"
        assert (str(When(all=(cond("a", Op.LE, 1),), any=(cond("b", Op.EQ, 1),)))
                == "a <= 1 and (b == 1)")

    def test_always(self):
        assert When().always is True
        assert When(any=(cond("a", Op.GE, 1),)).always is False

    def test_thresholds(self):
        when = When(all=(cond("a", Op.GE, 1), cond("b", Op.LT, 2)), any=(cond("a", Op.LE, 9),))
        assert when.thresholds("a") == [cond("a", Op.GE, 1), cond("a", Op.LE, 9)]
        assert when.thresholds("c") == []


METRICS = {"rate": float, "count": int, "mode": str, "live": bool, "risk": RiskLevel}
TYPED = {float: float, int: int, str: str, bool: bool, RiskLevel: str}


def checked(*conditions: Condition, group: str = "all", nonempty: bool = False):
    when, problems = check_when(When(**{group: conditions}), METRICS, at=("when",),
                                nonempty=nonempty)
    return when, [str(p) for p in problems]


class TestCheckWhen:
    def test_values_typed_as_their_metric(self):
        when, problems = checked(cond("rate", Op.GE, 1), cond("count", Op.LT, 3),
                                 cond("mode", Op.EQ, "LIVE"), cond("live", Op.NE, False),
                                 cond("risk", Op.EQ, "HIGH"))
        assert problems == []
        assert when == When(all=(cond("rate", Op.GE, 1.0), cond("count", Op.LT, 3),
                                 cond("mode", Op.EQ, "LIVE"), cond("live", Op.NE, False),
                                 cond("risk", Op.EQ, "HIGH")))
        assert type(when.all[0].value) is float
        assert type(when.all[1].value) is int

    def test_empty_when(self):
        assert checked() == (When(), [])
        assert checked(nonempty=True) == (None, ["when: must hold at least one condition"])

    @pytest.mark.parametrize(("condition", "problem"), [
        (cond("rat", Op.GE, 1.0), "when.all[0].metric: must be one of count, live, mode, rate, "
                                  "risk (got 'rat')"),
        (cond("rate", Op.GE, "high"), "when.all[0].value: must be a number (got 'high')"),
        (cond("rate", Op.GE, True), "when.all[0].value: must be a number (got True)"),
        (cond("rate", Op.GE, math.nan), "when.all[0].value: must be a finite number (got nan)"),
        (cond("rate", Op.GE, -math.inf),
         "when.all[0].value: must be a finite number (got -inf)"),
        (cond("rate", Op.GE, 10 ** 400),
         "when.all[0].value: must be a finite number (got <int of 1329 bits>, too large)"),
        (cond("count", Op.GE, 10 ** 400),
         "when.all[0].value: must be a whole number (got <int of 1329 bits>, too large)"),
        (cond("count", Op.GE, 2.5), "when.all[0].value: must be a whole number (got 2.5)"),
        (cond("count", Op.GE, False), "when.all[0].value: must be a whole number (got False)"),
        (cond("mode", Op.EQ, 1), "when.all[0].value: must be a string (got 1)"),
        (cond("live", Op.EQ, 1), "when.all[0].value: must be true or false (got 1)"),
        (cond("risk", Op.EQ, "HUGE"),
         "when.all[0].value: must be one of LOW, MEDIUM, HIGH (got 'HUGE')"),
        (cond("mode", Op.GT, "a"), "when.all[0].op: mode is not a number: must be eq or ne "
                                   "(got 'gt')"),
        (cond("live", Op.LE, True), "when.all[0].op: live is not a number: must be eq or ne "
                                    "(got 'le')"),
        (cond("risk", Op.GE, "LOW"), "when.all[0].op: risk is not a number: must be eq or ne "
                                     "(got 'ge')"),
    ])
    def test_one_problem(self, condition, problem):
        assert checked(condition) == (None, [problem])

    def test_every_problem_of_both_groups(self):
        when, problems = check_when(
            When(all=(cond("rate", Op.GE, 0.5), cond("mode", Op.LT, 3)),
                 any=(cond("nope", Op.EQ, 1), cond("count", Op.GE, 1))),
            METRICS, at=("row", 2, "when"))
        assert when is None
        assert [str(p) for p in problems] == [
            "row[2].when.all[1].value: must be a string (got 3)",
            "row[2].when.all[1].op: mode is not a number: must be eq or ne (got 'lt')",
            "row[2].when.any[0].metric: must be one of count, live, mode, rate, risk "
            "(got 'nope')",
        ]

    def test_long_values_are_cut(self):
        _, problems = checked(cond("x" * 500, Op.GE, 1))
        assert problems == ["when.all[0].metric: must be one of count, live, mode, rate, risk "
                            f"(got '{'x' * 27}...{'x' * 28}')"]

    @given(st.one_of(st.booleans(), st.integers(), st.floats(), st.text(max_size=5)),
           st.sampled_from(sorted(METRICS)), st.sampled_from(list(Op)))
    def test_any_scalar_is_typed_or_refused(self, value, metric, op):
        when, problems = checked(cond(metric, op, value))
        assert (when is None) == bool(problems)
        if when is not None:  # typed exactly as the metric (an enum metric keeps the name)
            typed = when.all[0].value
            assert type(typed) is TYPED[METRICS[metric]]
            assert typed == (float(value) if METRICS[metric] is float else value)


class TestImports:
    @pytest.mark.parametrize("module", ["buddy.rules.tables._conditions", "buddy.rules",
                                        "buddy.rules.tables._escalation",
                                        "buddy.rules.tables._loader"])
    def test_importable_first(self, module):
        # Each module must import in a fresh interpreter, whatever was imported before.
        done = subprocess.run([sys.executable, "-c", f"import {module}"],
                              capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr.strip().splitlines()[-1:]
