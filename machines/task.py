"""The task lifecycle: PENDING -> IN_PROGRESS -> COMPLETED, with retries and a safety gate.

Declared as data like the escalation machine. ``fail`` goes to RETRYING while
retries remain, else to FAILED; ``start`` and ``retry`` go to FAILED when the
safety gate refuses.
"""

from __future__ import annotations

import enum

from buddy.machines._factory import MachineSpec, Transition

__all__ = ["SPEC", "TaskInputs", "TaskState"]


class TaskState(enum.Enum):
    PENDING = "PENDING"
    IN_PROGRESS = "IN_PROGRESS"
    RETRYING = "RETRYING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


class TaskInputs:
    """What the task guards read: attempts made so far, the retry budget, the gate's verdict."""

    __slots__ = ("attempts", "max_retries", "gate_allows")

    def __init__(self, attempts: int = 0, max_retries: int = 0, gate_allows: bool = True) -> None:
        self.attempts = attempts
        self.max_retries = max_retries
        self.gate_allows = gate_allows


GUARDS = {
    "retries_remaining": lambda i: i.attempts < i.max_retries,
    "gate_allows": lambda i: i.gate_allows,
}

T = TaskState
TRANSITIONS = (
    Transition("start", T.PENDING, T.IN_PROGRESS, conditions=["gate_allows"]),
    Transition("start", T.PENDING, T.FAILED, unless=["gate_allows"]),
    Transition("succeed", T.IN_PROGRESS, T.COMPLETED),
    Transition("fail", T.IN_PROGRESS, T.RETRYING, conditions=["retries_remaining"]),
    Transition("fail", T.IN_PROGRESS, T.FAILED, unless=["retries_remaining"]),
    Transition("retry", T.RETRYING, T.IN_PROGRESS, conditions=["gate_allows"]),
    Transition("retry", T.RETRYING, T.FAILED, unless=["gate_allows"]),
    Transition("cancel", (T.PENDING, T.IN_PROGRESS, T.RETRYING), T.FAILED),
)

SPEC = MachineSpec(
    name="task",
    states=TaskState,
    initial=T.PENDING,
    finals={T.COMPLETED, T.FAILED},
    transitions=TRANSITIONS,
    guards=GUARDS,
    description="task lifecycle with bounded retries and a safety gate",
)
