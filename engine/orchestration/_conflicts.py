"""The conflict resolver: finds conflicts between calls planned together and resolves them.

:class:`ConflictResolver` ties four parts, each in its own module:

- the records it hands out (:mod:`._conflict_records`: ``Conflict``,
  ``ConflictReport``, ``Resolution``, ``ResolutionReport``, ``ExecutedCall``,
  ``Holder``);
- what is running and what has run (:mod:`._execution_ledger`), which
  detection reads between batches and an audit trail can restore;
- detection of the six conflict types (:mod:`._conflict_detection`, which
  defines them), over the catalogue read once (:mod:`._tool_facts`);
- resolution by the conflict table (:mod:`._conflict_resolution`, which
  defines the strategies).

The resolver numbers conflicts (``conflict-1``, ``conflict-2``, ...) over its
life, keeps every conflict and resolution, counts them for
``tool_conflicts.json`` and, given an audit log, appends one event per
conflict (kind ``conflict``) and per resolution (kind ``resolution``),
machine ``conflicts``, each with the digest of the table.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from buddy.engine.core._audit import AuditLog
from buddy.engine.orchestration._conflict_detection import Detector
from buddy.engine.orchestration._conflict_records import (
    Conflict,
    ConflictReport,
    ExecutedCall,
    Holder,
    Resolution,
    ResolutionReport,
)
from buddy.engine.orchestration._conflict_resolution import resolve_conflicts
from buddy.engine.orchestration._execution_ledger import ExecutionLedger
from buddy.engine.orchestration._plans import PlannedCall
from buddy.engine.orchestration._tool_facts import ToolIndex
from buddy.rules.base._canonical import args_digest
from buddy.rules.base._values import ExecutionMode
from buddy.rules.tables._catalogue import ToolContractRegistry
from buddy.rules.tables._conflicts import ConflictTable, ConflictType, ResolutionStrategy

__all__ = ["ConflictResolver"]


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a batch is bucketed and its graph built.

    Those builds make hundreds of thousands of small containers and no reference
    cycle worth collecting; the collector, run every few hundred allocations,
    rescans them all and takes ~40 % of the time of a 100,000-call batch. It is
    re-enabled (if it was enabled) on the way out, exception or not.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class ConflictResolver:
    """Detects conflicts in batches of planned calls and resolves them by a table.

    Parameters
    ----------
    registry:
        The tool contracts (dependencies, concurrency limits, timeouts, permissions).
    table:
        The :class:`ConflictTable`; defaults to the shipped one.
    agents:
        Agent name -> the permissions it holds. Without it, no PERMISSION check
        and no agent to REASSIGN to.
    audit:
        When given, every conflict and every resolution appends one event.
    duplicate_modes:
        The modes in which a past successful run makes a repeat a DUPLICATE_ACTION.
    keep_records:
        Keep every conflict, resolution and execution in :attr:`conflicts`,
        :attr:`resolutions` and :attr:`execution_history`; False only counts the
        first two (:meth:`summary` is the same) and keeps of the executions what
        detection reads, for a long run that takes each batch's conflicts and
        resolutions from the reports and streams them.

    Examples
    --------
    >>> resolver = ConflictResolver(ToolContractRegistry.default())
    >>> calls = [PlannedCall("a1", "p1", "agent-a", "form_fill", 0.9, resource="form:7"),
    ...          PlannedCall("b1", "p2", "agent-b", "form_fill", 0.9, resource="form:7")]
    >>> report = resolver.detect(calls)
    >>> [(c.id, c.type.value, c.calls) for c in report.conflicts]
    [('conflict-1', 'RESOURCE', ('a1', 'b1'))]
    >>> [(r.strategy.value, r.slot, r.delay_s) for r in resolver.resolve(report, calls).resolutions]
    [('DELAY', 1, 5.0)]
    """

    def __init__(self, registry: ToolContractRegistry, table: ConflictTable | None = None, *,
                 agents: Mapping[str, Iterable[str]] | None = None,
                 audit: AuditLog | None = None,
                 duplicate_modes: Iterable[ExecutionMode] = (ExecutionMode.LIVE,),
                 keep_records: bool = True) -> None:
        self.registry = registry
        self.table = table if table is not None else ConflictTable.default()
        self.agents = None if agents is None else {a: frozenset(p) for a, p in agents.items()}
        self.audit = audit
        self.ledger = ExecutionLedger(duplicate_modes, keep_history=keep_records,
                                      digest=args_digest if audit is None else
                                      audit.args_digest)
        self.keep_records = keep_records
        #: every conflict detected and every resolution made, in order (``keep_records``).
        self.conflicts: list[Conflict] = []
        self.resolutions: list[Resolution] = []
        self._resolved: set[str] = set()  # the ids of the conflicts resolved
        self._tools = ToolIndex(registry)
        self._detector = Detector(self._tools, self.agents, self.ledger)
        self._holders: dict[str, list[str]] = {}
        self._next = 1
        self._by_type: Counter[ConflictType] = Counter()
        self._by_strategy: Counter[ResolutionStrategy] = Counter()

    # -- state -----------------------------------------------------------------
    @property
    def duplicate_modes(self) -> frozenset[ExecutionMode]:
        """The modes in which a successful run makes a repeat a DUPLICATE_ACTION."""
        return self.ledger.duplicate_modes

    @property
    def active(self) -> dict[str, Holder]:
        """Resource -> who holds it now (see :meth:`acquire`)."""
        return self.ledger.active

    @property
    def execution_history(self) -> list[ExecutedCall]:
        """Every execution recorded or loaded, in order."""
        return self.ledger.history

    @property
    def rate_limit_state(self) -> dict[str, int]:
        """Tool -> how many of its calls are running now."""
        return self.ledger.rate_limit_state

    def acquire(self, call: PlannedCall) -> None:
        """Mark ``call`` as running: it holds its resource and one of its tool's slots.

        Raises :class:`~buddy.rules.base.errors.InputError` when another agent holds
        the resource (resolve the conflict first).
        """
        self.ledger.acquire(call)

    def release(self, call: PlannedCall) -> None:
        """``call`` has finished: give back what :meth:`acquire` took (no-op if nothing)."""
        self.ledger.release(call)

    def record_execution(self, call: PlannedCall, *, ok: bool,
                         mode: ExecutionMode | None = None, ident: str | None = None) -> None:
        """Add a run of ``call`` to the execution history."""
        self.ledger.record(ExecutedCall(ident or call.id, call.tool, call.agent,
                                       self.ledger.digest(call.args), ok, mode,
                                       call.plan_id))

    def load_history(self, source: AuditLog | Iterable[Mapping[str, Any]] | str
                     | os.PathLike[str]) -> int:
        """Read the ``execution`` events of an audit trail into the history.

        See :meth:`ExecutionLedger.load_history
        <buddy.engine.orchestration._execution_ledger.ExecutionLedger.load_history>`.
        """
        return self.ledger.load_history(source)

    # -- detection -------------------------------------------------------------
    def detect(self, calls: Iterable[PlannedCall]) -> ConflictReport:
        """Find every conflict of one batch (see :mod:`._conflict_detection`).

        Linear in the calls. Raises :class:`~buddy.rules.base.errors.InputError` when
        two calls share an id, :class:`~buddy.rules.base.errors.UnknownToolError` for
        a tool not in the catalogue.
        """
        batch = calls if isinstance(calls, list | tuple) else list(calls)
        with _gc_paused():
            report = self._detector.detect(batch, self._next)
        self._note(report.conflicts)
        return report

    def record_timeout(self, call: PlannedCall, elapsed_s: float | None = None) -> ConflictReport:
        """A TIMEOUT seen at run time: record (and audit) it; resolve it like any other."""
        report = self._detector.timeout(call, self._next, elapsed_s)
        self._note(report.conflicts)
        return report

    def _note(self, conflicts: Sequence[Conflict]) -> None:
        self._next += len(conflicts)
        if self.keep_records:
            self.conflicts.extend(conflicts)
        self._by_type.update(c.type for c in conflicts)
        if self.audit is not None:
            digest = self.table.digest
            for c in conflicts:
                self.audit.append("conflict", "conflicts", c.id, "detected", None, None, {
                    "type": c.type.value, "calls": list(c.calls), "tool": c.tool,
                    "resource": c.resource, "detail": c.detail, "rules": digest})

    # -- resolution ------------------------------------------------------------
    def resolve(self, report: ConflictReport, calls: Iterable[PlannedCall]) -> ResolutionReport:
        """Resolve every conflict of ``report`` (found in ``calls``), in id order
        (see :mod:`._conflict_resolution`).

        Raises :class:`~buddy.rules.base.errors.InputError` when a conflict names a
        call that ``calls`` does not hold.
        """
        with _gc_paused():
            resolved = resolve_conflicts(report, calls, self.table, self._tools,
                                         self.agents_for, self.ledger.done_steps)
        made = resolved.resolutions
        if self.keep_records:
            self.resolutions.extend(made)
        self._resolved.update(r.conflict for r in made)
        self._by_strategy.update(r.strategy for r in made)
        if self.audit is not None:
            digest = self.table.digest
            for r in made:
                self.audit.append("resolution", "conflicts", r.conflict, "resolved", None,
                                  r.strategy.value, {
                                      "type": r.type.value, "call": r.call,
                                      "strategy": r.strategy.value, "rule": r.rule,
                                      "delay_s": r.delay_s, "slot": r.slot,
                                      "new_agent": r.new_agent,
                                      "max_mode": r.max_mode.value if r.max_mode else None,
                                      "reason": r.reason, "rules": digest})
        return resolved

    def agents_for(self, tool: str) -> list[str]:
        """Agents holding every permission of ``tool``, by name."""
        holders = self._holders.get(tool)
        if holders is None:
            needs = self._tools[tool].permissions
            holders = sorted(a for a, held in (self.agents or {}).items() if needs <= held)
            self._holders[tool] = holders
        return holders

    # -- reporting -------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Counts over the resolver's life, in the shape of ``tool_conflicts.json``."""
        return {
            "total_conflicts": self._next - 1,
            "by_type": {t.value: self._by_type[t] for t in ConflictType},
            "by_resolution_strategy": {s.value: self._by_strategy[s]
                                       for s in ResolutionStrategy},
            "resolved": len(self._resolved),
        }
