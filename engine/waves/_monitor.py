"""The wave monitor (Phase 21's monitor): metrics per agent and per wave, health, anomalies.

It computes numbers; the rule tables say what they mean. The health score is
``rules/wave_health.toml``'s weighted sum (40 % success, 20 % availability,
20 % accuracy, 20 % load balance); its tier comes from ``rules/health.toml``,
the one tier table both monitors share; the anomalies are the rows of
``rules/wave_anomalies.toml``, evaluated per agent, per wave and on the trend
from the wave before.

The metrics of a wave (fractions in [0, 1] unless said):

- ``success_rate``: tasks COMPLETED / tasks of the wave;
- ``availability``: agents not OFFLINE at the wave's end / agents;
- ``prediction_error``: |mean predicted success - success_rate|, and
  ``accuracy`` = 1 - prediction_error;
- ``load_balance``: min load / max load over the agents available from the
  wave's start to its end (a load: the tasks an agent finished, reassigned ones
  counted where they ended; an agent that went OFFLINE handed its load on);
  ``load_imbalance_ratio``: max / min (min 0: max / 1); ``load_spread``:
  (max - min) / max (:func:`~buddy.rules.tables._waves.load_metrics`);
- ``confidence``: the mean predicted success rate.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from buddy.engine.waves._agents import AgentManager
from buddy.engine.waves._executor import WaveRun
from buddy.engine.waves._records import AgentMetric, SystemAnomaly, SystemHealth
from buddy.rules.tables._monitoring import HealthTable
from buddy.rules.tables._waves import (
    FoundAnomaly,
    WaveAnomalyTable,
    WaveHealthTable,
    load_metrics,
)

__all__ = ["AGENT_METRICS", "WaveMetrics", "WaveMonitor", "wave_metrics"]

#: The per-agent metrics written to ``agent_metrics.jsonl``, in order.
AGENT_METRICS = ("tasks", "completed", "failed", "success_rate", "timeouts", "gate_refusals",
                 "retries", "avg_latency", "mean_predicted", "prediction_error", "load")


@attrs.frozen
class WaveMetrics:
    """A wave's metrics: the system's and each agent's (agent order)."""

    wave: int
    system: Mapping[str, float]
    agents: Mapping[str, Mapping[str, float]]


def _ratio(a: float, b: float, empty: float = 0.0) -> float:
    return a / b if b else empty


def _blank() -> dict[str, float]:
    return {"tasks": 0, "completed": 0, "failed": 0, "timeouts": 0, "gate_refusals": 0,
            "retries": 0, "_latency": 0.0, "_predicted": 0.0}


def wave_metrics(run: WaveRun, agents: Sequence[str], available_at_start: Sequence[str],
                 available_at_end: Sequence[str] | int) -> WaveMetrics:
    """The metrics of ``run`` (see the module docstring). ``agents``: every agent, in
    order; ``available_at_start``/``available_at_end``: those not OFFLINE when the wave
    began and ended (at the end, a count will do: loads are then over those at the start).

    An agent's ``success_rate`` and ``prediction_error`` are over the tasks it
    attempted: a task a safety gate refused never ran, and is not held against it.
    """
    per: dict[str, dict[str, float]] = {agent: _blank() for agent in agents}
    for r in run.results:
        m = per.setdefault(r.agent_id, _blank())
        m["tasks"] += 1
        m["completed" if r.success else "failed"] += 1
        m["timeouts"] += r.timed_out
        m["retries"] += r.retry_count
        m["_latency"] += r.latency
        if r.gate is not None:
            m["gate_refusals"] += 1
        else:
            m["_predicted"] += r.predicted_success_rate
    out: dict[str, dict[str, float]] = {}
    for agent, m in per.items():
        n = int(m["tasks"])
        tried = n - int(m["gate_refusals"])
        success = _ratio(m["completed"], tried, 1.0)
        predicted = _ratio(m.pop("_predicted"), tried)
        latency = _ratio(m.pop("_latency"), n)
        out[agent] = {**{k: int(v) for k, v in m.items()}, "success_rate": success,
                      "avg_latency": latency, "mean_predicted": predicted,
                      "prediction_error": abs(predicted - success) if tried else 0.0,
                      "load": n}
    if isinstance(available_at_end, int):
        end_count, balanced = available_at_end, list(available_at_start)
    else:
        end_count = len(available_at_end)
        ended = set(available_at_end)
        balanced = [a for a in available_at_start if a in ended] or list(available_at_start)
    tasks = len(run.results)
    completed = sum(r.success for r in run.results)
    success = _ratio(completed, tasks)
    predicted = _ratio(math.fsum(r.predicted_success_rate for r in run.results), tasks)
    error = abs(predicted - success) if tasks else 0.0
    loads = load_metrics(int(out[a]["load"]) if a in out else 0 for a in balanced)
    system = {
        "tasks": tasks, "completed": completed, "failed": tasks - completed,
        "success_rate": success,
        "availability": _ratio(end_count, len(agents), 1.0),
        "prediction_error": error, "accuracy": 1.0 - error,
        **loads,
        "confidence": predicted,
        "agents": len(agents), "available_agents": end_count,
        "timeouts": sum(r.timed_out for r in run.results),
        "gate_refusals": sum(run.gate_refusals.values()),
        "retries": run.retries,
    }
    return WaveMetrics(run.wave, system, out)


class WaveMonitor:
    """Health, tiers and anomalies per wave, and the trajectory across waves."""

    def __init__(self, anomalies: WaveAnomalyTable, health: WaveHealthTable,
                 tiers: HealthTable, *, clock: Callable[[], float]) -> None:
        self.anomalies = anomalies
        self.health = health
        self.tiers = tiers
        self.clock = clock
        #: each wave's health, in order
        self.history: list[SystemHealth] = []
        self._previous: Mapping[str, float] | None = None

    def calculate_metrics(self, run: WaveRun, manager: AgentManager,
                          available_at_start: Sequence[str]) -> WaveMetrics:
        """The wave's metrics (Phase 21's ``calculate_metrics``)."""
        end = [a for a, s in manager.agents.items() if s.available]
        return wave_metrics(run, list(manager.agents), available_at_start, end)

    def agent_metrics(self, metrics: WaveMetrics, at: float) -> dict[str, list[AgentMetric]]:
        """Each agent's metrics as :class:`AgentMetric` records (``agent_metrics.jsonl``)."""
        return {agent: [AgentMetric(agent, name, _round(m[name]), at, metrics.wave)
                        for name in AGENT_METRICS]
                for agent, m in metrics.agents.items()}

    def detect_anomalies(self, metrics: WaveMetrics, at: float) -> list[SystemAnomaly]:
        """Every anomaly row that holds: per agent (agent order), per wave, then the trend."""
        found: list[tuple[FoundAnomaly, str | None]] = []
        wave = metrics.wave
        for agent, m in metrics.agents.items():
            found += [(f, agent) for f in self.anomalies.evaluate("agent", m, wave=wave,
                                                                  agent_id=agent)]
        found += [(f, None) for f in self.anomalies.evaluate("wave", metrics.system, wave=wave)]
        previous = self._previous
        if previous is not None:
            found += [(f, None) for f in self.anomalies.evaluate(
                "trend", trend(metrics.system, previous), wave=wave)]
        return [SystemAnomaly(f.type, f.severity, f.message, f.recommended_action, at, wave,
                              f.metric, _round(f.value), f.threshold, agent)
                for f, agent in found]

    def generate_system_health(self, metrics: WaveMetrics, at: float) -> SystemHealth:
        """The wave's health score, tier and anomalies; remembered for the trend."""
        system = dict(metrics.system)
        score = self.health.score(system)
        system["health_score"] = score
        metrics = attrs.evolve(metrics, system=system)
        anomalies = tuple(self.detect_anomalies(metrics, at))
        health = SystemHealth(metrics.wave, score, self.tiers.tier(score).value, at,
                              {k: _round(v) for k, v in system.items()}, anomalies)
        self.history.append(health)
        self._previous = system
        return health

    def track_confidence_trajectory(self) -> list[dict[str, Any]]:
        """Per wave: mean predicted confidence, actual success, their gap, and the health."""
        return [{"wave": h.wave, "confidence": h.metrics["confidence"],
                 "success_rate": h.metrics["success_rate"],
                 "gap": _round(h.metrics["confidence"] - h.metrics["success_rate"]),
                 "health_score": h.health_score, "health_status": h.health_status}
                for h in self.history]

    def severities(self) -> Counter[str]:
        return Counter(a.severity for h in self.history for a in h.anomalies)


def trend(now: Mapping[str, float], before: Mapping[str, float]) -> dict[str, float]:
    """The trend scope's metrics: this wave against the one before."""
    return {"tasks": now["tasks"], "success_rate": now["success_rate"],
            "previous_success_rate": before["success_rate"],
            "success_drop": before["success_rate"] - now["success_rate"],
            "health_score": now["health_score"],
            "previous_health_score": before["health_score"],
            "health_drop": before["health_score"] - now["health_score"],
            "confidence": now["confidence"], "previous_confidence": before["confidence"],
            "confidence_change": now["confidence"] - before["confidence"]}


def _round(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value
