"""Conflicts between tool calls planned to run together, and how each is resolved.

A batch is a list of :class:`~buddy.engine.orchestration._plans.PlannedCall` values; calls in
the same ``slot`` run at the same time. :meth:`ConflictResolver.detect` finds
six conflict types:

RESOURCE
    Two calls by different agents on the same ``resource`` in the same slot.
    The first call of the (slot, resource) bucket keeps it; each later call by
    another agent conflicts with it. A resource held by a running call
    (:meth:`ConflictResolver.acquire`, in :attr:`~ConflictResolver.active`) is
    held in every slot until released: calls by other agents conflict with it.
ORDERING
    A call whose tool's dependencies (``contract.dependencies``) have neither
    run in an earlier slot of the same plan nor succeeded for that plan in the
    execution history.
RATE_LIMIT
    More calls of one tool in one slot than its contract's ``max_concurrency``
    (calls still running, :attr:`~ConflictResolver.rate_limit_state`, count
    first): each call beyond the limit conflicts with the first of the slot.
DUPLICATE_ACTION
    The same irreversible tool with the same arguments (the same
    :func:`~buddy.engine.core._controller.args_digest`) twice in the batch, whatever
    the agents or slots, or a call repeating one that already ran successfully
    in a counted mode (LIVE unless ``duplicate_modes`` says otherwise: a MOCK or
    DRY_RUN run changed nothing). The execution history can be loaded from an
    audit trail (:meth:`ConflictResolver.load_history`), so duplicates are
    caught across restarts.
PERMISSION
    The agent lacks a permission of the tool, per the ``agents`` map given to
    the resolver. An agent missing from the map holds nothing and is always in
    conflict (the engine refuses unknown agents). Without a map, no check.
TIMEOUT
    ``estimated_s`` greater than the tool's ``timeout_s``, or a timeout seen at
    run time (:meth:`ConflictResolver.record_timeout`).

Each :class:`Conflict` lists its calls; the **last** is the call the conflict
changes, the ones before it keep their place. Pairwise conflicts (RESOURCE,
RATE_LIMIT, DUPLICATE_ACTION) name the call they collide with first; that may
be a running call (``active``) or an execution from the history. Unary ones
(ORDERING, PERMISSION, TIMEOUT) name one call.

Detection never compares every pair: one pass buckets the calls by
(slot, resource), (slot, tool) and (tool, args digest) in dicts, and one pass
before it maps (plan, tool) to the earliest slot, so it is linear in the calls.
Its result, a :class:`ConflictReport`, holds the conflicts and the conflict
graph: an ``nx.MultiGraph`` with every call id as a node and one edge per
pairwise conflict (key: the conflict id; attribute ``type``). Unary conflicts
are recorded as the node attribute ``unary``, a list of :class:`ConflictType`.
Nodes outside the batch carry ``external``: ``"active"`` or ``"history"``.

Conflict ids (``conflict-1``, ``conflict-2``, ...) count up over the resolver's
life, in this order within a batch: DUPLICATE_ACTION, PERMISSION, TIMEOUT,
RESOURCE, RATE_LIMIT, ORDERING (drop, reassign and cap first, then move; the
ORDERING ones by the depth of their tool in the dependency graph, so a
dependency moves before what needs it), each in call order.

:meth:`ConflictResolver.resolve` gives every conflict one :class:`Resolution`,
in id order, from the first row of the :class:`ConflictTable` that matches the
conflict (``rules/conflicts.toml``; its comments define the strategies). It is
one pass. DELAY moves a call to the first later slot where it fits (no other
agent's call on its resource there, its tool below its limit; running calls are
not counted, they hold every slot alike). A move or a reassignment may create
a conflict that only a second :meth:`~ConflictResolver.detect` on the adjusted
calls shows (a call whose dependency was delayed, say). A conflict whose call
an earlier resolution aborted is resolved ABORT ("already aborted").
"""

from __future__ import annotations

import contextlib
import gc
import operator
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import attrs
import networkx as nx

from buddy.engine.core._audit import AuditLog
from buddy.engine.orchestration._plans import PlannedCall
from buddy.rules.base._canonical import args_digest
from buddy.rules.base._values import ExecutionMode, RiskLevel
from buddy.rules.base.errors import AuditFormatError, InputError
from buddy.rules.tables._catalogue import ToolContractRegistry
from buddy.rules.tables._conflicts import (
    ConflictRow,
    ConflictTable,
    ConflictType,
    ResolutionStrategy,
)

__all__ = [
    "Conflict",
    "ConflictReport",
    "ConflictResolver",
    "ExecutedCall",
    "Holder",
    "Resolution",
    "ResolutionReport",
]


T = ConflictType
R = ResolutionStrategy
_MODES = {m.value: m for m in ExecutionMode}

#: The order conflicts are numbered, and resolved, within one batch.
DETECTION_ORDER: tuple[ConflictType, ...] = (
    T.DUPLICATE_ACTION, T.PERMISSION, T.TIMEOUT, T.RESOURCE, T.RATE_LIMIT, T.ORDERING)

# -- records ------------------------------------------------------------------

@attrs.frozen
class Conflict:
    """One conflict: ``calls[-1]`` is the call it changes; the ones before keep their place."""

    id: str
    type: ConflictType
    calls: tuple[str, ...]
    tool: str
    resource: str | None
    detail: str

    @property
    def call(self) -> str:
        """The call the conflict changes."""
        return self.calls[-1]


@attrs.frozen
class ConflictReport:
    """What :meth:`ConflictResolver.detect` found: the conflicts, in id order, and
    the conflict graph (see the module docstring)."""

    conflicts: tuple[Conflict, ...]
    graph: nx.MultiGraph = attrs.field(eq=False, repr=False)

    def counts(self) -> dict[str, int]:
        """Conflicts by type, every type present."""
        found = Counter(c.type for c in self.conflicts)
        return {t.value: found[t] for t in ConflictType}


@attrs.frozen
class Resolution:
    """What was done about one conflict, to which call, by which table row.

    ``slot`` and ``delay_s``: the call's new slot and its wait (DELAY);
    ``new_agent`` (REASSIGN); ``max_mode``: the call's mode cap as this
    resolution leaves it (set by this DOWNGRADE or an earlier one, so the last
    resolution of a call says all). ``strategy`` is what was applied: a row's
    fallback when its own strategy could not be.
    """

    conflict: str
    call: str
    type: ConflictType
    strategy: ResolutionStrategy
    rule: str
    reason: str
    delay_s: float | None = None
    slot: int | None = None
    new_agent: str | None = None
    max_mode: ExecutionMode | None = None

    def apply(self, call: PlannedCall) -> PlannedCall | None:
        """``call`` as this resolution leaves it; None when aborted (the mode cap of
        DOWNGRADE is not part of a call: see :attr:`ResolutionReport.max_modes`)."""
        if self.strategy is R.ABORT:
            return None
        if self.strategy is R.DELAY:
            return attrs.evolve(call, slot=self.slot)
        if self.strategy is R.REASSIGN:
            return attrs.evolve(call, agent=self.new_agent)
        return call


@attrs.frozen
class ResolutionReport:
    """The resolutions of one report, and the calls as they now stand.

    ``calls``: the adjusted calls in their given order, aborted ones left out;
    ``aborted``: their ids; ``max_modes``: the mode cap per call (DOWNGRADE).
    """

    resolutions: tuple[Resolution, ...]
    calls: tuple[PlannedCall, ...]
    aborted: tuple[str, ...]
    max_modes: Mapping[str, ExecutionMode]

    def for_call(self, call_id: str) -> tuple[Resolution, ...]:
        """Every resolution that changed ``call_id``, in order."""
        return tuple(r for r in self.resolutions if r.call == call_id)


@attrs.frozen
class ExecutedCall:
    """One run in the execution history (``id``: the call id, or the audit subject)."""

    id: str
    tool: str
    agent: str
    args_digest: str | None
    ok: bool
    mode: ExecutionMode | None = None
    plan_id: str | None = None


@attrs.frozen
class Holder:
    """Who holds an exclusive resource: an agent, through one or more running calls."""

    agent: str
    calls: tuple[str, ...]


# -- the resolver -------------------------------------------------------------

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


class _Tool:
    """What detection needs of one contract, read once."""

    __slots__ = ("name", "risk", "reversible", "permissions", "dependencies", "limit",
                 "timeout_s", "depth")

    def __init__(self, name: str, risk: RiskLevel, reversible: bool,
                 permissions: frozenset[str], dependencies: tuple[str, ...], limit: int,
                 timeout_s: float, depth: int) -> None:
        self.name = name
        self.risk = risk
        self.reversible = reversible
        self.permissions = permissions
        self.dependencies = dependencies
        self.limit = limit
        self.timeout_s = timeout_s
        self.depth = depth


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
        When given, every conflict and every resolution appends one event
        (kinds ``conflict`` and ``resolution``, machine ``conflicts``).
    duplicate_modes:
        The modes in which a past successful run makes a repeat a DUPLICATE_ACTION.

    Examples
    --------
    >>> from buddy.engine.orchestration._plans import PlannedCall
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
                 duplicate_modes: Iterable[ExecutionMode] = (ExecutionMode.LIVE,)) -> None:
        self.registry = registry
        self.table = table if table is not None else ConflictTable.default()
        self.agents = None if agents is None else {a: frozenset(p) for a, p in agents.items()}
        self.audit = audit
        self.duplicate_modes = frozenset(duplicate_modes)
        #: resource -> who holds it now (see :meth:`acquire`).
        self.active: dict[str, Holder] = {}
        #: every execution recorded or loaded, in order.
        self.execution_history: list[ExecutedCall] = []
        #: every conflict detected and every resolution made, in order.
        self.conflicts: list[Conflict] = []
        self.resolutions: list[Resolution] = []
        self._running: dict[str, list[str]] = {}          # tool -> running call ids
        self._done_actions: dict[tuple[str, str], str] = {}  # (tool, digest) -> run id
        self._done_steps: set[tuple[str, str]] = set()     # (plan, tool) that succeeded
        self._tools: dict[str, _Tool] = {}
        self._lacking: dict[str, dict[str, frozenset[str] | None]] = {}
        self._holders: dict[str, list[str]] = {}
        self._next = 1
        self._by_type: Counter[ConflictType] = Counter()
        self._by_strategy: Counter[ResolutionStrategy] = Counter()

    # -- state -----------------------------------------------------------------
    @property
    def rate_limit_state(self) -> dict[str, int]:
        """Tool -> how many of its calls are running now."""
        return {tool: len(ids) for tool, ids in self._running.items() if ids}

    def acquire(self, call: PlannedCall) -> None:
        """Mark ``call`` as running: it holds its resource and one of its tool's slots.

        Raises :class:`~buddy.rules.base.errors.InputError` when another agent holds
        the resource (resolve the conflict first).
        """
        if call.resource is not None:
            holder = self.active.get(call.resource)
            if holder is not None and holder.agent != call.agent:
                raise InputError(f"resource {call.resource!r} is held by {holder.agent} "
                                 f"(call {holder.calls[0]}); {call.agent} cannot take it "
                                 f"for call {call.id}")
            calls = (*holder.calls, call.id) if holder is not None else (call.id,)
            self.active[call.resource] = Holder(call.agent, calls)
        self._running.setdefault(call.tool, []).append(call.id)

    def release(self, call: PlannedCall) -> None:
        """``call`` has finished: give back what :meth:`acquire` took (no-op if nothing)."""
        holder = self.active.get(call.resource) if call.resource is not None else None
        if holder is not None and call.id in holder.calls:
            rest = tuple(c for c in holder.calls if c != call.id)
            if rest:
                self.active[call.resource] = Holder(holder.agent, rest)  # type: ignore[index]
            else:
                del self.active[call.resource]  # type: ignore[arg-type]
        running = self._running.get(call.tool)
        if running and call.id in running:
            running.remove(call.id)

    def record_execution(self, call: PlannedCall, *, ok: bool,
                         mode: ExecutionMode | None = None, ident: str | None = None) -> None:
        """Add a run of ``call`` to the execution history."""
        self._remember(ExecutedCall(ident or call.id, call.tool, call.agent,
                                    args_digest(call.args), ok, mode, call.plan_id))

    def load_history(self, source: AuditLog | Iterable[Mapping[str, Any]] | str | os.PathLike[str],
                     ) -> int:
        """Read the ``execution`` events of an audit trail into the history.

        ``source``: an :class:`~buddy.engine.AuditLog`, its records, or the path
        of a log file. Returns the number of executions read. A run counts for
        DUPLICATE_ACTION when it succeeded (``ok``) in one of ``duplicate_modes``;
        for ORDERING when it succeeded and its event names a ``plan_id``.

        Raises :class:`~buddy.rules.base.errors.AuditFormatError` for an execution
        event without a tool.
        """
        if isinstance(source, AuditLog):
            records: Iterable[Mapping[str, Any]] = source.records()
        elif isinstance(source, str | os.PathLike):
            records = AuditLog.read_records(source)
        else:
            records = source
        count = 0
        for record in records:
            if record.get("kind") != "execution":
                continue
            data = record.get("data") or {}
            tool = data.get("tool")
            if not isinstance(tool, str):
                raise AuditFormatError(f"seq {record.get('seq')}", "execution event without a "
                                       "tool")
            mode = data.get("mode")
            self._remember(ExecutedCall(
                str(data.get("call_id") or record.get("subject")), tool, str(data.get("agent")),
                data.get("args_digest"), data.get("ok") is True,
                _MODES.get(mode),
                data.get("plan_id")))
            count += 1
        return count

    def _remember(self, run: ExecutedCall) -> None:
        self.execution_history.append(run)
        if not run.ok:
            return
        if run.args_digest is not None and run.mode in self.duplicate_modes:
            self._done_actions.setdefault((run.tool, run.args_digest), run.id)
        if run.plan_id is not None:
            self._done_steps.add((run.plan_id, run.tool))

    def _tool(self, name: str) -> _Tool:
        tool = self._tools.get(name)
        if tool is None:
            c = self.registry.get(name)  # UnknownToolError for a tool not in the catalogue
            depth = 1 + max((self._tool(d).depth for d in c.dependencies), default=-1)
            tool = _Tool(name, c.risk, c.reversible, c.permissions, c.dependencies,
                         c.max_concurrency, c.timeout_s, depth)
            self._tools[name] = tool
        return tool

    def _missing(self, agent: str, tool: _Tool) -> frozenset[str] | None:
        """The permissions ``agent`` lacks for ``tool``: all of them for an unknown agent
        (then never None: an unknown agent is always a conflict); None if none."""
        held = self.agents.get(agent) if self.agents is not None else None
        if held is None:
            return tool.permissions
        return (tool.permissions - held) or None

    # -- detection -------------------------------------------------------------
    def detect(self, calls: Iterable[PlannedCall]) -> ConflictReport:
        """Find every conflict of one batch; see the module docstring for the rules.

        Linear in the calls. Raises :class:`~buddy.rules.base.errors.InputError` when
        two calls share an id, :class:`~buddy.rules.base.errors.UnknownToolError` for
        a tool not in the catalogue.
        """
        with _gc_paused():
            return self._detect(calls)

    def _detect(self, calls: Iterable[PlannedCall]) -> ConflictReport:
        calls = calls if isinstance(calls, list | tuple) else list(calls)
        ids = [c.id for c in calls]
        if len(set(ids)) != len(ids):
            dupes = sorted(k for k, n in Counter(ids).items() if n > 1)
            raise InputError(f"call ids must be unique in a batch: {', '.join(dupes[:5])}")
        tool_of = self._tools
        names = {c.tool for c in calls}
        for name in names - tool_of.keys():
            self._tool(name)
        # Pass 1: the earliest slot of each (plan, tool) that some tool depends on.
        needed = {d for t in names for d in tool_of[t].dependencies}
        first_slot: dict[tuple[str, str], int] = {}
        if needed:
            for c in calls:
                if c.tool in needed:
                    key = (c.plan_id, c.tool)
                    if first_slot.get(key, c.slot + 1) > c.slot:
                        first_slot[key] = c.slot
        # Pass 2: every check, one dict lookup each.
        found: dict[ConflictType, list[tuple[Any, ...]]] = {t: [] for t in ConflictType}
        dup, perm, late = found[T.DUPLICATE_ACTION], found[T.PERMISSION], found[T.TIMEOUT]
        clash, excess, order = found[T.RESOURCE], found[T.RATE_LIMIT], found[T.ORDERING]
        actions: dict[tuple[str, str], str] = {}
        holders: dict[tuple[int, str], tuple[str, str, bool]] = {}
        counts: dict[tuple[int, str], list[Any]] = {}
        done_actions, done_steps, active = self._done_actions, self._done_steps, self.active
        running = self._running
        check_permissions = self.agents is not None
        lacking = self._lacking
        external: dict[str, str] = {}
        for call in calls:
            tool = tool_of[call.tool]
            cid, agent, slot = call.id, call.agent, call.slot
            if not tool.reversible:
                key = (tool.name, args_digest(call.args))
                first = actions.get(key)
                if first is None:
                    ran = done_actions.get(key)
                    first = actions[key] = (cid, False) if ran is None else (ran, True)
                    if ran is not None:
                        external[ran] = "history"
                if first[0] != cid:
                    dup.append((*first, call))
            if check_permissions:
                lacks = lacking.get(agent)
                if lacks is None:  # tool -> what the agent lacks for it, filled as met
                    lacks = lacking[agent] = {}
                missing = lacks.get(tool.name)
                if missing is None and tool.name not in lacks:
                    missing = lacks[tool.name] = self._missing(agent, tool)
                if missing is not None:
                    perm.append((call, missing))
            estimate = call.estimated_s
            if estimate is not None and estimate > tool.timeout_s:
                late.append((call, tool.timeout_s))
            resource = call.resource
            if resource is not None:
                key2 = (slot, resource)
                holder = holders.get(key2)
                if holder is None:
                    held = active.get(resource)
                    holder = (held.calls[0], held.agent, True) if held is not None \
                        else (cid, agent, False)
                    holders[key2] = holder
                    if held is not None:
                        external[held.calls[0]] = "active"
                if holder[1] != agent:
                    clash.append((holder, call))
            key3 = (slot, tool.name)
            count = counts.get(key3)
            if count is None:
                busy = running.get(tool.name)
                count = counts[key3] = [busy[0] if busy else cid, len(busy) if busy else 0]
                if busy:
                    external[busy[0]] = "active"
            count[1] += 1
            if count[1] > tool.limit:
                excess.append((count, call, tool.limit))
            if tool.dependencies:
                plan = call.plan_id
                missing_deps = [d for d in tool.dependencies
                                if first_slot.get((plan, d), slot) >= slot
                                and (plan, d) not in done_steps]
                if missing_deps:
                    order.append((tool.depth, call, missing_deps,
                                  [first_slot.get((plan, d)) for d in missing_deps]))
        order.sort(key=operator.itemgetter(0))  # stable: call order within a depth
        return self._report(ids, found, external)

    def _report(self, ids: list[str],
                found: Mapping[ConflictType, list[tuple[Any, ...]]],
                external: Mapping[str, str]) -> ConflictReport:
        out: list[Conflict] = []
        n = self._next
        for first, from_history, call in found[T.DUPLICATE_ACTION]:
            where = (f"already ran successfully as {first}" if from_history
                     else f"the same as call {first}")
            out.append(Conflict(f"conflict-{n}", T.DUPLICATE_ACTION, (first, call.id),
                                call.tool, call.resource,
                                f"{call.id} repeats irreversible {call.tool} with the same "
                                f"arguments: {where}"))
            n += 1
        for call, missing in found[T.PERMISSION]:
            why = (f"agent {call.agent} lacks permission(s) {', '.join(sorted(missing))}"
                   if self.agents is not None and call.agent in self.agents
                   else f"agent {call.agent} is unknown, so it holds no permission")
            out.append(Conflict(f"conflict-{n}", T.PERMISSION, (call.id,), call.tool,
                                call.resource, f"{why} for {call.tool} ({call.id})"))
            n += 1
        for call, timeout in found[T.TIMEOUT]:
            out.append(Conflict(f"conflict-{n}", T.TIMEOUT, (call.id,), call.tool, call.resource,
                                f"{call.id} is estimated at {call.estimated_s} s, past "
                                f"{call.tool}'s timeout of {timeout} s"))
            n += 1
        for (holder, holder_agent, running), call in found[T.RESOURCE]:
            held = "running call" if running else "call"
            out.append(Conflict(f"conflict-{n}", T.RESOURCE, (holder, call.id), call.tool,
                                call.resource,
                                f"{call.agent} wants resource {call.resource} in slot "
                                f"{call.slot}, held by {holder_agent} ({held} {holder})"))
            n += 1
        for (first, _), call, limit in found[T.RATE_LIMIT]:
            out.append(Conflict(f"conflict-{n}", T.RATE_LIMIT, (first, call.id), call.tool,
                                call.resource,
                                f"{call.tool} allows {limit} call(s) at once; {call.id} is one "
                                f"more in slot {call.slot}"))
            n += 1
        for _, call, deps, slots in found[T.ORDERING]:
            why = ", ".join(f"{d} (plan slot {s})" if s is not None else f"{d} (not planned)"
                            for d, s in zip(deps, slots, strict=True))
            out.append(Conflict(f"conflict-{n}", T.ORDERING, (call.id,), call.tool,
                                call.resource,
                                f"{call.id} ({call.tool}, slot {call.slot} of plan "
                                f"{call.plan_id}) runs before its dependencies: {why}"))
            n += 1
        self._next = n
        graph = nx.MultiGraph()
        graph.add_nodes_from(ids)
        graph.add_nodes_from((node, {"external": kind}) for node, kind in external.items())
        nodes = graph.nodes
        edges = []
        for conflict in out:
            if len(conflict.calls) == 2:
                edges.append((*conflict.calls, conflict.id, {"type": conflict.type}))
            else:
                nodes[conflict.calls[0]].setdefault("unary", []).append(conflict.type)
        graph.add_edges_from(edges)
        self._note(out)
        return ConflictReport(tuple(out), graph)

    def _note(self, conflicts: Sequence[Conflict]) -> None:
        self.conflicts.extend(conflicts)
        self._by_type.update(c.type for c in conflicts)
        if self.audit is not None:
            digest = self.table.digest
            for c in conflicts:
                self.audit.append("conflict", "conflicts", c.id, "detected", None, None, {
                    "type": c.type.value, "calls": list(c.calls), "tool": c.tool,
                    "resource": c.resource, "detail": c.detail, "rules": digest})

    def record_timeout(self, call: PlannedCall, elapsed_s: float | None = None) -> ConflictReport:
        """A TIMEOUT seen at run time: record (and audit) it; resolve it like any other."""
        timeout = self._tool(call.tool).timeout_s
        took = f"ran {elapsed_s} s" if elapsed_s is not None else "ran"
        conflict = Conflict(f"conflict-{self._next}", T.TIMEOUT, (call.id,), call.tool,
                            call.resource, f"{call.id} {took} past {call.tool}'s timeout of "
                            f"{timeout} s")
        self._next += 1
        graph = nx.MultiGraph()
        graph.add_node(call.id, unary=[T.TIMEOUT])
        self._note([conflict])
        return ConflictReport((conflict,), graph)

    # -- resolution ------------------------------------------------------------
    def resolve(self, report: ConflictReport, calls: Iterable[PlannedCall]) -> ResolutionReport:
        """Resolve every conflict of ``report`` (found in ``calls``), in id order.

        Raises :class:`~buddy.rules.base.errors.InputError` when a conflict names a
        call that ``calls`` does not hold.
        """
        with _gc_paused():
            return self._resolve(report, calls)

    def _resolve(self, report: ConflictReport, calls: Iterable[PlannedCall]) -> ResolutionReport:
        state = _Batch(self, list(calls))
        made: list[Resolution] = []
        for conflict in report.conflicts:
            target = conflict.calls[-1]
            tool = self._tool(conflict.tool)
            row = self.table.row_for(conflict.type, tool.risk, tool.reversible)
            if target in state.aborted:
                made.append(Resolution(conflict.id, target, conflict.type, R.ABORT, row.id,
                                       f"already aborted by {state.aborted[target]}"))
                continue
            call = state.now.get(target)
            if call is None:
                raise InputError(f"{conflict.id}: call {target!r} is not among the calls given")
            done = state.apply(conflict, call, row, tool)
            cap = state.max_modes.get(target)
            if done.strategy is not R.ABORT and cap is not done.max_mode:
                done = attrs.evolve(done, max_mode=cap)
            made.append(done)
        self.resolutions.extend(made)
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
        return ResolutionReport(tuple(made), tuple(state.adjusted()), tuple(state.aborted),
                                dict(state.max_modes))

    def agents_for(self, tool: str) -> list[str]:
        """Agents holding every permission of ``tool``, by name."""
        holders = self._holders.get(tool)
        if holders is None:
            needs = self._tool(tool).permissions
            holders = sorted(a for a, held in (self.agents or {}).items() if needs <= held)
            self._holders[tool] = holders
        return holders

    # -- reporting -------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Counts over the resolver's life, in the shape of ``tool_conflicts.json``."""
        return {
            "total_conflicts": len(self.conflicts),
            "by_type": {t.value: self._by_type[t] for t in ConflictType},
            "by_resolution_strategy": {s.value: self._by_strategy[s]
                                       for s in ResolutionStrategy},
            "resolved": len({r.conflict for r in self.resolutions}),
        }


class _Batch:
    """The calls of one :meth:`ConflictResolver.resolve` as they are being adjusted."""

    def __init__(self, resolver: ConflictResolver, calls: list[PlannedCall]) -> None:
        self.resolver = resolver
        self.order = [c.id for c in calls]
        self.original = {c.id: c for c in calls}
        self.now = dict(self.original)
        self.aborted: dict[str, str] = {}       # call id -> conflict that aborted it
        self.max_modes: dict[str, ExecutionMode] = {}
        self.load: Counter[str] = Counter(c.agent for c in calls)
        self.at_resource: dict[tuple[int, str], Counter[str]] = {}
        self.at_tool: Counter[tuple[int, str]] = Counter()
        self.steps: dict[tuple[str, str], list[str]] = {}  # (plan, tool) -> call ids
        self._hint: dict[tuple[Any, ...], int] = {}
        for c in calls:
            self._add(c)
            self.steps.setdefault((c.plan_id, c.tool), []).append(c.id)

    def adjusted(self) -> list[PlannedCall]:
        return [self.now[i] for i in self.order if i not in self.aborted]

    def _add(self, c: PlannedCall) -> None:
        if c.resource is not None:
            self.at_resource.setdefault((c.slot, c.resource), Counter())[c.agent] += 1
        self.at_tool[(c.slot, c.tool)] += 1

    def _remove(self, c: PlannedCall) -> None:
        if c.resource is not None:
            self.at_resource[(c.slot, c.resource)][c.agent] -= 1
        self.at_tool[(c.slot, c.tool)] -= 1

    def _fits(self, c: PlannedCall, slot: int, limit: int) -> bool:
        if self.at_tool[(slot, c.tool)] >= limit:
            return False
        if c.resource is None:
            return True
        there = self.at_resource.get((slot, c.resource))
        return there is None or all(n == 0 or a == c.agent for a, n in there.items())

    def _first_fit(self, c: PlannedCall, start: int, limit: int) -> int:
        """The first slot >= ``start`` with room for ``c`` (``c`` already taken out)."""
        key = (c.resource, c.tool, c.agent, start)
        slot = max(start, self._hint.get(key, start))
        while not self._fits(c, slot, limit):
            slot += 1
        self._hint[key] = slot
        return slot

    def _abort(self, c: PlannedCall, conflict: Conflict) -> None:
        self._remove(c)
        self.load[c.agent] -= 1
        self.aborted[c.id] = conflict.id
        del self.now[c.id]

    def apply(self, conflict: Conflict, call: PlannedCall, row: ConflictRow,
              tool: _Tool) -> Resolution:
        base = (conflict.id, call.id, conflict.type)
        if row.strategy is R.DELAY:
            done = self._delay(conflict, call, row, tool)
            if isinstance(done, Resolution):
                return done
            why = done
        elif row.strategy is R.REASSIGN:
            candidates = [a for a in self.resolver.agents_for(call.tool) if a != call.agent]
            if candidates:
                agent = min(candidates, key=lambda a: (self.load[a], a))
                self._remove(call)
                self.load[call.agent] -= 1
                moved = attrs.evolve(call, agent=agent)
                self._add(moved)
                self.load[agent] += 1
                self.now[call.id] = moved
                return Resolution(*base, R.REASSIGN, row.id,
                                  f"reassigned from {call.agent} to {agent}, the least loaded "
                                  f"agent holding {call.tool}'s permissions", new_agent=agent)
            why = f"no other agent holds every permission of {call.tool}"
        else:
            return self._final(conflict, call, row, row.strategy, "")
        assert row.fallback is not None
        return self._final(conflict, call, row, row.fallback, f"{why}; fallback ")

    def _final(self, conflict: Conflict, call: PlannedCall, row: ConflictRow,
               strategy: ResolutionStrategy, prefix: str) -> Resolution:
        base = (conflict.id, call.id, conflict.type)
        if strategy is R.ABORT:
            self._abort(call, conflict)
            return Resolution(*base, R.ABORT, row.id, f"{prefix}aborted: {conflict.detail}")
        assert strategy is R.DOWNGRADE and row.max_mode is not None
        cap = row.max_mode
        old = self.max_modes.get(call.id)
        if old is None or cap.rank < old.rank:
            self.max_modes[call.id] = cap
        return Resolution(*base, R.DOWNGRADE, row.id,
                          f"{prefix}capped at {cap.value}: {conflict.detail}", max_mode=cap)

    def _delay(self, conflict: Conflict, call: PlannedCall, row: ConflictRow,
               tool: _Tool) -> Resolution | str:
        """Move ``call`` later; a Resolution, or why DELAY cannot help."""
        origin = self.original[call.id].slot
        start = max(call.slot, origin + 1)
        if conflict.type is T.ORDERING:
            after = self._after_dependencies(call, tool)
            if isinstance(after, str):
                return after
            start = max(call.slot, after)
        self._remove(call)
        slot = self._first_fit(call, start, tool.limit)
        assert row.delay_s is not None and row.max_delay_s is not None
        wait = row.delay_s * (slot - origin)
        if wait > row.max_delay_s:
            self._add(call)
            return (f"waiting for slot {slot} would take {wait:g} s, more than "
                    f"max_delay_s {row.max_delay_s:g}")
        moved = attrs.evolve(call, slot=slot) if slot != call.slot else call
        self._add(moved)
        self.now[call.id] = moved
        return Resolution(conflict.id, call.id, conflict.type, R.DELAY, row.id,
                          f"delayed from slot {origin} to {slot} ({wait:g} s): "
                          f"{conflict.detail}", delay_s=wait, slot=slot)

    def _after_dependencies(self, call: PlannedCall, tool: _Tool) -> int | str:
        """The slot right after the dependencies of ``call`` in its plan, or why none."""
        after = call.slot
        done = self.resolver._done_steps
        for dep in tool.dependencies:
            if (call.plan_id, dep) in done:
                continue
            slots = [self.now[i].slot for i in self.steps.get((call.plan_id, dep), ())
                     if i not in self.aborted]
            if not slots:
                return f"plan {call.plan_id} never runs {dep}, so waiting cannot help"
            after = max(after, min(slots) + 1)
        return after
