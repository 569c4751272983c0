"""Benchmark: one policy decision, buddy against the peers a user would pick instead.

Measures ``engine.decide`` -- the decision and its audit event -- per call (p50,
p99, mean, decisions per second) on seeded calls from 8 agents to one tool of
each risk level with 3-decimal confidences: with the in-memory audit log, once
with every confidence new (no walk remembered), with the file audit log shared
by processes (each append takes the file's ``flock`` and checks the tail;
flushed per event, fsynced every 256: the fsync shows in the mean) and with an
exclusive file writer (``AuditLog.open(..., exclusive=True)``). Then, of which:
the policy evaluation alone and the audit append alone. In the same run, on the
same calls, the peers of ``bench/_peers.py`` at their best: pycasbin with one
``enforce_ex`` per decision, with and without its own log, and its one-line
floor; Microsoft's Agent Governance Toolkit (``agent-os-kernel``) with one
``evaluate`` per decision, with and without its own audit logger. Every peer
that decides the table is checked against buddy's answers first. The rate
limits of the shipped catalogue are lifted (``bench/_engines.py``).

    pip install -e '.[bench]' && python bench/decide.py [--calls N] [--seed S]

The last line reads ``decide p50 <X> us mean <M> us (memory audit), p50 .. mean ..
(file audit); casbin-floor p50 <Z> us (<Z/X>x); casbin ...; agt ...; agt+audit ...``.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _engines import unthrottled  # noqa: E402
from _peers import PEERS  # noqa: E402

from buddy.engine import AuditLog, Decision, Engine  # noqa: E402

# One tool per risk level, present in buddy's catalogue and the peers' policy.
TOOLS = ("vision_inspect", "form_fill", "msgraph_send_email")


#: The agents calls come from (buddy records each; the peers take no agent).
AGENTS = tuple(f"agent-{i}" for i in range(8))


def workload(n: int, seed: int) -> list[tuple[str, float, bool]]:
    rng = random.Random(seed)
    return [(rng.choice(TOOLS), round(rng.random(), 3), rng.random() < 0.5) for _ in range(n)]


def agents_for(n: int, seed: int) -> list[str]:
    rng = random.Random(seed + 1)
    return [rng.choice(AGENTS) for _ in range(n)]


def time_calls(call: Callable[..., object], cases: list[tuple[Any, ...]]
               ) -> tuple[list[int], float]:
    """Per-call latencies (ns, sorted) and the wall time of the whole loop (s)."""
    clock = time.perf_counter_ns
    out = []
    start = time.perf_counter()
    for case in cases:
        t0 = clock()
        call(*case)
        out.append(clock() - t0)
    wall = time.perf_counter() - start
    out.sort()
    return out, wall


def mean(ns: list[int]) -> float:
    return sum(ns) / len(ns) / 1000


def pct(sorted_ns: list[int], q: float) -> float:
    return sorted_ns[min(len(sorted_ns) - 1, int(len(sorted_ns) * q))] / 1000


def buddy_call(engine: Engine) -> Callable[..., Decision]:
    """One decision, as a user makes it: the :class:`Decision` is the answer (its
    ``mode`` an enum member; the peers' answers are strings)."""
    decide = engine.decide

    def call(agent: str, tool: str, confidence: float, approval: bool | None) -> Decision:
        return decide(agent, tool, confidence, approval=approval)

    return call


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=24)
    args = parser.parse_args()
    cases = workload(args.calls, args.seed)
    warm = cases[: min(2_000, len(cases))]
    calls = [(agent, tool, confidence, True if approved else None)  # approval as given
             for agent, (tool, confidence, approved) in zip(agents_for(args.calls, args.seed),
                                                             cases, strict=True)]

    results: dict[str, tuple[list[int], float]] = {}
    memory = unthrottled(clock=time.time)
    reference = buddy_call(unthrottled(clock=time.time))
    expected = [reference(*c).mode.value for c in calls[:5_000]]
    time_calls(buddy_call(memory), calls[:2_000])
    results["buddy (memory audit)"] = time_calls(buddy_call(unthrottled(clock=time.time)),
                                                 calls)
    # The engine remembers where each (tool, confidence, approval, lock) walk
    # ended; agents repeat confidences, as the 3-decimal workload does. Measure
    # the worst case too: every confidence new, so every decision walks.
    fresh = [(g, t, random.Random(args.seed + i).random(), a)
             for i, (g, t, _, a) in enumerate(calls)]
    results["buddy (memory, all new)"] = time_calls(
        buddy_call(unthrottled(clock=time.time)), fresh)
    with tempfile.TemporaryDirectory() as tmp:
        for label, exclusive in (("buddy (file audit)", False),
                                 ("buddy (file, exclusive)", True)):
            audit = AuditLog.open(Path(tmp) / f"{exclusive}.jsonl", clock=time.time,
                                  exclusive=exclusive)
            results[label] = time_calls(buddy_call(unthrottled(clock=time.time, audit=audit)),
                                        calls)
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
    for name, peer in PEERS.items():
        try:
            decide = peer.make()
        except ImportError as exc:
            skipped[peer.label] = str(exc).splitlines()[0]
            continue
        if peer.decides_table:
            wrong = [(c, e, got) for c, e in zip(cases, expected, strict=False)
                     if (got := decide(*c)) != e]
            if wrong:
                print(f"{name} disagrees with buddy on {len(wrong)} cases, e.g. {wrong[0]}")
                return 1
        time_calls(decide, warm)
        n = args.calls if not name.startswith("casbin") else min(args.calls, 10_000)  # slow
        results[name] = time_calls(decide, cases[:n])

    print(f"{args.calls} decisions, seed {args.seed}, tools {', '.join(TOOLS)}; "
          f"every peer that decides the table agreed with buddy on the first {len(expected)}")
    print(f"{'engine':<34}{'p50 us':>10}{'p99 us':>10}{'mean us':>10}{'decisions/s':>14}")
    for label, (ns, wall) in results.items():
        if label in PEERS:
            label = f"{label}: {PEERS[label].label}"
        print(f"{label[:33]:<34}{pct(ns, .5):>10.2f}{pct(ns, .99):>10.2f}{mean(ns):>10.2f}"
              f"{len(ns) / wall:>14,.0f}")
    for label, why in skipped.items():
        print(f"{label:<34} not measured: {why}")
    memory, filed = results["buddy (memory audit)"][0], results["buddy (file audit)"][0]
    x = pct(memory, .5)
    parts = [f"decide p50 {x:.2f} us mean {mean(memory):.2f} us (memory audit), "
             f"p50 {pct(filed, .5):.2f} us mean {mean(filed):.2f} us (file audit)"]
    for name in ("casbin-floor", "casbin", "agt", "agt+audit"):
        if name in results:
            z = pct(results[name][0], .5)
            parts.append(f"{name} p50 {z:.2f} us ({z / x:.1f}x)")
        else:
            parts.append(f"{name} n/a (not installed)")
    print("; ".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
