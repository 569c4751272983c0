"""Benchmark: a large tool dependency graph built, checked, ordered and exported.

Builds a seeded random DAG of tool contracts (``--tools`` tools, ``--edges``
dependency edges, declared in shuffled order so plans need reordering), then
times, as the median of ``--repeat`` runs: ``dependency_graph`` from the
contracts, ``check_acyclic``, ``execution_order`` of every tool (the plan is
the declaration order), ``waves`` of the same plan, and the Mermaid and DOT
exports. The order is checked against every edge before anything is printed.

    python bench/graphs.py [--tools N] [--edges M] [--seed S] [--repeat R]

The last line reads ``graphs: <N> tools / <M> edges ordered in <X> s`` (X is
the median time of ``execution_order``).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from buddy.engine import RiskLevel, ToolContract
from buddy.graphs import to_dot, to_mermaid
from buddy.graphs._dependencies import check_acyclic, dependency_graph, execution_order, waves


def contracts(tools: int, edges: int, seed: int) -> list[ToolContract]:
    """``tools`` contracts with ``edges`` dependencies between them, acyclic, seeded.

    Each tool gets a hidden rank; a tool depends only on tools of lower rank.
    Contracts are listed in an order unrelated to rank.
    """
    if edges > tools * (tools - 1) // 2:
        raise SystemExit(f"--edges must be at most {tools * (tools - 1) // 2} for {tools} tools")
    rng = random.Random(seed)
    names = [f"tool_{i:05d}" for i in range(tools)]
    ranked = names[:]
    rng.shuffle(ranked)
    deps: dict[str, set[str]] = {name: set() for name in names}
    count = 0
    while count < edges:
        a, b = sorted(rng.sample(range(tools), 2))
        if ranked[a] not in deps[ranked[b]]:
            deps[ranked[b]].add(ranked[a])
            count += 1
    risks = list(RiskLevel)
    out = []
    for name in names:
        risk = rng.choice(risks)
        out.append(ToolContract(name=name, risk=risk, reversible=risk is RiskLevel.LOW,
                                requires_approval=risk is RiskLevel.HIGH,
                                dependencies=sorted(deps[name])))
    return out


def timed(repeat: int, call: Callable[[], Any]) -> tuple[float, Any]:
    """Median wall time (s) of ``repeat`` calls, and the last call's result."""
    times = []
    result = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tools", type=int, default=10_000)
    parser.add_argument("--edges", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=24)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    catalogue = contracts(args.tools, args.edges, args.seed)
    build, graph = timed(args.repeat, lambda: dependency_graph(catalogue))
    assert graph.number_of_nodes() == args.tools and graph.number_of_edges() == args.edges
    check, _ = timed(args.repeat, lambda: check_acyclic(graph))
    plan = [c.name for c in catalogue]
    order_s, order = timed(args.repeat, lambda: execution_order(graph, plan))
    position = {tool: i for i, tool in enumerate(order)}
    assert sorted(order) == sorted(plan)
    assert all(position[u] < position[v] for u, v in graph.edges), "order breaks an edge"
    moved = sum(a != b for a, b in zip(plan, order, strict=True))
    waves_s, layers = timed(args.repeat, lambda: waves(graph, plan))
    mermaid_s, mermaid = timed(args.repeat, lambda: to_mermaid(graph))
    dot_s, dot = timed(args.repeat, lambda: to_dot(graph))

    print(f"{args.tools:,} tools, {args.edges:,} edges, seed {args.seed}, "
          f"median of {args.repeat}")
    print(f"dependency_graph: {build:.3f} s")
    print(f"check_acyclic:    {check:.3f} s")
    print(f"execution_order:  {order_s:.3f} s ({moved:,} of {len(plan):,} entries moved)")
    print(f"waves:            {waves_s:.3f} s ({len(layers)} waves, "
          f"widest {max(map(len, layers), default=0):,})")
    print(f"to_mermaid:       {mermaid_s:.3f} s ({len(mermaid):,} chars)")
    print(f"to_dot:           {dot_s:.3f} s ({len(dot):,} chars)")
    print(f"graphs: {args.tools} tools / {args.edges} edges ordered in {order_s:.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
