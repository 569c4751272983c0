"""engine.check refuses the arguments execute would refuse."""

from __future__ import annotations

import pytest

from buddy.engine import Engine


@pytest.mark.parametrize("args", [{1: 2}, [1], "query"])
def test_check_refuses_what_execute_refuses(args):
    engine = Engine.default(clock=lambda: 0.0)
    before = engine.audit.last_seq
    why = engine.check("a", "memory_search", 0.99, args=args)
    assert (why.allowed, why.rule) == (False, "input.args")
    assert engine.audit.last_seq == before  # nothing recorded
    result = engine.execute("a", "memory_search", args, confidence=0.99)
    assert result.decision == why.decision
