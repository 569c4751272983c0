"""The wave run behind ``buddy run waves`` (Phase 21's harness): inputs, the loop, the tree.

:func:`run_waves` loads the tasks (``predicted_tasks.jsonl``, and
``predicted_schedule.jsonl`` when given) or makes the SIMULATED default
scenario, runs them wave by wave through :class:`~buddy.engine.waves.WaveLoop`
on a virtual clock, and writes under the output directory::

    wave_N/<agent>/agent_assignments.jsonl   the wave's assignments (then reassignments)
    wave_N/<agent>/executed_tasks.jsonl      what became of each task the agent ran last
    wave_N/<agent>/agent_metrics.jsonl       the agent's metrics (kind agent), per task (kind task)
    wave_N/<agent>/agent_feedback.jsonl      the learning signals about the agent
    phase21_system_health.json               health, metrics, anomalies per wave; the trajectory
    phase21_learning_signals.jsonl           every signal, in order
    coordination_feedback.jsonl              signals for coordination (Phase 18)
    heuristic_feedback.jsonl                 signals for heuristics (Phase 16)
    prediction_feedback.jsonl                signals for prediction (Phase 20)
    predicted_tasks.jsonl                    the tasks run (a valid input for another run)
    phase21_health.png                       health and success per wave (needs matplotlib)
    PHASE_21_AUTONOMOUS_EXECUTION.md         the report, for a person
    phase21_execution_summary.json           written last: there only once the run finished
    audit.jsonl (+ .anchor)                  the hash-chained audit trail

``<agent>`` is the agent's id when it is a plain name (letters, digits, ``_``,
``.``, ``-``), else ``agent_<index>``. Every input is checked before a file is
touched; the run holds the directory (``.buddy-run.lock``) for its whole life;
files are written whole (temp file, then rename), JSON Lines streams flushed
per line; an audit trail already there is continued. The same seed, start and
rules into a fresh directory give byte-identical files.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import math
import re
import shlex
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs

from buddy.engine.app._harness import (
    MAX_START,
    _iso,
    _Lines,
    _lock_note,
    _run_lock,
    _tables,
)
from buddy.engine.app._outputs import json_doc, jsonl, pct, per_wave_png
from buddy.engine.app._phase19 import PHASE19_DIR, PHASE19_FILES, Phase19Writer
from buddy.engine.app._phase19 import REPORT as REPORT19
from buddy.engine.app._phase19 import SUMMARY as SUMMARY19
from buddy.engine.app._printable import md_cell, printable
from buddy.engine.core._audit import AuditLog
from buddy.engine.core._chain import anchor_path
from buddy.engine.core._engine import Engine
from buddy.engine.orchestration._execution_ledger import ExecutionLedger
from buddy.engine.waves._agents import STRATEGIES, AgentManager
from buddy.engine.waves._executor import (
    ExecutorConfig,
    ThreadBackend,
    VirtualClock,
    VirtualTimeBackend,
    WaveExecutor,
)
from buddy.engine.waves._feedback import WaveFeedback
from buddy.engine.waves._inputs import (
    apply_schedule,
    by_wave,
    load_permissions,
    load_schedule,
    load_tasks,
    tasks_to_jsonl,
)
from buddy.engine.waves._loop import WaveLoop, WaveOutcome
from buddy.engine.waves._monitor import WaveMonitor
from buddy.engine.waves._opt_feedback import OptimizationFeedbackLoop
from buddy.engine.waves._opt_monitor import OptimizationMonitor
from buddy.engine.waves._optimizer import OBJECTIVES
from buddy.engine.waves._records import LearningSignal, PredictedTask, RetryStrategy
from buddy.engine.waves._scenario import SCENARIO_PERMISSIONS, default_agents, default_tasks
from buddy.engine.waves._scheduler import LOAD_THRESHOLD, AdaptiveScheduler
from buddy.engine.waves._simulator import WaveSimulator
from buddy.graphs import machine_to_mermaid
from buddy.machines import MACHINES
from buddy.rules.base._files import write_atomic
from buddy.rules.base._masking import Masker, shown
from buddy.rules.base._values import ExecutionMode
from buddy.rules.base.errors import InputError
from buddy.rules.tables._catalogue import ToolContractRegistry
from buddy.rules.tables._escalation import EscalationTable
from buddy.rules.tables._monitoring import HealthTable
from buddy.rules.tables._optimization import (
    HeuristicsTable,
    OptimizationHealthTable,
    OptimizationMetricsTable,
    OptimizationSignalTable,
    SchedulingAnomalyTable,
)
from buddy.rules.tables._optimizer import OptimizerTable
from buddy.rules.tables._waves import (
    GateTable,
    RetryTable,
    WaveAnomalyTable,
    WaveHealthTable,
    WaveSignalTable,
)

__all__ = ["WAVE_RULE_TABLES", "WaveRunConfig", "WaveRunSummary", "run_waves"]

#: The tables a rules directory may hold for a wave run, by file name.
WAVE_RULE_TABLES: dict[str, Any] = {
    "escalation.toml": EscalationTable, "gates.toml": GateTable, "retry.toml": RetryTable,
    "wave_anomalies.toml": WaveAnomalyTable, "wave_health.toml": WaveHealthTable,
    "wave_signals.toml": WaveSignalTable, "health.toml": HealthTable,
    "optimizer.toml": OptimizerTable, "optimization_metrics.toml": OptimizationMetricsTable,
    "scheduling_anomalies.toml": SchedulingAnomalyTable,
    "optimization_health.toml": OptimizationHealthTable,
    "optimization_signals.toml": OptimizationSignalTable, "heuristics.toml": HeuristicsTable}
AGENT_FILES = ("agent_assignments.jsonl", "executed_tasks.jsonl", "agent_metrics.jsonl",
               "agent_feedback.jsonl")
TARGET_FILES = {"coordination": "coordination_feedback.jsonl",
                "heuristics": "heuristic_feedback.jsonl",
                "prediction": "prediction_feedback.jsonl"}
HEALTH_FILE = "phase21_system_health.json"
SUMMARY_FILE = "phase21_execution_summary.json"
SIGNALS_FILE = "phase21_learning_signals.jsonl"
REPORT_FILE = "PHASE_21_AUTONOMOUS_EXECUTION.md"
PLOT_FILE = "phase21_health.png"
TASKS_FILE = "predicted_tasks.jsonl"
AUDIT_FILE = "audit.jsonl"
OUTPUT_FILES = (HEALTH_FILE, SUMMARY_FILE, SIGNALS_FILE, REPORT_FILE, PLOT_FILE, TASKS_FILE,
                *TARGET_FILES.values())
BACKENDS = ("virtual", "threads")
#: The most agents a run takes (``--agents``, an agents file, agents tasks name).
MAX_AGENTS = 4096
#: The most tasks the default scenario makes (they are built before the first wave runs).
MAX_TASKS = 10_000_000
#: The file buddy leaves in each ``wave_N`` directory it writes: only those it removes.
WAVE_MARK = ".buddy-wave"
_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_WAVE_DIR = re.compile(r"wave_\d+")


def _whole(value: Any, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


@attrs.frozen
class WaveRunConfig:
    """Settings of a wave run (Phase 21's harness configuration, and what a user adds).

    ``tasks``/``schedule``: input files (None: the SIMULATED default scenario of
    ``agents`` x ``waves`` x ``tasks_per_wave``). ``strategy``: an assignment
    strategy's name (the four built-ins, or one registered), or an optimizer
    objective (:data:`~buddy.engine.waves.OBJECTIVES`): the adaptive scheduler
    then plans each wave and the Phase 19 files are written under ``phase19/``;
    ``load_threshold`` is its load threshold. ``backend``:
    ``virtual`` (deterministic virtual-time interleaving, the default) or
    ``threads`` (a pool of ``max_parallel`` threads). ``strict``: refuse an input
    file with any bad line (else the line is skipped, counted and reported).
    Bad values raise :class:`InputError`.
    """

    output_dir: Path = Path("buddy-waves")
    tasks: Path | None = None
    schedule: Path | None = None
    strict: bool = False
    agents: int = 4
    waves: int = 3
    tasks_per_wave: int = 20
    strategy: str = "LOAD_BALANCED"
    load_threshold: float = LOAD_THRESHOLD
    retry_strategy: str = "EXPONENTIAL_BACKOFF"
    max_retries: int | None = None
    timeout_s: float | None = None
    max_parallel: int = 4
    backend: str = "virtual"
    seed: int = 21
    start: float | None = None
    dry_run_only: bool = False
    agents_file: Path | None = None
    catalogue: Path | None = None
    rules_dir: Path | None = None
    audit_key: bytes | None = attrs.field(default=None, repr=False)

    def __attrs_post_init__(self) -> None:
        for name, high in (("agents", 4096), ("waves", 10_000), ("tasks_per_wave", 10_000_000)):
            if not _whole(getattr(self, name), 1, high):
                raise InputError(f"{name} must be a whole number in [1, {high}] "
                                 f"(got {shown(getattr(self, name))})")
        if self.tasks is None and self.waves * self.tasks_per_wave > MAX_TASKS:
            raise InputError(f"waves x tasks_per_wave must be at most {MAX_TASKS:,} "
                             f"(got {self.waves * self.tasks_per_wave:,})")
        if self.strategy not in STRATEGIES and self.strategy not in OBJECTIVES:
            raise InputError(f"strategy must be one of "
                             f"{', '.join([*sorted(STRATEGIES), *OBJECTIVES])} "
                             f"(got {shown(self.strategy)})")
        lt = self.load_threshold
        if isinstance(lt, bool) or not isinstance(lt, int | float) or math.isnan(lt) or lt < 1:
            raise InputError(f"load_threshold must be a number >= 1 (got {shown(lt)})")
        if self.retry_strategy not in RetryStrategy.__members__:
            raise InputError(f"retry_strategy must be one of "
                             f"{', '.join(RetryStrategy.__members__)} "
                             f"(got {shown(self.retry_strategy)})")
        if self.backend not in BACKENDS:
            raise InputError(f"backend must be one of {', '.join(BACKENDS)} "
                             f"(got {shown(self.backend)})")
        if not _whole(self.seed, -(2 ** 63), 2 ** 63 - 1):
            raise InputError(f"seed must be a whole number in [-2**63, 2**63 - 1] "
                             f"(got {shown(self.seed)})")
        start = self.start
        if start is not None and (isinstance(start, bool) or not isinstance(start, int | float)
                                  or not 0 <= start <= MAX_START):
            raise InputError(f"start must be epoch seconds in [0, {MAX_START}] "
                             f"(got {shown(start)})")
        if self.schedule is not None and self.tasks is None:
            raise InputError("a schedule needs its tasks (--tasks FILE)")
        ExecutorConfig(RetryStrategy[self.retry_strategy], self.max_retries, self.timeout_s,
                       self.max_parallel)  # checks them


@attrs.frozen
class WaveRunSummary:
    """What ``buddy run waves`` prints at the end."""

    out_dir: Path
    tasks: int
    completed: int
    failed: int
    waves: int
    agents: int
    skipped: tuple[str, ...]
    health_score: float
    health: str
    anomalies: int
    signals: int
    seconds: float
    report: Path
    audit_log: Path
    audit_seq: tuple[int, int]
    replay: str = ""
    tasks_by_mode: dict[str, int] = attrs.field(factory=dict)
    lock_note: str | None = None
    recovered: int = 0
    #: with an optimizer objective: its report's path, the objective, what its score
    #: measures and the first and last waves' scores
    phase19: dict[str, Any] | None = None

    @property
    def tasks_per_second(self) -> float:
        return self.tasks / self.seconds if self.seconds > 0 else math.inf


@attrs.frozen
class _Inputs:
    tasks: list[PredictedTask]
    agents: list[str]                       # in order
    permissions: dict[str, frozenset[str]]  # what each agent may use (the engine enforces it)
    skipped: tuple[str, ...]


def _inputs(config: WaveRunConfig, registry: ToolContractRegistry) -> _Inputs:
    """The tasks, the agents and their permissions, and the lines skipped.

    Agents: ``--agents-file``'s, else ``agent_0``... and any a task or the schedule
    pins a task to; without an agents file each holds the default scenario's
    permissions (so a tool needing another is refused: fail closed).
    """
    permissions = load_permissions(config.agents_file) if config.agents_file else None
    if permissions is not None and len(permissions) > MAX_AGENTS:
        raise InputError(f"{config.agents_file}: {len(permissions):,} agents; a run takes at "
                         f"most {MAX_AGENTS:,}")
    agents = list(permissions) if permissions is not None else \
        [f"agent_{i}" for i in range(config.agents)]
    skipped: list[str] = []
    if config.tasks is None:
        tasks = default_tasks(config.seed, waves=config.waves,
                              tasks_per_wave=config.tasks_per_wave)
    else:
        loaded = load_tasks(config.tasks, registry, strict=config.strict)
        tasks, skipped = list(loaded.tasks), list(loaded.errors)
        if config.schedule is not None:
            schedule = load_schedule(config.schedule, strict=config.strict)
            skipped += schedule.errors
            tasks, problems = apply_schedule(tasks, schedule, strict=config.strict)
            if problems and config.strict:
                raise InputError(problems[0])
            skipped += problems
        if not tasks:
            raise InputError(f"{config.tasks}: no task to run")
        if permissions is None:  # agents a task or the schedule names join, in order
            for t in tasks:
                if t.agent_id is not None and t.agent_id not in agents:
                    agents.append(t.agent_id)
            if len(agents) > MAX_AGENTS:
                raise InputError(f"{config.tasks}: its tasks name {len(agents):,} agents; a "
                                 f"run takes at most {MAX_AGENTS:,}")
        else:  # a task pinned to an agent the agents file does not name: refused
            known = set(agents)
            stray = [f"{config.tasks}: task {shown(t.task_id)}: agent_id {shown(t.agent_id)} "
                     f"is not an agent of {config.agents_file}" for t in tasks
                     if t.agent_id is not None and t.agent_id not in known]
            if stray and config.strict:
                raise InputError(stray[0])
            skipped += stray
            tasks = [t for t in tasks if t.agent_id is None or t.agent_id in known]
            if not tasks:
                raise InputError(f"{config.tasks}: no task to run")
    if permissions is None:
        permissions = {a: SCENARIO_PERMISSIONS for a in agents}
    return _Inputs(tasks, agents, permissions, tuple(skipped))


def _read_trail(audit: AuditLog, ledger: ExecutionLedger, registry: ToolContractRegistry,
                ) -> tuple[int | None, int]:
    """Read the trail a run continues, once: its irreversible actions run LIVE (ok or
    not: a failed call may have acted) or cut short mid-call by a crash go to
    ``ledger`` (a duplicate is refused by the constraint gate), and every task an
    earlier run left unfinished (killed mid-wave) is closed with a ``cancel`` move on
    the agent it was last put on (a reassignment after its last move counts), so no
    task stays IN_PROGRESS. Returns the seq of the lock event in force (None:
    unlocked) and how many tasks were closed."""
    lock: int | None = None
    open_tasks: dict[str, tuple[str, str, dict[str, Any]]] = {}
    moved: dict[Any, Any] = {}  # task id -> the agent a reassign after its last move named
    irreversible_failed: list[tuple[Any, Any, dict[str, Any]]] = []

    def executions() -> Iterator[dict[str, Any]]:
        nonlocal lock
        for r in audit.records():
            kind = r["kind"]
            if kind == "execution":
                d = r["data"]
                if d.get("mode") == "LIVE" and not d.get("ok"):  # it may have happened
                    irreversible_failed.append((d.get("tool"), d.get("args_digest"), r))
                yield r
            elif kind == "transition" and r["machine"] == "task":
                moved.pop(r["data"].get("task"), None)
                if r["dst"] in ("COMPLETED", "FAILED"):
                    open_tasks.pop(r["subject"], None)
                else:
                    open_tasks[r["subject"]] = (r["dst"], r["event"], r["data"])
            elif kind == "schedule" and r["event"] == "reassign":
                moved[r["data"].get("task")] = r["data"].get("to")
            elif kind == "lock":
                lock = r["seq"]
            elif kind == "unlock":
                lock = None

    ledger.load_history(executions())
    for tool, digest, r in irreversible_failed:  # a failed LIVE run counts as done too
        if isinstance(tool, str) and isinstance(digest, str) and tool in registry and \
                not registry.get(tool).reversible:
            ledger.done_actions.setdefault((tool, digest), str(r.get("subject")))
    for subject, (state, event, data) in open_tasks.items():
        tool, digest = data.get("tool"), data.get("args_digest")
        if state == "IN_PROGRESS" and isinstance(tool, str) and isinstance(digest, str):
            ledger.done_actions.setdefault((tool, digest), subject)  # cut short mid-call
        retries = data.get("attempts", 0) + (state == "RETRYING" and event == "fail")
        audit.append("transition", "task", subject, "cancel", state, "FAILED", {
            "attempts": retries, "max_retries": data.get("max_retries", 0),
            "gate_allows": True, "rules": data.get("rules"), "task": data.get("task"),
            "agent": moved.get(data.get("task"), data.get("agent"))})  # where it was moved
    return lock, len(open_tasks)


def _agent_dirs(agents: Sequence[str]) -> dict[str, str]:
    """Each agent's directory name: its id when plain and unique, else ``agent_<index>``."""
    names = {a: a if _PLAIN.fullmatch(a) else f"agent_{i}" for i, a in enumerate(agents)}
    if len(set(names.values())) < len(names):
        names = {a: f"agent_{i}" for i, a in enumerate(agents)}
    return names


def _check_output_paths(out: Path, waves: Sequence[int], dirs: Sequence[str]) -> None:
    """Refuse, before anything is touched, an output path that is not what buddy writes
    there: a directory or anything but a regular file where a file goes; a ``wave_N``
    this run writes that is not a directory buddy made (a user's ``wave_7/notes``
    would be lost), or whose agent directories are not directories."""
    for n in waves:
        wave = out / f"wave_{n}"
        if wave.is_symlink() or wave.exists() and not (wave.is_dir()
                                                       and (wave / WAVE_MARK).is_file()):
            raise FileExistsError(errno.EEXIST, "exists and is not a directory buddy run "
                                  "waves wrote (move it away, or use another --out)",
                                  str(wave))
        for name in dirs:
            path = wave / name
            if path.is_symlink() or path.exists() and not path.is_dir():
                raise FileExistsError(errno.EEXIST, "exists and is not a directory, where "
                                      "buddy run waves writes one (move it away, or use "
                                      "another --out)", str(path))
    p19 = out / PHASE19_DIR
    if p19.is_symlink() or p19.exists() and not (p19.is_dir() and (p19 / WAVE_MARK).is_file()):
        raise FileExistsError(errno.EEXIST, "exists and is not a directory buddy run waves "
                              "wrote (move it away, or use another --out)", str(p19))
    audit = out / AUDIT_FILE
    for path in (*(out / name for name in OUTPUT_FILES), audit, anchor_path(audit)):
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "is a directory, where buddy run waves "
                                    "writes a file (move it away, or use another --out)",
                                    str(path))
        if path.exists() and not path.is_file():
            raise OSError(errno.EINVAL, "is not a regular file, where buddy run waves writes "
                          "one (move it away, or use another --out)", str(path))


def _remove_outputs(out: Path) -> None:
    """The previous run's derived outputs (never the audit trail), and temp files."""
    p19 = out / PHASE19_DIR
    if p19.is_dir() and not p19.is_symlink() and (p19 / WAVE_MARK).is_file():
        _remove_written(p19, PHASE19_FILES)  # what buddy wrote there: a user's files stay
        if [p.name for p in p19.iterdir()] == [WAVE_MARK]:  # nothing of the user's: gone
            (p19 / WAVE_MARK).unlink()
            p19.rmdir()  # else it stays marked, so a later run may write there again
    _remove_written(out, OUTPUT_FILES)


def _remove_written(out: Path, names: Sequence[str]) -> None:
    """The files ``names`` under ``out`` and their temp files, and the ``wave_N``
    directories buddy wrote there (marked)."""
    for name in names:
        (out / name).unlink(missing_ok=True)
        for tmp in out.glob(f".{name}.*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    for child in out.iterdir():  # only the wave directories buddy wrote (marked)
        if _WAVE_DIR.fullmatch(child.name) and child.is_dir() and not child.is_symlink() \
                and (child / WAVE_MARK).is_file():
            shutil.rmtree(child)


def run_waves(config: WaveRunConfig, *,
              progress: Callable[[int, int, int, int], None] | None = None) -> WaveRunSummary:
    """Run the waves of ``config`` and write the output tree (see the module docstring).

    ``progress(wave, waves, tasks done, tasks)`` is called as each wave ends.
    Raises :class:`InputError` (a refused input, with ``strict``; bad settings),
    :class:`RuleTableError`, :class:`OSError` for output paths that are not
    regular files, :class:`BlockingIOError` when another run holds the directory.
    """
    registry = ToolContractRegistry.from_toml(config.catalogue) if config.catalogue else \
        ToolContractRegistry.default()
    tables = _tables(config.rules_dir, WAVE_RULE_TABLES, of=" of a wave run")
    inputs = _inputs(config, registry)
    waves = by_wave(inputs.tasks)
    out = config.output_dir
    dirs = _agent_dirs(inputs.agents)
    _check_output_paths(out, list(waves), list(dirs.values()))
    out.mkdir(parents=True, exist_ok=True)
    with _run_lock(out):
        _check_output_paths(out, list(waves), list(dirs.values()))  # held now: again
        return _run(config, registry, tables, inputs, waves, dirs, progress)


def _run(config: WaveRunConfig, registry: ToolContractRegistry, tables: dict[str, Any],
         inputs: _Inputs, waves: dict[int, list[PredictedTask]], dirs: dict[str, str],
         progress: Callable[[int, int, int, int], None] | None) -> WaveRunSummary:
    tasks, agents, skipped = inputs.tasks, inputs.agents, inputs.skipped
    out = config.output_dir
    simulated_scenario = config.tasks is None
    start = time.time() if config.start is None else float(config.start)
    clock = VirtualClock(start)
    audit_path = out / AUDIT_FILE
    continued = audit_path.exists() and audit_path.stat().st_size > 0
    # shared, not exclusive: another process may lock the system (an emergency stop)
    # while the run goes on, and every call after its lock event runs MOCK only
    audit = AuditLog.open(audit_path, clock=clock, key=config.audit_key)
    try:
        first_seq = audit.last_seq + 1 if continued else 1
        ledger = ExecutionLedger(keep_history=False, digest=audit.args_digest)
        lock_at_start, recovered = None, 0
        if continued:  # what earlier runs did: irreversible actions done; tasks cut short
            lock_at_start, recovered = _read_trail(audit, ledger, registry)
    except BaseException:
        audit.close()
        raise
    profiles = {p.agent_id: p for p in default_agents(config.agents, config.seed)}
    _remove_outputs(out)
    masker = Masker()
    write_atomic(out / TASKS_FILE, tasks_to_jsonl(
        [attrs.evolve(t, args=masker.mask(dict(t.args))) for t in tasks]), fsync=False)
    engine = Engine(registry, tables["escalation.toml"], audit=audit, clock=clock,
                    agents=inputs.permissions)
    WaveSimulator(registry, config.seed, profiles).install(engine)
    scheduler = None
    if config.strategy in OBJECTIVES:
        scheduler = AdaptiveScheduler(config.strategy, tables["optimizer.toml"],
                                      load_threshold=config.load_threshold,
                                      max_parallel=config.max_parallel)
    manager = AgentManager(agents, scheduler or config.strategy, clock=clock)
    retry = RetryStrategy[config.retry_strategy]
    exec_config = ExecutorConfig(retry, config.max_retries, config.timeout_s, config.max_parallel,
                                 max_mode=ExecutionMode.DRY_RUN if config.dry_run_only else None)
    backend = VirtualTimeBackend(config.max_parallel) if config.backend == "virtual" else \
        ThreadBackend(config.max_parallel)
    executor = WaveExecutor(engine, manager, tables["gates.toml"], tables["retry.toml"],
                            exec_config, clock=clock, backend=backend, ledger=ledger)
    monitor = WaveMonitor(tables["wave_anomalies.toml"], tables["wave_health.toml"],
                          tables["health.toml"], clock=clock)
    feedback = WaveFeedback(tables["wave_signals.toml"], clock=clock)
    loop = WaveLoop(manager, executor, feedback, monitor, clock=clock, start=start,
                    scheduler=scheduler)
    sinks = {target: _Lines(out / name) for target, name in TARGET_FILES.items()}
    every = _Lines(out / SIGNALS_FILE)
    writes: list[_Lines | Phase19Writer] = [*sinks.values(), every]
    phase19 = None
    if scheduler is not None:
        phase19 = Phase19Writer(
            out / PHASE19_DIR, dirs, scheduler, OptimizationMonitor(
                tables["optimization_metrics.toml"], tables["scheduling_anomalies.toml"],
                tables["optimization_health.toml"], tables["health.toml"], clock=clock),
            OptimizationFeedbackLoop(tables["optimization_signals.toml"], _learning_from(
                tables["heuristics.toml"], tables["optimizer.toml"]), clock=clock),
            clock=clock, mark=WAVE_MARK)
        writes.append(phase19)
    for target, lines in sinks.items():
        feedback.subscribe(target, _sink(lines))
    counts: Counter[tuple[str, str, str]] = Counter()
    modes: Counter[str] = Counter()  # the mode of each task's last attempt ("NOT_RUN")
    waves_seen: list[dict[str, Any]] = []
    done = [0, 0, 0]  # tasks, completed, signals
    total = len(tasks)

    def on_wave(o: WaveOutcome) -> None:
        for s in o.signals:
            every.write(s.to_json())
        _write_wave(out, o, dirs)
        if phase19 is not None:
            phase19.wave(o)
        counts.update(o.run.transitions)
        modes.update(r.mode or "NOT_RUN" for r in o.run.results)
        done[0] += len(o.run.results)
        done[1] += sum(r.success for r in o.run.results)
        done[2] += len(o.signals)
        waves_seen.append(_wave_row(o))
        if progress is not None:
            progress(len(waves_seen), len(waves), done[0], total)

    began = time.perf_counter()
    try:
        loop.run(waves, on_wave)
    finally:
        seconds = time.perf_counter() - began
        audit.close()
        for stream in writes:
            stream.close()
    end = loop.now
    history = monitor.history
    last = history[-1]
    health_doc = {
        "wave": last.wave, "health_score": last.health_score,
        "health_status": last.health_status, "metrics": dict(last.metrics),
        "anomalies": [a.to_json() for h in history for a in h.anomalies],
        "waves": [h.to_json() for h in history],
        "confidence_trajectory": monitor.track_confidence_trajectory(),
        "learning": feedback.waves,
    }
    write_atomic(out / HEALTH_FILE, json_doc(health_doc))
    plot = _plot(out / PLOT_FILE, waves_seen)
    summary: dict[str, Any] = {
        "pipeline_id": "phase21_" + dt.datetime.fromtimestamp(start, dt.UTC)
        .strftime("%Y%m%d_%H%M%S"),
        "start_time": _iso(start), "end_time": _iso(end),
        "simulated": True,
        "scenario": "default (simulated)" if simulated_scenario else str(config.tasks),
        "seed": config.seed,
        "total_tasks": done[0], "completed_tasks": done[1], "failed_tasks": done[0] - done[1],
        "waves": len(waves), "agents": agents,
        "agent_dirs": dirs,
        "assignment_strategy": config.strategy, "retry_strategy": config.retry_strategy,
        "max_retries": executor.max_retries, "timeout_s": executor.timeout_s,
        "max_parallel": config.max_parallel, "backend": config.backend,
        "dry_run_only": config.dry_run_only,
        "tasks_by_mode": {m: modes[m] for m in ("LIVE", "DRY_RUN", "MOCK", "NOT_RUN")},
        "system_lock": {"at_start": lock_at_start, "at_end": _lock_seq(audit_path)
                        if audit.locked else None},
        "recovered_tasks": recovered,
        "skipped_lines": list(skipped),
        "system_health": {"health_score": last.health_score,
                          "health_status": last.health_status},
        "per_wave": waves_seen,
        "agent_performance": manager.evaluate_agent_performance(),
        "task_transitions": [{"from": s, "trigger": t, "to": d, "count": n}
                             for (s, t, d), n in sorted(counts.items())],
        "learning_signals": done[2],
        "rules": {name: table.digest for name, table in tables.items()},
        "audit_log": AUDIT_FILE, "audit_seq": [first_seq, audit.last_seq],
        "replay": f"buddy replay {AUDIT_FILE}" + (
            " --key-file FILE (or --key-env VAR)" if config.audit_key is not None else ""),
    }
    report = out / REPORT_FILE
    write_atomic(report, _report({**summary, "lock_note": _lock_note(
        lock_at_start, summary["system_lock"]["at_end"])}, history, manager, counts,
        feedback.waves, plot))
    p19: dict[str, Any] | None = None
    if phase19 is not None:
        summary["phase19"] = f"{PHASE19_DIR}/{SUMMARY19}"
        trend = phase19.finish({"agents": len(agents), "simulated": True,
                                "audit_log": AUDIT_FILE, "dry_run_only": config.dry_run_only,
                                "lock_note": _lock_note(lock_at_start,
                                                        summary["system_lock"]["at_end"])},
                               seconds)["objective_trend"]
        p19 = {"report": out / PHASE19_DIR / REPORT19, "objective": config.strategy,
               **trend}
    write_atomic(out / SUMMARY_FILE, json_doc(summary))  # last: the run is done
    return WaveRunSummary(out, done[0], done[1], done[0] - done[1], len(waves), len(agents),
                          skipped, last.health_score, last.health_status,
                          sum(len(h.anomalies) for h in history), done[2], seconds, report,
                          audit_path, (first_seq, audit.last_seq),
                          replay=f"buddy replay {shlex.quote(str(audit_path))}" + (
                              " --key-file FILE (or --key-env VAR)"
                              if config.audit_key is not None else ""),
                          tasks_by_mode=summary["tasks_by_mode"],
                          lock_note=_lock_note(lock_at_start, summary["system_lock"]["at_end"]),
                          recovered=recovered, phase19=p19)


def _learning_from(heuristics: HeuristicsTable, optimizer: OptimizerTable) -> HeuristicsTable:
    """``heuristics`` learning from the weights the run plans its first wave with
    (``optimizer.toml``'s), held in its bounds, so a user's weights are the start."""
    weights = dict(optimizer.weights)
    return attrs.evolve(heuristics, weights=heuristics.update(weights, dict.fromkeys(weights,
                                                                                     0.0)))


def _lock_seq(path: Path) -> int | None:
    """The seq of the last lock event of the trail at ``path`` (it is locked)."""
    seq = None
    for r in AuditLog.read_records(path):
        if r["kind"] == "lock":
            seq = r["seq"]
    return seq


def _sink(lines: _Lines) -> Callable[[LearningSignal], None]:
    """A signal sink writing each signal as a line of ``lines``."""
    def write(signal: LearningSignal) -> None:
        lines.write(signal.to_json())
    return write


def _write_wave(out: Path, o: WaveOutcome, dirs: dict[str, str]) -> None:
    """The wave's four files per agent (every agent that was assigned, ran or was
    measured), each written whole."""
    wave = o.plan.wave
    assigned: dict[str, list[dict[str, Any]]] = {}
    for a in (*o.plan.assignments, *o.run.reassigned):
        assigned.setdefault(a.agent_id, []).append(a.to_json())
    executed: dict[str, list[dict[str, Any]]] = {}
    per_task: dict[str, list[dict[str, Any]]] = {}
    for r, m in zip(o.run.results, o.run.metrics, strict=True):
        executed.setdefault(r.agent_id, []).append(r.to_json())
        per_task.setdefault(r.agent_id, []).append({"kind": "task", **m.to_json()})
    feedback: dict[str, list[dict[str, Any]]] = {}
    for s in o.signals:
        agent = s.content.get("agent_id")
        if isinstance(agent, str):
            feedback.setdefault(agent, []).append(s.to_json())
    for agent, name in dirs.items():
        metrics = [{"kind": "agent", **m.to_json()} for m in o.agent_metrics.get(agent, ())]
        if not (agent in assigned or agent in executed or metrics):
            continue
        d = out / f"wave_{wave}" / name
        if not d.parent.is_dir():
            d.parent.mkdir()
            (d.parent / WAVE_MARK).write_bytes(b"written by buddy run waves\n")
        d.mkdir(exist_ok=True)
        for file, items in (("agent_assignments.jsonl", assigned.get(agent, [])),
                            ("executed_tasks.jsonl", executed.get(agent, [])),
                            ("agent_metrics.jsonl", metrics + per_task.get(agent, [])),
                            ("agent_feedback.jsonl", feedback.get(agent, []))):
            write_atomic(d / file, jsonl(items), fsync=False)


def _wave_row(o: WaveOutcome) -> dict[str, Any]:
    h = o.health
    m = h.metrics
    return {"wave": h.wave, "tasks": m["tasks"], "completed": m["completed"],
            "success_rate": m["success_rate"], "availability": m["availability"],
            "accuracy": m["accuracy"], "load_balance": m["load_balance"],
            "confidence": m["confidence"], "health_score": h.health_score,
            "health_status": h.health_status, "anomalies": len(h.anomalies),
            "signals": len(o.signals), "load_balance_planned": round(
                o.plan.load_balance_score, 4), "reassigned": len(o.run.reassigned),
            "retries": o.run.retries, "start": o.run.start, "end": o.run.end}


def _plot(path: Path, rows: Sequence[dict[str, Any]]) -> Path | None:
    """Health (0-100) and success (%) per wave as a PNG; None without matplotlib."""
    return per_wave_png(path, [r["wave"] for r in rows], [
        ("health score", [r["health_score"] for r in rows], "o"),
        ("success rate (%)", [100 * r["success_rate"] for r in rows], "s")],
        title="buddy wave run (SIMULATED tools): health and success per wave", ylim=(0, 105))


def _report(summary: dict[str, Any], history: Sequence[Any], manager: AgentManager,
            counts: Counter[tuple[str, str, str]], learning: Sequence[dict[str, Any]],
            plot: Path | None) -> str:
    """The Markdown report: health per wave, anomalies, agents, the lifecycle, learning."""
    tasks = summary["total_tasks"]
    lines = [
        f"# buddy wave run {summary['pipeline_id']}", "",
        ("The default scenario" if summary["scenario"].startswith("default") else
         f"Tasks from {md_cell(summary['scenario'])}") +
        f"; seed {summary['seed']}. Every task is a tool call decided, run and audited by "
        "the engine; the tools' handlers are SIMULATED (seeded, deterministic stand-ins "
        "that touch nothing) and time is a virtual clock.", "",
        "| | |", "|---|---|",
        *([f"| system lock | {summary['lock_note']} |"] if summary.get("lock_note") else []),
        *(["| mode cap | every call capped at DRY_RUN (--dry-run-only) |"]
          if summary["dry_run_only"] else []),
        f"| tasks | {tasks} ({summary['completed_tasks']} completed, "
        f"{summary['failed_tasks']} failed) |",
        "| tasks by mode (last attempt) | " + ", ".join(
            f"{m} {n}" for m, n in summary["tasks_by_mode"].items()) + " |",
        *([f"| recovered | {summary['recovered_tasks']} task(s) an interrupted earlier run "
           "left unfinished, closed as FAILED |"] if summary["recovered_tasks"] else []),
        f"| waves × agents | {summary['waves']} × {len(summary['agents'])} |",
        f"| assignment strategy | {md_cell(summary['assignment_strategy'])} |",
        f"| retry strategy | {summary['retry_strategy']} (max {summary['max_retries']} "
        f"retries, timeout {summary['timeout_s']:g} s) |",
        f"| final health | {summary['system_health']['health_score']:.2f} "
        f"({summary['system_health']['health_status']}) |",
        f"| learning signals | {summary['learning_signals']} |",
        f"| skipped input lines | {len(summary['skipped_lines'])} |",
        f"| audit trail | `{AUDIT_FILE}` (`{summary['replay']}`), seq "
        f"{summary['audit_seq'][0]} to {summary['audit_seq'][1]} |", "",
        "## Health per wave", "",
        "Health = 40 % success + 20 % availability + 20 % accuracy + 20 % load balance "
        "(`wave_health.toml`), tiers from `health.toml`.", "",
        "| wave | tasks | success | availability | accuracy | load balance | confidence "
        "| health | tier | anomalies |",
        "|---|---|---|---|---|---|---|---|---|---|"]
    for h in history:
        m = h.metrics
        lines.append(f"| {h.wave} | {m['tasks']} | {pct(m['success_rate'])} | "
                     f"{pct(m['availability'])} | {pct(m['accuracy'])} | "
                     f"{m['load_balance']:.2f} | {m['confidence']:.2f} | {h.health_score:.2f} | "
                     f"{h.health_status} | {len(h.anomalies)} |")
    lines.append("")
    if plot is not None:
        lines += [f"![health and success per wave]({plot.name})", ""]
    else:
        lines += ["(No plot: matplotlib is not installed; `pip install 'buddy[graphs]'`.)", ""]
    lines += ["## Anomalies", ""]
    found = [a for h in history for a in h.anomalies]
    if found:
        lines += ["| wave | anomaly | severity | agent | metric | value | threshold | "
                  "description | recommendation |", "|---|---|---|---|---|---|---|---|---|"]
        for a in found:
            lines.append(f"| {a.wave} | {a.anomaly_type} | {a.severity} | "
                         f"{md_cell(a.agent_id or '-')} | {a.metric} | {a.value} | "
                         f"{a.threshold} | {md_cell(a.description)} | "
                         f"{md_cell(a.recommendation)} |")
    else:
        lines.append("None.")
    lines += ["", "## Agents", "",
              "| agent | status | tasks held (after reassignments) | completed | failed | "
              "success rate | "
              "avg latency (s) |", "|---|---|---|---|---|---|---|"]
    for agent, s in manager.agents.items():
        lines.append(f"| {md_cell(agent)} | {s.status.value} | {s.assigned_tasks} | "
                     f"{s.completed_tasks} | {s.failed_tasks} | {pct(s.success_rate)} | "
                     f"{s.avg_latency:.3f} |")
    lines += ["", "## The task lifecycle", "",
              "Each edge is labelled with how many times the run's tasks took it.", "",
              "```mermaid", machine_to_mermaid(MACHINES["task"], counts).rstrip(), "```", "",
              "## Learning", "", "| wave | signals by target | patterns |", "|---|---|---|"]
    for w in learning:
        targets = ", ".join(f"{t} {n}" for t, n in w["signals_by_target"].items()) or "-"
        lines.append(f"| {w['wave']} | {targets} | "
                     f"{md_cell('; '.join(w['patterns']) or '-')} |")
    if summary["skipped_lines"]:
        lines += ["", "## Skipped input lines", ""]
        lines += [f"- {md_cell(printable(line))}" for line in summary["skipped_lines"]]
    return "\n".join(lines) + "\n"
