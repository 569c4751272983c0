"""Loading execution plans: JSON, JSON Lines, one clear error per bad plan."""

from __future__ import annotations

import json

import pytest

from buddy.engine import ToolContractRegistry
from buddy.engine.orchestration._plans import load_plans, plan_to_json
from buddy.engine.orchestration._scenario import default_plans
from buddy.rules.base.errors import PlanError

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
        assert error.startswith(f"{path}: {message}")

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
        with pytest.raises(PlanError, match="must hold plans"):
            load_plans(write(tmp_path, "n.json", "42"))

    def test_round_trip_of_the_default_scenario(self, tmp_path):
        plans = default_plans(7)
        path = write(tmp_path, "scenario.jsonl",
                     "\n".join(json.dumps(plan_to_json(p)) for p in plans))
        loaded = load_plans(path, REG)
        assert loaded.errors == () and loaded.plans == tuple(plans)

    def test_scenario_is_seeded(self):
        assert default_plans(1) == default_plans(1)
        assert default_plans(1) != default_plans(2)
