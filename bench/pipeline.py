"""Benchmark: the wave loop end to end (``buddy run waves``), with SIMULATED tools.

Every task goes through the whole loop: assignment (the strategy) -> safety
gates (rule table) -> the engine's decision -> the task machine -> the
simulated tool -> feedback signals -> the monitor -> the output tree, with
the audit trail written to a file (``audit.jsonl``, fsynced every 256 events).
Two sizes:

- small: the sources' 4 agents x 3 waves x 20 tasks (60 tasks);
- large: 64 agents x 5 waves x 20,000 tasks per wave (100,000 tasks).

Each run is a process of its own (started by a measuring process that reads
its one child's peak RSS with ``getrusage(RUSAGE_CHILDREN)``); tasks/s is
the loop's own (``run_waves``'s wall clock from the first wave to the last,
files of each wave included; not Python's start-up nor the final report).
Each size runs ``--repeat`` times; p50 and mean are printed. The sources
claim 315 tasks/s and 20-50 MB; the target is >= 50,000 tasks/s and < 200 MB
for the large size.

    python bench/pipeline.py [--repeat N] [--large-tasks N] [--strategy S] [--backend B]

The tools are SIMULATED handlers (seeded, deterministic stand-ins that touch
nothing) on a virtual clock: this measures buddy, not the tools.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

START = 1_700_000_000  # the virtual clock's start: the same files every time


def measure(out: Path, agents: int, waves: int, per_wave: int, strategy: str,
            backend: str, seed: int) -> dict[str, float]:
    """One wave run in this process (the measuring process's child)."""
    from buddy.engine.app._waves import WaveRunConfig, run_waves

    t0 = time.perf_counter()
    summary = run_waves(WaveRunConfig(output_dir=out, agents=agents, waves=waves,
                                      tasks_per_wave=per_wave, strategy=strategy,
                                      backend=backend, seed=seed, start=START))
    return {"loop_s": summary.seconds, "total_s": time.perf_counter() - t0,
            "tasks": summary.tasks, "completed": summary.completed,
            "health": summary.health_score}


def child(out: Path, args: argparse.Namespace, agents: int, waves: int,
          per_wave: int) -> dict[str, float]:
    """Run :func:`measure` in a child process; add its peak RSS."""
    code = ("import json, resource, subprocess, sys; "
            "r = subprocess.run(sys.argv[1:], capture_output=True); "
            "sys.stderr.buffer.write(r.stderr); "
            "u = resource.getrusage(resource.RUSAGE_CHILDREN); "
            "print(json.dumps({'out': r.stdout.decode(), 'rc': r.returncode, "
            "'rss': u.ru_maxrss / 1024}))")
    command = [sys.executable, "-c", code, sys.executable, __file__, "--measure", str(out),
               str(agents), str(waves), str(per_wave), "--strategy", args.strategy,
               "--backend", args.backend, "--seed", str(args.seed)]
    done = subprocess.run(command, capture_output=True, check=True)
    wrapped = json.loads(done.stdout)
    if wrapped["rc"] != 0:
        sys.stderr.write(done.stderr.decode(errors="replace"))
        raise SystemExit(f"the wave run exited {wrapped['rc']}")
    return {**json.loads(wrapped["out"]), "peak_rss_mb": wrapped["rss"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--large-tasks", type=int, default=20_000,
                        help="tasks per wave of the large size (64 agents x 5 waves)")
    parser.add_argument("--strategy", default="LOAD_BALANCED")
    parser.add_argument("--backend", default="virtual", choices=("virtual", "threads"))
    parser.add_argument("--seed", type=int, default=21)
    argv = sys.argv[1:]
    if argv[:1] == ["--measure"]:  # the measured process: one run, its figures as JSON
        out, agents, waves, per_wave = argv[1], *map(int, argv[2:5])
        rest = parser.parse_args(argv[5:])
        print(json.dumps(measure(Path(out), agents, waves, per_wave, rest.strategy,
                                 rest.backend, rest.seed)))
        return 0
    args = parser.parse_args()
    print(f"buddy run waves, {args.strategy}, backend {args.backend}, seed {args.seed}, "
          f"audit trail to a file; the tools are SIMULATED handlers on a virtual clock")
    sizes = (("small", 4, 3, 20), ("large", 64, 5, args.large_tasks))
    with tempfile.TemporaryDirectory(prefix="buddy-bench-pipeline-") as tmp:
        for name, agents, waves, per_wave in sizes:
            runs = [child(Path(tmp) / f"{name}-{i}", args, agents, waves, per_wave)
                    for i in range(args.repeat)]
            rates = [r["tasks"] / r["loop_s"] for r in runs]
            per_task = [r["loop_s"] / r["tasks"] * 1e6 for r in runs]
            rss = [r["peak_rss_mb"] for r in runs]
            tasks = runs[0]["tasks"]
            print(f"{name}: {agents} agents x {waves} waves x {per_wave:,} tasks = {tasks:,} "
                  f"tasks; tasks/s p50 {statistics.median(rates):,.0f} mean "
                  f"{statistics.fmean(rates):,.0f} ({statistics.median(per_task):,.1f} us "
                  f"per task p50, {statistics.fmean(per_task):,.1f} mean); whole run "
                  f"(start-up and report included) p50 "
                  f"{statistics.median(r['total_s'] for r in runs):.2f} s; peak RSS p50 "
                  f"{statistics.median(rss):,.0f} MB, max {max(rss):,.0f} MB; "
                  f"{runs[0]['completed']:,} completed, final health {runs[0]['health']}; "
                  f"vs the sources' claimed 315 tasks/s: "
                  f"{statistics.median(rates) / 315:,.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
