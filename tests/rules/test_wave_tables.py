"""Tests for buddy.rules.tables._waves: the Phase 21 tables (gates, retry, wave health,
wave anomalies, wave signals) as files and in code."""

from __future__ import annotations

import math
from importlib import resources

import pytest

from buddy.rules.base.errors import InputError, RuleTableError
from buddy.rules.tables import (
    GATE_METRICS,
    GateTable,
    HealthStatus,
    HealthTable,
    RetryPolicy,
    RetryTable,
    WaveAnomalyTable,
    WaveHealthTable,
    WaveSignalTable,
    load_metrics,
)
from buddy.rules.tables._waves import REQUIRED_GATES


def shipped(name: str) -> str:
    return resources.files("buddy.rules").joinpath(name).read_text("utf-8")


GATES, RETRY = shipped("gates.toml"), shipped("retry.toml")
HEALTH, ANOMALIES, SIGNALS = (shipped("wave_health.toml"), shipped("wave_anomalies.toml"),
                              shipped("wave_signals.toml"))


def problems(table: type, text: str) -> list[str]:
    with pytest.raises(RuleTableError) as info:
        table.from_toml(text=text, source="x.toml")
    return info.value.problems


def edit(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


@pytest.mark.parametrize("table", [GateTable, RetryTable, WaveHealthTable, WaveAnomalyTable,
                                   WaveSignalTable])
def test_shipped_tables_load(table):
    loaded = table.default()
    assert loaded.source == f"buddy/rules/{table.FILE}"
    assert len(loaded.digest) == 16
    assert table.from_toml(text=shipped(table.FILE)) == table.from_toml(text=shipped(table.FILE))


# -- gates ---------------------------------------------------------------------------------

def passing() -> dict:
    return {"task_valid": True, "agent_permitted": True, "agent_available": True,
            "agent_load": 3, "max_agent_load": 3, "dependencies_met": True,
            "failed_dependencies": 0, "tool_dependencies_met": True, "attempt": 4,
            "max_attempts": 4, "predicted_success_rate": 0.8, "blocking_anomalies": 0,
            "locked": False, "duplicate_action": False}


class TestGates:
    table = GateTable.default()

    def test_order(self):
        assert [g.id for g in self.table.gates] == [
            "pre_execution_validation", "resource_verification", "dependency_validation",
            "constraint_enforcement"]

    def test_all_pass_at_the_limits(self):
        assert self.table.check(passing()) is None

    @pytest.mark.parametrize(("change", "gate", "message"), [
        ({"task_valid": False}, "pre_execution_validation",
         "task invalid or agent not permitted (task valid: False, agent permitted: True)"),
        ({"agent_permitted": False}, "pre_execution_validation",
         "task invalid or agent not permitted (task valid: True, agent permitted: False)"),
        ({"agent_available": False}, "resource_verification",
         "agent unavailable or overloaded (available: False, load 3 of 3)"),
        ({"agent_load": 4}, "resource_verification",
         "agent unavailable or overloaded (available: True, load 4 of 3)"),
        ({"dependencies_met": False, "failed_dependencies": 2}, "dependency_validation",
         "2 dependency(ies) failed or not completed, or its tool's dependencies (another "
         "task's tool) not completed (tool dependencies met: True)"),
        ({"tool_dependencies_met": False}, "dependency_validation",
         "0 dependency(ies) failed or not completed, or its tool's dependencies (another "
         "task's tool) not completed (tool dependencies met: False)"),
        ({"attempt": 5}, "constraint_enforcement",
         "constraint violated (attempt 5 of 4, 0 blocking anomaly(ies)) or the same "
         "irreversible action already ran LIVE (duplicate action: False)"),
        ({"blocking_anomalies": 1}, "constraint_enforcement",
         "constraint violated (attempt 4 of 4, 1 blocking anomaly(ies)) or the same "
         "irreversible action already ran LIVE (duplicate action: False)"),
        ({"duplicate_action": True}, "constraint_enforcement",
         "constraint violated (attempt 4 of 4, 0 blocking anomaly(ies)) or the same "
         "irreversible action already ran LIVE (duplicate action: True)"),
    ])
    def test_each_gate_refuses_exactly_when_its_condition_fails(self, change, gate, message):
        metrics = {**passing(), **change}
        rule = self.table.check(metrics)
        assert rule is not None and rule.id == gate
        assert self.table.refusal(rule, metrics) == message
        assert not rule.holds(metrics)
        assert rule.holds(passing())

    def test_first_failing_gate_in_file_order(self):
        metrics = {**passing(), "dependencies_met": False, "blocking_anomalies": 2,
                   "agent_available": False}
        assert self.table.check(metrics).id == "resource_verification"
        metrics["task_valid"] = False
        assert self.table.check(metrics).id == "pre_execution_validation"

    def test_missing_metric(self):
        metrics = passing()
        del metrics["max_agent_load"]
        with pytest.raises(InputError, match="gate metrics: missing 'max_agent_load'"):
            self.table.check(metrics)

    @pytest.mark.parametrize(("old", "new", "problem"), [
        ('"task_valid", op = "eq", value = true', '"task_valid", op = "eq", value = 1',
         "x.toml:42: row[pre_execution_validation].when.all[0].value: must be true or false "
         "(got 1)"),
        ('"task_valid", op = "eq", value = true', '"task_valid", op = "ge", value = true',
         "x.toml:42: row[pre_execution_validation].when.all[0].op: task_valid is not a number:"
         " must be eq or ne (got 'ge')"),
        ('"blocking_anomalies", op = "eq"', '"blocking_anomalies", op = "=>"',
         "x.toml:60: row[constraint_enforcement].when.all[1].op: must be one of ge, gt, le, "
         "lt, eq, ne (got '=>')"),
        ('{ all = [ { metric = "dependencies_met", op = "eq", value = true }, '
         '{ metric = "tool_dependencies_met", op = "eq", value = true } ] }', "{}",
         "x.toml:54: row[dependency_validation].when: must hold at least one condition"),
        ('id = "constraint_enforcement"', 'id = "resource_verification"',
         "x.toml:58: row[resource_verification].id: duplicate id (first at line 45)"),
    ])
    def test_malformed(self, old, new, problem):
        assert problems(GateTable, edit(GATES, old, new)) == [problem]

    def test_unknown_metric_and_template_field(self):
        text = edit(edit(GATES, '"dependencies_met", op', '"deps_met", op'),
                    "{failed_dependencies} dep", "{failed} dep")
        found = problems(GateTable, text)
        assert [p.split(": ")[:2] for p in found] == [
            ["x.toml:54", "row[dependency_validation].when.all[0].metric"],
            ["x.toml:55", "row[dependency_validation].then.refusal"]]
        assert found[0].endswith("(got 'deps_met')")
        assert "unknown field {failed} (allowed: agent_available," in found[1]

    def test_no_rows(self):
        assert problems(GateTable, 'table = "gates"\n') == [
            "x.toml: gates: needs at least one gate row: the safety gates "
            "pre_execution_validation, resource_verification, dependency_validation, "
            "constraint_enforcement, in this order, are required"]



def line(text: str, needle: str) -> int:
    """The line (1-based) of the one occurrence of ``needle`` in ``text``."""
    assert text.count(needle) == 1, needle
    return text[:text.index(needle)].count("\n") + 1


def id_line(text: str, gate: str) -> int:
    """The line of ``gate``'s ``id`` in ``text``."""
    return line(text, f'id = "{gate}"')


def block(gate: str) -> str:
    """The shipped ``[[row]]`` of ``gate``, blank line after it included."""
    start = GATES.index(f'[[row]]\nid = "{gate}"')
    end = GATES.find("[[row]]", start + 1)
    return GATES[start:] if end < 0 else GATES[start:end]


ORDER = ("pre_execution_validation", "resource_verification", "dependency_validation",
         "constraint_enforcement")
EXTRA = ('[[row]]\nid = "no_lock"\ndescription = "Nothing runs under the system lock"\n'
         'when = { all = [ { metric = "locked", op = "eq", value = false } ] }\n'
         'then = { refusal = "the system is locked" }\n\n')


class TestRequiredGates:
    """Gates only tighten: a file must keep the four Phase 13 gates, their conditions, their
    order; it may add conditions and rows."""

    def test_shipped_table_is_exactly_the_required_gates(self):
        table = GateTable.default()
        assert tuple(REQUIRED_GATES) == ORDER
        assert {g.id: g.when.all for g in table.gates} == dict(REQUIRED_GATES)
        assert all(not g.when.any for g in table.gates)
        assert {"duplicate_action", "tool_dependencies_met"} <= set(GATE_METRICS)
        assert GATE_METRICS["duplicate_action"] is bool
        assert GATE_METRICS["tool_dependencies_met"] is bool

    def test_new_conditions_as_shipped(self):
        gates = {g.id: g for g in GateTable.default().gates}
        assert str(gates["dependency_validation"].when) == (
            "dependencies_met == True and tool_dependencies_met == True")
        assert str(gates["constraint_enforcement"].when) == (
            "attempts_left >= 0 and blocking_anomalies == 0 and duplicate_action == False")

    @pytest.mark.parametrize(("change", "first"), [
        ({"tool_dependencies_met": False}, "dependency_validation"),
        ({"duplicate_action": True}, "constraint_enforcement"),
        # an earlier gate refuses first, whatever the new metrics say
        ({"tool_dependencies_met": False, "duplicate_action": True, "agent_available": False},
         "resource_verification"),
        ({"tool_dependencies_met": False, "duplicate_action": True}, "dependency_validation"),
        ({"dependencies_met": True, "tool_dependencies_met": True, "duplicate_action": False},
         None),
    ])
    def test_new_metrics_refuse_exactly_when_they_should(self, change, first):
        rule = GateTable.default().check({**passing(), **change})
        assert (rule.id if rule else None) == first

    @pytest.mark.parametrize("metric", ["duplicate_action", "tool_dependencies_met"])
    def test_new_metrics_are_required_inputs(self, metric):
        metrics = passing()
        del metrics[metric]
        with pytest.raises(InputError, match=f"gate metrics: missing '{metric}'"):
            GateTable.default().check(metrics)

    @pytest.mark.parametrize("gate", ORDER)
    def test_dropping_a_gate(self, gate):
        text = edit(GATES, block(gate), "")
        [found] = problems(GateTable, text)
        following = ORDER[ORDER.index(gate) + 1:]
        if following:
            at, where = following[0], "before"
        else:
            at, where = ORDER[-2], "after"
        assert found.startswith(f"x.toml:{id_line(text, at)}: "
                                f"row[{at}].id: the required safety gate {gate} is missing "
                                f"(it goes {where} this row; when.all must hold ")
        for cond in REQUIRED_GATES[gate]:
            assert f'metric = "{cond.metric}", op = "{cond.op.value}"' in found

    def test_dropping_a_gate_names_it_exactly(self):
        text = edit(GATES, block("dependency_validation"), "")
        assert problems(GateTable, text) == [
            f"x.toml:{id_line(text, 'constraint_enforcement')}: "
            "row[constraint_enforcement].id: the required safety gate dependency_validation is "
            "missing (it goes before this row; when.all must hold "
            '{ metric = "dependencies_met", op = "eq", value = true } and '
            '{ metric = "tool_dependencies_met", op = "eq", value = true })']

    def test_renaming_a_gate_drops_it(self):
        text = edit(GATES, 'id = "resource_verification"', 'id = "resources"')
        [found] = problems(GateTable, text)
        assert found.startswith(f"x.toml:{id_line(text, 'dependency_validation')}"
                                ": row[dependency_validation].id: the required safety gate "
                                "resource_verification is missing")

    @pytest.mark.parametrize(("gate", "condition", "written"), [
        ("dependency_validation", ', { metric = "tool_dependencies_met", op = "eq", value = true }',
         '{ metric = "tool_dependencies_met", op = "eq", value = true }'),
        ("constraint_enforcement", ', { metric = "duplicate_action", op = "eq", value = false }',
         '{ metric = "duplicate_action", op = "eq", value = false }'),
        ("resource_verification", ', { metric = "load_headroom", op = "ge", value = 0 }',
         '{ metric = "load_headroom", op = "ge", value = 0 }'),
    ])
    def test_dropping_a_condition(self, gate, condition, written):
        text = edit(GATES, condition, "")
        at = id_line(text, gate) + 2  # the row's `when`
        assert problems(GateTable, text) == [
            f"x.toml:{at}: row[{gate}].when.all: the required condition {written} of safety "
            f"gate {gate} is missing"]

    def test_weakening_a_condition_drops_it(self):
        text = edit(GATES, '"duplicate_action", op = "eq", value = false',
                    '"duplicate_action", op = "ne", value = true')
        [found] = problems(GateTable, text)
        assert "the required condition { metric = \"duplicate_action\", op = \"eq\", " \
               "value = false } of safety gate constraint_enforcement is missing" in found

    def test_moving_a_required_condition_into_any(self):
        text = edit(GATES,
                    '{ all = [ { metric = "dependencies_met", op = "eq", value = true }, '
                    '{ metric = "tool_dependencies_met", op = "eq", value = true } ] }',
                    '{ all = [ { metric = "dependencies_met", op = "eq", value = true } ], '
                    'any = [ { metric = "tool_dependencies_met", op = "eq", value = true } ] }')
        at = id_line(text, "dependency_validation") + 2
        assert problems(GateTable, text) == [
            f"x.toml:{at}: row[dependency_validation].when.all: the required condition "
            '{ metric = "tool_dependencies_met", op = "eq", value = true } of safety gate '
            "dependency_validation is missing (it is in when.any, which does not count: a "
            "required condition must be in all)"]

    def test_swapping_two_gates(self):
        text = edit(GATES, block("dependency_validation") + block("constraint_enforcement"),
                    block("constraint_enforcement") + "\n" + block("dependency_validation"))
        assert problems(GateTable, text) == [
            f"x.toml:{id_line(text, 'dependency_validation')}: "
            "row[dependency_validation].id: safety gate dependency_validation is out of order: "
            "it must come after resource_verification and before constraint_enforcement (the "
            "safety gates run in the order pre_execution_validation, resource_verification, "
            "dependency_validation, constraint_enforcement; other rows may come between them)"]

    def test_moving_the_last_gate_first_is_one_problem(self):
        last = block("constraint_enforcement")
        text = edit(GATES, last, "")
        text = edit(text, '[[row]]\nid = "pre_execution_validation"',
                    last.rstrip("\n") + '\n\n[[row]]\nid = "pre_execution_validation"')
        [found] = problems(GateTable, text)
        assert found.startswith(
            f"x.toml:{id_line(text, 'constraint_enforcement')}: "
            "row[constraint_enforcement].id: safety gate constraint_enforcement is out of order: "
            "it must come after dependency_validation (")

    def test_every_problem_at_once(self):
        text = edit(GATES, block("pre_execution_validation"), "")
        text = edit(text, ', { metric = "duplicate_action", op = "eq", value = false }', "")
        found = problems(GateTable, text)
        assert [p.split(": ")[1] for p in found] == [
            "row[resource_verification].id", "row[constraint_enforcement].when.all"]
        assert "pre_execution_validation is missing" in found[0]
        assert "duplicate_action" in found[1]

    def test_a_stricter_condition_loads(self):
        text = edit(GATES, '{ metric = "load_headroom", op = "ge", value = 0 }',
                    '{ metric = "load_headroom", op = "ge", value = 0 }, '
                    '{ metric = "load_headroom", op = "ge", value = 2 }')
        text = edit(text, '{ metric = "duplicate_action", op = "eq", value = false } ] }',
                    '{ metric = "duplicate_action", op = "eq", value = false } ], any = [ '
                    '{ metric = "predicted_success_rate", op = "ge", value = 0.5 } ] }')
        table = GateTable.from_toml(text=text)
        roomy = {**passing(), "agent_load": 1}  # headroom 2 of 3
        assert table.check(roomy) is None
        assert table.check(passing()).id == "resource_verification"  # headroom 0: now refused
        assert table.check({**roomy, "predicted_success_rate": 0.4}).id == (
            "constraint_enforcement")
        assert table.check({**roomy, "duplicate_action": True}).id == "constraint_enforcement"

    @pytest.mark.parametrize("before", [*ORDER, None])
    def test_an_extra_gate_loads_anywhere(self, before):
        if before is None:
            text = GATES.rstrip("\n") + "\n\n" + EXTRA
        else:
            text = edit(GATES, f'[[row]]\nid = "{before}"', EXTRA + f'[[row]]\nid = "{before}"')
        table = GateTable.from_toml(text=text)
        ids = [g.id for g in table.gates]
        assert [i for i in ids if i != "no_lock"] == list(ORDER)
        assert table.check(passing()) is None
        assert ids.index("no_lock") == (ORDER.index(before) if before else len(ORDER))
        assert table.check({**passing(), "locked": True}).id == "no_lock"
        refused = table.check({**passing(), "locked": True, "duplicate_action": True})
        assert refused.id == ("no_lock" if ids.index("no_lock") < ids.index(
            "constraint_enforcement") else "constraint_enforcement")

    def test_a_user_file_from_a_path(self, tmp_path):
        path = tmp_path / "gates.toml"
        path.write_text(edit(GATES, block("dependency_validation"), ""), encoding="utf-8")
        with pytest.raises(RuleTableError) as info:
            GateTable.from_toml(path)
        [found] = info.value.problems
        assert found.startswith(f"{path}:")
        assert "the required safety gate dependency_validation is missing" in found


# -- retry -----------------------------------------------------------------------------------

class TestRetry:
    table = RetryTable.default()

    def test_file_keys(self):
        assert (self.table.max_retries, self.table.timeout_s) == (3, 30.0)
        assert self.table.retry_on_refusal == frozenset({"rate.limit"})
        assert sorted(self.table.policies) == ["EXPONENTIAL_BACKOFF", "LINEAR_BACKOFF",
                                               "NO_RETRY"]

    def test_exponential(self):
        assert self.table.sequence("EXPONENTIAL_BACKOFF", 5) == [0.1, 0.2, 0.4, 0.8, 1.6]
        # 0.1 * 2**8 = 25.6, 0.1 * 2**9 = 51.2 -> capped at 30
        assert self.table.sequence("EXPONENTIAL_BACKOFF", 11)[-3:] == [25.6, 30.0, 30.0]

    def test_linear(self):
        assert self.table.sequence("LINEAR_BACKOFF", 5) == [0.1, 0.2, 0.3, 0.4, 0.5]
        assert self.table.delay("LINEAR_BACKOFF", 299) == 29.9
        assert self.table.delay("LINEAR_BACKOFF", 301) == 30.0

    @pytest.mark.parametrize("n", [10**9, 10**18, 10**400])
    def test_huge_retry_does_not_overflow(self, n):
        assert self.table.delay("EXPONENTIAL_BACKOFF", n) == 30.0
        assert self.table.delay("LINEAR_BACKOFF", n) == 30.0

    def test_factor_one_is_constant(self):
        assert RetryPolicy("exponential", base_s=1.0, factor=1.0, cap_s=5.0).delay(10**9) == 1.0

    def test_whole_seconds_as_the_outline(self):
        text = edit(RETRY, "base_s = 0.1, factor", "base_s = 1.0, factor")
        assert RetryTable.from_toml(text=text).sequence("EXPONENTIAL_BACKOFF", 4) == [
            1.0, 2.0, 4.0, 8.0]

    def test_max_retries_for(self):
        assert self.table.max_retries_for("EXPONENTIAL_BACKOFF") == 3
        assert self.table.max_retries_for("LINEAR_BACKOFF", 7) == 7
        assert self.table.max_retries_for("NO_RETRY") == 0
        assert self.table.max_retries_for("NO_RETRY", 5) == 0
        assert self.table.sequence("NO_RETRY", 0) == []
        with pytest.raises(InputError, match=r"max retries: must be a whole number >= 0 "
                                             r"\(got -1\)"):
            self.table.max_retries_for("LINEAR_BACKOFF", -1)

    def test_no_retry_has_no_delay(self):
        with pytest.raises(InputError, match="formula 'none' makes no retries"):
            self.table.delay("NO_RETRY", 1)

    @pytest.mark.parametrize("retry", [0, -1, True, 1.0])
    def test_bad_retry_number(self, retry):
        with pytest.raises(InputError, match=r"retry: must be a whole number >= 1"):
            self.table.delay("EXPONENTIAL_BACKOFF", retry)

    def test_unknown_strategy(self):
        with pytest.raises(InputError) as info:
            self.table.sequence("FIBONACCI", 2)
        assert str(info.value) == ("unknown retry strategy 'FIBONACCI' (known: "
                                   "EXPONENTIAL_BACKOFF, LINEAR_BACKOFF, NO_RETRY)")

    @pytest.mark.parametrize(("old", "new", "problem"), [
        ("base_s = 0.1, factor", "base_s = -0.1, factor",
         "x.toml:28: row[EXPONENTIAL_BACKOFF].then.base_s: must be > 0 (got -0.1)"),
        ("factor = 2.0", "factor = 0.5",
         "x.toml:28: row[EXPONENTIAL_BACKOFF].then.factor: must be >= 1 (got 0.5)"),
        ("factor = 2.0, cap_s = 30.0", "factor = 2.0, cap_s = 0.01",
         "x.toml:28: row[EXPONENTIAL_BACKOFF].then.cap_s: must be >= base_s (0.1) "
         "(got 0.01)"),
        ('{ formula = "none" }', '{ formula = "none", base_s = 1.0 }',
         "x.toml:36: row[NO_RETRY].then.base_s: unknown key for formula 'none'"),
        ('formula = "linear", base_s = 0.1, cap_s', 'formula = "linear", cap_s',
         "x.toml:32: row[LINEAR_BACKOFF].then.base_s: is required for formula 'linear'"),
        ('formula = "linear"', 'formula = "exponential"',
         "x.toml:32: row[LINEAR_BACKOFF].then.factor: is required for formula 'exponential'"),
        ('formula = "linear", base_s = 0.1, cap_s = 30.0',
         'formula = "exponential", base_s = 0.1, factor = 1.5, cap_s = 30.0',
         "x.toml:32: row[LINEAR_BACKOFF].then.formula: LINEAR_BACKOFF takes formula "
         "'linear' (got 'exponential')"),
        ('id = "NO_RETRY"\nthen = { formula = "none" }',
         'id = "LINEAR_BACKOFF"\nthen = { formula = "linear", base_s = 0.2, cap_s = 9.0 }',
         "x.toml:35: row[LINEAR_BACKOFF].id: duplicate id (first at line 30)"),
        ('id = "NO_RETRY"', 'id = "NEVER"',
         "x.toml:35: row[NEVER].id: must be one of EXPONENTIAL_BACKOFF, LINEAR_BACKOFF, "
         "NO_RETRY (got 'NEVER')"),
        ('[[row]]\nid = "NO_RETRY"\nthen = { formula = "none" }\n', "",
         "x.toml: retry: needs a row for each strategy: missing NO_RETRY"),
        ("timeout_s = 30.0", "timeout_s = 0.0", "x.toml:23: retry.timeout_s: must be > 0 "
                                                "(got 0.0)"),
        ("max_retries = 3", "max_retries = -1", "x.toml:22: retry.max_retries: must be >= 0 "
                                                "(got -1)"),
        ('["rate.limit"]', '["rate limit"]',
         "x.toml:24: retry.retry_on_refusal[0]: must be a rule id: 1-64 letters, digits or "
         "_ . : - (got 'rate limit')"),
        ("timeout_s = 30.0\n", "", "x.toml: retry.timeout_s: is required"),
    ])
    def test_malformed(self, old, new, problem):
        assert problems(RetryTable, edit(RETRY, old, new)) == [problem]

    def test_policy_in_code(self):
        with pytest.raises(RuleTableError, match="base_s: must be a finite number"):
            RetryPolicy("linear", base_s=math.inf, cap_s=30.0)


# -- wave health -----------------------------------------------------------------------------

class TestWaveHealth:
    table = WaveHealthTable.default()

    def test_weights(self):
        assert dict(self.table.weights) == {"success_rate": 0.4, "availability": 0.2,
                                            "accuracy": 0.2, "load_balance": 0.2}

    @pytest.mark.parametrize(("metrics", "score"), [
        ((0.9, 1.0, 0.95, 0.8), 91.0),
        ((1.0, 1.0, 1.0, 1.0), 100.0),
        ((0.0, 0.0, 0.0, 0.0), 0.0),
        ((0.5, 0.5, 0.5, 0.5), 50.0),
        ((1.5, -0.2, math.nan, 1.0), 60.0),  # clamped; NaN reads 0
    ])
    def test_score(self, metrics, score):
        names = ("success_rate", "availability", "accuracy", "load_balance")
        assert self.table.score(dict(zip(names, metrics, strict=True))) == score

    def test_tiers_are_health_toml(self):
        tiers = HealthTable.default()
        score = self.table.score({"success_rate": 0.75, "availability": 0.75,
                                  "accuracy": 0.75, "load_balance": 0.75})
        assert (score, tiers.tier(score)) == (75.0, HealthStatus.GOOD)

    @pytest.mark.parametrize(("old", "new", "problem"), [
        ("accuracy = 0.20", "accuracy = 0.30", "x.toml:17: wave_health.weights: must sum to 1 "
                                               "(got 1.1)"),
        ("accuracy = 0.20", "accuracy = 1.20",
         "x.toml:20: wave_health.weights.accuracy: must be in [0, 1] (got 1.2)"),
        ("accuracy = 0.20\n", "", "x.toml:17: wave_health.weights.accuracy: is required"),
        ("load_balance = 0.20\n", 'load_balance = 0.20\n[[row]]\nid = "good"\nwhen = {}\n',
         "x.toml:22: row[good]: wave_health.toml takes no rows: the tiers are health.toml's, "
         "shared with the tool monitor"),
    ])
    def test_malformed(self, old, new, problem):
        assert problems(WaveHealthTable, edit(HEALTH, old, new)) == [problem]


# -- wave anomalies ----------------------------------------------------------------------------

def agent_metrics(**change) -> dict:
    return {"tasks": 4, "completed": 2, "failed": 2, "success_rate": 0.5, "timeouts": 0,
            "gate_refusals": 0, "retries": 1, "avg_latency": 0.2, "mean_predicted": 0.6,
            "prediction_error": 0.1, "load": 4, **change}


def wave_metrics(**change) -> dict:
    return {"tasks": 8, "completed": 7, "failed": 1, "success_rate": 0.875,
            "availability": 1.0, "accuracy": 0.75, "prediction_error": 0.25,
            "load_balance": 0.6, "load_imbalance_ratio": 1.5, "load_spread": 0.4,
            "confidence": 0.625, "agents": 4, "available_agents": 4, "timeouts": 0,
            "gate_refusals": 0, "retries": 1, "health_score": 84.0, **change}


def trend_metrics(**change) -> dict:
    return {"tasks": 8, "success_rate": 0.8, "previous_success_rate": 0.9,
            "success_drop": 0.1, "health_score": 85.0, "previous_health_score": 88.0,
            "health_drop": 3.0, "confidence": 0.8, "previous_confidence": 0.8,
            "confidence_change": 0.0, **change}


class TestWaveAnomalies:
    table = WaveAnomalyTable.default()

    def found(self, scope, metrics, **kw):
        return [a.type for a in self.table.evaluate(scope, metrics, wave=2, **kw)]

    def test_at_the_thresholds_nothing_fires(self):
        assert self.found("agent", agent_metrics(), agent_id="a1") == []
        assert self.found("wave", wave_metrics()) == []
        assert self.found("trend", trend_metrics()) == []

    def test_agent_failure(self):
        (anomaly,) = self.table.evaluate("agent", agent_metrics(success_rate=0.4999),
                                         wave=2, agent_id="a1")
        assert (anomaly.type, anomaly.severity, anomaly.scope, anomaly.agent_id) == (
            "agent_failure", "HIGH", "agent", "a1")
        assert (anomaly.metric, anomaly.value, anomaly.threshold) == (
            "success_rate", 0.4999, 0.5)
        assert anomaly.message == "Agent a1 succeeded in 50% of 4 tasks in wave 2"
        assert anomaly.recommended_action == "Investigate agent, consider rebalancing"

    def test_min_tasks(self):
        assert self.found("agent", agent_metrics(tasks=2, success_rate=0.0),
                          agent_id="a1") == []
        assert self.found("agent", agent_metrics(tasks=3, success_rate=0.0),
                          agent_id="a1") == ["agent_failure"]
        assert self.found("wave", wave_metrics(tasks=0, load_spread=1.0)) == []
        assert self.found("wave", wave_metrics(tasks=2, prediction_error=0.9)) == []
        assert self.found("trend", trend_metrics(tasks=2, success_drop=0.5)) == []

    @pytest.mark.parametrize(("metric", "value", "anomaly", "severity", "action"), [
        ("load_spread", 0.4001, "coordination_issue", "MEDIUM",
         "Rebalance tasks, check agent coupling"),
        ("prediction_error", 0.2501, "prediction_drift", "MEDIUM",
         "Retrain Phase 20 model, adjust confidence"),
        ("load_imbalance_ratio", 1.5001, "load_imbalance", "LOW",
         "Rebalance using Phase 20 scheduler"),
    ])
    def test_wave_rows_fire_just_past_their_threshold(self, metric, value, anomaly, severity,
                                                      action):
        (found,) = self.table.evaluate("wave", wave_metrics(**{metric: value}), wave=3)
        assert (found.type, found.severity, found.metric, found.value, found.agent_id) == (
            anomaly, severity, metric, value, None)
        assert found.recommended_action == action

    def test_wave_rows_in_file_order(self):
        assert self.found("wave", wave_metrics(load_spread=0.9, prediction_error=0.3,
                                               load_imbalance_ratio=10.0)) == [
            "coordination_issue", "prediction_drift", "load_imbalance"]

    def test_performance_drop(self):
        (found,) = self.table.evaluate("trend", trend_metrics(success_rate=0.7,
                                                              success_drop=0.2), wave=5)
        assert (found.type, found.severity, found.threshold) == ("performance_drop", "MEDIUM",
                                                                 0.1)
        assert found.message == "Success rate fell from 90% to 70% in wave 5"
        assert self.found("trend", trend_metrics(success_drop=0.1001)) == ["performance_drop"]
        assert self.found("trend", trend_metrics(success_drop=-0.3)) == []

    def test_agent_row_needs_agent_id(self):
        with pytest.raises(InputError, match="an agent row needs agent_id"):
            self.table.evaluate("agent", agent_metrics(success_rate=0.0), wave=1)

    def test_unknown_scope(self):
        with pytest.raises(InputError, match=r"unknown scope 'tool' \(known: agent, wave, "
                                             r"trend\)"):
            self.table.evaluate("tool", {}, wave=1)

    def test_load_metrics(self):
        assert load_metrics([5, 2]) == {"load_balance": 0.4, "load_spread": 0.6,
                                        "load_imbalance_ratio": 2.5}
        assert load_metrics([2, 0])["load_imbalance_ratio"] == 2.0
        assert load_metrics([0, 0]) == {"load_balance": 1.0, "load_spread": 0.0,
                                        "load_imbalance_ratio": 1.0}

    @pytest.mark.parametrize(("old", "new", "problem"), [
        ('severity = "HIGH"', 'severity = "CRITICAL"',
         "x.toml:33: row[agent_failure].then.severity: must be one of HIGH, MEDIUM, LOW "
         "(got 'CRITICAL')"),
        ('min_tasks = 3\nwhen = { all = [ { metric = "success_rate"',
         'min_tasks = -1\nwhen = { all = [ { metric = "success_rate"',
         "x.toml:31: row[agent_failure].min_tasks: must be >= 0 (got -1)"),
        ('"load_spread", op = "gt", value = 0.40', '"load_spread", op = "gt", value = "40%"',
         "x.toml:41: row[coordination_issue].when.all[0].value: must be a number "
         "(got '40%')"),
        ('scope = "agent"', 'scope = "tool"',
         "x.toml:30: row[agent_failure].scope: must be one of agent, wave, trend "
         "(got 'tool')"),
    ])
    def test_malformed(self, old, new, problem):
        assert problems(WaveAnomalyTable, edit(ANOMALIES, old, new)) == [problem]

    def test_scope_vocabularies(self):
        found = problems(WaveAnomalyTable, edit(ANOMALIES, "Agent {agent_id} succeeded",
                                                "Agent {agent} succeeded"))
        assert found == ["x.toml:33: row[agent_failure].then.message: unknown field {agent} "
                         "(allowed: agent_id, avg_latency, completed, failed, gate_refusals, "
                         "load, mean_predicted, prediction_error, retries, success_rate, "
                         "tasks, timeouts, wave)"]
        found = problems(WaveAnomalyTable, edit(ANOMALIES, 'scope = "trend"', 'scope = "wave"'))
        assert [p.split(": ")[1] for p in found] == [
            "row[performance_drop].when.all[0].metric", "row[performance_drop].then.message"]
        assert found[0].endswith("(got 'success_drop')")


# -- wave signals ------------------------------------------------------------------------------

class TestWaveSignals:
    table = WaveSignalTable.default()

    def agent(self, **change):
        metrics = {**agent_metrics(**change)}
        metrics["confidence_score"] = min(1.0, max(0.0, 1.0 - metrics["prediction_error"]))
        return metrics

    def wave(self, **change):
        metrics = {**wave_metrics(), "patterns": 0, "retry_recoveries": 1, **change}
        metrics["confidence_score"] = 1.0 - metrics["prediction_error"]
        return metrics

    def test_targets(self):
        assert dict(self.table.targets) == {"coordination": 18, "heuristics": 16,
                                            "prediction": 20}

    def test_agent_signals_always(self):
        found = self.table.evaluate("agent", self.agent(prediction_error=0.08),
                                    {"agent_id": "a1", "wave": 2})
        assert [(s.signal_type, s.target, s.target_phase, s.rule, s.confidence, s.scope)
                for s in found] == [
            ("agent_performance", "coordination", 18, "agent_performance", 0.92, "agent"),
            ("prediction_validation", "prediction", 20, "prediction_validation", 0.92,
             "agent")]
        assert found[0].insight == ("Agent a1 completed 2 of 4 tasks (50%) in wave 2, "
                                    "0.200 s on average")
        assert found[1].insight == ("Predicted 60% success for a1 in wave 2, observed 50% "
                                    "(error 0.08)")

    def test_wave_signals(self):
        names = {"wave": 3, "pattern_list": "a2 times out; retries recover"}
        found = self.table.evaluate("wave", self.wave(prediction_error=0.1, tasks=5), names)
        assert [(s.rule, s.target_phase, s.confidence) for s in found] == [
            ("multi_agent_coordination", 18, 0.9)]
        found = self.table.evaluate("wave", self.wave(prediction_error=0.1001, patterns=2,
                                                      tasks=5), names)
        assert [(s.rule, s.signal_type, s.target, s.target_phase, s.confidence)
                for s in found] == [
            ("multi_agent_coordination", "multi_agent_coordination", "coordination", 18,
             0.8999),
            ("heuristic_feedback.patterns", "heuristic_feedback", "heuristics", 16, 0.25),
            ("heuristic_feedback.calibration", "heuristic_feedback", "heuristics", 16, 0.25)]
        assert found[1].insight == ("2 pattern(s) observed in wave 3: a2 times out; "
                                    "retries recover")
        assert self.table.evaluate("wave", self.wave(patterns=1, tasks=40), names)[1] \
            .confidence == 1.0

    def test_every_signal_type_has_a_row(self):
        assert {r.signal for r in self.table.rules} == {
            "agent_performance", "multi_agent_coordination", "heuristic_feedback",
            "prediction_validation"}

    @pytest.mark.parametrize(("old", "new", "problem"), [
        ('target = "prediction"', 'target = "coordination"',
         "x.toml:49: row[prediction_validation].then.target: prediction_validation goes to "
         "'prediction' (got 'coordination')"),
        ('signal = "prediction_validation"', 'signal = "prediction_check"',
         "x.toml:46: row[prediction_validation].signal: must be one of agent_performance, "
         "multi_agent_coordination, heuristic_feedback, prediction_validation "
         "(got 'prediction_check')"),
        ("prediction = 20\n", "", "x.toml:28: wave_signals.targets.prediction: is required"),
        ("prediction = 20\n", "prediction = 20\nsafety = 13\n",
         "x.toml:32: wave_signals.targets.safety: unknown key"),
        ("prediction = 20\n", "prediction = 0\n",
         "x.toml:31: wave_signals.targets.prediction: must be a phase number >= 1 (got 0)"),
        ('metric = "tasks", saturate_at = 20 } }\n\n[[row]]',
         'metric = "success_rate", saturate_at = 20 } }\n\n[[row]]',
         "x.toml:67: row[heuristic_feedback.patterns].then.confidence.metric: must be a count "
         "metric of the row's scope: agents, available_agents, completed, failed, "
         "gate_refusals, patterns, retries, retry_recoveries, tasks, timeouts "
         "(got 'success_rate')"),
        ('id = "prediction_validation"\nsignal = "prediction_validation"\nscope = "agent"\n'
         "when = {}\n",
         'id = "prediction_validation"\nsignal = "prediction_validation"\nscope = "agent"\n',
         "x.toml:44: row[prediction_validation].when: is required (use `when = {}` for a row "
         "that always holds)"),
    ])
    def test_malformed(self, old, new, problem):
        assert problems(WaveSignalTable, edit(SIGNALS, old, new)) == [problem]

    def test_unknown_scope(self):
        with pytest.raises(InputError, match="unknown scope 'tool'"):
            self.table.evaluate("tool", {})
