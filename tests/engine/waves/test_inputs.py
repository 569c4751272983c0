"""The wave loop's inputs: tasks and schedule files, one exact error per bad line."""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
import tempfile
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from buddy.engine import ToolContractRegistry
from buddy.engine.core._events import text_problem
from buddy.engine.orchestration._plans import MAX_ARGS_DEPTH
from buddy.engine.waves import _inputs
from buddy.engine.waves._inputs import (
    MAX_AGENT_ID_CHARS,
    MAX_INPUT_BYTES,
    MAX_LINE_BYTES,
    MAX_PERMISSIONS_BYTES,
    MAX_PRIORITY,
    MAX_WAVE,
    MIN_PRIORITY,
    TASK_KEYS,
    ScheduleLoad,
    TaskLoad,
    apply_schedule,
    by_wave,
    load_permissions,
    load_schedule,
    load_tasks,
    tasks_to_jsonl,
)
from buddy.engine.waves._records import PredictedTask, ScheduleEntry, TaskAssignment
from buddy.rules.base import shown
from buddy.rules.base.errors import InputError

REG = ToolContractRegistry.default()

A = {"task_id": "a", "tool": "math_compute", "predicted_success_rate": 0.9}
C = {"task_id": "c", "tool": "form_fill", "predicted_success_rate": 0.7, "wave": 2,
     "priority": -3, "args": {"field": "name", "n": [1, {"x": None}]},
     "dependencies": ["a"], "confidence": 0.5, "agent_id": "agent_1"}
TASK_A = PredictedTask("a", "math_compute", 0.9)
TASK_C = PredictedTask("c", "form_fill", 0.7, wave=2, priority=-3,
                       args={"field": "name", "n": [1, {"x": None}]}, dependencies=("a",),
                       confidence=0.5, agent_id="agent_1")


def write(tmp_path, lines, name="tasks.jsonl"):
    """``lines`` (dicts as JSON, str and bytes as they are) joined by newlines."""
    path = tmp_path / name
    parts = [json.dumps(x).encode() if isinstance(x, dict)
             else x.encode() if isinstance(x, str) else x for x in lines]
    path.write_bytes(b"\n".join(parts) + b"\n")
    return path


def line(**changes):
    """A task line: ``b`` (wave 1, valid) with ``changes``; a value of ``...`` drops the key."""
    item = {"task_id": "b", "tool": "vision_inspect", "predicted_success_rate": 0.8, **changes}
    return json.dumps({k: v for k, v in item.items() if v is not ...})


class TestLoadTasks:
    def test_a_valid_file_loads_the_exact_records(self, tmp_path):
        loaded = load_tasks(write(tmp_path, [A, C]), REG)
        assert loaded == TaskLoad((TASK_A, TASK_C), (), 0)
        assert type(loaded.tasks[0].predicted_success_rate) is float
        assert loaded.tasks[0].decision_confidence == 0.9
        assert loaded.tasks[1].decision_confidence == 0.5

    def test_whole_numbers_as_rates_become_floats(self, tmp_path):
        (task,) = load_tasks(write(tmp_path, [{**A, "predicted_success_rate": 1,
                                               "confidence": 0}])).tasks
        assert (task.predicted_success_rate, task.confidence) == (1.0, 0.0)
        assert type(task.predicted_success_rate) is type(task.confidence) is float

    def test_null_args_are_none(self, tmp_path):
        (task,) = load_tasks(write(tmp_path, [{**A, "args": None}])).tasks
        assert task.args == {}

    def test_integers_beyond_64_bits_reach_the_args_exactly(self, tmp_path):
        big = 12345678901234567890123
        (task,) = load_tasks(write(tmp_path, [{**A, "args": {"n": big, "s": str(10**19),
                                                             "f": 0.5}}])).tasks
        assert task.args == {"n": big, "s": str(10**19), "f": 0.5}
        assert type(task.args["n"]) is int

    @pytest.mark.parametrize("sep", ["\u2028", "\u2029", "\u0085", "\r", "\x0b\x0c"])
    def test_odd_separators_inside_strings_do_not_split_the_line(self, tmp_path, sep):
        item = {**A, "args": {"text": f"x{sep}y"}}
        path = tmp_path / "tasks.jsonl"
        path.write_bytes(json.dumps(item, ensure_ascii=False).encode() + b"\n"
                         + json.dumps(C).encode())
        loaded = load_tasks(path)
        assert loaded.errors == ()
        assert [t.args for t in loaded.tasks] == [{"text": f"x{sep}y"}, TASK_C.args]

    def test_blank_lines_are_skipped_and_still_counted_in_line_numbers(self, tmp_path):
        path = write(tmp_path, ["", A, "   ", "\t", line(wave=0)])
        loaded = load_tasks(path)
        assert loaded.tasks == (TASK_A,)
        assert loaded.errors == (f"{path}:5: wave: must be a whole number from 1 to "
                                 f"{MAX_WAVE} (got 0)",)

    def test_crlf_line_endings_and_a_byte_order_mark(self, tmp_path):
        path = tmp_path / "tasks.jsonl"
        path.write_bytes(b"\xef\xbb\xbf" + json.dumps(A).encode() + b"\r\n\r\n"
                         + json.dumps(C).encode() + b"\r\n")
        assert load_tasks(path).tasks == (TASK_A, TASK_C)

    def test_no_final_newline(self, tmp_path):
        path = tmp_path / "tasks.jsonl"
        path.write_text(json.dumps(A) + "\n" + json.dumps(C))
        assert load_tasks(path).tasks == (TASK_A, TASK_C)

    @pytest.mark.parametrize("text, error", [
        # the shape of a line
        ("{not json", "invalid JSON: unexpected character, expected a string key at column 2"),
        ('{"task_id": "b",}', "invalid JSON: trailing comma is not allowed at column 16"),
        ("[1, 2]", "must be an object (got a list)"),
        ("5", "must be an object (got a number)"),
        ('"b"', "must be an object (got a string)"),
        ("null", "must be an object (got null)"),
        ("true", "must be an object (got a boolean)"),
        (line(colour="red"), "colour: unknown key"),
        (line(**{"bad key": 1}), "'bad key': unknown key"),
        (line(**{"a\nb": 1}), "'a\\nb': unknown key"),
        (line(tool=...), "tool: missing (a task needs task_id, tool, predicted_success_rate)"),
        (line(task_id=...),
         "task_id: missing (a task needs task_id, tool, predicted_success_rate)"),
        (line(predicted_success_rate=...),
         "predicted_success_rate: missing (a task needs task_id, tool, predicted_success_rate)"),
        # task_id and tool
        (line(task_id=5), "task_id: must be a non-empty string (got 5)"),
        (line(task_id=""), "task_id: must be a non-empty string (got '')"),
        (line(task_id=None), "task_id: must be a non-empty string (got None)"),
        (line(tool=["form_fill"]), "tool: must be a non-empty string (got ['form_fill'])"),
        (line(tool="rm"), "tool: unknown tool 'rm'"),
        (line(tool="password: hunter2"), "tool: unknown tool 'password: ***'"),
        # predicted_success_rate
        (line(predicted_success_rate=1.5),
         "predicted_success_rate: must be a number in [0, 1] (got 1.5)"),
        (line(predicted_success_rate=-0.1),
         "predicted_success_rate: must be a number in [0, 1] (got -0.1)"),
        (line(predicted_success_rate=True),
         "predicted_success_rate: must be a number in [0, 1] (got True)"),
        (line(predicted_success_rate="0.9"),
         "predicted_success_rate: must be a number in [0, 1] (got '0.9')"),
        (line(predicted_success_rate=None),
         "predicted_success_rate: must be a number in [0, 1] (got None)"),
        (line(predicted_success_rate=10**30), "predicted_success_rate: must be a number in "
                                              "[0, 1] (got 1000000000000000000000000000000)"),
        (line(predicted_success_rate=2**400),
         "predicted_success_rate: must be a number in [0, 1] (got <int of 401 bits>)"),
        (line(predicted_success_rate=1).replace("1}", "NaN}"),
         "invalid JSON: unexpected character, expected a JSON value at column 70"),
        (line(predicted_success_rate=1).replace("1}", "Infinity}"),
         "invalid JSON: unexpected character, expected a JSON value at column 70"),
        (line(predicted_success_rate=1).replace("1}", "1e400}"),
         "invalid JSON: number is infinity when parsed as double at column 70"),
        # wave and priority
        (line(wave=0), f"wave: must be a whole number from 1 to {MAX_WAVE} (got 0)"),
        (line(wave=-1), f"wave: must be a whole number from 1 to {MAX_WAVE} (got -1)"),
        (line(wave=1.0), f"wave: must be a whole number from 1 to {MAX_WAVE} (got 1.0)"),
        (line(wave=True), f"wave: must be a whole number from 1 to {MAX_WAVE} (got True)"),
        (line(wave="2"), f"wave: must be a whole number from 1 to {MAX_WAVE} (got '2')"),
        (line(wave=None), f"wave: must be a whole number from 1 to {MAX_WAVE} (got None)"),
        (line(wave=MAX_WAVE + 1),
         f"wave: must be a whole number from 1 to {MAX_WAVE} (got {MAX_WAVE + 1})"),
        (line(wave=2**70),
         f"wave: must be a whole number from 1 to {MAX_WAVE} (got 1180591620717411303424)"),
        (line(priority=MAX_PRIORITY + 1), "priority: must be a whole number from -2147483648 "
                                          "to 2147483647 (got 2147483648)"),
        (line(priority=MIN_PRIORITY - 1), "priority: must be a whole number from -2147483648 "
                                          "to 2147483647 (got -2147483649)"),
        (line(priority=False), "priority: must be a whole number from -2147483648 "
                               "to 2147483647 (got False)"),
        (line(priority=0.5), "priority: must be a whole number from -2147483648 "
                             "to 2147483647 (got 0.5)"),
        # args
        (line(args=["x"]), "args: must be an object (got a list)"),
        (line(args="password=hunter2"), "args: must be an object (got a string)"),
        (line(args=0), "args: must be an object (got a number)"),
        # dependencies
        (line(dependencies="a"), "dependencies: must be a list of task ids (got a string)"),
        (line(dependencies=None), "dependencies: must be a list of task ids (got null)"),
        (line(dependencies={}), "dependencies: must be a list of task ids (got an object)"),
        (line(dependencies=0), "dependencies: must be a list of task ids (got a number)"),
        (line(dependencies=[1]), "dependencies[0]: must be a non-empty string (got 1)"),
        (line(dependencies=["a", ""]), "dependencies[1]: must be a non-empty string (got '')"),
        (line(wave=2, dependencies=["a", "a"]), "dependencies[1]: 'a' is listed twice"),
        # confidence and agent_id
        (line(confidence=2), "confidence: must be a number in [0, 1] or null (got 2)"),
        (line(confidence=False), "confidence: must be a number in [0, 1] or null (got False)"),
        (line(confidence="high"), "confidence: must be a number in [0, 1] or null (got 'high')"),
        (line(agent_id=""), "agent_id: must be a non-empty string or null (got '')"),
        (line(agent_id=3), "agent_id: must be a non-empty string or null (got 3)"),
        # across lines (line 1 is task a, wave 1; line 3 is task c, wave 2)
        (line(task_id="a"), "task_id: duplicate task id 'a' (first on line 1)"),
        (line(dependencies=["zz"]), "dependencies[0]: 'zz' names no task of the file"),
        (line(dependencies=["a"]), "dependencies[0]: 'a' is in wave 1, not before wave 1 "
                                   "(waves are the barriers: a dependency must be in an "
                                   "earlier wave)"),
        (line(dependencies=["c"]), "dependencies[0]: 'c' is in wave 2, not before wave 1 "
                                   "(waves are the barriers: a dependency must be in an "
                                   "earlier wave)"),
        (line(wave=3, dependencies=["a", "b"]),
         "dependencies[1]: 'b' is the task itself (waves are the barriers: a dependency must "
         "be in an earlier wave)"),
    ])
    def test_each_bad_line_gives_one_exact_error(self, tmp_path, text, error):
        path = write(tmp_path, [A, text, C])
        loaded = load_tasks(path, REG)
        assert loaded == TaskLoad((TASK_A, TASK_C), (f"{path}:2: {error}",), 1)
        with pytest.raises(InputError) as raised:
            load_tasks(path, REG, strict=True)
        assert str(raised.value) == f"{path}:2: {error}"
        assert "\n" not in str(raised.value)

    def test_args_may_nest_max_depth_levels(self, tmp_path):
        def nested(levels):
            args = {}
            for _ in range(levels - 1):
                args = {"k": args}
            return args
        path = write(tmp_path, [A, line(args=nested(MAX_ARGS_DEPTH)),
                                line(task_id="d", args=nested(MAX_ARGS_DEPTH + 1))])
        loaded = load_tasks(path)
        assert [t.task_id for t in loaded.tasks] == ["a", "b"]
        assert loaded.errors == (f"{path}:3: args: must nest at most {MAX_ARGS_DEPTH} levels "
                                 f"(got {MAX_ARGS_DEPTH + 1})",)

    def test_json_nested_past_what_a_parser_reads_is_an_error_not_a_crash(self, tmp_path):
        path = write(tmp_path, [A, '{"args": ' + "[" * 5000 + "]" * 5000 + "}"])
        assert load_tasks(path).errors == (
            f"{path}:2: invalid JSON: depth limit exceeded at column 1034",)

    def test_not_utf8(self, tmp_path):
        path = write(tmp_path, [A, b'{"task_id": "b\xff"}', C])
        loaded = load_tasks(path)
        assert loaded == TaskLoad((TASK_A, TASK_C),
                                  (f"{path}:2: not UTF-8: byte 0xff at column 15",), 1)
        with pytest.raises(InputError, match=r":2: not UTF-8: byte 0xff at column 15$"):
            load_tasks(path, strict=True)

    def test_the_tool_is_not_checked_without_a_registry(self, tmp_path):
        (task,) = load_tasks(write(tmp_path, [{**A, "tool": "anything"}])).tasks
        assert task.tool == "anything"

    def test_a_dependency_on_a_refused_task_is_refused_in_turn(self, tmp_path):
        path = write(tmp_path, [
            A,
            line(task_id="b", predicted_success_rate=2),          # refused itself
            line(task_id="d", wave=2, dependencies=["a", "b"]),   # on b: refused
            line(task_id="e", wave=3, dependencies=["d"]),        # on d: refused
            line(task_id="f", wave=3, dependencies=["a"]),        # fine
        ])
        loaded = load_tasks(path)
        assert [t.task_id for t in loaded.tasks] == ["a", "f"]
        assert loaded.errors == (
            f"{path}:2: predicted_success_rate: must be a number in [0, 1] (got 2)",
            f"{path}:3: dependencies[1]: 'b' names a task refused on line 2",
            f"{path}:4: dependencies[0]: 'd' names a task refused on line 3",
        )
        assert loaded.skipped == 3

    def test_a_duplicate_of_a_refused_line_is_still_a_duplicate(self, tmp_path):
        path = write(tmp_path, [A, line(wave=0), line()])
        assert load_tasks(path).errors == (
            f"{path}:2: wave: must be a whole number from 1 to {MAX_WAVE} (got 0)",
            f"{path}:3: task_id: duplicate task id 'b' (first on line 2)")

    def test_errors_come_in_line_order_and_strict_raises_the_first(self, tmp_path):
        path = write(tmp_path, [A, line(dependencies=["zz"]), "[]", C])
        loaded = load_tasks(path)
        assert loaded.errors == (f"{path}:2: dependencies[0]: 'zz' names no task of the file",
                                 f"{path}:3: must be an object (got a list)")
        with pytest.raises(InputError, match="names no task of the file$"):
            load_tasks(path, strict=True)

    @pytest.mark.parametrize("content", [b"", b"\n\n", b"  \r\n", b"\xef\xbb\xbf"])
    def test_a_file_without_tasks(self, tmp_path, content):
        path = tmp_path / "tasks.jsonl"
        path.write_bytes(content)
        for strict in (False, True):
            with pytest.raises(InputError) as raised:
                load_tasks(path, strict=strict)
            assert str(raised.value) == f"no tasks in {path}"

    def test_a_file_of_bad_lines_only(self, tmp_path):
        path = write(tmp_path, ["[]", line(wave=0)])
        with pytest.raises(InputError) as raised:
            load_tasks(path)
        assert str(raised.value) == (f"no tasks in {path}: 2 line(s) refused, the first: "
                                     f"{path}:1: must be an object (got a list)")
        with pytest.raises(InputError) as raised:
            load_tasks(path, strict=True)
        assert str(raised.value) == f"{path}:1: must be an object (got a list)"

    def test_a_missing_file_is_an_os_error(self, tmp_path):
        with pytest.raises(FileNotFoundError):
            load_tasks(tmp_path / "nope.jsonl")

    @given(st.lists(st.one_of(
        st.binary(max_size=40),
        st.dictionaries(st.sampled_from([*TASK_KEYS, "x", "reassigned_from"]),
                        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                                  st.text(max_size=5), st.lists(st.text(max_size=3)),
                                  st.just(["a"]), st.just("a"), st.just(0.5),
                                  st.just("math_compute")), max_size=9)),
        max_size=8))
    def test_no_content_gives_a_traceback(self, tmp_path_factory, items):
        path = tmp_path_factory.mktemp("fuzz") / "tasks.jsonl"
        path.write_bytes(b"\n".join(
            json.dumps(i).encode() if isinstance(i, dict) else i.replace(b"\n", b" ")
            for i in items))
        schedule = load_schedule(path)
        assert all(e.startswith(f"{path}:") and "\n" not in e for e in schedule.errors)
        try:
            loaded = load_tasks(path, REG)
        except InputError as exc:
            assert "\n" not in str(exc)
            return
        assert loaded.skipped == len(loaded.errors)
        assert all(e.startswith(f"{path}:") and "\n" not in e for e in loaded.errors)
        ids = [t.task_id for t in loaded.tasks]
        assert len(ids) == len(set(ids))


# -- writing tasks back -------------------------------------------------------------

_json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=8))
_json_values = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.text(st.characters(blacklist_categories=("Cs",)), max_size=5), inner, max_size=3),
    max_leaves=8)
_unit = st.floats(min_value=0, max_value=1)


#: ids a trail's plans can hold: printable text, no line or paragraph separator
_ids = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1,
               max_size=6).filter(lambda t: text_problem(t) is None)


@st.composite
def task_lists(draw):
    """Valid task lists: unique ids, each dependency a task of an earlier wave."""
    n = draw(st.integers(min_value=1, max_value=8))
    ids = draw(st.lists(_ids, min_size=n, max_size=n, unique=True))
    tasks = []
    for tid in ids:
        wave = draw(st.integers(min_value=1, max_value=4))
        earlier = [t.task_id for t in tasks if t.wave < wave]
        deps = draw(st.lists(st.sampled_from(earlier), unique=True, max_size=3)
                    if earlier else st.just([]))
        tasks.append(PredictedTask(
            tid, draw(st.sampled_from(REG.names())), draw(_unit), wave,
            draw(st.integers(min_value=MIN_PRIORITY, max_value=MAX_PRIORITY)),
            draw(st.dictionaries(st.text(max_size=5), _json_values, max_size=3)), deps,
            draw(st.none() | _unit), draw(st.none() | _ids)))
    return tasks


class TestTasksToJsonl:
    def test_every_key_in_a_fixed_order(self):
        data = tasks_to_jsonl([TASK_A, TASK_C])
        lines = data.split(b"\n")
        assert lines[-1] == b"" and len(lines) == 3
        assert [list(json.loads(x)) for x in lines[:2]] == [list(TASK_KEYS)] * 2
        assert json.loads(lines[1]) == C

    @given(task_lists())
    def test_load_reads_back_what_it_wrote(self, tmp_path_factory, tasks):
        path = tmp_path_factory.mktemp("rt") / "tasks.jsonl"
        path.write_bytes(tasks_to_jsonl(tasks))
        assert load_tasks(path, REG, strict=True) == TaskLoad(tuple(tasks), (), 0)

    def test_args_json_cannot_hold(self):
        with pytest.raises(InputError, match=r"^task 'a': cannot be written as JSON"):
            tasks_to_jsonl([PredictedTask("a", "math_compute", 0.5, args={"x": object()})])
        with pytest.raises(InputError, match=r"^task 'b': cannot be written as JSON"):
            tasks_to_jsonl([PredictedTask("b", "math_compute", 0.5,
                                          args={"n": 2**70, "s": "\ud800"})])


class TestByWave:
    def test_waves_ascending_file_order_within(self):
        tasks = [PredictedTask(t, "math_compute", 0.5, wave=w)
                 for t, w in [("x", 3), ("y", 1), ("z", 3), ("w", 2), ("v", 1)]]
        assert {w: [t.task_id for t in g] for w, g in by_wave(tasks).items()} == {
            1: ["y", "v"], 2: ["w"], 3: ["x", "z"]}
        assert list(by_wave(tasks)) == [1, 2, 3]
        assert by_wave([]) == {}


# -- the schedule ---------------------------------------------------------------------


class TestLoadSchedule:
    def test_own_format(self, tmp_path):
        path = write(tmp_path, [{"task_id": "a", "agent_id": "agent_0"},
                                {"task_id": "c", "agent_id": "agent_1", "wave": 2},
                                {"task_id": "d", "agent_id": "agent_1", "wave": None}],
                     "schedule.jsonl")
        assert load_schedule(path) == ScheduleLoad(
            (ScheduleEntry("a", "agent_0"), ScheduleEntry("c", "agent_1", 2),
             ScheduleEntry("d", "agent_1")), (), 0, str(path), (1, 2, 3))

    def test_buddys_own_agent_assignments(self, tmp_path):
        first = TaskAssignment("a", "agent_3", 0.9, 1.5, 1, "LOAD_BALANCED", 2)
        moved = TaskAssignment("a", "agent_1", 0.9, 7.0, 1, "LOAD_BALANCED", 2,
                               reassigned_from="agent_3")
        other = TaskAssignment("c", "agent_0", 0.7, 1.5, 2, "ROUND_ROBIN")
        path = write(tmp_path, [moved.to_json(), first.to_json(), other.to_json()],
                     "agent_assignments.jsonl")
        loaded = load_schedule(path, strict=True)
        assert loaded.entries == (ScheduleEntry("a", "agent_3", 1),
                                  ScheduleEntry("c", "agent_0", 2))
        assert (loaded.errors, loaded.skipped, loaded.lines) == ((), 0, (2, 3))

    @pytest.mark.parametrize("item, error", [
        ({"task_id": "a", "agent_id": "x", "agent": "y"}, "agent: unknown key"),
        ({"task_id": "a"}, "agent_id: missing (an entry needs task_id and agent_id)"),
        ({"agent_id": "x"}, "task_id: missing (an entry needs task_id and agent_id)"),
        ({"task_id": "a", "agent_id": ""}, "agent_id: must be a non-empty string (got '')"),
        ({"task_id": 1, "agent_id": "x"}, "task_id: must be a non-empty string (got 1)"),
        ({"task_id": "a", "agent_id": "x", "wave": 0},
         f"wave: must be a whole number from 1 to {MAX_WAVE} or null (got 0)"),
        ({"task_id": "a", "agent_id": "x", "wave": True},
         f"wave: must be a whole number from 1 to {MAX_WAVE} or null (got True)"),
        ({"task_id": "a", "agent_id": "x", "reassigned_from": 5},
         "reassigned_from: must be a non-empty string or null (got 5)"),
        ({"task_id": "c", "agent_id": "x"}, "task_id: duplicate task id 'c' (first on line 1)"),
        ("[]", "must be an object (got a list)"),
        ("{", "invalid JSON: unexpected end of data at column 2"),
        (b'{"task_id": "\xc3"}', "not UTF-8: byte 0xc3 at column 14"),
    ])
    def test_each_bad_line_gives_one_exact_error(self, tmp_path, item, error):
        path = write(tmp_path, [{"task_id": "c", "agent_id": "agent_0"}, item,
                                {"task_id": "b", "agent_id": "agent_1"}], "schedule.jsonl")
        loaded = load_schedule(path)
        assert loaded.entries == (ScheduleEntry("c", "agent_0"), ScheduleEntry("b", "agent_1"))
        assert (loaded.errors, loaded.skipped, loaded.lines) == (
            (f"{path}:2: {error}",), 1, (1, 3))
        with pytest.raises(InputError) as raised:
            load_schedule(path, strict=True)
        assert str(raised.value) == f"{path}:2: {error}"

    def test_an_empty_schedule_is_no_schedule(self, tmp_path):
        path = tmp_path / "schedule.jsonl"
        path.write_bytes(b"\n")
        assert load_schedule(path, strict=True) == ScheduleLoad((), (), 0, str(path), ())


class TestApplySchedule:
    def test_tasks_get_their_agent_in_their_order(self, tmp_path):
        path = write(tmp_path, [{"task_id": "c", "agent_id": "agent_1", "wave": 2},
                                {"task_id": "a", "agent_id": "agent_2"}], "schedule.jsonl")
        tasks, errors = apply_schedule([TASK_A, TASK_C], load_schedule(path))
        assert errors == []
        assert [(t.task_id, t.agent_id) for t in tasks] == [("a", "agent_2"), ("c", "agent_1")]
        assert tasks[0] == PredictedTask("a", "math_compute", 0.9, agent_id="agent_2")

    def test_refused_entries_name_the_schedule_line_and_leave_the_task(self, tmp_path):
        path = write(tmp_path, [{"task_id": "zz", "agent_id": "agent_1"},
                                {"task_id": "a", "agent_id": "agent_1", "wave": 2},
                                {"task_id": "c", "agent_id": "agent_3"}], "schedule.jsonl")
        tasks, errors = apply_schedule([TASK_A, TASK_C], load_schedule(path))
        assert tasks == [TASK_A, TASK_C]
        assert errors == [
            f"{path}:1: task_id: 'zz' names no task",
            f"{path}:2: wave: 2 is not the wave of task 'a' (1)",
            f"{path}:3: agent_id: 'agent_3' is not the agent task 'c' is pinned to "
            "('agent_1')",
        ]
        with pytest.raises(InputError) as raised:
            apply_schedule([TASK_A, TASK_C], load_schedule(path), strict=True)
        assert str(raised.value) == f"{path}:1: task_id: 'zz' names no task"

    def test_the_same_pin_twice_is_fine(self):
        tasks, errors = apply_schedule([TASK_C], [ScheduleEntry("c", "agent_1", 2)])
        assert (tasks, errors) == ([TASK_C], [])

    def test_plain_entries_are_named_by_index(self):
        tasks, errors = apply_schedule(iter([TASK_A]), (ScheduleEntry("a", "x", 1),
                                                        ScheduleEntry("b", "y")))
        assert tasks == [PredictedTask("a", "math_compute", 0.9, agent_id="x")]
        assert errors == ["schedule[1]: task_id: 'b' names no task"]


# -- hostile files ----------------------------------------------------------------------

LOADERS = [pytest.param(load_tasks, id="tasks"), pytest.param(load_schedule, id="schedule"),
           pytest.param(load_permissions, id="permissions")]


def finished(load, path, **kwargs):
    """``load(path)`` run in a thread given 5 seconds: what it raised (it must raise)."""
    outcome = []

    def run():
        try:
            load(path, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)
        else:
            outcome.append(None)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=5)
    if thread.is_alive():  # a blocked open or read: give it a writer, an end, and fail
        with open(path, "wb"):
            pass
        pytest.fail(f"{load.__name__} blocked on {path}")
    assert outcome and outcome[0] is not None, "no error raised"
    return outcome[0]


def short_dir():
    """A directory of a short path (a socket's path has some 100 bytes at most)."""
    return tempfile.TemporaryDirectory(dir="/tmp" if os.path.isdir("/tmp") else None)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
class TestNotARegularFile:
    @pytest.mark.parametrize("load", LOADERS)
    @pytest.mark.parametrize("strict", [False, True])
    def test_a_fifo_without_a_writer_is_refused_not_waited_on(self, tmp_path, load, strict):
        path = tmp_path / "tasks.jsonl"
        os.mkfifo(path)
        kwargs = {} if load is load_permissions else {"strict": strict}
        exc = finished(load, path, **kwargs)
        assert type(exc) is InputError
        assert str(exc) == f"{path}: not a regular file"

    @pytest.mark.parametrize("load", LOADERS)
    def test_dev_zero_is_refused_unread(self, load):
        if not os.path.exists("/dev/zero"):
            pytest.skip("no /dev/zero")
        exc = finished(load, "/dev/zero")
        assert type(exc) is InputError and str(exc) == "/dev/zero: not a regular file"

    @pytest.mark.parametrize("load", LOADERS)
    def test_a_directory(self, tmp_path, load):
        with pytest.raises(InputError) as raised:
            load(tmp_path)
        assert str(raised.value) == f"{tmp_path}: not a regular file"

    @pytest.mark.parametrize("load", LOADERS)
    def test_a_socket(self, load):
        with short_dir() as directory, socket.socket(socket.AF_UNIX) as sock:
            path = os.path.join(directory, "s")
            sock.bind(path)
            with pytest.raises(InputError) as raised:
                load(path)
        assert str(raised.value) == f"{path}: not a regular file"

    @pytest.mark.parametrize("load", LOADERS)
    def test_a_link_to_a_regular_file_is_read(self, tmp_path, load):
        target = write(tmp_path, [A], "real.jsonl")
        if load is load_permissions:
            target.write_text('{"agent_0": []}')
        link = tmp_path / "link"
        link.symlink_to(target)
        assert load(link)

    def test_a_fifo_swapped_in_after_the_stat_is_refused_after_the_open(self, tmp_path,
                                                                         monkeypatch):
        path = write(tmp_path, [A])
        real_stat = os.stat

        def stat_then_swap(p, *args, **kwargs):
            result = real_stat(p, *args, **kwargs)
            if os.fspath(p) == str(path) and stat.S_ISREG(result.st_mode):
                os.unlink(path)
                os.mkfifo(path)
            return result
        monkeypatch.setattr(os, "stat", stat_then_swap)
        exc = finished(load_tasks, path)
        monkeypatch.undo()
        assert type(exc) is InputError and str(exc) == f"{path}: not a regular file"

    def test_a_missing_file_is_still_an_os_error(self, tmp_path):
        for load in (load_tasks, load_schedule, load_permissions):
            with pytest.raises(FileNotFoundError):
                load(tmp_path / "nope")


class TestSizeCaps:
    def test_the_caps(self):
        assert (MAX_INPUT_BYTES, MAX_LINE_BYTES, MAX_PERMISSIONS_BYTES) == (
            1 << 30, 1 << 20, 16 << 20)
        assert MAX_AGENT_ID_CHARS == 256

    @pytest.mark.parametrize("load", [load_tasks, load_schedule])
    def test_a_file_over_1_gib_is_refused_by_its_size_unread(self, tmp_path, load):
        path = tmp_path / "tasks.jsonl"
        with open(path, "wb") as f:  # sparse: no disk, and never read
            f.truncate(MAX_INPUT_BYTES + 1)
        with pytest.raises(InputError) as raised:
            load(path, strict=False)
        assert str(raised.value) == f"{path}: larger than 1 GiB ({MAX_INPUT_BYTES + 1} bytes)"

    def test_a_permissions_file_over_16_mib(self, tmp_path):
        path = tmp_path / "agents.json"
        with open(path, "wb") as f:
            f.truncate(MAX_PERMISSIONS_BYTES + 1)
        with pytest.raises(InputError) as raised:
            load_permissions(path)
        assert str(raised.value) == (f"{path}: larger than 16 MiB "
                                     f"({MAX_PERMISSIONS_BYTES + 1} bytes)")

    def test_a_file_of_exactly_the_cap_is_read(self, tmp_path, monkeypatch):
        path = write(tmp_path, [A])
        monkeypatch.setattr(_inputs, "MAX_INPUT_BYTES", path.stat().st_size)
        assert load_tasks(path).tasks == (TASK_A,)
        monkeypatch.setattr(_inputs, "MAX_INPUT_BYTES", path.stat().st_size - 1)
        with pytest.raises(InputError, match=r"larger than \d+ bytes \(\d+ bytes\)$"):
            load_tasks(path)

    @pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")
    def test_no_more_than_the_cap_and_a_byte_is_read(self, monkeypatch):
        # A /proc file is regular and stated as empty, yet holds bytes: only the read
        # finds it too large, having read the cap and one byte more.
        path = "/proc/self/status"
        assert os.stat(path).st_size == 0
        monkeypatch.setattr(_inputs, "MAX_INPUT_BYTES", 100)
        monkeypatch.setattr(_inputs, "_READ_CHUNK", 7)
        with pytest.raises(InputError) as raised:
            load_tasks(path)
        assert str(raised.value) == f"{path}: larger than 100 bytes (at least 101 bytes)"

    def test_bytes_as_caps_are_named(self):
        assert [_inputs._size(n) for n in (1 << 30, 16 << 20, 1 << 20, 4096, 100, 1025)] == [
            "1 GiB", "16 MiB", "1 MiB", "4 KiB", "100 bytes", "1025 bytes"]


class TestLongLines:
    def long(self, extra=1):
        """A valid task line of ``MAX_LINE_BYTES + extra`` bytes (spaces before its end)."""
        text = line(task_id="long")
        return text[:-1] + " " * (MAX_LINE_BYTES + extra - len(text)) + "}"

    def test_a_line_over_1_mib_between_good_lines_is_one_bad_line(self, tmp_path):
        path = write(tmp_path, [A, self.long(), C])
        loaded = load_tasks(path, REG)
        error = f"{path}:2: line longer than 1 MiB ({MAX_LINE_BYTES + 1} bytes)"
        assert loaded == TaskLoad((TASK_A, TASK_C), (error,), 1)
        with pytest.raises(InputError) as raised:
            load_tasks(path, REG, strict=True)
        assert str(raised.value) == error

    def test_a_line_of_exactly_1_mib_is_read(self, tmp_path):
        path = write(tmp_path, [A, self.long(0), C])
        assert [t.task_id for t in load_tasks(path, strict=True).tasks] == ["a", "long", "c"]

    def test_the_newline_is_not_counted_the_carriage_return_is(self, tmp_path):
        path = tmp_path / "tasks.jsonl"
        path.write_bytes(json.dumps(A).encode() + b"\n" + self.long(0).encode() + b"\r\n")
        error = f"{path}:2: line longer than 1 MiB ({MAX_LINE_BYTES + 1} bytes)"
        assert load_tasks(path).errors == (error,)

    def test_a_long_blank_line_and_a_long_last_line(self, tmp_path):
        path = tmp_path / "tasks.jsonl"
        path.write_bytes(json.dumps(A).encode() + b"\n" + b" " * (MAX_LINE_BYTES + 5)
                         + b"\n" + b"x" * (MAX_LINE_BYTES + 2))
        assert load_tasks(path).errors == (
            f"{path}:2: line longer than 1 MiB ({MAX_LINE_BYTES + 5} bytes)",
            f"{path}:3: line longer than 1 MiB ({MAX_LINE_BYTES + 2} bytes)")

    def test_a_file_of_long_lines_only_has_no_tasks(self, tmp_path):
        path = write(tmp_path, [self.long()])
        with pytest.raises(InputError) as raised:
            load_tasks(path)
        assert str(raised.value) == (f"no tasks in {path}: 1 line(s) refused, the first: "
                                     f"{path}:1: line longer than 1 MiB "
                                     f"({MAX_LINE_BYTES + 1} bytes)")

    def test_in_a_schedule(self, tmp_path):
        entry = json.dumps({"task_id": "x", "agent_id": "agent_1"})
        long_entry = entry[:-1] + " " * (MAX_LINE_BYTES + 1 - len(entry)) + "}"
        path = write(tmp_path, [{"task_id": "c", "agent_id": "agent_0"}, long_entry,
                                {"task_id": "b", "agent_id": "agent_1"}], "schedule.jsonl")
        loaded = load_schedule(path)
        error = f"{path}:2: line longer than 1 MiB ({MAX_LINE_BYTES + 1} bytes)"
        assert (loaded.entries, loaded.errors, loaded.skipped, loaded.lines) == (
            (ScheduleEntry("c", "agent_0"), ScheduleEntry("b", "agent_1")), (error,), 1, (1, 3))
        with pytest.raises(InputError) as raised:
            load_schedule(path, strict=True)
        assert str(raised.value) == error


# -- the agents' permissions --------------------------------------------------------------


def permissions_file(tmp_path, content, name="agents.json"):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes)
                     else content.encode() if isinstance(content, str)
                     else json.dumps(content).encode())
    return path


class TestLoadPermissions:
    def test_agents_and_their_permissions_in_file_order(self, tmp_path):
        path = permissions_file(tmp_path, {"agent_1": ["forms.write", "vision.read"],
                                           "agent_0": [], "ops bot": ["x", "x"],
                                           "東京": ["mail.send"]})
        loaded = load_permissions(path)
        assert loaded == {"agent_1": frozenset({"forms.write", "vision.read"}),
                          "agent_0": frozenset(), "ops bot": frozenset({"x"}),
                          "東京": frozenset({"mail.send"})}
        assert list(loaded) == ["agent_1", "agent_0", "ops bot", "東京"]
        assert all(type(p) is frozenset for p in loaded.values())

    def test_a_byte_order_mark_whitespace_and_the_longest_id(self, tmp_path):
        agent = "a" * MAX_AGENT_ID_CHARS
        path = permissions_file(tmp_path, b"\xef\xbb\xbf\r\n " + json.dumps(
            {agent: ["p"]}).encode() + b"\n\n")
        assert load_permissions(path) == {agent: frozenset({"p"})}

    def test_the_map_the_engine_takes(self, tmp_path):
        from buddy.engine import Engine
        path = permissions_file(tmp_path, {"agent_0": [], "agent_1": ["nothing.useful"]})
        engine = Engine.default(clock=lambda: 0.0, agents=load_permissions(path))
        assert engine.agents == {"agent_0": frozenset(), "agent_1": frozenset({"nothing.useful"})}

    @pytest.mark.parametrize("content, error", [
        # the document
        ("", "no agents (the file is empty)"),
        (b"\xef\xbb\xbf \r\n\t", "no agents (the file is empty)"),
        ("{\n  \"agent_0\": [1,]\n}",
         "invalid JSON: trailing comma is not allowed at line 2 column 16"),
        ('{"a": NaN}', "invalid JSON: unexpected character, expected a JSON value "
                       "at line 1 column 7"),
        ('{"a": []}{"b": []}',
         "invalid JSON: unexpected content after document at line 1 column 10"),
        ('{"a": ["\\ud800"]}', "invalid JSON: no low surrogate in string at line 1 column 9"),
        (b'{"a": []}\n{"\xff": []}', "not UTF-8: byte 0xff at line 2 column 3"),
        ([["agent_0", ["p"]]], "must be a JSON object of agent ids to permission lists "
                               "(got a list)"),
        ("null", "must be a JSON object of agent ids to permission lists (got null)"),
        ('"agent_0"', "must be a JSON object of agent ids to permission lists (got a string)"),
        ({}, "no agents"),
        # an agent
        ({"agent_0": 3}, "agent[agent_0]: must be a list of permission strings (got a number)"),
        ({"agent_0": "forms.write"},
         "agent[agent_0]: must be a list of permission strings (got a string)"),
        ({"agent_0": None}, "agent[agent_0]: must be a list of permission strings (got null)"),
        ({"agent_0": True},
         "agent[agent_0]: must be a list of permission strings (got a boolean)"),
        ({"agent_0": {"permissions": ["p"]}},
         "agent[agent_0]: must be a list of permission strings (got an object)"),
        ({"agent_0": ["p", ""]}, "agent[agent_0][1]: must be a non-empty string (got '')"),
        ({"agent_0": [7]}, "agent[agent_0][0]: must be a non-empty string (got 7)"),
        ({"agent_0": [["p"]]}, "agent[agent_0][0]: must be a non-empty string (got ['p'])"),
        ({"agent_0": [None]}, "agent[agent_0][0]: must be a non-empty string (got None)"),
        ({"agent_0": ["password: hunter2", 0]},
         "agent[agent_0][1]: must be a non-empty string (got 0)"),
        ({"": ["p"]}, "agent['']: the agent id is empty"),
        ({"a" * (MAX_AGENT_ID_CHARS + 1): []},
         f"agent[{shown('a' * 257)}]: the agent id is longer than 256 characters (257)"),
        ({"agent\x1b[2J": []},
         "agent['agent\\x1b[2J']: the agent id must be printable text: it holds U+001B at "
         "character 6"),
        ({"a\nb": []}, "agent['a\\nb']: the agent id must be printable text: it holds U+000A "
                       "at character 2"),
        ({"a\x85": []}, "agent['a\\x85']: the agent id must be printable text: it holds "
                        "U+0085 at character 2"),
        ({"a\u2028b": []}, "agent['a\\u2028b']: the agent id must be printable text: it "
                           "holds U+2028 at character 2"),
        ({"password: hunter2": 1},
         "agent['password: ***']: must be a list of permission strings (got a number)"),
        # across agents: the first problem in file order, then a repeated id
        ({"agent_0": ["p"], "agent_1": 1, "agent_2": 2},
         "agent[agent_1]: must be a list of permission strings (got a number)"),
        ('{"agent_0": ["p"], "agent_1": [], "agent_0": ["q"]}',
         "agent[agent_0]: listed twice (an agent's permissions are one list)"),
        ('{"agent_0": 5, "agent_0": ["q"]}',
         "agent[agent_0]: listed twice (an agent's permissions are one list)"),
        ('{"a": [], "b": {"x": 1, "x": 2}, "b": []}',
         "agent[b]: listed twice (an agent's permissions are one list)"),
        ('{"a": ' + "[" * 1000 + "]" * 1000 + ', "a": []}',
         "an agent id is listed twice, once with a value nested too deeply to read"),
    ])
    def test_each_problem_gives_one_exact_error(self, tmp_path, content, error):
        path = permissions_file(tmp_path, content)
        with pytest.raises(InputError) as raised:
            load_permissions(path)
        assert str(raised.value) == f"{path}: {error}"
        assert "\n" not in str(raised.value)
        assert raised.value.__context__ is None or raised.value.__suppress_context__

    def test_a_permissions_file_of_exactly_its_cap_is_read(self, tmp_path, monkeypatch):
        path = permissions_file(tmp_path, {"agent_0": ["p"]})
        monkeypatch.setattr(_inputs, "MAX_PERMISSIONS_BYTES", path.stat().st_size)
        assert load_permissions(path) == {"agent_0": frozenset({"p"})}
        monkeypatch.setattr(_inputs, "MAX_PERMISSIONS_BYTES", path.stat().st_size - 1)
        with pytest.raises(InputError, match=r": larger than \d+ bytes \(\d+ bytes\)$"):
            load_permissions(path)

    @given(st.one_of(
        st.binary(max_size=60),
        st.dictionaries(st.text(max_size=4), st.one_of(
            st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=3),
            st.lists(st.one_of(st.text(max_size=3), st.integers(), st.none()), max_size=3),
            st.dictionaries(st.text(max_size=2), st.integers(), max_size=2)), max_size=4)))
    def test_no_content_gives_a_traceback(self, tmp_path_factory, content):
        path = tmp_path_factory.mktemp("perm") / "agents.json"
        path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
        try:
            loaded = load_permissions(path)
        except InputError as exc:
            assert str(exc).startswith(f"{path}: ") and "\n" not in str(exc)
            return
        assert loaded and all(type(a) is str and 1 <= len(a) <= MAX_AGENT_ID_CHARS
                              and type(p) is frozenset for a, p in loaded.items())
