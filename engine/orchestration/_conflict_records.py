"""The records of conflict handling: what was found, what was done, what ran, who holds what.

Plain frozen values: the detector makes :class:`Conflict` and
:class:`ConflictReport`, the resolution makes :class:`Resolution` and
:class:`ResolutionReport`, the execution state keeps :class:`ExecutedCall`
and :class:`Holder`. None of them does any work beyond reading itself.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import attrs
import networkx as nx

from buddy.engine.orchestration._plans import PlannedCall
from buddy.rules.base._values import ExecutionMode
from buddy.rules.tables._conflicts import ConflictType, ResolutionStrategy

__all__ = [
    "Conflict",
    "ConflictReport",
    "ExecutedCall",
    "Holder",
    "Resolution",
    "ResolutionReport",
]

R = ResolutionStrategy


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
    """What :meth:`~buddy.engine.orchestration.ConflictResolver.detect` found: the
    conflicts, in id order, and the conflict graph.

    The graph is an ``nx.MultiGraph`` with every call id as a node and one edge
    per pairwise conflict (key: the conflict id; attribute ``type``). Unary
    conflicts are the node attribute ``unary``, a list of :class:`ConflictType`.
    Nodes outside the batch carry ``external``: ``"active"`` or ``"history"``.
    """

    conflicts: tuple[Conflict, ...]
    graph: nx.MultiGraph[str] = attrs.field(eq=False, repr=False)

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
        if self.strategy is R.DELAY and self.slot is not None:
            return attrs.evolve(call, slot=self.slot)
        if self.strategy is R.REASSIGN and self.new_agent is not None:
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
