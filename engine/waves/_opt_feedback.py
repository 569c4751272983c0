"""The optimization feedback loop (Phase 19): outcomes, feedback events, learning signals and
the learned heuristic weights.

Per wave, from its :class:`ScheduleComparison` (values as the monitor derives
them, :func:`~buddy.engine.waves._opt_monitor.comparison_values`):

- :meth:`OptimizationFeedbackLoop.evaluate_schedule_outcome`: the plan against
  the outcome, in numbers;
- :meth:`~OptimizationFeedbackLoop.update_heuristic_weights`: one Hedge step of
  ``rules/heuristics.toml`` on the balanced objective's weights (success,
  throughput, confidence), each term's prediction error (:func:`heuristic_errors`)
  lowering its weight by ``exp(-learning_rate * error)``, the weights kept in
  [min_weight, max_weight] and summing to 1;
- :meth:`~OptimizationFeedbackLoop.generate_feedback_events`: ``FB_001``, ... one
  of each type of ``rules/optimization_signals.toml``'s ``[feedback]`` per wave,
  its status the worst of its metrics', its evidence naming their numbers;
- :meth:`~OptimizationFeedbackLoop.generate_learning_signals`: ``P19_LS_001``, ...
  the rows of ``rules/optimization_signals.toml`` that hold on the wave.

:meth:`~OptimizationFeedbackLoop.optimizer_table` hands the learned weights to
the optimizer's balanced objective. Times are the injected clock's, as ISO 8601.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from buddy.engine.orchestration._monitor import iso
from buddy.engine.waves._opt_monitor import comparison_values
from buddy.engine.waves._opt_records import (
    FeedbackEvent,
    HeuristicWeights,
    OptimizationMetric,
    OptimizationSignal,
    ScheduleComparison,
    SchedulingAnomaly,
)
from buddy.rules.base.errors import InputError
from buddy.rules.tables._checks import fraction
from buddy.rules.tables._optimization import (
    STATUSES,
    HeuristicsTable,
    OptimizationSignalTable,
)
from buddy.rules.tables._optimizer import OptimizerTable

__all__ = ["OptimizationFeedbackLoop", "evaluate_strategy_effectiveness", "heuristic_errors"]

#: The anomaly type whose agents ``underperforming_agents`` counts.
UNDERPERFORMANCE = "agent_underperformance"


def heuristic_errors(c: ScheduleComparison) -> dict[str, float]:
    """Each balanced term's prediction error in [0, 1] (``rules/heuristics.toml``).

    ``success``: |planned_success_rate - actual_success_rate|; ``throughput``:
    min(1, |1 - actual / planned throughput|), 1 when planned is 0;
    ``confidence``: min(1, |planned_confidence_delta - actual_confidence_delta|).
    Each clamped to [0, 1].

    >>> heuristic_errors(ScheduleComparison(1, 0.9, 0.8, 4.0, 3.0, 0.05, 0.25, 0.9))
    {'success': 0.1, 'throughput': 0.25, 'confidence': 0.2}
    """
    planned = c.planned_throughput
    throughput = abs(1.0 - c.actual_throughput / planned) if planned > 0 else 1.0
    raw = {"success": abs(c.planned_success_rate - c.actual_success_rate),
           "throughput": throughput,
           "confidence": abs(c.planned_confidence_delta - c.actual_confidence_delta)}
    return {k: round(min(1.0, max(0.0, v)), 9) if v == v else 1.0 for k, v in raw.items()}


def evaluate_strategy_effectiveness(comparisons: Iterable[ScheduleComparison],
                                    ) -> dict[str, dict[str, Any]]:
    """Per strategy (first seen first): its waves, mean accuracy and actual success, the
    success trend and whether its objective improved.

    ``trend`` is the last wave's actual success minus the first's;
    ``objective_improved`` whether the last wave's ``planned_objective`` is above
    the first's (False with one wave). A comparison without a strategy counts
    under ``""``.

    >>> cs = [ScheduleComparison(1, 0.9, 0.8, 1, 1, 0, 0, 0.9, strategy="balanced",
    ...                          planned_objective=0.70),
    ...       ScheduleComparison(2, 0.9, 0.9, 1, 1, 0, 0, 1.0, strategy="balanced",
    ...                          planned_objective=0.75)]
    >>> evaluate_strategy_effectiveness(cs)  # doctest: +NORMALIZE_WHITESPACE
    {'balanced': {'waves': [1, 2], 'mean_accuracy': 0.95, 'mean_actual_success': 0.85,
                  'trend': 0.1, 'objective_improved': True}}
    """
    by: dict[str, list[ScheduleComparison]] = {}
    for c in comparisons:
        by.setdefault(c.strategy, []).append(c)
    return {strategy: {
        "waves": [c.wave for c in cs],
        "mean_accuracy": round(math.fsum(c.accuracy_score for c in cs) / len(cs), 6),
        "mean_actual_success": round(math.fsum(c.actual_success_rate for c in cs) / len(cs), 6),
        "trend": round(cs[-1].actual_success_rate - cs[0].actual_success_rate, 6),
        "objective_improved": cs[-1].planned_objective > cs[0].planned_objective}
        for strategy, cs in by.items()}


def _worst(statuses: Iterable[str]) -> str:
    return max(statuses, key=STATUSES.index, default="normal")


class OptimizationFeedbackLoop:
    """Feedback events, learning signals and learned weights, wave after wave.

    ``weights`` are the current learned weights (``rules/heuristics.toml``'s at
    the start); ``weight_history`` holds them after each update, the start first.

    Examples
    --------
    >>> loop = OptimizationFeedbackLoop(OptimizationSignalTable.default(),
    ...                                 HeuristicsTable.default(), clock=lambda: 0.0)
    >>> c = ScheduleComparison(1, 0.92, 0.917, 42.0, 40.5, 0.05, 0.048, 0.997,
    ...                        strategy="maximize_success", tasks=12, schedule_adherence=0.94)
    >>> loop.update_heuristic_weights(c).weights["success"] > 0.5
    True
    >>> [(s.signal_id, s.type, s.target) for s in loop.generate_learning_signals(c)]
    [('P19_LS_001', 'strategy_validation', 'coordination')]
    """

    def __init__(self, signals: OptimizationSignalTable, heuristics: HeuristicsTable, *,
                 clock: Callable[[], float]) -> None:
        self.signals = signals
        self.heuristics = heuristics
        self.clock = clock
        self.weights: dict[str, float] = dict(heuristics.weights)
        self.weight_history: list[dict[str, float]] = [dict(self.weights)]
        #: each wave's comparison, in order (a wave seen again is not added twice)
        self.comparisons: list[ScheduleComparison] = []
        self._changes: dict[int, dict[str, float]] = {}  # wave -> weight changes
        self._feedback_count = 0
        self._signal_count = 0

    def _see(self, c: ScheduleComparison) -> None:
        if not any(seen.wave == c.wave for seen in self.comparisons):
            self.comparisons.append(c)

    def evaluate_schedule_outcome(self, comparison: ScheduleComparison) -> dict[str, Any]:
        """The wave's plan against its outcome: every derived value (rounded to 6), each
        term's prediction error, and the success against the first wave's."""
        self._see(comparison)
        values = comparison_values(comparison)
        first = self.comparisons[0].actual_success_rate
        return {"wave": comparison.wave, "strategy": comparison.strategy,
                **{k: round(v, 6) for k, v in values.items()},
                "errors": heuristic_errors(comparison),
                "success_vs_first": round(comparison.actual_success_rate - first, 6)}

    def update_heuristic_weights(self, comparison: ScheduleComparison) -> HeuristicWeights:
        """One Hedge step on the wave's prediction errors (``rules/heuristics.toml``).

        Raises
        ------
        InputError
            When the wave's weights were already updated (one step per wave).
        """
        self._see(comparison)
        if comparison.wave in self._changes:
            raise InputError(f"wave {comparison.wave}: heuristic weights already updated")
        before = self.weights
        after = self.heuristics.update(before, heuristic_errors(comparison))
        self._changes[comparison.wave] = {k: after[k] - before[k] for k in after}
        self.weights = after
        self.weight_history.append(dict(after))
        return HeuristicWeights(dict(after), iso(self.clock()))

    def generate_feedback_events(self, comparison: ScheduleComparison,
                                 metrics: Sequence[OptimizationMetric]) -> list[FeedbackEvent]:
        """One event per ``[feedback]`` type (file order): its status the worst of its
        metrics' statuses, its text that status's, its evidence one line per metric.

        Raises
        ------
        InputError
            When ``metrics`` lacks a metric a feedback type reads.
        """
        self._see(comparison)
        by_name = {m.metric_name: m for m in metrics}
        values = self._values(comparison, ())
        names = self._names(comparison, ())
        rendered = {**values, **names}
        at = iso(self.clock())
        out = []
        for rule in self.signals.feedback.values():
            try:
                read = [by_name[name] for name in rule.metrics]
            except KeyError as exc:
                raise InputError(f"feedback {rule.type}: no metric {exc.args[0]!r} "
                                 f"(given: {', '.join(by_name) or 'none'})") from None
            status = _worst(m.status for m in read)
            description, recommendation = rule.texts[status]
            evidence = tuple(
                f"{m.metric_name} {m.value:.3f} {m.status} (target {m.target_value:g}, "
                f"min {m.threshold_min:g})" for m in read)
            self._feedback_count += 1
            out.append(FeedbackEvent(f"FB_{self._feedback_count:03d}", rule.type,
                                     fraction(comparison.accuracy_score),
                                     description.render(rendered),
                                     recommendation.render(rendered), evidence, at,
                                     comparison.wave))
        return out

    def generate_learning_signals(self, comparison: ScheduleComparison,
                                  anomalies: Sequence[SchedulingAnomaly] = (),
                                  ) -> list[OptimizationSignal]:
        """The signal rows that hold on the wave (file order), numbered ``P19_LS_001``, ...

        ``anomalies``: the wave's (for ``underperforming_agents``); the weight change
        is this wave's update, when :meth:`update_heuristic_weights` ran for it first.
        """
        self._see(comparison)
        values = self._values(comparison, anomalies)
        names = self._names(comparison, anomalies)
        at = iso(self.clock())
        out = []
        for found in self.signals.evaluate(values, names):
            self._signal_count += 1
            out.append(OptimizationSignal(f"P19_LS_{self._signal_count:03d}", found.signal_type,
                                          found.confidence, found.description,
                                          found.recommendation, comparison.wave, found.target,
                                          at, found.rule))
        return out

    def evaluate_strategy_effectiveness(self) -> dict[str, dict[str, Any]]:
        """:func:`evaluate_strategy_effectiveness` over the waves seen."""
        return evaluate_strategy_effectiveness(self.comparisons)

    def optimizer_table(self, base: OptimizerTable) -> OptimizerTable:
        """``base`` with the learned weights, for the optimizer's balanced objective."""
        return base.with_weights(self.weights)

    def _values(self, c: ScheduleComparison, anomalies: Sequence[SchedulingAnomaly],
                ) -> dict[str, Any]:
        changes = self._changes.get(c.wave, {})
        first = self.comparisons[0].actual_success_rate
        return {**comparison_values(c),
                "success_vs_first": round(c.actual_success_rate - first, 9),
                "max_weight_change": round(max(map(abs, changes.values()), default=0.0), 9),
                "underperforming_agents": len(_underperformers(anomalies)),
                "anomalies": len(anomalies)}

    def _names(self, c: ScheduleComparison, anomalies: Sequence[SchedulingAnomaly],
               ) -> dict[str, Any]:
        changes = self._changes.get(c.wave, {})
        rising = max(changes, key=lambda k: changes[k], default=None)
        falling = min(changes, key=lambda k: changes[k], default=None)
        return {"wave": c.wave, "strategy": c.strategy or "unnamed",
                "rising_heuristic": rising if rising and changes[rising] > 0 else "none",
                "falling_heuristic": falling if falling and changes[falling] < 0 else "none",
                "weight_list": ", ".join(f"{k} {v:.3f}" for k, v in self.weights.items()),
                "agent_list": ", ".join(_underperformers(anomalies)) or "none"}


def _underperformers(anomalies: Sequence[SchedulingAnomaly]) -> list[str]:
    seen: dict[str, None] = {}
    for a in anomalies:
        if a.anomaly_type == UNDERPERFORMANCE:
            seen.update(dict.fromkeys(a.affected_agents))
    return list(seen)
