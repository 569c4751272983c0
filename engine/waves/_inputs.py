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

Both are read only when they are regular files (a FIFO, a device, a directory
or a socket is refused before it is opened for reading, ``<path>: not a
regular file``, so a FIFO without a writer never blocks and ``/dev/zero`` is
never read), of at most :data:`MAX_INPUT_BYTES`, and never more than that is
read. A line longer than :data:`MAX_LINE_BYTES` is a bad line like any other::

    tasks.jsonl:4: line longer than 1 MiB (2097152 bytes)

The agents' permissions (:func:`load_permissions`, ``buddy run waves
--agents-file``) are one JSON object, agent id to the permissions it holds::

    {"agent_0": ["forms.write", "vision.read"], "agent_1": []}

read under the same rules (at most :data:`MAX_PERMISSIONS_BYTES`), and refused
whole at its first problem, which names the agent::

    agents.json: agent[agent_0]: must be a list of permission strings (got a number)
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeGuard

import attrs
import orjson

from buddy.engine.core._events import MAX_TEXT_CHARS, text_problem
from buddy.engine.orchestration._plans import MAX_ARGS_DEPTH, _depth, _kind, _loads
from buddy.engine.waves._records import PredictedTask, ScheduleEntry
from buddy.rules.base._files import split_lines
from buddy.rules.base._masking import shown
from buddy.rules.base._values import plain_confidence, valid_confidence
from buddy.rules.base.errors import InputError
from buddy.rules.tables._catalogue import ToolContractRegistry

__all__ = [
    "MAX_AGENT_ID_CHARS",
    "MAX_INPUT_BYTES",
    "MAX_LINE_BYTES",
    "MAX_PERMISSIONS_BYTES",
    "MAX_PRIORITY",
    "MAX_WAVE",
    "MIN_PRIORITY",
    "TASK_KEYS",
    "ScheduleLoad",
    "TaskLoad",
    "apply_schedule",
    "by_wave",
    "load_permissions",
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
#: The largest tasks or schedule file read (1 GiB).
MAX_INPUT_BYTES = 1 << 30
#: The longest line of a tasks or schedule file (1 MiB, its ``\n`` not counted).
MAX_LINE_BYTES = 1 << 20
#: The largest permissions file read (16 MiB).
MAX_PERMISSIONS_BYTES = 16 << 20
#: The longest agent id of a permissions file, in characters (the audit trail's plans
#: hold ids of at most this many: buddy.engine.core._events.MAX_TEXT_CHARS).
MAX_AGENT_ID_CHARS = MAX_TEXT_CHARS

_PLAIN = re.compile(r"[A-Za-z0-9_]{1,60}")
_BOM = b"\xef\xbb\xbf"
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_RUN = b"0" * 19  # 2**63 has 19 digits: fewer in a row make no number past 64 bits
_EARLIER = "waves are the barriers: a dependency must be in an earlier wave"
# Opened without blocking (a FIFO swapped in after the stat would wait for a writer) and
# without leaking the descriptor into a child; 0 where the platform has no such flag.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
#: Bytes asked of the file at a time once its stated size has been read.
_READ_CHUNK = 1 << 20


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


# -- reading files -----------------------------------------------------------------


def _size(n: int) -> str:
    """A byte count as the caps are named: ``1 GiB``, ``16 MiB``, ``100 bytes``."""
    for unit, name in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= unit and n % unit == 0:
            return f"{n // unit} {name}"
    return f"{n} bytes"


def _read_file(p: Path, cap: int) -> bytes:
    """The bytes of ``p``, a regular file of at most ``cap`` bytes, reading at most
    ``cap + 1`` of them.

    Raises :class:`InputError` when ``p`` is not a regular file (checked before it is
    opened, and again on what was opened) or holds more than ``cap`` bytes (by its
    size, or by what was read: a file that grew, or one of ``/proc`` stated as empty);
    :class:`OSError` when it cannot be read.
    """
    if not stat.S_ISREG(os.stat(p).st_mode):  # a FIFO's open would wait for a writer
        raise InputError(f"{p}: not a regular file")
    fd = os.open(p, _OPEN_FLAGS)
    with open(fd, "rb", buffering=0) as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # another file put in its place since the stat
            raise InputError(f"{p}: not a regular file")
        if st.st_size > cap:
            raise InputError(f"{p}: larger than {_size(cap)} ({st.st_size} bytes)")
        # A read asks for the whole stated size and a byte more (to see the end) at once;
        # a read of cap + 1 bytes would allocate them all, however small the file.
        parts: list[bytes] = []
        total, ask = 0, st.st_size + 1
        while total <= cap:
            part = f.read(min(ask, cap + 1 - total))
            if not part:
                break
            parts.append(part)
            total += len(part)
            ask = _READ_CHUNK
    if total > cap:
        raise InputError(f"{p}: larger than {_size(cap)} (at least {total} bytes)")
    return b"".join(parts)  # one part (the usual case): that part, not a copy


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
    longest = MAX_LINE_BYTES
    for n, line in enumerate(whole, 1):
        if len(line) > longest:  # before anything reads it: a blank one too
            errors.append((n, f"{p}:{n}: line longer than {_size(longest)} "
                              f"({len(line)} bytes)"))
            continue
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
        (``no tasks in <path>``), or only refused lines (naming the first), or
        is not a regular file, or is larger than :data:`MAX_INPUT_BYTES`.
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
    data = _read_file(p, MAX_INPUT_BYTES)
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
    if (bad := text_problem(tid)) is not None:  # an id the trail's plans can hold
        return None, f"task_id: {bad}"
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
    if agent is not None and (bad := text_problem(agent)) is not None:
        return None, f"agent_id: {bad}"
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
        try:  # + b"\n" copies it: orjson's own buffer is kilobytes, whatever it holds
            out.append(orjson.dumps(line) + b"\n")
        except (orjson.JSONEncodeError, TypeError):
            out.append(_dumps_exactly(t.task_id, line) + b"\n")
    return b"".join(out)


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
        With ``strict``, the first problem; always, when the file is not a
        regular file or is larger than :data:`MAX_INPUT_BYTES`.
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
    data = _read_file(p, MAX_INPUT_BYTES)
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
        if (bad := text_problem(item[key])) is not None:
            return None, f"{key}: {bad}"
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


# -- the agents' permissions ---------------------------------------------------------


def load_permissions(path: str | os.PathLike[str]) -> dict[str, frozenset[str]]:
    """The agents of ``path`` and the permissions each holds, in file order.

    The file is one JSON object (a UTF-8 byte order mark at its start ignored):
    each key an agent id (a non-empty string of at most
    :data:`MAX_AGENT_ID_CHARS` characters, none of them a control character),
    each value the list of its permissions (non-empty strings; the list may be
    empty, a permission may be listed twice). Nothing else is accepted, and an
    agent id listed twice is refused (JSON would keep the later silently). It
    is the engine's ``agents=`` map: an agent it names may call only the tools
    whose permissions it holds, and an agent it does not name nothing.

    Raises
    ------
    InputError
        At the first problem, on one line naming the file and, where there is
        one, the agent: ``agents.json: agent[agent_0]: must be a list of
        permission strings (got a number)``; the file's shape (not a regular
        file, larger than :data:`MAX_PERMISSIONS_BYTES`, empty, not UTF-8,
        invalid JSON, not an object, ``no agents``) comes first, then the agents in
        file order, then an agent id listed twice.
    OSError
        When the file cannot be read.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "agents.json"
    >>> _ = path.write_text('{"agent_0": ["forms.write", "vision.read"], "ops": []}')
    >>> load_permissions(path) == {"agent_0": frozenset({"forms.write", "vision.read"}),
    ...                            "ops": frozenset()}
    True
    >>> _ = path.write_text('{"agent_0": ["forms.write"], "agent_1": 3}')
    >>> load_permissions(path)
    Traceback (most recent call last):
    ...
    buddy.rules.base.errors.InputError: ...: agent[agent_1]: must be a list of ... (got a number)
    """
    p = Path(path)
    data = _read_file(p, MAX_PERMISSIONS_BYTES)
    if data.startswith(_BOM):
        data = data[len(_BOM):]
    if not data.strip():
        raise InputError(f"{p}: no agents (the file is empty)")
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{p}: {_document_not_json(data, exc)}") from None
    if type(document) is not dict:
        raise InputError(f"{p}: must be a JSON object of agent ids to permission lists "
                         f"(got {_kind(document)})")
    if not document:
        raise InputError(f"{p}: no agents")
    agents: dict[str, frozenset[str]] = {}
    for agent, held in document.items():
        error = _agent_error(agent, held)
        if error is not None:
            raise InputError(f"{p}: agent[{_field(agent)}]{error}")
        agents[agent] = frozenset(held)
    _listed_once(p, data)
    return agents


def _document_not_json(data: bytes, exc: orjson.JSONDecodeError) -> str:
    """Why a whole JSON document was refused, at its line and column."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as bad:
        line = data.count(b"\n", 0, bad.start) + 1
        column = bad.start - data.rfind(b"\n", 0, bad.start)
        return f"not UTF-8: byte 0x{data[bad.start]:02x} at line {line} column {column}"
    return (f"invalid JSON: {' '.join(exc.msg.split())} at line {exc.lineno} "
            f"column {exc.colno}")


def _agent_error(agent: str, held: Any) -> str | None:
    """The first problem with one agent of a permissions file, as it follows
    ``agent[<id>]`` in the message."""
    if agent == "":
        return ": the agent id is empty"
    if len(agent) > MAX_AGENT_ID_CHARS:
        return f": the agent id is longer than {MAX_AGENT_ID_CHARS} characters ({len(agent)})"
    if (bad := text_problem(agent)) is not None:  # an id the trail's plans can hold
        return f": the agent id {bad}"
    if type(held) is not list:
        return f": must be a list of permission strings (got {_kind(held)})"
    for i, permission in enumerate(held):
        if not _string(permission):
            return f"[{i}]: must be a non-empty string (got {shown(permission)})"
    return None


def _listed_once(p: Path, data: bytes) -> None:
    """Refuse a key the top object of ``data`` (valid JSON, whose last value for each
    key is a flat list) holds twice.

    orjson keeps the last value of a key; the standard library hands a hook every
    pair. The values a repeated key replaced may nest deeper than it reads: such a
    file is refused too.
    """
    def pairs(items: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        return items
    try:
        top: list[tuple[str, Any]] = json.loads(data, object_pairs_hook=pairs,
                                                 parse_int=_nothing, parse_float=_nothing)
    except RecursionError:
        raise InputError(f"{p}: an agent id is listed twice, once with a value nested "
                         "too deeply to read") from None
    seen: set[str] = set()
    for key, _ in top:
        if key in seen:
            raise InputError(f"{p}: agent[{_field(key)}]: listed twice (an agent's "
                             "permissions are one list)")
        seen.add(key)


def _nothing(_: str) -> None:
    """A number the duplicate check need not read."""
    return None
