"""Any value through a file log and back (issue 7, defects 1 and 2, as one property).

Arbitrary JSON, and values JSON cannot hold (integers beyond 64 bits, tuple keys,
nesting deeper than 254, lone surrogates) and strings holding U+2028, U+2029 and
U+0085, go through append -> file log -> close -> reopen -> append -> verify ->
replay: the log always verifies and replays, and nothing already written is lost.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from buddy.engine.core._audit import AuditLog
from buddy.engine.core._chain import read_anchor, scan_log, verify_lines
from buddy.engine.core._replay import replay
from tests.helpers import ManualClock

KEY = b"values key"

#: Characters that end lines for str.splitlines, and JSON's own specials.
SEPARATORS = "\u2028\u2029\x85\n\r\x0b\x0c\x1c\"\\"

texts = st.text(st.characters(codec="utf-8") | st.sampled_from(SEPARATORS), max_size=8)
lone_surrogates = st.text(st.characters(categories=["Cs"]) | st.sampled_from("ab\u2028"),
                          min_size=1, max_size=4).filter(
    lambda s: any("\ud800" <= c <= "\udfff" for c in s))
huge_ints = st.integers(min_value=2 ** 64) | st.integers(max_value=-(2 ** 63) - 1)


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value]
    return value


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2 ** 63), 2 ** 64 - 1) | texts
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(texts, kids, max_size=3),
    max_leaves=8)
odd_values = st.one_of(
    huge_ints, lone_surrogates, st.integers(250, 400).map(nested),
    st.dictionaries(st.tuples(st.integers(), texts), json_values, min_size=1, max_size=2),
    st.lists(huge_ints | lone_surrogates, min_size=1, max_size=2))
values = json_values | odd_values
datas = st.dictionaries(st.sampled_from(["result", "args", "note", "n"]), values, max_size=3)
subjects = texts | lone_surrogates


def expected(value: Any) -> tuple[bool, Any]:
    """What the log holds of a value: (True, the value as JSON reads it back), or
    (False, the type name its fallback names)."""
    try:
        text = orjson.dumps([{"k": value}], option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return False, type(value).__name__
    return True, orjson.loads(text)[0]["k"]


def written(log: AuditLog, events: list[tuple[str, dict[str, Any]]]) -> None:
    for subject, data in events:
        log.append("rollback", "escalation", subject, "undo", None, None, data)


@given(first=st.lists(st.tuples(subjects, datas), min_size=1, max_size=4),
       then=st.lists(st.tuples(subjects, datas), max_size=3),
       key=st.sampled_from([None, KEY]))
def test_any_value_goes_through_a_file_log(first, then, key):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "audit.jsonl"
        with AuditLog.open(path, clock=ManualClock(), key=key, sync="never") as log:
            written(log, first)
        before = path.read_bytes()
        with AuditLog.open(path, clock=ManualClock(), key=key, sync="never") as log:
            written(log, then)
        assert path.read_bytes().startswith(before)  # nothing already written is lost
        lines = scan_log(path).lines
        count = 1 + len(first) + len(then)
        assert verify_lines(lines, key=key, anchor=read_anchor(path)).last_seq == count
        assert len(lines) == count
        report = replay(path, key=key)
        assert report.ok and report.events == report.replayed == count
        for (subject, data), line in zip(first + then, lines[1:], strict=True):
            event = json.loads(line)
            assert event["subject"] == subject.encode("utf-8", "backslashreplace").decode()
            assert set(event["data"]) == set(data)
            for name, value in data.items():
                got = event["data"][name]
                encodable, want = expected(value)
                if encodable:
                    assert got == want
                else:
                    assert list(got) == ["$unencodable", "repr"]
                    assert got["$unencodable"] == want and isinstance(got["repr"], str)
