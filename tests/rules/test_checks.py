"""Tests for buddy.rules.tables._checks: field validators whose errors name the field."""

from __future__ import annotations

import attrs
import pytest

from buddy.rules.base._convert import problems_of, structure_checked
from buddy.rules.base.errors import ContractError, RuleTableError
from buddy.rules.tables._checks import (
    above,
    at_least,
    between,
    in_unit_interval,
    invalid,
    is_row_id,
    one_of,
    raise_all,
    row_id,
)


@attrs.frozen
class Row:
    id: str = attrs.field(default="r", validator=row_id)
    level: int = attrs.field(default=5, validator=between(1, 10))
    count: int = attrs.field(default=0, validator=at_least(0))
    delay: float | None = attrs.field(default=None, validator=above(0))
    weight: float | None = attrs.field(default=None, validator=in_unit_interval())
    cap: float = attrs.field(default=1.0, validator=in_unit_interval(open_low=True))
    kind: str = attrs.field(default="a", validator=one_of("a", "b"))
    phase: int = attrs.field(default=16, validator=one_of(16, 19))


class TestValidators:
    def test_defaults_are_valid(self):
        Row()

    @pytest.mark.parametrize(("field", "value", "message"), [
        ("id", "a b", "id: must be 1-64 letters, digits or _ . : - (got 'a b')"),
        ("id", "x" * 65, f"id: must be 1-64 letters, digits or _ . : - (got '{'x' * 27}..."
                         f"{'x' * 28}')"),
        ("id", ".a", "id: must be 1-64 letters, digits or _ . : - (got '.a')"),
        ("level", 0, "level: must be >= 1 (got 0)"),
        ("level", 11, "level: must be <= 10 (got 11)"),
        ("count", -1, "count: must be >= 0 (got -1)"),
        ("delay", 0.0, "delay: must be > 0 (got 0.0)"),
        ("delay", -2.5, "delay: must be > 0 (got -2.5)"),
        ("weight", 1.5, "weight: must be in [0, 1] (got 1.5)"),
        ("weight", -0.0001, "weight: must be in [0, 1] (got -0.0001)"),
        ("cap", 0.0, "cap: must be in (0, 1] (got 0.0)"),
        ("kind", "c", "kind: must be one of a, b (got 'c')"),
        ("phase", 17, "phase: must be one of 16, 19 (got 17)"),
    ])
    def test_each_names_field_expectation_and_value(self, field, value, message):
        with pytest.raises(RuleTableError) as info:
            Row(**{field: value})
        assert str(info.value) == message
        assert (info.value.field, info.value.message) == (  # type: ignore[attr-defined]
            field, message.partition(": ")[2])

    @pytest.mark.parametrize(("field", "value"), [
        ("id", "a.b:c-d_9"), ("id", "9" * 64), ("level", 1), ("level", 10), ("count", 0),
        ("delay", 1e-300), ("weight", 0.0), ("weight", 1.0), ("cap", 1.0), ("cap", 5e-324),
        ("kind", "b"), ("phase", 19)])
    def test_bounds_are_accepted(self, field, value):
        assert getattr(Row(**{field: value}), field) == value

    def test_is_row_id(self):
        assert [is_row_id(v) for v in ("a", "a b", "", None, 3, "x" * 64, "x" * 65)] == [
            True, False, False, False, False, True, False]

    def test_the_loader_places_a_validator_error_on_its_field(self):
        assert [str(p) for p in structure_checked({"level": 12}, Row)[1]] == [
            "level: must be <= 10 (got 12)"]


class TestInvalid:
    def test_owner_shows_in_the_text_only(self):
        error = invalid("timeout_s", "must be > 0 (got 0)", owner="t", kind=ContractError)
        assert isinstance(error, ContractError)
        assert str(error) == "t.timeout_s: must be > 0 (got 0)"
        assert [str(p) for p in problems_of(error, ("tool", 3))] == [
            "tool[3].timeout_s: must be > 0 (got 0)"]

    def test_no_field(self):
        error = invalid(None, "must sum to 1 (got 0.9)")
        assert str(error) == "must sum to 1 (got 0.9)"
        assert [str(p) for p in problems_of(error, ("weights",))] == [
            "weights: must sum to 1 (got 0.9)"]


class TestRaiseAll:
    def test_none(self):
        raise_all([])

    def test_one_is_itself(self):
        error = invalid("a", "bad")
        with pytest.raises(RuleTableError) as info:
            raise_all([error])
        assert info.value is error

    def test_several_are_all_placed(self):
        with pytest.raises(ExceptionGroup) as info:
            raise_all([invalid("a", "bad"), invalid("b.2", "worse")])
        assert [str(p) for p in problems_of(info.value, ("then",))] == [
            "then.a: bad", "then.b[2]: worse"]
