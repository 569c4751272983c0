"""The ``buddy`` command line: a thin layer over the public API.

Every failure a user can cause ends in one line, ``ErrorName: message``, and a
non-zero exit status (2 for usage errors, 1 for everything else). Tracebacks
are for bugs only. Every value that came from a user (an agent id, a file name,
anything read from a log or a plans file) is printed escaped: control
characters as ``\\xNN``/``\\uNNNN``, and never read as rich markup
(:mod:`._printable`).
"""

from __future__ import annotations

import json
import math
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import orjson
from rich.console import Console
from rich.table import Table
from rich.text import Text

from buddy.engine.app._harness import MAX_START, RunConfig
from buddy.engine.app._harness import run as run_plans
from buddy.engine.app._printable import plain, printable, printable_json
from buddy.engine.core._audit import AuditLog
from buddy.engine.core._chain import load_key
from buddy.engine.core._engine import Engine
from buddy.engine.core._replay import replay as run_replay
from buddy.engine.waves._optimizer import OBJECTIVES
from buddy.graphs import dependency_graph, render, to_png
from buddy.machines import MACHINES
from buddy.rules.base._convert import converter
from buddy.rules.base._files import write_atomic
from buddy.rules.base._masking import shown
from buddy.rules.base._values import ExecutionMode, RiskLevel, valid_confidence
from buddy.rules.base.errors import BuddyError, InputError, RuleTableError, UnknownToolError
from buddy.rules.tables._catalogue import ToolContractRegistry
from buddy.rules.tables._escalation import EscalationTable

__all__ = ["cli", "main"]

EXIT_USAGE, EXIT_FAILED, EXIT_LOOSENING = 2, 1, 3


def _out() -> Console:
    # Not a terminal (a pipe, CI): wide enough that tables are not cut to 80 columns.
    return Console(highlight=False, soft_wrap=True,
                   width=None if sys.stdout.isatty() else 160)


class _Confidence(click.ParamType):
    name = "CONFIDENCE"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"must be a number in [0, 1] (got {value!r})", param, ctx)
        if not valid_confidence(number):
            self.fail(f"must be a number in [0, 1] (got {value!r})", param, ctx)
        return number


class _Number(click.ParamType):
    """A finite number in ``[low, high]`` (``(low, high]`` with ``open_low``), read as a
    float; ``what`` names it in the error."""

    name = "SECONDS"

    def __init__(self, low: float, high: float, what: str, *, open_low: bool = False) -> None:
        self.low, self.high, self.what, self.open_low = low, high, what, open_low

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        above = number > self.low if self.open_low else number >= self.low
        if not (math.isfinite(number) and above and number <= self.high):
            low, high = (f"{x:d}" if isinstance(x, int) else f"{x:g}"
                         for x in (self.low, self.high))
            bounds = f"{'(' if self.open_low else '['}{low}, {high}]"
            self.fail(f"must be {self.what} in {bounds} (got {shown(value)})", param, ctx)
        return number


def _Epoch() -> _Number:  # noqa: N802 - a parameter type, named like one
    return _Number(0, MAX_START, "epoch seconds")


def _Seconds() -> _Number:  # noqa: N802
    return _Number(0, 86_400, "a number of seconds", open_low=True)


class _Seed(click.ParamType):
    name = "INTEGER"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> int:
        number: int | None
        try:
            number = value if type(value) is int else int(str(value).strip(), 10)
        except ValueError:  # not a whole number (or of more than 4,300 digits)
            number = None
        if number is None or not -(2 ** 63) <= number < 2 ** 63:
            self.fail(f"must be a whole number in [-2**63, 2**63 - 1] (got {shown(value)})",
                      param, ctx)
        return number


class _Risk(click.Choice):
    """A risk level in any case (``high``, ``High``); help and errors name them as declared."""

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        if isinstance(value, str) and value.upper() in self.choices:
            return value.upper()
        return super().convert(value, param, ctx)


_catalogue_option = click.option(
    "--catalogue", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Tool catalogue TOML (default: buddy's standard catalogue).")
_rules_option = click.option(
    "--rules", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Rules directory holding escalation.toml (default: buddy's shipped rules).")
_key_file_option = click.option(
    "--key-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="File holding the audit log's HMAC key.")
_key_env_option = click.option(
    "--key-env", metavar="VAR", default=None,
    help="Environment variable holding the audit log's HMAC key.")
_json_option = click.option("--json", "as_json", is_flag=True,
                            help="Print JSON instead of a table.")


def _key(key_file: Path | None, key_env: str | None) -> bytes | None:
    if key_file is not None and key_env is not None:
        raise click.UsageError("give --key-file or --key-env, not both")
    return load_key(file=key_file, env=key_env)


def _print_json(obj: Any) -> None:
    click.echo(printable_json(orjson.dumps(
        obj, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode()))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="buddy", prog_name="buddy")
def cli() -> None:
    """buddy: decide, run and audit AI agents' tool calls (MOCK, DRY_RUN or LIVE)."""


@cli.command()
@click.argument("tool")
@click.option("--confidence", "-c", type=_Confidence(), required=True,
              help="The agent's confidence in the call, a number in [0, 1].")
@click.option("--agent", "-a", default="cli", show_default=True, help="The calling agent.")
@click.option("--approve/--deny", "approval", default=None,
              help="A one-shot approval answer for this call (default: none given).")
@click.option("--locked", is_flag=True,
              help="Decide as if the system were locked (a what-if: not with --audit).")
@click.option("--audit", "audit_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Append the decision to this audit log (JSON Lines).")
@click.option("--allow-missing-anchor", is_flag=True,
              help="Append to an audit log whose .anchor file is missing (recorded in the log).")
@_key_file_option
@_key_env_option
@_catalogue_option
@_rules_option
@_json_option
def decide(tool: str, confidence: float, agent: str, approval: bool | None, locked: bool,
           audit_path: Path | None, allow_missing_anchor: bool, key_file: Path | None,
           key_env: str | None,
           catalogue: Path | None, rules: Path | None, as_json: bool) -> None:
    """Decide the execution mode of one call of TOOL, and say why."""
    if locked and audit_path is not None:  # a log's lock is real: every writer honours it
        raise click.UsageError("--locked is a what-if (decide as if the system were locked) "
                               "and cannot go with --audit: a log's system lock is real, "
                               "honoured by every writer of the log")
    if audit_path is None:  # an option that acts on the log, without a log: say so
        needless = [flag for flag, given in (("--key-file", key_file is not None),
                                             ("--key-env", key_env is not None),
                                             ("--allow-missing-anchor", allow_missing_anchor))
                    if given]
        if needless:
            raise click.UsageError(f"{needless[0]} needs --audit LOG (it applies to the audit "
                                   "log)")
    key = _key(key_file, key_env)
    loaded = Engine.from_files(catalogue, rules)  # load (and fail) before touching the log
    contract = loaded.registry.get(tool)
    audit = AuditLog.open(audit_path, clock=time.time, key=key,
                          allow_missing_anchor=allow_missing_anchor) if audit_path else None
    engine = Engine(loaded.registry, loaded.table, audit=audit)
    try:
        if locked:  # the engine's own memory log (no --audit): nothing outlives the call
            engine.lock("--locked")
        decision = engine.decide(agent, tool, confidence, approval=approval)
    finally:
        engine.audit.close()
    if as_json:
        _print_json({"tool": tool, "agent": agent, "confidence": confidence,
                     **converter.unstructure(decision)})
        return
    out = _out()
    out.print(Text.assemble(plain(tool, "bold"), f" ({contract.risk.value} risk, "
                            f"{'reversible' if contract.reversible else 'irreversible'}) "
                            "for agent ", plain(agent), f" at confidence {confidence}"))
    table = Table.grid(padding=(0, 2))
    table.add_row("mode", f"[bold]{decision.mode.value}[/]")
    table.add_row("allowed", "yes" if decision.allowed else "[red]no[/]")
    table.add_row("rule", plain(decision.rule))
    table.add_row("reason", plain(decision.reason))
    table.add_row("state", decision.state.value)
    if audit_path:
        table.add_row("audit", Text.assemble(plain(audit_path),
                                             f" (seq {engine.audit.last_seq})"))
    out.print(table)


@cli.command()
@click.option("--risk", type=_Risk([r.value for r in RiskLevel]), default=None,
              help="Only tools of this risk level (in any case: high, HIGH).")
@_catalogue_option
@_json_option
def tools(risk: str | None, catalogue: Path | None, as_json: bool) -> None:
    """List the tool catalogue."""
    registry = ToolContractRegistry.from_toml(catalogue) if catalogue else \
        ToolContractRegistry.default()
    contracts = registry.list_by_risk(RiskLevel(risk)) if risk else list(registry)
    if as_json:
        _print_json([converter.unstructure(c) for c in contracts])
        return
    table = Table(title=Text.assemble(f"{len(contracts)} tools (", plain(registry.source), ")"))
    for column in ("tool", "risk", "reversible", "approval", "permissions", "depends on",
                   "max conc.", "timeout s"):
        table.add_column(column)
    for c in contracts:
        table.add_row(plain(c.name), c.risk.value, "yes" if c.reversible else "no",
                      "required" if c.requires_approval else "-",
                      plain(", ".join(sorted(c.permissions)) or "-"),
                      plain(", ".join(c.dependencies) or "-"), str(c.max_concurrency),
                      f"{c.timeout_s:g}")
    _out().print(table)


@cli.command()
@click.argument("log", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--until", type=click.IntRange(min=0), default=None,
              help="Stop at this sequence number and show every subject's state there.")
@click.option("--states", is_flag=True, help="Show every subject's final state.")
@click.option("--fail-on-loosening", is_flag=True,
              help=f"Exit {EXIT_LOOSENING} when a what-if finds a loosening decision.")
@click.option("--no-anchor", is_flag=True, help="Do not check the head anchor file.")
@click.option("--parallel/--no-parallel", default=None,
              help="Verify the chain in a second process while replaying (default: for "
              "a log of 32 MiB or more on more than one CPU).")
@_key_file_option
@_key_env_option
@_rules_option
@_json_option
def replay(log: Path, until: int | None, states: bool, fail_on_loosening: bool,
           no_anchor: bool, parallel: bool | None, key_file: Path | None, key_env: str | None,
           rules: Path | None, as_json: bool) -> None:
    """Verify an audit LOG, replay it, time-travel (--until) or what-if (--rules).

    Exits 1 on a broken chain or a divergence.
    """
    key = _key(key_file, key_env)
    table = EscalationTable.from_dir(rules) if rules else None
    report = run_replay(log, key=key, until=until, table=table, check_anchor=not no_anchor,
                        parallel=parallel)
    if as_json:
        _print_json(converter.unstructure(report) | {"ok": report.ok})
    else:
        _print_report(report, show_states=states or until is not None)
    if report.divergence is not None:
        sys.exit(EXIT_FAILED)
    if fail_on_loosening and any(c.direction == "loosening" for c in report.changes):
        sys.exit(EXIT_LOOSENING)


def _mode_name(mode: ExecutionMode | None) -> str:
    return "REFUSED" if mode is None else mode.value


def _print_report(report: Any, *, show_states: bool) -> None:
    out = _out()
    out.print(Text.assemble(plain(report.source), f": chain verified ({report.chain}), "
                            f"{report.events} events, last seq {report.last_seq}"))
    if report.torn_tail:
        out.print(Text.assemble(("warning", "yellow"), ": ", plain(report.torn_tail),
                                "; verified up to the last whole event"))
    upto = f" up to seq {report.until}" if report.until is not None else ""
    if report.what_if:
        out.print(Text.assemble(f"what-if{upto}: {report.decisions} decisions made with rules ",
                                plain(", ".join(report.rules_recorded)), " re-decided with ",
                                plain(report.rules_replayed),
                                f": {len(report.changes)} would change"))
        if report.changes:
            table = Table()
            for column in ("seq", "change", "agent", "tool", "risk", "confidence", "before",
                           "after", "rule now"):
                table.add_column(column)
            for c in report.changes:
                colour = "red" if c.direction == "loosening" else "green"
                table.add_row(str(c.seq), f"[{colour}]{c.direction}[/]", plain(c.agent),
                              plain(c.tool), plain(c.risk), f"{c.confidence:g}",
                              _mode_name(c.before), _mode_name(c.after), plain(c.rule_after))
            out.print(table)
    elif report.divergence is None:
        scheduled = "" if not (report.plans or report.reassignments) else (
            f"; {report.plans} scheduler plan{'' if report.plans == 1 else 's'} and "
            f"{report.reassignments} reassignment{'' if report.reassignments == 1 else 's'} "
            "held to the task moves")
        out.print(f"replayed {report.replayed} events{upto}: {report.decisions} "
                  f"decision{'' if report.decisions == 1 else 's'} and every transition "
                  f"reproduced{scheduled}")
    if show_states:
        table = Table(title=f"state at seq {report.last_seq}")
        for column in ("subject", "machine", "state"):
            table.add_column(column)
        table.add_row("system", "lock", "LOCKED" if report.locked else "UNLOCKED")
        for grant in report.grants:
            table.add_row(plain(grant), "approval", "ACTIVE")
        for subject, (machine, state) in report.states.items():
            table.add_row(plain(subject), plain(machine), plain(state))
        out.print(table)
    if report.divergence is not None:
        click.echo(printable(f"ReplayDivergence: {report.divergence}"), err=True)


@cli.group("run", invoke_without_command=True)
@click.option("--plans", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Plans to run (JSON list or JSON Lines); default: the simulated scenario.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("buddy-out"), show_default=True,
              help="Where to write the outputs, one run at a time. An audit trail already "
                   "there is continued (its irreversible actions count as done; decided with "
                   "the same escalation table only); use a fresh directory for a reproducible "
                   "run.")
@click.option("--seed", type=_Seed(), default=24, show_default=True,
              help="Seed of the simulated tools and the scenario (a signed 64-bit integer).")
@click.option("--dry-run-only", is_flag=True, help="Cap every call at DRY_RUN.")
@click.option("--max-live", type=click.IntRange(min=0), default=None,
              help="Cap calls at DRY_RUN once this many ran LIVE.")
@click.option("--live-floor", type=_Confidence(), default=None,
              help="Cap calls below this confidence at DRY_RUN (on top of the table).")
@click.option("--plans-per-cycle", type=click.IntRange(min=1), default=4, show_default=True,
              help="Plans that run at the same time in one orchestration cycle.")
@click.option("--start", type=_Epoch(), default=None,
              help=f"Start of the simulated clock, in epoch seconds in [0, {MAX_START}] "
                   "(default: now).")
@_key_file_option
@_key_env_option
@_catalogue_option
@click.option("--rules", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Rules directory: any of escalation.toml, conflicts.toml, anomalies.toml, "
                   "health.toml, signals.toml (the shipped table stands in for each missing; "
                   "no other *.toml).")
@click.pass_context
def run_command(ctx: click.Context, plans: Path | None, out_dir: Path, seed: int,
                dry_run_only: bool, max_live: int | None, live_floor: float | None,
                plans_per_cycle: int, start: float | None, key_file: Path | None,
                key_env: str | None, catalogue: Path | None, rules: Path | None) -> None:
    """Run plans through the orchestration cycle and write every output.

    With no --plans, runs the default scenario: seeded sample plans over several
    agents whose tools are SIMULATED (deterministic stand-ins that touch nothing).
    Exits 1 when a plan was rejected (the others still run).

    `buddy run waves` runs tasks in waves over many agents instead (Phase 21).
    """
    if ctx.invoked_subcommand is not None:  # `buddy run OPTION waves`: not an option of waves
        default = click.core.ParameterSource.DEFAULT
        given = [p for p in ctx.command.params
                 if ctx.get_parameter_source(p.name or "") is not default]
        if given:
            flag = given[0].opts[0]
            raise click.UsageError(f"{flag} is an option of `buddy run` (plans), not of "
                                   f"`buddy run {ctx.invoked_subcommand}`; give "
                                   f"{ctx.invoked_subcommand}'s options after its name")
        return
    from rich.progress import Progress

    config = RunConfig(output_dir=out_dir, plans=plans, seed=seed, dry_run_only=dry_run_only,
                       max_live_escalations=max_live, confidence_threshold_for_live=live_floor,
                       plans_per_cycle=plans_per_cycle, catalogue=catalogue, rules_dir=rules,
                       audit_key=_key(key_file, key_env), start=start)
    err = Console(stderr=True, highlight=False)
    with Progress(console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task("orchestration cycles", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        summary = run_plans(config, progress=progress)
    for line in summary.rejected:
        click.echo(printable(f"PlanRejected: {line}"), err=True)
    out = _out()
    table = Table(title=Text.assemble("buddy run (", "default scenario" if plans is None else
                                      plain(plans), f", SIMULATED tools, seed {seed})"))
    table.add_column("")
    table.add_column("")
    modes = summary.executions_by_mode
    if summary.lock_note:  # every call decided while locked ran MOCK only: say it first
        table.add_row("system lock", Text(summary.lock_note, style="bold red"))
    table.add_row("plans", f"{summary.plans} run, {len(summary.rejected)} rejected")
    table.add_row("executions", ", ".join(f"{m} {n}" for m, n in modes.items()))
    table.add_row("conflicts", f"{summary.conflicts} detected, {summary.resolved} resolved")
    table.add_row("rollbacks", str(summary.rollbacks))
    table.add_row("health", f"{summary.health_score} ({summary.health})")
    table.add_row("anomalies", str(summary.anomalies))
    table.add_row("learning signals", str(summary.signals))
    table.add_row("report", plain(summary.report))
    first, last = summary.audit_seq
    trail = printable(summary.audit_log)
    table.add_row("audit trail", plain(f"{trail} ({printable(summary.replay)}), seq {first} "
                                       f"to {last}"))
    if first > 1:  # the trail was continued
        table.add_row("earlier runs", f"{summary.earlier_executions} executions read from the "
                                      "trail (irreversible ones count as done)")
    out.print(table)
    if summary.rejected:
        sys.exit(EXIT_FAILED)


@run_command.command("waves")
@click.option("--tasks", "tasks_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="predicted_tasks.jsonl to run (default: the SIMULATED "
              "scenario of --agents x --waves x --tasks-per-wave).")
@click.option("--schedule", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="predicted_schedule.jsonl pinning tasks to agents (or a run's "
                   "agent_assignments.jsonl).")
@click.option("--strict", is_flag=True,
              help="Refuse an input file with any bad line (default: skip and count it).")
@click.option("--agents-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="JSON {agent: [permission, ...]}: the run's agents and what each may use "
                   "(default: agent_0... holding the default scenario's permissions).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("buddy-waves"), show_default=True,
              help="Where to write the output tree (an audit trail there is continued).")
@click.option("--agents", type=click.IntRange(1, 4096), default=4, show_default=True,
              help="How many agents (agent_0, agent_1, ...).")
@click.option("--waves", type=click.IntRange(1, 10_000), default=3, show_default=True,
              help="Waves of the default scenario.")
@click.option("--tasks-per-wave", type=click.IntRange(1, 10_000_000), default=20,
              show_default=True, help="Tasks per wave of the default scenario.")
@click.option("--strategy", default="LOAD_BALANCED", show_default=True,
              help="Assignment strategy: ROUND_ROBIN, LOAD_BALANCED, PRIORITY_BASED, "
                   "CONFIDENCE_BASED; or an optimizer objective (maximize_success, "
                   "maximize_throughput, maximize_confidence, balanced): the optimizer "
                   "plans each wave from the earlier ones and Phase 19's files go to "
                   "OUT/phase19/.")
@click.option("--load-threshold", type=_Number(1, 1e6, "a number"), default=2.0,
              show_default=True, help="With an optimizer objective: an agent expected to "
              "be busy more than this times the mean sheds tasks to the least busy.")
@click.option("--retry", "retry_strategy",
              type=click.Choice(["EXPONENTIAL_BACKOFF", "LINEAR_BACKOFF", "NO_RETRY"],
                                case_sensitive=False),
              default="EXPONENTIAL_BACKOFF", show_default=True, help="Retry strategy.")
@click.option("--max-retries", type=click.IntRange(0, 1000), default=None,
              help="Retries after a task's first attempt (default: retry.toml's, 3).")
@click.option("--timeout", "timeout_s", type=_Seconds(), default=None,
              help="Per-task timeout in seconds, in (0, 86400] (default: retry.toml's, 30).")
@click.option("--max-parallel", type=click.IntRange(1, 4096), default=4, show_default=True,
              help="Agents working at the same time.")
@click.option("--backend", type=click.Choice(["virtual", "threads"]), default="virtual",
              show_default=True, help="virtual: agents interleaved in virtual-time order "
              "(deterministic); threads: a thread pool of --max-parallel.")
@click.option("--seed", type=_Seed(), default=21, show_default=True,
              help="Seed of the scenario and the simulated tools.")
@click.option("--start", type=_Epoch(), default=None,
              help="Start of the virtual clock, epoch seconds (default: now).")
@click.option("--dry-run-only", is_flag=True, help="Cap every call at DRY_RUN.")
@_key_file_option
@_key_env_option
@_catalogue_option
@click.option("--rules", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Rules directory: any of escalation.toml, gates.toml, retry.toml, "
                   "wave_anomalies.toml, wave_health.toml, wave_signals.toml, health.toml; "
                   "with an objective also optimizer.toml, optimization_metrics.toml, "
                   "scheduling_anomalies.toml, optimization_health.toml, "
                   "optimization_signals.toml, heuristics.toml.")
def run_waves_command(tasks_path: Path | None, schedule: Path | None, strict: bool,
                      agents_file: Path | None, out_dir: Path, agents: int, waves: int,
                      tasks_per_wave: int,
                      strategy: str, load_threshold: float, retry_strategy: str,
                      max_retries: int | None,
                      timeout_s: float | None, max_parallel: int, backend: str, seed: int,
                      start: float | None, dry_run_only: bool, key_file: Path | None,
                      key_env: str | None, catalogue: Path | None, rules: Path | None) -> None:
    """Run tasks in waves over many agents (Phase 21) and write the output tree.

    Every task is a tool call the engine decides, runs and audits; the tools are
    SIMULATED and time is a virtual clock. Exits 1 when an input line was skipped
    (or, with --strict, refused).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from buddy.engine.app._waves import WaveRunConfig, run_waves
    from buddy.engine.waves import OBJECTIVES, STRATEGIES

    if strategy.upper() not in STRATEGIES and strategy not in STRATEGIES and \
            strategy.lower() not in OBJECTIVES:
        raise click.BadParameter(f"must be one of "
                                 f"{', '.join([*sorted(STRATEGIES), *OBJECTIVES])} (got "
                                 f"{shown(strategy)})", param_hint="'--strategy'")
    if strategy.lower() in OBJECTIVES:
        strategy = strategy.lower()
    config = WaveRunConfig(
        output_dir=out_dir, tasks=tasks_path, schedule=schedule, strict=strict, agents=agents,
        agents_file=agents_file, waves=waves, tasks_per_wave=tasks_per_wave,
        strategy=strategy.upper() if strategy.upper() in STRATEGIES else strategy,
        load_threshold=load_threshold,
        retry_strategy=retry_strategy.upper(), max_retries=max_retries, timeout_s=timeout_s,
        max_parallel=max_parallel, backend=backend, seed=seed, start=start,
        dry_run_only=dry_run_only, catalogue=catalogue, rules_dir=rules,
        audit_key=_key(key_file, key_env))
    err = Console(stderr=True, highlight=False)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task("waves", total=None)

        def progress(wave: int, total_waves: int, done: int, total: int) -> None:
            bar.update(task, description=f"wave {wave}/{total_waves}", completed=done,
                       total=total)
            if not err.is_terminal:
                click.echo(f"wave {wave}/{total_waves} done: {done}/{total} tasks", err=True)

        summary = run_waves(config, progress=progress)
    for line in summary.skipped:
        click.echo(printable(f"SkippedLine: {line}"), err=True)
    table = Table(title=Text.assemble(
        "buddy run waves (", "default scenario" if tasks_path is None else plain(tasks_path),
        f", SIMULATED tools, seed {seed})"), show_header=False)
    table.add_column("")
    table.add_column("")
    if summary.lock_note:  # every call decided while locked ran MOCK only: say it first
        table.add_row("system lock", Text(summary.lock_note, style="bold red"))
    table.add_row("tasks", f"{summary.tasks} ({summary.completed} completed, "
                  f"{summary.failed} failed) in {summary.waves} "
                  f"wave{'' if summary.waves == 1 else 's'} over "
                  f"{summary.agents} agent{'' if summary.agents == 1 else 's'}")
    table.add_row("by mode", ", ".join(f"{m} {n}" for m, n in summary.tasks_by_mode.items())
                  + (" (capped at DRY_RUN)" if dry_run_only else ""))
    if summary.recovered:
        table.add_row("recovered", f"{summary.recovered} unfinished task(s) of an "
                      "interrupted earlier run closed as FAILED")
    table.add_row("speed", f"{summary.tasks_per_second:,.0f} tasks/s "
                  f"({summary.seconds:.2f} s wall clock)")
    table.add_row("health", f"{summary.health_score:.2f} ({summary.health}, last wave)")
    table.add_row("anomalies", str(summary.anomalies))
    table.add_row("learning signals", str(summary.signals))
    table.add_row("report", plain(summary.report))
    if summary.phase19 is not None:
        p19 = summary.phase19
        first_score, last_score = p19["first_wave"], p19["last_wave"]
        if first_score is not None:
            fmt = "{:.2f}/s" if p19["objective"] == "maximize_throughput" else "{:.1%}"
            table.add_row(p19["objective"], f"{p19['measure']}: "
                          f"{fmt.format(first_score)} in wave 1, "
                          f"{fmt.format(last_score)} in the last")
        table.add_row("phase 19", plain(p19["report"]))
    first, last = summary.audit_seq
    how = summary.replay
    if key_env is not None or key_file is not None:  # the key as it was given
        how = how.split(" --key-file")[0] + (f" --key-env {shlex.quote(key_env)}"
                                             if key_env is not None else
                                             f" --key-file {shlex.quote(str(key_file))}")
    table.add_row("audit trail", plain(f"{printable(summary.audit_log)} "
                                       f"({printable(how)}), seq {first} to {last}"))
    if summary.skipped:
        table.add_row("skipped lines", Text(str(len(summary.skipped)), style="bold red"))
    _out().print(table)
    if summary.skipped:
        sys.exit(EXIT_FAILED)


@cli.command("optimize")
@click.option("--from", "source", type=click.Path(file_okay=False, path_type=Path),
              required=True, help="The history: Phase 18's directory (multi_agent_summary.json "
              "...) or a `buddy run waves --out` directory.")
@click.option("--tasks", "tasks_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="predicted_tasks.jsonl to plan (default: the one in --from).")
@click.option("--objective", type=click.Choice(OBJECTIVES), default="maximize_success",
              show_default=True, help="What the plan makes as high as it can be.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Where to write the plan (default: --from's phase19_plan).")
@click.option("--rules", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Rules directory holding optimizer.toml (default: buddy's shipped table).")
@click.option("--strict", is_flag=True,
              help="Refuse an input file with any bad line (default: skip and count it).")
@click.option("--seed", type=click.IntRange(-(2 ** 63), 2 ** 63 - 100_001), default=19,
              show_default=True, help="Seed of each plan's SIMULATED check (wave N: seed + N).")
@click.option("--runs", type=click.IntRange(1, 100_000), default=100, show_default=True,
              help="Simulated runs of each plan.")
@_catalogue_option
def optimize_command(source: Path, tasks_path: Path | None, objective: str,
                     out_dir: Path | None, rules: Path | None, strict: bool, seed: int,
                     runs: int, catalogue: Path | None) -> None:
    """Plan tasks on the agents of an earlier run's history (Phase 19); nothing runs.

    Each wave's tasks go to the agents so the objective is as high as it can be;
    writes optimization_summary.json and wave_N/<agent>/scheduled_tasks.jsonl.
    Exits 1 when an input line was skipped (or, with --strict, refused).
    """
    from buddy.engine.app._optimize import OptimizeConfig, plan_from

    config = OptimizeConfig(source, tasks=tasks_path, objective=objective, output_dir=out_dir,
                            rules_dir=rules, strict=strict, seed=seed, runs=runs,
                            catalogue=catalogue)
    summary = plan_from(config)  # a bad input: main() says it in one line
    for line in summary.skipped:
        click.echo(printable(f"SkippedLine: {line}"), err=True)
    out = _out()
    for plan in summary.waves:
        s = plan.schedule
        table = Table(title=f"wave {plan.wave}: {len(s.assignments)} tasks, expected success "
                            f"{s.expected_success:.1%}, {s.expected_throughput:,.2f} tasks/s")
        for name in ("agent", "tasks", "expected success", "expected busy (s)",
                     "expected throughput (tasks/s)"):
            table.add_column(name, justify="left" if name == "agent" else "right")
        for agent, ids in s.order.items():
            busy = plan.busy_s(agent)
            mean = sum(s.task_success[t] for t in ids) / len(ids)
            table.add_row(plain(agent), str(len(ids)), f"{mean:.1%}", f"{busy:,.2f}",
                          f"{len(ids) / busy:,.2f}" if busy > 0 else "-")
        if plan.simulated is not None:
            sim = plan.simulated
            table.caption = (f"SIMULATED check ({sim.runs} runs, seed {sim.seed}): "
                             f"{sim.simulated_success_rate:.1%} success")
        out.print(table)
        for line in plan.recommendations:
            out.print(Text("  - " + printable(line)))
    table = Table(title=Text.assemble("buddy optimize (from ", plain(source), ", ",
                                      summary.source, ")"), show_header=False)
    table.add_column("")
    table.add_column("")
    table.add_row("objective", summary.objective)
    table.add_row("planned", f"{summary.tasks} tasks in {len(summary.waves)} "
                  f"wave{'' if len(summary.waves) == 1 else 's'} over "
                  f"{len(summary.agents)} agent{'' if len(summary.agents) == 1 else 's'} "
                  "(nothing ran)")
    table.add_row("expected", f"{summary.expected_success_rate:.1%} success, "
                  f"{summary.expected_throughput:,.2f} tasks/s")
    table.add_row("plan", plain(summary.summary_path))
    if summary.skipped:
        table.add_row("skipped lines", Text(str(len(summary.skipped)), style="bold red"))
    out.print(table)
    if summary.skipped:
        sys.exit(EXIT_FAILED)


@cli.group()
def graph() -> None:
    """Draw a declared machine or the tool dependency graph."""


_FORMATS = ("mermaid", "dot", "png", "svg")
_format_option = click.option(
    "--format", "fmt", type=click.Choice(_FORMATS), default="mermaid", show_default=True,
    help="Output format: text (mermaid, dot) or a picture (png, svg; needs --output).")
_output_option = click.option(
    "--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Write to this file instead of standard output (required for png and svg).")


def _draw(obj: Any, fmt: str, output: Path | None) -> None:

    if fmt in ("png", "svg"):
        if output is None:
            raise click.UsageError(f"--format {fmt} needs --output FILE")
        if output.suffix.lower() != f".{fmt}":
            raise click.UsageError(f"--output must end in .{fmt} for --format {fmt}")
        to_png(obj, output)
        click.echo(f"wrote {printable(output)}")
        return
    text = render(obj, fmt)
    if output is None:
        click.echo(text, nl=False)
    else:
        write_atomic(output, text)
        click.echo(f"wrote {printable(output)}")


@graph.command("machine")
@click.argument("name")
@_format_option
@_output_option
def graph_machine(name: str, fmt: str, output: Path | None) -> None:
    """Draw the declared machine NAME (escalation, task)."""

    spec = MACHINES.get(name)
    if spec is None:
        raise InputError(f"unknown machine {name!r} (known: {', '.join(sorted(MACHINES))})")
    _draw(spec, fmt, output)


@graph.command("tools")
@_format_option
@_output_option
@_catalogue_option
def graph_tools(fmt: str, output: Path | None, catalogue: Path | None) -> None:
    """Draw the tool dependency graph (an edge runs from a dependency to its user)."""

    registry = ToolContractRegistry.from_toml(catalogue) if catalogue else \
        ToolContractRegistry.default()
    _draw(dependency_graph(registry), fmt, output)


@cli.group()
def tickets() -> None:
    """Calls waiting for a person (engine.prepare(..., wait=True)): list, approve, deny."""


_log_argument = click.option(
    "--audit", "audit_path", required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The audit log the tickets are in (JSON Lines).")


def _ticket_engine(audit_path: Path, key_file: Path | None, key_env: str | None) -> Engine:
    return Engine.default(audit=AuditLog.open(audit_path, clock=time.time,
                                              key=_key(key_file, key_env)))


def _ticket_row(ticket: Any) -> dict[str, Any]:
    return ticket.to_dict()


@tickets.command("list")
@_log_argument
@click.option("--status", type=click.Choice(["pending", "approved", "denied", "expired",
                                             "resumed", "all"]),
              default="pending", show_default=True, help="Which tickets to list.")
@_key_file_option
@_key_env_option
@_json_option
def tickets_list(audit_path: Path, status: str, key_file: Path | None, key_env: str | None,
                 as_json: bool) -> None:
    """The log's tickets, oldest first."""
    engine = _ticket_engine(audit_path, key_file, key_env)
    try:
        found = engine.tickets(None if status == "all" else status)
    finally:
        engine.audit.close()
    if as_json:
        _print_json([_ticket_row(t) for t in found])
        return
    table = Table("ticket", "status", "agent", "tool", "mode", "expires at", "by")
    table.add_column("arguments (secrets masked)", overflow="fold")  # all of them, wrapped
    for t in found:
        table.add_row(plain(t.id), t.status, plain(t.agent), plain(t.tool), t.mode,
                      "never" if t.expires_at is None else f"{t.expires_at:.0f}",
                      plain(t.by or ""),
                      plain(orjson.dumps(t.args, option=orjson.OPT_NON_STR_KEYS).decode()))
    _out().print(table)


def _args_option(value: str | None) -> dict[str, Any] | None:
    if value is None:
        return None
    def constant(name: str) -> None:
        raise ValueError(f"{name} is no JSON number")

    try:  # the json module: an integer comes back exactly, however large (then refused)
        loaded = json.loads(value, parse_constant=constant)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--args") from None
    if type(loaded) is not dict:
        raise click.BadParameter(f"must be a JSON object (got {shown(loaded)})",
                                 param_hint="--args")
    return loaded


@tickets.command("approve")
@click.argument("ticket_id")
@_log_argument
@click.option("--by", required=True, help="Who approves (recorded).")
@click.option("--reason", default="", help="Why (recorded, secrets cut).")
@click.option("--args", "args_json", default=None,
              help="Run these arguments instead (a JSON object; the log keeps both).")
@_key_file_option
@_key_env_option
def tickets_approve(ticket_id: str, audit_path: Path, by: str, reason: str,
                    args_json: str | None, key_file: Path | None, key_env: str | None) -> None:
    """Approve TICKET_ID; the app that made it runs the call when it resumes it."""
    edited = _args_option(args_json)
    engine = _ticket_engine(audit_path, key_file, key_env)
    try:
        ticket = engine.approve(ticket_id, by=by, args=edited, reason=reason)
    finally:
        engine.audit.close()
    click.echo(printable(f"{ticket.id}: approved by {ticket.by}"
                         f"{' with edited arguments' if ticket.edited else ''}"))


@tickets.command("deny")
@click.argument("ticket_id")
@_log_argument
@click.option("--by", required=True, help="Who denies (recorded).")
@click.option("--reason", default="", help="Why (recorded, secrets cut).")
@_key_file_option
@_key_env_option
def tickets_deny(ticket_id: str, audit_path: Path, by: str, reason: str,
                 key_file: Path | None, key_env: str | None) -> None:
    """Deny TICKET_ID; its call closes without running when the app resumes it."""
    engine = _ticket_engine(audit_path, key_file, key_env)
    try:
        ticket = engine.deny(ticket_id, reason, by=by)
    finally:
        engine.audit.close()
    click.echo(printable(f"{ticket.id}: denied by {ticket.by}"))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit status (the ``buddy`` entry point)."""
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="buddy",
                 standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 130
    except click.exceptions.NoArgsIsHelpError as exc:  # bare `buddy` or `buddy graph`
        click.echo(exc.format_message(), err=True)
        return EXIT_USAGE
    except click.ClickException as exc:
        _error(f"{type(exc).__name__}: {exc.format_message()}")
        return exc.exit_code or EXIT_USAGE
    except UnknownToolError as exc:
        _error(f"UnknownToolError: {exc} (see `buddy tools`)")
        return EXIT_USAGE
    except RuleTableError as exc:  # every problem found, one line each
        for problem in exc.problems:
            _error(f"RuleTableError: {problem}")
        return EXIT_FAILED
    except BuddyError as exc:
        _error(f"{type(exc).__name__}: {exc}")
        return EXIT_FAILED
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_FAILED
    except OSError as exc:
        if exc.filename is None:  # not about a file we were told to use: a bug, so a traceback
            raise
        _error(f"{type(exc).__name__}: {exc.filename}: {exc.strerror or exc}")
        return EXIT_FAILED
    return 0


def _error(line: str) -> None:
    """One error line on stderr, every unprintable character escaped."""
    click.echo(printable(line), err=True)


def entry() -> None:
    sys.exit(main())
