"""The rule-table layer: each table's vocabulary, row types and checks, and the one loader.

Every table file (``escalation.toml``, ``tools.toml``, ``conflicts.toml``,
``anomalies.toml``, ``health.toml``, ``signals.toml``, and the wave tables
``gates.toml``, ``retry.toml``, ``wave_health.toml``, ``wave_anomalies.toml``,
``wave_signals.toml``, and the optimization tables ``optimization_metrics.toml``,
``scheduling_anomalies.toml``, ``optimization_health.toml``,
``optimization_signals.toml``, ``heuristics.toml``) is read by
:func:`load` against its :class:`TableSpec`, built on the one cattrs
converter; problems read ``file:line: row[id].field: message``, all at once.
The TOML files themselves ship one folder up, in ``buddy/rules/``. This layer
imports :mod:`buddy.rules.base` and nothing else of buddy's.
"""

from buddy.rules.tables._catalogue import ToolContract, ToolContractRegistry, ValidationResult
from buddy.rules.tables._conditions import Condition, Op, When, check_when, compile_when
from buddy.rules.tables._conflicts import (
    ConflictRow,
    ConflictTable,
    ConflictThen,
    ConflictType,
    ResolutionStrategy,
)
from buddy.rules.tables._escalation import (
    EscalationRow,
    EscalationTable,
    EscalationThen,
    RiskPolicy,
)
from buddy.rules.tables._loader import Loaded, ShippedTable, TableSpec, load, read_toml
from buddy.rules.tables._monitoring import (
    Anomaly,
    AnomalyRule,
    AnomalyTable,
    HealthStatus,
    HealthTable,
)
from buddy.rules.tables._optimization import (
    COMPARISON_VALUES,
    HeuristicsTable,
    OptimizationHealthTable,
    OptimizationMetricsTable,
    OptimizationSignalTable,
    SchedulingAnomalyTable,
    hedge_update,
)
from buddy.rules.tables._optimizer import OPTIMIZER_WEIGHTS, OptimizerTable
from buddy.rules.tables._signals import (
    ConfidenceRule,
    SignalRule,
    SignalTable,
    SignalType,
    Vocabulary,
)
from buddy.rules.tables._template import Template, compile_template
from buddy.rules.tables._waves import (
    GATE_METRICS,
    RETRY_STRATEGIES,
    SIGNAL_TARGETS,
    WAVE_ANOMALY_SCOPES,
    WAVE_SIGNAL_SCOPES,
    WAVE_WEIGHTS,
    FoundAnomaly,
    FoundSignal,
    GateRule,
    GateTable,
    RetryPolicy,
    RetryTable,
    WaveAnomalyRule,
    WaveAnomalyTable,
    WaveHealthTable,
    WaveSignalRule,
    WaveSignalTable,
    load_metrics,
)

__all__ = [
    "COMPARISON_VALUES",
    "HeuristicsTable",
    "OptimizationHealthTable",
    "OptimizationMetricsTable",
    "OptimizationSignalTable",
    "SchedulingAnomalyTable",
    "hedge_update",
    "OPTIMIZER_WEIGHTS",
    "OptimizerTable",
    "GATE_METRICS",
    "RETRY_STRATEGIES",
    "SIGNAL_TARGETS",
    "WAVE_ANOMALY_SCOPES",
    "WAVE_SIGNAL_SCOPES",
    "WAVE_WEIGHTS",
    "Anomaly",
    "AnomalyRule",
    "AnomalyTable",
    "Condition",
    "ConfidenceRule",
    "ConflictRow",
    "ConflictTable",
    "ConflictThen",
    "ConflictType",
    "EscalationRow",
    "EscalationTable",
    "EscalationThen",
    "FoundAnomaly",
    "FoundSignal",
    "GateRule",
    "GateTable",
    "HealthStatus",
    "HealthTable",
    "Loaded",
    "Op",
    "ResolutionStrategy",
    "RetryPolicy",
    "RetryTable",
    "RiskPolicy",
    "ShippedTable",
    "SignalRule",
    "SignalTable",
    "SignalType",
    "TableSpec",
    "Template",
    "ToolContract",
    "ToolContractRegistry",
    "ValidationResult",
    "Vocabulary",
    "WaveAnomalyRule",
    "WaveAnomalyTable",
    "WaveHealthTable",
    "WaveSignalRule",
    "WaveSignalTable",
    "When",
    "check_when",
    "compile_template",
    "compile_when",
    "load",
    "load_metrics",
    "read_toml",
]
