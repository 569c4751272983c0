"""Tables of rows in the shared rule format, loaded against a schema.

Every buddy table that is "rows of conditions" (anomalies, learning signals,
health tiers) is read by :func:`load_table`. A :class:`Schema` says what one
kind of table may hold: the metrics its conditions may test (with the TOML type
of their thresholds), the keys of ``then`` and any extra row keys (``scope``,
``signal``, ...), each a :class:`Field` with a type, a closed set of choices, a
range or a template flag. A row looks like::

    [[row]]
    id = "repeated_failures"
    scope = "tool"
    when = { all = [ { metric = "tool_success_rate", op = "lt", value = 50.0 } ] }
    then = { severity = 8, message = "{tool} succeeded {tool_success_rate:.0f}% of runs" }

Loading reports every problem at once, one line each naming the file, the line,
the row id and the field. Nothing read is evaluated: conditions compile to
closures (:func:`buddy.rules.tables._table.compile_when`) and templates to
:class:`Template` values whose fields are plain names of the row's metrics,
checked at load (no attribute or index access, no nested fields, a format spec
that fits the metric's type).
"""

from __future__ import annotations

import operator
import re
import string
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, TypeVar

import attrs

from buddy.rules.tables._table import (
    Op,
    Problems,
    ShippedTable,
    When,
    compile_when,
    read_toml,
    row_line,
)

__all__ = [
    "Field",
    "Kinds",
    "RuleRow",
    "RuleTable",
    "Schema",
    "Scope",
    "TableFile",
    "Template",
    "compile_template",
    "load_table",
]

Kinds = type | tuple[type, ...]
Reader = Callable[[Problems, Any, str, "int | None", Mapping[str, Kinds]], Any]
TF = TypeVar("TF", bound="TableFile")

#: Keys every row may carry besides the schema's extras.
ROW_KEYS = ("id", "when", "then", "description")
#: Top-level keys every table file may carry besides ``row`` and the schema's.
TOP_KEYS = ("table", "version")
_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:\-]{0,63}\Z")
# A standard format spec without nested fields; width and precision are bounded below.
_SPEC = re.compile(r"(?:.?[<>=^])?[+\- ]?z?#?0?(?P<width>\d*)[_,]?(?:\.(?P<precision>\d+))?"
                   r"[bcdeEfFgGnosxX%]?\Z", re.DOTALL)
_MAX_WIDTH = 99
_SAMPLES: Mapping[type, Any] = {float: 0.5, int: 1, str: "x", bool: True}
_BAD = object()


# -- templates -----------------------------------------------------------------

@attrs.frozen
class Template:
    """A ``str.format`` text compiled at load into literal and field parts.

    ``parts`` holds ``(literal, name, spec, conversion)``; ``name`` is None
    after the last field. :meth:`render` formats each value with the builtin
    :func:`format`: ``str.format`` never runs on the text again.

    >>> t = compile_template("{tool} at {rate:.0%}", {"tool": str, "rate": float})
    >>> t.render({"tool": "form_fill", "rate": 0.925})
    'form_fill at 92%'
    """

    text: str
    parts: tuple[tuple[str, str | None, str, str | None], ...] = attrs.field(repr=False)

    @property
    def names(self) -> tuple[str, ...]:
        """The field names, in order of appearance."""
        return tuple(name for _, name, _, _ in self.parts if name is not None)

    def render(self, values: Mapping[str, Any]) -> str:
        out = []
        for literal, name, spec, conversion in self.parts:
            out.append(literal)
            if name is not None:
                value = values[name]
                if conversion == "r":
                    value = repr(value)
                elif conversion == "s":
                    value = str(value)
                out.append(format(value, spec))
        return "".join(out)


def compile_template(text: str, names: Mapping[str, Kinds]) -> Template:
    """Compile ``text``, whose fields must be plain names among ``names``.

    Raises ``ValueError`` listing every problem, one per line.

    >>> compile_template("{x.__class__}", {"x": float})
    Traceback (most recent call last):
    ...
    ValueError: field {x.__class__} must be a plain name (no attribute or index access)
    >>> compile_template("{y}", {"x": float})
    Traceback (most recent call last):
    ...
    ValueError: unknown field {y} (allowed: x)
    """
    errors = _template_errors(text, names)
    if errors:
        raise ValueError("\n".join(errors))
    parts = tuple((literal, name, spec or "", conversion)
                  for literal, name, spec, conversion in string.Formatter().parse(text))
    return Template(text, parts)


def _template_errors(text: str, names: Mapping[str, Kinds]) -> list[str]:
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        return [f"is not a valid template: {exc}"]
    errors = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name == "" or name.isdigit():
            errors.append(f"positional field {{{name}}} not allowed: name a field "
                          f"(allowed: {', '.join(sorted(names))})")
            continue
        if not name.isidentifier():
            errors.append(f"field {{{name}}} must be a plain name (no attribute or index access)")
            continue
        if name not in names:
            errors.append(f"unknown field {{{name}}} (allowed: {', '.join(sorted(names))})")
            continue
        if conversion not in (None, "r", "s"):
            errors.append(f"field {{{name}}}: conversion !{conversion} not allowed (use !r or !s)")
            continue
        spec = spec or ""
        if "{" in spec or "}" in spec:
            errors.append(f"field {{{name}}}: nested fields in a format spec are not allowed")
            continue
        found = _SPEC.match(spec)
        if found is None:
            errors.append(f"field {{{name}}}: invalid format spec {spec!r}")
            continue
        for part in ("width", "precision"):
            if found.group(part) and int(found.group(part)) > _MAX_WIDTH:
                errors.append(f"field {{{name}}}: {part} above {_MAX_WIDTH} in {spec!r}")
                break
        else:
            kinds = names[name] if isinstance(names[name], tuple) else (names[name],)
            kinds = (str,) if conversion else kinds
            for kind in kinds:
                try:
                    format(_SAMPLES.get(kind, ""), spec)
                except (ValueError, TypeError):
                    errors.append(f"field {{{name}}}: format spec {spec!r} does not apply "
                                  f"to a {kind.__name__}")
                    break
    return errors


# -- schema --------------------------------------------------------------------

@attrs.frozen
class Field:
    """One key a row, its ``then`` or the file's top level may carry.

    ``choices`` closes the set of values; ``minimum``/``maximum`` bound numbers;
    ``template`` compiles a string into a :class:`Template` over the row's
    names; ``reader`` reads a structured value itself (it reports its own
    problems and returns None on any).
    """

    kind: Kinds
    required: bool = True
    default: Any = None
    choices: tuple[Any, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    template: bool = False
    reader: Reader | None = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen
class Scope:
    """The metrics a row of one scope may test, and extra names its templates may use."""

    metrics: Mapping[str, Kinds] = attrs.field(factory=dict)
    names: Mapping[str, Kinds] = attrs.field(factory=dict)


@attrs.frozen
class Schema:
    """What one kind of table may hold.

    ``scope`` names the extra row key whose value picks one of ``scopes``; a
    row may test ``metrics`` plus its scope's metrics and its templates may
    also name its scope's ``names``. ``check`` runs over the whole table after
    the rows are read (weights that must sum to 1, a fallback row, ...) and
    adds its problems to the same report.
    """

    table: str
    metrics: Mapping[str, Kinds]
    then: Mapping[str, Field]
    extras: Mapping[str, Field] = attrs.field(factory=dict)
    scope: str | None = None
    scopes: Mapping[str, Scope] = attrs.field(factory=dict)
    top: Mapping[str, Field] = attrs.field(factory=dict)
    nonempty_when: bool = False
    check: Callable[[Problems, RuleTable, Mapping[str, int | None]], None] | None = attrs.field(
        default=None, eq=False, repr=False)

    def metrics_of(self, scope: str | None) -> dict[str, Kinds]:
        """The metrics a row of ``scope`` may test (every scope's if unknown)."""
        if self.scope is None:
            return dict(self.metrics)
        if scope in self.scopes:
            return {**self.metrics, **self.scopes[scope].metrics}
        merged = dict(self.metrics)
        for item in self.scopes.values():
            merged.update(item.metrics)
        return merged

    def names_of(self, scope: str | None) -> dict[str, Kinds]:
        """The names a template of a row of ``scope`` may use."""
        names = self.metrics_of(scope)
        if self.scope is not None:
            for key, item in self.scopes.items():
                if scope not in self.scopes or key == scope:
                    names.update(item.names)
        return names


# -- rows and tables -------------------------------------------------------------

@attrs.frozen
class RuleRow:
    """One row: its id, conditions, ``then`` values (templates compiled) and extra keys."""

    id: str
    when: When
    then: Mapping[str, Any] = attrs.field(converter=lambda m: MappingProxyType(dict(m)))
    extras: Mapping[str, Any] = attrs.field(converter=lambda m: MappingProxyType(dict(m)),
                                            factory=dict)
    line: int | None = attrs.field(default=None, eq=False)

    def __hash__(self) -> int:
        return hash(self.id)


@attrs.frozen
class RuleTable:
    """The rows of one file, their predicates compiled once at load.

    ``top`` holds the file's top-level values (the schema's ``top`` fields);
    ``digest`` is the first 16 hex digits of the SHA-256 of the file's text.
    """

    rows: tuple[RuleRow, ...]
    schema: Schema = attrs.field(eq=False, repr=False)
    top: Mapping[str, Any] = attrs.field(factory=dict, eq=False)
    source: str = "<memory>"
    digest: str = ""
    compiled: tuple[tuple[RuleRow, Callable[[Mapping[str, Any]], bool]], ...] = attrs.field(
        init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        compiled = []
        for row in self.rows:
            scope = row.extras.get(self.schema.scope) if self.schema.scope else None
            getters = {m: operator.itemgetter(m) for m in self.schema.metrics_of(scope)}
            compiled.append((row, compile_when(row.when, getters)))
        object.__setattr__(self, "compiled", tuple(compiled))

    def matching(self, metrics: Mapping[str, Any], scope: str | None = None) -> list[RuleRow]:
        """The rows (of ``scope``, if given) whose ``when`` holds on ``metrics``, in file order."""
        key = self.schema.scope
        return [row for row, holds in self.compiled
                if (scope is None or row.extras.get(key) == scope) and holds(metrics)]

    def predicate(self, row_id: str) -> Callable[[Mapping[str, Any]], bool]:
        """The compiled predicate of one row."""
        for row, holds in self.compiled:
            if row.id == row_id:
                return holds
        raise KeyError(row_id)


def load_table(schema: Schema, path: Path | str | None = None, *, text: str | None = None,
               source: str | None = None) -> RuleTable:
    """Read and validate a table against ``schema``; every problem is reported at once.

    Raises :class:`~buddy.rules.base.errors.RuleTableError` whose ``problems`` are
    lines ``file:line: row[id].field: message``.

    >>> schema = Schema("demo", {"rate": float}, {"label": Field(str)})
    >>> load_table(schema, text='[[row]]\\nid = "a"\\n'
    ...     'when = { all = [ { metric = "rat", op = "gt", value = 0.5 } ] }\\n'
    ...     'then = { label = "x", colour = "red" }\\n', source="demo.toml")
    Traceback (most recent call last):
    ...
    buddy.rules.base.errors.RuleTableError: demo.toml:3: row[a].when.all[0].metric: must be ...
    """
    data, text, digest = read_toml(path, text, source)
    source = source or (str(path) if path is not None else "<text>")
    problems = Problems(source, text)
    lines = text.splitlines()
    top_lines = {key: _top_line(lines, key) for key in data}
    name = schema.table
    for key in sorted(set(data) - {*TOP_KEYS, "row", *schema.top}):
        problems.add(f"{name}.{key}", "unknown key", top_lines.get(key))
    if "table" in data and data["table"] != schema.table:
        problems.add(f"{name}.table", f"must be {schema.table!r} (got {data['table']!r})",
                     top_lines.get("table"))
    if "version" in data and (type(data["version"]) is not int or data["version"] != 1):
        problems.add(f"{name}.version", f"must be 1 (got {data['version']!r})",
                     top_lines.get("version"))
    top: dict[str, Any] = {}
    for key, spec in schema.top.items():
        value = _read(problems, data, key, spec, name, top_lines.get(key), schema.metrics, {})
        if value is not _BAD:
            top[key] = value

    raw_rows = data.get("row", [])
    if not isinstance(raw_rows, list) or not all(isinstance(r, Mapping) for r in raw_rows):
        problems.add(f"{name}.row", "must be an array of [[row]] tables", top_lines.get("row"))
        raw_rows = []
    rows: list[RuleRow] = []
    seen: dict[str, int | None] = {}
    for index, raw in enumerate(raw_rows):
        start = row_line(text, "row", index)
        span = _row_lines(lines, start)
        row_id, row = _read_row(problems, schema, raw, index, start, span)
        if row_id is not None and row_id in seen:
            first = f" (first at line {seen[row_id]})" if seen[row_id] else ""
            problems.add(f"row[{row_id}].id", f"duplicate id{first}", span.get("id", start))
            continue
        if row_id is not None:
            seen[row_id] = start
        if row is not None:
            rows.append(row)
    table = RuleTable(tuple(rows), schema=schema, top=MappingProxyType(top), source=source,
                      digest=digest) if not problems.items else None
    if table is not None and schema.check is not None:
        schema.check(problems, table, top_lines)
    problems.raise_if_any()
    assert table is not None
    return table


def _read_row(problems: Problems, schema: Schema, raw: Mapping[str, Any], index: int,
              line: int | None, span: Mapping[str, int]) -> tuple[str | None, RuleRow | None]:
    """The row's id (if readable) and the row (if it has no problem)."""
    before = len(problems.items)
    where = f"row[{index}]"
    row_id = problems.field(raw, "id", str, where, span.get("id", line))
    if row_id is not None and not _ID.match(row_id):
        problems.add(f"{where}.id", "must be 1-64 letters, digits or _ . : - "
                     f"(got {row_id!r})", span.get("id", line))
        row_id = None
    where = f"row[{row_id}]" if row_id else where
    for key in sorted(set(raw) - {*ROW_KEYS, *schema.extras}):
        problems.add(f"{where}.{key}", "unknown key", span.get(key, line))

    extras: dict[str, Any] = {}
    for key, spec in schema.extras.items():
        value = _read(problems, raw, key, spec, where, span.get(key, line), schema.metrics, {})
        if value is not _BAD:
            extras[key] = value
    scope = extras.get(schema.scope) if schema.scope else None
    metrics = schema.metrics_of(scope)
    names = schema.names_of(scope)

    when_line = span.get("when", line)
    if "when" not in raw:  # a forgotten `when` must not make a row fire always
        problems.add(f"{where}.when", "is required (use `when = {}` for a row that always "
                     "holds)", line)
    when = problems.when(raw.get("when", {}), metrics, f"{where}.when", when_line)
    if when is not None:
        raw_when = raw.get("when")
        if schema.nonempty_when and isinstance(raw_when, Mapping) \
                and not (raw_when.get("all") or raw_when.get("any")):
            problems.add(f"{where}.when", "must hold at least one condition", when_line)
        for group in ("all", "any"):
            for i, cond in enumerate(getattr(when, group)):
                kinds = metrics[cond.metric]
                kinds = kinds if isinstance(kinds, tuple) else (kinds,)
                if (str in kinds or bool in kinds) and cond.op not in (Op.EQ, Op.NE):
                    problems.add(f"{where}.when.{group}[{i}].op", f"{cond.metric} is not a "
                                 f"number: must be eq or ne (got {cond.op.value!r})", when_line)

    then_line = span.get("then", line)
    then: dict[str, Any] = {}
    raw_then = problems.field(raw, "then", dict, where, then_line)
    if raw_then is not None:
        for key in sorted(set(raw_then) - set(schema.then)):
            problems.add(f"{where}.then.{key}", "unknown key", span.get(f"then.{key}", then_line))
        for key, spec in schema.then.items():
            value = _read(problems, raw_then, key, spec, f"{where}.then",
                          span.get(f"then.{key}", then_line), metrics, names)
            if value is not _BAD:
                then[key] = value
    if len(problems.items) > before or when is None:
        return row_id, None
    return row_id, RuleRow(row_id, when, then, extras, line=line)


def _read(problems: Problems, data: Mapping[str, Any], key: str, spec: Field, parent: str,
          line: int | None, metrics: Mapping[str, Kinds], names: Mapping[str, Kinds]) -> Any:
    """Read ``parent.key`` per its spec; ``_BAD`` after reporting a problem."""
    where = f"{parent}.{key}"
    if key not in data:
        if spec.required:
            problems.add(where, "is required", line)
            return _BAD
        return spec.default
    value = problems.field(data, key, spec.kind, parent, line)
    if value is None:
        return _BAD
    if spec.choices and value not in spec.choices:
        allowed = ", ".join(str(c) for c in spec.choices)
        problems.add(where, f"must be one of {allowed} (got {value!r})", line)
        return _BAD
    if spec.minimum is not None and value < spec.minimum:
        problems.add(where, f"must be >= {spec.minimum:g} (got {value!r})", line)
        return _BAD
    if spec.maximum is not None and value > spec.maximum:
        problems.add(where, f"must be <= {spec.maximum:g} (got {value!r})", line)
        return _BAD
    if spec.template:
        errors = _template_errors(value, names)
        for error in errors:
            problems.add(where, error, line)
        return _BAD if errors else compile_template(value, names)
    if spec.reader is not None:
        value = spec.reader(problems, value, where, line, metrics)
        return _BAD if value is None else value
    return value


# -- line numbers ------------------------------------------------------------------

def _top_line(lines: list[str], key: str) -> int | None:
    """Line of a top-level ``key = ...`` (before any table) or ``[key]`` header."""
    assign = re.compile(rf"\s*{re.escape(key)}\s*=")
    header = re.compile(rf"\s*\[\[?\s*{re.escape(key)}\s*\]")
    in_table = False
    for i, text in enumerate(lines):
        if header.match(text):
            return i + 1
        if text.lstrip().startswith("["):
            in_table = True
        elif not in_table and assign.match(text):
            return i + 1
    return None


def _row_lines(lines: list[str], start: int | None) -> dict[str, int]:
    """Lines of a row's keys (``id``, ``when``, ``then``, ``then.<key>``), from its header."""
    if start is None:
        return {}
    found: dict[str, int] = {}
    section = ""
    for i in range(start, len(lines)):  # `start` is 1-based: this begins after the header
        text = lines[i].strip()
        if text.startswith("["):
            sub = re.match(r"\[\s*row\.([A-Za-z0-9_]+)\s*\]", text)
            if sub is None:
                break
            section = sub.group(1)
            found.setdefault(section, i + 1)
            continue
        key = re.match(r"([A-Za-z0-9_]+)\s*=", text)
        if key:
            name = f"{section}.{key.group(1)}" if section else key.group(1)
            found.setdefault(name, i + 1)
    return found


# -- table files -------------------------------------------------------------------

class TableFile(ShippedTable):
    """Loading for a table class kept in one file of ``buddy/rules/``.

    A subclass sets ``FILE`` and ``SCHEMA`` and builds itself from a loaded
    :class:`RuleTable` in :meth:`from_table`.
    """

    __slots__ = ()
    SCHEMA: ClassVar[Schema]
    table: RuleTable | None  # the loaded table (None for one built in code)

    @property
    def source(self) -> str:
        return self.table.source if self.table is not None else "<memory>"

    @property
    def digest(self) -> str:
        return self.table.digest if self.table is not None else ""

    @classmethod
    def from_table(cls: type[TF], table: RuleTable) -> TF:
        raise NotImplementedError

    @classmethod
    def from_toml(cls: type[TF], path: Path | str | None = None, *, text: str | None = None,
                  source: str | None = None) -> TF:
        """Load and validate; every problem is reported at once, naming file, line and field."""
        return cls.from_table(load_table(cls.SCHEMA, path, text=text, source=source))

