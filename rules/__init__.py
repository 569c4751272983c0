"""Declarative rule tables (TOML) and their loaders.

The shipped tables live beside this file: ``escalation.toml`` (thresholds per
risk), ``conflicts.toml`` (conflict resolution strategies), ``anomalies.toml``,
``health.toml`` and ``signals.toml`` (the monitor and the feedback loop), and
``tools.toml`` (the standard tool catalogue).
"""

from buddy.rules._escalation import EscalationRow, EscalationTable, RiskPolicy
from buddy.rules._rowtable import (
    Field,
    RuleRow,
    RuleTable,
    Schema,
    Scope,
    TableFile,
    Template,
    compile_template,
    load_table,
)
from buddy.rules._table import Condition, Op, When, compile_when

__all__ = [
    "Condition",
    "EscalationRow",
    "EscalationTable",
    "Field",
    "Op",
    "RiskPolicy",
    "RuleRow",
    "RuleTable",
    "Schema",
    "Scope",
    "TableFile",
    "Template",
    "When",
    "compile_template",
    "compile_when",
    "load_table",
]
