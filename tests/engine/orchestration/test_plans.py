"""Loading execution plans: JSON, JSON Lines, one clear error per bad plan."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from buddy.engine import ToolContractRegistry
from buddy.engine.orchestration._plans import (
    MAX_ARGS_DEPTH,
    ExecutionOutcome,
    PlannedCall,
    load_plans,
    plan_to_json,
)
from buddy.engine.orchestration._scenario import default_plans
from buddy.rules.base._values import ExecutionMode
from buddy.rules.base.errors import InputError, PlanError

REG = ToolContractRegistry.default()
GOOD = {"plan_id": "p1", "upstream_plan_id": "phase21-1", "validation_id": "v1",
        "steps": [{"id": "look", "agent": "a", "tool": "vision_inspect", "confidence": 0.9},
                  {"id": "fill", "agent": "a", "tool": "form_fill", "confidence": 0.8,
                   "args": {"name": "x"}, "resource": "ui:form", "estimated_s": 3}],
        "execution_order": ["fill", "look"]}


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


class TestLoadPlans:
    def test_json_list(self, tmp_path):
        loaded = load_plans(write(tmp_path, "p.json", json.dumps([GOOD])), REG)
        (plan,) = loaded.plans
        assert loaded.errors == ()
        assert plan.execution_order == ("p1/fill", "p1/look")
        assert [(c.id, c.slot, c.tool) for c in plan.calls] == [
            ("p1/fill", 0, "form_fill"), ("p1/look", 1, "vision_inspect")]
        assert plan.calls[0].resource == "ui:form" and plan.calls[0].estimated_s == 3
        assert plan.agent_assignments == {"p1/fill": "a", "p1/look": "a"}
        assert plan.confidence_scores == {"p1/fill": 0.8, "p1/look": 0.9}
        assert (plan.upstream_plan_id, plan.validation_id) == ("phase21-1", "v1")

    @pytest.mark.parametrize("name, text", [
        ("p.json", json.dumps([GOOD])), ("p.jsonl", json.dumps(GOOD))])
    def test_integers_beyond_64_bits_reach_the_tool_exactly(self, tmp_path, name, text):
        big = 12345678901234567890123
        text = text.replace('{"name": "x"}', f'{{"name": "x", "account": {big}, "id19": '
                            f'"{10**19}", "small": 5}}')
        (plan,) = load_plans(write(tmp_path, name, text), REG).plans
        args = next(c.args for c in plan.calls if "account" in c.args)
        assert args["account"] == big and type(args["account"]) is int
        assert args["id19"] == str(10**19) and args["small"] == 5

    def test_plans_key_and_phase_names(self, tmp_path):
        doc = {"plans": [{**{k: v for k, v in GOOD.items() if k != "upstream_plan_id"},
                          "phase21_plan_id": "p21"}]}
        (plan,) = load_plans(write(tmp_path, "p.json", json.dumps(doc)), REG).plans
        assert plan.upstream_plan_id == "p21"

    def test_json_lines_keep_good_plans_and_name_bad_ones(self, tmp_path):
        bad_conf = {"plan_id": "p2", "steps": [{"id": "s", "agent": "a", "tool": "form_fill",
                                                 "confidence": 1.5}]}
        bad_tool = {"plan_id": "p3", "steps": [{"id": "s", "agent": "a", "tool": "rm",
                                                 "confidence": 0.5}]}
        text = "\n".join([json.dumps(GOOD), json.dumps(bad_conf), "", json.dumps(bad_tool),
                          "{not json"]) + "\n"
        path = write(tmp_path, "p.jsonl", text)
        loaded = load_plans(path, REG)
        assert [p.plan_id for p in loaded.plans] == ["p1"]
        assert sorted(loaded.errors) == sorted([
            f"{path}:2: plan[p2].steps[0].confidence: must be a number in [0, 1] (got 1.5)",
            f"{path}:4: plan[p3].steps[0].tool: unknown tool 'rm'",
            f"{path}:5: invalid JSON: unexpected character, expected a string key: "
            "line 1 column 2 (char 1)",
        ])

    @pytest.mark.parametrize("change, message", [
        ({"plan_id": ""}, "plan[0].plan_id: must be a non-empty string (got '')"),
        ({"colour": 1}, "plan[p1].colour: unknown key"),
        ({"steps": []}, "plan[p1].steps: must be a non-empty list of steps"),
        ({"execution_order": ["fill"]}, "plan[p1].execution_order: must list every step id once"),
    ])
    def test_plan_level_errors(self, tmp_path, change, message):
        path = write(tmp_path, "p.json", json.dumps([{**GOOD, **change}]))
        (error,) = load_plans(path, REG).errors
        assert error.startswith(f"{path}:1: {message}")

    @pytest.mark.parametrize("step_change, field", [
        ({"agent": 3}, "agent"), ({"args": [1]}, "args"), ({"resource": 4}, "resource"),
        ({"estimated_s": -1}, "estimated_s"), ({"approval": "yes"}, "approval"),
        ({"confidence": True}, "confidence"), ({"nope": 1}, "nope"),
    ])
    def test_step_errors_name_the_field(self, tmp_path, step_change, field):
        plan = {**GOOD, "steps": [{**GOOD["steps"][0], **step_change}, GOOD["steps"][1]]}
        (error,) = load_plans(write(tmp_path, "p.json", json.dumps([plan])), REG).errors
        assert f"plan[p1].steps[0].{field}:" in error

    def test_duplicate_ids(self, tmp_path):
        path = write(tmp_path, "p.jsonl", json.dumps(GOOD) + "\n" + json.dumps(GOOD) + "\n")
        loaded = load_plans(path, REG)
        assert len(loaded.plans) == 1
        assert loaded.errors == (f"{path}:2: plan[p1].plan_id: duplicate plan id",)

    def test_unreadable_files(self, tmp_path):
        with pytest.raises(PlanError, match="no such file"):
            load_plans(tmp_path / "none.json")
        path = write(tmp_path, "n.json", "42")
        with pytest.raises(PlanError, match=re.escape(
                f'{path}: must hold plans: a list, {{"plans": [...]}} or JSON Lines '
                "(got a number)")):
            load_plans(path)

    def test_round_trip_of_the_default_scenario(self, tmp_path):
        plans = default_plans(7)
        path = write(tmp_path, "scenario.jsonl",
                     "\n".join(json.dumps(plan_to_json(p)) for p in plans))
        loaded = load_plans(path, REG)
        assert loaded.errors == () and loaded.plans == tuple(plans)

    def test_scenario_is_seeded(self):
        assert default_plans(1) == default_plans(1)
        assert default_plans(1) != default_plans(2)


def jsonl(tmp_path, *plans, raw: bool = False):
    """A JSON Lines file: GOOD on line 1, then ``plans``, one per line."""
    dump = (lambda p: json.dumps(p, ensure_ascii=False)) if raw else json.dumps
    return write(tmp_path, "p.jsonl", "\n".join(dump(p) for p in (GOOD, *plans)) + "\n")


def step(**change):
    return {"id": "s", "agent": "a", "tool": "form_fill", "confidence": 0.9, **change}


def nested(depth: int) -> str:
    """JSON text of arguments ``depth`` levels deep (objects and lists alternating)."""
    opening = "".join('{"x": ' if level % 2 == 0 else "[" for level in range(depth))
    closing = "".join("}" if level % 2 == 0 else "]" for level in reversed(range(depth)))
    return opening + '"leaf"' + closing


def with_args(plan_id: str, args: str) -> str:
    """One plan line whose only step has the arguments ``args`` (JSON text)."""
    return json.dumps({"plan_id": plan_id, "steps": [step(args=None)]}).replace("null", args)


class TestExecutionOrderIds:
    # Defect 8: an id that is no string, but whose str() names a step, crashed the loader.
    @pytest.mark.parametrize("sid, order, got", [
        ("1", [1], "[1]"), ("None", [None], "[None]"), ("{}", [{}], "[{}]"),
        ("[1]", [[1]], "[[1]]"), ("s", ["s", "s"], "['s', 's']"), ("s", "s", "'s'"),
    ])
    def test_refused_with_one_line(self, tmp_path, sid, order, got):
        path = jsonl(tmp_path, {"plan_id": "p2", "steps": [step(id=sid)],
                                "execution_order": order})
        loaded = load_plans(path, REG)
        assert [p.plan_id for p in loaded.plans] == ["p1"]
        steps = sid if sid.isalnum() else f"'{sid}'"
        assert loaded.errors == (f"{path}:2: plan[p2].execution_order: must list every step "
                                 f"id once (steps: {steps}; got {got})",)


SECRET = "hunter2-sk-live-0123"


class TestEchoedValues:
    # Defect 9: rejected values were echoed raw, secrets and all.
    @pytest.mark.parametrize("change, field, got", [
        ({"args": [{"password": SECRET}]}, "args", "must be an object (got a list)"),
        ({"args": f"password={SECRET}"}, "args", "must be an object (got a string)"),
        ({"args": 3}, "args", "must be an object (got a number)"),
        ({"args": True}, "args", "must be an object (got a boolean)"),
        ({"confidence": {"token": SECRET}}, "confidence",
         "must be a number in [0, 1] (got {'token': '***'})"),
        ({"resource": {"api_key": SECRET}}, "resource",
         "must be a string (got {'api_key': '***'})"),
        ({"approval": [{"password": SECRET}]}, "approval",
         "must be false or null (got [{'password': '***'}])"),
        ({"estimated_s": {"secret": SECRET}}, "estimated_s",
         "must be a number >= 0 (got {'secret': '***'})"),
        ({"agent": {"authorization": SECRET}}, "agent",
         "must be a non-empty string (got {'authorization': '***'})"),
    ])
    def test_step_values_are_masked(self, tmp_path, change, field, got):
        path = jsonl(tmp_path, {"plan_id": "p2", "steps": [step(**change)]})
        (error,) = load_plans(path, REG).errors
        assert error == f"{path}:2: plan[p2].steps[0].{field}: {got}"

    @pytest.mark.parametrize("change, field, got", [
        ({"plan_id": {"password": SECRET}}, "plan[1].plan_id",
         "must be a non-empty string (got {'password': '***'})"),
        ({"execution_order": [{"password": SECRET}]}, "plan[p2].execution_order",
         "must list every step id once (steps: s; got [{'password': '***'}])"),
        ({"upstream_plan_id": {"token": SECRET}}, "plan[p2].upstream_plan_id",
         "must be a string or null (got {'token': '***'})"),
        ({"phase22_validation_id": [SECRET]}, "plan[p2].phase22_validation_id",
         "must be a string or null (got ['hunter2-sk-live-0123'])"),
    ])
    def test_plan_values_are_masked(self, tmp_path, change, field, got):
        path = jsonl(tmp_path, {"plan_id": "p2", "steps": [step()], **change})
        (error,) = load_plans(path, REG).errors
        assert error == f"{path}:2: {field}: {got}"

    def test_long_and_odd_values_are_short_and_on_one_line(self, tmp_path):
        path = jsonl(tmp_path, {"plan_id": "p\n2", "steps": [step(tool="x" * 500)]},
                     {"plan_id": "p3", "steps": [step()], "a\nkey": 1})
        assert load_plans(path, REG).errors == (
            f"{path}:2: plan['p\\n2'].steps[0].tool: unknown tool "
            f"'{'x' * 27}...{'x' * 28}'",
            f"{path}:3: plan[p3]['a\\nkey']: unknown key")

    def test_plan_and_step_kinds(self, tmp_path):
        path = jsonl(tmp_path, ["a", "list"], {"plan_id": "p3", "steps": [[step()]]})
        assert load_plans(path, REG).errors == (
            f"{path}:2: plan[1]: must be an object (got a list)",
            f"{path}:3: plan[p3].steps[0]: must be an object (got a list)")


class TestDeepArgs:
    # Defect 10: deep args crashed `buddy run` (the digest, then the audit writer).
    def test_the_limit_is_accepted(self, tmp_path):
        assert MAX_ARGS_DEPTH == 100
        path = write(tmp_path, "p.jsonl", f"{json.dumps(GOOD)}\n{with_args('p2', nested(100))}")
        loaded = load_plans(path, REG)
        assert loaded.errors == ()
        assert loaded.plans[1].calls[0].args == json.loads(nested(100))

    @pytest.mark.parametrize("depth", [101, 300, 1_000])
    def test_deeper_is_refused(self, tmp_path, depth):
        path = write(tmp_path, "p.jsonl", f"{json.dumps(GOOD)}\n{with_args('p2', nested(depth))}")
        loaded = load_plans(path, REG)
        assert [p.plan_id for p in loaded.plans] == ["p1"]
        assert loaded.errors == (
            f"{path}:2: plan[p2].steps[0].args: must nest at most 100 levels (got {depth})",)

    def test_a_line_too_deep_for_the_parser_is_one_rejected_line(self, tmp_path):
        path = write(tmp_path, "p.jsonl", f"{with_args('p0', nested(2_000))}\n{json.dumps(GOOD)}")
        loaded = load_plans(path, REG)
        assert [p.plan_id for p in loaded.plans] == ["p1"]
        assert loaded.errors == (f"{path}:1: invalid JSON: depth limit exceeded: line 1 "
                                 "column 3680 (char 3679)",)

    @pytest.mark.parametrize("text", [
        "[" * 2_000 + "]" * 2_000,
        "[\n" + json.dumps(GOOD) + ",\n" + "[" * 2_000 + "]" * 2_000 + "\n]",
    ])
    def test_a_document_too_deep_for_the_parser_is_a_file_error(self, tmp_path, text):
        path = write(tmp_path, "p.json", text)
        with pytest.raises(PlanError, match=rf"^{re.escape(str(path))}: invalid JSON: depth "
                           r"limit exceeded: line \d column \d+ \(char \d+\)$"):
            load_plans(path, REG)


class TestFileFormats:
    @pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\u0085"])
    def test_json_lines_split_on_newline_only(self, tmp_path, separator):
        # Defect 2: str.splitlines() also split on these, inside a JSON string.
        agent = f"agent{separator}ui"
        path = jsonl(tmp_path, {"plan_id": f"p{separator}2", "steps": [
            step(agent=agent, args={"note": f"a{separator}b"})]}, raw=True)
        assert separator in path.read_text() and path.read_text().count("\n") == 2
        loaded = load_plans(path, REG)
        assert loaded.errors == ()
        (call,) = loaded.plans[1].calls
        assert (call.plan_id, call.agent, call.args) == (
            f"p{separator}2", agent, {"note": f"a{separator}b"})

    def test_crlf_and_a_last_line_without_newline(self, tmp_path):
        plans = [{**GOOD, "plan_id": f"p{i}"} for i in range(3)]
        path = write(tmp_path, "p.jsonl", "\r\n".join(json.dumps(p) for p in plans))
        loaded = load_plans(path, REG)
        assert (loaded.errors, [p.plan_id for p in loaded.plans]) == ((), ["p0", "p1", "p2"])

    def test_one_plan_on_one_line_is_line_1(self, tmp_path):
        path = write(tmp_path, "p.jsonl", json.dumps({**GOOD, "steps": [step(confidence=2)]}))
        assert load_plans(path, REG).errors == (
            f"{path}:1: plan[p1].steps[0].confidence: must be a number in [0, 1] (got 2)",)

    @pytest.mark.parametrize("text, where", [
        ('[\n{"plan_id": "p1",\n "steps": [}]\n]', "line 3 column 12 (char 31)"),
        ('{\n  "plans": [\n    {"plan_id": \n]}', "line 4 column 1 (char 32)"),
    ])
    def test_a_broken_document_is_a_file_error(self, tmp_path, text, where):
        path = write(tmp_path, "p.json", text)
        with pytest.raises(PlanError) as info:
            load_plans(path, REG)
        assert str(info.value).startswith(f"{path}: invalid JSON: ")
        assert str(info.value).endswith(where)

    def test_not_utf8(self, tmp_path):
        path = tmp_path / "p.jsonl"
        path.write_bytes(b'{"plan_id": "\xff"}\n')
        with pytest.raises(PlanError, match="^.*p.jsonl: cannot read: 'utf-8' codec can't "
                           "decode byte 0xff"):
            load_plans(path, REG)

    def test_round_trip_of_odd_ids(self, tmp_path):
        odd = {"plan_id": "team/a\u2028b", "steps": [step(id="x/y"), step(id="z")],
               "execution_order": ["z", "x/y"]}
        path = jsonl(tmp_path, odd, raw=True)
        (_, plan) = load_plans(path, REG).plans
        again = write(tmp_path, "again.jsonl", json.dumps(plan_to_json(plan)))
        assert load_plans(again, REG).plans == (plan,)
        assert plan_to_json(plan)["execution_order"] == ["z", "x/y"]


#: JSON values; every secret sits under a secret-looking key.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(["password", "token", "x", "id"]), inner, max_size=3)
    .map(lambda d: {k: SECRET if k in ("password", "token") else v for k, v in d.items()}),
    max_leaves=12)


class TestAnyValue:
    @given(field=st.sampled_from(["id", "agent", "tool", "confidence", "args", "resource",
                                  "estimated_s", "approval", "plan_id", "execution_order",
                                  "upstream_plan_id", "steps"]),
           value=json_values)
    def test_never_crashes_never_leaks_one_line_each(self, tmp_path_factory, field, value):
        plan = {"plan_id": "p2", "steps": [step()]}
        if field in ("plan_id", "execution_order", "upstream_plan_id", "steps"):
            plan[field] = value
        else:
            plan["steps"] = [step(**{field: value})]
        path = jsonl(tmp_path_factory.mktemp("any"), plan)
        loaded = load_plans(path, REG)
        assert loaded.plans[0] == load_plans(jsonl(path.parent), REG).plans[0]
        assert len(loaded.plans) + len(loaded.errors) == 2
        for error in loaded.errors:
            assert error.startswith(f"{path}:2: plan[")
            assert "\n" not in error and SECRET not in error


class TestWhatAFileHolds:
    # They loaded "0 plans" (exit 0), dropped a key, or took an object for one plan.
    @pytest.mark.parametrize("text", ["", "\n\n  \n", "[]", "[\n]", '{"plans": []}',
                                      '{\n "plans": [\n ]\n}'])
    def test_no_plans_is_a_file_error(self, tmp_path, text):
        path = write(tmp_path, "p.json", text)
        with pytest.raises(PlanError, match=f"^no plans in {re.escape(str(path))}$"):
            load_plans(path, REG)

    def test_an_unknown_top_level_key_is_refused(self, tmp_path):
        path = write(tmp_path, "p.json", json.dumps({"plans": [GOOD], "other": 1}))
        with pytest.raises(PlanError, match=rf"^{re.escape(str(path))}: unknown top-level key "
                           r"'other' \(a plans document holds only \"plans\"\)$"):
            load_plans(path, REG)

    @pytest.mark.parametrize("plans, kind", [(GOOD, "an object"), ("p1", "a string"),
                                             (None, "null")])
    def test_plans_must_be_a_list(self, tmp_path, plans, kind):
        path = write(tmp_path, "p.json", json.dumps({"plans": plans}))
        with pytest.raises(PlanError, match=rf"^{re.escape(str(path))}: plans must be a list "
                           rf"\(got {kind}\)$"):
            load_plans(path, REG)

    def test_a_rejected_plan_alone_is_no_file_error(self, tmp_path):
        path = write(tmp_path, "p.jsonl", "{not json\n")
        assert load_plans(path, REG) == load_plans(path, REG)
        assert load_plans(path, REG).errors == (
            f"{path}:1: invalid JSON: unexpected character, expected a string key: line 1 "
            "column 2 (char 1)",)


BAD = {"plan_id": "bad", "steps": [step(confidence=2)]}
BAD_LINE = "plan[bad].steps[0].confidence: must be a number in [0, 1] (got 2)"


class TestDocumentLines:
    # Errors in a JSON document named no line; now the line each plan starts on.
    def test_a_list_names_the_line_of_each_plan(self, tmp_path):
        path = write(tmp_path, "p.json", "[\n" + json.dumps(GOOD) + ",\n\n  "
                     + json.dumps(BAD) + "\n]\n")
        assert load_plans(path, REG).errors == (f"{path}:4: {BAD_LINE}",)

    def test_the_plans_key_names_the_line_of_each_plan(self, tmp_path):
        text = json.dumps({"plans": [GOOD, BAD, BAD | {"plan_id": "b2"}]}, indent=2)
        path = write(tmp_path, "p.json", text)
        lines = text.splitlines()
        first = lines.index('    {', lines.index('    {') + 1) + 1  # where the 2nd plan opens
        third = lines.index('    {', first) + 1
        assert load_plans(path, REG).errors == (
            f"{path}:{first}: {BAD_LINE}",
            f"{path}:{third}: {BAD_LINE.replace('plan[bad]', 'plan[b2]')}")

    def test_one_plan_over_many_lines_names_its_first_line(self, tmp_path):
        path = write(tmp_path, "p.json", "\n\n" + json.dumps(BAD, indent=2))
        assert load_plans(path, REG).errors == (f"{path}:3: {BAD_LINE}",)

    def test_strings_holding_brackets_commas_and_escapes_do_not_count(self, tmp_path):
        tricky = {"plan_id": 'a[,]{"\\', "steps": [
            step(args={"x": '",[{', "y": [1, [2, {"z": ","}]]})]}
        path = write(tmp_path, "p.json", json.dumps([tricky, 3]) + "\n")
        assert load_plans(path, REG).errors == (f"{path}:1: plan[1]: must be an object "
                                                "(got a number)",)
        path = write(tmp_path, "q.json", "[" + json.dumps(tricky) + ",\n" + json.dumps(BAD)
                     + ",\n[1]]")
        assert load_plans(path, REG).errors == (
            f"{path}:2: {BAD_LINE}", f"{path}:3: plan[2]: must be an object (got a list)")

    def test_an_escaped_plans_key_is_the_plans_key(self, tmp_path):
        path = write(tmp_path, "p.json", '{"pl\\u0061ns":\n[\n' + json.dumps(BAD) + "]}")
        assert load_plans(path, REG).errors == (f"{path}:3: {BAD_LINE}",)


class TestSelfApproval:
    # A plan could approve its own HIGH risk step ("approval": true) and run it LIVE.
    def test_a_plan_cannot_approve_its_own_call(self, tmp_path):
        path = jsonl(tmp_path, {"plan_id": "p2", "steps": [
            step(tool="database_write", approval=True)]})
        loaded = load_plans(path, REG)
        assert [p.plan_id for p in loaded.plans] == ["p1"]
        assert loaded.errors == (
            f"{path}:2: plan[p2].steps[0].approval: a plan cannot approve its own call "
            "(approvals come from the approver or a scoped grant); give false (a pre-denial) "
            "or null",)

    def test_a_pre_denial_and_no_answer_load(self, tmp_path):
        path = jsonl(tmp_path, {"plan_id": "p2", "steps": [step(id="a", approval=False),
                                                           step(id="b", approval=None)]})
        loaded = load_plans(path, REG)
        assert loaded.errors == ()
        assert [c.approval for c in loaded.plans[1].calls] == [False, None]

    @pytest.mark.parametrize("value", [True, 1, "yes"])
    def test_a_planned_call_refuses_it_too(self, value):
        with pytest.raises(InputError, match=r"^approval: a plan cannot approve its own call "
                           r"\(approvals come from the approver or a scoped grant\); give false "
                           rf"\(a pre-denial\) or null \(got {re.escape(repr(value))}\)$"):
            PlannedCall("c", "p", "a", "database_write", 0.9, approval=value)


class TestExecutionOutcome:
    def test_modes_are_execution_modes_not_names(self):
        with pytest.raises(TypeError, match=r"^mode: must be an ExecutionMode or None "
                           r"\(got 'LIVE'\)$"):
            ExecutionOutcome("c", "p", "a", "form_fill", "LOW", 0.9, None, "LIVE", ok=True)
        done = ExecutionOutcome("c", "p", "a", "form_fill", "LOW", 0.9, ExecutionMode.LIVE,
                                None, ok=False)
        assert (done.decided, done.mode) == (ExecutionMode.LIVE, None)
