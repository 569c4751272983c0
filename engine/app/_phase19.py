"""Phase 19's outputs of ``buddy run waves --strategy <objective>``: the files of ``002``.

When an optimizer objective plans the waves, the run writes, beside the Phase
21 tree, under ``phase19/``::

    wave_N/<agent>/scheduled_tasks.jsonl   each task's plan and what became of it
    schedule_comparisons.jsonl             per wave: planned vs actual
    optimization_metrics.jsonl             per wave: the five metrics against their targets
    scheduling_anomalies.jsonl             the anomalies found, in order
    optimization_feedback.jsonl            feedback events
    learning_signals.jsonl                 Phase 19's learning signals
    heuristic_weights.json                 the learned weights, after the last wave
    system_health.json                     the last wave's health (and every wave's)
    phase19_trend.png                      the objective, success and accuracy per wave
    PHASE_19_ADAPTIVE_SCHEDULING.md        the report: the per-wave trend, for a person
    optimization_summary.json              written last: there only once the run finished

JSON Lines files are streamed, flushed per line; the others written whole
(temp file, then rename).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from buddy.engine.app._harness import _iso as iso
from buddy.engine.app._harness import _Lines
from buddy.engine.app._outputs import json_doc, jsonl, pct, per_wave_png
from buddy.engine.app._printable import md_cell
from buddy.engine.waves._loop import WaveOutcome
from buddy.engine.waves._opt_feedback import OptimizationFeedbackLoop
from buddy.engine.waves._opt_monitor import OptimizationMonitor
from buddy.engine.waves._opt_records import (
    HeuristicWeights,
    OptimizationHealth,
    ScheduleComparison,
)
from buddy.engine.waves._scheduler import AdaptiveScheduler
from buddy.rules.base._files import write_atomic

__all__ = ["PHASE19_DIR", "PHASE19_FILES", "Phase19Writer"]

PHASE19_DIR = "phase19"
SUMMARY = "optimization_summary.json"
COMPARISONS = "schedule_comparisons.jsonl"
METRICS = "optimization_metrics.jsonl"
ANOMALIES = "scheduling_anomalies.jsonl"
FEEDBACK = "optimization_feedback.jsonl"
SIGNALS = "learning_signals.jsonl"
WEIGHTS = "heuristic_weights.json"
HEALTH = "system_health.json"
PLOT = "phase19_trend.png"
REPORT = "PHASE_19_ADAPTIVE_SCHEDULING.md"
#: Every file the writer puts directly under ``phase19/``.
PHASE19_FILES = (SUMMARY, COMPARISONS, METRICS, ANOMALIES, FEEDBACK, SIGNALS, WEIGHTS,
                 HEALTH, PLOT, REPORT)
SCHEDULED = "scheduled_tasks.jsonl"


class Phase19Writer:
    """Feeds each wave's comparison to the Phase 19 monitor and feedback loop, writes
    what they say, and hands the learned weights back to the scheduler."""

    def __init__(self, out: Path, dirs: Mapping[str, str], scheduler: AdaptiveScheduler,
                 monitor: OptimizationMonitor, feedback: OptimizationFeedbackLoop, *,
                 clock: Callable[[], float], mark: str) -> None:
        self.out = out
        self.dirs = dirs
        self.scheduler = scheduler
        self.monitor = monitor
        self.feedback = feedback
        self.clock = clock
        self.mark = mark
        out.mkdir(exist_ok=True)
        (out / mark).write_bytes(b"written by buddy run waves\n")
        self.streams = {name: _Lines(out / name) for name in
                        (COMPARISONS, METRICS, ANOMALIES, FEEDBACK, SIGNALS)}
        self.comparisons: list[ScheduleComparison] = []
        self.results: list[dict[str, Any]] = []
        self.health: list[OptimizationHealth] = []
        self.anomalies = 0
        self.signals = 0
        #: waves the optimizer could not plan (every agent OFFLINE)
        self.unplanned: list[dict[str, Any]] = []

    def close(self) -> None:
        for lines in self.streams.values():
            lines.close()

    def wave(self, o: WaveOutcome) -> None:
        """Write a wave's scheduled tasks and what the monitor and feedback made of it."""
        c = o.comparison
        if c is None or o.scheduled is None:  # no agent was available: nothing to plan
            self.unplanned.append({
                "wave": o.plan.wave, "tasks": len(o.run.results),
                "completed": sum(r.success for r in o.run.results),
                "reason": "not planned: every agent was OFFLINE (each task met the resource "
                          "gate)"})
            return
        wave = c.wave
        by_agent: dict[str, list[dict[str, Any]]] = {}
        for t in o.scheduled_tasks:
            planned = o.scheduled.tasks[t.task_id].agent_id
            by_agent.setdefault(planned, []).append(t.to_json())
        for agent, items in by_agent.items():
            d = self.out / f"wave_{wave}" / self.dirs[agent]
            if not d.parent.is_dir():
                d.parent.mkdir()
                (d.parent / self.mark).write_bytes(b"written by buddy run waves\n")
            d.mkdir(exist_ok=True)
            write_atomic(d / SCHEDULED, jsonl(items), fsync=False)
        self.comparisons.append(c)
        self.streams[COMPARISONS].write(c.to_json())
        metrics = self.monitor.calculate_metrics(c)
        for m in metrics:
            self.streams[METRICS].write(m.to_json())
        anomalies = self.monitor.detect_anomalies(c)
        for a in anomalies:
            self.streams[ANOMALIES].write(a.to_json())
        self.anomalies += len(anomalies)
        health = self.monitor.generate_system_health(c, metrics, anomalies)
        self.health.append(health)
        weights = self.feedback.update_heuristic_weights(c)
        for e in self.feedback.generate_feedback_events(c, metrics):
            self.streams[FEEDBACK].write(e.to_json())
        signals = self.feedback.generate_learning_signals(c, anomalies)
        for s in signals:
            self.streams[SIGNALS].write(s.to_json())
        self.signals += len(signals)
        if self.scheduler.objective == "balanced":  # the learned weights plan what follows
            self.scheduler.set_table(self.feedback.optimizer_table(self.scheduler.table))
        schedule = o.scheduled.schedule
        assignments: dict[str, list[str]] = {}
        for assignment in o.plan.assignments:
            assignments.setdefault(assignment.agent_id, []).append(assignment.task_id)
        self.results.append({
            "wave": wave, "strategy": self.scheduler.objective,
            "expected_success_rate": round(c.planned_success_rate, 6),
            "actual_success_rate": round(c.actual_success_rate, 6),
            "expected_throughput": round(c.planned_throughput, 6),
            "actual_throughput": round(c.actual_throughput, 6),
            "schedule_adherence": round(c.schedule_adherence, 6),
            "objective_score": round(c.objective_score, 6),
            "objective_value": round(schedule.objective_value, 6) if schedule else None,
            "capacity": schedule.capacity if schedule else None,
            "load_moves": len(o.scheduled.moves),
            "health_score": health.overall_health_score,
            "heuristic_weights": dict(weights.weights),
            "agent_assignments": assignments})

    def finish(self, run_info: Mapping[str, Any], seconds: float) -> dict[str, Any]:
        """Write the documents of the run's end; returns the summary written."""
        now = self.clock()
        cs = self.comparisons
        n = sum(c.tasks for c in cs)

        def mean(field: str) -> float:
            return round(math.fsum(getattr(c, field) * c.tasks for c in cs) / n, 6) if n else 0.0

        weights = HeuristicWeights(dict(self.feedback.weights), iso(now))
        write_atomic(self.out / WEIGHTS, json_doc(weights.to_json()))
        last = self.health[-1] if self.health else None
        health_doc = {**(last.to_json() if last else {}),
                      "waves": [h.to_json() for h in self.health]}
        write_atomic(self.out / HEALTH, json_doc(health_doc))
        plot = _plot(self.out / PLOT, cs)
        first, final = (cs[0], cs[-1]) if cs else (None, None)
        summary: dict[str, Any] = {
            "phase": 19, "timestamp": iso(now),
            "total_waves_optimized": len(cs), "total_agents": run_info["agents"],
            "total_tasks": n, "optimization_strategy": self.scheduler.objective,
            "overall_metrics": {
                "expected_success_rate": mean("planned_success_rate"),
                "actual_success_rate": mean("actual_success_rate"),
                "prediction_accuracy": mean("accuracy_score"),
                "expected_throughput": mean("planned_throughput"),
                "actual_throughput": mean("actual_throughput"),
                "schedule_adherence": mean("schedule_adherence"),
                "first_attempt_success_rate": mean("first_attempt_success_rate")},
            "optimization_results": self.results,
            "system_health_score": last.overall_health_score if last else None,
            "execution_time_ms": round(seconds * 1000, 3),
            "simulated": run_info["simulated"],
            "dry_run_only": run_info.get("dry_run_only", False),
            "system_lock": run_info.get("lock_note"),
            "objective_trend": {
                "measure": _MEASURE[self.scheduler.objective],
                "first_wave": round(first.objective_score, 6) if first else None,
                "last_wave": round(final.objective_score, 6) if final else None,
                "change": round(final.objective_score - first.objective_score, 6)
                if first and final else None},
            "strategy_effectiveness": self.feedback.evaluate_strategy_effectiveness(),
            "convergence": self.monitor.monitor_optimization_convergence(
                self.feedback.weight_history),
            "waves_not_planned": self.unplanned,
            "anomalies": self.anomalies, "learning_signals": self.signals,
            "audit_log": f"../{run_info['audit_log']}",
        }
        write_atomic(self.out / REPORT, _report(summary, cs, self.health, plot,
                                                run_info))
        write_atomic(self.out / SUMMARY, json_doc(summary))  # last: the run is done
        return summary


#: What ``objective_score`` measures, per objective (the scheduler's docstring).
_MEASURE = {
    "maximize_success": "share of tasks that succeeded at their first attempt",
    "maximize_confidence": "first-attempt success, weighted by decision confidence",
    "maximize_throughput": "tasks completed per second of the wave",
    "balanced": "the balanced weights' sum of first-attempt success, confidence-weighted "
                "success and completed tasks per second against plan",
}


def _plot(path: Path, cs: Sequence[ScheduleComparison]) -> Path | None:
    """The objective's score, first-attempt success and adherence per wave as a PNG;
    None without matplotlib (or without a wave)."""
    if not cs:
        return None
    throughput = cs[0].strategy == "maximize_throughput"
    return per_wave_png(path, [c.wave for c in cs], [
        ("objective (tasks/s)" if throughput else "objective (%)",
         [c.objective_score if throughput else 100 * c.objective_score for c in cs], "o"),
        ("first-attempt success (%)", [100 * c.first_attempt_success_rate for c in cs], "s"),
        ("schedule adherence (%)", [100 * c.schedule_adherence for c in cs], "^")],
        title=f"buddy {cs[0].strategy} (SIMULATED tools): per wave", legend="lower right")


def _report(summary: Mapping[str, Any], cs: Sequence[ScheduleComparison],
            health: Sequence[OptimizationHealth], plot: Path | None,
            run_info: Mapping[str, Any]) -> str:
    trend = summary["objective_trend"]
    objective = summary["optimization_strategy"]
    throughput = objective == "maximize_throughput"

    def score(x: float) -> str:
        return f"{x:.2f}/s" if throughput else pct(x)

    lines = [
        f"# buddy adaptive scheduling: {objective}", "",
        "Each wave was planned by the optimizer from what the earlier waves showed of "
        "each agent, run through the engine, and compared with its plan. The tools are "
        "SIMULATED (seeded stand-ins that touch nothing) and time is a virtual clock."
        if run_info["simulated"] else
        "Each wave was planned by the optimizer from what the earlier waves showed of "
        "each agent, run through the engine, and compared with its plan.", "",
        *([f"**System lock:** {run_info['lock_note']}.", ""] if run_info.get("lock_note")
          else []),
        *(["**Every call was capped at DRY_RUN** (`--dry-run-only`): nothing ran LIVE.", ""]
          if run_info.get("dry_run_only") else []),
        f"The objective as it turned out ({trend['measure']}): "
        + (f"{score(trend['first_wave'])} in the first wave, {score(trend['last_wave'])} in "
           f"the last ({'+' if trend['change'] >= 0 else ''}"
           f"{trend['change'] * (1 if throughput else 100):.1f}"
           f"{'/s' if throughput else ' points'})." if trend["first_wave"] is not None
           else "no wave ran."), "",
        "## Per wave", "",
        "| wave | tasks | objective | first-attempt success | success (planned) | "
        "success (actual) | accuracy | throughput planned / actual (tasks/s) | adherence "
        "| health |", "|---|---|---|---|---|---|---|---|---|---|"]
    for c, h in zip(cs, health, strict=True):
        lines.append(
            f"| {c.wave} | {c.tasks} | {score(c.objective_score)} | "
            f"{pct(c.first_attempt_success_rate)} | {pct(c.planned_success_rate)} | "
            f"{pct(c.actual_success_rate)} | {c.accuracy_score:.3f} | "
            f"{c.planned_throughput:.2f} / {c.actual_throughput:.2f} | "
            f"{c.schedule_adherence:.3f} | {h.overall_health_score:.1f} "
            f"({md_cell(h.health_status)}) |")
    for u in summary["waves_not_planned"]:
        lines.append(f"| {u['wave']} | {u['tasks']} | {md_cell(u['reason'])} | | | | | | | |")
    lines.append("")
    if plot is not None:
        lines += [f"![the objective per wave]({plot.name})", ""]
    else:
        lines += ["(No plot: matplotlib is not installed; `pip install 'buddy[graphs]'`.)", ""]
    lines += ["## Agents per wave (tasks planned, expected → actual success)", ""]
    agents = list(dict.fromkeys(a for c in cs for a in c.agents))
    lines += ["| wave | " + " | ".join(md_cell(a) for a in agents) + " |",
              "|---|" + "---|" * len(agents)]
    for c in cs:
        cells = []
        for a in agents:
            v = c.agents.get(a)
            if not v or not v["planned_tasks"]:
                cells.append("-")
                continue
            exp, act = v["expected_success"], v["actual_success"]
            cells.append(f"{v['planned_tasks']}: {pct(exp)} → "
                         f"{pct(act) if act is not None else '-'}")
        lines.append(f"| {c.wave} | " + " | ".join(cells) + " |")
    lines += ["", f"Every plan and reassignment is in the audit trail "
              f"(`{summary['audit_log']}`, kind `schedule`); `buddy replay` holds every "
              "task move to the agent its plan named.", ""]
    return "\n".join(lines)
