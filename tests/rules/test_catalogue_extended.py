"""A catalogue file extending the shipped one (``ToolContractRegistry.extended``): its
tools added, a shipped name refused, its dependencies free to name shipped tools."""

from __future__ import annotations

import pytest

from buddy.rules.base._values import RiskLevel
from buddy.rules.base.errors import RuleTableError
from buddy.rules.tables._catalogue import ToolContract, ToolContractRegistry

MINE = """\
[[tool]]
name = "crm_lookup"
risk = "LOW"
reversible = true
dependencies = ["memory_search"]

[[tool]]
name = "crm_update"
risk = "MEDIUM"
reversible = false
dependencies = ["crm_lookup", "form_fill"]
"""

REFUSED = ("already in the shipped catalogue; a catalogue that extends it adds tools and "
           "never changes one (to change it, load a whole catalogue without extend)")


@pytest.fixture(scope="module")
def shipped() -> ToolContractRegistry:
    return ToolContractRegistry.default()


def problems(base: ToolContractRegistry, text: str, source: str = "tools.toml") -> list[str]:
    with pytest.raises(RuleTableError) as info:
        base.extended(text=text, source=source)
    return info.value.problems


class TestExtended:
    def test_the_files_tools_come_after_the_shipped_ones(self, shipped, tmp_path):
        path = tmp_path / "tools.toml"
        path.write_text(MINE, encoding="utf-8")
        mine = shipped.extended(path)
        assert mine.names() == [*shipped.names(), "crm_lookup", "crm_update"]
        assert mine.get("crm_update") == ToolContract(
            name="crm_update", risk=RiskLevel.MEDIUM, reversible=False,
            dependencies=("crm_lookup", "form_fill"))
        assert mine.get("form_fill") == shipped.get("form_fill")
        assert mine.source == f"buddy/rules/tools.toml + {path}"
        assert len(shipped) == len(ToolContractRegistry.default())  # left as it was

    def test_dependencies_on_shipped_tools_are_edges(self, shipped):
        graph = shipped.extended(text=MINE).dependency_graph()
        assert graph.has_edge("memory_search", "crm_lookup")
        assert graph.has_edge("form_fill", "crm_update")
        assert graph.has_edge("crm_lookup", "crm_update")

    def test_a_dependency_may_come_later_in_the_file(self, shipped):
        text = MINE.replace('dependencies = ["memory_search"]', 'dependencies = ["crm_update"]')
        text = text.replace('"crm_lookup", "form_fill"', '"form_fill"')
        assert shipped.extended(text=text).get("crm_lookup").dependencies == ("crm_update",)

    def test_the_digest_covers_both(self, shipped):
        mine = shipped.extended(text=MINE)
        alone = ToolContractRegistry.from_toml(
            text=MINE.replace('["memory_search"]', "[]").replace(', "form_fill"', ""))
        assert mine.digest == shipped.extended(text=MINE).digest
        assert len({mine.digest, shipped.digest, alone.digest,
                    shipped.extended(text=MINE + "# changed\n").digest}) == 4

    def test_the_new_catalogue_registers_on_its_own(self, shipped):
        mine = shipped.extended(text=MINE)
        mine.register(ToolContract(name="crm_note", risk=RiskLevel.LOW, reversible=True,
                                   dependencies=("crm_lookup",)))
        assert "crm_note" in mine and "crm_note" not in shipped


class TestRefused:
    def test_a_shipped_name_is_refused_on_its_line(self, shipped):
        text = MINE + '\n[[tool]]\nname = "form_fill"\nrisk = "LOW"\nreversible = true\n'
        assert problems(shipped, text) == [f"tools.toml:13: tool[form_fill]: {REFUSED}"]

    def test_every_shipped_name_at_once(self, shipped):
        text = ('[[tool]]\nname = "form_fill"\nrisk = "LOW"\nreversible = true\n\n'
                '[[tool]]\nname = "msgraph_send_email"\nrisk = "HIGH"\nreversible = false\n'
                'requires_approval = true\n')
        assert problems(shipped, text) == [f"tools.toml:1: tool[form_fill]: {REFUSED}",
                                           f"tools.toml:6: tool[msgraph_send_email]: {REFUSED}"]

    def test_a_refusal_is_a_value_error_of_one_line(self, shipped):
        text = '[[tool]]\nname = "form_fill"\nrisk = "LOW"\nreversible = true\n'
        with pytest.raises(ValueError, match=r"^tools.toml:1: tool\[form_fill\]: already in "
                                             r"the shipped catalogue; "):
            shipped.extended(text=text, source="tools.toml")

    def test_a_dependency_on_neither(self, shipped):
        text = MINE.replace('"memory_search"', '"memory_searhc"')
        assert problems(shipped, text) == [
            "tools.toml:5: tool[crm_lookup].dependencies: unknown tool(s): memory_searhc"]

    def test_a_cycle_among_the_files_tools(self, shipped):
        text = MINE.replace('["memory_search"]', '["crm_update", "memory_search"]')
        assert problems(shipped, text) == [
            "tools.toml:5: tool[crm_lookup].dependencies: form a cycle: "
            "crm_lookup -> crm_update -> crm_lookup"]

    def test_a_name_twice_in_the_file(self, shipped):
        text = MINE + '\n[[tool]]\nname = "crm_lookup"\nrisk = "LOW"\nreversible = true\n'
        assert problems(shipped, text) == [
            "tools.toml:14: tool[crm_lookup].name: duplicate name (first at line 1)"]

    def test_an_empty_file(self, shipped):
        assert problems(shipped, "") == ["tools.toml: catalogue: needs at least one [[tool]] row"]

    def test_extending_an_extended_catalogue_names_it(self, shipped):
        mine = shipped.extended(text=MINE, source="mine.toml")
        text = '[[tool]]\nname = "crm_lookup"\nrisk = "LOW"\nreversible = true\n'
        assert problems(mine, text, "more.toml") == [
            "more.toml:1: tool[crm_lookup]: already in the catalogue it extends "
            "(buddy/rules/tools.toml + mine.toml); a catalogue that extends it adds tools and "
            "never changes one (to change it, load a whole catalogue without extend)"]
