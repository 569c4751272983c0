"""What conflict detection and resolution read of the tool catalogue, read once.

:class:`ToolFacts` holds one contract's risk, reversibility, permissions,
dependencies, concurrency limit and timeout, and its **depth** in the
dependency graph: 0 for a tool without dependencies, else one more than its
deepest dependency. Depths come from ``nx.topological_generations`` over
:meth:`~buddy.rules.tables.ToolContractRegistry.dependency_graph`, for every
tool at once and without recursion, so a chain thousands of tools long is
as cheap as a short one.
"""

from __future__ import annotations

from collections.abc import Iterable

import networkx as nx

from buddy.rules.base._values import RiskLevel
from buddy.rules.tables._catalogue import ToolContractRegistry

__all__ = ["ToolFacts", "ToolIndex", "depths"]


class ToolFacts:
    """One contract as detection and resolution need it (a slotted, read-only view)."""

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


def depths(registry: ToolContractRegistry) -> dict[str, int]:
    """Each tool's depth in the dependency graph (edges run from a dependency to its user).

    >>> from buddy.rules.tables._catalogue import ToolContract, ToolContractRegistry
    >>> low = RiskLevel.LOW
    >>> chain = ToolContractRegistry([
    ...     ToolContract(name="a", risk=low, reversible=True),
    ...     ToolContract(name="b", risk=low, reversible=True, dependencies=["a"]),
    ...     ToolContract(name="c", risk=low, reversible=True, dependencies=["a", "b"])])
    >>> depths(chain)
    {'a': 0, 'b': 1, 'c': 2}
    """
    return {name: depth
            for depth, generation in enumerate(nx.topological_generations(
                registry.dependency_graph()))
            for name in sorted(generation)}


class ToolIndex:
    """:class:`ToolFacts` of every tool of a registry, built at first use.

    A tool registered after the index was built (``registry.register``) makes
    it rebuild once, when that tool is first asked for.
    """

    def __init__(self, registry: ToolContractRegistry) -> None:
        self.registry = registry
        self._facts: dict[str, ToolFacts] = {}

    def __getitem__(self, name: str) -> ToolFacts:
        facts = self._facts.get(name)
        if facts is None:
            self.registry.get(name)  # UnknownToolError for a tool not in the catalogue
            self._build()
            facts = self._facts[name]
        return facts

    def covering(self, names: Iterable[str]) -> dict[str, ToolFacts]:
        """The name -> facts dict, holding at least ``names`` (for a loop of lookups).

        Raises :class:`~buddy.rules.base.errors.UnknownToolError` for a name not in
        the catalogue.
        """
        for name in names:
            if name not in self._facts:
                self[name]
        return self._facts

    def _build(self) -> None:
        depth = depths(self.registry)
        self._facts = {
            c.name: ToolFacts(c.name, c.risk, c.reversible, c.permissions, c.dependencies,
                              c.max_concurrency, c.timeout_s, depth[c.name])
            for c in self.registry}
