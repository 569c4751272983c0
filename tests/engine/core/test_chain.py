"""The chain read as a stream: LogReader's chunks, ChainCheck batch by batch, verify_log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from buddy.engine import AuditLog
from buddy.engine.core import _chain
from buddy.engine.core._chain import (
    Chain,
    ChainCheck,
    LogReader,
    read_anchor,
    scan_log,
    verify_lines,
    verify_log,
)
from buddy.rules.base.errors import AuditChainBroken, AuditError, AuditFormatError
from tests.helpers import ManualClock


def write_log(path: Path, events: int = 40) -> list[bytes]:
    with AuditLog.open(path, clock=ManualClock()) as audit:
        for i in range(events - 1):
            audit.append("recover", "audit", "log", "note", None, None,
                         {"i": i, "text": "a\u2028b\u2029c\u0085d" * (i % 3)})
    return path.read_bytes().split(b"\n")[:-1]


class TestLogReader:
    @pytest.mark.parametrize("chunk", [1, 7, 100, 1 << 20])
    def test_any_chunk_gives_the_lines_of_the_file(self, tmp_path, chunk):
        lines = write_log(tmp_path / "log.jsonl")
        with (tmp_path / "log.jsonl").open("ab") as f:
            f.write(b'{"seq":41,"torn')
        with LogReader(tmp_path / "log.jsonl", chunk_bytes=chunk) as reader:
            got = [line for batch in reader.batches() for line in batch]
        assert got == lines and reader.lines == 40
        assert reader.good_bytes == sum(len(line) + 1 for line in lines)
        assert reader.torn_bytes == b'{"seq":41,"torn'
        assert reader.torn == (f"{tmp_path / 'log.jsonl'}:41: torn last line (15 bytes, no "
                               "newline; a write was cut off)")

    @pytest.mark.parametrize("chunk", [3, 64, 1 << 20])
    def test_a_line_not_utf8_is_named_in_any_chunk(self, tmp_path, chunk):
        path = tmp_path / "log.jsonl"
        path.write_bytes(b'{"a":1}\n' * 30 + b'{"a":"\xff"}\n' + b'{"a":2}\n')
        with pytest.raises(AuditFormatError, match=r"log\.jsonl:31: not UTF-8 text$"), \
                LogReader(path, chunk_bytes=chunk) as reader:
            for _ in reader.batches():
                pass

    def test_a_missing_file_is_named_when_opened(self, tmp_path):
        with pytest.raises(AuditError, match=r"nope\.jsonl: no such file$"):
            LogReader(tmp_path / "nope.jsonl")

    def test_scan_log_is_the_reader_in_a_list(self, tmp_path, monkeypatch):
        lines = write_log(tmp_path / "log.jsonl")
        monkeypatch.setattr(_chain, "CHUNK_BYTES", 50)
        scan = scan_log(tmp_path / "log.jsonl")
        assert scan.raw == lines and scan.torn is None


class TestChainCheck:
    @pytest.mark.parametrize("size", [1, 2, 5, 40])
    def test_batches_of_any_size_verify_as_one(self, tmp_path, size):
        lines = write_log(tmp_path / "log.jsonl")
        anchor = read_anchor(tmp_path / "log.jsonl")
        check = ChainCheck(Chain(None), "log", anchor=anchor)
        for i in range(0, len(lines), size):
            check.feed(lines[i:i + size])
        assert check.end() == verify_lines(lines, anchor=anchor)

    @pytest.mark.parametrize("size", [1, 3, 40])
    def test_the_first_break_is_named_in_any_batch(self, tmp_path, size):
        lines = write_log(tmp_path / "log.jsonl")
        lines[17] = lines[17].replace(b'"i":16', b'"i":61')
        check = ChainCheck(Chain(None), "log")
        broken = r"^log:18: chain broken at seq 18: hash mismatch \(line edited\)$"
        with pytest.raises(AuditChainBroken, match=broken):
            for i in range(0, len(lines), size):
                check.feed(lines[i:i + size])

    def test_a_line_odd_but_chained_verifies_as_before(self):
        # the byte after prev's hash is not a quote: no JSON, but the chain holds
        lines = [line.encode() for line in AuditLog.memory(clock=ManualClock()).lines()]
        body = b'{"seq":2,"ts":1.0,"prev":"%sX}' % lines[0][-66:-2]
        digest = Chain(None).digest(body)
        lines.append(b'%s,"hash":"%s"}' % (body[:-1], digest.encode()))
        check = ChainCheck(Chain(None), "log")
        check.feed(lines)
        assert check.end().last_seq == 2


class TestVerifyLog:
    def test_verifies_a_file_and_its_anchor_in_chunks(self, tmp_path, monkeypatch):
        lines = write_log(tmp_path / "log.jsonl")
        monkeypatch.setattr(_chain, "CHUNK_BYTES", 64)
        report, torn = verify_log(tmp_path / "log.jsonl",
                                  anchor=read_anchor(tmp_path / "log.jsonl"))
        assert report.count == len(lines) == 40 and torn is None

    def test_a_log_cut_short_of_its_anchor(self, tmp_path):
        lines = write_log(tmp_path / "log.jsonl")
        (tmp_path / "log.jsonl").write_bytes(b"".join(line + b"\n" for line in lines[:-3]))
        with pytest.raises(AuditChainBroken, match="log ends at seq 37 but its anchor says 40"):
            verify_log(tmp_path / "log.jsonl", anchor=read_anchor(tmp_path / "log.jsonl"))

    def test_a_line_not_utf8_after_a_break_is_reported_first(self, tmp_path, monkeypatch):
        # as when the whole file was read before its chain was verified
        lines = write_log(tmp_path / "log.jsonl")
        lines[3] = lines[3].replace(b'"i":2', b'"i":9')
        lines[30] = lines[30].replace(b'"note"', b'"n\xffte"')
        (tmp_path / "log.jsonl").write_bytes(b"".join(line + b"\n" for line in lines))
        monkeypatch.setattr(_chain, "CHUNK_BYTES", 64)
        with pytest.raises(AuditFormatError, match=r"log\.jsonl:31: not UTF-8 text$"):
            verify_log(tmp_path / "log.jsonl")

    def test_records_stream_from_the_file(self, tmp_path, monkeypatch):
        lines = write_log(tmp_path / "log.jsonl")
        monkeypatch.setattr(_chain, "CHUNK_BYTES", 64)
        assert list(AuditLog.read_records(tmp_path / "log.jsonl")) == \
            [json.loads(line) for line in lines]
