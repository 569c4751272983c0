"""Benchmark: one policy decision, buddy against the peers a user would pick instead.

Measures ``engine.decide`` (p50 / p99 latency per call and decisions per
second) with the in-memory audit log and with the file audit log (flushed per
event, fsynced every 256), on seeded calls with 3-decimal confidences, and once
with every confidence new (no walk remembered); and, in the same run on the
same seeded workload,
pycasbin's ``Enforcer`` and the ``PolicyEvaluator`` of Microsoft's Agent
Governance Toolkit (``agent-os-kernel``) deciding the same escalation table
(``bench/_peers.py``). Every peer's answers are checked against buddy's first.

    pip install -e '.[bench]' && python bench/decide.py [--calls N] [--seed S]

The last line reads
``decide p50 <X> us, p99 <Y> us; pycasbin p50 <Z> us (<Z/X>x); agt p50 <W> us (<W/X>x)``.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _engines import unthrottled  # noqa: E402
from _peers import PEERS  # noqa: E402

from buddy.engine import AuditLog, Engine  # noqa: E402

# One tool per risk level, present in buddy's catalogue and the peers' policy.
TOOLS = ("vision_inspect", "form_fill", "msgraph_send_email")


def workload(n: int, seed: int) -> list[tuple[str, float, bool]]:
    rng = random.Random(seed)
    return [(rng.choice(TOOLS), round(rng.random(), 3), rng.random() < 0.5) for _ in range(n)]


def time_calls(call: Callable[[str, float, bool], object],
               cases: list[tuple[str, float, bool]]) -> tuple[list[int], float]:
    """Per-call latencies (ns, sorted) and the wall time of the whole loop (s)."""
    clock = time.perf_counter_ns
    out = []
    start = time.perf_counter()
    for tool, confidence, approved in cases:
        t0 = clock()
        call(tool, confidence, approved)
        out.append(clock() - t0)
    wall = time.perf_counter() - start
    out.sort()
    return out, wall


def pct(sorted_ns: list[int], q: float) -> float:
    return sorted_ns[min(len(sorted_ns) - 1, int(len(sorted_ns) * q))] / 1000


def buddy_call(engine: Engine) -> Callable[[str, float, bool], str]:
    decide = engine.decide

    def call(tool: str, confidence: float, approved: bool) -> str:
        return decide("agent-1", tool, confidence, approval=True if approved else None).mode.value

    return call


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=24)
    args = parser.parse_args()
    cases = workload(args.calls, args.seed)
    warm = cases[: min(2_000, len(cases))]

    results: dict[str, tuple[list[int], float]] = {}
    memory = unthrottled(clock=time.time)
    reference = buddy_call(unthrottled(clock=time.time))
    expected = [reference(*c) for c in cases[:5_000]]
    time_calls(buddy_call(memory), warm)
    results["buddy (memory audit)"] = time_calls(buddy_call(unthrottled(clock=time.time)),
                                                 cases)
    # The engine remembers where each (tool, confidence, approval, lock) walk
    # ended; agents repeat confidences, as the 3-decimal workload does. Measure
    # the worst case too: every confidence new, so every decision walks.
    fresh = [(t, random.Random(args.seed + i).random(), a) for i, (t, _, a) in enumerate(cases)]
    results["buddy (memory, all new)"] = time_calls(
        buddy_call(unthrottled(clock=time.time)), fresh)
    with tempfile.TemporaryDirectory() as tmp:
        for label, exclusive in (("buddy (file audit)", False),
                                 ("buddy (file, exclusive)", True)):
            audit = AuditLog.open(Path(tmp) / f"{exclusive}.jsonl", clock=time.time,
                                  exclusive=exclusive)
            results[label] = time_calls(buddy_call(unthrottled(clock=time.time, audit=audit)),
                                        cases)
            audit.close()
    # Of which: policy evaluation alone, and the audit append alone (the event as the
    # decision encodes it, appended to a memory log and to an exclusive file log).
    policy = unthrottled(clock=time.time).policy
    results["  of which: evaluation"] = time_calls(
        lambda tool, confidence, approved: policy.evaluate(
            tool, confidence, True if approved else None, False, "agent-1"), cases)
    rest = b'"kind":"decision","machine":"escalation","subject":"agent-1"' + \
        policy.evaluate("form_fill", 0.9, None, False, "agent-1")[4][0] + b'"agent-1"' + \
        policy.evaluate("form_fill", 0.9, None, False, "agent-1")[4][1]
    memory_log = AuditLog.memory(clock=time.time)
    results["  of which: append (memory)"] = time_calls(
        lambda *_: memory_log.append_encoded_locked(rest), cases)
    with tempfile.TemporaryDirectory() as tmp:
        with AuditLog.open(Path(tmp) / "a.jsonl", clock=time.time, exclusive=True) as log:
            results["  of which: append (file)"] = time_calls(
                lambda *_: log.append_encoded_locked(rest), cases)

    skipped = {}
    for name, make in PEERS.items():
        label = {"casbin": "pycasbin", "agt": "agt"}[name]
        try:
            peer = make()
        except ImportError as exc:
            skipped[label] = str(exc).splitlines()[0]
            continue
        wrong = [(c, e, peer(*c)) for c, e in zip(cases, expected, strict=False)
                 if peer(*c) != e]
        if wrong:
            print(f"{label} disagrees with buddy on {len(wrong)} cases, e.g. {wrong[0]}")
            return 1
        time_calls(peer, warm)
        n = args.calls if name != "casbin" else min(args.calls, 10_000)  # casbin is slow
        results[label] = time_calls(peer, cases[:n])

    print(f"{args.calls} decisions, seed {args.seed}, tools {', '.join(TOOLS)}; "
          f"every peer agreed with buddy on the first {len(expected)}")
    print(f"{'engine':<26}{'p50 us':>10}{'p99 us':>10}{'mean us':>10}{'decisions/s':>14}")
    for label, (ns, wall) in results.items():
        mean = sum(ns) / len(ns) / 1000
        print(f"{label:<26}{pct(ns, .5):>10.2f}{pct(ns, .99):>10.2f}{mean:>10.2f}"
              f"{len(ns) / wall:>14,.0f}")
    for label, why in skipped.items():
        print(f"{label:<26} not measured: {why}")
    x = pct(results["buddy (memory audit)"][0], .5)
    y = pct(results["buddy (memory audit)"][0], .99)
    parts = [f"decide p50 {x:.2f} us, p99 {y:.2f} us"]
    for label in ("pycasbin", "agt"):
        if label in results:
            z = pct(results[label][0], .5)
            parts.append(f"{label} p50 {z:.2f} us ({z / x:.1f}x)")
        else:
            parts.append(f"{label} p50 n/a (not installed)")
    print("; ".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
