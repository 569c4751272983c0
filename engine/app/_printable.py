"""User values made safe to print: on a terminal, in rich markup, in JSON, in Markdown.

Agent ids, plan ids, file names and audit values come from whoever wrote the
plans, the log or the command line. Printed raw, an ANSI escape in one clears
the screen or forges a line, and rich reads ``[red]`` in one as markup (so
they go to rich as :class:`~rich.text.Text`, never inside markup). Every
character Python would not print (``str.isprintable``: controls, format and
separator characters such as U+2028 and the bidi overrides, surrogates,
unassigned code points) is shown as its escape, ``\\xNN``, ``\\uNNNN`` or
``\\UNNNNNNNN``; ordinary spaces stay.
"""

from __future__ import annotations

from rich.text import Text

__all__ = ["md_cell", "plain", "printable", "printable_json"]


def _escaped(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(value: object) -> str:
    """``str(value)`` with every unprintable character escaped (see the module).

    >>> printable("agent\\x1b[2J\\u2028x y")
    'agent\\\\x1b[2J\\\\u2028x y'
    >>> printable("plain text, é and 東京")
    'plain text, é and 東京'
    """
    text = str(value)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch == " " else _escaped(ch) for ch in text)


def plain(value: object, style: str = "") -> Text:
    """``value`` as rich text: printable, and never read as markup (``[red]`` stays).

    >>> plain("[red]x\\x07[/]").plain
    '[red]x\\\\x07[/]'
    """
    return Text(printable(value), style=style)


def printable_json(text: str) -> str:
    """JSON text with every unprintable character (only strings can hold them, raw
    C1 controls and U+2028 among them) as a ``\\uNNNN`` escape; newlines between
    values stay. The result parses to the same value.

    >>> printable_json('{"agent": "a\\x9bb\\u2028"}')
    '{"agent": "a\\\\u009bb\\\\u2028"}'
    """
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable() or ch in " \n":
            out.append(ch)
            continue
        code = ord(ch)
        if code >= 0x10000:  # a pair of surrogate escapes, as JSON spells it
            code -= 0x10000
            out.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}")
        else:
            out.append(f"\\u{code:04x}")
    return "".join(out)


def md_cell(value: object) -> str:
    """``value`` for a Markdown table cell or line of text: printable, and none of
    ``\\ | < [ ] ` `` read as Markdown (no HTML, links, code or cell breaks).

    >>> md_cell("a|b <script> [x](http://e) `c`")
    'a\\\\|b \\\\<script> \\\\[x\\\\](http://e) \\\\`c\\\\`'
    """
    text = printable(value)
    for ch in "\\|<[]`":
        text = text.replace(ch, "\\" + ch)
    return text
