"""Shared test helpers: clocks and audit-log surgery."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import attrs

from buddy.engine import Engine, ToolContractRegistry
from buddy.rules import EscalationTable


def unthrottled(**kwargs: Any) -> Engine:
    """The shipped engine with its tools' rate limits lifted: for tests that call one
    tool thousands of times on a clock that does not move."""
    registry = ToolContractRegistry(
        attrs.evolve(c, rate_limit_per_minute=None) for c in ToolContractRegistry.default())
    return Engine(registry, EscalationTable.default(), **kwargs)


class ManualClock:
    """An injectable clock the test moves by hand."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def rechain(lines: list[str], key: bytes | None = None) -> list[str]:
    """Recompute every prev/hash the way an editor of the log would (the attack)."""
    out, prev = [], "0" * 64
    for line in lines:
        event = json.loads(line)
        event.pop("hash")
        event["prev"] = prev
        body = json.dumps(event, separators=(",", ":")).encode()
        digest = (hmac.new(key, body, hashlib.sha256) if key else hashlib.sha256(body)).hexdigest()
        out.append(body[:-1].decode() + f',"hash":"{digest}"}}')
        prev = digest
    return out


def edit(lines: list[str], index: int, **changes: object) -> list[str]:
    """Change fields of one line's ``data`` (no re-chaining)."""
    event = json.loads(lines[index])
    event["data"].update(changes)
    out = list(lines)
    out[index] = json.dumps(event, separators=(",", ":"))
    return out


class Probe:
    """A model on a built transitions machine, put in any state to fire one trigger."""

    def __init__(self, machine) -> None:
        self.machine = machine
        machine.add_model(self)

    def step(self, state: str, trigger: str, inputs: object) -> tuple[str, bool]:
        """Fire ``trigger`` from ``state``: (state reached, whether the trigger exists there)."""
        from transitions import MachineError

        self.state = state
        try:
            getattr(self, trigger)(inputs=inputs)
        except MachineError:
            assert self.state == state
            return state, False
        return self.state, True
