"""Tool dependency graphs: build, check for cycles, order plans, draw.

A dependency graph is a networkx ``DiGraph`` whose nodes are tool names and
whose edges run from a dependency to the tool that needs it
(``vision_inspect -> button_click``). :func:`dependency_graph` builds it from
contracts; nodes carry ``risk`` (:class:`~buddy.engine.RiskLevel`),
``reversible`` (bool) and ``label`` (``"button_click (MEDIUM, irreversible)"``)
for :func:`~buddy.graphs.to_mermaid`, :func:`~buddy.graphs.to_dot` and
:func:`dependency_picture`.

*Declaration order* is the order the graph holds: nodes in insertion order and,
for a tool, its dependencies (``graph.pred[tool]``) in the order its contract
lists them. Every answer here is deterministic in that order.

A plan is a sequence of tool names, one entry per call; a tool may be called
more than once. :func:`execution_order` and :func:`waves` reorder the plan's
entries, never drop or add one, and only for dependencies among the plan's own
tools (a dependency not in the plan is the caller's business:
:func:`missing_dependencies`). Repeats are handled by position: each entry of
a tool waits for the *first* entry of each of its dependencies, so

* ``[search, create, search, create]`` is already valid and kept as it is;
* entries of one tool keep their plan order (they wait for the same entries);
* a dependency first listed after a tool that needs it moves up before it.

Cost: building the plan's graph and sorting it are linear in the plan's
entries plus the dependency edges among them (10,000 tools and 50,000 edges
order in well under a second: ``python bench/graphs.py``).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Hashable, Iterable, Sequence
from pathlib import Path

import networkx as nx

from buddy.graphs._export import _check_graph, to_png
from buddy.rules.base.errors import (
    ContractError,
    DependencyCycleError,
    InputError,
    UnknownToolError,
)
from buddy.rules.tables._catalogue import ToolContract, ToolContractRegistry

__all__ = [
    "all_dependencies",
    "check_acyclic",
    "dependency_graph",
    "dependency_picture",
    "execution_order",
    "find_cycle",
    "missing_dependencies",
    "waves",
]


# -- building ---------------------------------------------------------------

def _label(contract: ToolContract) -> str:
    extra = "" if contract.reversible else ", irreversible"
    return f"{contract.name} ({contract.risk.value}{extra})"


def dependency_graph(registry_or_contracts: ToolContractRegistry | Iterable[ToolContract],
                     ) -> nx.DiGraph:
    """The dependency graph of a catalogue: an edge from each dependency to its dependent.

    Parameters
    ----------
    registry_or_contracts : ToolContractRegistry or iterable of ToolContract
        Tools in declaration order. A plain iterable is not checked for
        cycles, so a cyclic catalogue can still be drawn and its cycle named
        by :func:`find_cycle`.

    Returns
    -------
    nx.DiGraph
        A node per tool in declaration order, with attributes ``risk``,
        ``reversible`` and ``label``; each tool's incoming edges in the order
        its ``dependencies`` list them.

    Raises
    ------
    InputError
        If an item is not a :class:`~buddy.engine.ToolContract`.
    ContractError
        If two contracts share a name or a dependency names no contract.

    Examples
    --------
    >>> from buddy.engine import ToolContractRegistry
    >>> g = dependency_graph(ToolContractRegistry.default())
    >>> list(g.predecessors("button_click"))
    ['vision_inspect', 'form_fill']
    >>> g.nodes["button_click"]["label"]
    'button_click (MEDIUM, irreversible)'
    """
    contracts = list(registry_or_contracts)
    graph: nx.DiGraph[str] = nx.DiGraph()
    for contract in contracts:
        if not isinstance(contract, ToolContract):
            raise InputError(f"dependency_graph needs ToolContract items "
                             f"(got {type(contract).__name__})")
        if contract.name in graph:
            raise ContractError(f"tool names must be unique: {contract.name}")
        graph.add_node(contract.name, risk=contract.risk, reversible=contract.reversible,
                       label=_label(contract))
    for contract in contracts:
        missing = [d for d in contract.dependencies if d not in graph]
        if missing:
            raise ContractError(
                f"{contract.name}: depends on unknown tool(s): {', '.join(missing)}")
        graph.add_edges_from((dep, contract.name) for dep in contract.dependencies)
    return graph


# -- cycles -----------------------------------------------------------------

def _restricted(graph: nx.DiGraph, keep: Iterable[Hashable]) -> nx.DiGraph:
    """A plain copy of ``graph`` on the nodes in ``keep``, in ``graph``'s order.

    Not ``graph.subgraph``: a view may iterate nodes in the order of ``keep``
    (a set, whose order changes from run to run).
    """
    keep = set(keep)
    nodes = [n for n in graph if n in keep]
    sub: nx.DiGraph[Hashable] = nx.DiGraph()
    sub.add_nodes_from(nodes)
    sub.add_edges_from((u, v) for u in nodes for v in graph.succ[u] if v in keep)
    return sub


def find_cycle(graph: nx.DiGraph) -> list[Hashable] | None:
    """A dependency cycle of ``graph``, or ``None`` if it has none.

    The cycle named is a shortest one through the earliest-declared tool that
    lies on any cycle, so it starts at its own earliest-declared tool. It is
    closed (the first tool is repeated last) and each tool is a dependency of
    the next. Linear time: strongly connected components find the tool, then a
    breadth-first search from it (successors in declaration order) stops at
    the first tool with an edge back.

    Parameters
    ----------
    graph : nx.DiGraph

    Returns
    -------
    list or None

    Raises
    ------
    InputError
        If ``graph`` is not a directed networkx graph.

    Examples
    --------
    >>> find_cycle(nx.DiGraph([("a", "b"), ("c", "a"), ("b", "c")]))
    ['a', 'b', 'c', 'a']
    >>> find_cycle(nx.DiGraph([("a", "b")])) is None
    True
    """
    _check_graph(graph)
    loops = set(nx.nodes_with_selfloops(graph))
    on_cycle = set().union(*(c for c in nx.strongly_connected_components(graph)
                             if len(c) > 1 or not c.isdisjoint(loops)))
    if not on_cycle:
        return None
    start = next(n for n in graph if n in on_cycle)
    parent: dict[Hashable, Hashable] = {}
    end = start
    if start not in loops:
        for u, v in nx.bfs_edges(graph, start):
            parent[v] = u
            if graph.has_edge(v, start):
                end = v
                break
    path = [end]
    while path[-1] != start:
        path.append(parent[path[-1]])
    return [*reversed(path), start]


def check_acyclic(graph: nx.DiGraph) -> None:
    """Raise :class:`~buddy.rules.base.errors.DependencyCycleError` if ``graph`` has a cycle.

    Parameters
    ----------
    graph : nx.DiGraph

    Raises
    ------
    DependencyCycleError
        Naming the cycle :func:`find_cycle` gives, from ``nx.NetworkXUnfeasible``.
    InputError
        If ``graph`` is not a directed networkx graph.

    Examples
    --------
    >>> check_acyclic(nx.DiGraph([("a", "b")]))
    >>> check_acyclic(nx.DiGraph([("a", "b"), ("b", "a")]))
    Traceback (most recent call last):
    ...
    buddy.rules.base.errors.DependencyCycleError: tool dependencies form a cycle: a -> b -> a
    """
    _check_graph(graph)
    try:
        deque(nx.topological_sort(graph), maxlen=0)
    except nx.NetworkXUnfeasible as exc:
        raise DependencyCycleError([str(n) for n in find_cycle(graph) or ()]) from exc


# -- plans ------------------------------------------------------------------

def _names(value: Iterable[str], what: str) -> list[str]:
    if isinstance(value, str | bytes):
        raise InputError(f"{what} must be a sequence of tool names, not a string "
                         f"(got {value!r})")
    return list(value)


def _plan_graph(graph: nx.DiGraph, plan: Sequence[str]) -> tuple[list[str], nx.DiGraph]:
    """The plan as a list and a DiGraph on its positions ``0..n-1``.

    Position ``j`` gets an edge from the first position of each of its tool's
    dependencies in the plan.
    """
    _check_graph(graph)
    plan = _names(plan, "plan")
    first: dict[str, int] = {}
    for j, tool in enumerate(plan):
        first.setdefault(tool, j)
    for tool in first:
        if tool not in graph:
            raise UnknownToolError(tool)
    pred = graph.pred
    positions: nx.DiGraph[int] = nx.DiGraph()
    positions.add_nodes_from(range(len(plan)))
    positions.add_edges_from((first[dep], j) for j, tool in enumerate(plan)
                             for dep in pred[tool] if dep in first)
    return plan, positions


def _plan_cycle(graph: nx.DiGraph, plan: list[str]) -> DependencyCycleError:
    """The error naming a cycle among the plan's tools, as :func:`find_cycle` does."""
    return DependencyCycleError([str(n) for n in find_cycle(_restricted(graph, plan)) or ()])


def execution_order(graph: nx.DiGraph, plan: Sequence[str]) -> list[str]:
    """The plan's entries in an order that respects the dependencies among them.

    Stable: of the entries whose dependencies have run, the one listed first
    in the plan runs next (``nx.lexicographical_topological_sort`` keyed by
    plan position). So a plan that is already valid comes back unchanged, an
    entry depending on nothing in the plan is never moved behind a later one,
    and a dependency listed after its dependent moves before it. Repeated
    tools: see the module docstring.

    Parameters
    ----------
    graph : nx.DiGraph
        A dependency graph; only its edges among the plan's tools count.
    plan : sequence of str
        Tool names, one per call, repeats allowed.

    Returns
    -------
    list of str
        A permutation of ``plan``.

    Raises
    ------
    DependencyCycleError
        If the plan's tools depend on each other in a cycle (named as by
        :func:`find_cycle` on those tools).
    UnknownToolError
        If a plan entry is not a node of ``graph``.
    InputError
        If ``plan`` is a string or ``graph`` not a directed networkx graph.

    Examples
    --------
    >>> from buddy.engine import ToolContractRegistry
    >>> g = dependency_graph(ToolContractRegistry.default())
    >>> execution_order(g, ["button_click", "ghl_search", "form_fill", "vision_inspect"])
    ['ghl_search', 'form_fill', 'vision_inspect', 'button_click']
    >>> execution_order(nx.DiGraph([("a", "b"), ("b", "a")]), ["a", "b"])
    Traceback (most recent call last):
    ...
    buddy.rules.base.errors.DependencyCycleError: tool dependencies form a cycle: a -> b -> a
    """
    plan, positions = _plan_graph(graph, plan)
    try:
        return [plan[j] for j in nx.lexicographical_topological_sort(positions)]
    except nx.NetworkXUnfeasible as exc:
        raise _plan_cycle(graph, plan) from exc


def waves(graph: nx.DiGraph, plan: Sequence[str]) -> list[list[str]]:
    """The plan's entries in waves: each wave's calls can run together.

    Wave ``k`` holds the entries whose longest chain of dependencies in the
    plan has ``k`` links (``nx.topological_generations``), each wave in plan
    order. Repeats are handled as in :func:`execution_order`.

    Parameters
    ----------
    graph : nx.DiGraph
    plan : sequence of str

    Returns
    -------
    list of list of str
        Non-empty waves, together a permutation of ``plan``; ``[]`` for an
        empty plan.

    Raises
    ------
    DependencyCycleError, UnknownToolError, InputError
        As :func:`execution_order`.

    Examples
    --------
    >>> from buddy.engine import ToolContractRegistry
    >>> g = dependency_graph(ToolContractRegistry.default())
    >>> waves(g, ["msgraph_send_email", "msgraph_create_draft", "ghl_search",
    ...           "msgraph_get_user"])
    [['msgraph_create_draft', 'ghl_search', 'msgraph_get_user'], ['msgraph_send_email']]
    """
    plan, positions = _plan_graph(graph, plan)
    try:
        return [[plan[j] for j in sorted(wave)]
                for wave in nx.topological_generations(positions)]
    except nx.NetworkXUnfeasible as exc:
        raise _plan_cycle(graph, plan) from exc


# -- one tool ---------------------------------------------------------------

def missing_dependencies(graph: nx.DiGraph, tool: str, done: Iterable[str]) -> list[str]:
    """The direct dependencies of ``tool`` not in ``done``, in declaration order.

    Parameters
    ----------
    graph : nx.DiGraph
    tool : str
    done : iterable of str
        Tools that have run; names not in ``graph`` are ignored.

    Returns
    -------
    list of str

    Raises
    ------
    UnknownToolError
        If ``tool`` is not a node of ``graph``.
    InputError
        If ``done`` is a string or ``graph`` not a directed networkx graph.

    Examples
    --------
    >>> from buddy.engine import ToolContractRegistry
    >>> g = dependency_graph(ToolContractRegistry.default())
    >>> missing_dependencies(g, "msgraph_send_email", ["msgraph_create_draft"])
    ['msgraph_get_user']
    >>> missing_dependencies(g, "nope", [])
    Traceback (most recent call last):
    ...
    buddy.rules.base.errors.UnknownToolError: unknown tool 'nope'
    """
    _check_graph(graph)
    if tool not in graph:
        raise UnknownToolError(tool)
    done = set(_names(done, "done"))
    return [dep for dep in graph.pred[tool] if dep not in done]


def all_dependencies(graph: nx.DiGraph, tool: str) -> list[str]:
    """Every tool ``tool`` depends on, directly or not, in an order they can run.

    The ancestors of ``tool`` (``nx.ancestors``) in declaration order, then
    put in :func:`execution_order`. Takes time linear in the graph's size.

    Parameters
    ----------
    graph : nx.DiGraph
    tool : str

    Returns
    -------
    list of str
        Without ``tool`` itself, unless it is on a cycle (which raises).

    Raises
    ------
    UnknownToolError
        If ``tool`` is not a node of ``graph``, from ``nx.NetworkXError``.
    DependencyCycleError
        If the dependencies of ``tool`` form a cycle.

    Examples
    --------
    >>> all_dependencies(nx.DiGraph([("b", "c"), ("a", "b"), ("x", "y")]), "c")
    ['a', 'b']
    """
    _check_graph(graph)
    try:
        ancestors = nx.ancestors(graph, tool)
    except nx.NetworkXError as exc:
        raise UnknownToolError(tool) from exc
    return execution_order(graph, [n for n in graph if n in ancestors])


# -- drawing ----------------------------------------------------------------

def dependency_picture(graph: nx.DiGraph, path: str | os.PathLike[str]) -> Path:
    """Draw a dependency graph to a PNG, or an SVG if ``path`` ends in ``.svg``.

    Delegates to :func:`~buddy.graphs.to_png` (Graphviz ``dot`` when
    installed, else matplotlib); nodes are drawn with their ``label``
    (tool, risk and irreversibility when built by :func:`dependency_graph`).

    Parameters
    ----------
    graph : nx.DiGraph
    path : str or os.PathLike
        Ends in ``.png`` or ``.svg``; its directory must exist.

    Returns
    -------
    Path
        The path written.

    Raises
    ------
    InputError
        As :func:`~buddy.graphs.to_png` (bad suffix, no renderer).
    """
    _check_graph(graph)
    return to_png(graph, path)
