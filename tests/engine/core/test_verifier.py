"""BackgroundVerify: the worker's verdict on the bytes it is fed is verify_log's, or there
is none; and replay beside it reports what replay in one process reports."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from buddy.engine import AuditLog
from buddy.engine.core import _replay, _verifier
from buddy.engine.core._chain import read_anchor, verify_log
from buddy.engine.core._replay import replay
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


def fed(path: Path, key: bytes | None = None, chunk: int = 97,
        anchor: object = "read") -> BackgroundVerify:
    """A worker fed ``path``'s bytes in ``chunk``-byte pieces (lines cut anywhere)."""
    if anchor == "read":
        anchor = outcome(lambda: read_anchor(path))
        anchor = None if isinstance(anchor, tuple) else anchor
    bv = BackgroundVerify(str(path), key=key, anchor=anchor)
    data = path.read_bytes()
    for start in range(0, len(data), chunk):
        bv.feed(data[start:start + chunk])
    return bv


def both(path: Path, key: bytes | None = None, chunk: int = 97):
    """verify_log's outcome and the worker's, on the same log."""
    anchor = outcome(lambda: read_anchor(path))
    anchor = None if isinstance(anchor, tuple) else anchor
    here = outcome(lambda: verify_log(path, key=key, anchor=anchor))
    with fed(path, key, chunk) as bv:
        there = outcome(bv.result)
    return here, there


def edit(lines: list[bytes], i: int, new: bytes | None) -> bytes:
    lines = list(lines)
    if new is None:
        del lines[i]
    else:
        lines[i] = new
    return b"".join(line + b"\n" for line in lines)


def broken(path: Path, change: str) -> None:
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
    elif change == "cut":
        data = edit(lines, 29, None)
    else:
        data = edit(lines, 12, lines[12].replace(b'"i":11', b'"i":"\xff"'))
    path.write_bytes(data)


CHANGES = ["edit", "delete", "swap", "seq", "header", "cut", "utf8"]


class TestSameVerdict:
    @pytest.mark.parametrize("chunk", [1, 97, 1 << 20])
    def test_a_good_log(self, tmp_path, chunk):
        path = tmp_path / "log.jsonl"
        write_log(path)
        here, there = both(path, chunk=chunk)
        assert here == there and here[0].count == 30 and here[1] is None

    def test_a_torn_tail(self, tmp_path):
        path = tmp_path / "log.jsonl"
        write_log(path)
        with path.open("ab") as f:
            f.write(b'{"seq":31,"to')
        here, there = both(path)
        assert here == there and here[1].endswith("torn last line (13 bytes, no newline; "
                                                  "a write was cut off)")

    @pytest.mark.parametrize("change", CHANGES)
    def test_a_broken_log(self, tmp_path, change):
        path = tmp_path / "log.jsonl"
        broken(path, change)
        here, there = both(path)
        assert here == there and here[0] in (AuditChainBroken, AuditFormatError)

    @pytest.mark.parametrize("key", [KEY, b"x" * 32, None])
    def test_a_keyed_log(self, tmp_path, key):
        path = tmp_path / "log.jsonl"
        write_log(path, key=KEY)
        here, there = both(path, key=key)
        assert here == there
        assert (key == KEY) == (here[0] not in (AuditChainBroken, AuditFormatError))

    def test_the_verdict_is_on_the_bytes_fed_not_the_file(self, tmp_path):
        """The worker never reads the file: a file changed after its bytes were read
        cannot give the verifier and the replayer two different logs."""
        path = tmp_path / "log.jsonl"
        write_log(path)
        good = path.read_bytes()
        with BackgroundVerify(str(path), key=None, anchor=read_anchor(path)) as bv:
            bv.feed(good)
            broken(path, "edit")  # rewritten under it: not what it was fed
            assert bv.result()[0].count == 30


class TestNoVerdict:
    def test_a_worker_that_cannot_start(self, tmp_path, monkeypatch):
        path = tmp_path / "log.jsonl"
        write_log(path)
        monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))
        bv = fed(path)
        assert bv._proc is None and not bv.feed(b"more") and bv.result() is None

    def test_a_killed_worker(self, tmp_path):
        path = tmp_path / "log.jsonl"
        write_log(path)
        bv = fed(path)
        assert bv._proc is not None
        bv._proc.kill()
        assert bv.result() is None

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
        path = tmp_path / "log.jsonl"
        write_log(path)
        fake = tmp_path / "fake_worker.py"
        fake.write_text(f"import sys\nsys.stdin.read()\nsys.stdout.write({reply!r})\n")
        monkeypatch.setattr(_verifier, "_WORKER", fake)
        assert fed(path).result() is None

    def test_a_worker_gone_before_the_end_gives_only_an_error(self, tmp_path, monkeypatch):
        """A worker that stopped reading saw part of the log: its "ok" is no verdict."""
        path = tmp_path / "log.jsonl"
        write_log(path)
        fake = tmp_path / "early_worker.py"
        fake.write_text("import sys\nsys.stdout.write('{\"report\": {\"count\": 30, "
                        "\"last_seq\": 30, \"last_hash\": \"x\", \"chain\": \"sha256\"}, "
                        "\"torn\": null}')\n")
        monkeypatch.setattr(_verifier, "_WORKER", fake)
        bv = BackgroundVerify(str(path), key=None, anchor=None)
        bv._proc.wait()
        assert not bv.feed(b"x" * (4 << 20)) and bv.result() is None

    def test_cancel_kills_the_worker(self, tmp_path, monkeypatch):
        fake = tmp_path / "slow_worker.py"
        fake.write_text("import time\ntime.sleep(60)\n")
        monkeypatch.setattr(_verifier, "_WORKER", fake)
        with BackgroundVerify("log", key=None, anchor=None) as bv:
            proc = bv._proc
        assert proc is not None and proc.returncode is not None and bv._proc is None

    def test_the_key_is_not_on_the_command_line(self, tmp_path, monkeypatch):
        path = tmp_path / "log.jsonl"
        write_log(path, key=KEY)
        seen = []
        real = _verifier.subprocess.Popen

        def popen(args, **kw):
            seen.append((args, kw.get("env")))
            return real(args, **kw)

        monkeypatch.setattr(_verifier.subprocess, "Popen", popen)
        with fed(path, KEY) as bv:
            assert bv.result()[0].count == 30
        (args, env), = seen
        assert env is None and not any(KEY.hex() in a or "k" * 32 in a for a in args)


class TestBackgroundPays:
    def test_by_size_and_cpus(self, monkeypatch):
        big = _verifier.MIN_BACKGROUND_BYTES
        monkeypatch.setattr(os, "cpu_count", lambda: 2)
        assert background_pays(big) and not background_pays(big - 1)
        assert not background_pays(big, parallel=False) and background_pays(1, parallel=True)
        assert background_pays(10, min_bytes=10)
        monkeypatch.setattr(os, "cpu_count", lambda: 1)
        assert not background_pays(big)
        monkeypatch.setattr(os, "cpu_count", lambda: None)
        assert not background_pays(big)

    @pytest.mark.parametrize(("name", "python"), [
        ("/usr/bin/python3", True), ("/v/.venv/bin/python", True), ("python3.11", True),
        ("C:/Python311/python.exe", True), ("/opt/pypy3", True), ("/usr/bin/uwsgi", False),
        ("", False), ("/usr/bin/python3-config", False), ("/srv/app", False)])
    def test_only_a_python_is_started_of_its_own_accord(self, monkeypatch, name, python):
        monkeypatch.setattr(os, "cpu_count", lambda: 2)
        monkeypatch.setattr(sys, "executable", name)
        assert background_pays(_verifier.MIN_BACKGROUND_BYTES) is python
        assert background_pays(1, parallel=True)  # asked for: the caller knows


# -- replay beside the worker ----------------------------------------------------------

def engine_log(path: Path, key: bytes | None = None, calls: int = 60) -> None:
    """A log of decisions, runs and moves (simulated handlers), as the engine writes it."""
    from buddy.engine import Engine
    with AuditLog.open(path, clock=ManualClock(), key=key) as audit:
        engine = Engine.default(clock=ManualClock(), audit=audit,
                                approver=lambda r: r.confidence > 0.8)
        engine.register_handler("form_fill", live=lambda a: "filled", dry_run=lambda a: "dry")
        for i in range(calls):
            if i % 3 == 0:
                engine.execute(f"a{i % 4}", "form_fill", {"i": i}, confidence=(i % 10) / 10)
            else:
                engine.decide(f"a{i % 4}", "database_write", (i % 11) / 10)


def replayed(path: Path, **kw):
    return outcome(lambda: replay(path, **kw))


class TestReplayBeside:
    @pytest.mark.parametrize("kw", [{}, {"until": 40}, {"until": 0}, {"check_anchor": False},
                                    {"table": "default"}])
    def test_a_good_log_reports_alike(self, tmp_path, kw, monkeypatch):
        from buddy.rules import EscalationTable
        if kw.get("table") == "default":
            kw = {"table": EscalationTable.default()}
        monkeypatch.setattr("buddy.engine.core._chain.CHUNK_BYTES", 1000)  # many chunks
        path = tmp_path / "log.jsonl"
        engine_log(path)
        with path.open("ab") as f:
            f.write(b'{"seq":999,"torn')
        verdicts = []
        real = _replay._beside
        monkeypatch.setattr(_replay, "_beside", lambda *a: verdicts.append(real(*a)) or
                            verdicts[-1])
        alone, beside = replayed(path, parallel=False, **kw), replayed(path, parallel=True, **kw)
        assert alone == beside and alone.ok and alone.events > 100 and alone.torn_tail
        assert len(verdicts) == 1 and verdicts[0] is not None  # the worker's, not a fallback

    @pytest.mark.parametrize("change", CHANGES)
    def test_a_broken_log_is_refused_alike(self, tmp_path, change, monkeypatch):
        monkeypatch.setattr("buddy.engine.core._chain.CHUNK_BYTES", 1000)
        path = tmp_path / "log.jsonl"
        broken(path, change)
        assert replayed(path, parallel=False) == replayed(path, parallel=True)

    def test_a_forged_decision_diverges_alike(self, tmp_path):
        from tests.helpers import rechain
        path = tmp_path / "log.jsonl"
        engine_log(path)
        lines = path.read_text().splitlines()
        n = next(i for i, line in enumerate(lines) if '"state":"DRY_RUN"' in line
                 and '"kind":"decision"' in line)
        lines[n] = lines[n].replace('"state":"DRY_RUN"', '"state":"LIVE"')
        path.write_text("".join(line + "\n" for line in rechain(lines)))
        alone = replayed(path, parallel=False, check_anchor=False)
        assert alone == replayed(path, parallel=True, check_anchor=False)
        assert alone.divergence.seq == n + 1

    def test_a_keyed_log(self, tmp_path):
        path = tmp_path / "log.jsonl"
        engine_log(path, key=KEY)
        assert replayed(path, key=KEY, parallel=True) == replayed(path, key=KEY,
                                                                  parallel=False)
        assert replayed(path, parallel=True)[0] is AuditChainBroken

    def test_odd_values_in_a_run_replay_alike(self, tmp_path, monkeypatch):
        """Line separators inside strings, integers past 64 bits, a secret, a NaN the
        run's result cannot hold: the worker and the replayer split on \\n alone."""
        from buddy.engine import Engine
        monkeypatch.setattr("buddy.engine.core._chain.CHUNK_BYTES", 700)
        path = tmp_path / "log.jsonl"
        with AuditLog.open(path, clock=ManualClock()) as audit:
            engine = Engine.default(clock=ManualClock(), audit=audit)
            engine.register_handler("form_fill", live=lambda a: a, dry_run=lambda a: a)
            for value in ("a\u2028b\u2029c\x85d", 2 ** 70, -(2 ** 64), float("nan"),
                          {"password": "hunter2"}, "\n\r"):
                engine.execute("a", "form_fill", {"v": value, "w": "\u2028" * 300},
                               confidence=0.75)
        assert "\u2028".encode() in path.read_bytes()
        alone = replayed(path, parallel=False)
        assert alone == replayed(path, parallel=True) and alone.ok and alone.events > 20

    @pytest.mark.parametrize("parallel", ["yes", 1, 0])
    def test_parallel_must_be_a_bool_or_none(self, tmp_path, parallel):
        path = tmp_path / "log.jsonl"
        write_log(path)
        with pytest.raises(TypeError, match="parallel must be True, False or None"):
            replay(path, parallel=parallel)

    def test_no_verdict_replays_here(self, tmp_path, monkeypatch):
        path = tmp_path / "log.jsonl"
        engine_log(path)
        alone = replayed(path, parallel=False)
        monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))
        assert replayed(path, parallel=True) == alone


def chained(bodies: list[str]) -> str:
    """Lines chained as a writer would (the attack), each ``body`` an object of its own
    that gets the chain's ``prev`` and ``hash`` as its last fields."""
    import hashlib
    out, prev = [], "0" * 64
    for body in bodies:
        hashed = body[:-1] + f',"prev":"{prev}"}}'
        prev = hashlib.sha256(hashed.encode()).hexdigest()
        out.append(hashed[:-1] + f',"hash":"{prev}"}}\n')
    return "".join(out)


class TestTwoValuesOnALine:
    """A chain-valid line holding two events: the second is no line of the log. Beside
    the worker, values are replayed before lines are counted: such a line must be
    refused as in one process, wherever it is (mid-batch, at a batch's end, last)."""

    def bodies(self, tmp_path) -> list[str]:
        import json
        path = tmp_path / "base.jsonl"
        engine_log(path, calls=40)
        events = [json.loads(line) for line in path.read_text().splitlines()]
        for e in events:
            del e["prev"], e["hash"]
        return [json.dumps(e, separators=(",", ":")) for e in events]

    @pytest.mark.parametrize("where", ["middle", "before-last", "last"])
    @pytest.mark.parametrize("chunk", [700, 1 << 20])
    def test_it_is_refused_alike(self, tmp_path, monkeypatch, where, chunk):
        monkeypatch.setattr("buddy.engine.core._chain.CHUNK_BYTES", chunk)
        bodies = self.bodies(tmp_path)
        k = {"middle": 10, "before-last": len(bodies) - 2, "last": len(bodies) - 1}[where]
        nxt = bodies[k + 1] if k + 1 < len(bodies) else bodies[k].replace(
            f'{{"seq":{k + 1},', f'{{"seq":{k + 2},', 1)
        bodies[k] = bodies[k][:-1] + ',"prev":"x","hash":"y"} ' + nxt  # two values
        path = tmp_path / "log.jsonl"
        path.write_text(chained(bodies))
        alone = replayed(path, parallel=False, check_anchor=False)
        assert alone == replayed(path, parallel=True, check_anchor=False)
        assert alone[0] is AuditFormatError and f":{k + 1}" in alone[1]


class TestAStuckWorker:
    """A worker that takes no bytes, or gives no verdict, is gone after STALL_SECONDS:
    replay goes on in one process, never waits for ever, and leaves no worker behind."""

    @pytest.mark.parametrize("script", [
        "import time\ntime.sleep(60)\n",                                 # reads nothing
        "import sys, time\nsys.stdin.buffer.read()\ntime.sleep(60)\n",   # no verdict
        "import sys\nwhile b := sys.stdin.buffer.read(4096):\n    sys.stdout.buffer.write(b)\n",
    ])
    def test_replay_goes_on_here(self, tmp_path, monkeypatch, script):
        fake = tmp_path / "stuck_worker.py"
        fake.write_text(script)
        monkeypatch.setattr(_verifier, "_WORKER", fake)
        monkeypatch.setattr(_verifier, "STALL_SECONDS", 0.5)
        started = []
        real = _verifier.subprocess.Popen
        monkeypatch.setattr(_verifier.subprocess, "Popen",
                            lambda *a, **kw: started.append(real(*a, **kw)) or started[-1])
        path = tmp_path / "log.jsonl"
        engine_log(path, calls=3000)  # more than the pipe holds
        alone = replayed(path, parallel=False)
        assert replayed(path, parallel=True) == alone and alone.ok
        assert len(started) == 1 and started[0].poll() is not None  # not left behind

    def test_an_executable_that_is_none(self, tmp_path, monkeypatch):
        path = tmp_path / "log.jsonl"
        engine_log(path)
        monkeypatch.setattr(sys, "executable", None)
        assert not background_pays(1 << 40)
        assert replayed(path, parallel=True) == replayed(path, parallel=False)


class TestAnchorsThatAreNoFiles:
    def test_a_fifo_or_a_device_or_a_huge_anchor_is_refused(self, tmp_path):
        path = tmp_path / "log.jsonl"
        write_log(path)
        anchor = tmp_path / "log.jsonl.anchor"
        anchor.unlink()
        os.mkfifo(anchor)
        with pytest.raises(AuditFormatError, match="not a regular file"):
            read_anchor(path)
        anchor.unlink()
        anchor.symlink_to("/dev/zero")
        with pytest.raises(AuditFormatError, match="not a regular file"):
            read_anchor(path)
        anchor.unlink()
        anchor.write_bytes(b" " * (1 << 20))
        with pytest.raises(AuditFormatError, match="larger than"):
            read_anchor(path)

    def test_replay_of_a_path_with_no_name_is_one_error(self):
        with pytest.raises(AuditError, match="not a regular file"):
            replay("")
