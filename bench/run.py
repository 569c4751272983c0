"""Benchmark: ``buddy run`` end to end on N plans, with SIMULATED tools.

Writes a seeded plans file of N plans (the default scenario's 24 plans,
repeated with fresh plan ids and the confidences of ``default_plans(seed + k)``
for the k-th repetition: ``repeated_plans`` of the scenario module; conflicts
of every type but PERMISSION, a LIVE failure with its rollback, duplicates
across repetitions), then runs
``buddy run --plans FILE`` on it in a fresh output directory, as a subprocess,
and prints its wall time, plans per second and peak RSS. It does the same at
N/10 and N/3 first: a linear run keeps the time per plan about constant.

Each ``buddy run`` is started by a measuring process of its own, which reads
the peak RSS of its one child with ``resource.getrusage(RUSAGE_CHILDREN)``.
The tools are SIMULATED handlers (seeded, deterministic stand-ins that touch
nothing): this measures buddy, not the tools.

    python bench/run.py [--plans N] [--seed S] [--plans-per-cycle K] [--keep DIR]

Each size prints ``run: <N> plans in <X> s (<P> plans/s, <U> us per plan; CPU <Y> s,
<V> us per plan), peak RSS <M> MB; <C> calls run``; the times include starting
Python, the wall time also the audit trail's fsyncs.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from buddy.engine.orchestration._plans import plan_to_json
from buddy.engine.orchestration._scenario import repeated_plans

START = 1_700_000_000  # the simulated clock's start: the same files every time


def write_plans(path: Path, n: int, seed: int) -> Path:
    """``n`` plans of the scenario, seeded (``repeated_plans``), as a JSON Lines file."""
    with open(path, "wb") as fh:
        for plan in repeated_plans(n, seed):
            fh.write(orjson.dumps(plan_to_json(plan)) + b"\n")
    return path


def buddy_command() -> list[str]:
    """``buddy`` as installed beside this Python."""
    return [sys.executable, "-c", "from buddy.engine.app._cli import entry; entry()"]


def measure(plans_file: Path, out: Path, seed: int, per_cycle: int) -> dict[str, float]:
    """Run ``buddy run`` once as this process's only child: wall time, CPU time (user +
    system: steadier than the wall on a shared machine) and peak RSS."""
    command = [*buddy_command(), "run", "--plans", str(plans_file), "--out", str(out),
               "--seed", str(seed), "--start", str(START),
               "--plans-per-cycle", str(per_cycle)]
    t0 = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          check=False)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        sys.stderr.write(done.stderr.decode(errors="replace"))
        raise SystemExit(f"buddy run exited {done.returncode}")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # of the one child
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_rss_mb": usage.ru_maxrss / 1024}  # ru_maxrss: KiB on Linux


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plans", type=int, default=30_000)
    parser.add_argument("--seed", type=int, default=24)
    parser.add_argument("--plans-per-cycle", type=int, default=4,
                        help="buddy run's --plans-per-cycle (its default: 4)")
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep the plans files and outputs under this directory")
    parser.add_argument("--measure", nargs=2, type=Path, metavar=("PLANS", "OUT"),
                        help=argparse.SUPPRESS)  # the measuring process: one buddy run
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure, args.seed, args.plans_per_cycle)))
        return 0
    print(f"buddy run --plans FILE --plans-per-cycle {args.plans_per_cycle} --seed "
          f"{args.seed} --start {START}; the tools are SIMULATED handlers (seeded, "
          "deterministic stand-ins that touch nothing)")
    with tempfile.TemporaryDirectory(prefix="buddy-bench-run-") as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        sizes = sorted({max(1, args.plans // 10), max(1, args.plans // 3), args.plans})
        for n in sizes:
            plans_file = write_plans(root / f"plans-{n}.jsonl", n, args.seed)
            out = root / f"out-{n}"
            child = subprocess.run(
                [sys.executable, __file__, "--measure", str(plans_file), str(out),
                 "--seed", str(args.seed), "--plans-per-cycle", str(args.plans_per_cycle)],
                capture_output=True, check=True)
            m = json.loads(child.stdout)
            calls = json.loads((out / "orchestration_summary.json").read_bytes())[
                "total_tools_executed"]
            print(f"run: {n} plans in {m['wall_s']:.2f} s ({n / m['wall_s']:,.0f} plans/s, "
                  f"{m['wall_s'] / n * 1e6:,.0f} us per plan; CPU {m['cpu_s']:.2f} s, "
                  f"{m['cpu_s'] / n * 1e6:,.0f} us per plan), peak RSS "
                  f"{m['peak_rss_mb']:,.0f} MB; {calls:,} calls run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
