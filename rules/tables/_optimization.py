"""The optimization tables (Phase 19): metrics, anomalies, health, signals, learned weights.

Five files of ``buddy/rules/``, each read by :func:`~buddy.rules.tables.load`
against its :class:`~buddy.rules.tables.TableSpec`, in the shared format of
the wave tables (:mod:`buddy.rules.tables._waves`):

- ``optimization_metrics.toml``: each metric's source, unit, target and
  thresholds, and the status rule (:class:`OptimizationMetricsTable`);
- ``scheduling_anomalies.toml``: what the optimization monitor flags, per wave
  and per agent (:class:`SchedulingAnomalyTable`);
- ``optimization_health.toml``: the weights of the four component scores
  (:class:`OptimizationHealthTable`; its tiers are ``health.toml``'s);
- ``optimization_signals.toml``: the learning signals of each wave and the
  feedback events (:class:`OptimizationSignalTable`);
- ``heuristics.toml``: the learned heuristic weights' start and the Hedge
  update's learning rate and bounds (:class:`HeuristicsTable`,
  :func:`hedge_update`).

The optimization monitor and feedback loop (:mod:`buddy.engine.waves`) derive
the values from each wave's ``ScheduleComparison``; these tables say what they
mean. Every name a row may test is in a closed vocabulary below.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import attrs

from buddy.rules.base._convert import Problem
from buddy.rules.base._masking import shown
from buddy.rules.base.errors import InputError
from buddy.rules.tables._checks import (
    at_least,
    between,
    fraction,
    in_unit_interval,
    invalid,
    one_of,
    row_id,
    sums_to_one,
)
from buddy.rules.tables._conditions import Condition, When, check_when, compile_when
from buddy.rules.tables._loader import NoKeys, ShippedTable, TableSpec, load
from buddy.rules.tables._optimizer import OPTIMIZER_WEIGHTS, OptimizerWeights
from buddy.rules.tables._signals import ConfidenceRule, Vocabulary, _confidence_problems
from buddy.rules.tables._template import Template, check_template
from buddy.rules.tables._waves import WaveTargets

__all__ = [
    "AGENT_VALUES",
    "COMPARISON_VALUES",
    "FEEDBACK_TYPES",
    "OPTIMIZATION_METRICS",
    "OPT_ANOMALY_SCOPES",
    "OPT_HEALTH_WEIGHTS",
    "OPT_SEVERITIES",
    "OPT_SIGNAL_TARGETS",
    "SIGNAL_NAMES",
    "SIGNAL_VALUES",
    "STATUSES",
    "FeedbackRule",
    "FoundOptAnomaly",
    "FoundOptSignal",
    "HeuristicsTable",
    "MetricRule",
    "OptimizationHealthTable",
    "OptimizationMetricsTable",
    "OptimizationSignalTable",
    "SchedulingAnomalyRule",
    "SchedulingAnomalyTable",
    "hedge_update",
]

# -- vocabularies ------------------------------------------------------------------------

#: The values derived from one wave's ``ScheduleComparison`` (rates are fractions):
#: its own fields, ``success_error = |planned_success_rate - actual_success_rate|``,
#: ``throughput_efficiency = min(1, actual_throughput / planned_throughput)`` (0 when
#: planned is 0) and ``confidence_error = |planned_confidence_delta -
#: actual_confidence_delta|``. The engine rounds each to 9 decimals.
COMPARISON_VALUES: Mapping[str, type] = {
    "tasks": int, "accuracy_score": float, "planned_success_rate": float,
    "actual_success_rate": float, "success_error": float, "planned_throughput": float,
    "actual_throughput": float, "throughput_efficiency": float,
    "planned_confidence_delta": float, "actual_confidence_delta": float,
    "confidence_error": float, "schedule_adherence": float, "agent_utilization": float,
    "availability": float, "retry_rate": float, "max_load_ratio": float,
    "planned_objective": float}

#: The values of one agent in a wave (``ScheduleComparison.agents``): ``tasks`` it ran,
#: ``planned_tasks``, ``expected_success`` (mean p(t, a) of its planned tasks),
#: ``actual_success`` (completed / tasks run), ``success_shortfall = expected_success -
#: actual_success`` and ``success_error = |success_shortfall|``.
AGENT_VALUES: Mapping[str, type] = {
    "tasks": int, "planned_tasks": int, "expected_success": float, "actual_success": float,
    "success_shortfall": float, "success_error": float}

#: The five metrics every metrics table has (the health score and feedback read them).
OPTIMIZATION_METRICS = ("schedule_accuracy", "throughput_efficiency", "schedule_adherence",
                        "agent_utilization", "success_rate")
#: A metric's status, best first.
STATUSES = ("normal", "warning", "critical")


def _finite(instance: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not math.isfinite(value):
        raise invalid(attribute.name, f"must be a finite number (got {shown(value)})")


# -- metrics -----------------------------------------------------------------------------

@attrs.frozen
class MetricRow:
    """A metric as written: its value is ``source``, judged against its thresholds."""

    id: str = attrs.field(validator=row_id)
    source: str = attrs.field(validator=one_of(*(n for n, k in COMPARISON_VALUES.items()
                                                 if k is float)))
    unit: str
    target_value: float = attrs.field(validator=_finite)
    threshold_min: float = attrs.field(validator=_finite)
    threshold_max: float = attrs.field(validator=_finite)
    description: str = ""

    def __attrs_post_init__(self) -> None:
        if not self.unit:
            raise invalid("unit", "must not be empty (e.g. \"ratio\")")
        if self.threshold_min > self.target_value:
            raise invalid("threshold_min", f"must be <= target_value ({self.target_value:g}) "
                          f"(got {self.threshold_min:g})")
        if self.target_value > self.threshold_max:
            raise invalid("threshold_max", f"must be >= target_value ({self.target_value:g}) "
                          f"(got {self.threshold_max:g})")


@attrs.frozen
class MetricRule:
    """A metric: its name, source, unit, target and thresholds; :meth:`status` judges a value.

    >>> rule = MetricRule("schedule_accuracy", "accuracy_score", "ratio", 0.90, 0.85, 1.0)
    >>> rule.status(0.90), rule.status(0.85), rule.status(0.8499), rule.status(1.01)
    ('normal', 'warning', 'critical', 'critical')
    """

    name: str
    source: str
    unit: str
    target_value: float
    threshold_min: float
    threshold_max: float

    def status(self, value: float) -> str:
        """``normal`` in [target, max], ``warning`` in [min, target), else ``critical``
        (NaN too)."""
        if self.target_value <= value <= self.threshold_max:
            return "normal"
        if self.threshold_min <= value < self.target_value:
            return "warning"
        return "critical"


def _compile_metric(row: MetricRow) -> tuple[MetricRule | None, list[Problem]]:
    return MetricRule(row.id, row.source, row.unit, row.target_value, row.threshold_min,
                      row.threshold_max), []


def _check_metrics(file: NoKeys, rows: Sequence[MetricRule]) -> Iterable[Problem]:
    missing = [m for m in OPTIMIZATION_METRICS if m not in {r.name for r in rows}]
    if missing:
        yield Problem((), f"needs a row for each of the metrics {', '.join(OPTIMIZATION_METRICS)}"
                          f": missing {', '.join(missing)}")


OPT_METRICS: TableSpec[NoKeys, MetricRow, MetricRule] = TableSpec(
    "optimization_metrics", MetricRow, compile=_compile_metric, check=_check_metrics)


@attrs.frozen
class OptimizationMetricsTable(ShippedTable):
    """The optimization metrics (``rules/optimization_metrics.toml``), in file order.

    >>> table = OptimizationMetricsTable.default()
    >>> [(m.name, m.source, m.target_value) for m in table.metrics][:2]
    [('schedule_accuracy', 'accuracy_score', 0.9), ('throughput_efficiency', \
'throughput_efficiency', 0.95)]
    >>> table.evaluate({"accuracy_score": 0.87, "throughput_efficiency": 0.96,
    ...                 "schedule_adherence": 0.7, "agent_utilization": 0.8,
    ...                 "actual_success_rate": 0.9})  # doctest: +NORMALIZE_WHITESPACE
    [('schedule_accuracy', 0.87, 'warning'), ('throughput_efficiency', 0.96, 'normal'),
     ('schedule_adherence', 0.7, 'critical'), ('agent_utilization', 0.8, 'normal'),
     ('success_rate', 0.9, 'normal')]
    """

    FILE: ClassVar[str] = "optimization_metrics.toml"

    metrics: tuple[MetricRule, ...]
    source: str = "<memory>"
    digest: str = ""

    @classmethod
    def from_toml(cls, path: Path | str | None = None, *, text: str | None = None,
                  source: str | None = None) -> OptimizationMetricsTable:
        """Load and validate; every problem is reported at once, naming file, line and field.

        Raises :class:`~buddy.rules.base.errors.RuleTableError`.
        """
        loaded = load(OPT_METRICS, path, text=text, source=source)
        return cls(loaded.rows, source=loaded.source, digest=loaded.digest)

    def evaluate(self, values: Mapping[str, float]) -> list[tuple[str, float, str]]:
        """``(name, value, status)`` of each metric on ``values`` (COMPARISON_VALUES)."""
        try:
            return [(m.name, float(values[m.source]), m.status(float(values[m.source])))
                    for m in self.metrics]
        except KeyError as exc:
            raise InputError(f"metric values: missing {exc.args[0]!r}") from None


# -- anomalies ---------------------------------------------------------------------------

#: The severities of a scheduling anomaly, worst first (lower-case, as 002 writes them).
OPT_SEVERITIES = ("high", "medium", "low")
#: What an anomaly row of each scope may test.
OPT_ANOMALY_SCOPES: Mapping[str, Mapping[str, type]] = {
    "wave": COMPARISON_VALUES, "agent": AGENT_VALUES}


@attrs.frozen
class FoundOptAnomaly:
    """One anomaly found: which row, how bad, the agents it names, the value that tripped it."""

    type: str
    severity: str
    description: str
    recommendation: str
    affected_agents: tuple[str, ...]
    metric: str
    value: float
    threshold: float


@attrs.frozen
class AnomalyThen:
    """What an anomaly row reports; ``affected_agents`` picks the agents a wave row names."""

    severity: str = attrs.field(validator=one_of(*OPT_SEVERITIES))
    description: str
    recommendation: str
    affected_agents: Condition | None = None


@attrs.frozen
class AnomalyRow:
    """An anomaly row as written: evaluated per ``scope`` once ``tasks >= min_tasks``."""

    id: str = attrs.field(validator=row_id)
    scope: str = attrs.field(validator=one_of(*OPT_ANOMALY_SCOPES))
    min_tasks: int = attrs.field(validator=at_least(0))
    when: When
    then: AnomalyThen
    description: str = ""


@attrs.frozen
class SchedulingAnomalyRule:
    """A compiled anomaly row; its metric and threshold are its first condition's."""

    id: str
    scope: str
    min_tasks: int
    severity: str
    description: Template
    recommendation: Template
    when: When
    affected: Condition | None
    holds: Callable[[Mapping[str, Any]], bool] = attrs.field(eq=False, repr=False)
    picks: Callable[[Mapping[str, Any]], bool] | None = attrs.field(eq=False, repr=False)

    def check(self, values: Mapping[str, Any], *, wave: int,
              agents: Mapping[str, Mapping[str, Any]], agent_id: str | None = None,
              ) -> FoundOptAnomaly | None:
        """The anomaly this row finds on ``values`` (its scope's) in ``wave``, or None.

        ``agents``: every agent's values (:data:`AGENT_VALUES`), for ``affected_agents``.
        """
        if values["tasks"] < self.min_tasks or not self.holds(values):
            return None
        rendered = {**values, "wave": wave, "agent_id": agent_id}
        if self.scope == "agent":
            if not isinstance(agent_id, str):
                raise InputError(f"anomaly {self.id}: an agent row needs agent_id "
                                 f"(got {shown(agent_id)})")
            affected: tuple[str, ...] = (agent_id,)
        else:
            picks = self.picks
            affected = tuple(a for a, v in agents.items() if picks(v)) if picks else ()
        cond = (*self.when.all, *self.when.any)[0]
        return FoundOptAnomaly(self.id, self.severity, self.description.render(rendered),
                               self.recommendation.render(rendered), affected, cond.metric,
                               float(values[cond.metric]), float(cond.value))


def _compile_anomaly(row: AnomalyRow) -> tuple[SchedulingAnomalyRule | None, list[Problem]]:
    metrics = OPT_ANOMALY_SCOPES[row.scope]
    names: dict[str, type] = {**metrics, "wave": int}
    if row.scope == "agent":
        names["agent_id"] = str
    when, problems = check_when(row.when, metrics, at=("when",), nonempty=True)
    text, found = check_template(row.then.description, names, at=("then", "description"))
    problems += found
    action, found = check_template(row.then.recommendation, names,
                                   at=("then", "recommendation"))
    problems += found
    affected, picks = row.then.affected_agents, None
    if affected is not None:
        if row.scope == "agent":
            problems.append(Problem(("then", "affected_agents"), "only a wave row takes it "
                                    "(an agent row names its own agent)"))
        else:
            picked, found = check_when(When(all=(affected,)), AGENT_VALUES, at=())
            problems += [Problem(("then", "affected_agents", *p.path[2:]), p.message)
                         for p in found]
            if picked is not None:
                affected = picked.all[0]
                picks = compile_when(picked, {m: operator.itemgetter(m) for m in AGENT_VALUES})
    if problems or when is None or text is None or action is None:
        return None, problems
    getters = {m: operator.itemgetter(m) for m in metrics}
    return SchedulingAnomalyRule(row.id, row.scope, row.min_tasks, row.then.severity, text,
                                 action, when, affected, compile_when(when, getters),
                                 picks), []


OPT_ANOMALIES: TableSpec[NoKeys, AnomalyRow, SchedulingAnomalyRule] = TableSpec(
    "scheduling_anomalies", AnomalyRow, compile=_compile_anomaly)


@attrs.frozen
class SchedulingAnomalyTable(ShippedTable):
    """The scheduling anomaly rows (``rules/scheduling_anomalies.toml``), compiled at load.

    >>> table = SchedulingAnomalyTable.default()
    >>> [(r.id, r.scope, r.severity) for r in table.rules]  # doctest: +NORMALIZE_WHITESPACE
    [('prediction_error', 'wave', 'medium'), ('throughput_degradation', 'wave', 'medium'),
     ('schedule_deviation', 'wave', 'medium'), ('agent_overload', 'wave', 'low'),
     ('agent_underperformance', 'agent', 'high')]
    """

    FILE: ClassVar[str] = "scheduling_anomalies.toml"

    rules: tuple[SchedulingAnomalyRule, ...]
    source: str = "<memory>"
    digest: str = ""

    @classmethod
    def from_toml(cls, path: Path | str | None = None, *, text: str | None = None,
                  source: str | None = None) -> SchedulingAnomalyTable:
        """Load and validate; every problem is reported at once, naming file, line and field.

        Raises :class:`~buddy.rules.base.errors.RuleTableError`.
        """
        loaded = load(OPT_ANOMALIES, path, text=text, source=source)
        return cls(loaded.rows, source=loaded.source, digest=loaded.digest)

    def evaluate(self, values: Mapping[str, Any], agents: Mapping[str, Mapping[str, Any]],
                 *, wave: int) -> list[FoundOptAnomaly]:
        """Every anomaly found, in file order; an agent row once per agent (``agents``
        order). ``values`` are the wave's (:data:`COMPARISON_VALUES`), ``agents`` each
        agent's (:data:`AGENT_VALUES`)."""
        found = []
        try:
            for rule in self.rules:
                if rule.scope == "wave":
                    one = rule.check(values, wave=wave, agents=agents)
                    found += [one] if one is not None else []
                    continue
                for agent, v in agents.items():
                    one = rule.check(v, wave=wave, agents=agents, agent_id=agent)
                    found += [one] if one is not None else []
        except KeyError as exc:
            raise InputError(f"anomaly values: missing {exc.args[0]!r}") from None
        return found


# -- health ------------------------------------------------------------------------------

#: The component scores of the optimization health, in the order they are summed.
OPT_HEALTH_WEIGHTS = ("optimization_accuracy", "schedule_adherence", "throughput_efficiency",
                      "system_stability")


@attrs.frozen
class OptHealthWeights:
    """The weight of each component score, each in [0, 1], together summing to 1."""

    optimization_accuracy: float = attrs.field(validator=in_unit_interval())
    schedule_adherence: float = attrs.field(validator=in_unit_interval())
    throughput_efficiency: float = attrs.field(validator=in_unit_interval())
    system_stability: float = attrs.field(validator=in_unit_interval())

    def __attrs_post_init__(self) -> None:
        sums_to_one(self)


@attrs.frozen
class OptHealthFile:
    """The top level of ``optimization_health.toml``: its weights (it has no rows)."""

    weights: OptHealthWeights


def _no_health_rows(row: dict[str, Any]) -> tuple[None, list[Problem]]:
    return None, [Problem((), "optimization_health.toml takes no rows: the tiers are "
                          "health.toml's, shared with the other monitors")]


OPT_HEALTH: TableSpec[OptHealthFile, dict[str, Any], None] = TableSpec(
    "optimization_health", dict, compile=_no_health_rows, file=OptHealthFile)


@attrs.frozen
class OptimizationHealthTable(ShippedTable):
    """The optimization health weights (``rules/optimization_health.toml``); the tier of a
    score is ``HealthTable.tier`` (``rules/health.toml``).

    >>> table = OptimizationHealthTable.default()
    >>> parts = table.components({"accuracy_score": 0.9, "schedule_adherence": 0.8,
    ...                           "throughput_efficiency": 1.0, "actual_success_rate": 0.9,
    ...                           "availability": 1.0, "retry_rate": 0.5})
    >>> parts, table.score(parts)  # doctest: +NORMALIZE_WHITESPACE
    ({'optimization_accuracy': 90.0, 'schedule_adherence': 80.0,
      'throughput_efficiency': 100.0, 'system_stability': 45.0}, 81.0)
    """

    FILE: ClassVar[str] = "optimization_health.toml"

    weights: Mapping[str, float]
    source: str = "<memory>"
    digest: str = ""

    @classmethod
    def from_toml(cls, path: Path | str | None = None, *, text: str | None = None,
                  source: str | None = None) -> OptimizationHealthTable:
        """Load and validate; every problem is reported at once, naming file, line and field.

        Raises :class:`~buddy.rules.base.errors.RuleTableError`.
        """
        loaded = load(OPT_HEALTH, path, text=text, source=source)
        return cls(attrs.asdict(loaded.file.weights), source=loaded.source,
                   digest=loaded.digest)

    @staticmethod
    def components(values: Mapping[str, float]) -> dict[str, float]:
        """The four component scores (0-100, rounded to 6 decimals) of ``values``
        (:data:`COMPARISON_VALUES`); each fraction clamped to [0, 1], NaN reading 0."""
        stability = (fraction(values["actual_success_rate"]) * fraction(values["availability"])
                     * (1.0 - fraction(values["retry_rate"])))
        raw = {"optimization_accuracy": fraction(values["accuracy_score"]),
               "schedule_adherence": fraction(values["schedule_adherence"]),
               "throughput_efficiency": fraction(values["throughput_efficiency"]),
               "system_stability": stability}
        return {k: round(100.0 * v, 6) for k, v in raw.items()}

    def score(self, components: Mapping[str, float]) -> float:
        """``sum(weight * component)`` over :data:`OPT_HEALTH_WEIGHTS`, rounded to 6 decimals
        (so that exactly 75 is not read as 74.99999999999999)."""
        w = self.weights
        return round(math.fsum(w[k] * components[k] for k in OPT_HEALTH_WEIGHTS), 6)


# -- signals and feedback ----------------------------------------------------------------

#: The target (a name of the file's ``[targets]``) each signal type is sent to.
OPT_SIGNAL_TARGETS: Mapping[str, str] = {
    "strategy_validation": "coordination", "heuristic_update": "heuristics",
    "schedule_adjustment": "coordination", "prediction_recalibration": "prediction",
    "agent_reallocation": "coordination"}
#: What a signal row may test: the wave's comparison values and the feedback loop's own.
SIGNAL_VALUES: Mapping[str, type] = {
    **COMPARISON_VALUES, "success_vs_first": float, "max_weight_change": float,
    "underperforming_agents": int, "anomalies": int}
#: The other names a signal row's (or a feedback event's) templates may use.
SIGNAL_NAMES: Mapping[str, type] = {
    "wave": int, "strategy": str, "rising_heuristic": str, "falling_heuristic": str,
    "weight_list": str, "agent_list": str}
#: The feedback events every signals table describes, one of each per wave.
FEEDBACK_TYPES = ("strategy_validation", "schedule_accuracy", "throughput", "adherence")
_VOCABULARY = Vocabulary(metrics=SIGNAL_VALUES, names=SIGNAL_NAMES)
_TEMPLATE_NAMES: Mapping[str, type] = {**SIGNAL_VALUES, **SIGNAL_NAMES}
_DEFAULT_CONFIDENCE = ConfidenceRule("metric", metric="accuracy_score")


@attrs.frozen
class FeedbackText:
    """What a feedback event says in one status: description and recommendation templates."""

    description: str
    recommendation: str


def _metric_names(instance: Any, attribute: attrs.Attribute[Any], value: tuple[str, ...],
                  ) -> None:
    if not value:
        raise invalid(attribute.name, "must name at least one metric")
    for i, name in enumerate(value):
        if name not in OPTIMIZATION_METRICS:
            raise invalid(f"{attribute.name}.{i}", f"must be one of "
                          f"{', '.join(OPTIMIZATION_METRICS)} (got {shown(name)})")


@attrs.frozen
class FeedbackEntry:
    """A feedback event type as written: the metrics it reads, its text per status."""

    metrics: tuple[str, ...] = attrs.field(validator=_metric_names)
    normal: FeedbackText
    warning: FeedbackText
    critical: FeedbackText


@attrs.frozen
class FeedbackRule:
    """A compiled feedback event type: its status is the worst of its metrics'."""

    type: str
    metrics: tuple[str, ...]
    texts: Mapping[str, tuple[Template, Template]]


@attrs.frozen
class OptSignalFile:
    """The top level of ``optimization_signals.toml`` besides its rows."""

    targets: WaveTargets
    feedback: Mapping[str, FeedbackEntry]


@attrs.frozen
class OptSignalThen:
    """What a signal row emits: its target, description and recommendation, confidence."""

    target: str
    description: str
    recommendation: str
    confidence: ConfidenceRule = _DEFAULT_CONFIDENCE


@attrs.frozen
class OptSignalRow:
    """A signal row as written: emit ``signal`` in each wave ``when`` holds on."""

    id: str = attrs.field(validator=row_id)
    signal: str = attrs.field(validator=one_of(*OPT_SIGNAL_TARGETS))
    when: When
    then: OptSignalThen
    note: str = ""


@attrs.frozen
class OptSignalRule:
    """A compiled signal row."""

    id: str
    signal: str
    target: str
    description: Template
    recommendation: Template
    confidence: ConfidenceRule
    when: When
    holds: Callable[[Mapping[str, Any]], bool] = attrs.field(eq=False, repr=False)


@attrs.frozen
class FoundOptSignal:
    """One learning signal a row emitted."""

    signal_type: str
    target: str
    target_phase: int
    rule: str
    description: str
    recommendation: str
    confidence: float


def _compile_signal(row: OptSignalRow) -> tuple[OptSignalRule | None, list[Problem]]:
    when, problems = check_when(row.when, SIGNAL_VALUES, at=("when",))
    expected = OPT_SIGNAL_TARGETS[row.signal]
    if row.then.target != expected:
        problems.append(Problem(("then", "target"), f"{row.signal} goes to {shown(expected)} "
                                f"(got {shown(row.then.target)})"))
    text, found = check_template(row.then.description, _TEMPLATE_NAMES,
                                 at=("then", "description"))
    problems += found
    action, found = check_template(row.then.recommendation, _TEMPLATE_NAMES,
                                   at=("then", "recommendation"))
    problems += found
    rule = row.then.confidence
    if rule.method == "sample" and rule.metric is None:
        rule = attrs.evolve(rule, metric="tasks")
    confidence, found = _confidence_problems(rule, _VOCABULARY.metrics)
    problems += [Problem(("then", "confidence", *p.path), p.message) for p in found]
    if problems or when is None or text is None or action is None or confidence is None:
        return None, problems
    getters = {m: operator.itemgetter(m) for m in SIGNAL_VALUES}
    return OptSignalRule(row.id, row.signal, expected, text, action, confidence, when,
                         compile_when(when, getters)), []


def _feedback_rules(feedback: Mapping[str, FeedbackEntry],
                    ) -> tuple[dict[str, FeedbackRule], list[Problem]]:
    rules: dict[str, FeedbackRule] = {}
    problems: list[Problem] = []
    for name, entry in feedback.items():
        texts: dict[str, tuple[Template, Template]] = {}
        for status in STATUSES:
            text: FeedbackText = getattr(entry, status)
            at = ("feedback", name, status)
            description, found = check_template(text.description, _TEMPLATE_NAMES,
                                                at=(*at, "description"))
            problems += found
            recommendation, found = check_template(text.recommendation, _TEMPLATE_NAMES,
                                                   at=(*at, "recommendation"))
            problems += found
            if description is not None and recommendation is not None:
                texts[status] = (description, recommendation)
        rules[name] = FeedbackRule(name, entry.metrics, texts)
    missing = [t for t in FEEDBACK_TYPES if t not in feedback]
    if missing:
        problems.append(Problem(("feedback",), f"needs an entry for each feedback type "
                                f"{', '.join(FEEDBACK_TYPES)}: missing {', '.join(missing)}"))
    return rules, problems


def _check_signals(file: OptSignalFile, rows: Sequence[OptSignalRule]) -> Iterable[Problem]:
    return _feedback_rules(file.feedback)[1]


OPT_SIGNALS: TableSpec[OptSignalFile, OptSignalRow, OptSignalRule] = TableSpec(
    "optimization_signals", OptSignalRow, compile=_compile_signal, file=OptSignalFile,
    check=_check_signals,
    required={"when": "is required (use `when = {}` for a row that always holds)"})


@attrs.frozen
class OptimizationSignalTable(ShippedTable):
    """The signal rows and feedback events (``rules/optimization_signals.toml``), and the
    phase of each target.

    >>> table = OptimizationSignalTable.default()
    >>> [r.signal for r in table.rules]  # doctest: +NORMALIZE_WHITESPACE
    ['strategy_validation', 'heuristic_update', 'schedule_adjustment',
     'prediction_recalibration', 'agent_reallocation']
    >>> list(table.feedback), table.feedback["strategy_validation"].metrics
    (['strategy_validation', 'schedule_accuracy', 'throughput', 'adherence'], \
('schedule_accuracy', 'success_rate'))
    """

    FILE: ClassVar[str] = "optimization_signals.toml"

    rules: tuple[OptSignalRule, ...]
    targets: Mapping[str, int]
    feedback: Mapping[str, FeedbackRule]
    source: str = "<memory>"
    digest: str = ""

    @classmethod
    def from_toml(cls, path: Path | str | None = None, *, text: str | None = None,
                  source: str | None = None) -> OptimizationSignalTable:
        """Load and validate; every problem is reported at once, naming file, line and field.

        Raises :class:`~buddy.rules.base.errors.RuleTableError`.
        """
        loaded = load(OPT_SIGNALS, path, text=text, source=source)
        feedback, _ = _feedback_rules(loaded.file.feedback)  # checked at load
        return cls(loaded.rows, attrs.asdict(loaded.file.targets), feedback,
                   source=loaded.source, digest=loaded.digest)

    def evaluate(self, values: Mapping[str, Any], names: Mapping[str, Any],
                 ) -> list[FoundOptSignal]:
        """The signals the rows emit on ``values`` (:data:`SIGNAL_VALUES`), in file order;
        the templates read ``values`` and ``names`` (:data:`SIGNAL_NAMES`)."""
        rendered = {**values, **names}
        found = []
        try:
            for rule in self.rules:
                if rule.holds(values):
                    found.append(FoundOptSignal(
                        rule.signal, rule.target, self.targets[rule.target], rule.id,
                        rule.description.render(rendered), rule.recommendation.render(rendered),
                        rule.confidence.compute(values)))
        except KeyError as exc:
            raise InputError(f"signal values: missing {exc.args[0]!r}") from None
        return found


# -- learned heuristic weights -----------------------------------------------------------

@attrs.frozen
class Learning:
    """``[learning]`` of ``heuristics.toml``: the Hedge learning rate and the weight bounds."""

    learning_rate: float = attrs.field(validator=[_finite, between(0.0, 100.0)])
    min_weight: float = attrs.field(validator=in_unit_interval())
    max_weight: float = attrs.field(validator=in_unit_interval(open_low=True))

    def __attrs_post_init__(self) -> None:
        if self.learning_rate <= 0.0:
            raise invalid("learning_rate", f"must be > 0 (got {shown(self.learning_rate)})")
        n = len(OPTIMIZER_WEIGHTS)
        if not self.min_weight < self.max_weight:
            raise invalid("max_weight", f"must be > min_weight ({self.min_weight:g}) "
                          f"(got {self.max_weight:g})")
        if self.min_weight * n > 1.0 + 1e-12:
            raise invalid("min_weight", f"must be <= 1/{n} so that {n} weights can sum to 1 "
                          f"(got {self.min_weight:g})")
        if self.max_weight * n < 1.0 - 1e-12:
            raise invalid("max_weight", f"must be >= 1/{n} so that {n} weights can sum to 1 "
                          f"(got {self.max_weight:g})")


@attrs.frozen
class HeuristicsFile:
    """The top level of ``heuristics.toml`` (it has no rows)."""

    weights: OptimizerWeights
    learning: Learning


def _no_heuristic_rows(row: dict[str, Any]) -> tuple[None, list[Problem]]:
    return None, [Problem((), "heuristics.toml takes no rows: only [weights] and [learning]")]


def _check_heuristics(file: HeuristicsFile, rows: Sequence[None]) -> Iterable[Problem]:
    low, high = file.learning.min_weight, file.learning.max_weight
    for name in OPTIMIZER_WEIGHTS:
        value = getattr(file.weights, name)
        if not low <= value <= high:
            yield Problem(("weights", name), f"must be within [min_weight, max_weight] = "
                          f"[{low:g}, {high:g}] (got {value:g})")


HEURISTICS: TableSpec[HeuristicsFile, dict[str, Any], None] = TableSpec(
    "heuristics", dict, compile=_no_heuristic_rows, file=HeuristicsFile,
    check=_check_heuristics)


def hedge_update(weights: Mapping[str, float], errors: Mapping[str, float], *,
                 learning_rate: float, min_weight: float, max_weight: float,
                 ) -> dict[str, float]:
    """One Hedge (multiplicative weights) step, kept within bounds.

    Each weight becomes ``w_i * exp(-learning_rate * e_i)`` (``e_i`` clamped to
    [0, 1], NaN read as 1); then the weights are renormalised and clamped to
    ``[min_weight, max_weight]`` until stable: the result is ``clamp(c * w_i,
    min_weight, max_weight)`` with the one ``c`` that makes them sum to 1 (weights
    strictly inside the bounds keep their proportions). Deterministic; every
    result is within the bounds and sums to 1 within 1e-9.

    Parameters
    ----------
    weights : mapping of str to float
        The current weights, each > 0 (a sum other than 1 is renormalised).
    errors : mapping of str to float
        Each weight's prediction error, in [0, 1]; a name missing reads 0.
    learning_rate, min_weight, max_weight : float
        ``eta > 0`` and the bounds, ``n * min_weight <= 1 <= n * max_weight``.

    Returns
    -------
    dict of str to float
        The new weights, in the order of ``weights``.

    Examples
    --------
    >>> w = hedge_update({"success": 0.5, "throughput": 0.25, "confidence": 0.25},
    ...                  {"success": 0.0, "throughput": 1.0, "confidence": 0.0},
    ...                  learning_rate=0.5, min_weight=0.05, max_weight=0.9)
    >>> {k: round(v, 6) for k, v in w.items()}
    {'success': 0.55455, 'throughput': 0.168176, 'confidence': 0.277275}
    >>> hedge_update({"a": 0.5, "b": 0.5}, {"a": 1.0}, learning_rate=50.0,
    ...              min_weight=0.1, max_weight=0.9)
    {'a': 0.1, 'b': 0.9}
    """
    names = list(weights)
    raw = []
    for name in names:
        e = errors.get(name, 0.0)
        e = 1.0 if e != e else min(1.0, max(0.0, e))
        raw.append(weights[name] * math.exp(-learning_rate * e))
    return dict(zip(names, _bounded(raw, min_weight, max_weight), strict=True))


def _bounded(raw: Sequence[float], low: float, high: float) -> list[float]:
    """``clamp(c * raw_i, low, high)`` with the ``c`` making the sum 1 (each ``raw_i > 0``).

    ``f(c) = sum(clamp(c * raw_i))`` is continuous, non-decreasing and linear between
    the breakpoints ``low / raw_i`` and ``high / raw_i``, from ``f(0) = n * low <= 1``
    to ``n * high >= 1`` past the last: find the first breakpoint where ``f >= 1`` and
    solve the line before it.
    """
    raw = [max(r, 1e-300) for r in raw]  # exp(-eta * e) > 0; a guard against underflow

    def f(c: float) -> float:
        return math.fsum(min(high, max(low, c * r)) for r in raw)

    before, at_before = 0.0, f(0.0)
    c = before
    for point in sorted({p for r in raw for p in (low / r, high / r)}):
        at_point = f(point)
        if at_point >= 1.0:
            rise = at_point - at_before
            c = before + (1.0 - at_before) * (point - before) / rise if rise > 0.0 else before
            break
        before, at_before = point, at_point
    return [min(high, max(low, c * r)) for r in raw]


@attrs.frozen
class HeuristicsTable(ShippedTable):
    """The learned heuristic weights' start and update rule (``rules/heuristics.toml``).

    >>> table = HeuristicsTable.default()
    >>> dict(table.weights), table.learning_rate, table.min_weight, table.max_weight
    ({'success': 0.5, 'throughput': 0.25, 'confidence': 0.25}, 0.5, 0.05, 0.9)
    """

    FILE: ClassVar[str] = "heuristics.toml"

    weights: Mapping[str, float]
    learning_rate: float = 0.5
    min_weight: float = 0.05
    max_weight: float = 0.90
    source: str = "<memory>"
    digest: str = ""

    @classmethod
    def from_toml(cls, path: Path | str | None = None, *, text: str | None = None,
                  source: str | None = None) -> HeuristicsTable:
        """Load and validate; every problem is reported at once, naming file, line and field.

        Raises :class:`~buddy.rules.base.errors.RuleTableError`.
        """
        loaded = load(HEURISTICS, path, text=text, source=source)
        learning = loaded.file.learning
        return cls(attrs.asdict(loaded.file.weights), learning.learning_rate,
                   learning.min_weight, learning.max_weight, source=loaded.source,
                   digest=loaded.digest)

    def update(self, weights: Mapping[str, float], errors: Mapping[str, float],
               ) -> dict[str, float]:
        """:func:`hedge_update` with this table's learning rate and bounds."""
        return hedge_update(weights, errors, learning_rate=self.learning_rate,
                            min_weight=self.min_weight, max_weight=self.max_weight)
