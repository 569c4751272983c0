"""The feedback loop: learning signals for phases 16 and 19, from execution outcomes.

The loop counts :class:`~buddy.engine.orchestration._plans.ExecutionOutcome` values
(:meth:`FeedbackLoop.record`) and conflicts with their resolutions
(:meth:`FeedbackLoop.record_conflicts`), and evaluates the rows of ``rules/signals.toml``
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
    one item per conflict type recorded (:meth:`FeedbackLoop.record_conflicts`):
    ``occurrences`` (distinct conflicts of that type, by id: the count
    ``tool_conflicts.json`` gives under ``by_type``), ``calls`` (every outcome
    recorded), ``share`` (occurrences / calls), ``resolved`` (those conflicts
    that got a resolution), ``tools`` (distinct tools of the calls they
    changed). Template names: ``conflict_type``, ``top_resolution`` (the
    strategy used most on them, ties by name; ``none`` if none), ``tool_list``.
``confidence_bucket``
    one item per bucket of predicted confidence (edges from the table) holding
    executions: ``executions``, ``successful``, ``predicted`` (mean confidence),
    ``actual`` (success rate), ``gap`` (predicted - actual: > 0 is
    overconfident) and ``abs_gap``. Template names: ``bucket``,
    ``bucket_low``, ``bucket_high``.

Only calls that executed (``outcome.mode`` not None) count in the ``tool``,
``mode`` and ``confidence_bucket`` scopes; every outcome counts in ``calls``.
Modes are :class:`~buddy.rules.base.ExecutionMode` values, ordered by their
``rank``; metrics and template names hold their names. A matching row gives one
:class:`LearningSignal`; its confidence is computed as the row says
(``fixed``, ``metric`` or ``sample``, optionally capped). Signals come out
sorted by signal type, scope and scope key, so the same outcomes give the same
``learning_signals.jsonl``. To change what is emitted, edit the table.
"""

from __future__ import annotations

import bisect
import operator
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from buddy.engine.orchestration._conflict_records import Conflict, Resolution
from buddy.engine.orchestration._monitor import NS_PER_MS, UNIT
from buddy.engine.orchestration._plans import ExecutionOutcome
from buddy.rules.base._values import ExecutionMode
from buddy.rules.tables._conflicts import ConflictType, ResolutionStrategy
from buddy.rules.tables._signals import SCOPES, SignalTable, SignalType

__all__ = ["FeedbackLoop", "LearningSignal"]


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
        self.duration_ms = self.confidence = 0  # integer sums (see _monitor.UNIT)
        self.modes: dict[ExecutionMode, list[int]] = {}  # mode -> [runs, ok, duration in ns]


class _ConflictTally:
    __slots__ = ("ids", "strategies", "tools")

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.strategies: dict[str, ResolutionStrategy] = {}  # conflict id -> its resolution
        self.tools: set[str] = set()


_BY_RANK = operator.attrgetter("rank")  # modes, safest first

# One evaluated scope item: (sort key, scope key, tool name, metrics, template values).
_Item = tuple[Any, str, str, dict[str, Any], dict[str, Any]]


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
    >>> from buddy.engine.orchestration._plans import ExecutionOutcome
    >>> mock = ExecutionMode.MOCK
    >>> loop = FeedbackLoop()
    >>> for i in range(10):
    ...     loop.record(ExecutionOutcome(f"c{i}", "p1", "a1", "vision_inspect", "LOW", 0.95,
    ...                                  mock, mock, ok=True, duration_ms=100.0))
    >>> [(s["signal_type"], s["tool_name"], s["confidence"]) for s in loop.export_signals()]
    [('TOOL_RELIABILITY', 'vision_inspect', 1.0)]
    """

    def __init__(self, signals: SignalTable | None = None) -> None:
        self.signal_table = signals if signals is not None else SignalTable.default()
        self._edges = self.signal_table.buckets
        self._labels = self.signal_table.bucket_labels()
        self._calls = 0
        self._tools: dict[str, _ToolTally] = {}
        self._conflicts: dict[ConflictType, _ConflictTally] = {}
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

    def record_conflicts(self, conflicts: Iterable[Conflict],
                         resolutions: Iterable[Resolution] = ()) -> None:
        """Count conflicts, each once however often it is given (by id), and their
        resolutions (a resolution of a conflict not counted is ignored)."""
        for conflict in conflicts:
            tally = self._conflicts.get(conflict.type)
            if tally is None:
                tally = self._conflicts[conflict.type] = _ConflictTally()
            tally.ids.add(conflict.id)
            tally.tools.add(conflict.tool)
        for resolution in resolutions:
            tally = self._conflicts.get(resolution.type)
            if tally is not None and resolution.conflict in tally.ids:
                tally.strategies[resolution.conflict] = resolution.strategy

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
            for mode in sorted(t.modes, key=_BY_RANK):
                runs, ok, duration = t.modes[mode]
                by_mode[mode.value] = {"count": runs, "success_count": ok,
                                       "success_rate": ok / runs,
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
            modes = []  # (mode, runs, rate, avg ms), safest first
            for mode in sorted(t.modes, key=_BY_RANK):
                runs, ok, duration = t.modes[mode]
                modes.append((mode, runs, ok / runs, duration / (runs * NS_PER_MS)))
            best = max(modes, key=lambda m: (m[2], -m[0].rank))
            worst = min(modes, key=lambda m: (m[2], -m[0].rank))
            fastest = min(modes, key=lambda m: (m[3], m[0].rank))
            slowest = max(modes, key=lambda m: (m[3], -m[0].rank))
            metrics = {"executions": t.runs, "modes_seen": len(modes),
                       "best_mode": best[0].value, "best_rate": best[2],
                       "best_executions": best[1], "worst_mode": worst[0].value,
                       "worst_rate": worst[2], "worst_executions": worst[1],
                       "rate_gap": best[2] - worst[2], "fastest_mode": fastest[0].value,
                       "fastest_ms": fastest[3], "slowest_mode": slowest[0].value,
                       "slowest_ms": slowest[3],
                       "latency_ratio": slowest[3] / max(fastest[3], 1.0)}
            others = ", ".join(m[0].value for m in modes if m[0] is not best[0])
            items.append((name, name, name, metrics,
                          {**metrics, "tool_name": name, "other_modes": others}))
        return items

    def _conflict_type_items(self) -> list[_Item]:
        items = []
        for ctype in sorted(self._conflicts, key=lambda t: t.value):
            c = self._conflicts[ctype]
            used = Counter(s.value for s in c.strategies.values())
            top = min(used.items(), key=lambda kv: (-kv[1], kv[0]))[0] if used else "none"
            occurrences = len(c.ids)
            metrics = {"occurrences": occurrences, "calls": self._calls,
                       "share": occurrences / self._calls if self._calls else 0.0,
                       "resolved": len(c.strategies), "tools": len(c.tools)}
            names = {**metrics, "conflict_type": ctype.value, "top_resolution": top,
                     "tool_list": ", ".join(sorted(c.tools))}
            items.append((ctype.value, ctype.value, "*", metrics, names))
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
