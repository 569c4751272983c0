"""Benchmark: audit events replayed and verified per second, the replay's peak RSS,
and events appended per second.

Builds a seeded log of about ``--events`` events (decisions, and executions with
their moves, by simulated handlers) in a memory log and writes it to a file
with its anchor (``--cache DIR`` keeps it there for the next run). Then times,
each ``--repeat`` times in a fresh process, ``replay`` (chain verification,
anchor check, every event held to the declared records and to what a buddy
writes, machine rebuild and re-decision of every decision) and chain
verification alone, and reports the median and the best run (a shared
machine's noise only ever slows a run down) and the peak RSS (``VmHWM``) of
that process: replay's memory, not the build's. Replay verifies the chain in a
second process beside it (a log this size, two CPUs: ``replay``'s default); the
rate per CPU second counts both processes' CPU (the best run), and is less moved
by other work on the machine. Then times ``AuditLog.append``
of a decision-sized event to a file log by one writer (each append takes the
file's ``flock``, checks the tail, writes one line; ``sync="batch"``).

    python bench/replay.py [--events N] [--appends N] [--seed S] [--repeat N] [--digits D]
                           [--cache DIR]
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _engines import unthrottled  # noqa: E402

from buddy.engine import AuditLog, replay  # noqa: E402
from buddy.engine.core._chain import FORMAT, anchor_path, read_anchor, verify_log  # noqa: E402

TOOLS = ("vision_inspect", "text_extract", "form_fill", "ghl_update_contact",
         "msgraph_send_email", "database_write")


def build(path: Path, events: int, seed: int, digits: int | None = None) -> int:
    """Write a log of at least ``events`` events (and its anchor) to ``path``; its last seq.

    Confidences are drawn at random, at full precision, or rounded to ``digits``.
    """
    rng = random.Random(seed)
    draw = rng.random if digits is None else lambda: round(rng.random(), digits)
    tick = iter(range(10**10))
    clock = lambda: 1_700_000_000 + next(tick) / 1000  # noqa: E731 - a seeded, simulated clock
    audit = AuditLog.memory(clock=clock, keep=None)  # every event: the file is replayed whole
    engine = unthrottled(clock=clock, audit=audit, approver=lambda r: rng.random() < 0.7)
    for tool in TOOLS:  # simulated handlers: they do nothing real
        engine.register_handler(tool, live=lambda a: {"simulated": True},
                                dry_run=lambda a: {"simulated": True})
    gc.disable()  # a million lines kept: the collector would walk them again and again
    try:
        i = 0
        while audit.last_seq < events:
            tool = rng.choice(TOOLS)
            if i % 10 == 0:
                engine.execute(f"agent-{i % 7}", tool, {"i": i}, confidence=draw())
            else:
                engine.decide(f"agent-{i % 7}", tool, draw(),
                              approval=rng.choice((None, True, False)))
            i += 1
        lines = audit.raw_lines()
    finally:
        gc.enable()
    with path.open("wb") as out:
        for line in lines:
            out.write(line + b"\n")
    anchor = {"format": FORMAT, "chain": "sha256", "seq": audit.last_seq,
              "hash": lines[-1][-66:-2].decode()}
    anchor_path(path).write_text(json.dumps(anchor) + "\n")
    return audit.last_seq


def cached(cache: Path | None, tmp: Path, events: int, seed: int,
           digits: int | None) -> tuple[Path, int]:
    """The log to time: built in ``tmp``, or kept in (and reused from) ``cache``."""
    if cache is None:
        path = tmp / "audit.jsonl"
        return path, build(path, events, seed, digits)
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"replay-{events}-{seed}{'' if digits is None else f'-d{digits}'}.jsonl"
    anchor = read_anchor(path) if path.exists() else None
    if anchor is None:
        return path, build(path, events, seed, digits)
    return path, anchor.seq


def measure(what: str, path: Path) -> None:
    """In this (fresh) process: time ``what`` once on ``path``; print seconds, events, peak RSS."""
    t0, c0 = time.perf_counter(), time.process_time()
    if what == "replay":
        report = replay(path)  # parallel by default: the chain verified in a second process
        assert report.ok, report.divergence
        events = report.events
    else:
        events = verify_log(path, anchor=read_anchor(path))[0].count
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    worker = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu += worker.ru_utime + worker.ru_stime  # the verifier's CPU, when there is one
    status = Path("/proc/self/status").read_text()
    hwm = next(int(line.split()[1]) for line in status.splitlines()
               if line.startswith("VmHWM:"))
    print(json.dumps({"seconds": seconds, "cpu": cpu, "events": events, "rss_kb": hwm}))


def timed(what: str, path: Path, repeat: int) -> list[dict[str, float]]:
    """``what`` run ``repeat`` times, each in a new process: its figures."""
    runs = []
    for _ in range(max(1, repeat)):
        out = subprocess.run([sys.executable, __file__, "--measure", what, str(path)],
                             check=True, capture_output=True, text=True).stdout
        runs.append(json.loads(out))
    return runs


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


def rates(events: int, runs: list[dict[str, float]]) -> str:
    times = [r["seconds"] for r in runs]
    cpu = min(r["cpu"] for r in runs)
    rss = max(r["rss_kb"] for r in runs) / 1024
    return (f"p50 {events / statistics.median(times):,.0f} events/s, best "
            f"{events / min(times):,.0f} events/s ({events / cpu:,.0f} per CPU second), "
            f"peak RSS {rss:,.0f} MB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000,
                        help="events in the log (about: a call's events are not split)")
    parser.add_argument("--appends", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=24)
    parser.add_argument("--repeat", type=int, default=5,
                        help="time verify and replay this many times, each in a new process")
    parser.add_argument("--digits", type=int, default=None,
                        help="round confidences to this many digits, as agents report them "
                        "(0.85): replay then looks most re-decisions up (default: full "
                        "precision, every re-decision walks the machine)")
    parser.add_argument("--cache", type=Path, default=None,
                        help="keep the log in this directory and reuse it next time")
    parser.add_argument("--measure", nargs=2, metavar=("WHAT", "LOG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(args.measure[0], Path(args.measure[1]))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        path, events = cached(args.cache, Path(tmp), args.events, args.seed, args.digits)
        built = time.perf_counter() - t0
        size = path.stat().st_size
        full = timed("replay", path, args.repeat)
        verify = timed("verify", path, args.repeat)
        append = appends(Path(tmp) / "appends.jsonl", args.appends)
    assert all(r["events"] == events for r in full + verify), (events, full, verify)
    confidences = "full precision" if args.digits is None else f"{args.digits} digits"
    print(f"{events:,} events, {size / 2**20:,.0f} MiB, seed {args.seed}, confidences at "
          f"{confidences} " +
          (f"(from {args.cache})" if args.cache else f"(built in {built:.0f} s)"))
    print(f"replay: {rates(events, full)} "
          "(verify + check every event + rebuild machines + re-decide)")
    print(f"verify: {rates(events, verify)} (chain and anchor)")
    print(f"append: {append * 1e6:.2f} us per event = {1 / append:,.0f} events/s "
          "(file log, one writer, flock per append)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
