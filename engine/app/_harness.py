"""The end-to-end run behind ``buddy run`` (Phase 24's harness).

:func:`run` loads plans (a file, or the SIMULATED default scenario), pushes them
through the orchestration cycle in batches, and writes, under ``out_dir``:

- the seven files of Phase 24: ``tool_execution_log.jsonl``,
  ``orchestration_summary.json``, ``execution_state_transitions.jsonl``,
  ``tool_conflicts.json``, ``rollback_events.jsonl``, ``learning_signals.jsonl``,
  ``system_health.json``;
- ``report.md``, for a person: the dependency graph and the controller machine
  as Mermaid diagrams, tables of decisions, conflicts, anomalies and signals;
- ``audit.jsonl`` (+ ``.anchor``), the hash-chained audit trail of the run,
  which ``buddy replay`` verifies.

JSON files are written atomically (temp file, then rename); JSON Lines files
are replaced at the start of a run and appended line by line, flushed. The
same seed gives the same files, timestamps aside.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any

import attrs
import orjson

from buddy.engine.core._audit import AuditLog
from buddy.engine.core._engine import Engine
from buddy.engine.orchestration._conflicts import ConflictResolver
from buddy.engine.orchestration._feedback import FeedbackLoop
from buddy.engine.orchestration._monitor import Monitor
from buddy.engine.orchestration._orchestrator import (
    OrchestrationLimits,
    OrchestrationResult,
    ToolOrchestrator,
)
from buddy.engine.orchestration._plans import ExecutionOutcome, load_plans
from buddy.engine.orchestration._scenario import AGENTS, GRANTS, approver, default_plans
from buddy.engine.orchestration._simulator import SimulatedClock, SimulatedTools
from buddy.graphs import dependency_graph, machine_to_mermaid, to_mermaid
from buddy.machines import MACHINES
from buddy.rules.base._convert import converter
from buddy.rules.base._files import write_atomic
from buddy.rules.base._values import ExecutionMode
from buddy.rules.base.errors import InputError
from buddy.rules.tables._catalogue import ToolContractRegistry
from buddy.rules.tables._conflicts import ConflictTable
from buddy.rules.tables._escalation import EscalationTable
from buddy.rules.tables._monitoring import AnomalyTable, HealthTable
from buddy.rules.tables._signals import SignalTable

__all__ = ["OUTPUT_FILES", "RunConfig", "RunSummary", "run"]

OUTPUT_FILES = ("tool_execution_log.jsonl", "orchestration_summary.json",
                "execution_state_transitions.jsonl", "tool_conflicts.json",
                "rollback_events.jsonl", "learning_signals.jsonl", "system_health.json")


@attrs.frozen
class RunConfig:
    """Settings of a run (Phase 24's ``Phase24ExecutionConfig``, and what a user adds).

    ``approval_required_for_high_risk`` and ``enable_rollback_on_failure``
    cannot be turned off (HIGH risk tools require approval by contract; a LIVE
    failure always rolls back its plan's reversible actions): they are kept for
    the Phase 24 shape, and refuse False. ``rules_dir`` may hold any of
    ``escalation.toml``, ``conflicts.toml``, ``anomalies.toml``, ``health.toml``,
    ``signals.toml``; the shipped table stands in for each one missing.
    """

    output_dir: Path = Path("buddy-out")
    plans: Path | None = None
    seed: int = 24
    dry_run_only: bool = False
    max_live_escalations: int | None = None
    approval_required_for_high_risk: bool = True
    confidence_threshold_for_live: float | None = None
    enable_rollback_on_failure: bool = True
    plans_per_cycle: int = 4
    catalogue: Path | None = None
    rules_dir: Path | None = None
    audit_key: bytes | None = attrs.field(default=None, repr=False)
    start: float | None = None  # the simulated clock's start; default: now

    def __attrs_post_init__(self) -> None:
        if not self.approval_required_for_high_risk:
            raise InputError("approval_required_for_high_risk cannot be turned off: HIGH risk "
                             "tools require approval by contract")
        if not self.enable_rollback_on_failure:
            raise InputError("enable_rollback_on_failure cannot be turned off: a LIVE failure "
                             "always rolls back its plan's reversible actions")
        if self.plans_per_cycle < 1:
            raise InputError(f"plans_per_cycle must be >= 1 (got {self.plans_per_cycle})")


@attrs.frozen
class RunSummary:
    """What ``buddy run`` prints at the end."""

    out_dir: Path
    plans: int
    rejected: tuple[str, ...]
    executions_by_mode: dict[str, int]
    not_run: int
    conflicts: int
    resolved: int
    rollbacks: int
    health_score: float
    health: str
    anomalies: int
    signals: int
    audit_log: Path
    report: Path
    simulated: bool


def _table(rules_dir: Path | None, name: str, cls: Any) -> Any:
    if rules_dir is not None and (rules_dir / name).exists():
        return cls.from_toml(rules_dir / name)
    return cls.default()


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


class _Lines:
    """A JSON Lines output: replaced at the start, appended and flushed per line."""

    def __init__(self, path: Path) -> None:
        write_atomic(path, "")
        self._fh: IO[bytes] = open(path, "ab")  # noqa: SIM115

    def write(self, obj: Any) -> None:
        self._fh.write(orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS) + b"\n")
        self._fh.flush()

    def close(self) -> None:
        os.fsync(self._fh.fileno())
        self._fh.close()


def run(config: RunConfig, *, progress: Callable[[int, int], None] | None = None,
        ) -> RunSummary:
    """Run the plans of ``config`` (or the default scenario) and write every output."""
    registry = ToolContractRegistry.from_toml(config.catalogue) if config.catalogue else \
        ToolContractRegistry.default()
    escalation = _table(config.rules_dir, "escalation.toml", EscalationTable)
    conflict_table = _table(config.rules_dir, "conflicts.toml", ConflictTable)
    anomalies = _table(config.rules_dir, "anomalies.toml", AnomalyTable)
    health = _table(config.rules_dir, "health.toml", HealthTable)
    signals = _table(config.rules_dir, "signals.toml", SignalTable)
    simulated = config.plans is None
    rejected: tuple[str, ...] = ()
    if config.plans is not None:
        loaded = load_plans(config.plans, registry)
        plans, rejected = list(loaded.plans), loaded.errors
    else:
        plans = default_plans(config.seed)

    out = config.output_dir
    out.mkdir(parents=True, exist_ok=True)
    clock = SimulatedClock(time.time() if config.start is None else config.start)
    start = clock()
    audit_path = out / "audit.jsonl"
    for stale in (audit_path, audit_path.with_name("audit.jsonl.anchor")):
        stale.unlink(missing_ok=True)  # each run writes its own trail
    audit = AuditLog.open(audit_path, clock=clock, key=config.audit_key)
    engine = Engine(registry, escalation, audit=audit, clock=clock,
                    approver=approver if simulated else None,
                    agents=AGENTS if simulated else None)
    tools = SimulatedTools(registry, config.seed, clock)
    tools.install(engine)
    if simulated:
        for agent, tool, calls in GRANTS:
            engine.grant(agent, tool, calls=calls, reason="scenario: scoped grant")
    resolver = ConflictResolver(registry, conflict_table, agents=AGENTS if simulated else None,
                                audit=audit)
    monitor = Monitor(anomalies=anomalies, health=health, clock=clock)
    feedback = FeedbackLoop(signals=signals)
    orchestrator = ToolOrchestrator(
        engine, resolver, monitor=monitor, feedback=feedback, clock=clock.elapsed,
        limits=OrchestrationLimits(config.dry_run_only, config.max_live_escalations,
                                   config.confidence_threshold_for_live))
    log = _Lines(out / "tool_execution_log.jsonl")
    results: list[OrchestrationResult] = []
    try:
        batches = [plans[i:i + config.plans_per_cycle]
                   for i in range(0, len(plans), config.plans_per_cycle)]
        for n, batch in enumerate(batches, 1):
            for plan, result in zip(batch, orchestrator.run_cycle(batch), strict=True):
                log.write({"plan_index": len(results), "plan_id": result.plan_id,
                           "upstream_plan_id": plan.upstream_plan_id,
                           "validation_id": plan.validation_id,
                           "result": result.to_json()})
                results.append(result)
            if progress is not None:
                progress(n, len(batches))
    finally:
        log.close()
        audit.close()
    end = clock()
    records = list(AuditLog.read_records(audit_path))
    _write_transitions(out / "execution_state_transitions.jsonl", records)
    rollbacks = _write_rollbacks(out / "rollback_events.jsonl", records, end)
    conflicts = resolver.summary()
    conflicts_doc = {**conflicts, "conflicts": [_jsonable(c) for c in resolver.conflicts],
                     "resolutions": [_jsonable(r) for r in resolver.resolutions]}
    write_atomic(out / "tool_conflicts.json", _dumps(conflicts_doc))
    signals_out = feedback.export_signals()
    lines = _Lines(out / "learning_signals.jsonl")
    for signal in signals_out:
        lines.write(signal)
    lines.close()
    system_health = monitor.system_health()
    write_atomic(out / "system_health.json", _dumps(system_health))
    outcomes = orchestrator.outcomes
    runs = Counter(o.mode for o in outcomes)  # None: not run
    by_mode = {m.value: runs[m] for m in sorted(ExecutionMode, key=lambda m: m.rank)}
    summary = {
        "pipeline_id": "phase24_" + dt.datetime.fromtimestamp(start, dt.UTC)
        .strftime("%Y%m%d_%H%M%S"),
        "start_time": _iso(start),
        "end_time": _iso(end),
        "plans_processed": len(results),
        "plans_successful": sum(r.ok for r in results),
        "plans_failed": sum(not r.ok for r in results),
        "plans_rejected": len(rejected),
        "total_tools_executed": sum(o.mode is not None for o in outcomes),
        "total_conflicts": conflicts["total_conflicts"],
        "total_rollbacks": rollbacks,
        "executions_by_mode": {**by_mode, "NOT_RUN": runs[None]},
        "seed": config.seed,
        "simulated": True,
        "scenario": "default (simulated)" if simulated else str(config.plans),
        "rules": {"escalation": escalation.digest, "catalogue": registry.digest},
        "audit_log": audit_path.name,
    }
    write_atomic(out / "orchestration_summary.json", _dumps(summary))
    report = out / "report.md"
    write_atomic(report, _report(summary, registry, results, outcomes, conflicts_doc,
                                 system_health, signals_out, rejected))
    return RunSummary(
        out_dir=out, plans=len(results), rejected=rejected,
        executions_by_mode=summary["executions_by_mode"],
        not_run=runs[None], conflicts=conflicts["total_conflicts"],
        resolved=conflicts.get("resolved", 0), rollbacks=rollbacks,
        health_score=system_health["health_score"], health=system_health["health_assessment"],
        anomalies=len(system_health["anomalies"]), signals=len(signals_out),
        audit_log=audit_path, report=report, simulated=True)


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS,
                        default=_jsonable).decode() + "\n"


def _jsonable(obj: Any) -> Any:
    return converter.unstructure(obj)


def _write_transitions(path: Path, records: Iterable[dict[str, Any]]) -> None:
    lines = _Lines(path)
    for r in records:
        if r["kind"] == "transition":
            d = r["data"]
            lines.write({"seq": r["seq"], "machine": r["machine"], "context": r["subject"],
                         "agent": d.get("agent"), "tool": d.get("tool"),
                         "trigger": r["event"], "from_state": r["src"], "to_state": r["dst"],
                         "timestamp": _iso(r["ts"]),
                         "reason": d.get("why") or _REASONS.get(r["event"], r["event"])})
    lines.close()


_REASONS = {
    "approve_escalation": "confidence met the DRY_RUN threshold",
    "request_live": "confidence met the LIVE threshold",
    "confirm_approval": "approval granted",
    "approval_denied": "approval denied",
    "all_actions_succeeded": "the action succeeded",
    "error": "the LIVE action failed",
    "rollback_complete": "rollback finished",
    "lock": "system locked",
    "abort": "aborted",
}


def _write_rollbacks(path: Path, records: Iterable[dict[str, Any]], end: float) -> int:
    lines = _Lines(path)
    total = 0
    for r in records:
        if r["kind"] == "rollback":
            total += 1
            d = r["data"]
            lines.write({"event": "undo", "context": r["subject"], "tool": d.get("tool"),
                         "ok": d.get("ok"), "because_of": d.get("because_of"),
                         "timestamp": _iso(r["ts"])})
    lines.write({"event": "summary", "total_rollbacks": total, "timestamp": _iso(end)})
    lines.close()
    return total


def _report(summary: dict[str, Any], registry: ToolContractRegistry,
            results: Sequence[OrchestrationResult], outcomes: Sequence[ExecutionOutcome],
            conflicts: dict[str, Any], health: dict[str, Any], signals: Sequence[dict[str, Any]],
            rejected: Sequence[str]) -> str:

    used = sorted({o.tool for o in outcomes})
    graph = dependency_graph(registry)
    keep = set(used) | {d for t in used for d in registry.get(t).dependencies}
    sub = graph.subgraph(sorted(keep)).copy()
    out = [f"# buddy run {summary['pipeline_id']}", "",
           f"{summary['scenario']}; seed {summary['seed']}. The tools' handlers are SIMULATED "
           "(seeded, deterministic stand-ins that touch nothing)."
           if summary["scenario"].startswith("default") else
           f"Plans from {summary['scenario']}; seed {summary['seed']}.", "",
           "| | |", "|---|---|",
           f"| plans | {summary['plans_processed']} ({summary['plans_successful']} fully "
           f"successful, {summary['plans_rejected']} rejected) |",
           "| executions by mode | " + ", ".join(f"{m} {n}" for m, n in
                                                  summary["executions_by_mode"].items()) + " |",
           f"| conflicts | {conflicts['total_conflicts']} |",
           f"| rollbacks | {summary['total_rollbacks']} |",
           f"| health | {health['health_score']} ({health['health_assessment']}) |",
           f"| anomalies | {len(health['anomalies'])} |",
           f"| learning signals | {len(signals)} |",
           f"| audit trail | `{summary['audit_log']}` (`buddy replay {summary['audit_log']}`) |",
           ""]
    if rejected:
        out += ["## Rejected plans", ""] + [f"- {_code(line)}" for line in rejected] + [""]
    out += ["## Tool dependencies", "", "An edge runs from a dependency to the tool that "
            "needs it (tools this run used, and their dependencies).", "", "```mermaid",
            to_mermaid(sub).rstrip(), "```", "",
            "## The escalation machine", "", "```mermaid",
            machine_to_mermaid(MACHINES["escalation"]).rstrip(), "```", "",
            "## Decisions", "",
            "| call | agent | tool | risk | confidence | decided | ran | ok | approval "
            "| conflicts | resolution | note |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for o in outcomes:
        decided = o.decided.value if o.decided else "-"
        ran = o.mode.value if o.mode else "-"
        out.append(f"| {_cell(o.call_id)} | {_cell(o.agent)} | {o.tool} | {o.risk} | "
                   f"{o.confidence} | {decided} | {ran} | {'yes' if o.ok else 'no'} | "
                   f"{o.approval or '-'} | {', '.join(o.conflicts) or '-'} | "
                   f"{o.resolution or '-'} | {_cell(o.error or '')} |")
    out += ["", "## Conflicts", "", "| type | count |", "|---|---|"]
    out += [f"| {t} | {n} |" for t, n in conflicts["by_type"].items()]
    out += ["", "| strategy | count |", "|---|---|"]
    out += [f"| {s} | {n} |" for s, n in conflicts["by_resolution_strategy"].items()]
    out += ["", "## Anomalies", ""]
    if health["anomalies"]:
        out += ["| anomaly | severity | scope | value | threshold |", "|---|---|---|---|---|"]
        for a in health["anomalies"]:
            out.append(f"| {a.get('type', a.get('id'))} | {a.get('severity')} | "
                       f"{a.get('tool') or a.get('scope')} | {a.get('value')} | "
                       f"{a.get('threshold')} |")
    else:
        out.append("None.")
    out += ["", "## Learning signals", ""]
    if signals:
        out += ["| type | scope | insight | recommended action | confidence | phase |",
                "|---|---|---|---|---|---|"]
        for s in signals:
            scope = s.get("tool_name") or s.get("scope") or "-"
            out.append(f"| {s['signal_type']} | {scope} | {_cell(s['insight'])} | "
                       f"{_cell(s['recommended_action'])} | {s['confidence']} | "
                       f"{s['target_phase']} |")
    else:
        out.append("None.")
    out += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in health["metrics"].items()]
    return "\n".join(out) + "\n"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    """``text`` as one Markdown code span, whatever backticks it holds."""
    text = text.replace("\n", " ")
    fence = "`" * (1 + max(map(len, re.findall("`+", text)), default=0))
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"
