"""Tests of buddy.graphs._export: Mermaid, DOT and image renderers.

Each text format is parsed back by a small parser below that rejects any line
it does not know, so a test compares the whole output with the declaration.
"""

from __future__ import annotations

import doctest
import enum
import importlib.util
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import networkx as nx
import pytest

import buddy.graphs
import buddy.graphs._export
from buddy.engine import RiskLevel, ToolContract, ToolContractRegistry
from buddy.graphs import (
    RENDERERS,
    machine_graph,
    machine_to_dot,
    machine_to_mermaid,
    render,
    to_dot,
    to_mermaid,
    to_png,
)
from buddy.machines import MACHINES, ExecutionState, MachineSpec, TaskState, Transition
from buddy.rules.base.errors import BuddyError, InputError

ESCALATION = MACHINES["escalation"]
TASK = MACHINES["task"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
MATPLOTLIB_MISSING = ("drawing images without Graphviz 'dot' needs matplotlib: "
                      "pip install 'buddy[graphs]'")

# Node names Mermaid or DOT would read as syntax if written raw.
AWKWARD = ["a b", 'say "hi"', "x: y", "semi;colon", "hash #1", "pipe|x", "back\\slash",
           "new\nline", "end", "<b>tag</b>", "`tick`", "-->", "[*]", "n0", "ÉTAT", "%% c"]


# -- expected values, computed from the declaration ---------------------------

def declared_label(t: Transition) -> str:
    guards = [*t.conditions, *("!" + g for g in t.unless)]
    return f"{t.trigger} [{' & '.join(guards)}]" if guards else t.trigger


def declared_edges(spec: MachineSpec) -> list[tuple[str, str, str]]:
    """(source, dest, label) per (row, source), in declaration order."""
    return [(s.name, t.dest.name, declared_label(t)) for t in spec.transitions for s in t.source]


# -- tiny parsers -------------------------------------------------------------

def mermaid_decode(text: str) -> str:
    """Undo Mermaid's numeric entity codes (``#58;`` is ``:``)."""
    return re.sub(r"#(\d+);", lambda m: chr(int(m.group(1))), text)


def assert_mermaid_safe(text: str) -> None:
    """No character Mermaid reads as syntax is left raw in a label."""
    raw = re.sub(r"#\d+;", "", text)
    assert not set(raw) & set('#":;<>|`\n\r'), text


def parse_state_diagram(text: str) -> dict[str, object]:
    lines = text.split("\n")
    assert lines[0] == "stateDiagram-v2"
    assert lines[-1] == ""
    aliases: dict[str, str] = {}
    initial: list[str] = []
    finals: list[str] = []
    edges: list[tuple[str, str, str]] = []
    for line in lines[1:-1]:
        if m := re.fullmatch(r'    state "([^"]*)" as (s\d+)', line):
            assert_mermaid_safe(m.group(1))
            aliases[m.group(2)] = mermaid_decode(m.group(1))
        elif m := re.fullmatch(r"    \[\*\] --> (\w+)", line):
            initial.append(m.group(1))
        elif m := re.fullmatch(r"    (\w+) --> \[\*\]", line):
            finals.append(m.group(1))
        elif m := re.fullmatch(r"    (\w+) --> (\w+): (.+)", line):
            assert_mermaid_safe(m.group(3))
            edges.append((m.group(1), m.group(2), mermaid_decode(m.group(3))))
        else:
            raise AssertionError(f"unexpected line {line!r}")

    def name(state_id: str) -> str:
        return aliases.get(state_id, state_id)

    return {
        "aliases": aliases,
        "initial": [name(s) for s in initial],
        "finals": [name(s) for s in finals],
        "edges": [(name(u), name(v), label) for u, v, label in edges],
    }


def parse_flowchart(text: str) -> tuple[list[str], list[tuple[str, str, str | None]]]:
    """Node labels by id order, and (source label, dest label, edge label) edges."""
    lines = text.split("\n")
    assert lines[0] == "flowchart LR"
    assert lines[-1] == ""
    labels: dict[str, str] = {}
    edges = []
    for line in lines[1:-1]:
        if m := re.fullmatch(r'    (n\d+)\["([^"]*)"\]', line):
            assert_mermaid_safe(m.group(2))
            labels[m.group(1)] = mermaid_decode(m.group(2))
        elif m := re.fullmatch(r'    (n\d+) -->(?:\|"([^"]*)"\|)? (n\d+)', line):
            label = m.group(2)
            if label is not None:
                assert_mermaid_safe(label)
                label = mermaid_decode(label)
            edges.append((m.group(1), m.group(3), label))
        else:
            raise AssertionError(f"unexpected line {line!r}")
    assert list(labels) == [f"n{i}" for i in range(len(labels))]
    return list(labels.values()), [(labels[u], labels[v], lb) for u, v, lb in edges]


_DOT_ID = r'(?:[A-Za-z_][A-Za-z_0-9]*|"(?:[^"\\\n]|\\.)*")'


def dot_unquote(token: str) -> str:
    if not token.startswith('"'):
        return token
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), token[1:-1])


def dot_attrs(text: str | None) -> dict[str, str]:
    if text is None:
        return {}
    pairs = re.findall(rf"(\w+)=({_DOT_ID})", text)
    assert ", ".join(f"{k}={v}" for k, v in pairs) == text
    return {k: dot_unquote(v) for k, v in pairs}


def parse_dot(text: str) -> dict[str, object]:
    lines = text.split("\n")
    head = re.fullmatch(rf"digraph (?:({_DOT_ID}) )?\{{", lines[0])
    assert head is not None, lines[0]
    assert lines[-2:] == ["}", ""]
    nodes: dict[str, dict[str, str]] = {}
    edges: list[tuple[str, str, dict[str, str]]] = []
    defaults: dict[str, str] = {}
    settings: dict[str, str] = {}
    for line in lines[1:-2]:
        if m := re.fullmatch(r"    node \[(.*)\];", line):
            defaults.update(dot_attrs(m.group(1)))
        elif m := re.fullmatch(r"    (\w+)=(\w+);", line):
            settings[m.group(1)] = m.group(2)
        elif m := re.fullmatch(rf"    ({_DOT_ID}) -> ({_DOT_ID})(?: \[(.*)\])?;", line):
            edges.append((dot_unquote(m.group(1)), dot_unquote(m.group(2)), dot_attrs(m.group(3))))
        elif m := re.fullmatch(rf"    ({_DOT_ID})(?: \[(.*)\])?;", line):
            nodes[dot_unquote(m.group(1))] = dot_attrs(m.group(2))
        else:
            raise AssertionError(f"unexpected line {line!r}")
    return {"name": dot_unquote(head.group(1)) if head.group(1) else None, "nodes": nodes,
            "edges": edges, "defaults": defaults, "settings": settings}


def generic_dot_edges(text: str) -> list[tuple[str, str, str | None]]:
    parsed = parse_dot(text)
    labels = {node: attrs["label"] for node, attrs in parsed["nodes"].items()}
    return [(labels[u], labels[v], a.get("label")) for u, v, a in parsed["edges"]]


# -- machines -----------------------------------------------------------------

class Odd(enum.Enum):
    state = "state"  # a Mermaid keyword
    ÉTAT = "ÉTAT"  # not an ASCII id
    B = "B"


ODD = MachineSpec(
    name='odd "one"',
    states=Odd,
    initial=Odd.state,
    finals={Odd.B},
    transitions=[Transition("go: now", Odd.state, Odd.ÉTAT, conditions=["ok; #1"]),
                 Transition("end", Odd.ÉTAT, Odd.B, unless=["ok; #1"])],
    guards={"ok; #1": lambda i: True},
)


class TestMachineGraph:
    def test_marks_initial_and_finals(self):
        graph = machine_graph(ESCALATION)
        assert [s for s, v in graph.nodes(data="initial") if v] == [ExecutionState.MOCK]
        assert [s for s, v in graph.nodes(data="final") if v] == [ExecutionState.COMPLETED,
                                                                   ExecutionState.ABORTED]
        assert all(isinstance(d["initial"], bool) and isinstance(d["final"], bool)
                   for _, d in graph.nodes(data=True))

    def test_labels_every_edge_in_declared_order(self):
        graph = machine_graph(ESCALATION)
        edges = sorted(graph.edges(data=True), key=lambda e: e[2]["order"])
        assert [(u.name, v.name, d["label"]) for u, v, d in edges] == declared_edges(ESCALATION)
        assert sorted(d["order"] for _, _, d in edges) == list(range(len(edges)))

    def test_keeps_spec_graph_data(self):
        graph = machine_graph(TASK)
        assert graph.graph == {"name": "task", "initial": TaskState.PENDING,
                               "finals": frozenset({TaskState.COMPLETED, TaskState.FAILED})}
        data = graph.get_edge_data(TaskState.PENDING, TaskState.FAILED)
        assert [(d["trigger"], d["conditions"], d["unless"], d["label"]) for d in data.values()] \
            == [("start", (), ("gate_allows",), "start [!gate_allows]"),
                ("cancel", (), (), "cancel")]

    def test_unguarded_label_is_the_trigger(self):
        graph = machine_graph(ESCALATION)
        data = graph.get_edge_data(ExecutionState.LIVE, ExecutionState.ROLLBACK)
        assert [d["label"] for d in data.values()] == ["error"]


class TestMachineToMermaid:
    @pytest.mark.parametrize("spec", [ESCALATION, TASK], ids=["escalation", "task"])
    def test_exactly_the_declared_edges(self, spec):
        parsed = parse_state_diagram(machine_to_mermaid(spec))
        assert parsed["edges"] == declared_edges(spec)
        assert parsed["initial"] == [spec.initial.name]
        assert parsed["finals"] == [s.name for s in spec.states if s in spec.finals]
        assert parsed["aliases"] == {}

    def test_escalation_head(self):
        lines = machine_to_mermaid(ESCALATION).splitlines()
        assert lines[:4] == ["stateDiagram-v2", "    [*] --> MOCK",
                             "    MOCK --> LOCKED: lock [system_locked]",
                             "    DRY_RUN --> LOCKED: lock [system_locked]"]
        assert lines[-2:] == ["    COMPLETED --> [*]", "    ABORTED --> [*]"]
        assert ("    DRY_RUN --> LIVE: request_live "
                "[live_threshold_met & !approval_required & !system_locked]") in lines

    def test_awkward_states_and_labels_are_aliased_and_escaped(self):
        text = machine_to_mermaid(ODD)
        assert text == (
            "stateDiagram-v2\n"
            '    state "state" as s0\n'
            '    state "ÉTAT" as s1\n'
            "    [*] --> s0\n"
            "    s0 --> s1: go#58; now [ok#59; #35;1]\n"
            "    s1 --> B: end [!ok#59; #35;1]\n"
            "    B --> [*]\n")
        parsed = parse_state_diagram(text)
        assert parsed["edges"] == declared_edges(ODD)
        assert parsed["initial"] == ["state"]

    def test_same_text_twice(self):
        assert machine_to_mermaid(ESCALATION) == machine_to_mermaid(ESCALATION)

    def test_parallel_edges_each_get_a_line(self):
        parsed = parse_state_diagram(machine_to_mermaid(ESCALATION))
        pairs = Counter((u, v) for u, v, _ in parsed["edges"])
        assert pairs[("AWAITING_APPROVAL", "LOCKED")] == 2
        assert sum(pairs.values()) == machine_graph(ESCALATION).number_of_edges() == 25


class TestMachineToDot:
    @pytest.mark.parametrize("spec", [ESCALATION, TASK, ODD], ids=["escalation", "task", "odd"])
    def test_parses_back_to_the_declaration(self, spec):
        parsed = parse_dot(machine_to_dot(spec))
        assert parsed["name"] == spec.name
        assert parsed["settings"] == {"rankdir": "LR"}
        assert parsed["defaults"] == {"shape": "box", "style": "rounded"}
        start, *edges = parsed["edges"]
        assert start == ("__start__", spec.initial.name, {})
        assert [(u, v, a["label"]) for u, v, a in edges] == declared_edges(spec)
        assert parsed["nodes"] == {
            "__start__": {"shape": "point"},
            **{s.name: {"shape": "doublecircle"} if s in spec.finals else {} for s in spec.states},
        }

    def test_escalation_text(self):
        lines = machine_to_dot(ESCALATION).splitlines()
        assert lines[:6] == ['digraph "escalation" {', "    rankdir=LR;",
                             "    node [shape=box, style=rounded];",
                             '    "__start__" [shape=point];', '    "MOCK";', '    "DRY_RUN";']
        assert '    "COMPLETED" [shape=doublecircle];' in lines
        assert '    "__start__" -> "MOCK";' in lines
        assert '    "LOCKED" -> "MOCK" [label="unlock [system_unlocked & !denied]"];' in lines

    def test_quotes_the_name(self):
        assert machine_to_dot(ODD).splitlines()[0] == 'digraph "odd \\"one\\"" {'


# -- generic graphs -----------------------------------------------------------

def registry() -> ToolContractRegistry:
    def tool(name: str, *deps: str) -> ToolContract:
        return ToolContract(name=name, risk=RiskLevel.LOW, reversible=True, dependencies=deps)

    return ToolContractRegistry([tool("search"), tool("read"), tool("draft", "read"),
                                 tool("send", "draft", "search")])


class TestToMermaid:
    def test_dependency_graph(self):
        assert to_mermaid(registry().dependency_graph()) == (
            "flowchart LR\n"
            '    n0["draft"]\n'
            '    n1["read"]\n'
            '    n2["search"]\n'
            '    n3["send"]\n'
            "    n0 --> n3\n"
            "    n1 --> n0\n"
            "    n2 --> n3\n")

    def test_default_catalogue_round_trips(self):
        graph = ToolContractRegistry.default().dependency_graph()
        labels, edges = parse_flowchart(to_mermaid(graph))
        assert labels == sorted(graph.nodes)
        assert sorted(edges) == sorted((u, v, None) for u, v in graph.edges)

    def test_awkward_names(self):
        graph = nx.DiGraph()
        graph.add_edges_from(zip(AWKWARD, AWKWARD[1:], strict=False), label="a: b; #c |d|")
        labels, edges = parse_flowchart(to_mermaid(graph))
        assert labels == sorted(AWKWARD)
        assert sorted(edges) == sorted((u, v, "a: b; #c |d|") for u, v in graph.edges)

    def test_label_attributes_and_enum_nodes(self):
        graph = nx.MultiDiGraph()
        graph.add_node(ExecutionState.LIVE)
        graph.add_node(1, label="one")
        graph.add_edge(ExecutionState.MOCK, ExecutionState.LIVE, label="up")
        graph.add_edge(ExecutionState.MOCK, ExecutionState.LIVE)
        graph.add_edge(1, ExecutionState.MOCK)
        assert to_mermaid(graph) == (
            "flowchart LR\n"
            '    n0["LIVE"]\n'
            '    n1["MOCK"]\n'
            '    n2["one"]\n'
            "    n1 --> n0\n"
            '    n1 -->|"up"| n0\n'
            "    n2 --> n1\n")

    def test_same_text_for_any_insertion_order(self):
        edges = [("b", "c"), ("a", "b"), ("c", "a"), ("a", "d")]
        one, two = nx.DiGraph(edges), nx.DiGraph(list(reversed(edges)))
        assert list(one.nodes) != list(two.nodes)
        assert to_mermaid(one) == to_mermaid(two) == to_mermaid(one)

    def test_empty_graph(self):
        assert to_mermaid(nx.DiGraph()) == "flowchart LR\n"

    @pytest.mark.parametrize("graph", [nx.Graph([(1, 2)]), {"a": "b"}], ids=["Graph", "dict"])
    def test_rejects_undirected_and_non_graphs(self, graph):
        with pytest.raises(InputError) as info:
            to_mermaid(graph)
        assert str(info.value) == ("graph must be a networkx DiGraph or MultiDiGraph "
                                   f"(got {type(graph).__name__})")


class TestToDot:
    def test_dependency_graph(self):
        graph = registry().dependency_graph()
        graph.graph["name"] = "tools"
        assert to_dot(graph) == (
            'digraph "tools" {\n'
            '    n0 [label="draft"];\n'
            '    n1 [label="read"];\n'
            '    n2 [label="search"];\n'
            '    n3 [label="send"];\n'
            "    n0 -> n3;\n"
            "    n1 -> n0;\n"
            "    n2 -> n3;\n"
            "}\n")

    def test_default_catalogue_round_trips(self):
        graph = ToolContractRegistry.default().dependency_graph()
        assert sorted(generic_dot_edges(to_dot(graph))) == sorted((u, v, None)
                                                                  for u, v in graph.edges)

    def test_awkward_names(self):
        graph = nx.MultiDiGraph()
        graph.add_edges_from(zip(AWKWARD, AWKWARD[1:], strict=False), label='say "x"\\y')
        parsed = parse_dot(to_dot(graph))
        assert [a["label"] for a in parsed["nodes"].values()] == sorted(AWKWARD)
        assert sorted(generic_dot_edges(to_dot(graph))) == sorted(
            (u, v, 'say "x"\\y') for u, v in graph.edges())

    def test_same_text_for_any_insertion_order(self):
        edges = [("b", "c", {"label": "x"}), ("a", "b", {}), ("c", "a", {"label": "y"})]
        one, two = nx.MultiDiGraph(edges), nx.MultiDiGraph(list(reversed(edges)))
        assert to_dot(one) == to_dot(two)

    def test_empty_graph(self):
        assert to_dot(nx.DiGraph()) == "digraph {\n}\n"


# -- the registry ---------------------------------------------------------------

class TestRender:
    def test_registry(self):
        assert sorted(RENDERERS) == ["dot", "mermaid"]
        assert (RENDERERS["dot"].graph, RENDERERS["dot"].machine) == (to_dot, machine_to_dot)

    @pytest.mark.parametrize(("fmt", "machine", "generic"),
                             [("mermaid", machine_to_mermaid, to_mermaid),
                              ("dot", machine_to_dot, to_dot)])
    def test_dispatches_by_type(self, fmt, machine, generic):
        graph = registry().dependency_graph()
        assert render(ESCALATION, fmt) == machine(ESCALATION)
        assert render(graph, fmt) == generic(graph)
        # A machine's graph is a graph: drawn generically, as a flowchart/digraph.
        assert render(machine_graph(TASK), fmt) == generic(machine_graph(TASK))

    def test_unknown_format(self):
        with pytest.raises(InputError) as info:
            render(ESCALATION, "x")
        assert str(info.value) == "format must be one of dot, mermaid (got 'x')"

    def test_not_a_graph(self):
        with pytest.raises(InputError) as info:
            render([("a", "b")], "dot")
        assert str(info.value) == "graph must be a networkx DiGraph or MultiDiGraph (got list)"


# -- images ---------------------------------------------------------------------

@pytest.fixture
def no_dot(monkeypatch):
    """Hide any Graphviz on the PATH, so the matplotlib path runs."""
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)


def only_file(directory: Path) -> Path:
    """The one file in ``directory``: no temporary file is left behind."""
    files = list(directory.iterdir())
    assert len(files) == 1, files
    return files[0]


class TestToPng:
    @pytest.mark.parametrize("what", [ESCALATION, registry().dependency_graph(), nx.DiGraph()],
                             ids=["machine", "graph", "empty"])
    def test_png_with_matplotlib(self, no_dot, tmp_path, what):
        target = tmp_path / "out.png"
        if HAS_MATPLOTLIB:
            assert to_png(what, target) == target
            data = only_file(tmp_path).read_bytes()
            assert data.startswith(PNG_MAGIC)
            assert len(data) > 1000
        else:
            with pytest.raises(InputError) as info:
                to_png(what, target)
            assert str(info.value) == MATPLOTLIB_MISSING
            assert list(tmp_path.iterdir()) == []

    def test_svg_by_suffix_replaces_existing_file(self, no_dot, tmp_path):
        target = tmp_path / "machine.SVG"
        target.write_text("old")
        if HAS_MATPLOTLIB:
            to_png(TASK, str(target))
            text = only_file(tmp_path).read_text(encoding="utf-8")
            assert text.startswith("<?xml")
            assert "<svg" in text
            assert "RETRYING" in text or "<path" in text
        else:
            with pytest.raises(InputError):
                to_png(TASK, target)
            assert target.read_text() == "old"

    def test_matplotlib_missing(self, no_dot, tmp_path, monkeypatch):
        monkeypatch.setitem(sys.modules, "matplotlib", None)
        monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
        with pytest.raises(InputError) as info:
            to_png(ESCALATION, tmp_path / "out.png")
        assert str(info.value) == MATPLOTLIB_MISSING
        assert list(tmp_path.iterdir()) == []

    def test_uses_dot_when_found(self, tmp_path, monkeypatch):
        seen = tmp_path / "stdin.txt"
        fake = tmp_path / "dot"
        fake.write_text(f"#!{sys.executable}\n"
                        "import sys\n"
                        f"open({str(seen)!r}, 'w').write(' '.join(sys.argv[1:]) + '\\n' "
                        "+ sys.stdin.read())\n"
                        "sys.stdout.buffer.write(b'IMAGE')\n")
        fake.chmod(0o755)
        monkeypatch.setattr(shutil, "which", lambda name, *a, **k: str(fake))
        out = tmp_path / "images"
        out.mkdir()
        to_png(ESCALATION, out / "esc.png")
        assert only_file(out).read_bytes() == b"IMAGE"
        assert seen.read_text() == "-Tpng\n" + machine_to_dot(ESCALATION)

    def test_dot_failure(self, tmp_path, monkeypatch):
        fake = tmp_path / "dot"
        fake.write_text(f"#!{sys.executable}\nimport sys\nsys.stderr.write('syntax error\\n')\n"
                        "sys.exit(3)\n")
        fake.chmod(0o755)
        monkeypatch.setattr(shutil, "which", lambda name, *a, **k: str(fake))
        out = tmp_path / "images"
        out.mkdir()
        with pytest.raises(BuddyError) as info:
            to_png(TASK, out / "task.svg")
        assert str(info.value) == f"{fake} -Tsvg failed (exit 3): syntax error"
        assert list(out.iterdir()) == []

    def test_bad_suffix(self, tmp_path):
        with pytest.raises(InputError) as info:
            to_png(TASK, "graph.jpg")
        assert str(info.value) == "image path must end in .png or .svg (got 'graph.jpg')"

    def test_missing_directory(self, tmp_path):
        target = tmp_path / "nope" / "x.png"
        with pytest.raises(InputError) as info:
            to_png(TASK, target)
        assert str(info.value) == f"{target}: directory {str(target.parent)!r} does not exist"

    def test_not_a_graph(self, tmp_path):
        with pytest.raises(InputError) as info:
            to_png(nx.Graph(), tmp_path / "x.png")
        assert str(info.value) == "graph must be a networkx DiGraph or MultiDiGraph (got Graph)"


class TestApi:
    def test_all(self):
        exported = ["RENDERERS", "Renderer", "machine_graph", "machine_to_dot",
                    "machine_to_mermaid", "render", "to_dot", "to_mermaid", "to_png"]
        assert set(exported) <= set(buddy.graphs.__all__)
        assert buddy.graphs.__all__ == sorted(buddy.graphs.__all__)
        assert all(getattr(buddy.graphs, name) is getattr(buddy.graphs._export, name)
                   for name in exported)

    def test_imports_first_in_a_fresh_interpreter(self):
        done = subprocess.run([sys.executable, "-c", "import buddy.graphs"], capture_output=True,
                              text=True, check=False)
        assert (done.returncode, done.stderr) == (0, "")

    def test_doctests(self):
        result = doctest.testmod(buddy.graphs._export)
        assert result.attempted >= 10
        assert result.failed == 0

