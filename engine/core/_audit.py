"""The audit trail: an append-only, hash-chained JSON Lines log.

Every line is one event, a JSON object with keys in this order::

    seq, ts, kind, machine, subject, event, src, dst, data, prev, hash

``prev`` is the ``hash`` of the line before (64 zeros for the first), and
``hash`` is SHA-256 (or HMAC-SHA-256 when a key is configured) of the line's
own bytes up to and excluding ``,"hash":...``. A verifier therefore needs no
JSON re-encoding: it hashes the bytes it read. Lines are split on ``\\n``
bytes only: JSON strings may hold U+2028, U+2029 and U+0085 raw.

Beside a file log lies its head anchor, ``<log>.anchor``: the last sequence
number and hash, rewritten atomically at every sync point and on close, so a
log cut short at its end no longer matches it. With a key, the anchor carries
an HMAC too, and an edited log or anchor re-made by someone without the key
fails verification.

Several processes may append to one file log: each append holds an exclusive
``flock`` on the log file, first reads (and verifies) whatever other writers
added since, then writes its line. Every process writing a log must be a
buddy that locks.

The shape of every event is declared once, as attrs records: the envelope
(:class:`AuditEvent`) and the ``data`` of each kind replay reads
(:data:`DATA_RECORDS`, :data:`STEP_RECORDS`). :func:`check_event` holds a
parsed line to them, through checkers compiled from the same records.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import hashlib
import hmac
import json
import math
import os
import threading
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import attrs
import msgspec
import orjson

from buddy.machines.escalation import ExecutionState
from buddy.rules.base._convert import Problem, converter, structure_checked
from buddy.rules.base._files import split_lines, write_atomic
from buddy.rules.base._masking import Masker, shown
from buddy.rules.base._values import ExecutionMode, RiskLevel
from buddy.rules.base.errors import AuditChainBroken, AuditError, AuditFormatError

__all__ = [
    "DATA_RECORDS",
    "STEP_RECORDS",
    "Anchor",
    "AuditEvent",
    "AuditLog",
    "ChainReport",
    "DecisionData",
    "EscalationStep",
    "GrantData",
    "LogScan",
    "OpenData",
    "TaskStep",
    "check_event",
    "decode_event",
    "event_problem",
    "load_key",
    "read_anchor",
    "scan_log",
    "verify_lines",
]

FORMAT = "buddy-audit/1"
GENESIS = "0" * 64
FIELDS = ("seq", "ts", "kind", "machine", "subject", "event", "src", "dst", "data", "prev", "hash")
#: An event's subject, or a function making it from the event's sequence number.
Subject = str | Callable[[int], str]
#: Any JSON value: a field recorded as the caller gave it (a refused call may carry anything).
Json = Any
_HASH_TAIL = len(',"hash":"') + 64 + 2  # the bytes after the hashed body: ,"hash":"<64>"}
_PREV = b',"prev":"'
_HASH = b',"hash":"'
_DUMPS = orjson.dumps
_NON_STR_KEYS = orjson.OPT_NON_STR_KEYS
_flock, _LOCK_EX, _LOCK_UN = fcntl.flock, fcntl.LOCK_EX, fcntl.LOCK_UN
_lseek, _SEEK_END = os.lseek, os.SEEK_END  # at O_APPEND's end: the file's size, cheaply
_write = os.write


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
    """The data of a move of the task machine: the inputs of its guards."""

    attempts: int = 0
    max_retries: int = 0
    gate_allows: bool = True
    rules: str | None = None


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


#: The record the ``data`` of each kind replay reads must structure into.
DATA_RECORDS: dict[str, type] = {"open": OpenData, "decision": DecisionData, "grant": GrantData}
#: The record of a transition's ``data``, by machine.
STEP_RECORDS: dict[str, type] = {"escalation": EscalationStep, "task": TaskStep}


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
    if isinstance(hint, type) and issubclass(hint, enum.Enum) and \
            all(type(m.value) is str for m in hint):
        return Literal[tuple(m.value for m in hint)]  # by value, kept as strings
    raise TypeError(f"{cls.__name__}.{name}: no wire type for {hint!r}")


def _compile(cls: type, **override: Any) -> msgspec.json.Decoder[Any]:
    """A strict JSON decoder into a msgspec struct compiled from the attrs record ``cls``.

    Same fields, types and defaults, unknown keys refused: it accepts what
    :func:`structure_checked` accepts of the parsed JSON (a test holds them to
    it), at C speed. Validators are not compiled: see :func:`decode_event`.
    """
    hints = typing.get_type_hints(cls)
    fields: list[Any] = []
    for f in attrs.fields(cls):
        wire = override.get(f.name) or _wire(hints[f.name], cls, f.name)
        fields.append((f.name, wire) if f.default is attrs.NOTHING else
                      (f.name, wire, f.default))
    struct = msgspec.defstruct(f"{cls.__name__}Wire", fields, kw_only=True, frozen=True,
                               forbid_unknown_fields=True)
    return msgspec.json.Decoder(struct)


def _wired(cls: type) -> tuple[msgspec.json.Decoder[Any], type | None]:
    """The record's decoder, and the record itself when it has validators to run."""
    validated = any(f.validator is not None for f in attrs.fields(cls))
    return _compile(cls), cls if validated else None


_EVENT = _compile(AuditEvent, data=msgspec.Raw)   # data: decoded by kind, below
_DATA = {kind: _wired(cls) for kind, cls in DATA_RECORDS.items()}
_STEPS = {machine: _wired(cls) for machine, cls in STEP_RECORDS.items()}
_WIRE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, RecursionError, _FieldError)


def decode_event(line: bytes, source: str, seq: int) -> tuple[Any, Any]:
    """Parse the ``seq``-th line of a log and hold it to the declared records, in one pass.

    Returns ``(event, data)``: the envelope (``data`` left raw) and the data
    record of its kind (None for a kind replay does not read). Raises
    :class:`AuditFormatError` naming ``source:seq``, the seq and the field
    that does not fit, in the converter's words (see :func:`event_problem`).
    """
    try:
        event = _EVENT.decode(line)
        if event.seq == seq:
            kind = event.kind
            wire = _STEPS.get(event.machine) if kind == "transition" else _DATA.get(kind)
            if wire is None:
                if memoryview(event.data)[0] == 0x7B:  # an object ({), of any keys
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
    ...          "event": "lock", "src": 5, "dst": "LOCKED", "data": {}, "prev": GENESIS,
    ...          "hash": GENESIS}
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
    cls = STEP_RECORDS.get(event["machine"]) if kind == "transition" else DATA_RECORDS.get(kind)
    problems = [] if cls is None else structure_checked(event["data"], cls)[1]
    return Problem(("data", *problems[0].path), problems[0].message) if problems else None


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


# -- keys ---------------------------------------------------------------------

def load_key(*, file: str | os.PathLike[str] | None = None, env: str | None = None,
             environ: Mapping[str, str] | None = None) -> bytes | None:
    """Read an HMAC key from a file or an environment variable (never from the log).

    Returns None when neither is given. Raises :class:`AuditError` when the
    named source is missing or empty.
    """
    if file is not None:
        try:
            key = Path(file).read_bytes().strip()
        except OSError as exc:
            raise AuditError(f"{file}: cannot read audit key: {exc.strerror}") from None
        if not key:
            raise AuditError(f"{file}: audit key file is empty")
        return key
    if env is not None:
        value = (os.environ if environ is None else environ).get(env, "")
        if not value:
            raise AuditError(f"environment variable {env} (audit key) is not set or empty")
        return value.encode("utf-8")
    return None


class _Chain:
    """Computes each line's hash: SHA-256, or HMAC-SHA-256 with a key.

    ``new(body)`` returns a hash object (``.hexdigest()``); unkeyed it is
    ``hashlib.sha256`` itself, so the hot path makes no Python call for it.
    """

    def __init__(self, key: bytes | None) -> None:
        self.keyed = key is not None
        self.name = "hmac-sha256" if self.keyed else "sha256"
        self._key = key
        if key is None:
            self.new: Callable[[bytes], Any] = hashlib.sha256
        else:
            base = hmac.new(key, digestmod=hashlib.sha256)

            def new(body: bytes) -> Any:
                h = base.copy()
                h.update(body)
                return h

            self.new = new

    def digest(self, body: bytes) -> str:
        return self.new(body).hexdigest()

    def anchor_mac(self, seq: int, digest: str) -> str | None:
        """The anchor's HMAC over its format, chain, seq and hash (None without a key)."""
        if self._key is None:
            return None
        message = f"buddy-anchor\n{FORMAT}\n{self.name}\n{seq}\n{digest}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()


# -- the log ------------------------------------------------------------------

class AuditLog:
    """An append-only, hash-chained event log, in memory or in a file.

    Appends are thread-safe: one lock orders them, so sequence numbers and the
    chain never interleave. The in-memory log keeps the serialised lines; the
    file log writes each event at once, and fsyncs on its ``sync`` policy.
    Appends to one file log from several processes (or several logs open on
    it) are ordered by a lock on the file, see :meth:`append`.

    An append that fails (a value that cannot be encoded, a subject function
    that raises, a full disk) leaves the log as it was: the sequence number is
    taken only once the line is written.

    >>> log = AuditLog.memory(clock=lambda: 0.0)
    >>> log.append("note", "system", "demo", "hello", None, None, {"n": 1})  # seq 1 is the header
    2
    >>> log.append("note", "system", "demo", "big", None, None, {"n": 2 ** 70})
    3
    >>> list(log.records())[-1]["data"]
    {'n': {'$unencodable': 'int', 'repr': '1180591620717411303424'}}
    >>> verify_lines(log.lines()).last_seq
    3
    """

    def __init__(self, *, clock: Callable[[], float], key: bytes | None = None,
                 path: Path | None = None, sync: str = "batch", sync_every: int = 256,
                 masker: Masker | None = None, allow_missing_anchor: bool = False) -> None:
        if sync not in ("always", "batch", "never"):
            raise AuditError(f"sync must be one of always, batch, never (got {sync!r})")
        self._clock = clock
        self._chain = _Chain(key)
        self._new_hash = self._chain.new
        self.lock = threading.RLock()
        self.masker = masker or Masker()
        self.path = path
        self.sync = sync
        self.sync_every = max(1, int(sync_every))
        self._lines: list[bytes] = []     # memory logs: serialised lines
        self._fd: int | None = None       # file logs: the open log file
        self._end = 0                     # bytes of the file this writer has verified
        self._since_sync = 0
        self._seq = 0
        self._prev = GENESIS
        self.recovered_torn: str | None = None
        if path is not None:
            self._open_file(path, allow_missing_anchor)
        else:
            self._header()

    # -- construction --------------------------------------------------------
    @classmethod
    def memory(cls, *, clock: Callable[[], float], key: bytes | None = None,
               masker: Masker | None = None) -> AuditLog:
        """A log held in memory (for embedding, tests and benchmarks)."""
        return cls(clock=clock, key=key, masker=masker)

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, clock: Callable[[], float],
             key: bytes | None = None, sync: str = "batch", sync_every: int = 256,
             masker: Masker | None = None, allow_missing_anchor: bool = False) -> AuditLog:
        """Open (or create) a file log and append to it.

        An existing log is verified first, against its anchor; a log without
        its anchor is refused (events cut from its end could not be noticed)
        unless ``allow_missing_anchor=True``, which records a ``recover``
        event saying so. A torn last line (a crash mid-write) is moved aside to
        ``<log>.torn-<offset>`` and the chain continues from the last whole
        event. ``sync``: ``always`` fsyncs every event, ``batch`` every
        ``sync_every`` events, ``never`` leaves it to the OS; each sync point
        (and close) rewrites the anchor.

        Raises :class:`AuditChainBroken` when the log does not verify, and
        :class:`AuditError` when it cannot be opened.
        """
        return cls(clock=clock, key=key, path=Path(path), sync=sync, sync_every=sync_every,
                   masker=masker, allow_missing_anchor=allow_missing_anchor)

    def _header(self) -> None:
        self._append("open", "audit", "log", "open", None, None,
                     {"format": FORMAT, "chain": self._chain.name}, None)

    def _open_file(self, path: Path, allow_missing_anchor: bool) -> None:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            _flock(fd, _LOCK_EX)
            self._fd = fd
            size = os.fstat(fd).st_size
            anchor = read_anchor(path)
            if size == 0:
                if anchor is not None and anchor.seq > 0:
                    raise AuditChainBroken(str(path), 0, f"log is empty but its anchor says "
                                           f"{anchor.seq}: events were cut from the end")
                self._write_anchor()  # at seq 0 first: a crash before the header leaves a match
                self._header()
            else:
                if anchor is None and not allow_missing_anchor:
                    raise AuditChainBroken(str(path), None, _missing_anchor(
                        path, "open it with allow_missing_anchor=True (buddy decide "
                        "--allow-missing-anchor) to go on"))
                scan = _split(_read(fd, 0, size), path)
                report = _verify(scan.raw, self._chain, str(path), anchor=anchor)
                self._seq, self._prev, self._end = report.last_seq, report.last_hash, \
                    scan.good_bytes
                if scan.torn is not None:
                    self._move_torn(scan.torn_bytes)
                if anchor is None:
                    self._append("recover", "audit", "log", "anchor_missing", None, None,
                                 {"anchor": anchor_path(path).name}, None)
            self._write_anchor()
        except BaseException:
            self._fd = None
            os.close(fd)  # closing drops the flock too
            raise
        _flock(fd, _LOCK_UN)

    # -- writing -------------------------------------------------------------
    def append(self, kind: str, machine: str, subject: Subject, event: str, src: str | None,
               dst: str | None, data: dict[str, Any], ts: float | None = None) -> int:
        """Append one event and return its sequence number.

        ``ts`` defaults to the log's clock; pass it when the caller already read
        the clock for the decision the event records. ``subject`` may be a
        function of the event's sequence number (``lambda seq: f"grant-{seq}"``):
        an id made so is unique in the log by construction, whichever process
        writes it. A value of ``data`` JSON cannot hold (an integer beyond 64
        bits, a tuple key, nesting deeper than 254) is recorded as
        ``{"$unencodable": "<type>", "repr": "<short repr, secrets masked>"}``.

        A file log takes an exclusive ``flock`` on the file for each append;
        when other writers appended since this one last wrote, their lines are
        read and verified (and the sequence continues after them) first.

        Raises :class:`AuditError` when the event cannot be written (the log is
        then unchanged), :class:`AuditChainBroken` when lines another writer
        added do not verify.
        """
        if type(kind) is not str or type(machine) is not str or type(event) is not str or \
                src is not None and type(src) is not str or \
                dst is not None and type(dst) is not str:
            _check_envelope(kind, machine, "", event, src, dst, {}, 0.0)  # says which, raises
        with self.lock:
            return self.append_locked(kind, machine, subject, event, src, dst, data, ts)

    def append_locked(self, kind: str, machine: str, subject: Subject, event: str,
                      src: str | None, dst: str | None, data: dict[str, Any],
                      ts: float | None = None) -> int:
        """:meth:`append` for a caller that already holds :attr:`lock` (the hot path).

        The caller passes ``kind``, ``machine``, ``event``, ``src`` and ``dst``
        as strings (buddy's own code passes literals; :meth:`append` checks
        them); ``subject``, ``data`` and the clock's ``ts`` are checked here.
        """
        fd = self._fd
        if fd is None:
            if self.path is not None:
                raise AuditError(f"{self.path}: the audit log is closed")
            return self._append(kind, machine, subject, event, src, dst, data, ts)
        _flock(fd, _LOCK_EX)
        try:
            if _lseek(fd, 0, _SEEK_END) != self._end:
                self._catch_up()
            seq = self._append(kind, machine, subject, event, src, dst, data, ts)
            if self.sync == "always" or self._since_sync >= self.sync_every:
                self._sync()
            return seq
        finally:
            _flock(fd, _LOCK_UN)

    def _append(self, kind: str, machine: str, subject: Subject, event: str, src: str | None,
                dst: str | None, data: dict[str, Any], ts: float | None) -> int:
        """Encode, hash and write one event; only then take its seq (file lock held)."""
        seq = self._seq + 1
        if type(subject) is not str and callable(subject):
            subject = subject(seq)
        if ts is None:
            ts = self._clock()
        if type(ts) is not float or ts - ts != 0.0 or type(data) is not dict or \
                type(subject) is not str:
            ts, data = _check_envelope(kind, machine, subject, event, src, dst, data, ts)
        try:
            body = _DUMPS({
                "seq": seq, "ts": ts, "kind": kind, "machine": machine, "subject": subject,
                "event": event, "src": src, "dst": dst, "data": data, "prev": self._prev,
            }, default=repr, option=_NON_STR_KEYS)
        except Exception:  # a value JSON cannot hold: record it as such, never lose the event
            body = self._encode_fallback(seq, ts, kind, machine, subject, event, src, dst, data)
        digest = self._new_hash(body).hexdigest()
        line = b'%s,"hash":"%s"}\n' % (body[:-1], digest.encode())
        fd = self._fd
        if fd is None:
            self._lines.append(line)
        else:
            try:
                done = _write(fd, line)
                while done < len(line):  # a short write (a signal, a nearly full disk)
                    done += _write(fd, line[done:])
            except OSError as exc:
                self._cut_back()
                raise AuditError(f"{self.path}: cannot write audit event {seq}: "
                                 f"{exc.strerror}") from None
            self._end += len(line)
            self._since_sync += 1
        self._seq, self._prev = seq, digest
        return seq

    def _encode_fallback(self, seq: int, ts: float, kind: str, machine: str, subject: str,
                         event: str, src: str | None, dst: str | None,
                         data: Mapping[Any, Any]) -> bytes:
        """The event with each top-level item of ``data`` JSON cannot hold replaced."""
        safe: dict[str, Any] = {}
        for key, value in data.items():
            name = key
            try:
                _DUMPS({key: None}, option=_NON_STR_KEYS)
            except Exception:
                name = _clean(key) if isinstance(key, str) else _clean(shown(key))
            try:
                _DUMPS([{"k": value}], default=repr, option=_NON_STR_KEYS)  # data's depth
            except Exception:
                value = self.masker.MASK if self.masker.is_secret(key) else {
                    "$unencodable": type(value).__name__,
                    "repr": _clean(shown(self.masker.mask(value)))}
            while name in safe:
                name += "'"
            safe[name] = value
        try:
            return _DUMPS({
                "seq": seq, "ts": ts, "kind": _clean(kind), "machine": _clean(machine),
                "subject": _clean(subject), "event": _clean(event),
                "src": None if src is None else _clean(src),
                "dst": None if dst is None else _clean(dst), "data": safe, "prev": self._prev,
            }, default=repr, option=_NON_STR_KEYS)
        except Exception as exc:
            raise AuditError(f"audit event {kind}/{event} cannot be encoded: "
                             f"{type(exc).__name__}: {exc}") from None

    def _cut_back(self) -> None:
        """Cut off what a failed write left of its line (file lock held)."""
        assert self._fd is not None
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, self._end)

    def _catch_up(self) -> None:
        """Read and verify what other writers appended since this one's last write."""
        assert self._fd is not None and self.path is not None
        size = os.fstat(self._fd).st_size
        if size < self._end:
            raise AuditChainBroken(str(self.path), self._seq, f"the log shrank from "
                                   f"{self._end} to {size} bytes since this writer's last "
                                   "write: events were cut from the end")
        scan = _split(_read(self._fd, self._end, size), self.path, self._seq)
        report = _verify(scan.raw, self._chain, str(self.path), seq=self._seq,
                         prev=self._prev)
        self._seq, self._prev, self._end = report.last_seq, report.last_hash, \
            self._end + scan.good_bytes
        if scan.torn is not None:  # a writer died mid-line
            self._move_torn(scan.torn_bytes)

    def _move_torn(self, torn: bytes) -> None:
        """Move a torn last line aside, cut it off, and record that (file lock held)."""
        assert self._fd is not None and self.path is not None
        aside = self.path.with_name(f"{self.path.name}.torn-{self._end}")
        write_atomic(aside, torn)
        os.ftruncate(self._fd, self._end)
        self.recovered_torn = str(aside)
        self._append("recover", "audit", "log", "torn_tail_moved", None, None,
                     {"moved_to": aside.name}, None)

    def _sync(self) -> None:
        """fsync (unless ``sync="never"``) and rewrite the anchor (file lock held)."""
        assert self._fd is not None
        if self.sync != "never":
            os.fsync(self._fd)
        self._since_sync = 0
        self._write_anchor()

    def _write_anchor(self) -> None:
        assert self.path is not None
        anchor = {"format": FORMAT, "chain": self._chain.name, "seq": self._seq,
                  "hash": self._prev}
        mac = self._chain.anchor_mac(self._seq, self._prev)
        if mac is not None:
            anchor["mac"] = mac
        write_atomic(anchor_path(self.path), json.dumps(anchor) + "\n")

    def _locked_sync(self) -> None:
        """Catch up with other writers, then sync: the anchor names the file's real head."""
        fd = self._fd
        assert fd is not None
        _flock(fd, _LOCK_EX)
        try:
            if _lseek(fd, 0, _SEEK_END) != self._end:
                self._catch_up()
            self._sync()
        finally:
            _flock(fd, _LOCK_UN)

    def flush(self) -> None:
        """Sync the file log now: fsync and rewrite the anchor."""
        with self.lock:
            if self._fd is not None:
                self._locked_sync()

    def close(self) -> None:
        """Sync and close a file log (once; later appends raise :class:`AuditError`)."""
        with self.lock:
            fd = self._fd
            if fd is None:
                return
            try:
                self._locked_sync()
            finally:
                self._fd = None
                os.close(fd)

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading -------------------------------------------------------------
    @property
    def last_seq(self) -> int:
        """The last sequence number this log wrote or read (others may have written since)."""
        return self._seq

    @property
    def keyed(self) -> bool:
        return self._chain.keyed

    def raw_lines(self) -> list[bytes]:
        """Every whole line so far, as bytes without the newline (a file log is re-read)."""
        with self.lock:
            if self.path is None:
                return [line[:-1] for line in self._lines]
        return scan_log(self.path).raw

    def lines(self) -> list[str]:
        """Every line so far (a file log is read back from disk)."""
        return [line.decode("utf-8") for line in self.raw_lines()]

    def records(self) -> Iterator[dict[str, Any]]:
        """Every event as a dict, in order."""
        for line in self.raw_lines():
            yield orjson.loads(line)

    @staticmethod
    def read_records(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
        """Every whole event of a log file as a dict, in order (a torn tail is skipped)."""
        for line in scan_log(path).raw:
            yield orjson.loads(line)

    def events(self) -> list[AuditEvent]:
        """Every event as an :class:`AuditEvent`."""
        return [converter.structure(r, AuditEvent) for r in self.records()]


def _check_envelope(kind: Any, machine: Any, subject: Any, event: Any, src: Any, dst: Any,
                    data: Any, ts: Any) -> tuple[float, dict[Any, Any]]:
    """The slow check of an event's envelope: raises :class:`AuditError`, or returns
    ``ts`` as a float and ``data`` as a dict."""
    for name, value in (("kind", kind), ("machine", machine), ("subject", subject),
                        ("event", event)):
        if not isinstance(value, str):
            raise AuditError(f"audit event: {name} must be a string (got {shown(value)})")
    for name, value in (("src", src), ("dst", dst)):
        if value is not None and not isinstance(value, str):
            raise AuditError(f"audit event: {name} must be a string or None "
                             f"(got {shown(value)})")
    if not isinstance(data, Mapping):
        raise AuditError(f"audit event: data must be a dict (got {shown(data)})")
    if isinstance(ts, bool) or not isinstance(ts, int | float) or \
            not math.isfinite(float(ts)):
        raise AuditError(f"audit event: ts must be a finite number (got {shown(ts)})")
    return float(ts), dict(data)


def _clean(text: str) -> str:
    """``text`` with lone surrogates (which UTF-8 cannot hold) as ``\\udxxx`` escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _read(fd: int, start: int, end: int) -> bytes:
    chunks, at = [], start
    while at < end:
        chunk = os.pread(fd, end - at, at)
        if not chunk:
            break
        chunks.append(chunk)
        at += len(chunk)
    return b"".join(chunks)


def _missing_anchor(path: Path, hint: str) -> str:
    return (f"no anchor {anchor_path(path).name} beside the log: events cut from its end "
            f"would go unnoticed; {hint}")


# -- reading and verifying ----------------------------------------------------

def anchor_path(path: Path) -> Path:
    return path.with_name(path.name + ".anchor")


@attrs.frozen
class Anchor:
    """The head anchor beside a file log: its last seq and hash (and, keyed, their HMAC)."""

    format: str
    chain: str
    seq: int
    hash: str
    mac: str | None = None


def read_anchor(path: str | os.PathLike[str]) -> Anchor | None:
    """The head anchor beside ``path``, or None when there is none.

    Raises :class:`AuditFormatError` when it is unreadable or malformed.
    """
    ap = anchor_path(Path(path))
    try:
        data = json.loads(ap.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise AuditFormatError(str(ap), f"unreadable anchor: {exc}") from None
    anchor, problems = structure_checked(data, Anchor)
    if anchor is None:
        raise AuditFormatError(str(ap), f"not a valid anchor: {problems[0]}")
    return anchor


@attrs.frozen
class LogScan:
    """A log file split into whole lines and a torn tail (if a write was cut off)."""

    raw: list[bytes]      # the whole lines, without their newlines
    torn: str | None      # a description of the torn tail, or None
    torn_bytes: bytes
    good_bytes: int       # length of the whole-lines prefix

    @property
    def lines(self) -> list[str]:
        return [line.decode("utf-8") for line in self.raw]


def scan_log(path: str | os.PathLike[str]) -> LogScan:
    """Split a log file into whole lines (on ``\\n`` only); a last line without one is torn.

    Raises :class:`AuditError` when the file cannot be read, and
    :class:`AuditFormatError` naming the line that is not UTF-8.
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise AuditError(f"{p}: no such file") from None
    except OSError as exc:
        raise AuditError(f"{p}: cannot read: {exc.strerror}") from None
    return _split(raw, p)


def _split(raw: bytes, path: Path, seq: int = 0) -> LogScan:
    lines, tail = split_lines(raw)
    end = len(raw) - len(tail)
    try:
        raw[:end].decode("utf-8")
    except UnicodeDecodeError as exc:
        line = seq + raw[: exc.start].count(b"\n") + 1
        raise AuditFormatError(f"{path}:{line}", "not UTF-8 text") from None
    torn = None
    if tail:
        torn = (f"{path}:{seq + len(lines) + 1}: torn last line ({len(tail)} bytes, no "
                "newline; a write was cut off)")
    return LogScan(lines, torn, tail, end)


@attrs.frozen
class ChainReport:
    """What verification found: events verified, the head, and the first break."""

    count: int
    last_seq: int
    last_hash: str
    chain: str


def verify_lines(lines: Sequence[str | bytes], *, key: bytes | None = None,
                 key_chain: _Chain | None = None, source: str = "<log>",
                 anchor: Anchor | None = None) -> ChainReport:
    """Verify the hash chain of ``lines`` (and the anchor, when given).

    Raises :class:`AuditChainBroken` at the first line that does not verify:
    an edited, deleted, inserted or reordered line, a log cut short of its
    anchor, an anchor rewritten without the key, or a plain-SHA chain where a
    key is configured.
    """
    raw = [line.encode("utf-8") if isinstance(line, str) else line for line in lines]
    return _verify(raw, key_chain or _Chain(key), source, anchor=anchor)


def _verify(lines: Sequence[bytes], chain: _Chain, source: str, *, seq: int = 0,
            prev: str = GENESIS, anchor: Anchor | None = None) -> ChainReport:
    """Verify ``lines`` as the continuation of a chain at ``seq``/``prev``."""
    new, keyed = chain.new, chain.keyed
    last = prev.encode()
    start = seq
    for line in lines:
        if len(line) < _HASH_TAIL + 2 or line[-_HASH_TAIL:-66] != _HASH or line[-2:] != b'"}':
            raise _broken(source, seq + 1, "line is not a hashed audit event")
        body = line[:-_HASH_TAIL] + b"}"
        if body[-75:-66] != _PREV or body[-66:-2] != last:
            raise _broken(source, seq + 1, "prev does not match the hash of the line before "
                          "(a line was deleted, inserted or reordered)")
        if seq == 0 and not keyed and b'"chain":"hmac-sha256"' in line:
            raise _broken(source, 1, "the log is chained with HMAC: give its key "
                          "(--key-file or --key-env) to verify it")
        digest = line[-66:-2]
        if not hmac.compare_digest(new(body).hexdigest().encode(), digest):
            raise _broken(source, seq + 1, "hash mismatch (line edited" +
                          (", or chained without the key)" if keyed else ")"))
        if not line.startswith(b'{"seq":%d,' % (seq + 1)):
            raise _broken(source, seq + 1, "sequence number out of order")
        last, seq = digest, seq + 1
    head = last.decode()
    if anchor is not None:
        _check_anchor(anchor, chain, lines, seq, head, source)
    return ChainReport(seq - start, seq, head, chain.name)


def _broken(source: str, seq: int, reason: str) -> AuditChainBroken:
    return AuditChainBroken(f"{source}:{seq}", seq, reason)  # line n holds seq n


def _check_anchor(anchor: Anchor, chain: _Chain, lines: Sequence[bytes], seq: int, head: str,
                  source: str) -> None:
    if anchor.format != FORMAT or anchor.chain != chain.name:
        raise AuditChainBroken(source, None, f"the anchor is of a {anchor.format} "
                               f"{anchor.chain} log, the log is {FORMAT} {chain.name}")
    if chain.keyed:
        if anchor.mac is None:
            raise AuditChainBroken(source, anchor.seq, "the anchor has no MAC: it was not "
                                   "written with the key")
        if not hmac.compare_digest(anchor.mac, chain.anchor_mac(anchor.seq, anchor.hash) or ""):
            raise AuditChainBroken(source, anchor.seq, "the anchor's MAC does not verify "
                                   "(anchor rewritten without the key)")
    if anchor.seq > seq:
        raise AuditChainBroken(source, seq, f"log ends at seq {seq} but its anchor says "
                               f"{anchor.seq}: events were cut from the end")
    if anchor.seq == seq:
        at: str | None = head
    elif anchor.seq == 0:
        at = GENESIS
    else:
        at = lines[anchor.seq - 1][-66:-2].decode() if anchor.seq > 0 else None
    if at != anchor.hash:
        raise AuditChainBroken(source, anchor.seq, "the event at the anchor's seq does not "
                               "match the anchor's hash")
