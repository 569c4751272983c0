"""Tests of buddy.graphs._dependencies: build, cycles, plan order, waves, drawing.

The ordering properties are checked against :func:`reference_order`, a
quadratic restatement of the rule written from the docstring (of the entries
whose dependencies have run, the earliest in the plan runs next), not from the
code.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
from collections import Counter

import networkx as nx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from buddy.engine import RiskLevel, ToolContract, ToolContractRegistry
from buddy.graphs import to_dot, to_mermaid
from buddy.graphs._dependencies import (
    all_dependencies,
    check_acyclic,
    dependency_graph,
    dependency_picture,
    execution_order,
    find_cycle,
    missing_dependencies,
    waves,
)
from buddy.rules.base.errors import (
    ContractError,
    DependencyCycleError,
    InputError,
    UnknownToolError,
)

REGISTRY = ToolContractRegistry.default()
DEFAULT = dependency_graph(REGISTRY)

#: The source's pre-built dependencies, typed in by hand: (dependency, tool).
PREBUILT = {
    ("vision_inspect", "button_click"),
    ("form_fill", "button_click"),
    ("ghl_search", "ghl_create_contact"),
    ("mployer_search", "mployer_add_contact"),
    ("msgraph_get_user", "msgraph_send_email"),
    ("msgraph_create_draft", "msgraph_send_email"),
}

CAN_DRAW = shutil.which("dot") is not None or importlib.util.find_spec("matplotlib") is not None
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def tool(name: str, *deps: str, risk: RiskLevel = RiskLevel.LOW) -> ToolContract:
    return ToolContract(name=name, risk=risk, reversible=True, dependencies=deps)


def graph_of(nodes: list[str], edges: list[tuple[str, str]]) -> nx.DiGraph:
    """A DiGraph declaring ``nodes`` in this order, then ``edges`` in this order."""
    graph = nx.DiGraph()
    graph.add_nodes_from(nodes)
    graph.add_edges_from(edges)
    return graph


CHAIN = graph_of(["a", "b", "c"], [("a", "b"), ("b", "c")])  # a -> b -> c
TWO_CYCLE = dependency_graph([tool("a", "b"), tool("b", "a")])
THREE_CYCLE = dependency_graph([tool("root"), tool("x", "root", "z"), tool("y", "x"),
                                tool("z", "y"), tool("leaf", "z")])


# -- references, from the docstrings ------------------------------------------

def reference_order(graph: nx.DiGraph, plan: list[str]) -> list[str]:
    """Repeatedly take the earliest entry whose dependencies' first entries have run."""
    first = {}
    for j, name in enumerate(plan):
        first.setdefault(name, j)
    needs = [{first[d] for d in graph.pred[name] if d in first} for name in plan]
    ran: set[int] = set()
    out = []
    while len(ran) < len(plan):
        j = next(j for j in range(len(plan)) if j not in ran and needs[j] <= ran)
        ran.add(j)
        out.append(plan[j])
    return out


def is_valid(graph: nx.DiGraph, plan: list[str]) -> bool:
    """Every entry comes after the first entry of each of its dependencies in the plan."""
    seen: set[str] = set()
    present = set(plan)
    for name in plan:
        if any(d in present and d not in seen for d in graph.pred[name]):
            return False
        seen.add(name)
    return True


# -- strategies ---------------------------------------------------------------

@st.composite
def dags(draw: st.DrawFn, max_tools: int = 10) -> nx.DiGraph:
    """A DAG on ``t0..tn``: edges follow a hidden rank; declared in another order."""
    n = draw(st.integers(0, max_tools))
    ranked = draw(st.permutations([f"t{i}" for i in range(n)]))
    declared = draw(st.permutations(ranked))
    pairs = [(ranked[i], ranked[j]) for i in range(n) for j in range(i + 1, n)]
    edges = [p for p in pairs if draw(st.booleans())] if pairs else []
    graph = graph_of(declared, draw(st.permutations(edges)))
    graph.graph["ranked"] = ranked
    return graph


@st.composite
def digraphs(draw: st.DrawFn) -> nx.DiGraph:
    """Any small directed graph, cycles and self-loops included."""
    names = [f"t{i}" for i in range(draw(st.integers(0, 7)))]
    edges = draw(st.lists(st.tuples(st.sampled_from(names), st.sampled_from(names)),
                          max_size=12, unique=True)) if names else []
    return graph_of(draw(st.permutations(names)), edges)


@st.composite
def dags_and_plans(draw: st.DrawFn) -> tuple[nx.DiGraph, list[str]]:
    graph = draw(dags())
    names = list(graph)
    plan = draw(st.lists(st.sampled_from(names), max_size=15)) if names else []
    return graph, plan


# -- dependency_graph ---------------------------------------------------------

class TestDependencyGraph:
    def test_default_catalogue_has_the_prebuilt_dependencies(self):
        assert set(DEFAULT.edges) == PREBUILT
        assert set(DEFAULT) == set(REGISTRY.names())

    def test_nodes_and_dependencies_in_declaration_order(self):
        assert list(DEFAULT) == REGISTRY.names()
        assert list(DEFAULT.pred["button_click"]) == ["vision_inspect", "form_fill"]
        assert list(DEFAULT.pred["msgraph_send_email"]) == ["msgraph_get_user",
                                                            "msgraph_create_draft"]

    def test_same_edges_as_the_registry(self):
        assert set(DEFAULT.edges) == set(REGISTRY.dependency_graph().edges)

    def test_node_attributes(self):
        assert DEFAULT.nodes["form_fill"] == {"risk": RiskLevel.MEDIUM, "reversible": True,
                                              "label": "form_fill (MEDIUM)"}
        assert DEFAULT.nodes["button_click"]["label"] == "button_click (MEDIUM, irreversible)"
        assert DEFAULT.nodes["msgraph_send_email"]["label"] == \
            "msgraph_send_email (HIGH, irreversible)"
        assert DEFAULT.nodes["vision_inspect"]["label"] == "vision_inspect (LOW)"

    def test_edges_carry_no_attributes(self):
        assert all(d == {} for _, _, d in DEFAULT.edges(data=True))

    def test_contract_list_equals_registry(self):
        graph = dependency_graph(list(REGISTRY))
        assert list(graph.nodes(data=True)) == list(DEFAULT.nodes(data=True))
        assert list(graph.edges) == list(DEFAULT.edges)

    def test_empty(self):
        graph = dependency_graph([])
        assert graph.number_of_nodes() == 0
        assert isinstance(graph, nx.DiGraph)

    def test_dependency_declared_later(self):
        graph = dependency_graph([tool("b", "a"), tool("a")])
        assert list(graph) == ["b", "a"]
        assert list(graph.edges) == [("a", "b")]

    def test_cyclic_contracts_still_build(self):
        assert set(TWO_CYCLE.edges) == {("b", "a"), ("a", "b")}

    def test_unknown_dependency(self):
        with pytest.raises(ContractError, match=r"^b: depends on unknown tool\(s\): x, y$"):
            dependency_graph([tool("a"), tool("b", "x", "a", "y")])

    def test_duplicate_name(self):
        with pytest.raises(ContractError, match="^tool names must be unique: a$"):
            dependency_graph([tool("a"), tool("a")])

    def test_not_a_contract(self):
        with pytest.raises(InputError, match=r"^dependency_graph needs ToolContract items "
                                             r"\(got str\)$"):
            dependency_graph(["a"])


# -- find_cycle -----------------------------------------------------------------

class TestFindCycle:
    def test_default_catalogue_is_acyclic(self):
        assert find_cycle(DEFAULT) is None

    def test_empty(self):
        assert find_cycle(nx.DiGraph()) is None

    def test_two_cycle(self):
        assert find_cycle(TWO_CYCLE) == ["a", "b", "a"]

    def test_three_cycle_named_from_earliest_declared(self):
        assert find_cycle(THREE_CYCLE) == ["x", "y", "z", "x"]

    def test_self_loop(self):
        assert find_cycle(nx.DiGraph([("a", "b"), ("b", "b")])) == ["b", "b"]

    def test_through_earliest_declared_tool_on_a_cycle(self):
        # x -> y -> x is shorter, but "a" is declared first and lies on a cycle.
        graph = graph_of(["a", "y", "x"], [("a", "x"), ("x", "y"), ("y", "x"), ("y", "a")])
        assert find_cycle(graph) == ["a", "x", "y", "a"]

    def test_shortest_cycle_through_that_tool(self):
        graph = graph_of(list("abcd"), [("a", "b"), ("b", "c"), ("c", "d"), ("d", "a"),
                                        ("c", "a")])
        assert find_cycle(graph) == ["a", "b", "c", "a"]

    def test_ties_follow_declared_edges(self):
        graph = graph_of(list("axy"), [("a", "y"), ("a", "x"), ("x", "a"), ("y", "a")])
        assert find_cycle(graph) == ["a", "y", "a"]

    def test_earliest_declared_cycle_wins(self):
        graph = graph_of(["p", "q", "a", "b"], [("q", "p"), ("p", "q"), ("b", "a"), ("a", "b")])
        assert find_cycle(graph) == ["p", "q", "p"]
        graph = graph_of(["a", "b", "p", "q"], [("q", "p"), ("p", "q"), ("b", "a"), ("a", "b")])
        assert find_cycle(graph) == ["a", "b", "a"]

    def test_acyclic_part_is_ignored(self):
        graph = graph_of(["s", "a", "b", "t"], [("s", "a"), ("a", "b"), ("b", "a"), ("b", "t")])
        assert find_cycle(graph) == ["a", "b", "a"]

    def test_multidigraph(self):
        graph = nx.MultiDiGraph([("a", "b"), ("a", "b"), ("b", "a")])
        assert find_cycle(graph) == ["a", "b", "a"]

    def test_long_ring(self):
        names = [f"t{i:04d}" for i in range(3000)]
        graph = nx.DiGraph(zip(names, names[1:] + names[:1], strict=True))
        assert find_cycle(graph) == [*names, names[0]]

    def test_not_a_graph(self):
        with pytest.raises(InputError, match=r"got Graph\)$"):
            find_cycle(nx.Graph([("a", "b")]))

    @given(digraphs())
    def test_names_a_real_cycle_iff_cyclic(self, graph):
        cycle = find_cycle(graph)
        if nx.is_directed_acyclic_graph(graph):
            assert cycle is None
            return
        assert cycle is not None
        assert cycle[0] == cycle[-1]
        assert len(set(cycle[:-1])) == len(cycle) - 1
        assert all(graph.has_edge(u, v) for u, v in zip(cycle, cycle[1:], strict=False))
        on_cycles = {n for c in nx.strongly_connected_components(graph)
                     for n in c if len(c) > 1 or graph.has_edge(n, n)}
        start = next(n for n in graph if n in on_cycles)
        assert cycle[0] == start
        shortest = min(nx.shortest_path_length(graph, start, p) + 1 for p in graph.pred[start]
                       if nx.has_path(graph, start, p))
        assert len(cycle) - 1 == shortest


# -- check_acyclic --------------------------------------------------------------

class TestCheckAcyclic:
    def test_default_catalogue(self):
        assert check_acyclic(DEFAULT) is None

    def test_empty(self):
        assert check_acyclic(nx.DiGraph()) is None

    def test_two_cycle(self):
        with pytest.raises(DependencyCycleError) as info:
            check_acyclic(TWO_CYCLE)
        assert info.value.cycle == ["a", "b", "a"]
        assert str(info.value) == "tool dependencies form a cycle: a -> b -> a"
        assert isinstance(info.value.__cause__, nx.NetworkXUnfeasible)

    def test_three_cycle(self):
        with pytest.raises(DependencyCycleError) as info:
            check_acyclic(THREE_CYCLE)
        assert info.value.cycle == ["x", "y", "z", "x"]
        assert str(info.value) == "tool dependencies form a cycle: x -> y -> z -> x"

    def test_catchable_as_contract_and_value_error(self):
        with pytest.raises(ContractError):
            check_acyclic(TWO_CYCLE)
        with pytest.raises(ValueError):
            check_acyclic(TWO_CYCLE)

    def test_not_a_graph(self):
        with pytest.raises(InputError, match=r"got dict\)$"):
            check_acyclic({"a": ["b"]})


# -- execution_order ------------------------------------------------------------

class TestExecutionOrder:
    def test_prebuilt_dependencies_come_first(self):
        plan = ["msgraph_send_email", "msgraph_get_user", "msgraph_create_draft"]
        assert execution_order(DEFAULT, plan) == ["msgraph_get_user", "msgraph_create_draft",
                                                  "msgraph_send_email"]
        plan = ["button_click", "form_fill", "vision_inspect"]
        assert execution_order(DEFAULT, plan) == ["form_fill", "vision_inspect", "button_click"]
        plan = ["ghl_create_contact", "mployer_add_contact", "mployer_search", "ghl_search"]
        assert execution_order(DEFAULT, plan) == ["mployer_search", "mployer_add_contact",
                                                  "ghl_search", "ghl_create_contact"]

    def test_whole_catalogue_in_declaration_order_is_kept(self):
        assert execution_order(DEFAULT, REGISTRY.names()) == REGISTRY.names()

    def test_ties_keep_plan_order(self):
        plan = ["text_extract", "goal_query", "math_compute", "ghl_search"]
        assert execution_order(DEFAULT, plan) == plan
        assert execution_order(DEFAULT, plan[::-1]) == plan[::-1]

    def test_dependency_listed_after_dependent_moves_before_it(self):
        assert execution_order(DEFAULT, ["button_click", "vision_inspect"]) == \
            ["vision_inspect", "button_click"]
        assert execution_order(CHAIN, ["c", "b", "a"]) == ["a", "b", "c"]

    def test_independent_tools_never_reorder(self):
        plan = ["goal_query", "button_click", "text_extract", "form_fill", "math_compute",
                "vision_inspect"]
        assert execution_order(DEFAULT, plan) == [
            "goal_query", "text_extract", "form_fill", "math_compute", "vision_inspect",
            "button_click"]

    def test_a_waiting_tool_lets_later_free_tools_go_first(self):
        graph = graph_of(["a", "b", "c"], [("b", "c")])
        assert execution_order(graph, ["c", "a", "b"]) == ["a", "b", "c"]

    def test_dependencies_outside_the_plan_are_ignored(self):
        assert execution_order(DEFAULT, ["button_click"]) == ["button_click"]
        assert execution_order(DEFAULT, ["button_click", "form_fill"]) == \
            ["form_fill", "button_click"]
        # a -> b -> c with b not planned: a and c are independent here.
        assert execution_order(CHAIN, ["c", "a"]) == ["c", "a"]

    def test_cycle_outside_the_plan_is_ignored(self):
        graph = graph_of(["a", "b", "c"], [("a", "b"), ("b", "c"), ("c", "a")])
        assert execution_order(graph, ["b", "a"]) == ["a", "b"]
        assert execution_order(TWO_CYCLE, []) == []

    def test_empty_plan(self):
        assert execution_order(DEFAULT, []) == []
        assert execution_order(nx.DiGraph(), []) == []

    def test_repeats_kept_when_valid(self):
        plan = ["ghl_search", "ghl_create_contact", "ghl_search", "ghl_create_contact"]
        assert execution_order(DEFAULT, plan) == plan

    def test_repeat_waits_for_first_entry_of_dependency(self):
        plan = ["ghl_create_contact", "ghl_search", "ghl_search"]
        assert execution_order(DEFAULT, plan) == ["ghl_search", "ghl_create_contact",
                                                  "ghl_search"]
        plan = ["ghl_create_contact", "ghl_create_contact", "ghl_search"]
        assert execution_order(DEFAULT, plan) == ["ghl_search", "ghl_create_contact",
                                                  "ghl_create_contact"]

    def test_repeated_independent_tool(self):
        assert execution_order(CHAIN, ["a", "a"]) == ["a", "a"]

    def test_accepts_any_sequence(self):
        assert execution_order(CHAIN, ("b", "a")) == ["a", "b"]

    def test_does_not_change_the_graph(self):
        before = (list(DEFAULT.nodes(data=True)), list(DEFAULT.edges))
        execution_order(DEFAULT, ["button_click", "form_fill"])
        assert (list(DEFAULT.nodes(data=True)), list(DEFAULT.edges)) == before

    def test_cycle_in_plan(self):
        with pytest.raises(DependencyCycleError) as info:
            execution_order(THREE_CYCLE, ["leaf", "z", "y", "root", "x"])
        assert info.value.cycle == ["x", "y", "z", "x"]
        assert isinstance(info.value.__cause__, nx.NetworkXUnfeasible)

    def test_two_cycle_in_plan(self):
        with pytest.raises(DependencyCycleError,
                           match="^tool dependencies form a cycle: a -> b -> a$"):
            execution_order(TWO_CYCLE, ["b", "a"])

    def test_unknown_tool(self):
        with pytest.raises(UnknownToolError, match="^unknown tool 'nope'$") as info:
            execution_order(DEFAULT, ["form_fill", "nope"])
        assert info.value.name == "nope"

    def test_string_plan(self):
        with pytest.raises(InputError, match="^plan must be a sequence of tool names, "
                                             "not a string"):
            execution_order(DEFAULT, "form_fill")

    @given(dags_and_plans())
    def test_permutation_respecting_every_edge(self, case):
        graph, plan = case
        order = execution_order(graph, plan)
        assert Counter(order) == Counter(plan)
        assert is_valid(graph, order)
        assert order == reference_order(graph, plan)

    @given(dags_and_plans())
    def test_identity_exactly_when_already_valid(self, case):
        graph, plan = case
        assert (execution_order(graph, plan) == plan) == is_valid(graph, plan)
        order = execution_order(graph, plan)
        assert execution_order(graph, order) == order

    @given(dags(), st.data())
    def test_rank_order_is_kept(self, graph, data):
        ranked = graph.graph["ranked"]
        keep = data.draw(st.lists(st.booleans(), min_size=len(ranked), max_size=len(ranked)))
        plan = [name for name, k in zip(ranked, keep, strict=True) if k]
        assert execution_order(graph, plan) == plan

    @given(dags_and_plans())
    def test_entry_without_planned_dependencies_never_moves_back(self, case):
        graph, plan = case
        order = execution_order(graph, plan)
        planned = set(plan)
        free = [name for name in dict.fromkeys(plan)
                if not any(d in planned for d in graph.pred[name])]
        for name in free:  # nothing listed after its first entry runs before it
            assert Counter(order[:order.index(name)]) <= Counter(plan[:plan.index(name)])


# -- waves --------------------------------------------------------------------

class TestWaves:
    def test_default_catalogue(self):
        names = REGISTRY.names()
        dependents = ["button_click", "ghl_create_contact", "mployer_add_contact",
                      "msgraph_send_email"]
        assert waves(DEFAULT, names) == [[n for n in names if n not in dependents], dependents]

    def test_chain(self):
        assert waves(CHAIN, ["c", "b", "a"]) == [["a"], ["b"], ["c"]]

    def test_longest_chain_sets_the_wave(self):
        graph = graph_of(["a", "b", "c"], [("a", "c"), ("a", "b"), ("b", "c")])
        assert waves(graph, ["c", "a", "b"]) == [["a"], ["b"], ["c"]]

    def test_each_wave_in_plan_order(self):
        graph = graph_of(["z", "y", "a"], [("z", "a"), ("y", "a")])
        assert waves(graph, ["a", "y", "z"]) == [["y", "z"], ["a"]]
        assert waves(graph, ["z", "a", "y"]) == [["z", "y"], ["a"]]

    def test_empty_plan(self):
        assert waves(DEFAULT, []) == []

    def test_dependencies_outside_the_plan_are_ignored(self):
        assert waves(CHAIN, ["c", "a"]) == [["c", "a"]]

    def test_repeats(self):
        assert waves(CHAIN, ["b", "a", "b", "a"]) == [["a", "a"], ["b", "b"]]

    def test_cycle(self):
        with pytest.raises(DependencyCycleError, match="a -> b -> a$") as info:
            waves(TWO_CYCLE, ["a", "b"])
        assert isinstance(info.value.__cause__, nx.NetworkXUnfeasible)

    def test_unknown_tool(self):
        with pytest.raises(UnknownToolError, match="^unknown tool 'x'$"):
            waves(CHAIN, ["x"])

    @given(dags_and_plans())
    def test_waves_respect_every_edge(self, case):
        graph, plan = case
        layers = waves(graph, plan)
        assert all(layers)
        assert Counter(n for layer in layers for n in layer) == Counter(plan)
        wave = {}
        for k, layer in enumerate(layers):
            for name in layer:
                assert wave.setdefault(name, k) == k  # a tool's entries share a wave
        for k, layer in enumerate(layers):
            assert layer == [name for name in plan if wave[name] == k]  # in plan order
        planned = set(plan)
        for name, k in wave.items():
            deps = [wave[d] for d in graph.pred[name] if d in planned]
            assert all(d < k for d in deps)
            assert k == (max(deps) + 1 if deps else 0)  # as early as possible


# -- missing_dependencies ---------------------------------------------------------

class TestMissingDependencies:
    def test_none_done(self):
        assert missing_dependencies(DEFAULT, "msgraph_send_email", []) == \
            ["msgraph_get_user", "msgraph_create_draft"]
        assert missing_dependencies(DEFAULT, "button_click", ()) == \
            ["vision_inspect", "form_fill"]

    def test_declaration_order_not_done_order(self):
        assert missing_dependencies(DEFAULT, "button_click", ["ghl_search"]) == \
            ["vision_inspect", "form_fill"]

    def test_some_done(self):
        assert missing_dependencies(DEFAULT, "msgraph_send_email",
                                    ["msgraph_create_draft"]) == ["msgraph_get_user"]
        assert missing_dependencies(DEFAULT, "ghl_create_contact", {"x"}) == ["ghl_search"]

    def test_all_done(self):
        done = iter(["msgraph_create_draft", "msgraph_get_user", "unknown"])
        assert missing_dependencies(DEFAULT, "msgraph_send_email", done) == []

    def test_no_dependencies(self):
        assert missing_dependencies(DEFAULT, "form_fill", []) == []

    def test_direct_only(self):
        assert missing_dependencies(CHAIN, "c", []) == ["b"]

    def test_unknown_tool(self):
        with pytest.raises(UnknownToolError, match="^unknown tool 'nope'$"):
            missing_dependencies(DEFAULT, "nope", [])

    def test_string_done(self):
        with pytest.raises(InputError, match="^done must be a sequence of tool names"):
            missing_dependencies(DEFAULT, "button_click", "form_fill")


# -- all_dependencies -------------------------------------------------------------

class TestAllDependencies:
    def test_prebuilt(self):
        assert all_dependencies(DEFAULT, "button_click") == ["vision_inspect", "form_fill"]
        assert all_dependencies(DEFAULT, "ghl_create_contact") == ["ghl_search"]
        assert all_dependencies(DEFAULT, "form_fill") == []

    def test_transitive_in_run_order(self):
        graph = graph_of(["c", "b", "a", "x"], [("b", "c"), ("a", "b"), ("x", "a")])
        assert all_dependencies(graph, "c") == ["x", "a", "b"]
        assert all_dependencies(graph, "x") == []

    def test_unknown_tool(self):
        with pytest.raises(UnknownToolError, match="^unknown tool 'nope'$") as info:
            all_dependencies(DEFAULT, "nope")
        assert isinstance(info.value.__cause__, nx.NetworkXError)

    def test_cycle(self):
        with pytest.raises(DependencyCycleError) as info:
            all_dependencies(THREE_CYCLE, "leaf")
        assert info.value.cycle == ["x", "y", "z", "x"]

    @given(dags())
    def test_ancestors_in_a_valid_order(self, graph):
        for name in graph:
            deps = all_dependencies(graph, name)
            assert set(deps) == nx.ancestors(graph, name)
            assert len(deps) == len(set(deps))
            assert is_valid(graph, deps)


# -- drawing ----------------------------------------------------------------------

def mermaid_model(text: str) -> tuple[list[str], set[tuple[str, str]]]:
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    labels: dict[str, str] = {}
    edges = set()
    for line in lines[1:]:
        if m := re.fullmatch(r'    (n\d+)\["([^"]*)"\]', line):
            labels[m[1]] = m[2]
        elif m := re.fullmatch(r"    (n\d+) --> (n\d+)", line):
            edges.add((labels[m[1]], labels[m[2]]))
        else:
            raise AssertionError(f"unknown line {line!r}")
    return sorted(labels.values()), edges


def dot_model(text: str) -> tuple[list[str], set[tuple[str, str]]]:
    lines = text.splitlines()
    assert lines[0] == "digraph {" and lines[-1] == "}"
    labels: dict[str, str] = {}
    edges = set()
    for line in lines[1:-1]:
        if m := re.fullmatch(r'    (n\d+) \[label="([^"]*)"\];', line):
            labels[m[1]] = m[2]
        elif m := re.fullmatch(r"    (n\d+) -> (n\d+);", line):
            edges.add((labels[m[1]], labels[m[2]]))
        else:
            raise AssertionError(f"unknown line {line!r}")
    return sorted(labels.values()), edges


LABELLED = {(DEFAULT.nodes[u]["label"], DEFAULT.nodes[v]["label"]) for u, v in PREBUILT}


class TestExports:
    @pytest.mark.parametrize("export, model", [(to_mermaid, mermaid_model), (to_dot, dot_model)])
    def test_every_tool_and_edge(self, export, model):
        labels, edges = model(export(DEFAULT))
        assert labels == sorted(d["label"] for _, d in DEFAULT.nodes(data=True))
        assert edges == LABELLED

    def test_labels_carry_risk(self):
        text = to_mermaid(DEFAULT)
        assert '["form_fill (MEDIUM)"]' in text
        assert '["msgraph_send_email (HIGH, irreversible)"]' in text
        assert '[label="ghl_search (LOW)"];' in to_dot(DEFAULT)

    def test_cyclic_graph_exports(self):
        assert mermaid_model(to_mermaid(TWO_CYCLE))[1] == {("a (LOW)", "b (LOW)"),
                                                           ("b (LOW)", "a (LOW)")}

    @pytest.mark.skipif(not CAN_DRAW, reason="needs Graphviz dot or matplotlib")
    def test_png_written(self, tmp_path):
        path = dependency_picture(DEFAULT, tmp_path / "deps.png")
        assert path == tmp_path / "deps.png"
        assert path.read_bytes().startswith(PNG_MAGIC)
        assert path.stat().st_size > 10_000
        assert [p.name for p in tmp_path.iterdir()] == ["deps.png"]

    @pytest.mark.skipif(not CAN_DRAW, reason="needs Graphviz dot or matplotlib")
    def test_svg_written(self, tmp_path):
        path = dependency_picture(DEFAULT, str(tmp_path / "deps.svg"))
        text = path.read_text(encoding="utf-8")
        assert "<svg" in text
        assert "msgraph_send_email (HIGH, irreversible)" in text or "<path" in text

    def test_bad_suffix(self, tmp_path):
        with pytest.raises(InputError, match=r"^image path must end in \.png or \.svg"):
            dependency_picture(DEFAULT, tmp_path / "deps.jpg")
        assert list(tmp_path.iterdir()) == []

    def test_not_a_graph(self, tmp_path):
        with pytest.raises(InputError, match=r"got list\)$"):
            dependency_picture([("a", "b")], tmp_path / "deps.png")
