"""The rule-table layer: each table's vocabulary, schema and loader, and the loading machinery.

The TOML files themselves ship one folder up, in ``buddy/rules/``. This layer
imports :mod:`buddy.rules.base` and nothing else of buddy's.
"""

from buddy.rules.tables._catalogue import ToolContract, ToolContractRegistry, ValidationResult
from buddy.rules.tables._conflicts import (
    ConflictRow,
    ConflictTable,
    ConflictType,
    ResolutionStrategy,
)
from buddy.rules.tables._escalation import EscalationRow, EscalationTable, RiskPolicy
from buddy.rules.tables._monitoring import (
    Anomaly,
    AnomalyRule,
    AnomalyTable,
    HealthStatus,
    HealthTable,
)
from buddy.rules.tables._rowtable import (
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
from buddy.rules.tables._signals import ConfidenceRule, SignalRule, SignalTable, SignalType
from buddy.rules.tables._table import Condition, Op, When, compile_when

__all__ = [
    "Anomaly",
    "AnomalyRule",
    "AnomalyTable",
    "Condition",
    "ConfidenceRule",
    "ConflictRow",
    "ConflictTable",
    "ConflictType",
    "EscalationRow",
    "EscalationTable",
    "Field",
    "HealthStatus",
    "HealthTable",
    "Op",
    "ResolutionStrategy",
    "RiskPolicy",
    "RuleRow",
    "RuleTable",
    "Schema",
    "Scope",
    "SignalRule",
    "SignalTable",
    "SignalType",
    "TableFile",
    "Template",
    "ToolContract",
    "ToolContractRegistry",
    "ValidationResult",
    "When",
    "compile_template",
    "compile_when",
    "load_table",
]
