"""Benchmark: the orchestration cycle end to end, with SIMULATED tools.

Runs seeded batches of plans (the default scenario's routine plans, repeated
with fresh ids) through ``ToolOrchestrator.run_cycle``: conflict detection and
resolution, one escalation machine per call, simulated handlers, the audit
trail in memory, monitor and feedback loop. Prints calls per second.

    python bench/orchestrate.py [--plans N] [--seed S]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import attrs

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _engines import unthrottled_registry  # noqa: E402

from buddy.engine import AuditLog, Engine  # noqa: E402
from buddy.engine.orchestration._conflicts import ConflictResolver  # noqa: E402
from buddy.engine.orchestration._feedback import FeedbackLoop  # noqa: E402
from buddy.engine.orchestration._monitor import Monitor  # noqa: E402
from buddy.engine.orchestration._orchestrator import ToolOrchestrator  # noqa: E402
from buddy.engine.orchestration._scenario import AGENTS, default_plans  # noqa: E402
from buddy.engine.orchestration._simulator import SimulatedClock, SimulatedTools  # noqa: E402
from buddy.rules import EscalationTable  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plans", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=24)
    args = parser.parse_args()
    template = [p for p in default_plans(args.seed) if "routine" in p.plan_id]
    plans = []
    for i in range(args.plans):
        base = template[i % len(template)]
        pid = f"{base.plan_id}-{i}"
        calls = tuple(attrs.evolve(c, id=f"{pid}/{c.id.split('/')[1]}", plan_id=pid,
                                   resource=c.resource and f"{c.resource}-{i}",
                                   args={**c.args, "n": i}) for c in base.calls)
        plans.append(attrs.evolve(base, plan_id=pid, calls=calls,
                                  execution_order=tuple(c.id for c in calls)))
    registry = unthrottled_registry()  # see bench/_engines.py
    clock = SimulatedClock(1_700_000_000.0)
    engine = Engine(registry, EscalationTable.default(), clock=clock, agents=AGENTS,
                    audit=AuditLog.memory(clock=clock))
    SimulatedTools(registry, args.seed, clock, failure_rates={}).install(engine)
    orchestrator = ToolOrchestrator(engine, ConflictResolver(registry, agents=AGENTS),
                                    monitor=Monitor(clock=clock), feedback=FeedbackLoop(),
                                    clock=clock)
    calls = sum(len(p.calls) for p in plans)
    t0 = time.perf_counter()
    for i in range(0, len(plans), 50):
        orchestrator.run_cycle(plans[i:i + 50])
    wall = time.perf_counter() - t0
    per = wall / calls * 1e6
    print(f"{len(plans)} plans, {calls} calls in cycles of 50 plans, seed {args.seed}")
    print(f"orchestrate: {calls / wall:,.0f} calls/s ({per:.0f} us per call, "
          f"{engine.audit.last_seq:,} audit events)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
