"""The audit log: hash chain, HMAC, anchor, torn tails, masking, keys."""

from __future__ import annotations

import json

import attrs
import pytest

from buddy.engine import AuditLog, Engine, load_key
from buddy.engine.core._audit import GENESIS, anchor_path, read_anchor, scan_log, verify_lines
from buddy.rules.base._masking import Masker
from buddy.rules.base.errors import AuditChainBroken, AuditError
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
        log.append("note", "x", "y", "z", None, None, {"obj": object, "n": {1: 2}})
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
        log.append("note", "m", "s", "e", None, None, {})
        assert len(path.read_text().splitlines()) == 2  # readable before close
        log.close()

    def test_anchor_written_on_sync_points_and_close(self, tmp_path):
        path = tmp_path / "a.jsonl"
        log = AuditLog.open(path, clock=ManualClock(), sync="batch", sync_every=3)
        for _ in range(4):
            log.append("note", "m", "s", "e", None, None, {})
        # header (seq 1) and seqs 2, 3 make the first batch of 3: anchored at 3
        assert read_anchor(path).seq == 3
        log.close()
        anchor = read_anchor(path)
        assert anchor.seq == 5 and anchor.hash == path.read_text().splitlines()[-1][-66:-2]

    def test_truncated_tail_is_caught_by_the_anchor(self, tmp_path):
        path = tmp_path / "a.jsonl"
        with AuditLog.open(path, clock=ManualClock()) as log:
            for _ in range(5):
                log.append("note", "m", "s", "e", None, None, {})
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(lines[:-2]))
        with pytest.raises(AuditChainBroken, match="cut from the end") as err:
            verify_lines(scan_log(path).lines, source=str(path), anchor=read_anchor(path))
        assert err.value.seq == 4

    def test_anchor_hash_mismatch(self, tmp_path):
        path = tmp_path / "a.jsonl"
        with AuditLog.open(path, clock=ManualClock()) as log:
            log.append("note", "m", "s", "e", None, None, {})
        anchor = attrs.asdict(read_anchor(path))
        anchor["hash"] = "f" * 64
        anchor_path(path).write_text(json.dumps(anchor))
        with pytest.raises(AuditChainBroken, match="anchor's hash"):
            verify_lines(scan_log(path).lines, anchor=read_anchor(path))

    def test_torn_last_line_is_reported_not_fatal(self, tmp_path):
        path = tmp_path / "a.jsonl"
        with AuditLog.open(path, clock=ManualClock()) as log:
            log.append("note", "m", "s", "e", None, None, {})
        with open(path, "ab") as fh:
            fh.write(b'{"seq":3,"ts":1000.0,"ki')
        scan = scan_log(path)
        assert len(scan.lines) == 2
        assert scan.torn == f"{path}:3: torn last line (24 bytes, no newline; a write was cut off)"
        assert verify_lines(scan.lines).last_seq == 2

    def test_reopen_continues_the_chain(self, tmp_path):
        path = tmp_path / "a.jsonl"
        with AuditLog.open(path, clock=ManualClock()) as log:
            log.append("note", "m", "s", "e", None, None, {})
        with AuditLog.open(path, clock=ManualClock()) as log:
            assert log.append("note", "m", "s", "e", None, None, {}) == 3
        assert verify_lines(scan_log(path).lines, anchor=read_anchor(path)).last_seq == 3

    def test_reopen_moves_a_torn_tail_aside(self, tmp_path):
        path = tmp_path / "a.jsonl"
        with AuditLog.open(path, clock=ManualClock()) as log:
            log.append("note", "m", "s", "e", None, None, {})
        size = path.stat().st_size
        with open(path, "ab") as fh:
            fh.write(b'{"seq":3,"ts":')
        with AuditLog.open(path, clock=ManualClock()) as log:
            assert log.recovered_torn == str(tmp_path / f"a.jsonl.torn-{size}")
            log.append("note", "m", "s", "e", None, None, {})
        assert (tmp_path / f"a.jsonl.torn-{size}").read_bytes() == b'{"seq":3,"ts":'
        lines = scan_log(path).lines
        assert json.loads(lines[2])["kind"] == "recover"
        assert verify_lines(lines, anchor=read_anchor(path)).last_seq == 4

    def test_reopen_refuses_a_tampered_log(self, tmp_path):
        path = tmp_path / "a.jsonl"
        with AuditLog.open(path, clock=ManualClock()) as log:
            log.append("note", "m", "s", "e", None, None, {"n": 1})
        path.write_text(path.read_text().replace('"n":1', '"n":2'))
        with pytest.raises(AuditChainBroken):
            AuditLog.open(path, clock=ManualClock())

    def test_bad_sync_policy(self, tmp_path):
        with pytest.raises(AuditError, match="sync must be one of"):
            AuditLog.open(tmp_path / "a.jsonl", clock=ManualClock(), sync="sometimes")


class TestKeys:
    def test_key_from_file(self, tmp_path):
        (tmp_path / "k").write_bytes(b"secret\n")
        assert load_key(file=tmp_path / "k") == b"secret"

    def test_key_from_env(self):
        assert load_key(env="BUDDY_K", environ={"BUDDY_K": "s3"}) == b"s3"

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

