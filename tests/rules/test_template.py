"""Tests for buddy.rules.tables._template: message templates compiled once, rendered safely."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from buddy.rules.tables._template import check_template, compile_template, template_errors


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


class TestCheckTemplate:
    NAMES = {"tool": str, "rate": float}

    def test_compiled(self):
        template, problems = check_template("{tool}: {rate:.0%}", self.NAMES, at=("then", "x"))
        assert problems == []
        assert template == compile_template("{tool}: {rate:.0%}", self.NAMES)

    def test_every_problem_placed(self):
        template, problems = check_template("{a} {tool.x}", self.NAMES, at=("then", "message"))
        assert template is None
        assert [str(p) for p in problems] == [
            "then.message: unknown field {a} (allowed: rate, tool)",
            "then.message: field {tool.x} must be a plain name (no attribute or index access)"]

    @pytest.mark.parametrize("text, message", [
        ("{" + "a" * 200 + "}",
         "unknown field {'" + "a" * 27 + "..." + "a" * 28 + "'} (allowed: rate, tool)"),
        ("{a\nb}", "field {'a\\nb'} must be a plain name (no attribute or index access)"),
        ("{tool!\n}", "field {tool}: conversion !'\\n' not allowed (use !r or !s)"),
        ("{rate:" + "x" * 200 + "}",
         "field {rate}: invalid format spec '" + "x" * 27 + "..." + "x" * 28 + "'"),
    ])
    def test_echoed_text_is_short_and_one_line(self, text, message):
        assert template_errors(text, self.NAMES) == [message]
