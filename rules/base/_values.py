"""Risk levels, execution modes and the one confidence check."""

from __future__ import annotations

import enum
from typing import Any

__all__ = ["ExecutionMode", "KeyEnum", "RiskLevel", "plain_confidence", "valid_confidence"]


class KeyEnum(enum.Enum):
    """An enum whose members are dict keys on hot paths: hashed by identity.

    Members are singletons that compare by identity, so identity hashing keeps
    every dict and set as it was; ``enum.Enum`` hashes a member's name in Python,
    a call per lookup that costs several times the lookup itself.
    """

    __hash__ = object.__hash__


class RiskLevel(KeyEnum):
    """How much harm a wrong call of the tool can do."""

    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"


class ExecutionMode(KeyEnum):
    """How a call runs: simulated, rehearsed, or for real. Ordered by ``rank``."""

    MOCK = "MOCK"
    DRY_RUN = "DRY_RUN"
    LIVE = "LIVE"

    @property
    def rank(self) -> int:
        return _MODE_RANK[self]


_MODE_RANK = {ExecutionMode.MOCK: 0, ExecutionMode.DRY_RUN: 1, ExecutionMode.LIVE: 2}


def plain_confidence(value: Any) -> Any:
    """A confidence as a plain ``float`` when it is one: a number in [0, 1] (not a bool,
    not NaN); anything else as it was given, to be refused.

    A subclass of ``float`` or ``int`` becomes the plain number it holds, so no
    comparison it overrides can decide a threshold.

    >>> class Liar(float):
    ...     def __ge__(self, other): return True
    >>> plain_confidence(Liar(0.1)), type(plain_confidence(Liar(0.1))).__name__
    (0.1, 'float')
    >>> plain_confidence(1), plain_confidence(True), plain_confidence(1.5)
    (1.0, True, 1.5)
    """
    if type(value) is float:
        return value
    try:
        if isinstance(value, bool):
            return value
        if isinstance(value, float):
            plain = float.__float__(value)  # the number itself, past any override
        elif isinstance(value, int):
            plain = float(int.__int__(value))
        else:
            return value
    except (OverflowError, ValueError, TypeError):
        return value
    return plain if 0.0 <= plain <= 1.0 else value


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
    return type(plain_confidence(value)) is float
