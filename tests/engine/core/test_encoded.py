"""Decision events encoded from templates compiled with the walk are the bytes the
dict encoder writes: the same log, line for line, whatever the inputs."""

from __future__ import annotations

import fcntl
import os

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from buddy.engine import AuditLog, Engine, ToolContractRegistry
from buddy.engine.core._replay import replay
from buddy.rules import EscalationTable
from buddy.rules.base.errors import AuditError
from tests.helpers import ManualClock

TOOLS = sorted(c.name for c in ToolContractRegistry.default())
agents = st.text(min_size=1, max_size=12).filter(
    lambda a: not (a.startswith("ctx-") and a[4:].isdigit()))
texts = st.sampled_from(["agent-1", "ägent", "a\u2028b", 'q"uote\\', "\x00\x1f", "😀", "a\ud7ff"])
confidences = st.one_of(st.floats(0.0, 1.0), st.sampled_from([0.0, -0.0, 1.0, 0.85, 1e-7, 5e-324]))
calls = st.lists(st.tuples(st.one_of(agents, texts), st.sampled_from(TOOLS), confidences,
                           st.sampled_from([None, True, False]), st.booleans()),
                 min_size=1, max_size=30)


def reference_lines(engine: Engine, clock: ManualClock,
                    items: list[tuple[str, str, float, bool | None, bool]]) -> list[bytes]:
    """The same decisions recorded through the dict encoder (Policy.record + append)."""
    log = AuditLog.memory(clock=clock, keep=None)
    policy = engine.policy
    locked = False
    for agent, tool, confidence, approval, lock in items:
        if lock != locked:
            log.set_locked(lock, "")
            locked = lock
        outcome = policy.evaluate(tool, confidence, approval, locked, agent)[0]
        log.append("decision", "escalation", agent, "decide", "MOCK", outcome[2],
                   policy.record(agent, tool, confidence, approval,
                                 None if approval is None else "caller", locked, outcome))
    return log.raw_lines()


@settings(max_examples=150, deadline=None)
@given(calls)
def test_encoded_decisions_are_the_dict_encoders_bytes(items):
    clock = ManualClock(1_700_000_000.125)
    # Rate limits lifted: every decision here is the table's, none a throttle's refusal.
    registry = ToolContractRegistry(attrs.evolve(c, rate_limit_per_minute=None)
                                    for c in ToolContractRegistry.default())
    engine = Engine(registry, EscalationTable.default(), clock=clock,
                    audit=AuditLog.memory(clock=clock, keep=None))
    for agent, tool, confidence, approval, lock in items:
        if lock != engine.locked:
            engine.lock() if lock else engine.unlock()
        engine.decide(agent, tool, confidence, approval=approval)
    assert engine.audit.raw_lines() == reference_lines(engine, clock, items)
    assert replay(engine.audit).ok


def test_a_file_log_gets_the_same_bytes_as_a_memory_log(tmp_path):
    clock = ManualClock(10.0)
    memory = Engine.default(clock=clock, audit=AuditLog.memory(clock=clock, keep=None))
    with AuditLog.open(tmp_path / "a.jsonl", clock=ManualClock(10.0)) as audit:
        filed = Engine.default(clock=audit._clock, audit=audit)
        for engine in (memory, filed):
            engine.decide("agent-1", "form_fill", 0.9)
            engine.decide("agent-2", "msgraph_send_email", 0.95, approval=True)
            engine.decide("agent-2", "msgraph_send_email", 0.95)
    assert AuditLog.open(tmp_path / "a.jsonl", clock=clock).raw_lines()[:4] == \
        memory.audit.raw_lines()


class TestMemoryKeep:
    def test_a_memory_log_keeps_its_newest_events_and_still_verifies(self):
        clock = ManualClock(0.0)
        engine = Engine.default(clock=clock, audit=AuditLog.memory(clock=clock, keep=50))
        for i in range(200):
            engine.decide(f"agent-{i % 3}", "vision_inspect", 0.9)
        lines = engine.audit.raw_lines()
        assert len(lines) == 50 and engine.audit.dropped == 151
        assert lines[0].startswith(b'{"seq":152,') and engine.audit.last_seq == 201
        assert engine.audit.verify().last_seq == 201

    def test_an_edit_in_what_a_memory_log_keeps_is_found(self):
        clock = ManualClock(0.0)
        audit = AuditLog.memory(clock=clock, keep=5)
        engine = Engine.default(clock=clock, audit=audit)
        for _ in range(20):
            engine.decide("agent-1", "vision_inspect", 0.9)
        assert len(audit.raw_lines()) == 5  # chained: the lines are the log's
        audit._lines[2] = audit._lines[2].replace(b'"mode":"LIVE"', b'"mode":"MOCK"')
        with pytest.raises(Exception, match="hash mismatch"):
            audit.verify()

    def test_the_default_is_bounded_and_none_keeps_all(self):
        assert AuditLog.memory(clock=lambda: 0.0).keep == 100_000
        assert Engine.default(clock=lambda: 0.0).audit.keep == 100_000
        assert AuditLog.memory(clock=lambda: 0.0, keep=None).keep is None

    @pytest.mark.parametrize("keep", [0, -1, 1.5, True, "10", 2**70])
    def test_keep_must_be_a_whole_number(self, keep):
        with pytest.raises(AuditError, match="keep must be a whole number"):
            AuditLog.memory(clock=lambda: 0.0, keep=keep)


class TestExclusive:
    def test_an_exclusive_writer_holds_the_file_until_it_closes(self, tmp_path):
        path = tmp_path / "a.jsonl"
        clock = ManualClock(0.0)
        audit = AuditLog.open(path, clock=clock, exclusive=True)
        engine = Engine.default(clock=clock, audit=audit)
        engine.decide("agent-1", "form_fill", 0.9)
        fd = os.open(path, os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            with pytest.raises(AuditError, match="another writer holds the log"):
                AuditLog.open(path, clock=clock, exclusive=True)
            engine.lock("stop")
            engine.decide("agent-1", "form_fill", 0.9)
            audit.close()
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free once closed
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        report = replay(path)
        assert report.ok and report.locked and report.last_seq == 4

    def test_a_shared_writer_after_an_exclusive_one_continues_the_chain(self, tmp_path):
        path = tmp_path / "a.jsonl"
        clock = ManualClock(0.0)
        with AuditLog.open(path, clock=clock, exclusive=True) as audit:
            Engine.default(clock=clock, audit=audit).decide("a", "form_fill", 0.9)
        with AuditLog.open(path, clock=clock) as audit:
            Engine.default(clock=clock, audit=audit).decide("b", "form_fill", 0.9)
        assert replay(path).last_seq == 3


@pytest.mark.parametrize("zeros", [(0.0, -0.0), (-0.0, 0.0)])
def test_both_zeros_are_recorded_as_given(zeros):
    """0.0 and -0.0 are equal keys of the walk's memory but not the same JSON."""
    items = [("agent-1", "form_fill", z, None, False) for z in zeros]
    test_encoded_decisions_are_the_dict_encoders_bytes.hypothesis.inner_test(items)


def test_a_memory_log_chains_in_batches_to_the_bytes_a_file_log_writes(tmp_path):
    """A memory log hashes its events when read or every CHAIN_EVERY: the same lines."""
    from buddy.engine.core import _audit

    n = 2 * _audit.CHAIN_EVERY + 7
    clock = ManualClock(5.0)
    memory = AuditLog.memory(clock=clock, keep=None)
    kept = AuditLog.memory(clock=clock, keep=100)
    with AuditLog.open(tmp_path / "a.jsonl", clock=clock, exclusive=True) as filed:
        for log in (memory, kept, filed):
            engine = Engine.default(clock=clock, audit=log)
            for i in range(n):
                engine.decide(f"agent-{i % 5}", "vision_inspect", (i % 1000) / 1000)
                if i == _audit.CHAIN_EVERY + 3:
                    assert len(log.raw_lines()) >= 100  # a read mid-batch chains what waits
    lines = AuditLog.open(tmp_path / "a.jsonl", clock=clock).raw_lines()[: n + 1]
    assert memory.raw_lines() == lines
    assert kept.raw_lines() == lines[-100:] and kept.dropped == n + 1 - 100
    assert kept.verify().last_seq == n + 1


def test_replay_refuses_a_memory_log_that_dropped_its_first_events():
    clock = ManualClock(0.0)
    audit = AuditLog.memory(clock=clock, keep=10)
    engine = Engine.default(clock=clock, audit=audit)
    for _ in range(30):
        engine.decide("agent-1", "vision_inspect", 0.9)
    with pytest.raises(AuditError, match="keeps its newest 10 events and dropped 21"):
        replay(audit)
    assert audit.verify().last_seq == 31


class TestRecordsMasked:
    """Dataclass and attrs values are written by their fields: their secrets are masked;
    a value JSON has no form for is written by its repr, secrets cut."""

    def test_dataclass_and_attrs_args_and_results(self):
        import dataclasses

        @dataclasses.dataclass
        class Creds:
            user: str
            password: str

        @attrs.define
        class Token:
            name: str
            api_key: str

        class Opaque:
            def __repr__(self):
                return "Opaque(token: abc123secret)"

        audit = AuditLog.memory(clock=lambda: 0.0, keep=None)
        engine = Engine.default(clock=lambda: 0.0, audit=audit)
        engine.register_handler("form_fill", live=lambda args: {
            "c": Creds("bob", "hunter2"), "t": [Token("n", "sk-live-1")], "o": Opaque()})
        result = engine.execute("a", "form_fill", {"c": Creds("al", "sekrit"),
                                                   "deep": [{"x": Token("m", "sk-2")}]},
                                confidence=0.9)
        assert result.ok
        text = "\n".join(audit.lines())
        for secret in ("hunter2", "sekrit", "sk-live-1", "sk-2", "abc123secret"):
            assert secret not in text
        assert '"password":"***"' in text and '"api_key":"***"' in text
        assert replay(audit).ok

    def test_an_unencodable_values_repr_is_masked(self):
        class Loud:
            def __repr__(self):
                return "Loud(password=hunter2 token: abc123secret)"

        audit = AuditLog.memory(clock=lambda: 0.0, keep=None)
        audit.append("recover", "audit", "log", "x", None, None, {"v": {(1, 2): Loud()}})
        assert "hunter2" not in audit.lines()[-1] and "abc123" not in audit.lines()[-1]
