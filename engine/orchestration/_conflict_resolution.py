"""Conflict resolution: one pass over a report, adjusting its batch of calls.

Every conflict gets one :class:`~buddy.engine.orchestration._conflict_records.Resolution`,
in id order, from the first row of the
:class:`~buddy.rules.tables.ConflictTable` that matches the conflict
(``rules/conflicts.toml``; its comments define the strategies):

DELAY
    moves the call to the first later slot where it fits (no other agent's
    call on its resource there, its tool below its limit; running calls are
    not counted, they hold every slot alike), no further than the row's
    ``max_delay_s``; an ORDERING conflict moves right after the call's
    dependencies in its plan.
REASSIGN
    gives the call to the least loaded other agent holding every permission of
    its tool (ties by name).
DOWNGRADE
    caps the call's mode at the row's ``max_mode`` (the lowest cap wins).
ABORT
    drops the call.

When a row's DELAY or REASSIGN cannot be applied, its ``fallback`` is. A
conflict whose call an earlier resolution aborted is resolved ABORT ("already
aborted"). A move or a reassignment may create a conflict that only a second
detection on the adjusted calls shows (a call whose dependency was delayed,
say).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable

import attrs

from buddy.engine.orchestration._conflict_records import (
    Conflict,
    ConflictReport,
    Resolution,
    ResolutionReport,
)
from buddy.engine.orchestration._plans import PlannedCall
from buddy.engine.orchestration._tool_facts import ToolFacts, ToolIndex
from buddy.rules.base._values import ExecutionMode
from buddy.rules.base.errors import InputError
from buddy.rules.tables._conflicts import (
    ConflictRow,
    ConflictTable,
    ConflictType,
    ResolutionStrategy,
)

__all__ = ["resolve_conflicts"]

T = ConflictType
R = ResolutionStrategy


def resolve_conflicts(report: ConflictReport, calls: Iterable[PlannedCall], table: ConflictTable,
                      tools: ToolIndex, agents_for: Callable[[str], list[str]],
                      done_steps: set[tuple[str, str]]) -> ResolutionReport:
    """Resolve every conflict of ``report`` (found in ``calls``), in id order.

    ``agents_for(tool)``: the agents that may take over a call of ``tool``;
    ``done_steps``: the (plan, tool) steps that already succeeded.

    Raises :class:`~buddy.rules.base.errors.InputError` when a conflict names a
    call that ``calls`` does not hold.
    """
    batch = _Batch(list(calls), agents_for, done_steps)
    made: list[Resolution] = []
    for conflict in report.conflicts:
        target = conflict.calls[-1]
        tool = tools[conflict.tool]
        row = table.row_for(conflict.type, tool.risk, tool.reversible)
        if target in batch.aborted:
            made.append(Resolution(conflict.id, target, conflict.type, R.ABORT, row.id,
                                   f"already aborted by {batch.aborted[target]}"))
            continue
        call = batch.now.get(target)
        if call is None:
            raise InputError(f"{conflict.id}: call {target!r} is not among the calls given")
        done = batch.apply(conflict, call, row, tool)
        cap = batch.max_modes.get(target)
        if done.strategy is not R.ABORT and cap is not done.max_mode:
            done = attrs.evolve(done, max_mode=cap)
        made.append(done)
    return ResolutionReport(tuple(made), tuple(batch.adjusted()), tuple(batch.aborted),
                            dict(batch.max_modes))


class _Batch:
    """The calls of one resolution as they are being adjusted."""

    def __init__(self, calls: list[PlannedCall], agents_for: Callable[[str], list[str]],
                 done_steps: set[tuple[str, str]]) -> None:
        self.agents_for = agents_for
        self.done_steps = done_steps
        self.order = [c.id for c in calls]
        self.original = {c.id: c for c in calls}
        self.now = dict(self.original)
        self.aborted: dict[str, str] = {}       # call id -> conflict that aborted it
        self.max_modes: dict[str, ExecutionMode] = {}
        self.load: Counter[str] = Counter(c.agent for c in calls)
        self.at_resource: dict[tuple[int, str], Counter[str]] = {}
        self.at_tool: Counter[tuple[int, str]] = Counter()
        self.steps: dict[tuple[str, str], list[str]] = {}  # (plan, tool) -> call ids
        self._hint: dict[tuple[str | None, str, str, int], int] = {}
        for c in calls:
            self._add(c)
            self.steps.setdefault((c.plan_id, c.tool), []).append(c.id)

    def adjusted(self) -> list[PlannedCall]:
        return [self.now[i] for i in self.order if i not in self.aborted]

    # -- one conflict -------------------------------------------------------------
    def apply(self, conflict: Conflict, call: PlannedCall, row: ConflictRow,
              tool: ToolFacts) -> Resolution:
        base = (conflict.id, call.id, conflict.type)
        if row.strategy is R.DELAY:
            done = self._delay(conflict, call, row, tool)
            if isinstance(done, Resolution):
                return done
            why = done
        elif row.strategy is R.REASSIGN:
            candidates = [a for a in self.agents_for(call.tool) if a != call.agent]
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
               tool: ToolFacts) -> Resolution | str:
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

    def _after_dependencies(self, call: PlannedCall, tool: ToolFacts) -> int | str:
        """The slot right after the dependencies of ``call`` in its plan, or why none."""
        after = call.slot
        for dep in tool.dependencies:
            if (call.plan_id, dep) in self.done_steps:
                continue
            slots = [self.now[i].slot for i in self.steps.get((call.plan_id, dep), ())
                     if i not in self.aborted]
            if not slots:
                return f"plan {call.plan_id} never runs {dep}, so waiting cannot help"
            after = max(after, min(slots) + 1)
        return after

    # -- the slots' occupancy ---------------------------------------------------------
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
