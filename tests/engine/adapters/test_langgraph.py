"""The LangGraph adapter, end to end through the real framework, offline.

A StateGraph with a scripted chat model, LangGraph's InMemorySaver and buddy's
guarded tool node: a read-only tool runs LIVE; an email waits for a person (the
graph interrupts) and runs once the ticket is approved with edited arguments; a
destructive write is denied; an unknown tool fails closed; resuming again or
re-running the node runs nothing twice (real invocations counted); the audit
trail replays.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import runpy
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import tools_condition
from langgraph.types import Command, interrupt

from buddy.engine import Approval, AuditLog, Engine, replay
from buddy.engine.adapters.langgraph import ToolGuard, guarded_tool_node
from buddy.rules.base.errors import InputError
from tests.helpers import ManualClock


class ScriptedModel(FakeMessagesListChatModel):
    """LangChain's scripted chat model, able to take tools as a real one does."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedModel:  # type: ignore[override]
        return self


def _call(name: str, call_id: str, **args: Any) -> dict[str, Any]:
    return {"name": name, "args": args, "id": call_id, "type": "tool_call"}


class World:
    """The tools, counting their real invocations (and the arguments they saw)."""

    def __init__(self) -> None:
        self.ran: list[tuple[str, dict[str, Any]]] = []
        world = self

        @tool
        def memory_search(query: str) -> str:
            """Search the agent's notes."""
            world.ran.append(("memory_search", {"query": query}))
            return f"3 notes about {query}"

        @tool
        def msgraph_send_email(to: str, subject: str) -> str:
            """Send an email."""
            world.ran.append(("msgraph_send_email", {"to": to, "subject": subject}))
            return f"sent {subject!r} to {to}"

        @tool
        def database_write(table: str, row: str) -> str:
            """Write a row."""
            world.ran.append(("database_write", {"table": table, "row": row}))
            return "written"

        self.tools = [memory_search, msgraph_send_email, database_write]

    def names(self) -> list[str]:
        return [name for name, _ in self.ran]


def _graph(node: Any, script: list[AIMessage], checkpointer: Any = None) -> Any:
    model = ScriptedModel(responses=script).bind_tools([])

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("agent", agent)
    builder.add_node("tools", node)
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "agent")
    return builder.compile(checkpointer=checkpointer or InMemorySaver())


def _alone(node: Any) -> Any:
    """A graph of the tool node alone (LangGraph runs a node only inside a graph)."""
    builder = StateGraph(MessagesState)
    builder.add_node("tools", node)
    builder.add_edge(START, "tools")
    return builder.compile()


def _engine(**kwargs: Any) -> Engine:
    return Engine.default(clock=kwargs.pop("clock", ManualClock()), **kwargs)


def _replies(state: dict[str, Any]) -> dict[str, ToolMessage]:
    return {m.tool_call_id: m for m in state["messages"] if isinstance(m, ToolMessage)}


SCRIPT = [
    AIMessage("", tool_calls=[_call("memory_search", "c1", query="invoices"),
                              _call("msgraph_send_email", "c2", to="all@corp.example",
                                    subject="invoices")]),
    AIMessage("", tool_calls=[_call("launch_rockets", "c3", target="moon")]),
    AIMessage("", tool_calls=[_call("database_write", "c4", table="invoices", row="DROP")]),
    AIMessage("done"),
]
CONFIG = {"configurable": {"thread_id": "t1"}}


class TestEndToEnd:
    def test_live_approval_edit_denial_unknown_and_no_double_run(self):
        world, engine = World(), _engine()
        app = _graph(guarded_tool_node(world.tools, engine, agent="agent-1", confidence=0.9),
                     SCRIPT)

        # The read-only search runs LIVE; the email waits: the graph pauses on its ticket.
        state = app.invoke({"messages": [HumanMessage("mail the invoices")]}, CONFIG)
        (pause,) = state["__interrupt__"]
        ticket = pause.value["buddy_ticket"]
        assert (ticket["tool"], ticket["status"], ticket["agent"]) == \
            ("msgraph_send_email", "pending", "agent-1")
        assert pause.value["tool_call"]["args"] == {"to": "all@corp.example",
                                                   "subject": "invoices"}
        assert world.names() == ["memory_search"]
        assert [t.id for t in engine.tickets()] == [ticket["id"]]

        # Approved with edited arguments: LangGraph re-runs the node; the search is not run
        # again, the email runs once, with the edit. Then the unknown tool is refused and
        # the destructive write waits for a person too.
        state = app.invoke(Command(resume={"approve": True, "by": "alice",
                                           "args": {"to": "boss@corp.example",
                                                    "subject": "invoices (draft)"}}), CONFIG)
        assert world.ran == [
            ("memory_search", {"query": "invoices"}),
            ("msgraph_send_email", {"to": "boss@corp.example", "subject": "invoices (draft)"}),
        ]
        (pause,) = state["__interrupt__"]
        assert pause.value["buddy_ticket"]["tool"] == "database_write"
        assert engine.ticket(ticket["id"]).status == "resumed"
        assert engine.ticket(ticket["id"]).by == "alice"

        # The person says no: the write never runs.
        state = app.invoke(Command(resume={"approve": False, "reason": "never drop invoices",
                                           "by": "bob"}), CONFIG)
        assert "__interrupt__" not in state
        assert state["messages"][-1].content == "done"
        assert world.names() == ["memory_search", "msgraph_send_email"]

        replies = _replies(state)
        assert replies["c1"].content == "3 notes about invoices"
        assert replies["c1"].status == "success"
        assert replies["c2"].content == "sent 'invoices (draft)' to boss@corp.example"
        assert replies["c3"].status == "error"
        assert "buddy refused 'launch_rockets'" in replies["c3"].content
        assert "tool.unknown" in replies["c3"].content
        assert replies["c4"].status == "error"
        assert "never drop invoices" in replies["c4"].content

        # Resuming a finished thread again runs nothing, and the trail replays.
        app.invoke(Command(resume={"approve": True, "by": "mallory"}), CONFIG)
        assert world.names() == ["memory_search", "msgraph_send_email"]
        report = replay(engine.audit)
        assert report.ok, report

    def test_a_rerun_node_returns_the_first_results(self):
        # LangGraph re-runs a whole node after a resume; buddy keys each call by its thread
        # and id, so running the node again runs no tool again.
        world, engine = World(), _engine()
        node = _alone(guarded_tool_node(world.tools, engine, agent="agent-1", confidence=0.9))
        calls = AIMessage("", tool_calls=[_call("memory_search", "r1", query="q")])
        first = node.invoke({"messages": [calls]}, CONFIG)
        again = node.invoke({"messages": [calls]}, CONFIG)
        assert world.names() == ["memory_search"]
        assert first["messages"][-1].content == again["messages"][-1].content == \
            "3 notes about q"
        # The same call id in another thread is another call.
        node.invoke({"messages": [calls]}, {"configurable": {"thread_id": "t2"}})
        assert world.names() == ["memory_search", "memory_search"]
        assert replay(engine.audit).ok

    def test_approved_out_of_band_then_a_plain_resume(self):
        world, engine = World(), _engine()
        app = _graph(guarded_tool_node(world.tools, engine, agent="agent-1", confidence=0.9),
                     [AIMessage("", tool_calls=[_call("msgraph_send_email", "m1",
                                                      to="a@corp.example", subject="hi")]),
                      AIMessage("done")])
        state = app.invoke({"messages": [HumanMessage("mail a")]}, CONFIG)
        ticket_id = state["__interrupt__"][0].value["buddy_ticket"]["id"]
        engine.approve(ticket_id, by="carol")  # an HTTP handler, a chat button...
        state = app.invoke(Command(resume={}), CONFIG)
        assert world.ran == [("msgraph_send_email", {"to": "a@corp.example", "subject": "hi"})]
        assert _replies(state)["m1"].content == "sent 'hi' to a@corp.example"
        assert state["messages"][-1].content == "done"
        assert replay(engine.audit).ok

    def test_run_by_the_host_outside_the_graph_then_resumed(self):
        # The host approves and runs the ticket itself (engine.resume, the tool invoked
        # directly); the graph, resumed, finds the call done and runs it no second time.
        world, engine = World(), _engine()
        app = _graph(guarded_tool_node(world.tools, engine, agent="agent-1", confidence=0.9),
                     [AIMessage("", tool_calls=[_call("msgraph_send_email", "m1",
                                                      to="a@corp.example", subject="hi")]),
                      AIMessage("done")])
        state = app.invoke({"messages": [HumanMessage("mail a")]}, CONFIG)
        ticket_id = state["__interrupt__"][0].value["buddy_ticket"]["id"]
        engine.approve(ticket_id, by="carol")
        assert engine.resume(ticket_id).result == "sent 'hi' to a@corp.example"
        state = app.invoke(Command(resume={}), CONFIG)
        assert world.names() == ["msgraph_send_email"]
        assert _replies(state)["m1"].content == "sent 'hi' to a@corp.example"
        assert replay(engine.audit).ok

    def test_a_malformed_answer_denies_the_call(self):
        world, engine = World(), _engine()
        app = _graph(guarded_tool_node(world.tools, engine, agent="agent-1", confidence=0.9),
                     [AIMessage("", tool_calls=[_call("msgraph_send_email", "m1",
                                                      to="a@corp.example", subject="hi")]),
                      AIMessage("done")])
        state = app.invoke({"messages": [HumanMessage("mail a")]}, CONFIG)
        ticket_id = state["__interrupt__"][0].value["buddy_ticket"]["id"]
        state = app.invoke(Command(resume={"approve": "yes"}), CONFIG)
        assert world.ran == []
        reply = _replies(state)["m1"]
        assert reply.status == "error"
        assert "'approve' must be True or False (got 'yes')" in reply.content
        assert engine.ticket(ticket_id).status in ("denied", "resumed")
        assert replay(engine.audit).ok

    def test_two_calls_waiting_in_one_node_need_answers_naming_their_ticket(self):
        # LangGraph matches resume values to a node's interrupt() calls by order, and the
        # node runs its calls in parallel: an answer naming no ticket is not applied.
        world, engine = World(), _engine()
        app = _graph(guarded_tool_node(world.tools, engine, agent="agent-1", confidence=0.9),
                     [AIMessage("", tool_calls=[
                         _call("msgraph_send_email", "a", to="a@corp.example", subject="A"),
                         _call("msgraph_send_email", "b", to="b@corp.example", subject="B")]),
                      AIMessage("done")])
        state = app.invoke({"messages": [HumanMessage("mail a and b")]}, CONFIG)
        assert "other calls of this node wait too" in state["__interrupt__"][0].value["question"]
        state = app.invoke(Command(resume={"approve": True, "by": "alice"}), CONFIG)
        assert world.ran == []
        assert engine.tickets(status="approved") == engine.tickets(status="denied") == []
        assert engine.tickets(status="pending")  # the graph asks again
        answers = {"a@corp.example": {"approve": True, "by": "alice",
                                      "args": {"to": "a@corp.example", "subject": "A!"}},
                   "b@corp.example": {"approve": False, "by": "alice", "reason": "not b"}}
        for _ in range(6):  # two answers; a surfaced question may come again, answered
            if "__interrupt__" not in state:
                break
            pause = state["__interrupt__"][0].value
            answer = answers[pause["tool_call"]["args"]["to"]]
            state = app.invoke(Command(resume={"ticket": pause["buddy_ticket"]["id"],
                                               **answer}), CONFIG)
        assert "__interrupt__" not in state
        assert world.ran == [("msgraph_send_email", {"to": "a@corp.example", "subject": "A!"})]
        replies = _replies(state)
        assert replies["a"].content == "sent 'A!' to a@corp.example"
        assert replies["b"].status == "error"
        assert "not b" in replies["b"].content
        assert replay(engine.audit).ok

    def test_an_expired_ticket_does_not_run(self):
        world, clock = World(), ManualClock()
        engine = _engine(clock=clock)
        app = _graph(guarded_tool_node(world.tools, engine, agent="agent-1", confidence=0.9,
                                       expires_in=60),
                     [AIMessage("", tool_calls=[_call("msgraph_send_email", "m1",
                                                      to="a@corp.example", subject="hi")]),
                      AIMessage("done")])
        state = app.invoke({"messages": [HumanMessage("mail a")]}, CONFIG)
        ticket_id = state["__interrupt__"][0].value["buddy_ticket"]["id"]
        clock.advance(61)
        state = app.invoke(Command(resume={"approve": True, "by": "alice"}), CONFIG)
        assert world.ran == []
        reply = _replies(state)["m1"]
        assert reply.status == "error"
        assert "expired" in reply.content
        assert engine.ticket(ticket_id).answer is None
        assert replay(engine.audit).ok

    def test_low_confidence_is_simulated_not_run(self):
        world, engine = World(), _engine()
        node = _alone(guarded_tool_node(world.tools, engine, agent="agent-1", confidence=0.3))
        out = node.invoke({"messages": [AIMessage("", tool_calls=[
            _call("memory_search", "s1", query="q")])]}, CONFIG)
        reply = out["messages"][-1]
        assert world.ran == []
        assert reply.content.startswith("buddy: 'memory_search' was not run; MOCK simulated it")
        assert reply.artifact["buddy"]["mode"] == "MOCK"

    def test_a_tool_error_is_counted_and_raised_as_langgraph_would(self):
        engine = _engine()

        @tool
        def memory_search(query: str) -> str:
            """Search."""
            raise RuntimeError("index offline")

        node = _alone(guarded_tool_node([memory_search], engine, agent="agent-1",
                                        confidence=0.9, handle_tool_errors=True))
        out = node.invoke({"messages": [AIMessage("", tool_calls=[
            _call("memory_search", "e1", query="q")])]}, CONFIG)
        reply = out["messages"][-1]
        assert reply.status == "error"
        assert "index offline" in reply.content
        runs = [e for e in engine.audit.events() if e.kind == "execution"]
        assert runs[-1].data["ok"] is False


class TestAsync:
    def test_ainvoke_approval_and_no_double_run(self):
        world, engine = World(), _engine()
        app = _graph(guarded_tool_node(world.tools, engine, agent="agent-1", confidence=0.9),
                     SCRIPT[:1] + [AIMessage("done")])

        async def run() -> dict[str, Any]:
            await app.ainvoke({"messages": [HumanMessage("mail")]}, CONFIG)
            return await app.ainvoke(Command(resume={"approve": True, "by": "alice"}), CONFIG)

        state = asyncio.run(run())
        assert world.names() == ["memory_search", "msgraph_send_email"]
        assert _replies(state)["c2"].content == "sent 'invoices' to all@corp.example"
        assert replay(engine.audit).ok


class TestApproverPath:
    def test_an_approver_that_interrupts_pauses_the_graph(self):
        # approvals="approver": the engine's approver answers; one that asks a person with
        # interrupt() pauses the graph (buddy lets LangGraph's signal through).
        def approver(request: Any) -> Approval:
            answer = interrupt({"tool": request.tool})
            return Approval.approve() if answer == "yes" else Approval.deny("said no")

        world, engine = World(), _engine(approver=approver)
        app = _graph(guarded_tool_node(world.tools, engine, agent="agent-1", confidence=0.9,
                                       approvals="approver"),
                     SCRIPT[:1] + [AIMessage("done")])
        state = app.invoke({"messages": [HumanMessage("mail")]}, CONFIG)
        assert state["__interrupt__"][0].value == {"tool": "msgraph_send_email"}
        assert world.names() == ["memory_search"]
        state = app.invoke(Command(resume="yes"), CONFIG)
        assert world.names() == ["memory_search", "msgraph_send_email"]
        assert replay(engine.audit).ok


class TestRestart:
    def test_a_ticket_survives_a_restart_and_runs_once(self, tmp_path: Path):
        path, saver = tmp_path / "audit.jsonl", InMemorySaver()
        script = [AIMessage("", tool_calls=[_call("msgraph_send_email", "m1",
                                                  to="a@corp.example", subject="hi")]),
                  AIMessage("done")]

        def process() -> tuple[World, Any]:  # a fresh engine and graph on the same files
            world = World()
            engine = _engine(audit=AuditLog.open(path, clock=ManualClock()))
            node = guarded_tool_node(world.tools, engine, agent="agent-1", confidence=0.9)
            return world, _graph(node, script, saver)

        world, app = process()
        state = app.invoke({"messages": [HumanMessage("mail a")]}, CONFIG)
        assert "__interrupt__" in state
        world, app = process()
        app.invoke(Command(resume={"approve": True, "by": "alice"}), CONFIG)
        assert world.names() == ["msgraph_send_email"]
        world, app = process()
        app.invoke(Command(resume={"approve": True, "by": "alice"}), CONFIG)
        assert world.names() == []
        assert replay(str(path)).ok


class TestBadInput:
    def test_each_bad_argument_is_named(self):
        world, engine = World(), _engine()
        with pytest.raises(InputError, match="agent must be a non-empty string"):
            guarded_tool_node(world.tools, engine, agent="")
        with pytest.raises(InputError, match=r"confidence must be a number in \[0, 1\]"):
            guarded_tool_node(world.tools, engine, agent="a", confidence=1.5)
        with pytest.raises(InputError, match="approvals must be 'interrupt' or 'approver'"):
            guarded_tool_node(world.tools, engine, agent="a", approvals="auto")
        with pytest.raises(InputError, match="engine must be a buddy Engine"):
            guarded_tool_node(world.tools, object(), agent="a")  # type: ignore[arg-type]
        with pytest.raises(InputError, match="mock names tools that are not guarded here"):
            guarded_tool_node(world.tools, engine, agent="a", mock={"nope": lambda a: a})

    def test_a_tool_outside_the_catalogue_is_refused_at_build(self):
        @tool
        def launch_rockets(target: str) -> str:
            """Launch."""
            return "launched"

        with pytest.raises(InputError, match="tools not in buddy's catalogue: 'launch_rockets'"):
            guarded_tool_node([launch_rockets], _engine(), agent="a")

    def test_the_guard_adds_langgraphs_pause_signal_once(self):
        from langgraph.errors import GraphBubbleUp

        engine = _engine()
        ToolGuard(engine, agent="a")
        ToolGuard(engine, agent="a")
        assert engine.pass_through == (GraphBubbleUp,)


ROOT = Path(__file__).resolve().parents[3]


class TestDocs:
    def test_the_example_runs_offline(self):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            runpy.run_path(str(ROOT / "examples" / "langgraph_example.py"), run_name="__main__")
        assert out.getvalue() == (
            "paused: msgraph_send_email waits for a person (ticket-12, rule high.live)\n"
            "alice approves it, with a reviewed subject\n"
            "memory_search [success]: 3 notes about invoices\n"
            "msgraph_send_email [success]: sent 'Invoices (reviewed)' to boss@corp.example\n"
            "launch_rockets [error]: buddy refused 'launch_rockets': unknown tool "
            "'launch_rockets': fail closed (rule tool.unknown)\n"
            "Done: notes found, boss mailed.\n"
            "audit replays: True\n")

    def test_the_readme_block_is_short_and_runs(self):
        text = (ROOT / "README.md").read_text(encoding="utf-8")
        section = text[text.index("### LangGraph"):]
        found = re.search(r"```python\n(.*?)```", section, re.DOTALL)
        assert found, "README's LangGraph section lost its code block"
        code = found.group(1)
        assert len([line for line in code.splitlines() if line.strip()]) <= 10
        # What the block takes as given: a builder with the agent's node and edges, the
        # tools, a thread's config and the edited arguments.
        world = World()
        builder = StateGraph(MessagesState)
        model = ScriptedModel(responses=[
            AIMessage("", tool_calls=[_call("msgraph_send_email", "m1", to="boss@corp.example",
                                            subject="hi")]),
            AIMessage("done")])
        builder.add_node("agent", lambda state: {"messages": [model.invoke(state["messages"])]})
        builder.add_edge(START, "agent")
        builder.add_conditional_edges("agent", tools_condition)
        builder.add_edge("tools", "agent")
        given = {"builder": builder, "tools": world.tools, "config": CONFIG,
                 "InMemorySaver": InMemorySaver,
                 "edited": {"to": "boss@corp.example", "subject": "hello"}}
        exec(compile(code, "README.md", "exec"), given)
        assert given["ticket"]["tool"] == "msgraph_send_email"
        assert world.ran == [("msgraph_send_email", {"to": "boss@corp.example",
                                                     "subject": "hello"})]
        assert replay(given["engine"].audit).ok
