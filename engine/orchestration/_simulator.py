"""SIMULATED tools: seeded, deterministic stand-ins for the catalogue's tools.

They touch nothing outside the process. Each handler draws its latency and
whether it fails from a generator seeded by (seed, tool, mode, arguments, how
many times those arguments were seen), so the same seed replays the same run.
Every result says ``"simulated": True``. Arguments steer a run on purpose:
``{"simulate": "error"}`` fails in LIVE (to exercise rollback) and
``{"simulate": "timeout"}`` overruns the tool's timeout in DRY_RUN and LIVE.
"""

from __future__ import annotations

import hashlib
import random
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from buddy.rules.base._canonical import args_digest
from buddy.rules.base._values import ExecutionMode
from buddy.rules.tables._catalogue import ToolContractRegistry

__all__ = ["SimulatedClock", "SimulatedFailure", "SimulatedTimeout", "SimulatedTools"]


class SimulatedClock:
    """A clock that moves only when told to (by simulated latencies)."""

    def __init__(self, start: float) -> None:
        self._start = float(start)
        self._elapsed = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self._start + self._elapsed

    def elapsed(self) -> float:
        """Seconds since the start: differences of it do not depend on the start."""
        return self._elapsed

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._elapsed += seconds


class SimulatedFailure(RuntimeError):
    """A simulated tool failed (on purpose or by its seeded failure rate)."""


class SimulatedTimeout(TimeoutError):
    """A simulated tool ran past its contract's timeout."""


#: Per-tool failure rates of the simulator in DRY_RUN and LIVE (MOCK never fails).
DEFAULT_FAILURE_RATES: Mapping[str, float] = {
    "ghl_update_contact": 0.35,
    "screenshot_capture": 0.05,
    "text_extract": 0.03,
}
DEFAULT_FAILURE_RATE = 0.0
#: Typical latency (ms) of a LIVE call; DRY_RUN takes half, MOCK a tenth.
BASE_LATENCY_MS: Mapping[str, float] = {"vision_inspect": 400.0, "screenshot_capture": 120.0,
                                        "msgraph_send_email": 650.0, "database_write": 90.0}
DEFAULT_LATENCY_MS = 200.0
_MODE_FACTOR = {ExecutionMode.MOCK: 0.1, ExecutionMode.DRY_RUN: 0.5, ExecutionMode.LIVE: 1.0}


class SimulatedTools:
    """Installs simulated mock / dry-run / live / undo handlers for every tool."""

    def __init__(self, registry: ToolContractRegistry, seed: int, clock: SimulatedClock,
                 failure_rates: Mapping[str, float] = DEFAULT_FAILURE_RATES) -> None:
        self.registry = registry
        self.seed = seed
        self.clock = clock
        self.failure_rates = dict(failure_rates)
        self._seen: Counter[tuple[str, ExecutionMode, str]] = Counter()
        self._lock = threading.Lock()
        self.undone: list[tuple[str, Any]] = []

    def install(self, engine: Any) -> None:
        for contract in self.registry:
            name = contract.name
            engine.register_handler(
                name, mock=self._handler(name, ExecutionMode.MOCK),
                dry_run=self._handler(name, ExecutionMode.DRY_RUN),
                live=self._handler(name, ExecutionMode.LIVE),
                undo=self._undo(name) if contract.reversible else None)

    def _rng(self, tool: str, mode: ExecutionMode, args: Mapping[str, Any]) -> random.Random:
        digest = args_digest(args)
        with self._lock:
            self._seen[(tool, mode, digest)] += 1
            n = self._seen[(tool, mode, digest)]
        key = f"{self.seed}:{tool}:{mode.value}:{digest}:{n}".encode()
        return random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))

    def _handler(self, tool: str, mode: ExecutionMode) -> Callable[[dict[str, Any]], Any]:
        timeout_s = self.registry.get(tool).timeout_s

        def run(args: dict[str, Any]) -> dict[str, Any]:
            rng = self._rng(tool, mode, args)
            latency = BASE_LATENCY_MS.get(tool, DEFAULT_LATENCY_MS) * _MODE_FACTOR[mode] * \
                rng.uniform(0.5, 1.5)
            steer = args.get("simulate")
            if steer == "timeout" and mode is not ExecutionMode.MOCK:
                self.clock.advance(timeout_s)
                raise SimulatedTimeout(f"simulated {tool} ran past its {timeout_s:g} s timeout")
            self.clock.advance(latency / 1000)
            if mode is not ExecutionMode.MOCK and (
                    steer == "error" and mode is ExecutionMode.LIVE
                    or rng.random() < self.failure_rates.get(tool, DEFAULT_FAILURE_RATE)):
                raise SimulatedFailure(f"simulated {tool} failure in {mode.value}")
            return {"simulated": True, "tool": tool, "mode": mode.value,
                    "latency_ms": round(latency, 3)}

        return run

    def _undo(self, tool: str) -> Callable[[dict[str, Any], Any], Any]:
        def undo(args: dict[str, Any], result: Any) -> dict[str, Any]:
            with self._lock:
                self.undone.append((tool, args_digest(args)))
            return {"simulated": True, "undone": tool}

        return undo
