"""Tool contracts: what a tool is allowed to be, and the registry that holds them.

Invariants (checked on every contract and every registration):

- a HIGH risk tool requires approval;
- an irreversible tool is never LOW risk;
- names are unique, dependencies name registered tools, and never form a cycle.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import attrs
import networkx as nx

from buddy.rules.base._values import RiskLevel
from buddy.rules.base.errors import (
    ContractError,
    DependencyCycleError,
    RuleTableError,
    UnknownToolError,
)
from buddy.rules.tables._table import Problems, read_toml, row_line

__all__ = [
    "ToolContract",
    "ToolContractRegistry",
    "ValidationResult",
]


_PUNCTUATION = str.maketrans("", "", "_-.")


def _name(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    if not isinstance(value, str) or not value.translate(_PUNCTUATION).isalnum():
        raise ContractError(
            f"{attribute.name}: must be a non-empty identifier of letters, digits, '_', '-', '.' "
            f"(got {value!r})"
        )


def _positive_int(instance: Any, attribute: attrs.Attribute, value: int | None) -> None:
    if value is not None and (type(value) is not int or value < 1):
        raise ContractError(f"{getattr(instance, 'name', '?')}.{attribute.name}: must be a "
                            f"whole number > 0 (got {value!r})")


def _finite_positive(instance: Any, attribute: attrs.Attribute, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or \
            not 0 < value < math.inf:
        raise ContractError(f"{getattr(instance, 'name', '?')}.{attribute.name}: must be a "
                            f"finite number > 0 (got {value!r})")


@attrs.frozen
class ToolContract:
    """What a tool is and what calling it requires.

    >>> ToolContract(name="wipe", risk=RiskLevel.LOW, reversible=False)
    Traceback (most recent call last):
    ...
    buddy.rules.base.errors.ContractError: wipe: an irreversible tool cannot be LOW risk
    """

    name: str = attrs.field(validator=_name)
    risk: RiskLevel = attrs.field(validator=attrs.validators.instance_of(RiskLevel))
    reversible: bool = attrs.field(validator=attrs.validators.instance_of(bool))
    description: str = ""
    permissions: frozenset[str] = attrs.field(default=frozenset(), converter=frozenset)
    dependencies: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    max_concurrency: int = attrs.field(default=1, validator=_positive_int)
    rate_limit_per_minute: int | None = attrs.field(default=None, validator=_positive_int)
    timeout_s: float = attrs.field(default=30.0, validator=_finite_positive)
    requires_approval: bool = attrs.field(default=False,
                                          validator=attrs.validators.instance_of(bool))
    tags: frozenset[str] = attrs.field(default=frozenset(), converter=frozenset)

    def __attrs_post_init__(self) -> None:
        if self.risk is RiskLevel.HIGH and not self.requires_approval:
            raise ContractError(f"{self.name}: a HIGH risk tool must require approval")
        if not self.reversible and self.risk is RiskLevel.LOW:
            raise ContractError(f"{self.name}: an irreversible tool cannot be LOW risk")
        if self.name in self.dependencies:
            raise ContractError(f"{self.name}: a tool cannot depend on itself")
        if len(set(self.dependencies)) != len(self.dependencies):
            raise ContractError(f"{self.name}: dependencies are listed twice")


@attrs.frozen
class ValidationResult:
    """Whether an agent may request a tool, and why not."""

    ok: bool
    tool: str
    missing_permissions: frozenset[str] = frozenset()
    reason: str = ""


class ToolContractRegistry:
    """The catalogue of tool contracts an engine enforces.

    >>> reg = ToolContractRegistry.default()
    >>> reg.get("msgraph_send_email").risk
    <RiskLevel.HIGH: 'HIGH'>
    >>> reg.validate_request("msgraph_send_email", {"mail.send"}).missing_permissions
    frozenset({'mail.read'})
    """

    def __init__(self, contracts: Iterable[ToolContract] = (), *, source: str = "<memory>",
                 digest: str = "") -> None:
        self._tools: dict[str, ToolContract] = {}
        self.source = source
        self.digest = digest
        pending = list(contracts)
        names = Counter(c.name for c in pending)
        dupes = sorted(n for n, k in names.items() if k > 1)
        if dupes:
            raise ContractError(f"{source}: tool names must be unique: {', '.join(dupes)}")
        for contract in pending:
            self._tools[contract.name] = contract
        for contract in pending:
            self._check_dependencies(contract)
        self._check_acyclic()

    # -- loading -------------------------------------------------------------
    @classmethod
    def default(cls) -> ToolContractRegistry:
        """The standard catalogue shipped with buddy (``buddy/rules/tools.toml``)."""
        ref = resources.files("buddy.rules").joinpath("tools.toml")
        return cls.from_toml(text=ref.read_text(encoding="utf-8"), source="buddy/rules/tools.toml")

    @classmethod
    def from_toml(cls, path: Path | str | None = None, *, text: str | None = None,
                  source: str | None = None) -> ToolContractRegistry:
        """Load a catalogue of ``[[tool]]`` rows; every problem is reported at once."""
        data, text, digest = read_toml(path, text, source)
        source = source or (str(path) if path is not None else "<text>")
        problems = Problems(source, text)
        problems.unknown_keys(data, ("tool",), "catalogue", None)
        rows = data.get("tool", [])
        if not isinstance(rows, list) or not rows:
            problems.add("tool", "the catalogue needs at least one [[tool]] row")
            problems.raise_if_any()
        contracts: list[ToolContract] = []
        lines: dict[str, int | None] = {}
        for i, row in enumerate(rows):
            line = row_line(text, "tool", i)
            contract = _read_contract(problems, row, f"tool[{i}]", line)
            if contract is None:
                continue
            if contract.name in lines:
                problems.add(f"tool[{contract.name}].name",
                             f"duplicate name (first at line {lines[contract.name]})", line)
                continue
            lines[contract.name] = line
            contracts.append(contract)
        named = {row.get("name") for row in rows if isinstance(row, Mapping)}
        for contract in contracts:
            missing = [d for d in contract.dependencies if d not in named]
            if missing:
                problems.add(f"tool[{contract.name}].dependencies",
                             f"unknown tool(s): {', '.join(missing)}", lines[contract.name])
        problems.raise_if_any()
        try:
            return cls(contracts, source=source, digest=digest)
        except ContractError as exc:

            raise RuleTableError(f"{source}: {exc}" if not str(exc).startswith(source)
                                 else str(exc)) from None

    # -- calls ---------------------------------------------------------------
    def register(self, contract: ToolContract) -> None:
        """Add a contract; its name must be new and its dependencies registered."""
        if contract.name in self._tools:
            raise ContractError(f"tool {contract.name!r} is already registered")
        self._check_dependencies(contract)
        self._tools[contract.name] = contract

    def get(self, name: str) -> ToolContract:
        try:
            return self._tools[name]
        except KeyError:
            raise UnknownToolError(name) from None

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[ToolContract]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def names(self) -> list[str]:
        return list(self._tools)

    def list_by_risk(self, risk: RiskLevel) -> list[ToolContract]:
        return [c for c in self._tools.values() if c.risk is risk]

    def statistics(self) -> dict[str, Any]:
        """Counts by risk and reversibility, for dashboards and summaries."""
        tools = list(self._tools.values())
        return {
            "total_tools": len(tools),
            "by_risk": {r.value: sum(c.risk is r for c in tools) for r in RiskLevel},
            "reversible": sum(c.reversible for c in tools),
            "irreversible": sum(not c.reversible for c in tools),
            "requires_approval": sum(c.requires_approval for c in tools),
            "with_dependencies": sum(bool(c.dependencies) for c in tools),
        }

    def validate_request(self, tool: str, permissions: Iterable[str]) -> ValidationResult:
        """Whether an agent holding ``permissions`` may request ``tool``."""
        contract = self._tools.get(tool)
        if contract is None:
            return ValidationResult(False, tool, reason=f"unknown tool {tool!r}")
        missing = contract.permissions - frozenset(permissions)
        if missing:
            return ValidationResult(False, tool, frozenset(missing),
                                    f"missing permission(s): {', '.join(sorted(missing))}")
        return ValidationResult(True, tool)

    def dependency_graph(self) -> nx.DiGraph:
        """Edges run from a dependency to the tool that needs it."""
        graph: nx.DiGraph[str] = nx.DiGraph()
        graph.add_nodes_from(self._tools)
        for contract in self._tools.values():
            graph.add_edges_from((dep, contract.name) for dep in contract.dependencies)
        return graph

    # -- invariants ----------------------------------------------------------
    def _check_dependencies(self, contract: ToolContract) -> None:
        missing = [d for d in contract.dependencies if d not in self._tools]
        if missing:
            raise ContractError(
                f"{contract.name}: depends on unknown tool(s): {', '.join(missing)}")

    def _check_acyclic(self) -> None:
        graph = self.dependency_graph()
        if nx.is_directed_acyclic_graph(graph):  # linear; nx.find_cycle alone is not, here
            return
        cycle = nx.find_cycle(graph)
        raise DependencyCycleError([u for u, _ in cycle] + [cycle[0][0]])


_CONTRACT_KEYS = {
    "name": str, "description": str, "risk": str, "reversible": bool, "permissions": list,
    "dependencies": list, "max_concurrency": int, "rate_limit_per_minute": int,
    "timeout_s": float, "requires_approval": bool, "tags": list,
}


def _read_contract(problems: Problems, row: Any, where: str,
                   line: int | None) -> ToolContract | None:
    if not isinstance(row, Mapping):
        problems.add(where, "must be a table", line)
        return None
    before = len(problems.items)
    name = problems.field(row, "name", str, where, line)
    label = f"tool[{name}]" if name else where
    problems.unknown_keys(row, _CONTRACT_KEYS, label, line)
    risk = problems.enum(row, "risk", RiskLevel, label, line)
    reversible = problems.field(row, "reversible", bool, label, line)
    fields: dict[str, Any] = {}
    for key in ("description", "max_concurrency", "rate_limit_per_minute", "timeout_s",
                "requires_approval"):
        if key in row:
            fields[key] = problems.field(row, key, _CONTRACT_KEYS[key], label, line)
    for key in ("permissions", "dependencies", "tags"):
        if key in row:
            items = problems.field(row, key, list, label, line)
            if items is not None and not all(isinstance(x, str) for x in items):
                problems.add(f"{label}.{key}", f"must be a list of strings (got {items!r})", line)
            fields[key] = items or ()
    if len(problems.items) > before:
        return None
    try:
        return ToolContract(name=name, risk=risk, reversible=reversible, **fields)
    except ContractError as exc:
        message = str(exc)
        if message.startswith(f"{name}: "):  # an invariant of the whole contract
            problems.add(label, message.removeprefix(f"{name}: "), line)
        else:  # one field's validator: "name.field: ..." or "field: ..."
            field, _, rest = message.removeprefix(f"{name}.").partition(": ")
            problems.add(f"{label}.{field}", rest, line)
        return None
