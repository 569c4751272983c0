"""The optimizer's history: Phase 18's four coordination files, or a ``buddy run waves`` tree.

:func:`load_coordination` reads a directory into one
:class:`CoordinationHistory`; :func:`agent_states` turns it into the
:class:`~buddy.engine.waves.AgentState` values the optimizer plans with.

**Phase 18's files** (002, "Input Formats"), ``source = "phase18 files"``:

``multi_agent_summary.json`` (required)
    ``total_agents``, ``total_tasks``, ``total_waves`` (whole numbers from 0 to
    2**53 - 1), ``success_rate``, ``retry_rate`` (in [0, 1]),
    ``avg_execution_time_ms`` (a finite number >= 0), ``avg_confidence_delta``
    (in [-1, 1]), ``agent_performance`` (agent id -> ``{"success_rate",
    "tasks"}``), ``timestamp`` (ISO 8601, optional, may be null).
``coordination_patterns.json`` (optional)
    A list of ``{"pattern_type", "agent_assignments": {agent: [task ids]},
    "success_rate", "confidence"}``.
``system_health.json`` (optional)
    ``{"overall_health_score", "health_status", "component_scores": {name:
    score}}``, scores in [0, 100].
``learning_signals.jsonl`` (optional)
    One ``{"signal_id", "type", "confidence", "description"}`` per line.

Every field 002 lists is required (``timestamp`` excepted) and any other key is
refused, so a misspelt field is an error, never a default.

**buddy's own outputs** (``buddy run waves --out DIR``), ``source = "buddy run
waves output"``, read with no hand editing; the fields are bridged so:

============================  ==============================================================
history                       ``buddy run waves`` output
============================  ==============================================================
total_agents                  ``len(agents)`` of ``phase21_execution_summary.json``
total_tasks                   ``total_tasks``
total_waves                   ``waves``
success_rate                  ``completed_tasks / total_tasks`` (0.0 for no task)
avg_execution_time_ms         mean ``end_time - start_time`` of every line of
                              ``wave_N/<agent>/executed_tasks.jsonl``, x 1000
avg_confidence_delta          over ``per_wave``, weighted by its ``tasks``: ``success_rate -
                              confidence`` (success observed minus success predicted)
retry_rate                    executed tasks with ``retry_count > 0`` / executed tasks (the
                              share of tasks retried, so a rate in [0, 1])
agent_performance             per agent, ``success_rate`` = the success of one attempt
                              (what the optimizer plans with; retries would hide a weak
                              agent), each attempt on the agent that ran it, from the
                              run's ``audit.jsonl`` (a task move into IN_PROGRESS an
                              attempt, a ``succeed`` a success); without a trail, over
                              the tasks whose last attempt it ran
                              (``executed_tasks.jsonl`` lines with a ``mode``): tasks
                              that succeeded / their ``retry_count + 1``; ``tasks`` =
                              the tasks whose last attempt it ran; an agent
                              that ran none: ``agent_performance``'s ``completed /
                              (completed + failed)`` (its ``success_rate`` when none
                              finished); ``avg_execution_time_ms = avg_latency x 1000``
timestamp                     ``end_time``
patterns                      one per wave (``per_wave``): ``wave_N/<agent>/
                              agent_assignments.jsonl``'s first assignments (reassignments
                              left out) by agent; ``pattern_type`` the line's ``strategy``
                              lower-cased; ``success_rate`` and ``confidence`` (the mean
                              predicted rate) the wave's ``per_wave`` row
health                        ``phase21_system_health.json``: ``health_score`` ->
                              ``overall_health_score``, ``health_status``; its ``metrics``
                              ``success_rate``, ``availability``, ``accuracy``,
                              ``load_balance``, ``confidence`` x 100 -> ``component_scores``
signals                       ``phase21_learning_signals.jsonl``: ``signal_type`` ->
                              ``type``, ``confidence``, ``content.insight`` ->
                              ``description``, ``signal_id`` = ``P21_LS_<line, 3 digits>``
============================  ==============================================================

The agent directories are the summary's ``agent_dirs`` (plain names only: a
name that could leave the tree is refused). Keys buddy writes and the history
does not need are ignored.

**Agent ids**, in either format, are any non-empty string: what ``buddy run
waves`` takes (an ``--agents-file`` key, or any non-empty ``agent_id`` a task
pins), so a wave run's own output loads as it is, an id such as ``"a
b\u2028c"`` or one holding a control character included (such an agent's
directory is ``agent_<index>``, as the wave run named it). The ids are data:
whoever prints one escapes it.

**Problems** are one line each, ``file:line: field: message``, the field a path
(``agent_performance.agent_0.success_rate``) and the line the one of the JSON
document or JSON Lines file where the bad value sits::

    summary.json:9: agent_performance.agent_0.success_rate: must be a number in [0, 1] (got 2)

The summary (of either kind) is required: any problem with it refuses the load
(:class:`~buddy.rules.base.errors.InputError`). A bad line of a JSON Lines file,
or a bad optional document, is left out and its problem kept in ``errors``
(``skipped`` counts them); with ``strict=True`` the first problem is raised
instead. Files are read as ``buddy run waves`` reads its inputs
(:mod:`._inputs`): regular files only (a FIFO or ``/dev/zero`` is refused
unopened or unread), at most 1 GiB, lines of at most 1 MiB split on ``\\n``
only (U+2028 in a JSON string is fine), a UTF-8 byte order mark at the start
ignored, integers past 64 bits read exactly (and refused as too large), NaN
and infinities refused (they are no JSON).
"""

from __future__ import annotations

import datetime as dt
import math
import os
import re
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import orjson

from buddy.engine.orchestration._plans import _kind, _loads
from buddy.engine.waves._inputs import (
    _BOM,
    MAX_INPUT_BYTES,
    _lines,
    _read_file,
)
from buddy.engine.waves._records import AgentState
from buddy.rules.base._masking import shown
from buddy.rules.base._values import plain_confidence, valid_confidence
from buddy.rules.base.errors import InputError

#: The largest audit trail read for the agents' attempts (8 GiB).
MAX_TRAIL_BYTES = 8 << 30
_TASK_MOVE = b'"machine":"task"'

__all__ = [
    "BUDDY_FILES",
    "MAX_COUNT",
    "PHASE18_FILES",
    "AgentPerformance",
    "CoordinationHealth",
    "CoordinationHistory",
    "CoordinationPattern",
    "CoordinationSignal",
    "CoordinationSummary",
    "agent_states",
    "load_coordination",
]

#: Phase 18's files: the summary (required), patterns, health, signals.
PHASE18_FILES = ("multi_agent_summary.json", "coordination_patterns.json",
                 "system_health.json", "learning_signals.jsonl")
#: ``buddy run waves``'s files read: the summary (required), health, signals.
BUDDY_FILES = ("phase21_execution_summary.json", "phase21_system_health.json",
               "phase21_learning_signals.jsonl")
#: The largest count a file may hold (the largest whole number a float holds exactly).
MAX_COUNT = 2**53 - 1
PHASE18, BUDDY = "phase18 files", "buddy run waves output"
_SUMMARY_KEYS = ("total_agents", "total_tasks", "total_waves", "success_rate",
                 "avg_execution_time_ms", "avg_confidence_delta", "retry_rate",
                 "agent_performance")
_HEALTH_RATES = ("success_rate", "availability", "accuracy", "load_balance", "confidence")
_PLAIN = re.compile(r"[A-Za-z0-9_]{1,60}")
_DIR = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)

Path_ = tuple[str | int, ...]


# -- the records -----------------------------------------------------------------------


@attrs.frozen
class AgentPerformance:
    """One agent's record: its success rate over ``tasks`` finished tasks, and (buddy's
    outputs only) its mean seconds per task in milliseconds."""

    success_rate: float
    tasks: int
    avg_execution_time_ms: float | None = None


@attrs.frozen
class CoordinationSummary:
    """``multi_agent_summary.json`` (002's fields), or its bridge from buddy's summary."""

    total_agents: int
    total_tasks: int
    total_waves: int
    success_rate: float
    avg_execution_time_ms: float
    avg_confidence_delta: float
    retry_rate: float
    agent_performance: Mapping[str, AgentPerformance]
    timestamp: str | None = None


@attrs.frozen
class CoordinationPattern:
    """One coordination pattern: how tasks were put on agents, and how it went.
    ``wave``: the wave it is of (buddy's outputs; None for Phase 18's)."""

    pattern_type: str
    agent_assignments: Mapping[str, tuple[str, ...]]
    success_rate: float
    confidence: float
    wave: int | None = None


@attrs.frozen
class CoordinationHealth:
    """``system_health.json``: the score (0-100), its tier, the score of each component."""

    overall_health_score: float
    health_status: str
    component_scores: Mapping[str, float]


@attrs.frozen
class CoordinationSignal:
    """A learning signal (a line of ``learning_signals.jsonl``)."""

    signal_id: str
    type: str
    confidence: float
    description: str


@attrs.frozen
class CoordinationHistory:
    """What earlier runs teach the optimizer, read by :func:`load_coordination`.

    ``health`` is None when the directory has no health file (or a bad one);
    ``errors`` holds one line per problem left out (``skipped`` of them);
    ``source`` is ``"phase18 files"`` or ``"buddy run waves output"``.
    """

    summary: CoordinationSummary
    patterns: tuple[CoordinationPattern, ...]
    health: CoordinationHealth | None
    signals: tuple[CoordinationSignal, ...]
    errors: tuple[str, ...]
    source: str
    directory: str = ""

    @property
    def skipped(self) -> int:
        return len(self.errors)


# -- finding the line of a value ---------------------------------------------------------


def _line_of(data: bytes, path: Path_) -> int:
    """The line of ``data`` (valid JSON) on which the value at ``path`` starts (1 when it
    cannot be found: it is missing, and so is its parent)."""
    stack: list[list[Any]] = []  # [kind "o"/"a", key or index, expecting a key]
    best, i, n = 0, 0, len(data)
    while i < n:
        c = data[i:i + 1]
        if c in b" \t\r\n,:":
            i += 1
            continue
        if c in b"}]":
            stack.pop()
            if stack and stack[-1][0] == "o":
                stack[-1][2] = True
            i += 1
            continue
        top = stack[-1] if stack else None
        if top is not None and top[0] == "o" and top[2]:  # a key
            m = _STRING.match(data, i)
            assert m is not None
            top[1], top[2] = orjson.loads(m.group()), False
            i = m.end()
            continue
        if top is not None and top[0] == "a":
            top[1] += 1
        here = tuple(f[1] for f in stack)
        if here == path[:len(here)]:  # on the way to it: the deepest such start so far
            best = i
            if here == path:
                break
        if c == b"{":
            stack.append(["o", None, True])
            i += 1
        elif c == b"[":
            stack.append(["a", -1, False])
            i += 1
        else:
            if c == b'"':
                m = _STRING.match(data, i)
                assert m is not None
                i = m.end()
            else:
                while i < n and data[i:i + 1] not in b" \t\r\n,]}":
                    i += 1
            if top is not None and top[0] == "o":
                top[2] = True
    return data.count(b"\n", 0, best) + 1


# -- checking values ---------------------------------------------------------------------


class _Bad(Exception):
    """A problem with the value at ``path`` (``missing``: the key is absent there)."""

    def __init__(self, path: Path_, message: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.path, self.message, self.missing = path, message, missing


def _dotted(path: Path_) -> str:
    out = ""
    for key in path:
        if isinstance(key, int):
            out += f"[{key}]"
        elif _PLAIN.fullmatch(key):
            out += f".{key}" if out else key
        else:
            out += f"[{shown(key)}]"
    return out


def _object(value: Any, at: Path_, required: Sequence[str], optional: Sequence[str] = (),
            *, closed: bool = True) -> dict[str, Any]:
    if type(value) is not dict:
        raise _Bad(at, f"must be an object (got {_kind(value)})")
    if closed:
        known = {*required, *optional}
        for key in value:
            if key not in known:
                raise _Bad((*at, key), "unknown key")
    for key in required:
        if key not in value:
            raise _Bad((*at, key), "missing", missing=True)
    return value


def _count(value: Any, at: Path_) -> int:
    if type(value) is not int or not 0 <= value <= MAX_COUNT:
        raise _Bad(at, f"must be a whole number in [0, 2**53 - 1] (got {shown(value)})")
    return value


def _rate(value: Any, at: Path_) -> float:
    if not valid_confidence(value):
        raise _Bad(at, f"must be a number in [0, 1] (got {shown(value)})")
    return float(plain_confidence(value))


def _number(value: Any, at: Path_, low: float, high: float) -> float:
    ok = type(value) is float and math.isfinite(value) or \
        type(value) is int and abs(value) <= MAX_COUNT  # (no float of a huge int)
    if not ok or not low <= value <= high:
        bounds = f"[{low:g}, {high:g}]" if math.isfinite(high) else f">= {low:g}"
        raise _Bad(at, f"must be a finite number {'in ' if math.isfinite(high) else ''}"
                       f"{bounds} (got {shown(value)})")
    return float(value)


def _text(value: Any, at: Path_, *, empty: bool = False) -> str:
    if type(value) is not str or (not empty and value == ""):
        raise _Bad(at, f"must be a {'' if empty else 'non-empty '}string (got {shown(value)})")
    return value


def _agent(key: str, at: Path_) -> str:
    """An agent id: any non-empty string, as ``buddy run waves`` takes one (a task may
    pin any), so a wave run's own output always loads."""
    if key == "":
        raise _Bad(at, "an agent id must be a non-empty string (got '')")
    return key


def _timestamp(value: Any, at: Path_) -> str | None:
    if value is None:
        return None
    if type(value) is str:
        try:
            dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            return value
        except ValueError:
            pass
    raise _Bad(at, f"must be an ISO 8601 date and time or null (got {shown(value)})")


# -- 002's documents and lines ---------------------------------------------------------------


def _summary18(doc: Any) -> CoordinationSummary:
    d = _object(doc, (), _SUMMARY_KEYS, ("timestamp",))
    perf: dict[str, AgentPerformance] = {}
    table = _object(d["agent_performance"], ("agent_performance",), (), closed=False)
    for agent, row in table.items():
        at = ("agent_performance", agent)
        _agent(agent, at)
        r = _object(row, at, ("success_rate", "tasks"))
        perf[agent] = AgentPerformance(_rate(r["success_rate"], (*at, "success_rate")),
                                       _count(r["tasks"], (*at, "tasks")))
    return CoordinationSummary(
        _count(d["total_agents"], ("total_agents",)), _count(d["total_tasks"], ("total_tasks",)),
        _count(d["total_waves"], ("total_waves",)), _rate(d["success_rate"], ("success_rate",)),
        _number(d["avg_execution_time_ms"], ("avg_execution_time_ms",), 0, math.inf),
        _number(d["avg_confidence_delta"], ("avg_confidence_delta",), -1, 1),
        _rate(d["retry_rate"], ("retry_rate",)), perf,
        _timestamp(d.get("timestamp"), ("timestamp",)))


def _assignments(value: Any, at: Path_) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for agent, ids in _object(value, at, (), closed=False).items():
        where = (*at, agent)
        _agent(agent, where)
        if type(ids) is not list:
            raise _Bad(where, f"must be a list of task ids (got {_kind(ids)})")
        for i, tid in enumerate(ids):
            _text(tid, (*where, i))
        out[agent] = tuple(ids)
    return out


def _patterns18(doc: Any) -> tuple[CoordinationPattern, ...]:
    if type(doc) is not list:
        raise _Bad((), f"must be a list of patterns (got {_kind(doc)})")
    out = []
    keys = ("pattern_type", "agent_assignments", "success_rate", "confidence")
    for i, item in enumerate(doc):
        d = _object(item, (i,), keys)
        out.append(CoordinationPattern(
            _text(d["pattern_type"], (i, "pattern_type")),
            _assignments(d["agent_assignments"], (i, "agent_assignments")),
            _rate(d["success_rate"], (i, "success_rate")),
            _rate(d["confidence"], (i, "confidence"))))
    return tuple(out)


def _health18(doc: Any) -> CoordinationHealth:
    d = _object(doc, (), ("overall_health_score", "health_status", "component_scores"))
    scores = {name: _number(v, ("component_scores", name), 0, 100) for name, v in
              _object(d["component_scores"], ("component_scores",), (), closed=False).items()}
    return CoordinationHealth(
        _number(d["overall_health_score"], ("overall_health_score",), 0, 100),
        _text(d["health_status"], ("health_status",)), scores)


def _signal18(item: Any, n: int) -> CoordinationSignal:
    d = _object(item, (), ("signal_id", "type", "confidence", "description"))
    return CoordinationSignal(_text(d["signal_id"], ("signal_id",)), _text(d["type"], ("type",)),
                              _rate(d["confidence"], ("confidence",)),
                              _text(d["description"], ("description",), empty=True))


# -- buddy's documents and lines -------------------------------------------------------------


@attrs.frozen
class _BuddyRun:
    """What buddy's summary says, checked: the summary's bridge before the tree's numbers."""

    doc: dict[str, Any]
    agents: tuple[str, ...]
    dirs: Mapping[str, str]
    waves: tuple[int, ...]
    rows: Mapping[int, dict[str, Any]]
    strategy: str


def _buddy_summary(doc: Any) -> _BuddyRun:
    d = _object(doc, (), ("total_tasks", "completed_tasks", "waves", "agents", "agent_dirs",
                          "per_wave", "agent_performance", "assignment_strategy"),
                closed=False)
    total = _count(d["total_tasks"], ("total_tasks",))
    if _count(d["completed_tasks"], ("completed_tasks",)) > total:
        raise _Bad(("completed_tasks",), f"must be at most total_tasks ({total}) (got "
                                         f"{d['completed_tasks']})")
    _count(d["waves"], ("waves",))
    if type(d["agents"]) is not list:
        raise _Bad(("agents",), f"must be a list of agent ids (got {_kind(d['agents'])})")
    agents = tuple(_agent(_text(a, ("agents", i)), ("agents", i))
                   for i, a in enumerate(d["agents"]))
    dirs: dict[str, str] = {}
    for agent, name in _object(d["agent_dirs"], ("agent_dirs",), (), closed=False).items():
        if agent not in agents:
            raise _Bad(("agent_dirs", agent), "names no agent of agents")
        if type(name) is not str or not _DIR.fullmatch(name):
            raise _Bad(("agent_dirs", agent), f"must be a plain directory name (got "
                                              f"{shown(name)})")
        dirs[agent] = name
    if type(d["per_wave"]) is not list:
        raise _Bad(("per_wave",), f"must be a list of waves (got {_kind(d['per_wave'])})")
    rows: dict[int, dict[str, Any]] = {}
    for i, row in enumerate(d["per_wave"]):
        r = _object(row, ("per_wave", i), ("wave", "tasks", "success_rate", "confidence"),
                    closed=False)
        wave = _count(r["wave"], ("per_wave", i, "wave"))
        if wave in rows:
            raise _Bad(("per_wave", i, "wave"), f"wave {wave} is listed twice")
        rows[wave] = {"tasks": _count(r["tasks"], ("per_wave", i, "tasks")),
                      "success_rate": _rate(r["success_rate"], ("per_wave", i, "success_rate")),
                      "confidence": _rate(r["confidence"], ("per_wave", i, "confidence"))}
    for agent, row in _object(d["agent_performance"], ("agent_performance",), (),
                              closed=False).items():
        at = ("agent_performance", agent)
        if agent not in agents:
            raise _Bad(at, "names no agent of agents")
        r = _object(row, at, ("completed_tasks", "failed_tasks", "success_rate", "avg_latency"),
                    closed=False)
        for key in ("completed_tasks", "failed_tasks"):
            _count(r[key], (*at, key))
        _rate(r["success_rate"], (*at, "success_rate"))
        _number(r["avg_latency"], (*at, "avg_latency"), 0, math.inf)
    return _BuddyRun(d, agents, dirs, tuple(sorted(rows)), rows,
                     _text(d["assignment_strategy"], ("assignment_strategy",)))


def _buddy_assignment(item: Any) -> tuple[str, str, str] | None:
    """(agent, task, strategy) of a first assignment; None for a reassignment."""
    d = _object(item, (), ("task_id", "agent_id"), closed=False)
    tid, agent = _text(d["task_id"], ("task_id",)), _text(d["agent_id"], ("agent_id",))
    moved = d.get("reassigned_from")
    if moved is not None:
        _text(moved, ("reassigned_from",))
        return None
    return agent, tid, _text(d.get("strategy", ""), ("strategy",), empty=True)


def _buddy_executed(item: Any) -> tuple[float, int, bool, bool]:
    """(seconds, retries, succeeded, ran) of an executed task (``ran``: it has a mode,
    so a gate did not refuse it before it ran)."""
    d = _object(item, (), ("start_time", "end_time", "retry_count"), closed=False)
    start = _number(d["start_time"], ("start_time",), 0, math.inf)
    end = _number(d["end_time"], ("end_time",), start, math.inf)
    ok = d.get("success_indicator", False)
    if type(ok) is not bool:
        raise _Bad(("success_indicator",), f"must be true or false (got {_kind(ok)})")
    return end - start, _count(d["retry_count"], ("retry_count",)), ok, \
        d.get("mode") is not None


def _buddy_health(doc: Any) -> CoordinationHealth:
    d = _object(doc, (), ("health_score", "health_status", "metrics"), closed=False)
    metrics = _object(d["metrics"], ("metrics",), (), closed=False)
    scores = {k: round(100 * _rate(metrics[k], ("metrics", k)), 4)
              for k in _HEALTH_RATES if k in metrics}
    return CoordinationHealth(_number(d["health_score"], ("health_score",), 0, 100),
                              _text(d["health_status"], ("health_status",)), scores)


def _buddy_signal(item: Any, n: int) -> CoordinationSignal:
    d = _object(item, (), ("signal_type", "confidence"), closed=False)
    content = d.get("content", {})
    if type(content) is not dict:
        raise _Bad(("content",), f"must be an object (got {_kind(content)})")
    insight = _text(content.get("insight", ""), ("content", "insight"), empty=True)
    return CoordinationSignal(f"P21_LS_{n:03d}", _text(d["signal_type"], ("signal_type",)),
                              _rate(d["confidence"], ("confidence",)), insight)


# -- reading ---------------------------------------------------------------------------------


class _Reader:
    """Reads one directory's files, keeping the problems left out."""

    def __init__(self, directory: Path, strict: bool) -> None:
        self.dir, self.strict = directory, strict
        self.errors: list[str] = []

    def keep(self, message: str) -> None:
        if self.strict:
            raise InputError(message)
        self.errors.append(message)

    def document(self, name: str, check: Callable[[Any], Any]) -> Any:
        """The checked value of the JSON document ``name``; InputError at its first problem."""
        p = self.dir / name
        data = _read_file(p, MAX_INPUT_BYTES)
        if data.startswith(_BOM):
            data = data[len(_BOM):]
        if not data.strip():
            raise InputError(f"{p}:1: empty (a JSON document is needed)")
        try:
            value = _loads(data)
        except orjson.JSONDecodeError as exc:
            try:
                data.decode("utf-8")
            except UnicodeDecodeError as bad:
                line = data.count(b"\n", 0, bad.start) + 1
                column = bad.start - data.rfind(b"\n", 0, bad.start)
                raise InputError(f"{p}:{line}: not UTF-8: byte 0x{data[bad.start]:02x} at "
                                 f"column {column}") from None
            raise InputError(f"{p}:{exc.lineno}: invalid JSON: {' '.join(exc.msg.split())} "
                             f"at column {exc.colno}") from None
        try:
            return check(value)
        except _Bad as bad:
            line = _line_of(data, bad.path[:-1] if bad.missing else bad.path)
            field = _dotted(bad.path)
            raise InputError(f"{p}:{line}: {field + ': ' if field else ''}{bad.message}",
                             ) from None

    def optional(self, name: str, check: Callable[[Any], Any]) -> Any:
        """As :meth:`document`, None when the file is absent or (kept) refused."""
        if not os.path.lexists(self.dir / name):
            return None
        try:
            return self.document(name, check)
        except InputError as exc:
            self.keep(str(exc))
            return None

    def lines(self, path: Path, check: Callable[[Any, int], Any]) -> Iterator[Any]:
        """The checked value of each good line of the JSON Lines file ``path`` (absent:
        none); each bad line kept."""
        if not os.path.lexists(path):
            return
        try:
            data = _read_file(path, MAX_INPUT_BYTES)
        except InputError as exc:
            self.keep(str(exc))
            return
        problems: list[tuple[int, str]] = []
        for n, item in _lines(path, data, problems):
            while problems:
                self.keep(problems.pop(0)[1])
            try:
                yield check(item, n)
            except _Bad as bad:
                field = _dotted(bad.path)
                self.keep(f"{path}:{n}: {field + ': ' if field else ''}{bad.message}")
        for _, message in problems:
            self.keep(message)

    def trail_attempts(self, path: Path) -> dict[str, tuple[int, int]] | None:
        """Agent -> (attempts it ran, of them succeeded) from the run's audit trail: each
        task move into IN_PROGRESS is an attempt of the agent it cites, each ``succeed``
        a success. None when there is no trail (or it is not a regular file, or over
        :data:`MAX_TRAIL_BYTES`: said in ``errors``); a line that is not a task move
        JSON object is left out, said in ``errors``."""
        if not os.path.lexists(path):
            return None
        try:
            st = os.stat(path)
        except OSError as exc:
            self.keep(f"{path}: {exc.strerror or exc}")
            return None
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_TRAIL_BYTES:
            self.keep(f"{path}: not a regular file of at most {MAX_TRAIL_BYTES:,} bytes: "
                      "each agent's attempts are read from executed_tasks.jsonl instead")
            return None
        out: dict[str, tuple[int, int]] = {}
        with open(path, "rb") as fh:
            for n, line in enumerate(fh, 1):
                if _TASK_MOVE not in line:
                    continue
                try:
                    e = orjson.loads(line)
                    data = e["data"]
                    agent, dst, event = data.get("agent"), e["dst"], e["event"]
                except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
                    self.keep(f"{path}:{n}: not a task move (left out of the agents' attempts)")
                    continue
                if type(agent) is not str:
                    continue
                tries, ok = out.get(agent, (0, 0))
                out[agent] = (tries + (dst == "IN_PROGRESS"), ok + (event == "succeed"))
        return out

    def phase18(self) -> CoordinationHistory:
        summary = self.document(PHASE18_FILES[0], _summary18)
        patterns = self.optional(PHASE18_FILES[1], _patterns18) or ()
        health = self.optional(PHASE18_FILES[2], _health18)
        signals = tuple(self.lines(self.dir / PHASE18_FILES[3], _signal18))
        return CoordinationHistory(summary, patterns, health, signals, tuple(self.errors),
                                   PHASE18, str(self.dir))

    def buddy(self) -> CoordinationHistory:
        run: _BuddyRun = self.document(BUDDY_FILES[0], _buddy_summary)
        d = run.doc
        patterns: list[CoordinationPattern] = []
        latencies: list[float] = []
        retried = 0
        attempts: dict[str, tuple[int, int, int]] = {}  # agent -> (attempts, ok, tasks)
        for wave in run.waves:
            by_agent: dict[str, list[str]] = {}
            strategy = run.strategy
            for agent in run.agents:
                name = run.dirs.get(agent)
                if name is None:
                    continue
                where = self.dir / f"wave_{wave}" / name
                for got in self.lines(where / "agent_assignments.jsonl",
                                      lambda item, n: _buddy_assignment(item)):
                    if got is not None:
                        by_agent.setdefault(got[0], []).append(got[1])
                        strategy = got[2] or strategy
                for seconds, retries, ok, ran in self.lines(
                        where / "executed_tasks.jsonl", lambda item, n: _buddy_executed(item)):
                    latencies.append(seconds)
                    retried += retries > 0
                    if ran:  # what the agent's attempts came to
                        n, k, t = attempts.get(agent, (0, 0, 0))
                        attempts[agent] = (n + retries + 1, k + ok, t + 1)
            row = run.rows[wave]
            patterns.append(CoordinationPattern(
                strategy.lower(), {a: tuple(ts) for a, ts in by_agent.items()},
                row["success_rate"], row["confidence"], wave))
        weighed = sum(r["tasks"] for r in run.rows.values())
        delta = math.fsum(r["tasks"] * (r["success_rate"] - r["confidence"])
                          for r in run.rows.values()) / weighed if weighed else 0.0
        perf: dict[str, AgentPerformance] = {}
        trail = self.trail_attempts(self.dir / "audit.jsonl")
        for agent, r in d["agent_performance"].items():
            tasks = r["completed_tasks"] + r["failed_tasks"]
            n, ok, ran = attempts.get(agent, (0, 0, 0))
            if trail is not None:  # each attempt on the agent that ran it: exact
                n, ok = trail.get(agent, (0, 0))
            rate = ok / n if n else r["completed_tasks"] / tasks if tasks else \
                float(r["success_rate"])
            perf[agent] = AgentPerformance(
                rate, ran if n else tasks, 1000 * float(r["avg_latency"]) if tasks else None)
        total = d["total_tasks"]
        summary = CoordinationSummary(
            len(run.agents), total, d["waves"], d["completed_tasks"] / total if total else 0.0,
            1000 * math.fsum(latencies) / len(latencies) if latencies else 0.0,
            max(-1.0, min(1.0, delta)), retried / len(latencies) if latencies else 0.0, perf,
            d.get("end_time") if type(d.get("end_time")) is str else None)
        health = self.optional(BUDDY_FILES[1], _buddy_health)
        signals = tuple(self.lines(self.dir / BUDDY_FILES[2], _buddy_signal))
        return CoordinationHistory(summary, tuple(patterns), health, signals,
                                   tuple(self.errors), BUDDY, str(self.dir))


def load_coordination(directory: str | os.PathLike[str], *, strict: bool = False,
                      ) -> CoordinationHistory:
    """Read the coordination history in ``directory`` (the module's formats).

    Parameters
    ----------
    directory:
        Phase 18's output directory (``multi_agent_summary.json`` and the
        optional three), or a ``buddy run waves --out`` directory.
    strict:
        Raise the first problem instead of leaving the bad line or optional
        document out.

    Returns
    -------
    CoordinationHistory
        The history, with one line per problem left out in ``errors``.

    Raises
    ------
    InputError
        ``directory`` is no directory, holds neither summary or both, the
        summary has a problem (its first, ``file:line: field: message``), a
        file is not a regular file or larger than 1 GiB; with ``strict``, any
        problem.
    OSError
        When a file cannot be read.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "multi_agent_summary.json").write_text('''{
    ...   "total_agents": 2, "total_tasks": 6, "total_waves": 3, "success_rate": 0.917,
    ...   "avg_execution_time_ms": 28.5, "avg_confidence_delta": 0.048, "retry_rate": 0.083,
    ...   "agent_performance": {
    ...     "agent_0": {"success_rate": 0.95, "tasks": 3},
    ...     "agent_1": {"success_rate": 1.5, "tasks": 3}}}''')
    >>> load_coordination(d)
    Traceback (most recent call last):
    ...
    buddy.rules.base.errors.InputError: ...:6: agent_performance.agent_1.success_rate: must be \
a number in [0, 1] (got 1.5)
    """
    d = Path(directory)
    if not d.is_dir():
        raise InputError(f"{d}: not a directory")
    has18 = os.path.lexists(d / PHASE18_FILES[0])
    has21 = os.path.lexists(d / BUDDY_FILES[0])
    if has18 and has21:
        raise InputError(f"{d}: holds both {PHASE18_FILES[0]} (Phase 18) and {BUDDY_FILES[0]} "
                         "(buddy run waves): give a directory holding one")
    if not (has18 or has21):
        raise InputError(f"{d}: holds none of the inputs: {PHASE18_FILES[0]} (Phase 18) or "
                         f"{BUDDY_FILES[0]} (buddy run waves)")
    reader = _Reader(d, strict)
    return reader.phase18() if has18 else reader.buddy()


def agent_states(history: CoordinationHistory, agent_ids: Sequence[str] | None = None,
                 ) -> list[AgentState]:
    """The agents to plan with, as the history knows them.

    Each agent of ``agent_ids`` (default: the history's agents in file order, or
    ``agent_0``... ``total_agents`` of them when it lists none) with a record
    gets ``prior`` = its success rate, ``completed_tasks`` = ``round(tasks x
    rate)`` and ``failed_tasks`` the rest, and ``total_latency_s`` = its
    finished tasks x its mean time (its own, buddy's outputs; else the
    summary's ``avg_execution_time_ms``) in seconds. An agent without a record
    gets the mean success rate of those with one (the summary's rate when none
    has one), as its ``prior``, and no finished task. Every agent is IDLE.

    The counts are whole tasks, so ``success_rate`` reads the rate back only
    to within a task (0.95 over 3 tasks: 3 completed, 0 failed, 1.0); the
    exact rate is ``prior``. To plan with the exact rates, plan with
    ``AgentState(agent_id, prior=a.prior)`` and pass each agent's seconds per
    task as a speed (``1 / a.avg_latency``, 1 s when it has none), as
    ``buddy optimize`` does.

    Examples
    --------
    >>> s = CoordinationSummary(2, 10, 1, 0.8, 500.0, 0.0, 0.0,
    ...                         {"a": AgentPerformance(0.9, 10), "b": AgentPerformance(0.5, 4)})
    >>> h = CoordinationHistory(s, (), None, (), (), "phase18 files")
    >>> [(a.agent_id, a.completed_tasks, a.failed_tasks, a.prior, a.avg_latency)
    ...  for a in agent_states(h, ["a", "b", "new"])]
    [('a', 9, 1, 0.9, 0.5), ('b', 2, 2, 0.5, 0.5), ('new', 0, 0, 0.7, 0.0)]
    """
    s = history.summary
    perf = s.agent_performance
    if agent_ids is None:
        agent_ids = list(perf) or [f"agent_{i}" for i in range(s.total_agents)]
    rates = [p.success_rate for p in perf.values()]
    mean = math.fsum(rates) / len(rates) if rates else s.success_rate
    out = []
    for agent in agent_ids:
        p = perf.get(agent)
        if p is None:
            out.append(AgentState(agent, prior=mean))
            continue
        completed = round(p.tasks * p.success_rate)
        ms = p.avg_execution_time_ms if p.avg_execution_time_ms is not None \
            else s.avg_execution_time_ms
        out.append(AgentState(agent, completed_tasks=completed,
                              failed_tasks=p.tasks - completed,
                              total_latency_s=p.tasks * ms / 1000, prior=p.success_rate))
    return out
