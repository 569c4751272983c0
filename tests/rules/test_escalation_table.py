"""Tests for buddy.rules.tables._escalation: the escalation table and its compiled policies."""

from __future__ import annotations

import hashlib
import math
from importlib import resources
from types import SimpleNamespace

import pytest

from buddy.rules.base._values import ExecutionMode, RiskLevel
from buddy.rules.base.errors import RuleTableError
from buddy.rules.tables._conditions import Condition, Op, When
from buddy.rules.tables._escalation import EscalationRow, EscalationTable, EscalationThen

LOW, MEDIUM, HIGH = RiskLevel.LOW, RiskLevel.MEDIUM, RiskLevel.HIGH
DRY_RUN, LIVE = ExecutionMode.DRY_RUN, ExecutionMode.LIVE

#: The Phase 24 thresholds: (DRY_RUN, LIVE) confidence per risk.
THRESHOLDS = {LOW: (0.50, 0.70), MEDIUM: (0.65, 0.80), HIGH: (0.80, 0.85)}
OPS = "ge, gt, le, lt, eq, ne"


def row(row_id: str, risk: str, value: str, mode: str, then_extra: str = "") -> str:
    return (f'[[row]]\nid = "{row_id}"\nrisk = "{risk}"\n'
            f'when = {{ all = [ {{ metric = "confidence", op = "ge", value = {value} }} ] }}\n'
            f'then = {{ mode = "{mode}"{then_extra} }}\n\n')


# Rows start at lines 4, 10, 16, 22, 28 and 34; an appended row starts at line 40.
TABLE = ('table = "escalation"\nversion = 1\n\n'
         + row("low.dry_run", "LOW", "0.50", "DRY_RUN")
         + row("low.live", "LOW", "0.70", "LIVE")
         + row("medium.dry_run", "MEDIUM", "0.65", "DRY_RUN")
         + row("medium.live", "MEDIUM", "0.80", "LIVE")
         + row("high.dry_run", "HIGH", "0.80", "DRY_RUN")
         + row("high.live", "HIGH", "0.85", "LIVE", ", requires_approval = true"))
LINE = {"low.dry_run": 4, "low.live": 10, "medium.dry_run": 16, "medium.live": 22,
        "high.dry_run": 28, "high.live": 34}


def edit(old: str, new: str, text: str = TABLE) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def problems_of(text: str) -> list[str]:
    with pytest.raises(RuleTableError) as info:
        EscalationTable.from_toml(text=text, source="esc.toml")
    return info.value.problems


def at(confidence: float) -> SimpleNamespace:
    return SimpleNamespace(confidence=confidence)


def below(x: float) -> float:
    return math.nextafter(x, -math.inf)


def above(x: float) -> float:
    return math.nextafter(x, math.inf)


@pytest.fixture(scope="module")
def default() -> EscalationTable:
    return EscalationTable.default()


class TestDefault:
    @pytest.mark.parametrize("risk", list(RiskLevel))
    def test_thresholds(self, default, risk):
        policy = default.policies[risk]
        dry, live = THRESHOLDS[risk]
        assert policy.risk is risk
        assert policy.dry_run_row.when == When(all=(Condition("confidence", Op.GE, dry),))
        assert policy.live_row.when == When(all=(Condition("confidence", Op.GE, live),))
        assert (policy.dry_run_row.mode, policy.live_row.mode) == (DRY_RUN, LIVE)
        assert (policy.dry_run_row.risk, policy.live_row.risk) == (risk, risk)

    def test_approval_only_on_high_live(self, default):
        assert [(r.id, r.requires_approval) for r in default.rows] == [
            ("low.dry_run", False), ("low.live", False),
            ("medium.dry_run", False), ("medium.live", False),
            ("high.dry_run", False), ("high.live", True),
        ]

    def test_describe(self, default):
        assert [r.describe() for r in default.rows] == [
            "DRY_RUN needs confidence >= 0.5",
            "LIVE needs confidence >= 0.7",
            "DRY_RUN needs confidence >= 0.65",
            "LIVE needs confidence >= 0.8",
            "DRY_RUN needs confidence >= 0.8",
            "LIVE needs confidence >= 0.85 and approval",
        ]

    def test_source_and_digest(self, default):
        text = resources.files("buddy.rules").joinpath("escalation.toml").read_text("utf-8")
        assert default.source == "buddy/rules/escalation.toml"
        assert default.digest == hashlib.sha256(text.encode()).hexdigest()[:16]

    def test_same_rows_as_the_test_table(self, default):
        assert EscalationTable.from_toml(text=TABLE).rows == default.rows

    def test_row_is_frozen(self, default):
        with pytest.raises(AttributeError):
            default.rows[0].mode = LIVE  # type: ignore[misc]


class TestPolicies:
    @pytest.mark.parametrize("risk", list(RiskLevel))
    def test_dry_run_at_threshold(self, default, risk):
        t = THRESHOLDS[risk][0]
        holds = default.policies[risk].dry_run
        assert (holds(at(below(t))), holds(at(t)), holds(at(above(t)))) == (False, True, True)

    @pytest.mark.parametrize("risk", list(RiskLevel))
    def test_live_at_threshold(self, default, risk):
        t = THRESHOLDS[risk][1]
        holds = default.policies[risk].live
        assert (holds(at(below(t))), holds(at(t)), holds(at(above(t)))) == (False, True, True)

    @pytest.mark.parametrize("risk", list(RiskLevel))
    def test_extremes(self, default, risk):
        policy = default.policies[risk]
        assert (policy.dry_run(at(0.0)), policy.live(at(0.0))) == (False, False)
        assert (policy.dry_run(at(1.0)), policy.live(at(1.0))) == (True, True)

    def test_live_threshold_never_below_dry_run(self, default):
        for risk, (dry, live) in THRESHOLDS.items():
            policy = default.policies[risk]
            assert not policy.live(at(below(live)))
            assert policy.dry_run(at(below(live))) is (below(live) >= dry)


class TestFromTomlProblems:
    @pytest.mark.parametrize(("old", "new", "message"), [
        ('op = "ge", value = 0.50', 'op = "=>", value = 0.50',
         f"esc.toml:7: row[low.dry_run].when.all[0].op: must be one of {OPS} (got '=>')"),
        ('op = "ge", value = 0.70', 'op = ">=", value = 0.70',
         f"esc.toml:13: row[low.live].when.all[0].op: must be one of {OPS} (got '>=')"),
        ('metric = "confidence", op = "ge", value = 0.65',
         'metric = "conf", op = "ge", value = 0.65',
         "esc.toml:19: row[medium.dry_run].when.all[0].metric: must be one of confidence "
         "(got 'conf')"),
        ('value = 0.50', 'value = "high"',
         "esc.toml:7: row[low.dry_run].when.all[0].value: must be a number (got 'high')"),
        ('value = 0.50', 'value = true',
         "esc.toml:7: row[low.dry_run].when.all[0].value: must be a number (got True)"),
        ('value = 0.85', 'value = nan',
         "esc.toml:37: row[high.live].when.all[0].value: must be a finite number (got nan)"),
        ('value = 0.85', 'value = inf',
         "esc.toml:37: row[high.live].when.all[0].value: must be a finite number (got inf)"),
        ('value = 0.85', 'value = -inf',
         "esc.toml:37: row[high.live].when.all[0].value: must be a finite number (got -inf)"),
        ('value = 0.65 } ] }\nthen = { mode = "DRY_RUN" }',
         'value = 0.65 } ] }\nthen = { mode = "MOCK" }',
         "esc.toml:20: row[medium.dry_run].then.mode: MOCK is the floor and needs no row "
         "(use DRY_RUN or LIVE)"),
        ('then = { mode = "LIVE", requires_approval = true }',
         'then = { mode = "REAL", requires_approval = true }',
         "esc.toml:38: row[high.live].then.mode: must be one of MOCK, DRY_RUN, LIVE "
         "(got 'REAL')"),
        ('id = "low.live"', 'id = "low.dry_run"',
         "esc.toml:11: row[low.dry_run].id: duplicate id (first at line 4)"),
        ('risk = "HIGH"\nwhen = { all = [ { metric = "confidence", op = "ge", value = 0.80',
         'risk = "EXTREME"\nwhen = { all = [ { metric = "confidence", op = "ge", value = 0.80',
         "esc.toml:30: row[high.dry_run].risk: must be one of LOW, MEDIUM, HIGH "
         "(got 'EXTREME')"),
        ('id = "medium.live"\n', '',
         "esc.toml:22: row[3].id: is required"),
        ('requires_approval = true', 'requires_approval = "yes"',
         "esc.toml:38: row[high.live].then.requires_approval: must be true or false "
         "(got 'yes')"),
        ('requires_approval = true', 'approval = true',
         "esc.toml:38: row[high.live].then.approval: unknown key"),
        ('id = "high.live"', 'id = "high.live"\ncolour = "red"',
         "esc.toml:36: row[high.live].colour: unknown key"),
        ('value = 0.50 } ] }', 'value = 0.50, unit = "%" } ] }',
         "esc.toml:7: row[low.dry_run].when.all[0].unit: unknown key"),
        ('value = 0.50 } ] }', 'value = 0.50 } ], none = [] }',
         "esc.toml:7: row[low.dry_run].when.none: unknown key"),
        ('version = 1', 'version = 1\nextra = 1',
         "esc.toml:3: escalation.extra: unknown key"),
        ('when = { all = [ { metric = "confidence", op = "ge", value = 0.70 } ] }\n', '',
         "esc.toml:10: row[low.live].when: is required"),
    ])
    def test_one_problem(self, old, new, message):
        assert problems_of(edit(old, new)) == [message]

    def test_second_row_for_the_same_risk_and_mode(self):
        text = TABLE + row("low.again", "LOW", "0.10", "LIVE")
        assert problems_of(text) == [
            "esc.toml:40: row[low.again]: a second row for risk LOW mode LIVE (first: low.live)"]

    def test_missing_row(self):
        text = TABLE[:TABLE.index('[[row]]\nid = "high.live"')]
        assert problems_of(text) == ["esc.toml: escalation: no row for risk HIGH mode LIVE"]

    def test_every_missing_row(self):
        assert problems_of('table = "escalation"\n') == [
            f"esc.toml: escalation: no row for risk {risk} mode {mode}"
            for risk in ("LOW", "MEDIUM", "HIGH") for mode in ("DRY_RUN", "LIVE")]

    def test_row_must_be_an_array_of_tables(self):
        assert problems_of("row = 1\n") == [
            "esc.toml:1: escalation.row: must be an array of [[row]] tables (got 1)"]

    def test_row_must_be_a_table(self):
        assert problems_of("row = [1]\n") == ["esc.toml:1: row[0]: must be a table (got 1)"]

    def test_syntax_error(self):
        assert problems_of(edit('version = 1', 'version = ')) == [
            "esc.toml:2: invalid TOML: Invalid value"]

    def test_str_is_one_line(self):
        with pytest.raises(RuleTableError) as info:
            EscalationTable.from_toml(text=edit('value = 0.50', 'value = "x"'), source="esc.toml")
        assert str(info.value) == (
            "esc.toml:7: row[low.dry_run].when.all[0].value: must be a number (got 'x')")
        assert "\n" not in str(info.value)


class TestAllProblemsAtOnce:
    def test_every_row_problem(self):
        text = edit('op = "ge", value = 0.50', 'op = "=>", value = 0.50')
        text = edit('metric = "confidence", op = "ge", value = 0.65',
                    'metric = "conf", op = "ge", value = 0.65', text)
        text = edit('value = 0.85', 'value = nan', text)
        text = edit('value = 0.80 } ] }\nthen = { mode = "DRY_RUN" }',
                    'value = 0.80 } ] }\nthen = { mode = "MOCK" }', text)
        text = edit('version = 1', 'version = 1\nextra = 1', text)
        with pytest.raises(RuleTableError) as info:
            EscalationTable.from_toml(text=text, source="esc.toml")
        assert info.value.problems == [
            "esc.toml:3: escalation.extra: unknown key",
            f"esc.toml:8: row[low.dry_run].when.all[0].op: must be one of {OPS} (got '=>')",
            "esc.toml:20: row[medium.dry_run].when.all[0].metric: must be one of confidence "
            "(got 'conf')",
            "esc.toml:33: row[high.dry_run].then.mode: MOCK is the floor and needs no row "
            "(use DRY_RUN or LIVE)",
            "esc.toml:38: row[high.live].when.all[0].value: must be a finite number (got nan)",
        ]
        assert str(info.value) == ("esc.toml:3: escalation.extra: unknown key "
                                   "(and 4 more problem(s))")

    def test_duplicate_key_and_missing_row_together(self):
        # Every row reads cleanly, so the missing (HIGH, LIVE) row is a problem too.
        text = edit('id = "high.live"\nrisk = "HIGH"', 'id = "high.live"\nrisk = "MEDIUM"')
        assert problems_of(text) == [
            "esc.toml:34: row[high.live]: a second row for risk MEDIUM mode LIVE "
            "(first: medium.live)",
            "esc.toml: escalation: no row for risk HIGH mode LIVE",
        ]


class TestFromDir:
    def test_user_table_overrides_the_default(self, tmp_path, default):
        text = edit('value = 0.70', 'value = 0.9')
        (tmp_path / "escalation.toml").write_text(text, encoding="utf-8")
        table = EscalationTable.from_dir(tmp_path)
        assert table.source == str(tmp_path / "escalation.toml")
        assert table.digest == hashlib.sha256(text.encode()).hexdigest()[:16]
        assert table.digest != default.digest
        low = table.policies[LOW]
        assert low.live_row == EscalationRow(
            "low.live", LOW, When(all=(Condition("confidence", Op.GE, 0.9),)), EscalationThen(LIVE))
        assert (low.live(at(0.7)), low.live(at(below(0.9))), low.live(at(0.9))) == (
            False, False, True)
        assert default.policies[LOW].live(at(0.7)) is True
        assert low.dry_run(at(0.5)) is True and low.dry_run(at(below(0.5))) is False
        for risk in (MEDIUM, HIGH):
            assert table.policies[risk] == default.policies[risk]
            assert table.policies[risk].live(at(THRESHOLDS[risk][1])) is True
            assert table.policies[risk].live(at(below(THRESHOLDS[risk][1]))) is False

    def test_string_path(self, tmp_path):
        (tmp_path / "escalation.toml").write_text(TABLE, encoding="utf-8")
        assert EscalationTable.from_dir(str(tmp_path)).rows == EscalationTable.default().rows

    def test_missing_file(self, tmp_path):
        with pytest.raises(RuleTableError) as info:
            EscalationTable.from_dir(tmp_path)
        assert info.value.problems == [f"{tmp_path / 'escalation.toml'}: no such file"]

    def test_problems_name_the_file(self, tmp_path):
        path = tmp_path / "escalation.toml"
        path.write_text(edit('op = "ge", value = 0.50', 'op = "gte", value = 0.50'),
                        encoding="utf-8")
        with pytest.raises(RuleTableError) as info:
            EscalationTable.from_dir(tmp_path)
        assert info.value.problems == [
            f"{path}:7: row[low.dry_run].when.all[0].op: must be one of {OPS} (got 'gte')"]


class TestEchoedValues:
    """Messages echo what the file holds short, one line, and with secrets masked."""

    def test_secret_in_a_threshold_is_masked(self):
        assert problems_of(edit("value = 0.50", 'value = { api_key = "sk-live-1" }')) == [
            "esc.toml:7: row[low.dry_run].when.all[0].value: must be a number, true, false or a "
            "string (got {'api_key': '***'})"]

    def test_a_long_id_is_cut_and_the_row_named_by_index(self):
        assert problems_of(edit('id = "low.live"', 'id = "' + "L" * 300 + '"')) == [
            "esc.toml:11: row[1].id: must be 1-64 letters, digits or _ . : - "
            f"(got '{'L' * 27}...{'L' * 28}')"]

    def test_duplicate_rows_of_an_inline_array(self):
        when = '{ all = [ { metric = "confidence", op = "ge", value = 0.5 } ] }'
        rows = ", ".join([f'{{ id = "a", risk = "LOW", when = {when}, '
                          'then = { mode = "DRY_RUN" } }'] * 2)
        assert problems_of(f"row = [{rows}]\n") == [
            "esc.toml:1: row[a].id: duplicate id (first at line 1)"]


class TestRowsThatHoldAlways:
    """A row that tests nothing would grant its mode at any confidence."""

    @pytest.mark.parametrize("when", ["{}", "{ any = [] }", "{ all = [], any = [] }"])
    def test_a_row_must_test_something(self, when):
        shipped = resources.files("buddy.rules").joinpath("escalation.toml").read_text("utf-8")
        text = shipped.replace(
            'when = { all = [ { metric = "confidence", op = "ge", value = 0.70 } ] }',
            f"when = {when}", 1)
        line = text.splitlines().index(f"when = {when}") + 1
        assert problems_of(text) == [
            f"esc.toml:{line}: row[low.live].when: must hold at least one condition"]
