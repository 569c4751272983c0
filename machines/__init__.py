"""The state machines, declared as data and built by one factory.

``MACHINES`` maps each machine's name to its declaration.
"""

from buddy.machines import escalation, task
from buddy.machines._factory import (
    MachineSpec,
    Transition,
    build,
    check,
    compile_table,
    fire,
    spec_graph,
    walk,
)
from buddy.machines.escalation import EscalationInputs, ExecutionState
from buddy.machines.task import TaskInputs, TaskState

MACHINES: dict[str, MachineSpec] = {spec.name: spec for spec in (escalation.SPEC, task.SPEC)}

__all__ = [
    "MACHINES",
    "EscalationInputs",
    "ExecutionState",
    "MachineSpec",
    "TaskInputs",
    "TaskState",
    "Transition",
    "build",
    "check",
    "compile_table",
    "escalation",
    "fire",
    "spec_graph",
    "task",
    "walk",
]
