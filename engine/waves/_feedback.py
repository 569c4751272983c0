"""The wave feedback loop (Phase 21's feedback loop): outcomes, learning signals, routing.

Each task's prediction is compared with what happened
(:class:`ExecutionOutcome`: error margin ``|predicted - actual|``); the rows of
``rules/wave_signals.toml`` turn each wave's per-agent and per-wave metrics
into :class:`LearningSignal` values (agent_performance and
multi_agent_coordination for coordination, Phase 18; heuristic_feedback for
heuristics, Phase 16; prediction_validation for prediction, Phase 20; a
signal's confidence is ``1 - |delta|`` where the table says so). Signals are
routed to named sinks: every callback subscribed to its target, in the order
subscribed (the wave run subscribes one JSON Lines file per target).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from buddy.engine.waves._executor import WaveRun
from buddy.engine.waves._monitor import WaveMetrics, _round
from buddy.engine.waves._records import ExecutionOutcome, ExecutionTask, LearningSignal
from buddy.rules.base.errors import InputError
from buddy.rules.tables._checks import fraction
from buddy.rules.tables._waves import WaveSignalTable

__all__ = ["Sink", "WaveFeedback", "identify_patterns"]

Sink = Callable[[LearningSignal], None]


def identify_patterns(run: WaveRun, metrics: WaveMetrics) -> list[str]:
    """What stands out in a wave, one sentence each, in a fixed order: agents that went
    OFFLINE, agents far from their predictions, tools that failed often, gates that
    refused, retries that recovered tasks."""
    out = [f"{agent} timed out and went OFFLINE" for agent in run.offline]
    for agent, m in metrics.agents.items():
        if m["tasks"] >= 3 and m["prediction_error"] > 0.15:
            side = "above" if m["success_rate"] > m["mean_predicted"] else "below"
            out.append(f"{agent} succeeded {m['success_rate']:.0%}, {side} the "
                       f"{m['mean_predicted']:.0%} predicted")
    tools: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    for r in run.results:
        tools[r.tool] += 1
        failed[r.tool] += not r.success
    for tool in sorted(tools):
        if tools[tool] >= 5 and failed[tool] / tools[tool] > 0.3:
            out.append(f"{tool} failed {failed[tool]} of {tools[tool]} tasks")
    for gate, n in sorted(run.gate_refusals.items()):
        out.append(f"safety gate {gate} refused {n} task{'s' if n != 1 else ''}")
    recovered = retry_recoveries(run.results)
    if recovered:
        out.append(f"retries recovered {recovered} task{'s' if recovered != 1 else ''}")
    return out


def retry_recoveries(results: Iterable[ExecutionTask]) -> int:
    """Tasks that COMPLETED after at least one retry."""
    return sum(1 for r in results if r.success and r.retry_count > 0)


class WaveFeedback:
    """Turns each wave into outcomes and signals, and routes the signals to sinks."""

    def __init__(self, table: WaveSignalTable, *, clock: Callable[[], float]) -> None:
        self.table = table
        self.clock = clock
        self._sinks: dict[str, list[Sink]] = {target: [] for target in table.targets}
        #: per wave: the signals emitted (counts by type), patterns and outcomes summary
        self.waves: list[dict[str, Any]] = []

    def subscribe(self, target: str, sink: Sink) -> None:
        """Call ``sink`` with every signal for ``target`` (coordination, heuristics,
        prediction). Raises :class:`InputError` for another target."""
        if target not in self._sinks:
            raise InputError(f"no signal target {target!r} (known: "
                             f"{', '.join(sorted(self._sinks))})")
        self._sinks[target].append(sink)

    def evaluate_agent_outcomes(self, results: Sequence[ExecutionTask],
                                ) -> list[ExecutionOutcome]:
        """Each task's prediction against what happened."""
        return [ExecutionOutcome(r.task_id, r.agent_id, r.wave, r.predicted_success_rate,
                                 1.0 if r.success else 0.0,
                                 abs(r.predicted_success_rate - (1.0 if r.success else 0.0)))
                for r in results]

    def generate_feedback_signals(self, run: WaveRun, metrics: WaveMetrics,
                                  ) -> list[LearningSignal]:
        """The wave's signals, by the table's rows: per agent (agent order), then per wave."""
        at = self.clock()
        wave = metrics.wave
        signals: list[LearningSignal] = []
        for agent, m in metrics.agents.items():
            if not m["tasks"]:
                continue
            values = {**m, "confidence_score": fraction(1.0 - m["prediction_error"])}
            for found in self.table.evaluate("agent", values, {"agent_id": agent, "wave": wave}):
                signals.append(LearningSignal(
                    found.signal_type, found.target, found.target_phase,
                    {"agent_id": agent, "insight": found.insight,
                     "recommended_action": found.recommended_action,
                     **{k: _round(v) for k, v in values.items()}},
                    found.confidence, at, wave, found.rule))
        patterns = identify_patterns(run, metrics)
        values = {**metrics.system,
                  "confidence_score": fraction(1.0 - metrics.system["prediction_error"]),
                  "patterns": len(patterns), "retry_recoveries": retry_recoveries(run.results)}
        for found in self.table.evaluate("wave", values,
                                         {"pattern_list": "; ".join(patterns) or "none",
                                          "wave": wave}):
            signals.append(LearningSignal(
                found.signal_type, found.target, found.target_phase,
                {"insight": found.insight, "recommended_action": found.recommended_action,
                 "patterns": patterns, **{k: _round(v) for k, v in values.items()
                                          if k != "patterns"}},
                found.confidence, at, wave, found.rule))
        self.waves.append(self.aggregate_wave_learning(wave, run, signals, patterns))
        return signals

    def route(self, signals: Iterable[LearningSignal]) -> Counter[str]:
        """Hand each signal to its target's sinks; how many went to each target."""
        sent: Counter[str] = Counter()
        for signal in signals:
            for sink in self._sinks.get(signal.target, ()):
                sink(signal)
            sent[signal.target] += 1
        return sent

    def aggregate_wave_learning(self, wave: int, run: WaveRun,
                                signals: Sequence[LearningSignal],
                                patterns: Sequence[str]) -> dict[str, Any]:
        """The wave's learning in one record: signals by type and target, patterns,
        the mean error margin and the tasks a retry recovered."""
        outcomes = self.evaluate_agent_outcomes(run.results)
        margin = sum(o.error_margin for o in outcomes) / len(outcomes) if outcomes else 0.0
        return {"wave": wave,
                "signals_by_type": dict(sorted(Counter(s.signal_type for s in signals).items())),
                "signals_by_target": dict(sorted(Counter(s.target for s in signals).items())),
                "patterns": list(patterns), "mean_error_margin": round(margin, 4),
                "retry_recoveries": retry_recoveries(run.results)}
