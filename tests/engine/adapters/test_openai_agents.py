"""buddy inside the OpenAI Agents SDK, end to end through the real SDK, offline.

The SDK's own scripted model (``agents.testing.ScriptedModel``) plays the LLM, so no
API key and no network are needed; tracing is off in every run and a socket that
tries to connect fails the test.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agents import (
    Agent,
    FunctionTool,
    RunConfig,
    Runner,
    RunState,
    ToolApprovalItem,
    ToolCallOutputItem,
    function_tool,
)
from agents.testing import ScriptedModel, assistant_message, function_call

from buddy.engine import (
    AuditLog,
    Engine,
    ExecutionMode,
    RiskLevel,
    TicketError,
    ToolContract,
    ToolContractRegistry,
)
from buddy.engine import replay as replay_trail
from buddy.engine.adapters.openai_agents import (
    SDK_ALWAYS_APPROVER,
    SDK_APPROVER,
    UnknownArgumentsError,
    apply_answers,
    approve,
    buddy_function_tool,
    buddy_needs_approval,
    guard_function_tool,
    reject,
)
from buddy.rules import EscalationTable
from buddy.rules.base.errors import InputError

ROOT = Path(__file__).resolve().parents[3]
OFFLINE = RunConfig(tracing_disabled=True)


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No API key, and any attempt to open a connection fails the test."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)

    def no_network(self: socket.socket, address: Any) -> None:
        raise AssertionError(f"the test tried to connect to {address!r}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    yield


def catalogue() -> ToolContractRegistry:
    return ToolContractRegistry([
        ToolContract(name="search_docs", risk=RiskLevel.LOW, reversible=True),
        ToolContract(name="send_email", risk=RiskLevel.HIGH, reversible=False,
                     requires_approval=True),
        ToolContract(name="delete_records", risk=RiskLevel.HIGH, reversible=False,
                     requires_approval=True),
    ])


class Clock:
    """A clock that ticks a second per reading and can jump."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def make_engine(clock: Clock | None = None, audit: AuditLog | None = None,
                **kwargs: Any) -> Engine:
    kwargs.setdefault("default_confidence", 0.9)
    return Engine(catalogue(), EscalationTable.default(), clock=clock or Clock(), audit=audit,
                  **kwargs)


class Tools:
    """Four tools that count their real invocations."""

    def __init__(self) -> None:
        self.calls: dict[str, list[dict[str, Any]]] = {
            "search_docs": [], "send_email": [], "delete_records": [], "wipe_disk": []}

        @function_tool
        def search_docs(query: str) -> str:
            """Search the docs."""
            self.calls["search_docs"].append({"query": query})
            return f"3 pages about {query}"

        @function_tool
        def send_email(to: str, body: str) -> str:
            """Send an email."""
            self.calls["send_email"].append({"to": to, "body": body})
            return f"sent to {to}"

        @function_tool
        def delete_records(table: str) -> str:
            """Delete every record of a table."""
            self.calls["delete_records"].append({"table": table})
            return f"deleted {table}"

        @function_tool
        def wipe_disk(device: str) -> str:
            """A tool buddy's catalogue does not know."""
            self.calls["wipe_disk"].append({"device": device})
            return f"wiped {device}"

        self.tools = [search_docs, send_email, delete_records, wipe_disk]

    def guarded(self, engine: Engine, **kwargs: Any) -> list[Any]:
        return [guard_function_tool(t, engine, agent="agent-1", **kwargs) for t in self.tools]

    def counts(self) -> dict[str, int]:
        return {name: len(calls) for name, calls in self.calls.items()}


def outputs(result: Any) -> dict[str, str]:
    """The tool outputs the model was given, by call id."""
    out = {}
    for item in result.new_items:
        if isinstance(item, ToolCallOutputItem):
            raw = item.raw_item
            call_id = raw["call_id"] if isinstance(raw, dict) else raw.call_id
            out[call_id] = str(item.output)
    return out


FOUR_CALLS = [
    function_call("search_docs", {"query": "refunds"}, call_id="call-1"),
    function_call("send_email", {"to": "ann@example.com", "body": "Refund sent."},
                  call_id="call-2"),
    function_call("delete_records", {"table": "customers"}, call_id="call-3"),
    function_call("wipe_disk", {"device": "/dev/sda"}, call_id="call-4"),
]


class TestEndToEnd:
    def test_live_approval_with_edit_rejection_unknown_and_two_resumes(self) -> None:
        engine, tools = make_engine(), Tools()
        model = ScriptedModel([FOUR_CALLS, [assistant_message("done")],
                               [assistant_message("done again")]])
        agent = Agent(name="assistant", model=model, tools=tools.guarded(engine))

        async def scenario() -> tuple[Any, Any, Any, dict[str, Any]]:
            first = await Runner.run(agent, "handle the refund", run_config=OFFLINE)
            state = first.to_state()
            by_tool = {item.tool_name: item for item in first.interruptions}
            approve(state, by_tool["send_email"], by="alice", reason="checked",
                    args={"to": "ann@example.com", "body": "Your refund is on its way."})
            reject(state, by_tool["delete_records"], by="bob", reason="never in a chat")
            saved = state.to_json()
            resumed = await Runner.run(agent, state, run_config=OFFLINE)
            again = await Runner.run(agent, await RunState.from_json(agent, saved),
                                     run_config=OFFLINE)
            return first, resumed, again, saved

        first, resumed, again, saved = asyncio.run(scenario())

        # the run stopped for the two calls buddy wants a person for, and only those
        assert sorted(i.tool_name for i in first.interruptions) == \
            ["delete_records", "send_email"]
        seen = outputs(first)
        assert seen["call-1"] == "3 pages about refunds"           # read-only: LIVE
        assert seen["call-4"].startswith("buddy refused wipe_disk:")  # unknown: fails closed
        assert "tool.unknown" in seen["call-4"]
        json.dumps(saved)  # the SDK's state (and so the interruption) is JSON

        # approved with edited arguments: the tool got the edited ones, once
        assert tools.calls["send_email"] == [
            {"to": "ann@example.com", "body": "Your refund is on its way."}]
        answered = outputs(resumed)
        assert answered["call-2"] == "sent to ann@example.com"
        assert answered["call-3"] == "bob rejected delete_records: never in a chat; it did not run"
        assert resumed.final_output == "done"

        # resumed a second time from the same saved state: nothing runs twice
        assert again.final_output == "done again"
        assert outputs(again)["call-2"] == "sent to ann@example.com"
        assert tools.counts() == {"search_docs": 1, "send_email": 1, "delete_records": 0,
                                  "wipe_disk": 0}

        # buddy's tickets hold who answered and how
        tickets = {t.tool: t for t in engine.tickets(status=None)}
        assert tickets["send_email"].status == "resumed"
        assert tickets["send_email"].by == "alice"
        assert tickets["delete_records"].status == "denied"
        assert tickets["delete_records"].by == "bob"
        assert replay_trail(engine.audit).ok

    def test_tickets_are_open_while_the_run_waits(self) -> None:
        engine, tools = make_engine(), Tools()
        model = ScriptedModel([FOUR_CALLS])
        agent = Agent(name="assistant", model=model, tools=tools.guarded(engine))
        first = asyncio.run(Runner.run(agent, "go", run_config=OFFLINE))
        pending = engine.tickets(status="pending")
        assert sorted((t.tool, t.agent) for t in pending) == [
            ("delete_records", "agent-1"), ("send_email", "agent-1")]
        assert len(first.interruptions) == 2
        assert tools.counts()["send_email"] == 0

    def test_a_plain_sdk_approval_is_recorded_on_the_ticket(self) -> None:
        engine, tools = make_engine(), Tools()
        model = ScriptedModel([[FOUR_CALLS[1]], [assistant_message("done")]])
        agent = Agent(name="assistant", model=model, tools=tools.guarded(engine))

        async def scenario() -> Any:
            first = await Runner.run(agent, "go", run_config=OFFLINE)
            state = first.to_state()
            state.approve(first.interruptions[0])  # the SDK's own approval, no buddy call
            return await Runner.run(agent, state, run_config=OFFLINE)

        resumed = asyncio.run(scenario())
        assert outputs(resumed)["call-2"] == "sent to ann@example.com"
        assert tools.calls["send_email"] == [{"to": "ann@example.com", "body": "Refund sent."}]
        (ticket,) = engine.tickets(status=None)
        assert (ticket.status, ticket.by) == ("resumed", SDK_APPROVER)
        assert replay_trail(engine.audit).ok

    def test_a_ticket_denied_out_of_band_never_runs_even_if_the_sdk_approves(self) -> None:
        engine, tools = make_engine(), Tools()
        model = ScriptedModel([[FOUR_CALLS[1]], [assistant_message("done")]])
        agent = Agent(name="assistant", model=model, tools=tools.guarded(engine))

        async def scenario() -> Any:
            first = await Runner.run(agent, "go", run_config=OFFLINE)
            (ticket,) = engine.tickets(status="pending")
            engine.deny(ticket.id, "not to customers", by="carol")  # e.g. from a chat button
            state = first.to_state()
            state.approve(first.interruptions[0])
            return await Runner.run(agent, state, run_config=OFFLINE)

        resumed = asyncio.run(scenario())
        assert outputs(resumed)["call-2"].startswith("buddy refused send_email:")
        assert tools.counts()["send_email"] == 0
        assert replay_trail(engine.audit).ok


class TestRestartsAndRepeats:
    def test_a_run_saved_answered_and_resumed_by_other_processes_runs_once(
            self, tmp_path: Path) -> None:
        """Three engines on one file log stand for three processes: the first run stops
        and its state is saved; another process answers and resumes it; a third resumes
        the same saved state again and runs nothing."""
        path = tmp_path / "audit.jsonl"
        tools = Tools()
        model = ScriptedModel([[FOUR_CALLS[1]], [assistant_message("done")],
                               [assistant_message("done again")]])

        def process() -> tuple[Engine, Agent[Any]]:
            engine = make_engine(audit=AuditLog.open(path, clock=Clock()))
            return engine, Agent(name="assistant", model=model, tools=tools.guarded(engine))

        async def scenario() -> tuple[Any, Any]:
            engine, agent = process()
            first = await Runner.run(agent, "go", run_config=OFFLINE)
            saved = json.dumps(first.to_state().to_json())
            engine.audit.close()

            engine, agent = process()  # a restart: the ticket is read back from the log
            state = await RunState.from_json(agent, json.loads(saved))
            (item,) = state.get_interruptions()
            approve(state, item, by="alice", args={"to": "ann@example.com", "body": "Edited."})
            answered = json.dumps(state.to_json())
            resumed = await Runner.run(agent, state, run_config=OFFLINE)
            engine.audit.close()

            engine, agent = process()
            again = await Runner.run(agent, await RunState.from_json(agent, json.loads(answered)),
                                     run_config=OFFLINE)
            engine.audit.close()
            return resumed, again

        resumed, again = asyncio.run(scenario())
        assert tools.calls["send_email"] == [{"to": "ann@example.com", "body": "Edited."}]
        assert outputs(resumed)["call-2"] == "sent to ann@example.com"
        assert outputs(again)["call-2"] == "sent to ann@example.com"  # as the log recorded it
        assert replay_trail(path).ok

    def test_answers_given_elsewhere_are_carried_onto_the_saved_run(
            self, tmp_path: Path) -> None:
        """The app saves the stopped run; people answer buddy's tickets from another
        process (here: another engine on the same file log); the app applies the
        answers to the saved run and resumes it."""
        path = tmp_path / "audit.jsonl"
        tools = Tools()
        model = ScriptedModel([FOUR_CALLS[1:3], [assistant_message("done")]])

        def process() -> tuple[Engine, Agent[Any]]:
            engine = make_engine(audit=AuditLog.open(path, clock=Clock()))
            return engine, Agent(name="assistant", model=model, tools=tools.guarded(engine))

        async def scenario() -> tuple[list[Any], Any]:
            engine, agent = process()
            first = await Runner.run(agent, "go", run_config=OFFLINE)
            saved = json.dumps(first.to_state().to_json())

            other, _ = process()  # e.g. a chat button's handler
            tickets = {t.tool: t.id for t in other.tickets()}
            other.approve(tickets["send_email"], by="alice",
                          args={"to": "ann@example.com", "body": "Edited elsewhere."})
            other.deny(tickets["delete_records"], "not in a chat", by="bob")
            other.audit.close()

            state = await RunState.from_json(agent, json.loads(saved))
            applied = apply_answers(state)
            resumed = await Runner.run(agent, state, run_config=OFFLINE)
            engine.audit.close()
            return applied, resumed

        applied, resumed = asyncio.run(scenario())
        assert sorted((t.tool, t.status, t.by) for t in applied) == [
            ("delete_records", "denied", "bob"), ("send_email", "approved", "alice")]
        assert tools.calls["send_email"] == [
            {"to": "ann@example.com", "body": "Edited elsewhere."}]
        assert outputs(resumed)["call-3"] == \
            "buddy did not run delete_records: bob denied it: not in a chat"
        assert tools.counts()["delete_records"] == 0
        assert replay_trail(path).ok

    def test_apply_answers_leaves_waiting_calls_waiting(self) -> None:
        engine, tools = make_engine(), Tools()
        model = ScriptedModel([[FOUR_CALLS[1]]])
        agent = Agent(name="assistant", model=model, tools=tools.guarded(engine))
        first = asyncio.run(Runner.run(agent, "go", run_config=OFFLINE))
        state = first.to_state()
        assert apply_answers(state) == []
        assert [i.call_id for i in state.get_interruptions()] == ["call-2"]

    def test_a_call_id_seen_before_is_not_run_again(self) -> None:
        engine, tools = make_engine(), Tools()
        model = ScriptedModel([[FOUR_CALLS[0]], [assistant_message("done")],
                               [FOUR_CALLS[0]], [assistant_message("done")]])
        agent = Agent(name="assistant", model=model, tools=tools.guarded(engine))
        first = asyncio.run(Runner.run(agent, "go", run_config=OFFLINE))
        second = asyncio.run(Runner.run(agent, "go", run_config=OFFLINE))
        assert outputs(first)["call-1"] == outputs(second)["call-1"] == "3 pages about refunds"
        assert tools.counts()["search_docs"] == 1
        assert replay_trail(engine.audit).ok

    def test_an_expired_ticket_never_runs_even_if_the_sdk_approves(self) -> None:
        clock = Clock()
        engine, tools = make_engine(clock), Tools()
        model = ScriptedModel([[FOUR_CALLS[1]], [assistant_message("done")]])
        agent = Agent(name="assistant", model=model, tools=tools.guarded(engine))

        async def scenario() -> Any:
            first = await Runner.run(agent, "go", run_config=OFFLINE)
            state = first.to_state()
            clock.now += 2 * 86_400.0  # two days later
            state.approve(first.interruptions[0])
            return await Runner.run(agent, state, run_config=OFFLINE)

        resumed = asyncio.run(scenario())
        said = outputs(resumed)["call-2"]
        assert said.startswith("buddy refused send_email:") and "expired" in said
        assert tools.counts()["send_email"] == 0
        assert replay_trail(engine.audit).ok

    def test_approving_an_expired_ticket_raises_and_leaves_the_sdk_state_alone(self) -> None:
        clock = Clock()
        engine, tools = make_engine(clock), Tools()
        model = ScriptedModel([[FOUR_CALLS[1]]])
        agent = Agent(name="assistant", model=model, tools=tools.guarded(engine))
        first = asyncio.run(Runner.run(agent, "go", run_config=OFFLINE))
        state = first.to_state()
        clock.now += 2 * 86_400.0
        with pytest.raises(TicketError, match="expired"):
            approve(state, first.interruptions[0], by="alice")
        # the SDK was not told either: resumed, the run stops at the same call again
        again = asyncio.run(Runner.run(agent, state, run_config=OFFLINE))
        assert [i.call_id for i in again.interruptions] == ["call-2"]
        assert tools.counts()["send_email"] == 0

    def test_a_call_decided_differently_in_between_runs_as_decided(self) -> None:
        """needs_approval asks buddy twice (check, then the ticket); when the second
        answer needs no person (here the provider's confidence fell), that call runs."""
        said = iter([0.9, 0.6])
        engine = make_engine(default_confidence=None,
                             confidence_provider=lambda agent, tool, args: next(said))
        tools = Tools()
        model = ScriptedModel([[FOUR_CALLS[1]], [assistant_message("done")]])
        agent = Agent(name="assistant", model=model, tools=tools.guarded(engine))
        result = asyncio.run(Runner.run(agent, "go", run_config=OFFLINE))
        assert result.interruptions == []
        assert outputs(result)["call-2"].startswith("buddy ran send_email in MOCK only")
        assert tools.counts()["send_email"] == 0
        assert engine.tickets(status=None) == []
        assert replay_trail(engine.audit).ok


class TestModes:
    def test_a_call_below_live_is_simulated_and_the_model_is_told(self) -> None:
        engine, tools = make_engine(), Tools()
        model = ScriptedModel([[FOUR_CALLS[0]], [assistant_message("done")]])
        agent = Agent(name="assistant", model=model,
                      tools=tools.guarded(engine, confidence=0.6))  # LOW risk: DRY_RUN
        result = asyncio.run(Runner.run(agent, "go", run_config=OFFLINE))
        said = outputs(result)["call-1"]
        assert said.startswith("buddy ran search_docs in MOCK only (simulated, nothing was done)")
        assert tools.counts()["search_docs"] == 0

    def test_a_tool_error_is_a_failed_live_run_and_the_model_gets_the_sdk_message(
            self) -> None:
        engine = make_engine()

        @buddy_function_tool(engine, agent="agent-1")
        def search_docs(query: str) -> str:
            """Search the docs."""
            raise ConnectionError("index offline")

        model = ScriptedModel([[FOUR_CALLS[0]], [assistant_message("done")]])
        agent = Agent(name="assistant", model=model, tools=[search_docs])
        result = asyncio.run(Runner.run(agent, "go", run_config=OFFLINE))
        assert outputs(result)["call-1"] == \
            "An error occurred while running the tool. Please try again."
        runs = [e for e in engine.audit.events() if e.kind == "execution" and
                e.data.get("mode") == ExecutionMode.LIVE.value]
        assert [(e.data["ok"], "index offline" in e.data["error"]) for e in runs] == \
            [(False, True)]

    def test_the_decorator_keeps_the_tool_schema(self) -> None:
        engine = make_engine()

        @buddy_function_tool(engine, agent="agent-1")
        def send_email(to: str, body: str) -> str:
            """Send an email."""
            return "sent"

        assert send_email.name == "send_email"
        assert send_email.params_json_schema["required"] == ["to", "body"]
        assert callable(send_email.needs_approval)


class TestNeedsApproval:
    def test_true_exactly_when_buddy_waits_for_a_person(self) -> None:
        engine = make_engine()
        email = buddy_needs_approval(engine, agent="agent-1", tool="send_email")
        search = buddy_needs_approval(engine, agent="agent-1", tool="search_docs")
        unknown = buddy_needs_approval(engine, agent="agent-1", tool="wipe_disk")
        assert asyncio.run(email(None, {"to": "a"}, "c-1")) is True  # type: ignore[arg-type]
        assert asyncio.run(search(None, {"query": "a"}, "c-2")) is False  # type: ignore[arg-type]
        # refused outright: no person can make it run, so none is asked
        assert asyncio.run(unknown(None, {}, "c-3")) is False  # type: ignore[arg-type]
        assert engine.tickets(status=None) == []  # it only asks
        assert [e.kind for e in engine.audit.events()] == ["open"]  # and records nothing
        with pytest.raises(InputError, match="tool must be a non-empty string"):
            buddy_needs_approval(engine, agent="agent-1", tool="")

    def test_the_tools_own_setting_is_kept(self) -> None:
        engine, tools = make_engine(), Tools()
        always = function_tool(lambda query: query, name_override="search_docs",
                               needs_approval=True)
        ask = guard_function_tool(always, engine, agent="a").needs_approval
        assert callable(ask)
        assert asyncio.run(ask(None, {"query": "x"}, "c-1")) is True  # type: ignore[arg-type]
        assert engine.tickets(status=None) == []  # buddy wants no person for it: no ticket
        plain = guard_function_tool(tools.tools[0], engine, agent="a", approvals=False)
        assert plain.needs_approval is False

    def test_a_tool_that_always_asks_has_buddys_ticket_and_runs_once_approved(self) -> None:
        """The tool's own needs_approval=True says yes before buddy is asked; buddy is
        asked anyway, so the call has its ticket and the SDK's approval is recorded on it
        (without the ticket the call ran MOCK: approved, yet never run)."""
        engine, calls = make_engine(), []

        @function_tool(needs_approval=True)
        def send_email(to: str, body: str) -> str:
            """Send an email."""
            calls.append(to)
            return f"sent to {to}"

        model = ScriptedModel([[FOUR_CALLS[1]], [assistant_message("done")]])
        agent = Agent(name="assistant", model=model,
                      tools=[guard_function_tool(send_email, engine, agent="agent-1")])

        async def scenario() -> Any:
            first = await Runner.run(agent, "go", run_config=OFFLINE)
            assert [t.tool for t in engine.tickets()] == ["send_email"]
            state = first.to_state()
            state.approve(first.interruptions[0])
            return await Runner.run(agent, state, run_config=OFFLINE)

        resumed = asyncio.run(scenario())
        assert outputs(resumed)["call-2"] == "sent to ann@example.com"
        assert calls == ["ann@example.com"]
        (ticket,) = engine.tickets(status=None)
        assert (ticket.status, ticket.by) == ("resumed", SDK_APPROVER)
        assert replay_trail(engine.audit).ok


class TestBadInput:
    def test_guard_wants_a_function_tool_and_an_agent(self) -> None:
        engine, tools = make_engine(), Tools()
        with pytest.raises(InputError, match="tool must be an Agents SDK FunctionTool"):
            guard_function_tool(lambda: None, engine, agent="a")  # type: ignore[arg-type]
        with pytest.raises(InputError, match="agent must be a non-empty string"):
            guard_function_tool(tools.tools[0], engine, agent="")
        guarded = guard_function_tool(tools.tools[0], engine, agent="a")
        with pytest.raises(InputError, match="already guarded by buddy"):
            guard_function_tool(guarded, engine, agent="a")

    def test_an_approval_item_of_an_unguarded_tool_is_refused(self) -> None:
        tools = Tools()
        plain = function_tool(lambda to: to, name_override="send_email", needs_approval=True)
        model = ScriptedModel([[FOUR_CALLS[1]]])
        agent = Agent(name="assistant", model=model, tools=[plain])
        first = asyncio.run(Runner.run(agent, "go", run_config=OFFLINE))
        (item,) = first.interruptions
        assert isinstance(item, ToolApprovalItem)
        with pytest.raises(InputError, match="send_email is not a tool guarded by buddy"):
            approve(first.to_state(), item, by="alice")
        assert tools.counts()["send_email"] == 0

    def test_approve_wants_who(self) -> None:
        engine, tools = make_engine(), Tools()
        model = ScriptedModel([[FOUR_CALLS[1]]])
        agent = Agent(name="assistant", model=model, tools=tools.guarded(engine))
        first = asyncio.run(Runner.run(agent, "go", run_config=OFFLINE))
        with pytest.raises(InputError, match="by must be a non-empty string"):
            approve(first.to_state(), first.interruptions[0], by="")

    def test_arguments_that_are_not_an_object_never_run(self) -> None:
        engine, tools = make_engine(), Tools()
        model = ScriptedModel([[function_call("search_docs", "[1, 2]", call_id="call-9")],
                               [assistant_message("done")]])
        agent = Agent(name="assistant", model=model, tools=tools.guarded(engine))

        async def scenario() -> tuple[Any, Any]:
            first = await Runner.run(agent, "go", run_config=OFFLINE)
            state = first.to_state()
            for item in first.interruptions:  # the SDK asks a person about arguments
                state.approve(item)           # it cannot read; buddy still refuses them
            return first, await Runner.run(agent, state, run_config=OFFLINE)

        first, resumed = asyncio.run(scenario())
        assert [i.tool_name for i in first.interruptions] == ["search_docs"]
        assert outputs(resumed)["call-9"] == (
            "buddy refused search_docs: its arguments are not a JSON object; "
            "the tool did not run")
        assert tools.counts()["search_docs"] == 0


class TestEditedArguments:
    """Arguments a function tool does not take are refused: the SDK would drop them, and
    the tool run without what buddy recorded as run."""

    EDITED = {"to": "ann@example.com", "body": "Hi", "bcc": "everyone@example.com"}

    def stopped(self) -> tuple[Engine, Tools, Agent[Any], Any]:
        engine, tools = make_engine(), Tools()
        model = ScriptedModel([[FOUR_CALLS[1]], [assistant_message("done")]])
        agent = Agent(name="assistant", model=model, tools=tools.guarded(engine))
        first = asyncio.run(Runner.run(agent, "go", run_config=OFFLINE))
        return engine, tools, agent, first

    def test_approve_refuses_them_and_records_nothing(self) -> None:
        engine, tools, agent, first = self.stopped()
        state = first.to_state()
        with pytest.raises(UnknownArgumentsError,
                           match=r"^approve: send_email does not take bcc \(it takes: to, "
                                 r"body\)$"):
            approve(state, first.interruptions[0], by="alice", args=self.EDITED)
        assert [t.status for t in engine.tickets(status=None)] == ["pending"]
        again = asyncio.run(Runner.run(agent, state, run_config=OFFLINE))
        assert [i.call_id for i in again.interruptions] == ["call-2"]  # SDK not told either
        assert tools.counts()["send_email"] == 0

    def test_edited_elsewhere_they_fail_the_run_and_nothing_runs(self) -> None:
        engine, tools, agent, first = self.stopped()
        (ticket,) = engine.tickets()
        engine.approve(ticket.id, by="alice", args=self.EDITED)  # out of band: not checked
        state = first.to_state()
        assert [t.id for t in apply_answers(state)] == [ticket.id]
        resumed = asyncio.run(Runner.run(agent, state, run_config=OFFLINE))
        assert outputs(resumed)["call-2"] == (
            "buddy refused send_email: send_email does not take bcc (it takes: to, body); "
            "the tool did not run")
        assert tools.counts()["send_email"] == 0
        runs = [e.data for e in engine.audit.events() if e.kind == "execution"
                and e.data.get("mode") == "LIVE"]
        assert [(r["ok"], r["error"]) for r in runs] == [
            (False, "UnknownArgumentsError: send_email does not take bcc (it takes: to, body)")]
        assert replay_trail(engine.audit).ok

    def test_a_models_call_with_them_never_runs(self) -> None:
        engine, tools = make_engine(), Tools()
        model = ScriptedModel([
            [function_call("search_docs", {"query": "q", "limit": 5}, call_id="call-1")],
            [assistant_message("done")]])
        agent = Agent(name="assistant", model=model, tools=tools.guarded(engine))
        result = asyncio.run(Runner.run(agent, "go", run_config=OFFLINE))
        assert outputs(result)["call-1"] == (
            "buddy refused search_docs: search_docs does not take limit (it takes: query); "
            "the tool did not run")
        assert tools.counts()["search_docs"] == 0

    def test_arguments_it_takes_run(self) -> None:
        engine, tools, agent, first = self.stopped()
        state = first.to_state()
        approve(state, first.interruptions[0], by="alice",
                args={"to": "bob@example.com", "body": "Hi"})
        asyncio.run(Runner.run(agent, state, run_config=OFFLINE))
        assert tools.calls["send_email"] == [{"to": "bob@example.com", "body": "Hi"}]


class TestIdempotencyKeys:
    def test_a_key_is_a_digest_the_same_in_every_process(self) -> None:
        from buddy.engine.adapters.openai_agents import _idempotency_key

        key = _idempotency_key("mailer", "send_email", "call-1")
        assert key == "openai-agents:c594b7dca7825507df6038ed9d70d25105d94f97"
        done = subprocess.run(
            [sys.executable, "-c", "from buddy.engine.adapters.openai_agents import "
             "_idempotency_key as k; print(k('mailer', 'send_email', 'call-1'))"],
            capture_output=True, text=True, timeout=120, check=True)
        assert done.stdout.strip() == key

    def test_separators_inside_names_make_no_two_calls_one(self) -> None:
        """Joined with '/', agent 'a/search_docs/x' with call 'y' and agent 'a' with call
        'x/search_docs/y' had one key: the second call was refused as a repeat."""
        engine, tools = make_engine(), Tools()
        results = []
        for agent_name, call_id, query in (("a/search_docs/x", "y", "refunds"),
                                           ("a", "x/search_docs/y", "returns")):
            tool = guard_function_tool(tools.tools[0], engine, agent=agent_name)
            model = ScriptedModel([
                [function_call("search_docs", {"query": query}, call_id=call_id)],
                [assistant_message("done")]])
            agent = Agent(name="assistant", model=model, tools=[tool])
            results.append(asyncio.run(Runner.run(agent, "go", run_config=OFFLINE)))
        assert [list(outputs(r).values()) for r in results] == [
            ["3 pages about refunds"], ["3 pages about returns"]]
        assert tools.calls["search_docs"] == [{"query": "refunds"}, {"query": "returns"}]

    def test_a_long_call_id_with_a_newline_still_waits_and_runs_once(self) -> None:
        engine, tools = make_engine(), Tools()
        call_id = "call\n" + "x" * 300
        model = ScriptedModel([
            [function_call("send_email", {"to": "ann@example.com", "body": "Hi"},
                           call_id=call_id)],
            [assistant_message("done")], [assistant_message("done again")]])
        agent = Agent(name="assistant", model=model, tools=tools.guarded(engine))

        async def scenario() -> tuple[Any, Any]:
            first = await Runner.run(agent, "go", run_config=OFFLINE)
            state = first.to_state()
            approve(state, first.interruptions[0], by="alice")
            saved = state.to_json()
            resumed = await Runner.run(agent, state, run_config=OFFLINE)
            again = await Runner.run(agent, await RunState.from_json(agent, saved),
                                     run_config=OFFLINE)
            return resumed, again

        resumed, again = asyncio.run(scenario())
        assert outputs(resumed)[call_id] == outputs(again)[call_id] == "sent to ann@example.com"
        assert tools.counts()["send_email"] == 1
        (ticket,) = engine.tickets(status=None)
        assert (ticket.status, ticket.by) == ("resumed", "alice")
        assert ticket.key is not None and ticket.key.startswith("openai-agents:")


class TestAlwaysApprove:
    """state.approve(item, always_approve=True): the SDK runs the tool's later calls
    without asking anyone; buddy still decides each, and one that waits for a person
    gets its ticket, approved as SDK_ALWAYS_APPROVER's (it ran MOCK, silently, before)."""

    def scenario(self, engine: Engine, tools: Tools) -> Any:
        model = ScriptedModel([
            [FOUR_CALLS[1]],
            [function_call("send_email", {"to": "bob@example.com", "body": "Hi"},
                           call_id="call-5")],
            [assistant_message("done")]])
        agent = Agent(name="assistant", model=model, tools=tools.guarded(engine))

        async def run() -> Any:
            first = await Runner.run(agent, "go", run_config=OFFLINE)
            state = first.to_state()
            state.approve(first.interruptions[0], always_approve=True)
            return await Runner.run(agent, state, run_config=OFFLINE)

        return asyncio.run(run())

    def test_each_later_call_is_approved_through_buddy(self) -> None:
        engine, tools = make_engine(), Tools()
        resumed = self.scenario(engine, tools)
        assert resumed.interruptions == []
        assert outputs(resumed) == {"call-2": "sent to ann@example.com",
                                    "call-5": "sent to bob@example.com"}
        assert tools.calls["send_email"] == [{"to": "ann@example.com", "body": "Refund sent."},
                                             {"to": "bob@example.com", "body": "Hi"}]
        tickets = engine.tickets(status=None)
        assert [(t.status, t.by, t.answer_reason) for t in tickets] == [
            ("resumed", SDK_ALWAYS_APPROVER,
             "approved in the OpenAI Agents SDK (state.approve, always_approve=True)")] * 2
        assert replay_trail(engine.audit).ok

    def test_buddy_still_decides_each_later_call(self) -> None:
        engine = make_engine(default_confidence=None, confidence_provider=lambda agent, tool,
                             args: 0.9 if args.get("to") == "ann@example.com" else 0.6)
        tools = Tools()
        resumed = self.scenario(engine, tools)
        assert outputs(resumed)["call-5"].startswith("buddy ran send_email in MOCK only")
        assert tools.calls["send_email"] == [{"to": "ann@example.com", "body": "Refund sent."}]
        assert len(engine.tickets(status=None)) == 1  # no person is asked about a MOCK


SDK_MESSAGE = "An error occurred while running the tool. Please try again."


def live_runs(engine: Engine) -> list[tuple[bool, Any, str | None]]:
    """The LIVE runs buddy recorded: (ok, result, error)."""
    return [(e.data["ok"], e.data.get("result"), e.data.get("error"))
            for e in engine.audit.events()
            if e.kind == "execution" and e.data.get("mode") == ExecutionMode.LIVE.value]


class TestToolFailures:
    """A guarded ``@function_tool`` that fails (it raises, or its parameters refuse the
    arguments) is a failed LIVE run in buddy's audit, and the model is told what the
    tool's failure policy says, as the SDK would; nothing runs twice."""

    def raising(self, **kwargs: Any) -> tuple[Any, list[str]]:
        ran: list[str] = []

        @function_tool(**kwargs)
        def search_docs(query: str) -> str:
            """Search the docs."""
            ran.append(query)
            raise ConnectionError("index offline")

        return search_docs, ran

    def test_a_raising_tool_is_a_failed_run_and_the_model_gets_the_sdk_message(self) -> None:
        engine = make_engine()
        tool, ran = self.raising()
        model = ScriptedModel([[FOUR_CALLS[0]], [assistant_message("done")]])
        agent = Agent(name="assistant", model=model,
                      tools=[guard_function_tool(tool, engine, agent="agent-1")])
        result = asyncio.run(Runner.run(agent, "go", run_config=OFFLINE))
        assert outputs(result)["call-1"] == SDK_MESSAGE
        assert result.final_output == "done"
        assert ran == ["refunds"]
        assert live_runs(engine) == [(False, None, "ConnectionError: index offline")]
        assert replay_trail(engine.audit).ok

    def test_the_tools_own_failure_message_is_what_the_model_gets(self) -> None:
        engine = make_engine()
        tool, ran = self.raising(
            failure_error_function=lambda ctx, exc: f"search is down ({exc})")
        model = ScriptedModel([[FOUR_CALLS[0]], [assistant_message("done")]])
        agent = Agent(name="assistant", model=model,
                      tools=[guard_function_tool(tool, engine, agent="agent-1")])
        result = asyncio.run(Runner.run(agent, "go", run_config=OFFLINE))
        assert outputs(result)["call-1"] == "search is down (index offline)"
        assert [ok for ok, _, _ in live_runs(engine)] == [False]

    def test_a_tool_whose_policy_is_to_raise_fails_the_sdk_run(self) -> None:
        engine = make_engine()
        tool, ran = self.raising(failure_error_function=None)
        model = ScriptedModel([[FOUR_CALLS[0]], [assistant_message("done")]])
        agent = Agent(name="assistant", model=model,
                      tools=[guard_function_tool(tool, engine, agent="agent-1")])
        with pytest.raises(Exception, match="index offline"):
            asyncio.run(Runner.run(agent, "go", run_config=OFFLINE))
        assert ran == ["refunds"]
        assert live_runs(engine) == [(False, None, "ConnectionError: index offline")]
        assert replay_trail(engine.audit).ok

    def test_a_failed_call_resumed_twice_runs_once(self) -> None:
        engine = make_engine()
        ran: list[str] = []

        @function_tool
        def send_email(to: str, body: str) -> str:
            """Send an email."""
            ran.append(to)
            raise ConnectionError("smtp down")

        model = ScriptedModel([[FOUR_CALLS[1]], [assistant_message("done")],
                               [assistant_message("done again")]])
        agent = Agent(name="assistant", model=model,
                      tools=[guard_function_tool(send_email, engine, agent="agent-1")])

        async def scenario() -> tuple[Any, Any]:
            first = await Runner.run(agent, "go", run_config=OFFLINE)
            state = first.to_state()
            approve(state, first.interruptions[0], by="alice")
            saved = state.to_json()
            resumed = await Runner.run(agent, state, run_config=OFFLINE)
            again = await Runner.run(agent, await RunState.from_json(agent, saved),
                                     run_config=OFFLINE)
            return resumed, again

        resumed, again = asyncio.run(scenario())
        assert outputs(resumed)["call-2"] == outputs(again)["call-2"] == SDK_MESSAGE
        assert ran == ["ann@example.com"]
        assert live_runs(engine) == [(False, None, "ConnectionError: smtp down")]
        assert replay_trail(engine.audit).ok

    @pytest.mark.parametrize("edited", [
        {"to": 123, "body": "Hi"},
        {"to": "ann@example.com"},
        {"to": None, "body": "Hi"},
        {"to": ["ann@example.com", "bob@example.com"], "body": "Hi"},
    ], ids=["int", "missing", "null", "list"])
    def test_edited_arguments_of_the_wrong_type_are_a_failed_run_and_never_run(
            self, edited: dict[str, Any]) -> None:
        engine, tools = make_engine(), Tools()
        model = ScriptedModel([[FOUR_CALLS[1]], [assistant_message("done")]])
        agent = Agent(name="assistant", model=model, tools=tools.guarded(engine))
        first = asyncio.run(Runner.run(agent, "go", run_config=OFFLINE))
        state = first.to_state()
        approve(state, first.interruptions[0], by="alice", args=edited)
        resumed = asyncio.run(Runner.run(agent, state, run_config=OFFLINE))
        assert outputs(resumed)["call-2"] == SDK_MESSAGE
        assert tools.counts()["send_email"] == 0
        assert live_runs(engine) == [
            (False, None, "ModelBehaviorError: Invalid JSON input for tool send_email")]
        (ticket,) = engine.tickets(status=None)
        assert ticket.by == "alice"
        assert replay_trail(engine.audit).ok

    def test_a_models_call_of_the_wrong_type_is_a_failed_run(self) -> None:
        engine, tools = make_engine(), Tools()
        model = ScriptedModel([
            [function_call("search_docs", {"query": 5}, call_id="call-1")],
            [assistant_message("done")]])
        agent = Agent(name="assistant", model=model, tools=tools.guarded(engine))
        result = asyncio.run(Runner.run(agent, "go", run_config=OFFLINE))
        assert outputs(result)["call-1"] == SDK_MESSAGE
        assert tools.counts()["search_docs"] == 0
        assert [ok for ok, _, _ in live_runs(engine)] == [False]

    def test_a_hand_built_function_tool_handles_its_own_failures(self) -> None:
        engine = make_engine()

        async def invoke(ctx: Any, raw: str) -> str:
            return "could not search: index offline"

        tool = FunctionTool(name="search_docs", description="Search the docs.",
                            params_json_schema={"type": "object", "properties": {
                                "query": {"type": "string"}}, "required": ["query"],
                                "additionalProperties": False},
                            on_invoke_tool=invoke)
        model = ScriptedModel([[FOUR_CALLS[0]], [assistant_message("done")]])
        agent = Agent(name="assistant", model=model,
                      tools=[guard_function_tool(tool, engine, agent="agent-1")])
        result = asyncio.run(Runner.run(agent, "go", run_config=OFFLINE))
        # its text is its result: buddy cannot tell it from a success
        assert outputs(result)["call-1"] == "could not search: index offline"
        assert live_runs(engine) == [(True, "could not search: index offline", None)]


class TestWhoAnswers:
    """``by`` and ``reason`` come from people (an HTTP body): text buddy cannot record is
    refused before anything is recorded, so the trail stays readable."""

    LONE = json.loads('"alice\\udc80"')  # valid JSON; a lone surrogate once decoded

    def test_a_lone_surrogate_is_refused_and_nothing_is_recorded(self) -> None:
        engine, tools = make_engine(), Tools()
        model = ScriptedModel([[FOUR_CALLS[1]], [assistant_message("done")]])
        agent = Agent(name="assistant", model=model, tools=tools.guarded(engine))
        first = asyncio.run(Runner.run(agent, "go", run_config=OFFLINE))
        state, item = first.to_state(), first.interruptions[0]
        events = len(engine.audit.events())
        with pytest.raises(InputError, match=r"^approve: by must be valid Unicode text: it "
                                             r"holds a lone surrogate U\+DC80 at character 5$"):
            approve(state, item, by=self.LONE)
        with pytest.raises(InputError, match=r"^reject: reason must be valid Unicode text"):
            reject(state, item, by="bob", reason=self.LONE)
        with pytest.raises(InputError, match=r"^reject: by must be valid Unicode text"):
            reject(state, item, by=self.LONE)
        assert len(engine.audit.events()) == events
        assert [t.status for t in engine.tickets(status=None)] == ["pending"]
        json.dumps(state.to_json())  # the SDK's state was not touched either
        assert replay_trail(engine.audit).ok
        approve(state, item, by="alice")  # a good answer still works
        asyncio.run(Runner.run(agent, state, run_config=OFFLINE))
        assert tools.counts()["send_email"] == 1


def test_the_example_runs_offline() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "openai_agents_example.py")],
                          capture_output=True, text=True, timeout=120, env=env, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "interrupted for: send_email",
        "send_email ran with: {'to': 'ann@example.com', 'body': 'Your refund is on its way.'}",
        "final: done",
        "audit replays: True",
    ]


def readme_block() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("### OpenAI Agents SDK"):]
    code = section[section.index("```python\n") + 10:]
    return code[:code.index("```")]


def test_the_readme_section_is_short() -> None:
    code = readme_block()
    assert "guard_function_tool" in code
    assert len([line for line in code.splitlines() if line.strip()]) <= 10


#: Runs the README's block as written, offline: the SDK's default model provider gives a
#: scripted model, tracing is off, and any connection fails.
README_HARNESS = """
import asyncio, socket
from agents import function_tool
from agents.models.multi_provider import MultiProvider
from agents.testing import ScriptedModel, assistant_message, function_call

def no_network(self, address):
    raise AssertionError(f"the README block tried to connect to {address!r}")

socket.socket.connect = no_network
MODEL = ScriptedModel([
    [function_call("send_email", {"to": "ann@example.com", "body": "draft"}, call_id="c-1")],
    [assistant_message("done")]])
MultiProvider.get_model = lambda self, name: MODEL
sent = []

@function_tool
def send_email(to: str, body: str) -> str:
    \"\"\"Send an email.\"\"\"
    sent.append({"to": to, "body": body})
    return f"sent to {to}"

async def main():
BLOCK
    print(sent, result.final_output, [(t.status, t.by) for t in engine.tickets(status=None)])

asyncio.run(main())
"""


def test_the_readme_block_runs_as_written() -> None:
    """Without the catalogue line the README once lacked, send_email is refused unknown."""
    block = "".join(f"    {line}\n" for line in readme_block().splitlines())
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    env["OPENAI_AGENTS_DISABLE_TRACING"] = "1"
    done = subprocess.run([sys.executable, "-W", "error", "-c",
                           README_HARNESS.replace("BLOCK\n", block)],
                          capture_output=True, text=True, timeout=120, env=env, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "[{'to': 'ann@example.com', 'body': 'Hi'}] done [('resumed', 'alice')]"]
