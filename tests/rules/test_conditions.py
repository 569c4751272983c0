"""Tests for buddy.rules.tables._table: the one rule-table format shared by every table."""

from __future__ import annotations

import hashlib
import math
import subprocess
import sys
from collections.abc import Mapping
from types import SimpleNamespace

import pytest

from buddy.rules.base.errors import BuddyError, RuleTableError
from buddy.rules.tables._table import (
    Condition,
    Op,
    Problems,
    When,
    compile_when,
    read_toml,
    row_line,
)

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

    def test_thresholds(self):
        when = When(all=(cond("a", Op.GE, 1), cond("b", Op.LT, 2)), any=(cond("a", Op.LE, 9),))
        assert when.thresholds("a") == [cond("a", Op.GE, 1), cond("a", Op.LE, 9)]
        assert when.thresholds("c") == []


class TestProblems:
    def test_add_with_and_without_line(self):
        p = Problems("r.toml")
        p.add("row[x].when", "bad", 7)
        p.add("row", "missing")
        assert p.items == ["r.toml:7: row[x].when: bad", "r.toml: row: missing"]

    def test_no_problems_no_error(self):
        Problems("r.toml").raise_if_any()

    def test_raise_all_at_once(self):
        p = Problems("r.toml")
        p.add("a", "one", 1)
        p.add("b", "two", 2)
        p.add("c", "three", 3)
        with pytest.raises(RuleTableError) as info:
            p.raise_if_any()
        assert info.value.problems == ["r.toml:1: a: one", "r.toml:2: b: two", "r.toml:3: c: three"]
        assert str(info.value) == "r.toml:1: a: one (and 2 more problem(s))"

    def test_one_problem_is_one_line(self):
        p = Problems("r.toml")
        p.add("a", "one", 1)
        with pytest.raises(RuleTableError) as info:
            p.raise_if_any()
        assert str(info.value) == "r.toml:1: a: one"
        assert isinstance(info.value, ValueError) and isinstance(info.value, BuddyError)

    def test_field(self):
        p = Problems("f")
        assert p.field({"k": 3}, "k", int, "w", 1) == 3
        assert p.field({"k": 3}, "k", float, "w", 1) == 3.0
        assert type(p.field({"k": 3}, "k", float, "w", 1)) is float
        assert p.field({}, "k", int, "w", 1, default=9) == 9
        assert p.field({"k": "s"}, "k", (int, str), "w", 1) == "s"
        assert p.items == []

    @pytest.mark.parametrize(("data", "kind", "message"), [
        ({}, int, "f:4: w.k: is required"),
        ({"k": "3"}, int, "f:4: w.k: must be int (got '3')"),
        ({"k": True}, int, "f:4: w.k: must be int (got True)"),
        ({"k": False}, float, "f:4: w.k: must be float (got False)"),
        ({"k": 1.5}, int, "f:4: w.k: must be int (got 1.5)"),
        ({"k": [1]}, (int, str), "f:4: w.k: must be int or str (got [1])"),
        ({"k": math.nan}, float, "f:4: w.k: must be a finite number (got nan)"),
        ({"k": -math.inf}, float, "f:4: w.k: must be a finite number (got -inf)"),
    ])
    def test_field_problems(self, data, kind, message):
        p = Problems("f")
        assert p.field(data, "k", kind, "w", 4) is None
        assert p.items == [message]

    def test_enum(self):
        p = Problems("f")
        assert p.enum({"op": "ge"}, "op", Op, "w", 2) is Op.GE
        assert p.enum({"op": "=>"}, "op", Op, "w", 2) is None
        assert p.enum({"op": 1}, "op", Op, "w", 2) is None
        assert p.items == ["f:2: w.op: must be one of ge, gt, le, lt, eq, ne (got '=>')",
                           "f:2: w.op: must be str (got 1)"]

    def test_unknown_keys_sorted(self):
        p = Problems("f")
        p.unknown_keys({"z": 1, "id": 2, "b": 3}, ("id",), "row[x]", 5)
        assert p.items == ["f:5: row[x].b: unknown key", "f:5: row[x].z: unknown key"]

    def test_when(self):
        p = Problems("f")
        when = p.when({"all": [{"metric": "m", "op": "ge", "value": 1}],
                       "any": [{"metric": "m", "op": "lt", "value": 0.5}]},
                      {"m": float}, "row[x].when", 3)
        assert when == When(all=(cond("m", Op.GE, 1.0),), any=(cond("m", Op.LT, 0.5),))
        assert p.when({}, {"m": float}, "w", 3) == When()
        assert p.items == []

    @pytest.mark.parametrize(("data", "message"), [
        ("x", "f:3: w: must be a table with 'all' and/or 'any' (got 'x')"),
        ({"none": []}, "f:3: w.none: unknown key"),
        ({"all": {}}, "f:3: w.all: must be a list of conditions (got {})"),
        ({"any": [3]}, "f:3: w.any[0]: must be {metric, op, value} (got 3)"),
        ({"all": [{"metric": "m", "op": "ge", "value": 1, "unit": "%"}]},
         "f:3: w.all[0].unit: unknown key"),
        ({"all": [{"metric": "q", "op": "ge", "value": 1}]},
         "f:3: w.all[0].metric: must be one of m, n (got 'q')"),
        ({"all": [{"metric": "m", "op": ">=", "value": 1}]},
         "f:3: w.all[0].op: must be one of ge, gt, le, lt, eq, ne (got '>=')"),
        ({"all": [{"metric": "m", "op": "ge", "value": "1"}]},
         "f:3: w.all[0].value: must be float (got '1')"),
        ({"all": [{"metric": "m", "op": "ge"}]}, "f:3: w.all[0].value: is required"),
        ({"all": [{"op": "ge", "value": 1}]}, "f:3: w.all[0].metric: is required"),
    ])
    def test_when_problems(self, data, message):
        p = Problems("f")
        p.when(data, {"m": float, "n": float}, "w", 3)
        assert p.items == [message]


class TestReadToml:
    def test_text(self):
        data, text, digest = read_toml(None, 'a = 1\n[[row]]\nid = "x"\n')
        assert data == {"a": 1, "row": [{"id": "x"}]}
        assert text == 'a = 1\n[[row]]\nid = "x"\n'
        assert digest == hashlib.sha256(text.encode()).hexdigest()[:16]

    def test_file(self, tmp_path):
        path = tmp_path / "t.toml"
        path.write_text("a = 1\n", encoding="utf-8")
        assert read_toml(path) == ({"a": 1}, "a = 1\n",
                                   hashlib.sha256(b"a = 1\n").hexdigest()[:16])
        assert read_toml(str(path))[0] == {"a": 1}

    @pytest.mark.parametrize(("text", "message"), [
        ("a = 1\nb = \n", "t.toml:2: invalid TOML: Invalid value"),
        ("a = 1\n\n\na = 2\n", "t.toml:4: invalid TOML: Cannot overwrite a value"),
        ("[x]\n[x]\n", "t.toml:2: invalid TOML: Cannot declare ('x',) twice"),
        ("[[row]\n", "t.toml:1: invalid TOML: Expected ']]' at the end of an array declaration"),
    ])
    def test_syntax_error_names_the_line(self, tmp_path, text, message):
        path = tmp_path / "t.toml"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(RuleTableError) as info:
            read_toml(path)
        assert info.value.problems == [f"{tmp_path}/{message}"]

    def test_syntax_error_in_text(self):
        with pytest.raises(RuleTableError) as info:
            read_toml(None, "x = \n")
        assert str(info.value) == "<text>:1: invalid TOML: Invalid value"

    def test_syntax_error_at_end_of_document(self):
        with pytest.raises(RuleTableError) as info:
            read_toml(None, 'a = "unterminated')
        assert str(info.value) == "<text>: invalid TOML: Unterminated string (at end of document)"

    def test_missing_file(self, tmp_path):
        with pytest.raises(RuleTableError) as info:
            read_toml(tmp_path / "gone.toml")
        assert info.value.problems == [f"{tmp_path}/gone.toml: no such file"]

    def test_not_utf8(self, tmp_path):
        path = tmp_path / "bin.toml"
        path.write_bytes(b"\xff = 1\n")
        with pytest.raises(RuleTableError) as info:
            read_toml(path)
        assert str(info.value) == (f"{path}: cannot read: 'utf-8' codec can't decode byte 0xff "
                                   "in position 0: invalid start byte")

    def test_directory(self, tmp_path):
        with pytest.raises(RuleTableError) as info:
            read_toml(tmp_path)
        assert str(info.value) == (
            f"{tmp_path}: cannot read: [Errno 21] Is a directory: '{tmp_path}'")


class TestRowLine:
    TEXT = (
        "# header comment\n"    # 1
        "table = 'x'\n"         # 2
        "\n"                    # 3
        "[[row]]\n"             # 4
        "id = 'a'\n"            # 5
        "\n"                    # 6
        "\n"                    # 7
        "  [[ row ]]\n"         # 8
        "id = 'b'\n"            # 9
        "# [[row]]\n"           # 10
        "[[rows]]\n"            # 11
        "[[row.sub]]\n"         # 12
        "[row]\n"               # 13
        "[[row]]\n"             # 14
    )

    def test_each_row(self):
        assert [row_line(self.TEXT, "row", i) for i in range(3)] == [4, 8, 14]

    def test_past_the_end(self):
        assert row_line(self.TEXT, "row", 3) is None
        assert row_line("", "row", 0) is None

    def test_first_line(self):
        assert row_line("[[tool]]\nname = 'a'\n", "tool", 0) == 1

    def test_blank_line_before_the_header(self):
        assert row_line("a = 1\n\n[[row]]\n", "row", 0) == 3
        assert row_line("\n\n\n[[row]]\n", "row", 0) == 4

    def test_other_header(self):
        assert row_line(self.TEXT, "rows", 0) == 11
        assert row_line(self.TEXT, "tool", 0) is None

    def test_header_is_not_a_pattern(self):
        assert row_line("[[r.w]]\n[[row]]\n", "r.w", 0) == 1
        assert row_line("[[row]]\n", "r.w", 0) is None

    def test_crlf(self):
        assert row_line("a = 1\r\n[[row]]\r\n\r\n[[row]]\r\n", "row", 1) == 4


class TestImports:
    @pytest.mark.parametrize("module", ["buddy.rules.tables._table", "buddy.rules",
                                        "buddy.rules.tables._escalation"])
    def test_importable_first(self, module):
        # Each module must import in a fresh interpreter, whatever was imported before.
        done = subprocess.run([sys.executable, "-c", f"import {module}"],
                              capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr.strip().splitlines()[-1:]
