"""Graphs drawn from buddy's declarations: Mermaid, Graphviz DOT and images.

See :mod:`buddy.graphs._export`; the names below are the whole API.
"""

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
from buddy.graphs._export import (
    RENDERERS,
    Renderer,
    machine_graph,
    machine_to_dot,
    machine_to_mermaid,
    render,
    to_dot,
    to_mermaid,
    to_png,
)

__all__ = [
    "RENDERERS",
    "Renderer",
    "all_dependencies",
    "check_acyclic",
    "dependency_graph",
    "dependency_picture",
    "execution_order",
    "find_cycle",
    "machine_graph",
    "machine_to_dot",
    "machine_to_mermaid",
    "missing_dependencies",
    "render",
    "to_dot",
    "to_mermaid",
    "to_png",
    "waves",
]
