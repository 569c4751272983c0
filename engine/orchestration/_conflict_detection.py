"""Conflict detection: the six conflict types in one batch of planned calls.

Calls in the same ``slot`` run at the same time.

RESOURCE
    Two calls by different agents on the same ``resource`` in the same slot.
    The first call of the (slot, resource) bucket keeps it; each later call by
    another agent conflicts with it. A resource held by a running call
    (``ExecutionLedger.active``) is held in every slot until released: calls
    by other agents conflict with it.
ORDERING
    A call whose tool's dependencies (``contract.dependencies``) have neither
    run in an earlier slot of the same plan nor succeeded for that plan in the
    execution history.
RATE_LIMIT
    More calls of one tool in one slot than its contract's ``max_concurrency``
    (calls still running count first): each call beyond the limit conflicts
    with the first of the slot.
DUPLICATE_ACTION
    The same irreversible tool with the same arguments (the same
    :func:`~buddy.rules.base.args_digest`) twice in the batch, whatever the
    agents or slots, or a call repeating one that already ran successfully in
    a counted mode (see ``ExecutionLedger.duplicate_modes``).
PERMISSION
    The agent lacks a permission of the tool, per the ``agents`` map. An agent
    missing from the map holds nothing and is always in conflict (the engine
    refuses unknown agents). Without a map, no check.
TIMEOUT
    ``estimated_s`` greater than the tool's ``timeout_s``, or a timeout seen at
    run time (:meth:`Detector.timeout`).

Each :class:`~buddy.engine.orchestration._conflict_records.Conflict` lists its
calls; the **last** is the call the conflict changes, the ones before it keep
their place. Pairwise conflicts (RESOURCE, RATE_LIMIT, DUPLICATE_ACTION) name
the call they collide with first; that may be a running call or an execution
from the history. Unary ones (ORDERING, PERMISSION, TIMEOUT) name one call.

Detection never compares every pair: one pass buckets the calls by
(slot, resource), (slot, tool) and (tool, args digest) in dicts, and one pass
before it maps (plan, tool) to the earliest slot, so it is linear in the calls.

Conflicts are numbered in :data:`DETECTION_ORDER` (drop, reassign and cap
first, then move; the ORDERING ones by the depth of their tool in the
dependency graph, so a dependency moves before what needs it), each type in
call order.
"""

from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import networkx as nx

from buddy.engine.orchestration._conflict_records import Conflict, ConflictReport
from buddy.engine.orchestration._execution_ledger import ExecutionLedger
from buddy.engine.orchestration._plans import PlannedCall
from buddy.engine.orchestration._tool_facts import ToolFacts, ToolIndex
from buddy.rules.base.errors import InputError
from buddy.rules.tables._conflicts import ConflictType

__all__ = ["DETECTION_ORDER", "Detector"]

T = ConflictType

#: The order conflicts are numbered, and resolved, within one batch.
DETECTION_ORDER: tuple[ConflictType, ...] = (
    T.DUPLICATE_ACTION, T.PERMISSION, T.TIMEOUT, T.RESOURCE, T.RATE_LIMIT, T.ORDERING)

# What one pass of detection finds, per type, before the conflicts are numbered.
_Duplicate = tuple[str, bool, PlannedCall]             # first id, from history, the call
_Missing = tuple[PlannedCall, frozenset[str]]          # the call, the permissions it lacks
_Late = tuple[PlannedCall, float]                      # the call, its tool's timeout
_Clash = tuple[tuple[str, str, bool], PlannedCall]     # (holder id, its agent, running), call
_Excess = tuple[list[Any], PlannedCall, int]           # [first id, count], the call, the limit
_Early = tuple[int, PlannedCall, list[str], list[int | None]]  # depth, call, deps, their slots


class Detector:
    """Finds the conflicts of a batch against the tools, the agents and the ledger.

    ``agents``: agent name -> the permissions it holds; None for no PERMISSION
    check. What an agent lacks for a tool is remembered across batches.
    """

    def __init__(self, tools: ToolIndex, agents: Mapping[str, frozenset[str]] | None,
                 ledger: ExecutionLedger) -> None:
        self.tools = tools
        self.agents = agents
        self.ledger = ledger
        self._lacking: dict[str, dict[str, frozenset[str] | None]] = {}

    def detect(self, calls: Sequence[PlannedCall], first: int) -> ConflictReport:
        """The conflicts of ``calls``, numbered from ``conflict-<first>``.

        Raises :class:`~buddy.rules.base.errors.InputError` when two calls share an
        id, :class:`~buddy.rules.base.errors.UnknownToolError` for a tool not in
        the catalogue.
        """
        ids = [c.id for c in calls]
        if len(set(ids)) != len(ids):
            dupes = sorted(k for k, n in Counter(ids).items() if n > 1)
            raise InputError(f"call ids must be unique in a batch: {', '.join(dupes[:5])}")
        names = {c.tool for c in calls}
        tool_of = self.tools.covering(names)
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
        dup: list[_Duplicate] = []
        perm: list[_Missing] = []
        late: list[_Late] = []
        clash: list[_Clash] = []
        excess: list[_Excess] = []
        early: list[_Early] = []
        actions: dict[tuple[str, str], tuple[str, bool]] = {}
        holders: dict[tuple[int, str], tuple[str, str, bool]] = {}
        counts: dict[tuple[int, str], list[Any]] = {}
        ledger = self.ledger
        done_actions, done_steps = ledger.done_actions, ledger.done_steps
        active, running = ledger.active, ledger.running
        check_permissions = self.agents is not None
        lacking = self._lacking
        external: dict[str, str] = {}
        for call in calls:
            tool = tool_of[call.tool]
            cid, agent, slot = call.id, call.agent, call.slot
            if not tool.reversible:
                key = (tool.name, ledger.digest(call.args))
                seen = actions.get(key)
                if seen is None:
                    ran = done_actions.get(key)
                    seen = actions[key] = (cid, False) if ran is None else (ran, True)
                    if ran is not None:
                        external[ran] = "history"
                if seen[0] != cid:
                    dup.append((*seen, call))
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
                    early.append((tool.depth, call, missing_deps,
                                  [first_slot.get((plan, d)) for d in missing_deps]))
        early.sort(key=operator.itemgetter(0))  # stable: call order within a depth
        conflicts = self._number(first, dup, perm, late, clash, excess, early)
        return ConflictReport(tuple(conflicts), _graph(ids, conflicts, external))

    def timeout(self, call: PlannedCall, number: int, elapsed_s: float | None,
                ) -> ConflictReport:
        """A TIMEOUT seen at run time, as ``conflict-<number>``."""
        timeout = self.tools[call.tool].timeout_s
        took = f"ran {elapsed_s} s" if elapsed_s is not None else "ran"
        conflict = Conflict(f"conflict-{number}", T.TIMEOUT, (call.id,), call.tool,
                            call.resource, f"{call.id} {took} past {call.tool}'s timeout of "
                            f"{timeout} s")
        graph: nx.MultiGraph[str] = nx.MultiGraph()
        graph.add_node(call.id, unary=[T.TIMEOUT])
        return ConflictReport((conflict,), graph)

    def _missing(self, agent: str, tool: ToolFacts) -> frozenset[str] | None:
        """The permissions ``agent`` lacks for ``tool``: all of them for an unknown agent
        (then never None: an unknown agent is always a conflict); None if none."""
        held = self.agents.get(agent) if self.agents is not None else None
        if held is None:
            return tool.permissions
        return (tool.permissions - held) or None

    def _number(self, n: int, dup: list[_Duplicate], perm: list[_Missing], late: list[_Late],
                clash: list[_Clash], excess: list[_Excess], early: list[_Early],
                ) -> list[Conflict]:
        """The conflicts found, in :data:`DETECTION_ORDER`, numbered from ``n``."""
        out: list[Conflict] = []
        for first, from_history, call in dup:
            where = (f"already ran successfully as {first}" if from_history
                     else f"the same as call {first}")
            out.append(Conflict(f"conflict-{n}", T.DUPLICATE_ACTION, (first, call.id),
                                call.tool, call.resource,
                                f"{call.id} repeats irreversible {call.tool} with the same "
                                f"arguments: {where}"))
            n += 1
        for call, missing in perm:
            why = (f"agent {call.agent} lacks permission(s) {', '.join(sorted(missing))}"
                   if self.agents is not None and call.agent in self.agents
                   else f"agent {call.agent} is unknown, so it holds no permission")
            out.append(Conflict(f"conflict-{n}", T.PERMISSION, (call.id,), call.tool,
                                call.resource, f"{why} for {call.tool} ({call.id})"))
            n += 1
        for call, timeout in late:
            out.append(Conflict(f"conflict-{n}", T.TIMEOUT, (call.id,), call.tool, call.resource,
                                f"{call.id} is estimated at {call.estimated_s} s, past "
                                f"{call.tool}'s timeout of {timeout} s"))
            n += 1
        for (holder, holder_agent, running), call in clash:
            held = "running call" if running else "call"
            out.append(Conflict(f"conflict-{n}", T.RESOURCE, (holder, call.id), call.tool,
                                call.resource,
                                f"{call.agent} wants resource {call.resource} in slot "
                                f"{call.slot}, held by {holder_agent} ({held} {holder})"))
            n += 1
        for (first_id, _), call, limit in excess:
            out.append(Conflict(f"conflict-{n}", T.RATE_LIMIT, (first_id, call.id), call.tool,
                                call.resource,
                                f"{call.tool} allows {limit} call(s) at once; {call.id} is one "
                                f"more in slot {call.slot}"))
            n += 1
        for _, call, deps, slots in early:
            why = ", ".join(f"{d} (plan slot {s})" if s is not None else f"{d} (not planned)"
                            for d, s in zip(deps, slots, strict=True))
            out.append(Conflict(f"conflict-{n}", T.ORDERING, (call.id,), call.tool,
                                call.resource,
                                f"{call.id} ({call.tool}, slot {call.slot} of plan "
                                f"{call.plan_id}) runs before its dependencies: {why}"))
            n += 1
        return out


def _graph(ids: list[str], conflicts: list[Conflict], external: Mapping[str, str],
           ) -> nx.MultiGraph[str]:
    """The conflict graph: calls as nodes, a keyed edge per pairwise conflict."""
    graph: nx.MultiGraph[str] = nx.MultiGraph()
    graph.add_nodes_from(ids)
    graph.add_nodes_from((node, {"external": kind}) for node, kind in external.items())
    nodes = graph.nodes
    for conflict in conflicts:
        if len(conflict.calls) == 2:
            first, second = conflict.calls
            graph.add_edge(first, second, conflict.id, type=conflict.type)
        else:
            nodes[conflict.calls[0]].setdefault("unary", []).append(conflict.type)
    return graph
