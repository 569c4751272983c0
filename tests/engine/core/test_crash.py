"""Crash tests of the file audit log: a writer killed mid-write, a log cut short.

The writer is a real process appending as fast as it can; it is SIGKILLed, so
no ``close()``, no final anchor, no flush beyond what each append already did.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from buddy.engine import AuditLog
from buddy.engine.app._cli import main
from buddy.rules.base.errors import AuditChainBroken

WRITER = """\
import sys, time
from buddy.engine import AuditLog

log = AuditLog.open(sys.argv[1], clock=time.time, sync="batch")
payload = "x" * 600
i = 0
while True:
    i += 1
    log.append("recover", "system", "crash-test", "tick", None, None,
               {"i": i, "payload": payload})
"""

#: What a write cut off mid-line leaves behind.
TORN = b'{"seq":999999,"ts":'


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # Relative names keep the CLI's lines short and exact.
    monkeypatch.chdir(tmp_path)
    return tmp_path


def replay_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["replay", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def anchor_seq(log: Path) -> int:
    return json.loads(Path(f"{log}.anchor").read_text("utf-8"))["seq"]


def killed_log(tmp_path: Path, name: str = "audit.jsonl") -> Path:
    """A log whose writer was SIGKILLed once it had written > 200 KB."""
    script = tmp_path / "writer.py"
    script.write_text(WRITER, encoding="utf-8")
    log = tmp_path / name
    proc = subprocess.Popen([sys.executable, str(script), str(log)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 4.0
        while not (log.exists() and log.stat().st_size > 200_000):
            assert proc.poll() is None, proc.stderr.read().decode()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "writer too slow"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=5) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()  # type: ignore[union-attr]
    # Each append is one small write() of a whole line, which a SIGKILL almost
    # never cuts (the kernel could only stop it at a page boundary), so the kill
    # alone rarely tears a line. Make the tail torn for sure: a write cut
    # mid-line, as a power loss or a full disk leaves it.
    with open(log, "ab") as fh:
        fh.write(TORN)
    return log


def test_sigkill_mid_write_replays_up_to_the_torn_line(capsys, in_tmp) -> None:
    log = killed_log(in_tmp)
    raw = log.read_bytes()
    whole, tail = raw.count(b"\n"), raw[raw.rfind(b"\n") + 1:]
    assert tail.endswith(TORN)  # (after whatever the kill itself may have cut)
    assert whole > 200
    last_seq = json.loads(raw[: -len(tail)].splitlines()[-1])["seq"]
    assert last_seq == whole

    code, out, err = replay_cli(capsys, log.name)
    assert (code, err) == (0, ""), (code, out, err)
    lines = out.splitlines()
    assert lines[0] == f"audit.jsonl: chain verified (sha256), {whole} events, last seq {whole}"
    torn = [line for line in lines if "torn last line" in line]
    assert torn == [f"warning: audit.jsonl:{whole + 1}: torn last line ({len(tail)} bytes, no "
                    "newline; a write was cut off); verified up to the last whole event"]
    assert lines[2] == f"replayed {whole} events: 0 decisions and every transition reproduced"
    # The anchor is only rewritten at sync points: at or behind the last whole event.
    assert 1 <= anchor_seq(log) <= last_seq


def test_reopening_a_torn_log_moves_the_tail_aside_and_goes_on(capsys, in_tmp) -> None:
    log = killed_log(in_tmp)
    raw = log.read_bytes()
    whole, good = raw.count(b"\n"), raw.rfind(b"\n") + 1
    tail = raw[good:]

    with AuditLog.open(log, clock=time.time, sync="batch") as reopened:
        assert reopened.recovered_torn == str(log.with_name(f"audit.jsonl.torn-{good}"))
        assert reopened.last_seq == whole + 1            # the recover event
        assert reopened.append("recover", "system", "crash-test", "after", None, None, {}) == \
            whole + 2

    assert Path(f"audit.jsonl.torn-{good}").read_bytes() == tail
    records = [json.loads(line) for line in log.read_text("utf-8").splitlines()]
    assert [r["seq"] for r in records] == list(range(1, whole + 3))
    assert (records[whole]["kind"], records[whole]["data"]) == \
        ("recover", {"moved_to": f"audit.jsonl.torn-{good}"})
    assert anchor_seq(log) == whole + 2

    code, out, err = replay_cli(capsys, log.name)
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == \
        f"audit.jsonl: chain verified (sha256), {whole + 2} events, last seq {whole + 2}"
    assert "torn" not in out


def closed_log(n: int) -> Path:
    log = Path("audit.jsonl")
    with AuditLog.open(log, clock=lambda: 1000.0, sync="batch") as audit:
        for i in range(n - 1):
            audit.append("recover", "system", "crash-test", "tick", None, None, {"i": i})
    assert anchor_seq(log) == n
    return log


def test_whole_lines_cut_from_the_end_fail_against_the_anchor(capsys) -> None:
    log = closed_log(10)
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:-3]))

    code, out, err = replay_cli(capsys, log.name)
    assert (code, out) == (1, "")
    assert err == "AuditChainBroken: audit.jsonl: chain broken at seq 7: log ends at seq 7 " \
        "but its anchor says 10: events were cut from the end\n"
    # Reopening refuses too: appending would hide the cut.
    with pytest.raises(AuditChainBroken, match="anchor says 10"):
        AuditLog.open(log, clock=time.time)
    assert log.read_bytes() == b"".join(lines[:-3])
    assert anchor_seq(log) == 10


def test_a_torn_tail_does_not_hide_lines_cut_before_it(capsys) -> None:
    log = closed_log(10)
    raw = log.read_bytes()
    cut = raw.rfind(b"\n", 0, raw.rfind(b"\n", 0, len(raw) - 1)) + 20  # mid line 9
    log.write_bytes(raw[:cut])

    code, out, err = replay_cli(capsys, log.name)
    assert (code, out) == (1, "")
    assert err == "AuditChainBroken: audit.jsonl: chain broken at seq 8: log ends at seq 8 " \
        "but its anchor says 10: events were cut from the end\n"


def test_an_emptied_log_is_not_restarted_over_its_anchor(capsys) -> None:
    # Truncating the log to nothing is the ultimate cut from the end; the next
    # open must refuse it, not start a fresh chain and overwrite the anchor.
    log = closed_log(10)
    log.write_bytes(b"")
    code, out, err = replay_cli(capsys, log.name)
    assert (code, out) == (1, "")
    assert err == "AuditChainBroken: audit.jsonl: chain broken at seq 0: log ends at seq 0 " \
        "but its anchor says 10: events were cut from the end\n"
    with pytest.raises(AuditChainBroken, match="anchor says 10"):
        AuditLog.open(log, clock=time.time).close()
    assert anchor_seq(log) == 10
