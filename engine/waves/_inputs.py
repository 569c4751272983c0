"""The wave loop's inputs: ``predicted_tasks.jsonl`` and ``predicted_schedule.jsonl``.

The sources name both files and no field of either, so buddy defines them.
Both are JSON Lines: one object per line, split on ``\\n`` only (a JSON string
may hold U+2028 and the like raw), blank lines skipped, a ``\\r`` before the
``\\n`` allowed (it is JSON whitespace), a UTF-8 byte order mark at the start
ignored. Every bad line is refused with one line naming file, line and field::

    tasks.jsonl:7: predicted_success_rate: must be a number in [0, 1] (got 1.5)

and the good lines load. With ``strict=True`` the whole file is read, then the
first problem is raised as :class:`~buddy.rules.base.errors.InputError`.
Values are echoed masked and shortened (:func:`~buddy.rules.base.shown`),
``args`` only by their kind. Integers beyond 64 bits are read exactly.

A task line (:func:`load_tasks`; :func:`tasks_to_jsonl` writes the same
format, keys in this order)::

    {"task_id": "w2-t00007", "tool": "form_fill", "predicted_success_rate": 0.82,
     "wave": 2, "priority": 1, "args": {"field": "name"},
     "dependencies": ["w1-t00003"], "confidence": null, "agent_id": null}

``task_id``, ``tool`` and ``predicted_success_rate`` are required, the rest
optional. Across lines: task ids are unique (the later line is refused), and
each dependency names a task of the file in an *earlier* wave: waves are the
barriers, a wave starts when the one before it has ended, so a dependency in
the same or a later wave could never have ended when its task starts. That
rule alone makes a dependency cycle impossible (each edge goes to a strictly
smaller wave), so no graph is built. A task whose dependency was refused is
refused too, naming that dependency's line.

A schedule line (:func:`load_schedule`): ``{"task_id": ..., "agent_id": ...,
"wave": 2}`` (``wave`` optional). A line of buddy's own
``agent_assignments.jsonl`` is a schedule line too: its other keys are known
and ignored, and a line with a ``reassigned_from`` agent records the loop
moving a task off an OFFLINE agent, not the schedule, so it is passed over
(the task's first assignment stands). :func:`apply_schedule` puts the tasks on
the agents named.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeGuard

import attrs
import orjson

from buddy.engine.orchestration._plans import MAX_ARGS_DEPTH, _depth, _kind, _loads
from buddy.engine.waves._records import PredictedTask, ScheduleEntry
from buddy.rules.base._files import split_lines
from buddy.rules.base._masking import shown
from buddy.rules.base._values import plain_confidence, valid_confidence
from buddy.rules.base.errors import InputError
from buddy.rules.tables._catalogue import ToolContractRegistry

__all__ = [
    "MAX_PRIORITY",
    "MAX_WAVE",
    "MIN_PRIORITY",
    "TASK_KEYS",
    "ScheduleLoad",
    "TaskLoad",
    "apply_schedule",
    "by_wave",
    "load_schedule",
    "load_tasks",
    "tasks_to_jsonl",
]

#: The keys of a task line, in the order :func:`tasks_to_jsonl` writes them.
TASK_KEYS = ("task_id", "tool", "predicted_success_rate", "wave", "priority", "args",
             "dependencies", "confidence", "agent_id")
_TASK_KEYSET = frozenset(TASK_KEYS)
_REQUIRED = ("task_id", "tool", "predicted_success_rate")
#: Types that hold no nesting: ``args`` of these values only are one level deep.
_SCALARS = frozenset({str, int, float, bool, type(None)})
_SCHEDULE_KEYS = frozenset({"task_id", "agent_id", "wave"})
#: Keys of an ``agent_assignments.jsonl`` line a schedule knows and ignores.
_ASSIGNMENT_KEYS = frozenset({"predicted_success_rate", "assigned_at", "strategy", "priority",
                              "reassigned_from"})
_ENTRY_KEYS = _SCHEDULE_KEYS | _ASSIGNMENT_KEYS

#: The largest wave a file may name.
MAX_WAVE = 1_000_000
#: A priority is a signed 32-bit whole number.
MIN_PRIORITY, MAX_PRIORITY = -2**31, 2**31 - 1

_PLAIN = re.compile(r"[A-Za-z0-9_]{1,60}")
_BOM = b"\xef\xbb\xbf"
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_RUN = b"0" * 19  # 2**63 has 19 digits: fewer in a row make no number past 64 bits
_EARLIER = "waves are the barriers: a dependency must be in an earlier wave"


@attrs.frozen
class TaskLoad:
    """Tasks read from a file: the valid ones in file order, one line per refused line
    (ordered by line), and how many lines were refused."""

    tasks: tuple[PredictedTask, ...]
    errors: tuple[str, ...]
    skipped: int


@attrs.frozen
class ScheduleLoad:
    """Schedule entries read from a file, as :class:`TaskLoad`; ``path`` and ``lines``
    (the line of each entry) let :func:`apply_schedule` name where an entry stands."""

    entries: tuple[ScheduleEntry, ...]
    errors: tuple[str, ...]
    skipped: int
    path: str = ""
    lines: tuple[int, ...] = ()


# -- reading lines -----------------------------------------------------------------


def _lines(p: Path, data: bytes, errors: list[tuple[int, str]]) -> Iterator[tuple[int, Any]]:
    """Each non-blank line of a JSON Lines file as read: (line number, value); a line
    that is no UTF-8 or no JSON goes to ``errors``."""
    if data.startswith(_BOM):
        data = data[len(_BOM):]
    whole, tail = split_lines(data)
    whole.append(tail)
    # Only a file with 19 digits in a row may hold an integer beyond 64 bits, which
    # orjson reads as a float and _loads reads exactly; a bytes scan finds out at once.
    loads = _loads if _LONG_RUN in data.translate(_DIGITS_AS_ZERO) else orjson.loads
    for n, line in enumerate(whole, 1):
        if not line.strip():
            continue
        try:
            yield n, loads(line)
        except orjson.JSONDecodeError as exc:
            errors.append((n, f"{p}:{n}: {_not_json(line, exc)}"))


def _not_json(line: bytes, exc: orjson.JSONDecodeError) -> str:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as bad:
        return f"not UTF-8: byte 0x{line[bad.start]:02x} at column {bad.start + 1}"
    return f"invalid JSON: {' '.join(exc.msg.split())} at column {exc.colno}"


def _field(key: str) -> str:
    return key if _PLAIN.fullmatch(key) else shown(key)


def _whole(value: Any, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def _string(value: Any) -> TypeGuard[str]:
    return type(value) is str and value != ""


# -- tasks -------------------------------------------------------------------------


def load_tasks(path: str | os.PathLike[str], registry: ToolContractRegistry | None = None,
               *, strict: bool = False) -> TaskLoad:
    """Read the tasks of ``path`` (``predicted_tasks.jsonl``, the module's format).

    Parameters
    ----------
    path:
        The file.
    registry:
        When given, each task's tool must be one of its tools.
    strict:
        Raise the first problem (after reading the whole file) instead of
        returning it with the good tasks.

    Returns
    -------
    TaskLoad
        The valid tasks in file order, the refused lines' errors by line, how
        many lines were refused.

    Raises
    ------
    InputError
        With ``strict``, the first problem; always, when the file holds no task
        (``no tasks in <path>``), or only refused lines (naming the first).
    OSError
        When the file cannot be read.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "tasks.jsonl"
    >>> _ = path.write_text(
    ...     '{"task_id": "a", "tool": "math_compute", "predicted_success_rate": 0.9}\\n'
    ...     '{"task_id": "b", "tool": "math_compute", "predicted_success_rate": 1.5}\\n'
    ...     '{"task_id": "c", "tool": "math_compute", "predicted_success_rate": 0.8, '
    ...     '"wave": 2, "dependencies": ["a"]}\\n')
    >>> loaded = load_tasks(path)
    >>> [(t.task_id, t.wave, t.dependencies) for t in loaded.tasks], loaded.skipped
    ([('a', 1, ()), ('c', 2, ('a',))], 1)
    >>> print(loaded.errors[0].replace(str(path), "tasks.jsonl"))
    tasks.jsonl:2: predicted_success_rate: must be a number in [0, 1] (got 1.5)
    >>> load_tasks(path, strict=True)
    Traceback (most recent call last):
    ...
    buddy.rules.base.errors.InputError: ...:2: predicted_success_rate: must be ... (got 1.5)
    """
    p = Path(path)
    data = p.read_bytes()
    errors: list[tuple[int, str]] = []
    read: list[tuple[int, PredictedTask]] = []
    first_line: dict[str, int] = {}   # each task id named by any line: the first such line
    refused: dict[str, int] = {}      # task ids whose (first) line was refused
    for n, item in _lines(p, data, errors):
        task, error = _read_task(item, registry)
        tid = item.get("task_id") if isinstance(item, dict) else None
        if _string(tid):
            if tid in first_line:
                if error is None:
                    error = f"task_id: duplicate task id {shown(tid)} (first on line " \
                            f"{first_line[tid]})"
            else:
                first_line[tid] = n
                if error is not None:
                    refused[tid] = n
        if error is not None:
            errors.append((n, f"{p}:{n}: {error}"))
        else:
            assert task is not None
            read.append((n, task))
    waves = {t.task_id: t.wave for _, t in read}
    kept: dict[str, PredictedTask] = {}
    # By wave: a task's dependencies (earlier waves) are kept or refused before it is seen.
    for n, task in sorted(read, key=lambda nt: (nt[1].wave, nt[0])):
        error = _dependency_error(task, waves, kept, refused)
        if error is None:
            kept[task.task_id] = task
        else:
            refused[task.task_id] = n
            errors.append((n, f"{p}:{n}: {error}"))
    errors.sort()
    messages = tuple(e for _, e in errors)
    if messages and (strict or not kept):
        raise InputError(messages[0] if strict else
                         f"no tasks in {p}: {len(messages)} line(s) refused, the first: "
                         f"{messages[0]}")
    if not kept:
        raise InputError(f"no tasks in {p}")
    tasks = tuple(t for _, t in read if t.task_id in kept)
    return TaskLoad(tasks, messages, len(messages))


def _read_task(item: Any, registry: ToolContractRegistry | None,
               ) -> tuple[PredictedTask | None, str | None]:
    """A task line as a record, or the first problem with it."""
    if type(item) is not dict:
        return None, f"must be an object (got {_kind(item)})"
    if not _TASK_KEYSET.issuperset(item):
        return None, f"{_field(min(k for k in item if k not in _TASK_KEYSET))}: unknown key"
    get = item.get
    tid, tool, rate = get("task_id"), get("tool"), get("predicted_success_rate")
    if tid is None or tool is None or rate is None:
        for key in _REQUIRED:
            if key not in item:
                return None, f"{key}: missing (a task needs {', '.join(_REQUIRED)})"
    if not _string(tid):
        return None, f"task_id: must be a non-empty string (got {shown(tid)})"
    if not _string(tool):
        return None, f"tool: must be a non-empty string (got {shown(tool)})"
    if registry is not None and tool not in registry:
        return None, f"tool: unknown tool {shown(tool)}"
    if not valid_confidence(rate):
        return None, f"predicted_success_rate: must be a number in [0, 1] (got {shown(rate)})"
    wave = get("wave", 1)
    if type(wave) is not int or not 1 <= wave <= MAX_WAVE:
        return None, f"wave: must be a whole number from 1 to {MAX_WAVE} (got {shown(wave)})"
    priority = get("priority", 0)
    if type(priority) is not int or not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        return None, (f"priority: must be a whole number from {MIN_PRIORITY} to "
                      f"{MAX_PRIORITY} (got {shown(priority)})")
    args = get("args")
    if args is None:
        args = {}
    elif type(args) is not dict:
        return None, f"args: must be an object (got {_kind(args)})"
    elif not _SCALARS.issuperset(map(type, args.values())):
        depth = _depth(args)
        if depth > MAX_ARGS_DEPTH:
            return None, f"args: must nest at most {MAX_ARGS_DEPTH} levels (got {depth})"
    deps = get("dependencies", ())
    if deps:
        if type(deps) is not list:
            return None, f"dependencies: must be a list of task ids (got {_kind(deps)})"
        seen: set[str] = set()
        for i, dep in enumerate(deps):
            if not _string(dep):
                return None, f"dependencies[{i}]: must be a non-empty string (got {shown(dep)})"
            if dep in seen:
                return None, f"dependencies[{i}]: {shown(dep)} is listed twice"
            seen.add(dep)
    elif type(deps) not in (list, tuple):  # an empty list, or absent: none
        return None, f"dependencies: must be a list of task ids (got {_kind(deps)})"
    confidence = get("confidence")
    if confidence is not None:
        if not valid_confidence(confidence):
            return None, (f"confidence: must be a number in [0, 1] or null "
                          f"(got {shown(confidence)})")
        confidence = plain_confidence(confidence)  # 1 as 1.0
    agent = get("agent_id")
    if agent is not None and not _string(agent):
        return None, f"agent_id: must be a non-empty string or null (got {shown(agent)})"
    return PredictedTask(tid, tool, plain_confidence(rate), wave, priority, args, deps,
                         confidence, agent), None


def _dependency_error(task: PredictedTask, waves: dict[str, int],
                      kept: dict[str, PredictedTask], refused: dict[str, int]) -> str | None:
    """The first dependency of ``task`` that is not a kept task of an earlier wave."""
    for i, dep in enumerate(task.dependencies):
        at = f"dependencies[{i}]: {shown(dep)}"
        if dep == task.task_id:
            return f"{at} is the task itself ({_EARLIER})"
        if dep in waves and waves[dep] >= task.wave:
            return f"{at} is in wave {waves[dep]}, not before wave {task.wave} ({_EARLIER})"
        if dep in refused:
            return f"{at} names a task refused on line {refused[dep]}"
        if dep not in kept:
            return f"{at} names no task of the file"
    return None


def tasks_to_jsonl(tasks: Iterable[PredictedTask]) -> bytes:
    """The tasks in the format :func:`load_tasks` reads: a line each, every key written,
    in the order of :data:`TASK_KEYS`.

    Raises :class:`InputError` naming the task whose ``args`` JSON cannot hold.

    >>> t = PredictedTask("w1-t1", "math_compute", 0.9, args={"n": 2 ** 70})
    >>> print(tasks_to_jsonl([t]).decode(), end="")
    {"task_id":"w1-t1","tool":"math_compute","predicted_success_rate":0.9,"wave":1,"priority":0,"args":{"n":1180591620717411303424},"dependencies":[],"confidence":null,"agent_id":null}
    """
    out: list[bytes] = []
    for t in tasks:
        line = {"task_id": t.task_id, "tool": t.tool,
                "predicted_success_rate": t.predicted_success_rate, "wave": t.wave,
                "priority": t.priority, "args": t.args, "dependencies": list(t.dependencies),
                "confidence": t.confidence, "agent_id": t.agent_id}
        try:
            out.append(orjson.dumps(line))
        except (orjson.JSONEncodeError, TypeError):
            out.append(_dumps_exactly(t.task_id, line))
    return b"".join(o + b"\n" for o in out)


def _dumps_exactly(task_id: str, line: dict[str, Any]) -> bytes:
    """A line orjson cannot write (an integer beyond 64 bits), by the standard library."""
    try:
        return json.dumps(line, ensure_ascii=False, allow_nan=False,
                          separators=(",", ":")).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:  # UnicodeEncodeError: a ValueError
        raise InputError(f"task {shown(task_id)}: cannot be written as JSON "
                         f"({type(exc).__name__})") from None


def by_wave(tasks: Iterable[PredictedTask]) -> dict[int, list[PredictedTask]]:
    """The tasks of each wave, waves ascending, each wave's tasks in the order given.

    >>> ts = [PredictedTask("b", "math_compute", 0.9, wave=2),
    ...       PredictedTask("a", "math_compute", 0.9, wave=1),
    ...       PredictedTask("c", "math_compute", 0.9, wave=2)]
    >>> {w: [t.task_id for t in group] for w, group in by_wave(ts).items()}
    {1: ['a'], 2: ['b', 'c']}
    """
    groups: dict[int, list[PredictedTask]] = {}
    for t in tasks:
        groups.setdefault(t.wave, []).append(t)
    return {w: groups[w] for w in sorted(groups)}


# -- the schedule ------------------------------------------------------------------


def load_schedule(path: str | os.PathLike[str], *, strict: bool = False) -> ScheduleLoad:
    """Read the entries of ``path`` (``predicted_schedule.jsonl`` or buddy's own
    ``agent_assignments.jsonl``, the module's format).

    An empty file is an empty schedule (no task is put on an agent by it).

    Parameters
    ----------
    path:
        The file.
    strict:
        Raise the first problem (after reading the whole file) instead of
        returning it with the good entries.

    Returns
    -------
    ScheduleLoad
        The valid entries in file order (and their lines), the refused lines'
        errors by line, how many lines were refused.

    Raises
    ------
    InputError
        With ``strict``, the first problem.
    OSError
        When the file cannot be read.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "schedule.jsonl"
    >>> _ = path.write_text('{"task_id": "a", "agent_id": "agent_1", "wave": 1}\\n'
    ...                     '{"task_id": "a", "agent_id": "agent_2"}\\n')
    >>> loaded = load_schedule(path)
    >>> loaded.entries, loaded.lines
    ((ScheduleEntry(task_id='a', agent_id='agent_1', wave=1),), (1,))
    >>> print(loaded.errors[0].replace(str(path), "schedule.jsonl"))
    schedule.jsonl:2: task_id: duplicate task id 'a' (first on line 1)
    """
    p = Path(path)
    data = p.read_bytes()
    errors: list[tuple[int, str]] = []
    entries: list[ScheduleEntry] = []
    lines: list[int] = []
    first_line: dict[str, int] = {}
    for n, item in _lines(p, data, errors):
        entry, error = _read_entry(item)
        if entry is not None and entry.task_id in first_line:
            error = (f"task_id: duplicate task id {shown(entry.task_id)} (first on line "
                     f"{first_line[entry.task_id]})")
        if error is not None:
            errors.append((n, f"{p}:{n}: {error}"))
        elif entry is not None:
            first_line[entry.task_id] = n
            entries.append(entry)
            lines.append(n)
    errors.sort()
    messages = tuple(e for _, e in errors)
    if strict and messages:
        raise InputError(messages[0])
    return ScheduleLoad(tuple(entries), messages, len(messages), str(p), tuple(lines))


def _read_entry(item: Any) -> tuple[ScheduleEntry | None, str | None]:
    """A schedule line as an entry (None, None: a reassignment, passed over), or the
    first problem with it."""
    if type(item) is not dict:
        return None, f"must be an object (got {_kind(item)})"
    if not _ENTRY_KEYS.issuperset(item):
        return None, f"{_field(min(k for k in item if k not in _ENTRY_KEYS))}: unknown key"
    for key in ("task_id", "agent_id"):
        if key not in item:
            return None, f"{key}: missing (an entry needs task_id and agent_id)"
        if not _string(item[key]):
            return None, f"{key}: must be a non-empty string (got {shown(item[key])})"
    wave = item.get("wave")
    if wave is not None and not _whole(wave, 1, MAX_WAVE):
        return None, (f"wave: must be a whole number from 1 to {MAX_WAVE} or null "
                      f"(got {shown(wave)})")
    moved = item.get("reassigned_from")
    if moved is not None and not _string(moved):
        return None, f"reassigned_from: must be a non-empty string or null (got {shown(moved)})"
    if moved is not None:
        return None, None
    return ScheduleEntry(item["task_id"], item["agent_id"], wave), None


def apply_schedule(tasks: Iterable[PredictedTask],
                   entries: ScheduleLoad | Iterable[ScheduleEntry], *, strict: bool = False,
                   ) -> tuple[list[PredictedTask], list[str]]:
    """The tasks, each one the schedule names put on its agent (``agent_id`` set).

    An entry is refused, and its task left as it was, when it names no task,
    names a wave other than its task's, or names another agent than the one
    the task is already pinned to (its ``agent_id``). Errors name the schedule's
    file and line when ``entries`` is a :class:`ScheduleLoad`, else the entry's
    index (``schedule[3]``).

    Parameters
    ----------
    tasks:
        The tasks (their order is kept).
    entries:
        What :func:`load_schedule` read, or the entries themselves.
    strict:
        Raise the first problem instead of returning it.

    Returns
    -------
    tuple[list[PredictedTask], list[str]]
        The tasks, and one error per refused entry (in the schedule's order).

    Raises
    ------
    InputError
        With ``strict``, the first problem.

    Examples
    --------
    >>> tasks = [PredictedTask("a", "math_compute", 0.9), PredictedTask("b", "math_compute", 0.9)]
    >>> out, errors = apply_schedule(tasks, [ScheduleEntry("b", "agent_1"),
    ...                                      ScheduleEntry("z", "agent_2")])
    >>> [(t.task_id, t.agent_id) for t in out], errors
    ([('a', None), ('b', 'agent_1')], ["schedule[1]: task_id: 'z' names no task"])
    """
    if isinstance(entries, ScheduleLoad):
        where: Sequence[str] = [f"{entries.path}:{n}" for n in entries.lines]
        listed: Sequence[ScheduleEntry] = entries.entries
    else:
        listed = list(entries)
        where = [f"schedule[{i}]" for i in range(len(listed))]
    out = list(tasks)
    index = {t.task_id: i for i, t in enumerate(out)}
    errors: list[str] = []
    for at, entry in zip(where, listed, strict=True):
        i = index.get(entry.task_id)
        if i is None:
            errors.append(f"{at}: task_id: {shown(entry.task_id)} names no task")
            continue
        task = out[i]
        if entry.wave is not None and entry.wave != task.wave:
            errors.append(f"{at}: wave: {entry.wave} is not the wave of task "
                          f"{shown(task.task_id)} ({task.wave})")
        elif task.agent_id is not None and task.agent_id != entry.agent_id:
            errors.append(f"{at}: agent_id: {shown(entry.agent_id)} is not the agent task "
                          f"{shown(task.task_id)} is pinned to ({shown(task.agent_id)})")
        else:
            out[i] = attrs.evolve(task, agent_id=entry.agent_id)
    if strict and errors:
        raise InputError(errors[0])
    return out, errors
