"""Tests of the scheduler's decisions in the audit trail (``schedule`` events: ``plan`` and
``reassign``, buddy.engine.core._events) and of replay's checks of them
(buddy.engine.core._replay): a wave's task moves are by the agent its schedule puts each
task on, a task is planned once a wave, a reassignment leaves the agent the task is on.
Trails are written by the wave executor, or by hand with real task moves."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import attrs
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from buddy.engine import AuditLog, Engine, replay
from buddy.engine.core._chain import GENESIS
from buddy.engine.core._events import (
    KINDS,
    PLAN_OBJECTIVES,
    SCHEDULE_RECORDS,
    PlanData,
    ReassignData,
    _FieldError,
    event_problem,
)
from buddy.engine.core._replay import _Replayer
from buddy.engine.waves._agents import AgentManager
from buddy.engine.waves._executor import (
    ExecutorConfig,
    VirtualClock,
    VirtualTimeBackend,
    WaveExecutor,
)
from buddy.engine.waves._records import PredictedTask, RetryStrategy
from buddy.engine.waves._simulator import WaveSimulator
from buddy.rules import EscalationTable
from buddy.rules.base.errors import AuditChainBroken, AuditFormatError
from buddy.rules.tables._waves import GateTable, RetryTable

START = 1_700_000_000.0
DIGEST = "0123456789abcdef" * 4


# -- trails by hand ---------------------------------------------------------------------

def log() -> AuditLog:
    return AuditLog.memory(clock=lambda: START, keep=None)


def plan(audit: AuditLog, wave: int, agent: str, tasks: list[str], **data: Any) -> int:
    """Append the plan of ``agent`` in ``wave``; its seq."""
    return audit.append("schedule", "scheduler", f"wave-{wave}", "plan", None, None, {
        "wave": wave, "strategy": "OPTIMIZED", "agent": agent, "tasks": tasks,
        "expected_success": 0.5, "objective": "maximize_success", "objective_value": 1.5,
        "capacity": 4, "inputs": DIGEST, **data})


def reassign(audit: AuditLog, wave: int, task: str, frm: str, to: str,
             reason: str = "offline") -> int:
    return audit.append("schedule", "scheduler", f"wave-{wave}", "reassign", None, None,
                        {"wave": wave, "task": task, "from": frm, "to": to, "reason": reason})


def move(audit: AuditLog, task: str, agent: str, trigger: str, src: str, dst: str,
         subject: str | None = None, **data: Any) -> int:
    """Append a move of task ``task``'s machine (its subject ``task:<id>`` unless given);
    its seq."""
    return audit.append("transition", "task", subject or f"task:{task}", trigger, src, dst, {
        "attempts": 0, "max_retries": 0, "gate_allows": True, "task": task, "agent": agent,
        **data})


def run(audit: AuditLog, task: str, agent: str, subject: str | None = None,
        ) -> tuple[int, int]:
    """A task started and cancelled (a move that cites no call): the seqs of its moves."""
    return (move(audit, task, agent, "start", "PENDING", "IN_PROGRESS", subject),
            move(audit, task, agent, "cancel", "IN_PROGRESS", "FAILED", subject))


def rechained(lines: list[bytes]) -> list[bytes]:
    """``lines`` (edited) chained again without a key, as anyone can chain an unkeyed
    trail: each line's ``prev`` and ``hash`` made anew."""
    out, prev = [], GENESIS
    for line in lines:
        body = line[:line.rindex(b',"prev":')] + b',"prev":"%s"}' % prev.encode()
        prev = hashlib.sha256(body).hexdigest()
        out.append(body[:-1] + b',"hash":"%s"}' % prev.encode())
    return out


def divergence(audit: AuditLog) -> str:
    report = replay(audit)
    assert report.divergence is not None, "the trail replays clean"
    return str(report.divergence)


# -- trails of the wave executor -------------------------------------------------------

@attrs.frozen
class Profile:
    capability: float = 1.5
    speed: float = 1.0
    timeout_rate: float = 0.0


def executed(profiles: dict[str, Profile], tasks: list[str], *,
             planned: dict[str, str] | None = None) -> AuditLog:
    """One wave of ``tasks`` run by the wave executor, its plans (``planned``: task ->
    agent, as written; default as run) appended before it runs, and each reassignment
    as the executor makes it, before the backup agent's moves."""
    clock = VirtualClock(START)
    engine = Engine.default(clock=clock)
    WaveSimulator(engine.registry, 7, profiles).install(engine)
    manager = AgentManager(list(profiles), "ROUND_ROBIN", clock=clock)
    ex = WaveExecutor(engine, manager, GateTable.default(), RetryTable.default(),
                      ExecutorConfig(RetryStrategy.EXPONENTIAL_BACKOFF, 1), clock=clock,
                      backend=VirtualTimeBackend(2))
    predicted = {t: PredictedTask(t, "math_compute", 0.9, wave=1) for t in tasks}
    assigned = manager.assign_tasks_to_agents(list(predicted.values()), 1)
    by_agent: dict[str, list[str]] = {}
    for a in assigned.assignments:
        agent = a.agent_id if planned is None else planned[a.task_id]
        by_agent.setdefault(agent, []).append(a.task_id)
    for agent, mine in by_agent.items():
        plan(engine.audit, 1, agent, mine)
    real = manager.reassign

    def reassigned(assignment: Any, to: str) -> Any:
        reassign(engine.audit, 1, assignment.task_id, assignment.agent_id, to)
        return real(assignment, to)

    manager.reassign = reassigned  # type: ignore[method-assign]
    ex.execute_wave(assigned, predicted, {}, start=START)
    return engine.audit


class TestExecutedWaves:
    def test_a_wave_as_planned_replays_clean(self):
        audit = executed({"a": Profile(), "b": Profile()}, ["t0", "t1", "t2", "t3"])
        report = replay(audit)
        assert report.ok, str(report.divergence)
        assert (report.plans, report.reassignments) == (2, 0)
        ran = {(r["data"]["task"], r["data"]["agent"]) for r in audit.records()
               if r["machine"] == "task"}
        assert ran == {("t0", "a"), ("t1", "b"), ("t2", "a"), ("t3", "b")}  # round robin

    def test_a_task_run_by_another_agent_than_planned_diverges(self):
        audit = executed({"a": Profile(), "b": Profile()}, ["t0", "t1"],
                         planned={"t0": "b", "t1": "b"})  # t0 ran on a
        first = next(r for r in audit.records() if r["machine"] == "task")
        assert (first["data"]["task"], first["data"]["agent"]) == ("t0", "a")
        assert divergence(audit) == (
            f"seq {first['seq']} ({first['subject']}): agent recorded 'a', replay gives "
            "\"'b', the agent the schedule of wave 1 puts task 't0' on\"")

    def test_a_timed_out_agent_s_tasks_reassigned_replay_clean(self):
        audit = executed({"slow": Profile(timeout_rate=1.0), "ok": Profile()},
                         [f"t{i}" for i in range(4)])
        report = replay(audit)
        assert report.ok, str(report.divergence)
        records = list(audit.records())
        moved = [r["data"] for r in records if r["event"] == "reassign"]
        assert moved and {(d["from"], d["to"]) for d in moved} == {("slow", "ok")}
        assert (report.plans, report.reassignments) == (2, len(moved))
        for d in moved:  # the task's moves after it are the backup's
            at = next(r["seq"] for r in records if r["event"] == "reassign"
                      and r["data"]["task"] == d["task"])
            assert {r["data"]["agent"] for r in records if r["seq"] > at and
                    r["machine"] == "task" and r["data"]["task"] == d["task"]} == {"ok"}


# -- replay's checks -------------------------------------------------------------------

class TestPlans:
    def test_a_consistent_plan_replays_clean(self):
        audit = log()
        plan(audit, 1, "a", ["t1", "t2"])
        plan(audit, 1, "b", ["t3"])
        run(audit, "t1", "a")
        run(audit, "t3", "b")
        run(audit, "t2", "a")
        report = replay(audit)
        assert report.ok and (report.plans, report.reassignments) == (2, 0)
        assert report.states["task:t3"] == ("task", "FAILED")

    def test_a_move_on_another_agent_diverges_at_its_seq(self):
        audit = log()
        plan(audit, 1, "a", ["t1"])
        plan(audit, 1, "b", ["t2"])
        run(audit, "t1", "a")
        seq = move(audit, "t2", "a", "start", "PENDING", "IN_PROGRESS")
        assert seq == 6
        assert divergence(audit) == ("seq 6 (task:t2): agent recorded 'a', replay gives "
                                     "\"'b', the agent the schedule of wave 1 puts task "
                                     "'t2' on\"")

    def test_the_wrong_agent_on_a_later_move_diverges_there(self):
        audit = log()
        plan(audit, 1, "a", ["t1"])
        move(audit, "t1", "a", "start", "PENDING", "IN_PROGRESS")
        seq = move(audit, "t1", "b", "cancel", "IN_PROGRESS", "FAILED")
        report = replay(audit)
        assert report.divergence is not None
        assert (report.divergence.seq, report.divergence.field, report.divergence.expected) \
            == (seq, "agent", "b")

    def test_a_task_planned_twice_in_a_wave_diverges(self):
        audit = log()
        plan(audit, 1, "a", ["t1", "t2"])
        seq = plan(audit, 1, "b", ["t3", "t2"])
        assert divergence(audit) == (
            f"seq {seq} (wave-1): tasks recorded 't2', replay gives \"a task no other plan "
            "of wave 1 lists (the plan at seq 2 puts it on 'a')\"")

    def test_task_moves_before_any_plan_are_not_held_to_one(self):
        audit = log()
        run(audit, "t9", "z")  # no schedule held yet: an older trail, as before
        plan(audit, 1, "a", ["t1"])
        run(audit, "t1", "a")
        report = replay(audit)
        assert report.ok and report.plans == 1

    def test_a_task_no_plan_of_the_wave_lists_diverges_at_its_move(self):
        audit = log()
        plan(audit, 3, "a", ["t1"])
        plan(audit, 3, "b", ["t2"])
        run(audit, "t1", "a")
        seq = move(audit, "x", "a", "start", "PENDING", "IN_PROGRESS")
        assert divergence(audit) == (
            f"seq {seq} (task:x): task recorded 'x', replay gives \"task 'x' moved in wave "
            "3, which no plan of the wave lists\"")

    def test_a_task_removed_from_its_plan_diverges_even_on_its_agent(self):
        audit = log()
        plan(audit, 1, "a", ["t1"])  # t2 was listed here too
        run(audit, "t1", "a")
        seq, _ = run(audit, "t2", "a")
        report = replay(audit)
        assert report.divergence is not None
        assert attrs.astuple(report.divergence)[:3] == (seq, "task:t2", "task")

    def test_a_plan_of_no_tasks_holds_every_move_of_its_wave(self):
        audit = log()
        plan(audit, 2, "a", [])
        seq, _ = run(audit, "t1", "a")
        assert divergence(audit) == (
            f"seq {seq} (task:t1): task recorded 't1', replay gives \"task 't1' moved in wave "
            "2, which no plan of the wave lists\"")

    def test_a_move_that_names_no_task_diverges_while_a_schedule_is_held(self):
        audit = log()
        plan(audit, 1, "a", ["t1"])
        seq = audit.append("transition", "task", "task:t1", "start", "PENDING",
                           "IN_PROGRESS", {"task": None, "agent": "a"})
        assert divergence(audit) == (
            f"seq {seq} (task:t1): task recorded None, replay gives 'task None moved in "
            "wave 1, which no plan of the wave lists'")

    def test_a_plan_of_another_wave_drops_the_last_wave_s_schedule(self):
        audit = log()
        plan(audit, 1, "a", ["t1"])
        plan(audit, 2, "b", ["t1", "t2"])  # t1 again: wave 1's schedule is gone
        run(audit, "t1", "b", "task:t1 again")
        r = replayer(audit)
        assert r.divergence is None and r.scheduled == {"t1": "b", "t2": "b"}
        assert r.schedule_wave == 2

    def test_a_later_run_planning_the_same_wave_again_starts_a_new_schedule(self):
        # a run continuing the trail plans its wave 1 anew, after the first run's moves
        audit = log()
        plan(audit, 1, "a", ["t1"])
        plan(audit, 1, "b", ["t2"])
        run(audit, "t1", "a")
        plan(audit, 1, "c", ["t1"])
        run(audit, "t1", "c", "task:t1 again")
        assert replay(audit).ok

    def test_an_agent_planned_again_starts_a_new_schedule(self):
        audit = log()  # a run cut short between its plans, continued: nothing moved
        plan(audit, 1, "a", ["t1"])
        plan(audit, 1, "a", ["t2"])
        plan(audit, 1, "b", ["t1"])
        run(audit, "t1", "b")
        assert replay(audit).ok

    @pytest.mark.parametrize(("machine", "subject", "field", "recorded", "gives"), [
        ("planner", "wave-1", "machine", "planner", "scheduler"),
        ("scheduler", "wave-2", "subject", "wave-2", "wave-1, the wave of its data"),
    ])
    def test_an_envelope_other_than_the_scheduler_s(self, machine, subject, field, recorded,
                                                    gives):
        audit = log()
        audit.append("schedule", machine, subject, "plan", None, None, {
            "wave": 1, "strategy": "s", "agent": "a", "tasks": ["t1"],
            "expected_success": 1})
        report = replay(audit)
        assert report.divergence is not None
        assert attrs.astuple(report.divergence) == (2, subject, field, recorded, gives)


class TestReassignments:
    def test_a_reassigned_task_s_moves_by_the_new_agent_replay_clean(self):
        audit = log()
        plan(audit, 1, "a", ["t1", "t2"])
        plan(audit, 1, "b", ["t3"])
        move(audit, "t1", "a", "start", "PENDING", "IN_PROGRESS")
        reassign(audit, 1, "t1", "a", "b")  # a went OFFLINE mid-task
        reassign(audit, 1, "t2", "a", "b", reason="load")
        move(audit, "t1", "b", "cancel", "IN_PROGRESS", "FAILED")
        run(audit, "t2", "b")
        run(audit, "t3", "b")
        report = replay(audit)
        assert report.ok, str(report.divergence)
        assert (report.plans, report.reassignments) == (2, 2)

    def test_a_reassigned_task_moved_by_its_old_agent_diverges(self):
        audit = log()
        plan(audit, 1, "a", ["t1"])
        reassign(audit, 1, "t1", "a", "b")
        seq = move(audit, "t1", "a", "start", "PENDING", "IN_PROGRESS")
        assert divergence(audit) == (
            f"seq {seq} (task:t1): agent recorded 'a', replay gives \"'b', the agent the "
            "schedule of wave 1 puts task 't1' on\"")

    def test_a_task_moved_twice_follows_both(self):
        audit = log()
        plan(audit, 1, "a", ["t1"])
        reassign(audit, 1, "t1", "a", "b")
        reassign(audit, 1, "t1", "b", "c")
        run(audit, "t1", "c")
        assert replay(audit).ok

    def test_a_reassign_from_an_agent_the_task_is_not_on_diverges(self):
        audit = log()
        plan(audit, 1, "a", ["t1"])
        plan(audit, 1, "b", ["t2"])
        seq = reassign(audit, 1, "t1", "b", "c")
        assert divergence(audit) == (f"seq {seq} (wave-1): from recorded 'b', replay gives "
                                     "\"'a', the agent task 't1' is on\"")

    def test_a_reassign_from_the_agent_it_left_diverges(self):
        audit = log()
        plan(audit, 1, "a", ["t1"])
        reassign(audit, 1, "t1", "a", "b")
        seq = reassign(audit, 1, "t1", "a", "c")  # a no longer holds it
        assert divergence(audit) == (f"seq {seq} (wave-1): from recorded 'a', replay gives "
                                     "\"'b', the agent task 't1' is on\"")

    def test_a_reassign_of_a_task_no_plan_names_diverges(self):
        audit = log()
        plan(audit, 1, "a", ["t1"])
        seq = reassign(audit, 1, "t9", "a", "b")
        assert divergence(audit) == (f"seq {seq} (wave-1): task recorded 't9', replay gives "
                                     "'a task the schedule of wave 1 plans'")

    def test_a_reassign_in_another_wave_than_planned_diverges(self):
        audit = log()
        plan(audit, 1, "a", ["t1"])
        seq = reassign(audit, 2, "t1", "a", "b")
        assert divergence(audit) == (f"seq {seq} (wave-2): wave recorded 2, replay gives "
                                     "'1, the wave planned last'")

    def test_a_reassign_before_any_plan_diverges(self):
        audit = log()
        reassign(audit, 1, "t1", "a", "b")
        assert divergence(audit) == ("seq 2 (wave-1): wave recorded 1, replay gives 'a "
                                     "planned wave (no plan came before)'")


# -- the declared records ----------------------------------------------------------------

GOOD_PLAN = {"wave": 1, "strategy": "OPTIMIZED", "agent": "a", "tasks": ["t1", "t2"],
             "expected_success": 0.75, "objective": None, "objective_value": None,
             "capacity": None, "inputs": None}
GOOD_REASSIGN = {"wave": 1, "task": "t1", "from": "a", "to": "b", "reason": "offline"}


class TestRecords:
    def test_the_kind_and_its_events(self):
        assert "schedule" in KINDS
        assert SCHEDULE_RECORDS == {"plan": PlanData, "reassign": ReassignData}

    @pytest.mark.parametrize(("event", "change", "problem"), [
        ("plan", {"wave": 0}, "'data.wave': must be a whole number >= 1 (got 0)"),
        ("plan", {"wave": -3}, "'data.wave': must be a whole number >= 1 (got -3)"),
        ("plan", {"wave": 1.5}, "'data.wave': must be a whole number (got 1.5)"),
        ("plan", {"wave": "1"}, "'data.wave': must be a whole number (got '1')"),
        ("plan", {"agent": ""}, "'data.agent': must be a non-empty string (got '')"),
        ("plan", {"agent": None}, "'data.agent': must be a string (got None)"),
        ("plan", {"strategy": 3}, "'data.strategy': must be a string (got 3)"),
        ("plan", {"tasks": "t1"}, "'data.tasks': must be a list (got 't1')"),
        ("plan", {"tasks": ["t1", 2]}, "'data.tasks[1]': must be a string (got 2)"),
        ("plan", {"tasks": ["t1", "t2", "t1"]},
         "'data.tasks[2]': task 't1' is listed twice: a plan runs each task once"),
        ("plan", {"expected_success": 1.5},
         "'data.expected_success': must be a number in [0, 1] (got 1.5)"),
        ("plan", {"expected_success": -0.1},
         "'data.expected_success': must be a number in [0, 1] (got -0.1)"),
        ("plan", {"expected_success": True},
         "'data.expected_success': must be a number (got True)"),
        ("plan", {"objective_value": "high"},
         "'data.objective_value': must be a number (got 'high')"),
        ("plan", {"capacity": -1}, "'data.capacity': must be a whole number in [0, 2**31] "
                                   "or null (got -1)"),
        ("plan", {"inputs": "not hex"}, "'data.inputs': must be a hex digest (lowercase) or "
                                        "null (got 'not hex')"),
        ("plan", {"colour": "red"}, "'data.colour': unknown key"),
        ("plan", {"expected_success": None},
         "'data.expected_success': must be a number (got None)"),
        ("reassign", {"to": "a"}, "'data.to': must be another agent than from (got 'a')"),
        ("reassign", {"from": 7}, "'data.from': must be a string (got 7)"),
        ("reassign", {"from": ""}, "'data.from': must be a non-empty string (got '')"),
        ("reassign", {"from_": "a"}, "'data.from_': unknown key"),
        ("reassign", {"task": None}, "'data.task': must be a string (got None)"),
        ("reassign", {"wave": 0}, "'data.wave': must be a whole number >= 1 (got 0)"),
    ])
    def test_malformed_data_is_refused_naming_the_field(self, event, change, problem):
        data = {**(GOOD_PLAN if event == "plan" else GOOD_REASSIGN), **change}
        audit = log()
        plan(audit, 1, "a", ["t0"])
        audit.append("schedule", "scheduler", "wave-1", event, None, None, data)
        for lines in (audit.raw_lines(), [line.decode() for line in audit.raw_lines()]):
            with pytest.raises(AuditFormatError) as err:
                replay(lines)
            assert str(err.value) == f"<lines>:3: not a valid audit event: {problem} (seq 3)"

    def test_a_missing_field_is_named(self):
        audit = log()
        data = {k: v for k, v in GOOD_PLAN.items() if k != "tasks"}
        audit.append("schedule", "scheduler", "wave-1", "plan", None, None, data)
        with pytest.raises(AuditFormatError, match=r"'data.tasks': is required \(seq 2\)$"):
            replay(audit)

    def test_an_event_of_a_schedule_other_than_plan_or_reassign_is_refused(self):
        audit = log()
        audit.append("schedule", "scheduler", "wave-1", "cancel", None, None, {})
        with pytest.raises(AuditFormatError) as err:
            replay(audit)
        assert str(err.value) == ("<memory>:2: not a valid audit event: 'event': must be one "
                                  "of plan, reassign for a schedule (got 'cancel') (seq 2)")

    @pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
    @pytest.mark.parametrize("field", ["expected_success", "objective_value"])
    def test_non_finite_numbers_are_refused_naming_the_field(self, field, value):
        with pytest.raises(_FieldError) as err:
            PlanData(**{**GOOD_PLAN, field: value})
        assert err.value.field == field
        event = {"seq": 2, "ts": 0.0, "kind": "schedule", "machine": "scheduler",
                 "subject": "wave-1", "event": "plan", "src": None, "dst": None,
                 "data": {**GOOD_PLAN, field: value}, "prev": "0" * 64, "hash": "0" * 64}
        problem = event_problem(event, 2)
        assert problem is not None and problem.path == ("data", field)
        assert "finite" in problem.message or "[0, 1]" in problem.message

    @pytest.mark.parametrize(("event", "change", "problem"), [
        ("plan", {"objective": "maximize_chaos"},
         "'data.objective': must be one of maximize_success, maximize_throughput, "
         "maximize_confidence, balanced or null (got 'maximize_chaos')"),
        ("plan", {"capacity": 2**63 - 1},
         "'data.capacity': must be a whole number in [0, 2**31] or null "
         "(got 9223372036854775807)"),
        ("plan", {"capacity": 2**31 + 1},
         "'data.capacity': must be a whole number in [0, 2**31] or null (got 2147483649)"),
        ("plan", {"tasks": ["t1", "t\u2028x"]},
         "'data.tasks[1]': must be printable text: it holds U+2028 at character 2"),
        ("plan", {"tasks": ["t\u2029"]},
         "'data.tasks[0]': must be printable text: it holds U+2029 at character 2"),
        ("plan", {"tasks": ["t" * 257]},
         "'data.tasks[0]': must be at most 256 characters (got 257)"),
        ("plan", {"agent": "a\x1b[2J"},
         "'data.agent': must be printable text: it holds U+001B at character 2"),
        ("plan", {"agent": "a\x85"},
         "'data.agent': must be printable text: it holds U+0085 at character 2"),
        ("plan", {"strategy": "OPT\nIMIZED"},
         "'data.strategy': must be printable text: it holds U+000A at character 4"),
        ("plan", {"strategy": ""}, "'data.strategy': must be a non-empty string (got '')"),
        ("reassign", {"reason": "whim"},
         "'data.reason': must be one of load, offline (got 'whim')"),
        ("reassign", {"reason": "OFFLINE"},
         "'data.reason': must be one of load, offline (got 'OFFLINE')"),
        ("reassign", {"to": "b\u2028"},
         "'data.to': must be printable text: it holds U+2028 at character 2"),
        ("reassign", {"task": "t\x00"},
         "'data.task': must be printable text: it holds U+0000 at character 2"),
        ("reassign", {"from": "a" * 300},
         "'data.from': must be at most 256 characters (got 300)"),
    ])
    def test_values_no_writer_records_are_refused_naming_the_field(self, event, change,
                                                                    problem):
        data = {**(GOOD_PLAN if event == "plan" else GOOD_REASSIGN), **change}
        audit = log()
        plan(audit, 1, "a", ["t1"])
        audit.append("schedule", "scheduler", "wave-1", event, None, None, data)
        for lines in (audit.raw_lines(), [line.decode() for line in audit.raw_lines()]):
            with pytest.raises(AuditFormatError) as err:
                replay(lines)
            assert str(err.value) == f"<lines>:3: not a valid audit event: {problem} (seq 3)"

    def test_a_capacity_past_64_bits_in_a_re_chained_trail_is_refused(self):
        # the writer cannot record it (orjson: 64 bits at most): an edited, re-chained line
        audit = log()
        plan(audit, 1, "a", ["t1"], capacity=7777)
        run(audit, "t1", "a")
        lines = rechained([line.replace(b'"capacity":7777', b'"capacity":' + b"1" + b"0" * 30)
                           for line in audit.raw_lines()])
        assert b'"capacity":1' + b"0" * 30 + b"," in lines[1]
        with pytest.raises(AuditFormatError) as err:
            replay(lines)
        # (the JSON parser that names the problem reads an integer that large as a float)
        assert str(err.value) == ("<lines>:2: not a valid audit event: 'data.capacity': must be "
                                  "a whole number (got 1e+30) (seq 2)")

    def test_a_missing_reason_is_refused(self):
        audit = log()
        plan(audit, 1, "a", ["t1"])
        audit.append("schedule", "scheduler", "wave-1", "reassign", None, None,
                     {k: v for k, v in GOOD_REASSIGN.items() if k != "reason"})
        with pytest.raises(AuditFormatError, match=r"'data.reason': is required \(seq 3\)$"):
            replay(audit)

    @pytest.mark.parametrize(("event", "change"), [
        ("plan", {"objective": objective}) for objective in PLAN_OBJECTIVES] + [
        ("plan", {"capacity": 0}), ("plan", {"capacity": 2**31}),
        ("plan", {"tasks": ["t" * 256, "東京 é", "a b"], "agent": "agent 7 ☃"}),
        ("reassign", {"reason": "load"}), ("reassign", {"reason": "offline"}),
    ])
    def test_the_bounds_themselves_are_taken(self, event, change):
        data = {**(GOOD_PLAN if event == "plan" else GOOD_REASSIGN), **change}
        audit = log()
        plan(audit, 1, "a", ["t1"])
        audit.append("schedule", "scheduler", "wave-1", event, None, None, data)
        assert replay(audit).ok

    def test_the_objectives_are_the_optimizer_s(self):
        from buddy.engine.waves import OBJECTIVES

        assert PLAN_OBJECTIVES == OBJECTIVES

    def test_the_records_round_trip_as_the_log_holds_them(self):
        r = ReassignData(wave=2, task="t1", from_="a", to="b", reason="load")
        assert (r.from_, r.reason) == ("a", "load")
        assert PlanData(**{**GOOD_PLAN, "tasks": ("t1",)}).tasks == ("t1",)


# -- the chain --------------------------------------------------------------------------

class TestChain:
    def test_a_tampered_plan_breaks_the_chain(self, tmp_path):
        path = tmp_path / "audit.jsonl"
        with AuditLog.open(path, clock=lambda: START) as audit:
            plan(audit, 1, "a", ["t1"])
            run(audit, "t1", "a")
        assert replay(path).ok
        text = path.read_bytes()
        forged = text.replace(b'"agent":"a","tasks"', b'"agent":"b","tasks"')
        assert forged != text
        path.write_bytes(forged)
        with pytest.raises(AuditChainBroken) as err:
            replay(path)
        assert err.value.seq == 2


# -- the paths of replay agree -----------------------------------------------------------

def replayer(audit: AuditLog, *, fast: bool = True, step: int = 3) -> _Replayer:
    """A replayer that replayed ``audit`` in batches of ``step`` lines, by the batch path
    (``fast``) or line by line."""
    r = _Replayer(EscalationTable.default(), "<lines>", "sha256", given=False)
    raw = audit.raw_lines()
    for start in range(0, len(raw), step):
        (r.lines if fast else r.slow)(raw[start:start + step], start)
    return r


def found(r: _Replayer) -> tuple[Any, ...]:
    return (r.divergence, r.states, r.tasks, r.scheduled, r.schedule_wave, r.plans,
            r.reassignments, r.decisions)


def story_log() -> AuditLog:
    """Plans, a reassignment, moves, and a move on the wrong agent at the end."""
    audit = log()
    plan(audit, 1, "a", ["t1", "t2"])
    plan(audit, 1, "b", ["t3"])
    move(audit, "t1", "a", "start", "PENDING", "IN_PROGRESS")
    reassign(audit, 1, "t1", "a", "b")
    move(audit, "t1", "b", "cancel", "IN_PROGRESS", "FAILED")
    run(audit, "t3", "b")
    plan(audit, 2, "c", ["t4"])
    move(audit, "t4", "a", "start", "PENDING", "IN_PROGRESS")
    return audit


class TestPaths:
    @pytest.mark.parametrize("step", [1, 2, 3, 50])
    def test_batch_and_line_by_line_agree(self, step):
        audit = story_log()
        fast, slow = found(replayer(audit, step=step)), found(replayer(audit, fast=False,
                                                                          step=step))
        assert fast == slow
        assert fast[0] is not None and (fast[0].seq, fast[0].field) == (10, "agent")
        assert (fast[5], fast[6]) == (3, 1)

    def test_alone_and_beside_the_verifier_agree(self, tmp_path, monkeypatch):
        monkeypatch.setattr("buddy.engine.core._chain.CHUNK_BYTES", 300)  # many chunks
        path = tmp_path / "audit.jsonl"
        with AuditLog.open(path, clock=lambda: START) as audit:
            for line in story_log().raw_lines()[1:]:
                r = json.loads(line)
                audit.append(r["kind"], r["machine"], r["subject"], r["event"], r["src"],
                             r["dst"], r["data"], ts=r["ts"])
        alone, beside = replay(path, parallel=False), replay(path, parallel=True)
        assert alone == beside
        assert alone.divergence is not None and alone.divergence.seq == 10
        assert (alone.plans, alone.reassignments) == (3, 1)


# -- properties ------------------------------------------------------------------------

@st.composite
def schedules(draw: st.DrawFn) -> tuple[AuditLog, list[int]]:
    """A trail of 1 to 3 waves, each planned (tasks spread over 1 to 4 agents), some tasks
    reassigned, and every task's moves by the agent it is on, interleaved; with the seqs
    of its moves."""
    audit, seqs, n = log(), [], 0
    for wave in range(1, draw(st.integers(1, 3)) + 1):
        agents = [f"a{i}" for i in range(draw(st.integers(1, 4)))]
        count = draw(st.integers(0, 6))
        tasks = [f"w{wave}t{n + i}" for i in range(count)]
        n += count
        on = {t: draw(st.sampled_from(agents)) for t in tasks}
        for agent in agents:
            mine = [t for t in tasks if on[t] == agent]
            if mine:
                plan(audit, wave, agent, mine, expected_success=draw(st.floats(0, 1)))
        # each task: start, maybe moved to another agent, then cancel (or refused at start)
        steps: list[tuple[str, str]] = []
        for t in tasks:
            steps += [(t, "start"), (t, "end")]
        queue = list(draw(st.permutations(steps)))  # interleaved; a start before its end
        done: set[str] = set()
        started: set[str] = set()
        while queue:
            t, step = queue.pop(0)
            if step == "end" and t not in started:
                queue.append((t, step))
                continue
            if step == "start":
                if len(agents) > 1 and draw(st.booleans()):
                    to = draw(st.sampled_from([a for a in agents if a != on[t]]))
                    reassign(audit, wave, t, on[t], to)
                    on[t] = to
                refused = draw(st.booleans())
                seqs.append(move(audit, t, on[t], "start", "PENDING",
                                 "FAILED" if refused else "IN_PROGRESS",
                                 gate_allows=not refused))
                started.add(t)
                if refused:
                    done.add(t)
            elif t not in done:
                seqs.append(move(audit, t, on[t], "cancel", "IN_PROGRESS", "FAILED"))
    return audit, seqs


@settings(max_examples=60, deadline=None)
@given(schedules())
def test_consistent_moves_always_replay_clean(trail):
    audit, _ = trail
    report = replay(audit)
    assert report.ok, str(report.divergence)
    assert report.plans == sum(1 for r in audit.records() if r["event"] == "plan")


@settings(max_examples=60, deadline=None)
@given(schedules(), st.data())
def test_one_move_on_another_agent_always_diverges_there(trail, data):
    audit, seqs = trail
    if not seqs:
        return
    flipped = data.draw(st.sampled_from(seqs))
    records = list(audit.records())
    forged = log()
    for r in records[1:]:
        d = dict(r["data"])
        if r["seq"] == flipped:
            d["agent"] = d["agent"] + "x"  # an agent no plan names
        forged.append(r["kind"], r["machine"], r["subject"], r["event"], r["src"], r["dst"],
                      d, ts=r["ts"])
    report = replay(forged)
    assert report.divergence is not None
    assert (report.divergence.seq, report.divergence.field) == (flipped, "agent")
    assert found(replayer(forged)) == found(replayer(forged, fast=False))


def test_memory_holds_one_wave_s_schedule():
    audit = log()
    for wave in range(1, 51):
        plan(audit, wave, "a", [f"w{wave}t{i}" for i in range(20)])
        for i in range(20):
            run(audit, f"w{wave}t{i}", "a")
    r = replayer(audit, step=64)
    assert r.divergence is None and r.plans == 50
    assert len(r.scheduled) == 20 and r.schedule_wave == 50
    assert r.tasks == {}


def test_buddy_replay_counts_the_scheduler_s_decisions(tmp_path):
    from click.testing import CliRunner

    from buddy.engine.app._cli import cli

    path = tmp_path / "audit.jsonl"
    with AuditLog.open(path, clock=lambda: START) as audit:
        plan(audit, 1, "a", ["t1", "t2"])
        plan(audit, 1, "b", ["t3"])
        reassign(audit, 1, "t2", "a", "b")
        run(audit, "t1", "a")
    result = CliRunner().invoke(cli, ["replay", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == (
        "replayed 6 events: 0 decisions and every transition reproduced; 2 scheduler plans "
        "and 1 reassignment held to the task moves")
    result = CliRunner().invoke(cli, ["replay", "--json", str(path)])
    assert json.loads(result.output)["plans"] == 2


# -- continued runs of buddy run waves ---------------------------------------------------

def waves_run(out: Any) -> Any:
    from buddy.engine.app._waves import WaveRunConfig, run_waves

    return run_waves(WaveRunConfig(output_dir=out, start=int(START), tasks_per_wave=5))


def records_of(path: Any) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


class TestContinuedRuns:
    """A run that continues a trail closes the tasks the last one left unfinished (cancel
    moves) before it plans: the schedule held then is the last run's last wave's, which
    lists them."""

    def test_two_runs_into_one_directory_replay_clean(self, tmp_path):
        from buddy.engine.app._waves import AUDIT_FILE

        waves_run(tmp_path)
        first = sum(r["event"] == "plan" for r in records_of(tmp_path / AUDIT_FILE))
        waves_run(tmp_path)
        report = replay(tmp_path / AUDIT_FILE)
        assert report.ok, str(report.divergence)
        assert first > 0 and report.plans == 2 * first

    def test_a_run_killed_mid_wave_then_continued_replays_clean(self, tmp_path):
        from buddy.engine.app._waves import AUDIT_FILE
        from buddy.engine.core._chain import anchor_path

        path = tmp_path / AUDIT_FILE
        waves_run(tmp_path)
        records = records_of(path)
        last_wave = max(r["data"]["wave"] for r in records if r["event"] == "plan")
        planned = {t: r["data"]["agent"] for r in records if r["event"] == "plan" and
                   r["data"]["wave"] == last_wave for t in r["data"]["tasks"]}
        after = next(r["seq"] for r in records if r["event"] == "plan" and
                     r["data"]["wave"] == last_wave)
        moves = [r for r in records if r["seq"] > after and r["machine"] == "task"]
        starts = [r for r in moves if r["event"] == "start"]
        cut = starts[2]["seq"]  # killed after the third task of the last wave started
        lines = path.read_bytes().splitlines(keepends=True)
        path.write_bytes(b"".join(lines[:cut]))
        anchor_path(path).unlink()  # as a crash can leave it: the log opened again anyway
        AuditLog.open(path, clock=lambda: START, allow_missing_anchor=True).close()
        open_tasks: dict[str, str] = {}
        for r in records[:cut]:
            if r["machine"] == "task":
                if r["dst"] in ("COMPLETED", "FAILED"):
                    open_tasks.pop(r["subject"], None)
                else:
                    open_tasks[r["subject"]] = r["data"]["task"]
        assert open_tasks and set(open_tasks.values()) <= set(planned)

        waves_run(tmp_path)
        again = records_of(path)
        first_plan = next(r["seq"] for r in again if r["seq"] > cut and r["event"] == "plan")
        closed = {r["subject"]: r["data"]["task"] for r in again
                  if cut < r["seq"] < first_plan and r["machine"] == "task"}
        assert closed == open_tasks  # each closed by a cancel move, before the new plans
        assert all(r["event"] == "cancel" for r in again
                   if cut < r["seq"] < first_plan and r["machine"] == "task")
        report = replay(path)
        assert report.ok, str(report.divergence)

        # the same trail with one of those tasks taken off its plan: its moves diverge
        task = next(iter(open_tasks.values()))
        plan_seq = next(r["seq"] for r in records if r["event"] == "plan" and
                        task in r["data"]["tasks"] and r["data"]["wave"] == last_wave)
        edited = []
        for r in again:
            if r["seq"] == plan_seq:
                r = {**r, "data": {**r["data"], "tasks": [t for t in r["data"]["tasks"]
                                                          if t != task]}}
            edited.append(orjson.dumps(r))
        report = replay(rechained(edited))
        first_move = next(r for r in again if r["seq"] > plan_seq and r["machine"] == "task"
                          and r["data"]["task"] == task)
        assert report.divergence is not None
        assert (report.divergence.seq, report.divergence.field, report.divergence.got) == (
            first_move["seq"], "task", f"task {task!r} moved in wave {last_wave}, which no "
            "plan of the wave lists")


def test_a_run_killed_right_after_a_reassignment_closes_the_task_on_its_new_agent(tmp_path):
    from buddy.engine.app._waves import AUDIT_FILE, WaveRunConfig, run_waves
    from buddy.engine.core._chain import anchor_path

    path = tmp_path / AUDIT_FILE
    config = WaveRunConfig(output_dir=tmp_path, start=int(START), tasks_per_wave=20, waves=1)
    run_waves(config)
    records = records_of(path)
    state: dict[str, str] = {}
    cut = None
    for r in records:  # the first reassignment of a task that had begun (RETRYING)
        if r["machine"] == "task":
            state[r["data"]["task"]] = r["dst"]
        elif r["event"] == "reassign" and state.get(r["data"]["task"]) == "RETRYING":
            cut, task, to = r["seq"], r["data"]["task"], r["data"]["to"]
            break
    assert cut is not None, "the seeded scenario reassigns a retrying task"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:cut]))  # killed before the new agent moved it
    anchor_path(path).unlink()
    AuditLog.open(path, clock=lambda: START, allow_missing_anchor=True).close()
    run_waves(config)
    closing = next(r for r in records_of(path)
                   if r["seq"] > cut and r["machine"] == "task" and r["data"]["task"] == task)
    assert (closing["event"], closing["data"]["agent"]) == ("cancel", to)
    report = replay(path)
    assert report.ok, str(report.divergence)
