"""Tests of buddy.engine.waves._executor: tasks through gates, the task machine and the engine."""

from __future__ import annotations

import attrs
import pytest

from buddy.engine import Engine, replay
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
from buddy.rules.base.errors import InputError
from buddy.rules.tables._waves import GateTable, RetryTable

START = 1_700_000_000.0


@attrs.frozen
class Profile:
    capability: float = 0.9
    speed: float = 1.0
    timeout_rate: float = 0.0


def setup(profiles, *, strategy=RetryStrategy.EXPONENTIAL_BACKOFF, max_retries=3,
          backend=None, agents=None, seed=7, **config):
    clock = VirtualClock(START)
    engine = Engine.default(clock=clock, agents=agents)
    WaveSimulator(engine.registry, seed, profiles).install(engine)
    manager = AgentManager(list(profiles), "ROUND_ROBIN", clock=clock)
    executor = WaveExecutor(engine, manager, GateTable.default(), RetryTable.default(),
                            ExecutorConfig(strategy, max_retries, **config), clock=clock,
                            backend=backend)
    return engine, manager, executor


def task(task_id, *, tool="math_compute", rate=0.9, wave=1, deps=(), agent=None, **kw):
    return PredictedTask(task_id, tool, rate, wave=wave, dependencies=deps, agent_id=agent,
                         **kw)


def run(executor, manager, tasks, finished=None, blocking=None, wave=1):
    plan = manager.assign_tasks_to_agents(tasks, wave)
    return executor.execute_wave(plan, {t.task_id: t for t in tasks}, finished or {},
                                 start=START, blocking=blocking)


def moves(engine, task_id):
    """The (src, trigger, dst) of one task's moves, in order."""
    return [(r["src"], r["event"], r["dst"]) for r in engine.audit.records()
            if r["machine"] == "task" and r["data"].get("task") == task_id]


class TestLifecycle:
    def test_first_attempt_succeeds(self):
        engine, manager, ex = setup({"a": Profile(capability=1.5)})
        result = run(ex, manager, [task("t1")])
        [r] = result.results
        assert (r.status, r.success, r.retry_count, r.gate) == (TaskStatus.COMPLETED, True, 0,
                                                                None)
        assert moves(engine, "t1") == [("PENDING", "start", "IN_PROGRESS"),
                                       ("IN_PROGRESS", "succeed", "COMPLETED")]
        assert r.mode == "LIVE" and r.context is not None and r.context.startswith("ctx-")
        assert result.transitions == {("PENDING", "start", "IN_PROGRESS"): 1,
                                      ("IN_PROGRESS", "succeed", "COMPLETED"): 1}

    def test_retries_exhausted(self):
        engine, manager, ex = setup({"a": Profile(capability=-1.0)}, max_retries=2)
        [r] = run(ex, manager, [task("t1")]).results
        assert (r.status, r.success, r.retry_count) == (TaskStatus.FAILED, False, 2)
        assert moves(engine, "t1") == [
            ("PENDING", "start", "IN_PROGRESS"), ("IN_PROGRESS", "fail", "RETRYING"),
            ("RETRYING", "retry", "IN_PROGRESS"), ("IN_PROGRESS", "fail", "RETRYING"),
            ("RETRYING", "retry", "IN_PROGRESS"), ("IN_PROGRESS", "fail", "FAILED")]
        assert r.error_msg == "SimulatedFailure: simulated math_compute failure"

    def test_backoff_is_virtual_time(self):
        # three failures then the last: delays 0.1 + 0.2 + 0.4 on the virtual clock
        engine, manager, ex = setup({"a": Profile(capability=-1.0, speed=0.0)}, max_retries=3)
        [r] = run(ex, manager, [task("t1")]).results
        assert r.retry_count == 3
        assert r.end_time - r.start_time == pytest.approx(0.1 + 0.2 + 0.4)

    def test_linear_backoff_and_no_retry(self):
        _, manager, ex = setup({"a": Profile(capability=-1.0, speed=0.0)},
                               strategy=RetryStrategy.LINEAR_BACKOFF, max_retries=3)
        [r] = run(ex, manager, [task("t1")]).results
        assert r.end_time - r.start_time == pytest.approx(0.1 + 0.2 + 0.3)
        _, manager, ex = setup({"a": Profile(capability=-1.0)},
                               strategy=RetryStrategy.NO_RETRY, max_retries=3)
        [r] = run(ex, manager, [task("t1")]).results
        assert (r.status, r.retry_count) == (TaskStatus.FAILED, 0)

    def test_gate_refusal_fails_the_task_with_the_gate_named(self):
        engine, manager, ex = setup({"a": Profile(capability=1.5)})
        result = run(ex, manager, [task("t2", deps=("t1",))], finished={"t1": None})
        [r] = result.results
        assert (r.status, r.gate, r.mode) == (TaskStatus.FAILED, "dependency_validation", None)
        assert r.error_msg.startswith("safety gate dependency_validation: ")
        assert moves(engine, "t2") == [("PENDING", "start", "FAILED")]
        assert result.gate_refusals == {"dependency_validation": 1}
        assert not [e for e in engine.audit.records() if e["kind"] == "decision"]

    def test_dependency_met_runs(self):
        _, manager, ex = setup({"a": Profile(capability=1.5)})
        [r] = run(ex, manager, [task("t2", deps=("t1",))], finished={"t1": "math_compute"}).results
        assert r.status is TaskStatus.COMPLETED

    def test_gate_rechecked_before_a_retry(self):
        # a HIGH anomaly standing against the agent: the constraint gate refuses it
        engine, manager, ex = setup({"a": Profile(capability=1.5)})
        [r] = run(ex, manager, [task("t1")], blocking={"a": 1}).results
        assert r.gate == "constraint_enforcement"

    def test_permission_gate(self):
        engine, manager, ex = setup({"a": Profile(capability=1.5)},
                                    agents={"a": ["vision.read"]})
        [r] = run(ex, manager, [task("t1", tool="form_fill")]).results
        assert r.gate == "pre_execution_validation"

    def test_policy_refusal_is_not_retried(self):
        engine, manager, ex = setup({"a": Profile(capability=1.5)})
        [r] = run(ex, manager, [task("t1", confidence=1.5)]).results
        assert r.status is TaskStatus.FAILED and r.retry_count == 0
        assert "input.confidence" in r.error_msg
        assert moves(engine, "t1")[-1] == ("IN_PROGRESS", "cancel", "FAILED")


class TestTimeouts:
    def test_timeout_marks_offline_and_reassigns(self):
        profiles = {"slow": Profile(timeout_rate=1.0), "ok": Profile(capability=1.5)}
        engine, manager, ex = setup(profiles)
        tasks = [task(f"t{i}") for i in range(4)]  # round robin: t0, t2 on slow
        result = run(ex, manager, tasks)
        assert result.offline == ("slow",)
        assert not manager.agents["slow"].available
        by_id = {r.task_id: r for r in result.results}
        assert by_id["t0"].agent_id == "ok" and by_id["t0"].reassigned_from == "slow"
        assert by_id["t0"].status is TaskStatus.COMPLETED and by_id["t0"].retry_count == 1
        assert by_id["t2"].reassigned_from == "slow"  # never started on slow
        assert all(r.success for r in result.results)
        assert [a.task_id for a in result.reassigned] == ["t0", "t2"]
        assert moves(engine, "t0")[:2] == [("PENDING", "start", "IN_PROGRESS"),
                                           ("IN_PROGRESS", "fail", "RETRYING")]
        # the timed-out attempt waited the timeout on the virtual clock
        assert by_id["t0"].end_time - by_id["t0"].start_time >= 30.0

    def test_no_backup_left(self):
        engine, manager, ex = setup({"slow": Profile(timeout_rate=1.0)})
        [r] = run(ex, manager, [task("t0")]).results
        assert r.status is TaskStatus.FAILED
        assert r.error_msg == "no agent available: every other agent is OFFLINE"

    def test_timeout_with_no_retry_left_fails_there(self):
        profiles = {"slow": Profile(timeout_rate=1.0), "ok": Profile(capability=1.5)}
        _, manager, ex = setup(profiles, strategy=RetryStrategy.NO_RETRY)
        result = run(ex, manager, [task("t0"), task("t1"), task("t2")])
        by_id = {r.task_id: r for r in result.results}
        assert by_id["t0"].status is TaskStatus.FAILED and by_id["t0"].timed_out
        assert by_id["t2"].agent_id == "ok" and by_id["t2"].success


class TestBackends:
    def tasks(self):
        return [task(f"t{i:02d}", rate=0.5 + i / 100) for i in range(40)]

    def trail(self, backend):
        profiles = {f"a{i}": Profile(capability=0.7 + i / 10) for i in range(4)}
        engine, manager, ex = setup(profiles, backend=backend)
        result = run(ex, manager, self.tasks())
        return [(r.task_id, r.agent_id, r.status, r.retry_count, r.end_time)
                for r in result.results], engine

    def test_virtual_is_deterministic_and_replays(self):
        first, engine = self.trail(VirtualTimeBackend(2))
        again, engine2 = self.trail(VirtualTimeBackend(2))
        assert first == again
        assert [r["hash"] for r in engine.audit.records()] == \
            [r["hash"] for r in engine2.audit.records()]
        report = replay(engine.audit)
        assert report.ok and report.decisions == 40 + sum(f[3] for f in first)
        tasks = {s: st for s, (m, st) in report.states.items() if m == "task"}
        assert len(tasks) == 40 and set(tasks.values()) <= {"COMPLETED", "FAILED"}

    def test_threads_give_the_same_results(self):
        virtual, _ = self.trail(VirtualTimeBackend(4))
        threads, engine = self.trail(ThreadBackend(4))
        assert threads == virtual  # outcomes and virtual times do not depend on scheduling
        assert replay(engine.audit).ok


class TestConfig:
    @pytest.mark.parametrize("field,value", [
        ("max_retries", -1), ("max_retries", True), ("max_retries", 10**40),
        ("timeout_s", 0), ("timeout_s", float("nan")), ("timeout_s", True),
        ("max_parallel", 0), ("learning_rate", 2.0)])
    def test_bad_values(self, field, value):
        with pytest.raises(InputError, match=field):
            ExecutorConfig(**{field: value})


class TestInvariants:
    """Whatever the agents, tasks and strategy: every task ends once, COMPLETED or FAILED;
    no call runs but as an attempt the task machine put IN_PROGRESS, after its gates;
    retries stay within the budget; the trail replays."""

    @staticmethod
    def scenario():
        from hypothesis import strategies as st

        profile = st.builds(Profile, capability=st.floats(-0.5, 1.5),
                            speed=st.floats(0.0, 2.0), timeout_rate=st.sampled_from([0, 0.3]))
        return st.tuples(
            st.lists(profile, min_size=1, max_size=4),
            st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 3), st.booleans()),
                     min_size=1, max_size=12),
            st.sampled_from(["ROUND_ROBIN", "LOAD_BALANCED", "PRIORITY_BASED",
                             "CONFIDENCE_BASED"]),
            st.sampled_from(list(RetryStrategy)), st.integers(0, 3))

    def test_property(self):
        from hypothesis import given, settings

        @settings(max_examples=40, deadline=None)
        @given(self.scenario())
        def check(case):
            profiles, specs, strategy, retry, max_retries = case
            agents = {f"a{i}": p for i, p in enumerate(profiles)}
            clock = VirtualClock(START)
            engine = Engine.default(clock=clock)
            WaveSimulator(engine.registry, 3, agents).install(engine)
            manager = AgentManager(list(agents), strategy, clock=clock)
            ex = WaveExecutor(engine, manager, GateTable.default(), RetryTable.default(),
                              ExecutorConfig(retry, max_retries), clock=clock)
            tasks = [task(f"t{i}", rate=rate, priority=prio,
                          deps=("gone",) if dep_fails else ())
                     for i, (rate, prio, dep_fails) in enumerate(specs)]
            result = run(ex, manager, tasks)
            assert sorted(r.task_id for r in result.results) == sorted(t.task_id for t in tasks)
            budget = ex.max_retries
            for r in result.results:
                assert r.status in (TaskStatus.COMPLETED, TaskStatus.FAILED)
                assert r.retry_count <= budget
                if r.gate == "dependency_validation":
                    assert r.mode is None and r.retry_count == 0
                if r.gate is not None:
                    assert r.status is TaskStatus.FAILED
            records = list(engine.audit.records())
            in_progress: dict[str, int] = {}
            by_context = {}
            for rec in records:
                if rec["machine"] == "task" and rec["dst"] == "IN_PROGRESS":
                    in_progress[rec["data"]["task"]] = in_progress.get(rec["data"]["task"], 0) + 1
                if rec["kind"] == "execution":
                    by_context[rec["subject"]] = rec
            for t, (_, _, dep_fails) in zip(tasks, specs, strict=True):
                if dep_fails:  # its dependency never COMPLETED: it never ran
                    assert t.task_id not in in_progress
            runs = sum(1 for rec in records if rec["kind"] == "decision")
            assert runs == sum(in_progress.values())  # one decided call per attempt, no more
            assert replay(engine.audit).ok

        check()


def test_a_shared_file_trail_names_each_task_at_its_write(tmp_path):
    from buddy.engine import AuditLog

    clock = VirtualClock(START)
    audit = AuditLog.open(tmp_path / "audit.jsonl", clock=clock)  # shared: not exclusive
    engine = Engine.default(clock=clock, audit=audit)
    WaveSimulator(engine.registry, 1, {"a": Profile(capability=1.5)}).install(engine)
    manager = AgentManager(["a"], "ROUND_ROBIN", clock=clock)
    ex = WaveExecutor(engine, manager, GateTable.default(), RetryTable.default(), clock=clock)
    result = run(ex, manager, [task("t1"), task("t2")])
    audit.close()
    assert [r.status for r in result.results] == [TaskStatus.COMPLETED] * 2
    report = replay(tmp_path / "audit.jsonl")
    assert report.ok
    assert sorted(st for s, (m, st) in report.states.items() if m == "task") == \
        ["COMPLETED", "COMPLETED"]


def test_real_callables_on_a_real_clock_with_threads():
    """The embedding case: a real clock, real handlers, a thread pool; backoff is slept
    (on the injected sleep) and a handler's exception is a failed attempt."""
    import time

    slept: list[float] = []
    calls: dict[str, int] = {}

    def flaky(args):
        calls[args["id"]] = calls.get(args["id"], 0) + 1
        if calls[args["id"]] < 2:
            raise ConnectionError("try again")
        return "ok"

    engine = Engine.default()
    engine.register_handler("math_compute", live=flaky, dry_run=flaky)
    manager = AgentManager(["a", "b"], "ROUND_ROBIN", clock=time.time)
    ex = WaveExecutor(engine, manager, GateTable.default(), RetryTable.default(),
                      clock=time.time, backend=ThreadBackend(2), sleep=slept.append)
    tasks = [task(f"t{i}", args={"id": f"t{i}"}) for i in range(4)]
    result = run(ex, manager, tasks)
    assert [(r.status, r.retry_count) for r in result.results] == [
        (TaskStatus.COMPLETED, 1)] * 4
    assert slept == [0.1] * 4
    assert result.results[0].error_msg is None
    assert replay(engine.audit).ok


class TestSafety:
    def test_a_duplicate_irreversible_action_is_refused(self):
        engine, manager, ex = setup({"a": Profile(capability=1.5)})
        args = {"email": "ada@example.com"}
        tasks = [task(f"t{i}", tool="ghl_update_contact", args=args) for i in range(3)]
        result = run(ex, manager, tasks)
        assert [r.status for r in result.results] == [TaskStatus.COMPLETED, TaskStatus.FAILED,
                                                      TaskStatus.FAILED]
        assert {r.gate for r in result.results[1:]} == {"constraint_enforcement"}
        runs = [e for e in engine.audit.records() if e["kind"] == "execution"]
        assert len(runs) == 1 and runs[0]["data"]["mode"] == "LIVE"

    def test_a_reversible_action_may_repeat(self):
        _, manager, ex = setup({"a": Profile(capability=1.5)})
        tasks = [task(f"t{i}", args={"same": 1}) for i in range(2)]
        assert all(r.success for r in run(ex, manager, tasks).results)

    def test_tool_dependencies_come_from_dependency_tasks(self):
        _, manager, ex = setup({"a": Profile(capability=1.5)})
        [r] = run(ex, manager, [task("click", tool="button_click")]).results
        assert r.gate == "dependency_validation"
        deps = {"look": ("vision_inspect", "LIVE"), "fill": ("form_fill", "LIVE")}
        [r] = run(ex, manager, [task("click", tool="button_click", deps=tuple(deps))],
                  finished=deps).results
        assert (r.status, r.mode) == (TaskStatus.COMPLETED, "LIVE")

    def test_a_task_runs_no_higher_than_what_its_tool_depends_on_ran(self):
        # the form was filled in MOCK only: the click is capped at MOCK, not run LIVE
        _, manager, ex = setup({"a": Profile(capability=1.5)})
        deps = {"look": ("vision_inspect", "LIVE"), "fill": ("form_fill", "MOCK")}
        [r] = run(ex, manager, [task("click", tool="button_click", deps=tuple(deps))],
                  finished=deps).results
        assert (r.status, r.decided, r.mode) == (TaskStatus.COMPLETED, "LIVE", "MOCK")

    def test_an_irreversible_live_failure_is_not_retried_and_counts_as_done(self):
        engine, manager, ex = setup({"a": Profile(capability=-1.0)})
        args = {"id": 9}
        tasks = [task("t0", tool="ghl_update_contact", args=args),
                 task("t1", tool="ghl_update_contact", args=args)]
        first, second = run(ex, manager, tasks).results
        assert (first.status, first.retry_count, first.mode) == (TaskStatus.FAILED, 0, "LIVE")
        assert "irreversible and ran LIVE" in first.error_msg
        assert second.gate == "constraint_enforcement"  # the same action: maybe done
        assert sum(e["kind"] == "execution" for e in engine.audit.records()) == 1
        assert replay(engine.audit).ok

    def test_an_irreversible_call_that_timed_out_is_not_retried(self):
        profiles = {"slow": Profile(timeout_rate=1.0), "ok": Profile(capability=1.5)}
        engine, manager, ex = setup(profiles)
        [r, _] = run(ex, manager, [task("t0", tool="ghl_update_contact"), task("t1")]).results
        assert (r.status, r.retry_count, r.timed_out) == (TaskStatus.FAILED, 0, True)
        assert "irreversible" in r.error_msg and r.agent_id == "slow"
        assert sum(e["kind"] == "execution" for e in engine.audit.records()
                   if e["data"].get("tool") == "ghl_update_contact") == 1

    def test_a_call_over_the_timeout_times_out_on_the_virtual_clock(self):
        # vision_inspect takes 0.2-0.6 s here; a 0.01 s timeout: every attempt overruns
        profiles = {"a": Profile(capability=1.5), "b": Profile(capability=1.5)}
        _, manager, ex = setup(profiles, timeout_s=0.01)
        result = run(ex, manager, [task("t0", tool="vision_inspect")])
        assert result.results[0].status is TaskStatus.FAILED
        assert set(result.offline) == {"a", "b"}

    def test_a_late_success_on_a_real_clock_is_kept_not_retried(self):
        import time

        calls: list[str] = []

        def slow(args):
            calls.append(args["id"])
            time.sleep(0.05)
            return "done"

        engine = Engine.default()
        engine.register_handler("ghl_update_contact", live=slow, dry_run=slow)
        manager = AgentManager(["a", "b"], "ROUND_ROBIN", clock=time.time)
        ex = WaveExecutor(engine, manager, GateTable.default(), RetryTable.default(),
                          ExecutorConfig(timeout_s=0.01), clock=time.time,
                          backend=ThreadBackend(2), sleep=lambda s: None)
        [r] = run(ex, manager, [task("t0", tool="ghl_update_contact",
                                     args={"id": "t0"})]).results
        assert calls == ["t0"]  # once, never again on a backup
        assert r.status is TaskStatus.COMPLETED and "past the 0.01 s timeout" in r.error_msg
        assert not manager.agents["a"].available

    def test_a_rate_limited_retry_waits_for_a_token(self):
        # form_fill: 60 calls a minute; a refusal waits 1 s, not the 0.1 s backoff
        engine, manager, ex = setup({"a": Profile(capability=1.5, speed=0.0)})
        limit = engine.registry.get("form_fill").rate_limit_per_minute
        tasks = [task(f"t{i}", tool="form_fill", rate=0.9) for i in range(limit + 1)]
        result = run(ex, manager, tasks)
        last = result.results[-1]
        assert last.retry_count >= 1 and last.end_time - last.start_time >= 60 / limit


def test_agents_in_threads_never_run_one_irreversible_action_together():
    import time

    runs: list[str] = []

    def slow(args):
        runs.append(args["name"])
        time.sleep(0.05)  # long enough for every other thread to reach its gates
        return "updated"

    engine = Engine.default()
    engine.register_handler("ghl_update_contact", live=slow, dry_run=slow)
    manager = AgentManager([f"a{i}" for i in range(4)], "ROUND_ROBIN", clock=time.time)
    ex = WaveExecutor(engine, manager, GateTable.default(), RetryTable.default(),
                      clock=time.time, backend=ThreadBackend(4), sleep=lambda s: None)
    tasks = [task(f"t{i}", tool="ghl_update_contact", args={"name": "Bob"}) for i in range(4)]
    result = run(ex, manager, tasks)
    assert runs == ["Bob"]
    assert sorted(r.gate or "ran" for r in result.results) == [
        "constraint_enforcement"] * 3 + ["ran"]
    assert replay(engine.audit).ok
