"""Benchmark: ``Engine.execute`` of one call, decided and run, with SIMULATED handlers.

Times ``engine.execute`` (p50 / p99 / mean latency per call, calls per second)
on buddy's shipped engine with its rate limits lifted (``bench/_engines.py``)
and the in-memory audit log. The handlers are SIMULATED: each returns a small
dict and touches nothing. The seeded mix covers a tool per risk level,
confidences from MOCK to LIVE, approvals given, denied and left to the engine
(which finds no grant and no approver, so the call runs DRY_RUN), and calls
capped at DRY_RUN or MOCK (``max_mode``: the machine's ``downgrade`` trigger).

It also counts, on the same mix, the ``transitions`` triggers fired per call
(``Event.trigger`` patched to count; 0 when the controller drives the compiled
table) and the ``logging.Logger.debug`` calls per call (``transitions`` logs each
step), and, with ``--profile``, prints the top of a cProfile of the loop.

    pip install -e '.[bench]' && python bench/execute.py [--calls N] [--seed S] [--repeat R]

Each of ``--repeat`` runs uses a fresh engine; the best run (lowest p50) is
reported, as the machine is noisy. The last line reads
``execute p50 <X> us, p99 <Y> us, mean <Z> us, <N> calls/s; transitions triggers per call
<T>, logging.debug calls per call <D>``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import logging
import pstats
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _engines import unthrottled  # noqa: E402
from transitions import core as transitions_core  # noqa: E402

from buddy.engine import Engine, ExecutionMode  # noqa: E402

# One tool per risk level (LOW, MEDIUM, HIGH; the HIGH one waits for approval).
TOOLS = ("vision_inspect", "form_fill", "msgraph_send_email")
CAPS = (None, None, None, None, None, None, ExecutionMode.DRY_RUN, ExecutionMode.MOCK)
APPROVALS = (None, None, True, False)

Case = tuple[str, dict[str, Any], float, "bool | None", "ExecutionMode | None"]


def workload(n: int, seed: int) -> list[Case]:
    """Seeded calls: tool, args, a 3-decimal confidence, an approval, a mode cap."""
    rng = random.Random(seed)
    return [(rng.choice(TOOLS), {"n": i}, round(rng.uniform(0.4, 1.0), 3), rng.choice(APPROVALS),
             rng.choice(CAPS)) for i in range(n)]


def simulated_engine() -> Engine:
    """The unthrottled engine, every measured tool given SIMULATED handlers."""
    engine = unthrottled(clock=time.time)
    for tool in TOOLS:
        engine.register_handler(
            tool,
            mock=lambda a: {"simulated": True, "mode": "MOCK"},
            dry_run=lambda a: {"simulated": True, "mode": "DRY_RUN"},
            live=lambda a: {"simulated": True, "mode": "LIVE"},
            undo=lambda a, r: {"simulated": True, "undone": True})
    return engine


def runner(engine: Engine) -> Callable[[Case], object]:
    execute = engine.execute

    def call(case: Case) -> object:
        tool, args, confidence, approval, cap = case
        return execute("agent-1", tool, args, confidence=confidence, approval=approval,
                       max_mode=cap)

    return call


def time_calls(call: Callable[[Case], object], cases: list[Case]) -> tuple[list[int], float]:
    """Per-call latencies (ns, sorted) and the wall time of the whole loop (s)."""
    clock = time.perf_counter_ns
    out = []
    start = time.perf_counter()
    for case in cases:
        t0 = clock()
        call(case)
        out.append(clock() - t0)
    wall = time.perf_counter() - start
    out.sort()
    return out, wall


def pct(sorted_ns: list[int], q: float) -> float:
    return sorted_ns[min(len(sorted_ns) - 1, int(len(sorted_ns) * q))] / 1000


def count_triggers(cases: list[Case]) -> tuple[float, float]:
    """``transitions`` triggers fired and ``Logger.debug`` calls made per call over
    ``cases`` (``Event.trigger`` and ``logging.Logger.debug`` patched to count)."""
    trigger, debug = transitions_core.Event.trigger, logging.Logger.debug
    counts = {"trigger": 0, "debug": 0}

    def counting(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            return original(self, *args, **kwargs)
        return counted

    transitions_core.Event.trigger = counting("trigger", trigger)  # type: ignore[method-assign]
    logging.Logger.debug = counting("debug", debug)  # type: ignore[method-assign]
    try:
        call = runner(simulated_engine())
        for case in cases:
            call(case)
    finally:
        transitions_core.Event.trigger = trigger  # type: ignore[method-assign]
        logging.Logger.debug = debug  # type: ignore[method-assign]
    return counts["trigger"] / len(cases), counts["debug"] / len(cases)


def profile(cases: list[Case], top: int) -> str:
    call = runner(simulated_engine())
    prof = cProfile.Profile()
    prof.enable()
    for case in cases:
        call(case)
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=24)
    parser.add_argument("--repeat", type=int, default=5, help="runs; the best p50 is reported")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one run")
    args = parser.parse_args()
    cases = workload(args.calls, args.seed)
    modes: dict[str, int] = {}
    for result in map(runner(simulated_engine()), cases[:5_000]):
        mode = result.mode.value if result.mode else "none"  # type: ignore[attr-defined]
        modes[mode] = modes.get(mode, 0) + 1
    runs = []
    for _ in range(max(1, args.repeat)):
        call = runner(simulated_engine())
        time_calls(call, cases[:2_000])  # warm up
        runs.append(time_calls(call, cases))
    ns, wall = min(runs, key=lambda r: pct(r[0], .5))
    triggers, debugs = count_triggers(cases[:5_000])
    print(f"{args.calls} executes, seed {args.seed}, tools {', '.join(TOOLS)}, SIMULATED "
          f"handlers, memory audit; modes run in the first 5000: "
          + ", ".join(f"{k} {v}" for k, v in sorted(modes.items())))
    print(f"{'run':<8}{'p50 us':>10}{'p99 us':>10}{'mean us':>10}{'calls/s':>12}")
    for i, (r_ns, r_wall) in enumerate(runs, 1):
        print(f"{i:<8}{pct(r_ns, .5):>10.2f}{pct(r_ns, .99):>10.2f}"
              f"{sum(r_ns) / len(r_ns) / 1000:>10.2f}{len(r_ns) / r_wall:>12,.0f}")
    if args.profile:
        print(profile(cases[:20_000], 30))
    mean = sum(ns) / len(ns) / 1000
    print(f"execute p50 {pct(ns, .5):.2f} us, p99 {pct(ns, .99):.2f} us, mean {mean:.2f} us, "
          f"{len(ns) / wall:,.0f} calls/s; transitions triggers per call {triggers:.2f}, "
          f"logging.debug calls per call {debugs:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
