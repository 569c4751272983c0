"""``Engine.from_files(catalogue=..., extend=True)``: the file's tools decided beside the
shipped ones; a shipped name in the file refused before any engine is built."""

from __future__ import annotations

import pytest

from buddy.engine import Engine, ExecutionMode
from buddy.engine.core._replay import replay
from buddy.rules.base.errors import RuleTableError
from tests.helpers import ManualClock

MINE = """\
[[tool]]
name = "crm_lookup"
risk = "LOW"
reversible = true
dependencies = ["memory_search"]
"""


@pytest.fixture
def catalogue(tmp_path):
    path = tmp_path / "tools.toml"
    path.write_text(MINE, encoding="utf-8")
    return path


def test_the_files_tools_and_the_shipped_ones_are_decided(catalogue):
    engine = Engine.from_files(catalogue=catalogue, extend=True, clock=ManualClock())
    engine.register_handler("crm_lookup", live=lambda args: {"found": args["who"]})
    run = engine.execute("a", "crm_lookup", {"who": "ada"}, confidence=0.95)
    assert (run.ok, run.mode, run.result) == (True, ExecutionMode.LIVE, {"found": "ada"})
    email = engine.decide("a", "msgraph_send_email", 0.95)
    assert (email.mode, email.state.name) == (ExecutionMode.DRY_RUN, "AWAITING_APPROVAL")
    assert engine.decide("a", "form_fill", 0.95).mode is ExecutionMode.LIVE
    assert replay(engine.audit).ok


def test_without_extend_the_file_replaces_the_shipped_catalogue(catalogue):
    text = MINE.replace('dependencies = ["memory_search"]', "")
    catalogue.write_text(text, encoding="utf-8")
    engine = Engine.from_files(catalogue=catalogue, clock=ManualClock())
    assert engine.registry.names() == ["crm_lookup"]
    assert engine.decide("a", "form_fill", 0.95).rule == "tool.unknown"


def test_a_shipped_name_is_refused(catalogue):
    catalogue.write_text(MINE + '\n[[tool]]\nname = "form_fill"\nrisk = "LOW"\n'
                                'reversible = true\n', encoding="utf-8")
    with pytest.raises(RuleTableError) as info:
        Engine.from_files(catalogue=catalogue, extend=True, clock=ManualClock())
    assert info.value.problems == [
        f"{catalogue}:7: tool[form_fill]: already in the shipped catalogue; a catalogue that "
        "extends it adds tools and never changes one (to change it, load a whole catalogue "
        "without extend)"]


def test_extend_without_a_file_is_the_shipped_catalogue():
    engine = Engine.from_files(extend=True, clock=ManualClock())
    assert engine.registry.names() == Engine.default(clock=ManualClock()).registry.names()
