"""BackgroundVerify: the worker's verdict is verify_log's, or the log is verified here."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from buddy.engine import AuditLog
from buddy.engine.core import _verifier
from buddy.engine.core._chain import anchor_path, read_anchor, verify_log
from buddy.engine.core._verifier import BackgroundVerify, background_pays
from buddy.rules.base.errors import AuditChainBroken, AuditError, AuditFormatError
from tests.helpers import ManualClock

KEY = b"k" * 32


def write_log(path: Path, events: int = 30, key: bytes | None = None) -> list[bytes]:
    with AuditLog.open(path, clock=ManualClock(), key=key) as audit:
        for i in range(events - 1):
            audit.append("recover", "audit", "log", "note", None, None, {"i": i})
    return path.read_bytes().split(b"\n")[:-1]


def outcome(fn):
    """What ``fn()`` gives, or the class and message of what it raises."""
    try:
        return fn()
    except AuditError as exc:
        return type(exc), str(exc), getattr(exc, "seq", None)


def both(path: Path, key: bytes | None = None, limit: int | None = None):
    """verify_log's outcome and the background's, on the same log."""
    anchor = outcome(lambda: read_anchor(path))
    anchor = None if isinstance(anchor, tuple) else anchor
    size = path.stat().st_size if limit is None and path.exists() else (limit or 0)
    here = outcome(lambda: verify_log(path, key=key, anchor=anchor, limit=size))
    with BackgroundVerify(path, key=key, anchor=anchor, limit=size) as bv:
        there = outcome(bv.result)
    return here, there


def edit(lines: list[bytes], i: int, new: bytes | None) -> bytes:
    lines = list(lines)
    if new is None:
        del lines[i]
    else:
        lines[i] = new
    return b"".join(line + b"\n" for line in lines)


class TestSameVerdict:
    def test_a_good_log(self, tmp_path):
        path = tmp_path / "log.jsonl"
        write_log(path)
        here, there = both(path)
        assert here == there and here[0].count == 30 and here[1] is None

    def test_a_torn_tail(self, tmp_path):
        path = tmp_path / "log.jsonl"
        write_log(path)
        with path.open("ab") as f:
            f.write(b'{"seq":31,"to')
        here, there = both(path)
        assert here == there and here[1].endswith("torn last line (13 bytes, no newline; "
                                                  "a write was cut off)")

    @pytest.mark.parametrize("change", ["edit", "delete", "swap", "seq", "header", "utf8"])
    def test_a_broken_log(self, tmp_path, change):
        path = tmp_path / "log.jsonl"
        lines = write_log(path)
        if change == "edit":
            data = edit(lines, 7, lines[7].replace(b'"i":6', b'"i":9'))
        elif change == "delete":
            data = edit(lines, 7, None)
        elif change == "swap":
            data = edit(edit(lines, 7, lines[8]).split(b"\n")[:-1], 8, lines[7])
        elif change == "seq":
            data = edit(lines, 7, lines[7].replace(b'{"seq":8,', b'{"seq":9,'))
        elif change == "header":
            data = edit(lines, 0, lines[0][:20] + lines[0][21:])
        else:
            data = edit(lines, 12, lines[12].replace(b'"i":11', b'"i":"\xff"'))
        path.write_bytes(data)
        here, there = both(path)
        assert here == there and here[0] in (AuditChainBroken, AuditFormatError)

    def test_a_log_cut_short_of_its_anchor(self, tmp_path):
        path = tmp_path / "log.jsonl"
        lines = write_log(path)
        path.write_bytes(edit(lines, 29, None))
        here, there = both(path)
        assert here == there and "events were cut from the end" in here[1]

    def test_a_missing_file(self, tmp_path):
        here, there = both(tmp_path / "nope.jsonl", limit=10)
        assert here == there and here[0] is AuditError

    @pytest.mark.parametrize("key", [KEY, b"x" * 32, None])
    def test_a_keyed_log(self, tmp_path, key):
        path = tmp_path / "log.jsonl"
        write_log(path, key=KEY)
        here, there = both(path, key=key)
        assert here == there
        assert (key == KEY) == (here[0] not in (AuditChainBroken, AuditFormatError))

    def test_only_the_bytes_before_the_limit(self, tmp_path):
        path = tmp_path / "log.jsonl"
        lines = write_log(path)
        limit = sum(len(line) + 1 for line in lines[:12]) + 3
        anchor_path(path).unlink()  # it is at seq 30: verified to 12, the end is cut
        with path.open("ab") as f:
            f.write(b"appended after the limit was taken\n")
        here, there = both(path, limit=limit)
        assert here == there == outcome(lambda: verify_log(path, limit=limit))
        assert here[0].count == 12 and "13: torn last line (3 bytes" in here[1]


class TestNoVerdictVerifiesHere:
    def check(self, tmp_path, broken: bool) -> Path:
        path = tmp_path / "log.jsonl"
        lines = write_log(path)
        if broken:
            path.write_bytes(edit(lines, 5, lines[5].replace(b'"i":4', b'"i":5')))
        return path

    def test_here_too_only_the_bytes_before_the_limit(self, tmp_path, monkeypatch):
        path = self.check(tmp_path, broken=False)
        limit = path.stat().st_size
        with path.open("ab") as f:
            f.write(b"appended after the limit was taken\n")
        monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))
        bv = BackgroundVerify(path, key=None, anchor=read_anchor(path), limit=limit)
        assert bv.result() == verify_log(path, anchor=read_anchor(path), limit=limit)

    @pytest.mark.parametrize("broken", [False, True])
    def test_a_worker_that_cannot_start(self, tmp_path, monkeypatch, broken):
        path = self.check(tmp_path, broken)
        here = outcome(lambda: verify_log(path, limit=path.stat().st_size))
        monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))
        bv = BackgroundVerify(path, key=None, anchor=None, limit=path.stat().st_size)
        assert bv._proc is None and outcome(bv.result) == here

    @pytest.mark.parametrize("broken", [False, True])
    def test_a_killed_worker(self, tmp_path, broken):
        path = self.check(tmp_path, broken)
        here = outcome(lambda: verify_log(path, limit=path.stat().st_size))
        bv = BackgroundVerify(path, key=None, anchor=None, limit=path.stat().st_size)
        assert bv._proc is not None
        bv._proc.kill()
        assert outcome(bv.result) == here

    @pytest.mark.parametrize("reply", [
        "", "not json", "[]", "{}", '{"report": {"count": 30}, "torn": null}',
        '{"report": {"count": "30", "last_seq": 30, "last_hash": "x", "chain": "sha256"}, '
        '"torn": null}',
        '{"report": {"count": 30, "last_seq": 30, "last_hash": "x", "chain": "sha256"}, '
        '"torn": null, "more": 1}',
        '{"error": "AuditChainBroken", "where": "x", "seq": "1", "reason": "r"}',
        '{"error": "KeyError", "message": "m"}',
    ])
    def test_a_reply_that_is_not_a_verdict(self, tmp_path, monkeypatch, reply):
        path = self.check(tmp_path, broken=True)
        here = outcome(lambda: verify_log(path, limit=path.stat().st_size))
        fake = tmp_path / "fake_worker.py"
        fake.write_text(f"import sys\nsys.stdin.read()\nsys.stdout.write({reply!r})\n")
        monkeypatch.setattr(_verifier, "_WORKER", fake)
        bv = BackgroundVerify(path, key=None, anchor=None, limit=path.stat().st_size)
        assert outcome(bv.result) == here and here[0] is AuditChainBroken

    def test_cancel_kills_the_worker(self, tmp_path, monkeypatch):
        path = self.check(tmp_path, broken=False)
        fake = tmp_path / "slow_worker.py"
        fake.write_text("import time\ntime.sleep(60)\n")
        monkeypatch.setattr(_verifier, "_WORKER", fake)
        with BackgroundVerify(path, key=None, anchor=None, limit=10) as bv:
            proc = bv._proc
        assert proc is not None and proc.returncode is not None and bv._proc is None

    def test_the_key_is_not_on_the_command_line(self, tmp_path, monkeypatch):
        path = self.check(tmp_path, broken=False)
        seen = []
        real = _verifier.subprocess.Popen

        def popen(args, **kw):
            seen.append((args, kw.get("env")))
            return real(args, **kw)

        monkeypatch.setattr(_verifier.subprocess, "Popen", popen)
        with BackgroundVerify(path, key=KEY, anchor=None, limit=10) as bv:
            bv.result()
        (args, env), = seen
        assert env is None and not any(KEY.hex() in a or "k" * 32 in a for a in args)


class TestBackgroundPays:
    def test_by_size_and_jobs(self, monkeypatch):
        big = _verifier.MIN_BACKGROUND_BYTES
        assert background_pays(big, jobs=2) and not background_pays(big - 1, jobs=2)
        assert not background_pays(big, jobs=1) and not background_pays(big, jobs=0)
        assert background_pays(10, jobs=2, min_bytes=10)
        monkeypatch.setattr(os, "cpu_count", lambda: 1)
        assert not background_pays(big)
        monkeypatch.setattr(os, "cpu_count", lambda: None)
        assert not background_pays(big)
        monkeypatch.setattr(os, "cpu_count", lambda: 2)
        assert background_pays(big)
