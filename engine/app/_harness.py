"""The end-to-end run behind ``buddy run`` (Phase 24's harness).

:func:`run` loads plans (a file, or the SIMULATED default scenario), pushes them
through the orchestration cycle in batches, and writes, under ``out_dir``:

- the seven files of Phase 24: ``tool_execution_log.jsonl``,
  ``orchestration_summary.json``, ``execution_state_transitions.jsonl``,
  ``tool_conflicts.json``, ``rollback_events.jsonl``, ``learning_signals.jsonl``,
  ``system_health.json``;
- ``report.md``, for a person: the dependency graph and the controller machine
  as Mermaid diagrams, tables of decisions, conflicts, anomalies and signals;
- ``audit.jsonl`` (+ ``.anchor``), the hash-chained audit trail, which ``buddy
  replay`` verifies.

Nothing already written is lost: a run into a directory holding a trail
continues it (after verifying it, with its key if it has one, and only when its
decisions used this run's escalation table: replay verifies one table per
trail), and reads the executions recorded in it, so an irreversible action an
earlier run did LIVE is a DUPLICATE_ACTION now. One run at a time: a run holds
an exclusive ``flock`` on ``.buddy-run.lock`` in the directory from before it
reads the trail until its summary is written. The files derived from the trail
cover this run's events only (``audit_seq`` in the summary); ``system_lock``
says whether the trail's system lock held at the run's start and end. Every
input (settings, rule tables, plans, output paths, the trail) is checked before
any file is touched; only then are the previous run's outputs removed, so a run
that dies half-way never leaves an old summary beside its new, partial files.
JSON files (and ``report.md``) are written atomically (temp file, then rename),
``orchestration_summary.json`` last of all: it is there only once the run
finished. JSON Lines files are appended line by line, flushed. The same seed,
start and rules into a fresh directory give byte-identical files.

A run is linear in its plans and its memory flat: each cycle's outcomes,
conflicts and resolutions go to the files as the cycle ends (those of
``report.md`` and ``tool_conflicts.json`` to anonymous temporary files in the
output directory, copied into the final file when it is written), and the trail
is read back once, a line at a time, for the files derived from it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import os
import re
import shlex
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import attrs
import orjson

from buddy.engine.app._printable import md_cell, printable
from buddy.engine.core._audit import AuditLog
from buddy.engine.core._chain import anchor_path
from buddy.engine.core._engine import Engine
from buddy.engine.orchestration._conflicts import ConflictResolver
from buddy.engine.orchestration._feedback import FeedbackLoop
from buddy.engine.orchestration._monitor import Monitor
from buddy.engine.orchestration._orchestrator import (
    CycleRecord,
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
from buddy.rules.base._masking import shown
from buddy.rules.base._values import ExecutionMode, valid_confidence
from buddy.rules.base.errors import AuditFormatError, InputError, RuleTableError
from buddy.rules.tables._catalogue import ToolContractRegistry
from buddy.rules.tables._conflicts import ConflictTable
from buddy.rules.tables._escalation import EscalationTable
from buddy.rules.tables._monitoring import AnomalyTable, HealthTable
from buddy.rules.tables._signals import SignalTable

__all__ = ["AUDIT_FILE", "MAX_START", "OUTPUT_FILES", "RULE_TABLES", "RUN_LOCK", "RunConfig",
           "RunSummary", "run"]

OUTPUT_FILES = ("tool_execution_log.jsonl", "orchestration_summary.json",
                "execution_state_transitions.jsonl", "tool_conflicts.json",
                "rollback_events.jsonl", "learning_signals.jsonl", "system_health.json")
REPORT_FILE = "report.md"
AUDIT_FILE = "audit.jsonl"
#: The file in the output directory a run holds an exclusive ``flock`` on for its whole life.
RUN_LOCK = ".buddy-run.lock"

#: The tables a rules directory may hold, by file name.
RULE_TABLES: dict[str, Any] = {"anomalies.toml": AnomalyTable, "conflicts.toml": ConflictTable,
                               "escalation.toml": EscalationTable, "health.toml": HealthTable,
                               "signals.toml": SignalTable}

#: The latest start of the simulated clock: 9999-01-01T00:00:00Z, a year short of the
#: last second a ``datetime`` can name, room for the run's simulated time.
MAX_START = 253_370_764_800
_SEED_MIN, _SEED_MAX = -(2 ** 63), 2 ** 63 - 1


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_seed(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not _whole(value) or not _SEED_MIN <= value <= _SEED_MAX:
        raise InputError(f"seed must be a whole number in [-2**63, 2**63 - 1] "
                         f"(got {shown(value)})")


def _check_start(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    # (NaN compares false; no float conversion, which a huge int would overflow)
    if isinstance(value, bool) or not isinstance(value, int | float) or \
            not 0 <= value <= MAX_START:
        raise InputError(f"start must be epoch seconds in [0, {MAX_START}] "
                         f"(got {shown(value)})")


def _check_max_live(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (not _whole(value) or value < 0):
        raise InputError(f"max_live_escalations must be a whole number >= 0 or None "
                         f"(got {shown(value)})")


def _check_floor(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not valid_confidence(value):
        raise InputError(f"confidence_threshold_for_live must be a number in [0, 1] or None "
                         f"(got {shown(value)})")


@attrs.frozen
class RunConfig:
    """Settings of a run (Phase 24's ``Phase24ExecutionConfig``, and what a user adds).

    ``approval_required_for_high_risk`` and ``enable_rollback_on_failure``
    cannot be turned off (HIGH risk tools require approval by contract; a LIVE
    failure always rolls back its plan's reversible actions): they are kept for
    the Phase 24 shape, and refuse False. ``rules_dir`` may hold any of
    ``escalation.toml``, ``conflicts.toml``, ``anomalies.toml``, ``health.toml``,
    ``signals.toml`` (at least one, and no other ``*.toml``); the shipped table
    stands in for each one missing. ``seed`` is a signed 64-bit whole number;
    ``start``, the simulated clock's start (default: now), epoch seconds in
    ``[0, MAX_START]``. Bad values raise :class:`InputError`.

    >>> RunConfig(start=float("nan"))
    Traceback (most recent call last):
    ...
    buddy.rules.base.errors.InputError: start must be epoch seconds in [0, 253370764800] (got nan)
    """

    output_dir: Path = Path("buddy-out")
    plans: Path | None = None
    seed: int = attrs.field(default=24, validator=_check_seed)
    dry_run_only: bool = False
    max_live_escalations: int | None = attrs.field(default=None, validator=_check_max_live)
    approval_required_for_high_risk: bool = True
    confidence_threshold_for_live: float | None = attrs.field(default=None,
                                                              validator=_check_floor)
    enable_rollback_on_failure: bool = True
    plans_per_cycle: int = 4
    catalogue: Path | None = None
    rules_dir: Path | None = None
    audit_key: bytes | None = attrs.field(default=None, repr=False)
    start: float | None = attrs.field(default=None, validator=_check_start)

    def __attrs_post_init__(self) -> None:
        if not self.approval_required_for_high_risk:
            raise InputError("approval_required_for_high_risk cannot be turned off: HIGH risk "
                             "tools require approval by contract")
        if not self.enable_rollback_on_failure:
            raise InputError("enable_rollback_on_failure cannot be turned off: a LIVE failure "
                             "always rolls back its plan's reversible actions")
        if not _whole(self.plans_per_cycle) or self.plans_per_cycle < 1:
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
    audit_seq: tuple[int, int] = (1, 1)  # this run's events in the trail, first and last
    earlier_executions: int = 0  # read from the trail this run continued
    replay: str = ""  # the command that verifies the trail
    #: The seq of the trail's lock event in force at the start and at the end of the run
    #: (None: unlocked then). While the system is locked every call runs MOCK only.
    system_lock: tuple[int | None, int | None] = (None, None)

    @property
    def lock_note(self) -> str | None:
        """What to tell a person about the system lock; None when it held at neither end."""
        return _lock_note(*self.system_lock)


def _lock_note(start: int | None, end: int | None) -> str | None:
    """The system lock over a run, from the seqs of the lock events in force at its start
    and end (see :attr:`RunSummary.system_lock`)."""
    if start is None and end is None:
        return None
    if start == end:
        return f"LOCKED for the whole run, by the trail's lock event at seq {start}: calls ran " \
            "MOCK only"
    return ", ".join([
        "unlocked at the start" if start is None else
        f"LOCKED at the start (the trail's lock event at seq {start})",
        "unlocked at the end" if end is None else f"LOCKED at the end (lock event at seq {end})",
    ]) + ": calls decided while locked ran MOCK only"


def _tables(rules_dir: Path | None, tables: Mapping[str, Any] = RULE_TABLES, *,
            of: str = "") -> dict[str, Any]:
    """Every rule table of ``tables`` by file name: the user's from ``rules_dir``, else
    the shipped one (``of``: whose tables they are, for messages: " of a wave run").

    Raises :class:`RuleTableError` when ``rules_dir`` is not a directory, holds a
    ``*.toml`` that is no rule table (a misspelt name would silently run the
    shipped table), or holds none of them.
    """
    if rules_dir is None:
        return {name: cls.default() for name, cls in tables.items()}
    known = ", ".join(tables)
    if not rules_dir.is_dir():
        raise RuleTableError(f"{rules_dir}: no such directory")
    present = sorted(p.name for p in rules_dir.glob("*.toml"))
    unknown = [name for name in present if name not in tables]
    if unknown:
        raise RuleTableError([
            f"{rules_dir / name}: not a rule table{of} (known: {known})"
            + ("; the tool catalogue is given with --catalogue" if name == "tools.toml" else "")
            for name in unknown])
    if not present:
        raise RuleTableError(f"{rules_dir}: holds none of the rule tables (known: {known})")
    return {name: cls.from_toml(rules_dir / name) if name in present else cls.default()
            for name, cls in tables.items()}


def _iso(ts: float) -> str:
    try:
        return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")
    except (OverflowError, ValueError, OSError):  # a simulated clock far past year 9999
        return f"{ts:g} s since the epoch"


def _check_output_paths(out: Path) -> None:
    """Refuse an output path of ``out`` that is not a file (a directory at ``report.md``
    failed the run after all its work): :class:`IsADirectoryError` for a directory,
    :class:`OSError` for anything else that is not a regular file (a FIFO would block)."""
    audit = out / AUDIT_FILE
    for path in (*(out / name for name in (*OUTPUT_FILES, REPORT_FILE)), audit,
                 anchor_path(audit), out / RUN_LOCK):
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "is a directory, where buddy run writes a "
                                    "file (move it away, or use another --out)", str(path))
        if path.exists() and not path.is_file():
            raise OSError(errno.EINVAL, "is not a regular file, where buddy run writes one "
                          "(move it away, or use another --out)", str(path))


@contextlib.contextmanager
def _run_lock(out: Path) -> Iterator[None]:
    """Hold ``out`` for one run: an exclusive ``flock`` on its :data:`RUN_LOCK` file.

    Two runs into one directory would each read the trail before the other wrote
    (an irreversible action done twice) and interleave their outputs. The lock is
    the kernel's, so it ends with the process however it ends; the file stays.

    Raises :class:`BlockingIOError` at once when another run holds it.
    """
    path = out / RUN_LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise BlockingIOError(errno.EWOULDBLOCK, f"another buddy run is writing to {out} "
                                  "(wait for it to finish, or use another --out)",
                                  str(path)) from exc
        yield
    finally:
        os.close(fd)  # drops the lock


def _remove_outputs(out: Path) -> None:
    """Remove the previous run's derived outputs (never the audit trail), and any
    temporary file a crashed atomic write left."""
    for name in (*OUTPUT_FILES, REPORT_FILE):
        (out / name).unlink(missing_ok=True)
        for tmp in out.glob(f".{name}.*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


class _Lines:
    """A JSON Lines output: made new, appended and flushed per line."""

    def __init__(self, path: Path) -> None:
        self._fh: IO[bytes] = open(path, "wb")  # noqa: SIM115

    def write(self, obj: Any) -> None:
        self._fh.write(orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS) + b"\n")
        self._fh.flush()

    def close(self) -> None:
        os.fsync(self._fh.fileno())
        self._fh.close()


def run(config: RunConfig, *, progress: Callable[[int, int], None] | None = None,
        ) -> RunSummary:
    """Run the plans of ``config`` (or the default scenario) and write every output.

    Everything is checked before a file is touched: the rule tables, the
    catalogue, the plans (:class:`~buddy.rules.base.errors.PlanError` when there
    is none), the output paths (:class:`IsADirectoryError` for a directory where
    an output goes, :class:`OSError` for another file that is not a regular one)
    and the audit trail already in the output directory, which the run
    continues (:class:`~buddy.rules.base.errors.AuditChainBroken` when it does not
    verify, e.g. a keyed trail without its key). The run holds the output
    directory (:data:`RUN_LOCK`) from before it reads the trail until its summary
    is written; :class:`BlockingIOError` when another run holds it. Then the
    previous run's outputs (not the trail) are removed and the new ones written.
    """
    registry = ToolContractRegistry.from_toml(config.catalogue) if config.catalogue else \
        ToolContractRegistry.default()
    tables = _tables(config.rules_dir)
    rejected: tuple[str, ...] = ()
    if config.plans is not None:
        loaded = load_plans(config.plans, registry)
        plans, rejected = list(loaded.plans), loaded.errors
    else:
        plans = default_plans(config.seed)

    out = config.output_dir
    _check_output_paths(out)
    out.mkdir(parents=True, exist_ok=True)
    with _run_lock(out):  # before the trail is read; held until the summary is written
        return _run(config, registry, tables, plans, rejected, progress)


def _run(config: RunConfig, registry: ToolContractRegistry, tables: dict[str, Any],
         plans: Sequence[Any], rejected: tuple[str, ...],
         progress: Callable[[int, int], None] | None) -> RunSummary:
    """:func:`run` once its inputs are loaded and the output directory is held."""
    out = config.output_dir
    escalation: EscalationTable = tables["escalation.toml"]
    simulated = config.plans is None
    clock = SimulatedClock(time.time() if config.start is None else config.start)
    start = clock()
    audit_path = out / AUDIT_FILE
    continued = audit_path.exists() and audit_path.stat().st_size > 0
    audit = AuditLog.open(audit_path, clock=clock, key=config.audit_key)  # verifies it
    try:
        first_seq = audit.last_seq + 1 if continued else 1
        tables_used, lock_at_start = _read_trail(audit, first_seq)
        _check_one_table(audit, tables_used, escalation)
        resolver = ConflictResolver(registry, tables["conflicts.toml"],
                                    agents=AGENTS if simulated else None, audit=audit,
                                    keep_records=False)  # streamed cycle by cycle
        earlier = resolver.load_history(audit) if continued else 0
        _remove_outputs(out)  # every input checked: only now is anything replaced
        engine = Engine(registry, escalation, audit=audit, clock=clock,
                        approver=approver if simulated else None,
                        agents=AGENTS if simulated else None)
        tools = SimulatedTools(registry, config.seed, clock)
        tools.install(engine)
        if simulated:
            for agent, tool, calls in GRANTS:
                engine.grant(agent, tool, calls=calls, reason="scenario: scoped grant")
        monitor = Monitor(anomalies=tables["anomalies.toml"], health=tables["health.toml"],
                          clock=clock, history_limit=0)  # no output reads the snapshots
        feedback = FeedbackLoop(signals=tables["signals.toml"])
        orchestrator = ToolOrchestrator(
            engine, resolver, monitor=monitor, feedback=feedback, clock=clock.elapsed,
            limits=OrchestrationLimits(config.dry_run_only, config.max_live_escalations,
                                       config.confidence_threshold_for_live),
            keep_outcomes=False)  # streamed cycle by cycle
        streamed = _Streamed(out)
        try:
            _run_cycles(out, plans, orchestrator, config.plans_per_cycle, progress, streamed)
        except BaseException:
            streamed.close()
            raise
    finally:
        audit.close()
    with contextlib.closing(streamed):
        return _finish(config, out, registry, escalation, simulated, streamed, resolver,
                       monitor, feedback, rejected, start=start, end=clock(),
                       seqs=(first_seq, audit.last_seq), earlier=earlier,
                       lock_at_start=lock_at_start)


def _finish(config: RunConfig, out: Path, registry: ToolContractRegistry,
            escalation: EscalationTable, simulated: bool, streamed: _Streamed,
            resolver: ConflictResolver, monitor: Monitor, feedback: FeedbackLoop,
            rejected: tuple[str, ...], *, start: float, end: float, seqs: tuple[int, int],
            earlier: int, lock_at_start: int | None) -> RunSummary:
    """Write the files made once the cycles are done (the JSON Lines derived from the
    trail, then the JSON files and ``report.md``, the summary last) and say what ran."""
    audit_path = out / AUDIT_FILE
    first_seq, last_seq = seqs
    lock_at_end, rollbacks = _write_trail_files(
        out, _trail_events(audit_path, first_seq, last_seq), lock_at_start, end)
    conflicts = resolver.summary()
    write_atomic(out / "tool_conflicts.json", streamed.conflicts_file(conflicts))
    signals_out = feedback.export_signals()
    lines = _Lines(out / "learning_signals.jsonl")
    for signal in signals_out:
        lines.write(signal)
    lines.close()
    system_health = monitor.system_health()
    write_atomic(out / "system_health.json", _dumps(system_health))
    rules_absolute = None if config.rules_dir is None else Path(os.path.abspath(config.rules_dir))
    runs = streamed.runs  # None: not run
    by_mode = {m.value: runs[m] for m in sorted(ExecutionMode, key=lambda m: m.rank)}
    summary = {
        "pipeline_id": "phase24_" + dt.datetime.fromtimestamp(start, dt.UTC)
        .strftime("%Y%m%d_%H%M%S"),
        "start_time": _iso(start),
        "end_time": _iso(end),
        "plans_processed": streamed.plans,
        "plans_successful": streamed.plans_ok,
        "plans_failed": streamed.plans - streamed.plans_ok,
        "plans_rejected": len(rejected),
        "total_tools_executed": runs.total() - runs[None],
        "total_conflicts": conflicts["total_conflicts"],
        "total_rollbacks": rollbacks,
        "executions_by_mode": {**by_mode, "NOT_RUN": runs[None]},
        "seed": config.seed,
        "simulated": True,
        "scenario": "default (simulated)" if simulated else str(config.plans),
        "rules": {"escalation": escalation.digest, "catalogue": registry.digest},
        "audit_log": audit_path.name,
        # run from the output directory: the rules directory absolute (the same rules give
        # the same command, whatever directory they were named from)
        "replay": _replay_command(Path(audit_path.name), rules_absolute, escalation,
                                  keyed=config.audit_key is not None),
        "audit_seq": [first_seq, last_seq],
        "earlier_executions": earlier,
        "system_lock": {"at_start": lock_at_start, "at_end": lock_at_end},
    }
    report = out / REPORT_FILE
    write_atomic(report, streamed.report_file(
        _report_head(summary, registry, streamed.tools, conflicts, system_health, signals_out,
                     rejected, default_scenario=simulated),
        _report_tail(conflicts, system_health, signals_out)))
    write_atomic(out / "orchestration_summary.json", _dumps(summary))  # last: the run is done
    return RunSummary(
        out_dir=out, plans=streamed.plans, rejected=rejected,
        executions_by_mode=summary["executions_by_mode"],
        not_run=runs[None], conflicts=conflicts["total_conflicts"],
        resolved=conflicts.get("resolved", 0), rollbacks=rollbacks,
        health_score=system_health["health_score"], health=system_health["health_assessment"],
        anomalies=len(system_health["anomalies"]), signals=len(signals_out),
        audit_log=audit_path, report=report, simulated=True,
        audit_seq=(first_seq, last_seq), earlier_executions=earlier,
        system_lock=(lock_at_start, lock_at_end),
        # run from where buddy run was: the paths as given
        replay=_replay_command(audit_path, config.rules_dir, escalation,
                               keyed=config.audit_key is not None))


def _replay_command(audit_path: Path, rules_dir: Path | None, escalation: EscalationTable,
                    *, keyed: bool) -> str:
    """``buddy replay`` with what verifying this trail needs, paths quoted for a shell:
    the escalation table it was decided with when it is not the shipped one, and the
    key when it is keyed (a placeholder: where the key is kept is not the run's to say).
    Relative paths are relative to where the command is to run."""
    command = f"buddy replay {shlex.quote(str(audit_path))}"
    if escalation.digest != EscalationTable.default().digest:
        command += f" --rules {shlex.quote(str(rules_dir))}"
    if keyed:
        command += " --key-file FILE (or --key-env VAR)"
    return command


def _read_trail(audit: AuditLog, first_seq: int) -> tuple[set[str], int | None]:
    """The trail before ``first_seq``: the digests of the escalation tables its decisions
    used, and the seq of the lock event in force at its end (None: unlocked)."""
    used: set[str] = set()
    lock = None
    for r in audit.records():
        if r["seq"] >= first_seq:  # another writer's, since the trail was opened
            break
        if r["kind"] == "decision" and r["data"].get("rules") is not None:
            used.add(r["data"]["rules"])
        elif r["kind"] == "lock":
            lock = r["seq"]
        elif r["kind"] == "unlock":
            lock = None
    return used, lock


def _check_one_table(audit: AuditLog, used: set[str], escalation: EscalationTable) -> None:
    """Refuse to continue a trail whose decisions (``used``: their tables' digests) used
    another escalation table.

    Replay verifies a trail against one table (``buddy replay --rules DIR``): a
    trail decided with two could never verify, and a what-if over it would list
    one table's decisions as changes. Raises :class:`InputError` naming the digests.
    """
    if not used - {escalation.digest}:
        return
    shipped = EscalationTable.default().digest

    def named(digest: str) -> str:
        return f"{digest} (the shipped one)" if digest == shipped else digest

    earlier = ", ".join(named(d) for d in sorted(used))
    raise InputError(f"{audit.path}: its earlier runs decided with escalation "
                     f"table{'s' if len(used) > 1 else ''} {earlier}, this run would decide "
                     f"with {named(escalation.digest)}; a trail replays against one table: "
                     "use a fresh --out, or the rules its runs used")


def _run_cycles(out: Path, plans: Sequence[Any], orchestrator: ToolOrchestrator,
                per_cycle: int, progress: Callable[[int, int], None] | None,
                streamed: _Streamed) -> None:
    """Run ``plans`` in cycles of ``per_cycle``, a line of ``tool_execution_log.jsonl``
    per plan as it finishes, and each cycle's outcomes, conflicts and resolutions to
    ``streamed``."""
    log = _Lines(out / "tool_execution_log.jsonl")
    done = 0
    try:
        cycles = (len(plans) + per_cycle - 1) // per_cycle
        for n in range(1, cycles + 1):
            batch = plans[(n - 1) * per_cycle:n * per_cycle]
            for plan, result in zip(batch, orchestrator.run_cycle(batch), strict=True):
                log.write({"plan_index": done, "plan_id": result.plan_id,
                           "upstream_plan_id": plan.upstream_plan_id,
                           "validation_id": plan.validation_id,
                           "result": result.to_json()})
                done += 1
                streamed.plan(result)
            streamed.cycle(orchestrator.last_cycle)
            if progress is not None:
                progress(n, cycles)
    finally:
        log.close()


class _Spool:
    """Bytes kept out of memory until the file they belong in is written: an anonymous
    temporary file in the output directory (gone with its process, however it ends)."""

    def __init__(self, out: Path) -> None:
        self._fh: IO[bytes] = tempfile.TemporaryFile(dir=out)  # noqa: SIM115
        self.count = 0  # items written

    def write(self, data: bytes) -> None:
        self._fh.write(data)

    def copy_to(self, fh: IO[bytes]) -> None:
        self._fh.flush()
        self._fh.seek(0)
        shutil.copyfileobj(self._fh, fh, 1 << 20)

    def close(self) -> None:
        self._fh.close()


class _Streamed:
    """What the cycles leave for the files written at the end, taken cycle by cycle so
    that nothing grows with the run but counts, the set of tools used and the spools:
    ``report.md``'s decision rows and ``tool_conflicts.json``'s conflicts and
    resolutions, already in their final bytes."""

    def __init__(self, out: Path) -> None:
        self.plans = self.plans_ok = 0
        self.runs: Counter[ExecutionMode | None] = Counter()  # None: not run
        self.tools: set[str] = set()
        self._rows = _Spool(out)
        self._conflicts = _Spool(out)
        self._resolutions = _Spool(out)

    def plan(self, result: OrchestrationResult) -> None:
        self.plans += 1
        self.plans_ok += result.ok

    def cycle(self, record: CycleRecord) -> None:
        rows = []
        for o in record.outcomes:
            self.runs[o.mode] += 1
            self.tools.add(o.tool)
            rows.append(_decision_row(o))
        if rows:
            self._rows.write(("\n".join(rows) + "\n").encode("utf-8"))
        _spool_items(self._conflicts, record.conflicts)
        _spool_items(self._resolutions, record.resolutions)

    def conflicts_file(self, counts: dict[str, Any]) -> Callable[[IO[bytes]], None]:
        """Writes ``tool_conflicts.json``: ``counts``, then every conflict and resolution;
        the bytes :func:`_dumps` gives the whole document."""
        def write(fh: IO[bytes]) -> None:
            head = orjson.dumps(counts, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
            assert head.endswith(b"\n}")
            fh.write(head[:-2])
            for key, spool in ((b"conflicts", self._conflicts),
                               (b"resolutions", self._resolutions)):
                fh.write(b',\n  "%s": [' % key)
                spool.copy_to(fh)
                fh.write(b"\n  ]" if spool.count else b"]")
            fh.write(b"\n}\n")
        return write

    def report_file(self, head: list[str], tail: list[str]) -> Callable[[IO[bytes]], None]:
        """Writes ``report.md``: ``head``, the decision rows, ``tail``, a line each."""
        def write(fh: IO[bytes]) -> None:
            fh.write(("\n".join(head) + "\n").encode("utf-8"))
            self._rows.copy_to(fh)
            fh.write(("\n".join(tail) + "\n").encode("utf-8"))
        return write

    def close(self) -> None:
        for spool in (self._rows, self._conflicts, self._resolutions):
            spool.close()


def _spool_items(spool: _Spool, items: Iterable[Any]) -> None:
    """Each item as an element of a list at depth 1 of an ``OPT_INDENT_2`` document."""
    for item in items:
        data = orjson.dumps(_jsonable(item),
                            option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
        # JSON strings hold no raw newline: every b"\n" here ends a line of the layout
        spool.write((b",\n    " if spool.count else b"\n    ")
                    + data.replace(b"\n", b"\n    "))
        spool.count += 1


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS,
                        default=_jsonable).decode() + "\n"


def _jsonable(obj: Any) -> Any:
    return converter.unstructure(obj)


def _records(path: Path) -> Iterator[dict[str, Any]]:
    """Every whole event of the trail at ``path`` as a dict, in order, read a line at a
    time: what :meth:`AuditLog.read_records` gives (a torn last line, without its
    newline, is skipped), never holding the file.

    Raises :class:`AuditFormatError` naming the line that is not a JSON event.
    """
    with open(path, "rb") as fh:
        for n, line in enumerate(fh, 1):  # a binary file splits on b"\n" only
            if not line.endswith(b"\n"):
                return
            try:
                yield orjson.loads(line)
            except orjson.JSONDecodeError:
                raise AuditFormatError(f"{path}:{n}", "not a JSON audit event") from None


def _trail_events(path: Path, first: int, last: int) -> Iterator[dict[str, Any]]:
    """The events of the trail at ``path`` from seq ``first`` to ``last``, streamed."""
    for r in _records(path):
        seq = r["seq"]
        if seq > last:
            return
        if seq >= first:
            yield r


def _write_trail_files(out: Path, records: Iterable[dict[str, Any]], lock: int | None,
                       end: float) -> tuple[int | None, int]:
    """``execution_state_transitions.jsonl`` and ``rollback_events.jsonl`` from this run's
    events, in one pass: the seq of the lock event in force after them (None: unlocked;
    from ``lock``, the system lock as :attr:`AuditLog.locked` and replay read it) and the
    number of undos."""
    transitions = _Lines(out / "execution_state_transitions.jsonl")
    rollbacks = _Lines(out / "rollback_events.jsonl")
    total = 0
    try:
        for r in records:
            kind = r["kind"]
            if kind == "transition":
                d = r["data"]
                transitions.write({
                    "seq": r["seq"], "machine": r["machine"], "context": r["subject"],
                    "agent": d.get("agent"), "tool": d.get("tool"), "trigger": r["event"],
                    "from_state": r["src"], "to_state": r["dst"], "timestamp": _iso(r["ts"]),
                    "reason": d.get("why") or _REASONS.get(r["event"], r["event"])})
            elif kind == "rollback":
                total += 1
                d = r["data"]
                rollbacks.write({"event": "undo", "context": r["subject"], "tool": d.get("tool"),
                                 "ok": d.get("ok"), "because_of": d.get("because_of"),
                                 "timestamp": _iso(r["ts"])})
            elif kind == "lock":
                lock = r["seq"]
            elif kind == "unlock":
                lock = None
        rollbacks.write({"event": "summary", "total_rollbacks": total, "timestamp": _iso(end)})
    finally:
        transitions.close()
        rollbacks.close()
    return lock, total


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


def _report_head(summary: dict[str, Any], registry: ToolContractRegistry, tools: set[str],
                 conflicts: dict[str, Any], health: dict[str, Any],
                 signals: Sequence[dict[str, Any]], rejected: Sequence[str], *,
                 default_scenario: bool) -> list[str]:
    """The lines of ``report.md`` before the decision rows (:func:`_decision_row`), the
    table's header last; ``tools``: those the run's calls used. Every value that came
    from a user is escaped (:func:`md_cell`)."""
    used = sorted(tools)
    graph = dependency_graph(registry)
    keep = set(used) | {d for t in used for d in registry.get(t).dependencies}
    sub = graph.subgraph(sorted(keep)).copy()
    first, last = summary["audit_seq"]
    lock = _lock_note(summary["system_lock"]["at_start"], summary["system_lock"]["at_end"])
    out = [f"# buddy run {summary['pipeline_id']}", "",
           f"{summary['scenario']}; seed {summary['seed']}. The tools' handlers are SIMULATED "
           "(seeded, deterministic stand-ins that touch nothing)."
           if default_scenario else
           f"Plans from {md_cell(summary['scenario'])}; seed {summary['seed']}. The tools' "
           "handlers are SIMULATED.", "",
           "| | |", "|---|---|",
           *([f"| system lock | {lock} |"] if lock else []),
           f"| plans | {summary['plans_processed']} ({summary['plans_successful']} fully "
           f"successful, {summary['plans_rejected']} rejected) |",
           "| executions by mode | " + ", ".join(f"{m} {n}" for m, n in
                                                  summary["executions_by_mode"].items()) + " |",
           f"| conflicts | {conflicts['total_conflicts']} |",
           f"| rollbacks | {summary['total_rollbacks']} |",
           f"| health | {health['health_score']} ({health['health_assessment']}) |",
           f"| anomalies | {len(health['anomalies'])} |",
           f"| learning signals | {len(signals)} |",
           f"| audit trail | `{summary['audit_log']}` ({_code(summary['replay'])}, in this "
           "directory), "
           f"this run's events: seq {first} to {last}"
           + (f"; it continues an earlier trail ({summary['earlier_executions']} executions "
              "read)" if first > 1 else "") + " |",
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
    return out


def _decision_row(o: ExecutionOutcome) -> str:
    """One outcome's row of ``report.md``'s decisions table."""
    decided = o.decided.value if o.decided else "-"
    ran = o.mode.value if o.mode else "-"
    return (f"| {md_cell(o.call_id)} | {md_cell(o.agent)} | {o.tool} | {o.risk} | "
            f"{o.confidence} | {decided} | {ran} | {'yes' if o.ok else 'no'} | "
            f"{o.approval or '-'} | {', '.join(o.conflicts) or '-'} | "
            f"{o.resolution or '-'} | {md_cell(o.error or '')} |")


def _report_tail(conflicts: dict[str, Any], health: dict[str, Any],
                 signals: Sequence[dict[str, Any]]) -> list[str]:
    """The lines of ``report.md`` after the decision rows."""
    out = ["", "## Conflicts", "", "| type | count |", "|---|---|"]
    out += [f"| {t} | {n} |" for t, n in conflicts["by_type"].items()]
    out += ["", "| strategy | count |", "|---|---|"]
    out += [f"| {s} | {n} |" for s, n in conflicts["by_resolution_strategy"].items()]
    out += ["", "## Anomalies", ""]
    if health["anomalies"]:
        out += ["| anomaly | severity | scope | value | threshold |", "|---|---|---|---|---|"]
        for a in health["anomalies"]:
            out.append(f"| {md_cell(a.get('type', a.get('id')))} | {a.get('severity')} | "
                       f"{md_cell(a.get('tool') or a.get('scope'))} | {a.get('value')} | "
                       f"{a.get('threshold')} |")
    else:
        out.append("None.")
    out += ["", "## Learning signals", ""]
    if signals:
        out += ["| type | scope | insight | recommended action | confidence | phase |",
                "|---|---|---|---|---|---|"]
        for s in signals:
            scope = s.get("tool_name") or s.get("scope") or "-"
            out.append(f"| {s['signal_type']} | {md_cell(scope)} | {md_cell(s['insight'])} | "
                       f"{md_cell(s['recommended_action'])} | {s['confidence']} | "
                       f"{s['target_phase']} |")
    else:
        out.append("None.")
    out += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in health["metrics"].items()]
    return out


def _code(text: str) -> str:
    """``text`` as one Markdown code span, whatever backticks it holds (unprintable
    characters escaped)."""
    text = printable(text)
    fence = "`" * (1 + max(map(len, re.findall("`+", text)), default=0))
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"
