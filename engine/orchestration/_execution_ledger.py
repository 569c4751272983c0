"""What is running and what has run: the state conflict detection reads between batches.

:class:`ExecutionLedger` keeps

- the **resources held** by running calls (:meth:`~ExecutionLedger.acquire`,
  :meth:`~ExecutionLedger.release`): a held resource conflicts in every slot;
- the **calls running** per tool, which count first against its concurrency limit;
- the **execution history** (:meth:`~ExecutionLedger.record`, also read from an
  audit trail by :meth:`~ExecutionLedger.load_history`, so it survives a
  restart), and two indexes of it: the irreversible actions already done (for
  DUPLICATE_ACTION) and the (plan, tool) steps already succeeded (for ORDERING).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from buddy.engine.core._audit import AuditLog
from buddy.engine.orchestration._conflict_records import ExecutedCall, Holder
from buddy.engine.orchestration._plans import PlannedCall
from buddy.rules.base._canonical import args_digest
from buddy.rules.base._values import ExecutionMode
from buddy.rules.base.errors import AuditFormatError, InputError

__all__ = ["ExecutionLedger"]

_MODES = {m.value: m for m in ExecutionMode}


class ExecutionLedger:
    """Resources held, calls running and the execution history.

    ``duplicate_modes``: the modes in which a successful run makes a repeat of
    the same irreversible action a DUPLICATE_ACTION (a MOCK or DRY_RUN run
    changed nothing). ``keep_history``: keep every run in :attr:`history`; False
    keeps only the indexes detection reads (the same conflicts are found).
    """

    def __init__(self, duplicate_modes: Iterable[ExecutionMode] = (ExecutionMode.LIVE,),
                 *, keep_history: bool = True,
                 digest: Callable[[Any], str] = args_digest) -> None:
        self.duplicate_modes = frozenset(duplicate_modes)
        #: the digest of a call's arguments as the audit trail records it (the log's
        #: :meth:`~buddy.engine.core._audit.AuditLog.args_digest`: keyed, or of masked
        #: arguments), so an action the trail says ran is known again by its arguments
        self.digest = digest
        self.keep_history = keep_history
        #: resource -> who holds it now.
        self.active: dict[str, Holder] = {}
        #: every execution recorded or loaded, in order (only with ``keep_history``; the
        #: indexes below are kept either way).
        self.history: list[ExecutedCall] = []
        #: tool -> the ids of its calls running now.
        self.running: dict[str, list[str]] = {}
        #: (tool, args digest) -> the first successful run of that irreversible action.
        self.done_actions: dict[tuple[str, str], str] = {}
        #: (plan, tool) steps that succeeded.
        self.done_steps: set[tuple[str, str]] = set()

    # -- running calls ----------------------------------------------------------
    @property
    def rate_limit_state(self) -> dict[str, int]:
        """Tool -> how many of its calls are running now."""
        return {tool: len(ids) for tool, ids in self.running.items() if ids}

    def acquire(self, call: PlannedCall) -> None:
        """Mark ``call`` as running: it holds its resource and one of its tool's slots.

        Raises :class:`~buddy.rules.base.errors.InputError` when another agent holds
        the resource (resolve the conflict first).
        """
        if call.resource is not None:
            holder = self.active.get(call.resource)
            if holder is not None and holder.agent != call.agent:
                raise InputError(f"resource {call.resource!r} is held by {holder.agent} "
                                 f"(call {holder.calls[0]}); {call.agent} cannot take it "
                                 f"for call {call.id}")
            calls = (*holder.calls, call.id) if holder is not None else (call.id,)
            self.active[call.resource] = Holder(call.agent, calls)
        self.running.setdefault(call.tool, []).append(call.id)

    def release(self, call: PlannedCall) -> None:
        """``call`` has finished: give back what :meth:`acquire` took (no-op if nothing)."""
        resource = call.resource
        holder = self.active.get(resource) if resource is not None else None
        if resource is not None and holder is not None and call.id in holder.calls:
            rest = tuple(c for c in holder.calls if c != call.id)
            if rest:
                self.active[resource] = Holder(holder.agent, rest)
            else:
                del self.active[resource]
        running = self.running.get(call.tool)
        if running and call.id in running:
            running.remove(call.id)

    # -- the history --------------------------------------------------------------
    def record(self, run: ExecutedCall) -> None:
        """Add one run to the history (and, when it succeeded, to its indexes)."""
        if self.keep_history:
            self.history.append(run)
        if not run.ok:
            return
        if run.args_digest is not None and run.mode in self.duplicate_modes:
            self.done_actions.setdefault((run.tool, run.args_digest), run.id)
        if run.plan_id is not None:
            self.done_steps.add((run.plan_id, run.tool))

    def load_history(self, source: AuditLog | Iterable[Mapping[str, Any]] | str
                     | os.PathLike[str]) -> int:
        """Read the ``execution`` events of an audit trail into the history.

        ``source``: an :class:`~buddy.engine.AuditLog`, its records, or the path
        of a log file. Returns the number of executions read. A run counts for
        DUPLICATE_ACTION when it succeeded (``ok``) in one of ``duplicate_modes``;
        for ORDERING when it succeeded and its event names a ``plan_id``.

        Raises :class:`~buddy.rules.base.errors.AuditFormatError` for an execution
        event without a tool.
        """
        if isinstance(source, AuditLog):
            records: Iterable[Mapping[str, Any]] = source.records()
        elif isinstance(source, str | os.PathLike):
            records = AuditLog.read_records(source)
        else:
            records = source
        count = 0
        for record in records:
            if record.get("kind") != "execution":
                continue
            data = record.get("data") or {}
            tool = data.get("tool")
            if not isinstance(tool, str):
                raise AuditFormatError(f"seq {record.get('seq')}", "execution event without a "
                                       "tool")
            mode = data.get("mode")
            self.record(ExecutedCall(
                str(data.get("call_id") or record.get("subject")), tool, str(data.get("agent")),
                data.get("args_digest"), data.get("ok") is True,
                _MODES.get(mode) if isinstance(mode, str) else None,
                data.get("plan_id")))
            count += 1
        return count
