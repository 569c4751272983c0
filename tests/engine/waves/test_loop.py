"""Tests of buddy.engine.waves._loop: waves end to end through the embedding API."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

from buddy.engine import Engine, replay
from buddy.engine.waves import PredictedTask, VirtualClock, WaveLoop

README = Path(__file__).resolve().parents[3] / "README.md"
MARK = "<!-- tests/engine/waves/test_loop.py runs this block"


def test_the_readme_example_prints_what_it_says():
    text = README.read_text("utf-8")
    code, shown = re.search(re.escape(MARK) + r".*?```python\n(.*?)```\n\n```text\n(.*?)```",
                            text, re.S).groups()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    assert out.getvalue() == shown


def test_waves_learn_from_the_earlier_ones_and_replay():
    clock = VirtualClock(1_700_000_000.0)
    engine = Engine.default(clock=clock)
    from buddy.engine.waves import WaveSimulator, default_agents

    profiles = {p.agent_id: p for p in default_agents(4, 21)}
    WaveSimulator(engine.registry, 21, profiles).install(engine)
    loop = WaveLoop.build(engine, list(profiles), strategy="PRIORITY_BASED", clock=clock)
    got = []
    loop.feedback.subscribe("prediction", got.append)
    waves = {w: [PredictedTask(f"w{w}-{i}", "math_compute", 0.8, wave=w, priority=i % 3)
                 for i in range(12)] for w in (1, 2)}
    rates_after = []
    outcomes = []

    def seen(outcome):
        outcomes.append(outcome)
        rates_after.append({a: s.success_rate for a, s in loop.manager.agents.items()
                            if s.available})

    loop.run(waves, seen)
    assert [o.plan.wave for o in outcomes] == [1, 2]
    assert outcomes[1].run.start == outcomes[0].run.end  # waves are barriers
    assert {s.target for s in got} == {"prediction"} and len(got) >= 4
    # wave 2's plan read wave 1's outcomes: its first top-priority task went to the agent
    # with the best record after wave 1 (PRIORITY_BASED)
    best = max(rates_after[0], key=lambda a: (rates_after[0][a], -list(profiles).index(a)))
    first_top = next(a for a in outcomes[1].plan.assignments if a.priority == 2)
    assert first_top.agent_id == best
    assert replay(engine.audit).ok


def test_an_objective_builds_a_loop_the_optimizer_plans():
    clock = VirtualClock(1_700_000_000.0)
    engine = Engine.default(clock=clock)
    from buddy.engine.waves import WaveSimulator, default_agents, default_tasks

    profiles = {p.agent_id: p for p in default_agents(4, 21)}
    WaveSimulator(engine.registry, 21, profiles).install(engine)
    loop = WaveLoop.build(engine, list(profiles), strategy="maximize_success", clock=clock)
    assert loop.scheduler is not None and loop.manager.strategy_name == "maximize_success"
    tasks = default_tasks(21, waves=2, tasks_per_wave=16)
    outcomes = loop.run({w: [t for t in tasks if t.wave == w] for w in (1, 2)})
    for o in outcomes:
        assert o.comparison is not None and o.comparison.tasks == 16
        assert {t.task_id for t in o.scheduled_tasks} == {a.task_id for a in o.plan.assignments}
    report = replay(engine.audit)
    assert report.ok and report.plans >= 2
