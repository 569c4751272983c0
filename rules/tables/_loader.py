"""The one loader of every rule table: TOML text in, checked rows out, every problem at once.

A table declares itself with a :class:`TableSpec`: its name, the attrs class
of one row (typed fields, enums from the table's vocabulary, validators whose
errors carry ``field``), the attrs class of its other top-level keys, how a
row compiles (its conditions checked against the metric vocabulary, its
templates compiled) and the checks over the whole table. :func:`load` reads a
file or a text in four phases, each on what the phase before accepted:

1. **read**: the file and its TOML syntax (``file:line: invalid TOML: ...``);
   the digest (first 16 hex digits of the SHA-256 of the text);
2. **shape**: ``table`` and ``version``, the other top-level keys, and each
   row structured by the one cattrs converter (types, enums, required and
   unknown keys, field validators); duplicate row names;
3. **meaning**: ``spec.compile`` on each row that has its shape;
4. **the whole table**: ``spec.check`` (coverage, weights, tiers,
   dependencies, ...), once every row compiled.

It raises one :class:`~buddy.rules.base.errors.RuleTableError` holding every
problem, each one line ``source:line: row[id].field: message``: a row is
named by its key (``row[low.live]``, ``tool[form_fill]``), or by its index
when that is unreadable; a top-level key by the table's name
(``health.weights.rollback``). The line is that of the field's own key where
the file has it, else of the nearest enclosing key or ``[[row]]`` header; the
lines come from one pass over the text (:func:`key_lines`), made only when
there is a problem to place.
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Generic, Self, TypeVar

import attrs
import tomli

from buddy.rules.base._convert import Problem, structure_checked, structurer
from buddy.rules.base._files import NotReadable, read_regular
from buddy.rules.base._masking import shown
from buddy.rules.base.errors import RuleTableError
from buddy.rules.tables._checks import is_row_id
from buddy.rules.tables._conditions import Path as KeyPath

__all__ = [
    "Loaded",
    "NoKeys",
    "ShippedTable",
    "TableSpec",
    "TomlText",
    "key_lines",
    "line_of",
    "load",
    "read_toml",
]

F = TypeVar("F")
R = TypeVar("R")
C = TypeVar("C")

#: The largest table file read (a 10,000-tool catalogue is about 3 MB).
MAX_TABLE_BYTES = 64 * 1024 * 1024
#: The version of the format a file may state (``version = 1``); it may also name its
#: table (``table = "health"``), so that a file loaded as the wrong table says so.
VERSION = 1


@attrs.frozen
class NoKeys:
    """The top level of a file with no keys of its own besides its rows."""


def _no_check(file: Any, rows: Sequence[Any]) -> Iterable[Problem]:
    return ()


@attrs.frozen
class TableSpec(Generic[F, R, C]):
    """How one kind of table file is read.

    ``name`` is the table's name (the file's ``table = ...``, and the label of
    its top-level problems); ``row`` the attrs class of one element of the
    ``rows`` array, named in messages by its ``key`` when ``named(value)``
    holds; ``file`` the attrs class of the other top-level keys. ``compile``
    turns a row into what the table uses, or returns its problems (paths
    inside the row); ``check`` looks at the whole table and returns problems
    whose paths start at the top (``("row", 3, "when")``, ``("weights",)``).
    ``required`` says, per row key, what to say when a row lacks it (instead of
    ``is required``): a hint such as how to write a row that always holds.
    """

    name: str
    row: type[R]
    compile: Callable[[R], tuple[C | None, list[Problem]]]
    file: type[F] = attrs.field(default=NoKeys)  # type: ignore[assignment]
    check: Callable[[F, Sequence[C]], Iterable[Problem]] = _no_check
    rows: str = "row"
    key: str = "id"
    named: Callable[[Any], bool] = is_row_id
    required: Mapping[str, str] = attrs.field(factory=dict)


@attrs.frozen
class Loaded(Generic[F, C]):
    """A table read without a problem: its top-level keys, compiled rows, source and digest."""

    file: F
    rows: tuple[C, ...]
    source: str
    digest: str


@attrs.frozen
class TomlText:
    """A TOML file read and parsed: where from, its text, data and digest."""

    source: str
    text: str
    data: dict[str, Any]
    digest: str


def read_toml(path: Path | str | None = None, *, text: str | None = None,
              source: str | None = None) -> TomlText:
    """Read and parse a TOML file (or ``text``).

    Parameters
    ----------
    path : Path or str, optional
        The file, read as UTF-8 (unless ``text`` is given).
    text : str, optional
        The TOML text itself.
    source : str, optional
        How messages name it: by default the path, or ``<text>``.

    Returns
    -------
    TomlText
        The source, text, parsed data and digest (first 16 hex digits of the
        SHA-256 of the text).

    Raises
    ------
    RuleTableError
        Naming the file, and the line where known, for a missing or unreadable
        file, a syntax error or an integer of more digits than Python converts.

    Examples
    --------
    >>> read_toml(text='a = 1\\nb = \\n', source="t.toml")
    Traceback (most recent call last):
    ...
    buddy.rules.base.errors.RuleTableError: t.toml:2: invalid TOML: Invalid value
    """
    source = source or (str(path) if path is not None else "<text>")
    if text is None:
        if path is None:
            raise TypeError("read_toml needs a path or a text")
        try:
            text = read_regular(path, MAX_TABLE_BYTES).decode("utf-8")
        except FileNotFoundError:
            raise RuleTableError(f"{source}: no such file") from None
        except NotReadable as exc:
            raise RuleTableError(f"{source}: {exc}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise RuleTableError(f"{source}: cannot read: {exc}") from None
    try:
        data = tomli.loads(text)
    except tomli.TOMLDecodeError as exc:
        msg = str(exc)
        found = re.search(r"\(at line (\d+), column (\d+)\)", msg)
        if found:
            msg = msg[: found.start()].strip()
            raise RuleTableError(f"{source}:{found.group(1)}: invalid TOML: {msg}") from None
        raise RuleTableError(f"{source}: invalid TOML: {msg}") from None
    except ValueError:  # an integer of more digits than Python converts
        limit = sys.get_int_max_str_digits()
        long = re.search(rf"(?<![\w.])\d[\d_]{{{limit},}}", text)
        at = f":{text.count(chr(10), 0, long.start()) + 1}" if long else ""
        raise RuleTableError(f"{source}{at}: invalid TOML: an integer of more than {limit} "
                             "digits") from None
    except RecursionError:  # arrays or tables nested deeper than the parser goes
        raise RuleTableError(f"{source}: invalid TOML: nested too deeply") from None
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    return TomlText(source, text, data, digest)


def load(spec: TableSpec[F, R, C], path: Path | str | None = None, *, text: str | None = None,
         source: str | None = None) -> Loaded[F, C]:
    """Read, check and compile a table per ``spec``; every problem is reported at once.

    Parameters
    ----------
    spec : TableSpec
        The kind of table: its name, row and top-level classes, compile and check.
    path, text, source
        As for :func:`read_toml`.

    Returns
    -------
    Loaded
        The file's top-level keys (a ``spec.file``), the compiled rows in file
        order, the source and the digest.

    Raises
    ------
    RuleTableError
        Whose ``problems`` are every problem found, each a line
        ``source:line: row[id].field: message``.

    Examples
    --------
    >>> @attrs.frozen
    ... class Row:
    ...     id: str
    ...     limit: int = 1
    >>> spec = TableSpec("demo", Row, compile=lambda row: (row, []))
    >>> [r.limit for r in load(spec, text='[[row]]\\nid = "a"\\nlimit = 5\\n').rows]
    [5]
    >>> try:
    ...     load(spec, text='table = "demo"\\n[[row]]\\nid = "a"\\nlimit = 2.5\\n'
    ...          '[[row]]\\nid = "a"\\n', source="demo.toml")
    ... except RuleTableError as error:
    ...     print("\\n".join(error.problems))
    demo.toml:4: row[a].limit: must be a whole number (got 2.5)
    demo.toml:6: row[a].id: duplicate id (first at line 2)
    """
    toml = read_toml(path, text=text, source=source)
    report = _Report(spec, toml)
    data = dict(toml.data)
    raw_rows = data.pop(spec.rows, [])
    table = data.pop("table", spec.name)
    if table != spec.name:
        report.add(("table",), f"must be {shown(spec.name)} (got {shown(table)})")
    version = data.pop("version", VERSION)
    if type(version) is not int or version != VERSION:
        report.add(("version",), f"must be {VERSION} (got {shown(version)})")
    file, found = structure_checked(data, spec.file)
    report.extend((), found)

    rows: list[C] = []
    if not isinstance(raw_rows, list):
        report.add((spec.rows,), f"must be an array of [[{spec.rows}]] tables "
                                 f"(got {shown(raw_rows)})")
        raw_rows = []
    first: dict[str, int] = {}
    structure, key, named, compile_row = structurer(spec.row), spec.key, spec.named, spec.compile
    for index, raw in enumerate(raw_rows):
        name = raw.get(key) if isinstance(raw, Mapping) else None
        if isinstance(name, str) and named(name):
            report.names[index] = name
            if name not in first:
                first[name] = index
            else:
                line = report.line((spec.rows, first[name]))
                report.add((spec.rows, index, key), f"duplicate {key}" + (
                    f" (first at line {line})" if line is not None else ""))
        row, found = structure(raw)
        if found:
            report.extend((spec.rows, index), _hinted(found, spec.required))
        if row is None:
            continue
        compiled, found = compile_row(row)
        if found:
            report.extend((spec.rows, index), found)
        if compiled is not None:
            rows.append(compiled)

    if not report.problems and file is not None:
        report.extend((), spec.check(file, rows))
    report.raise_if_any()
    assert file is not None
    return Loaded(file, tuple(rows), toml.source, toml.digest)


def _hinted(found: Iterable[Problem], required: Mapping[str, str]) -> Iterable[Problem]:
    """``found``, a missing row key's ``is required`` replaced by the table's hint for it."""
    for problem in found:
        key = problem.path[0] if len(problem.path) == 1 else None
        if isinstance(key, str) and key in required and problem.message == "is required":
            yield Problem(problem.path, required[key])
        else:
            yield problem


class _Report:
    """The problems of one file, placed and labelled when raised."""

    def __init__(self, spec: TableSpec[Any, Any, Any], toml: TomlText) -> None:
        self.spec = spec
        self.toml = toml
        self.problems: list[Problem] = []
        self.names: dict[int, str] = {}  # row index -> its key, where readable
        self._lines: dict[KeyPath, int] | None = None

    def add(self, path: KeyPath, message: str) -> None:
        self.problems.append(Problem(path, message))

    def extend(self, prefix: KeyPath, found: Iterable[Problem]) -> None:
        self.problems.extend(Problem((*prefix, *p.path), p.message) for p in found)

    def line(self, path: KeyPath) -> int | None:
        if self._lines is None:
            self._lines = key_lines(self.toml.text)
        return line_of(self._lines, path)

    def raise_if_any(self) -> None:
        if self.problems:
            raise RuleTableError([self.render(p) for p in self.problems])

    def render(self, problem: Problem) -> str:
        path, rows = problem.path, self.spec.rows
        if len(path) >= 2 and path[0] == rows and isinstance(path[1], int):
            label = f"{rows}[{self.names.get(path[1], path[1])}]"
            rest = Problem(path[2:], "").where
            where = f"{label}.{rest}" if rest and not rest.startswith("[") else label + rest
        else:
            rest = Problem(path, "").where
            where = f"{self.spec.name}.{rest}" if rest and not rest.startswith("[") \
                else self.spec.name + rest
        line = self.line(path)
        at = f":{line}" if line is not None else ""
        return f"{self.toml.source}{at}: {where}: {problem.message}"


# -- line numbers -------------------------------------------------------------------

_BARE = r"[A-Za-z0-9_-]+"
_BASIC = r'"(?:[^"\\]|\\.)*"'
_LITERAL = r"'[^']*'"
_PART = re.compile(rf"{_BARE}|{_BASIC}|{_LITERAL}")
_DOTTED = rf"(?:{_BARE}|{_BASIC}|{_LITERAL})(?:[ \t]*\.[ \t]*(?:{_BARE}|{_BASIC}|{_LITERAL}))*"
_HEADER = re.compile(rf"[ \t]*(\[\[?)[ \t]*({_DOTTED})[ \t]*\]")
_KEY = re.compile(rf"[ \t]*({_DOTTED})[ \t]*=")
_BARE_KEY = re.compile(rf"[ \t]*({_BARE})[ \t]*=")
_OPENS = re.compile(r"[\[{]|\"\"\"|'''")
# What changes the state of a scan inside a value: strings, brackets, comments.
_TOKEN = re.compile(rf'"""|\'\'\'|{_BASIC}|{_LITERAL}|[\[\]{{}}#]')
_ONE_LINE_STRING = re.compile(rf"{_BASIC}|{_LITERAL}")


def key_lines(text: str) -> dict[KeyPath, int]:
    """The line (1-based) of every key and table header of a valid TOML ``text``, in one pass.

    Paths are keys and array-of-tables indexes from the top: ``("row", 2,
    "then")`` is the ``then`` key of the third ``[[row]]``; a header's path
    is its table's (``("row", 2)``), and ``("row",)`` is the first
    ``[[row]]``. Keys inside multi-line strings and arrays are not keys.

    >>> lines = key_lines("a = 1\\n[[row]]\\nid = 'x'\\ns = '''\\nb = 2\\n'''\\n[[row]]\\n"
    ...                   "[row.then]\\ntier = 'GOOD'\\n")
    >>> sorted(lines.items(), key=lambda item: item[1])  # doctest: +NORMALIZE_WHITESPACE
    [(('a',), 1), (('row',), 2), (('row', 0), 2), (('row', 0, 'id'), 3), (('row', 0, 's'), 4),
     (('row', 1), 7), (('row', 1, 'then'), 8), (('row', 1, 'then', 'tier'), 9)]
    """
    lines: dict[KeyPath, int] = {}
    table: KeyPath = ()
    arrays: dict[KeyPath, int] = {}  # an array of tables -> index of its current element
    closing: str | None = None       # the delimiter of the multi-line string we are in
    depth = 0                        # open brackets of a value spanning lines
    for number, line in enumerate(text.split("\n"), 1):
        pos = 0
        if closing is not None:
            pos = _string_end(line, 0, closing)
            if pos < 0:
                continue
            closing = None
        elif depth == 0:
            key = _BARE_KEY.match(line)  # the common case: one bare key (never a header)
            if key is not None:
                lines.setdefault((*table, key.group(1)), number)
            else:
                header = _HEADER.match(line)
                if header is not None:
                    parts = _parts(header.group(2))
                    parent = _resolve(parts[:-1], arrays)
                    if header.group(1) == "[[":
                        array = (*parent, parts[-1])
                        index = arrays[array] + 1 if array in arrays else 0
                        arrays[array] = index
                        lines.setdefault(array, number)
                        table = (*array, index)
                    else:
                        table = _resolve(parts, arrays)
                    for size in range(1, len(table) + 1):  # and the tables it implies
                        lines.setdefault(table[:size], number)
                    continue
                key = _KEY.match(line)
                if key is None:
                    continue
                parts = _parts(key.group(1))
                for size in range(1, len(parts) + 1):
                    lines.setdefault((*table, *parts[:size]), number)
            pos = key.end()
            if not _OPENS.search(line, pos):  # nothing that could span lines
                continue
        depth, closing = _scan(line, pos, depth)
    return lines


def line_of(lines: Mapping[KeyPath, int], path: KeyPath) -> int | None:
    """The line of ``path``, or of its nearest enclosing key the file has (None: none)."""
    for size in range(len(path), 0, -1):
        line = lines.get(path[:size])
        if line is not None:
            return line
    return None


def _scan(line: str, pos: int, depth: int) -> tuple[int, str | None]:
    """Bracket depth after ``line[pos:]``, and the multi-line string left open, if any."""
    rest = line[pos:]
    if '"""' not in rest and "'''" not in rest:  # the common case: strings within the line
        rest = _ONE_LINE_STRING.sub("", rest)
        if '"' not in rest and "'" not in rest:  # every string closed: count what is left
            rest = rest.partition("#")[0]
            return depth + rest.count("[") + rest.count("{") - rest.count("]") \
                - rest.count("}"), None
    return _scan_tokens(line, pos, depth)


def _scan_tokens(line: str, pos: int, depth: int) -> tuple[int, str | None]:
    """:func:`_scan`, token by token (what it does for a line with a multi-line string)."""
    while True:
        token = _TOKEN.search(line, pos)
        if token is None:
            return depth, None
        kind = token.group()
        if kind == "#":
            return depth, None
        if kind in ('"""', "'''"):
            pos = _string_end(line, token.end(), kind)
            if pos < 0:
                return depth, kind
            continue
        if kind in "[{":
            depth += 1
        elif kind in "]}":
            depth -= 1
        pos = token.end()


def _string_end(line: str, pos: int, closing: str) -> int:
    """Where the multi-line string closed by ``closing`` ends in ``line``, or -1."""
    while True:
        at = line.find(closing, pos)
        if at < 0:
            return -1
        backslashes = len(line[:at]) - len(line[:at].rstrip("\\"))
        if closing == "'''" or backslashes % 2 == 0:
            end = at + 3
            while line.startswith(closing[0], end) and end - at < 5:  # """" ends one later
                end += 1
            return end
        pos = at + 1


def _parts(dotted: str) -> tuple[str, ...]:
    """The keys of a dotted key, unquoted."""
    return tuple(_unquote(m.group()) for m in _PART.finditer(dotted))


def _unquote(part: str) -> str:
    if part[0] == "'":
        return part[1:-1]
    if part[0] == '"':
        return str(tomli.loads(f"k = {part}")["k"])  # escapes, exactly as TOML reads them
    return part


def _resolve(parts: tuple[str, ...], arrays: Mapping[KeyPath, int]) -> KeyPath:
    """A header's keys as a path: an array of tables becomes its current element."""
    path: KeyPath = ()
    for part in parts:
        path = (*path, part)
        if path in arrays:
            path = (*path, arrays[path])
    return path


# -- tables shipped with buddy ------------------------------------------------------

class ShippedTable:
    """``default()`` and ``from_dir()`` for a table class kept in one file of
    ``buddy/rules/``; the subclass sets ``FILE`` and defines ``from_toml``."""

    __slots__ = ()
    FILE: ClassVar[str]

    @classmethod
    def from_toml(cls, path: Path | str | None = None, *, text: str | None = None,
                  source: str | None = None) -> Self:
        """Load and validate; every problem is reported at once, naming file, line and field."""
        raise NotImplementedError

    @classmethod
    def default(cls) -> Self:
        """The table shipped with buddy (``buddy/rules/<FILE>``)."""
        ref = resources.files("buddy.rules").joinpath(cls.FILE)
        return cls.from_toml(text=ref.read_text(encoding="utf-8"),
                             source=f"buddy/rules/{cls.FILE}")

    @classmethod
    def from_dir(cls, directory: Path | str) -> Self:
        """Load ``FILE`` from a rules directory (a user's copy overriding the default)."""
        return cls.from_toml(Path(directory) / cls.FILE)
