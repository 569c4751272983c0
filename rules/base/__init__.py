"""The base layer: values, errors and helpers every other layer may import.

It imports nothing of buddy's own. ``errors`` is the error tree,
``ExecutionMode``/``RiskLevel`` the vocabulary of modes and risks,
``converter`` the one cattrs converter, ``Masker``/``shown`` keep secrets out
of logs and messages, ``write_atomic``/``split_lines`` write and read files
safely, ``args_digest`` fingerprints a call's arguments.
"""

from buddy.rules.base import errors
from buddy.rules.base._canonical import args_digest
from buddy.rules.base._convert import converter, make_converter
from buddy.rules.base._files import split_lines, write_atomic
from buddy.rules.base._masking import (
    DEFAULT_SECRET_PATTERN,
    Masker,
    described,
    mask_text,
    shown,
)
from buddy.rules.base._values import (
    ExecutionMode,
    RiskLevel,
    plain_confidence,
    valid_confidence,
)

__all__ = [
    "DEFAULT_SECRET_PATTERN",
    "ExecutionMode",
    "Masker",
    "RiskLevel",
    "args_digest",
    "converter",
    "described",
    "errors",
    "make_converter",
    "mask_text",
    "plain_confidence",
    "shown",
    "split_lines",
    "valid_confidence",
    "write_atomic",
]
