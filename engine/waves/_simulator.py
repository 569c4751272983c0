"""SIMULATED task execution for the wave loop: seeded, deterministic, touching nothing.

:class:`WaveSimulator` installs a handler for every tool of a catalogue, in
every mode. An attempt's outcome is a pure function of (seed, agent, task,
attempt), never of the order attempts run in, so a seeded run gives the same
results whatever the backend or the thread scheduling:

- success with probability ``clamp(predicted_success_rate + capability - 0.9,
  0.01, 0.995)``: an agent of capability 0.9 does as predicted, a better one
  beats the prediction, a weaker one falls short (prediction drift to find);
- latency ``base(tool) * speed * U(0.5, 1.5)`` seconds of the virtual clock;
- with probability ``timeout_rate`` the attempt hangs past the task's timeout,
  and so does one whose latency is over the timeout: it raises
  :class:`SimulatedTimeout` (a :class:`TimeoutError`) at the timeout.

Every result says ``"simulated": True``. The executor tells the handler which
attempt it runs through :data:`ATTEMPT` (a context variable, so threads each
see their own).
"""

from __future__ import annotations

import contextvars
import hashlib
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import attrs

from buddy.rules.tables._catalogue import ToolContractRegistry

__all__ = ["ATTEMPT", "Attempt", "Profile", "SimulatedFailure", "SimulatedTimeout",
           "WaveSimulator", "draw"]

#: Typical LIVE latency of a tool, seconds (others: DEFAULT_LATENCY_S).
BASE_LATENCY_S: Mapping[str, float] = {"vision_inspect": 0.4, "screenshot_capture": 0.12,
                                       "msgraph_send_email": 0.65, "database_write": 0.09,
                                       "math_compute": 0.02, "memory_search": 0.05}
DEFAULT_LATENCY_S = 0.2
_SCALE = 1.0 / (1 << 21)  # three uniforms of 21 bits from one 64-bit digest


class Profile(Protocol):
    """What the simulator reads of an agent (``AgentProfile`` of the scenario)."""

    @property
    def capability(self) -> float: ...
    @property
    def speed(self) -> float: ...
    @property
    def timeout_rate(self) -> float: ...


class SimulatedFailure(RuntimeError):
    """A simulated task attempt failed (by its seeded draw)."""


class SimulatedTimeout(TimeoutError):
    """A simulated task attempt hung past its timeout."""


@attrs.define
class Attempt:
    """The attempt a handler runs: set by the executor, read by the simulator, which
    writes back how long it took (virtual seconds)."""

    agent: str
    task: str
    number: int
    predicted: float
    timeout_s: float
    latency: float = 0.0


#: The attempt running in this thread (None outside the wave loop).
ATTEMPT: contextvars.ContextVar[Attempt | None] = contextvars.ContextVar("buddy_attempt",
                                                                        default=None)


def draw(seed: int, agent: str, task: str, number: int) -> tuple[float, float, float]:
    """Three uniforms in [0, 1) for one attempt: success, latency, hang.

    >>> draw(1, "agent_0", "w1-t00000", 1) == draw(1, "agent_0", "w1-t00000", 1)
    True
    """
    h = int.from_bytes(hashlib.blake2b(f"{seed}\x1f{agent}\x1f{task}\x1f{number}".encode(),
                                       digest_size=8).digest(), "big")
    return ((h & 0x1FFFFF) * _SCALE, ((h >> 21) & 0x1FFFFF) * _SCALE,
            ((h >> 42) & 0x1FFFFF) * _SCALE)


class WaveSimulator:
    """SIMULATED handlers for every tool of ``registry`` (all modes), outcomes drawn from
    ``seed`` and each agent's profile (an agent without a profile: capability 0.9,
    speed 1, never hangs)."""

    def __init__(self, registry: ToolContractRegistry, seed: int,
                 profiles: Mapping[str, Profile]) -> None:
        self.registry = registry
        self.seed = seed
        self.profiles = dict(profiles)

    def install(self, engine: Any) -> None:
        for contract in self.registry:
            run = self._handler(contract.name)
            engine.register_handler(contract.name, mock=run, dry_run=run, live=run,
                                    undo=_undo if contract.reversible else None)

    def outcome(self, attempt: Attempt) -> tuple[bool, bool, float]:
        """(succeeded, hung, latency in virtual seconds) of ``attempt`` on ``tool``
        (latency before the tool's base)."""
        p = self.profiles.get(attempt.agent)
        capability, speed, hang = (0.9, 1.0, 0.0) if p is None else \
            (p.capability, p.speed, p.timeout_rate)
        u_ok, u_latency, u_hang = draw(self.seed, attempt.agent, attempt.task, attempt.number)
        chance = min(0.995, max(0.01, attempt.predicted + capability - 0.9))
        return u_ok < chance, u_hang < hang, speed * (0.5 + u_latency)

    def _handler(self, tool: str) -> Callable[[dict[str, Any]], Any]:
        base = BASE_LATENCY_S.get(tool, DEFAULT_LATENCY_S)

        def run(args: dict[str, Any]) -> dict[str, Any]:
            attempt = ATTEMPT.get()
            if attempt is None:  # called outside the wave loop: a plain simulated success
                return {"simulated": True, "tool": tool}
            ok, hung, factor = self.outcome(attempt)
            if hung:
                attempt.latency = attempt.timeout_s
                raise SimulatedTimeout(f"simulated {tool} hung past its "
                                       f"{attempt.timeout_s:g} s timeout")
            attempt.latency = base * factor
            if attempt.latency > attempt.timeout_s:  # ran past the task's timeout
                attempt.latency = attempt.timeout_s
                raise SimulatedTimeout(f"simulated {tool} ran past its "
                                       f"{attempt.timeout_s:g} s timeout")
            if not ok:
                raise SimulatedFailure(f"simulated {tool} failure")
            return {"simulated": True, "tool": tool, "task": attempt.task,
                    "attempt": attempt.number}

        return run


def _undo(args: dict[str, Any], result: Any) -> dict[str, Any]:
    return {"simulated": True, "undone": True}

