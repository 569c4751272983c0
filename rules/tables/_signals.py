"""The signal table: which learning signals the feedback loop emits, and how sure they are.

``rules/signals.toml`` holds rows each of one scope (``tool``, ``mode``,
``conflict_type``, ``confidence_bucket``; the metrics and template names
each may use are :data:`SCOPES`), naming a :class:`SignalType`, a target
phase, insight and action templates and a :class:`ConfidenceRule`; the file's
``confidence_buckets`` sets the bucket edges. The feedback loop
(:mod:`buddy.engine.orchestration`) computes the metrics and renders the rows.
"""

from __future__ import annotations

import enum
import operator
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import attrs

from buddy.rules.base._convert import Problem
from buddy.rules.base._masking import shown
from buddy.rules.base.errors import BuddyError
from buddy.rules.tables._checks import above, in_unit_interval, invalid, one_of, raise_all, row_id
from buddy.rules.tables._conditions import When, check_when, compile_when
from buddy.rules.tables._loader import ShippedTable, TableSpec, load
from buddy.rules.tables._template import Template, check_template

__all__ = [
    "CONFIDENCE_METHODS",
    "DEFAULT_BUCKETS",
    "SCOPES",
    "TARGET_PHASES",
    "ConfidenceRule",
    "SignalFile",
    "SignalRow",
    "SignalRule",
    "SignalTable",
    "SignalThen",
    "SignalType",
    "Vocabulary",
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


@attrs.frozen
class Vocabulary:
    """What a row of one scope may test (``metrics``) and name in its templates
    (the metrics and ``names``), with the types of their values."""

    metrics: Mapping[str, type]
    names: Mapping[str, type] = attrs.field(factory=dict)


#: What a row of each scope may test, and the extra names its templates may use.
SCOPES: Mapping[str, Vocabulary] = {
    "tool": Vocabulary(
        metrics={"executions": int, "successful": int, "failed": int, "success_rate": float,
                 "failure_rate": float, "avg_execution_time": float,
                 "mean_confidence": float, "calibration_gap": float},
        names={"tool_name": str}),
    "mode": Vocabulary(
        metrics={"executions": int, "modes_seen": int, "best_mode": str, "best_rate": float,
                 "best_executions": int, "worst_mode": str, "worst_rate": float,
                 "worst_executions": int, "rate_gap": float, "fastest_mode": str,
                 "fastest_ms": float, "slowest_mode": str, "slowest_ms": float,
                 "latency_ratio": float},
        names={"tool_name": str, "other_modes": str}),
    "conflict_type": Vocabulary(
        metrics={"occurrences": int, "calls": int, "share": float, "resolved": int,
                 "tools": int},
        names={"conflict_type": str, "top_resolution": str, "tool_list": str}),
    "confidence_bucket": Vocabulary(
        metrics={"executions": int, "successful": int, "predicted": float, "actual": float,
                 "gap": float, "abs_gap": float},
        names={"bucket": str, "bucket_low": float, "bucket_high": float}),
}


# -- confidence of a signal ------------------------------------------------------------

#: How a signal's confidence is computed, and the keys each method takes besides ``cap``.
CONFIDENCE_METHODS: Mapping[str, tuple[str, ...]] = {
    "fixed": ("value",), "metric": ("metric",), "sample": ("saturate_at", "metric")}


@attrs.frozen
class ConfidenceRule:
    """How a signal's confidence (0-1) is computed.

    ``fixed``: ``value``. ``metric``: the named metric, clamped to [0, 1].
    ``sample``: ``min(1, count / saturate_at)`` of a count metric (by default
    ``executions``, or ``occurrences`` for conflict types). Then ``min(cap, .)``.

    >>> ConfidenceRule("sample", metric="executions", saturate_at=20).compute({"executions": 5})
    0.25
    >>> ConfidenceRule("fixed", value=0.5, metric="executions")
    Traceback (most recent call last):
    ...
    buddy.rules.base.errors.RuleTableError: metric: unknown key for method 'fixed'
    """

    method: str = attrs.field(validator=one_of(*CONFIDENCE_METHODS))
    value: float | None = attrs.field(default=None, validator=in_unit_interval())
    metric: str | None = None
    saturate_at: float | None = attrs.field(default=None, validator=above(0))
    cap: float = attrs.field(default=1.0, validator=in_unit_interval(open_low=True))

    def __attrs_post_init__(self) -> None:
        raise_all(list(self._errors()))

    def _errors(self) -> Iterable[BuddyError]:
        takes = CONFIDENCE_METHODS[self.method]
        for key in ("value", "metric", "saturate_at"):
            if getattr(self, key) is not None and key not in takes:
                yield invalid(key, f"unknown key for method {shown(self.method)}")
        if self.method == "fixed" and self.value is None:
            yield invalid("value", "is required")
        if self.method == "metric" and self.metric is None:
            yield invalid("metric", "is required")
        if self.method == "sample" and self.saturate_at is None:
            yield invalid("saturate_at", "is required")

    def compute(self, metrics: Mapping[str, Any]) -> float:
        """The confidence on ``metrics`` (the row's scope's), rounded to 4 places."""
        if self.method == "fixed":  # each method's keys are given: checked at construction
            raw = self.value or 0.0
        else:
            raw = float(metrics[self.metric or ""])
            if self.method == "sample":
                raw /= self.saturate_at or 1.0
        return round(min(self.cap, 1.0, max(0.0, raw)), 4)


def _confidence_problems(rule: ConfidenceRule, metrics: Mapping[str, type],
                         ) -> tuple[ConfidenceRule | None, list[Problem]]:
    """``rule`` with its metric checked against the row's scope (and defaulted), or why not."""
    if rule.method == "fixed":
        return rule, []
    wanted: tuple[type, ...] = (int,) if rule.method == "sample" else (int, float)
    metric = rule.metric
    if metric is None:  # only `sample` gets here without one
        metric = "executions" if "executions" in metrics else "occurrences"
    if metrics.get(metric) not in wanted:
        numeric = sorted(m for m, k in metrics.items() if k in wanted)
        kind = "count" if rule.method == "sample" else "numeric"
        return None, [Problem(("metric",), f"must be a {kind} metric of the row's scope: "
                              f"{', '.join(numeric)} (got {shown(metric)})")]
    return attrs.evolve(rule, metric=metric), []


# -- the signal table ----------------------------------------------------------------------

def _buckets(instance: Any, attribute: attrs.Attribute[Any], edges: tuple[float, ...]) -> None:
    name = attribute.name
    if not 2 <= len(edges) <= _MAX_EDGES:
        raise invalid(name, f"must hold 2 to {_MAX_EDGES} edges (got {len(edges)})")
    if edges[0] != 0.0 or edges[-1] != 1.0:
        raise invalid(name, f"must run from 0.0 to 1.0 (got {edges[0]:g} to {edges[-1]:g})")
    for i in range(1, len(edges)):
        if edges[i] <= edges[i - 1]:
            raise invalid(f"{name}.{i}", f"must be above the edge before it "
                          f"({edges[i]:g} <= {edges[i - 1]:g})")


@attrs.frozen
class SignalFile:
    """The top level of ``signals.toml`` besides its rows: the confidence-bucket edges."""

    confidence_buckets: tuple[float, ...] = attrs.field(default=DEFAULT_BUCKETS,
                                                        validator=_buckets)


@attrs.frozen
class SignalThen:
    """What a signal row emits: its target phase, insight and action templates, confidence."""

    target_phase: int = attrs.field(validator=one_of(*TARGET_PHASES))
    insight: str
    recommended_action: str
    confidence: ConfidenceRule


@attrs.frozen
class SignalRow:
    """A signal row as written: emit ``signal`` for each item of ``scope`` ``when`` holds on."""

    id: str = attrs.field(validator=row_id)
    signal: SignalType
    scope: str = attrs.field(validator=one_of(*SCOPES))
    when: When
    then: SignalThen
    description: str = ""


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


def _compile(row: SignalRow) -> tuple[SignalRule | None, list[Problem]]:
    scope = SCOPES[row.scope]
    names = {**scope.metrics, **scope.names}
    when, problems = check_when(row.when, scope.metrics, at=("when",), nonempty=True)
    insight, found = check_template(row.then.insight, names, at=("then", "insight"))
    problems += found
    action, found = check_template(row.then.recommended_action, names,
                                   at=("then", "recommended_action"))
    problems += found
    confidence, found = _confidence_problems(row.then.confidence, scope.metrics)
    problems += [Problem(("then", "confidence", *p.path), p.message) for p in found]
    if when is None or insight is None or action is None or confidence is None:
        return None, problems
    getters = {m: operator.itemgetter(m) for m in scope.metrics}
    return SignalRule(row.id, row.signal, row.scope, row.then.target_phase, insight, action,
                      confidence, when, compile_when(when, getters)), []


SPEC: TableSpec[SignalFile, SignalRow, SignalRule] = TableSpec(
    "signals", SignalRow, compile=_compile, file=SignalFile)


@attrs.frozen
class SignalTable(ShippedTable):
    """The signal rows (``rules/signals.toml``) and the confidence-bucket edges.

    >>> table = SignalTable.default()
    >>> table.buckets
    (0.0, 0.5, 0.7, 0.85, 1.0)
    >>> sorted({r.signal.value for r in table.rules}) == sorted(s.value for s in SignalType)
    True
    """

    FILE: ClassVar[str] = "signals.toml"

    rules: tuple[SignalRule, ...]
    buckets: tuple[float, ...] = DEFAULT_BUCKETS
    source: str = "<memory>"
    digest: str = ""

    @classmethod
    def from_toml(cls, path: Path | str | None = None, *, text: str | None = None,
                  source: str | None = None) -> SignalTable:
        """Load and validate; every problem is reported at once, naming file, line and field.

        Raises :class:`~buddy.rules.base.errors.RuleTableError`.
        """
        loaded = load(SPEC, path, text=text, source=source)
        return cls(loaded.rows, buckets=loaded.file.confidence_buckets, source=loaded.source,
                   digest=loaded.digest)

    def bucket_labels(self) -> tuple[str, ...]:
        """``"0.5-0.7"`` per bucket."""
        e = self.buckets
        return tuple(f"{e[i]:g}-{e[i + 1]:g}" for i in range(len(e) - 1))
