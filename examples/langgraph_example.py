"""buddy guarding a LangGraph agent's tools, offline (a scripted model stands in for an LLM).

Run: python examples/langgraph_example.py   (needs buddy[langgraph])

The agent searches its notes (read-only: runs LIVE), then mails the result (an
email waits for a person: the graph pauses on a buddy ticket, a person approves it
with an edited subject, the email runs once), then calls a tool nobody knows
(refused). The audit trail replays at the end.
"""

from __future__ import annotations

from typing import Any

from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import tools_condition
from langgraph.types import Command

from buddy.engine import Engine, replay
from buddy.engine.adapters.langgraph import guarded_tool_node


@tool
def memory_search(query: str) -> str:
    """Search the agent's notes."""
    return f"3 notes about {query}"


@tool
def msgraph_send_email(to: str, subject: str) -> str:
    """Send an email."""
    return f"sent {subject!r} to {to}"


class ScriptedModel(FakeMessagesListChatModel):
    """A chat model that answers from a script: what an LLM would decide to call."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedModel:  # type: ignore[override]
        return self


def call(name: str, call_id: str, **args: Any) -> dict[str, Any]:
    return {"name": name, "args": args, "id": call_id, "type": "tool_call"}


model = ScriptedModel(responses=[
    AIMessage("", tool_calls=[call("memory_search", "c1", query="invoices")]),
    AIMessage("", tool_calls=[call("msgraph_send_email", "c2", to="boss@corp.example",
                                   subject="Invoices")]),
    AIMessage("", tool_calls=[call("launch_rockets", "c3", target="moon")]),
    AIMessage("Done: notes found, boss mailed."),
]).bind_tools([memory_search, msgraph_send_email])


def agent(state: MessagesState) -> dict[str, Any]:
    return {"messages": [model.invoke(state["messages"])]}


def main() -> None:
    engine = Engine.default(default_confidence=0.9, clock=lambda: 1_000.0)
    builder = StateGraph(MessagesState)
    builder.add_node("agent", agent)
    builder.add_node("tools", guarded_tool_node([memory_search, msgraph_send_email], engine,
                                                agent="agent-1"))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "agent")
    graph = builder.compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "example"}}

    state = graph.invoke({"messages": [HumanMessage("Mail my boss about the invoices")]},
                         config)
    pause = state["__interrupt__"][0].value
    ticket = pause["buddy_ticket"]
    print(f"paused: {ticket['tool']} waits for a person ({ticket['id']}, rule {ticket['rule']})")

    print("alice approves it, with a reviewed subject")
    state = graph.invoke(Command(resume={"approve": True, "by": "alice",
                                         "args": {**pause["tool_call"]["args"],
                                                  "subject": "Invoices (reviewed)"}}), config)
    for message in state["messages"]:
        if isinstance(message, ToolMessage):
            print(f"{message.name} [{message.status}]: {message.content}")
    print(state["messages"][-1].content)
    print("audit replays:", replay(engine.audit).ok)


if __name__ == "__main__":
    main()
