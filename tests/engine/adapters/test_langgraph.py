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
import hashlib
import io
import json
import re
import runpy
import threading
from pathlib import Path
from typing import Annotated, Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import StructuredTool, tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.errors import GraphInterrupt
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import InjectedState, ToolNode, tools_condition
from langgraph.prebuilt.tool_node import ToolCallRequest
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


class InOrder:
    """A guard whose node runs its tool calls one at a time, in the model's order.

    LangGraph runs a node's calls in parallel, and once one pauses the others may or may
    not have started: which calls have tickets at a pause varies from run to run. In
    order, the tests see one interleaving each time: with ``skip_after_pause`` the calls
    after one that paused do not start (as when LangGraph's executor cancels them);
    without, every call starts before the first runs, so each one runs.
    """

    def __init__(self, guard: ToolGuard, *, skip_after_pause: bool) -> None:
        self.guard, self.skip = guard, skip_after_pause
        self.turn, self.entered, self.paused = 0, 0, False
        self.cond = threading.Condition()
        self.node = ToolNode(guard.tools, wrap_tool_call=self.wrap)

    def start(self) -> None:
        """Before each graph run (a call cancelled by LangGraph never takes its turn)."""
        self.turn, self.entered, self.paused = 0, 0, False

    def wrap(self, request: ToolCallRequest, execute: Any) -> Any:
        ids = [c["id"] for c in request.state["messages"][-1].tool_calls]
        mine = ids.index(request.tool_call["id"])
        with self.cond:
            self.entered += 1
            self.cond.notify_all()
            assert self.cond.wait_for(lambda: self.turn == mine and (
                self.skip or self.entered == len(ids)), timeout=10)
        try:
            if self.paused and self.skip:
                raise GraphInterrupt(())
            return self.guard.wrap_tool_call(request, execute)
        except GraphInterrupt:
            self.paused = True
            raise
        finally:
            with self.cond:
                self.turn = mine + 1
                self.cond.notify_all()


def _key(thread: str, call_id: str) -> str:
    """The key the adapter promises: a digest of the thread id and the call id."""
    pair = json.dumps([thread, call_id]).encode()
    return "langgraph:" + hashlib.sha256(pair).hexdigest()[:40]


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

    def test_an_unnamed_answer_applies_when_its_ticket_is_the_nodes_only_one(self):
        # Both tools may wait for a person, but the write is simulated (low confidence):
        # the email's ticket is the node's only one, so an answer naming none is its.
        world = World()
        engine = _engine(default_confidence={"msgraph_send_email": 0.9, "database_write": 0.3})
        app = _graph(guarded_tool_node(world.tools, engine, agent="agent-1"),
                     [AIMessage("", tool_calls=[
                         _call("msgraph_send_email", "m1", to="a@corp.example", subject="A"),
                         _call("database_write", "d1", table="t", row="r")]),
                      AIMessage("done")])
        state = app.invoke({"messages": [HumanMessage("mail a, write r")]}, CONFIG)
        (pause,) = state["__interrupt__"]
        ticket_id = pause.value["buddy_ticket"]["id"]
        assert pause.value["waiting"] == [ticket_id]
        assert pause.value["question"].startswith(
            "buddy: 'msgraph_send_email' waits for a person (rule high.live). "
            "Resume with {'approve': True, 'by': <who>}")
        state = app.invoke(Command(resume={"approve": True, "by": "alice"}), CONFIG)
        assert "__interrupt__" not in state
        assert world.ran == [("msgraph_send_email", {"to": "a@corp.example", "subject": "A"})]
        assert engine.ticket(ticket_id).by == "alice"
        assert _replies(state)["d1"].content.startswith(
            "buddy: 'database_write' was not run; MOCK simulated it")
        assert replay(engine.audit).ok

    def test_an_answer_naming_another_threads_ticket_is_not_applied(self):
        world = World()
        engine = _engine(default_confidence=0.9)
        node = guarded_tool_node(world.tools, engine, agent="agent-1")
        script = [AIMessage("", tool_calls=[_call("database_write", "w1", table="t", row="a")]),
                  AIMessage("", tool_calls=[_call("database_write", "w1", table="t", row="b")]),
                  AIMessage("done"), AIMessage("done")]  # the threads take turns
        app = _graph(node, script)
        a = {"configurable": {"thread_id": "A"}}
        b = {"configurable": {"thread_id": "B"}}
        ticket_a = app.invoke({"messages": [HumanMessage("a")]}, a)["__interrupt__"][0] \
            .value["buddy_ticket"]["id"]
        ticket_b = app.invoke({"messages": [HumanMessage("b")]}, b)["__interrupt__"][0] \
            .value["buddy_ticket"]["id"]
        state = app.invoke(Command(resume={"ticket": ticket_b, "approve": True, "by": "alice"}),
                           a)  # answered in thread A, naming thread B's ticket
        assert "__interrupt__" in state
        assert engine.ticket(ticket_b).status == engine.ticket(ticket_a).status == "pending"
        assert world.ran == [] and replay(engine.audit).ok

    def test_after_another_ticket_of_the_node_an_answer_must_name_its_own(self):
        # The email pauses before the write starts (LangGraph cancels it); approved by an
        # unnamed answer, the email runs and the write opens its ticket. LangGraph hands
        # that first answer again, on each re-run, to the node's first interrupt(): now
        # the write's. So an unnamed answer is not applied any more (here, bob's denial
        # would lose to alice's replayed approval); a named one is.
        world = World()
        engine = _engine()
        in_order = InOrder(ToolGuard(engine, agent="agent-1", tools=world.tools,
                                     confidence=0.9), skip_after_pause=True)
        app = _graph(in_order.node,
                     [AIMessage("", tool_calls=[
                         _call("msgraph_send_email", "m1", to="a@corp.example", subject="A"),
                         _call("database_write", "d1", table="t", row="DROP")]),
                      AIMessage("done")])

        def run(value: Any) -> dict[str, Any]:
            in_order.start()
            return app.invoke(value, CONFIG)

        state = run({"messages": [HumanMessage("mail a, then drop")]})
        (pause,) = state["__interrupt__"]
        email = pause.value["buddy_ticket"]["id"]
        assert [t.id for t in engine.tickets()] == [email]
        state = run(Command(resume={"approve": True, "by": "alice"}))
        assert world.names() == ["msgraph_send_email"]
        (pause,) = state["__interrupt__"]
        write = pause.value["buddy_ticket"]["id"]
        assert pause.value["buddy_ticket"]["tool"] == "database_write"
        assert pause.value["waiting"] == [write]
        assert pause.value["question"] == (
            f"buddy: 'database_write' waits for a person (rule high.live). Other calls of "
            f"this node have tickets ({email}): an answer must name its ticket. Resume with "
            f"{{'ticket': '{write}', 'approve': True, 'by': <who>}} (optionally 'args': "
            f"edited arguments) or {{'ticket': '{write}', 'approve': False, 'reason': "
            "<why>}; an answer naming no ticket is not applied (asked again).")

        state = run(Command(resume={"approve": False, "by": "bob", "reason": "no drops"}))
        assert engine.ticket(write).status == "pending"
        assert world.names() == ["msgraph_send_email"]
        assert state["__interrupt__"][0].value["buddy_ticket"]["id"] == write

        state = run(Command(resume={"ticket": write, "approve": False, "by": "bob",
                                    "reason": "no drops"}))
        assert "__interrupt__" not in state
        assert world.names() == ["msgraph_send_email"]
        assert (engine.ticket(write).answer, engine.ticket(write).by) == ("deny", "bob")
        assert "no drops" in _replies(state)["d1"].content
        assert replay(engine.audit).ok

    def test_two_calls_waiting_in_one_node_need_answers_naming_their_ticket(self):
        # Both calls start: the first pauses on its ticket before the second opens one.
        # An unnamed answer then reaches a call whose node holds two tickets: it is not
        # applied, and the question says that two wait, and which.
        world, engine = World(), _engine()
        in_order = InOrder(ToolGuard(engine, agent="agent-1", tools=world.tools,
                                     confidence=0.9), skip_after_pause=False)
        app = _graph(in_order.node,
                     [AIMessage("", tool_calls=[
                         _call("msgraph_send_email", "a", to="a@corp.example", subject="A"),
                         _call("msgraph_send_email", "b", to="b@corp.example", subject="B")]),
                      AIMessage("done")])

        def run(value: Any) -> dict[str, Any]:
            in_order.start()
            return app.invoke(value, CONFIG)

        state = run({"messages": [HumanMessage("mail a and b")]})
        first, second = (t.id for t in engine.tickets())
        state = run(Command(resume={"approve": True, "by": "alice"}))
        assert world.ran == []
        assert engine.tickets(status="approved") == engine.tickets(status="denied") == []
        pause = state["__interrupt__"][0].value
        assert pause["waiting"] == [first, second]
        assert f"2 calls of this node wait ({first}, {second}): an answer must name its " \
            "ticket" in pause["question"]
        answers = {"a@corp.example": {"approve": True, "by": "alice",
                                      "args": {"to": "a@corp.example", "subject": "A!"}},
                   "b@corp.example": {"approve": False, "by": "alice", "reason": "not b"}}
        for _ in range(4):  # two answers; a question may come again, already answered
            if "__interrupt__" not in state:
                break
            pause = state["__interrupt__"][0].value
            answer = answers[pause["tool_call"]["args"]["to"]]
            state = run(Command(resume={"ticket": pause["buddy_ticket"]["id"], **answer}))
        assert "__interrupt__" not in state
        assert world.ran == [("msgraph_send_email", {"to": "a@corp.example", "subject": "A!"})]
        replies = _replies(state)
        assert replies["a"].content == "sent 'A!' to a@corp.example"
        assert replies["b"].status == "error"
        assert "not b" in replies["b"].content
        assert replay(engine.audit).ok

    @pytest.mark.parametrize("body", ['{"approve": true, "by": "alice\\udc80"}',
                                      '{"approve": false, "by": "alice\\udc80"}'])
    def test_an_answer_the_engine_refuses_denies_the_call(self, body: str):
        # An answer decoded from JSON whose "by" holds a lone surrogate ("\\udc80"): the
        # engine refuses it (TicketError); the call is denied, naming why, nothing
        # escapes graph.invoke, and the trail replays.
        world, engine = World(), _engine()
        app = _graph(guarded_tool_node(world.tools, engine, agent="agent-1", confidence=0.9),
                     [AIMessage("", tool_calls=[_call("database_write", "d1", table="t",
                                                      row="r")]),
                      AIMessage("done")])
        state = app.invoke({"messages": [HumanMessage("write")]}, CONFIG)
        ticket_id = state["__interrupt__"][0].value["buddy_ticket"]["id"]
        state = app.invoke(Command(resume=json.loads(body)), CONFIG)
        assert "__interrupt__" not in state
        assert world.ran == []
        reply = _replies(state)["d1"]
        assert reply.status == "error"
        assert "resume value refused: TicketError: who answers a ticket (by) must be " \
            "printable text: it holds a lone surrogate (got 'alice\\udc80')" in reply.content
        assert (engine.ticket(ticket_id).answer, engine.ticket(ticket_id).by) == \
            ("deny", "buddy")
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


class TestArguments:
    def _approved_with(self, edited: dict[str, Any], *, run: str = "invoke") -> Any:
        world, engine = World(), _engine()
        app = _graph(guarded_tool_node(world.tools, engine, agent="agent-1", confidence=0.9),
                     [AIMessage("", tool_calls=[_call("msgraph_send_email", "m1",
                                                      to="ann@corp.example", subject="hi")]),
                      AIMessage("done")])
        answer = Command(resume={"approve": True, "by": "alice", "args": edited})
        if run == "ainvoke":
            async def go() -> dict[str, Any]:
                await app.ainvoke({"messages": [HumanMessage("mail ann")]}, CONFIG)
                return await app.ainvoke(answer, CONFIG)
            state = asyncio.run(go())
        else:
            app.invoke({"messages": [HumanMessage("mail ann")]}, CONFIG)
            state = app.invoke(answer, CONFIG)
        return world, engine, state

    @pytest.mark.parametrize("run", ["invoke", "ainvoke"])
    def test_an_edit_adding_a_key_the_tool_does_not_take_runs_nothing(self, run: str):
        # The tool's schema would drop "bcc" and run; the audit would say it ran with it.
        world, engine, state = self._approved_with(
            {"to": "ann@corp.example", "subject": "hi", "bcc": "all@corp.example"}, run=run)
        assert world.ran == []
        reply = _replies(state)["m1"]
        assert reply.status == "error"
        assert reply.content == (
            "buddy refused 'msgraph_send_email': its arguments hold 'bcc', which it does not "
            "take (it takes: subject, to); it was not run")
        (done,) = [e for e in engine.audit.events() if e.kind == "execution"]
        assert done.data["ok"] is False
        assert state["messages"][-1].content == "done"
        assert replay(engine.audit).ok

    def test_an_edit_missing_a_key_fails_the_tools_own_validation(self):
        world, engine, state = self._approved_with({"to": "ann@corp.example"})
        assert world.ran == []
        reply = _replies(state)["m1"]
        assert reply.status == "error"
        assert "subject" in reply.content and "Field required" in reply.content
        assert replay(engine.audit).ok

    def test_run_by_the_host_with_such_an_edit_runs_nothing(self):
        world, engine = World(), _engine()
        app = _graph(guarded_tool_node(world.tools, engine, agent="agent-1", confidence=0.9),
                     [AIMessage("", tool_calls=[_call("msgraph_send_email", "m1",
                                                      to="ann@corp.example", subject="hi")]),
                      AIMessage("done")])
        state = app.invoke({"messages": [HumanMessage("mail ann")]}, CONFIG)
        ticket_id = state["__interrupt__"][0].value["buddy_ticket"]["id"]
        engine.approve(ticket_id, by="carol", args={"to": "ann@corp.example", "subject": "hi",
                                                    "cc": "x@corp.example"})
        result = engine.resume(ticket_id)
        assert (result.ok, world.ran) == (False, [])
        assert isinstance(result.exception, InputError)
        assert "its arguments hold 'cc', which it does not take" in str(result.exception)
        state = app.invoke(Command(resume={}), CONFIG)  # the graph finds the call refused
        assert world.ran == []
        assert "its arguments hold 'cc'" in _replies(state)["m1"].content
        assert replay(engine.audit).ok

    def test_injected_arguments_and_open_schemas(self):
        # An argument LangGraph injects is not the model's to give, so it is not taken
        # from a call; a tool whose schema is JSON (no model) is given every key, so
        # every key is taken.
        engine, seen = _engine(), []

        @tool
        def memory_search(query: str, state: Annotated[dict[str, Any], InjectedState]) -> str:
            """Search the agent's notes."""
            seen.append((query, len(state["messages"])))
            return "found"

        node = _alone(guarded_tool_node([memory_search], engine, agent="agent-1",
                                        confidence=0.9))
        out = node.invoke({"messages": [AIMessage("", tool_calls=[
            _call("memory_search", "i1", query="q"),
            _call("memory_search", "i2", query="q", state={"messages": []})])]}, CONFIG)
        replies = _replies(out)
        assert replies["i1"].content == "found"
        assert replies["i2"].content.startswith(
            "buddy refused 'memory_search': its arguments hold 'state', which it does not "
            "take (it takes: query)")
        assert seen == [("q", 1)]

        def search(**kwargs: Any) -> str:
            seen.append(kwargs)
            return "found"

        open_tool = StructuredTool.from_function(
            search, name="memory_search", description="Search.",
            args_schema={"type": "object", "properties": {"query": {"type": "string"}}})
        node = _alone(guarded_tool_node([open_tool], _engine(), agent="agent-1",
                                        confidence=0.9))
        out = node.invoke({"messages": [AIMessage("", tool_calls=[
            _call("memory_search", "o1", query="q", limit=3)])]}, CONFIG)
        assert _replies(out)["o1"].content == "found"
        assert seen[-1] == {"query": "q", "limit": 3}


class TestKeys:
    def test_ids_holding_colons_do_not_share_a_key(self):
        # Thread "acme:42" call "c1", thread "acme" call "42:c1": two calls, both run.
        world, engine = World(), _engine()
        node = _alone(guarded_tool_node(world.tools, engine, agent="agent-1", confidence=0.9))
        for thread, call_id in (("acme:42", "c1"), ("acme", "42:c1")):
            out = node.invoke({"messages": [AIMessage("", tool_calls=[
                _call("memory_search", call_id, query="payroll")])]},
                {"configurable": {"thread_id": thread}})
            assert _replies(out)[call_id].content == "3 notes about payroll"
        assert world.names() == ["memory_search", "memory_search"]
        claims = [e.subject for e in engine.audit.events()
                  if e.kind == "idempotency" and e.event == "claim"]
        assert claims == [_key("acme:42", "c1"), _key("acme", "42:c1")]
        assert replay(engine.audit).ok

    def test_any_thread_id_makes_a_valid_key(self):
        # A long thread id, or one holding a newline, still keys its calls (the key is a
        # digest); the same thread and call id give the same key.
        world, engine = World(), _engine()
        node = _alone(guarded_tool_node(world.tools, engine, agent="agent-1", confidence=0.9))
        calls = AIMessage("", tool_calls=[_call("memory_search", "c1", query="q")])
        for thread in ("t" * 1000, "user-1\nsession-2", "t" * 1000):
            out = node.invoke({"messages": [calls]}, {"configurable": {"thread_id": thread}})
            assert _replies(out)["c1"].content == "3 notes about q"
        assert world.names() == ["memory_search", "memory_search"]
        claims = [e.subject for e in engine.audit.events()
                  if e.kind == "idempotency" and e.event == "claim"]
        assert claims == [_key("t" * 1000, "c1"), _key("user-1\nsession-2", "c1")]
        assert replay(engine.audit).ok


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
                 "edited": {"to": "boss@corp.example", "subject": "hello"}}
        exec(compile(code, "README.md", "exec"), given)
        assert given["ticket"]["tool"] == "msgraph_send_email"
        assert world.ran == [("msgraph_send_email", {"to": "boss@corp.example",
                                                     "subject": "hello"})]
        assert replay(given["engine"].audit).ok
