"""Files written whole or not at all: write_atomic, with and without fsync."""

from __future__ import annotations

import os

import pytest

from buddy.rules.base import write_atomic


class TestWriteAtomic:
    @pytest.mark.parametrize(("fsync", "calls"), [(True, 1), (False, 0)])
    def test_fsync_or_not_the_file_is_replaced_whole(self, tmp_path, monkeypatch, fsync, calls):
        synced: list[int] = []
        monkeypatch.setattr(os, "fsync", synced.append)
        target = tmp_path / "a.json"
        target.write_text("old")
        assert write_atomic(target, "new\n", fsync=fsync) == target
        assert target.read_text() == "new\n"
        assert len(synced) == calls
        assert os.listdir(tmp_path) == ["a.json"]  # no temp file left behind

    def test_a_failed_write_leaves_the_old_file_and_no_temp_file(self, tmp_path):
        target = tmp_path / "a.json"
        target.write_text("old")

        def fail(fh: object) -> None:
            raise OSError("disk full")

        with pytest.raises(OSError, match="disk full"):
            write_atomic(target, fail, fsync=False)
        assert target.read_text() == "old"
        assert os.listdir(tmp_path) == ["a.json"]
