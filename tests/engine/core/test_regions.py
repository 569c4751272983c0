"""The decide path's walk is remembered by the region of the confidence (between two
thresholds, or at one): every remembered end is the end a fresh walk reaches."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from buddy.engine import ToolContractRegistry
from buddy.engine.core._decision import Policy
from buddy.machines import walk
from buddy.machines.escalation import DECIDE_PATH, EscalationInputs
from buddy.rules import EscalationTable

OPS = ("ge", "gt", "le", "lt", "eq", "ne")
thresholds = st.sampled_from([0.0, 0.25, 0.5, 0.65, 0.7, 0.8, 0.85, 1.0])


def table(rows: list[tuple[str, str, float, str, float, str]]) -> EscalationTable:
    """A table whose rows of each risk compare the confidence every way there is."""
    text = ""
    for risk in ("LOW", "MEDIUM", "HIGH"):
        d_op, d_v, d_join, l_op, l_v, l_join = rows[("LOW", "MEDIUM", "HIGH").index(risk)]
        for mode, op, value, join in (("DRY_RUN", d_op, d_v, d_join), ("LIVE", l_op, l_v, l_join)):
            second = "lt" if op in ("ge", "gt") else "ge"
            text += (f'[[row]]\nid = "{risk.lower()}.{mode.lower()}"\nrisk = "{risk}"\n'
                     f'when = {{ {join} = [ {{ metric = "confidence", op = "{op}", '
                     f'value = {value} }}, {{ metric = "confidence", op = "{second}", '
                     f'value = 0.9 }} ] }}\n'
                     f'then = {{ mode = "{mode}" }}\n\n')
    return EscalationTable.from_toml(text=text)


def near(values: list[float]) -> list[float]:
    out = [0.0, -0.0, 1.0, 5e-324, 0.9]
    for v in values:
        out += [v, math.nextafter(v, 0.0), math.nextafter(v, 1.0)]
    return [v for v in out if 0.0 <= v <= 1.0]


row = st.tuples(st.sampled_from(OPS), thresholds, st.sampled_from(["all", "any"]),
                st.sampled_from(OPS), thresholds, st.sampled_from(["all", "any"]))


@settings(max_examples=60, deadline=None)
@given(st.lists(row, min_size=3, max_size=3), st.lists(st.floats(0.0, 1.0), max_size=20))
def test_a_remembered_walk_ends_where_a_fresh_walk_does(rows, extra):
    escalation = table(rows)
    policy = Policy(ToolContractRegistry.default(), escalation)
    confidences = near([0.0, 0.25, 0.5, 0.65, 0.7, 0.8, 0.85, 0.9, 1.0]) + extra
    for risk_policy in escalation.policies.values():
        for needs in (False, True):
            for approval in (None, True, False):
                for locked in (False, True):
                    for c in confidences + confidences[::-1]:  # remembered, then looked up
                        fresh = walk(policy.machine, "MOCK", DECIDE_PATH, EscalationInputs(
                            risk_policy, c, approval, locked, needs))
                        assert policy._walk(risk_policy, needs, c, approval, locked) == fresh, \
                            (risk_policy.risk, needs, c, approval, locked)


def test_the_shipped_table_is_remembered_by_regions():
    policy = Policy(ToolContractRegistry.default(), EscalationTable.default())
    assert all(cuts for cuts in policy._cuts.values())
    for i in range(1001):
        policy.reevaluate("LOW", False, i / 1000, None, False)
    assert len(policy._regions) <= 2 * len(policy._cuts[next(iter(policy._cuts))]) + 1
