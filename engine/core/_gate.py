"""The gate: everything that says whether a call may run now, behind one lock.

:class:`Gate` holds the compiled :class:`~buddy.engine.core._decision.Policy`,
the system lock, scoped grants, each tool's rate limit and the approver, and
records every decision it makes in the audit trail. The engine decides through
it, and the controller that runs calls is given the gate, never the engine:
whatever decides a mode is here or in the machine, in one place.

Rate limits: a tool's ``rate_limit_per_minute`` is a token bucket on the gate's
clock (capacity the limit, refilled at limit/60 per second). A call decided
DRY_RUN or LIVE takes a token; MOCK touches no tool and takes none. With no
token left the call is refused (``rate.limit``), which only ever tightens.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from time import sleep as _yield
from typing import Any

import orjson

from buddy.engine.core._approvals import (
    Approval,
    ApprovalCallback,
    ApprovalRequest,
    Grant,
    GrantBook,
    as_approval,
    grant_bounds,
)
from buddy.engine.core._audit import AuditLog
from buddy.engine.core._decision import (
    RULE_BAD_AGENT,
    RULE_BAD_CONFIDENCE,
    RULE_PERMISSION,
    RULE_RATE_LIMIT,
    RULE_UNKNOWN_AGENT,
    Decision,
    Outcome,
    Policy,
    _refusal,
    agent_problem,
)
from buddy.machines.escalation import ExecutionState
from buddy.rules.base._masking import described, mask_text, shown
from buddy.rules.base._values import ExecutionMode, plain_confidence
from buddy.rules.base.errors import InputError
from buddy.rules.tables._catalogue import ToolContract

__all__ = ["Gate", "TokenBucket"]

S = ExecutionState
#: A decision event's fields up to its subject (the agent's JSON follows).
_DECISION = b'"kind":"decision","machine":"escalation","subject":'
#: Times a decision yields the GIL for the engine's lock before it waits in C (see
#: Gate._wait): about a millisecond.
_YIELDS = 200
#: Agents' JSON the gate remembers before it starts over (bounded memory).
NAMES_MEMO_SIZE = 4_096
_USES_THE_TOOL = (ExecutionMode.DRY_RUN, ExecutionMode.LIVE)
_DUMPS = orjson.dumps
#: ``provider(agent, tool, args) -> confidence`` (None: no opinion, the defaults decide);
#: ``args`` is None for a call decided without arguments (:meth:`Gate.decide`).
ConfidenceProvider = Callable[[str, str, "Mapping[str, Any] | None"], Any]


def _subject(agent: object, outcome: Outcome) -> str:
    """The subject of an agent's decision event: the agent, or, when it is no name (its
    decision is a refusal for it), the agent shown (quoted: it never passes for a context)."""
    if outcome[0].rule == RULE_BAD_AGENT or type(agent) is not str:
        return shown(agent)
    return agent


class TokenBucket:
    """``capacity`` tokens, refilled continuously at ``capacity / 60`` per second.

    >>> bucket = TokenBucket(2)
    >>> bucket.take(0.0), bucket.take(0.0), bucket.take(0.0), bucket.take(30.0)
    (True, True, False, True)
    """

    __slots__ = ("capacity", "rate", "tokens", "at")

    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.tokens = self.capacity
        self.at: float | None = None

    def take(self, now: float) -> bool:
        """Use one token at ``now`` if there is one. A clock that went back refills nothing."""
        if self.at is not None and now > self.at:
            self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        if self.at is None or now > self.at:
            self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class Gate:
    """The decision authority of one engine (see the module docstring).

    Thread-safe: one lock (the audit log's) orders decisions, the system lock,
    grants and their events. The approver is called outside it.
    """

    def __init__(self, policy: Policy, audit: AuditLog, clock: Callable[[], float], *,
                 approver: ApprovalCallback | None = None,
                 agents: Mapping[str, Iterable[str]] | None = None) -> None:
        self.policy = policy
        self.audit = audit
        self.clock = clock
        self.approver = approver
        #: exception types an approver raises that are no answer (a framework's pause
        #: signal): they pass through untouched, and the call is not recorded
        self.pass_through: tuple[type[BaseException], ...] = ()
        #: where a call that gives no confidence gets one (see :meth:`resolve`)
        self.confidence_provider: ConfidenceProvider | None = None
        self.default_confidence: float | None = None
        self.tool_confidence: dict[str, float] = {}
        self.agents = None if agents is None else {a: frozenset(p) for a, p in agents.items()}
        self.lock = audit.lock
        self.grants = GrantBook()
        self._names: dict[str, bytes] = {}  # agent -> its JSON, for encoded decisions
        self.buckets = {c.name: TokenBucket(c.rate_limit_per_minute) for c in policy.registry
                        if c.rate_limit_per_minute is not None}
        policy.registry.subscribe(self.add_tool)  # a tool registered later is decided too

    def add_tool(self, contract: ToolContract) -> None:
        """Decide a contract registered after this gate was built: its rate limit first,
        then its compiled policy (so no call is decided without its limit)."""
        if contract.rate_limit_per_minute is not None:
            self.buckets[contract.name] = TokenBucket(contract.rate_limit_per_minute)
        self.policy.add_tool(contract)

    @property
    def locked(self) -> bool:
        """The system lock: the log's, which every engine writing to it honours."""
        return self.audit.locked

    # -- deciding ------------------------------------------------------------
    def decide(self, agent: str, tool: str, confidence: float | None = None, *,
               approval: bool | None = None) -> Decision:
        """Decide one call and record it (see :meth:`buddy.engine.Engine.decide`).

        With a file log, the decision is made holding the file, having read what
        other writers appended (a lock one of them took, say), and recorded
        before anyone appends after it.
        """
        policy, audit = self.policy, self.audit
        if type(confidence) is not float:
            if confidence is None:  # the engine's defaults or provider say
                confidence, source, refused = self.resolve(agent, tool, None)
                if refused is None and self.agents is not None:
                    refused = self.refusal(agent, tool, confidence, approval)
                opened = self.open_decision(agent, tool, confidence, approval, refused, source)
                if opened is not None:
                    return opened
                return self.close_decision(agent, tool, confidence, self.ask(
                    agent, policy.tools[tool].contract, confidence, None), source)
            confidence = plain_confidence(confidence)
        refused = self.refusal(agent, tool, confidence, approval) \
            if self.agents is not None else None
        if refused is None and not audit.shared and type(confidence) is float and \
                type(agent) is str and type(tool) is str and (
                    approval is None or approval is True or approval is False):
            # Decide outside the lock, against the system lock as it is now, and take the
            # lock only to append -- if the system lock is still the one decided against
            # and no rate limit refuses. The walk and its event come from the policy's
            # memory (only valid inputs are in it; their types are checked above), the
            # agent's JSON from the gate's (only names are in it). A call that waits for
            # approval (a grant may be used up), and anything else, is decided under the
            # lock below.
            locked = audit.locked
            walked = policy.walked.get((tool, confidence, approval, locked)) or \
                policy.remembered(tool, confidence, approval, locked, agent)
            name = self._names.get(agent) or self._name(agent)
            outcome, encoded = walked if walked is not None else (None, None)
            if encoded is not None and outcome is not None and name and \
                    outcome[2] != "AWAITING_APPROVAL":
                head, tail = encoded
                rest = b"".join((_DECISION, name, head, name, tail))
                lock = self.lock
                if not lock.acquire(False):
                    self._wait()
                try:
                    if audit.locked is locked and (
                            not self.buckets or self.throttle(tool, outcome) is outcome):
                        audit.append_encoded_locked(rest)
                        return outcome[0]
                finally:
                    lock.release()
        opened = self.open_decision(agent, tool, confidence, approval, refused)
        if opened is not None:
            return opened
        return self.close_decision(agent, tool, confidence, self.ask(
            agent, policy.tools[tool].contract, confidence, None))

    async def adecide(self, agent: str, tool: str, confidence: float | None = None, *,
                      approval: bool | None = None) -> Decision:
        """:meth:`decide`, awaiting an async approver (a sync one is called)."""
        source = refused = None
        if confidence is None:
            confidence, source, refused = self.resolve(agent, tool, None)
        else:
            confidence = plain_confidence(confidence)
        if refused is None and self.agents is not None:
            refused = self.refusal(agent, tool, confidence, approval)
        opened = self.open_decision(agent, tool, confidence, approval, refused, source)
        if opened is not None:
            return opened
        answer = await self.aask(agent, self.policy.tools[tool].contract, confidence, None)
        return self.close_decision(agent, tool, confidence, answer, source)

    def open_decision(self, agent: Any, tool: Any, confidence: Any, approval: Any,
                      refused: Outcome | None, source: str | None = None) -> Decision | None:
        """Decide a call under the lock: its recorded decision, or None when it waits for
        the approver (then :meth:`close_decision` with the answer)."""
        policy, audit = self.policy, self.audit
        with self._turn():
            locked = audit.locked
            if refused is not None:
                self.record(_subject(agent, refused), agent, tool, confidence, approval,
                            None, locked, refused, source=source)
                return refused[0]
            outcome, approved, via, at, _ = policy.evaluate(
                tool, confidence, approval, locked, agent, self._grant)
            if approved is not None or self.approver is None or \
                    outcome[0].state is not S.AWAITING_APPROVAL:
                if self.buckets:
                    outcome = self.throttle(tool, outcome)
                self.record(_subject(agent, outcome), agent, tool, confidence, approved,
                            via, locked, outcome, at, source=source)
                return outcome[0]
        return None

    def close_decision(self, agent: str, tool: str, confidence: float,
                       answer: Approval | None, source: str | None = None) -> Decision:
        """Decide and record a call the approver answered (:meth:`open_decision`)."""
        with self._turn():
            locked = self.audit.locked
            outcome, approved, _, _, _ = self.policy.evaluate(
                tool, confidence, None if answer is None else answer.approved, locked, agent)
            outcome = self.throttle(tool, outcome)
            self.record(_subject(agent, outcome), agent, tool, confidence, approved,
                        None if answer is None else "callback", locked, outcome, source=source)
            return outcome[0]

    def resolve(self, agent: object, tool: object, args: Mapping[str, Any] | None,
                ) -> tuple[Any, str | None, Outcome | None]:
        """The confidence of a call that gives none: ``(confidence, source, refusal)``.

        Asked in turn: the provider (``provider``; it may answer None), the tool's
        default (``tool_default``), the engine's (``default``). A provider that
        raises, or none of them answering, refuses the call (``input.confidence``);
        an unknown tool is left to be refused as such.
        """
        if type(tool) is not str or tool not in self.policy.tools:
            return None, None, None  # refused as an unknown tool, naming it
        provider = self.confidence_provider
        if provider is not None:
            try:
                got = provider(agent, tool, None if args is None else dict(args))  # type: ignore[arg-type]
                if inspect.isawaitable(got):
                    close = getattr(got, "close", None)
                    if close is not None:
                        close()
                    raise InputError("it is async: a confidence provider must return "
                                     "a number")
            except Exception as exc:
                return None, "provider", _refusal(
                    RULE_BAD_CONFIDENCE, f"the confidence provider failed: "
                    f"{described(exc)}: fail closed")
            if got is not None:
                return plain_confidence(got), "provider", None
        default = self.tool_confidence.get(tool)
        if default is not None:
            return default, "tool_default", None
        if self.default_confidence is not None:
            return self.default_confidence, "default", None
        return None, None, _refusal(RULE_BAD_CONFIDENCE, "no confidence given, and the "
                                    "engine has no default confidence or provider: fail closed")

    @contextlib.contextmanager
    def _turn(self) -> Iterator[None]:
        """Hold the engine's lock (taken as :meth:`_wait` takes it) and, with a file log
        other processes write too, the file, having read what they appended."""
        self._wait()
        try:
            shared = self.audit.shared
            if shared:
                self.audit.hold()
            try:
                yield
            finally:
                if shared:
                    self.audit.release()
        finally:
            self.lock.release()

    def _wait(self) -> None:
        """Take :attr:`lock`, yielding the GIL while another thread holds it.

        A thread that blocks on the lock in C is handed it on release while the
        releasing thread still holds the GIL; that thread's next decision then
        blocks in turn, and the threads take turns per decision, a context switch
        each (a lock convoy). Taken only by a thread that holds the GIL, the lock
        passes on no such hand-over, and 8 threads decide about as fast as one.
        A holder that keeps it long (waiting for another process's ``flock``) is
        then waited for in C: yielding would only burn the core.
        """
        take = self.lock.acquire
        for _ in range(_YIELDS):
            if take(False):
                return
            _yield(0)  # sleep(0) releases the GIL: the holder can finish
        take()

    def _name(self, agent: str) -> bytes:
        """``agent``'s JSON when it is a name, remembered (agents are few; the memory is
        bounded); else empty."""
        if agent_problem(agent) is not None:
            return b""
        if len(self._names) >= NAMES_MEMO_SIZE:
            self._names.clear()
        name = self._names[agent] = orjson.dumps(agent)
        return name

    def locked_now(self) -> bool:
        """The system lock as the log holds it now, other writers' locks included."""
        audit = self.audit
        if not audit.shared:  # a memory log has no other writer to catch up with
            return audit.locked
        with self.lock:
            audit.hold()
            audit.release()
            return audit.locked

    def now(self) -> float:
        """The clock's reading, refused when it is not a finite number of seconds."""
        now = self.clock()
        if type(now) is not float:
            if isinstance(now, bool) or not isinstance(now, int | float):
                raise InputError(f"the engine's clock must return seconds as a number "
                                 f"(got {shown(now)})")
            now = float(now)
        if now - now != 0.0:
            raise InputError(f"the engine's clock must return a finite number (got {now!r})")
        return now

    def refusal(self, agent: object, tool: object, confidence: object,
                approval: object) -> Outcome | None:
        """Refusals made before the machine runs: bad inputs, and, when agents are
        declared, unknown agents and missing permissions. They only tighten."""
        refused = self.policy.refusal(agent, tool, confidence, approval)
        if refused is not None or self.agents is None:
            return refused
        name, tool = str(agent), str(tool)  # both checked to be names above
        held = self.agents.get(name)
        if held is None:
            return _refusal(RULE_UNKNOWN_AGENT, f"unknown agent {name!r}: fail closed")
        missing = self.policy.tools[tool].contract.permissions - held
        if missing:
            return _refusal(RULE_PERMISSION, f"agent {name!r} lacks permission(s) "
                            f"{', '.join(sorted(missing))} for {tool}")
        return None

    def throttle(self, tool: str, outcome: Outcome) -> Outcome:
        """``outcome``, or a refusal when it would use the tool and its rate limit is spent.

        The caller holds :attr:`lock`.
        """
        decision = outcome[0]
        if not decision.allowed or decision.mode not in _USES_THE_TOOL:
            return outcome  # a refusal's tool may be anything; an allowed one is known
        bucket = self.buckets.get(tool)
        if bucket is None or bucket.take(self.now()):
            return outcome
        return _refusal(RULE_RATE_LIMIT, f"{tool} allows {bucket.capacity:g} calls per minute "
                        "and none is left: fail closed")

    def record(self, subject: str | Callable[[int], str], agent: object, tool: object,
               confidence: object, approval: object, via: str | None, locked: bool,
               outcome: Outcome, approved_at: float | None = None, *,
               source: str | None = None) -> int:
        """Append one decision event; the caller holds :attr:`lock`.

        ``source``: where a confidence the call did not give came from (recorded as
        ``confidence_from``; see :meth:`resolve`).

        When the policy remembers this very outcome for these inputs (the walk's,
        approved by no one or by the caller, see :attr:`Policy.walked`), the event is
        its encoded one, with ``subject`` and the agent's JSON put in: the bytes of
        the dict below.
        """
        if approved_at is None and source is None and type(subject) is str and \
                type(tool) is str and \
                type(agent) is str and type(confidence) is float and \
                (locked is True or locked is False) and (
                    approval is None and via is None or
                    (approval is True or approval is False) and via == "caller"):
            walked = self.policy.remembered(tool, confidence, approval, locked, agent)
            if walked is not None and walked[0] is outcome and walked[1] is not None:
                name = self._names.get(agent) or self._name(agent)
                try:
                    named = _DUMPS(subject)
                except orjson.JSONEncodeError:  # no text: the dict records it as such
                    name = b""
                if name:
                    head, tail = walked[1]
                    return self.audit.append_encoded_locked(b"".join((
                        _DECISION, named, head, name, tail)))
        data = self.policy.record(agent, tool, confidence, approval, via, locked, outcome,
                                  approved_at)
        if source is not None:
            data["confidence_from"] = source
        return self.audit.append_locked("decision", "escalation", subject, "decide", "MOCK",
                                        outcome[2], data)

    # -- approvals -----------------------------------------------------------
    def _grant(self, agent: str, contract: ToolContract,
               confidence: float) -> tuple[bool | None, str | None, float | None]:
        """A live grant for the call, used up by one; the caller holds :attr:`lock`."""
        now = self.now()
        grant = self.grants.consume(agent, contract.name, now)
        if grant is None:
            return None, None, None
        return True, f"grant:{grant.id}", now

    def _request(self, agent: str, contract: ToolContract, confidence: float,
                 args: Mapping[str, Any] | None) -> ApprovalRequest:
        """What the approver is asked; its arguments a copy (an approver that changes
        them in place changes nothing: an edit is ``Approval.edit``, and recorded)."""
        if args is not None:
            try:
                args = copy.deepcopy(dict(args))
            except Exception:  # arguments that cannot be copied whole: read-only at the top
                args = types.MappingProxyType(dict(args))
        return ApprovalRequest(agent, contract.name, contract.risk, confidence, args,
                               f"{contract.risk.value} risk tool {contract.name} waits for "
                               "approval to run LIVE")

    def ask(self, agent: str, contract: ToolContract, confidence: float,
            args: Mapping[str, Any] | None) -> Approval | None:
        """The approver's answer (outside the lock); a failing approver has not approved.
        An async approver cannot answer a synchronous call: it denies (its coroutine
        closed, never run)."""
        if self.approver is None:
            return None
        try:
            answer = self.approver(self._request(agent, contract, confidence, args))
            if type(answer) is not bool and inspect.isawaitable(answer):
                close = getattr(answer, "close", None)
                if close is not None:
                    close()
                return Approval.deny("the approver is async: a synchronous decide/execute "
                                     "cannot await it (use adecide/aexecute)")
            return as_approval(answer)
        except self.pass_through:  # not an answer: the caller's framework pauses the call
            raise
        except Exception as exc:  # an approver that fails, or answers nonsense, denies
            return Approval.deny(f"approver failed: {described(exc)}")

    async def aask(self, agent: str, contract: ToolContract, confidence: float,
                   args: Mapping[str, Any] | None) -> Approval | None:
        """:meth:`ask`, awaiting an async approver."""
        if self.approver is None:
            return None
        try:
            answer = self.approver(self._request(agent, contract, confidence, args))
            if type(answer) is not bool and inspect.isawaitable(answer):
                answer = await answer
            return as_approval(answer)
        except self.pass_through:
            raise
        except Exception as exc:
            return Approval.deny(f"approver failed: {described(exc)}")

    def granted(self, agent: str, contract: ToolContract,
                confidence: float) -> tuple[Approval | None, str | None, float | None]:
        """A live grant's approval of a call waiting for one (using a call of it), or
        ``(None, None, None)``."""
        with self.lock:
            approved, via, at = self._grant(agent, contract, confidence)
        if via is not None:
            return Approval.approve(via), via, at
        return None, None, None

    def approve(self, agent: str, contract: ToolContract, confidence: float,
                args: Mapping[str, Any]) -> tuple[Approval | None, str | None, float | None]:
        """For a call waiting for approval: a live grant, else the approver.

        Returns ``(answer, approved_by, approved_at)``; ``approved_at`` is the
        clock reading at which a grant was checked.
        """
        granted = self.granted(agent, contract, confidence)
        if granted[1] is not None:
            return granted
        answer = self.ask(agent, contract, confidence, args)
        return answer, None if answer is None else "callback", None

    async def aapprove(self, agent: str, contract: ToolContract, confidence: float,
                       args: Mapping[str, Any],
                       ) -> tuple[Approval | None, str | None, float | None]:
        """:meth:`approve`, awaiting an async approver."""
        granted = self.granted(agent, contract, confidence)
        if granted[1] is not None:
            return granted
        answer = await self.aask(agent, contract, confidence, args)
        return answer, None if answer is None else "callback", None

    # -- the system lock and grants -----------------------------------------
    def set_lock(self, locked: bool, reason: str) -> None:
        """Lock or unlock the log's system (a no-op when it already is so)."""
        if not isinstance(reason, str):
            raise InputError(f"a lock's reason must be a string (got {shown(reason)})")
        with self.lock:
            self.audit.set_locked(locked, mask_text(reason))

    def grant_withdrawn(self, grant_id: str) -> str | None:
        """Why a grant that approved a call no longer does (revoked, expired), or None."""
        with self.lock:
            return self.grants.withdrawn(grant_id, self.now())

    def grant(self, agent: str, tool: str, seconds: Any, calls: Any, reason: str) -> Grant:
        problem = agent_problem(agent)
        if problem is not None:
            raise InputError(f"grant: agent {problem} (got {shown(agent)})")
        if type(tool) is not str or tool not in self.policy.tools:
            self.policy.registry.get(tool)  # UnknownToolError, naming the tool
        if not isinstance(reason, str):
            raise InputError(f"grant: reason must be a string (got {type(reason).__name__})")
        with self.lock:
            now = self.now()
            expires_at, calls = grant_bounds(now, seconds, calls)
            reason = mask_text(reason)
            seq = self.audit.append("grant", "approval", lambda seq: f"grant-{seq}", "grant",
                                    None, "ACTIVE", {
                                        "agent": agent, "tool": tool, "granted_at": now,
                                        "expires_at": expires_at, "calls": calls,
                                        "reason": reason}, ts=now)
            grant = Grant(f"grant-{seq}", agent, tool, now, expires_at, calls, reason)
            self.grants.add(grant)
            return grant

    def revoke(self, grant: str | Grant, reason: str) -> None:
        grant_id = grant.id if isinstance(grant, Grant) else grant
        if type(grant_id) is not str:
            raise InputError(f"no active grant {shown(grant_id)}")
        if not isinstance(reason, str):
            raise InputError(f"a revocation's reason must be a string (got {shown(reason)})")
        with self.lock:
            self.grants.revoke(grant_id)
            self.audit.append("revoke", "approval", grant_id, "revoke", "ACTIVE", "REVOKED",
                              {"reason": mask_text(reason)})
