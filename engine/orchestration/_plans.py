"""Execution plans: what agents intend to call, and what happened when they did.

A :class:`ToolExecutionPlan` is one agent team's intent (the Phase 24
``ToolExecutionPlan``): calls assigned to agents, an execution order and a
confidence per call. The orchestrator flattens plans into :class:`PlannedCall`
values, the unit the conflict resolver, the controller, the monitor and the
feedback loop all speak; each run of one becomes an :class:`ExecutionOutcome`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import orjson

from buddy.rules.base._values import ExecutionMode
from buddy.rules.base.errors import PlanError
from buddy.rules.tables._catalogue import ToolContractRegistry

__all__ = ["ExecutionOutcome", "PlanLoad", "PlannedCall", "ToolExecutionPlan", "load_plans",
           "plan_to_json"]


@attrs.frozen
class PlannedCall:
    """One intended tool call.

    ``slot`` is the call's step in its plan's execution order: calls of any
    plans in the same slot run at the same time, so that is where RESOURCE and
    RATE_LIMIT conflicts live. ``resource`` names an exclusive resource the call
    holds while it runs (e.g. ``"crm:contact:42"``); None holds nothing.
    ``estimated_s`` is the planner's duration estimate, checked against the
    tool's timeout. ``approval`` is a one-shot approval answer, if the plan
    carries one.
    """

    id: str
    plan_id: str
    agent: str
    tool: str
    confidence: float
    slot: int = 0
    args: Mapping[str, Any] = attrs.field(factory=dict, eq=False)
    resource: str | None = None
    estimated_s: float | None = None
    approval: bool | None = None


@attrs.frozen
class ToolExecutionPlan:
    """A plan: which agent calls which tool, in which order, how confident.

    ``execution_order`` lists call ids; ``calls`` holds them. ``upstream_plan_id``
    and ``validation_id`` are the Phase 21 plan and Phase 22 validation it came
    from, kept for correlation.
    """

    plan_id: str
    calls: tuple[PlannedCall, ...]
    execution_order: tuple[str, ...]
    upstream_plan_id: str | None = None
    validation_id: str | None = None

    @property
    def agent_assignments(self) -> dict[str, str]:
        """call id -> agent."""
        return {c.id: c.agent for c in self.calls}

    @property
    def confidence_scores(self) -> dict[str, float]:
        """call id -> confidence."""
        return {c.id: c.confidence for c in self.calls}


_optional_mode = attrs.validators.optional(attrs.validators.instance_of(ExecutionMode))


@attrs.frozen
class ExecutionOutcome:
    """What one planned call came to; the monitor and the feedback loop read these.

    ``decided`` is the mode the policy decided (None when the call never reached
    a decision, e.g. aborted by conflict resolution, or was refused); ``mode``
    the mode its handler ran in (None when nothing ran). Both are
    :class:`~buddy.rules.base.ExecutionMode` values, never their names.
    ``approval`` is ``"granted"``, ``"denied"``, ``"pending"`` (waited, none
    given) or None (not needed).
    ``conflicts`` lists the conflict types the call was part of; ``resolution``
    the strategy applied to it, if any. ``rolled_back`` says the call's work was
    undone because a later LIVE call of its plan failed.
    """

    call_id: str
    plan_id: str
    agent: str
    tool: str
    risk: str
    confidence: float
    decided: ExecutionMode | None = attrs.field(validator=_optional_mode)
    mode: ExecutionMode | None = attrs.field(validator=_optional_mode)
    ok: bool
    duration_ms: float = 0.0
    error: str | None = None
    rolled_back: bool = False
    approval: str | None = None
    conflicts: tuple[str, ...] = ()
    resolution: str | None = None
    ts: float = 0.0


# -- loading plans from JSON / JSON Lines ---------------------------------------

_STEP_KEYS = {"id", "agent", "tool", "confidence", "args", "resource", "estimated_s", "approval"}
_PLAN_KEYS = {"plan_id", "steps", "execution_order", "upstream_plan_id", "validation_id",
              "phase21_plan_id", "phase22_validation_id"}


@attrs.frozen
class PlanLoad:
    """Plans read from a file: the valid ones, and one line per rejected plan."""

    plans: tuple[ToolExecutionPlan, ...]
    errors: tuple[str, ...]


def load_plans(path: str | os.PathLike[str], registry: ToolContractRegistry | None = None,
               ) -> PlanLoad:
    """Read plans from ``path``: a JSON list (or ``{"plans": [...]}``) or JSON Lines.

    Each plan::

        {"plan_id": "p1", "steps": [{"id": "s1", "agent": "a", "tool": "form_fill",
          "confidence": 0.8, "args": {...}, "resource": "crm:42", "estimated_s": 3,
          "approval": null}], "execution_order": ["s1"]}

    ``execution_order`` (step ids) defaults to the order of ``steps``; a step's
    slot is its position in it. A plan with a problem is rejected with one line
    naming the file, line (JSON Lines), plan and field; the others load.
    Raises :class:`PlanError` only when the file itself cannot be read.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlanError(f"{p}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError(f"{p}: cannot read: {exc}") from None
    raw: list[tuple[int, str, str, Any]] = []  # (order, where, index, the plan as read)
    errors: list[tuple[int, str]] = []
    try:
        data = orjson.loads(text)  # one JSON document: a list of plans, or {"plans": [...]}
    except orjson.JSONDecodeError:
        data = None
    if data is not None:
        items = data.get("plans", data) if isinstance(data, dict) else data
        items = [items] if isinstance(items, dict) else items
        if not isinstance(items, list):
            raise PlanError(f"{p}: must hold plans: a list, {{\"plans\": [...]}} or JSON Lines")
        raw = [(i, f"{p}: ", str(i), item) for i, item in enumerate(items)]
    else:  # JSON Lines: one plan per line
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                raw.append((n, f"{p}:{n}: ", str(len(raw)), orjson.loads(line)))
            except orjson.JSONDecodeError as exc:
                errors.append((n, f"{p}:{n}: invalid JSON: {exc}"))
    plans: list[ToolExecutionPlan] = []
    seen: set[str] = set()
    for order, where, index, item in raw:
        plan, error = _read_plan(where, index, item, registry)
        if plan is not None and plan.plan_id in seen:
            error = f"{where}plan[{plan.plan_id}].plan_id: duplicate plan id"
        if error is not None:
            errors.append((order, error))
        else:
            assert plan is not None
            seen.add(plan.plan_id)
            plans.append(plan)
    return PlanLoad(tuple(plans), tuple(e for _, e in sorted(errors)))


def _read_plan(where: str, index: str, item: Any, registry: ToolContractRegistry | None,
               ) -> tuple[ToolExecutionPlan | None, str | None]:
    if not isinstance(item, dict):
        return None, f"{where}plan[{index}]: must be an object (got {type(item).__name__})"
    plan_id = item.get("plan_id")
    if not isinstance(plan_id, str) or not plan_id:
        return None, (f"{where}plan[{index}].plan_id: must be a non-empty string "
                      f"(got {plan_id!r})")
    at = f"{where}plan[{plan_id}]"
    extra = sorted(set(item) - _PLAN_KEYS)
    if extra:
        return None, f"{at}.{extra[0]}: unknown key"
    steps = item.get("steps")
    if not isinstance(steps, list) or not steps:
        return None, f"{at}.steps: must be a non-empty list of steps"
    parsed: dict[str, dict[str, Any]] = {}
    for i, step in enumerate(steps):
        error = _check_step(f"{at}.steps[{i}]", step, registry)
        if error:
            return None, error
        if step["id"] in parsed:
            return None, f"{at}.steps[{i}].id: duplicate step id {step['id']!r}"
        parsed[step["id"]] = step
    order = item.get("execution_order", list(parsed))
    if not isinstance(order, list) or sorted(map(str, order)) != sorted(parsed):
        return None, (f"{at}.execution_order: must list every step id once "
                      f"(steps: {', '.join(parsed)}; got {order!r})")
    calls = tuple(
        PlannedCall(id=f"{plan_id}/{sid}", plan_id=plan_id, agent=parsed[sid]["agent"],
                    tool=parsed[sid]["tool"], confidence=float(parsed[sid]["confidence"]),
                    slot=slot, args=parsed[sid].get("args") or {},
                    resource=parsed[sid].get("resource"),
                    estimated_s=parsed[sid].get("estimated_s"),
                    approval=parsed[sid].get("approval"))
        for slot, sid in enumerate(order))
    upstream = item.get("upstream_plan_id", item.get("phase21_plan_id"))
    validation = item.get("validation_id", item.get("phase22_validation_id"))
    return ToolExecutionPlan(plan_id, calls, tuple(c.id for c in calls), upstream,
                             validation), None


def _check_step(at: str, step: Any, registry: ToolContractRegistry | None) -> str | None:
    if not isinstance(step, dict):
        return f"{at}: must be an object"
    extra = sorted(set(step) - _STEP_KEYS)
    if extra:
        return f"{at}.{extra[0]}: unknown key"
    for key in ("id", "agent", "tool"):
        if not isinstance(step.get(key), str) or not step[key]:
            return f"{at}.{key}: must be a non-empty string (got {step.get(key)!r})"
    c = step.get("confidence")
    if not isinstance(c, int | float) or isinstance(c, bool) or not 0.0 <= c <= 1.0:
        return f"{at}.confidence: must be a number in [0, 1] (got {c!r})"
    if registry is not None and step["tool"] not in registry:
        return f"{at}.tool: unknown tool {step['tool']!r}"
    if "args" in step and not isinstance(step["args"], dict | type(None)):
        return f"{at}.args: must be an object (got {step['args']!r})"
    if step.get("resource") is not None and not isinstance(step["resource"], str):
        return f"{at}.resource: must be a string (got {step['resource']!r})"
    est = step.get("estimated_s")
    if est is not None and (not isinstance(est, int | float) or isinstance(est, bool)
                            or not est >= 0):
        return f"{at}.estimated_s: must be a number >= 0 (got {est!r})"
    if step.get("approval") is not None and not isinstance(step["approval"], bool):
        return f"{at}.approval: must be true, false or null (got {step['approval']!r})"
    return None


def plan_to_json(plan: ToolExecutionPlan) -> dict[str, Any]:
    """The plan in the file format :func:`load_plans` reads."""
    return {
        "plan_id": plan.plan_id,
        "upstream_plan_id": plan.upstream_plan_id,
        "validation_id": plan.validation_id,
        "steps": [{"id": c.id.split("/", 1)[1], "agent": c.agent, "tool": c.tool,
                   "confidence": c.confidence, "args": dict(c.args), "resource": c.resource,
                   "estimated_s": c.estimated_s, "approval": c.approval} for c in plan.calls],
        "execution_order": [c.split("/", 1)[1] for c in plan.execution_order],
    }
