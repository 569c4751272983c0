"""The audit trail: an append-only, hash-chained JSON Lines log.

Every line is one event, a JSON object with keys in this order::

    seq, ts, kind, machine, subject, event, src, dst, data, prev, hash

``prev`` is the ``hash`` of the line before (64 zeros for the first), and
``hash`` is SHA-256 (or HMAC-SHA-256 when a key is configured) of the line's
own bytes up to and excluding ``,"hash":...``. A verifier therefore needs no
JSON re-encoding: it hashes the bytes it read.

Beside a file log lies its head anchor, ``<log>.anchor``: the last sequence
number and hash, rewritten atomically at every sync point and on close, so a
log cut short at its end no longer matches it. With a key, an edited log
re-chained by someone without the key fails verification.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import attrs
import orjson

from buddy.rules.base._convert import converter
from buddy.rules.base._files import write_atomic
from buddy.rules.base._masking import Masker
from buddy.rules.base.errors import AuditChainBroken, AuditError, AuditFormatError

__all__ = [
    "AuditEvent",
    "AuditLog",
    "LogScan",
    "load_key",
    "scan_log",
    "verify_lines",
]

FORMAT = "buddy-audit/1"
GENESIS = "0" * 64
FIELDS = ("seq", "ts", "kind", "machine", "subject", "event", "src", "dst", "data", "prev", "hash")
#: An event's subject, or a function making it from the event's sequence number.
Subject = str | Callable[[int], str]
_HASH_TAIL = len(',"hash":"') + 64 + 2  # the bytes after the hashed body: ,"hash":"<64>"}



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


# -- the log ------------------------------------------------------------------

class AuditLog:
    """An append-only, hash-chained event log, in memory or in a file.

    Appends are thread-safe: one lock orders them, so sequence numbers and the
    chain never interleave. The in-memory log keeps records and serialises them
    (computing the chain) when they are read; the file log serialises, writes
    and flushes each event at once, and fsyncs on its ``sync`` policy.

    >>> log = AuditLog.memory(clock=lambda: 0.0)
    >>> log.append("note", "system", "demo", "hello", None, None, {"n": 1})  # seq 1 is the header
    2
    >>> verify_lines(log.lines()).last_seq
    2
    """

    def __init__(self, *, clock: Callable[[], float], key: bytes | None = None,
                 path: Path | None = None, sync: str = "batch", sync_every: int = 256,
                 masker: Masker | None = None) -> None:
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
        self._file: IO[bytes] | None = None
        self._since_sync = 0
        self._seq = 0
        self._prev = GENESIS
        self.recovered_torn: str | None = None
        if path is not None:
            self._open_file(path)
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
             masker: Masker | None = None) -> AuditLog:
        """Open (or create) a file log and append to it.

        An existing log is verified first; a torn last line (a crash mid-write)
        is moved aside to ``<log>.torn-<offset>`` and the chain continues from
        the last whole event. ``sync``: ``always`` fsyncs every event,
        ``batch`` every ``sync_every`` events, ``never`` leaves it to the OS;
        each sync point (and close) rewrites the anchor.
        """
        return cls(clock=clock, key=key, path=Path(path), sync=sync, sync_every=sync_every,
                   masker=masker)

    def _header(self) -> None:
        self.append_locked("open", "audit", "log", "open", None, None,
                           {"format": FORMAT, "chain": self._chain.name})

    def _open_file(self, path: Path) -> None:
        exists = path.exists() and path.stat().st_size > 0
        anchor = read_anchor(path)
        if not exists and anchor is not None and anchor["seq"] > 0:
            raise AuditChainBroken(str(path), 0, f"log is empty but its anchor says "
                                   f"{anchor['seq']}: events were cut from the end")
        if exists:
            scan = scan_log(path)
            report = verify_lines(scan.lines, key_chain=self._chain, source=str(path),
                                  anchor=anchor)
            if scan.torn is not None:
                aside = path.with_name(f"{path.name}.torn-{scan.good_bytes}")
                aside.write_bytes(scan.torn_bytes)
                with open(path, "r+b") as fh:
                    fh.truncate(scan.good_bytes)
                self.recovered_torn = str(aside)
            self._seq, self._prev = report.last_seq, report.last_hash
        self._file = open(path, "ab")  # noqa: SIM115
        if not exists:
            self._header()
        elif self.recovered_torn is not None:
            self.append_locked("recover", "audit", "log", "torn_tail_moved", None, None,
                               {"moved_to": Path(self.recovered_torn).name})
        self._write_anchor()

    # -- writing -------------------------------------------------------------
    def append(self, kind: str, machine: str, subject: Subject, event: str, src: str | None,
               dst: str | None, data: dict[str, Any], ts: float | None = None) -> int:
        """Append one event and return its sequence number.

        ``ts`` defaults to the log's clock; pass it when the caller already read
        the clock for the decision the event records. ``subject`` may be a
        function of the event's sequence number (``lambda seq: f"grant-{seq}"``):
        an id made so is unique in the log by construction, whichever process
        writes it.
        """
        with self.lock:
            return self.append_locked(kind, machine, subject, event, src, dst, data, ts)

    def append_locked(self, kind: str, machine: str, subject: Subject, event: str,
                      src: str | None, dst: str | None, data: dict[str, Any],
                      ts: float | None = None) -> int:
        """:meth:`append` for a caller that already holds :attr:`lock` (the hot path)."""
        self._seq = seq = self._seq + 1
        if not isinstance(subject, str):
            subject = subject(seq)
        body = orjson.dumps({
            "seq": seq, "ts": self._clock() if ts is None else ts, "kind": kind,
            "machine": machine, "subject": subject, "event": event, "src": src, "dst": dst,
            "data": data, "prev": self._prev,
        }, default=repr, option=orjson.OPT_NON_STR_KEYS)
        self._prev = digest = self._new_hash(body).hexdigest()
        line = b'%s,"hash":"%s"}\n' % (body[:-1], digest.encode())
        if self._file is None:
            self._lines.append(line)
            return seq
        try:
            self._file.write(line)
            self._file.flush()
        except OSError as exc:
            raise AuditError(f"{self.path}: cannot write audit event {seq}: "
                             f"{exc.strerror}") from None
        self._since_sync += 1
        if self.sync == "always" or self._since_sync >= self.sync_every:
            self._sync()
        return seq

    def _sync(self) -> None:
        assert self._file is not None
        if self.sync != "never":
            os.fsync(self._file.fileno())
        self._since_sync = 0
        self._write_anchor()

    def _write_anchor(self) -> None:
        assert self.path is not None
        write_atomic(anchor_path(self.path), json.dumps(
            {"format": FORMAT, "chain": self._chain.name, "seq": self._seq,
             "hash": self._prev}) + "\n")

    def flush(self) -> None:
        """Sync the file log now: fsync and rewrite the anchor."""
        with self.lock:
            if self._file is not None:
                self._sync()

    def close(self) -> None:
        with self.lock:
            if self._file is not None and not self._file.closed:
                self._file.flush()
                self._sync()
                self._file.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading -------------------------------------------------------------
    @property
    def last_seq(self) -> int:
        return self._seq

    @property
    def keyed(self) -> bool:
        return self._chain.keyed

    def lines(self) -> list[str]:
        """Every line so far (a file log is read back from disk)."""
        with self.lock:
            if self._file is None:
                return [line[:-1].decode("utf-8") for line in self._lines]
            self._file.flush()
        return scan_log(self.path).lines  # type: ignore[arg-type]

    def records(self) -> Iterator[dict[str, Any]]:
        """Every event as a dict, in order."""
        for line in self.lines():
            yield orjson.loads(line)

    @staticmethod
    def read_records(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
        """Every whole event of a log file as a dict, in order (a torn tail is skipped)."""
        for line in scan_log(path).lines:
            yield orjson.loads(line)

    def events(self) -> list[AuditEvent]:
        """Every event as an :class:`AuditEvent`."""

        return [converter.structure(r, AuditEvent) for r in self.records()]


# -- reading and verifying ----------------------------------------------------

def anchor_path(path: Path) -> Path:
    return path.with_name(path.name + ".anchor")


def read_anchor(path: Path) -> dict[str, Any] | None:
    """The head anchor beside ``path``, or None when there is none."""
    ap = anchor_path(path)
    try:
        data = json.loads(ap.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise AuditFormatError(str(ap), f"unreadable anchor: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("seq"), int) \
            or not isinstance(data.get("hash"), str):
        raise AuditFormatError(str(ap), "anchor must hold integer 'seq' and string 'hash'")
    return data


@attrs.frozen
class LogScan:
    """A log file split into whole lines and a torn tail (if a write was cut off)."""

    lines: list[str]
    torn: str | None      # a description of the torn tail, or None
    torn_bytes: bytes
    good_bytes: int       # length of the whole-lines prefix


def scan_log(path: str | os.PathLike[str]) -> LogScan:
    """Split a log file into whole lines; a last line without its newline is torn."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise AuditError(f"{p}: no such file") from None
    except OSError as exc:
        raise AuditError(f"{p}: cannot read: {exc.strerror}") from None
    end = raw.rfind(b"\n") + 1
    whole, tail = raw[:end], raw[end:]
    try:
        lines = whole.decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        line = whole[: exc.start].count(b"\n") + 1
        raise AuditFormatError(f"{p}:{line}", "not UTF-8 text") from None
    torn = None
    if tail:
        torn = (f"{p}:{len(lines) + 1}: torn last line ({len(tail)} bytes, no newline; "
                "a write was cut off)")
    return LogScan(lines, torn, tail, end)


@attrs.frozen
class ChainReport:
    """What verification found: events verified, the head, and the first break."""

    count: int
    last_seq: int
    last_hash: str
    chain: str


def verify_lines(lines: list[str], *, key: bytes | None = None, key_chain: _Chain | None = None,
                 source: str = "<log>", anchor: Mapping[str, Any] | None = None) -> ChainReport:
    """Verify the hash chain of ``lines`` (and the anchor, when given).

    Raises :class:`AuditChainBroken` at the first line that does not verify:
    an edited, deleted, inserted or reordered line, a log cut short of its
    anchor, or a plain-SHA chain where a key is configured.
    """
    chain = key_chain or _Chain(key)
    prev, seq = GENESIS, 0
    for n, line in enumerate(lines, 1):
        where = f"{source}:{n}"
        if len(line) < _HASH_TAIL + 2 or not line.endswith('"}') \
                or line[-_HASH_TAIL:-66] != ',"hash":"':
            raise AuditChainBroken(where, seq + 1, "line is not a hashed audit event")
        body = line[:-_HASH_TAIL] + "}"
        digest = line[-66:-2]
        if body[-75:-66] != ',"prev":"' or body[-66:-2] != prev:
            raise AuditChainBroken(where, seq + 1, "prev does not match the hash of the line "
                                   "before (a line was deleted, inserted or reordered)")
        if n == 1 and not chain.keyed and '"chain":"hmac-sha256"' in line:
            raise AuditChainBroken(where, 1, "the log is chained with HMAC: give its key "
                                   "(--key-file or --key-env) to verify it")
        if not hmac.compare_digest(chain.digest(body.encode("utf-8")), digest):
            why = "hash mismatch (line edited" + (", or chained without the key)" if chain.keyed
                                                   else ")")
            raise AuditChainBroken(where, seq + 1, why)
        if not line.startswith(f'{{"seq":{seq + 1},'):
            raise AuditChainBroken(where, seq + 1, "sequence number out of order")
        prev, seq = digest, seq + 1
    if anchor is not None:
        a_seq, a_hash = anchor["seq"], anchor["hash"]
        if a_seq > seq:
            raise AuditChainBroken(source, seq, f"log ends at seq {seq} but its anchor says "
                                   f"{a_seq}: events were cut from the end")
        if a_seq == seq and a_hash != prev or a_seq < seq and not _hash_at(lines, a_seq, a_hash):
            raise AuditChainBroken(source, a_seq, "the event at the anchor's seq does not "
                                   "match the anchor's hash")
    return ChainReport(len(lines), seq, prev, chain.name)


def _hash_at(lines: list[str], seq: int, digest: str) -> bool:
    return seq == 0 and digest == GENESIS or 0 < seq <= len(lines) and \
        lines[seq - 1][-66:-2] == digest
