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

import binascii
import contextlib
import fcntl
import json
import math
import os
import stat
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from buddy.engine.core._chain import (
    FORMAT,
    GENESIS,
    Chain,
    ChainReport,
    LogReader,
    anchor_path,
    missing_anchor,
    read_anchor,
    scan_log,
    split_log,
    verify_chain,
)
from buddy.engine.core._events import KINDS, AuditEvent, as_record, decode_event
from buddy.engine.core._tickets import CallBook
from buddy.rules.base._canonical import args_digest
from buddy.rules.base._convert import converter
from buddy.rules.base._files import write_atomic
from buddy.rules.base._masking import Masker, mask_text, masked_repr, shown
from buddy.rules.base.errors import AuditChainBroken, AuditError

__all__ = ["AuditLog", "Subject"]

#: An event's subject, or a function making it from the event's sequence number.
Subject = str | Callable[[int], str]
_DUMPS = orjson.dumps
_NON_STR_KEYS = orjson.OPT_NON_STR_KEYS
_flock, _LOCK_EX, _LOCK_UN = fcntl.flock, fcntl.LOCK_EX, fcntl.LOCK_UN
_lseek, _SEEK_END = os.lseek, os.SEEK_END  # at O_APPEND's end: the file's size, cheaply
_write = os.write
_hexlify = binascii.hexlify
_KINDS = frozenset(KINDS)

#: Events a memory log keeps by default (see :meth:`AuditLog.memory`).
MEMORY_KEEP = 100_000
#: A memory log hashes its events into the chain when they are read, or once this
#: many wait (the cost shows in the mean of a decision, not in its median).
CHAIN_EVERY = 1_024


# -- the log ------------------------------------------------------------------

class AuditLog:
    """An append-only, hash-chained event log, in memory or in a file.

    Appends are thread-safe: one lock orders them, so sequence numbers and the
    chain never interleave. The in-memory log keeps its newest ``keep`` lines,
    hashed into the chain when read (or every :data:`CHAIN_EVERY` events); the
    file log writes each event at once, and fsyncs on its ``sync`` policy.
    Appends to one file log from several processes (or several logs open on
    it) are ordered by a lock on the file, see :meth:`append`.

    An append that fails (a value that cannot be encoded, a subject function
    that raises, a full disk) leaves the log as it was: the sequence number is
    taken only once the line is written.

    >>> log = AuditLog.memory(clock=lambda: 0.0)
    >>> log.append("recover", "audit", "log", "hello", None, None, {"n": 1})  # 1: the header
    2
    >>> log.append("recover", "audit", "log", "big", None, None, {"n": 2 ** 70})
    3
    >>> list(log.records())[-1]["data"]
    {'n': {'$unencodable': 'int', 'repr': '1180591620717411303424'}}
    >>> from buddy.engine.core._chain import verify_lines
    >>> verify_lines(log.lines()).last_seq
    3
    """

    def __init__(self, *, clock: Callable[[], float], key: bytes | None = None,
                 path: Path | None = None, sync: str = "batch", sync_every: int = 256,
                 masker: Masker | None = None, allow_missing_anchor: bool = False,
                 keep: int | None = None, exclusive: bool = False) -> None:
        if sync not in ("always", "batch", "never"):
            raise AuditError(f"sync must be one of always, batch, never (got {sync!r})")
        self._clock = clock
        self._chain = Chain(key)
        self._new_hash = self._chain.new
        self.lock = threading.RLock()
        self.masker = masker or Masker()
        self.path = path
        self.sync = sync
        self.sync_every = max(1, int(sync_every))
        if keep is not None and (type(keep) is not int or not 1 <= keep <= 2**53):
            raise AuditError(f"keep must be a whole number from 1 to 2**53, or None "
                             f"(got {shown(keep)})")
        #: Memory logs: how many of the newest events are kept (None: all).
        self.keep = keep
        self._lines: deque[bytes] = deque(maxlen=keep)  # memory logs: chained lines
        self._pending: list[bytes] = []   # memory logs: events not chained yet (_commit)
        self._fd: int | None = None       # file logs: the open log file
        self._end = 0                     # bytes of the file this writer has verified
        self._since_sync = 0
        self._held = 0                    # file logs: depth of hold() by this writer
        #: Whether other writers may append too (a file log): see :meth:`hold`.
        self.shared = path is not None and not exclusive
        self.exclusive = exclusive and path is not None
        self._seq = 0
        self._prev = GENESIS.encode()  # the last event's hash, hex ASCII
        #: The log's system lock: whether its last ``lock``/``unlock`` event, written by
        #: any writer of the log, is a lock. Every engine writing to the log honours it.
        self.locked = False
        #: what the log's ticket and idempotency events say, kept up with other writers'
        self.book = CallBook()
        self.recovered_torn: str | None = None
        if path is not None:
            self._open_file(path, allow_missing_anchor)
        else:
            # A memory log has no file to lock or catch up with: its appends go
            # straight to the writer (one call less on the hot path).
            self.append_locked = self._append  # type: ignore[method-assign]
            self.append_encoded_locked = self._append_encoded_memory  # type: ignore[method-assign]
            self._header()

    # -- construction --------------------------------------------------------
    @classmethod
    def memory(cls, *, clock: Callable[[], float], key: bytes | None = None,
               masker: Masker | None = None, keep: int | None = MEMORY_KEEP) -> AuditLog:
        """A log held in memory (for embedding, tests and benchmarks).

        It keeps the newest ``keep`` events (:data:`MEMORY_KEEP` by default,
        about 65 MB of decisions; None keeps all): a long-running process
        does not grow without bound. The chain goes on over the events it
        drops, so what it keeps still verifies (:meth:`verify`); replay needs
        a log from its first event: use a file log to keep everything.
        """
        return cls(clock=clock, key=key, masker=masker, keep=keep)

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, clock: Callable[[], float],
             key: bytes | None = None, sync: str = "batch", sync_every: int = 256,
             masker: Masker | None = None, allow_missing_anchor: bool = False,
             exclusive: bool = False) -> AuditLog:
        """Open (or create) a file log and append to it.

        An existing log is verified first, against its anchor; a log without
        its anchor is refused (events cut from its end could not be noticed)
        unless ``allow_missing_anchor=True``, which records a ``recover``
        event saying so. A torn last line (a crash mid-write) is moved aside to
        ``<log>.torn-<offset>`` and the chain continues from the last whole
        event. ``sync``: ``always`` fsyncs every event, ``batch`` every
        ``sync_every`` events, ``never`` leaves it to the OS; each sync point
        (and close) rewrites the anchor.

        ``exclusive=True`` holds the file's ``flock`` from open to close: this
        writer is then the log's only one, and its appends skip the per-append
        lock and tail check (other writers wait until it closes; opening an
        exclusive log that another writer holds fails at once).

        Raises :class:`AuditChainBroken` when the log does not verify, and
        :class:`AuditError` when it cannot be opened.
        """
        return cls(clock=clock, key=key, path=Path(path), sync=sync, sync_every=sync_every,
                   masker=masker, allow_missing_anchor=allow_missing_anchor,
                   exclusive=exclusive)

    def _header(self) -> None:
        self._append("open", "audit", "log", "open", None, None,
                     {"format": FORMAT, "chain": self._chain.name}, None)

    def _open_file(self, path: Path, allow_missing_anchor: bool) -> None:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO or a device: no log
                raise AuditError(f"{path}: not a regular file")
            if self.exclusive:
                try:
                    _flock(fd, _LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise AuditError(f"{path}: another writer holds the log; an exclusive "
                                     "writer must be its only one") from None
            else:
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
                    raise AuditChainBroken(str(path), None, missing_anchor(
                        path, "open it with allow_missing_anchor=True (buddy decide "
                        "--allow-missing-anchor) to go on"))
                scan = split_log(_read(fd, 0, size), path)
                report = verify_chain(scan.raw, self._chain, str(path), anchor=anchor)
                self._seq, self._prev, self._end = report.last_seq, \
                    report.last_hash.encode(), scan.good_bytes
                self.locked = _lock_state(scan.raw, self.locked)
                _note_calls(scan.raw, self.book)
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
        if self.exclusive:
            self._held = 1  # held until close: appends need no lock and no catching up
        else:
            _flock(fd, _LOCK_UN)

    def args_digest(self, args: Any, masked: Any = None) -> str:
        """The digest this log records of a call's arguments: keyed, an HMAC with the
        log's key (it ties the arguments to the log and says nothing about them without
        the key); unkeyed, a hash of the arguments with secrets masked (``masked``, when
        the caller has them: an unkeyed hash of a masked password could be guessed
        offline from the log)."""
        key = self._chain._key
        if key is not None:
            return args_digest(args, key)
        return args_digest(self.masker.mask(args) if masked is None else masked)

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
        if kind not in _KINDS:  # the closed set replay reads (buddy.engine.core._events.KINDS)
            raise AuditError(f"audit event: kind must be one of {', '.join(KINDS)} "
                             f"(got {shown(kind)})")
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
        if self._fd is None:
            if self.path is not None:
                raise AuditError(f"{self.path}: the audit log is closed")
            return self._append(kind, machine, subject, event, src, dst, data, ts)
        return self._filed(self._append, kind, machine, subject, event, src, dst, data, ts)

    def append_encoded_locked(self, rest: bytes, ts: float | None = None) -> int:
        """:meth:`append_locked` of an event its caller encoded: ``rest`` is the JSON of
        its fields from ``"kind"`` to ``data``'s closing brace, exactly as :meth:`append`
        would write them (buddy's decisions, from templates compiled at load). The
        log adds ``seq``, ``ts``, ``prev`` and ``hash``.
        """
        if self._fd is None:
            if self.path is not None:
                raise AuditError(f"{self.path}: the audit log is closed")
            return self._append_encoded(rest, ts)
        return self._filed(self._append_encoded, rest, ts)

    def _filed(self, write: Callable[..., int], *args: Any) -> int:
        """``write(*args)`` to the file log, holding its ``flock`` having caught up with
        other writers (unless the caller holds the file already, see :meth:`hold`),
        then sync on the log's policy."""
        fd = self._fd
        assert fd is not None
        held = self._held
        if not held:
            _flock(fd, _LOCK_EX)
        try:
            if not held and _lseek(fd, 0, _SEEK_END) != self._end:
                self._catch_up()
            seq = write(*args)
            if self.sync == "always" or self._since_sync >= self.sync_every:
                self._sync()
            return seq
        finally:
            if not held:
                _flock(fd, _LOCK_UN)

    def set_locked(self, locked: bool, reason: str) -> int | None:
        """Lock or unlock the log's system: append the ``lock``/``unlock`` event (seq),
        or None when it already is so. The caller holds :attr:`lock`."""
        self.hold()
        try:
            if self.locked is locked:
                return None
            src, dst = ("UNLOCKED", "LOCKED") if locked else ("LOCKED", "UNLOCKED")
            kind = "lock" if locked else "unlock"
            seq = self.append_locked(kind, "system", "system", kind, src, dst,
                                     {"reason": reason})
            self.locked = locked
            return seq
        finally:
            self.release()

    def hold(self) -> None:
        """Hold the file until :meth:`release`, having read what other writers appended.

        A decision that must see the log's latest state (its system lock) and be
        recorded before anyone appends after it holds the file across both. The
        caller holds :attr:`lock`; holds nest; a memory log needs none.
        """
        fd = self._fd
        if fd is None:
            return
        if self._held == 0:
            _flock(fd, _LOCK_EX)
            try:
                if _lseek(fd, 0, _SEEK_END) != self._end:
                    self._catch_up()
            except BaseException:
                _flock(fd, _LOCK_UN)
                raise
        self._held += 1

    def release(self) -> None:
        """End one :meth:`hold`."""
        fd = self._fd
        if fd is None or self._held == 0:
            return
        self._held -= 1
        if self._held == 0:
            _flock(fd, _LOCK_UN)

    def _append(self, kind: str, machine: str, subject: Subject, event: str, src: str | None,
                dst: str | None, data: dict[str, Any], ts: float | None = None) -> int:
        """Encode, hash and write one event; only then take its seq (file lock held)."""
        seq = self._seq + 1
        if ts is None:
            ts = self._clock()
        # ts - ts is 0.0 for a finite float, NaN (true) for NaN and the infinities
        if type(subject) is not str or type(ts) is not float or ts - ts or \
                type(data) is not dict:
            if callable(subject):
                subject = subject(seq)
            ts, data = _check_envelope(kind, machine, subject, event, src, dst, data, ts)
        try:
            body = _DUMPS({
                "seq": seq, "ts": ts, "kind": kind, "machine": machine, "subject": subject,
                "event": event, "src": src, "dst": dst, "data": data,
            }, default=masked_repr, option=_NON_STR_KEYS)
        except Exception:  # a value JSON cannot hold: record it as such, never lose the event
            body = self._encode_fallback(seq, ts, kind, machine, subject, event, src, dst, data)
        return self._commit(seq, body[:-1] + b',"prev":"')

    def _append_encoded(self, rest: bytes, ts: float | None = None) -> int:
        """:meth:`_append` of an encoded event (see :meth:`append_encoded_locked`)."""
        seq = self._seq + 1
        if ts is None:
            ts = self._clock()
        if type(ts) is not float or ts - ts:
            ts = _check_envelope("", "", "", "", None, None, {}, ts)[0]
        return self._commit(seq, b'{"seq":%d,"ts":%b,%b,"prev":"' % (seq, _DUMPS(ts), rest))

    def _append_encoded_memory(self, rest: bytes, ts: float | None = None) -> int:
        """:meth:`_append_encoded` of a memory log, with :meth:`_commit`'s part inlined (the
        hot path: a call's three or four events)."""
        seq = self._seq + 1
        if ts is None:
            ts = self._clock()
        if type(ts) is not float or ts - ts:
            ts = _check_envelope("", "", "", "", None, None, {}, ts)[0]
        pending = self._pending
        pending.append(b'{"seq":%d,"ts":%b,%b,"prev":"' % (seq, _DUMPS(ts), rest))
        if len(pending) >= CHAIN_EVERY:
            self._chain_pending()
        self._seq = seq
        return seq

    def _commit(self, seq: int, opened: bytes) -> int:
        """Chain and write one event as ``seq`` (file lock held); only then take the seq.

        ``opened`` is the event's JSON up to its ``prev`` value: the hashed body is
        ``opened``, the last hash and ``"}``, the line ends ``","hash":"<hash>"}``.
        A memory log chains its events when they are read, or every
        :data:`CHAIN_EVERY` events (see :meth:`_chain_pending`).
        """
        fd = self._fd
        if fd is None:
            pending = self._pending
            pending.append(opened)
            if len(pending) >= CHAIN_EVERY:
                self._chain_pending()
            self._seq = seq
            return seq
        head = opened + self._prev
        digest = _hexlify(self._new_hash(head + b'"}').digest())
        line = b'%b","hash":"%b"}\n' % (head, digest)
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

    def _chain_pending(self) -> None:
        """Hash a memory log's pending events in order into whole lines (lock held).

        Nothing can read a memory log's events but through this log, and every
        read chains first, so a line is never seen without its hash; the bytes
        are those a file log writes at once.
        """
        prev, new, lines = self._prev, self._new_hash, self._lines
        for opened in self._pending:
            head = opened + prev
            prev = _hexlify(new(head + b'"}').digest())
            lines.append(b'%b","hash":"%b"}\n' % (head, prev))
        self._pending.clear()
        self._prev = prev

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
                _DUMPS([{"k": value}], default=masked_repr, option=_NON_STR_KEYS)  # data's depth
            except Exception:
                value = self.masker.MASK if self.masker.is_secret(key) else {
                    "$unencodable": type(value).__name__,
                    "repr": mask_text(shown(self.masker.mask(value)))}
            while name in safe:
                name += "'"
            safe[name] = value
        try:
            return _DUMPS({
                "seq": seq, "ts": ts, "kind": _clean(kind), "machine": _clean(machine),
                "subject": _clean(subject), "event": _clean(event),
                "src": None if src is None else _clean(src),
                "dst": None if dst is None else _clean(dst), "data": safe,
            }, default=masked_repr, option=_NON_STR_KEYS)
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
        scan = split_log(_read(self._fd, self._end, size), self.path, self._seq)
        report = verify_chain(scan.raw, self._chain, str(self.path), seq=self._seq,
                              prev=self._prev.decode())
        self._seq, self._prev, self._end = report.last_seq, report.last_hash.encode(), \
            self._end + scan.good_bytes
        self.locked = _lock_state(scan.raw, self.locked)
        _note_calls(scan.raw, self.book)
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
        """fsync (unless ``sync="never"``) and rewrite the anchor, fsynced the same way
        (file lock held)."""
        assert self._fd is not None
        if self.sync != "never":
            os.fsync(self._fd)
        self._since_sync = 0
        self._write_anchor()

    def _write_anchor(self) -> None:
        assert self.path is not None
        head = self._prev.decode()
        anchor: dict[str, object] = {"format": FORMAT, "chain": self._chain.name,
                                     "seq": self._seq, "hash": head}
        mac = self._chain.anchor_mac(self._seq, head)
        if mac is not None:
            anchor["mac"] = mac
        write_atomic(anchor_path(self.path), json.dumps(anchor) + "\n",
                     fsync=self.sync != "never")

    def _locked_sync(self) -> None:
        """Catch up with other writers, then sync: the anchor names the file's real head."""
        fd = self._fd
        assert fd is not None
        if self._held:
            self._sync()
            return
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

    @property
    def dropped(self) -> int:
        """Events a memory log no longer holds: its oldest, beyond ``keep`` (a file log: 0)."""
        with self.lock:
            if self.path is not None:
                return 0
            self._chain_pending()
            return self._seq - len(self._lines)

    def verify(self) -> ChainReport:
        """Verify the chain of what the log holds: a file log against its anchor, a
        memory log from its oldest kept event (whose ``prev`` the dropped ones made).

        Raises :class:`AuditChainBroken` at the first line that does not verify.
        """
        if self.path is not None:
            return verify_chain(scan_log(self.path).raw, self._chain, str(self.path),
                                anchor=read_anchor(self.path))
        lines = self.raw_lines()
        seq, prev = 0, GENESIS
        if lines and not lines[0].startswith(b'{"seq":1,'):
            first = orjson.loads(lines[0])
            seq, prev = first["seq"] - 1, first["prev"]
        return verify_chain(lines, self._chain, "<memory>", seq=seq, prev=prev)

    def raw_lines(self) -> list[bytes]:
        """Every whole line so far, as bytes without the newline (a file log is re-read;
        a memory log holds its newest ``keep``, see :attr:`dropped`)."""
        with self.lock:
            if self.path is None:
                self._chain_pending()
                return [line[:-1] for line in self._lines]
        return scan_log(self.path).raw

    def lines(self) -> list[str]:
        """Every line so far (a file log is read back from disk)."""
        return [line.decode("utf-8") for line in self.raw_lines()]

    def records(self) -> Iterator[dict[str, Any]]:
        """Every event as a dict, in order (a file log is read back in chunks)."""
        if self.path is None:
            for line in self.raw_lines():
                yield orjson.loads(line)
        else:
            yield from self.read_records(self.path)

    @staticmethod
    def read_records(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
        """Every whole event of a log file as a dict, in order (a torn tail is skipped).

        The file is read in chunks as the records are taken: memory does not grow
        with the log.
        """
        loads = orjson.loads
        with LogReader(path) as reader:
            for batch in reader.batches():
                for line in batch:
                    yield loads(line)

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


def _lock_state(lines: Sequence[bytes], locked: bool) -> bool:
    """The system lock after ``lines`` (verified lines of this log), from ``locked``."""
    for line in lines:
        at = line.find(b',"kind":"') + 9  # the first is the envelope's: seq and ts hold none
        if line.startswith(b'lock"', at):
            locked = True
        elif line.startswith(b'unlock"', at):
            locked = False
    return locked


_CALL_KINDS = (b'ticket"', b'idempotency"')


def _note_calls(lines: Sequence[bytes], book: CallBook) -> None:
    """Take the ``ticket`` and ``idempotency`` events of ``lines`` (verified lines of this
    log) into ``book``; one that does not fit its record is left out (only buddy
    writes a keyed log; replay says what is wrong with such an event)."""
    for line in lines:
        at = line.find(b',"kind":"') + 9
        if not line.startswith(_CALL_KINDS, at):
            continue
        try:
            event = orjson.loads(line)
            _, data = decode_event(line, "", event["seq"])
            record = as_record(event["kind"], event["event"], data)
        except Exception:  # a line that does not fit is left out
            continue
        if record is not None:
            book.note(event["ts"], event["kind"], event["event"], event["subject"], record)


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
