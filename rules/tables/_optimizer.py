"""The optimizer table (Phase 19): the balanced objective's weights and the agents' capacity.

``rules/optimizer.toml``, read by :func:`~buddy.rules.tables.load` against its
:class:`~buddy.rules.tables.TableSpec`. It has no rows: a ``[weights]`` table
(``success``, ``throughput``, ``confidence``, each in [0, 1], summing to 1) and
a ``[capacity]`` table (``max_load_factor``, in [1, 1000]). The optimizer
(:mod:`buddy.engine.waves._optimizer`) computes the scores; this table says how
they are weighed and how much work one agent may take.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import attrs

from buddy.rules.base._convert import Problem, structure_checked
from buddy.rules.base._masking import shown
from buddy.rules.base.errors import InputError
from buddy.rules.tables._checks import between, in_unit_interval, invalid, sums_to_one
from buddy.rules.tables._loader import ShippedTable, TableSpec, load

__all__ = ["OPTIMIZER_WEIGHTS", "OptimizerCapacity", "OptimizerTable", "OptimizerWeights"]

#: The terms of the balanced objective, in the order they are summed.
OPTIMIZER_WEIGHTS = ("success", "throughput", "confidence")


@attrs.frozen
class OptimizerWeights:
    """The weight of each balanced term, each in [0, 1], together summing to 1."""

    success: float = attrs.field(validator=in_unit_interval())
    throughput: float = attrs.field(validator=in_unit_interval())
    confidence: float = attrs.field(validator=in_unit_interval())

    def __attrs_post_init__(self) -> None:
        sums_to_one(self)


def _finite(instance: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not math.isfinite(value):
        raise invalid(attribute.name, f"must be a finite number (got {shown(value)})")


@attrs.frozen
class OptimizerCapacity:
    """How many tasks one agent may take: ``ceil(tasks / agents * max_load_factor)``."""

    max_load_factor: float = attrs.field(validator=[_finite, between(1.0, 1000.0)])


@attrs.frozen
class OptimizerFile:
    """The top level of ``optimizer.toml`` (it has no rows)."""

    weights: OptimizerWeights
    capacity: OptimizerCapacity


def _no_rows(row: dict[str, Any]) -> tuple[None, list[Problem]]:
    return None, [Problem((), "optimizer.toml takes no rows: only [weights] and [capacity]")]


OPTIMIZER: TableSpec[OptimizerFile, dict[str, Any], None] = TableSpec(
    "optimizer", dict, compile=_no_rows, file=OptimizerFile)


@attrs.frozen
class OptimizerTable(ShippedTable):
    """The optimizer's weights and capacity (``rules/optimizer.toml``).

    >>> table = OptimizerTable.default()
    >>> dict(table.weights), table.max_load_factor
    ({'success': 0.5, 'throughput': 0.25, 'confidence': 0.25}, 1.5)
    >>> table.capacity(tasks=10, agents=4)
    4
    """

    FILE: ClassVar[str] = "optimizer.toml"

    weights: Mapping[str, float]
    max_load_factor: float = 1.0
    source: str = "<memory>"
    digest: str = ""

    @classmethod
    def from_toml(cls, path: Path | str | None = None, *, text: str | None = None,
                  source: str | None = None) -> OptimizerTable:
        """Load and validate; every problem is reported at once, naming file, line and field.

        Raises :class:`~buddy.rules.base.errors.RuleTableError`.
        """
        loaded = load(OPTIMIZER, path, text=text, source=source)
        return cls(attrs.asdict(loaded.file.weights),
                   max_load_factor=loaded.file.capacity.max_load_factor,
                   source=loaded.source, digest=loaded.digest)

    def with_weights(self, weights: Mapping[str, float]) -> OptimizerTable:
        """This table with other balanced weights (learned ones), checked as the file's are;
        its source and digest say so (``optimizer.toml+learned``, a digest of the weights)."""
        value, problems = structure_checked(dict(weights), OptimizerWeights)
        if value is None:
            raise InputError(f"weights: {'; '.join(map(str, problems))}")
        checked = attrs.asdict(value)
        text = ",".join(f"{k}={checked[k]!r}" for k in OPTIMIZER_WEIGHTS)
        return attrs.evolve(self, weights=checked, source=f"{self.source}+learned",
                            digest=hashlib.sha256(text.encode()).hexdigest()[:16])

    def capacity(self, tasks: int, agents: int) -> int:
        """The most tasks one agent may hold: ``ceil(tasks / agents * max_load_factor)``
        (0 when there are no agents).

        Exact for whole-number factors; otherwise within a float's rounding
        (a result a hair under a whole number rounds to it, never below).
        """
        if agents <= 0:
            return 0
        share = tasks * self.max_load_factor / agents
        nearest = round(share)
        return int(nearest) if math.isclose(share, nearest, rel_tol=1e-12, abs_tol=0.0) \
            else math.ceil(share)

    def balanced(self, success: float, throughput: float, confidence: float) -> float:
        """``w.success * success + w.throughput * throughput + w.confidence * confidence``."""
        w = self.weights
        return (w["success"] * success + w["throughput"] * throughput
                + w["confidence"] * confidence)
