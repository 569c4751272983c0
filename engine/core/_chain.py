"""The hash chain of an audit log: keys, line hashes, reading, verifying and the anchor.

A line's ``hash`` is SHA-256 (HMAC-SHA-256 with a key) of its own bytes up to
``,"hash"``; ``prev`` is the hash of the line before. :func:`scan_log` splits
a file into whole lines (on ``\\n`` bytes only) and a torn tail,
:func:`verify_lines` checks the chain, and the head anchor beside a file log
(``<log>.anchor``: last seq and hash, with a key an HMAC too) shows that no
event was cut from its end up to the last sync.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from buddy.rules.base._convert import structure_checked
from buddy.rules.base._files import split_lines
from buddy.rules.base.errors import AuditChainBroken, AuditError, AuditFormatError

__all__ = [
    "FORMAT",
    "GENESIS",
    "Anchor",
    "Chain",
    "ChainReport",
    "LogScan",
    "anchor_path",
    "load_key",
    "missing_anchor",
    "read_anchor",
    "scan_log",
    "split_log",
    "verify_chain",
    "verify_lines",
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
            key = Path(file).read_bytes().strip()
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
    return split_log(raw, p)


def split_log(raw: bytes, path: Path, seq: int = 0) -> LogScan:
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
            if seq == 0 and keyed and b'"chain":"sha256"' in line:
                raise _broken(source, 1, "hash mismatch: a key was given but the header says "
                              "sha256: the log was never keyed, or was re-chained without "
                              "the key")
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


def _check_anchor(anchor: Anchor, chain: Chain, lines: Sequence[bytes], seq: int, head: str,
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
