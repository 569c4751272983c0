"""Render graphs and declared machines as Mermaid, Graphviz DOT or images.

Two kinds of input, one neutral model each:

* any networkx ``DiGraph``/``MultiDiGraph`` (a tool dependency graph, say) is
  drawn as it is: a Mermaid ``flowchart`` or a DOT ``digraph``;
* a :class:`~buddy.machines.MachineSpec` is first turned into a graph by
  :func:`machine_graph` (edges labelled ``trigger [guards]``, initial and final
  states marked), then drawn as a Mermaid ``stateDiagram-v2`` or a DOT
  ``digraph`` with a start point and double-circled finals.

:data:`RENDERERS` maps each format name to its pair of renderers; :func:`render`
picks one by format and input type. Output is deterministic: generic graphs are
drawn in sorted order, machines in declaration order. Node ids in the text are
safe ids (``n0``, ``n1`` ...; state names for machines); labels are escaped.

:func:`to_png` writes a PNG or SVG with Graphviz ``dot`` when it is on the
``PATH``, else with matplotlib (the optional ``buddy[graphs]`` extra).
"""

from __future__ import annotations

import enum
import os
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from typing import Any

import attrs
import networkx as nx

from buddy.machines._factory import MachineSpec, spec_graph
from buddy.rules.base._files import write_atomic
from buddy.rules.base.errors import BuddyError, InputError

__all__ = [
    "RENDERERS",
    "Renderer",
    "machine_graph",
    "machine_to_dot",
    "machine_to_mermaid",
    "render",
    "to_dot",
    "to_mermaid",
    "to_png",
]

_INDENT = "    "


# -- labels and escaping ----------------------------------------------------

def _node_label(node: Hashable, data: Mapping[str, Any]) -> str:
    """The attribute ``label`` if present, else an Enum member's name, else ``str(node)``."""
    if "label" in data:
        return str(data["label"])
    if isinstance(node, enum.Enum):
        return node.name
    return str(node)


# Characters Mermaid reads as syntax inside a label, as numeric entity codes
# (``#35;`` is how Mermaid spells ``#``). ``#`` is first so codes are not re-escaped.
_MERMAID_CODES = {c: f"#{ord(c)};" for c in '#":;<>|`\n\r'}
_MERMAID_SPECIAL = re.compile("[" + re.escape("".join(_MERMAID_CODES)) + "]")


def _mermaid_text(text: str) -> str:
    return _MERMAID_SPECIAL.sub(lambda m: _MERMAID_CODES[m.group()], text)


_DOT_SPECIAL = re.compile(r'[\\"\n\r]')
_DOT_CODES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": ""}


def _dot_quote(text: str) -> str:
    return '"' + _DOT_SPECIAL.sub(lambda m: _DOT_CODES[m.group()], text) + '"'


def _check_graph(graph: Any) -> None:
    if not isinstance(graph, nx.DiGraph):  # MultiDiGraph is a DiGraph too
        raise InputError("graph must be a networkx DiGraph or MultiDiGraph "
                         f"(got {type(graph).__name__})")


def _sorted_model(graph: nx.DiGraph) -> tuple[list[tuple[Hashable, str]],
                                                list[tuple[int, int, str | None]]]:
    """``(node, label)`` pairs and ``(source index, dest index, label)`` edges, both sorted.

    Sorting (not insertion order) makes equal graphs render to equal text. Ties
    between equal labels keep insertion order (the sort is stable).
    """
    def key(item: tuple[Hashable, str]) -> tuple[str, str, str]:
        node, label = item
        return (label, type(node).__qualname__, repr(node))

    nodes = sorted(((n, _node_label(n, d)) for n, d in graph.nodes(data=True)), key=key)
    index = {node: i for i, (node, _) in enumerate(nodes)}
    edges = sorted(
        ((index[u], index[v], None if "label" not in d else str(d["label"]))
         for u, v, d in graph.edges(data=True)),
        key=lambda e: (e[0], e[1], e[2] is not None, e[2] or ""))
    return nodes, edges


# -- generic graphs ---------------------------------------------------------

def to_mermaid(graph: nx.DiGraph) -> str:
    """A Mermaid ``flowchart`` of a directed graph.

    Parameters
    ----------
    graph : nx.DiGraph or nx.MultiDiGraph
        Node labels are the ``label`` attribute, else an Enum member's name,
        else ``str(node)``; an edge's ``label`` attribute labels the edge.

    Returns
    -------
    str
        Mermaid text: nodes get ids ``n0``, ``n1`` ... in sorted label order,
        labels are quoted and their special characters written as ``#NN;``.

    Raises
    ------
    InputError
        If ``graph`` is not a directed networkx graph.

    Examples
    --------
    >>> print(to_mermaid(nx.DiGraph([("fetch", "parse: json")])), end="")
    flowchart LR
        n0["fetch"]
        n1["parse#58; json"]
        n0 --> n1
    """
    _check_graph(graph)
    nodes, edges = _sorted_model(graph)
    lines = ["flowchart LR"]
    lines += [f'{_INDENT}n{i}["{_mermaid_text(label)}"]' for i, (_, label) in enumerate(nodes)]
    for u, v, label in edges:
        arrow = "-->" if label is None else f'-->|"{_mermaid_text(label)}"|'
        lines.append(f"{_INDENT}n{u} {arrow} n{v}")
    return "\n".join(lines) + "\n"


def to_dot(graph: nx.DiGraph) -> str:
    """A Graphviz DOT ``digraph`` of a directed graph.

    Parameters
    ----------
    graph : nx.DiGraph or nx.MultiDiGraph
        Labelled as in :func:`to_mermaid`; the graph attribute ``name``, if
        any, names the digraph.

    Returns
    -------
    str
        DOT text: nodes get ids ``n0``, ``n1`` ... in sorted label order, with
        their labels quoted and escaped.

    Raises
    ------
    InputError
        If ``graph`` is not a directed networkx graph.

    Examples
    --------
    >>> print(to_dot(nx.DiGraph([("fetch", 'say "hi"')])), end="")
    digraph {
        n0 [label="fetch"];
        n1 [label="say \\"hi\\""];
        n0 -> n1;
    }
    """
    _check_graph(graph)
    nodes, edges = _sorted_model(graph)
    name = graph.graph.get("name")
    lines = [f"digraph {_dot_quote(str(name))} {{" if name else "digraph {"]
    lines += [f"{_INDENT}n{i} [label={_dot_quote(label)}];" for i, (_, label) in enumerate(nodes)]
    for u, v, label in edges:
        attrs_ = "" if label is None else f" [label={_dot_quote(label)}]"
        lines.append(f"{_INDENT}n{u} -> n{v}{attrs_};")
    lines.append("}")
    return "\n".join(lines) + "\n"


# -- machines ---------------------------------------------------------------

def _edge_label(trigger: str, conditions: tuple[str, ...], unless: tuple[str, ...]) -> str:
    guards = [*conditions, *(f"!{g}" for g in unless)]
    return f"{trigger} [{' & '.join(guards)}]" if guards else trigger


def machine_graph(spec: MachineSpec) -> nx.MultiDiGraph:
    """The declaration of a machine as a graph ready to draw.

    Parameters
    ----------
    spec : MachineSpec

    Returns
    -------
    nx.MultiDiGraph
        :func:`~buddy.machines.spec_graph` of ``spec``, with each edge's
        ``label`` set to ``trigger [cond1 & cond2 & !unless1]`` (just
        ``trigger`` when unguarded) and ``order`` to its position in
        declaration order (row by row, sources in row order); node attributes
        ``initial`` and ``final`` (bools) on every state.

    Examples
    --------
    >>> from buddy.machines import MACHINES, ExecutionState
    >>> g = machine_graph(MACHINES["escalation"])
    >>> g.nodes[ExecutionState.MOCK]
    {'initial': True, 'final': False}
    >>> [d["label"] for d in g.get_edge_data(ExecutionState.DRY_RUN, ExecutionState.LIVE).values()]
    ['request_live [live_threshold_met & !approval_required & !system_locked]']
    """
    graph = spec_graph(spec)
    for state in graph.nodes:
        graph.nodes[state]["initial"] = state is spec.initial
        graph.nodes[state]["final"] = state in spec.finals
    # spec_graph adds one edge per (row, source) in declaration order, so the
    # k-th edge from u to v has key k: replay that order to number the edges.
    keys: Counter[tuple[enum.Enum, enum.Enum]] = Counter()
    order = 0
    for t in spec.transitions:
        for source in t.source:
            data = graph.edges[source, t.dest, keys[source, t.dest]]
            keys[source, t.dest] += 1
            data["label"] = _edge_label(t.trigger, t.conditions, t.unless)
            data["order"] = order
            order += 1
    return graph


def _declared_edges(graph: nx.MultiDiGraph) -> list[tuple[Any, Any, dict[str, Any]]]:
    return sorted(graph.edges(data=True), key=lambda e: e[2]["order"])


# A state id Mermaid reads as a plain id: ASCII, not a statement keyword.
_MERMAID_ID = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_MERMAID_KEYWORDS = frozenset({"state", "note", "direction", "class", "classdef", "style",
                               "end", "as", "hide", "scale", "click", "accdescr", "acctitle"})


def machine_to_mermaid(spec: MachineSpec,
                       counts: Mapping[tuple[str, str, str], int] | None = None) -> str:
    """A Mermaid ``stateDiagram-v2`` of a declared machine (GitHub renders it).

    Parameters
    ----------
    spec : MachineSpec
    counts : mapping, optional
        How many times each move was taken, by ``(source, trigger, dest)`` state
        names: each edge's label then ends with ``(n)`` (``(0)`` for a move never
        taken).

    Returns
    -------
    str
        ``[*] --> INITIAL``, then one ``SOURCE --> DEST: trigger [guards]`` line
        per edge of :func:`machine_graph` in its ``order``, then
        ``FINAL --> [*]`` per final state in the order of the states ``Enum``.
        A state whose name is not a plain ASCII id (or is a Mermaid keyword)
        is declared as ``state "name" as sN`` and drawn as ``sN``.

    Examples
    --------
    >>> from buddy.machines import MACHINES
    >>> print(*machine_to_mermaid(MACHINES["escalation"]).splitlines()[:3], sep="\\n")
    stateDiagram-v2
        [*] --> MOCK
        MOCK --> LOCKED: lock [system_locked]
    """
    graph = machine_graph(spec)
    lines = ["stateDiagram-v2"]
    ids: dict[Any, str] = {}
    for i, state in enumerate(graph.nodes):
        name = state.name
        if _MERMAID_ID.fullmatch(name) and name.lower() not in _MERMAID_KEYWORDS:
            ids[state] = name
        else:
            ids[state] = f"s{i}"
            lines.append(f'{_INDENT}state "{_mermaid_text(name)}" as s{i}')
    lines.append(f"{_INDENT}[*] --> {ids[spec.initial]}")
    for u, v, data in _declared_edges(graph):
        label = data["label"]
        if counts is not None:
            label = f"{label} ({counts.get((u.name, data['trigger'], v.name), 0)})"
        lines.append(f"{_INDENT}{ids[u]} --> {ids[v]}: {_mermaid_text(label)}")
    lines += [f"{_INDENT}{ids[s]} --> [*]" for s, final in graph.nodes(data="final") if final]
    return "\n".join(lines) + "\n"


def machine_to_dot(spec: MachineSpec) -> str:
    """A Graphviz DOT ``digraph`` of a declared machine.

    Parameters
    ----------
    spec : MachineSpec

    Returns
    -------
    str
        States are quoted by name (rounded boxes, finals ``doublecircle``); a
        ``point`` node ``"__start__"`` (never a member name) points at the
        initial state; edges carry the labels of :func:`machine_graph`.

    Examples
    --------
    >>> from buddy.machines import MACHINES
    >>> print(*machine_to_dot(MACHINES["escalation"]).splitlines()[:5], sep="\\n")
    digraph "escalation" {
        rankdir=LR;
        node [shape=box, style=rounded];
        "__start__" [shape=point];
        "MOCK";
    """
    graph = machine_graph(spec)
    lines = [f"digraph {_dot_quote(spec.name)} {{", f"{_INDENT}rankdir=LR;",
             f"{_INDENT}node [shape=box, style=rounded];",
             f'{_INDENT}"__start__" [shape=point];']
    for state, final in graph.nodes(data="final"):
        shape = " [shape=doublecircle]" if final else ""
        lines.append(f"{_INDENT}{_dot_quote(state.name)}{shape};")
    lines.append(f'{_INDENT}"__start__" -> {_dot_quote(spec.initial.name)};')
    for u, v, data in _declared_edges(graph):
        lines.append(f"{_INDENT}{_dot_quote(u.name)} -> {_dot_quote(v.name)} "
                     f"[label={_dot_quote(data['label'])}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


# -- the registry -----------------------------------------------------------

@attrs.frozen
class Renderer:
    """The two renderers of one format: for any directed graph, for a machine."""

    graph: Callable[[nx.DiGraph], str]
    machine: Callable[[MachineSpec], str]


#: Renderers by format name.
RENDERERS: dict[str, Renderer] = {
    "dot": Renderer(graph=to_dot, machine=machine_to_dot),
    "mermaid": Renderer(graph=to_mermaid, machine=machine_to_mermaid),
}


def render(graph_or_spec: nx.DiGraph | MachineSpec, fmt: str) -> str:
    """Render a machine or a directed graph in the format named ``fmt``.

    Parameters
    ----------
    graph_or_spec : MachineSpec or nx.DiGraph or nx.MultiDiGraph
        A machine gets its state-diagram renderer, a graph the generic one.
    fmt : str
        A key of :data:`RENDERERS`.

    Returns
    -------
    str

    Raises
    ------
    InputError
        If ``fmt`` is not a known format, or the input is neither a
        ``MachineSpec`` nor a directed networkx graph.

    Examples
    --------
    >>> print(render(nx.DiGraph([("a", "b")]), "dot"), end="")
    digraph {
        n0 [label="a"];
        n1 [label="b"];
        n0 -> n1;
    }
    >>> render(nx.DiGraph(), "png")
    Traceback (most recent call last):
    ...
    buddy.rules.base.errors.InputError: format must be one of dot, mermaid (got 'png')
    """
    renderer = RENDERERS.get(fmt)
    if renderer is None:
        raise InputError(f"format must be one of {', '.join(sorted(RENDERERS))} (got {fmt!r})")
    if isinstance(graph_or_spec, MachineSpec):
        return renderer.machine(graph_or_spec)
    _check_graph(graph_or_spec)
    return renderer.graph(graph_or_spec)


# -- images -----------------------------------------------------------------

_IMAGE_FORMATS = {".png": "png", ".svg": "svg"}
_MATPLOTLIB_MISSING = ("drawing images without Graphviz 'dot' needs matplotlib: "
                       "pip install 'buddy[graphs]'")


def to_png(graph_or_spec: nx.DiGraph | MachineSpec, path: str | os.PathLike[str]) -> Path:
    """Draw a machine or a directed graph to a PNG, or an SVG if ``path`` ends in ``.svg``.

    Uses the Graphviz ``dot`` program on :func:`render`'s DOT text when
    ``shutil.which("dot")`` finds it; otherwise a seeded networkx spring layout
    drawn with matplotlib (the optional extra ``buddy[graphs]``). The file is
    written to a temporary file in the same directory, then moved into place.

    Parameters
    ----------
    graph_or_spec : MachineSpec or nx.DiGraph or nx.MultiDiGraph
    path : str or os.PathLike
        Ends in ``.png`` or ``.svg``; its directory must exist.

    Returns
    -------
    Path
        The path written.

    Raises
    ------
    InputError
        If the suffix or directory is wrong, the input is not drawable, or
        neither ``dot`` nor matplotlib is available.
    BuddyError
        If ``dot`` fails.

    Examples
    --------
    >>> to_png(nx.DiGraph([("a", "b")]), "graph.jpg")
    Traceback (most recent call last):
    ...
    buddy.rules.base.errors.InputError: image path must end in .png or .svg (got 'graph.jpg')
    """
    target = Path(path)
    fmt = _IMAGE_FORMATS.get(target.suffix.lower())
    if fmt is None:
        raise InputError(f"image path must end in .png or .svg (got {str(path)!r})")
    if not isinstance(graph_or_spec, MachineSpec):
        _check_graph(graph_or_spec)
    if not target.parent.is_dir():
        raise InputError(f"{target}: directory {str(target.parent)!r} does not exist")
    dot = shutil.which("dot")
    if dot is not None:
        image = _run_dot(dot, render(graph_or_spec, "dot"), fmt)
        write_atomic(target, image)
    else:
        figure = _matplotlib_figure(graph_or_spec)
        write_atomic(target, lambda f: figure.savefig(f, format=fmt))
    return target


def _run_dot(dot: str, text: str, fmt: str) -> bytes:
    try:
        done = subprocess.run([dot, f"-T{fmt}"], input=text.encode("utf-8"),
                              capture_output=True, check=True, timeout=60)
    except subprocess.CalledProcessError as exc:
        first = (exc.stderr or b"").decode("utf-8", "replace").strip().splitlines()
        raise BuddyError(f"{dot} -T{fmt} failed (exit {exc.returncode}): "
                         f"{first[0] if first else 'no message'}") from exc
    except subprocess.TimeoutExpired as exc:
        raise BuddyError(f"{dot} -T{fmt} did not finish in 60 s") from exc
    return done.stdout


def _matplotlib_figure(graph_or_spec: nx.DiGraph | MachineSpec) -> Any:
    """A matplotlib ``Figure`` (no pyplot state) of :func:`_drawing`, in layers left to right."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise InputError(_MATPLOTLIB_MISSING) from exc

    drawing = _drawing(graph_or_spec)
    columns: dict[int, list[Hashable]] = {}
    layers: dict[Hashable, int] = dict(drawing.nodes(data="layer"))
    for node, layer in layers.items():
        columns.setdefault(layer, []).append(node)
    # One barycentre pass, right to left: a node sits near the nodes it points
    # to in the next column, so edges stay short; nodes with no edge go last.
    for layer in sorted(columns)[:-1][::-1]:
        after = {n: i for i, n in enumerate(columns[layer + 1])} if layer + 1 in columns else {}

        def weight(node: Hashable, after: dict[Hashable, int] = after) -> float:
            near = [after[s] for s in drawing.successors(node) if s in after]
            return sum(near) / len(near) if near else (-1 if drawing.degree(node) else 1e9)

        columns[layer].sort(key=weight)
    # Positions in inches: columns as wide as their longest label (~0.09 inch a
    # character) plus a gap, each column centred; rows 0.9 inch apart, more
    # when edges carry labels (a machine's triggers and guards).
    labelled = any(d["labels"] for _, _, d in drawing.edges(data=True))
    row, gap = (1.8, 3.2) if labelled else (0.9, 1.6)
    pos: dict[Hashable, tuple[float, float]] = {}
    x = 0.0
    for layer in sorted(columns):
        nodes = columns[layer]
        width = 0.09 * max(len(drawing.nodes[n]["label"]) for n in nodes) + 0.4
        for i, node in enumerate(nodes):
            pos[node] = (x + width / 2, -row * (i - (len(nodes) - 1) / 2))
        x += width + gap
    rows = max((len(n) for n in columns.values()), default=1)
    figure = Figure(figsize=(max(6.0, x - gap + 0.6), max(3.0, row * rows + 0.6)), dpi=100)
    ax = figure.add_subplot()
    ax.set_axis_off()
    if len(drawing) == 0:
        return figure
    ax.set_xlim(-0.3, x - gap + 0.3)
    ax.set_ylim(-row * rows / 2 - 0.3, row * rows / 2 + 0.3)
    arc = "arc3,rad=0.12"
    nx.draw_networkx_edges(drawing, pos, ax=ax, node_size=2500, arrowsize=14,
                           connectionstyle=arc, edge_color="#555555")
    edge_labels = {(u, v): "\n".join(d["labels"]) for u, v, d in drawing.edges(data=True)
                   if d["labels"]}
    if edge_labels:
        nx.draw_networkx_edge_labels(drawing, pos, edge_labels=edge_labels, ax=ax, font_size=7,
                                     connectionstyle=arc, node_size=2500, rotate=False)
    styles = {"final": ("#e0e0e0", 2.5), "initial": ("#c8e6c9", 1.0), "plain": ("#ffffff", 1.0)}
    for style, (face, line_width) in styles.items():
        labels = {n: d["label"] for n, d in drawing.nodes(data=True) if d["style"] == style}
        if labels:
            nx.draw_networkx_labels(drawing, pos, labels=labels, ax=ax, font_size=9,
                                    bbox={"boxstyle": "round", "fc": face, "lw": line_width})
    figure.tight_layout()
    return figure


def _drawing(graph_or_spec: nx.DiGraph | MachineSpec) -> nx.DiGraph:
    """A simple ``DiGraph`` to draw, in the order the text renderers use.

    Node attributes ``label``, ``style`` (initial, final or plain) and ``layer``
    (a column: a machine's states by distance from the initial one, finals
    last; a graph's by topological generation of its strongly connected
    components); edge attribute ``labels``, the labels of merged parallel edges.
    """
    drawing: nx.DiGraph[Hashable] = nx.DiGraph()
    if isinstance(graph_or_spec, MachineSpec):
        graph = machine_graph(graph_or_spec)
        for state, data in graph.nodes(data=True):
            style = "final" if data["final"] else "initial" if data["initial"] else "plain"
            drawing.add_node(state, label=state.name, style=style)
        edges = [(u, v, d["label"]) for u, v, d in _declared_edges(graph)]
    else:
        nodes, indexed = _sorted_model(graph_or_spec)
        for node, label in nodes:
            drawing.add_node(node, label=label, style="plain")
        edges = [(nodes[u][0], nodes[v][0], label) for u, v, label in indexed]
    for u, v, label in edges:
        labels = drawing.edges[u, v]["labels"] if drawing.has_edge(u, v) else []
        drawing.add_edge(u, v, labels=labels if label is None else [*labels, label])
    if isinstance(graph_or_spec, MachineSpec):
        distance = nx.single_source_shortest_path_length(drawing, graph_or_spec.initial)
        last = max((d for s, d in distance.items() if s not in graph_or_spec.finals), default=0)
        for state in drawing:
            final = state in graph_or_spec.finals
            drawing.nodes[state]["layer"] = last + 1 if final else distance.get(state, 0)
    else:
        components = nx.condensation(drawing)
        for layer, generation in enumerate(nx.topological_generations(components)):
            for component in generation:
                for node in components.nodes[component]["members"]:
                    drawing.nodes[node]["layer"] = layer
    return drawing
