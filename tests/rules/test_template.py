"""Tests for buddy.rules.tables._rowtable: tables of rows loaded against a schema."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from buddy.rules.base.errors import RuleTableError
from buddy.rules.tables._rowtable import (
    Field,
    RuleRow,
    RuleTable,
    Schema,
    Scope,
    TableFile,
    Template,
    compile_template,
    load_table,
)
from buddy.rules.tables._table import Condition, Op, When

SCHEMA = Schema(
    table="demo",
    metrics={"rate": float, "count": int, "name": str},
    then={"level": Field(int, minimum=1, maximum=10),
          "note": Field(str, template=True),
          "kind": Field(str, required=False, default="info", choices=("info", "warn"))},
    extras={"scope": Field(str, choices=("a", "b"))},
    scope="scope",
    scopes={"a": Scope(metrics={"a_only": float}, names={"item": str}), "b": Scope()},
    top={"limit": Field(float, required=False, default=1.0, minimum=0.0)},
    nonempty_when=True,
)


def row(row_id: str = "r1", scope: str = "a", when: str = 'metric = "rate", op = "gt", value = 0.5',
        then: str = 'level = 3, note = "{item} at {rate:.0%}"', extra: str = "") -> str:
    return (f'[[row]]\nid = "{row_id}"\nscope = "{scope}"\n{extra}'
            f'when = {{ all = [ {{ {when} }} ] }}\nthen = {{ {then} }}\n\n')


# Header on lines 1-3; rows start at lines 4 and 10 (each row is 6 lines).
HEAD = 'table = "demo"\nversion = 1\n\n'
TABLE = HEAD + row("r1") + row("r2", "b", 'metric = "count", op = "ge", value = 3',
                              'level = 5, note = "{count} seen", kind = "warn"')


def problems_of(text: str) -> list[str]:
    with pytest.raises(RuleTableError) as info:
        load_table(SCHEMA, text=text, source="demo.toml")
    return info.value.problems


def one_problem(text: str) -> str:
    found = problems_of(text)
    assert len(found) == 1, found
    return found[0]


class TestTemplate:
    NAMES = {"tool": str, "rate": float, "count": int}

    def test_render(self):
        t = compile_template("{tool}: {rate:.0%} over {count} runs", self.NAMES)
        assert t.render({"tool": "form_fill", "rate": 0.925, "count": 12}) == \
            "form_fill: 92% over 12 runs"
        assert t.names == ("tool", "rate", "count")

    def test_literal_only_and_escaped_braces(self):
        assert compile_template("", {}).render({}) == ""
        assert compile_template("{{literal}} text", {}).render({}) == "{literal} text"

    @pytest.mark.parametrize("text, out", [
        ("{rate:.2f}", "0.50"), ("{rate:>8.1%}", "   50.0%"), ("{count:03d}", "007"),
        ("{tool!r}", "'x'"), ("{tool:<4}|", "x   |"), ("{count:,}", "7"),
    ])
    def test_format_specs(self, text, out):
        assert compile_template(text, self.NAMES).render(
            {"tool": "x", "rate": 0.5, "count": 7}) == out

    def test_render_never_formats_the_text_again(self):
        # A value that looks like a template stays text.
        t = compile_template("{tool}", self.NAMES)
        assert t.render({"tool": "{rate.__class__}"}) == "{rate.__class__}"

    @pytest.mark.parametrize("text, message", [
        ("{tool.__class__}", "field {tool.__class__} must be a plain name "
                             "(no attribute or index access)"),
        ("{tool.__class__.__mro__}", "field {tool.__class__.__mro__} must be a plain name "
                                     "(no attribute or index access)"),
        ("{tool[0]}", "field {tool[0]} must be a plain name (no attribute or index access)"),
        ("{0}", "positional field {0} not allowed: name a field (allowed: count, rate, tool)"),
        ("{}", "positional field {} not allowed: name a field (allowed: count, rate, tool)"),
        ("{secret}", "unknown field {secret} (allowed: count, rate, tool)"),
        ("{tool!a}", "field {tool}: conversion !a not allowed (use !r or !s)"),
        ("{rate:{count}}", "field {rate}: nested fields in a format spec are not allowed"),
        ("{rate:>999999999}", "field {rate}: width above 99 in '>999999999'"),
        ("{rate:.500f}", "field {rate}: precision above 99 in '.500f'"),
        ("{rate:d}", "field {rate}: format spec 'd' does not apply to a float"),
        ("{tool:.0%}", "field {tool}: format spec '.0%' does not apply to a str"),
        ("{rate:garbage}", "field {rate}: invalid format spec 'garbage'"),
        ("{tool", "is not a valid template: expected '}' before end of string"),
        ("tool}", "is not a valid template: Single '}' encountered in format string"),
    ])
    def test_rejected(self, text, message):
        with pytest.raises(ValueError) as info:
            compile_template(text, self.NAMES)
        assert str(info.value) == message

    def test_every_problem_listed(self):
        with pytest.raises(ValueError) as info:
            compile_template("{a} {tool.x}", self.NAMES)
        assert str(info.value).splitlines() == [
            "unknown field {a} (allowed: count, rate, tool)",
            "field {tool.x} must be a plain name (no attribute or index access)"]

    @given(st.text(max_size=40))
    def test_arbitrary_text_compiles_or_raises_value_error(self, text):
        try:
            t = compile_template(text, self.NAMES)
        except ValueError:
            return
        assert set(t.names) <= set(self.NAMES)
        t.render({"tool": "x", "rate": 0.5, "count": 1})


class TestLoad:
    def test_valid(self):
        table = load_table(SCHEMA, text=TABLE, source="demo.toml")
        assert [r.id for r in table.rows] == ["r1", "r2"]
        r1, r2 = table.rows
        assert r1.when == When(all=(Condition("rate", Op.GT, 0.5),))
        assert r1.extras == {"scope": "a"}
        assert r1.then["level"] == 3
        assert r1.then["kind"] == "info"  # the default
        assert isinstance(r1.then["note"], Template)
        assert r1.then["note"].render({"item": "x", "rate": 0.5}) == "x at 50%"
        assert r2.then["kind"] == "warn"
        assert (r1.line, r2.line) == (4, 10)
        assert table.top == {"limit": 1.0}
        assert table.source == "demo.toml"
        assert table.digest == hashlib.sha256(TABLE.encode()).hexdigest()[:16]

    def test_rows_are_immutable(self):
        r1 = load_table(SCHEMA, text=TABLE).rows[0]
        with pytest.raises(TypeError):
            r1.then["level"] = 9  # type: ignore[index]
        with pytest.raises(AttributeError):
            r1.id = "other"  # type: ignore[misc]

    def test_file_and_top_value(self, tmp_path):
        path = tmp_path / "demo.toml"
        path.write_text("limit = 2\n" + TABLE)
        table = load_table(SCHEMA, path)
        assert table.source == str(path)
        assert table.top == {"limit": 2.0}

    def test_matching(self):
        table = load_table(SCHEMA, text=TABLE)
        assert [r.id for r in table.matching({"rate": 0.6, "count": 3, "a_only": 0.0})] == \
            ["r1", "r2"]
        assert [r.id for r in table.matching({"rate": 0.5, "count": 3, "a_only": 0.0})] == ["r2"]
        assert [r.id for r in table.matching({"rate": 0.6, "count": 2, "a_only": 0.0})] == ["r1"]
        assert [r.id for r in table.matching({"rate": 0.6, "count": 3}, scope="b")] == ["r2"]
        assert table.predicate("r1")({"rate": 0.51}) is True
        with pytest.raises(KeyError):
            table.predicate("nope")

    def test_compiled_once(self):
        table = load_table(SCHEMA, text=TABLE)
        assert [r for r, _ in table.compiled] == list(table.rows)
        assert table.compiled is table.compiled

    def test_string_metric_equality(self):
        text = HEAD + row(when='metric = "name", op = "eq", value = "LIVE"')
        table = load_table(SCHEMA, text=text)
        assert table.matching({"name": "LIVE"}) == list(table.rows)
        assert table.matching({"name": "MOCK"}) == []

    def test_sub_table_then(self):
        text = HEAD + ('[[row]]\nid = "r1"\nscope = "b"\n'
                       'when = { all = [ { metric = "count", op = "ge", value = 1 } ] }\n'
                       '[row.then]\nlevel = 2\nnote = "n"\n')
        assert load_table(SCHEMA, text=text).rows[0].then["level"] == 2

    def test_row_hashable(self):
        table = load_table(SCHEMA, text=TABLE)
        assert len({*table.rows}) == 2
        assert isinstance(table.rows[0], RuleRow)


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
         "demo.toml:7: row[r1].when.all[0].value: must be float (got 'high')"),
        ('scope = "a"', 'scope = "c"',
         "demo.toml:6: row[r1].scope: must be one of a, b (got 'c')"),
        ("level = 3", "level = 11", "demo.toml:8: row[r1].then.level: must be <= 10 (got 11)"),
        ("level = 3", "level = 0", "demo.toml:8: row[r1].then.level: must be >= 1 (got 0)"),
        ("level = 3", "level = 3.5",
         "demo.toml:8: row[r1].then.level: must be int (got 3.5)"),
        ("level = 3, ", "",
         "demo.toml:8: row[r1].then.level: is required"),
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
        ('id = "r1"\n', 'id = "r1"\ncolour = "red"\n',
         "demo.toml:6: row[r1].colour: unknown key"),
        ('version = 1', 'version = 2', "demo.toml:2: demo.version: must be 1 (got 2)"),
        ('table = "demo"', 'table = "anomalies"',
         "demo.toml:1: demo.table: must be 'demo' (got 'anomalies')"),
        ('table = "demo"', 'table = "demo"\nextra = 1', "demo.toml:2: demo.extra: unknown key"),
        ('table = "demo"', 'limit = -1.0', "demo.toml:1: demo.limit: must be >= 0 (got -1.0)"),
    ])
    def test_one_problem(self, old, new, message):
        text = HEAD + row("r1")
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

    def test_int_metric_rejects_float(self):
        text = HEAD + row(when='metric = "count", op = "ge", value = 2.5')
        assert one_problem(text) == ("demo.toml:7: row[r1].when.all[0].value: must be int "
                                     "(got 2.5)")

    def test_duplicate_id(self):
        assert one_problem(HEAD + row("r1") + row("r1")) == \
            "demo.toml:11: row[r1].id: duplicate id (first at line 4)"

    def test_missing_id(self):
        text = HEAD + row("r1").replace('id = "r1"\n', "")
        assert one_problem(text) == "demo.toml:4: row[0].id: is required"

    def test_missing_when(self):
        text = HEAD + row("r1").replace('when = { all = [ { metric = "rate", op = "gt", '
                                        'value = 0.5 } ] }\n', "")
        assert one_problem(text) == ("demo.toml:4: row[r1].when: is required "
                                     "(use `when = {}` for a row that always holds)")

    def test_empty_when(self):
        text = HEAD + row("r1").replace('{ all = [ { metric = "rate", op = "gt", '
                                        'value = 0.5 } ] }', "{}")
        assert one_problem(text) == "demo.toml:7: row[r1].when: must hold at least one condition"

    def test_expression_string_is_not_a_when(self):
        text = HEAD + row("r1").replace('{ all = [ { metric = "rate", op = "gt", '
                                        'value = 0.5 } ] }', '"rate > 0.5"')
        assert one_problem(text) == ("demo.toml:7: row[r1].when: must be a table with 'all' "
                                     "and/or 'any' (got 'rate > 0.5')")

    def test_missing_then(self):
        text = HEAD + row("r1").replace('then = { level = 3, note = "{item} at {rate:.0%}" }\n',
                                        "")
        assert one_problem(text) == "demo.toml:4: row[r1].then: is required"

    def test_sub_table_field_line(self):
        text = HEAD + ('[[row]]\nid = "r1"\nscope = "b"\n'
                       'when = { all = [ { metric = "count", op = "ge", value = 1 } ] }\n'
                       '[row.then]\nlevel = 2\nnote = "{x.y}"\n')
        assert one_problem(text) == ("demo.toml:10: row[r1].then.note: field {x.y} must be a "
                                     "plain name (no attribute or index access)")

    def test_row_not_an_array(self):
        assert one_problem(HEAD + "row = 3\n") == \
            "demo.toml:4: demo.row: must be an array of [[row]] tables"

    def test_every_problem_at_once(self):
        text = (HEAD + row("r1", when='metric = "rat", op = "gt", value = 0.5')
                + row("r2", then='level = 99, note = "{x[0]}"') + row("r2"))
        assert problems_of(text) == [
            "demo.toml:7: row[r1].when.all[0].metric: must be one of a_only, count, name, rate "
            "(got 'rat')",
            "demo.toml:14: row[r2].then.level: must be <= 10 (got 99)",
            "demo.toml:14: row[r2].then.note: field {x[0]} must be a plain name "
            "(no attribute or index access)",
            "demo.toml:17: row[r2].id: duplicate id (first at line 10)",
        ]

    def test_error_text_is_one_line(self):
        text = HEAD + row("r1", when='metric = "rat", op = "=>", value = 0.5') + row("r1")
        with pytest.raises(RuleTableError) as info:
            load_table(SCHEMA, text=text, source="demo.toml")
        assert "\n" not in str(info.value)
        assert str(info.value).endswith("(and 1 more problem(s))")
        assert isinstance(info.value, ValueError)

    def test_syntax_error(self):
        with pytest.raises(RuleTableError) as info:
            load_table(SCHEMA, text=HEAD + "[[row]\n", source="demo.toml")
        assert str(info.value).startswith("demo.toml:4: invalid TOML")

    def test_check_hook_adds_to_the_same_report(self):
        def check(problems, table, lines):
            problems.add("demo.row", f"{len(table.rows)} rows, want 3", lines.get("row"))
        schema = Schema("demo", SCHEMA.metrics, SCHEMA.then, SCHEMA.extras, SCHEMA.scope,
                        SCHEMA.scopes, check=check)
        with pytest.raises(RuleTableError) as info:
            load_table(schema, text=TABLE, source="demo.toml")
        assert info.value.problems == ["demo.toml:4: demo.row: 2 rows, want 3"]


class Demo(TableFile):
    FILE = "demo.toml"
    SCHEMA = SCHEMA

    def __init__(self, table: RuleTable) -> None:
        self.table = table

    @classmethod
    def from_table(cls, table: RuleTable) -> Demo:
        return cls(table)


class TestTableFile:
    def test_from_dir(self, tmp_path):
        (tmp_path / "demo.toml").write_text(TABLE)
        demo = Demo.from_dir(tmp_path)
        assert [r.id for r in demo.table.rows] == ["r1", "r2"]
        assert demo.table.source == str(tmp_path / "demo.toml")

    def test_missing_file(self, tmp_path):
        with pytest.raises(RuleTableError) as info:
            Demo.from_dir(tmp_path)
        assert str(info.value) == f"{tmp_path / 'demo.toml'}: no such file"

    def test_from_toml_text(self):
        assert len(Demo.from_toml(text=TABLE).table.rows) == 2


class TestImports:
    def test_importable_first(self):
        done = subprocess.run([sys.executable, "-c", "import buddy.rules.tables._rowtable"],
                              capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr.strip().splitlines()[-1:]
