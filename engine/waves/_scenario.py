"""The wave loop's default scenario: seeded agents and tasks, when no input file is given.

SIMULATED: the tasks call catalogue tools through the simulated tools, which
touch nothing; an :class:`AgentProfile` holds what the simulator (not the
engine) knows of an agent: how often its attempts succeed, how fast and how
often they hang. The sources' run is 4 agents x 3 waves x 20 tasks; one of the
four agents is weak (capability 0.55, timeouts), so the default run shows
anomalies and an agent going OFFLINE with its tasks reassigned.

Every value comes from ``random.Random(seed)``: the same seed gives the same
agents and tasks.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

import attrs

from buddy.engine.waves._records import PredictedTask
from buddy.rules.base.errors import InputError

__all__ = [
    "SCENARIO_PERMISSIONS",
    "SCENARIO_TOOLS",
    "AgentProfile",
    "agent_permissions",
    "default_agents",
    "default_tasks",
]

#: The catalogue's tools the scenario calls: LOW and MEDIUM risk, none needing an
#: approval or another tool before it (a test holds this against the catalogue).
SCENARIO_TOOLS = ("vision_inspect", "screenshot_capture", "memory_search", "goal_query",
                  "form_fill", "text_extract", "math_compute", "ghl_search", "mployer_search",
                  "msgraph_get_user", "msgraph_create_draft")

#: The permissions those tools need (a test holds this against the catalogue); every
#: scenario agent holds them all.
SCENARIO_PERMISSIONS = frozenset({"vision.read", "memory.read", "goals.read", "ui.write",
                                  "documents.read", "crm.read", "mail.read", "mail.write"})

#: What each scenario tool is called on (the ``target`` argument's prefix).
_TARGETS = {"vision_inspect": "screen", "screenshot_capture": "screen",
            "memory_search": "memory", "goal_query": "goal", "form_fill": "form",
            "text_extract": "document", "math_compute": "expression", "ghl_search": "contact",
            "mployer_search": "employer", "msgraph_get_user": "user",
            "msgraph_create_draft": "draft"}


def _unit(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if type(value) is not float or not 0.0 <= value <= 1.0:
        raise InputError(f"{attribute.name}: must be a number in [0, 1] (got {value!r})")


def _positive(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if type(value) is not float or not 0.0 < value < float("inf"):
        raise InputError(f"{attribute.name}: must be a number > 0 (got {value!r})")


@attrs.frozen
class AgentProfile:
    """A simulated agent: its hidden success multiplier (``capability``), latency
    multiplier (``speed``), the chance an attempt hangs past the task's timeout
    (``timeout_rate``) and the permissions it holds."""

    agent_id: str
    capability: float = attrs.field(validator=_unit)
    speed: float = attrs.field(validator=_positive)
    timeout_rate: float = attrs.field(default=0.0, validator=_unit)
    permissions: frozenset[str] = attrs.field(default=SCENARIO_PERMISSIONS,
                                              converter=frozenset)


#: The sources' four agents: (capability, speed, timeout_rate).
_FOUR = ((0.98, 0.8, 0.0), (0.93, 1.0, 0.0), (0.85, 1.2, 0.0), (0.55, 1.5, 0.08))


def default_agents(n: int = 4, seed: int = 21) -> tuple[AgentProfile, ...]:
    """Agents ``agent_0`` .. ``agent_{n-1}``, strongest first, all holding
    :data:`SCENARIO_PERMISSIONS`.

    Four agents are the fixed profiles of the sources' run, whatever the seed:
    capability 0.98, 0.93, 0.85 and 0.55 (the last also slow, and hanging on 8%
    of its attempts). Another ``n`` spreads capability from about 0.98 down to
    about 0.55 and speed from 0.8 to 1.5, each jittered by the seed; an agent
    below 0.6 hangs on 8% of its attempts.

    Raises :class:`InputError` when ``n`` is not a whole number >= 1.

    >>> [(a.agent_id, a.capability, a.timeout_rate) for a in default_agents()][-1]
    ('agent_3', 0.55, 0.08)
    >>> default_agents(6, seed=1) == default_agents(6, seed=1) != default_agents(6, seed=2)
    True
    """
    if type(n) is not int or n < 1:
        raise InputError(f"agents: must be a whole number >= 1 (got {n!r})")
    if n == len(_FOUR):
        return tuple(AgentProfile(f"agent_{i}", c, s, t) for i, (c, s, t) in enumerate(_FOUR))
    rng = random.Random(seed)
    out = []
    for i in range(n):
        at = i / (n - 1) if n > 1 else 0.0
        capability = round(min(0.99, max(0.5, 0.98 - 0.43 * at + rng.uniform(-0.02, 0.02))), 3)
        speed = round(0.8 + 0.7 * at + rng.uniform(-0.05, 0.05), 3)
        out.append(AgentProfile(f"agent_{i}", capability, speed,
                                0.08 if capability < 0.6 else 0.0))
    return tuple(out)


def agent_permissions(profiles: Iterable[AgentProfile]) -> dict[str, frozenset[str]]:
    """agent id -> the permissions it holds (the engine's ``agents=`` map).

    >>> agent_permissions(default_agents(1))["agent_0"] == SCENARIO_PERMISSIONS
    True
    """
    return {p.agent_id: p.permissions for p in profiles}


def default_tasks(seed: int = 21, *, waves: int = 3, tasks_per_wave: int = 20,
                  ) -> list[PredictedTask]:
    """``waves`` x ``tasks_per_wave`` seeded tasks, wave by wave.

    Task ``i`` (from 1) of wave ``w`` is ``w{w}-t{i:05d}``. Each calls one of
    :data:`SCENARIO_TOOLS` with ``{"task": <id>, "target": "<kind>-<n>"}``, with
    a predicted success rate in [0.6, 0.99] (3 decimals) and a priority 0-3;
    about one task in ten past wave 1 depends on one or two tasks of the wave
    before it. No task is pinned to an agent; ``confidence`` is left to default
    to the predicted rate.

    Raises :class:`InputError` when a size is not a whole number >= 1.

    >>> tasks = default_tasks()
    >>> len(tasks), tasks[0].task_id, tasks[-1].task_id, tasks == default_tasks(21)
    (60, 'w1-t00001', 'w3-t00020', True)
    >>> all(d.startswith(f"w{t.wave - 1}-") for t in tasks for d in t.dependencies)
    True
    """
    for name, size in (("waves", waves), ("tasks_per_wave", tasks_per_wave)):
        if type(size) is not int or size < 1:
            raise InputError(f"{name}: must be a whole number >= 1 (got {size!r})")
    rng = random.Random(seed)
    draw, pick, task = rng.random, rng.sample, PredictedTask
    kinds = [(tool, _TARGETS[tool] + "-") for tool in SCENARIO_TOOLS]
    n_tools = len(kinds)
    out: list[PredictedTask] = []
    previous: list[str] = []
    for w in range(1, waves + 1):
        ids = [f"w{w}-t{i:05d}" for i in range(1, tasks_per_wave + 1)]
        for tid in ids:
            tool, kind = kinds[int(draw() * n_tools)]
            rate = round(0.6 + 0.39 * draw(), 3)
            priority = int(draw() * 4)
            deps: list[str] = []
            if previous and draw() < 0.1:
                deps = pick(previous, min(len(previous), 1 + int(draw() * 2)))
            args = {"task": tid, "target": kind + str(int(draw() * 1000))}
            out.append(task(tid, tool, rate, w, priority, args, deps))
        previous = ids
    return out
