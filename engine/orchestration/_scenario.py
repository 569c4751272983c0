"""The default scenario of ``buddy run``: seeded sample plans over several agents.

SIMULATED: the plans call the catalogue's tools through
:class:`~buddy.engine.orchestration._simulator.SimulatedTools`, which touch nothing. The plans
are built to exercise every part of the orchestration cycle:

- every conflict type: two agents on one CRM contact in the same slot
  (RESOURCE), a button clicked before its dependencies (ORDERING), three drafts
  at once against a concurrency limit of 2 (RATE_LIMIT), one contact created
  twice (DUPLICATE_ACTION), an agent without ``crm.write`` adding a contact
  (PERMISSION), a file export estimated past its timeout (TIMEOUT);
- approvals granted (internal recipients) and denied (external ones), and a
  scoped grant for one database write;
- a LIVE failure that rolls back the plan's reversible actions;
- enough repeated calls, some of a flaky tool, for reliability signals.

Only confidences jitter with the seed; the shape of the scenario is fixed.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import attrs

from buddy.engine.core._approvals import Approval, ApprovalRequest
from buddy.engine.orchestration._plans import PlannedCall, ToolExecutionPlan

__all__ = ["AGENTS", "approver", "default_plans", "GRANTS", "repeated_plans"]

#: The scenario's agents and the permissions each holds.
AGENTS: Mapping[str, frozenset[str]] = {
    "agent-ui": frozenset({"vision.read", "ui.write", "documents.read", "memory.read",
                           "goals.read"}),
    "agent-crm": frozenset({"crm.read", "crm.write"}),
    "agent-crm-2": frozenset({"crm.read", "crm.write"}),
    "agent-mail": frozenset({"mail.read", "mail.write", "mail.send"}),
    "agent-ops": frozenset({"files.write", "db.write", "documents.read"}),
    "agent-intern": frozenset({"vision.read", "crm.read"}),
}

#: Scoped grants the scenario gives before it runs: (agent, tool, calls).
GRANTS: tuple[tuple[str, str, int], ...] = (("agent-ops", "database_write", 1),)

INTERNAL_DOMAIN = "@example.com"


def approver(request: ApprovalRequest) -> Approval:
    """The scenario's human in the loop (simulated): approve internal email, deny the rest."""
    to = str((request.args or {}).get("to", ""))
    if request.tool == "msgraph_send_email":
        if to.endswith(INTERNAL_DOMAIN):
            return Approval.approve("internal recipient")
        return Approval.deny(f"external recipient {to or '(none)'}")
    return Approval.approve("approved by the scenario's operator")


Step = tuple[str, str, float, dict[str, Any]]  # agent, tool, confidence, extra fields


def _plan(plan_id: str, steps: list[Step], rng: random.Random,
          batch: int) -> ToolExecutionPlan:
    calls = []
    for slot, (agent, tool, confidence, extra) in enumerate(steps):
        jitter = rng.uniform(-0.02, 0.02)
        conf = round(min(1.0, max(0.0, confidence + jitter)), 3)
        calls.append(PlannedCall(
            id=f"{plan_id}/s{slot + 1}", plan_id=plan_id, agent=agent, tool=tool,
            confidence=conf, slot=slot, args=extra.get("args", {}),
            resource=extra.get("resource"), estimated_s=extra.get("estimated_s"),
            approval=extra.get("approval")))
    return ToolExecutionPlan(plan_id, tuple(calls), tuple(c.id for c in calls),
                             upstream_plan_id=f"phase21-batch-{batch}",
                             validation_id=f"phase22-{plan_id}")


def default_plans(seed: int) -> list[ToolExecutionPlan]:
    """The scenario's plans, in the order they are submitted (four per cycle)."""
    rng = random.Random(seed)
    ui, crm, crm2, mail, ops, intern = ("agent-ui", "agent-crm", "agent-crm-2", "agent-mail",
                                        "agent-ops", "agent-intern")
    batches: list[list[tuple[str, list[Step]]]] = [
        [  # cycle 1: the UI flow, its rollback, and two agents on one contact
            ("ui-signup", [(ui, "vision_inspect", 0.93, {}),
                           (ui, "form_fill", 0.9, {"resource": "ui:form:signup",
                                                   "args": {"form": "signup"}}),
                           (ui, "button_click", 0.91, {"args": {"button": "submit-signup"}})]),
            ("ui-rollback", [(ui, "vision_inspect", 0.92, {}),
                             (ui, "form_fill", 0.9, {"resource": "ui:form:billing",
                                                     "args": {"form": "billing"}}),
                             (ui, "button_click", 0.93, {"args": {"button": "pay",
                                                                  "simulate": "error"}})]),
            ("crm-sync-a", [(crm, "ghl_search", 0.9, {"args": {"q": "contact 42"}}),
                            (crm, "ghl_update_contact", 0.86,
                             {"resource": "crm:contact:42", "args": {"id": 42, "tag": "a"}})]),
            ("crm-sync-b", [(crm2, "ghl_search", 0.9, {"args": {"q": "contact 42"}}),
                            (crm2, "ghl_update_contact", 0.88,
                             {"resource": "crm:contact:42", "args": {"id": 42, "tag": "b"}})]),
        ],
        [  # cycle 2: email with approvals granted and denied, against a rate limit
            ("mail-team", [(mail, "msgraph_get_user", 0.95, {"args": {"user": "team"}}),
                           (mail, "msgraph_create_draft", 0.9,
                            {"args": {"to": "team@example.com"}}),
                           (mail, "msgraph_send_email", 0.92,
                            {"args": {"to": "team@example.com", "subject": "weekly"}})]),
            ("mail-partner", [(mail, "msgraph_get_user", 0.95, {"args": {"user": "partner"}}),
                              (mail, "msgraph_create_draft", 0.9,
                               {"args": {"to": "ceo@partner.org"}}),
                              (mail, "msgraph_send_email", 0.93,
                               {"args": {"to": "ceo@partner.org", "subject": "offer"}})]),
            ("mail-ops", [(mail, "msgraph_get_user", 0.95, {"args": {"user": "ops"}}),
                          (mail, "msgraph_create_draft", 0.88, {"args": {"to": "ops@example.com"}}),
                          (mail, "msgraph_send_email", 0.9,
                           {"args": {"to": "ops@example.com", "subject": "status"}})]),
            ("ui-ordering", [(ui, "button_click", 0.9, {"args": {"button": "next"}}),
                             (ui, "vision_inspect", 0.93, {}),
                             (ui, "form_fill", 0.88, {"args": {"form": "wizard"}})]),
        ],
        [  # cycle 3: a duplicate, a missing permission, a timeout, a scoped grant
            ("crm-create-1", [(crm, "ghl_search", 0.9, {"args": {"q": "ada"}}),
                              (crm, "ghl_create_contact", 0.87,
                               {"args": {"email": "ada@example.com"}})]),
            ("crm-create-2", [(crm2, "ghl_search", 0.9, {"args": {"q": "ada"}}),
                              (crm2, "ghl_create_contact", 0.86,
                               {"args": {"email": "ada@example.com"}})]),
            ("intern-add", [(intern, "mployer_search", 0.9, {"args": {"q": "grace"}}),
                            (intern, "mployer_add_contact", 0.88,
                             {"args": {"email": "grace@example.com"}})]),
            ("ops-export", [(ops, "text_extract", 0.9, {"args": {"doc": "q3.pdf"}}),
                            (ops, "file_operation", 0.9,
                             {"args": {"op": "export", "path": "/exports/q3.csv"},
                              "estimated_s": 120.0}),
                            (ops, "database_write", 0.9, {"args": {"table": "exports"}})]),
        ],
    ]
    # cycles 4-6: routine work, enough of it for the feedback loop to judge tools
    for cycle in range(3):
        batch: list[tuple[str, list[Step]]] = []
        for k in range(4):
            n = cycle * 4 + k + 1
            if k % 2 == 0:
                batch.append((f"ui-routine-{n}", [
                    (ui, "vision_inspect", 0.9, {}),
                    (ui, "text_extract", 0.8, {"args": {"doc": f"page-{n}"}}),
                    (ui, "memory_search", 0.75, {"args": {"q": f"note {n}"}}),
                    (ui, "goal_query", 0.6, {})]))
            else:
                agent = crm if k == 1 else crm2
                batch.append((f"crm-routine-{n}", [
                    (agent, "ghl_search", 0.88, {"args": {"q": f"lead {n}"}}),
                    (agent, "ghl_update_contact", 0.84,
                     {"resource": f"crm:contact:{100 + n}",
                      "args": {"id": 100 + n, "stage": "qualified"}})]))
        batches.append(batch)
    return [_plan(plan_id, steps, rng, b) for b, batch in enumerate(batches, 1)
            for plan_id, steps in batch]


def repeated_plans(n: int, seed: int) -> list[ToolExecutionPlan]:
    """``n`` plans: the scenario's, over and over, for runs of any size (benchmarks, tests).

    Repetition ``k`` holds the plans of ``default_plans(seed + k)`` (so its
    confidences jitter with the seed), each plan id suffixed ``~k`` (``ui-signup~0``,
    ...); arguments and resources are the scenario's, so a later repetition
    repeats the irreversible actions of the earlier ones (DUPLICATE_ACTION).

    >>> [p.plan_id for p in repeated_plans(26, 24)][22:]
    ['ui-routine-11~0', 'crm-routine-12~0', 'ui-signup~1', 'ui-rollback~1']
    >>> repeated_plans(25, 24)[24].calls[0].id
    'ui-signup~1/s1'
    """
    out: list[ToolExecutionPlan] = []
    k = 0
    while len(out) < n:
        for plan in default_plans(seed + k)[:n - len(out)]:
            pid = f"{plan.plan_id}~{k}"
            calls = tuple(attrs.evolve(c, id=pid + c.id.removeprefix(plan.plan_id), plan_id=pid)
                          for c in plan.calls)
            out.append(attrs.evolve(plan, plan_id=pid, calls=calls,
                                    execution_order=tuple(c.id for c in calls),
                                    validation_id=f"{plan.validation_id}~{k}"))
        k += 1
    return out
