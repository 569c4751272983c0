"""The conflict resolver: the six conflict types, the four strategies, the table."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from buddy.engine import AuditLog, Engine, ExecutionMode
from buddy.engine.orchestration._conflict_records import (
    Conflict,
    ExecutedCall,
    Holder,
    Resolution,
)
from buddy.engine.orchestration._conflicts import ConflictResolver
from buddy.engine.orchestration._plans import PlannedCall
from buddy.rules.base._canonical import args_digest
from buddy.rules.base._values import RiskLevel
from buddy.rules.base.errors import InputError, RuleTableError, UnknownToolError
from buddy.rules.tables._catalogue import ToolContract, ToolContractRegistry
from buddy.rules.tables._conflicts import ConflictTable, ConflictType, ResolutionStrategy
from tests.helpers import ManualClock

T = ConflictType
R = ResolutionStrategy
M, D, L = ExecutionMode.MOCK, ExecutionMode.DRY_RUN, ExecutionMode.LIVE
REGISTRY = ToolContractRegistry.default()

#: Agents for PERMISSION and REASSIGN: crm-1 and crm-2 may write to the CRM, ui may not.
AGENTS = {
    "ui": {"vision.read", "ui.write"},
    "crm-1": {"crm.read", "crm.write"},
    "crm-2": {"crm.read", "crm.write"},
    "mail": {"mail.read", "mail.write", "mail.send"},
}


def call(ident: str, tool: str = "form_fill", agent: str = "a", slot: int = 0,
         plan: str = "p1", **fields) -> PlannedCall:
    return PlannedCall(ident, plan, agent, tool, 0.9, slot=slot, **fields)


def resolver(**kwargs) -> ConflictResolver:
    return ConflictResolver(REGISTRY, **kwargs)


def found(report) -> list[tuple[str, T, tuple[str, ...]]]:
    return [(c.id, c.type, c.calls) for c in report.conflicts]


def kinds(report) -> list[tuple[T, tuple[str, ...]]]:
    return [(c.type, c.calls) for c in report.conflicts]


ZERO_SUMMARY = {
    "total_conflicts": 0,
    "by_type": {"RESOURCE": 0, "ORDERING": 0, "RATE_LIMIT": 0, "DUPLICATE_ACTION": 0,
                "PERMISSION": 0, "TIMEOUT": 0},
    "by_resolution_strategy": {"DELAY": 0, "REASSIGN": 0, "DOWNGRADE": 0, "ABORT": 0},
    "resolved": 0,
}


# -- the source's tests (Phase 24, module 3) -------------------------------------

class TestPhase24:
    def test_conflict_resolver_initialization(self):
        r = resolver()
        assert r.registry is REGISTRY
        assert [row.id for row in r.table.rows] == [
            "resource.delay", "ordering.delay", "rate_limit.delay", "duplicate.abort",
            "permission.reassign", "timeout.downgrade"]
        assert r.table.source == "buddy/rules/conflicts.toml"
        assert (r.agents, r.audit, r.duplicate_modes) == (None, None, frozenset({L}))
        assert (r.active, r.rate_limit_state, r.execution_history) == ({}, {}, [])
        assert (r.conflicts, r.resolutions) == ([], [])
        assert r.summary() == ZERO_SUMMARY

    def test_resource_conflict_detection(self):
        report = resolver().detect([call("a1", agent="a", resource="form:7"),
                                    call("b1", agent="b", resource="form:7")])
        assert report.conflicts == (Conflict(
            "conflict-1", T.RESOURCE, ("a1", "b1"), "form_fill", "form:7",
            "b wants resource form:7 in slot 0, held by a (call a1)"),)
        assert report.conflicts[0].call == "b1"

    def test_duplicate_action_conflict_detection(self):
        args = {"contact": 42, "email": "x@example.com"}
        report = resolver().detect([
            call("a1", "ghl_update_contact", agent="a", args=args),
            call("b1", "ghl_update_contact", agent="b", slot=3, args=dict(reversed(args.items()))),
        ])
        assert report.conflicts == (Conflict(
            "conflict-1", T.DUPLICATE_ACTION, ("a1", "b1"), "ghl_update_contact", None,
            "b1 repeats irreversible ghl_update_contact with the same arguments: "
            "the same as call a1"),)

    def test_conflict_resolution_delay_strategy(self):
        r = resolver()
        calls = [call("a1", agent="a", resource="form:7"), call("b1", agent="b",
                                                                  resource="form:7")]
        out = r.resolve(r.detect(calls), calls)
        assert out.resolutions == (Resolution(
            "conflict-1", "b1", T.RESOURCE, R.DELAY, "resource.delay",
            "delayed from slot 0 to 1 (5 s): b wants resource form:7 in slot 0, held by a "
            "(call a1)", delay_s=5.0, slot=1),)
        assert [(c.id, c.slot) for c in out.calls] == [("a1", 0), ("b1", 1)]
        assert (out.aborted, out.max_modes) == ((), {})

    def test_conflict_resolution_abort_strategy(self):
        r = resolver()
        calls = [call("a1", "database_write", args={"row": 1}),
                 call("b1", "database_write", args={"row": 1}, slot=1),
                 call("c1", "database_write", args={"row": 2}, slot=2)]
        out = r.resolve(r.detect(calls), calls)
        assert [(x.call, x.strategy, x.rule) for x in out.resolutions] == [
            ("b1", R.ABORT, "duplicate.abort")]
        assert out.resolutions[0].reason == (
            "aborted: b1 repeats irreversible database_write with the same arguments: "
            "the same as call a1")
        assert out.aborted == ("b1",)
        assert [c.id for c in out.calls] == ["a1", "c1"]

    def test_tool_dependency_graph(self):
        graph = REGISTRY.dependency_graph()
        prebuilt = {"button_click": ["vision_inspect", "form_fill"],
                    "ghl_create_contact": ["ghl_search"],
                    "mployer_add_contact": ["mployer_search"],
                    "msgraph_send_email": ["msgraph_get_user", "msgraph_create_draft"]}
        assert {t: list(graph.predecessors(t)) for t in graph if graph.in_degree(t)} == prebuilt
        # The resolver orders by them: each tool alone in its plan misses every dependency ...
        r = resolver()
        alone = [call(f"c{i}", tool, plan=f"p{i}", slot=1) for i, tool in enumerate(prebuilt)]
        report = r.detect(alone)
        assert [(c.type, c.calls, c.tool) for c in report.conflicts] == [
            (T.ORDERING, (f"c{i}",), tool) for i, tool in enumerate(prebuilt)]
        assert report.conflicts[0].detail == (
            "c0 (button_click, slot 1 of plan p0) runs before its dependencies: "
            "vision_inspect (not planned), form_fill (not planned)")
        # ... and misses none once they run in an earlier slot of the same plan.
        ready = [c for i, (tool, deps) in enumerate(prebuilt.items())
                 for c in [call(f"c{i}", tool, plan=f"p{i}", slot=1, args={"n": i}),
                           *(call(f"c{i}-{d}", d, plan=f"p{i}", slot=0) for d in deps)]]
        assert r.detect(ready).conflicts == ()

    def test_conflict_summary_statistics(self):
        r = resolver(agents=AGENTS)
        calls = [
            call("res-a", agent="ui", resource="form:1"),
            call("res-b", "math_compute", agent="crm-1", resource="form:1"),       # RESOURCE
            call("ord", "ghl_create_contact", agent="crm-1", slot=1),             # ORDERING
            call("find", "ghl_search", agent="crm-1", slot=2),
            call("rate-1", "file_operation", agent="ghost", slot=5, args={"f": 1}),  # PERMISSION
            call("rate-2", "file_operation", agent="ghost", slot=5, args={"f": 2}),  # + RATE
            call("dup-1", "ghl_update_contact", agent="crm-1", slot=7),
            call("dup-2", "ghl_update_contact", agent="crm-2", slot=8),            # DUPLICATE
            call("slow", "math_compute", agent="ui", slot=9, estimated_s=6.0),     # TIMEOUT
        ]
        report = r.detect(calls)
        r.resolve(report, calls)
        assert report.counts() == {"RESOURCE": 1, "ORDERING": 1, "RATE_LIMIT": 1,
                                   "DUPLICATE_ACTION": 1, "PERMISSION": 2, "TIMEOUT": 1}
        assert r.summary() == {
            "total_conflicts": 7,
            "by_type": {"RESOURCE": 1, "ORDERING": 1, "RATE_LIMIT": 1, "DUPLICATE_ACTION": 1,
                        "PERMISSION": 2, "TIMEOUT": 1},
            # the PERMISSION ones fall back to ABORT (nobody holds files.write), so the
            # RATE_LIMIT on rate-2 finds it already aborted
            "by_resolution_strategy": {"DELAY": 2, "REASSIGN": 0, "DOWNGRADE": 1, "ABORT": 4},
            "resolved": 7,
        }


# -- detection, type by type -------------------------------------------------------

class TestResource:
    def test_same_resource_same_slot_different_agents(self):
        report = resolver().detect([call(f"{x}1", "text_extract", agent=x, resource="r")
                                    for x in "abc"])
        assert kinds(report) == [(T.RESOURCE, ("a1", "b1")), (T.RESOURCE, ("a1", "c1"))]

    @pytest.mark.parametrize("second", [
        call("b1", agent="b", resource="r", slot=1),   # another slot
        call("b1", agent="a", resource="r"),           # the same agent
        call("b1", agent="b", resource="s"),           # another resource
        call("b1", agent="b"),                         # no resource
    ])
    def test_near_misses(self, second):
        assert resolver().detect([call("a1", agent="a", resource="r"), second]).conflicts == ()

    def test_keepers_agent_may_call_again(self):
        report = resolver().detect([call("a1", "text_extract", agent="a", resource="r"),
                                    call("b1", "text_extract", agent="b", resource="r"),
                                    call("a2", "text_extract", agent="a", resource="r")])
        assert kinds(report) == [(T.RESOURCE, ("a1", "b1"))]

    def test_active_holder_conflicts_in_every_slot(self):
        r = resolver()
        r.acquire(call("run-1", "text_extract", agent="a", resource="r"))
        assert r.active == {"r": Holder("a", ("run-1",))}
        report = r.detect([call("b1", "text_extract", agent="b", resource="r", slot=4),
                           call("a1", "text_extract", agent="a", resource="r", slot=4),
                           call("c1", "text_extract", agent="c", resource="r", slot=9)])
        assert kinds(report) == [(T.RESOURCE, ("run-1", "b1")), (T.RESOURCE, ("run-1", "c1"))]
        assert report.conflicts[0].detail == (
            "b wants resource r in slot 4, held by a (running call run-1)")

    def test_release_frees_the_resource(self):
        r = resolver()
        first, second = call("run-1", agent="a", resource="r"), call("run-2", agent="a",
                                                                     resource="r")
        r.acquire(first)
        r.acquire(second)
        assert r.active == {"r": Holder("a", ("run-1", "run-2"))}
        r.release(first)
        assert r.active == {"r": Holder("a", ("run-2",))}
        r.release(second)
        assert r.active == {}
        assert r.detect([call("b1", agent="b", resource="r")]).conflicts == ()

    def test_acquire_held_by_another_agent(self):
        r = resolver()
        r.acquire(call("run-1", agent="a", resource="r"))
        with pytest.raises(InputError, match=r"^resource 'r' is held by a \(call run-1\); b "
                           r"cannot take it for call b1$"):
            r.acquire(call("b1", agent="b", resource="r"))


class TestOrdering:
    def test_dependency_in_an_earlier_slot(self):
        calls = [call("s", "ghl_search", slot=0), call("c", "ghl_create_contact", slot=1)]
        assert resolver().detect(calls).conflicts == ()

    @pytest.mark.parametrize("dep_slot", [1, 2])
    def test_dependency_in_the_same_or_a_later_slot(self, dep_slot):
        report = resolver().detect([call("c", "ghl_create_contact", slot=1),
                                    call("s", "ghl_search", slot=dep_slot)])
        assert kinds(report) == [(T.ORDERING, ("c",))]
        assert report.conflicts[0].detail == (
            f"c (ghl_create_contact, slot 1 of plan p1) runs before its dependencies: "
            f"ghl_search (plan slot {dep_slot})")

    def test_another_plans_dependency_does_not_count(self):
        report = resolver().detect([call("s", "ghl_search", plan="p2", slot=0),
                                    call("c", "ghl_create_contact", plan="p1", slot=1)])
        assert kinds(report) == [(T.ORDERING, ("c",))]

    def test_one_missing_dependency_of_two(self):
        report = resolver().detect([call("v", "vision_inspect", slot=0),
                                    call("b", "button_click", slot=1)])
        assert report.conflicts[0].detail.endswith("dependencies: form_fill (not planned)")

    def test_history_of_the_plan_satisfies(self):
        r = resolver()
        r.record_execution(call("old", "ghl_search", plan="p1"), ok=True, mode=D)
        r.record_execution(call("bad", "mployer_search", plan="p1"), ok=False, mode=L)
        r.record_execution(call("other", "mployer_search", plan="p2"), ok=True, mode=L)
        report = r.detect([call("c", "ghl_create_contact", plan="p1"),
                           call("m", "mployer_add_contact", plan="p1", slot=1)])
        assert kinds(report) == [(T.ORDERING, ("m",))]

    def test_deeper_tools_come_later_and_resolve_in_a_chain(self):
        chain = ToolContractRegistry([
            ToolContract(name="a", risk=RiskLevel.LOW, reversible=True),
            ToolContract(name="b", risk=RiskLevel.LOW, reversible=True, dependencies=["a"]),
            ToolContract(name="c", risk=RiskLevel.LOW, reversible=True, dependencies=["b"])])
        r = ConflictResolver(chain)
        calls = [call("c0", "c"), call("b0", "b"), call("a0", "a")]
        report = r.detect(calls)
        assert found(report) == [("conflict-1", T.ORDERING, ("b0",)),
                                 ("conflict-2", T.ORDERING, ("c0",))]
        out = r.resolve(report, calls)
        assert [(c.id, c.slot) for c in out.calls] == [("c0", 2), ("b0", 1), ("a0", 0)]
        assert r.detect(out.calls).conflicts == ()


    def test_a_chain_1500_deep_is_detected_and_resolved_without_recursion(self):
        # Defect 11: depths were computed by recursion, one frame per link.
        n = 1_500
        deep = ToolContractRegistry([
            ToolContract(name=f"t{i}", risk=RiskLevel.LOW, reversible=True,
                         dependencies=[f"t{i - 1}"] if i else []) for i in range(n)])
        r = ConflictResolver(deep)
        calls = [call("last", f"t{n - 1}"), call("first", "t0", slot=1)]
        report = r.detect(calls)
        assert report.conflicts == (Conflict(
            "conflict-1", T.ORDERING, ("last",), f"t{n - 1}", None,
            f"last (t{n - 1}, slot 0 of plan p1) runs before its dependencies: "
            f"t{n - 2} (not planned)"),)
        (done,) = r.resolve(report, calls).resolutions
        assert (done.strategy, done.reason) == (
            R.ABORT, f"plan p1 never runs t{n - 2}, so waiting cannot help; fallback aborted: "
            f"{report.conflicts[0].detail}")


class TestRateLimit:
    def test_limit_exactly_reached(self):
        calls = [call(f"f{i}", agent=f"x{i}") for i in range(2)]  # form_fill allows 2
        assert resolver().detect(calls).conflicts == ()

    def test_beyond_the_limit(self):
        report = resolver().detect([call(f"f{i}", agent=f"x{i}") for i in range(4)])
        assert kinds(report) == [(T.RATE_LIMIT, ("f0", "f2")), (T.RATE_LIMIT, ("f0", "f3"))]
        assert report.conflicts[0].detail == (
            "form_fill allows 2 call(s) at once; f2 is one more in slot 0")

    def test_other_slots_and_tools_do_not_count(self):
        calls = [call("f0"), call("f1"), call("f2", slot=1), call("t0", "text_extract")]
        assert resolver().detect(calls).conflicts == ()

    def test_running_calls_count_first(self):
        r = resolver()
        r.acquire(call("run", "button_click"))
        assert r.rate_limit_state == {"button_click": 1}
        calls = [call("v", "vision_inspect", slot=0), call("f", "form_fill", slot=0),
                 call("b", "button_click", slot=1)]
        assert kinds(r.detect(calls)) == [(T.RATE_LIMIT, ("run", "b"))]
        r.release(call("run", "button_click"))
        assert r.rate_limit_state == {}
        assert r.detect(calls).conflicts == ()


class TestDuplicate:
    def test_three_times_names_the_first(self):
        calls = [call(f"c{i}", "file_operation", agent=f"x{i}", slot=i, args={"path": "/a"})
                 for i in range(3)]
        assert kinds(resolver().detect(calls)) == [
            (T.DUPLICATE_ACTION, ("c0", "c1")), (T.DUPLICATE_ACTION, ("c0", "c2"))]

    @pytest.mark.parametrize("second", [
        call("b", "file_operation", slot=1, args={"path": "/b"}),       # other arguments
        call("b", "database_write", slot=1, args={"path": "/a"}),       # another tool
    ])
    def test_near_misses(self, second):
        first = call("a", "file_operation", args={"path": "/a"})
        assert resolver().detect([first, second]).conflicts == ()

    def test_reversible_tool_may_repeat(self):
        calls = [call("a", "text_extract", args={"doc": 1}),
                 call("b", "text_extract", slot=1, args={"doc": 1})]
        assert resolver().detect(calls).conflicts == ()

    def test_history_live_run(self):
        r = resolver()
        r.record_execution(call("old", "file_operation", args={"path": "/a"}), ok=True, mode=L)
        report = r.detect([call("new", "file_operation", args={"path": "/a"}),
                           call("again", "file_operation", slot=1, args={"path": "/a"})])
        assert kinds(report) == [(T.DUPLICATE_ACTION, ("old", "new")),
                                 (T.DUPLICATE_ACTION, ("old", "again"))]
        assert report.conflicts[0].detail.endswith("already ran successfully as old")

    @pytest.mark.parametrize(("ok", "mode"), [(True, M), (True, D), (False, L)])
    def test_history_that_changed_nothing(self, ok, mode):
        r = resolver()
        r.record_execution(call("old", "file_operation", args={"path": "/a"}), ok=ok, mode=mode)
        assert r.detect([call("new", "file_operation", args={"path": "/a"})]).conflicts == ()

    def test_duplicate_modes_widened(self):
        r = resolver(duplicate_modes=(D, L))
        r.record_execution(call("old", "file_operation", args={"path": "/a"}), ok=True, mode=D)
        assert kinds(r.detect([call("new", "file_operation", args={"path": "/a"})])) == [
            (T.DUPLICATE_ACTION, ("old", "new"))]


class TestPermission:
    def test_agent_lacks_a_permission(self):
        report = resolver(agents=AGENTS).detect([call("c", "ghl_update_contact", agent="ui")])
        assert report.conflicts == (Conflict(
            "conflict-1", T.PERMISSION, ("c",), "ghl_update_contact", None,
            "agent ui lacks permission(s) crm.write for ghl_update_contact (c)"),)

    def test_agent_holds_them(self):
        calls = [call("c", "ghl_update_contact", agent="crm-1"),
                 call("m", "math_compute", agent="ui")]
        assert resolver(agents=AGENTS).detect(calls).conflicts == ()

    def test_unknown_agent_holds_nothing(self):
        report = resolver(agents=AGENTS).detect([call("c", "math_compute", agent="ghost")])
        assert [c.detail for c in report.conflicts] == [
            "agent ghost is unknown, so it holds no permission for math_compute (c)"]

    def test_no_agents_map_no_check(self):
        assert resolver().detect([call("c", "ghl_update_contact", agent="ghost")]).conflicts == ()


class TestTimeout:
    def test_estimate_past_the_timeout(self):
        report = resolver().detect([call("c", "math_compute", estimated_s=5.5)])
        assert report.conflicts == (Conflict(
            "conflict-1", T.TIMEOUT, ("c",), "math_compute", None,
            "c is estimated at 5.5 s, past math_compute's timeout of 5.0 s"),)

    @pytest.mark.parametrize("estimate", [None, 0.0, 5.0])
    def test_estimate_within(self, estimate):
        assert resolver().detect([call("c", "math_compute", estimated_s=estimate)]).conflicts \
            == ()

    def test_record_timeout_at_run_time(self):
        r = resolver()
        c = call("c", "form_fill")
        report = r.record_timeout(c, elapsed_s=31.5)
        assert report.conflicts == (Conflict(
            "conflict-1", T.TIMEOUT, ("c",), "form_fill", None,
            "c ran 31.5 s past form_fill's timeout of 30.0 s"),)
        assert dict(report.graph.nodes(data=True)) == {"c": {"unary": [T.TIMEOUT]}}
        out = r.resolve(report, [c])
        assert [(x.strategy, x.max_mode) for x in out.resolutions] == [(R.DOWNGRADE, D)]
        assert r.summary()["by_type"]["TIMEOUT"] == 1


# -- detection as a whole -------------------------------------------------------------

class TestDetect:
    def test_ids_count_up_across_batches_in_type_order(self):
        r = resolver(agents=AGENTS)
        calls = [call("late", "math_compute", agent="ui", estimated_s=9.0),
                 call("nope", "ghl_update_contact", agent="ui", slot=1)]
        assert found(r.detect(calls)) == [("conflict-1", T.PERMISSION, ("nope",)),
                                          ("conflict-2", T.TIMEOUT, ("late",))]
        assert found(r.detect(calls))[0][0] == "conflict-3"
        assert [c.id for c in r.conflicts] == [f"conflict-{i}" for i in range(1, 5)]

    def test_duplicate_call_ids(self):
        with pytest.raises(InputError, match="^call ids must be unique in a batch: x$"):
            resolver().detect([call("x"), call("x", slot=1), call("y")])

    def test_unknown_tool(self):
        with pytest.raises(UnknownToolError, match="unknown tool 'teleport'"):
            resolver().detect([call("x", "teleport")])

    def test_empty_batch(self):
        report = resolver().detect([])
        assert report.conflicts == () and report.graph.number_of_nodes() == 0

    def test_accepts_any_iterable(self):
        calls = (c for c in [call("a1", resource="r"), call("b1", agent="b", resource="r")])
        assert kinds(resolver().detect(calls)) == [(T.RESOURCE, ("a1", "b1"))]


class TestGraph:
    def test_nodes_edges_and_unary_attributes(self):
        r = resolver(agents=AGENTS)
        r.acquire(call("run", "vision_inspect", agent="mail", resource="screen"))
        r.record_execution(call("old", "file_operation", args={"p": 1}), ok=True, mode=L)
        calls = [call("a1", agent="ui", resource="form"), call("b1", agent="ui"),
                 call("b2", agent="ui"), call("c1", "ghl_update_contact", agent="ui", slot=1),
                 call("v1", "vision_inspect", agent="ui", resource="screen", slot=2),
                 call("f1", "file_operation", agent="ghost", slot=3, args={"p": 1})]
        report = r.detect(calls)
        g = report.graph
        assert sorted(g.nodes) == ["a1", "b1", "b2", "c1", "f1", "old", "run", "v1"]
        assert sorted((*sorted((u, v)), k, t) for u, v, k, t in g.edges(keys=True,
                                                                         data="type")) == [
            ("a1", "b2", "conflict-5", T.RATE_LIMIT),
            ("f1", "old", "conflict-1", T.DUPLICATE_ACTION),
            ("run", "v1", "conflict-4", T.RESOURCE),
        ]
        assert g.nodes["c1"] == {"unary": [T.PERMISSION]}
        assert g.nodes["f1"] == {"unary": [T.PERMISSION]}
        assert (g.nodes["run"], g.nodes["old"], g.nodes["a1"]) == (
            {"external": "active"}, {"external": "history"}, {})

    def test_two_conflicts_between_one_pair_are_two_edges(self):
        calls = [call("a", "button_click", agent="x", resource="btn", args={"id": 1}),
                 call("b", "button_click", agent="y", resource="btn", args={"id": 1})]
        g = resolver().detect([call("v", "vision_inspect", slot=-2),
                               call("f", "form_fill", slot=-1), *calls]).graph
        assert sorted(g.get_edge_data("a", "b").items()) == [
            ("conflict-1", {"type": T.DUPLICATE_ACTION}), ("conflict-2", {"type": T.RESOURCE}),
            ("conflict-3", {"type": T.RATE_LIMIT})]


# -- resolution ----------------------------------------------------------------------

def table(rows: str) -> ConflictTable:
    """A table of ``rows`` above a catch-all ABORT row."""
    return ConflictTable.from_toml(
        text=rows + '[[row]]\nid = "else"\nwhen = {}\nthen = { strategy = "ABORT" }\n',
        source="user.toml")


class TestDelay:
    def test_each_waits_its_turn_bounded_by_max(self):
        r = resolver()
        calls = [call(f"c{i}", "text_extract", agent=f"x{i}", resource="doc") for i in range(5)]
        out = r.resolve(r.detect(calls), calls)
        assert [(x.call, x.strategy, x.slot, x.delay_s) for x in out.resolutions] == [
            ("c1", R.DELAY, 1, 5.0), ("c2", R.DELAY, 2, 10.0), ("c3", R.DELAY, 3, 15.0),
            ("c4", R.ABORT, None, None)]
        assert out.resolutions[3].reason.startswith(
            "waiting for slot 4 would take 20 s, more than max_delay_s 15; fallback aborted: ")
        assert [(c.id, c.slot) for c in out.calls] == [("c0", 0), ("c1", 1), ("c2", 2),
                                                        ("c3", 3)]
        assert out.aborted == ("c4",)

    def test_skips_slots_where_the_resource_is_taken(self):
        r = resolver()
        calls = [call("a0", agent="a", resource="r"), call("b0", agent="b", resource="r"),
                 call("c1", agent="c", resource="r", slot=1)]
        out = r.resolve(r.detect(calls), calls)
        assert [(x.call, x.slot, x.delay_s) for x in out.resolutions] == [("b0", 2, 10.0)]

    def test_joins_its_own_agent(self):
        r = resolver()
        calls = [call("a0", agent="a", resource="r"), call("b0", agent="b", resource="r"),
                 call("b1", agent="b", resource="r", slot=1)]
        out = r.resolve(r.detect(calls), calls)
        assert [(x.call, x.slot) for x in out.resolutions] == [("b0", 1)]

    def test_rate_limit_moves_to_a_slot_with_room(self):
        r = resolver()
        calls = [call(f"f{i}", agent=f"x{i}", slot=i // 3) for i in range(5)]  # 3 in slot 0
        out = r.resolve(r.detect(calls), calls)
        assert [(x.call, x.type, x.slot) for x in out.resolutions] == [
            ("f2", T.RATE_LIMIT, 2)]  # slot 1 already holds two

    def test_ordering_moves_right_after_the_dependency(self):
        r = resolver()
        calls = [call("send", "msgraph_send_email", slot=0, args={"to": "x"}),
                 call("user", "msgraph_get_user", slot=1),
                 call("draft", "msgraph_create_draft", slot=2)]
        out = r.resolve(r.detect(calls), calls)
        assert [(x.call, x.rule, x.slot, x.delay_s) for x in out.resolutions] == [
            ("send", "ordering.delay", 3, 15.0)]
        assert r.detect(out.calls).conflicts == ()

    def test_ordering_each_after_its_own_dependencies(self):
        r = resolver()
        calls = [call("click", "button_click", slot=0), call("fill", "form_fill", slot=0),
                 call("look", "vision_inspect", slot=0),
                 call("create", "ghl_create_contact", slot=0, plan="p2"),
                 call("find", "ghl_search", slot=1, plan="p2")]
        out = r.resolve(r.detect(calls), calls)
        assert [(x.call, x.slot) for x in out.resolutions] == [("click", 1), ("create", 2)]

    def test_ordering_on_an_unplanned_dependency_falls_back(self):
        r = resolver()
        calls = [call("c", "ghl_create_contact", slot=0)]
        out = r.resolve(r.detect(calls), calls)
        assert [(x.strategy, x.rule) for x in out.resolutions] == [(R.ABORT, "ordering.delay")]
        assert out.resolutions[0].reason.startswith(
            "plan p1 never runs ghl_search, so waiting cannot help; fallback aborted: ")


class TestReassign:
    def test_least_loaded_agent_holding_the_permissions(self):
        r = resolver(agents=AGENTS)
        calls = [call("busy", "ghl_search", agent="crm-1"),
                 call("c", "ghl_update_contact", agent="ui", slot=1)]
        out = r.resolve(r.detect(calls), calls)
        assert out.resolutions == (Resolution(
            "conflict-1", "c", T.PERMISSION, R.REASSIGN, "permission.reassign",
            "reassigned from ui to crm-2, the least loaded agent holding ghl_update_contact's "
            "permissions", new_agent="crm-2"),)
        assert [(c.id, c.agent) for c in out.calls] == [("busy", "crm-1"), ("c", "crm-2")]

    def test_ties_go_by_name_and_load_moves(self):
        r = resolver(agents=AGENTS)
        calls = [call(f"c{i}", "ghl_update_contact", agent="ui", slot=i, args={"n": i})
                 for i in range(3)]
        out = r.resolve(r.detect(calls), calls)
        assert [x.new_agent for x in out.resolutions] == ["crm-1", "crm-2", "crm-1"]

    def test_no_agent_holds_them_falls_back_to_abort(self):
        r = resolver(agents=AGENTS)
        calls = [call("c", "database_write", agent="ui")]
        out = r.resolve(r.detect(calls), calls)
        assert [(x.strategy, x.rule) for x in out.resolutions] == [
            (R.ABORT, "permission.reassign")]
        assert out.resolutions[0].reason == (
            "no other agent holds every permission of database_write; fallback aborted: "
            "agent ui lacks permission(s) db.write for database_write (c)")
        assert (out.calls, out.aborted) == ((), ("c",))

    def test_fallback_downgrade(self):
        r = resolver(agents=AGENTS, table=table(
            '[[row]]\nid = "perm"\nwhen = { all = [ { metric = "type", op = "eq", '
            'value = "PERMISSION" } ] }\n'
            'then = { strategy = "REASSIGN", fallback = "DOWNGRADE", max_mode = "MOCK" }\n'))
        calls = [call("c", "database_write", agent="ui")]
        out = r.resolve(r.detect(calls), calls)
        assert [(x.strategy, x.rule, x.max_mode) for x in out.resolutions] == [
            (R.DOWNGRADE, "perm", M)]
        assert (out.max_modes, [c.id for c in out.calls]) == ({"c": M}, ["c"])


class TestDowngradeAndAbort:
    def test_downgrade_caps_the_mode_and_keeps_the_call(self):
        r = resolver()
        calls = [call("c", "form_fill", estimated_s=45.0)]
        out = r.resolve(r.detect(calls), calls)
        assert out.resolutions == (Resolution(
            "conflict-1", "c", T.TIMEOUT, R.DOWNGRADE, "timeout.downgrade",
            "capped at DRY_RUN: c is estimated at 45.0 s, past form_fill's timeout of 30.0 s",
            max_mode=D),)
        assert (out.calls, out.max_modes) == (tuple(calls), {"c": D})

    def test_a_later_resolution_carries_the_cap(self):
        r = resolver()
        calls = [call("a", resource="r"), call("b", agent="b", resource="r", estimated_s=99.0)]
        out = r.resolve(r.detect(calls), calls)
        assert [(x.strategy, x.max_mode, x.slot) for x in out.for_call("b")] == [
            (R.DOWNGRADE, D, None), (R.DELAY, D, 1)]

    def test_abort_drops_and_later_conflicts_say_so(self):
        r = resolver()
        calls = [call("a", "button_click", agent="x", resource="btn"),
                 call("b", "button_click", agent="y", resource="btn")]
        out = r.resolve(r.detect(calls), calls)
        assert [(x.call, x.type, x.strategy, x.rule, x.reason.split(":")[0])
                for x in out.resolutions] == [
            ("b", T.DUPLICATE_ACTION, R.ABORT, "duplicate.abort", "aborted"),
            ("b", T.RESOURCE, R.ABORT, "resource.delay", "already aborted by conflict-1"),
            ("b", T.RATE_LIMIT, R.ABORT, "rate_limit.delay", "already aborted by conflict-1"),
            ("a", T.ORDERING, R.ABORT, "ordering.delay",
             "plan p1 never runs vision_inspect, so waiting cannot help; fallback aborted"),
            ("b", T.ORDERING, R.ABORT, "ordering.delay", "already aborted by conflict-1")]
        assert (out.calls, out.aborted) == ((), ("b", "a"))

    def test_apply(self):
        c = call("c", agent="a", slot=2)
        assert Resolution("k", "c", T.RESOURCE, R.DELAY, "r", "", slot=4).apply(c).slot == 4
        assert Resolution("k", "c", T.PERMISSION, R.REASSIGN, "r", "",
                          new_agent="b").apply(c).agent == "b"
        assert Resolution("k", "c", T.TIMEOUT, R.DOWNGRADE, "r", "", max_mode=M).apply(c) is c
        assert Resolution("k", "c", T.RESOURCE, R.ABORT, "r", "").apply(c) is None

    def test_unknown_call(self):
        r = resolver()
        report = r.detect([call("a", resource="r"), call("b", agent="b", resource="r")])
        with pytest.raises(InputError, match="^conflict-1: call 'b' is not among the calls "
                           "given$"):
            r.resolve(report, [call("a", resource="r")])


# -- history across a restart, and the audit trail -------------------------------------

class TestHistory:
    def run_once(self, path, live: bool) -> str:
        with AuditLog.open(path, clock=ManualClock()) as log:
            engine = Engine.default(audit=log, clock=ManualClock())
            if live:
                engine.register_handler("button_click", live=lambda args: {"clicked": True})
            result = engine.execute("agent-1", "button_click", {"selector": "#buy"},
                                    confidence=0.9)
            assert (result.ok, result.mode) == (True, L if live else M)
            return result.context

    def test_duplicate_caught_after_a_restart(self, tmp_path):
        path = tmp_path / "audit.jsonl"
        context = self.run_once(path, live=True)
        r = resolver()  # a new process: nothing in memory
        with AuditLog.open(path, clock=ManualClock()) as log:
            assert r.load_history(log) == 1
        assert r.execution_history == [ExecutedCall(
            context, "button_click", "agent-1", args_digest({"selector": "#buy"}), True, L)]
        report = r.detect([call("again", "button_click", args={"selector": "#buy"}),
                           call("other", "button_click", slot=1, args={"selector": "#sell"})])
        dupes = [c for c in report.conflicts if c.type is T.DUPLICATE_ACTION]
        assert [(c.calls, c.detail) for c in dupes] == [(
            (context, "again"), "again repeats irreversible button_click with the same "
            f"arguments: already ran successfully as {context}")]

    def test_from_a_path_and_from_records(self, tmp_path):
        path = tmp_path / "audit.jsonl"
        self.run_once(path, live=True)
        by_path, by_records = resolver(), resolver()
        assert by_path.load_history(path) == 1
        assert by_records.load_history(AuditLog.read_records(path)) == 1
        assert by_path.execution_history == by_records.execution_history

    def test_a_mock_run_is_no_duplicate(self, tmp_path):
        path = tmp_path / "audit.jsonl"
        self.run_once(path, live=False)
        r = resolver()
        assert r.load_history(path) == 1
        report = r.detect([call("again", "button_click", args={"selector": "#buy"})])
        assert T.DUPLICATE_ACTION not in {c.type for c in report.conflicts}

    def test_plan_and_call_ids_when_the_event_has_them(self):
        r = resolver()
        records = [{"kind": "decision", "data": {}},
                   {"kind": "execution", "subject": "ctx-9", "data": {
                       "tool": "ghl_search", "agent": "a", "ok": True, "mode": "DRY_RUN",
                       "args_digest": "d", "plan_id": "p1", "call_id": "p1/s1"}}]
        assert r.load_history(records) == 1
        assert r.execution_history == [ExecutedCall("p1/s1", "ghl_search", "a", "d", True, D,
                                                    "p1")]
        assert r.detect([call("c", "ghl_create_contact", plan="p1")]).conflicts == ()

    def test_execution_event_without_a_tool(self):
        from buddy.rules.base.errors import AuditFormatError

        with pytest.raises(AuditFormatError, match="^seq 7: execution event without a tool$"):
            resolver().load_history([{"seq": 7, "kind": "execution", "data": {"ok": True}}])


class TestAudit:
    def test_one_event_per_conflict_and_per_resolution(self):
        log = AuditLog.memory(clock=ManualClock())
        r = resolver(audit=log)
        calls = [call("a1", agent="a", resource="r"), call("b1", agent="b", resource="r")]
        r.resolve(r.detect(calls), calls)
        events = [(e["kind"], e["machine"], e["subject"], e["event"], e["dst"], e["data"])
                  for e in log.records() if e["kind"] in ("conflict", "resolution")]
        digest = r.table.digest
        assert len(digest) == 16
        assert events == [
            ("conflict", "conflicts", "conflict-1", "detected", None, {
                "type": "RESOURCE", "calls": ["a1", "b1"], "tool": "form_fill",
                "resource": "r", "detail": "b wants resource r in slot 0, held by a (call a1)",
                "rules": digest}),
            ("resolution", "conflicts", "conflict-1", "resolved", "DELAY", {
                "type": "RESOURCE", "call": "b1", "strategy": "DELAY", "rule": "resource.delay",
                "delay_s": 5.0, "slot": 1, "new_agent": None, "max_mode": None,
                "reason": "delayed from slot 0 to 1 (5 s): b wants resource r in slot 0, held "
                          "by a (call a1)", "rules": digest}),
        ]

    def test_nothing_without_conflicts(self):
        log = AuditLog.memory(clock=ManualClock())
        r = resolver(audit=log)
        r.resolve(r.detect([call("a")]), [call("a")])
        assert [e["kind"] for e in log.records()] == ["open"]


# -- the table ---------------------------------------------------------------------------

def when_type(name: str) -> str:
    return f'when = {{ all = [ {{ metric = "type", op = "eq", value = "{name}" }} ] }}\n'


def problems_of(text: str) -> list[str]:
    with pytest.raises(RuleTableError) as info:
        ConflictTable.from_toml(text=text, source="conflicts.toml")
    return info.value.problems


class TestTable:
    def test_default_rows(self):
        t = ConflictTable.default()
        assert [(r.id, r.strategy, r.delay_s, r.max_delay_s, r.fallback, r.max_mode)
                for r in t.rows] == [
            ("resource.delay", R.DELAY, 5.0, 15.0, R.ABORT, None),
            ("ordering.delay", R.DELAY, 5.0, 15.0, R.ABORT, None),
            ("rate_limit.delay", R.DELAY, 5.0, 15.0, R.ABORT, None),
            ("duplicate.abort", R.ABORT, None, None, None, None),
            ("permission.reassign", R.REASSIGN, None, None, R.ABORT, None),
            ("timeout.downgrade", R.DOWNGRADE, None, None, None, D),
        ]
        assert {ct: t.row_for(ct, RiskLevel.MEDIUM, True).id for ct in T} == {
            T.RESOURCE: "resource.delay", T.ORDERING: "ordering.delay",
            T.RATE_LIMIT: "rate_limit.delay", T.DUPLICATE_ACTION: "duplicate.abort",
            T.PERMISSION: "permission.reassign", T.TIMEOUT: "timeout.downgrade"}
        assert t.rows[0].describe() == (
            "type == RESOURCE -> DELAY 5.0 s per slot, at most 15.0 s (else ABORT)")

    def test_first_matching_row_wins(self):
        t = table('[[row]]\nid = "high"\nwhen = { all = [ { metric = "risk", op = "eq", '
                  'value = "HIGH" } ] }\nthen = { strategy = "DOWNGRADE", max_mode = "MOCK" }\n'
                  '[[row]]\nid = "resource"\n' + when_type("RESOURCE")
                  + 'then = { strategy = "DELAY", delay_s = 1.0, max_delay_s = 2.0 }\n')
        assert t.row_for(T.RESOURCE, RiskLevel.HIGH, False).id == "high"
        assert t.row_for(T.RESOURCE, RiskLevel.LOW, True).id == "resource"
        assert t.row_for(T.TIMEOUT, RiskLevel.LOW, True).id == "else"

    def test_any_and_reversible(self):
        t = table('[[row]]\nid = "risky"\nwhen = { all = [ { metric = "reversible", op = "eq", '
                  'value = false } ], any = [ { metric = "type", op = "eq", value = "RESOURCE" '
                  '}, { metric = "type", op = "eq", value = "RATE_LIMIT" } ] }\n'
                  'then = { strategy = "DOWNGRADE", max_mode = "DRY_RUN" }\n')
        assert [t.row_for(ct, RiskLevel.MEDIUM, rev).id
                for ct, rev in [(T.RESOURCE, False), (T.RATE_LIMIT, False), (T.RESOURCE, True),
                                (T.TIMEOUT, False)]] == ["risky", "risky", "else", "else"]

    def test_user_table_from_a_directory_overrides_the_default(self, tmp_path):
        (tmp_path / "conflicts.toml").write_text(
            '[[row]]\nid = "resource.abort"\n' + when_type("RESOURCE")
            + 'then = { strategy = "ABORT" }\n'
            '[[row]]\nid = "rest"\nwhen = {}\n'
            'then = { strategy = "DOWNGRADE", max_mode = "MOCK" }\n')
        t = ConflictTable.from_dir(tmp_path)
        assert t.source == str(tmp_path / "conflicts.toml")
        r = resolver(table=t)
        calls = [call("a", agent="a", resource="r"), call("b", agent="b", resource="r"),
                 call("c", "math_compute", agent="c", estimated_s=9.0)]
        out = r.resolve(r.detect(calls), calls)
        assert [(x.call, x.strategy, x.rule, x.max_mode) for x in out.resolutions] == [
            ("c", R.DOWNGRADE, "rest", M), ("b", R.ABORT, "resource.abort", None)]
        assert (out.aborted, out.max_modes) == (("b",), {"c": M})

    @pytest.mark.parametrize(("text", "problem"), [
        ('[[row]]\nid = "x"\nwhen = {}\nthen = { strategy = "WAIT" }\n',
         "conflicts.toml:4: row[x].then.strategy: must be one of DELAY, REASSIGN, DOWNGRADE, "
         "ABORT (got 'WAIT')"),
        ('[[row]]\nid = "x"\nwhen = { all = [ { metric = "agent", op = "eq", value = "a" } ] }\n'
         'then = { strategy = "ABORT" }\n',
         "conflicts.toml:3: row[x].when.all[0].metric: must be one of reversible, risk, type "
         "(got 'agent')"),
        ('[[row]]\nid = "x"\nwhen = { all = [ { metric = "type", op = "ne", '
         'value = "RESOURCE" } ] }\nthen = { strategy = "ABORT" }\n',
         "conflicts.toml: conflicts: no row matches conflict type RESOURCE (e.g. risk LOW, "
         "reversible true): add a row for it, or a last row with when = {}"),
        ('table = "conflicts"\n\n[[row]]\nid = "x"\nwhen = { all = [ { metric = "type", '
         'op = "gt", value = "TIMEOUT" } ] }\nthen = { strategy = "ABORT" }\n',
         "conflicts.toml:5: row[x].when.all[0].op: type is not a number: must be eq or ne "
         "(got 'gt')"),
        ('[[row]]\nid = "x"\nwhen = { any = [ { metric = "risk", op = "eq", value = "HUGE" } ] }\n'
         'then = { strategy = "ABORT" }\n',
         "conflicts.toml:3: row[x].when.any[0].value: must be one of LOW, MEDIUM, HIGH "
         "(got 'HUGE')"),
        ('[[row]]\nid = "x"\nwhen = {}\nthen = { strategy = "DELAY", delay_s = 10.0, '
         'max_delay_s = 5.0 }\n',
         "conflicts.toml:4: row[x].then.max_delay_s: must be >= delay_s 10.0 (got 5.0)"),
        ('[[row]]\nid = "x"\nwhen = {}\nthen = { strategy = "DELAY", max_delay_s = 5.0 }\n',
         "conflicts.toml:4: row[x].then.delay_s: is required"),
        ('[[row]]\nid = "x"\nwhen = {}\nthen = { strategy = "ABORT", delay_s = 1.0 }\n',
         "conflicts.toml:4: row[x].then.delay_s: is not used by strategy ABORT (it takes: "
         "nothing more)"),
        ('[[row]]\nid = "x"\nwhen = {}\nthen = { strategy = "DOWNGRADE", max_mode = "LIVE" }\n',
         "conflicts.toml:4: row[x].then.max_mode: must be MOCK or DRY_RUN (LIVE caps nothing)"),
        ('[[row]]\nid = "x"\nwhen = {}\nthen = { strategy = "REASSIGN", fallback = "DELAY" }\n',
         "conflicts.toml:4: row[x].then.fallback: must be ABORT or DOWNGRADE (got 'DELAY')"),
        ('[[row]]\nid = "x"\nwhen = {}\nthen = { strategy = "REASSIGN", '
         'fallback = "DOWNGRADE" }\n',
         "conflicts.toml:4: row[x].then.max_mode: is required"),
        ('[[row]]\nid = "x"\nthen = { strategy = "ABORT" }\n',
         "conflicts.toml:1: row[x].when: is required (when = {} matches every conflict)"),
        ('[[row]]\nid = "x"\nwhen = {}\nthen = { strategy = "ABORT" }\nelse = 1\n',
         "conflicts.toml:5: row[x].else: unknown key"),
        ('[[row]]\nid = "x"\nwhen = {}\nthen = { strategy = "ABORT" }\n'
         '[[row]]\nid = "x"\nwhen = {}\nthen = { strategy = "ABORT" }\n',
         "conflicts.toml:6: row[x].id: duplicate id (first at line 1)"),
        ('[[row]]\nid = "x"\nwhen = {}\nthen = { strategy = "ABORT" \n',
         "conflicts.toml:4: invalid TOML: Unclosed inline table"),
    ])
    def test_one_clear_error(self, text, problem):
        assert problems_of(text) == [problem]

    def test_every_problem_at_once(self):
        text = ('[[row]]\nid = "a"\nwhen = { all = [ { metric = "colour", op = "eq", '
                'value = "red" } ] }\nthen = { strategy = "ABORT" }\n\n'
                '[[row]]\nid = "b"\nwhen = {}\nthen = { strategy = "HOPE" }\n')
        with pytest.raises(RuleTableError) as info:
            ConflictTable.from_toml(text=text, source="conflicts.toml")
        assert info.value.problems == [
            "conflicts.toml:3: row[a].when.all[0].metric: must be one of reversible, risk, type "
            "(got 'colour')",
            "conflicts.toml:9: row[b].then.strategy: must be one of DELAY, REASSIGN, DOWNGRADE, "
            "ABORT (got 'HOPE')",
        ]
        assert str(info.value) == info.value.problems[0] + " (and 1 more problem(s))"

    def test_every_uncovered_type_is_named(self):
        problems = problems_of('[[row]]\nid = "x"\n' + when_type("TIMEOUT")
                               + 'then = { strategy = "ABORT" }\n[[row]]\nid = "y"\n'
                               'when = { all = [ { metric = "risk", op = "ne", value = "LOW" } ] '
                               '}\nthen = { strategy = "ABORT" }\n')
        assert [p.split("type ")[1].split(" (")[0] for p in problems] == [
            "RESOURCE", "ORDERING", "RATE_LIMIT", "DUPLICATE_ACTION", "PERMISSION"]
        assert "risk LOW, reversible true" in problems[0]

    def test_missing_file(self, tmp_path):
        with pytest.raises(RuleTableError, match="conflicts.toml: no such file$"):
            ConflictTable.from_dir(tmp_path)

    def test_direct_construction_checks_coverage(self):
        rows = ConflictTable.default().rows[:5]
        with pytest.raises(RuleTableError, match="^<memory>: conflicts: no row matches "
                           "conflict type TIMEOUT"):
            ConflictTable(rows)


# -- properties against a brute-force reference ------------------------------------------

TOOLS = ["form_fill", "button_click", "vision_inspect", "ghl_search", "ghl_create_contact",
         "msgraph_send_email", "math_compute", "file_operation"]
PROPERTY_AGENTS = {"a": {"ui.write", "vision.read", "crm.read"},
                   "b": {"crm.read", "crm.write", "files.write"},
                   "c": {"mail.read", "mail.send", "mail.write", "ui.write"}}


@st.composite
def batches(draw):
    n = draw(st.integers(0, 39))
    calls = [PlannedCall(
        f"c{i}", draw(st.sampled_from(["p1", "p2"])), draw(st.sampled_from("abcz")),
        draw(st.sampled_from(TOOLS)), 0.9, slot=draw(st.integers(0, 3)),
        args=draw(st.sampled_from([{}, {"k": 1}, {"k": 2}])),
        resource=draw(st.sampled_from([None, "r1", "r2"])),
        estimated_s=draw(st.sampled_from([None, 4.0, 5.0, 6.0, 10.0, 12.0, 30.0, 31.0])))
        for i in range(n)]
    held = draw(st.sampled_from([None, ("r1", "a"), ("r2", "b")]))
    running = draw(st.sampled_from([None, "form_fill", "button_click"]))
    history = draw(st.lists(st.tuples(st.sampled_from(TOOLS), st.sampled_from([{}, {"k": 1}]),
                                      st.sampled_from(["p1", "p2"]),
                                      st.sampled_from([M, D, L]), st.booleans()),
                            max_size=3))
    return calls, held, running, history


def prepared(held, running, history, agents=PROPERTY_AGENTS) -> ConflictResolver:
    r = ConflictResolver(REGISTRY, agents=agents)
    if held is not None:
        r.acquire(PlannedCall("held", "px", held[1], "text_extract", 0.9, resource=held[0]))
    if running is not None:
        r.acquire(PlannedCall("running", "px", "a", running, 0.9))
    for i, (tool, args, plan, mode, ok) in enumerate(history):
        r.record_execution(PlannedCall(f"h{i}", plan, "a", tool, 0.9, args=args), ok=ok,
                           mode=mode)
    return r


def reference(calls, held, running, history):
    """Every conflict by brute force over all pairs, straight from the definitions."""
    pairs = {t: set() for t in T}   # (keeper or partner, call) pairs that really conflict
    unary = {t: set() for t in T}
    for j, c in enumerate(calls):
        k = REGISTRY.get(c.tool)
        for o in calls[:j]:
            if o.slot == c.slot and c.resource is not None and o.resource == c.resource \
                    and o.agent != c.agent:
                pairs[T.RESOURCE].add((o.id, c.id))
            if not k.reversible and o.tool == c.tool and dict(o.args) == dict(c.args):
                pairs[T.DUPLICATE_ACTION].add((o.id, c.id))
        if held is not None and c.resource == held[0] and c.agent != held[1]:
            pairs[T.RESOURCE].add(("held", c.id))
        for i, (tool, args, _, mode, ok) in enumerate(history):
            if not k.reversible and tool == c.tool and args == dict(c.args) and ok \
                    and mode is L:
                pairs[T.DUPLICATE_ACTION].add((f"h{i}", c.id))
        same = [o for o in calls[:j] if o.slot == c.slot and o.tool == c.tool]
        if len(same) + (running == c.tool) >= k.max_concurrency:
            unary[T.RATE_LIMIT].add(c.id)
        ran = {(plan, tool) for tool, _, plan, _, ok in history if ok}
        if any(not any(o.plan_id == c.plan_id and o.tool == d and o.slot < c.slot
                       for o in calls) and (c.plan_id, d) not in ran for d in k.dependencies):
            unary[T.ORDERING].add(c.id)
        held_perms = PROPERTY_AGENTS.get(c.agent)
        if held_perms is None or not k.permissions <= held_perms:
            unary[T.PERMISSION].add(c.id)
        if c.estimated_s is not None and c.estimated_s > k.timeout_s:
            unary[T.TIMEOUT].add(c.id)
    return pairs, unary


class TestProperties:
    @given(batches())
    def test_every_conflict_is_real_and_none_is_missed(self, batch):
        calls, held, running, history = batch
        report = prepared(held, running, history).detect(calls)
        pairs, unary = reference(calls, held, running, history)
        by_type = {t: [c.calls for c in report.conflicts if c.type is t] for t in T}
        # unary types and RATE_LIMIT: exactly the calls the definitions name
        for t in (T.ORDERING, T.PERMISSION, T.TIMEOUT):
            assert {c[0] for c in by_type[t]} == unary[t], t
            assert all(len(c) == 1 for c in by_type[t])
        assert {c[-1] for c in by_type[T.RATE_LIMIT]} == unary[T.RATE_LIMIT]
        by_id = {c.id: c for c in calls}
        for first, last in by_type[T.RATE_LIMIT]:
            assert first == "running" or (by_id[first].slot, by_id[first].tool) == (
                by_id[last].slot, by_id[last].tool)
        # pairwise types: each reported pair is real; every real pair loses a call
        for t in (T.RESOURCE, T.DUPLICATE_ACTION):
            reported = set(by_type[t])
            assert len(reported) == len(by_type[t])
            assert reported <= pairs[t], t
            changed = {last for _, last in reported}
            assert all(a in changed or b in changed for a, b in pairs[t]), t
            # and a call is changed only once, and only if it is in a real pair
            assert Counter(last for _, last in by_type[t]) == Counter(changed)
        ids = [c.id for c in report.conflicts]
        assert ids == [f"conflict-{i}" for i in range(1, len(ids) + 1)]
        pairwise = [c for c in report.conflicts if len(c.calls) == 2]
        assert report.graph.number_of_edges() == len(pairwise)
        assert set(report.graph.nodes) >= {c.id for c in calls}

    @given(batches(), st.booleans())
    def test_resolution_leaves_no_resource_rate_limit_or_duplicate(self, batch, permissions):
        calls, _, _, history = batch
        r = prepared(None, None, history, PROPERTY_AGENTS if permissions else None)
        out = r.resolve(r.detect(calls), calls)
        assert len(out.calls) + len(out.aborted) == len(calls)
        assert not set(out.aborted) & {c.id for c in out.calls}
        assert len(out.resolutions) == len(r.conflicts)
        for res in out.resolutions:
            c = next(c for c in r.conflicts if c.id == res.conflict)
            row = r.table.rows[[x.id for x in r.table.rows].index(res.rule)]
            assert res.strategy in (row.strategy, row.fallback, R.ABORT)
            assert res.delay_s is None or 0 < res.delay_s <= row.max_delay_s
            assert res.call == c.calls[-1]
        again = ConflictResolver(REGISTRY, agents=PROPERTY_AGENTS).detect(out.calls)
        left = {c.type for c in again.conflicts}
        assert T.RATE_LIMIT not in left
        assert T.DUPLICATE_ACTION not in left
        if not any(res.strategy is R.REASSIGN for res in out.resolutions):
            assert T.RESOURCE not in left  # a new agent may meet another on a resource
        moved = {c.id: c.slot for c in out.calls}
        for c in calls:
            if c.id in moved:
                assert moved[c.id] >= c.slot

    def test_reference_is_not_vacuous(self):
        calls = [call("c0", "button_click", agent="a", resource="r1", estimated_s=12.0),
                 call("c1", "button_click", agent="b", resource="r1")]
        pairs, unary = reference(calls, ("r1", "c"), "button_click",
                                 [("button_click", {}, "p1", L, True)])
        assert pairs[T.RESOURCE] == {("c0", "c1"), ("held", "c0"), ("held", "c1")}
        assert pairs[T.DUPLICATE_ACTION] == {("c0", "c1"), ("h0", "c0"), ("h0", "c1")}
        assert unary[T.RATE_LIMIT] == {"c0", "c1"}
        assert unary[T.ORDERING] == {"c0", "c1"}
        assert (unary[T.PERMISSION], unary[T.TIMEOUT]) == ({"c1"}, {"c0"})  # b lacks ui.write
