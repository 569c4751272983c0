"""Benchmark: audit events replayed per second, and appended per second.

Builds a seeded log of decisions and executions (simulated handlers), writes it
to a file, then times ``replay`` (chain verification, anchor check, every event
held to the declared records and to what a buddy writes, machine rebuild and
re-decision of every decision) and plain chain verification, the best of
``--repeat`` runs each (a shared machine's noise only ever slows a run down).
Then times ``AuditLog.append`` of a decision-sized event to a file log by one
writer (each append takes the file's ``flock``, checks the tail, writes one
line; ``sync="batch"``).

    python bench/replay.py [--decisions N] [--appends N] [--seed S] [--repeat N]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _engines import unthrottled  # noqa: E402

from buddy.engine import AuditLog, replay  # noqa: E402
from buddy.engine.core._chain import scan_log, verify_lines  # noqa: E402

TOOLS = ("vision_inspect", "text_extract", "form_fill", "ghl_update_contact",
         "msgraph_send_email", "database_write")


def build(path: Path, decisions: int, seed: int) -> int:
    rng = random.Random(seed)
    tick = iter(range(10**9))
    clock = lambda: 1_700_000_000 + next(tick) / 1000  # noqa: E731 - a seeded, simulated clock
    with AuditLog.open(path, clock=clock) as audit:
        engine = unthrottled(clock=clock, audit=audit, approver=lambda r: rng.random() < 0.7)
        for tool in TOOLS:  # simulated handlers: they do nothing real
            engine.register_handler(tool, live=lambda a: {"simulated": True},
                                    dry_run=lambda a: {"simulated": True})
        for i in range(decisions):
            tool = rng.choice(TOOLS)
            if i % 10 == 0:
                engine.execute(f"agent-{i % 7}", tool, {"i": i}, confidence=rng.random())
            else:
                engine.decide(f"agent-{i % 7}", tool, rng.random(),
                              approval=rng.choice((None, True, False)))
        return audit.last_seq


#: A decision's data, as the engine records it.
DATA = {"agent": "agent-1", "tool": "form_fill", "risk": "MEDIUM", "requires_approval": False,
        "confidence": 0.712, "approval": None, "approved_by": None, "locked": False,
        "mode": "DRY_RUN", "allowed": True, "state": "DRY_RUN", "rule": "medium.dry_run",
        "rules": "6a0010f83ddad4ec"}


def appends(path: Path, n: int) -> float:
    """Seconds per append of a decision-sized event to a file log, one writer."""
    with AuditLog.open(path, clock=time.time, sync="batch") as audit:
        append = audit.append
        t0 = time.perf_counter()
        for _ in range(n):
            append("decision", "escalation", "agent-1", "decide", "MOCK", "DRY_RUN", DATA)
        return (time.perf_counter() - t0) / n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=200_000)
    parser.add_argument("--appends", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=24)
    parser.add_argument("--repeat", type=int, default=5,
                        help="time verify and replay this many times; report the best")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "audit.jsonl"
        events = build(path, args.decisions, args.seed)
        verify = full = float("inf")
        for _ in range(max(1, args.repeat)):
            t0 = time.perf_counter()
            verify_lines(scan_log(path).raw)
            verify = min(verify, time.perf_counter() - t0)
            t0 = time.perf_counter()
            report = replay(path)
            full = min(full, time.perf_counter() - t0)
        append = appends(Path(tmp) / "appends.jsonl", args.appends)
    assert report.ok and report.events == events, report
    print(f"{events:,} events ({report.decisions:,} decisions), seed {args.seed}")
    print(f"verify chain: {verify:.2f} s = {events / verify:,.0f} events/s")
    print(f"replay:       {full:.2f} s = {events / full:,.0f} events/s "
          "(verify + check every event + rebuild machines + re-decide)")
    print(f"append:       {append * 1e6:.2f} us per event = {1 / append:,.0f} events/s "
          "(file log, one writer, flock per append)")
    print(f"replay {events / full:,.0f} events/s; verify {events / verify:,.0f} events/s; "
          f"append {1 / append:,.0f} events/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
