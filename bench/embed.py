"""Benchmark: what embedding costs -- async calls, idempotency keys, tickets, asking without
recording -- against a plain synchronous ``Engine.execute`` in the same run.

Handlers are SIMULATED (each returns a small dict and touches nothing); the engine is
buddy's shipped one with rate limits lifted (``bench/_engines.py``) on an in-memory log,
except the ``ticket (file log)`` row, which writes a file log and its kept arguments in
a temp directory. Each row times ``--calls`` operations, one at a time:

- ``execute``: a LIVE call of a LOW risk tool (the baseline);
- ``aexecute``: the same, awaited in one event loop, its handler ``async def``;
- ``execute, new key``: with an ``idempotency_key`` never used (claim + run + done);
- ``execute, repeated key``: a key used before (the first result, nothing runs);
- ``ticket``: ``prepare(wait=True)`` + ``approve`` + ``resume`` of a HIGH risk call;
- ``ticket (file log)``: the same on a file log (``sync="never"``: no fsync per event);
- ``check``: ``engine.check`` of the baseline call (writes nothing), when it exists.

Reports p50 and mean per operation and the ratio of each p50 to ``execute``'s, and the
memory a log's book of keys holds per key (tracemalloc, ``--keys`` keyed calls).

    pip install -e '.[bench]' && python bench/embed.py [--calls N] [--keys K] [--repeat R]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _engines import unthrottled  # noqa: E402

from buddy.engine import AuditLog, Engine  # noqa: E402

LOW, HIGH = "vision_inspect", "msgraph_send_email"


def engine(audit: AuditLog | None = None) -> Engine:
    out = unthrottled(clock=time.time, audit=audit)

    async def alive(args: dict) -> dict:
        return {"simulated": True, "mode": "LIVE"}

    out.register_handler(LOW, live=lambda args: {"simulated": True, "mode": "LIVE"})
    out.register_handler("memory_search", live=alive)
    out.register_handler(HIGH, live=lambda args: {"simulated": True, "sent": True})
    return out


def timed(op: Callable[[int], object], n: int) -> list[int]:
    clock, out = time.perf_counter_ns, []
    for i in range(n):
        t0 = clock()
        op(i)
        out.append(clock() - t0)
    return out


async def atimed(op: Callable[[int], object], n: int) -> list[int]:
    clock, out = time.perf_counter_ns, []
    for i in range(n):
        t0 = clock()
        await op(i)  # type: ignore[misc]
        out.append(clock() - t0)
    return out


def rows(n: int, tmp: Path) -> dict[str, list[int]]:
    got: dict[str, list[int]] = {}
    e = engine()
    got["execute"] = timed(lambda i: e.execute("a", LOW, {"n": i}, confidence=0.9), n)
    e = engine()
    got["aexecute"] = asyncio.run(atimed(
        lambda i: e.aexecute("a", "memory_search", {"n": i}, confidence=0.9), n))
    e = engine()
    got["execute, new key"] = timed(
        lambda i: e.execute("a", LOW, {"n": i}, confidence=0.9, idempotency_key=f"k{i}"), n)
    got["execute, repeated key"] = timed(
        lambda i: e.execute("a", LOW, {"n": i}, confidence=0.9, idempotency_key=f"k{i}"), n)

    def ticket_cycle(eng: Engine) -> Callable[[int], object]:
        def op(i: int) -> object:
            pending = eng.prepare("a", HIGH, {"to": f"x{i}"}, confidence=0.9, wait=True)
            assert pending.ticket is not None
            eng.approve(pending.ticket.id, by="ops")
            return eng.resume(pending.ticket.id)
        return op

    e = engine()
    got["ticket"] = timed(ticket_cycle(e), max(1, n // 10))
    log = AuditLog.open(tmp / "audit.jsonl", clock=time.time, sync="never")
    e = engine(log)
    got["ticket (file log)"] = timed(ticket_cycle(e), max(1, n // 20))
    log.close()
    e = engine()
    check = getattr(e, "check", None)
    if check is not None:
        got["check"] = timed(lambda i: check("a", LOW, 0.9), n)
    return got


def key_memory(keys: int) -> float:
    """Bytes the log's book holds per idempotency key (claim + done)."""
    e = engine()
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for i in range(keys):
        e.execute("a", LOW, {"n": i}, confidence=0.9, idempotency_key=f"key-{i:08d}")
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    book = sum(s.size_diff for s in after.compare_to(before, "filename")
               if "_tickets.py" in str(s.traceback))
    return book / keys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--keys", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    best: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeat):
            run_dir = Path(tmp, str(r))
            run_dir.mkdir()
            for name, ns in rows(args.calls, run_dir).items():
                p50 = statistics.median(ns) / 1000
                mean = statistics.fmean(ns) / 1000
                if name not in best or p50 < best[name][0]:
                    best[name] = (p50, mean)
    base = best["execute"][0]
    print(f"{'operation':<24}{'p50 us':>10}{'mean us':>10}{'x execute':>11}")
    for name, (p50, mean) in best.items():
        print(f"{name:<24}{p50:>10.2f}{mean:>10.2f}{p50 / base:>11.2f}")
    per_key = key_memory(args.keys)
    print(f"book memory per idempotency key: {per_key:,.0f} bytes ({args.keys:,} keys)")
    print(f"embed: execute p50 {base:.2f} us; aexecute {best['aexecute'][0] / base:.2f}x; "
          f"new key {best['execute, new key'][0] / base:.2f}x; repeated key "
          f"{best['execute, repeated key'][0] / base:.2f}x; ticket cycle "
          f"{best['ticket'][0]:.1f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
