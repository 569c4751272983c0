"""The engine the benchmarks measure: buddy's shipped one, its tools' rate limits lifted.

Tens of thousands of decisions a second on a few tools would spend every
tool's ``rate_limit_per_minute`` in the first second, and from then on the
benchmarks would time refusals; the peers encode the escalation table only.
Rate limits are enforced and tested in tests/engine/core (a throttled decision
costs one token-bucket update more).
"""

from __future__ import annotations

from typing import Any

import attrs

from buddy.engine import Engine, ToolContractRegistry
from buddy.rules import EscalationTable


def unthrottled_registry() -> ToolContractRegistry:
    """The shipped catalogue with no tool rate-limited."""
    return ToolContractRegistry(
        attrs.evolve(c, rate_limit_per_minute=None) for c in ToolContractRegistry.default())


def unthrottled(**kwargs: Any) -> Engine:
    """``Engine.default(**kwargs)`` with no tool rate-limited."""
    return Engine(unthrottled_registry(), EscalationTable.default(), **kwargs)
