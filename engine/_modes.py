"""Risk levels and execution modes."""

from __future__ import annotations

import enum

__all__ = ["ExecutionMode", "RiskLevel"]


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
