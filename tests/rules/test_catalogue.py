"""Tests for buddy.rules.tables._catalogue: tool contracts, their invariants and the registry."""

from __future__ import annotations

import itertools
import json
import math

import networkx as nx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from buddy.rules.base._values import ExecutionMode, RiskLevel
from buddy.rules.base.errors import (
    BuddyError,
    ContractError,
    DependencyCycleError,
    RuleTableError,
    UnknownToolError,
)
from buddy.rules.tables._catalogue import ToolContract, ToolContractRegistry, ValidationResult

LOW, MEDIUM, HIGH = RiskLevel.LOW, RiskLevel.MEDIUM, RiskLevel.HIGH

STANDARD_TOOLS = [
    "vision_inspect", "screenshot_capture", "memory_search", "goal_query",
    "form_fill", "text_extract", "math_compute",
    "button_click", "ghl_create_contact", "ghl_update_contact", "mployer_add_contact",
    "msgraph_send_email", "file_operation", "database_write",
]
DEPENDENCY_TOOLS = ["ghl_search", "mployer_search", "msgraph_get_user", "msgraph_create_draft"]
CATALOGUE_ORDER = [
    "vision_inspect", "screenshot_capture", "memory_search", "goal_query", "form_fill",
    "text_extract", "math_compute", "button_click", "ghl_search", "ghl_create_contact",
    "ghl_update_contact", "mployer_search", "mployer_add_contact", "msgraph_get_user",
    "msgraph_create_draft", "msgraph_send_email", "file_operation", "database_write",
]
DEPENDENCIES = {
    "button_click": ("vision_inspect", "form_fill"),
    "ghl_create_contact": ("ghl_search",),
    "mployer_add_contact": ("mployer_search",),
    "msgraph_send_email": ("msgraph_get_user", "msgraph_create_draft"),
}
NAME_RULE = "must be a non-empty identifier of letters, digits, '_', '-', '.'"


def low(name: str, **kw) -> ToolContract:
    return ToolContract(name=name, risk=LOW, reversible=True, **kw)


@pytest.fixture(scope="module")
def default() -> ToolContractRegistry:
    return ToolContractRegistry.default()


# -- the Phase 24 source's seven contract tests, under their names ------------

def test_tool_contract_creation_low_risk():
    c = ToolContract(name="memory_search", risk=LOW, reversible=True,
                     permissions={"memory.read"})
    assert c.name == "memory_search"
    assert c.risk is LOW
    assert c.reversible is True
    assert c.requires_approval is False
    assert c.permissions == frozenset({"memory.read"})
    assert c.dependencies == ()
    assert (c.max_concurrency, c.rate_limit_per_minute, c.timeout_s) == (1, None, 30.0)
    assert c.tags == frozenset()


def test_tool_contract_creation_high_risk():
    c = ToolContract(name="database_write", risk=HIGH, reversible=False,
                     permissions=["db.write"], requires_approval=True)
    assert (c.risk, c.reversible, c.requires_approval) == (HIGH, False, True)
    assert c.permissions == frozenset({"db.write"})
    with pytest.raises(ContractError) as info:
        ToolContract(name="database_write", risk=HIGH, reversible=False)
    assert str(info.value) == "database_write: a HIGH risk tool must require approval"


def test_tool_contract_registry_registration():
    reg = ToolContractRegistry()
    assert len(reg) == 0
    reader = low("reader")
    reg.register(reader)
    reg.register(ToolContract(name="writer", risk=MEDIUM, reversible=False,
                              dependencies=["reader"]))
    assert reg.names() == ["reader", "writer"]
    assert len(reg) == 2
    assert "reader" in reg and "nobody" not in reg
    assert reg.get("reader") is reader
    assert [c.name for c in reg] == ["reader", "writer"]


def test_tool_contract_registry_list_by_risk(default):
    assert [c.name for c in default.list_by_risk(HIGH)] == [
        "msgraph_send_email", "file_operation", "database_write"]
    assert [c.name for c in default.list_by_risk(MEDIUM)] == [
        "form_fill", "button_click", "ghl_create_contact", "ghl_update_contact",
        "mployer_add_contact", "msgraph_create_draft"]
    assert [c.name for c in default.list_by_risk(LOW)] == [
        "vision_inspect", "screenshot_capture", "memory_search", "goal_query", "text_extract",
        "math_compute", "ghl_search", "mployer_search", "msgraph_get_user"]


def test_tool_contract_permission_validation(default):
    result = default.validate_request("msgraph_send_email", {"mail.send"})
    assert result == ValidationResult(False, "msgraph_send_email", frozenset({"mail.read"}),
                                      "missing permission(s): mail.read")
    result = default.validate_request("msgraph_send_email", [])
    assert result.missing_permissions == frozenset({"mail.read", "mail.send"})
    assert result.reason == "missing permission(s): mail.read, mail.send"


def test_tool_contract_statistics(default):
    assert default.statistics() == {
        "total_tools": 18,
        "by_risk": {"LOW": 9, "MEDIUM": 6, "HIGH": 3},
        "reversible": 11,
        "irreversible": 7,
        "requires_approval": 3,
        "with_dependencies": 4,
    }


def test_tool_contract_validation_request(default):
    assert default.validate_request("form_fill", {"ui.write", "extra"}) == ValidationResult(
        True, "form_fill")
    assert default.validate_request("math_compute", ()) == ValidationResult(True, "math_compute")
    assert default.validate_request("teleport", {"ui.write"}) == ValidationResult(
        False, "teleport", frozenset(), "unknown tool 'teleport'")


# -- ToolContract ---------------------------------------------------------------

class TestToolContractInvariants:
    def test_high_risk_requires_approval(self):
        with pytest.raises(ContractError) as info:
            ToolContract(name="wipe", risk=HIGH, reversible=True)
        assert str(info.value) == "wipe: a HIGH risk tool must require approval"

    def test_irreversible_is_never_low(self):
        with pytest.raises(ContractError) as info:
            ToolContract(name="wipe", risk=LOW, reversible=False)
        assert str(info.value) == "wipe: an irreversible tool cannot be LOW risk"

    def test_no_self_dependency(self):
        with pytest.raises(ContractError) as info:
            low("loop", dependencies=["other", "loop"])
        assert str(info.value) == "loop: a tool cannot depend on itself"

    def test_no_duplicate_dependencies(self):
        with pytest.raises(ContractError) as info:
            low("twice", dependencies=["a", "b", "a"])
        assert str(info.value) == "twice: dependencies are listed twice"

    @pytest.mark.parametrize("field", ["max_concurrency", "rate_limit_per_minute", "timeout_s"])
    @pytest.mark.parametrize("value", [0, -1, 0.0, -0.5])
    def test_positive_fields(self, field, value):
        with pytest.raises(ContractError) as info:
            low("t", **{field: value})
        kind = "a finite number" if field == "timeout_s" else "a whole number"
        assert str(info.value) == f"t.{field}: must be {kind} > 0 (got {value!r})"

    @pytest.mark.parametrize("value", [math.nan, math.inf, True, "30"])
    def test_timeout_must_be_finite(self, value):
        with pytest.raises(ContractError) as info:
            low("t", timeout_s=value)
        assert str(info.value) == f"t.timeout_s: must be a finite number > 0 (got {value!r})"

    @pytest.mark.parametrize("value", [2_592_000.5, 1e300, 10 ** 20])
    def test_timeout_is_at_most_30_days(self, value):
        with pytest.raises(ContractError) as info:
            low("t", timeout_s=value)
        assert str(info.value) == ("t.timeout_s: must be at most 2.592e+06 s, 30 days "
                                   f"(got {value!r})")
        assert low("t", timeout_s=2_592_000).timeout_s == 2_592_000

    @pytest.mark.parametrize("field", ["max_concurrency", "rate_limit_per_minute"])
    @pytest.mark.parametrize("value", [1.5, 2.0, True])
    def test_counts_must_be_whole_numbers(self, field, value):
        with pytest.raises(ContractError) as info:
            low("t", **{field: value})
        assert str(info.value) == f"t.{field}: must be a whole number > 0 (got {value!r})"

    def test_smallest_positive_values_are_accepted(self):
        c = low("t", max_concurrency=1, rate_limit_per_minute=1, timeout_s=5e-324)
        assert (c.max_concurrency, c.rate_limit_per_minute, c.timeout_s) == (1, 1, 5e-324)

    @pytest.mark.parametrize("name", ["", "a b", "tool/x", "x;y", "tab\t", "...", "_", "-"])
    def test_name_format(self, name):
        with pytest.raises(ContractError) as info:
            low(name)
        assert str(info.value) == f"name: {NAME_RULE} (got {name!r})"

    @pytest.mark.parametrize("name", ["a", "ghl_search", "v2.read-only", "A-1", "_x", "9"])
    def test_name_format_accepts(self, name):
        assert low(name).name == name

    def test_name_must_be_a_string(self):
        # A validator's error is a ContractError naming field and value, not an AttributeError.
        with pytest.raises(ContractError) as info:
            low(3)
        assert str(info.value) == f"name: {NAME_RULE} (got 3)"

    def test_requires_approval_must_be_a_bool(self):
        # "false" is truthy: unchecked, it satisfies the HIGH-risk invariant by accident and
        # breaks every lookup keyed by (risk, requires_approval).
        with pytest.raises(TypeError) as info:
            ToolContract(name="wipe", risk=HIGH, reversible=False, requires_approval="false")
        assert info.value.args[0] == (
            "'requires_approval' must be <class 'bool'> (got 'false' that is a <class 'str'>).")

    def test_risk_must_be_a_risk_level(self):
        with pytest.raises(TypeError) as info:
            ToolContract(name="t", risk="LOW", reversible=True)
        assert info.value.args[0] == (
            "'risk' must be <enum 'RiskLevel'> (got 'LOW' that is a <class 'str'>).")

    def test_reversible_must_be_a_bool(self):
        with pytest.raises(TypeError) as info:
            ToolContract(name="t", risk=LOW, reversible=1)
        assert info.value.args[0] == (
            "'reversible' must be <class 'bool'> (got 1 that is a <class 'int'>).")

    @pytest.mark.parametrize(("risk", "reversible", "approval"),
                             list(itertools.product(RiskLevel, [True, False], [True, False])))
    def test_every_risk_reversibility_approval_combination(self, risk, reversible, approval):
        valid = (risk is not HIGH or approval) and (reversible or risk is not LOW)
        if valid:
            c = ToolContract(name="t", risk=risk, reversible=reversible,
                             requires_approval=approval)
            assert (c.risk, c.reversible, c.requires_approval) == (risk, reversible, approval)
        else:
            with pytest.raises(ContractError):
                ToolContract(name="t", risk=risk, reversible=reversible,
                             requires_approval=approval)

    def test_collections_are_converted_and_frozen(self):
        c = low("t", permissions=["b", "a", "a"], dependencies=["x", "y"], tags={"t"})
        assert c.permissions == frozenset({"a", "b"})
        assert c.dependencies == ("x", "y")
        assert c.tags == frozenset({"t"})
        with pytest.raises(AttributeError):
            c.risk = HIGH  # type: ignore[misc]

    def test_error_hierarchy(self):
        with pytest.raises(ValueError):
            ToolContract(name="wipe", risk=LOW, reversible=False)
        assert issubclass(ContractError, BuddyError)
        assert issubclass(DependencyCycleError, ContractError)
        assert issubclass(UnknownToolError, KeyError)


# -- ToolContractRegistry: construction and calls -------------------------------

class TestRegistryInit:
    def test_duplicate_names(self):
        with pytest.raises(ContractError) as info:
            ToolContractRegistry([low("b"), low("a"), low("b"), low("a")], source="mem")
        assert str(info.value) == "mem: tool names must be unique: a, b"

    def test_unknown_dependency(self):
        with pytest.raises(ContractError) as info:
            ToolContractRegistry([low("a", dependencies=["ghost", "spook"])])
        assert str(info.value) == "a: depends on unknown tool(s): ghost, spook"

    def test_dependencies_may_come_later_in_the_list(self):
        reg = ToolContractRegistry([low("a", dependencies=["b"]), low("b")])
        assert sorted(reg.dependency_graph().edges()) == [("b", "a")]

    def test_two_cycle(self):
        with pytest.raises(DependencyCycleError) as info:
            ToolContractRegistry([low("a", dependencies=["b"]), low("b", dependencies=["a"])])
        assert info.value.cycle == ["a", "b", "a"]
        assert str(info.value) == "tool dependencies form a cycle: a -> b -> a"

    def test_three_cycle_names_every_tool_of_the_cycle(self):
        with pytest.raises(DependencyCycleError) as info:
            ToolContractRegistry([
                low("free"),
                low("a", dependencies=["b", "free"]),
                low("b", dependencies=["c"]),
                low("c", dependencies=["a"]),
            ])
        assert info.value.cycle == ["a", "c", "b", "a"]
        assert str(info.value) == "tool dependencies form a cycle: a -> c -> b -> a"


class TestRegister:
    def test_duplicate(self, default):
        reg = ToolContractRegistry(list(default))
        with pytest.raises(ContractError) as info:
            reg.register(low("form_fill"))
        assert str(info.value) == "tool 'form_fill' is already registered"
        assert reg.get("form_fill") == default.get("form_fill")

    def test_unknown_dependency_is_not_registered(self):
        reg = ToolContractRegistry([low("a")])
        with pytest.raises(ContractError) as info:
            reg.register(low("b", dependencies=["a", "ghost"]))
        assert str(info.value) == "b: depends on unknown tool(s): ghost"
        assert reg.names() == ["a"]


class TestGet:
    def test_unknown(self, default):
        with pytest.raises(UnknownToolError) as info:
            default.get("teleport")
        assert info.value.name == "teleport"
        assert str(info.value) == "unknown tool 'teleport'"

    def test_unknown_is_a_key_error(self, default):
        with pytest.raises(KeyError):
            default.get("")


class TestValidateRequest:
    def test_no_permissions_needed(self):
        reg = ToolContractRegistry([low("calc")])
        assert reg.validate_request("calc", []).ok is True

    def test_exactly_the_permissions(self, default):
        assert default.validate_request("msgraph_send_email", ["mail.read", "mail.send"]).ok

    def test_a_generator_of_permissions(self, default):
        result = default.validate_request("file_operation", (p for p in ["files.write"]))
        assert result == ValidationResult(True, "file_operation")


class TestDependencyGraph:
    def test_default_edges(self, default):
        graph = default.dependency_graph()
        assert sorted(graph.edges()) == [
            ("form_fill", "button_click"),
            ("ghl_search", "ghl_create_contact"),
            ("mployer_search", "mployer_add_contact"),
            ("msgraph_create_draft", "msgraph_send_email"),
            ("msgraph_get_user", "msgraph_send_email"),
            ("vision_inspect", "button_click"),
        ]
        assert sorted(graph.nodes()) == sorted(CATALOGUE_ORDER)
        assert nx.is_directed_acyclic_graph(graph)

    def test_a_fresh_graph_each_call(self, default):
        graph = default.dependency_graph()
        graph.add_edge("button_click", "form_fill")
        assert nx.is_directed_acyclic_graph(default.dependency_graph())


# -- the default catalogue -------------------------------------------------------

class TestDefault:
    def test_names(self, default):
        assert default.names() == CATALOGUE_ORDER
        assert sorted(default.names()) == sorted(STANDARD_TOOLS + DEPENDENCY_TOOLS)
        assert len(default) == 18

    def test_source(self, default):
        assert default.source == "buddy/rules/tools.toml"
        assert len(default.digest) == 16

    def test_dependencies(self, default):
        assert {c.name: c.dependencies for c in default if c.dependencies} == DEPENDENCIES

    @pytest.mark.parametrize("name", ["vision_inspect", "screenshot_capture", "memory_search",
                                      "goal_query"])
    def test_read_only_tools(self, default, name):
        c = default.get(name)
        assert (c.risk, c.reversible, c.requires_approval) == (LOW, True, False)
        assert "read-only" in c.tags

    @pytest.mark.parametrize("name", ["form_fill", "text_extract", "math_compute"])
    def test_reversible_tools(self, default, name):
        assert default.get(name).reversible is True

    @pytest.mark.parametrize("name", ["button_click", "ghl_create_contact", "ghl_update_contact",
                                      "mployer_add_contact", "msgraph_send_email",
                                      "file_operation", "database_write"])
    def test_irreversible_tools(self, default, name):
        c = default.get(name)
        assert c.reversible is False
        assert c.risk is not LOW

    def test_approval(self, default):
        assert [c.name for c in default if c.requires_approval] == [
            "msgraph_send_email", "file_operation", "database_write"]

    def test_send_email_contract(self, default):
        assert default.get("msgraph_send_email") == ToolContract(
            name="msgraph_send_email",
            description="Send an email through Microsoft Graph.",
            risk=HIGH, reversible=False, permissions={"mail.send", "mail.read"},
            dependencies=("msgraph_get_user", "msgraph_create_draft"), max_concurrency=1,
            rate_limit_per_minute=30, timeout_s=30.0, requires_approval=True,
            tags={"irreversible", "email"})

    def test_modes_are_ranked(self):
        assert [m.rank for m in ExecutionMode] == [0, 1, 2]
        assert [m.value for m in ExecutionMode] == ["MOCK", "DRY_RUN", "LIVE"]
        assert [r.value for r in RiskLevel] == ["LOW", "MEDIUM", "HIGH"]


# -- ToolContractRegistry.from_toml ---------------------------------------------

# Line 1 comment; [[tool]] rows at lines 2 and 7; an appended row starts at line 13.
CATALOGUE = """\
# a small catalogue
[[tool]]
name = "reader"
risk = "LOW"
reversible = true

[[tool]]
name = "writer"
risk = "MEDIUM"
reversible = false
dependencies = ["reader"]
"""


def with_row(body: str) -> str:
    return CATALOGUE + "\n[[tool]]\n" + body


def load_problems(tmp_path, text: str) -> tuple[str, list[str]]:
    path = tmp_path / "cat.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RuleTableError) as info:
        ToolContractRegistry.from_toml(path)
    return str(path), info.value.problems


class TestFromToml:
    def test_valid(self, tmp_path):
        path = tmp_path / "cat.toml"
        path.write_text(CATALOGUE, encoding="utf-8")
        reg = ToolContractRegistry.from_toml(path)
        assert reg.names() == ["reader", "writer"]
        assert reg.source == str(path)
        assert reg.get("writer") == ToolContract(name="writer", risk=MEDIUM, reversible=False,
                                                 dependencies=("reader",))

    def test_text_and_source(self):
        assert ToolContractRegistry.from_toml(text=CATALOGUE).source == "<text>"
        assert ToolContractRegistry.from_toml(text=CATALOGUE, source="s.toml").source == "s.toml"

    def test_same_text_same_digest(self):
        a = ToolContractRegistry.from_toml(text=CATALOGUE)
        b = ToolContractRegistry.from_toml(text=CATALOGUE + "# changed\n")
        assert a.digest == ToolContractRegistry.from_toml(text=CATALOGUE).digest
        assert a.digest != b.digest

    def test_int_timeout_becomes_float(self):
        reg = ToolContractRegistry.from_toml(text=with_row(
            'name = "t"\nrisk = "LOW"\nreversible = true\ntimeout_s = 5\n'))
        assert reg.get("t").timeout_s == 5.0
        assert type(reg.get("t").timeout_s) is float

    def test_syntax_error(self, tmp_path):
        path, problems = load_problems(tmp_path, CATALOGUE + "[[tool]\n")
        assert problems == [
            f"{path}:12: invalid TOML: Expected ']]' at the end of an array declaration"]

    def test_syntax_error_names_the_source(self):
        with pytest.raises(RuleTableError) as info:
            ToolContractRegistry.from_toml(text=CATALOGUE + "[[tool]\n", source="cat.toml")
        assert info.value.problems == [
            "cat.toml:12: invalid TOML: Expected ']]' at the end of an array declaration"]

    def test_missing_file(self, tmp_path):
        with pytest.raises(RuleTableError) as info:
            ToolContractRegistry.from_toml(tmp_path / "none.toml")
        assert str(info.value) == f"{tmp_path / 'none.toml'}: no such file"

    def test_no_rows(self):
        with pytest.raises(RuleTableError) as info:
            ToolContractRegistry.from_toml(text="# nothing\n")
        assert info.value.problems == [
            "<text>: catalogue: needs at least one [[tool]] row"]

    def test_unknown_top_level_key(self):
        with pytest.raises(RuleTableError) as info:
            ToolContractRegistry.from_toml(text='tools = 1\n' + CATALOGUE)
        assert info.value.problems == ["<text>:1: catalogue.tools: unknown key"]

    def test_bad_risk(self, tmp_path):
        path, problems = load_problems(tmp_path, with_row(
            'name = "bad"\nrisk = "EXTREME"\nreversible = true\n'))
        assert problems == [
            f"{path}:15: tool[bad].risk: must be one of LOW, MEDIUM, HIGH (got 'EXTREME')"]

    def test_high_without_approval(self, tmp_path):
        path, problems = load_problems(tmp_path, with_row(
            'name = "bad"\nrisk = "HIGH"\nreversible = false\n'))
        assert problems == [f"{path}:13: tool[bad]: a HIGH risk tool must require approval"]

    def test_irreversible_low(self, tmp_path):
        path, problems = load_problems(tmp_path, with_row(
            'name = "bad"\nrisk = "LOW"\nreversible = false\n'))
        assert problems == [f"{path}:13: tool[bad]: an irreversible tool cannot be LOW risk"]

    def test_unknown_key(self, tmp_path):
        path, problems = load_problems(tmp_path, with_row(
            'name = "bad"\nrisk = "LOW"\nreversible = true\ncolour = "red"\n'))
        assert problems == [f"{path}:17: tool[bad].colour: unknown key"]

    def test_unknown_dependency(self, tmp_path):
        path, problems = load_problems(tmp_path, with_row(
            'name = "bad"\nrisk = "LOW"\nreversible = true\ndependencies = ["ghost"]\n'))
        assert problems == [f"{path}:17: tool[bad].dependencies: unknown tool(s): ghost"]

    def test_duplicate_name(self, tmp_path):
        path, problems = load_problems(tmp_path, with_row(
            'name = "reader"\nrisk = "LOW"\nreversible = true\n'))
        assert problems == [f"{path}:14: tool[reader].name: duplicate name (first at line 2)"]

    def test_non_positive_field(self, tmp_path):
        path, problems = load_problems(tmp_path, with_row(
            'name = "bad"\nrisk = "LOW"\nreversible = true\nmax_concurrency = 0\n'))
        assert problems == [
            f"{path}:17: tool[bad].max_concurrency: must be a whole number > 0 (got 0)"]

    def test_bad_name(self, tmp_path):
        path, problems = load_problems(tmp_path, with_row(
            'name = "bad name"\nrisk = "LOW"\nreversible = true\n'))
        # an unreadable name does not name the row: its index does
        assert problems == [f"{path}:14: tool[2].name: {NAME_RULE} (got 'bad name')"]

    def test_wrong_types(self, tmp_path):
        path, problems = load_problems(tmp_path, with_row(
            'name = "bad"\nrisk = "LOW"\nreversible = "yes"\nmax_concurrency = true\n'
            'permissions = ["a", 1]\n'))
        assert problems == [
            f"{path}:16: tool[bad].reversible: must be true or false (got 'yes')",
            f"{path}:18: tool[bad].permissions[1]: must be a string (got 1)",
            f"{path}:17: tool[bad].max_concurrency: must be a whole number (got True)",
        ]

    def test_missing_fields(self, tmp_path):
        path, problems = load_problems(tmp_path, with_row('description = "no name"\n'))
        assert problems == [
            f"{path}:13: tool[2].name: is required",
            f"{path}:13: tool[2].risk: is required",
            f"{path}:13: tool[2].reversible: is required",
        ]

    def test_every_problem_at_once(self, tmp_path):
        text = (CATALOGUE.replace('risk = "LOW"', 'risk = "low"')
                + '\n[[tool]]\nname = "bad"\nrisk = "HIGH"\nreversible = false\nextra = 1\n')
        path, problems = load_problems(tmp_path, text)
        assert problems == [
            f"{path}:4: tool[reader].risk: must be one of LOW, MEDIUM, HIGH (got 'low')",
            f"{path}:17: tool[bad].extra: unknown key",
        ]

    def test_cycle_names_file_and_cycle(self):
        text = ('[[tool]]\nname = "a"\nrisk = "LOW"\nreversible = true\ndependencies = ["b"]\n'
                '[[tool]]\nname = "b"\nrisk = "LOW"\nreversible = true\ndependencies = ["a"]\n')
        with pytest.raises(RuleTableError) as info:
            ToolContractRegistry.from_toml(text=text, source="cyc.toml")
        assert info.value.problems == [
            "cyc.toml:5: tool[a].dependencies: form a cycle: a -> b -> a"]

    def test_shipped_file_round_trips_through_from_toml(self, default):
        from importlib import resources

        text = resources.files("buddy.rules").joinpath("tools.toml").read_text(encoding="utf-8")
        reg = ToolContractRegistry.from_toml(text=text)
        assert list(reg) == list(default)
        assert reg.digest == default.digest


# -- the canonical form: structure(unstructure(c)) == c --------------------------

# Names hold at least one letter or digit ("_" or "..." alone is not a name).
NAMES = st.from_regex(r"[A-Za-z0-9_.\-]{0,12}[A-Za-z0-9][A-Za-z0-9_.\-]{0,12}", fullmatch=True)
WORDS = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)


@st.composite
def contracts(draw: st.DrawFn) -> ToolContract:
    name = draw(NAMES)
    risk = draw(st.sampled_from(RiskLevel))
    return ToolContract(
        name=name,
        risk=risk,
        reversible=True if risk is LOW else draw(st.booleans()),
        description=draw(WORDS),
        permissions=draw(st.frozensets(WORDS, max_size=4)),
        dependencies=draw(st.lists(NAMES.filter(lambda d: d != name), unique=True, max_size=4)),
        max_concurrency=draw(st.integers(1, 10_000)),
        rate_limit_per_minute=draw(st.none() | st.integers(1, 10**6)),
        timeout_s=draw(st.floats(0, 1e6, exclude_min=True, allow_nan=False,
                                 allow_infinity=False)),
        requires_approval=True if risk is HIGH else draw(st.booleans()),
        tags=draw(st.frozensets(WORDS, max_size=4)),
    )


class TestConverter:
    @given(contracts())
    def test_round_trip(self, c):
        from buddy.rules.base._convert import converter

        assert converter.structure(converter.unstructure(c), ToolContract) == c

    @given(contracts())
    def test_unstructured_form_is_canonical_json(self, c):
        from buddy.rules.base._convert import converter

        data = converter.unstructure(c)
        assert json.loads(json.dumps(data)) == data
        assert data["risk"] == c.risk.value
        assert data["permissions"] == sorted(c.permissions)
        assert data["tags"] == sorted(c.tags)
        assert data["dependencies"] == list(c.dependencies)

    def test_unstructure_exactly(self, default):
        from buddy.rules.base._convert import converter

        assert converter.unstructure(default.get("msgraph_send_email")) == {
            "name": "msgraph_send_email",
            "risk": "HIGH",
            "reversible": False,
            "description": "Send an email through Microsoft Graph.",
            "permissions": ["mail.read", "mail.send"],
            "dependencies": ["msgraph_get_user", "msgraph_create_draft"],
            "max_concurrency": 1,
            "rate_limit_per_minute": 30,
            "timeout_s": 30.0,
            "requires_approval": True,
            "tags": ["email", "irreversible"],
        }

    def test_extra_keys_are_forbidden(self, default):
        import cattrs

        from buddy.rules.base._convert import converter

        data = converter.unstructure(default.get("form_fill")) | {"colour": "red"}
        with pytest.raises(cattrs.ClassValidationError) as info:
            converter.structure(data, ToolContract)
        (exc,) = info.value.exceptions
        assert isinstance(exc, cattrs.ForbiddenExtraKeysError)
        assert exc.extra_fields == {"colour"}

    def test_structuring_keeps_the_invariants(self, default):
        import cattrs

        from buddy.rules.base._convert import converter

        data = converter.unstructure(default.get("database_write")) | {"requires_approval": False}
        with pytest.raises(cattrs.ClassValidationError) as info:
            converter.structure(data, ToolContract)
        (exc,) = info.value.exceptions
        assert isinstance(exc, ContractError)
        assert str(exc) == "database_write: a HIGH risk tool must require approval"


class TestFromTomlDependencies:
    def test_every_unknown_dependency_then_no_cycle_check(self):
        text = ('[[tool]]\nname = "a"\nrisk = "LOW"\nreversible = true\n'
                'dependencies = ["b", "ghost"]\n'
                '[[tool]]\nname = "b"\nrisk = "LOW"\nreversible = true\n'
                'dependencies = ["a", "bad name", "spook"]\n')
        with pytest.raises(RuleTableError) as info:
            ToolContractRegistry.from_toml(text=text, source="d.toml")
        assert info.value.problems == [
            "d.toml:5: tool[a].dependencies: unknown tool(s): ghost",
            "d.toml:10: tool[b].dependencies: unknown tool(s): 'bad name', spook"]

    def test_three_cycle_on_the_first_tool_of_the_cycle(self):
        # in the order of DependencyCycleError: each tool, then the one that needs it
        text = "".join(f'[[tool]]\nname = "{n}"\nrisk = "LOW"\nreversible = true\n'
                       f'dependencies = ["{d}"]\n' for n, d in [("x", "y"), ("y", "z"),
                                                               ("z", "x")])
        with pytest.raises(RuleTableError) as info:
            ToolContractRegistry.from_toml(text=text, source="d.toml")
        assert info.value.problems == [
            "d.toml:5: tool[x].dependencies: form a cycle: x -> z -> y -> x"]

    def test_self_dependency_is_placed_on_dependencies(self):
        text = '[[tool]]\nname = "x"\nrisk = "LOW"\nreversible = true\ndependencies = ["x"]\n'
        with pytest.raises(RuleTableError) as info:
            ToolContractRegistry.from_toml(text=text, source="d.toml")
        assert info.value.problems == [
            "d.toml:5: tool[x].dependencies: a tool cannot depend on itself"]

    def test_table_and_version_may_be_stated(self):
        reg = ToolContractRegistry.from_toml(text='table = "catalogue"\nversion = 1\n' + CATALOGUE)
        assert reg.names() == ["reader", "writer"]
        with pytest.raises(RuleTableError) as info:
            ToolContractRegistry.from_toml(text='table = "tools"\n' + CATALOGUE, source="t.toml")
        assert info.value.problems == ["t.toml:1: catalogue.table: must be 'catalogue' "
                                       "(got 'tools')"]
