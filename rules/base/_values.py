"""Risk levels, execution modes and the one confidence check."""

from __future__ import annotations

import enum
from typing import Any

__all__ = ["ExecutionMode", "RiskLevel", "valid_confidence"]


class RiskLevel(enum.Enum):
    """How much harm a wrong call of the tool can do."""

    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"


class ExecutionMode(enum.Enum):
    """How a call runs: simulated, rehearsed, or for real. Ordered by ``rank``."""

    MOCK = "MOCK"
    DRY_RUN = "DRY_RUN"
    LIVE = "LIVE"

    @property
    def rank(self) -> int:
        return _MODE_RANK[self]


_MODE_RANK = {ExecutionMode.MOCK: 0, ExecutionMode.DRY_RUN: 1, ExecutionMode.LIVE: 2}


def valid_confidence(value: Any) -> bool:
    """Whether ``value`` is a confidence: a real number in [0, 1] (not a bool, not NaN).

    The one check every entry point uses (engine, replay, plans, CLI).

    >>> valid_confidence(0.85), valid_confidence(1), valid_confidence(True)
    (True, True, False)
    >>> valid_confidence(float("nan")), valid_confidence(1.5), valid_confidence("0.9")
    (False, False, False)
    >>> valid_confidence(10 ** 400)
    False
    """
    if type(value) is float:  # the hot path: one type test, two comparisons
        return 0.0 <= value <= 1.0
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return 0 <= value <= 1  # an int of any size, or a float subclass (NaN compares False)
