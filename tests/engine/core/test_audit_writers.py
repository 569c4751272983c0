"""Several writers on one file log (issue 7, defect 12): processes and objects take turns.

Each append holds an exclusive ``flock`` on the log, reads and verifies what the
others wrote since, and continues their chain; the anchor only moves forward.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from buddy.engine.core._audit import AuditLog
from buddy.engine.core._chain import anchor_path, read_anchor, scan_log, verify_lines
from buddy.rules.base.errors import AuditChainBroken
from tests.helpers import ManualClock

KEY = b"a key for several writers"

WRITER = textwrap.dedent("""\
    import sys, time
    from pathlib import Path
    from buddy.engine.core._audit import AuditLog

    path, name, go = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    key = sys.argv[4].encode() if len(sys.argv) > 4 else None
    log = AuditLog.open(path, clock=time.time, key=key, sync="batch", sync_every=16)
    Path(f"{go}.{name}").touch()          # opened: the log as it was before anyone appends
    while not go.exists():
        time.sleep(0.001)
    for i in range(50):
        log.append("recover", "writer", lambda seq: f"{name}-{seq}", "tick", None, None,
                   {"writer": name, "i": i})
    log.close()
""")


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in scan_log(path).lines]


def verified(path: Path, key: bytes | None = None) -> int:
    return verify_lines(scan_log(path).lines, key=key, source=str(path),
                        anchor=read_anchor(path)).last_seq


def test_four_processes_append_fifty_each(tmp_path):
    # Keyed: each writer verifies the others' lines with the key as it catches up.
    key = KEY
    path, go = tmp_path / "audit.jsonl", tmp_path / "go"
    AuditLog.open(path, clock=time.time, key=key).close()  # the header, seq 1
    script = tmp_path / "writer.py"
    script.write_text(WRITER, encoding="utf-8")
    names = ["w0", "w1", "w2", "w3"]
    procs = [subprocess.Popen([sys.executable, str(script), str(path), name, str(go),
                               key.decode()],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for name in names]
    try:
        deadline = time.monotonic() + 20
        while not all(Path(f"{go}.{n}").exists() for n in names):  # all opened at seq 1
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            assert time.monotonic() < deadline, "writers too slow to start"
            time.sleep(0.01)
        go.touch()
        results = [p.communicate(timeout=30) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [(p.returncode, err) for p, (_, err) in zip(procs, results, strict=True)] == \
        [(0, b"")] * 4
    assert verified(path, key) == 201
    events = records(path)
    assert [e["seq"] for e in events] == list(range(1, 202))
    for name in names:  # each writer's 50 events, in its own order, ids made from real seqs
        mine = [e for e in events if e["data"].get("writer") == name]
        assert [e["data"]["i"] for e in mine] == list(range(50))
        assert all(e["subject"] == f"{name}-{e['seq']}" for e in mine)
    assert read_anchor(path).seq == 201


def test_two_logs_in_one_process_take_turns(tmp_path):
    path = tmp_path / "audit.jsonl"
    a = AuditLog.open(path, clock=ManualClock(), sync="batch", sync_every=2)
    b = AuditLog.open(path, clock=ManualClock(), sync="batch", sync_every=2)
    assert (a.last_seq, b.last_seq) == (1, 1)
    seqs = []
    for i in range(5):
        seqs.append(a.append("recover", "m", lambda seq: f"a-{seq}", "e", None, None, {"i": i}))
        seqs.append(b.append("recover", "m", lambda seq: f"b-{seq}", "e", None, None, {"i": i}))
    assert seqs == list(range(2, 12))
    b.close()
    assert read_anchor(path).seq == 11
    a.close()  # a's own last write was seq 10: its anchor still names the real head
    assert read_anchor(path).seq == 11
    assert verified(path) == 11
    assert [e["subject"] for e in records(path)[1:]] == \
        [f"{'ab'[i % 2]}-{i + 2}" for i in range(10)]


def test_the_subject_function_gets_the_seq_after_the_tail_moved(tmp_path):
    path = tmp_path / "audit.jsonl"
    a = AuditLog.open(path, clock=ManualClock())
    with AuditLog.open(path, clock=ManualClock()) as b:
        for _ in range(3):
            b.append("recover", "m", "s", "e", None, None, {})
    assert a.append("grant", "approval", lambda seq: f"grant-{seq}", "grant", None, "ACTIVE",
                    {}) == 5
    a.close()
    assert records(path)[4]["subject"] == "grant-5"
    assert verified(path) == 5


def test_lines_another_writer_added_must_verify(tmp_path):
    path = tmp_path / "audit.jsonl"
    a = AuditLog.open(path, clock=ManualClock())
    a.append("recover", "m", "s", "e", None, None, {"n": 1})
    with AuditLog.open(path, clock=ManualClock()) as b:
        b.append("recover", "m", "s", "e", None, None, {"n": 2})
    raw = path.read_bytes()
    path.write_bytes(raw.replace(b'"n":2', b'"n":3'))  # someone edits b's line
    with pytest.raises(AuditChainBroken) as err:
        a.append("recover", "m", "s", "e", None, None, {"n": 4})
    assert str(err.value) == f"{path}:3: chain broken at seq 3: hash mismatch (line edited)"
    assert path.read_bytes() == raw.replace(b'"n":2', b'"n":3')  # a wrote nothing
    with pytest.raises(AuditChainBroken):
        a.close()  # close catches up (and refuses) too, but closes the file


def test_a_keyed_writer_refuses_lines_chained_without_the_key(tmp_path):
    path = tmp_path / "audit.jsonl"
    a = AuditLog.open(path, clock=ManualClock(), key=KEY)
    with AuditLog.open(path, clock=ManualClock(), key=KEY) as b:
        b.append("recover", "m", "s", "e", None, None, {})
    good = path.read_bytes()
    last = json.loads(good.splitlines()[-1])
    assert last["seq"] == 2
    body = json.dumps({**{k: v for k, v in last.items() if k != "hash"}, "seq": 3,
                       "prev": last["hash"]}, separators=(",", ":"))
    digest = hashlib.sha256(body.encode()).hexdigest()  # chained as a plain log would be
    path.write_bytes(good + body[:-1].encode() + f',"hash":"{digest}"}}\n'.encode())
    with pytest.raises(AuditChainBroken) as err:
        a.append("recover", "m", "s", "e", None, None, {})
    assert str(err.value) == f"{path}:3: chain broken at seq 3: hash mismatch (line edited, " \
        "or chained without the key)"


def test_a_log_cut_behind_a_writer(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = AuditLog.open(path, clock=ManualClock())
    log.append("recover", "m", "s", "e", None, None, {})
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[: size // 2])
    with pytest.raises(AuditChainBroken) as err:
        log.append("recover", "m", "s", "e", None, None, {})
    assert str(err.value) == f"{path}: chain broken at seq 2: the log shrank from {size} to " \
        f"{size // 2} bytes since this writer's last write: events were cut from the end"


def test_a_torn_line_of_a_writer_that_died(tmp_path):
    # Another writer died mid-line (it held the lock, which its death released).
    path = tmp_path / "audit.jsonl"
    log = AuditLog.open(path, clock=ManualClock())
    log.append("recover", "m", "s", "e", None, None, {})
    good = path.stat().st_size
    with open(path, "ab") as fh:
        fh.write(b'{"seq":3,"ts":1000.0,"ki')
    assert log.append("recover", "m", "s", "after", None, None, {}) == 4
    log.close()
    events = records(path)
    assert (events[2]["kind"], events[2]["data"]) == \
        ("recover", {"moved_to": f"audit.jsonl.torn-{good}"})
    assert (tmp_path / f"audit.jsonl.torn-{good}").read_bytes() == b'{"seq":3,"ts":1000.0,"ki'
    assert log.recovered_torn == str(tmp_path / f"audit.jsonl.torn-{good}")
    assert verified(path) == 4


def test_the_anchor_never_moves_back(tmp_path):
    path = tmp_path / "audit.jsonl"
    stale = AuditLog.open(path, clock=ManualClock())
    with AuditLog.open(path, clock=ManualClock()) as busy:
        for _ in range(9):
            busy.append("recover", "m", "s", "e", None, None, {})
    assert read_anchor(path).seq == 10
    stale.flush()
    assert read_anchor(path).seq == 10 and stale.last_seq == 10
    stale.close()
    assert anchor_path(path).exists() and verified(path) == 10
