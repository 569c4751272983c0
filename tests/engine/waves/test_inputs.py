"""The wave loop's inputs: tasks and schedule files, one exact error per bad line."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from buddy.engine import ToolContractRegistry
from buddy.engine.orchestration._plans import MAX_ARGS_DEPTH
from buddy.engine.waves._inputs import (
    MAX_PRIORITY,
    MAX_WAVE,
    MIN_PRIORITY,
    TASK_KEYS,
    ScheduleLoad,
    TaskLoad,
    apply_schedule,
    by_wave,
    load_schedule,
    load_tasks,
    tasks_to_jsonl,
)
from buddy.engine.waves._records import PredictedTask, ScheduleEntry, TaskAssignment
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


@st.composite
def task_lists(draw):
    """Valid task lists: unique ids, each dependency a task of an earlier wave."""
    n = draw(st.integers(min_value=1, max_value=8))
    ids = draw(st.lists(st.text(st.characters(blacklist_categories=("Cs",)), min_size=1,
                                max_size=6), min_size=n, max_size=n, unique=True))
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
            draw(st.none() | _unit), draw(st.none() | st.text(min_size=1, max_size=5))))
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
