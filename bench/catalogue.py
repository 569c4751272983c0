"""Benchmark: loading a large tool catalogue (and reporting its problems) from TOML text.

Builds a catalogue of N tools (default 10,000), each depending on the one
before it (a dependency chain N deep), and times ``ToolContractRegistry.from_toml``
on it: parse, structure every row, check every contract, the chain acyclic.
Then the same catalogue with a bad value in every row, reporting all N problems.
Each is timed ``--repeat`` times (default 7); the machine is noisy, so the
last line gives the median (p50), the mean and the best of the repeats:

    python bench/catalogue.py [--tools N] [--repeat R]

``load p50 <X> s, mean <Y> s, best <B> s; report p50 <Z> s, mean <W> s, best <C> s (<R> repeats)``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from buddy.rules import ToolContractRegistry
from buddy.rules.base.errors import RuleTableError


def catalogue(n: int, bad: bool = False) -> str:
    rows = []
    for i in range(n):
        deps = f'["t{i - 1}"]' if i else "[]"
        concurrency = '"four"' if bad else "4"
        rows.append(f'[[tool]]\nname = "t{i}"\ndescription = "tool {i}"\nrisk = "MEDIUM"\n'
                    f'reversible = true\npermissions = ["p.{i % 7}"]\ndependencies = {deps}\n'
                    f'max_concurrency = {concurrency}\nrate_limit_per_minute = 60\n'
                    f'timeout_s = 10.0\nrequires_approval = false\ntags = ["x"]\n')
    return "\n".join(rows)


def time_load(text: str) -> tuple[float, int, int]:
    """Seconds to load ``text``, the tools loaded and the problems reported."""
    t0 = time.perf_counter()
    try:
        registry = ToolContractRegistry.from_toml(text=text, source="big.toml")
    except RuleTableError as exc:
        return time.perf_counter() - t0, 0, len(exc.problems)
    return time.perf_counter() - t0, len(registry), 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tools", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    good, bad = catalogue(args.tools), catalogue(args.tools, bad=True)
    loads, reports = [], []
    for _ in range(args.repeat):
        seconds, tools, problems = time_load(good)
        assert tools == args.tools and problems == 0, (tools, problems)
        loads.append(seconds)
        seconds, tools, problems = time_load(bad)
        assert tools == 0 and problems == args.tools, (tools, problems)
        reports.append(seconds)
    print(f"{args.tools} tools, a dependency chain {args.tools} deep; "
          f"{args.tools} problems reported")
    print(f"load p50 {statistics.median(loads):.2f} s, mean {statistics.fmean(loads):.2f} s, "
          f"best {min(loads):.2f} s; report p50 {statistics.median(reports):.2f} s, "
          f"mean {statistics.fmean(reports):.2f} s, best {min(reports):.2f} s "
          f"({args.repeat} repeats)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
