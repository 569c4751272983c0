"""Graphs drawn from buddy's declarations: Mermaid, Graphviz DOT and images.

See :mod:`buddy.graphs._export`; the names below are the whole API.
"""

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
    "machine_graph",
    "machine_to_dot",
    "machine_to_mermaid",
    "render",
    "to_dot",
    "to_mermaid",
    "to_png",
]
