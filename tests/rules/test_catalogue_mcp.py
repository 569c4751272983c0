"""ToolContract.from_mcp: MCP tool annotations to a contract; hints only ever raise caution."""

from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from buddy.rules import ToolContract, ToolContractRegistry
from buddy.rules.base import RiskLevel
from buddy.rules.base.errors import ContractError

RANK = {RiskLevel.LOW: 0, RiskLevel.MEDIUM: 1, RiskLevel.HIGH: 2}
HINTS = ("readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint")
SNAKE = dict(zip(HINTS, ("read_only_hint", "destructive_hint", "idempotent_hint",
                         "open_world_hint"), strict=True))


def mcp_tool(name="t", *, description=None, **hints):
    """An MCP ``Tool`` as mcp 2 spells it (snake_case attributes); hints by their
    camelCase names, the JSON form's."""
    notes = SimpleNamespace(**{SNAKE[k]: hints.get(k) for k in HINTS})
    return SimpleNamespace(name=name, description=description, annotations=notes)


def caution(c: ToolContract) -> tuple[int, bool, bool]:
    return RANK[c.risk], not c.reversible, c.requires_approval


def at_least_as_cautious(a: ToolContract, b: ToolContract) -> bool:
    return all(x >= y for x, y in zip(caution(a), caution(b), strict=True))


hint_values = st.sampled_from([None, True, False])
annotations = st.fixed_dictionaries({k: hint_values for k in HINTS})


@st.composite
def contracts(draw, name="t"):
    risk = draw(st.sampled_from(list(RiskLevel)))
    reversible = True if risk is RiskLevel.LOW else draw(st.booleans())
    approval = True if risk is RiskLevel.HIGH else draw(st.booleans())
    return ToolContract(
        name=name, risk=risk, reversible=reversible, requires_approval=approval,
        permissions=draw(st.frozensets(st.sampled_from(["mail.send", "mail.read", "fs"]))),
        rate_limit_per_minute=draw(st.none() | st.integers(1, 100)),
        timeout_s=draw(st.sampled_from([1.0, 30.0, 90.0])),
        description=draw(st.sampled_from(["", "from the catalogue"])))


class TestTable:
    @pytest.mark.parametrize(("hints", "expected"), [
        ({}, (RiskLevel.HIGH, False, True)),                      # the spec's defaults
        ({"destructiveHint": True}, (RiskLevel.HIGH, False, True)),
        ({"readOnlyHint": True, "openWorldHint": False}, (RiskLevel.LOW, True, False)),
        ({"readOnlyHint": True}, (RiskLevel.MEDIUM, True, False)),  # open world by default
        ({"readOnlyHint": True, "destructiveHint": True, "openWorldHint": False},
         (RiskLevel.LOW, True, False)),                           # read-only wins
        ({"destructiveHint": False, "idempotentHint": True, "openWorldHint": False},
         (RiskLevel.MEDIUM, True, False)),
        ({"destructiveHint": False, "idempotentHint": True}, (RiskLevel.MEDIUM, False, False)),
        ({"destructiveHint": False, "openWorldHint": False}, (RiskLevel.MEDIUM, False, False)),
        ({"destructiveHint": False}, (RiskLevel.MEDIUM, False, False)),
        ({"readOnlyHint": False, "destructiveHint": True, "idempotentHint": True,
          "openWorldHint": False}, (RiskLevel.HIGH, False, True)),
    ])
    def test_row(self, hints, expected):
        c = ToolContract.from_mcp(mcp_tool(**hints))
        assert (c.risk, c.reversible, c.requires_approval) == expected

    def test_no_annotations_at_all_is_destructive(self):
        c = ToolContract.from_mcp(SimpleNamespace(name="t", description=None, annotations=None))
        assert (c.risk, c.reversible, c.requires_approval) == (RiskLevel.HIGH, False, True)

    def test_keeps_name_and_description_and_tags_it(self):
        c = ToolContract.from_mcp(mcp_tool("read_inbox", description="Reads mail",
                                           readOnlyHint=True))
        assert (c.name, c.description, c.tags) == ("read_inbox", "Reads mail", {"mcp"})
        assert c.permissions == frozenset() and c.rate_limit_per_minute is None

    def test_json_form_and_mcp1_spelling_read_alike(self):
        json_form = {"name": "t", "annotations": {"readOnlyHint": True, "openWorldHint": False}}
        mcp1 = SimpleNamespace(name="t", description=None, annotations=SimpleNamespace(
            readOnlyHint=True, openWorldHint=False))
        for tool in (json_form, mcp1):
            assert ToolContract.from_mcp(tool).risk is RiskLevel.LOW

    def test_real_mcp_tool(self):
        import mcp_types

        tool = mcp_types.Tool(name="search", input_schema={"type": "object"},
                              annotations=mcp_types.ToolAnnotations(read_only_hint=True,
                                                                    open_world_hint=False))
        assert ToolContract.from_mcp(tool).risk is RiskLevel.LOW
        wire = tool.model_dump(by_alias=True, exclude_none=True)  # camelCase, as on the wire
        assert wire["annotations"] == {"readOnlyHint": True, "openWorldHint": False}
        assert ToolContract.from_mcp(wire).risk is RiskLevel.LOW


class TestRefused:
    @pytest.mark.parametrize("name", ["files/delete", "a b", "", "...", None, 7])
    def test_names_buddy_cannot_hold(self, name):
        with pytest.raises(ContractError, match=r"^MCP tool .*: buddy's tool names are "):
            ToolContract.from_mcp(mcp_tool(name))

    def test_a_hint_that_is_not_a_bool(self):
        with pytest.raises(ContractError, match=r"^MCP tool t: annotations.readOnlyHint must "
                                                r"be true, false or absent \(got 'yes'\)$"):
            ToolContract.from_mcp({"name": "t", "annotations": {"readOnlyHint": "yes"}})

    def test_a_description_that_is_not_a_string(self):
        with pytest.raises(ContractError, match=r"^MCP tool t: description must be a string"):
            ToolContract.from_mcp({"name": "t", "description": 3})


class TestOnlyRaisesCaution:
    @given(annotations, contracts())
    def test_never_less_cautious_than_the_catalogue(self, hints, held):
        registry = ToolContractRegistry([held])
        c = ToolContract.from_mcp(mcp_tool(**hints), catalogue=registry)
        assert at_least_as_cautious(c, held)
        assert at_least_as_cautious(c, ToolContract.from_mcp(mcp_tool(**hints)))
        # and the catalogue's word on everything else stands
        assert (c.permissions, c.rate_limit_per_minute, c.timeout_s, c.description,
                c.tags) == (held.permissions, held.rate_limit_per_minute, held.timeout_s,
                            held.description, held.tags)

    @given(annotations, contracts())
    def test_exactly_the_more_cautious_of_the_two(self, hints, held):
        alone = ToolContract.from_mcp(mcp_tool(**hints))
        c = ToolContract.from_mcp(mcp_tool(**hints),
                                  catalogue=ToolContractRegistry([held]))
        assert caution(c) == tuple(max(a, b) for a, b in zip(caution(alone), caution(held),
                                                              strict=True))

    @given(annotations, st.sampled_from(HINTS))
    def test_a_hint_given_as_its_default_changes_nothing(self, hints, which):
        default = {"readOnlyHint": False, "destructiveHint": True, "idempotentHint": False,
                   "openWorldHint": True}[which]
        if hints[which] is not None:
            return
        given_default = {**hints, which: default}
        assert ToolContract.from_mcp(mcp_tool(**hints)) == \
            ToolContract.from_mcp(mcp_tool(**given_default))

    @given(annotations)
    def test_only_a_destructive_tool_waits_for_a_person(self, hints):
        c = ToolContract.from_mcp(mcp_tool(**hints))
        destructive = hints["readOnlyHint"] is not True and hints["destructiveHint"] is not False
        assert c.requires_approval is destructive

    def test_the_shipped_email_tool_stays_high_whatever_the_server_says(self):
        registry = ToolContractRegistry.default()
        held = registry.get("msgraph_send_email")
        c = ToolContract.from_mcp(mcp_tool("msgraph_send_email", readOnlyHint=True,
                                           openWorldHint=False), catalogue=registry)
        assert c == held
