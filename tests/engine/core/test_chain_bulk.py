"""ChainCheck's joined comparisons (``_bulk``) against its line-by-line loop.

Whatever a log holds, verifying it gives the same report, or the same error
(class, message, seq), with the joined comparisons as with the loop alone.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

from hypothesis import given
from hypothesis import strategies as st

from buddy.engine import AuditLog
from buddy.engine.core._chain import (
    FORMAT,
    Anchor,
    Chain,
    ChainCheck,
    LogReader,
    verify_reader,
)
from buddy.rules.base.errors import AuditError
from tests.helpers import ManualClock

KEY = b"k" * 32


def make_log(key: bytes | None) -> list[bytes]:
    audit = AuditLog.memory(clock=ManualClock(), key=key)
    for i in range(13):
        data: dict[str, Any] = {"i": i, "text": "x" * (i * 7 % 30)}
        if i % 4 == 1:
            data["args"] = {"a": 1, "hash": '","hash":"'}  # raw ,"hash":" in a body
        audit.append("recover", "audit", "log", "note", None, None, data)
    return [line.encode() for line in audit.lines()]


LOGS = {None: make_log(None), KEY: make_log(KEY)}


@contextmanager
def per_line() -> Iterator[None]:
    """ChainCheck without its joined comparisons: the loop alone, as before them."""
    with mock.patch.object(ChainCheck, "_bulk", lambda self, lines, seq: False):
        yield


def outcome(run: Callable[[], Any]) -> tuple[Any, ...]:
    try:
        return ("ok", run())
    except AuditError as exc:
        return (type(exc).__name__, str(exc), getattr(exc, "seq", None))


@st.composite
def mutated(draw: st.DrawFn) -> tuple[bytes | None, list[bytes]]:
    key = draw(st.sampled_from([None, KEY]))
    lines = list(LOGS[key])
    for _ in range(draw(st.integers(0, 2))):
        kind = draw(st.sampled_from(["byte", "insert", "delete", "dup", "swap", "seq",
                                     "upper", "cut", "key", "prev"]))
        i = draw(st.integers(0, len(lines) - 1))
        line = lines[i]
        if not line:  # cut to nothing before: nothing more to edit in it
            continue
        if kind == "byte":
            at = draw(st.integers(0, len(line) - 1))
            lines[i] = line[:at] + bytes([draw(st.integers(0, 255))]) + line[at + 1:]
        elif kind == "insert":
            at = draw(st.integers(0, len(line)))
            what = draw(st.sampled_from([b',"hash":"', b'"}', b"\n", b"\xff", b"a"]))
            lines[i] = line[:at] + what + line[at:]
        elif kind == "delete" and len(lines) > 1:
            del lines[i]
        elif kind == "dup":
            lines.insert(draw(st.integers(0, len(lines))), line)
        elif kind == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], line
        elif kind == "seq":
            lines[i] = line.replace(b'{"seq":%d,' % (i + 1),
                                    b'{"seq":%d,' % draw(st.integers(0, 20)), 1)
        elif kind == "upper":
            lines[i] = line[:-66] + line[-66:].upper()
        elif kind == "cut":
            lines[i] = line[:draw(st.integers(0, len(line) - 1))]
        elif kind == "prev":  # another line's hash as its prev, hashed again with the key
            other = lines[draw(st.integers(0, len(lines) - 1))]
            lines[i] = line[:-140] + other[-66:-2] + line[-76:]
            rechain(lines, key, i, relink=False, stop=i + 1)
            rechain(lines, key, i + 1, relink=True)  # the rest follows it: one break
        elif kind == "key":  # the header says the other chain, or lines of the other log
            other = LOGS[KEY if key is None else None]
            lines[i] = other[min(i, len(other) - 1)]  # (a log grown by "dup" is longer)
    if draw(st.booleans()):  # hashed again by one who has the key: only links and seqs break
        rechain(lines, key, draw(st.integers(0, len(lines))), relink=draw(st.booleans()))
    return key, lines


def rechain(lines: list[bytes], key: bytes | None, start: int, *, relink: bool,
            stop: int | None = None) -> None:
    """Hash ``lines[start:]`` again (their prevs too when ``relink``), as a writer would."""
    chain = Chain(key)
    prev = lines[start - 1][-66:-2] if start else b"0" * 64
    for i in range(start, len(lines) if stop is None else stop):
        body = lines[i][:-75] + b"}"
        if len(body) < 75:
            return
        if relink:
            body = body[:-66] + prev + body[-2:]
        prev = chain.digest(body).encode()
        lines[i] = body[:-1] + b',"hash":"' + prev + b'"}'


def anchors(key: bytes | None) -> st.SearchStrategy[Anchor | None]:
    chain, lines = Chain(key), LOGS[key]

    def at(seq: int) -> Anchor:
        digest = lines[seq - 1][-66:-2].decode() if seq else "0" * 64
        return Anchor(FORMAT, chain.name, seq, digest, chain.anchor_mac(seq, digest))

    return st.none() | st.integers(0, len(lines) + 1).map(
        lambda seq: at(min(seq, len(lines))) if seq <= len(lines)
        else Anchor(FORMAT, chain.name, seq, "0" * 64, chain.anchor_mac(seq, "0" * 64)))


class TestBulkIsTheLoop:
    def test_a_whole_log_goes_the_joined_way_with_a_hash_key_in_a_value(self):
        for key, lines in LOGS.items():
            assert any(b',"hash":"' in line[:-75] for line in lines)
            check = ChainCheck(Chain(key), "log")
            check.line(lines[0])
            assert check._bulk(lines[1:], 1)
            assert (check.seq, check.last) == (len(lines), lines[-1][-66:-2])

    @given(mutated(), st.data())
    def test_batches_give_what_the_loop_gives(self, log, data):
        key, lines = log
        anchor = data.draw(anchors(key))
        sizes = data.draw(st.lists(st.integers(1, 6), min_size=len(lines), max_size=len(lines)))

        def run() -> Any:
            check, at = ChainCheck(Chain(key), "log", anchor=anchor), 0
            for size in sizes:
                check.feed(lines[at:at + size])
                at += size
            return check.end(), check.at

        with per_line():
            before = outcome(run)
        assert outcome(run) == before

    @given(mutated(), st.data())
    def test_a_file_in_any_chunks_gives_what_the_loop_gives(self, log, data):
        key, lines = log
        anchor = data.draw(anchors(key))
        raw = b"".join(line + b"\n" for line in lines)
        raw = raw[:len(raw) - data.draw(st.integers(0, 3))]  # a torn tail, at times
        chunk = data.draw(st.integers(1, 700))

        def run() -> Any:
            reader = LogReader("log", chunk_bytes=chunk, file=io.BytesIO(raw))
            return verify_reader(reader, key=key, anchor=anchor)

        with per_line():
            before = outcome(run)
        assert outcome(run) == before
