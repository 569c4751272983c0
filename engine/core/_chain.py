"""The hash chain of an audit log: keys, line hashes, reading, verifying and the anchor.

A line's ``hash`` is SHA-256 (HMAC-SHA-256 with a key) of its own bytes up to
``,"hash"``; ``prev`` is the hash of the line before. :class:`LogReader`
streams a file as batches of whole lines (split on ``\\n`` bytes only) and a
torn tail, :class:`ChainCheck` verifies the chain batch by batch in constant
memory (:func:`verify_log` both, for a file; :func:`scan_log` and
:func:`verify_lines` for lines in a list), and the head anchor beside a file
log (``<log>.anchor``: last seq and hash, with a key an HMAC too) shows that
no event was cut from its end up to the last sync.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import operator
import os
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import repeat
from operator import methodcaller
from pathlib import Path
from typing import Any, BinaryIO, cast

import attrs

from buddy.rules.base._convert import structure_checked
from buddy.rules.base._files import NotReadable, read_regular, split_lines
from buddy.rules.base.errors import AuditChainBroken, AuditError, AuditFormatError

__all__ = [
    "FORMAT",
    "GENESIS",
    "Anchor",
    "Chain",
    "ChainCheck",
    "ChainReport",
    "LogReader",
    "LogScan",
    "anchor_path",
    "load_key",
    "missing_anchor",
    "read_anchor",
    "scan_log",
    "split_log",
    "verify_chain",
    "verify_lines",
    "verify_log",
    "verify_reader",
]

FORMAT = "buddy-audit/1"
GENESIS = "0" * 64
FIELDS = ("seq", "ts", "kind", "machine", "subject", "event", "src", "dst", "data", "prev", "hash")
_HASH_TAIL = len(',"hash":"') + 64 + 2  # the bytes after the hashed body: ,"hash":"<64>"}
_PREV = b',"prev":"'
_HASH = b',"hash":"'


# -- keys ---------------------------------------------------------------------

#: The shortest audit key :func:`load_key` accepts.
MIN_KEY_BYTES = 16


def load_key(*, file: str | os.PathLike[str] | None = None, env: str | None = None,
             environ: Mapping[str, str] | None = None) -> bytes | None:
    """Read an HMAC key from a file or an environment variable (never from the log).

    Returns None when neither is given. Raises :class:`AuditError` when the
    named source is missing or empty, or holds fewer than :data:`MIN_KEY_BYTES`
    bytes (a short key is guessed, and then anyone can re-chain the log).
    """
    if file is not None:
        try:
            key = read_regular(file, 64 * 1024).strip()
        except NotReadable as exc:
            raise AuditError(f"{file}: cannot read audit key: {exc}") from None
        except OSError as exc:
            raise AuditError(f"{file}: cannot read audit key: {exc.strerror}") from None
        if not key:
            raise AuditError(f"{file}: audit key file is empty")
        where = str(file)
    elif env is not None:
        value = (os.environ if environ is None else environ).get(env, "")
        if not value:
            raise AuditError(f"environment variable {env} (audit key) is not set or empty")
        key, where = value.encode("utf-8"), f"environment variable {env}"
    else:
        return None
    if len(key) < MIN_KEY_BYTES:
        raise AuditError(f"{where}: audit key of {len(key)} bytes: it needs at least "
                         f"{MIN_KEY_BYTES} (e.g. `openssl rand -hex 32`)")
    return key


class Chain:
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


def missing_anchor(path: Path, hint: str) -> str:
    return (f"no anchor {anchor_path(path).name} beside the log: events cut from its end "
            f"would go unnoticed; {hint}")


# -- reading and verifying ----------------------------------------------------

def anchor_path(path: Path) -> Path:
    """``<log>.anchor`` beside the log (for a path with no name, ``.anchor`` in it)."""
    return path.with_name(path.name + ".anchor") if path.name else path / ".anchor"


@attrs.frozen
class Anchor:
    """The head anchor beside a file log: its last seq and hash (and, keyed, their HMAC)."""

    format: str
    chain: str
    seq: int
    hash: str
    mac: str | None = None


#: The most of an anchor file read: an anchor is one line of some 200 bytes.
MAX_ANCHOR_BYTES = 64 << 10


def read_anchor(path: str | os.PathLike[str]) -> Anchor | None:
    """The head anchor beside ``path``, or None when there is none.

    Raises :class:`AuditFormatError` when it is unreadable or malformed, or not
    a regular file (a FIFO, a device: refused, never waited on) or larger than
    :data:`MAX_ANCHOR_BYTES`.
    """
    ap = anchor_path(Path(path))
    try:
        regular = stat.S_ISREG(ap.stat().st_mode)
        if regular:
            with ap.open("rb") as f:
                raw = f.read(MAX_ANCHOR_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AuditFormatError(str(ap), f"unreadable anchor: {exc}") from None
    if not regular:  # a FIFO would block the read for ever, a device never end
        raise AuditFormatError(str(ap), "unreadable anchor: not a regular file")
    if len(raw) > MAX_ANCHOR_BYTES:
        raise AuditFormatError(str(ap), f"unreadable anchor: larger than {MAX_ANCHOR_BYTES} "
                               "bytes")
    try:
        data = json.loads(raw.decode("utf-8"))
    except ValueError as exc:
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


#: Bytes read at a time when a log file is streamed: some hundreds of events, so that a
#: batch's lines and decoded events stay in the CPU's caches while it is replayed (4 MiB
#: chunks replay some 15% slower).
CHUNK_BYTES = 256 << 10


class LogReader:
    """A log file read in chunks, as batches of whole lines (split on ``\\n`` only).

    The file is opened when the reader is made (raising :class:`AuditError`
    when it cannot be); :meth:`batches` reads it to its end, each line checked
    to be UTF-8 (:class:`AuditFormatError` names the first that is not) and
    counted. Once read, :attr:`torn` describes a last line without its
    newline (a write cut off), whose bytes are :attr:`torn_bytes`, and
    :attr:`good_bytes` is the length of the whole lines before it. Memory is a
    chunk or two, whatever the length of the log. Given an open binary
    ``file`` (a pipe: see :mod:`._verifier`), the reader reads it instead,
    ``path`` naming it in messages; :meth:`chunks` reads the bytes as they come.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "log.jsonl"
    >>> _ = path.write_bytes(b'{"a":"x\\xe2\\x80\\xa8y"}\\n{"b":1}\\n{"c"')
    >>> with LogReader(path, chunk_bytes=4) as reader:
    ...     lines = [line for batch in reader.batches() for line in batch]
    >>> lines, reader.lines, reader.good_bytes, reader.torn_bytes
    ([b'{"a":"x\\xe2\\x80\\xa8y"}', b'{"b":1}'], 2, 22, b'{"c"')
    """

    def __init__(self, path: str | os.PathLike[str], *, chunk_bytes: int | None = None,
                 file: BinaryIO | None = None) -> None:
        self.path = p = Path(path)
        self._file: BinaryIO
        if file is not None:
            self._file = file
        else:
            try:
                if not stat.S_ISREG(p.stat().st_mode):  # a FIFO would block the open for ever
                    raise AuditError(f"{p}: not a regular file")
                self._file = p.open("rb", buffering=0)
            except FileNotFoundError:
                raise AuditError(f"{p}: no such file") from None
            except OSError as exc:
                raise AuditError(f"{p}: cannot read: {exc.strerror}") from None
        self.chunk_bytes = max(1, CHUNK_BYTES if chunk_bytes is None else chunk_bytes)
        self.lines = 0                  # whole lines read so far
        self.good_bytes = 0             # their bytes, newlines included
        self.torn: str | None = None    # once read: the torn tail, described
        self.torn_bytes = b""

    def batches(self) -> Iterator[list[bytes]]:
        """The whole lines of the rest of the file, a chunk's worth at a time.

        Raises :class:`AuditError` when the file cannot be read, and
        :class:`AuditFormatError` naming the line that is not UTF-8.
        """
        parts: list[bytes] = []
        try:
            for chunk in self.chunks():
                parts.append(chunk)
                if b"\n" not in chunk:  # a line longer than a chunk: read on
                    continue
                scan = split_log(b"".join(parts) if len(parts) > 1 else chunk, self.path,
                                 self.lines)
                parts = [scan.torn_bytes] if scan.torn_bytes else []
                self.lines += len(scan.raw)
                self.good_bytes += scan.good_bytes
                yield scan.raw
        finally:
            self.close()
        tail = split_log(b"".join(parts), self.path, self.lines)  # no newline left in it
        self.torn, self.torn_bytes = tail.torn, tail.torn_bytes

    def chunks(self) -> Iterator[bytes]:
        """The rest of the file's bytes, as read, a chunk at a time (nothing checked).

        Raises :class:`AuditError` when the file cannot be read.
        """
        read, size = self._file.read, self.chunk_bytes
        try:
            while chunk := read(size):
                yield chunk
        except OSError as exc:
            raise AuditError(f"{self.path}: cannot read: {exc.strerror}") from None

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> LogReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def scan_log(path: str | os.PathLike[str]) -> LogScan:
    """Split a log file into whole lines (on ``\\n`` only); a last line without one is torn.

    The whole log in a list: to go through it once, stream it with :class:`LogReader`.
    Raises :class:`AuditError` when the file cannot be read, and
    :class:`AuditFormatError` naming the line that is not UTF-8.
    """
    raw: list[bytes] = []
    with LogReader(path) as reader:
        for batch in reader.batches():
            raw += batch
    return LogScan(raw, reader.torn, reader.torn_bytes, reader.good_bytes)


def split_log(raw: bytes, path: Path, seq: int = 0) -> LogScan:
    """Split ``raw``, the bytes of a log after its line ``seq``, into whole lines and a
    torn tail; raises :class:`AuditFormatError` naming the first line not UTF-8."""
    lines, tail = split_lines(raw)
    end = len(raw) - len(tail)
    if not raw.isascii():  # ASCII is UTF-8 (most logs): no text to make to know it
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
                 key_chain: Chain | None = None, source: str = "<log>",
                 anchor: Anchor | None = None) -> ChainReport:
    """Verify the hash chain of ``lines`` (and the anchor, when given).

    Raises :class:`AuditChainBroken` at the first line that does not verify:
    an edited, deleted, inserted or reordered line, a log cut short of its
    anchor, an anchor rewritten without the key, or a plain-SHA chain where a
    key is configured.
    """
    raw = [line.encode("utf-8") if isinstance(line, str) else line for line in lines]
    return verify_chain(raw, key_chain or Chain(key), source, anchor=anchor)


def verify_chain(lines: Sequence[bytes], chain: Chain, source: str, *, seq: int = 0,
                 prev: str = GENESIS, anchor: Anchor | None = None) -> ChainReport:
    """Verify ``lines`` as the continuation of a chain at ``seq``/``prev``."""
    check = ChainCheck(chain, source, seq=seq, prev=prev, anchor=anchor)
    check.feed(lines)
    return check.end()


def verify_log(path: str | os.PathLike[str], *, key: bytes | None = None,
               anchor: Anchor | None = None) -> tuple[ChainReport, str | None]:
    """Verify the chain of a log file (and its anchor, when given), reading it in chunks.

    Returns the report and the torn tail's description (None when the last
    line is whole). Raises as :func:`verify_lines` does, and as
    :class:`LogReader` does for a file that cannot be read or is not UTF-8.
    """
    return verify_reader(LogReader(path), key=key, anchor=anchor)


def verify_reader(reader: LogReader, *, key: bytes | None = None,
                  anchor: Anchor | None = None) -> tuple[ChainReport, str | None]:
    """:func:`verify_log` of what ``reader`` reads (it is closed after)."""
    with reader:
        check = ChainCheck(Chain(key), str(reader.path), anchor=anchor)
        batches = reader.batches()
        try:
            for batch in batches:
                check.feed(batch)
        except AuditChainBroken:
            drain(batches)
            raise
    return check.end(), reader.torn


def drain(batches: Iterator[list[bytes]]) -> None:
    """Read the rest of a log whose chain broke: a line further on that is not UTF-8 is
    reported first, as when the whole file is read before its chain is verified."""
    for _ in batches:
        pass


class ChainCheck:
    """Verifies a chain as its lines come, batch by batch, keeping only the head.

    :meth:`feed` raises :class:`AuditChainBroken` at the first line that does
    not verify; :meth:`end` checks the anchor, when given, and returns the
    :class:`ChainReport`. Each line is hashed once, and checked against what
    its predecessor's hash makes its tail (``,"prev":"<hash>","hash":"``) in
    one comparison; a line that fails it, and the header, go through
    :meth:`line`, which says why. A batch is first tried whole (:meth:`_bulk`:
    its hashes, links and seqs in three joined comparisons); the loop runs only
    when that fails.
    """

    def __init__(self, chain: Chain, source: str, *, seq: int = 0, prev: str = GENESIS,
                 anchor: Anchor | None = None) -> None:
        self.chain, self.source, self.anchor = chain, source, anchor
        self.start = self.seq = seq
        self.last = prev.encode()
        self.at: bytes | None = None    # the hash of the line at the anchor's seq

    def feed(self, lines: Sequence[bytes]) -> None:
        """Verify the next ``lines`` of the chain."""
        seq = self.seq
        if self.anchor is not None and seq < self.anchor.seq <= seq + len(lines):
            self.at = lines[self.anchor.seq - seq - 1][-66:-2]
        todo: Sequence[bytes] = lines
        if seq == 0 and lines:  # the header: checked for its chain too
            self.line(lines[0])
            seq, todo = 1, lines[1:]
        if self._bulk(todo, seq):
            return
        new, same, last = self.chain.new, hmac.compare_digest, self.last
        tail = b'%s%s","hash":"' % (_PREV, last)
        for line in todo:
            digest = new(line[:-_HASH_TAIL] + b"}").hexdigest().encode()
            if line[-149:-66] != tail or not same(line[-66:], digest + b'"}') or \
                    not line.startswith(b'{"seq":%d,' % (seq + 1)):
                self.seq, self.last = seq, last
                self.line(line)  # raises, but for a line that only looked odd
                digest = line[-66:-2]
            seq, last = seq + 1, digest
            tail = b'%s%s","hash":"' % (_PREV, digest)
        self.seq, self.last = seq, last

    def _bulk(self, lines: Sequence[bytes], seq: int) -> bool:
        """Verify ``lines`` after line ``seq`` in a few joined comparisons; False if any fails.

        Exactly what :meth:`feed`'s loop accepts, line for line (each slice of a line
        is at most as long as its piece of the expected bytes, so equal joins are equal
        pieces): its hash is the digest of its body, its ``,"prev":"<h>","hash":"`` the
        digest before it, it starts ``{"seq":<seq>,``. On False nothing has changed: the
        loop goes through the lines again and says where the chain breaks.
        """
        n = len(lines)
        if not n:
            return False
        new, keyed = self.chain.new, self.chain.keyed
        bodies = map(_concat, map(_cut, lines, repeat(_BODY)), repeat(b"}"))
        digests = list(map(_HEXDIGEST, map(new, bodies)))  # str: ASCII hex
        # The expected tails, from each line's prev to its end: prev, hash, in turn.
        parts: list[str] = [_LINK] * (4 * n)
        parts[0] = self.last.decode()
        parts[2::4] = digests
        parts[4::4] = digests[:-1]
        parts[3::4] = [_NEXT] * n
        parts[-1] = '"}'
        tails = b"".join(map(_cut, lines, repeat(_TAIL)))
        expected = (_PREV_TEXT + "".join(parts)).encode()
        if not (hmac.compare_digest(tails, expected) if keyed else tails == expected):
            return False
        if not _seqs_follow(lines, seq + 1):
            return False
        self.seq, self.last = seq + n, digests[-1].encode()
        return True

    def line(self, line: bytes) -> None:
        """Verify the next line alone, saying what breaks the chain there."""
        seq, last, keyed, source = self.seq, self.last, self.chain.keyed, self.source
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
        if not hmac.compare_digest(self.chain.new(body).hexdigest().encode(), digest):
            if seq == 0 and keyed and b'"chain":"sha256"' in line:
                raise _broken(source, 1, "hash mismatch: a key was given but the header says "
                              "sha256: the log was never keyed, or was re-chained without "
                              "the key")
            raise _broken(source, seq + 1, "hash mismatch (line edited" +
                          (", or chained without the key)" if keyed else ")"))
        if not line.startswith(b'{"seq":%d,' % (seq + 1)):
            raise _broken(source, seq + 1, "sequence number out of order")
        self.last, self.seq = digest, seq + 1

    def end(self) -> ChainReport:
        """Check the anchor (when given) against the head; the report."""
        seq, head = self.seq, self.last.decode()
        if self.anchor is not None:
            _check_anchor(self.anchor, self.chain, self.at, seq, head, self.source)
        return ChainReport(seq - self.start, seq, head, self.chain.name)


#: The pieces of a line :meth:`ChainCheck._bulk` cuts and joins.
_BODY = slice(None, -_HASH_TAIL)    # the hashed body, but its closing brace
_TAIL = slice(-149, None)           # ,"prev":"<64>","hash":"<64>"}
_PREV_TEXT = _PREV.decode()
_LINK = '","hash":"'
_NEXT = '"},"prev":"'
_HEXDIGEST = methodcaller("hexdigest")
_cut = cast(Callable[[bytes, slice], bytes], operator.getitem)  # typed for map()
_concat = bytes.__add__


def _seqs_follow(lines: Sequence[bytes], seq: int) -> bool:
    """Whether ``lines`` start ``{"seq":<seq>,``, ``{"seq":<seq + 1>,`` and so on."""
    end, at = seq + len(lines), 0
    while seq < end:  # a run of seqs of as many digits: one cut and one format each
        digits = len(str(seq))
        top = min(end, 10 ** digits)
        run = lines[at:at + top - seq] if at or top < end else lines
        heads = b"".join(map(_cut, run, repeat(slice(0, 8 + digits))))
        if heads != (b'{"seq":%d,' * (top - seq)) % tuple(range(seq, top)):
            return False
        at, seq = at + top - seq, top
    return True


def _broken(source: str, seq: int, reason: str) -> AuditChainBroken:
    return AuditChainBroken(f"{source}:{seq}", seq, reason)  # line n holds seq n


def _check_anchor(anchor: Anchor, chain: Chain, at_seq: bytes | None, seq: int, head: str,
                  source: str) -> None:
    """``at_seq``: the hash of the line at the anchor's seq, when the log reached it."""
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
        at = at_seq.decode() if anchor.seq > 0 and at_seq is not None else None
    if at != anchor.hash:
        raise AuditChainBroken(source, anchor.seq, "the event at the anchor's seq does not "
                               "match the anchor's hash")
