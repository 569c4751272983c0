"""The declared shape of audit events, and the one check that holds a line to it.

The envelope of every line is :class:`AuditEvent`; its ``kind`` is one of
:data:`KINDS`, a closed set (the kinds buddy's writers append); the ``data``
of each kind replay reads is a record too (:data:`DATA_RECORDS`; a
transition's, by machine, :data:`STEP_RECORDS`; a schedule's, by event,
:data:`SCHEDULE_RECORDS`). :func:`decode_event` reads a line and holds it
to them in one pass, with msgspec decoders compiled from these same attrs
records (C speed: replay reads every event once; :func:`decode_verified` a
batch of lines in one call); when a line does not fit,
the base converter (:func:`~buddy.rules.base._convert.structure_checked`)
names the field in its words (:func:`event_problem`). The writer
(:mod:`._audit`) and replay (:mod:`._replay`) share this declaration.
"""

from __future__ import annotations

import enum
import math
import types
import typing
from collections.abc import Iterator, Sequence
from typing import Any, Literal, Union

import attrs
import msgspec
import orjson

from buddy.machines.escalation import ExecutionState
from buddy.rules.base._convert import Problem, structure_checked
from buddy.rules.base._masking import shown
from buddy.rules.base._values import ExecutionMode, RiskLevel
from buddy.rules.base.errors import AuditFormatError

__all__ = [
    "DATA_RECORDS",
    "SCHEDULE_RECORDS",
    "TICKET_RECORDS",
    "KEY_RECORDS",
    "STEP_RECORDS",
    "AuditEvent",
    "KINDS",
    "MAX_CAPACITY",
    "MAX_TEXT_CHARS",
    "text_problem",
    "PLAN_OBJECTIVES",
    "REASSIGN_REASONS",
    "DecisionData",
    "EscalationStep",
    "ExecutionData",
    "GrantData",
    "OpenData",
    "PlanData",
    "ReassignData",
    "TaskStep",
    "check_event",
    "decode_event",
    "decode_batch",
    "decode_verified",
    "event_data",
    "event_problem",
]

#: Any JSON value: a field recorded as the caller gave it (a refused call may carry anything).
Json = Any


# -- the declared shape of events ---------------------------------------------------

class _FieldError(ValueError):
    """A validator's failure; ``field`` puts it on the problem's path."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@attrs.frozen
class AuditEvent:
    """One line of the audit log, as read back."""

    seq: int
    ts: float
    kind: str
    machine: str
    subject: str
    event: str
    src: str | None
    dst: str | None
    data: dict[str, Any]
    prev: str
    hash: str


@attrs.frozen
class OpenData:
    """The header's data: the log's format and chain."""

    format: str
    chain: str


class ConfidenceSource(enum.Enum):
    """Where the confidence of a call that gave none came from."""

    PROVIDER = "provider"          # the engine's confidence provider
    TOOL_DEFAULT = "tool_default"  # the tool's default confidence
    DEFAULT = "default"            # the engine's default confidence


@attrs.frozen
class DecisionData:
    """A decision's data: every input it used, and its verdict."""

    agent: Json
    tool: Json
    risk: RiskLevel | None            # None: the tool is unknown
    requires_approval: bool | None    # None: the tool is unknown
    confidence: Json                  # a refused confidence is recorded as given
    approval: bool | None
    approved_by: str | None
    locked: bool
    mode: ExecutionMode
    allowed: bool
    state: ExecutionState
    rule: str
    rules: str                        # the digest of the escalation table that decided
    approved_at: float | None = None  # the clock reading at which a grant was checked
    reason: str | None = None         # a refusal's reason (it names what was given)
    #: where a confidence the call did not give came from (None: the caller gave it)
    confidence_from: ConfidenceSource | None = None


@attrs.frozen
class EscalationStep:
    """The data of a move of the escalation machine: the inputs of its guards."""

    agent: Json
    tool: Json
    risk: RiskLevel
    requires_approval: bool
    confidence: float
    approval: bool | None
    locked: bool
    rules: str                        # the digest of the escalation table
    args_digest: str | None = None
    why: str | None = None


@attrs.frozen
class TaskStep:
    """The data of a move of the task machine: the inputs of its guards (``attempts``:
    the retries already made; ``max_retries``: the retries allowed), and what the move
    is about: the task, its agent, the safety gate that refused it (None: none did),
    the engine context of the attempt it ends, and the digest of the gate table."""

    attempts: int = 0
    max_retries: int = 0
    gate_allows: bool = True
    rules: str | None = None
    task: str | None = None
    agent: str | None = None
    gate: str | None = None
    context: str | None = None
    tool: str | None = None           # an irreversible action an attempt starts: its
    args_digest: str | None = None    # tool and arguments (a run cut short counts as done)


@attrs.frozen
class ExecutionData:
    """A run's data: the call's inputs (as its transitions record them), the mode its
    handler ran in, and what came of it. Replay holds ``mode`` to the state of the
    call's context."""

    agent: Json
    tool: Json
    risk: RiskLevel
    requires_approval: bool
    confidence: float
    rules: str                        # the digest of the escalation table
    args_digest: str
    mode: ExecutionMode               # the mode of the context's state when it ran
    ok: bool
    args: Json                        # as given, secrets masked
    result: Json = None               # a run that succeeded
    error: str | None = None          # a run that failed: its error in one line


#: The metadata of a field whose key in the log is not its name (a Python keyword).
_KEY = "audit_key"


def _key(attribute: Any) -> str:
    """A field's key in the log (its name, but for a Python keyword: see :data:`_KEY`)."""
    key: str = attribute.metadata.get(_KEY, attribute.name)
    return key


def _wave(instance: Any, attribute: Any, value: int) -> None:
    if value < 1:
        raise _FieldError("wave", f"must be a whole number >= 1 (got {shown(value)})")


def _finite(instance: Any, attribute: Any, value: float | None) -> None:
    if value is not None and not math.isfinite(value):
        raise _FieldError(_key(attribute), f"must be a finite number (got {shown(value)})")


def _probability(instance: Any, attribute: Any, value: float) -> None:
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise _FieldError(_key(attribute), f"must be a number in [0, 1] (got {shown(value)})")


#: The objectives a plan may name (its ``objective``, or null): those of the optimizer,
#: ``buddy.engine.waves.OBJECTIVES``. It is a layer above core, so the tuple is declared
#: here again; a test holds the two equal, so they cannot drift.
PLAN_OBJECTIVES = ("maximize_success", "maximize_throughput", "maximize_confidence",
                   "balanced")
#: Why the scheduler moves a task (a reassign's ``reason``): its agent was over its load
#: threshold (``load``, the wave loop) or went OFFLINE (``offline``, the executor).
REASSIGN_REASONS = ("load", "offline")
#: The most characters a task id, an agent id or a strategy in a schedule event may hold
#: (the wave inputs' ``MAX_AGENT_ID_CHARS``).
MAX_TEXT_CHARS = 256
#: The largest ``capacity`` a plan may record (a count of tasks, far below it).
MAX_CAPACITY = 2**31
#: The characters printable text may not hold besides the control characters (C0, DEL,
#: C1): the Unicode line and paragraph separators, which some readers break lines on.
_SEPARATORS = frozenset("\u2028\u2029")


def text_problem(value: str) -> str | None:
    """What keeps ``value`` from being an id a schedule event may record (None: nothing):
    1 to :data:`MAX_TEXT_CHARS` characters, none a control character or a line or
    paragraph separator (U+2028, U+2029); it shows on one line, as written.

    >>> text_problem("agent_1") is None, text_problem("東京 é") is None
    (True, True)
    >>> text_problem("t\u2028x")
    'must be printable text: it holds U+2028 at character 2'
    """
    if not value:
        return "must be a non-empty string (got '')"
    if len(value) > MAX_TEXT_CHARS:
        return f"must be at most {MAX_TEXT_CHARS} characters (got {len(value)})"
    if not value.isprintable():  # only then may it hold one (isprintable refuses more)
        for i, ch in enumerate(value, 1):
            if ch < " " or "\x7f" <= ch <= "\x9f" or ch in _SEPARATORS:
                return f"must be printable text: it holds U+{ord(ch):04X} at character {i}"
    return None


def _named(instance: Any, attribute: Any, value: str) -> None:
    problem = text_problem(value)
    if problem is not None:
        raise _FieldError(_key(attribute), problem)


def _task_ids(instance: Any, attribute: Any, value: tuple[str, ...]) -> None:
    seen: set[str] = set()
    for i, task in enumerate(value):
        problem = text_problem(task)
        if problem is not None:
            raise _FieldError(f"tasks.{i}", problem)
        if task in seen:
            raise _FieldError(f"tasks.{i}", f"task {shown(task)} is listed twice: a plan "
                              "runs each task once")
        seen.add(task)


def _objective(instance: Any, attribute: Any, value: str | None) -> None:
    if value is not None and value not in PLAN_OBJECTIVES:
        raise _FieldError("objective", f"must be one of {', '.join(PLAN_OBJECTIVES)} or "
                          f"null (got {shown(value)})")


def _reason(instance: Any, attribute: Any, value: str) -> None:
    if value not in REASSIGN_REASONS:
        raise _FieldError("reason", f"must be one of {', '.join(REASSIGN_REASONS)} "
                          f"(got {shown(value)})")


def _capacity(instance: Any, attribute: Any, value: int | None) -> None:
    if value is not None and not 0 <= value <= MAX_CAPACITY:
        raise _FieldError("capacity", f"must be a whole number in [0, 2**31] or null "
                          f"(got {shown(value)})")


def _digest(instance: Any, attribute: Any, value: str | None) -> None:
    if value is not None and (not value or value.strip("0123456789abcdef")):
        raise _FieldError("inputs", f"must be a hex digest (lowercase) or null "
                          f"(got {shown(value)})")


@attrs.frozen
class PlanData:
    """A ``schedule`` ``plan``'s data: one agent's tasks in a wave, as the scheduler put
    them there before the wave ran (one plan per agent with tasks).

    ``strategy``, ``agent`` and each task id: printable text (:func:`_text_problem`);
    ``tasks``: their ids, in the order the agent runs them, each once;
    ``expected_success``: the mean predicted success of those tasks;
    ``objective``/``objective_value``: what the optimizer maximised (one of
    :data:`PLAN_OBJECTIVES`) and the value its assignment reached (None: a strategy
    without one); ``capacity``: the most tasks the agent could take, in [0,
    :data:`MAX_CAPACITY`] (None: unbounded); ``inputs``: a hex digest of the
    optimizer's inputs (None: none recorded). Replay holds the wave's task moves to
    the agent each task is planned on, and to the tasks its plans list.
    """

    wave: int = attrs.field(validator=_wave)
    strategy: str = attrs.field(validator=_named)
    agent: str = attrs.field(validator=_named)
    tasks: tuple[str, ...] = attrs.field(validator=_task_ids)
    expected_success: float = attrs.field(validator=_probability)
    objective: str | None = attrs.field(default=None, validator=_objective)
    objective_value: float | None = attrs.field(default=None, validator=_finite)
    capacity: int | None = attrs.field(default=None, validator=_capacity)
    inputs: str | None = attrs.field(default=None, validator=_digest)


def _other_agent(instance: ReassignData, attribute: Any, value: str) -> None:
    _named(instance, attribute, value)
    if value == instance.from_:
        raise _FieldError("to", f"must be another agent than from (got {shown(value)})")


@attrs.frozen
class ReassignData:
    """A ``schedule`` ``reassign``'s data: the scheduler moved ``task`` from agent
    ``from`` (its agent until then) to ``to`` during ``wave``, for ``reason``, one of
    :data:`REASSIGN_REASONS` (its agent went OFFLINE, or was over its load
    threshold); ids are printable text. ``from`` is a keyword in Python: the record's
    field is ``from_``, its key in the log ``from``."""

    wave: int = attrs.field(validator=_wave)
    task: str = attrs.field(validator=_named)
    from_: str = attrs.field(validator=_named, metadata={_KEY: "from"})
    to: str = attrs.field(validator=_other_agent)
    reason: str = attrs.field(validator=_reason)


@attrs.frozen
class TicketOpenData:
    """A ``ticket`` ``open``'s data: a call waits for a person (its id is the event's
    subject, ``ticket-<seq>``). The call's inputs as its context recorded them, the
    digest of its arguments (and the arguments, secrets masked), the decision it waits
    in, when the ticket expires (None: never) and its idempotency key (None: none)."""

    context: str
    agent: str
    tool: str
    risk: RiskLevel = attrs.field(converter=RiskLevel)
    requires_approval: bool
    confidence: float
    rules: str
    args_digest: str
    mode: ExecutionMode = attrs.field(converter=ExecutionMode)
    rule: str
    args: Json = None
    expires_at: float | None = None
    key: str | None = None
    confidence_from: ConfidenceSource | None = attrs.field(
        default=None, converter=attrs.converters.optional(ConfidenceSource))


@attrs.frozen
class TicketAnswerData:
    """A ``ticket`` ``approve``'s or ``deny``'s data: who answered and why; an approval's
    ``args_digest`` is the digest of the arguments that will run (``edited``: not the
    ones asked for; ``args`` the edited ones, secrets masked)."""

    by: str
    reason: str = ""
    args_digest: str | None = None
    edited: bool = False
    args: Json = None


@attrs.frozen
class TicketResumeData:
    """A ``ticket`` ``resume``'s data: the ticket's call is taken to be run (or closed)
    once, by the writer of this event; ``expire``'s: its reason."""

    context: str
    reason: str = ""


@attrs.frozen
class CallDoneData:
    """The outcome of a ticket's call (``ticket`` ``done``) or of a keyed call
    (``idempotency`` ``done``): enough to answer a repeat without running anything."""

    context: str
    allowed: bool                     # the decision: allowed, its mode, state, rule, reason
    decided: ExecutionMode = attrs.field(converter=ExecutionMode)
    decision_state: ExecutionState = attrs.field(converter=ExecutionState)
    rule: str
    reason: str
    state: ExecutionState = attrs.field(converter=ExecutionState)  # the context's, at the end
    ok: bool
    mode: ExecutionMode | None = attrs.field(
        default=None, converter=attrs.converters.optional(ExecutionMode))
    result: Json = None
    error: str | None = None
    args: Json = None
    ticket: str | None = None


@attrs.frozen
class KeyReleaseData:
    """An ``idempotency`` ``release``'s data: why the key's call stopped before anything
    ran (a framework paused it), so the key may be claimed again."""

    reason: str


@attrs.frozen
class KeyClaimData:
    """An ``idempotency`` ``claim``'s data (the key is the event's subject): the first
    call with that key, before it runs; ``duplicate``'s: a later call with the key,
    answered without running (``of``: the first call's context, None while it runs)."""

    agent: Json
    tool: Json
    args_digest: str
    of: str | None = None
    same_args: bool = True


def _grant_calls(instance: GrantData, attribute: Any, value: int | None) -> None:
    if value is not None and value < 1:
        raise _FieldError("calls", f"must be a whole number >= 1 or null (got {shown(value)})")
    if value is None and instance.expires_at is None:
        raise _FieldError("expires_at", "expires_at and calls cannot both be null")


def _grant_expiry(instance: GrantData, attribute: Any, value: float | None) -> None:
    if value is not None and not value > instance.granted_at:
        raise _FieldError("expires_at", f"must be later than granted_at "
                          f"{shown(instance.granted_at)} (got {shown(value)})")


@attrs.frozen
class GrantData:
    """A scoped grant's data (its id is the event's subject); the invariants of ``Grant``."""

    agent: str
    tool: str
    granted_at: float
    expires_at: float | None = attrs.field(validator=_grant_expiry)
    calls: int | None = attrs.field(validator=_grant_calls)
    reason: str = ""


#: Every kind of event buddy writes (``grep -rn 'append(' engine/``): the log's header, the
#: engine's (decisions, moves of a call's machine, approvals, runs, undos, grants, the system
#: lock), the writer's own (``recover``), ``buddy run``'s (conflicts) and ``buddy run waves``'
#: (``schedule``: the scheduler's plans and reassignments). The set is closed:
#: an event of another kind is refused, as it could hide a decision from replay.
KINDS = ("open", "decision", "transition", "approval", "execution", "rollback", "grant",
         "revoke", "lock", "unlock", "recover", "conflict", "resolution", "schedule",
         "ticket", "idempotency")
#: The record the ``data`` of each kind replay reads must structure into; the ``data`` of
#: the other kinds is any object.
DATA_RECORDS: dict[str, type] = {"open": OpenData, "decision": DecisionData,
                                 "execution": ExecutionData, "grant": GrantData}
#: The record of a transition's ``data``, by machine.
STEP_RECORDS: dict[str, type] = {"escalation": EscalationStep, "task": TaskStep}
#: The record of a ``schedule`` event's ``data``, by event (the closed set of its events).
SCHEDULE_RECORDS: dict[str, type] = {"plan": PlanData, "reassign": ReassignData}
#: The record of a ``ticket`` event's ``data``, by event: a call waiting for a person
#: (``open``), the answer (``approve``, ``deny``), the ticket taken to be run or closed
#: (``resume``), running out (``expire``), and its call's outcome (``done``).
TICKET_RECORDS: dict[str, type] = {"open": TicketOpenData, "approve": TicketAnswerData,
                                   "deny": TicketAnswerData, "resume": TicketResumeData,
                                   "expire": TicketResumeData, "done": CallDoneData}
#: The record of an ``idempotency`` event's ``data``, by event: a key's first call
#: (``claim``), a repeat answered without running (``duplicate``), the outcome (``done``),
#: or the claim given back when the call stopped before anything ran (``release``).
KEY_RECORDS: dict[str, type] = {"claim": KeyClaimData, "duplicate": KeyClaimData,
                                "done": CallDoneData, "release": KeyReleaseData}
#: Kinds whose data's record is chosen by the event (each set closed).
BY_EVENT: dict[str, dict[str, type]] = {"schedule": SCHEDULE_RECORDS,
                                        "ticket": TICKET_RECORDS, "idempotency": KEY_RECORDS}


def _wire(hint: Any, cls: type, name: str) -> Any:
    """The msgspec type of a field annotation: the same JSON values, strictly."""
    if hint is Any or hint in (str, bool, int, float, type(None)):
        # As the converter: a float field takes 1 (as 1.0), and true is no number. An
        # integer beyond 64 bits, which no buddy writer makes, is an int here where a
        # JSON parser gives the converter a float: too large either way to matter.
        return hint
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if len(args) != 2 or type(None) not in args:
            raise TypeError(f"{cls.__name__}.{name}: only X | None unions are compiled ({hint})")
        inner = _wire(next(a for a in args if a is not type(None)), cls, name)
        return inner | None
    if typing.get_origin(hint) is dict and args == (str, Any):
        return dict[str, Any]
    if typing.get_origin(hint) is tuple and len(args) == 2 and args[1] is Ellipsis:
        return tuple[_wire(args[0], cls, name), ...]  # type: ignore[misc]
    if isinstance(hint, type) and issubclass(hint, enum.Enum) and \
            all(type(m.value) is str for m in hint):
        return Literal[tuple(m.value for m in hint)]  # by value, kept as strings
    raise TypeError(f"{cls.__name__}.{name}: no wire type for {hint!r}")


def _struct(cls: type, name: str = "", tag: str | None = None, **override: Any) -> type:
    """A strict msgspec struct compiled from the attrs record ``cls``.

    Same fields, types and defaults, unknown keys refused: it accepts what
    :func:`structure_checked` accepts of the parsed JSON (a test holds them to
    it), at C speed. Validators are not compiled: see :func:`decode_event`.
    With ``tag``, the struct of the events of that kind: ``kind`` is its tag
    (it must say ``tag``; the struct keeps it as a class attribute).
    Instances are not tracked by the garbage collector: JSON makes no cycles.
    """
    hints = typing.get_type_hints(cls)
    fields: list[Any] = []
    keys: dict[str, str] = {}  # a field whose key in the log is not its name
    for f in attrs.fields(cls):
        if f.name == "kind" and tag is not None:
            continue
        wire = override.get(f.name) or _wire(hints[f.name], cls, f.name)
        fields.append((f.name, wire) if f.default is attrs.NOTHING else
                      (f.name, wire, f.default))
        if _KEY in f.metadata:
            keys[f.name] = f.metadata[_KEY]
    tagged: dict[str, Any] = {} if tag is None else \
        {"tag_field": "kind", "tag": tag, "namespace": {"kind": tag}}
    return msgspec.defstruct(name or f"{cls.__name__}Wire", fields, kw_only=True,
                             frozen=True, forbid_unknown_fields=True, gc=False,
                             rename=keys or None, **tagged)


def _compile(cls: type, **override: Any) -> msgspec.json.Decoder[Any]:
    """A strict JSON decoder into the struct :func:`_struct` compiles from ``cls``."""
    return msgspec.json.Decoder(_struct(cls, **override))


def _wired(cls: type) -> tuple[msgspec.json.Decoder[Any], type | None]:
    """The record's decoder, and the record itself when it has validators to run."""
    validated = any(f.validator is not None for f in attrs.fields(cls))
    return _compile(cls), cls if validated else None


_EVENT = _compile(AuditEvent, data=msgspec.Raw)   # data: decoded by kind, below
_DATA = {kind: _wired(cls) for kind, cls in DATA_RECORDS.items()}
_STEPS = {machine: _wired(cls) for machine, cls in STEP_RECORDS.items()}
_BY_EVENT = {kind: {event: _wired(cls) for event, cls in records.items()}
             for kind, records in BY_EVENT.items()}
_KINDS = frozenset(KINDS)
_WIRE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, RecursionError, _FieldError)
#: An event of each kind, its data decoded with it: its record's struct for the kinds of
#: DATA_RECORDS, raw for the others (a transition's, by machine, below).
#: In a batch the chain has verified (its bytes end each line: ``"prev"`` and ``"hash"``
#: are strings of 64 hex digits there, and replay reads neither), ``prev`` and ``hash``
#: are kept as raw JSON: no string is made of them.
_TAGGED = tuple(_struct(AuditEvent, f"{kind.title()}EventWire", kind,
                        data=_DATA[kind][0].type if kind in _DATA else msgspec.Raw,
                        prev=msgspec.Raw, hash=msgspec.Raw)
                for kind in KINDS)
_LINES = msgspec.json.Decoder(Union[_TAGGED])  # noqa: UP007
_RAW = frozenset(cls for cls in _TAGGED if cls.kind not in _DATA)  # type: ignore[attr-defined]
#: The struct of a kind -> the record whose validators its data must pass.
_VALIDATED: dict[type, type] = {
    cls: validated for cls in _TAGGED for kind in [cls.kind]  # type: ignore[attr-defined]
    if kind in _DATA and (validated := _DATA[kind][1]) is not None}
#: The struct :func:`decode_batch` decodes a decision event into (its data a
#: :class:`DecisionData` struct, which has no validators to run).
DECISION: Any = next(cls for cls in _TAGGED if cls.kind == "decision")  # type: ignore[attr-defined]
assert DECISION not in _VALIDATED and DECISION not in _RAW


def decode_event(line: bytes, source: str, seq: int) -> tuple[Any, Any]:
    """Parse the ``seq``-th line of a log and hold it to the declared records, in one pass.

    Returns ``(event, data)``: the envelope (``data`` left raw) and the data
    record of its kind (None for a kind replay does not read). Raises
    :class:`AuditFormatError` naming ``source:seq``, the seq and the field
    that does not fit, in the converter's words (see :func:`event_problem`);
    an event whose kind is not one of :data:`KINDS` does not fit.
    """
    try:
        event = _EVENT.decode(line)
        if event.seq == seq:
            kind = event.kind
            wire = _STEPS.get(event.machine) if kind == "transition" else \
                _BY_EVENT[kind].get(event.event) if kind in _BY_EVENT else _DATA.get(kind)
            if wire is None:
                if kind in _KINDS and kind not in _BY_EVENT and \
                        memoryview(event.data)[0] == 0x7B:  # an object ({)
                    return event, None
            else:
                decoder, validated = wire
                data = decoder.decode(event.data)
                if validated is not None:  # its validators raise _FieldError
                    validated(**msgspec.structs.asdict(data))
                return event, data
        error: BaseException | None = None
    except _WIRE_ERRORS as exc:
        error = exc
    raise _refusal(line, f"{source}:{seq}", seq, error)


def decode_verified(lines: Sequence[bytes], source: str, seq: int) -> Iterator[tuple[Any, Any]]:
    """:func:`decode_event` of each of ``lines``, lines ``seq + 1``... of a log, in one
    call of the decoder for them all.

    The lines are those of a verified chain: each begins with ``{`` and ends
    with ``}`` (so a JSON value cannot run from one into the next). Yields the
    pairs :func:`decode_event` returns, and raises what it raises: from the
    first line the batch cannot take, each line is decoded alone.
    """
    done = 0
    for event in decode_batch(b"\n".join(lines), len(lines)):
        if event.seq != seq + done + 1:
            break
        data = event_data(event)
        if data is UNFIT:
            break
        yield event, data
        done += 1
    for n, line in enumerate(lines[done:], seq + done + 1):
        yield decode_event(line, source, n)


def decode_batch(data: bytes | memoryview, count: int | None) -> list[Any]:
    """The events of the ``count`` lines of ``data`` (``\\n``-separated, as they are in
    the log), decoded in one call, each its kind's struct; ``[]`` when the batch
    cannot be decoded whole (a line that does not fit, or holds two values): then
    :func:`decode_event` each line, which names the problem. With ``count`` None,
    the values of ``data``, however many lines hold them (the caller checks).

    An event's ``data`` is its record's struct (:data:`DECISION` events need no
    more checks) or, for the other kinds, checked by :func:`event_data`.
    """
    try:
        events = _LINES.decode_lines(data)
    except _WIRE_ERRORS:
        return []
    return events if count is None or len(events) == count else []


def as_record(kind: str, event: str, data: Any) -> Any:
    """The attrs record of a ``ticket`` or ``idempotency`` event's decoded data (its
    enums as members), or None when it does not fit."""
    cls = BY_EVENT[kind].get(event)
    if cls is None:
        return None
    try:
        return cls(**msgspec.structs.asdict(data))
    except (TypeError, ValueError):
        return None


def event_data(event: Any) -> Any:
    """The data record of an event :func:`decode_batch` decoded (None for a kind replay
    does not read), decoded and validated as :func:`decode_event` does; :data:`UNFIT`
    when it does not fit."""
    data = event.data
    cls = type(event)
    if cls in _RAW:  # data left raw: a transition's, by machine, or any object
        if memoryview(data)[0] != 0x7B:  # not an object ({)
            return UNFIT
        kind = event.kind
        if kind == "transition":
            wire = _STEPS.get(event.machine)
        elif kind in _BY_EVENT:  # by event, a closed set
            wire = _BY_EVENT[kind].get(event.event)
            if wire is None:
                return UNFIT
        else:
            wire = None
        return None if wire is None else _checked(wire, data)
    if cls in _VALIDATED:
        return _checked((None, _VALIDATED[cls]), data)
    return data


#: What :func:`event_data` returns for data that does not fit its record.
UNFIT = object()


def _checked(wire: tuple[msgspec.json.Decoder[Any] | None, type | None], data: Any) -> Any:
    """``data`` decoded (when raw) and validated as ``wire`` says, or :data:`UNFIT`."""
    decoder, validated = wire
    try:
        if decoder is not None:
            data = decoder.decode(data)
        if validated is not None:  # its validators raise _FieldError
            validated(**msgspec.structs.asdict(data))
    except _WIRE_ERRORS:
        return UNFIT
    return data


def _refusal(line: bytes, where: str, seq: int, error: BaseException | None) -> AuditFormatError:
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return AuditFormatError(where, f"not a valid audit event: {exc}")
    problem = event_problem(event, seq) or Problem((), str(error) or type(error).__name__)
    return _format_error(where, seq, problem)


def _format_error(where: str, seq: int, problem: Problem) -> AuditFormatError:
    field = f"{shown(problem.where)}: " if problem.path else ""  # quoted, escaped: one line
    message = " ".join(problem.message.splitlines())
    return AuditFormatError(where, f"not a valid audit event: {field}{message} (seq {seq})")


def event_problem(event: Any, seq: int) -> Problem | None:
    """The first thing that keeps a parsed event, the ``seq``-th of its log, from the
    declared records, in the converter's words; None when it fits.

    >>> event = {"seq": 1, "ts": 0.0, "kind": "lock", "machine": "system", "subject": "system",
    ...          "event": "lock", "src": 5, "dst": "LOCKED", "data": {}, "prev": "0" * 64,
    ...          "hash": "0" * 64}
    >>> str(event_problem(event, 1))
    'src: must be a string (got 5)'
    >>> event_problem({**event, "src": "UNLOCKED"}, 1) is None
    True
    """
    if type(event) is not dict:
        return Problem((), f"must be a JSON object (got {shown(event)})")
    if "data" in event and type(event["data"]) is not dict:
        # cattrs has no strict mapping hook: say it as the converter says it of records
        return Problem(("data",), f"must be a table (got {shown(event['data'])})")
    problems = structure_checked(event, AuditEvent)[1]
    if problems:
        return problems[0]
    if event["seq"] != seq:
        return Problem(("seq",), f"must be {seq}, its place in the chain "
                                 f"(got {shown(event['seq'])})")
    kind = event["kind"]
    if kind not in _KINDS:
        return Problem(("kind",), f"must be one of {', '.join(KINDS)} (got {shown(kind)})")
    if kind in BY_EVENT:
        records = BY_EVENT[kind]
        cls = records.get(event["event"])
        if cls is None:
            return Problem(("event",), f"must be one of {', '.join(records)} for a "
                                       f"{kind} (got {shown(event['event'])})")
        return _keyed_problem(event["data"], cls)
    cls = STEP_RECORDS.get(event["machine"]) if kind == "transition" else DATA_RECORDS.get(kind)
    problems = [] if cls is None else structure_checked(event["data"], cls)[1]
    return Problem(("data", *problems[0].path), problems[0].message) if problems else None


def _keyed_problem(data: dict[str, Any], cls: type) -> Problem | None:
    """The first problem of ``data`` as ``cls``, whose fields may have other keys in the
    log than their names (:data:`_KEY`): keys and names are swapped on the way in and
    out, and a field's name used as a key is unknown, as the decoder says."""
    keys = {f.metadata[_KEY]: f.name for f in attrs.fields(cls) if _KEY in f.metadata}
    names = {name: key for key, name in keys.items()}
    unknown = sorted(k for k in data if k in names)
    if unknown:
        return Problem(("data", unknown[0]), "unknown key")
    problems = structure_checked({keys.get(k, k): v for k, v in data.items()}, cls)[1]
    if not problems:
        return None
    path = problems[0].path
    field = names.get(path[0], path[0]) if path and isinstance(path[0], str) else None
    return Problem(("data", *((field, *path[1:]) if field is not None else path)),
                   problems[0].message)


def check_event(event: Any, where: str, seq: int) -> None:
    """Raise :class:`AuditFormatError` when a parsed event does not fit (:func:`event_problem`).

    >>> check_event({"seq": 2}, "log:2", 2)
    Traceback (most recent call last):
    ...
    buddy.rules.base.errors.AuditFormatError: log:2: ...: 'ts': is required (seq 2)
    """
    problem = event_problem(event, seq)
    if problem is not None:
        raise _format_error(where, seq, problem)
