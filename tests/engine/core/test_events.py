"""decode_verified: a batch of verified lines decoded in one call, as decode_event decodes each."""

from __future__ import annotations

import msgspec
import pytest

from buddy.engine.core._events import decode_event, decode_verified
from buddy.rules.base.errors import AuditFormatError
from tests.engine.core.test_replay import scenario


def plain(pair):
    """An event and its data as plain values (a batch keeps ``prev`` and ``hash`` raw)."""
    event, data = pair
    fields = {f: getattr(event, f) for f in event.__struct_fields__ if f not in ("data", "kind")}
    fields |= {f: msgspec.json.decode(v) for f, v in fields.items() if isinstance(v, msgspec.Raw)}
    return event.kind, fields, None if data is None else msgspec.structs.asdict(data)


@pytest.fixture
def lines() -> list[bytes]:
    return [line.encode() for line in scenario().audit.lines()]


class TestDecodeVerified:
    def test_a_batch_decodes_as_each_line(self, lines):
        assert [plain(p) for p in decode_verified(lines, "log", 0)] == \
            [plain(decode_event(line, "log", n)) for n, line in enumerate(lines, 1)]

    def test_a_batch_after_the_first_numbers_its_lines_on(self, lines):
        got = list(decode_verified(lines[5:], "log", 5))
        assert [e.seq for e, _ in got] == list(range(6, len(lines) + 1))

    @pytest.mark.parametrize("bad", [
        b'{"seq":3,"kind":"decision","kind":"lock"}',  # the last kind is the one read
        b'{"seq":3} {"seq":4}',                        # two values on one line
        b'{"seq":3,"kind":"bogus"}',
    ])
    def test_a_line_the_batch_cannot_take_is_refused_as_decode_event_refuses_it(
            self, lines, bad):
        batch = [*lines[:2], bad, *lines[3:]]
        with pytest.raises(AuditFormatError) as single:
            decode_event(bad, "log", 3)
        with pytest.raises(AuditFormatError) as batched:
            list(decode_verified(batch, "log", 0))
        assert str(batched.value) == str(single.value)
