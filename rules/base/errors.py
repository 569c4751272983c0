"""Every error buddy raises, rooted at :class:`BuddyError`.

::

    BuddyError
    ├── DefinitionError (ValueError)      a declared machine is malformed
    ├── RuleTableError (ValueError)       a rule table or catalogue file is malformed
    ├── ContractError (ValueError)        a tool contract breaks an invariant
    │   ├── UnknownToolError (KeyError)   no contract of that name
    │   └── DependencyCycleError          tool dependencies form a cycle
    ├── InputError (ValueError)           a value given by a caller is out of range
    │   └── TicketError                   a ticket cannot be answered or resumed as asked
    │       └── TicketPending             its call still waits for a person
    ├── AsyncHandlerError (TypeError)     an async handler given to a synchronous call
    ├── CallRefused (PermissionError)     a guarded callable's call was not allowed
    ├── ToolFailed                        a guarded callable failed without its own error
    ├── PlanError (ValueError)            a plans file cannot be read
    ├── AuditError                        the audit log cannot be written or read
    │   ├── AuditFormatError (ValueError) a line is not a valid event
    │   └── AuditChainBroken              the hash chain or its anchor does not verify
    └── ReplayDivergence                  a replayed decision differs from the recorded one

``str()`` of each is one line a person can act on. A denied tool call is not an
error: it is a :class:`~buddy.engine.Decision` with ``allowed=False``.
"""

from __future__ import annotations

__all__ = [
    "AuditChainBroken",
    "AuditError",
    "AuditFormatError",
    "BuddyError",
    "ContractError",
    "DefinitionError",
    "DependencyCycleError",
    "InputError",
    "PlanError",
    "ReplayDivergence",
    "RuleTableError",
    "UnknownToolError",
]


class BuddyError(Exception):
    """Root of every error buddy raises."""


class DefinitionError(BuddyError, ValueError):
    """A declared machine is malformed (unknown guard, unreachable state, ...)."""


class RuleTableError(BuddyError, ValueError):
    """A TOML rule table or catalogue is malformed.

    ``problems`` holds every problem found, each one line naming file, row and field.
    """

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        extra = len(self.problems) - 1
        text = self.problems[0] + (f" (and {extra} more problem(s))" if extra else "")
        super().__init__(text)

    def __str__(self) -> str:  # KeyError-style quoting never applies here
        return self.args[0]


class ContractError(BuddyError, ValueError):
    """A tool contract breaks an invariant."""


class UnknownToolError(ContractError, KeyError):
    """No contract is registered under that name."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"unknown tool {name!r}")

    def __str__(self) -> str:
        return self.args[0]


class DependencyCycleError(ContractError):
    """Tool dependencies form a cycle; ``cycle`` lists its tools in order."""

    def __init__(self, cycle: list[str]) -> None:
        self.cycle = list(cycle)
        super().__init__("tool dependencies form a cycle: " + " -> ".join(self.cycle))


class InputError(BuddyError, ValueError):
    """A value given by a caller is out of range (a confidence of 1.5, say)."""


class PlanError(BuddyError, ValueError):
    """A plans file cannot be read at all (single bad plans are reported, not raised)."""


class AuditError(BuddyError):
    """The audit log cannot be written or read."""


class AuditFormatError(AuditError, ValueError):
    """A line of the audit log is not a valid event."""

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        super().__init__(f"{where}: {reason}")


class AuditChainBroken(AuditError):
    """The hash chain (or its head anchor) does not verify at ``seq``."""

    def __init__(self, where: str, seq: int | None, reason: str) -> None:
        self.where = where
        self.seq = seq
        self.reason = reason
        at = f" at seq {seq}" if seq is not None else ""
        super().__init__(f"{where}: chain broken{at}: {reason}")


class ReplayDivergence(BuddyError):
    """A replayed decision differs from the recorded one."""

    def __init__(self, seq: int, field: str, expected: object, got: object) -> None:
        self.seq = seq
        self.field = field
        self.expected = expected
        self.got = got
        super().__init__(f"seq {seq}: {field} recorded {expected!r}, replay gives {got!r}")
