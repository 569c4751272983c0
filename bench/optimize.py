"""Benchmark: the Phase 19 optimizer, time and memory per wave.

``optimize`` (:mod:`buddy.engine.waves._optimizer`) on two sizes, each of the
four objectives, two kinds of tasks:

- small: 4 agents x 20 tasks; large: 64 agents x 2,000 tasks;
- tasks from ``default_tasks(seed, waves=1, tasks_per_wave=N)`` (rates with 3
  decimals, so many tasks share a class) and an all-distinct variant (the same
  tasks, rates drawn again at full float precision: no two alike);
- agents as after a few waves: ``default_agents(m)``'s capabilities as their
  observed success over 20 finished tasks, their speeds as mean latencies
  (about 1 s times the speed, jittered), and 0-1 tasks already held.

Per case: time per wave (p50 and mean over ``--repeat`` calls, in ms) and the
tracemalloc peak of one call (MB). Each size runs in a process of its own,
whose peak RSS is printed (imports included). Then the growth: 64 agents x
500 .. 4,000 all-distinct tasks, balanced (the slowest objective), p50 ms.
Targets: < 5 ms per wave small, < 1 s large (the sources: < 500 ms, < 100 MB).

    python bench/optimize.py [--repeat N] [--seed S] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
from typing import Any

import attrs

from buddy.engine.waves import AgentState, default_agents, default_tasks, optimize
from buddy.engine.waves._optimizer import OBJECTIVES
from buddy.rules.tables._optimizer import OptimizerTable

SIZES = {"small": (4, 20), "large": (64, 2000)}
TARGET_MS = {"small": 5.0, "large": 1000.0}
GROWTH = (500, 1000, 2000, 4000)


def agents(m: int, seed: int) -> list[AgentState]:
    """``m`` agents as after a few waves (seeded)."""
    rng = random.Random(seed)
    out = []
    for p in default_agents(m, seed=seed):
        done = 20
        ok = sum(rng.random() < p.capability for _ in range(done))
        out.append(AgentState(p.agent_id, completed_tasks=ok, failed_tasks=done - ok,
                              total_latency_s=done * p.speed * rng.uniform(0.9, 1.1),
                              current_load=rng.randint(0, 1)))
    return out


def tasks(n: int, seed: int, distinct: bool) -> list[Any]:
    out = default_tasks(seed, waves=1, tasks_per_wave=n)
    if distinct:
        rng = random.Random(seed + 1)
        out = [attrs.evolve(t, predicted_success_rate=0.6 + 0.39 * rng.random()) for t in out]
    return out


def measure(m: int, n: int, objective: str, distinct: bool, repeat: int,
            seed: int, traced: bool = True) -> dict[str, Any]:
    table = OptimizerTable.default()
    team, wave = agents(m, seed), tasks(n, seed, distinct)
    optimize(wave, team, objective, table=table)  # warm: a wave loop calls it every wave
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        schedule = optimize(wave, team, objective, table=table)
        times.append((time.perf_counter() - t0) * 1000)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before tracemalloc's own
    peak = math.nan
    if traced:
        tracemalloc.start()
        optimize(wave, team, objective, table=table)
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return {"objective": objective, "distinct": distinct, "p50_ms": statistics.median(times),
            "mean_ms": statistics.fmean(times), "peak_mb": peak, "rss_mb": rss,
            "value": schedule.objective_value, "success": schedule.expected_success}


def child(args: argparse.Namespace, what: str) -> dict[str, Any]:
    command = [sys.executable, __file__, "--measure", what, "--repeat", str(args.repeat),
               "--seed", str(args.seed)] + (["--quick"] if args.quick else [])
    done = subprocess.run(command, capture_output=True, check=True, text=True)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def run_measure(what: str, args: argparse.Namespace) -> dict[str, Any]:
    """All the cases of ``what`` timed first (the RSS read then), their tracemalloc peaks after."""
    if what == "growth":
        cases = [(64, n, "balanced", True) for n in (GROWTH[:-1] if args.quick else GROWTH)]
    else:
        m, n = SIZES[what]
        cases = [(m, n, o, d) for o in OBJECTIVES for d in (False, True)]
    rows = [{"tasks": c[1], **measure(*c, args.repeat, args.seed, traced=False)} for c in cases]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if not args.quick:
        for row, c in zip(rows, cases, strict=True):
            row["peak_mb"] = measure(*c, 1, args.seed)["peak_mb"]
    return {"rows": rows, "rss_mb": rss}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="calls per case (default 5)")
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--quick", action="store_true",
                        help="one call per case, no tracemalloc, growth up to 2,000 tasks")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.repeat = 1
    if args.measure:
        print(json.dumps(run_measure(args.measure, args)))
        return 0
    print(f"buddy optimize: time per wave (p50 / mean of {args.repeat}), tracemalloc peak "
          f"of one call, seed {args.seed}")
    print(f"{'size':<22}{'objective':<21}{'tasks':<10}{'p50 ms':>9}{'mean ms':>9}"
          f"{'peak MB':>9}  target")
    for name, (m, n) in SIZES.items():
        result = child(args, name)
        for r in result["rows"]:
            kind = "distinct" if r["distinct"] else "3-decimal"
            ok = "ok" if r["p50_ms"] < TARGET_MS[name] else "MISSED"
            print(f"{f'{name} {m}x{n:,}':<22}{r['objective']:<21}{kind:<10}"
                  f"{r['p50_ms']:>9.2f}{r['mean_ms']:>9.2f}{r['peak_mb']:>9.2f}  "
                  f"< {TARGET_MS[name]:,.0f} ms {ok}")
        print(f"{name}: process peak RSS {result['rss_mb']:,.0f} MB (imports included, "
              f"before tracemalloc; the sources: < 100 MB)")
    growth = child(args, "growth")
    print("growth, 64 agents, balanced, all-distinct tasks:")
    base = growth["rows"][0]
    for r in growth["rows"]:
        ratio = r["p50_ms"] / base["p50_ms"]
        print(f"  {r['tasks']:>6,} tasks  p50 {r['p50_ms']:>9.1f} ms  x{ratio:5.2f} for "
              f"x{r['tasks'] / base['tasks']:.0f} tasks  peak {r['peak_mb']:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
