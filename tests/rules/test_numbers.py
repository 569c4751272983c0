"""Every number of every rule table: too large, not finite, a bool or a string is one
clear problem line (``file:line: table[id].field: message``), never a traceback.

A 400-digit integer used to escape the loaders as an ``OverflowError`` (int too
large to convert to float); a 5000-digit one as a bare ``ValueError``.
"""

from __future__ import annotations

import json
import math
from importlib import resources

import pytest
from hypothesis import given
from hypothesis import strategies as st

from buddy.rules import (
    AnomalyTable,
    ConflictTable,
    EscalationTable,
    HealthTable,
    SignalTable,
    ToolContractRegistry,
)
from buddy.rules.base.errors import RuleTableError

BIG = "9" * 400  # 1329 bits: more than any float holds
TABLES = {"escalation.toml": EscalationTable, "tools.toml": ToolContractRegistry,
          "conflicts.toml": ConflictTable, "anomalies.toml": AnomalyTable,
          "health.toml": HealthTable, "signals.toml": SignalTable}
FLOAT, INT = "a number", "a whole number"
#: What a field of each kind says of a number it cannot hold (too large, NaN, infinite).
UNHELD = {FLOAT: "a finite number", INT: "a whole number"}

#: (file, the shipped text's first fragment to edit (comments aside), it with {} for the number,
#:  where the problem is, the kind of number the field takes).
FIELDS = [
    ("escalation.toml", "value = 0.50", "value = {}", "row[low.dry_run].when.all[0].value",
     FLOAT),
    ("tools.toml", "timeout_s = 10.0", "timeout_s = {}", "tool[vision_inspect].timeout_s",
     FLOAT),
    ("tools.toml", "max_concurrency = 8", "max_concurrency = {}",
     "tool[vision_inspect].max_concurrency", INT),
    ("tools.toml", "rate_limit_per_minute = 600", "rate_limit_per_minute = {}",
     "tool[vision_inspect].rate_limit_per_minute", INT),
    ("conflicts.toml", "delay_s = 5.0,", "delay_s = {},", "row[resource.delay].then.delay_s",
     FLOAT),
    ("conflicts.toml", "max_delay_s = 15.0", "max_delay_s = {}",
     "row[resource.delay].then.max_delay_s", FLOAT),
    ("anomalies.toml", "value = 0.4", "value = {}",
     "row[unsafe_escalation].when.all[0].value", FLOAT),
    ("anomalies.toml", "min_executions = 5", "min_executions = {}",
     "row[unsafe_escalation].min_executions", INT),
    ("anomalies.toml", "severity = 7", "severity = {}", "row[unsafe_escalation].then.severity",
     INT),
    ("anomalies.toml", "value = 5 }", "value = {} }", "row[high_conflict].when.all[1].value",
     INT),
    ("health.toml", "rollback = 0.15", "rollback = {}", "health.weights.rollback", FLOAT),
    ("health.toml", "value = 90.0", "value = {}", "row[excellent].when.all[0].value", FLOAT),
    ("signals.toml", "[0.0, 0.5,", "[0.0, {},", "signals.confidence_buckets[1]", FLOAT),
    ("signals.toml", "value = 0.90", "value = {}", "row[tool_reliability.high].when.all[0].value",
     FLOAT),
    ("signals.toml", "value = 10 }", "value = {} }",
     "row[tool_reliability.high].when.all[1].value", INT),
    ("signals.toml", "target_phase = 16", "target_phase = {}",
     "row[tool_reliability.high].then.target_phase", INT),
    ("signals.toml", "saturate_at = 20", "saturate_at = {}",
     "row[tool_performance.slow].then.confidence.saturate_at", FLOAT),
    ("signals.toml", 'value = 0.8 }', "value = {} }",
     "row[approval_mismatch.overconfident].then.confidence.value", FLOAT),
    ("signals.toml", 'value = 0.8 }', "value = 0.8, cap = {} }",
     "row[approval_mismatch.overconfident].then.confidence.cap", FLOAT),
]
IDS = [f"{file}:{where}" for file, _, _, where, _ in FIELDS]


def shipped(file: str) -> str:
    return resources.files("buddy.rules").joinpath(file).read_text(encoding="utf-8")


def with_number(file: str, old: str, new: str, number: str) -> tuple[str, int]:
    """The shipped text with its first ``old`` (outside comments) made ``new`` holding
    ``number``, and the line of that."""
    text = shipped(file)
    at = text.index(old)
    while text[text.rfind("\n", 0, at) + 1:at].lstrip().startswith("#"):
        at = text.index(old, at + 1)
    edited = text[:at] + new.replace("{}", number, 1) + text[at + len(old):]
    return edited, text.count("\n", 0, at) + 1


def problems(file: str, text: str) -> list[str]:
    with pytest.raises(RuleTableError) as info:
        TABLES[file].from_toml(text=text, source=file)
    return info.value.problems


@pytest.mark.parametrize(("file", "old", "new", "where", "kind"), FIELDS, ids=IDS)
class TestEveryNumericField:
    def test_shipped_value_loads(self, file, old, new, where, kind):
        TABLES[file].from_toml(text=shipped(file), source=file)

    @pytest.mark.parametrize("sign", ["", "-"])
    def test_too_large_for_a_float(self, file, old, new, where, kind, sign):
        text, line = with_number(file, old, new, sign + BIG)
        assert problems(file, text) == [
            f"{file}:{line}: {where}: must be {UNHELD[kind]} (got <int of 1329 bits>, too large)"]

    @pytest.mark.parametrize("number", ["nan", "inf", "-inf", "+nan"])
    def test_not_finite(self, file, old, new, where, kind, number):
        text, line = with_number(file, old, new, number)
        assert problems(file, text) == [f"{file}:{line}: {where}: must be {UNHELD[kind]} "
                                        f"(got {float(number)!r})"]

    @pytest.mark.parametrize(("value", "shown"), [("true", "True"), ('"0.5"', "'0.5'"),
                                                  ("[1]", "[1]")])
    def test_not_a_number(self, file, old, new, where, kind, value, shown):
        text, line = with_number(file, old, new, value)
        if ".when." in where and value == "[1]":  # not even a scalar a condition could hold
            kind = "a number, true, false or a string"
        assert problems(file, text) == [f"{file}:{line}: {where}: must be {kind} (got {shown})"]

    def test_too_many_digits_for_python(self, file, old, new, where, kind):
        text, line = with_number(file, old, new, "9" * 5000)
        assert problems(file, text) == [
            f"{file}:{line}: invalid TOML: an integer of more than 4300 digits"]


def toml_scalar() -> st.SearchStrategy[str]:
    """Any TOML scalar, as TOML text."""
    return st.one_of(
        st.integers(min_value=-(10 ** 500), max_value=10 ** 500).map(str),
        st.sampled_from(["9" * 4400, "-" + "1" * 4301]),
        st.floats().map(lambda x: "nan" if math.isnan(x) else
                        ("inf" if x > 0 else "-inf") if math.isinf(x) else repr(x)),
        st.booleans().map(lambda b: "true" if b else "false"),
        st.text(max_size=8).map(lambda s: json.dumps(s, ensure_ascii=False)),
    )


@given(st.sampled_from(FIELDS), toml_scalar())
def test_any_scalar_in_any_numeric_field_loads_or_is_refused_in_one_line(field, number):
    file, old, new, where, _ = field
    text, line = with_number(file, old, new, number)
    try:
        TABLES[file].from_toml(text=text, source=file)
    except RuleTableError as error:
        assert error.problems
        for problem in error.problems:
            assert problem.startswith(f"{file}:")
            assert "\n" not in problem
            assert len(problem) < 400
