"""Tests of replay's checks of task moves (buddy.engine.core._replay): one budget and one
task id per task, the retries counted, and a move that ends an attempt agreeing with the
call of the context it cites. Trails are written by the wave executor; forged ones are
rewritten and chained again, as a forger with the chain (and no key) can."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import attrs
import pytest

from buddy.engine import AuditLog, Engine, replay
from buddy.engine.core import _replay
from buddy.engine.core._chain import Chain, ChainCheck
from buddy.engine.waves._agents import AgentManager
from buddy.engine.waves._executor import (
    ExecutorConfig,
    ThreadBackend,
    VirtualClock,
    VirtualTimeBackend,
    WaveExecutor,
)
from buddy.engine.waves._records import PredictedTask, RetryStrategy, TaskStatus
from buddy.engine.waves._simulator import WaveSimulator
from buddy.rules.tables._waves import GateTable, RetryTable

START = 1_700_000_000.0
Record = dict[str, Any]


@attrs.frozen
class Profile:
    capability: float = 0.9
    speed: float = 1.0
    timeout_rate: float = 0.0


def trail(profiles: dict[str, Profile], tasks: list[PredictedTask], *, max_retries: int = 2,
          backend: Any = None, executor: type[WaveExecutor] = WaveExecutor, seed: int = 7,
          ) -> tuple[Engine, list[Record]]:
    """Run ``tasks`` in one wave on agents of ``profiles``; the engine and its trail."""
    clock = VirtualClock(START)
    engine = Engine.default(clock=clock)
    WaveSimulator(engine.registry, seed, profiles).install(engine)
    manager = AgentManager(list(profiles), "ROUND_ROBIN", clock=clock)
    ex = executor(engine, manager, GateTable.default(), RetryTable.default(),
                  ExecutorConfig(RetryStrategy.EXPONENTIAL_BACKOFF, max_retries), clock=clock,
                  backend=backend)
    plan = manager.assign_tasks_to_agents(tasks, 1)
    ex.execute_wave(plan, {t.task_id: t for t in tasks}, {}, start=START)
    return engine, list(engine.audit.records())


def task(task_id: str, agent: str, **kw: Any) -> PredictedTask:
    return PredictedTask(task_id, "math_compute", 0.9, wave=1, agent_id=agent, **kw)


def mixed() -> list[Record]:
    """A trail with every move that ends an attempt: t-ok succeeds at once, t-bad fails
    twice and then for good, t-refused is refused by the policy (cancelled), t-again
    fails once and succeeds."""
    profiles = {"good": Profile(capability=1.5), "bad": Profile(capability=-1.0),
                "odd": Profile(capability=1.5), "flaky": Profile(capability=0.5)}
    tasks = [task("t-ok", "good"), task("t-bad", "bad"),
             task("t-refused", "odd", confidence=1.5), task("t-again", "flaky")]
    for seed in range(50):  # a seed whose draws give those stories
        _, records = trail(profiles, tasks, seed=seed)
        if story(records, "t-again") == ["start", "fail", "retry", "succeed"] and \
                story(records, "t-bad") == ["start", "fail", "retry", "fail", "retry", "fail"]:
            return records
    raise AssertionError("no seed gives the stories")


def moves(records: list[Record], task_id: str) -> list[Record]:
    return [r for r in records if r["machine"] == "task" and r["data"]["task"] == task_id]


def story(records: list[Record], task_id: str) -> list[str]:
    return [r["event"] for r in moves(records, task_id)]


@pytest.fixture(scope="module")
def records() -> list[Record]:
    return mixed()


def move(records: list[Record], task_id: str, event: str, dst: str | None = None) -> Record:
    """The (first) move ``event`` of task ``task_id`` (to ``dst``)."""
    return next(r for r in records if r["machine"] == "task" and r["data"]["task"] == task_id
                and r["event"] == event and (dst is None or r["dst"] == dst))


def forge(records: list[Record], *changes: tuple[int, Callable[[Record], None]]) -> AuditLog:
    """``records`` chained again from a new header (the same seqs), each event whose seq
    ``changes`` names first changed by its function, as a forger with the chain can."""
    todo = dict(changes)
    forged = AuditLog.memory(clock=lambda: 0.0, keep=None)
    for r in records[1:]:
        r = {**r, "data": dict(r["data"])}
        if r["seq"] in todo:
            todo.pop(r["seq"])(r)
        at = forged.append(r["kind"], r["machine"], r["subject"], r["event"], r["src"],
                           r["dst"], r["data"], ts=r["ts"])
        assert at == r["seq"]
    assert not todo
    return forged


def diverges(log: AuditLog, seq: int, field: str) -> _replay.Divergence:
    report = replay(log)
    assert report.divergence is not None, "the forged trail replays"
    assert (report.divergence.seq, report.divergence.field) == (seq, field), \
        str(report.divergence)
    return report.divergence


def execution(records: list[Record], context: str) -> Record:
    return next(r for r in records if r["kind"] == "execution" and r["subject"] == context)


class TestTrailsReplay:
    def test_the_mixed_trail(self, records):
        assert replay(forge(records)).ok
        ends = {(r["data"]["task"], r["event"], r["dst"]) for r in records
                if r["machine"] == "task" and r["data"].get("context") is not None}
        assert ends == {("t-ok", "succeed", "COMPLETED"), ("t-bad", "fail", "RETRYING"),
                        ("t-bad", "fail", "FAILED"), ("t-refused", "cancel", "FAILED"),
                        ("t-again", "fail", "RETRYING"), ("t-again", "succeed", "COMPLETED")}
        # the trail is what the checks read: each end cites its own call
        assert execution(records, move(records, "t-ok", "succeed")["data"]["context"]
                         )["data"]["ok"] is True
        assert execution(records, move(records, "t-bad", "fail", "FAILED")["data"]["context"]
                         )["data"]["ok"] is False
        assert [r["data"]["attempts"] for r in moves(records, "t-bad")] == [0, 0, 1, 1, 2, 2]

    def test_the_thread_backend(self):
        profiles = {f"a{i}": Profile(capability=0.3 + i / 5) for i in range(6)}
        tasks = [PredictedTask(f"t{i:02d}", "math_compute", 0.5 + i / 100, wave=1)
                 for i in range(48)]
        engine, records = trail(profiles, tasks, max_retries=3, backend=ThreadBackend(4))
        report = replay(engine.audit)
        assert report.ok, str(report.divergence)
        states = [st for m, st in report.states.values() if m == "task"]
        assert len(states) == 48 and {"COMPLETED", "FAILED"} == set(states)
        assert any(r["event"] == "fail" and r["dst"] == "RETRYING" for r in records)

    def test_the_virtual_backend_with_timeouts(self):
        # a timed out attempt fails its task, which a backup agent retries
        profiles = {"slow": Profile(timeout_rate=1.0), "ok": Profile(capability=1.5)}
        tasks = [PredictedTask(f"t{i}", "math_compute", 0.9, wave=1) for i in range(4)]
        engine, _ = trail(profiles, tasks, backend=VirtualTimeBackend(2))
        assert replay(engine.audit).ok

    def test_a_run_past_its_timeout_on_a_real_clock_still_completes(self):
        # the run returned (ok: true) after the task's timeout: the task is COMPLETED (a
        # call that succeeded is never run again), the agent goes OFFLINE; replay agrees
        first = []

        def slow_once(args):
            if not first:
                first.append(1)
                time.sleep(0.3)
            return "done"

        engine = Engine.default()
        engine.register_handler("math_compute", live=slow_once, dry_run=slow_once)
        manager = AgentManager(["a", "b"], "ROUND_ROBIN", clock=time.time)
        ex = WaveExecutor(engine, manager, GateTable.default(), RetryTable.default(),
                          ExecutorConfig(timeout_s=0.05), clock=time.time,
                          backend=ThreadBackend(1), sleep=lambda s: None)
        plan = manager.assign_tasks_to_agents([task("t0", "a")], 1)
        [r] = ex.execute_wave(plan, {"t0": task("t0", "a")}, {}, start=time.time()).results
        assert (r.status, r.retry_count) == (TaskStatus.COMPLETED, 0)
        assert not manager.agents["a"].available
        records = list(engine.audit.records())
        done = move(records, "t0", "succeed")
        assert execution(records, done["data"]["context"])["data"]["ok"] is True
        assert replay(engine.audit).ok

        def relabel(rec):  # forged: the ok run said to have failed the task
            rec["event"], rec["dst"] = "fail", "RETRYING"

        d = diverges(forge(records, (done["seq"], relabel)), done["seq"], "event")
        assert d.got == f"succeed: {done['data']['context']} ran and was ok"


class TestForgedMoves:
    def test_a_final_fail_relabelled_succeed(self, records):
        fail = move(records, "t-bad", "fail", "FAILED")

        def succeed(r):
            r["event"], r["dst"] = "succeed", "COMPLETED"

        d = diverges(forge(records, (fail["seq"], succeed)), fail["seq"], "event")
        assert (d.subject, d.expected) == (fail["subject"], "succeed")
        assert d.got == f"fail or cancel: {fail['data']['context']} ran and was not ok"

    def test_a_fail_relabelled_succeed_with_its_run_forged_ok_too(self, records):
        # The run's ok rewritten as well: the task move agrees with its call, and nothing
        # else in the log says the run failed. Replay cannot know; only a key (HMAC) can.
        fail = move(records, "t-bad", "fail", "FAILED")
        run = execution(records, fail["data"]["context"])

        def succeed(r):
            r["event"], r["dst"] = "succeed", "COMPLETED"

        def ok(r):
            r["data"]["ok"], r["data"]["result"] = True, 42
            r["data"].pop("error")

        assert replay(forge(records, (fail["seq"], succeed), (run["seq"], ok))).ok

    def test_a_budget_raised_mid_task(self, records):
        # the last fail with the budget at 99: the task stays RETRYING, as the machine
        # moves with those inputs
        fail = move(records, "t-bad", "fail", "FAILED")
        assert fail["data"]["max_retries"] == 2

        def more(r):
            r["data"]["max_retries"], r["dst"] = 99, "RETRYING"

        d = diverges(forge(records, (fail["seq"], more)), fail["seq"], "max_retries")
        assert (d.expected, d.got) == (99, 2)
        assert str(d) == (f"seq {fail['seq']} ({fail['subject']}): max_retries recorded 99, "
                          "replay gives 2")

    def test_a_budget_lowered_on_a_retry(self, records):
        retry = move(records, "t-again", "retry")

        def less(r):
            r["data"]["max_retries"] = 1

        assert diverges(forge(records, (retry["seq"], less)), retry["seq"],
                        "max_retries").got == 2

    @pytest.mark.parametrize("event,dst,attempts,expected", [
        ("retry", None, 2, 1),    # a retry skipped in the count
        ("fail", "FAILED", 1, 2),  # the last fail says one retry was made, not two
        ("start", None, 1, 0),    # a first move that says a retry was made
    ])
    def test_attempts_not_the_retries_made(self, records, event, dst, attempts, expected):
        m = move(records, "t-bad", event, dst)

        def skip(r):
            r["data"]["attempts"] = attempts

        d = diverges(forge(records, (m["seq"], skip)), m["seq"], "attempts")
        assert (d.expected, d.got) == (attempts, expected)

    def test_a_task_id_changed_mid_task(self, records):
        retry = move(records, "t-bad", "retry")

        def other(r):
            r["data"]["task"] = "t-ok"

        d = diverges(forge(records, (retry["seq"], other)), retry["seq"], "task")
        assert (d.expected, d.got) == ("t-ok", "t-bad")

    def test_a_refused_call_relabelled_succeed(self, records):
        cancel = move(records, "t-refused", "cancel")
        ctx = cancel["data"]["context"]
        assert not any(r["kind"] == "execution" and r["subject"] == ctx for r in records)

        def succeed(r):
            r["event"], r["dst"] = "succeed", "COMPLETED"

        d = diverges(forge(records, (cancel["seq"], succeed)), cancel["seq"], "event")
        assert d.got == f"fail or cancel: {ctx} did not run"

    def test_a_succeed_citing_a_refused_context(self, records):
        # t-refused's cancel made to cite no call (as a cancel of a task not started
        # may), and t-again's succeed made to cite t-refused's refused call
        cancel, ok = move(records, "t-refused", "cancel"), move(records, "t-again", "succeed")
        ctx = cancel["data"]["context"]
        assert cancel["seq"] < ok["seq"]

        def uncited(r):
            del r["data"]["context"]

        def cite(r):
            r["data"]["context"], r["data"]["agent"] = ctx, "odd"

        log = forge(records, (ok["seq"], cite), (cancel["seq"], uncited))
        d = diverges(log, ok["seq"], "event")
        assert (d.expected, d.got) == ("succeed", f"fail or cancel: {ctx} did not run")

    def test_a_succeed_citing_no_context(self, records):
        ok = move(records, "t-ok", "succeed")

        def drop(r):
            del r["data"]["context"]

        d = diverges(forge(records, (ok["seq"], drop)), ok["seq"], "context")
        assert (d.expected, d.got) == (None, "the context of the attempt a succeed ends")

    def test_a_fail_citing_no_context(self, records):
        fail = move(records, "t-bad", "fail", "RETRYING")

        def drop(r):
            del r["data"]["context"]

        diverges(forge(records, (fail["seq"], drop)), fail["seq"], "context")

    def test_a_succeed_citing_a_run_another_move_ended(self, records):
        # t-again's succeed cites t-ok's run (ok), which t-ok's succeed ended already
        ok, again = move(records, "t-ok", "succeed"), move(records, "t-again", "succeed")
        assert ok["seq"] < again["seq"]

        def reuse(r):
            r["data"]["context"], r["data"]["agent"] = ok["data"]["context"], "good"

        d = diverges(forge(records, (again["seq"], reuse)), again["seq"], "context")
        assert d.got == "a context decided before, whose call no other task move ended"

    def test_a_succeed_citing_another_agents_run(self, records):
        ok = move(records, "t-ok", "succeed")

        def other(r):
            r["data"]["agent"] = "flaky"

        d = diverges(forge(records, (ok["seq"], other)), ok["seq"], "agent")
        assert (d.expected, d.got) == ("flaky", "'good', the agent of the call of "
                                                f"{ok['data']['context']}")

    def test_a_succeed_relabelled_cancel(self, records):
        ok = move(records, "t-ok", "succeed")

        def cancel(r):
            r["event"], r["dst"] = "cancel", "FAILED"

        diverges(forge(records, (ok["seq"], cancel)), ok["seq"], "event")

    def test_a_start_citing_a_context(self, records):
        start = move(records, "t-ok", "start")
        ok = move(records, "t-ok", "succeed")

        def cite(r):
            r["data"]["context"] = ok["data"]["context"]

        diverges(forge(records, (start["seq"], cite)), start["seq"], "context")

    @pytest.mark.parametrize("context", ["ctx-\u00b2", "ctx-" + "9" * 5000, "ctx-", "nope",
                                         "ctx-99999"])
    def test_a_succeed_citing_a_context_no_call_has(self, records, context):
        ok = move(records, "t-ok", "succeed")

        def cite(r):
            r["data"]["context"] = context

        d = diverges(forge(records, (ok["seq"], cite)), ok["seq"], "context")
        assert d.expected == context


class TestMemory:
    """What came of each call is kept only for the task move that cites it, and for the
    most recent contexts (OUTCOMES_KEPT): a plain log's replay keeps no more."""

    def replayer(self, log: AuditLog) -> Any:
        r, _ = _replay._run(iter([log.raw_lines()]), ChainCheck(Chain(None), "<memory>"),
                            None, None)
        assert r.divergence is None, str(r.divergence)
        return r

    def test_a_plain_log_keeps_a_bounded_number(self, monkeypatch):
        monkeypatch.setattr(_replay, "OUTCOMES_KEPT", 4)
        engine = Engine.default(clock=lambda: 0.0)
        for i in range(30):
            engine.execute("a", "math_compute", {"i": i}, confidence=0.9)
            engine.execute("a", "math_compute", {"i": i}, confidence=1.5)  # refused
        r = self.replayer(engine.audit)
        assert 4 <= len(r.outcomes) <= 8 and r.forgot > 0
        assert r.tasks == {}

    def test_a_task_trail_forgets_what_it_cited(self, records):
        r = self.replayer(forge(records))
        assert r.outcomes == {} and r.tasks == {}

    def padded(self, monkeypatch, pad: int) -> tuple[AuditLog, int]:
        """t1's trail (one attempt, which fails) with ``pad`` refused calls of another
        agent between its run and its fail (as other writers' events may come there),
        and its fail relabelled succeed; replay keeping 2 to 4 contexts."""
        monkeypatch.setattr(_replay, "OUTCOMES_KEPT", 2)

        class Busy(WaveExecutor):
            def _move(self, work, agent, trigger, inputs, ts, **kw):
                if trigger == "fail":
                    for _ in range(pad):
                        self.engine.execute("other", "math_compute", {}, confidence=1.5)
                super()._move(work, agent, trigger, inputs, ts, **kw)

        _, records = trail({"a": Profile(capability=-1.0)}, [task("t1", "a")],
                           max_retries=0, executor=Busy)
        assert story(records, "t1") == ["start", "fail"]
        assert replay(forge(records)).ok
        fail = move(records, "t1", "fail")

        def succeed(r):
            r["event"], r["dst"] = "succeed", "COMPLETED"

        return forge(records, (fail["seq"], succeed)), fail["seq"]

    def test_a_context_still_held_is_checked(self, monkeypatch):
        log, seq = self.padded(monkeypatch, 2)
        diverges(log, seq, "event")

    def test_a_context_dropped_is_taken_as_recorded(self, monkeypatch):
        # its run is no longer held: replay cannot check the move, and accepts it (so a
        # threaded run whose moves come that far after their calls never diverges falsely)
        log, _ = self.padded(monkeypatch, 6)
        assert replay(log).ok
