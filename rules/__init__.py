"""Declarative rule tables (TOML) and their loaders.

The shipped tables live beside this file: ``escalation.toml`` (thresholds per
risk) and ``tools.toml`` (the standard tool catalogue).
"""

from buddy.rules._escalation import EscalationRow, EscalationTable, RiskPolicy
from buddy.rules._table import Condition, Op, When, compile_when

__all__ = [
    "Condition",
    "EscalationRow",
    "EscalationTable",
    "Op",
    "RiskPolicy",
    "When",
    "compile_when",
]
