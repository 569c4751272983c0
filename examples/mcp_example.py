"""buddy guarding an MCP client's tool calls, offline: a mail server and its client in memory.

Run it with ``python examples/mcp_example.py`` (needs ``pip install 'buddy[mcp]'``).
The server's tools say what they are in their MCP annotations; buddy turns those
hints into contracts (a tool that says nothing is destructive, by the MCP spec's
defaults) and decides every call: a read-only tool runs, an email waits for a
person who edits it before it goes, a destructive tool is denied, an unknown one
is refused, and a call repeated with its key runs nothing twice.
"""

import anyio
from mcp import Client
from mcp import types as mt
from mcp.server.mcpserver import MCPServer

from buddy.engine import Engine, replay
from buddy.engine.adapters.mcp import GuardedSession

server = MCPServer("mail")
sent: list[str] = []


@server.tool(annotations=mt.ToolAnnotations(read_only_hint=True, open_world_hint=False))
def read_inbox(folder: str = "inbox") -> str:
    """List the unread mail of a folder."""
    return f"3 unread messages in {folder}"


@server.tool()  # no hints: destructive by the MCP spec's defaults, so a person approves it
def send_email(to: str, body: str) -> str:
    """Send an email."""
    sent.append(to)
    return f"sent to {to}: {body}"


@server.tool(annotations=mt.ToolAnnotations(destructive_hint=True))
def empty_trash() -> str:
    """Delete the trash for good."""
    return "trash emptied"


def show(what: str, result: mt.CallToolResult) -> None:
    text = " ".join(block.text for block in result.content if isinstance(block, mt.TextContent))
    print(f"{what:<28} {'error' if result.is_error else 'ok':<5} {text}")


async def main() -> None:
    engine = Engine.default(default_confidence=0.9)
    async with Client(server) as client:
        tools = GuardedSession(client, engine, agent="mail-agent")
        await tools.list_tools()
        for name in ("read_inbox", "send_email", "empty_trash"):
            c = engine.registry.get(name)
            print(f"contract {name:<19} {c.risk.value:<6} reversible={c.reversible} "
                  f"approval={c.requires_approval}")

        show("read_inbox", await tools.call_tool("read_inbox", {"folder": "inbox"}))

        draft = {"to": "all@example.com", "body": "Lunch?"}
        waiting = await tools.call_tool("send_email", draft, idempotency_key="call-1")
        show("send_email", waiting)
        ticket = waiting.meta["buddy"]["ticket"]  # a person answers, from anywhere
        engine.approve(ticket, by="ada", args={"to": "team@example.com", "body": "Lunch at 1?"})
        show("send_email, approved", await tools.call_tool("send_email", draft,
                                                           idempotency_key="call-1"))
        show("send_email, asked again", await tools.call_tool("send_email", draft,
                                                              idempotency_key="call-1"))

        trash = await tools.call_tool("empty_trash", {}, idempotency_key="call-2")
        engine.deny(trash.meta["buddy"]["ticket"], "not today", by="ada")
        show("empty_trash, denied", await tools.call_tool("empty_trash", {},
                                                          idempotency_key="call-2"))
        show("format_disk", await tools.call_tool("format_disk", {}))
    print(f"emails the server sent: {sent}")
    print(f"audit trail replays: {replay(engine.audit).ok}")


if __name__ == "__main__":
    anyio.run(main)
