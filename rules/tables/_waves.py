"""The wave tables (Phase 21): safety gates, retry policies, health weights, anomalies, signals.

Five files of ``buddy/rules/``, each read by :func:`~buddy.rules.tables.load`
against its :class:`~buddy.rules.tables.TableSpec`:

- ``gates.toml``: the safety gates checked before every attempt of a task, in
  file order; the four of Phase 13 are required, with their conditions, in
  their order (a file may add to them, never drop or reorder them)
  (:class:`GateTable`);
- ``retry.toml``: the backoff of each retry strategy, the retry limit, the task
  timeout and which refusals are worth a retry (:class:`RetryTable`);
- ``wave_health.toml``: the weights of the wave health score
  (:class:`WaveHealthTable`; its tiers are ``health.toml``'s, shared with the
  tool monitor);
- ``wave_anomalies.toml``: what the wave monitor flags, per agent, per wave
  and across waves (:class:`WaveAnomalyTable`);
- ``wave_signals.toml``: the learning signals each wave sends to Phases 18, 16
  and 20 (:class:`WaveSignalTable`).

The wave engine (:mod:`buddy.engine.waves`) computes the metrics; these tables
say what they mean. Every name a row may test is in a closed vocabulary below,
with the type of its values.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import attrs

from buddy.rules.base._convert import Problem
from buddy.rules.base._masking import shown
from buddy.rules.base.errors import BuddyError, InputError
from buddy.rules.tables._checks import (
    above,
    at_least,
    fraction,
    in_unit_interval,
    invalid,
    is_row_id,
    one_of,
    raise_all,
    row_id,
    sums_to_one,
)
from buddy.rules.tables._conditions import Condition, Op, When, check_when, compile_when
from buddy.rules.tables._loader import NoKeys, ShippedTable, TableSpec, load
from buddy.rules.tables._signals import ConfidenceRule, Vocabulary, _confidence_problems
from buddy.rules.tables._template import Template, check_template

__all__ = [
    "FORMULAS",
    "GATE_METRICS",
    "REQUIRED_GATES",
    "RETRY_STRATEGIES",
    "SEVERITIES",
    "SIGNAL_TARGETS",
    "WAVE_ANOMALY_SCOPES",
    "WAVE_SIGNAL_SCOPES",
    "WAVE_SIGNAL_TYPES",
    "WAVE_WEIGHTS",
    "FoundAnomaly",
    "FoundSignal",
    "GateRule",
    "GateTable",
    "RetryPolicy",
    "RetryTable",
    "WaveAnomalyRule",
    "WaveAnomalyTable",
    "WaveHealthTable",
    "WaveSignalRule",
    "WaveSignalTable",
    "WaveWeights",
    "load_metrics",
]


# -- safety gates ----------------------------------------------------------------------

#: What a gate may test. The engine gives every name but the last two, which the
#: table derives: ``load_headroom = max_agent_load - agent_load`` and
#: ``attempts_left = max_attempts - attempt`` (a condition compares a metric with
#: a value, never with another metric).
GATE_METRICS: Mapping[str, type] = {
    "task_valid": bool,               # known tool, args an object, rates in [0, 1]
    "agent_permitted": bool,          # the agent holds the tool's permissions
    "agent_available": bool,          # the agent is not OFFLINE
    "agent_load": int,                # tasks queued on the agent this wave
    "max_agent_load": int,            # the configured cap
    "dependencies_met": bool,         # every dependency COMPLETED
    "failed_dependencies": int,       # dependencies FAILED or not COMPLETED
    "tool_dependencies_met": bool,    # every tool the task's tool depends on (by its
                                      # contract) is the tool of a dependency task that
                                      # COMPLETED
    "attempt": int,                   # 1 = the first
    "max_attempts": int,
    "predicted_success_rate": float,
    "blocking_anomalies": int,        # HIGH anomalies standing against this agent
    "locked": bool,                   # the system lock
    "duplicate_action": bool,         # the tool is irreversible and the same action (tool
                                      # + arguments) already succeeded LIVE, in this run
                                      # or an earlier one in the audit trail
    "load_headroom": int,             # derived: max_agent_load - agent_load
    "attempts_left": int,             # derived: max_attempts - attempt
}
_DERIVED: Mapping[str, Callable[[Mapping[str, Any]], Any]] = {
    "load_headroom": lambda m: m["max_agent_load"] - m["agent_load"],
    "attempts_left": lambda m: m["max_attempts"] - m["attempt"],
}
_GATE_GETTERS: Mapping[str, Callable[[Mapping[str, Any]], Any]] = {
    **{m: operator.itemgetter(m) for m in GATE_METRICS if m not in _DERIVED}, **_DERIVED}


@attrs.frozen
class GateThen:
    """What a gate says when it refuses: a template over :data:`GATE_METRICS`."""

    refusal: str


@attrs.frozen
class GateRow:
    """A gate as written: the task passes when every condition of ``when`` holds."""

    id: str = attrs.field(validator=row_id)
    when: When
    then: GateThen
    description: str = ""


@attrs.frozen
class GateRule:
    """A compiled gate: ``holds(metrics)`` is whether the task passes it."""

    id: str
    when: When
    refusal: Template
    description: str
    holds: Callable[[Mapping[str, Any]], bool] = attrs.field(eq=False, repr=False)


def _compile_gate(row: GateRow) -> tuple[GateRule | None, list[Problem]]:
    when, problems = check_when(row.when, GATE_METRICS, at=("when",), nonempty=True)
    refusal, found = check_template(row.then.refusal, GATE_METRICS, at=("then", "refusal"))
    problems += found
    if when is None or refusal is None:
        return None, problems
    return GateRule(row.id, when, refusal, row.description,
                    compile_when(when, _GATE_GETTERS)), []


#: The safety gates of Phase 13: a gates table must have each of these rows, in this
#: order relative to each other, and each condition here in the row's ``when.all``
#: (the same metric, op and value). It may add conditions (to ``all`` or ``any``) and
#: rows of its own, anywhere: gates only tighten.
REQUIRED_GATES: Mapping[str, tuple[Condition, ...]] = {
    "pre_execution_validation": (Condition("task_valid", Op.EQ, True),
                                 Condition("agent_permitted", Op.EQ, True)),
    "resource_verification": (Condition("agent_available", Op.EQ, True),
                              Condition("load_headroom", Op.GE, 0)),
    "dependency_validation": (Condition("dependencies_met", Op.EQ, True),
                              Condition("tool_dependencies_met", Op.EQ, True)),
    "constraint_enforcement": (Condition("attempts_left", Op.GE, 0),
                               Condition("blocking_anomalies", Op.EQ, 0),
                               Condition("duplicate_action", Op.EQ, False)),
}


def _written(cond: Condition) -> str:
    """``cond`` as a gates file writes it: ``{ metric = "m", op = "eq", value = true }``."""
    value = cond.value
    text = ("true" if value else "false") if isinstance(value, bool) else (
        json.dumps(value) if isinstance(value, str) else str(value))
    return f'{{ metric = "{cond.metric}", op = "{cond.op.value}", value = {text} }}'


def _among(cond: Condition, conditions: Iterable[Condition]) -> bool:
    """Whether ``conditions`` hold ``cond``: the same metric, op, value (and type of value)."""
    return any(c == cond and type(c.value) is type(cond.value) for c in conditions)


def _in_order(ranks: Sequence[int]) -> set[int]:
    """The positions of a longest increasing run of ``ranks`` (the earliest such, on a tie)."""
    best: list[tuple[int, int]] = []  # per position: (length ending here, previous position)
    for i, rank in enumerate(ranks):
        length, previous = 1, -1
        for j in range(i):
            if ranks[j] < rank and best[j][0] + 1 > length:
                length, previous = best[j][0] + 1, j
        best.append((length, previous))
    end = max(range(len(ranks)), key=lambda i: best[i][0], default=-1)
    kept: set[int] = set()
    while end >= 0:
        kept.add(end)
        end = best[end][1]
    return kept


def _check_gates(file: NoKeys, rows: Sequence[GateRule]) -> Iterable[Problem]:
    """The required gates (:data:`REQUIRED_GATES`): each present, its conditions in its
    ``when.all``, and in their order; one problem per thing missing or misplaced."""
    order = list(REQUIRED_GATES)
    if not rows:
        yield Problem((), f"needs at least one gate row: the safety gates {', '.join(order)}, "
                          "in this order, are required")
        return
    at = {row.id: i for i, row in enumerate(rows) if row.id in REQUIRED_GATES}
    for rank, gate in enumerate(order):
        if gate in at:
            continue
        after = [at[g] for g in order[:rank] if g in at]
        before = [at[g] for g in order[rank + 1:] if g in at]
        index, where = ((min(before), "before") if before else
                        (max(after), "after") if after else (0, "before"))
        required = " and ".join(_written(c) for c in REQUIRED_GATES[gate])
        yield Problem(("row", index, "id"), f"the required safety gate {gate} is missing "
                      f"(it goes {where} this row; when.all must hold {required})")
    for gate, index in at.items():
        when = rows[index].when
        for cond in REQUIRED_GATES[gate]:
            if _among(cond, when.all):
                continue
            hint = " (it is in when.any, which does not count: a required condition must " \
                   "be in all)" if _among(cond, when.any) else ""
            yield Problem(("row", index, "when", "all"), f"the required condition "
                          f"{_written(cond)} of safety gate {gate} is missing{hint}")
    present = sorted(at.values())
    ranks = [order.index(rows[i].id) for i in present]
    kept = _in_order(ranks)
    for k, index in enumerate(present):
        if k in kept:
            continue
        earlier = [order[ranks[j]] for j in kept if ranks[j] < ranks[k]]
        later = [order[ranks[j]] for j in kept if ranks[j] > ranks[k]]
        bounds = ([f"after {max(earlier, key=order.index)}"] if earlier else []) + (
            [f"before {min(later, key=order.index)}"] if later else [])
        yield Problem(("row", index, "id"), f"safety gate {rows[index].id} is out of order: it "
                      f"must come {' and '.join(bounds)} (the safety gates run in the order "
                      f"{', '.join(order)}; other rows may come between them)")


GATES: TableSpec[NoKeys, GateRow, GateRule] = TableSpec(
    "gates", GateRow, compile=_compile_gate, check=_check_gates)


@attrs.frozen
class GateTable(ShippedTable):
    """The safety gates (``rules/gates.toml``), checked in file order.

    Gates only tighten: a gates table (the shipped one, or a user's given with
    ``--rules DIR``) must hold the four safety gates of Phase 13
    (:data:`REQUIRED_GATES`), each with its required conditions in its
    ``when.all`` (the same metric, op and value; one in ``when.any`` does not
    count), and in their shipped order relative to each other. It may add
    conditions to them and rows of its own (extra gates, anywhere); loading a
    table that drops a gate or a condition, or reorders the gates, raises
    :class:`~buddy.rules.base.errors.RuleTableError`, one problem each.

    >>> table = GateTable.default()
    >>> [g.id for g in table.gates]  # doctest: +NORMALIZE_WHITESPACE
    ['pre_execution_validation', 'resource_verification', 'dependency_validation',
     'constraint_enforcement']
    >>> metrics = {"task_valid": True, "agent_permitted": True, "agent_available": True,
    ...            "agent_load": 2, "max_agent_load": 100, "dependencies_met": True,
    ...            "failed_dependencies": 0, "tool_dependencies_met": True, "attempt": 1,
    ...            "max_attempts": 4, "predicted_success_rate": 0.9, "blocking_anomalies": 0,
    ...            "locked": False, "duplicate_action": True}
    >>> gate = table.check(metrics)
    >>> gate.id, table.refusal(gate, metrics)  # doctest: +NORMALIZE_WHITESPACE
    ('constraint_enforcement', 'constraint violated (attempt 1 of 4, 0 blocking anomaly(ies))
     or the same irreversible action already ran LIVE (duplicate action: True)')
    """

    FILE: ClassVar[str] = "gates.toml"

    gates: tuple[GateRule, ...]
    source: str = "<memory>"
    digest: str = ""

    @classmethod
    def from_toml(cls, path: Path | str | None = None, *, text: str | None = None,
                  source: str | None = None) -> GateTable:
        """Load and validate; every problem is reported at once, naming file, line and field.

        Raises :class:`~buddy.rules.base.errors.RuleTableError`.
        """
        loaded = load(GATES, path, text=text, source=source)
        return cls(loaded.rows, source=loaded.source, digest=loaded.digest)

    def check(self, metrics: Mapping[str, Any]) -> GateRule | None:
        """The first gate (file order) the task does not pass, or None when it passes all.

        Raises
        ------
        InputError
            When ``metrics`` lacks a metric a gate tests.
        """
        try:
            for gate in self.gates:
                if not gate.holds(metrics):
                    return gate
        except KeyError as exc:
            raise InputError(f"gate metrics: missing {exc.args[0]!r}") from None
        return None

    def refusal(self, rule: GateRule, metrics: Mapping[str, Any]) -> str:
        """``rule``'s refusal message on ``metrics`` (the derived metrics added)."""
        values = {**metrics, **{name: get(metrics) for name, get in _DERIVED.items()}}
        return rule.refusal.render(values)


# -- retry policies --------------------------------------------------------------------

#: The retry strategies, and the formula each must use.
RETRY_STRATEGIES: Mapping[str, str] = {
    "EXPONENTIAL_BACKOFF": "exponential", "LINEAR_BACKOFF": "linear", "NO_RETRY": "none"}
#: Each formula, and the keys of ``then`` it takes (all required).
FORMULAS: Mapping[str, tuple[str, ...]] = {
    "exponential": ("base_s", "factor", "cap_s"), "linear": ("base_s", "cap_s"), "none": ()}
#: Delays are rounded to the microsecond (so that linear 0.1 * 3 is 0.3).
_DELAY_DIGITS = 6


@attrs.frozen
class RetryPolicy:
    """How long to wait before each retry: ``formula`` with its keys (seconds).

    ``exponential``: ``min(cap_s, base_s * factor ** (n - 1))`` before retry n;
    ``linear``: ``min(cap_s, base_s * n)``; ``none``: no retry at all.

    >>> RetryPolicy("exponential", base_s=0.1, factor=2.0, cap_s=30.0).delay(5)
    1.6
    >>> RetryPolicy("linear", base_s=0.1, factor=2.0, cap_s=30.0)
    Traceback (most recent call last):
    ...
    buddy.rules.base.errors.RuleTableError: factor: unknown key for formula 'linear'
    """

    formula: str = attrs.field(validator=one_of(*FORMULAS))
    base_s: float | None = attrs.field(default=None, validator=above(0))
    factor: float | None = attrs.field(default=None,
                                       validator=attrs.validators.optional(at_least(1)))
    cap_s: float | None = attrs.field(default=None, validator=above(0))

    def __attrs_post_init__(self) -> None:
        raise_all(list(self._errors()))

    def _errors(self) -> Iterable[BuddyError]:
        takes = FORMULAS[self.formula]
        for key in ("base_s", "factor", "cap_s"):
            value = getattr(self, key)
            given = value is not None
            if given and not math.isfinite(value):
                yield invalid(key, f"must be a finite number (got {shown(value)})")
            elif given and key not in takes:
                yield invalid(key, f"unknown key for formula {shown(self.formula)}")
            elif not given and key in takes:
                yield invalid(key, f"is required for formula {shown(self.formula)}")
        if (self.base_s is not None and self.cap_s is not None
                and math.isfinite(self.base_s) and self.cap_s < self.base_s):
            yield invalid("cap_s", f"must be >= base_s ({self.base_s:g}) (got {self.cap_s:g})")

    def delay(self, retry: int) -> float:
        """The delay in seconds before retry ``retry`` (1 = the first retry), never raising
        for a large ``retry``. Formula ``none`` has no delay: it makes no retries."""
        if isinstance(retry, bool) or not isinstance(retry, int) or retry < 1:
            raise InputError(f"retry: must be a whole number >= 1 (got {shown(retry)})")
        base, cap = self.base_s or 0.0, self.cap_s or 0.0
        try:
            if self.formula == "exponential":
                raw = base * (self.factor or 1.0) ** (retry - 1)
            elif self.formula == "linear":
                raw = base * retry
            else:
                raise InputError("formula 'none' makes no retries: there is no delay")
        except OverflowError:  # factor ** (n - 1), or n as a float, past the largest float
            raw = math.inf
        return round(min(cap, raw), _DELAY_DIGITS)


@attrs.frozen
class RetryRow:
    """A strategy as written: its id is the strategy's name."""

    id: str = attrs.field(validator=one_of(*RETRY_STRATEGIES))
    then: RetryPolicy
    description: str = ""


def _rule_ids(instance: Any, attribute: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    for i, item in enumerate(value):
        if not is_row_id(item):
            raise invalid(f"{attribute.name}.{i}", f"must be a rule id: 1-64 letters, digits or "
                          f"_ . : - (got {shown(item)})")


@attrs.frozen
class RetryFile:
    """The top level of ``retry.toml`` besides its rows."""

    max_retries: int = attrs.field(validator=at_least(0))
    timeout_s: float = attrs.field(validator=above(0))
    retry_on_refusal: tuple[str, ...] = attrs.field(validator=_rule_ids)


def _compile_retry(row: RetryRow) -> tuple[RetryRow | None, list[Problem]]:
    expected = RETRY_STRATEGIES[row.id]
    if row.then.formula != expected:
        return None, [Problem(("then", "formula"), f"{row.id} takes formula {shown(expected)} "
                              f"(got {shown(row.then.formula)})")]
    return row, []


def _check_retry(file: RetryFile, rows: Sequence[RetryRow]) -> Iterable[Problem]:
    missing = [s for s in RETRY_STRATEGIES if s not in {row.id for row in rows}]
    if missing:
        yield Problem((), f"needs a row for each strategy: missing {', '.join(missing)}")


RETRY: TableSpec[RetryFile, RetryRow, RetryRow] = TableSpec(
    "retry", RetryRow, compile=_compile_retry, file=RetryFile, check=_check_retry)


@attrs.frozen
class RetryTable(ShippedTable):
    """The retry policies (``rules/retry.toml``).

    >>> table = RetryTable.default()
    >>> table.sequence("EXPONENTIAL_BACKOFF", 5), table.sequence("LINEAR_BACKOFF", 3)
    ([0.1, 0.2, 0.4, 0.8, 1.6], [0.1, 0.2, 0.3])
    >>> table.max_retries_for("LINEAR_BACKOFF"), table.max_retries_for("NO_RETRY", 5)
    (3, 0)
    >>> table.delay("FIBONACCI", 1)
    Traceback (most recent call last):
    ...
    buddy.rules.base.errors.InputError: unknown retry strategy 'FIBONACCI' (known: ...)
    """

    FILE: ClassVar[str] = "retry.toml"

    policies: Mapping[str, RetryPolicy]
    max_retries: int = 3
    timeout_s: float = 30.0
    retry_on_refusal: frozenset[str] = frozenset()
    source: str = "<memory>"
    digest: str = ""

    @classmethod
    def from_toml(cls, path: Path | str | None = None, *, text: str | None = None,
                  source: str | None = None) -> RetryTable:
        """Load and validate; every problem is reported at once, naming file, line and field.

        Raises :class:`~buddy.rules.base.errors.RuleTableError`.
        """
        loaded = load(RETRY, path, text=text, source=source)
        file = loaded.file
        return cls({row.id: row.then for row in loaded.rows}, max_retries=file.max_retries,
                   timeout_s=file.timeout_s, retry_on_refusal=frozenset(file.retry_on_refusal),
                   source=loaded.source, digest=loaded.digest)

    def policy(self, strategy: str) -> RetryPolicy:
        """The policy of ``strategy``; an unknown name raises InputError naming the known."""
        try:
            return self.policies[strategy]
        except (KeyError, TypeError):
            raise InputError(f"unknown retry strategy {shown(strategy)} (known: "
                             f"{', '.join(sorted(self.policies))})") from None

    def delay(self, strategy: str, retry: int) -> float:
        """Seconds to wait before retry ``retry`` (1 = the first retry) of ``strategy``."""
        return self.policy(strategy).delay(retry)

    def max_retries_for(self, strategy: str, requested: int | None = None) -> int:
        """Retries after the first attempt: ``requested``, or the file's ``max_retries``;
        0 for a strategy of formula ``none`` whatever is asked."""
        if self.policy(strategy).formula == "none":
            return 0
        if requested is None:
            return self.max_retries
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 0:
            raise InputError(f"max retries: must be a whole number >= 0 "
                             f"(got {shown(requested)})")
        return requested

    def sequence(self, strategy: str, n: int) -> list[float]:
        """The first ``n`` delays of ``strategy`` (an empty list for ``n = 0``)."""
        policy = self.policy(strategy)
        return [policy.delay(retry) for retry in range(1, n + 1)]


# -- wave health -----------------------------------------------------------------------

#: The wave health terms, each a fraction in [0, 1], in the order they are summed.
WAVE_WEIGHTS = ("success_rate", "availability", "accuracy", "load_balance")


@attrs.frozen
class WaveWeights:
    """The weight of each wave health term, each in [0, 1], together summing to 1."""

    success_rate: float = attrs.field(validator=in_unit_interval())
    availability: float = attrs.field(validator=in_unit_interval())
    accuracy: float = attrs.field(validator=in_unit_interval())
    load_balance: float = attrs.field(validator=in_unit_interval())

    def __attrs_post_init__(self) -> None:
        sums_to_one(self)


@attrs.frozen
class WaveHealthFile:
    """The top level of ``wave_health.toml``: its weights (it has no rows)."""

    weights: WaveWeights


def _no_tiers(row: dict[str, Any]) -> tuple[None, list[Problem]]:
    return None, [Problem((), "wave_health.toml takes no rows: the tiers are health.toml's, "
                          "shared with the tool monitor")]


WAVE_HEALTH: TableSpec[WaveHealthFile, dict[str, Any], None] = TableSpec(
    "wave_health", dict, compile=_no_tiers, file=WaveHealthFile)


@attrs.frozen
class WaveHealthTable(ShippedTable):
    """The wave health weights (``rules/wave_health.toml``); the tier of a score is
    ``HealthTable.tier`` (``rules/health.toml``).

    >>> WaveHealthTable.default().score({"success_rate": 0.9, "availability": 1.0,
    ...                                  "accuracy": 0.95, "load_balance": 0.8})
    91.0
    """

    FILE: ClassVar[str] = "wave_health.toml"

    weights: Mapping[str, float]
    source: str = "<memory>"
    digest: str = ""

    @classmethod
    def from_toml(cls, path: Path | str | None = None, *, text: str | None = None,
                  source: str | None = None) -> WaveHealthTable:
        """Load and validate; every problem is reported at once, naming file, line and field.

        Raises :class:`~buddy.rules.base.errors.RuleTableError`.
        """
        loaded = load(WAVE_HEALTH, path, text=text, source=source)
        return cls(attrs.asdict(loaded.file.weights), source=loaded.source,
                   digest=loaded.digest)

    def score(self, metrics: Mapping[str, float]) -> float:
        """``100 * sum(weight * term)`` over :data:`WAVE_WEIGHTS`, each term clamped to
        [0, 1] (NaN reads 0), rounded to 6 decimals."""
        w = self.weights
        return round(100.0 * math.fsum(w[k] * fraction(metrics[k]) for k in WAVE_WEIGHTS), 6)


# -- wave anomalies --------------------------------------------------------------------

#: The severities of a wave anomaly, worst first.
SEVERITIES = ("HIGH", "MEDIUM", "LOW")

_AGENT_METRICS: Mapping[str, type] = {
    "tasks": int, "completed": int, "failed": int, "success_rate": float, "timeouts": int,
    "gate_refusals": int, "retries": int, "avg_latency": float, "mean_predicted": float,
    "prediction_error": float, "load": int}
_WAVE_METRICS: Mapping[str, type] = {
    "tasks": int, "completed": int, "failed": int, "success_rate": float,
    "availability": float, "accuracy": float, "prediction_error": float,
    "load_balance": float, "load_imbalance_ratio": float, "load_spread": float,
    "confidence": float, "agents": int, "available_agents": int, "timeouts": int,
    "gate_refusals": int, "retries": int, "health_score": float}
_TREND_METRICS: Mapping[str, type] = {
    "tasks": int, "success_rate": float, "previous_success_rate": float,
    "success_drop": float, "health_score": float, "previous_health_score": float,
    "health_drop": float, "confidence": float, "previous_confidence": float,
    "confidence_change": float}

#: What a wave anomaly row of each scope may test. Rates are fractions (0-1),
#: latencies seconds, health scores 0-100.
#:
#: ``agent`` (per agent, per wave): ``prediction_error`` is
#: ``|mean_predicted - success_rate|``, ``load`` the tasks assigned to it.
#: ``wave``: ``accuracy`` is ``1 - prediction_error``, ``confidence`` the mean
#: predicted success; over the agents' loads (see :func:`load_metrics`)
#: ``load_balance`` is ``min / max``, ``load_spread`` ``(max - min) / max`` and
#: ``load_imbalance_ratio`` ``max / min``, read as ``max / 1`` when ``min`` is 0.
#: ``trend`` (a wave against the one before): ``success_drop`` is
#: ``previous_success_rate - success_rate`` (negative: a rise), ``health_drop``
#: likewise, ``confidence_change`` ``confidence - previous_confidence``.
WAVE_ANOMALY_SCOPES: Mapping[str, Mapping[str, type]] = {
    "agent": _AGENT_METRICS, "wave": _WAVE_METRICS, "trend": _TREND_METRICS}


def load_metrics(loads: Iterable[int]) -> dict[str, float]:
    """``load_balance``, ``load_spread`` and ``load_imbalance_ratio`` of the agents' loads.

    All finite: with no load at all the wave is balanced (1, 0, 1); a ``min`` of 0
    reads as 1 in the ratio, so that it is the largest load itself.

    >>> load_metrics([4, 2, 2]), load_metrics([3, 0])["load_imbalance_ratio"]
    ({'load_balance': 0.5, 'load_spread': 0.5, 'load_imbalance_ratio': 2.0}, 3.0)
    >>> load_metrics([])
    {'load_balance': 1.0, 'load_spread': 0.0, 'load_imbalance_ratio': 1.0}
    """
    values = list(loads)
    high, low = (max(values), min(values)) if values else (0, 0)
    if high <= 0:
        return {"load_balance": 1.0, "load_spread": 0.0, "load_imbalance_ratio": 1.0}
    return {"load_balance": low / high, "load_spread": (high - low) / high,
            "load_imbalance_ratio": high / max(low, 1)}


@attrs.frozen
class FoundAnomaly:
    """One anomaly found: which row, how bad, where, and the value that tripped it."""

    type: str
    severity: str
    scope: str
    metric: str
    value: float
    threshold: float
    message: str
    recommended_action: str
    agent_id: str | None = None


@attrs.frozen
class WaveAnomalyThen:
    """What a wave anomaly row reports: a severity and message templates."""

    severity: str = attrs.field(validator=one_of(*SEVERITIES))
    message: str
    recommended_action: str


@attrs.frozen
class WaveAnomalyRow:
    """A wave anomaly row as written: evaluated per ``scope`` once ``tasks >= min_tasks``."""

    id: str = attrs.field(validator=row_id)
    scope: str = attrs.field(validator=one_of(*WAVE_ANOMALY_SCOPES))
    min_tasks: int = attrs.field(validator=at_least(0))
    when: When
    then: WaveAnomalyThen
    description: str = ""


@attrs.frozen
class WaveAnomalyRule:
    """A compiled wave anomaly row; its metric and threshold are its first condition's."""

    id: str
    scope: str
    min_tasks: int
    severity: str
    message: Template
    recommended_action: Template
    when: When
    holds: Callable[[Mapping[str, Any]], bool] = attrs.field(eq=False, repr=False)

    def check(self, metrics: Mapping[str, Any], *, wave: int,
              agent_id: str | None = None) -> FoundAnomaly | None:
        """The anomaly this row finds on ``metrics`` (its scope's) in ``wave``, or None."""
        if metrics["tasks"] < self.min_tasks or not self.holds(metrics):
            return None
        if self.scope == "agent" and not isinstance(agent_id, str):
            raise InputError(f"anomaly {self.id}: an agent row needs agent_id "
                             f"(got {shown(agent_id)})")
        values = {**metrics, "wave": wave, "agent_id": agent_id}
        cond = (*self.when.all, *self.when.any)[0]
        return FoundAnomaly(self.id, self.severity, self.scope, cond.metric,
                            metrics[cond.metric], float(cond.value),
                            self.message.render(values), self.recommended_action.render(values),
                            agent_id)


def _compile_wave_anomaly(row: WaveAnomalyRow) -> tuple[WaveAnomalyRule | None, list[Problem]]:
    metrics = WAVE_ANOMALY_SCOPES[row.scope]
    names: dict[str, type] = {**metrics, "wave": int}
    if row.scope == "agent":
        names["agent_id"] = str
    when, problems = check_when(row.when, metrics, at=("when",), nonempty=True)
    message, found = check_template(row.then.message, names, at=("then", "message"))
    problems += found
    action, found = check_template(row.then.recommended_action, names,
                                   at=("then", "recommended_action"))
    problems += found
    if when is None or message is None or action is None:
        return None, problems
    getters = {m: operator.itemgetter(m) for m in metrics}
    return WaveAnomalyRule(row.id, row.scope, row.min_tasks, row.then.severity, message,
                           action, when, compile_when(when, getters)), []


WAVE_ANOMALIES: TableSpec[NoKeys, WaveAnomalyRow, WaveAnomalyRule] = TableSpec(
    "wave_anomalies", WaveAnomalyRow, compile=_compile_wave_anomaly)


def _known_scope(scope: str, scopes: Iterable[str]) -> None:
    if scope not in scopes:
        raise InputError(f"unknown scope {shown(scope)} (known: {', '.join(scopes)})")


@attrs.frozen
class WaveAnomalyTable(ShippedTable):
    """The wave anomaly rows (``rules/wave_anomalies.toml``), compiled at load.

    >>> table = WaveAnomalyTable.default()
    >>> [(r.id, r.scope, r.severity) for r in table.rules][:2]
    [('agent_failure', 'agent', 'HIGH'), ('coordination_issue', 'wave', 'MEDIUM')]
    """

    FILE: ClassVar[str] = "wave_anomalies.toml"

    rules: tuple[WaveAnomalyRule, ...]
    source: str = "<memory>"
    digest: str = ""
    _by_scope: Mapping[str, tuple[WaveAnomalyRule, ...]] = attrs.field(
        init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_by_scope", {
            scope: tuple(r for r in self.rules if r.scope == scope)
            for scope in WAVE_ANOMALY_SCOPES})

    @classmethod
    def from_toml(cls, path: Path | str | None = None, *, text: str | None = None,
                  source: str | None = None) -> WaveAnomalyTable:
        """Load and validate; every problem is reported at once, naming file, line and field.

        Raises :class:`~buddy.rules.base.errors.RuleTableError`.
        """
        loaded = load(WAVE_ANOMALIES, path, text=text, source=source)
        return cls(loaded.rows, source=loaded.source, digest=loaded.digest)

    def evaluate(self, scope: str, metrics: Mapping[str, Any], *, wave: int,
                 agent_id: str | None = None) -> list[FoundAnomaly]:
        """The anomalies the rows of ``scope`` find on ``metrics``, in file order."""
        rules = self._by_scope.get(scope)
        if rules is None:
            _known_scope(scope, WAVE_ANOMALY_SCOPES)
            return []
        found = []
        for rule in rules:
            anomaly = rule.check(metrics, wave=wave, agent_id=agent_id)
            if anomaly is not None:
                found.append(anomaly)
        return found


# -- wave signals ----------------------------------------------------------------------

#: The target (a name of the file's ``[targets]``) each signal type is sent to.
SIGNAL_TARGETS: Mapping[str, str] = {
    "agent_performance": "coordination", "multi_agent_coordination": "coordination",
    "heuristic_feedback": "heuristics", "prediction_validation": "prediction"}
#: The signal types, in the order of the sources.
WAVE_SIGNAL_TYPES = tuple(SIGNAL_TARGETS)

#: What a wave signal row of each scope may test (``metrics``) and name in its
#: templates (the metrics and ``names``): the anomaly metrics of the scope and
#: ``confidence_score = 1 - prediction_error`` (clamped to [0, 1]); a wave's
#: ``patterns`` (patterns identified, listed in ``pattern_list``) and
#: ``retry_recoveries`` (tasks that succeeded after a retry).
WAVE_SIGNAL_SCOPES: Mapping[str, Vocabulary] = {
    "agent": Vocabulary(metrics={**_AGENT_METRICS, "confidence_score": float},
                        names={"agent_id": str, "wave": int}),
    "wave": Vocabulary(metrics={**_WAVE_METRICS, "confidence_score": float, "patterns": int,
                                "retry_recoveries": int},
                       names={"pattern_list": str, "wave": int}),
}


def _phases(instance: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if value < 1:
        raise invalid(attribute.name, f"must be a phase number >= 1 (got {shown(value)})")


@attrs.frozen
class WaveTargets:
    """The phase each signal target is: ``[targets]`` of ``wave_signals.toml``."""

    coordination: int = attrs.field(validator=_phases)
    heuristics: int = attrs.field(validator=_phases)
    prediction: int = attrs.field(validator=_phases)


@attrs.frozen
class WaveSignalFile:
    """The top level of ``wave_signals.toml`` besides its rows."""

    targets: WaveTargets


@attrs.frozen
class WaveSignalThen:
    """What a wave signal row emits: its target, insight and action templates, confidence."""

    target: str
    insight: str
    recommended_action: str
    confidence: ConfidenceRule


@attrs.frozen
class WaveSignalRow:
    """A wave signal row as written: emit ``signal`` for each item of ``scope`` ``when``
    holds on (``when = {}``: every item)."""

    id: str = attrs.field(validator=row_id)
    signal: str = attrs.field(validator=one_of(*WAVE_SIGNAL_TYPES))
    scope: str = attrs.field(validator=one_of(*WAVE_SIGNAL_SCOPES))
    when: When
    then: WaveSignalThen
    description: str = ""


@attrs.frozen
class WaveSignalRule:
    """A compiled wave signal row (its target's phase is the table's ``targets``)."""

    id: str
    signal: str
    scope: str
    target: str
    insight: Template
    recommended_action: Template
    confidence: ConfidenceRule
    when: When
    holds: Callable[[Mapping[str, Any]], bool] = attrs.field(eq=False, repr=False)


@attrs.frozen
class FoundSignal:
    """One learning signal a row emitted."""

    signal_type: str
    target: str
    target_phase: int
    rule: str
    insight: str
    recommended_action: str
    confidence: float
    scope: str


def _compile_wave_signal(row: WaveSignalRow) -> tuple[WaveSignalRule | None, list[Problem]]:
    scope = WAVE_SIGNAL_SCOPES[row.scope]
    names = {**scope.metrics, **scope.names}
    when, problems = check_when(row.when, scope.metrics, at=("when",))
    expected = SIGNAL_TARGETS[row.signal]
    if row.then.target != expected:
        problems.append(Problem(("then", "target"), f"{row.signal} goes to {shown(expected)} "
                                f"(got {shown(row.then.target)})"))
    insight, found = check_template(row.then.insight, names, at=("then", "insight"))
    problems += found
    action, found = check_template(row.then.recommended_action, names,
                                   at=("then", "recommended_action"))
    problems += found
    rule = row.then.confidence
    if rule.method == "sample" and rule.metric is None:
        rule = attrs.evolve(rule, metric="tasks")
    confidence, found = _confidence_problems(rule, scope.metrics)
    problems += [Problem(("then", "confidence", *p.path), p.message) for p in found]
    if problems or when is None or insight is None or action is None or confidence is None:
        return None, problems
    getters = {m: operator.itemgetter(m) for m in scope.metrics}
    return WaveSignalRule(row.id, row.signal, row.scope, expected, insight, action, confidence,
                          when, compile_when(when, getters)), []


WAVE_SIGNALS: TableSpec[WaveSignalFile, WaveSignalRow, WaveSignalRule] = TableSpec(
    "wave_signals", WaveSignalRow, compile=_compile_wave_signal, file=WaveSignalFile,
    required={"when": "is required (use `when = {}` for a row that always holds)"})


@attrs.frozen
class WaveSignalTable(ShippedTable):
    """The wave signal rows (``rules/wave_signals.toml``) and the phase of each target.

    >>> table = WaveSignalTable.default()
    >>> dict(table.targets)
    {'coordination': 18, 'heuristics': 16, 'prediction': 20}
    >>> sorted({r.signal for r in table.rules}) == sorted(WAVE_SIGNAL_TYPES)
    True
    """

    FILE: ClassVar[str] = "wave_signals.toml"

    rules: tuple[WaveSignalRule, ...]
    targets: Mapping[str, int]
    source: str = "<memory>"
    digest: str = ""
    _by_scope: Mapping[str, tuple[tuple[WaveSignalRule, int], ...]] = attrs.field(
        init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_by_scope", {
            scope: tuple((r, self.targets[r.target]) for r in self.rules if r.scope == scope)
            for scope in WAVE_SIGNAL_SCOPES})

    @classmethod
    def from_toml(cls, path: Path | str | None = None, *, text: str | None = None,
                  source: str | None = None) -> WaveSignalTable:
        """Load and validate; every problem is reported at once, naming file, line and field.

        Raises :class:`~buddy.rules.base.errors.RuleTableError`.
        """
        loaded = load(WAVE_SIGNALS, path, text=text, source=source)
        return cls(loaded.rows, attrs.asdict(loaded.file.targets), source=loaded.source,
                   digest=loaded.digest)

    def evaluate(self, scope: str, metrics: Mapping[str, Any],
                 names: Mapping[str, Any] | None = None) -> list[FoundSignal]:
        """The signals the rows of ``scope`` emit on ``metrics``, in file order; the
        templates read ``metrics`` and ``names`` (``agent_id``, ``wave``, ``pattern_list``)."""
        rules = self._by_scope.get(scope)
        if rules is None:
            _known_scope(scope, WAVE_SIGNAL_SCOPES)
            return []
        values = {**metrics, **names} if names else metrics
        found = []
        for rule, phase in rules:
            if rule.holds(metrics):
                found.append(FoundSignal(rule.signal, rule.target, phase, rule.id,
                                         rule.insight.render(values),
                                         rule.recommended_action.render(values),
                                         rule.confidence.compute(metrics), scope))
        return found
