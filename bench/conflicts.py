"""Benchmark: conflict detection over one large batch of planned calls.

Builds a seeded batch of 100,000 calls (10,000 plans of 10 steps, one step per
slot, starting at random slots, so about 10 calls share a slot; 200 agents,
100 exclusive resources, every tool of the default catalogue; repeated
arguments, estimates up to 10 % past the timeout and agents lacking
permissions, so every conflict type occurs) and times
``ConflictResolver.detect`` on it, conflict graph included, best of
``--repeat`` runs, each on a fresh resolver. Then times ``resolve`` once.

    python bench/conflicts.py [--calls N] [--seed S] [--repeat R]

The last line reads ``conflicts: <N> calls detected in <X> s (<K> conflicts)``.
"""

from __future__ import annotations

import argparse
import random
import time

from buddy.engine.orchestration._conflicts import ConflictResolver
from buddy.engine.orchestration._plans import PlannedCall
from buddy.rules.tables._catalogue import ToolContractRegistry

STEPS = 10           # calls per plan; a step's slot is its place in the plan
AGENTS = 200
RESOURCES = 100


def workload(registry: ToolContractRegistry, n: int, seed: int,
             ) -> tuple[list[PlannedCall], dict[str, frozenset[str]]]:
    """``n`` seeded calls and the agents' permissions (one agent in ten lacks some)."""
    rng = random.Random(seed)
    tools = [c.name for c in registry]
    permissions = sorted({p for c in registry for p in c.permissions})
    agents = {f"agent-{i}": frozenset(permissions) if i % 10 else
              frozenset(rng.sample(permissions, len(permissions) // 2))
              for i in range(AGENTS)}
    names = sorted(agents)
    calls = []
    start = 0
    for i in range(n):
        plan, step = divmod(i, STEPS)
        if step == 0:
            start = rng.randrange(n // STEPS)  # plans start at different times
        tool = rng.choice(tools)
        calls.append(PlannedCall(
            id=f"p{plan}/s{step}", plan_id=f"p{plan}", agent=rng.choice(names),
            tool=tool, confidence=round(rng.random(), 3), slot=start + step,
            args={"id": rng.randrange(20_000)},
            resource=f"res:{rng.randrange(RESOURCES)}" if rng.random() < 0.5 else None,
            estimated_s=round(rng.uniform(0.5, 1.1 * registry.get(tool).timeout_s), 1)))
    return calls, agents


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100_000, help="calls in the batch")
    parser.add_argument("--seed", type=int, default=24, help="workload seed")
    parser.add_argument("--repeat", type=int, default=3, help="runs; the best is reported")
    opts = parser.parse_args()
    registry = ToolContractRegistry.default()
    calls, agents = workload(registry, opts.calls, opts.seed)
    best, report, resolver = float("inf"), None, None
    for _ in range(opts.repeat):
        resolver = ConflictResolver(registry, agents=agents)
        start = time.perf_counter()
        report = resolver.detect(calls)
        best = min(best, time.perf_counter() - start)
    assert report is not None and resolver is not None
    counts = ", ".join(f"{t} {n}" for t, n in report.counts().items())
    print(f"detect: {len(calls)} calls in {best:.3f} s ({len(calls) / best:,.0f} calls/s), "
          f"best of {opts.repeat}")
    print(f"conflicts by type: {counts}")
    print(f"graph: {report.graph.number_of_nodes()} nodes, {report.graph.number_of_edges()} "
          "edges")
    start = time.perf_counter()
    resolved = resolver.resolve(report, calls)
    took = time.perf_counter() - start
    by = resolver.summary()["by_resolution_strategy"]
    print(f"resolve: {len(report.conflicts)} conflicts in {took:.3f} s "
          f"({', '.join(f'{s} {n}' for s, n in by.items())}; {len(resolved.aborted)} aborted)")
    print(f"conflicts: {len(calls)} calls detected in {best:.3f} s "
          f"({len(report.conflicts)} conflicts)")


if __name__ == "__main__":
    main()
