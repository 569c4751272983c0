"""Tests for buddy.engine.app._printable: user values made safe to print."""

from __future__ import annotations

import json
import re

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console
from rich.table import Table

from buddy.engine.app._printable import md_cell, plain, printable, printable_json

#: Text of any code point JSON can carry (no lone surrogates).
any_text = st.text(st.characters(exclude_categories=["Cs"]))


def shown_only_printable(text: str) -> bool:
    return all(ch.isprintable() or ch == " " for ch in text)


class TestPrintable:
    @pytest.mark.parametrize("text, shown", [
        ("plain, é, 東京 and emoji 🎉", "plain, é, 東京 and emoji 🎉"),
        ("\x1b[2J", "\\x1b[2J"), ("a\nb\tc\r", "a\\x0ab\\x09c\\x0d"), ("\x7f\x9b", "\\x7f\\x9b"),
        ("\u2028\u2029\u0085", "\\u2028\\u2029\\x85"), ("\u202eevil", "\\u202eevil"),
        ("\U000e0001", "\\U000e0001"), ("\ud800", "\\ud800"), ("a\xa0b", "a\\xa0b"),
    ])
    def test_escapes(self, text, shown):
        assert printable(text) == shown

    def test_any_value(self):
        assert printable(3) == "3" and printable(None) == "None"

    @given(any_text)
    def test_never_a_character_a_terminal_acts_on(self, text):
        assert shown_only_printable(printable(text))
        assert printable(printable(text)) == printable(text)


class TestPlain:
    @given(any_text)
    def test_rich_prints_the_text_as_given(self, text):
        console = Console(width=10_000, highlight=False, color_system=None, soft_wrap=True)
        with console.capture() as captured:
            console.print(plain(text), end="")
        assert captured.get() == printable(text)

    @given(any_text)
    def test_in_a_table_cell_too(self, text):
        console = Console(width=10_000, highlight=False, color_system=None)
        table = Table.grid()
        table.add_row(plain(text))
        with console.capture() as captured:
            console.print(table)
        assert captured.get().rstrip(" \n") == printable(text).rstrip(" ")


class TestJson:
    @given(st.recursive(st.none() | st.booleans() | st.integers(-10, 10) | any_text,
                        lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(any_text, inner, max_size=3), max_leaves=10))
    def test_same_value_nothing_unprintable(self, value):
        text = printable_json(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())
        assert json.loads(text) == value
        assert all(ch.isprintable() or ch in " \n" for ch in text)


class TestMarkdownCell:
    @pytest.mark.parametrize("text, cell", [
        ("a|b", "a\\|b"), ("<img src=x>", "\\<img src=x>"), ("[x](http://e)", "\\[x\\](http://e)"),
        ("`c`", "\\`c\\`"), ("a\\b", "a\\\\b"), ("x\ny", "x\\\\x0ay"),
    ])
    def test_escapes(self, text, cell):
        assert md_cell(text) == cell

    @given(any_text)
    def test_no_cell_break_html_or_link(self, text):
        cell = md_cell(text)
        assert shown_only_printable(cell)
        # every | < [ ] ` is escaped: preceded by an odd number of backslashes
        for m in re.finditer(r"[|<\[\]`]", cell):
            run = len(cell[:m.start()]) - len(cell[:m.start()].rstrip("\\"))
            assert run % 2 == 1, cell
