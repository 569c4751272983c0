"""Tests for buddy.rules.tables._loader: the one loader every rule table goes through."""

from __future__ import annotations

import hashlib
import operator
import subprocess
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

import buddy.rules.tables._loader as loader_module
from buddy.rules.base._convert import Problem
from buddy.rules.base.errors import RuleTableError
from buddy.rules.tables._checks import at_least, between, one_of, row_id
from buddy.rules.tables._conditions import Condition, Op, When, check_when, compile_when
from buddy.rules.tables._loader import (
    Loaded,
    ShippedTable,
    TableSpec,
    key_lines,
    line_of,
    load,
    read_toml,
)
from buddy.rules.tables._template import Template, check_template

# -- a demo table, declared the way every table of buddy is ---------------------------

SCOPES = {"a": ({"rate": float, "count": int, "name": str, "a_only": float}, {"item": str}),
          "b": ({"rate": float, "count": int, "name": str}, {})}


@attrs.frozen
class DemoThen:
    level: int = attrs.field(validator=between(1, 10))
    note: str
    kind: str = attrs.field(default="info", validator=one_of("info", "warn"))


@attrs.frozen
class DemoRow:
    id: str = attrs.field(validator=row_id)
    scope: str = attrs.field(validator=one_of(*SCOPES))
    when: When
    then: DemoThen
    description: str = ""


@attrs.frozen
class DemoFile:
    limit: float = attrs.field(default=1.0, validator=at_least(0))


@attrs.frozen
class DemoRule:
    id: str
    scope: str
    when: When
    note: Template
    holds: Any = attrs.field(eq=False, repr=False)


def compile_demo(row: DemoRow) -> tuple[DemoRule | None, list[Problem]]:
    metrics, names = SCOPES[row.scope]
    when, problems = check_when(row.when, metrics, at=("when",), nonempty=True)
    note, found = check_template(row.then.note, {**metrics, **names}, at=("then", "note"))
    if when is None or note is None:
        return None, problems + found
    getters = {m: operator.itemgetter(m) for m in metrics}
    return DemoRule(row.id, row.scope, when, note, compile_when(when, getters)), []


def check_demo(file: DemoFile, rules: Sequence[DemoRule]) -> Iterable[Problem]:
    if len(rules) > file.limit * 10:
        yield Problem(("limit",), f"allows {file.limit * 10:g} rows (got {len(rules)})")
    if rules and rules[-1].scope != "b":
        yield Problem(("row", len(rules) - 1, "scope"), "the last row must be of scope b")


SPEC = TableSpec("demo", DemoRow, compile=compile_demo, file=DemoFile, check=check_demo,
                 required={"when": "is required (a hint)"})


def row(row_id: str = "r1", scope: str = "a", when: str = 'metric = "rate", op = "gt", value = 0.5',
        then: str = 'level = 3, note = "{item} at {rate:.0%}"', extra: str = "") -> str:
    return (f'[[row]]\nid = "{row_id}"\nscope = "{scope}"\n{extra}'
            f'when = {{ all = [ {{ {when} }} ] }}\nthen = {{ {then} }}\n\n')


# Header on lines 1-3; rows start at lines 4 and 10 (each row is 6 lines: header, id, scope,
# when, then, blank).
HEAD = 'table = "demo"\nversion = 1\n\n'
R1 = row("r1")
R2 = row("r2", "b", 'metric = "count", op = "ge", value = 3',
         'level = 5, note = "{count} seen", kind = "warn"')
TABLE = HEAD + R1 + R2


def problems_of(text: str) -> list[str]:
    with pytest.raises(RuleTableError) as info:
        load(SPEC, text=text, source="demo.toml")
    return info.value.problems


def one_problem(text: str) -> str:
    found = problems_of(text)
    assert len(found) == 1, found
    return found[0]


class TestLoad:
    def test_valid(self):
        loaded = load(SPEC, text=TABLE, source="demo.toml")
        assert isinstance(loaded, Loaded)
        r1, r2 = loaded.rows
        assert (r1.id, r1.scope, r1.when) == ("r1", "a", When(all=(Condition("rate", Op.GT,
                                                                             0.5),)))
        assert r1.note.render({"item": "x", "rate": 0.5}) == "x at 50%"
        assert (r2.holds({"rate": 0.0, "count": 3}), r2.holds({"rate": 0.0, "count": 2})) == (
            True, False)
        assert loaded.file == DemoFile(1.0)
        assert loaded.source == "demo.toml"
        assert loaded.digest == hashlib.sha256(TABLE.encode()).hexdigest()[:16]

    def test_file_and_top_value(self, tmp_path):
        path = tmp_path / "demo.toml"
        path.write_text("limit = 2\n" + R1 + R2)
        loaded = load(SPEC, path)
        assert loaded.source == str(path)
        assert loaded.file == DemoFile(2.0)

    def test_text_without_source(self):
        assert load(SPEC, text=TABLE).source == "<text>"

    def test_no_rows(self):
        assert load(SPEC, text=HEAD).rows == ()

    def test_sub_table_then(self):
        text = HEAD + ('[[row]]\nid = "r1"\nscope = "b"\n'
                       'when = { all = [ { metric = "count", op = "ge", value = 1 } ] }\n'
                       '[row.then]\nlevel = 2\nnote = "n"\n')
        assert load(SPEC, text=text).rows[0].note.text == "n"

    def test_lines_are_only_made_for_problems(self, monkeypatch):
        def refuse(text: str) -> dict:
            raise AssertionError("key_lines ran for a table without problems")
        monkeypatch.setattr(loader_module, "key_lines", refuse)
        assert len(load(SPEC, text=TABLE).rows) == 2


class TestProblems:
    """Each kind of problem: one line naming file, line, row id and field."""

    @pytest.mark.parametrize("old, new, message", [
        ('op = "gt"', 'op = "=>"',
         "demo.toml:7: row[r1].when.all[0].op: must be one of ge, gt, le, lt, eq, ne "
         "(got '=>')"),
        ('metric = "rate"', 'metric = "rat"',
         "demo.toml:7: row[r1].when.all[0].metric: must be one of a_only, count, name, rate "
         "(got 'rat')"),
        ("value = 0.5", 'value = "high"',
         "demo.toml:7: row[r1].when.all[0].value: must be a number (got 'high')"),
        ("value = 0.5", "value = [0.5]",
         "demo.toml:7: row[r1].when.all[0].value: must be a number, true, false or a string "
         "(got [0.5])"),
        ('scope = "a"', 'scope = "c"',
         "demo.toml:6: row[r1].scope: must be one of a, b (got 'c')"),
        ("level = 3", "level = 11", "demo.toml:8: row[r1].then.level: must be <= 10 (got 11)"),
        ("level = 3", "level = 0", "demo.toml:8: row[r1].then.level: must be >= 1 (got 0)"),
        ("level = 3", "level = 3.5",
         "demo.toml:8: row[r1].then.level: must be a whole number (got 3.5)"),
        ("level = 3, ", "", "demo.toml:8: row[r1].then.level: is required"),
        ("level = 3", "level = 3, colour = 'red'",
         "demo.toml:8: row[r1].then.colour: unknown key"),
        ("level = 3", 'level = 3, kind = "fatal"',
         "demo.toml:8: row[r1].then.kind: must be one of info, warn (got 'fatal')"),
        ('"{item} at {rate:.0%}"', '"{item.__class__}"',
         "demo.toml:8: row[r1].then.note: field {item.__class__} must be a plain name "
         "(no attribute or index access)"),
        ('"{item} at {rate:.0%}"', '"{nope}"',
         "demo.toml:8: row[r1].then.note: unknown field {nope} "
         "(allowed: a_only, count, item, name, rate)"),
        ('id = "r1"', 'id = "r 1"',
         "demo.toml:5: row[0].id: must be 1-64 letters, digits or _ . : - (got 'r 1')"),
        ('id = "r1"', "id = 7",
         "demo.toml:5: row[0].id: must be a string (got 7)"),
        ('id = "r1"\n', 'id = "r1"\ncolour = "red"\n',
         "demo.toml:6: row[r1].colour: unknown key"),
        ("version = 1", "version = 2", "demo.toml:2: demo.version: must be 1 (got 2)"),
        ("version = 1", "version = true", "demo.toml:2: demo.version: must be 1 (got True)"),
        ('table = "demo"', 'table = "anomalies"',
         "demo.toml:1: demo.table: must be 'demo' (got 'anomalies')"),
        ('table = "demo"', 'table = "demo"\nextra = 1', "demo.toml:2: demo.extra: unknown key"),
        ('table = "demo"', "limit = -1.0", "demo.toml:1: demo.limit: must be >= 0 (got -1.0)"),
        ('table = "demo"', "limit = nan", "demo.toml:1: demo.limit: must be a finite number "
                                          "(got nan)"),
        ('table = "demo"', "limit = " + "9" * 400,
         "demo.toml:1: demo.limit: must be a finite number (got <int of 1329 bits>, too large)"),
    ])
    def test_one_problem(self, old, new, message):
        text = HEAD + R1
        assert text.count(old) == 1, old
        assert one_problem(text.replace(old, new)) == message

    def test_metric_of_another_scope(self):
        text = HEAD + row("r1", "b", 'metric = "a_only", op = "gt", value = 0.5',
                          'level = 3, note = "x"')
        assert one_problem(text) == ("demo.toml:7: row[r1].when.all[0].metric: must be one of "
                                     "count, name, rate (got 'a_only')")

    def test_template_name_of_another_scope(self):
        text = HEAD + row("r1", "b", 'metric = "count", op = "gt", value = 0',
                          'level = 3, note = "{item}"')
        assert one_problem(text) == ("demo.toml:8: row[r1].then.note: unknown field {item} "
                                     "(allowed: count, name, rate)")

    def test_string_metric_needs_eq_or_ne(self):
        text = HEAD + row(when='metric = "name", op = "gt", value = "a"')
        assert one_problem(text) == ("demo.toml:7: row[r1].when.all[0].op: name is not a "
                                     "number: must be eq or ne (got 'gt')")

    def test_duplicate_id(self):
        # The duplicate's `id` line, and the first row's header line.
        assert one_problem(HEAD + R1 + R1) == \
            "demo.toml:11: row[r1].id: duplicate id (first at line 4)"

    def test_missing_id_names_the_row_by_index_on_its_header_line(self):
        text = HEAD + R2 + row("r1").replace('id = "r1"\n', "")
        assert one_problem(text) == "demo.toml:10: row[1].id: is required"

    def test_missing_when_says_the_tables_hint(self):
        text = HEAD + R1.replace('when = { all = [ { metric = "rate", op = "gt", '
                                 'value = 0.5 } ] }\n', "")
        assert one_problem(text) == "demo.toml:4: row[r1].when: is required (a hint)"

    def test_missing_then(self):
        text = HEAD + R1.replace('then = { level = 3, note = "{item} at {rate:.0%}" }\n', "")
        assert one_problem(text) == "demo.toml:4: row[r1].then: is required"

    def test_empty_when(self):
        text = HEAD + R1.replace('{ all = [ { metric = "rate", op = "gt", value = 0.5 } ] }',
                                 "{}")
        assert one_problem(text) == "demo.toml:7: row[r1].when: must hold at least one condition"

    @pytest.mark.parametrize(("when", "message"), [
        ('"rate > 0.5"', "demo.toml:7: row[r1].when: must be a table (got 'rate > 0.5')"),
        ("{ all = {} }", "demo.toml:7: row[r1].when.all: must be a list (got {})"),
        ("{ any = [3] }", "demo.toml:7: row[r1].when.any[0]: must be a table (got 3)"),
        ("{ none = [] }", "demo.toml:7: row[r1].when.none: unknown key"),
        ('{ all = [ { metric = "rate", op = "gt" } ] }',
         "demo.toml:7: row[r1].when.all[0].value: is required"),
        ('{ all = [ { metric = "rate", op = "gt", value = 1, unit = "%" } ] }',
         "demo.toml:7: row[r1].when.all[0].unit: unknown key"),
    ])
    def test_when_shape(self, when, message):
        text = HEAD + R1.replace('{ all = [ { metric = "rate", op = "gt", value = 0.5 } ] }',
                                 when)
        assert one_problem(text) == message

    def test_sub_table_field_line(self):
        text = HEAD + ('[[row]]\nid = "r1"\nscope = "b"\n'
                       'when = { all = [ { metric = "count", op = "ge", value = 1 } ] }\n'
                       '[row.then]\nlevel = 2\nnote = "{x.y}"\n')
        assert one_problem(text) == ("demo.toml:10: row[r1].then.note: field {x.y} must be a "
                                     "plain name (no attribute or index access)")

    def test_row_not_an_array(self):
        assert one_problem(HEAD + "row = 3\n") == \
            "demo.toml:4: demo.row: must be an array of [[row]] tables (got 3)"
        assert one_problem(HEAD + "[row]\nid = 'x'\n") == \
            "demo.toml:4: demo.row: must be an array of [[row]] tables (got {'id': 'x'})"

    def test_row_not_a_table(self):
        assert problems_of(HEAD + 'row = [1, "x"]\n') == [
            "demo.toml:4: row[0]: must be a table (got 1)",
            "demo.toml:4: row[1]: must be a table (got 'x')"]

    def test_every_problem_at_once_in_file_order(self):
        text = ('table = "demo"\nversion = 3\nextra = 1\n\n'
                + row("r1", when='metric = "rat", op = "gt", value = 0.5')
                + row("r2", then='level = 99, note = "{x[0]}"') + row("r2") + row("r3", "c"))
        assert problems_of(text) == [
            "demo.toml:2: demo.version: must be 1 (got 3)",
            "demo.toml:3: demo.extra: unknown key",
            "demo.toml:8: row[r1].when.all[0].metric: must be one of a_only, count, name, rate "
            "(got 'rat')",
            # a field validator fails: the row's meaning (its template) waits for its shape
            "demo.toml:15: row[r2].then.level: must be <= 10 (got 99)",
            "demo.toml:18: row[r2].id: duplicate id (first at line 11)",
            "demo.toml:25: row[r3].scope: must be one of a, b (got 'c')",
        ]

    def test_meaning_problems_of_one_row_together(self):
        text = HEAD + row("r1", when='metric = "rat", op = "gt", value = 0.5',
                          then='level = 3, note = "{x[0]}"')
        assert problems_of(text) == [
            "demo.toml:7: row[r1].when.all[0].metric: must be one of a_only, count, name, rate "
            "(got 'rat')",
            "demo.toml:8: row[r1].then.note: field {x[0]} must be a plain name "
            "(no attribute or index access)"]

    def test_whole_table_check_once_every_row_is_good(self):
        assert problems_of(HEAD + R2 + R1) == [
            "demo.toml:12: row[r1].scope: the last row must be of scope b"]
        assert problems_of("limit = 0.1\n" + R2 + R2.replace("r2", "r3")) == [
            "demo.toml:1: demo.limit: allows 1 rows (got 2)"]
        # a row problem: the whole-table check does not run (its verdict would be noise)
        assert problems_of(HEAD + R2 + R1.replace("level = 3", "level = 0")) == [
            "demo.toml:14: row[r1].then.level: must be >= 1 (got 0)"]

    def test_error_text_is_one_line(self):
        text = HEAD + row("r1", when='metric = "rat", op = "=>", value = 0.5') + R1
        with pytest.raises(RuleTableError) as info:
            load(SPEC, text=text, source="demo.toml")
        assert "\n" not in str(info.value)
        assert str(info.value).endswith("(and 1 more problem(s))")
        assert isinstance(info.value, ValueError)

    def test_values_echoed_are_short_and_masked(self):
        text = HEAD + R1.replace('scope = "a"', 'scope = "' + "s" * 300 + '"')
        assert problems_of(text) == [
            f"demo.toml:6: row[r1].scope: must be one of a, b (got '{'s' * 27}...{'s' * 28}')"]
        text = HEAD + R1.replace("value = 0.5", 'value = { api_key = "sk-secret" }')
        assert problems_of(text) == [
            "demo.toml:7: row[r1].when.all[0].value: must be a number, true, false or a string "
            "(got {'api_key': '***'})"]

    def test_syntax_error(self):
        with pytest.raises(RuleTableError) as info:
            load(SPEC, text=HEAD + "[[row]\n", source="demo.toml")
        assert str(info.value) == ("demo.toml:4: invalid TOML: Expected ']]' at the end of an "
                                   "array declaration")


class TestReadToml:
    def test_text(self):
        toml = read_toml(text='a = 1\n[[row]]\nid = "x"\n')
        assert toml.data == {"a": 1, "row": [{"id": "x"}]}
        assert toml.text == 'a = 1\n[[row]]\nid = "x"\n'
        assert toml.digest == hashlib.sha256(toml.text.encode()).hexdigest()[:16]
        assert toml.source == "<text>"

    def test_file(self, tmp_path):
        path = tmp_path / "t.toml"
        path.write_text("a = 1\n", encoding="utf-8")
        toml = read_toml(path)
        assert (toml.data, toml.text, toml.digest, toml.source) == (
            {"a": 1}, "a = 1\n", hashlib.sha256(b"a = 1\n").hexdigest()[:16], str(path))
        assert read_toml(str(path), source="mine").source == "mine"

    @pytest.mark.parametrize("deep", ["x = " + "[" * 5000 + "]" * 5000,
                                      "x = " + "{a=" * 2000 + "1" + "}" * 2000])
    def test_nested_deeper_than_the_parser_goes(self, deep):
        with pytest.raises(RuleTableError) as info:
            read_toml(text=deep, source="deep.toml")
        assert str(info.value) == "deep.toml: invalid TOML: nested too deeply"

    def test_neither_path_nor_text(self):
        with pytest.raises(TypeError):
            read_toml()

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
            read_toml(path, source="t.toml")
        assert info.value.problems == [message]

    def test_syntax_error_at_end_of_document(self):
        with pytest.raises(RuleTableError) as info:
            read_toml(text='a = "unterminated')
        assert str(info.value) == "<text>: invalid TOML: Unterminated string (at end of document)"

    @pytest.mark.parametrize("number", ["9" * 4301, "-" + "9" * 5000, "1_" + "0" * 4400])
    def test_integer_too_long_for_python(self, number):
        # tomllib raises a bare ValueError (Python's int() digit limit): one line, with the line
        text = "a = 1.5\nb = 1." + "1" * 5000 + "\n\nc = " + number + "\n"
        with pytest.raises(RuleTableError) as info:
            read_toml(text=text, source="t.toml")
        assert info.value.problems == [
            f"t.toml:4: invalid TOML: an integer of more than {sys.get_int_max_str_digits()} "
            "digits"]

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
        assert str(info.value) == f"{tmp_path}: not a regular file"

    def test_a_fifo_or_a_device_is_refused_unread(self, tmp_path):
        import os

        fifo = tmp_path / "gates.toml"
        os.mkfifo(fifo)  # no writer: reading it would block for ever
        for path in (fifo, "/dev/zero"):
            with pytest.raises(RuleTableError, match="not a regular file"):
                read_toml(path)


class TestKeyLines:
    TEXT = (
        "# header comment\n"                  # 1
        "table = 'x'\n"                       # 2
        "\n"                                  # 3
        "[[row]]\n"                           # 4
        "id = 'a'\n"                          # 5
        "\n"                                  # 6
        "  [[ row ]]  # second\n"             # 7
        "id = 'b'\n"                          # 8
        "# [[row]]\n"                         # 9
        "[[row.sub]]\n"                       # 10
        "k = 1\n"                             # 11
        "[[row.sub]]\n"                       # 12
        "[row.then]\n"                        # 13
        "tier = 'GOOD'\n"                     # 14
        "[[rows]]\n"                          # 15
        "[[row]]\n"                           # 16
        "[[row.sub]]\n"                       # 17
    )

    def test_rows_sub_tables_and_keys(self):
        assert key_lines(self.TEXT) == {
            ("table",): 2,
            ("row",): 4, ("row", 0): 4, ("row", 0, "id"): 5,
            ("row", 1): 7, ("row", 1, "id"): 8,
            ("row", 1, "sub"): 10, ("row", 1, "sub", 0): 10, ("row", 1, "sub", 0, "k"): 11,
            ("row", 1, "sub", 1): 12,
            ("row", 1, "then"): 13, ("row", 1, "then", "tier"): 14,
            ("rows",): 15, ("rows", 0): 15,
            ("row", 2): 16, ("row", 2, "sub"): 17, ("row", 2, "sub", 0): 17,
        }

    def test_dotted_and_quoted_keys(self):
        text = ('a.b = 1\n"c.d" = 2\n\'e\' . "f g" = 3\n"h\\"i" = 4\n[weights]\n'
                'x = 1\n[ "q.r" . s ]\nt = 1\n')
        assert key_lines(text) == {
            ("a",): 1, ("a", "b"): 1, ("c.d",): 2, ("e",): 3, ("e", "f g"): 3, ('h"i',): 4,
            ("weights",): 5, ("weights", "x"): 6, ("q.r",): 7, ("q.r", "s"): 7,
            ("q.r", "s", "t"): 8}

    def test_multi_line_strings_hold_no_keys(self):
        text = ('a = """\n[[row]]\nb = 1\n"""\nc = \'\'\'\nd = 2\n\'\'\'\n'
                'e = """x\\"""\nf = 3\n"""\ng = """ends"""\nh = """q""""\ni = 4\n')
        assert key_lines(text) == {("a",): 1, ("c",): 5, ("e",): 8, ("g",): 11, ("h",): 12,
                                   ("i",): 13}

    def test_multi_line_arrays_hold_no_keys(self):
        text = ('a = [\n  "x = 1",\n  { y = 2 },  # [ not a bracket\n  [\n  "]" ],\n]\n'
                'b = "[" # ]\nc = { d = "}" }\n[[row]]\nid = "x"\n')
        assert key_lines(text) == {("a",): 1, ("b",): 7, ("c",): 8, ("row",): 9, ("row", 0): 9,
                                   ("row", 0, "id"): 10}

    def test_crlf(self):
        assert key_lines("a = 1\r\n[[row]]\r\n\r\n[[row]]\r\nid = 'x'\r\n") == {
            ("a",): 1, ("row",): 2, ("row", 0): 2, ("row", 1): 4, ("row", 1, "id"): 5}

    def test_line_of_falls_back_to_the_nearest_key(self):
        lines = key_lines('[[row]]\nid = "x"\nthen = { a = 1 }\n')
        assert line_of(lines, ("row", 0, "then", "a")) == 3
        assert line_of(lines, ("row", 0, "when", "all", 0, "op")) == 1
        assert line_of(lines, ("row", 5, "id")) == 1
        assert line_of(lines, ("weights", "x")) is None
        assert line_of(lines, ()) is None

    @given(st.lists(st.lists(st.tuples(
        st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True),
        st.sampled_from([
            "1", "-2.5", "true", '"plain"', "'lit [x'", '"q \\" [ { #"', "[1, 2]",
            '[\n  "a",\n  [3, 4],\n]', '"""\nk = 1\n[[row]]\n"""', "'''\n]\n'''",
            "{ a = [1, 2], b = \"}\" }", '"x" # comment [', '"""one line"""',
        ])), max_size=5), max_size=6), st.booleans())
    def test_every_written_key_is_found_on_its_line(self, rows, blank_lines):
        # A property over generated files: each row's keys are found where they were written.
        out: list[str] = ["# generated", "table = 'demo'"]
        expected: dict[tuple[Any, ...], int] = {("table",): 2}
        for i, keys in enumerate(rows):
            if blank_lines:
                out.append("")
            out.append("[[row]]")
            expected[("row", i)] = len(out)
            expected.setdefault(("row",), len(out))
            seen = set()
            for key, value in keys:
                if key in seen:
                    continue
                seen.add(key)
                out.append(f"{key} = {value}")
                expected[("row", i, key)] = len(out)
                out[-1:] = out[-1].split("\n")
        text = "\n".join(out) + "\n"
        read_toml(text=text)  # the generated file is valid TOML
        assert key_lines(text) == expected

    @given(st.lists(st.sampled_from(['"""', "'''", '"', "'", "[", "]", "{", "}", "#", "\\",
                                     "a", " "]), max_size=10).map("".join),
           st.integers(0, 30), st.integers(0, 2))
    def test_the_quick_scan_of_a_value_agrees_with_the_token_scan(self, line, pos, depth):
        pos = min(pos, len(line))
        assert loader_module._scan(line, pos, depth) == \
            loader_module._scan_tokens(line, pos, depth)


class Demo(ShippedTable):
    FILE = "demo.toml"

    def __init__(self, loaded: Loaded) -> None:
        self.loaded = loaded

    @classmethod
    def from_toml(cls, path=None, *, text=None, source=None) -> Demo:
        return cls(load(SPEC, path, text=text, source=source))


class TestShippedTable:
    def test_from_dir(self, tmp_path):
        (tmp_path / "demo.toml").write_text(TABLE)
        demo = Demo.from_dir(tmp_path)
        assert [r.id for r in demo.loaded.rows] == ["r1", "r2"]
        assert demo.loaded.source == str(tmp_path / "demo.toml")

    def test_missing_file(self, tmp_path):
        with pytest.raises(RuleTableError) as info:
            Demo.from_dir(str(tmp_path))
        assert str(info.value) == f"{tmp_path / 'demo.toml'}: no such file"

    def test_from_toml_is_the_subclass_s(self):
        with pytest.raises(NotImplementedError):
            ShippedTable.from_toml(text="")


class TestImports:
    def test_importable_first(self):
        done = subprocess.run([sys.executable, "-c", "import buddy.rules.tables._loader"],
                              capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr.strip().splitlines()[-1:]
