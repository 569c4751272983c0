"""Benchmark: loading a large tool catalogue (and reporting its problems) from TOML text.

Builds a catalogue of N tools (default 10,000), each depending on the one
before it (a dependency chain N deep), and times ``ToolContractRegistry.from_toml``
on it: parse, structure every row, check every contract, the chain acyclic.
Then the same catalogue with a bad value in every row, reporting all N problems.

    python bench/catalogue.py [--tools N]
"""

from __future__ import annotations

import argparse
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tools", type=int, default=10_000)
    args = parser.parse_args()
    good, bad = catalogue(args.tools), catalogue(args.tools, bad=True)
    t0 = time.perf_counter()
    registry = ToolContractRegistry.from_toml(text=good, source="big.toml")
    loaded = time.perf_counter() - t0
    t0 = time.perf_counter()
    try:
        ToolContractRegistry.from_toml(text=bad, source="bad.toml")
    except RuleTableError as exc:
        problems = len(exc.problems)
    reported = time.perf_counter() - t0
    print(f"{len(registry)} tools, a dependency chain {args.tools} deep")
    print(f"load {loaded:.2f} s; {problems} problems reported in {reported:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
