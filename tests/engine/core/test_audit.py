"""The audit log: hash chain, HMAC, anchor, torn tails, masking, keys, what JSON cannot hold."""

from __future__ import annotations

import errno
import json
import os

import attrs
import pytest

from buddy.engine import AuditLog, Engine, load_key
from buddy.engine.core import _audit
from buddy.engine.core._chain import GENESIS, anchor_path, read_anchor, scan_log, verify_lines
from buddy.engine.core._replay import replay
from buddy.rules.base._masking import Masker
from buddy.rules.base.errors import AuditChainBroken, AuditError, AuditFormatError
from tests.helpers import ManualClock, edit, rechain

KEY = b"correct horse battery staple"


def make_lines(n: int = 6, key: bytes | None = None) -> list[str]:
    engine = Engine.default(clock=ManualClock(), audit=AuditLog.memory(clock=ManualClock(),
                                                                       key=key))
    for i in range(n):
        engine.decide("a", "form_fill", i / n)
    return engine.audit.lines()


class TestFormat:
    def test_fields_in_order(self):
        event = json.loads(make_lines(1)[1])
        assert list(event) == ["seq", "ts", "kind", "machine", "subject", "event", "src",
                               "dst", "data", "prev", "hash"]
        assert list(event["data"])[:8] == ["agent", "tool", "risk", "requires_approval",
                                           "confidence", "approval", "approved_by", "locked"]

    def test_header_names_format_and_chain(self):
        header = json.loads(make_lines(0)[0])
        assert (header["seq"], header["kind"], header["prev"]) == (1, "open", GENESIS)
        assert header["data"] == {"format": "buddy-audit/1", "chain": "sha256"}
        assert json.loads(make_lines(0, KEY)[0])["data"]["chain"] == "hmac-sha256"

    def test_events_structure_into_records(self):
        engine = Engine.default(clock=ManualClock(7.0))
        engine.decide("a", "form_fill", 0.9)
        event = engine.audit.events()[-1]
        assert (event.seq, event.ts, event.kind, event.dst, event.data["rule"]) == \
            (2, 7.0, "decision", "LIVE", "medium.live")

    def test_unserialisable_values_are_recorded_by_repr(self):
        log = AuditLog.memory(clock=ManualClock())
        log.append("recover", "x", "y", "z", None, None, {"obj": object, "n": {1: 2}})
        data = json.loads(log.lines()[-1])["data"]
        assert data == {"obj": "<class 'object'>", "n": {"1": 2}}
        verify_lines(log.lines())


class TestChain:
    def test_intact_chain_verifies(self):
        lines = make_lines()
        report = verify_lines(lines)
        assert (report.count, report.last_seq, report.chain) == (7, 7, "sha256")

    def test_edited_line(self):
        lines = edit(make_lines(), 3, confidence=0.99)
        with pytest.raises(AuditChainBroken) as err:
            verify_lines(lines, source="log")
        assert (err.value.seq, err.value.where) == (4, "log:4")
        assert "hash mismatch" in str(err.value)

    def test_deleted_line(self):
        lines = make_lines()
        del lines[3]
        with pytest.raises(AuditChainBroken, match="deleted, inserted or reordered") as err:
            verify_lines(lines)
        assert err.value.seq == 4

    def test_reordered_lines(self):
        lines = make_lines()
        lines[2], lines[3] = lines[3], lines[2]
        with pytest.raises(AuditChainBroken) as err:
            verify_lines(lines)
        assert err.value.seq == 3

    def test_inserted_line(self):
        lines = make_lines()
        lines.insert(2, lines[2])
        with pytest.raises(AuditChainBroken):
            verify_lines(lines)

    def test_garbage_line(self):
        lines = make_lines()
        lines[2] = "not json"
        with pytest.raises(AuditChainBroken, match="not a hashed audit event"):
            verify_lines(lines)

    def test_rechained_edit_passes_a_plain_chain(self):
        # Why a key matters: whoever edits a plain log can recompute every hash.
        forged = rechain(edit(make_lines(), 3, mode="LIVE"))
        assert verify_lines(forged).count == 7

    def test_rechained_edit_fails_the_keyed_chain(self):
        lines = make_lines(key=KEY)
        verify_lines(lines, key=KEY)
        forged = rechain(edit(lines, 3, mode="LIVE"))  # re-chained without the key
        with pytest.raises(AuditChainBroken, match="chained without the key") as err:
            verify_lines(forged, key=KEY)
        assert err.value.seq == 1

    def test_keyed_log_needs_its_key(self):
        with pytest.raises(AuditChainBroken, match="give its key"):
            verify_lines(make_lines(key=KEY))

    def test_wrong_key(self):
        with pytest.raises(AuditChainBroken, match="hash mismatch"):
            verify_lines(make_lines(key=KEY), key=b"another key")


class TestFileLog:
    def test_append_flushes_each_event(self, tmp_path):
        path = tmp_path / "a.jsonl"
        log = AuditLog.open(path, clock=ManualClock(), sync="never")
        log.append("recover", "m", "s", "e", None, None, {})
        assert len(path.read_text().splitlines()) == 2  # readable before close
        log.close()

    def test_anchor_written_on_sync_points_and_close(self, tmp_path):
        path = tmp_path / "a.jsonl"
        log = AuditLog.open(path, clock=ManualClock(), sync="batch", sync_every=3)
        for _ in range(4):
            log.append("recover", "m", "s", "e", None, None, {})
        # header (seq 1) and seqs 2, 3 make the first batch of 3: anchored at 3
        assert read_anchor(path).seq == 3
        log.close()
        anchor = read_anchor(path)
        assert anchor.seq == 5 and anchor.hash == path.read_text().splitlines()[-1][-66:-2]

    def test_truncated_tail_is_caught_by_the_anchor(self, tmp_path):
        path = tmp_path / "a.jsonl"
        with AuditLog.open(path, clock=ManualClock()) as log:
            for _ in range(5):
                log.append("recover", "m", "s", "e", None, None, {})
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(lines[:-2]))
        with pytest.raises(AuditChainBroken, match="cut from the end") as err:
            verify_lines(scan_log(path).lines, source=str(path), anchor=read_anchor(path))
        assert err.value.seq == 4

    def test_anchor_hash_mismatch(self, tmp_path):
        path = tmp_path / "a.jsonl"
        with AuditLog.open(path, clock=ManualClock()) as log:
            log.append("recover", "m", "s", "e", None, None, {})
        anchor = attrs.asdict(read_anchor(path))
        anchor["hash"] = "f" * 64
        anchor_path(path).write_text(json.dumps(anchor))
        with pytest.raises(AuditChainBroken, match="anchor's hash"):
            verify_lines(scan_log(path).lines, anchor=read_anchor(path))

    def test_torn_last_line_is_reported_not_fatal(self, tmp_path):
        path = tmp_path / "a.jsonl"
        with AuditLog.open(path, clock=ManualClock()) as log:
            log.append("recover", "m", "s", "e", None, None, {})
        with open(path, "ab") as fh:
            fh.write(b'{"seq":3,"ts":1000.0,"ki')
        scan = scan_log(path)
        assert len(scan.lines) == 2
        assert scan.torn == f"{path}:3: torn last line (24 bytes, no newline; a write was cut off)"
        assert verify_lines(scan.lines).last_seq == 2

    def test_reopen_continues_the_chain(self, tmp_path):
        path = tmp_path / "a.jsonl"
        with AuditLog.open(path, clock=ManualClock()) as log:
            log.append("recover", "m", "s", "e", None, None, {})
        with AuditLog.open(path, clock=ManualClock()) as log:
            assert log.append("recover", "m", "s", "e", None, None, {}) == 3
        assert verify_lines(scan_log(path).lines, anchor=read_anchor(path)).last_seq == 3

    def test_reopen_moves_a_torn_tail_aside(self, tmp_path):
        path = tmp_path / "a.jsonl"
        with AuditLog.open(path, clock=ManualClock()) as log:
            log.append("recover", "m", "s", "e", None, None, {})
        size = path.stat().st_size
        with open(path, "ab") as fh:
            fh.write(b'{"seq":3,"ts":')
        with AuditLog.open(path, clock=ManualClock()) as log:
            assert log.recovered_torn == str(tmp_path / f"a.jsonl.torn-{size}")
            log.append("recover", "m", "s", "e", None, None, {})
        assert (tmp_path / f"a.jsonl.torn-{size}").read_bytes() == b'{"seq":3,"ts":'
        lines = scan_log(path).lines
        assert json.loads(lines[2])["kind"] == "recover"
        assert verify_lines(lines, anchor=read_anchor(path)).last_seq == 4

    def test_reopen_refuses_a_tampered_log(self, tmp_path):
        path = tmp_path / "a.jsonl"
        with AuditLog.open(path, clock=ManualClock()) as log:
            log.append("recover", "m", "s", "e", None, None, {"n": 1})
        path.write_text(path.read_text().replace('"n":1', '"n":2'))
        with pytest.raises(AuditChainBroken):
            AuditLog.open(path, clock=ManualClock())

    @pytest.mark.parametrize(("sync", "expected"), [
        ("never", []),
        # open: the anchor at seq 0, then after the header; every event: log and anchor
        ("always", ["anchor", "anchor", *["log", "anchor"] * 3, "log", "anchor", "log", "anchor"]),
        # sync_every=2, the header counting as one: the 1st and 3rd appends are sync points
        ("batch", ["anchor", "anchor", *["log", "anchor"] * 2, "log", "anchor", "log", "anchor"]),
    ])
    def test_fsyncs_per_sync_policy(self, tmp_path, monkeypatch, sync, expected):
        path = tmp_path / "a.jsonl"
        synced: list[str] = []
        real = os.fsync

        def fsync(fd: int) -> None:
            log_file = path.exists() and os.fstat(fd).st_ino == path.stat().st_ino
            synced.append("log" if log_file else "anchor")
            real(fd)

        monkeypatch.setattr(os, "fsync", fsync)
        log = AuditLog.open(path, clock=ManualClock(), sync=sync, sync_every=2)
        for _ in range(3):
            log.append("recover", "m", "s", "e", None, None, {})
        log.flush()
        log.close()
        assert synced == expected
        anchor = read_anchor(path)  # the anchor is rewritten all the same
        assert anchor is not None and anchor.seq == 4
        assert verify_lines(scan_log(path).lines, anchor=anchor).last_seq == 4

    def test_bad_sync_policy(self, tmp_path):
        with pytest.raises(AuditError, match="sync must be one of"):
            AuditLog.open(tmp_path / "a.jsonl", clock=ManualClock(), sync="sometimes")


class TestKeys:
    def test_key_from_file(self, tmp_path):
        (tmp_path / "k").write_bytes(b"sixteen-byte-key\n")
        assert load_key(file=tmp_path / "k") == b"sixteen-byte-key"

    def test_key_from_env(self):
        assert load_key(env="BUDDY_K", environ={"BUDDY_K": "s3" * 8}) == b"s3" * 8

    def test_a_short_key_is_refused(self, tmp_path):
        (tmp_path / "k").write_bytes(b"secret\n")
        with pytest.raises(AuditError) as info:
            load_key(file=tmp_path / "k")
        assert str(info.value) == (f"{tmp_path / 'k'}: audit key of 6 bytes: it needs at "
                                   "least 16 (e.g. `openssl rand -hex 32`)")
        with pytest.raises(AuditError, match=r"^environment variable BUDDY_K: audit key of 2 "):
            load_key(env="BUDDY_K", environ={"BUDDY_K": "s3"})

    def test_missing_sources(self, tmp_path):
        with pytest.raises(AuditError, match="cannot read audit key"):
            load_key(file=tmp_path / "none")
        with pytest.raises(AuditError, match="BUDDY_K .* not set"):
            load_key(env="BUDDY_K", environ={})
        (tmp_path / "empty").write_bytes(b"\n")
        with pytest.raises(AuditError, match="empty"):
            load_key(file=tmp_path / "empty")
        assert load_key() is None


class TestMasker:
    @pytest.mark.parametrize("key", ["password", "PASSWD", "api_key", "apiKey", "x-api-key",
                                     "Authorization", "refresh_token", "client_secret",
                                     "private_key", "cookie"])
    def test_secret_keys(self, key):
        assert Masker().mask({key: "v"}) == {key: "***"}

    @pytest.mark.parametrize("key", ["to", "subject", "user", "monkey", "tokens_used_count"])
    def test_plain_keys(self, key):
        # "tokens_used_count" contains "token": masked too. Conservative on purpose.
        masked = Masker().mask({key: "v"})
        assert masked == ({key: "***"} if "token" in key else {key: "v"})

    def test_nested_and_lists(self):
        value = {"a": [{"secret": 1}, {"b": 2}], "c": ({"token": 3},)}
        assert Masker().mask(value) == {"a": [{"secret": "***"}, {"b": 2}],
                                        "c": [{"token": "***"}]}


def nested(depth: int) -> object:
    value: object = 0
    for _ in range(depth):
        value = [value]
    return value


def verified(path) -> int:
    """The last seq of a file log that verifies against its anchor."""
    return verify_lines(scan_log(path).lines, source=str(path), anchor=read_anchor(path)).last_seq


class TestUnencodableValues:
    """Issue 7, defect 1: a value JSON cannot hold never breaks the log, never loses the event."""

    @pytest.mark.parametrize(("value", "recorded"), [
        (2 ** 70, {"$unencodable": "int", "repr": "1180591620717411303424"}),
        (-(2 ** 64), {"$unencodable": "int", "repr": "-18446744073709551616"}),
        ({(1, 2): "x"}, {"$unencodable": "dict", "repr": "{(1, 2): 'x'}"}),
        (nested(300), {"$unencodable": "list", "repr": "[[[[...]]]]"}),
        ("a\ud800b", {"$unencodable": "str", "repr": "'a\\ud800b'"}),
    ], ids=["int-70-bits", "int-below-64-bits", "tuple-key", "nested-300", "lone-surrogate"])
    def test_recorded_as_unencodable_and_the_log_goes_on(self, tmp_path, value, recorded):
        path = tmp_path / "a.jsonl"
        with AuditLog.open(path, clock=ManualClock()) as log:
            assert log.append("execution", "escalation", "ctx-1", "run", "LIVE", None,
                              {"ok": True, "result": value, "tool": "t"}) == 2
            assert log.append("recover", "m", "s", "after", None, None, {}) == 3
        records = [json.loads(line) for line in scan_log(path).lines]
        assert records[1]["data"] == {"ok": True, "result": recorded, "tool": "t"}
        assert [r["seq"] for r in records] == [1, 2, 3]
        assert verified(path) == 3
        with AuditLog.open(path, clock=ManualClock()) as log:  # the file log reopens
            assert log.append("recover", "m", "s", "reopened", None, None, {}) == 4
        assert verified(path) == 4

    def test_secrets_stay_masked_in_the_fallback(self):
        log = AuditLog.memory(clock=ManualClock())
        log.append("recover", "m", "s", "e", None, None, {
            "password": 2 ** 70, "args": {"token": "sk-live-1", "n": 2 ** 70}})
        assert list(log.records())[-1]["data"] == {
            "password": "***",
            "args": {"$unencodable": "dict",
                     "repr": "{'token': '***', 'n': 1180591620717411303424}"},
        }

    def test_keys_json_cannot_hold(self):
        log = AuditLog.memory(clock=ManualClock())
        log.append("recover", "m", "s", "e", None, None, {(1, 2): "x", "k\udc80": 1, "(1, 2)": 2})
        assert list(log.records())[-1]["data"] == {"(1, 2)": "x", "k\\udc80": 1, "(1, 2)'": 2}
        verify_lines(log.lines())

    def test_subject_json_cannot_hold_is_escaped(self):
        log = AuditLog.memory(clock=ManualClock())
        log.append("recover", "m", "agent-\ud800", "e", None, None, {})
        assert list(log.records())[-1]["subject"] == "agent-\\ud800"

    def test_a_live_result_json_cannot_hold(self, tmp_path):
        path = tmp_path / "audit.jsonl"
        with AuditLog.open(path, clock=ManualClock()) as audit:
            engine = Engine.default(clock=ManualClock(), audit=audit)
            engine.register_handler("form_fill", live=lambda args: 2 ** 70)
            result = engine.execute("a", "form_fill", {"f": 1}, confidence=0.9)
            assert (result.ok, result.result) == (True, 2 ** 70)
            engine.decide("a", "form_fill", 0.9)
        runs = [r for r in AuditLog.read_records(path) if r["kind"] == "execution"]
        assert runs[0]["data"]["result"] == \
            {"$unencodable": "int", "repr": "1180591620717411303424"}
        report = replay(path)
        assert report.ok and report.decisions == 2 and report.events == verified(path)


class TestFailedAppend:
    """Issue 7, defect 1: any exception inside append leaves the log exactly as it was."""

    @staticmethod
    def opened(tmp_path):
        path = tmp_path / "a.jsonl"
        log = AuditLog.open(path, clock=ManualClock())
        log.append("recover", "m", "s", "e", None, None, {})
        return path, log

    def test_a_subject_function_that_raises(self, tmp_path):
        path, log = self.opened(tmp_path)
        before = path.read_bytes()

        def subject(seq: int) -> str:
            raise RuntimeError("no id")

        with pytest.raises(RuntimeError, match="no id"):
            log.append("grant", "approval", subject, "grant", None, "ACTIVE", {})
        assert path.read_bytes() == before
        assert log.append("grant", "approval", lambda seq: f"grant-{seq}", "grant", None,
                          "ACTIVE", {}) == 3
        log.close()
        assert json.loads(scan_log(path).lines[2])["subject"] == "grant-3"
        assert verified(path) == 3

    def test_a_clock_that_raises(self, tmp_path):
        path, log = self.opened(tmp_path)
        before = path.read_bytes()
        log._clock = lambda: 1 / 0
        with pytest.raises(ZeroDivisionError):
            log.append("recover", "m", "s", "e", None, None, {})
        assert path.read_bytes() == before
        log._clock = ManualClock()
        assert log.append("recover", "m", "s", "e", None, None, {}) == 3
        log.close()
        assert verified(path) == 3

    @pytest.mark.parametrize(("args", "message"), [
        ({"subject": 7}, "audit event: subject must be a string (got 7)"),
        ({"kind": None}, "audit event: kind must be a string (got None)"),
        ({"src": 1}, "audit event: src must be a string or None (got 1)"),
        ({"data": ["x"]}, "audit event: data must be a dict (got ['x'])"),
        ({"ts": float("nan")}, "audit event: ts must be a finite number (got nan)"),
        ({"ts": "now"}, "audit event: ts must be a finite number (got 'now')"),
        ({"ts": True}, "audit event: ts must be a finite number (got True)"),
        ({"kind": "note"}, "audit event: kind must be one of open, decision, transition, "
                           "approval, execution, rollback, grant, revoke, lock, unlock, recover, "
                           "conflict, resolution, schedule, ticket, idempotency (got 'note')"),
    ])
    def test_an_envelope_replay_would_refuse(self, tmp_path, args, message):
        path, log = self.opened(tmp_path)
        before = path.read_bytes()
        event = {"kind": "recover", "machine": "m", "subject": "s", "event": "e", "src": None,
                 "dst": None, "data": {}, "ts": None, **args}
        with pytest.raises(AuditError) as err:
            log.append(**event)
        assert str(err.value) == message
        assert path.read_bytes() == before
        assert log.append("recover", "m", "s", "e", None, None, {}, ts=5) == 3  # an int ts is fine
        log.close()
        assert verified(path) == 3

    def test_a_short_write_is_finished(self, tmp_path, monkeypatch):
        path, log = self.opened(tmp_path)
        monkeypatch.setattr(_audit, "_write", lambda fd, data: os.write(fd, data[:10]))
        assert log.append("recover", "m", "s", "e", None, None, {"n": 1}) == 3
        monkeypatch.undo()
        log.close()
        assert verified(path) == 3

    def test_a_failed_write_is_cut_back(self, tmp_path, monkeypatch):
        path, log = self.opened(tmp_path)
        before = path.read_bytes()

        def half_then_full(fd: int, data: bytes) -> int:
            os.write(fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(_audit, "_write", half_then_full)
        with pytest.raises(AuditError) as err:
            log.append("recover", "m", "s", "e", None, None, {"n": 1})
        monkeypatch.undo()
        assert str(err.value) == f"{path}: cannot write audit event 3: No space left on device"
        assert path.read_bytes() == before
        assert log.append("recover", "m", "s", "e", None, None, {"n": 1}) == 3
        log.close()
        assert verified(path) == 3

    def test_append_after_close(self, tmp_path):
        path, log = self.opened(tmp_path)
        log.close()
        log.close()  # twice is fine
        with pytest.raises(AuditError, match="the audit log is closed"):
            log.append("recover", "m", "s", "e", None, None, {})


class TestLineSeparators:
    """Issue 7, defect 2: U+2028, U+2029 and U+0085 inside strings are not line ends."""

    def test_a_file_log_holding_them_verifies_and_replays(self, tmp_path):
        path = tmp_path / "audit.jsonl"
        with AuditLog.open(path, clock=ManualClock()) as audit:
            engine = Engine.default(clock=ManualClock(), audit=audit)
            engine.register_handler("form_fill", live=lambda args: "ok\u2029")
            engine.decide("agent\u2028one", "form_fill", 0.9)
            engine.execute("agent\x85two", "form_fill", {"text": "a\u2028b\u2029c\x85d"},
                           confidence=0.9)
        lines = scan_log(path).lines
        assert len(lines) == verified(path) == path.read_bytes().count(b"\n")
        assert json.loads(lines[1])["subject"] == "agent\u2028one"
        assert replay(path).ok
        with AuditLog.open(path, clock=ManualClock()) as audit:
            assert audit.append("recover", "m", "s\u2028", "e", None, None, {}) == len(lines) + 1
        assert [r["seq"] for r in AuditLog.read_records(path)] == list(range(1, len(lines) + 2))


class TestAnchorProof:
    """Issue 7, section 2: an anchor that cannot be forged, and no silent missing anchor."""

    @staticmethod
    def written(tmp_path, key=None, n=6):
        path = tmp_path / "a.jsonl"
        with AuditLog.open(path, clock=ManualClock(), key=key) as log:
            for i in range(n - 1):
                log.append("recover", "m", "s", "e", None, None, {"i": i})
        return path

    @staticmethod
    def cut(path, n):
        lines = path.read_bytes().splitlines(keepends=True)
        path.write_bytes(b"".join(lines[:-n]))
        return json.loads(lines[-n - 1])

    def test_cut_lines_and_a_deleted_anchor_are_refused(self, tmp_path):
        path = self.written(tmp_path)
        self.cut(path, 2)
        anchor_path(path).unlink()
        with pytest.raises(AuditChainBroken) as err:
            replay(path)
        assert str(err.value) == (
            f"{path}: chain broken: no anchor a.jsonl.anchor beside the log: events cut from "
            "its end would go unnoticed; replay with check_anchor=False (buddy replay "
            "--no-anchor) to verify the chain without it")
        with pytest.raises(AuditChainBroken) as err:
            AuditLog.open(path, clock=ManualClock())
        assert str(err.value) == (
            f"{path}: chain broken: no anchor a.jsonl.anchor beside the log: events cut from "
            "its end would go unnoticed; open it with allow_missing_anchor=True (buddy decide "
            "--allow-missing-anchor) to go on")
        assert not anchor_path(path).exists()

    def test_a_missing_anchor_taken_explicitly(self, tmp_path):
        path = self.written(tmp_path)
        anchor_path(path).unlink()
        assert replay(path, check_anchor=False).events == 6
        with AuditLog.open(path, clock=ManualClock(), allow_missing_anchor=True) as log:
            assert log.last_seq == 7
        last = json.loads(scan_log(path).lines[-1])
        assert (last["kind"], last["event"], last["data"]) == \
            ("recover", "anchor_missing", {"anchor": "a.jsonl.anchor"})
        assert read_anchor(path).seq == 7 and replay(path).events == 7

    def test_a_new_log_is_anchored_before_its_header(self, tmp_path, monkeypatch):
        # The anchor at seq 0 comes first: a crash right after the header leaves a log
        # that still opens (its anchor is behind it, not missing).
        path = tmp_path / "a.jsonl"
        seen = []
        real = AuditLog._header

        def header(self):
            seen.append(read_anchor(path))
            real(self)

        monkeypatch.setattr(AuditLog, "_header", header)
        AuditLog.open(path, clock=ManualClock(), key=KEY).close()
        assert (seen[0].seq, seen[0].hash) == (0, GENESIS) and seen[0].mac is not None
        assert read_anchor(path).seq == 1

    def test_a_keyed_anchor_carries_a_mac(self, tmp_path):
        import hashlib
        import hmac

        path = self.written(tmp_path, key=KEY)
        anchor = json.loads(anchor_path(path).read_text())
        assert list(anchor) == ["format", "chain", "seq", "hash", "mac"]
        message = f"buddy-anchor\nbuddy-audit/1\nhmac-sha256\n6\n{anchor['hash']}".encode()
        assert anchor["mac"] == hmac.new(KEY, message, hashlib.sha256).hexdigest()
        assert replay(path, key=KEY).events == 6
        (tmp_path / "plain").mkdir()
        plain = self.written(tmp_path / "plain")
        assert list(json.loads(anchor_path(plain).read_text())) == ["format", "chain", "seq",
                                                                     "hash"]

    def test_cut_lines_and_an_anchor_rewritten_without_the_key(self, tmp_path):
        path = self.written(tmp_path, key=KEY)
        last = self.cut(path, 2)
        forged = {"format": "buddy-audit/1", "chain": "hmac-sha256", "seq": last["seq"],
                  "hash": last["hash"]}
        anchor_path(path).write_text(json.dumps(forged))
        with pytest.raises(AuditChainBroken) as err:
            replay(path, key=KEY)
        assert str(err.value) == f"{path}: chain broken at seq 4: the anchor has no MAC: it " \
            "was not written with the key"
        anchor_path(path).write_text(json.dumps({**forged, "mac": "0" * 64}))
        with pytest.raises(AuditChainBroken) as err:
            AuditLog.open(path, clock=ManualClock(), key=KEY)
        assert str(err.value) == f"{path}: chain broken at seq 4: the anchor's MAC does not " \
            "verify (anchor rewritten without the key)"
        assert replay(path, key=KEY, check_anchor=False).events == 4

    def test_an_anchor_of_another_chain(self, tmp_path):
        path = self.written(tmp_path)
        anchor = json.loads(anchor_path(path).read_text())
        anchor_path(path).write_text(json.dumps({**anchor, "chain": "hmac-sha256"}))
        with pytest.raises(AuditChainBroken, match="the anchor is of a buddy-audit/1 "
                           "hmac-sha256 log, the log is buddy-audit/1 sha256"):
            replay(path)

    @pytest.mark.parametrize(("anchor", "message"), [
        ('{"format": "buddy-audit/1", "chain": "sha256", "seq": "6", "hash": "x"}',
         "seq: must be a whole number (got '6')"),
        ('{"format": "buddy-audit/1", "chain": "sha256", "seq": 6, "hash": "x", "by": 1}',
         "by: unknown key"),
        ('[6]', "must be a table (got [6])"),
    ])
    def test_a_malformed_anchor(self, tmp_path, anchor, message):
        path = self.written(tmp_path)
        anchor_path(path).write_text(anchor)
        with pytest.raises(AuditFormatError) as err:
            replay(path)
        assert str(err.value) == f"{anchor_path(path)}: not a valid anchor: {message}"


def test_a_fifo_is_no_log_to_open_or_replay(tmp_path):
    """A FIFO would block a reader's open for ever, and a writer's appends: refused."""
    import os

    from buddy.engine.core._replay import replay as replay_log

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(AuditError, match="not a regular file"):
        replay_log(fifo, check_anchor=False)
    with pytest.raises(AuditError, match="not a regular file"):
        AuditLog.open(fifo, clock=lambda: 0.0)

