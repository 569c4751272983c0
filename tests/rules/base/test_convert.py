"""Tests for buddy.rules.base._convert: the one strict converter and its problems."""

from __future__ import annotations

import math
import sys

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from buddy.rules.base._convert import Problem, Scalar, problems_of, structure_checked
from buddy.rules.base.errors import RuleTableError

BIG = 10 ** 400  # a whole number no float holds


@attrs.frozen
class Numbers:
    count: int = 0
    rate: float = 0.0
    threshold: Scalar = 0


def problems(data: dict) -> list[str]:
    return [str(p) for p in structure_checked(data, Numbers)[1]]


class TestWholeNumbers:
    @pytest.mark.parametrize("value", [0, -5, 2 ** 63 - 1, -(2 ** 63 - 1)])
    def test_accepted(self, value):
        assert structure_checked({"count": value}, Numbers) == (Numbers(count=value), [])

    @pytest.mark.parametrize("value", [2 ** 63, -(2 ** 63), 2 ** 64])
    def test_beyond_64_bits_is_refused(self, value):
        # JSON writers (orjson) hold signed 64-bit integers: a table's number must be one
        assert problems({"count": value}) == [
            f"count: must be a whole number (got {value}, too large)"]

    @pytest.mark.parametrize("value", [BIG, -BIG, int(sys.float_info.max) * 2])
    def test_too_large_for_a_float_is_refused(self, value):
        assert problems({"count": value}) == [
            f"count: must be a whole number (got <int of {abs(value).bit_length()} bits>, "
            "too large)"]

    @pytest.mark.parametrize(("value", "shown"), [(True, "True"), (1.0, "1.0"), ("1", "'1'")])
    def test_other_types_are_refused(self, value, shown):
        assert problems({"count": value}) == [f"count: must be a whole number (got {shown})"]


class TestNumbers:
    def test_too_large_for_a_float(self):
        assert problems({"rate": BIG}) == [
            "rate: must be a finite number (got <int of 1329 bits>, too large)"]

    @pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
    def test_not_finite(self, value):
        assert problems({"rate": value}) == [f"rate: must be a finite number (got {value!r})"]


class TestScalar:
    @pytest.mark.parametrize("value", [True, 3, BIG, 2.5, math.nan, "x"])
    def test_any_toml_scalar_as_read(self, value):
        got = structure_checked({"threshold": value}, Numbers)[0]
        assert got is not None
        assert got.threshold is value

    @pytest.mark.parametrize(("value", "shown"), [([1], "[1]"), ({"a": 1}, "{'a': 1}"),
                                                  (None, "None")])
    def test_containers_are_refused(self, value, shown):
        assert problems({"threshold": value}) == [
            f"threshold: must be a number, true, false or a string (got {shown})"]

    @given(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(),
                     st.lists(st.integers(), max_size=2)))
    def test_scalars_pass_and_nothing_else(self, value):
        got, found = structure_checked({"threshold": value}, Numbers)
        assert (got is not None) is isinstance(value, bool | int | float | str)
        assert (found == []) is (got is not None)


class TestProblemsOf:
    def test_a_validator_s_dotted_field_with_list_indexes(self):
        error = RuleTableError("edges.2: must be above the edge before it")
        error.field = "edges.2"  # type: ignore[attr-defined]
        error.message = "must be above the edge before it"  # type: ignore[attr-defined]
        assert problems_of(error, ("signals",)) == [
            Problem(("signals", "edges", 2), "must be above the edge before it")]
        assert str(problems_of(error)[0]) == "edges[2]: must be above the edge before it"
