"""Tool contracts: what a tool is allowed to be, and the registry that holds them.

Invariants (checked on every contract and every registration, in code as in
``rules/tools.toml``):

- a HIGH risk tool requires approval;
- an irreversible tool is never LOW risk;
- names are unique, dependencies name registered tools, and never form a cycle.

The catalogue file is a table of ``[[tool]]`` rows, each a :class:`ToolContract`
read by the one rule-table loader (:mod:`buddy.rules.tables._loader`); its
problems read ``tools.toml:12: tool[form_fill].timeout_s: must be a finite
number > 0 (got 0.0)``.
"""

from __future__ import annotations

import hashlib
import math
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeGuard

import attrs
import networkx as nx

from buddy.rules.base._convert import Problem
from buddy.rules.base._masking import shown
from buddy.rules.base._values import RiskLevel
from buddy.rules.base.errors import (
    ContractError,
    DependencyCycleError,
    UnknownToolError,
)
from buddy.rules.tables._checks import invalid
from buddy.rules.tables._loader import NoKeys, ShippedTable, TableSpec, load

__all__ = [
    "ToolContract",
    "ToolContractRegistry",
    "ValidationResult",
    "is_tool_name",
]


_PUNCTUATION = str.maketrans("", "", "_-.")


def is_tool_name(value: object) -> TypeGuard[str]:
    """Whether ``value`` can name a tool: letters, digits, ``_``, ``-`` and ``.``, at least
    one letter or digit.

    >>> is_tool_name("msgraph_send_email"), is_tool_name("a b"), is_tool_name("...")
    (True, False, False)
    """
    return isinstance(value, str) and value.translate(_PUNCTUATION).isalnum()


def _name(instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not is_tool_name(value):
        raise invalid(attribute.name, "must be a non-empty identifier of letters, digits, "
                      f"'_', '-', '.' (got {shown(value)})", kind=ContractError)


def _positive_int(instance: Any, attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None and (type(value) is not int or value < 1):
        raise invalid(attribute.name, f"must be a whole number > 0 (got {shown(value)})",
                      owner=_owner(instance), kind=ContractError)


#: The longest timeout a contract may give a tool call: 30 days (a longer call is no
#: tool call, and a simulated clock moved by it would run past what a date holds).
MAX_TIMEOUT_S = 30 * 86_400.0


def _finite_positive(instance: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or \
            not 0 < value < math.inf:
        raise invalid(attribute.name, f"must be a finite number > 0 (got {shown(value)})",
                      owner=_owner(instance), kind=ContractError)
    if value > MAX_TIMEOUT_S:
        raise invalid(attribute.name, f"must be at most {MAX_TIMEOUT_S:g} s, 30 days "
                      f"(got {shown(value)})", owner=_owner(instance), kind=ContractError)


def _listed(names: Iterable[str]) -> str:
    """Tool names for a message: as written when they can be names, else shown quoted."""
    return ", ".join(n if is_tool_name(n) else shown(n) for n in names)


def _owner(instance: Any) -> str:
    name = getattr(instance, "name", None)
    return name if is_tool_name(name) else "?"


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
            raise self._broken("a HIGH risk tool must require approval")
        if not self.reversible and self.risk is RiskLevel.LOW:
            raise self._broken("an irreversible tool cannot be LOW risk")
        if self.name in self.dependencies:
            raise self._broken("a tool cannot depend on itself", "dependencies")
        if len(set(self.dependencies)) != len(self.dependencies):
            raise self._broken("dependencies are listed twice", "dependencies")

    def _broken(self, message: str, field: str | None = None) -> Exception:
        """An invariant's error: ``name: message``, placed on ``field`` (or the whole contract)."""
        error = invalid(None, message, owner=self.name, kind=ContractError)
        error.field = field  # type: ignore[attr-defined]
        return error

    @classmethod
    def from_mcp(cls, tool: Any, *, catalogue: ToolContractRegistry | None = None,
                 ) -> ToolContract:
        """The contract of an MCP tool, from its annotations; never less cautious than
        ``catalogue``'s entry of the same name.

        ``tool`` is an MCP ``Tool`` (any version of the ``mcp`` package: hints read as
        ``read_only_hint`` or ``readOnlyHint``) or its JSON form, a mapping. A hint not
        given takes the MCP specification's default: not read-only, destructive, not
        idempotent, open world. So a tool that says nothing is HIGH risk and waits for a
        person. The hints map to a contract by this table (first row that fits):

        ========================================  ======  ==========  ========
        hints                                     risk    reversible  approval
        ========================================  ======  ==========  ========
        read-only, closed world                   LOW     yes         no
        read-only, open world                     MEDIUM  yes         no
        additive, idempotent, closed world        MEDIUM  yes         no
        additive, otherwise                       MEDIUM  no          no
        destructive                               HIGH    no          yes
        ========================================  ======  ==========  ========

        ("additive": not read-only and ``destructiveHint`` false.) An open world
        raises caution one step (a reversible contract becomes the next row down)
        but never to HIGH: only a destructive tool waits for a person.

        Hints are the server's word, and a server is not trusted: they may only
        raise caution. When ``catalogue`` holds the tool, the result takes the
        higher risk, is reversible only if both say so, requires approval if
        either does, and keeps the catalogue's permissions, dependencies, rate
        limit, timeout, concurrency, tags and description.

        Raises :class:`~buddy.rules.base.errors.ContractError` for a name MCP allows
        but buddy does not (``/``, spaces, ...) and for a hint that is not a bool.

        >>> from types import SimpleNamespace as Tool
        >>> read = Tool(name="read_inbox", description="", annotations=Tool(
        ...     read_only_hint=True, open_world_hint=False))
        >>> ToolContract.from_mcp(read).risk
        <RiskLevel.LOW: 'LOW'>
        >>> plain = {"name": "send_mail", "annotations": {"destructiveHint": None}}
        >>> c = ToolContract.from_mcp(plain); (c.risk, c.reversible, c.requires_approval)
        (<RiskLevel.HIGH: 'HIGH'>, False, True)
        >>> ToolContract.from_mcp({"name": "files/delete"})
        Traceback (most recent call last):
        ...
        buddy.rules.base.errors.ContractError: MCP tool 'files/delete': buddy's tool names ...
        """
        name = _field(tool, "name", "name")
        if not is_tool_name(name):
            raise ContractError(
                f"MCP tool {shown(name)}: buddy's tool names are letters, digits, '_', "
                "'-' and '.', with at least one letter or digit; rename the tool on the "
                "server or register a contract for it under such a name")
        description = _field(tool, "description", "description")
        if description is not None and not isinstance(description, str):
            raise ContractError(f"MCP tool {name}: description must be a string "
                                f"(got {shown(description)})")
        notes = _field(tool, "annotations", "annotations")
        read_only = _hint(name, notes, "read_only_hint", "readOnlyHint", False)
        destructive = _hint(name, notes, "destructive_hint", "destructiveHint", True)
        idempotent = _hint(name, notes, "idempotent_hint", "idempotentHint", False)
        open_world = _hint(name, notes, "open_world_hint", "openWorldHint", True)
        if read_only:
            step = 0
        elif destructive:
            step = 3
        else:
            step = 1 if idempotent else 2
        if open_world and step < 2:
            step += 1
        risk, reversible, approval = _MCP_STEPS[step]
        held = catalogue.get(name) if catalogue is not None and name in catalogue else None
        if held is None:
            return cls(name=name, risk=risk, reversible=reversible, requires_approval=approval,
                       description=description or "",
                       tags=_MCP_TAGS)  # type: ignore[arg-type]  # mypy's attrs plugin: frozenset
        return attrs.evolve(
            held, risk=max(risk, held.risk, key=_RISK_RANK.__getitem__),
            reversible=reversible and held.reversible,
            requires_approval=approval or held.requires_approval)


#: From the least cautious to the most: the contracts MCP hints map to (ToolContract.from_mcp).
_MCP_STEPS = ((RiskLevel.LOW, True, False), (RiskLevel.MEDIUM, True, False),
              (RiskLevel.MEDIUM, False, False), (RiskLevel.HIGH, False, True))
_MCP_TAGS: frozenset[str] = frozenset({"mcp"})
_RISK_RANK = {RiskLevel.LOW: 0, RiskLevel.MEDIUM: 1, RiskLevel.HIGH: 2}


def _field(value: Any, attribute: str, key: str) -> Any:
    """``value.attribute`` of an object, or ``value[key]`` of a mapping (JSON form)."""
    if isinstance(value, Mapping):
        return value.get(key, value.get(attribute))
    return getattr(value, attribute, None)


def _hint(tool: str, notes: Any, attribute: str, key: str, default: bool) -> bool:
    """One hint of an MCP tool's annotations (``notes``), or its default when not given:
    read as ``read_only_hint`` (mcp 2), ``readOnlyHint`` (mcp 1, and the JSON form)."""
    if notes is None:
        return default
    value = _field(notes, attribute, key)
    if value is None and not isinstance(notes, Mapping):
        value = getattr(notes, key, None)
    if value is None:
        return default
    if type(value) is not bool:
        raise ContractError(f"MCP tool {tool}: annotations.{key} must be true, false or "
                            f"absent (got {shown(value)})")
    return value


_RANK = {RiskLevel.LOW: 0, RiskLevel.MEDIUM: 1, RiskLevel.HIGH: 2}


def _looser(old: ToolContract, new: ToolContract) -> list[str]:
    """Each way ``new`` is less cautious than ``old`` (empty: it is not)."""
    out = []
    if _RANK[new.risk] < _RANK[old.risk]:
        out.append(f"risk {new.risk.value} is lower than {old.risk.value}")
    if new.reversible and not old.reversible:
        out.append("reversible, where it was irreversible")
    if old.requires_approval and not new.requires_approval:
        out.append("no approval required, where one was")
    if not old.permissions <= new.permissions:
        out.append(f"permissions {', '.join(sorted(old.permissions - new.permissions))} "
                   "dropped")
    if old.rate_limit_per_minute is not None and (
            new.rate_limit_per_minute is None or
            new.rate_limit_per_minute > old.rate_limit_per_minute):
        out.append(f"rate limit {new.rate_limit_per_minute} is looser than "
                   f"{old.rate_limit_per_minute}")
    if new.max_concurrency > old.max_concurrency:
        out.append(f"max_concurrency {new.max_concurrency} is above {old.max_concurrency}")
    if not set(old.dependencies) <= set(new.dependencies):
        out.append(f"dependencies {_listed(sorted(set(old.dependencies) - set(new.dependencies)))} "
                   "dropped")
    return out


@attrs.frozen
class ValidationResult:
    """Whether an agent may request a tool, and why not."""

    ok: bool
    tool: str
    missing_permissions: frozenset[str] = frozenset()
    reason: str = ""


class ToolContractRegistry(ShippedTable):
    """The catalogue of tool contracts an engine enforces.

    >>> reg = ToolContractRegistry.default()
    >>> reg.get("msgraph_send_email").risk
    <RiskLevel.HIGH: 'HIGH'>
    >>> reg.validate_request("msgraph_send_email", {"mail.send"}).missing_permissions
    frozenset({'mail.read'})
    """

    FILE: ClassVar[str] = "tools.toml"

    def __init__(self, contracts: Iterable[ToolContract] = (), *, source: str = "<memory>",
                 digest: str = "") -> None:
        pending = list(contracts)
        names = Counter(c.name for c in pending)
        dupes = sorted(n for n, k in names.items() if k > 1)
        if dupes:
            raise ContractError(f"{source}: tool names must be unique: {', '.join(dupes)}")
        self._hold(pending, source, digest)
        for contract in pending:
            self._check_dependencies(contract)
        self._check_acyclic()

    def _hold(self, contracts: Sequence[ToolContract], source: str, digest: str) -> None:
        self._tools: dict[str, ToolContract] = {c.name: c for c in contracts}
        self.source = source
        self.digest = digest
        #: told of each contract registered later (an engine's compiled policy), held
        #: weakly: an engine gone is not kept alive by its catalogue
        self._listeners: list[weakref.WeakMethod[Callable[[ToolContract], None]]] = []

    def subscribe(self, listener: Callable[[ToolContract], None]) -> None:
        """Call the bound method ``listener`` with each contract :meth:`register` adds
        from now on (an engine's policy compiles it, so the new tool is decided)."""
        self._listeners.append(weakref.WeakMethod(listener))

    # -- loading -------------------------------------------------------------
    @classmethod
    def from_toml(cls, path: Path | str | None = None, *, text: str | None = None,
                  source: str | None = None) -> ToolContractRegistry:
        """Load a catalogue of ``[[tool]]`` rows; every problem is reported at once.

        Raises :class:`~buddy.rules.base.errors.RuleTableError` whose ``problems``
        are lines ``file:line: tool[name].field: message``.

        >>> ToolContractRegistry.from_toml(text='[[tool]]\\nname = "wipe"\\nrisk = "LOW"\\n'
        ...                                'reversible = false\\n', source="t.toml")
        Traceback (most recent call last):
        ...
        buddy.rules.base.errors.RuleTableError: t.toml:1: tool[wipe]: an irreversible tool ...
        """
        loaded = load(SPEC, path, text=text, source=source)
        # The loader checked what __init__ would (unique names, known dependencies, no
        # cycle: see _check), so the registry holds its rows without checking them twice.
        registry = cls.__new__(cls)
        registry._hold(loaded.rows, loaded.source, loaded.digest)
        return registry

    def extended(self, path: Path | str | None = None, *, text: str | None = None,
                 source: str | None = None) -> ToolContractRegistry:
        """A new catalogue: this one's tools, then those of the ``[[tool]]`` file
        ``path`` (or ``text``); this one is left as it is.

        Strict: a tool of the file whose name this catalogue holds is refused, never
        an override (to change a tool, load a whole catalogue with :meth:`from_toml`).
        The file's dependencies may name this catalogue's tools. Its problems, all at
        once, are lines ``file:line: tool[name]: message`` of a
        :class:`~buddy.rules.base.errors.RuleTableError`. The digest covers both.

        >>> shipped = ToolContractRegistry.default()
        >>> mine = shipped.extended(text='[[tool]]\\nname = "crm_lookup"\\nrisk = "LOW"\\n'
        ...                         'reversible = true\\ndependencies = ["form_fill"]\\n')
        >>> len(mine) == len(shipped) + 1, mine.get("crm_lookup").dependencies
        (True, ('form_fill',))
        >>> shipped.extended(text='[[tool]]\\nname = "form_fill"\\nrisk = "LOW"\\n'
        ...                  'reversible = true\\n', source="tools.toml")
        Traceback (most recent call last):
        ...
        buddy.rules.base.errors.RuleTableError: tools.toml:1: tool[form_fill]: already in ...
        """
        names = frozenset(self._tools)
        where = "the shipped catalogue" if self.source == f"buddy/rules/{self.FILE}" \
            else f"the catalogue it extends ({self.source})"

        def check(file: NoKeys, contracts: Sequence[ToolContract]) -> Iterable[Problem]:
            for i, contract in enumerate(contracts):
                if contract.name in names:
                    yield Problem(("tool", i), f"already in {where}; a catalogue that "
                                  "extends it adds tools and never changes one (to change "
                                  "it, load a whole catalogue without extend)")
            yield from _check(file, contracts, names)

        loaded = load(attrs.evolve(SPEC, check=check), path, text=text, source=source)
        registry = type(self).__new__(type(self))
        digest = hashlib.sha256(f"{self.digest}+{loaded.digest}".encode()).hexdigest()[:16]
        registry._hold((*self._tools.values(), *loaded.rows), f"{self.source} + {loaded.source}",
                       digest)
        return registry

    # -- calls ---------------------------------------------------------------
    def register(self, contract: ToolContract) -> None:
        """Add a contract; its name must be new and its dependencies registered. An
        engine built on this catalogue decides the new tool from then on."""
        if contract.name in self._tools:
            raise ContractError(f"tool {shown(contract.name)} is already registered")
        self._check_dependencies(contract)
        for ref in list(self._listeners):  # every engine compiles it first, or none holds it
            listener = ref()
            if listener is None:
                self._listeners.remove(ref)
            else:
                listener(contract)
        self._tools[contract.name] = contract

    def tighten(self, contract: ToolContract) -> ToolContract:
        """Replace the registered contract of ``contract.name`` by ``contract``, which must
        be at least as cautious: a risk no lower, irreversible if it was, approval
        required if it was, every permission it needed, no looser rate limit or
        concurrency, every dependency it had. Returns the contract replaced. An
        engine built on this catalogue decides by the new one from then on.

        Raises :class:`UnknownToolError` for a tool not registered and
        :class:`ContractError` naming each way the new one is looser.
        """
        old = self.get(contract.name)
        looser = _looser(old, contract)
        if looser:
            raise ContractError(f"{contract.name}: tighten would loosen its contract: "
                                f"{'; '.join(looser)}")
        self._check_dependencies(contract)
        if set(contract.dependencies) != set(old.dependencies):  # no cycle through the new
            self._tools[contract.name] = contract
            try:
                self._check_acyclic()
            finally:
                self._tools[contract.name] = old
        for ref in list(self._listeners):
            listener = ref()
            if listener is None:
                self._listeners.remove(ref)
            else:
                listener(contract)
        self._tools[contract.name] = contract
        return old

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
            return ValidationResult(False, tool, reason=f"unknown tool {shown(tool)}")
        missing = contract.permissions - frozenset(permissions)
        if missing:
            return ValidationResult(False, tool, frozenset(missing),
                                    f"missing permission(s): {', '.join(sorted(missing))}")
        return ValidationResult(True, tool)

    def dependency_graph(self) -> nx.DiGraph:
        """Edges run from a dependency to the tool that needs it."""
        graph: nx.DiGraph[str] = nx.DiGraph()
        graph.add_nodes_from(self._tools)
        graph.add_edges_from((dep, c.name) for c in self._tools.values() for dep in c.dependencies)
        return graph

    # -- invariants ----------------------------------------------------------
    def _check_dependencies(self, contract: ToolContract) -> None:
        missing = [d for d in contract.dependencies if d not in self._tools]
        if missing:
            raise ContractError(
                f"{contract.name}: depends on unknown tool(s): {_listed(missing)}")

    def _check_acyclic(self) -> None:
        graph = self.dependency_graph()
        if nx.is_directed_acyclic_graph(graph):  # linear; nx.find_cycle alone is not, here
            return
        cycle = nx.find_cycle(graph)
        raise DependencyCycleError([u for u, _ in cycle] + [cycle[0][0]])


def _compile(contract: ToolContract) -> tuple[ToolContract, list[Problem]]:
    return contract, []


def _check(file: NoKeys, contracts: Sequence[ToolContract],
           known: frozenset[str] = frozenset()) -> Iterable[Problem]:
    """At least one tool; dependencies name tools of the catalogue (or ``known`` ones, of
    the catalogue it extends, which depend on none of its) and form no cycle."""
    if not contracts:
        yield Problem((), "needs at least one [[tool]] row")
    index = {c.name: i for i, c in enumerate(contracts)}
    holes = False
    for i, contract in enumerate(contracts):
        missing = [d for d in contract.dependencies if d not in index and d not in known]
        if missing:
            holes = True
            yield Problem(("tool", i, "dependencies"), f"unknown tool(s): {_listed(missing)}")
    if holes:  # a graph with holes has no cycle worth naming
        return
    graph: nx.DiGraph[str] = nx.DiGraph()
    graph.add_nodes_from(index)
    graph.add_edges_from((d, c.name) for c in contracts for d in c.dependencies if d in index)
    if not nx.is_directed_acyclic_graph(graph):  # linear; nx.find_cycle alone is not, here
        cycle = [u for u, _ in nx.find_cycle(graph)]
        yield Problem(("tool", index[cycle[0]], "dependencies"),
                      "form a cycle: " + " -> ".join([*cycle, cycle[0]]))


SPEC: TableSpec[NoKeys, ToolContract, ToolContract] = TableSpec(
    "catalogue", ToolContract, compile=_compile, check=_check, rows="tool", key="name",
    named=is_tool_name)
