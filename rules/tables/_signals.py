"""The signal table: which learning signals the feedback loop emits, and how sure they are.

``rules/signals.toml`` holds rows in the shared format, each of one scope
(``tool``, ``mode``, ``conflict_type``, ``confidence_bucket``; the metrics
each may test are :data:`SCOPES`), naming a :class:`SignalType`, a target
phase, insight and action templates and a :class:`ConfidenceRule`; the file's
``confidence_buckets`` sets the bucket edges. The feedback loop
(:mod:`buddy.engine.orchestration`) computes the metrics and renders the rows.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import attrs

from buddy.rules.tables._rowtable import Field, Kinds, RuleTable, Schema, Scope, TableFile, Template
from buddy.rules.tables._table import Problems, When

__all__ = [
    "DEFAULT_BUCKETS",
    "SCOPES",
    "TARGET_PHASES",
    "ConfidenceRule",
    "SignalRule",
    "SignalTable",
    "SignalType",
]


class SignalType(enum.Enum):
    """What a learning signal is about."""

    TOOL_RELIABILITY = "TOOL_RELIABILITY"
    TOOL_PERFORMANCE = "TOOL_PERFORMANCE"
    EXECUTION_MODE_ANALYSIS = "EXECUTION_MODE_ANALYSIS"
    CONFLICT_PATTERN = "CONFLICT_PATTERN"
    APPROVAL_MISMATCH = "APPROVAL_MISMATCH"


#: The phases a signal may target: 16 (reward modelling / heuristics), 19 (meta-learning).
TARGET_PHASES = (16, 19)
#: Default edges of the confidence buckets: [0, .5), [.5, .7), [.7, .85), [.85, 1].
DEFAULT_BUCKETS = (0.0, 0.5, 0.7, 0.85, 1.0)
_MAX_EDGES = 21

#: What a row of each scope may test, and the extra names its templates may use.
SCOPES: Mapping[str, Scope] = {
    "tool": Scope(
        metrics={"executions": int, "successful": int, "failed": int, "success_rate": float,
                 "failure_rate": float, "avg_execution_time": float,
                 "mean_confidence": float, "calibration_gap": float},
        names={"tool_name": str}),
    "mode": Scope(
        metrics={"executions": int, "modes_seen": int, "best_mode": str, "best_rate": float,
                 "best_executions": int, "worst_mode": str, "worst_rate": float,
                 "worst_executions": int, "rate_gap": float, "fastest_mode": str,
                 "fastest_ms": float, "slowest_mode": str, "slowest_ms": float,
                 "latency_ratio": float},
        names={"tool_name": str, "other_modes": str}),
    "conflict_type": Scope(
        metrics={"occurrences": int, "calls": int, "share": float, "resolved": int,
                 "tools": int},
        names={"conflict_type": str, "top_resolution": str, "tool_list": str}),
    "confidence_bucket": Scope(
        metrics={"executions": int, "successful": int, "predicted": float, "actual": float,
                 "gap": float, "abs_gap": float},
        names={"bucket": str, "bucket_low": float, "bucket_high": float}),
}


# -- confidence of a signal ------------------------------------------------------------

@attrs.frozen
class ConfidenceRule:
    """How a signal's confidence (0-1) is computed.

    ``fixed``: ``value``. ``metric``: the named metric, clamped to [0, 1].
    ``sample``: ``min(1, count / saturate_at)`` of a count metric (by default
    ``executions``, or ``occurrences`` for conflict types). Then ``min(cap, .)``.

    >>> ConfidenceRule("sample", metric="executions", saturate_at=20).compute({"executions": 5})
    0.25
    """

    method: str
    value: float = 0.0
    metric: str | None = None
    saturate_at: float = 1.0
    cap: float = 1.0

    def compute(self, metrics: Mapping[str, Any]) -> float:
        if self.method == "fixed":
            raw = self.value
        elif self.method == "metric":
            raw = float(metrics[self.metric])  # type: ignore[index]
        else:
            raw = metrics[self.metric] / self.saturate_at  # type: ignore[index]
        return round(min(self.cap, 1.0, max(0.0, raw)), 4)


_CONFIDENCE_KEYS = {"fixed": ("value",), "metric": ("metric",),
                    "sample": ("saturate_at", "metric")}


def _read_confidence(problems: Problems, value: Any, where: str, line: int | None,
                     metrics: Mapping[str, Kinds]) -> ConfidenceRule | None:
    before = len(problems.items)
    method = problems.field(value, "method", str, where, line)
    if method is not None and method not in _CONFIDENCE_KEYS:
        problems.add(f"{where}.method", f"must be one of {', '.join(_CONFIDENCE_KEYS)} "
                     f"(got {method!r})", line)
        return None
    if method is None:
        return None
    for key in sorted(set(value) - {"method", "cap", *_CONFIDENCE_KEYS[method]}):
        problems.add(f"{where}.{key}", f"unknown key for method {method!r}", line)
    cap = problems.field(value, "cap", float, where, line, default=1.0)
    if cap is not None and not 0.0 < cap <= 1.0:
        problems.add(f"{where}.cap", f"must be in (0, 1] (got {cap!r})", line)
    rule: dict[str, Any] = {"method": method, "cap": cap}
    if method == "fixed":
        fixed = problems.field(value, "value", float, where, line)
        if fixed is not None and not 0.0 <= fixed <= 1.0:
            problems.add(f"{where}.value", f"must be in [0, 1] (got {fixed!r})", line)
        rule["value"] = fixed
    else:
        default = "executions" if "executions" in metrics else "occurrences"
        wanted: tuple[type, ...] = (int,) if method == "sample" else (int, float)
        metric = problems.field(value, "metric", str, where, line,
                                default=attrs.NOTHING if method == "metric" else default)
        if metric is not None and metrics.get(metric) not in wanted:
            numeric = sorted(m for m, k in metrics.items() if k in wanted)
            kind = "count" if method == "sample" else "numeric"
            problems.add(f"{where}.metric", f"must be a {kind} metric of the row's scope: "
                         f"{', '.join(numeric)} (got {metric!r})", line)
        rule["metric"] = metric
        if method == "sample":
            saturate = problems.field(value, "saturate_at", float, where, line)
            if saturate is not None and saturate <= 0:
                problems.add(f"{where}.saturate_at", f"must be > 0 (got {saturate!r})", line)
            rule["saturate_at"] = saturate
    if len(problems.items) > before:
        return None
    return ConfidenceRule(**rule)


def _read_buckets(problems: Problems, value: Any, where: str, line: int | None,
                  metrics: Mapping[str, Kinds]) -> tuple[float, ...] | None:
    edges = []
    for i, edge in enumerate(value):
        if isinstance(edge, bool) or not isinstance(edge, int | float) \
                or not math.isfinite(edge):
            problems.add(f"{where}[{i}]", f"must be a number (got {edge!r})", line)
            return None
        edges.append(float(edge))
    if not 2 <= len(edges) <= _MAX_EDGES:
        problems.add(where, f"must hold 2 to {_MAX_EDGES} edges (got {len(edges)})", line)
        return None
    if edges[0] != 0.0 or edges[-1] != 1.0:
        problems.add(where, f"must run from 0.0 to 1.0 (got {edges[0]:g} to {edges[-1]:g})",
                     line)
        return None
    for i in range(1, len(edges)):
        if edges[i] <= edges[i - 1]:
            problems.add(f"{where}[{i}]", f"must be above the edge before it "
                         f"({edges[i]:g} <= {edges[i - 1]:g})", line)
            return None
    return tuple(edges)


# -- the signal table ----------------------------------------------------------------------

@attrs.frozen
class SignalRule:
    """A compiled signal row."""

    id: str
    signal: SignalType
    scope: str
    target_phase: int
    insight: Template
    recommended_action: Template
    confidence: ConfidenceRule
    when: When
    holds: Callable[[Mapping[str, Any]], bool] = attrs.field(eq=False, repr=False)


@attrs.frozen
class SignalTable(TableFile):
    """The signal rows (``rules/signals.toml``) and the confidence-bucket edges.

    >>> table = SignalTable.default()
    >>> table.buckets
    (0.0, 0.5, 0.7, 0.85, 1.0)
    >>> sorted({r.signal.value for r in table.rules}) == sorted(s.value for s in SignalType)
    True
    """

    FILE: ClassVar[str] = "signals.toml"
    SCHEMA: ClassVar[Schema] = Schema(
        table="signals",
        metrics={},
        then={"target_phase": Field(int, choices=TARGET_PHASES),
              "insight": Field(str, template=True),
              "recommended_action": Field(str, template=True),
              "confidence": Field(dict, reader=_read_confidence)},
        extras={"signal": Field(str, choices=tuple(s.value for s in SignalType)),
                "scope": Field(str, choices=tuple(SCOPES))},
        scope="scope",
        scopes=SCOPES,
        top={"confidence_buckets": Field(list, required=False, default=DEFAULT_BUCKETS,
                                         reader=_read_buckets)},
        nonempty_when=True,
    )

    rules: tuple[SignalRule, ...]
    buckets: tuple[float, ...] = DEFAULT_BUCKETS
    table: RuleTable | None = attrs.field(default=None, eq=False, repr=False)

    @classmethod
    def from_table(cls, table: RuleTable) -> SignalTable:
        rules = tuple(
            SignalRule(row.id, SignalType(row.extras["signal"]), row.extras["scope"],
                       row.then["target_phase"], row.then["insight"],
                       row.then["recommended_action"], row.then["confidence"], row.when, holds)
            for row, holds in table.compiled)
        return cls(rules=rules, buckets=tuple(table.top["confidence_buckets"]), table=table)

    def bucket_labels(self) -> tuple[str, ...]:
        """``"0.5-0.7"`` per bucket."""
        e = self.buckets
        return tuple(f"{e[i]:g}-{e[i + 1]:g}" for i in range(len(e) - 1))
