"""The feedback loop: learning signals for phases 16 and 19, from execution outcomes.

The loop counts :class:`~buddy.engine._plans.ExecutionOutcome` values
(:meth:`FeedbackLoop.record`) and evaluates the rows of ``rules/signals.toml``
(:class:`SignalTable`) on the metrics of each item of the row's scope:

``tool``
    one item per tool that executed: ``executions``, ``successful``,
    ``failed``, ``success_rate`` and ``failure_rate`` (0-1),
    ``avg_execution_time`` (ms), ``mean_confidence`` and ``calibration_gap``
    (mean confidence - success rate). Template names: ``tool_name``.
``mode``
    one item per tool, comparing the modes it executed in: ``executions``,
    ``modes_seen``, ``best_mode``/``best_rate``/``best_executions`` (highest
    success rate; ties go to the safer mode), ``worst_mode``/``worst_rate``/
    ``worst_executions`` (lowest; ties go to the riskier mode), ``rate_gap``
    (best - worst), ``fastest_mode``/``fastest_ms``, ``slowest_mode``/
    ``slowest_ms`` and ``latency_ratio`` (slowest / fastest, durations under
    1 ms counted as 1 ms). Template names: ``tool_name``, ``other_modes``.
``conflict_type``
    one item per conflict type seen: ``occurrences`` (calls that took part in
    a conflict of that type), ``calls`` (every call recorded), ``share``
    (occurrences / calls), ``resolved`` (those with a resolution), ``tools``
    (distinct tools involved). Template names: ``conflict_type``,
    ``top_resolution`` (the most used, ``none`` if none), ``tool_list``.
``confidence_bucket``
    one item per bucket of predicted confidence (edges from the table) holding
    executions: ``executions``, ``successful``, ``predicted`` (mean confidence),
    ``actual`` (success rate), ``gap`` (predicted - actual: > 0 is
    overconfident) and ``abs_gap``. Template names: ``bucket``,
    ``bucket_low``, ``bucket_high``.

Only calls that executed (``outcome.mode`` not None) count in the ``tool``,
``mode`` and ``confidence_bucket`` scopes; a call aborted by conflict
resolution counts for its conflicts. A matching row gives one
:class:`LearningSignal`; its confidence is computed as the row says
(``fixed``, ``metric`` or ``sample``, optionally capped). Signals come out
sorted by signal type, scope and scope key, so the same outcomes give the same
``learning_signals.jsonl``. To change what is emitted, edit the table.
"""

from __future__ import annotations

import bisect
import enum
import math
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import attrs

from buddy.engine._monitor import NS_PER_MS, UNIT
from buddy.engine._plans import ExecutionOutcome
from buddy.rules._rowtable import Field, Kinds, RuleTable, Schema, Scope, TableFile, Template
from buddy.rules._table import Problems, When

__all__ = [
    "DEFAULT_BUCKETS",
    "SCOPES",
    "ConfidenceRule",
    "FeedbackLoop",
    "LearningSignal",
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
#: Modes in order of risk; modes outside this list sort after it by name.
_MODE_ORDER = ("MOCK", "DRY_RUN", "LIVE")

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


# -- signals ----------------------------------------------------------------------------

@attrs.frozen
class LearningSignal:
    """One signal: what was seen (``insight``), what to do, for which phase, how sure.

    ``scope_key`` is the tool, conflict type or bucket the signal is about;
    ``tool_name`` is the tool, or ``"*"`` outside the tool and mode scopes.
    ``rule`` is the id of the row that emitted it; ``evidence`` the scope's metrics.
    """

    signal_type: SignalType
    tool_name: str
    insight: str
    recommended_action: str
    confidence: float
    target_phase: int
    scope: str
    scope_key: str
    rule: str
    evidence: Mapping[str, Any] = attrs.field(factory=dict, eq=False)

    def to_dict(self) -> dict[str, Any]:
        """One line of ``learning_signals.jsonl``."""
        return {"signal_type": self.signal_type.value, "tool_name": self.tool_name,
                "insight": self.insight, "recommended_action": self.recommended_action,
                "confidence": self.confidence, "target_phase": self.target_phase,
                "scope": self.scope, "scope_key": self.scope_key, "rule": self.rule,
                "evidence": dict(self.evidence)}


class _ToolTally:
    __slots__ = ("runs", "ok", "duration_ms", "confidence", "modes")

    def __init__(self) -> None:
        self.runs = self.ok = 0
        self.duration_ms = self.confidence = 0  # integer sums (see buddy.engine._monitor.UNIT)
        self.modes: dict[str, list[int]] = {}  # mode -> [runs, ok, duration in ns]


class _ConflictTally:
    __slots__ = ("occurrences", "resolutions", "tools")

    def __init__(self) -> None:
        self.occurrences = 0
        self.resolutions: Counter[str] = Counter()
        self.tools: set[str] = set()


# One evaluated scope item: (sort key, scope key, tool name, metrics, template values).
_Item = tuple[Any, str, str, dict[str, Any], dict[str, Any]]


def _mode_rank(mode: str) -> tuple[int, str]:
    return (_MODE_ORDER.index(mode), "") if mode in _MODE_ORDER else (len(_MODE_ORDER), mode)


def _evidence(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()}


class FeedbackLoop:
    """Learning signals from outcomes, as the signal table says.

    Parameters
    ----------
    signals:
        The signal table; the shipped one by default.

    Examples
    --------
    >>> from buddy.engine._plans import ExecutionOutcome
    >>> loop = FeedbackLoop()
    >>> for i in range(10):
    ...     loop.record(ExecutionOutcome(f"c{i}", "p1", "a1", "vision_inspect", "LOW", 0.95,
    ...                                  "MOCK", "MOCK", ok=True, duration_ms=100.0))
    >>> [(s["signal_type"], s["tool_name"], s["confidence"]) for s in loop.export_signals()]
    [('TOOL_RELIABILITY', 'vision_inspect', 1.0)]
    """

    def __init__(self, signals: SignalTable | None = None) -> None:
        self.signal_table = signals if signals is not None else SignalTable.default()
        self._edges = self.signal_table.buckets
        self._labels = self.signal_table.bucket_labels()
        self._calls = 0
        self._tools: dict[str, _ToolTally] = {}
        self._conflicts: dict[str, _ConflictTally] = {}
        self._buckets = [[0, 0, 0] for _ in self._labels]  # [runs, ok, confidence units]
        self._scopes: dict[str, Callable[[], list[_Item]]] = {
            "tool": self._tool_items, "mode": self._mode_items,
            "conflict_type": self._conflict_type_items,
            "confidence_bucket": self._confidence_bucket_items}
        assert set(self._scopes) == set(SCOPES)

    # -- recording -------------------------------------------------------------------
    def record(self, outcome: ExecutionOutcome) -> None:
        """Count one outcome."""
        self._calls += 1
        for ctype in outcome.conflicts:
            tally = self._conflicts.get(ctype)
            if tally is None:
                tally = self._conflicts[ctype] = _ConflictTally()
            tally.occurrences += 1
            tally.tools.add(outcome.tool)
            if outcome.resolution is not None:
                tally.resolutions[outcome.resolution] += 1
        if outcome.mode is None:
            return
        ok = bool(outcome.ok)
        duration = round(outcome.duration_ms * NS_PER_MS)
        confidence = round(outcome.confidence * UNIT)
        tool = self._tools.get(outcome.tool)
        if tool is None:
            tool = self._tools[outcome.tool] = _ToolTally()
        tool.runs += 1
        tool.ok += ok
        tool.duration_ms += duration
        tool.confidence += confidence
        mode = tool.modes.get(outcome.mode)
        if mode is None:
            mode = tool.modes[outcome.mode] = [0, 0, 0]
        mode[0] += 1
        mode[1] += ok
        mode[2] += duration
        bucket = self._buckets[self.bucket_of(outcome.confidence)]
        bucket[0] += 1
        bucket[1] += ok
        bucket[2] += confidence

    def bucket_of(self, confidence: float) -> int:
        """Index of the bucket holding ``confidence`` (the last bucket includes 1.0)."""
        index = bisect.bisect_right(self._edges, confidence) - 1
        return min(max(index, 0), len(self._labels) - 1)

    # -- metrics -----------------------------------------------------------------------
    def tool_metrics(self) -> dict[str, dict[str, Any]]:
        """Per tool that executed: totals, success rate, mean time (ms) and a by-mode breakdown."""
        out = {}
        for name in sorted(self._tools):
            t = self._tools[name]
            by_mode = {}
            for mode in sorted(t.modes, key=_mode_rank):
                runs, ok, duration = t.modes[mode]
                by_mode[mode] = {"count": runs, "success_count": ok, "success_rate": ok / runs,
                                 "avg_execution_time": duration / (runs * NS_PER_MS)}
            out[name] = {"total_executions": t.runs, "successful": t.ok,
                         "failed": t.runs - t.ok, "success_rate": t.ok / t.runs,
                         "avg_execution_time": t.duration_ms / (t.runs * NS_PER_MS),
                         "by_mode": by_mode}
        return out

    def calibration(self) -> list[dict[str, Any]]:
        """Per confidence bucket holding executions: predicted (mean confidence) vs actual."""
        out = []
        for i, (runs, ok, confidence) in enumerate(self._buckets):
            if runs:
                out.append({"bucket": self._labels[i], "low": self._edges[i],
                            "high": self._edges[i + 1], "executions": runs,
                            "predicted": confidence / (runs * UNIT), "actual": ok / runs,
                            "gap": (confidence - ok * UNIT) / (runs * UNIT)})
        return out

    def scope_items(self, scope: str) -> list[_Item]:
        """The items of ``scope`` with their metrics (see the module docstring)."""
        return self._scopes[scope]()

    def _tool_items(self) -> list[_Item]:
        items = []
        for name in sorted(self._tools):
            t = self._tools[name]
            metrics = {"executions": t.runs, "successful": t.ok, "failed": t.runs - t.ok,
                       "success_rate": t.ok / t.runs, "failure_rate": (t.runs - t.ok) / t.runs,
                       "avg_execution_time": t.duration_ms / (t.runs * NS_PER_MS),
                       "mean_confidence": t.confidence / (t.runs * UNIT),
                       "calibration_gap": (t.confidence - t.ok * UNIT) / (t.runs * UNIT)}
            items.append((name, name, name, metrics, {**metrics, "tool_name": name}))
        return items

    def _mode_items(self) -> list[_Item]:
        items = []
        for name in sorted(self._tools):
            t = self._tools[name]
            modes = []  # (mode, order, runs, rate, avg ms)
            for i, mode in enumerate(sorted(t.modes, key=_mode_rank)):
                runs, ok, duration = t.modes[mode]
                modes.append((mode, i, runs, ok / runs, duration / (runs * NS_PER_MS)))
            best = max(modes, key=lambda m: (m[3], -m[1]))
            worst = min(modes, key=lambda m: (m[3], -m[1]))
            fastest = min(modes, key=lambda m: (m[4], m[1]))
            slowest = max(modes, key=lambda m: (m[4], -m[1]))
            metrics = {"executions": t.runs, "modes_seen": len(modes),
                       "best_mode": best[0], "best_rate": best[3], "best_executions": best[2],
                       "worst_mode": worst[0], "worst_rate": worst[3],
                       "worst_executions": worst[2], "rate_gap": best[3] - worst[3],
                       "fastest_mode": fastest[0], "fastest_ms": fastest[4],
                       "slowest_mode": slowest[0], "slowest_ms": slowest[4],
                       "latency_ratio": slowest[4] / max(fastest[4], 1.0)}
            others = ", ".join(m[0] for m in modes if m[0] != best[0])
            items.append((name, name, name, metrics,
                          {**metrics, "tool_name": name, "other_modes": others}))
        return items

    def _conflict_type_items(self) -> list[_Item]:
        items = []
        for ctype in sorted(self._conflicts):
            c = self._conflicts[ctype]
            top = min(c.resolutions.items(), key=lambda kv: (-kv[1], kv[0]))[0] \
                if c.resolutions else "none"
            metrics = {"occurrences": c.occurrences, "calls": self._calls,
                       "share": c.occurrences / self._calls,
                       "resolved": sum(c.resolutions.values()), "tools": len(c.tools)}
            names = {**metrics, "conflict_type": ctype, "top_resolution": top,
                     "tool_list": ", ".join(sorted(c.tools))}
            items.append((ctype, ctype, "*", metrics, names))
        return items

    def _confidence_bucket_items(self) -> list[_Item]:
        items = []
        for i, (runs, ok, confidence) in enumerate(self._buckets):
            if not runs:
                continue
            metrics = {"executions": runs, "successful": ok,
                       "predicted": confidence / (runs * UNIT), "actual": ok / runs,
                       "gap": (confidence - ok * UNIT) / (runs * UNIT),
                       "abs_gap": abs(confidence - ok * UNIT) / (runs * UNIT)}
            names = {**metrics, "bucket": self._labels[i], "bucket_low": self._edges[i],
                     "bucket_high": self._edges[i + 1]}
            items.append((i, self._labels[i], "*", metrics, names))
        return items

    # -- analysis --------------------------------------------------------------------
    def analyze(self, *signal_types: SignalType) -> list[LearningSignal]:
        """Every signal the table's rows (of ``signal_types``, or all) give now.

        Sorted by signal type, scope and scope key (then table order). Pure:
        calling it twice gives the same list.
        """
        wanted = set(signal_types) or set(SignalType)
        scopes: dict[str, list[_Item]] = {}
        found = []
        for index, rule in enumerate(self.signal_table.rules):
            if rule.signal not in wanted:
                continue
            if rule.scope not in scopes:
                scopes[rule.scope] = self.scope_items(rule.scope)
            for order, key, tool, metrics, names in scopes[rule.scope]:
                if not rule.holds(metrics):
                    continue
                signal = LearningSignal(
                    rule.signal, tool, rule.insight.render(names),
                    rule.recommended_action.render(names), rule.confidence.compute(metrics),
                    rule.target_phase, rule.scope, key, rule.id, _evidence(metrics))
                found.append(((rule.signal.value, rule.scope, order, index), signal))
        found.sort(key=lambda pair: pair[0])
        return [signal for _, signal in found]

    def analyze_tool_reliability(self) -> list[LearningSignal]:
        """TOOL_RELIABILITY signals (high and low success rates, per the table)."""
        return self.analyze(SignalType.TOOL_RELIABILITY)

    def analyze_execution_modes(self) -> list[LearningSignal]:
        """EXECUTION_MODE_ANALYSIS and TOOL_PERFORMANCE signals (modes and times compared)."""
        return self.analyze(SignalType.EXECUTION_MODE_ANALYSIS, SignalType.TOOL_PERFORMANCE)

    def detect_conflict_patterns(self) -> list[LearningSignal]:
        """CONFLICT_PATTERN signals (recurring conflict types)."""
        return self.analyze(SignalType.CONFLICT_PATTERN)

    def analyze_confidence_calibration(self) -> list[LearningSignal]:
        """APPROVAL_MISMATCH signals (predicted confidence vs actual success, per bucket)."""
        return self.analyze(SignalType.APPROVAL_MISMATCH)

    def export_signals(self) -> list[dict[str, Any]]:
        """Every signal as a ``learning_signals.jsonl`` record, in :meth:`analyze` order."""
        return [signal.to_dict() for signal in self.analyze()]

    def signals_for_phase(self, phase: int) -> list[dict[str, Any]]:
        """The exported signals that target ``phase``."""
        return [s for s in self.export_signals() if s["target_phase"] == phase]
