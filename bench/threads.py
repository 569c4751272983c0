"""Benchmark: one shared engine, decisions per second from 1 thread and from 8.

Every thread calls ``decide`` on the same engine (memory audit, the shipped
catalogue with rate limits lifted, see ``bench/_engines.py``) with its own
seeded calls. Prints decisions/s for 1 and for ``--threads`` threads, their
ratio, and the context switches per decision (``getrusage``: voluntary +
involuntary) -- a lock convoy shows as about one or more per decision. The
runs alternate (1, N, 1, N, ...) and the best of ``--repeat`` is reported for
each, since a shared machine's noise only ever slows a run down.

    python bench/threads.py [--threads 8] [--calls N] [--repeat 5] [--audit memory|file]

The last line reads
``<N> threads: <X> decisions/s, 1 thread: <Y> decisions/s (<X/Y> of one thread)``.
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _engines import unthrottled  # noqa: E402

from buddy.engine import AuditLog, Engine  # noqa: E402

TOOLS = ("vision_inspect", "form_fill", "msgraph_send_email")


def calls(n: int, seed: int) -> list[tuple[str, str, float, bool | None]]:
    rng = random.Random(seed)
    return [(f"agent-{rng.randrange(8)}", rng.choice(TOOLS), round(rng.random(), 3),
             True if rng.random() < 0.5 else None) for _ in range(n)]


def switches() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_nvcsw + r.ru_nivcsw


def run(engine: Engine, threads: int, per_thread: int, seed: int) -> tuple[float, float]:
    """(decisions/s, context switches per decision) of ``threads`` threads at once."""
    work = [calls(per_thread, seed + i) for i in range(threads)]
    start = threading.Barrier(threads + 1)

    def worker(items: list[tuple[str, str, float, bool | None]]) -> None:
        decide = engine.decide
        start.wait()
        for agent, tool, confidence, approval in items:
            decide(agent, tool, confidence, approval=approval)

    pool = [threading.Thread(target=worker, args=(w,)) for w in work]
    for t in pool:
        t.start()
    cs0 = switches()
    start.wait()
    t0 = time.perf_counter()
    for t in pool:
        t.join()
    wall = time.perf_counter() - t0
    n = threads * per_thread
    return n / wall, (switches() - cs0) / n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--calls", type=int, default=400_000, help="decisions per run")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=24)
    parser.add_argument("--audit", choices=("memory", "file"), default="memory")
    args = parser.parse_args()
    best: dict[int, tuple[float, float]] = {}
    runs: dict[int, list[float]] = {1: [], args.threads: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeat):
            for threads in (1, args.threads):
                audit = AuditLog.open(Path(tmp) / f"audit-{r}-{threads}.jsonl",
                                      clock=time.time) if args.audit == "file" else None
                engine = unthrottled(clock=time.time, audit=audit)
                rate, cs = run(engine, threads, args.calls // threads, args.seed)
                if audit is not None:
                    audit.close()
                runs[threads].append(rate)
                if rate > best.get(threads, (0.0, 0.0))[0]:
                    best[threads] = (rate, cs)
    one, many = best[1], best[args.threads]
    ratios = [m / o for o, m in zip(runs[1], runs[args.threads], strict=True)]
    print("each run, N threads / 1 thread: " + ", ".join(f"{r:.0%}" for r in ratios))
    print(f"{args.audit} audit, {args.calls} decisions per run, best of {args.repeat}")
    print(f"{'threads':<10}{'decisions/s':>14}{'switches/decision':>20}")
    for threads, (rate, cs) in sorted(best.items()):
        print(f"{threads:<10}{rate:>14,.0f}{cs:>20.3f}")
    print(f"{args.threads} threads: {many[0]:,.0f} decisions/s, 1 thread: {one[0]:,.0f} "
          f"decisions/s ({many[0] / one[0]:.0%} of one thread)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
