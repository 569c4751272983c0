"""Approvals: one-shot answers from a callback, and scoped grants.

A callback answers an :class:`ApprovalRequest` with an :class:`Approval`:
approve, deny, or approve with edited arguments (the edited arguments are
what runs; the audit trail records both). A :class:`Grant` approves one
(agent, tool) pair for a period on the engine's clock, or for a number of
calls, until it runs out or is revoked.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from buddy.rules.base._masking import shown
from buddy.rules.base._values import RiskLevel
from buddy.rules.base.errors import InputError

__all__ = [
    "Approval",
    "ApprovalCallback",
    "ApprovalRequest",
    "Grant",
    "GrantBook",
    "Verdict",
    "as_approval",
    "grant_bounds",
]


class Verdict(enum.Enum):
    APPROVE = "approve"
    DENY = "deny"


@attrs.frozen
class ApprovalRequest:
    """What an approver is asked about."""

    agent: str
    tool: str
    risk: RiskLevel
    confidence: float
    args: Mapping[str, Any] | None
    reason: str


def _reason(instance: Any, attribute: Any, value: Any) -> None:
    if type(value) is not str:
        raise InputError(f"an approval's reason must be a string (got {shown(value)})")


def _edit_args(instance: Any, attribute: Any, value: Any) -> None:
    if value is not None and not (isinstance(value, Mapping)
                                  and all(isinstance(k, str) for k in value)):
        raise InputError(f"an approval's edited arguments must be a mapping with string keys "
                         f"(got {shown(value)})")


@attrs.frozen
class Approval:
    """An approver's answer. ``args`` set means: approve, but run these arguments."""

    verdict: Verdict = attrs.field(validator=attrs.validators.instance_of(Verdict))
    args: Mapping[str, Any] | None = attrs.field(default=None, validator=_edit_args)
    reason: str = attrs.field(default="", validator=_reason)

    @classmethod
    def approve(cls, reason: str = "") -> Approval:
        return cls(Verdict.APPROVE, None, reason)

    @classmethod
    def deny(cls, reason: str = "") -> Approval:
        return cls(Verdict.DENY, None, reason)

    @classmethod
    def edit(cls, args: Mapping[str, Any], reason: str = "") -> Approval:
        """Approve, running ``args`` instead of the arguments asked for.

        >>> Approval.edit(["not", "a", "mapping"])
        Traceback (most recent call last):
        ...
        buddy.rules.base.errors.InputError: an approval's edited arguments must be a mapping ...
        """
        if args is None:  # an edit without arguments is no edit: say approve() instead
            raise InputError("an approval's edited arguments must be a mapping with string "
                             "keys (got None)")
        return cls(Verdict.APPROVE, args, reason)

    @property
    def approved(self) -> bool:
        return self.verdict is Verdict.APPROVE


ApprovalCallback = Callable[[ApprovalRequest], "Approval | bool"]


def as_approval(answer: Any) -> Approval | None:
    """Accept a plain bool from simple callbacks (``approval_gate_callback -> bool``).

    An :class:`Approval` built around the validators (``attrs.evolve`` skips
    none, but a subclass or ``object.__setattr__`` could) is checked again:
    edited arguments must be a mapping, or the answer is refused.
    """
    if answer is None:
        return None
    if isinstance(answer, Approval):
        _edit_args(answer, None, answer.args)
        _reason(answer, None, answer.reason)
        if not isinstance(answer.verdict, Verdict):
            raise InputError(f"an approval's verdict must be a Verdict "
                             f"(got {shown(answer.verdict)})")
        return answer
    if isinstance(answer, bool):
        return Approval.approve() if answer else Approval.deny()
    raise InputError(f"an approval callback must return Approval or bool (got {shown(answer)})")


@attrs.frozen
class Grant:
    """A scoped approval of ``tool`` for ``agent``: until ``expires_at`` on the
    engine's clock, and/or for ``calls`` calls. Build one with :func:`grant_bounds`
    checked values (the engine does)."""

    id: str
    agent: str
    tool: str
    granted_at: float
    expires_at: float | None = None
    calls: int | None = None
    reason: str = ""


#: The most calls a grant may count: the largest integer every JSON reader holds exactly.
MAX_CALLS = 2 ** 53 - 1


def grant_bounds(now: float, seconds: Any, calls: Any) -> tuple[float | None, int | None]:
    """``(expires_at, calls)`` of a grant made at ``now``, or :class:`InputError` saying why not.

    ``seconds`` must be a finite number > 0 (no bool, NaN or infinity: an
    endless grant is not a grant) and ``now + seconds`` finite; ``calls`` a
    whole number >= 1 (1.5 calls is not a number of calls). At least one is
    needed.

    >>> grant_bounds(100.0, 60, None)
    (160.0, None)
    >>> grant_bounds(100.0, float("inf"), None)
    Traceback (most recent call last):
    ...
    buddy.rules.base.errors.InputError: grant: seconds must be a finite number > 0 (got inf)
    >>> grant_bounds(100.0, None, 1.5)
    Traceback (most recent call last):
    ...
    buddy.rules.base.errors.InputError: grant: calls must be a whole number from 1 to ...
    """
    if seconds is None and calls is None:
        raise InputError("grant: needs a period (seconds) or a number of calls")
    expires_at = None
    if seconds is not None:
        ok = isinstance(seconds, int | float) and not isinstance(seconds, bool)
        try:
            expires_at = now + float(seconds) if ok else None
        except OverflowError:
            expires_at = None
        if expires_at is None or not (math.isfinite(expires_at) and seconds > 0):
            raise InputError(f"grant: seconds must be a finite number > 0 (got {shown(seconds)})")
        if not expires_at > now:  # too small to move a clock that reads {now}
            raise InputError(f"grant: seconds must move the clock: {shown(seconds)} s after "
                             f"{now!r} is still {expires_at!r}")
    if calls is not None and (type(calls) is not int or not 1 <= calls <= MAX_CALLS):
        raise InputError(f"grant: calls must be a whole number from 1 to {MAX_CALLS} "
                         f"(got {shown(calls)})")
    return expires_at, calls


class GrantBook:
    """Live grants and what is left of them. Not thread-safe: callers lock."""

    def __init__(self) -> None:
        self._by_pair: dict[tuple[str, str], list[Grant]] = {}
        self._by_id: dict[str, Grant] = {}
        self._left: dict[str, int | None] = {}

    def add(self, grant: Grant) -> None:
        if grant.id in self._by_id:
            raise InputError(f"grant {grant.id} already exists")
        self._by_id[grant.id] = grant
        self._left[grant.id] = grant.calls
        self._by_pair.setdefault((grant.agent, grant.tool), []).append(grant)

    def revoke(self, grant_id: str) -> Grant:
        grant = self._by_id.pop(grant_id, None)
        if grant is None:
            raise InputError(f"no active grant {grant_id!r}")
        self._left.pop(grant_id, None)
        self._by_pair[(grant.agent, grant.tool)].remove(grant)
        return grant

    def get(self, grant_id: str) -> Grant | None:
        return self._by_id.get(grant_id)

    def active(self, now: float) -> list[Grant]:
        return [g for g in self._by_id.values() if self._usable(g, now)]

    def _usable(self, grant: Grant, now: float) -> bool:
        left = self._left.get(grant.id)
        return (grant.expires_at is None or now < grant.expires_at) and \
            (grant.calls is None or (left is not None and left > 0))

    def withdrawn(self, grant_id: str, now: float) -> str | None:
        """Why a grant that approved a call (and was used by it) no longer stands, or None.

        Unlike :meth:`check`, a grant whose calls are used up still stands for
        the calls it approved.
        """
        grant = self._by_id.get(grant_id)
        if grant is None:
            return "was revoked"
        if grant.expires_at is not None and now >= grant.expires_at:
            return f"expired at {grant.expires_at}"
        return None

    def check(self, grant_id: str, now: float) -> str | None:
        """Why ``grant_id`` cannot approve a call at ``now``, or None if it can."""
        grant = self._by_id.get(grant_id)
        if grant is None:
            return "no such grant (never granted, or revoked)"
        if grant.expires_at is not None and now >= grant.expires_at:
            return f"expired at {grant.expires_at}"
        if grant.calls is not None and not self._left.get(grant_id):
            return "no calls left"
        return None

    def consume(self, agent: str, tool: str, now: float) -> Grant | None:
        """Use one call of the first usable grant for (agent, tool), if any."""
        for grant in self._by_pair.get((agent, tool), ()):
            if self._usable(grant, now):
                self.use(grant.id)
                return grant
        return None

    def use(self, grant_id: str) -> None:
        left = self._left.get(grant_id)
        if left is not None:
            self._left[grant_id] = left - 1
