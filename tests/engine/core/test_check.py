"""engine.check / engine.explain: what decide would say, and why, recording nothing."""

from __future__ import annotations

import math
from importlib import resources

import attrs
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, initialize, rule

from buddy.engine import (
    Approval,
    AuditLog,
    ConditionCheck,
    Decision,
    Engine,
    ExecutionMode,
    Explanation,
    RiskLevel,
    ToolContractRegistry,
)
from buddy.engine.core import Explanation as CoreExplanation
from buddy.engine.core._decision import REFUSAL_RULES
from buddy.engine.core._explain import APPROVAL_SITUATIONS, CONTRACT_EFFECTS
from buddy.machines import ExecutionState
from buddy.rules import EscalationTable
from buddy.rules.tables._conditions import Op
from tests.helpers import ManualClock
from tests.strategies import EDGE_CONFIDENCES

M, D, L = ExecutionMode.MOCK, ExecutionMode.DRY_RUN, ExecutionMode.LIVE
S = ExecutionState
EMAIL = "msgraph_send_email"  # HIGH, irreversible, requires approval, 30 calls/min


def _state(engine: Engine) -> tuple[object, ...]:
    """Everything a decision may change: the log, grants and what is left of them,
    the rate limits' buckets."""
    gate = engine._gate
    return (engine.audit.last_seq, engine.audit.raw_lines()[-1],
            dict(gate.grants._left), tuple(gate.grants._by_id),
            {name: (b.tokens, b.at) for name, b in gate.buckets.items()})


def _recorded(engine: Engine) -> dict[str, object]:
    """The data of the last decision event."""
    record = orjson.loads(engine.audit.raw_lines()[-1])
    assert record["kind"] == "decision"
    return record["data"]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def engine(clock: ManualClock) -> Engine:
    return Engine.default(clock=clock)


class TestExplanation:
    def test_live_call_names_its_row_its_conditions_and_its_contract(self, engine):
        why = engine.check("agent-1", "form_fill", 0.9)
        assert isinstance(why, Explanation) and Explanation is CoreExplanation
        assert why.decision == Decision(L, True, "medium.live",
                                        "MEDIUM risk: confidence >= 0.8, so LIVE", S.LIVE)
        assert (why.mode, why.allowed, why.rule, why.state) == (L, True, "medium.live", S.LIVE)
        assert why.reason == "MEDIUM risk: confidence >= 0.8, so LIVE"
        assert why.when == "confidence >= 0.8"
        assert (why.risk, why.reversible, why.requires_approval, why.permissions,
                why.rate_limit_per_minute) == (RiskLevel.MEDIUM, True, False,
                                               frozenset({"ui.write"}), 60)
        assert why.contract_field is None and why.contract_effect == ""
        assert why.conditions == (
            ConditionCheck("medium.dry_run", D, "all", "confidence", Op.GE, 0.65, 0.9, True),
            ConditionCheck("medium.live", L, "all", "confidence", Op.GE, 0.8, 0.9, True))
        assert (why.approval, why.grant, why.if_approved) == ("not needed", None, None)
        assert why.locked is False and why.tokens_left == 60.0
        assert why.confidence == 0.9 and why.given_approval is None

    def test_dry_run_call_shows_the_condition_that_did_not_hold(self, engine):
        why = engine.check("agent-1", "form_fill", 0.7)
        assert (why.mode, why.rule, why.when) == (D, "medium.live", "confidence >= 0.8")
        assert [c.held for c in why.conditions] == [True, False]
        assert why.conditions[1].actual == 0.7 and why.conditions[1].threshold == 0.8
        below = engine.check("agent-1", "form_fill", 0.1)
        assert (below.mode, below.rule, below.when) == (M, "medium.dry_run",
                                                         "confidence >= 0.65")
        assert [c.held for c in below.conditions] == [False, False]

    def test_waiting_for_approval_names_the_contract_field(self, engine):
        why = engine.check("agent-1", EMAIL, 0.9)
        assert (why.mode, why.state, why.rule) == (D, S.AWAITING_APPROVAL, "high.live")
        assert why.contract_field == "requires_approval"
        assert why.contract_effect == CONTRACT_EFFECTS["requires_approval"]
        assert why.approval == "waiting"
        assert why.if_approved == Decision(
            L, True, "high.live", "HIGH risk: confidence >= 0.85 and approval was given, so LIVE",
            S.LIVE)

    def test_the_callers_approval(self, engine):
        given = engine.check("agent-1", EMAIL, 0.9, approval=True)
        assert (given.mode, given.approval, given.if_approved) == (L, "given", None)
        denied = engine.check("agent-1", EMAIL, 0.9, approval=False)
        assert (denied.mode, denied.allowed, denied.rule, denied.approval) == (
            M, False, "approval.denied", "denied")
        assert denied.when is None  # a built-in rule
        # below the LIVE threshold the call never asks: an approval changes nothing
        low = engine.check("agent-1", EMAIL, 0.8, approval=True)
        assert (low.mode, low.approval, low.contract_field) == (D, "not needed", None)

    def test_the_lock(self, engine):
        engine.lock("incident")
        why = engine.check("agent-1", "form_fill", 0.99)
        assert (why.mode, why.allowed, why.rule, why.when, why.locked) == (
            M, True, "system.lock", None, True)
        assert why.approval == "not needed" and why.contract_field is None
        assert [c.held for c in why.conditions] == [True, True]  # the rows held; the lock won

    def test_a_grant_is_looked_at_not_used(self, engine):
        grant = engine.grant("agent-1", EMAIL, calls=1)
        for _ in range(3):
            why = engine.check("agent-1", EMAIL, 0.9)
            assert (why.mode, why.approval, why.grant) == (L, "grant", grant.id)
            assert why.contract_field == "requires_approval"
        assert engine.decide("agent-1", EMAIL, 0.9).mode is L  # the one call is still there
        after = engine.check("agent-1", EMAIL, 0.9)
        assert (after.mode, after.approval, after.grant) == (D, "waiting", None)
        assert engine.check("agent-2", EMAIL, 0.9).approval == "waiting"  # not theirs

    def test_the_approver_is_not_asked(self, clock):
        asked = []

        def approver(request):
            asked.append(request)
            return Approval.approve()

        engine = Engine.default(clock=clock, approver=approver)
        why = engine.check("agent-1", EMAIL, 0.9, args={"to": "x"})
        assert asked == []
        assert (why.mode, why.state, why.approval) == (D, S.AWAITING_APPROVAL, "approver")
        assert why.if_approved == engine.decide("agent-1", EMAIL, 0.9)  # now it is asked
        assert len(asked) == 1

    def test_rate_limit_tokens_are_counted_not_taken(self, engine, clock):
        for _ in range(100):
            assert engine.check("agent-1", EMAIL, 0.9, approval=True).tokens_left == 30.0
        for _ in range(30):
            assert engine.decide("agent-1", EMAIL, 0.9, approval=True).mode is L
        why = engine.check("agent-1", EMAIL, 0.9, approval=True)
        assert (why.mode, why.allowed, why.rule, why.tokens_left) == (M, False, "rate.limit",
                                                                      0.0)
        assert why.contract_field == "rate_limit_per_minute"
        assert why.reason == engine.decide("agent-1", EMAIL, 0.9, approval=True).reason
        assert engine.check("agent-1", EMAIL, 0.1).tokens_left == 0.0  # MOCK takes none
        assert engine.check("agent-1", EMAIL, 0.1).allowed
        clock.advance(1.0)  # 30 a minute: one every two seconds
        half = engine.check("agent-1", EMAIL, 0.9, approval=True)
        assert (half.rule, half.tokens_left) == ("rate.limit", 0.5)
        assert engine.decide("agent-1", EMAIL, 0.9, approval=True) == half.decision
        clock.advance(1.0)
        assert engine.check("agent-1", EMAIL, 0.9, approval=True).tokens_left == 1.0
        assert engine.check("agent-1", EMAIL, 0.9, approval=True).mode is L

    def test_permissions_and_agents(self, clock):
        engine = Engine.default(clock=clock, agents={"reader": {"ui.write"}})
        why = engine.check("reader", EMAIL, 0.9)
        assert (why.allowed, why.rule, why.contract_field) == (False, "permission.missing",
                                                               "permissions")
        assert why.reason == "agent 'reader' lacks permission(s) mail.read, mail.send for " \
            "msgraph_send_email"
        assert engine.check("stranger", "form_fill", 0.9).rule == "agent.unknown"
        assert engine.check("reader", "form_fill", 0.9).mode is L

    @pytest.mark.parametrize(("agent", "tool", "confidence", "approval", "rule"), [
        ("agent-1", "no_such_tool", 0.9, None, "tool.unknown"),
        ("agent-1", ["form_fill"], 0.9, None, "tool.unknown"),
        ("", "form_fill", 0.9, None, "input.agent"),
        ("ctx-3", "form_fill", 0.9, None, "input.agent"),
        (7, "form_fill", 0.9, None, "input.agent"),
        ("agent-1", "form_fill", None, None, "input.confidence"),
        ("agent-1", "form_fill", math.nan, None, "input.confidence"),
        ("agent-1", "form_fill", 1.5, None, "input.confidence"),
        ("agent-1", "form_fill", True, None, "input.confidence"),
        ("agent-1", "form_fill", "0.9", None, "input.confidence"),
        ("agent-1", "form_fill", 0.9, 1, "input.approval"),
        ("agent-1", EMAIL, 0.9, 1, "input.approval"),  # would wait, but 1 is no answer
        ("agent-1", EMAIL, 0.9, "yes", "input.approval"),
    ])
    def test_bad_input_is_explained_never_raised(self, engine, agent, tool, confidence,
                                                 approval, rule):
        why = engine.check(agent, tool, confidence, approval=approval)
        assert (why.mode, why.allowed, why.rule, why.when) == (M, False, rule, None)
        assert why.approval == "not needed"
        assert str(why)  # printable, whatever was given
        assert engine.decide(agent, tool, confidence, approval=approval) == why.decision

    def test_unknown_tool_has_no_contract(self, engine):
        why = engine.check("agent-1", "no_such_tool", 0.9)
        assert why.contract is None and why.policy is None and why.conditions == ()
        assert (why.risk, why.reversible, why.requires_approval, why.permissions,
                why.rate_limit_per_minute, why.tokens_left) == (None,) * 6
        assert why.contract_field is None

    def test_explain_is_check(self, engine):
        assert Engine.explain is Engine.check
        assert engine.explain("agent-1", "form_fill", 0.9) == engine.check("agent-1",
                                                                            "form_fill", 0.9)

    def test_a_clock_that_fails_is_a_refusal_not_a_traceback(self):
        engine = Engine.default(clock=lambda: "noon", audit=AuditLog.memory(clock=lambda: 0.0))
        why = engine.check("agent-1", "form_fill", 0.9)  # LIVE would take a token
        assert (why.mode, why.allowed, why.rule) == (M, False, "engine.error")
        assert why.reason == "check failed: InputError: the engine's clock must return " \
            "seconds as a number (got 'noon'): fail closed"
        mock = engine.check("agent-1", "form_fill", 0.1)  # MOCK reads no clock in decide
        assert (mock.mode, mock.allowed, mock.tokens_left) == (M, True, None)
        assert "tokens unknown (the clock failed)" in str(mock)

    def test_conditions_of_any_groups(self, clock):
        text = resources.files("buddy.rules").joinpath("escalation.toml").read_text("utf-8")
        old = 'when = { all = [ { metric = "confidence", op = "ge", value = 0.50 } ] }'
        assert old in text
        table = EscalationTable.from_toml(text=text.replace(old, (
            'when = { all = [ { metric = "confidence", op = "lt", value = 0.95 } ], '
            'any = [ { metric = "confidence", op = "ge", value = 0.5 }, '
            '{ metric = "confidence", op = "eq", value = 0.25 } ] }')))
        engine = Engine(ToolContractRegistry.default(), table, clock=clock)
        why = engine.check("agent-1", "text_extract", 0.25)  # LOW
        assert (why.mode, why.rule) == (D, "low.live")
        assert [(c.row, c.group, c.op, c.threshold, c.held) for c in why.conditions] == [
            ("low.dry_run", "all", Op.LT, 0.95, True),
            ("low.dry_run", "any", Op.GE, 0.5, False),
            ("low.dry_run", "any", Op.EQ, 0.25, True),
            ("low.live", "all", Op.GE, 0.7, False)]
        assert engine.check("agent-1", "text_extract", 0.3).mode is M

    def test_str(self, engine):
        assert str(engine.check("agent-1", EMAIL, 0.9)) == "\n".join([
            "msgraph_send_email for agent-1 at confidence 0.9: DRY_RUN (allowed, "
            "state AWAITING_APPROVAL)",
            "  rule: high.live (when confidence >= 0.85)",
            "  reason: HIGH risk: confidence >= 0.85 met but LIVE needs approval and none was "
            "given; DRY_RUN",
            "  contract: risk HIGH, irreversible, requires approval",
            "  permissions: mail.read, mail.send",
            "  forced: requires_approval -> LIVE needs an approval",
            "  conditions:",
            "    high.dry_run (DRY_RUN): confidence >= 0.8 -- actual 0.9: held",
            "    high.live (LIVE): confidence >= 0.85 -- actual 0.9: held",
            "  approval: no approval, grant or approver: the call waits (DRY_RUN)",
            "  if approved now: LIVE (high.live)",
            "  lock: unlocked",
            "  rate limit: 30 calls/min, 30 tokens left"])
        assert str(engine.check("a\nb", 3, None)) == "\n".join([
            "3 for 'a\\nb' at confidence None: MOCK (refused, state MOCK)",
            "  rule: tool.unknown (built-in)",
            "  reason: unknown tool 3: fail closed",
            "  approval: not needed: the call does not wait for approval",
            "  lock: unlocked"])
        assert set(APPROVAL_SITUATIONS) == {"not needed", "given", "denied", "grant",
                                            "approver", "waiting"}

    def test_a_confidence_not_given_is_resolved_as_decide_resolves_it(self, engine):
        seen = []

        def provider(agent, tool, args):
            seen.append((agent, tool, args))
            return 0.9

        engine.confidence_provider = provider
        why = engine.check("agent-1", "form_fill", args={"field": "x"})
        assert (why.mode, why.confidence, why.confidence_from) == (L, 0.9, "provider")
        assert "at confidence 0.9 (from provider)" in str(why)
        assert seen == [("agent-1", "form_fill", {"field": "x"})]
        assert engine.decide("agent-1", "form_fill").mode is L
        engine.confidence_provider = lambda agent, tool, args: 1 / 0
        why = engine.check("agent-1", "form_fill")
        assert why.rule == "input.confidence" and "provider failed" in why.reason
        assert why.decision == engine.decide("agent-1", "form_fill")
        engine.confidence_provider = None
        assert engine.check("agent-1", "form_fill").decision == \
            engine.decide("agent-1", "form_fill")


class TestRecordsNothing:
    def test_nothing_changes(self, engine, clock):
        engine.grant("agent-1", EMAIL, calls=2)
        engine.decide("agent-1", "form_fill", 0.9)
        before = _state(engine)
        for confidence in (None, 0.1, 0.7, 0.9):
            for approval in (None, True, False):
                for tool in ("form_fill", EMAIL, "nope"):
                    engine.check("agent-1", tool, confidence, approval=approval)
        assert _state(engine) == before

    def test_a_file_log_is_not_written_and_its_lock_is_read(self, tmp_path, clock):
        path = tmp_path / "audit.jsonl"
        with AuditLog.open(path, clock=clock) as log, AuditLog.open(path, clock=clock) as other:
            engine = Engine.default(clock=clock, audit=log)
            engine.decide("agent-1", "form_fill", 0.9)
            size = path.stat().st_size
            assert engine.check("agent-1", "form_fill", 0.9).mode is L
            Engine.default(clock=clock, audit=other).lock("from another writer")
            size = path.stat().st_size
            why = engine.check("agent-1", "form_fill", 0.9)
            assert (why.mode, why.rule, why.locked) == (M, "system.lock", True)
            assert path.stat().st_size == size
            assert engine.decide("agent-1", "form_fill", 0.9) == why.decision


# -- check never differs from decide -------------------------------------------

AGENTS = ("a1", "a2", "", "ctx-1", 7, None)
TOOLS = ("text_extract", "form_fill", "button_click", EMAIL, "database_write", "nope")
BAD_CONFIDENCES = (None, math.nan, 1.5, True, "0.9")
CONFIDENCES = st.one_of(st.sampled_from(EDGE_CONFIDENCES), st.floats(0.0, 1.0),
                        st.sampled_from([-0.0, 0, 1, *BAD_CONFIDENCES]))
APPROVALS = st.sampled_from([None, None, True, False, 1, "yes"])

#: The shipped catalogue with rate limits small enough to run out in a test (2 to 4 a
#: minute), and the shipped table: loaded once (the engines built on them register nothing).
TIGHT = ToolContractRegistry(
    attrs.evolve(c, rate_limit_per_minute=2 + len(c.name) % 3) if c.rate_limit_per_minute
    else c for c in ToolContractRegistry.default())
TABLE = EscalationTable.default()
EVERY_PERMISSION = frozenset(p for c in TIGHT for p in c.permissions)
#: Mostly calls that reach the machine (valid agents, tools, confidences, approvals).
CALL_AGENTS = st.sampled_from(["a1"] * 6 + ["a2"] * 2 + ["", "ctx-1", 7])
CALL_TOOLS = st.sampled_from([*TOOLS[:-1]] * 3 + ["nope"])
CALL_CONFIDENCES = st.sampled_from([*EDGE_CONFIDENCES, 0.9, 0.95, 0.3, *BAD_CONFIDENCES])
CALL_APPROVALS = st.sampled_from([None] * 6 + [True, True, False, 1])


class CheckIsDecide(RuleBasedStateMachine):
    """Random locks, grants, revocations, time and spent rate limits: check says what
    the next decide records, and changes nothing."""

    grants = Bundle("grants")

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock()
        self.engine = Engine(TIGHT, TABLE, clock=self.clock)

    @initialize(declared=st.booleans())
    def start(self, declared: bool) -> None:
        agents = {"a1": EVERY_PERMISSION, "a2": {"ui.write", "documents.read"}} \
            if declared else None
        self.engine = Engine(TIGHT, TABLE, clock=self.clock, agents=agents)

    @rule(target=grants, agent=st.sampled_from(["a1", "a2"]),
          tool=st.sampled_from([EMAIL, "database_write", "form_fill"]),
          seconds=st.none() | st.floats(1.0, 120.0), calls=st.none() | st.integers(1, 3))
    def grant(self, agent, tool, seconds, calls):
        if seconds is None and calls is None:
            calls = 1
        return self.engine.grant(agent, tool, seconds=seconds, calls=calls).id

    @rule(grant=consumes(grants))
    def revoke(self, grant):
        if self.engine._gate.grants.get(grant) is not None:
            self.engine.revoke(grant)

    @rule(locked=st.sampled_from([True, False, False]))
    def lock(self, locked):
        self.engine.lock() if locked else self.engine.unlock()

    @rule(seconds=st.sampled_from([0.5, 1.0, 7.5, 10.0, 15.0, 30.0, 61.0]))
    def advance(self, seconds):
        self.clock.advance(seconds)

    @rule(tool=CALL_TOOLS, times=st.integers(1, 4))
    def spend(self, tool, times):
        """Calls that take tokens (and grants' calls)."""
        for _ in range(times):
            self.engine.decide("a1", tool, 0.95, approval=True)

    @rule(agent=CALL_AGENTS, tool=CALL_TOOLS, confidence=CALL_CONFIDENCES,
          approval=CALL_APPROVALS)
    def check_then_decide(self, agent, tool, confidence, approval):
        engine = self.engine
        before = _state(engine)
        why = engine.check(agent, tool, confidence, approval=approval)
        assert _state(engine) == before
        decision = engine.decide(agent, tool, confidence, approval=approval)
        assert why.decision == decision, (why, decision)
        data = _recorded(engine)
        assert (data["mode"], data["allowed"], data["rule"], data["state"]) == (
            decision.mode.value, decision.allowed, decision.rule, decision.state.value)
        if why.approval == "grant":
            assert data["approved_by"] == f"grant:{why.grant}"
        if decision.rule in REFUSAL_RULES - {"rate.limit"}:  # refused before the machine
            assert (why.approval, why.if_approved, why.contract_field) in {
                ("not needed", None, None), ("not needed", None, "permissions")}


TestCheckIsDecide = CheckIsDecide.TestCase
TestCheckIsDecide.settings = settings(stateful_step_count=20)  # the profile's examples


@given(agent=st.one_of(st.sampled_from(AGENTS), st.text(max_size=8), st.integers(),
                       st.binary(max_size=4)),
       tool=st.one_of(st.sampled_from(TOOLS), st.text(max_size=8), st.lists(st.integers())),
       confidence=st.one_of(CONFIDENCES, st.floats(), st.integers(), st.text(max_size=3)),
       approval=st.one_of(APPROVALS, st.integers(), st.floats()))
def test_any_input_is_explained_as_decide_decides(agent, tool, confidence, approval):
    engine = Engine.default(clock=lambda: 0.0)
    before = _state(engine)
    why = engine.check(agent, tool, confidence, approval=approval)
    assert _state(engine) == before
    assert isinstance(str(why), str)
    assert why.decision == engine.decide(agent, tool, confidence, approval=approval)
