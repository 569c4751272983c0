"""Execution plans: what agents intend to call, and what happened when they did.

A :class:`ToolExecutionPlan` is one agent team's intent (the Phase 24
``ToolExecutionPlan``): calls assigned to agents, an execution order and a
confidence per call. The orchestrator flattens plans into :class:`PlannedCall`
values, the unit the conflict resolver, the controller, the monitor and the
feedback loop all speak; each run of one becomes an :class:`ExecutionOutcome`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import orjson

from buddy.rules.base._files import split_lines
from buddy.rules.base._masking import shown
from buddy.rules.base._values import ExecutionMode, valid_confidence
from buddy.rules.base.errors import InputError, PlanError
from buddy.rules.tables._catalogue import ToolContractRegistry

__all__ = ["MAX_ARGS_DEPTH", "ExecutionOutcome", "PlanLoad", "PlannedCall", "ToolExecutionPlan",
           "load_plans", "plan_to_json"]


#: Why a plan's ``"approval": true`` is refused.
SELF_APPROVAL = ("a plan cannot approve its own call (approvals come from the approver or a "
                 "scoped grant); give false (a pre-denial) or null")


def _no_self_approval(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and value is not False:
        raise InputError(f"{attribute.name}: {SELF_APPROVAL} (got {shown(value)})")


@attrs.frozen
class PlannedCall:
    """One intended tool call.

    ``slot`` is the call's step in its plan's execution order: calls of any
    plans in the same slot run at the same time, so that is where RESOURCE and
    RATE_LIMIT conflicts live. ``resource`` names an exclusive resource the call
    holds while it runs (e.g. ``"crm:contact:42"``); None holds nothing.
    ``estimated_s`` is the planner's duration estimate, checked against the
    tool's timeout. ``approval`` may only be ``False`` (a pre-denial: a call
    that needs an approval is halted) or None: a plan is the agent's own word,
    so it cannot approve its call; approvals come from the engine's approver or
    a scoped grant (:class:`~buddy.rules.base.errors.InputError` for anything
    else).
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
    approval: bool | None = attrs.field(default=None, validator=_no_self_approval)


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


def _optional_mode(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not isinstance(value, ExecutionMode):
        raise TypeError(f"{attribute.name}: must be an ExecutionMode or None "
                        f"(got {shown(value)})")


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

#: How deep a step's ``args`` may nest (objects and lists, the args object itself
#: counting 1). Deeper arguments are refused at load: every output and the audit
#: trail hold them as JSON, which its writer caps at 254 levels for a whole line.
MAX_ARGS_DEPTH = 100

_PLAIN = re.compile(r"[A-Za-z0-9_.:@/-]{1,60}")


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
    slot is its position in it. ``args`` may nest :data:`MAX_ARGS_DEPTH` levels.
    ``approval`` may be ``false`` (a pre-denial) or null, never ``true``: a plan
    cannot approve its own call. A plan with a problem is rejected with one line
    naming the file, the line the plan starts on, the plan and the field; the
    others load. Values are echoed masked and shortened
    (:func:`~buddy.rules.base.shown`), ``args`` only by their kind.

    The file is one JSON document when it parses as one (but for a single plan
    on one line), or when it opens a list (its first character ``[``) or its
    first line is a lone ``{``; else it is JSON Lines, split on ``\\n`` only (JSON
    strings may hold U+2028 and the like raw). A document is a list of plans,
    ``{"plans": [...]}`` (no other key) or one plan.

    Raises :class:`PlanError` when the file cannot be read, is not UTF-8, is a
    JSON document that does not parse (the error names its line and column) or
    does not hold plans as above, or holds no plan at all.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
        data.decode("utf-8")
    except FileNotFoundError:
        raise PlanError(f"{p}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError(f"{p}: cannot read: {exc}") from None
    errors: list[tuple[int, str]] = []
    document = _document(p, data)
    raw: Iterable[tuple[int, str, str, Any]]  # (order, where, index, the plan as read)
    if document is not _LINES:
        items = _document_plans(p, document)
        lines = _item_lines(data, isinstance(document, dict) and "plans" in document)
        if len(lines) != len(items):  # cannot happen for valid JSON; then name no line
            lines = []
        raw = [(i, f"{p}:{lines[i]}: " if lines else f"{p}: ", str(i), item)
               for i, item in enumerate(items)]
    else:  # JSON Lines: one plan per line, each parsed when it is read (none held as read)
        raw = _json_lines(p, data, errors)
    plans: list[ToolExecutionPlan] = []
    seen: set[str] = set()
    for order, where, index, item in raw:
        plan, error = _read_plan(where, index, item, registry)
        if plan is not None and plan.plan_id in seen:
            error = f"{where}plan[{_name(plan.plan_id)}].plan_id: duplicate plan id"
        if error is not None:
            errors.append((order, error))
        else:
            assert plan is not None
            seen.add(plan.plan_id)
            plans.append(plan)
    if not plans and not errors:
        raise PlanError(f"no plans in {p}")
    return PlanLoad(tuple(plans), tuple(e for _, e in sorted(errors)))


def _json_lines(p: Path, data: bytes, errors: list[tuple[int, str]],
                ) -> Iterator[tuple[int, str, str, Any]]:
    """The plans of a JSON Lines file as read, one at a time: (line, where, index, plan);
    a line that is no JSON goes to ``errors``."""
    lines_of, tail = split_lines(data)
    lines_of.append(tail)
    index = 0
    for n, line in enumerate(lines_of, 1):
        if not line.strip():
            continue
        try:
            item = _loads(line)
        except orjson.JSONDecodeError as exc:
            errors.append((n, f"{p}:{n}: invalid JSON: {exc}"))
            continue
        yield n, f"{p}:{n}: ", str(index), item
        index += 1


_LINES: Any = object()  # what :func:`_document` says of a JSON Lines file
_LONG_NUMBER = re.compile(rb"\d{19,}")  # 2**63 has 19 digits


def _loads(data: bytes) -> Any:
    """JSON as it is written: orjson reads an integer beyond 64 bits as a float (a plan's
    ``12345678901234567890123`` would reach its tool as ``1.2345678901234568e+22``), so
    text holding such a number is read again, exactly, by the standard library.

    >>> _loads(b'{"account": 12345678901234567890123}')
    {'account': 12345678901234567890123}
    """
    value = orjson.loads(data)  # validates first: what it refuses is refused
    if _LONG_NUMBER.search(data) is not None:
        try:
            value = json.loads(data)
        except RecursionError:  # deeper than the standard library reads: refused later
            pass
    return value


def _document(p: Path, data: bytes) -> Any:
    """The file's one JSON document, or :data:`_LINES` when it is JSON Lines (a single
    plan on one line counts as JSON Lines, so its errors name line 1)."""
    try:
        document = _loads(data)
    except orjson.JSONDecodeError as exc:
        start = data.lstrip()
        if start[:1] == b"[" or start.split(b"\n", 1)[0].strip() == b"{":
            raise PlanError(f"{p}: invalid JSON: {exc}") from None
        return _LINES
    one_plan = isinstance(document, dict) and "plans" not in document
    return _LINES if one_plan and b"\n" not in data.strip() else document


def _document_plans(p: Path, document: Any) -> list[Any]:
    """The plans of a JSON document: a list, ``{"plans": [...]}`` or one plan."""
    if isinstance(document, list):
        return document
    if not isinstance(document, dict):
        raise PlanError(f"{p}: must hold plans: a list, {{\"plans\": [...]}} or JSON Lines "
                        f"(got {_kind(document)})")
    if "plans" not in document:
        return [document]
    extra = sorted(set(document) - {"plans"}, key=str)
    if extra:
        raise PlanError(f"{p}: unknown top-level key {shown(extra[0])} (a plans document "
                        "holds only \"plans\")")
    if not isinstance(document["plans"], list):
        raise PlanError(f"{p}: plans must be a list (got {_kind(document['plans'])})")
    return list(document["plans"])


#: A JSON string, or a structural character; what :func:`_item_lines` steps through.
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[][{}:,]')
_SPACE = re.compile(rb"[ \t\r\n]*")


def _skip_space(data: bytes, pos: int) -> int:
    m = _SPACE.match(data, pos)
    return m.end() if m else pos


def _item_lines(data: bytes, in_plans: bool) -> list[int]:
    """The line each plan of a valid JSON document starts on: the items of the
    top-level list, of the top-level object's ``"plans"`` list (``in_plans``), or
    the document itself when it is one plan. Linear, no recursion."""
    start = _skip_space(data, 0)
    if data[start:start + 1] == b"{" and not in_plans:
        return [data.count(b"\n", 0, start) + 1]
    starts: list[int] = []
    depth, target, key, is_plans = 0, (None if in_plans else 1), b"", False
    for m in _TOKEN.finditer(data):
        tok = m.group()
        if tok[:1] == b'"':
            key = tok
        elif tok == b":":
            is_plans = depth == 1 and in_plans and orjson.loads(key) == "plans"
        elif tok in (b"[", b"{"):
            depth += 1
            if tok == b"[" and (depth == target if not in_plans else depth == 2 and is_plans):
                target, starts = depth, []  # a repeated "plans" key: the last one counts
                starts.append(m.end())
        elif tok == b",":
            if depth == target:
                starts.append(m.end())
        else:  # ] or }
            if depth == target:
                target = -1  # that list is closed: later commas are not its
            depth -= 1
    lines, line, at = [], 1, 0
    for pos in starts:
        pos = _skip_space(data, pos)
        if data[pos:pos + 1] == b"]":  # an empty list holds no item
            continue
        line += data.count(b"\n", at, pos)
        at = pos
        lines.append(line)
    return lines


def _read_plan(where: str, index: str, item: Any, registry: ToolContractRegistry | None,
               ) -> tuple[ToolExecutionPlan | None, str | None]:
    if not isinstance(item, dict):
        return None, f"{where}plan[{index}]: must be an object (got {_kind(item)})"
    plan_id = item.get("plan_id")
    if not isinstance(plan_id, str) or not plan_id:
        return None, (f"{where}plan[{index}].plan_id: must be a non-empty string "
                      f"(got {shown(plan_id)})")
    at = f"{where}plan[{_name(plan_id)}]"
    extra = sorted(set(item) - _PLAN_KEYS)
    if extra:
        return None, f"{_field(at, extra[0])}: unknown key"
    for key in ("upstream_plan_id", "validation_id", "phase21_plan_id", "phase22_validation_id"):
        if not isinstance(item.get(key), str | None):
            return None, f"{at}.{key}: must be a string or null (got {shown(item[key])})"
    steps = item.get("steps")
    if not isinstance(steps, list) or not steps:
        return None, f"{at}.steps: must be a non-empty list of steps"
    parsed: dict[str, dict[str, Any]] = {}
    for i, step in enumerate(steps):
        error = _check_step(f"{at}.steps[{i}]", step, registry)
        if error:
            return None, error
        if step["id"] in parsed:
            return None, f"{at}.steps[{i}].id: duplicate step id {shown(step['id'])}"
        parsed[step["id"]] = step
    order = item.get("execution_order", list(parsed))
    if not isinstance(order, list) or not all(isinstance(sid, str) for sid in order) \
            or sorted(order) != sorted(parsed):
        return None, (f"{at}.execution_order: must list every step id once "
                      f"(steps: {', '.join(map(_name, parsed))}; got {shown(order)})")
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
        return f"{at}: must be an object (got {_kind(step)})"
    extra = sorted(set(step) - _STEP_KEYS)
    if extra:
        return f"{_field(at, extra[0])}: unknown key"
    for key in ("id", "agent", "tool"):
        if not isinstance(step.get(key), str) or not step[key]:
            return f"{at}.{key}: must be a non-empty string (got {shown(step.get(key))})"
    c = step.get("confidence")
    if not valid_confidence(c):
        return f"{at}.confidence: must be a number in [0, 1] (got {shown(c)})"
    if registry is not None and step["tool"] not in registry:
        return f"{at}.tool: unknown tool {shown(step['tool'])}"
    args = step.get("args")
    if not isinstance(args, dict | None):
        return f"{at}.args: must be an object (got {_kind(args)})"
    depth = _depth(args)
    if depth > MAX_ARGS_DEPTH:
        return f"{at}.args: must nest at most {MAX_ARGS_DEPTH} levels (got {depth})"
    if not isinstance(step.get("resource"), str | None):
        return f"{at}.resource: must be a string (got {shown(step['resource'])})"
    est = step.get("estimated_s")
    if est is not None and (not isinstance(est, int | float) or isinstance(est, bool)
                            or not est >= 0):
        return f"{at}.estimated_s: must be a number >= 0 (got {shown(est)})"
    if not isinstance(step.get("approval"), bool | None):
        return f"{at}.approval: must be false or null (got {shown(step['approval'])})"
    if step.get("approval") is True:
        return f"{at}.approval: {SELF_APPROVAL}"
    return None


def _kind(value: Any) -> str:
    """What a JSON value is, without a word of what it holds."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if value is None:
        return "null"
    kinds: dict[type, str] = {dict: "an object", list: "a list", str: "a string"}
    return kinds.get(type(value), type(value).__name__)


def _depth(value: Any) -> int:
    """How many levels of objects and lists ``value`` nests (a scalar: 0); no recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in item if isinstance(child, dict | list))
    return deepest


def _name(ident: str) -> str:
    """A plan or step id as a message names it: as is when plain, else quoted and escaped."""
    return ident if _PLAIN.fullmatch(ident) else shown(ident)


def _field(at: str, key: str) -> str:
    return f"{at}.{key}" if _PLAIN.fullmatch(key) else f"{at}[{shown(key)}]"


def plan_to_json(plan: ToolExecutionPlan) -> dict[str, Any]:
    """The plan in the file format :func:`load_plans` reads (step ids: the call ids
    without their ``<plan_id>/`` prefix)."""
    prefix = f"{plan.plan_id}/"
    return {
        "plan_id": plan.plan_id,
        "upstream_plan_id": plan.upstream_plan_id,
        "validation_id": plan.validation_id,
        "steps": [{"id": c.id.removeprefix(prefix), "agent": c.agent, "tool": c.tool,
                   "confidence": c.confidence, "args": dict(c.args), "resource": c.resource,
                   "estimated_s": c.estimated_s, "approval": c.approval} for c in plan.calls],
        "execution_order": [c.removeprefix(prefix) for c in plan.execution_order],
    }
