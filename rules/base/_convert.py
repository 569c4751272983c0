"""The one cattrs converter every record goes through.

Enums by value, frozensets as sorted lists, tuples as lists, extra keys
forbidden. Loaders, the audit trail and the CLI's JSON output share it.
"""

from __future__ import annotations

import enum
from typing import Any

import cattrs

__all__ = ["converter", "make_converter"]


def make_converter() -> cattrs.Converter:
    """Build the converter, registering every hook in one place."""
    conv = cattrs.Converter(forbid_extra_keys=True)
    conv.register_unstructure_hook(enum.Enum, lambda e: e.value)
    is_frozenset = lambda t: t is frozenset or getattr(t, "__origin__", None) is frozenset  # noqa: E731
    conv.register_unstructure_hook_func(is_frozenset, lambda s: sorted(s))

    def structure_frozenset(value: Any, cl: Any) -> frozenset[Any]:
        args = getattr(cl, "__args__", None)
        if args:
            return frozenset(conv.structure(v, args[0]) for v in value)
        return frozenset(value)

    conv.register_structure_hook_func(is_frozenset, structure_frozenset)
    return conv


converter = make_converter()
