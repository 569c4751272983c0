"""The catalogue as detection reads it: facts per tool and depths in the dependency graph."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from buddy.engine.orchestration._tool_facts import ToolIndex, depths
from buddy.rules.base._values import RiskLevel
from buddy.rules.base.errors import UnknownToolError
from buddy.rules.tables._catalogue import ToolContract, ToolContractRegistry


def tool(name: str, *deps: str, **fields) -> ToolContract:
    return ToolContract(name=name, risk=RiskLevel.LOW, reversible=True, dependencies=deps,
                        **fields)


def chain(n: int) -> ToolContractRegistry:
    return ToolContractRegistry([tool(f"t{i}", *([f"t{i - 1}"] if i else [])) for i in range(n)])


@st.composite
def dags(draw) -> ToolContractRegistry:
    """Catalogues whose tools depend only on tools listed before them (so, acyclic)."""
    n = draw(st.integers(1, 12))
    contracts = []
    for i in range(n):
        deps = draw(st.sets(st.integers(0, i - 1), max_size=3)) if i else set()
        contracts.append(tool(f"t{i}", *(f"t{d}" for d in sorted(deps))))
    return ToolContractRegistry(contracts)


class TestDepths:
    def test_diamond(self):
        reg = ToolContractRegistry([tool("a"), tool("b", "a"), tool("c", "a"),
                                    tool("d", "b", "c"), tool("e")])
        assert depths(reg) == {"a": 0, "e": 0, "b": 1, "c": 1, "d": 2}

    def test_the_longest_path_counts(self):
        reg = ToolContractRegistry([tool("a"), tool("b", "a"), tool("c", "a", "b")])
        assert depths(reg) == {"a": 0, "b": 1, "c": 2}

    def test_a_chain_far_deeper_than_the_recursion_limit(self):
        assert depths(chain(5_000))["t4999"] == 4_999

    def test_the_default_catalogue(self):
        found = depths(ToolContractRegistry.default())
        assert sorted(t for t, depth in found.items() if depth) == [
            "button_click", "ghl_create_contact", "mployer_add_contact", "msgraph_send_email"]
        assert set(found.values()) == {0, 1}

    @given(dags())
    def test_one_more_than_the_deepest_dependency(self, reg):
        found = depths(reg)
        assert set(found) == set(reg.names())
        for contract in reg:
            assert found[contract.name] == 1 + max(
                (found[d] for d in contract.dependencies), default=-1)


class TestToolIndex:
    def test_facts_of_a_contract(self):
        reg = ToolContractRegistry([tool("a", permissions={"x.read"}, max_concurrency=3,
                                         timeout_s=7.5), tool("b", "a")])
        facts = ToolIndex(reg)["b"]
        assert (facts.name, facts.risk, facts.reversible, facts.permissions, facts.dependencies,
                facts.limit, facts.timeout_s, facts.depth) == (
            "b", RiskLevel.LOW, True, frozenset(), ("a",), 1, 30.0, 1)
        a = ToolIndex(reg)["a"]
        assert (a.permissions, a.limit, a.timeout_s, a.depth) == (
            frozenset({"x.read"}), 3, 7.5, 0)

    def test_unknown_tool(self):
        with pytest.raises(UnknownToolError, match="nope"):
            ToolIndex(chain(2))["nope"]
        with pytest.raises(UnknownToolError, match="nope"):
            ToolIndex(chain(2)).covering(["t1", "nope"])

    def test_a_tool_registered_later_is_found_with_its_depth(self):
        reg = chain(3)
        index = ToolIndex(reg)
        assert index["t2"].depth == 2
        reg.register(tool("late", "t2"))
        assert index["late"].depth == 3
        assert set(index.covering(["late", "t0"])) == {"t0", "t1", "t2", "late"}
