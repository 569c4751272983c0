"""Whatever a caller hands the engine goes through a file log, a reopen and replay intact.

Arbitrary JSON values (and values JSON cannot hold: huge integers, tuple keys,
deep nesting, odd line separators) as results, arguments, agent ids and tool
names, through execute -> file log -> close -> reopen -> execute -> replay:
every call is recorded, nothing already written is lost, the log verifies and
replays exactly.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from buddy.engine import AuditLog, Engine
from buddy.engine.core._replay import replay
from tests.helpers import ManualClock

SEPARATORS = "\u2028\u2029\u0085\x1c\x1d\x1e\r\x0b\x0c"
texts = st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from(SEPARATORS),
                max_size=12)
scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True)
           | texts | st.integers(min_value=2 ** 64, max_value=2 ** 200))
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12)
odd_values = st.one_of(
    st.just({(1, 2): "tuple key"}),
    st.just(2 ** 70),
    st.builds(lambda n: _nested(n), st.integers(min_value=250, max_value=1_200)),
    st.just({"password": "hunter2", "nested": [{"api_key": "sk-1"}]}),
)
values = json_values | odd_values
ids = texts | st.sampled_from(["agent-1", "agent\u2028two", "a\x00b"]) | json_values
tools = st.sampled_from(["form_fill", "text_extract", "vision_inspect"]) | texts | json_values
args = st.dictionaries(texts, values, max_size=3) | values


def _nested(depth: int) -> object:
    value: object = "bottom"
    for _ in range(depth):
        value = {"down": [value]}
    return value


Call = st.tuples(ids, tools, args, values, st.sampled_from([0.2, 0.6, 0.9]))


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow,
                                                  HealthCheck.function_scoped_fixture])
@given(first=st.lists(Call, min_size=1, max_size=4), second=st.lists(Call, max_size=4))
def test_anything_goes_through_execute_file_log_reopen_and_replay(tmp_path_factory, first,
                                                                   second):
    path = tmp_path_factory.mktemp("log") / "audit.jsonl"
    clock = ManualClock()
    decided = 0
    for calls in (first, second):
        with AuditLog.open(path, clock=clock) as audit:
            engine = Engine.default(clock=clock, audit=audit)
            for agent, tool, call_args, result, confidence in calls:
                if isinstance(tool, str) and tool in engine.registry:
                    engine.register_handler(tool, mock=lambda a, r=result: r,
                                            dry_run=lambda a, r=result: r,
                                            live=lambda a, r=result: r)
                outcome = engine.execute(agent, tool, call_args, confidence=confidence)
                decided += 1
                ran = outcome.mode is not None
                assert outcome.ok is ran
        clock.advance(1.0)
    records = list(AuditLog.read_records(path))
    assert sum(r["kind"] == "decision" for r in records) == decided
    report = replay(path)
    assert report.ok, report.divergence
    assert report.last_seq == len(records) == records[-1]["seq"]
